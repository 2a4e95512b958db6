//! The file boundary of [`KSpace`]'s typed fields: files carry the measurement domain and the
//! noise level as the text attributes `domain` and `noise_sigma` (amri's `.npz` JSON, ISMRMRD
//! user parameters, HDF5 root attributes); in memory they are [`KSpace::domain`] and
//! [`KSpace::noise_sigma`]. Readers call [`take_typed`], writers [`with_typed`]; nothing else
//! in amri reads or writes those two attributes.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::Path;

use amri_core::{KSpace, MeasuredDomain};

use crate::error::{IoError, Result};

/// The attribute that names the measurement domain ([`MeasuredDomain::as_str`]).
pub const DOMAIN: &str = "domain";
/// The attribute that holds σ per complex sample, as decimal text.
pub const NOISE_SIGMA: &str = "noise_sigma";

/// Moves the `domain` and `noise_sigma` attributes of `k` (read from `path`) into its typed
/// fields. An unknown domain is an error naming the file and the value. A `noise_sigma` that is
/// not a number stays a plain attribute (nothing reads it, as before; rewriting keeps it).
pub fn take_typed(path: &Path, k: &mut KSpace) -> Result<()> {
    if let Some(name) = k.attributes.remove(DOMAIN) {
        let d = MeasuredDomain::from_name(&name).ok_or_else(|| {
            let known: Vec<&str> = MeasuredDomain::ALL.iter().map(|d| d.as_str()).collect();
            IoError::malformed(
                path,
                format!(
                    "unknown measurement domain {name:?} in the '{DOMAIN}' attribute (amri reads {})",
                    known.join(", ")
                ),
            )
        })?;
        k.domain = Some(d);
    }
    if let Some(v) = k.attributes.get(NOISE_SIGMA) {
        if let Ok(s) = v.parse::<f64>() {
            k.noise_sigma = Some(s);
            k.attributes.remove(NOISE_SIGMA);
        }
    }
    Ok(())
}

/// The attributes a file gets for `k`: its text attributes plus `domain` (when stated) and
/// `noise_sigma` (when known, as the shortest decimal text of the `f64`), in the key order of a
/// [`BTreeMap`].
pub fn with_typed(k: &KSpace) -> Cow<'_, BTreeMap<String, String>> {
    if k.domain.is_none() && k.noise_sigma.is_none() {
        return Cow::Borrowed(&k.attributes);
    }
    let mut a = k.attributes.clone();
    if let Some(d) = k.domain {
        a.insert(DOMAIN.into(), d.as_str().into());
    }
    if let Some(s) = k.noise_sigma {
        a.insert(NOISE_SIGMA.into(), s.to_string());
    }
    Cow::Owned(a)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array4;

    #[test]
    fn attributes_round_trip_through_the_typed_fields() {
        let mut k = KSpace::new(Array4::zeros((1, 1, 2, 2)));
        k.attributes.insert("seed".into(), "7".into());
        k.attributes.insert(DOMAIN.into(), "image".into());
        k.attributes.insert(NOISE_SIGMA.into(), "0.0125".into());
        let before = k.attributes.clone();
        take_typed(Path::new("x.npz"), &mut k).unwrap();
        assert_eq!(k.domain, Some(MeasuredDomain::Image));
        assert_eq!(k.noise_sigma, Some(0.0125));
        assert!(!k.attributes.contains_key(DOMAIN) && !k.attributes.contains_key(NOISE_SIGMA));
        assert_eq!(*with_typed(&k), before);
    }

    #[test]
    fn unstated_fields_write_no_attribute_and_bad_values_are_handled() {
        let mut k = KSpace::new(Array4::zeros((1, 1, 2, 2)));
        take_typed(Path::new("x.npz"), &mut k).unwrap();
        assert_eq!((k.domain, k.noise_sigma), (None, None));
        assert!(with_typed(&k).is_empty());
        k.attributes.insert(NOISE_SIGMA.into(), "loud".into());
        take_typed(Path::new("x.npz"), &mut k).unwrap();
        assert_eq!(k.noise_sigma, None);
        assert_eq!(with_typed(&k)[NOISE_SIGMA], "loud");
        k.attributes.insert(DOMAIN.into(), "sinogram".into());
        let e = take_typed(Path::new("x.npz"), &mut k)
            .unwrap_err()
            .to_string();
        assert!(e.contains("x.npz") && e.contains("\"sinogram\""), "{e}");
    }

    proptest::proptest! {
        /// `amri simulate` computes σ in f32 and earlier versions wrote its text; held as the
        /// f64 that text names, it writes back the same text, so those files keep their bytes.
        #[test]
        fn f32_noise_text_survives_the_f64_field(
            v in proptest::num::f32::NORMAL | proptest::num::f32::SUBNORMAL | proptest::num::f32::ZERO
        ) {
            let text = v.to_string();
            let mut k = KSpace::new(Array4::zeros((1, 1, 1, 1)));
            k.attributes.insert(NOISE_SIGMA.into(), text.clone());
            take_typed(Path::new("x.npz"), &mut k).unwrap();
            proptest::prop_assert_eq!(&with_typed(&k)[NOISE_SIGMA], &text);
        }
    }
}

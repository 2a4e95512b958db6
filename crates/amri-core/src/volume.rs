//! Image volumes with geometry, and measured multi-coil k-space.

use std::collections::BTreeMap;

use ndarray::{Array2, Array3, Array4, ArrayView2, Axis};

use crate::{Affine, CoreError, Result, C32};

/// Patient-free description of the DICOM series an image came from (what a derived series must
/// reference). Patient identity is kept separately in [`Metadata::patient`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SeriesInfo {
    /// Modality, e.g. `MR`.
    pub modality: String,
    /// SeriesDescription (0008,103E).
    pub series_description: String,
    /// StudyInstanceUID of the source.
    pub study_instance_uid: String,
    /// SeriesInstanceUID of the source.
    pub series_instance_uid: String,
    /// FrameOfReferenceUID of the source.
    pub frame_of_reference_uid: String,
    /// SOPClassUID of the source instances.
    pub sop_class_uid: String,
    /// SOPInstanceUID of each source instance, in slice order.
    pub sop_instance_uids: Vec<String>,
    /// Manufacturer (0008,0070).
    pub manufacturer: String,
    /// MagneticFieldStrength in tesla, when given.
    pub field_strength_t: Option<f64>,
    /// RepetitionTime in ms, when given.
    pub repetition_time_ms: Option<f64>,
    /// EchoTime in ms, when given.
    pub echo_time_ms: Option<f64>,
    /// Transfer syntax UID the pixel data was stored with.
    pub transfer_syntax: String,
}

/// Identifying attributes of the patient, kept only so that a derived DICOM series can be filed
/// with its source; never printed by `amri info` nor written unless asked for.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PatientInfo {
    /// PatientName (0010,0010).
    pub name: String,
    /// PatientID (0010,0020).
    pub id: String,
    /// PatientBirthDate (0010,0030), `YYYYMMDD`.
    pub birth_date: String,
    /// PatientSex (0010,0040).
    pub sex: String,
}

/// What is known of an image besides its samples and geometry.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Metadata {
    /// Format it was read from, e.g. `NIfTI-1`, `DICOM`, `cfl`.
    pub source_format: String,
    /// Stored sample type in the source file, e.g. `int16`, `float32`, `complex64`.
    pub source_datatype: String,
    /// Free-text description (NIfTI `descrip`, provenance).
    pub description: String,
    /// DICOM series the data came from, if any.
    pub series: Option<SeriesInfo>,
    /// Patient identity, if the source carried it.
    pub patient: Option<PatientInfo>,
    /// Other format-specific attributes as text (HDF5 attributes, NIfTI intent...).
    pub attributes: BTreeMap<String, String>,
}

/// An image volume: data axes `[frame, slice, row, col]`, C order, so a 3-D image has one frame;
/// `affine` maps `(col, row, slice)` voxel indices to RAS+ millimetres.
#[derive(Clone, Debug, PartialEq)]
pub struct Volume<T> {
    /// Samples, `[frame, slice, row, col]`.
    pub data: Array4<T>,
    /// Voxel-to-world affine (RAS+, mm).
    pub affine: Affine,
    /// Description and provenance.
    pub meta: Metadata,
}

impl<T> Volume<T> {
    /// Volume from data `[frame, slice, row, col]` and an affine, with empty metadata.
    pub fn new(data: Array4<T>, affine: Affine) -> Self {
        Self {
            data,
            affine,
            meta: Metadata::default(),
        }
    }

    /// Shape as `[frames, slices, rows, cols]`.
    pub fn shape4(&self) -> [usize; 4] {
        let s = self.data.shape();
        [s[0], s[1], s[2], s[3]]
    }

    /// Number of slices.
    pub fn slices(&self) -> usize {
        self.data.len_of(Axis(1))
    }

    /// Voxel size in mm along `(col, row, slice)`.
    pub fn voxel_size(&self) -> [f64; 3] {
        self.affine.voxel_size()
    }

    /// View of one 2-D slice `[row, col]` of one frame.
    pub fn slice(&self, frame: usize, slice: usize) -> ArrayView2<'_, T> {
        self.data
            .index_axis(Axis(0), frame)
            .index_axis_move(Axis(0), slice)
    }

    /// Same geometry and metadata, other samples (shape must match).
    pub fn with_data<U>(&self, data: Array4<U>) -> Result<Volume<U>> {
        if data.shape() != self.data.shape() {
            return Err(CoreError::Shape(format!(
                "new data {:?} differs from volume {:?}",
                data.shape(),
                self.data.shape()
            )));
        }
        Ok(Volume {
            data,
            affine: self.affine,
            meta: self.meta.clone(),
        })
    }
}

impl Volume<f32> {
    /// Smallest and largest finite sample, or `None` when there is none.
    pub fn finite_range(&self) -> Option<(f32, f32)> {
        finite_range(self.data.iter().copied())
    }
}

/// Smallest and largest finite value of an iterator, `None` when there is none.
pub fn finite_range(it: impl Iterator<Item = f32>) -> Option<(f32, f32)> {
    it.filter(|v| v.is_finite()).fold(None, |acc, v| match acc {
        None => Some((v, v)),
        Some((lo, hi)) => Some((lo.min(v), hi.max(v))),
    })
}

/// Measured k-space of a scan: `data` is `[slice, coil, row, col]` complex64, centred (DC at
/// `(rows/2, cols/2)`, the layout `fft2c` produces), orthonormal scaling.
#[derive(Clone, Debug, PartialEq)]
pub struct KSpace {
    /// Samples `[slice, coil, row, col]`; unmeasured samples are zero.
    pub data: Array4<C32>,
    /// Sampling mask `[slice, row, col]`, 1 where measured and 0 elsewhere; `None` = fully sampled.
    pub mask: Option<Array3<f32>>,
    /// Fully sampled reference magnitude `[slice, row, col]` when known (fastMRI
    /// `reconstruction_rss`, or the image a simulation started from).
    pub reference: Option<Array3<f32>>,
    /// Coil sensitivity maps `[slice, coil, row, col]` when known.
    pub sensitivities: Option<Array4<C32>>,
    /// Noise-only samples `[sample, coil]` (same scaling as `data`) from the scan's noise
    /// adjustment readouts, when the file has them; used to estimate the coil noise covariance.
    pub noise: Option<Array2<C32>>,
    /// What `data` holds, as the file stated it; `None` when it did not say, which reads as
    /// [`MeasuredDomain::Kspace`] (use [`KSpace::domain()`]). Files carry it as the `domain`
    /// attribute (amri-io maps it).
    pub domain: Option<MeasuredDomain>,
    /// Standard deviation σ of the measurement noise **per complex sample** (σ² = E|n|², so
    /// σ/√2 per real component), in `data`'s units, when known (`amri simulate`, or 1 after
    /// prewhitening). Files carry it as the `noise_sigma` attribute, decimal text (amri-io maps
    /// it); f64 so that the text of any file reads back and rewrites unchanged.
    pub noise_sigma: Option<f64>,
    /// Voxel-to-world affine of the image grid the k-space belongs to.
    pub affine: Affine,
    /// Format-specific attributes as text (acquisition, acceleration, seed, protocol...); the
    /// typed fields above are not repeated here.
    pub attributes: BTreeMap<String, String>,
}

/// Which domain a measurement's samples live in: the one enum every crate uses for it (the
/// corruption operators of amri-ops, the classical methods, the learned prior).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum MeasuredDomain {
    /// Centred k-space `[slice, coil, row, col]` (file attribute `domain` absent or `"kspace"`).
    #[default]
    Kspace,
    /// A corrupted image `[slice, 1, row, col]` whose mask marks the measured pixels (`"image"`).
    Image,
    /// Gaussian random projections `[slice, 1, 1, m]` (`"projection"`).
    Projection,
}

impl MeasuredDomain {
    /// Every domain, in the order error messages list them.
    pub const ALL: [MeasuredDomain; 3] = [Self::Kspace, Self::Image, Self::Projection];

    /// The name files use for it (the `domain` attribute): `kspace`, `image`, `projection`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Kspace => "kspace",
            Self::Image => "image",
            Self::Projection => "projection",
        }
    }

    /// The domain a file names by [`MeasuredDomain::as_str`]; `None` for any other text.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|d| d.as_str() == name)
    }
}

impl std::fmt::Display for MeasuredDomain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl KSpace {
    /// What `data` holds: the `domain` field, or k-space when the file did not say.
    pub fn domain(&self) -> MeasuredDomain {
        self.domain.unwrap_or_default()
    }

    /// K-space with no mask, reference or maps, identity geometry.
    pub fn new(data: Array4<C32>) -> Self {
        Self {
            data,
            mask: None,
            reference: None,
            sensitivities: None,
            noise: None,
            domain: None,
            noise_sigma: None,
            affine: Affine::IDENTITY,
            attributes: BTreeMap::new(),
        }
    }

    /// Shape as `[slices, coils, rows, cols]`.
    pub fn shape4(&self) -> [usize; 4] {
        let s = self.data.shape();
        [s[0], s[1], s[2], s[3]]
    }

    /// Checks that mask, reference and maps agree with the data's shape and that samples are finite.
    pub fn validate(&self) -> Result<()> {
        let [s, c, r, k] = self.shape4();
        if let Some(m) = &self.mask {
            if m.shape() != [s, r, k] {
                return Err(CoreError::Shape(format!(
                    "mask {:?} does not match k-space [slice, row, col] = {:?}",
                    m.shape(),
                    [s, r, k]
                )));
            }
        }
        // A projection measurement's data is `[slice, 1, 1, m]`; its reference keeps the image
        // grid named by the `image_rows`/`image_cols` attributes.
        let (rr, rk) = if self.domain() == MeasuredDomain::Projection {
            let get = |key: &str| {
                self.attributes
                    .get(key)
                    .and_then(|v| v.parse::<usize>().ok())
                    .ok_or_else(|| {
                        CoreError::Invalid(format!("projection data lacks the '{key}' attribute"))
                    })
            };
            (get("image_rows")?, get("image_cols")?)
        } else {
            (r, k)
        };
        if let Some(m) = &self.reference {
            if m.shape() != [s, rr, rk] {
                return Err(CoreError::Shape(format!(
                    "reference {:?} does not match the image grid [slice, row, col] = {:?}",
                    m.shape(),
                    [s, rr, rk]
                )));
            }
        }
        if let Some(m) = &self.sensitivities {
            if m.shape() != [s, c, r, k] {
                return Err(CoreError::Shape(format!(
                    "sensitivity maps {:?} do not match k-space {:?}",
                    m.shape(),
                    [s, c, r, k]
                )));
            }
        }
        if let Some(n) = &self.noise {
            if n.ncols() != c {
                return Err(CoreError::Shape(format!(
                    "noise samples {:?} [sample, coil] do not match the k-space's {c} coils",
                    n.shape()
                )));
            }
            if n.iter().any(|v| !v.re.is_finite() || !v.im.is_finite()) {
                return Err(CoreError::Invalid(
                    "noise samples hold NaN or infinite values".into(),
                ));
            }
        }
        let bad = |n: usize, of: usize, what: &str| {
            CoreError::Invalid(format!("{what} holds {n} NaN or infinite values (of {of})"))
        };
        let n = self
            .data
            .iter()
            .filter(|v| !v.re.is_finite() || !v.im.is_finite())
            .count();
        if n > 0 {
            return Err(bad(n, self.data.len(), "k-space"));
        }
        for (what, a) in [("mask", &self.mask), ("reference", &self.reference)] {
            if let Some(a) = a {
                let n = a.iter().filter(|v| !v.is_finite()).count();
                if n > 0 {
                    return Err(bad(n, a.len(), what));
                }
            }
        }
        if let Some(m) = &self.sensitivities {
            let n = m
                .iter()
                .filter(|v| !v.re.is_finite() || !v.im.is_finite())
                .count();
            if n > 0 {
                return Err(bad(n, m.len(), "sensitivity maps"));
            }
        }
        Ok(())
    }

    /// Fraction of `[row, col]` positions measured in slice 0 (1 when there is no mask).
    pub fn sampled_fraction(&self) -> f64 {
        match &self.mask {
            None => 1.0,
            Some(m) => {
                let s0 = m.index_axis(Axis(0), 0);
                let n = s0.len().max(1);
                s0.iter().filter(|v| **v != 0.0).count() as f64 / n as f64
            }
        }
    }

    /// Fraction of `[slice, row, col]` positions measured over all slices (1 when there is no
    /// mask): the mean of the slices' fractions, for files whose slices have their own masks.
    pub fn mean_sampled_fraction(&self) -> f64 {
        match &self.mask {
            None => 1.0,
            Some(m) => m.iter().filter(|v| **v != 0.0).count() as f64 / m.len().max(1) as f64,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn noise_samples_must_have_the_data_coil_count_and_be_finite() {
        let mut k = KSpace::new(Array4::zeros((1, 3, 2, 2)));
        k.noise = Some(Array2::zeros((16, 3)));
        assert!(k.validate().is_ok());
        k.noise = Some(Array2::zeros((16, 2)));
        let e = k.validate().unwrap_err().to_string();
        assert!(e.contains("3 coils"), "{e}");
        let mut n = Array2::zeros((16, 3));
        n[[4, 1]] = C32::new(f32::NAN, 0.0);
        k.noise = Some(n);
        assert!(k.validate().unwrap_err().to_string().contains("NaN"));
    }

    #[test]
    fn domain_names_round_trip_and_unstated_reads_as_kspace() {
        let mut k = KSpace::new(Array4::zeros((1, 1, 2, 2)));
        assert_eq!(k.domain(), MeasuredDomain::Kspace);
        for (v, d) in [
            ("kspace", MeasuredDomain::Kspace),
            ("image", MeasuredDomain::Image),
            ("projection", MeasuredDomain::Projection),
        ] {
            assert_eq!(MeasuredDomain::from_name(v), Some(d));
            assert_eq!(d.to_string(), v);
            k.domain = Some(d);
            assert_eq!(k.domain(), d);
        }
        assert_eq!(MeasuredDomain::from_name("sinogram"), None);
    }

    #[test]
    fn mean_sampled_fraction_averages_slices_and_sampled_fraction_is_slice_0() {
        let data = ndarray::Array4::<C32>::zeros((2, 1, 2, 4));
        let mut mask = ndarray::Array3::<f32>::zeros((2, 2, 4));
        mask.slice_mut(ndarray::s![0, .., 0]).fill(1.0); // slice 0: 2 of 8
        mask.slice_mut(ndarray::s![1, .., 0..3]).fill(1.0); // slice 1: 6 of 8
        let mut k = KSpace::new(data);
        assert_eq!(k.mean_sampled_fraction(), 1.0);
        k.mask = Some(mask);
        assert_eq!(k.sampled_fraction(), 0.25);
        assert_eq!(k.mean_sampled_fraction(), 0.5);
    }

    #[test]
    fn kspace_validate_catches_mismatch_and_nan() {
        let mut k = KSpace::new(Array4::zeros((2, 3, 4, 5)));
        assert!(k.validate().is_ok());
        k.mask = Some(Array3::ones((2, 4, 4)));
        assert!(k.validate().is_err());
        k.mask = Some(Array3::ones((2, 4, 5)));
        assert!(k.validate().is_ok());
        k.mask.as_mut().unwrap()[[1, 2, 3]] = f32::NAN;
        let e = k.validate().unwrap_err().to_string();
        assert!(
            e.contains("mask holds 1 NaN or infinite values (of 40)"),
            "{e}"
        );
        k.mask = Some(Array3::ones((2, 4, 5)));
        k.data[[0, 0, 0, 0]] = C32::new(f32::NAN, 0.0);
        k.data[[1, 2, 3, 4]] = C32::new(0.0, f32::NEG_INFINITY);
        let e = k.validate().unwrap_err().to_string();
        assert!(
            e.contains("k-space holds 2 NaN or infinite values (of 120)"),
            "{e}"
        );
    }

    #[test]
    fn slice_view_indexes_frame_then_slice() {
        let mut d = Array4::<f32>::zeros((2, 3, 4, 5));
        d[[1, 2, 3, 4]] = 7.0;
        let v = Volume::new(d, Affine::IDENTITY);
        assert_eq!(v.slice(1, 2)[[3, 4]], 7.0);
        assert_eq!(v.finite_range(), Some((0.0, 7.0)));
    }
}

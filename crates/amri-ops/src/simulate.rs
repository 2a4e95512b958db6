//! Simulated acquisitions: measured data from magnitude images, for demos, tests, benchmarks and
//! training sets (no package ships real raw k-space).
//!
//! For slice `s` of an image `x_s` (`[rows, cols]`, magnitude):
//! 1. optionally a smooth synthetic phase `φ_s` makes the image complex, `x_s ← x_s·e^{iφ_s}`, so
//!    k-space is not Hermitian-symmetric (real scans are complex);
//! 2. the corruption model draws slice `s`'s operator `A_s` ([`crate::corruption`]: scan index =
//!    slice index), SENSE with synthetic coil maps when `coils > 1`;
//! 3. `y_s = A_s x_s + n`, with complex Gaussian noise of standard deviation
//!    `σ = noise_level · max|x|` (max over the whole volume) on measured entries only.
//!
//! The result is a [`KSpace`]: for k-space corruptions `data` is `[slice, coil, row, col]` centred
//! k-space; for image-domain corruptions (pixel, boxes) it holds the corrupted complex image as
//! `[slice, 1, row, col]` with [`KSpace::domain`] `Image`; for Gaussian projections it holds
//! `[slice, 1, 1, m]` with domain `Projection` (the operator is re-drawn from
//! the stored acquisition and seed). The mask (1 = measured), the reference magnitude and, when
//! `store_maps` is set, the coil maps are stored with it. Same acquisition and seed, same data.
//!
//! Steps 1–3 for one slice are [`Recipe`]: training builds its data with the same recipe.

use std::collections::BTreeMap;

use amri_core::{KSpace, Volume, C32};
use ndarray::{s, Array3, Array4, ArrayView2, Axis};
use rayon::prelude::*;

use crate::coils::{smooth_phase, synthetic_maps};
use crate::corruption::{Corruption, Domain, Measurement};
use crate::error::{OpsError, Result};
use crate::noise::Noise;

pub use crate::acquisition::Acquisition;

/// The measurement recipe of one acquisition for `[rows, cols]` slices, the one that [`simulate`]
/// and training (amri-diffusion's `TrainingSet`) share, so both produce the same data from the
/// same seed. For scan `i` (simulate: slice index; training: scan index):
/// - complex image: the magnitude times `smooth_phase(rows, cols, seed + i)` when
///   `synthetic_phase` is set ([`Recipe::complex_image`]);
/// - operator `A_i`: [`Corruption::measurement`]`(i, maps)`, drawn from `(seed, i)` only, with the
///   synthetic coil maps `synthetic_maps(coils, rows, cols, seed)` when `coils > 1`;
/// - noise: complex Gaussian of σ per complex sample on measured entries, drawn from
///   [`Recipe::noise_seed`]`(i) = seed ^ (0x5EED_0000 + i)`.
#[derive(Clone, Debug)]
pub struct Recipe {
    acq: Acquisition,
    corruption: Corruption,
    maps: Option<Array3<C32>>,
}

impl Recipe {
    /// The recipe of `acq` (validated by [`Corruption::new`]) for `[rows, cols]` slices. The
    /// corruption model is noiseless; [`Recipe::measure_slice`] takes the absolute σ.
    pub fn new(acq: &Acquisition, rows: usize, cols: usize) -> Result<Self> {
        let corruption = Corruption::new(acq, rows, cols)?;
        let maps = (acq.coils > 1).then(|| synthetic_maps(acq.coils, rows, cols, Some(acq.seed)));
        Ok(Self {
            acq: acq.clone(),
            corruption,
            maps,
        })
    }

    /// The acquisition.
    pub fn acquisition(&self) -> &Acquisition {
        &self.acq
    }

    /// The (noiseless) corruption model that draws every scan's `A` and `Ã`.
    pub fn corruption(&self) -> &Corruption {
        &self.corruption
    }

    /// The synthetic coil maps `[coils, rows, cols]` when `coils > 1`.
    pub fn maps(&self) -> Option<&Array3<C32>> {
        self.maps.as_ref()
    }

    /// Scan `scan`'s complex image, row-major `[rows, cols]`: `magnitude` times the smooth
    /// synthetic phase of seed `seed + scan` when the acquisition asks for it.
    pub fn complex_image(&self, scan: u64, magnitude: ArrayView2<f32>) -> Vec<C32> {
        let mut x: Vec<C32> = magnitude.iter().map(|v| C32::new(*v, 0.0)).collect();
        if self.acq.synthetic_phase {
            let (rows, cols) = magnitude.dim();
            let ph = smooth_phase(rows, cols, self.acq.seed.wrapping_add(scan));
            x.iter_mut().zip(ph.iter()).for_each(|(v, p)| *v *= *p);
        }
        x
    }

    /// Seed of scan `scan`'s measurement noise.
    pub fn noise_seed(&self, scan: u64) -> u64 {
        crate::seed::noise_seed(self.acq.seed, scan)
    }

    /// Measures scan `scan`'s complex image `x` (row-major `[rows, cols]`): draws `A_scan` (SENSE
    /// with the synthetic maps when `coils > 1`) and returns it with `y = A_scan x + n`, `n` of
    /// σ `sigma` per complex sample (0: none) on measured entries only.
    pub fn measure_slice(
        &self,
        scan: u64,
        x: &[C32],
        sigma: f32,
    ) -> Result<(Measurement, Vec<C32>)> {
        let m = self.corruption.measurement(scan, self.maps.as_ref())?;
        let y = self.measure(&m, scan, x, sigma)?;
        Ok((m, y))
    }

    /// `y = A x + n` for scan `scan` with an operator `a` already drawn by
    /// [`Recipe::corruption`] for that scan (e.g. cached): noise of σ `sigma` per complex sample
    /// (0: none) from [`Recipe::noise_seed`]`(scan)`, on measured entries only.
    pub fn measure(&self, a: &Measurement, scan: u64, x: &[C32], sigma: f32) -> Result<Vec<C32>> {
        a.measure_with(x, Noise::from_sigma(sigma)?, self.noise_seed(scan))
    }
}

/// One slice's measured samples, its mask and the measurement domain.
type SliceMeasurement = (Vec<C32>, Option<ndarray::Array2<f32>>, Domain);

/// Simulates the measurement of frame `frame` of every slice of `vol` under `acq` ([`Recipe`]).
pub fn simulate(vol: &Volume<f32>, frame: usize, acq: &Acquisition) -> Result<KSpace> {
    let [frames, slices, rows, cols] = vol.shape4();
    if frame >= frames {
        return Err(OpsError::param(
            "frame",
            format!("must be below the volume's {frames} frames, got {frame}"),
        ));
    }
    let recipe = Recipe::new(acq, rows, cols)?;
    let img = vol.data.index_axis(Axis(0), frame);
    if img.iter().any(|v| !v.is_finite()) {
        return Err(OpsError::param("image", "holds NaN or infinite values"));
    }
    let peak = img.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let sigma = acq.noise_level * peak;

    let per_slice: Vec<Result<SliceMeasurement>> = (0..slices)
        .into_par_iter()
        .map(|s| {
            let x = recipe.complex_image(s as u64, img.index_axis(Axis(0), s));
            let (m, y) = recipe.measure_slice(s as u64, &x, sigma)?;
            Ok((y, m.mask().cloned(), m.domain))
        })
        .collect();
    let mut outs = Vec::with_capacity(slices);
    for r in per_slice {
        outs.push(r?);
    }
    let domain = outs.first().map(|o| o.2).unwrap_or(Domain::Kspace);
    let (c, r2, c2) = match domain {
        Domain::Kspace => (acq.coils, rows, cols),
        Domain::Image => (1, rows, cols),
        Domain::Projection => (1, 1, outs.first().map(|o| o.0.len()).unwrap_or(0)),
    };
    let mut data = Array4::<C32>::zeros((slices, c, r2, c2));
    let mut mask =
        (domain != Domain::Projection).then(|| Array3::<f32>::zeros((slices, rows, cols)));
    for (s, (y, m, _)) in outs.into_iter().enumerate() {
        let view = ndarray::ArrayView3::from_shape((c, r2, c2), &y)
            .map_err(|e| OpsError::param("measurement", e.to_string()))?;
        data.slice_mut(s![s, .., .., ..]).assign(&view);
        if let (Some(mask), Some(m)) = (mask.as_mut(), m) {
            mask.slice_mut(s![s, .., ..]).assign(&m);
        }
    }
    let mut k = KSpace::new(data);
    k.mask = mask;
    k.reference = Some(img.mapv(|v| v.abs()));
    k.affine = vol.affine;
    if acq.store_maps {
        if let Some(m) = recipe.maps() {
            let mut all = Array4::<C32>::zeros((slices, acq.coils, rows, cols));
            for mut sl in all.outer_iter_mut() {
                sl.assign(m);
            }
            k.sensitivities = Some(all);
        }
    }
    k.domain = Some(domain);
    k.noise_sigma = Some(decimal_f64(acq.noise_level * peak));
    let mut attrs = BTreeMap::new();
    attrs.insert("simulated".into(), "true".into());
    attrs.insert("image_rows".into(), rows.to_string());
    attrs.insert("image_cols".into(), cols.to_string());
    attrs.insert("seed".into(), acq.seed.to_string());
    attrs.insert(
        "acquisition".into(),
        serde_json::to_string(acq).map_err(|e| OpsError::param("acquisition", e.to_string()))?,
    );
    k.attributes = attrs;
    Ok(k)
}

/// `v` widened to f64 through its shortest decimal text, so the σ held in memory is the one a
/// file round trip reads back (files store it as text, and earlier versions kept it as text).
fn decimal_f64(v: f32) -> f64 {
    v.to_string().parse().unwrap_or(f64::from(v))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::corruption::{CorruptionSpec, KspacePattern};
    use amri_core::fft::ifft2c;
    use amri_core::Affine;

    fn acq(spec: CorruptionSpec, coils: usize) -> Acquisition {
        Acquisition {
            corruption: spec,
            delta: 0.1,
            further: Default::default(),
            further_box_size: None,
            coils,
            synthetic_phase: true,
            noise_level: 0.0,
            seed: 7,
            store_maps: true,
        }
    }

    fn phantom() -> Volume<f32> {
        let d = Array4::from_shape_fn((1, 3, 32, 24), |(_, s, i, j)| {
            let (y, x) = (i as f32 - 16.0, j as f32 - 12.0);
            if x * x / 100.0 + y * y / 196.0 < 1.0 {
                1.0 + s as f32 + 0.01 * i as f32
            } else {
                0.0
            }
        });
        Volume::new(d, Affine::from_spacing([1.0, 1.0, 2.0]))
    }

    #[test]
    fn single_coil_full_sampling_inverts_to_the_phased_image() {
        let spec = CorruptionSpec::Kspace {
            pattern: KspacePattern::Equispaced,
            acceleration: 1.0,
            center_fraction: 0.1,
            axis: 1,
        };
        let v = phantom();
        let k = simulate(&v, 0, &acq(spec, 1)).unwrap();
        assert_eq!(k.shape4(), [3, 1, 32, 24]);
        let img = ifft2c(&k.data);
        for s in 0..3 {
            for i in 0..32 {
                for j in 0..24 {
                    let got = img[[s, 0, i, j]].norm();
                    assert!((got - v.data[[0, s, i, j]]).abs() < 1e-4);
                }
            }
        }
        // The synthetic phase makes the image complex: some pixel has a sizeable imaginary part.
        assert!(img.iter().any(|c| c.im.abs() > 0.1));
        assert_eq!(k.domain, Some(Domain::Kspace));
    }

    #[test]
    fn multicoil_undersampled_zero_outside_mask_and_reproducible() {
        let spec = CorruptionSpec::Kspace {
            pattern: KspacePattern::Random,
            acceleration: 4.0,
            center_fraction: 0.08,
            axis: 1,
        };
        let mut a = acq(spec, 4);
        a.noise_level = 0.01;
        let v = phantom();
        let k1 = simulate(&v, 0, &a).unwrap();
        let k2 = simulate(&v, 0, &a).unwrap();
        assert_eq!(k1, k2);
        let mask = k1.mask.as_ref().unwrap();
        for ((s, _c, i, j), val) in k1.data.indexed_iter() {
            if mask[[s, i, j]] == 0.0 {
                assert_eq!(*val, C32::new(0.0, 0.0));
            }
        }
        // Slices draw different masks; a new seed draws different data.
        assert_ne!(mask.index_axis(Axis(0), 0), mask.index_axis(Axis(0), 1));
        a.seed = 8;
        assert_ne!(simulate(&v, 0, &a).unwrap().data, k1.data);
        assert_eq!(k1.sensitivities.as_ref().unwrap().shape(), &[3, 4, 32, 24]);
    }

    #[test]
    fn image_domain_corruption_hides_pixels() {
        let v = phantom();
        let k = simulate(&v, 0, &acq(CorruptionSpec::Pixel { p: 0.5 }, 1)).unwrap();
        assert_eq!(k.domain, Some(Domain::Image));
        let m = k.mask.as_ref().unwrap();
        let kept = m.iter().filter(|x| **x != 0.0).count() as f64 / m.len() as f64;
        assert!((kept - 0.5).abs() < 0.08, "{kept}");
        for ((s, _, i, j), val) in k.data.indexed_iter() {
            let want = if m[[s, i, j]] != 0.0 {
                v.data[[0, s, i, j]]
            } else {
                0.0
            };
            assert!((val.norm() - want).abs() < 1e-5);
        }
    }

    #[test]
    fn bad_parameters_are_errors() {
        let v = phantom();
        let spec = CorruptionSpec::Pixel { p: 0.5 };
        let mut a = acq(spec, 0);
        assert!(simulate(&v, 0, &a).is_err());
        a.coils = 1;
        assert!(simulate(&v, 1, &a).is_err());
        a.noise_level = f32::NAN;
        assert!(simulate(&v, 0, &a).is_err());
    }
}

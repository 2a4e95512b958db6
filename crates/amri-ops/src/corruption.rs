//! The corruption model of ambient diffusion training (Daras et al. 2023).
//!
//! Every training scan `i` was measured as `y = A_i x_0 + n` by an operator drawn from a
//! [`CorruptionSpec`]; the network sees a *further* corrupted input built with `Ã = B·A_i`, which
//! hides a further fraction `δ` of what `A_i` kept, and is penalised only where `A_i` measured.
//!
//! | spec | `A` keeps | `Ã = B·A` additionally hides |
//! | --- | --- | --- |
//! | `kspace` (random / equispaced / equispaced_fraction) | phase-encode lines + ACS centre | each kept non-ACS line w.p. `δ` (all ACS lines stay) |
//! | `kspace` (poisson) | Poisson-disc points + calibration box | each kept point outside the box w.p. `δ` |
//! | `pixel` | each pixel w.p. `1 − p` | each kept pixel w.p. `δ` |
//! | `boxes` | all but `count` boxes | one more box (size `further_box_size`, default the same size) |
//! | `gaussian_cs` | `m` random projections | each row w.p. `δ` |
//!
//! So for all but `boxes` the expected fraction of `A`'s removable kept set that `Ã` hides is
//! exactly `δ`; Ã's kept set is always a subset of A's (ACS always included).
//!
//! Randomness: `A_i` depends only on `(seed, i)`. `Ã` depends on `(seed, i)` under
//! [`FurtherMode::PerScan`] (the **default**: the published ambient-diffusion code draws the
//! further mask once per training image, which keeps the target of the loss fixed and makes runs
//! reproducible), or on `(seed, i, step)` under [`FurtherMode::PerStep`] (fresh `Ã` every step, a
//! stronger augmentation). The model is read from an [`Acquisition`], the one description of a
//! scan's acquisition; it draws noiseless operators, and noise is a separate [`Noise`] (σ per
//! complex sample) that [`Measurement::measure_with`] adds to measured entries only.

use amri_core::C32;
use ndarray::{Array2, Array3, Axis};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::acquisition::Acquisition;
use crate::blocks::{draw_box, hide_box, Blocks, BoxConvention};
use crate::error::{OpsError, Result};
use crate::fourier::FourierSampling;
use crate::gaussian_cs::{Entries, GaussianCs, Storage};
use crate::linop::LinearOperator;
use crate::masks::cartesian::cartesian_mask;
use crate::masks::poisson::{poisson_mask, PoissonParams};
use crate::masks::{check_acceleration, check_center_fraction, MAX_ACCELERATION};
use crate::noise::Noise;
use crate::pixel_mask::{random_pixel_mask, PixelMask};
use crate::seed::{derive, TAG_A, TAG_FURTHER};
use crate::sense::Sense;

/// K-space sampling pattern of a [`CorruptionSpec::Kspace`] (the one pattern enum, from
/// [`crate::masks`]).
pub use crate::masks::KspacePattern;

fn default_axis() -> usize {
    1
}

/// What kind of measurement operator `A` is drawn for each scan (serde: tagged by `type`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum CorruptionSpec {
    /// Undersampled k-space `y = M ⊙ F x` (single coil) or SENSE (with coil maps).
    Kspace {
        /// Line or point pattern.
        pattern: KspacePattern,
        /// Acceleration as the mask function defines it (see [`crate::masks`]).
        acceleration: f64,
        /// Fraction of fully sampled centre lines (Poisson: calibration box side fraction).
        center_fraction: f64,
        /// Undersampled axis of `[rows, cols]` (default 1 = columns = phase encode).
        #[serde(default = "default_axis")]
        axis: usize,
    },
    /// Inpainting: each pixel hidden independently with probability `p`.
    Pixel {
        /// Probability of hiding a pixel, in `[0, 1]`.
        p: f64,
    },
    /// `count` boxes of `size = [height, width]` pixels hidden.
    Boxes {
        /// Number of boxes (≥ 1; they may overlap).
        count: usize,
        /// Box `[height, width]` in pixels.
        size: [usize; 2],
        /// Placement convention (default `inside`).
        #[serde(default)]
        convention: BoxConvention,
    },
    /// Gaussian compressed sensing with `m` rows, or `m = round(ratio · rows · cols)`.
    GaussianCs {
        /// Number of measurements (give `m` or `ratio`, not both).
        #[serde(default)]
        m: Option<usize>,
        /// Measurements per image pixel, in `(0, 1]`.
        #[serde(default)]
        ratio: Option<f64>,
        /// Real or complex entries (default real).
        #[serde(default)]
        entries: Entries,
    },
}

/// When the further corruption `Ã` is redrawn.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FurtherMode {
    /// One `Ã` per scan, fixed across training steps (default, as the published code).
    #[default]
    PerScan,
    /// A fresh `Ã` at every training step.
    PerStep,
}

/// Largest number of boxes a [`CorruptionSpec::Boxes`] may hide.
pub const MAX_BOXES: usize = 1000;

impl CorruptionSpec {
    /// Checks every parameter's range that does not depend on the image shape (the one copy of
    /// these rules; [`Corruption::new`] adds the shape-dependent ones). Errors are
    /// [`OpsError::Invalid`] keyed as in TOML (`acceleration`, `p`, `count`, ...).
    pub fn validate(&self) -> Result<()> {
        match self {
            CorruptionSpec::Kspace {
                pattern,
                acceleration,
                center_fraction,
                axis,
            } => {
                check_acceleration(*pattern, *acceleration, MAX_ACCELERATION)?;
                check_center_fraction(*center_fraction)?;
                if *axis > 1 {
                    return Err(OpsError::invalid(
                        "axis",
                        axis,
                        "0 (rows) or 1 (columns, phase encode)",
                    ));
                }
            }
            CorruptionSpec::Pixel { p } => {
                if !(0.0..=1.0).contains(p) {
                    return Err(OpsError::invalid("p", p, "a probability in [0, 1]"));
                }
            }
            CorruptionSpec::Boxes { count, size, .. } => {
                if !(1..=MAX_BOXES).contains(count) {
                    return Err(OpsError::invalid(
                        "count",
                        count,
                        format!("an integer in [1, {MAX_BOXES}]"),
                    ));
                }
                check_box_size("size", *size)?;
            }
            CorruptionSpec::GaussianCs { m, ratio, .. } => {
                Corruption::gaussian_m(*m, *ratio, 1)?;
            }
        }
        Ok(())
    }
}

/// A box `[height, width]` must be at least one pixel each way.
pub(crate) fn check_box_size(key: &str, size: [usize; 2]) -> Result<()> {
    if size[0] == 0 || size[1] == 0 {
        return Err(OpsError::invalid(
            key,
            format!("{size:?}"),
            "[height, width] in pixels, both ≥ 1",
        ));
    }
    Ok(())
}

/// The rule on the further-corruption fraction `δ`: in `[0, 1]` (key `delta`).
pub fn check_delta(delta: f64) -> Result<()> {
    if !(0.0..=1.0).contains(&delta) {
        return Err(OpsError::invalid("delta", delta, "a fraction in [0, 1]"));
    }
    Ok(())
}

/// Which domain an operator's output (and its mask) lives in: amri-core's one domain enum.
/// `Kspace`: k-space mask, DC at `(rows/2, cols/2)`, output `[rows, cols]` or
/// `[coils, rows, cols]`; `Image`: image-domain mask (pixel, boxes), output `[rows, cols]`;
/// `Projection`: random projections, output `[m]`.
pub use amri_core::MeasuredDomain as Domain;

/// The set of measurements an operator keeps.
#[derive(Clone, Debug, PartialEq)]
pub enum Kept {
    /// A `[rows, cols]` 0/1 mask (1 = kept), in the domain given by [`Measurement::domain`].
    Mask(Array2<f32>),
    /// Generator row ids of a Gaussian projection that are kept, out of `total` rows of `A`.
    Rows {
        /// Kept generator row ids (ascending).
        ids: Vec<usize>,
        /// Rows of the scan's original `A`.
        total: usize,
    },
}

/// A drawn measurement operator with its kept set, protected (ACS) set and noise level.
pub struct Measurement {
    /// The linear operator (`[rows, cols]` image in; output as [`Domain`] says).
    pub op: Box<dyn LinearOperator>,
    /// Domain of the kept set.
    pub domain: Domain,
    /// What the operator keeps (the mask channels of the network input).
    pub kept: Kept,
    /// For k-space: the `[rows, cols]` 0/1 calibration (ACS) region that `Ã` never removes.
    pub acs: Option<Array2<f32>>,
    /// Noise model of the measurement.
    pub noise: Noise,
    gaussian: Option<GaussianCs>,
    maps: Option<Array3<C32>>,
}

impl std::fmt::Debug for Measurement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Measurement")
            .field("op", &self.op.name())
            .field("domain", &self.domain)
            .field("noise", &self.noise)
            .finish_non_exhaustive()
    }
}

impl Measurement {
    /// The noiseless single-image operator of a *measured* scan with the `[rows, cols]` 0/1
    /// `mask` it was sampled with: centred orthonormal single-coil k-space sampling
    /// ([`Domain::Kspace`], `acs` its calibration region) or a pixel mask ([`Domain::Image`],
    /// `acs` ignored). Errors for [`Domain::Projection`] or a malformed mask.
    pub fn from_mask(domain: Domain, mask: Array2<f32>, acs: Option<Array2<f32>>) -> Result<Self> {
        let noise = Noise::from_sigma(0.0)?;
        let (op, acs): (Box<dyn LinearOperator>, _) = match domain {
            Domain::Kspace => (Box::new(FourierSampling::new(mask.clone())?), acs),
            Domain::Image => (Box::new(PixelMask::new(mask.clone())?), None),
            Domain::Projection => {
                return Err(OpsError::param(
                    "domain",
                    "a projection measurement has no mask",
                ))
            }
        };
        Ok(Self {
            op,
            domain,
            kept: Kept::Mask(mask),
            acs,
            noise,
            gaussian: None,
            maps: None,
        })
    }

    /// The `[rows, cols]` mask (1 = kept) for mask-based operators, `None` for projections.
    pub fn mask(&self) -> Option<&Array2<f32>> {
        match &self.kept {
            Kept::Mask(m) => Some(m),
            Kept::Rows { .. } => None,
        }
    }

    /// Number of kept measurements per coil (mask ones, or kept rows).
    pub fn kept_count(&self) -> usize {
        match &self.kept {
            Kept::Mask(m) => m.iter().filter(|v| **v != 0.0).count(),
            Kept::Rows { ids, .. } => ids.len(),
        }
    }

    /// `y = A x + n`: noise drawn from `noise_seed` on measured entries only (zeros stay 0).
    /// `x` is the flattened `[rows, cols]` image; [`OpsError::Shape`] on a wrong length.
    pub fn measure(&self, x: &[C32], noise_seed: u64) -> Result<Vec<C32>> {
        self.measure_with(x, self.noise, noise_seed)
    }

    /// As [`Measurement::measure`] with the noise model `noise` in place of the measurement's own
    /// (the same operator measured at another noise level).
    pub fn measure_with(&self, x: &[C32], noise: Noise, noise_seed: u64) -> Result<Vec<C32>> {
        if x.len() != self.op.isize() {
            return Err(OpsError::shape(
                "Measurement::measure image",
                self.op.ishape(),
                &[x.len()],
            ));
        }
        let mut y = vec![C32::new(0.0, 0.0); self.op.osize()];
        self.op.forward(x, &mut y);
        if noise.sigma() > 0.0 {
            match &self.kept {
                Kept::Mask(m) => {
                    let flat: Vec<f32> = m.iter().copied().collect();
                    noise.add_masked(&mut y, &flat, noise_seed)?;
                }
                Kept::Rows { .. } => noise.add(&mut y, noise_seed),
            }
        }
        Ok(y)
    }
}

/// How the further corruption `Ã` hides part of a kept set: whole lines or single samples.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FurtherStructure {
    /// Hide whole lines along `axis` of the `[rows, cols]` mask (0: rows, 1: columns = phase
    /// encode): each kept line outside the ACS region w.p. `δ` (Cartesian line masks).
    Lines {
        /// The axis the lines are indexed by (a line is `mask.index_axis(axis, k)`).
        axis: usize,
    },
    /// Hide single samples: each kept sample outside the ACS region w.p. `δ` (Poisson-disc
    /// k-space points, image pixels).
    Points,
}

impl FurtherStructure {
    /// The structure of a measured k-space `[rows, cols]` mask: `Lines { axis: 1 }` if every
    /// column is all measured or all unmeasured (phase-encode lines, the usual Cartesian case),
    /// else `Lines { axis: 0 }` if every row is, else `Points`.
    pub fn of_kspace_mask(mask: &Array2<f32>) -> Self {
        let constant = |ax: usize| {
            mask.axis_iter(Axis(ax)).all(|line| {
                let first = line.iter().next().map(|v| *v != 0.0);
                line.iter().all(|v| Some(*v != 0.0) == first)
            })
        };
        if constant(1) {
            FurtherStructure::Lines { axis: 1 }
        } else if constant(0) {
            FurtherStructure::Lines { axis: 0 }
        } else {
            FurtherStructure::Points
        }
    }
}

/// The seed of `Ã` for `(scan, step)` under corruption seed `seed` and `mode` (the one
/// derivation [`Corruption::further`] and training from measured files share).
pub fn further_seed(seed: u64, mode: FurtherMode, scan: u64, step: u64) -> u64 {
    match mode {
        FurtherMode::PerScan => derive(&[seed, scan, TAG_FURTHER]),
        FurtherMode::PerStep => derive(&[seed, scan, TAG_FURTHER, step]),
    }
}

/// The kept set of `Ã = B·A` for an arbitrary `[rows, cols]` 0/1 kept mask `mask` (any `A`:
/// drawn by a [`Corruption`] or measured by a scanner): hides each kept line
/// ([`FurtherStructure::Lines`]) or sample ([`FurtherStructure::Points`]) that is not in the
/// `acs` region (`[rows, cols]`, non-zero = calibration; `None`: no protected region) with
/// probability `delta`, one uniform draw of `rng` per candidate in index order. The result is a
/// subset of `mask` that contains all of `mask ∩ acs`. Errors on a shape mismatch, `delta`
/// outside `[0, 1]` or a line axis other than 0 or 1.
pub fn hide_further(
    mask: &Array2<f32>,
    acs: Option<&Array2<f32>>,
    structure: FurtherStructure,
    delta: f64,
    rng: &mut ChaCha8Rng,
) -> Result<Array2<f32>> {
    check_delta(delta)?;
    if let Some(a) = acs {
        if a.dim() != mask.dim() {
            return Err(OpsError::shape("ACS region", mask.shape(), a.shape()));
        }
    }
    let protected = |idx: (usize, usize)| acs.is_some_and(|a| a[idx] != 0.0);
    let mut m2 = mask.clone();
    match structure {
        FurtherStructure::Points => {
            for ((idx, v), m) in m2.indexed_iter_mut().zip(mask.iter()) {
                if *m != 0.0 && !protected(idx) && rng.random::<f64>() < delta {
                    *v = 0.0;
                }
            }
        }
        FurtherStructure::Lines { axis } => {
            if axis > 1 {
                return Err(OpsError::invalid("axis", axis, "0 (rows) or 1 (columns)"));
            }
            let ax = Axis(axis);
            for k in 0..m2.len_of(ax) {
                let kept = mask.index_axis(ax, k).iter().any(|v| *v != 0.0);
                let is_acs = acs.is_some_and(|a| a.index_axis(ax, k).iter().any(|v| *v != 0.0));
                if kept && !is_acs && rng.random::<f64>() < delta {
                    m2.index_axis_mut(ax, k).fill(0.0);
                }
            }
        }
    }
    Ok(m2)
}

/// Draws `A` per scan and `Ã = B·A` per scan or per step for `[rows, cols]` images.
#[derive(Clone, Debug)]
pub struct Corruption {
    acquisition: Acquisition,
    rows: usize,
    cols: usize,
}

impl Corruption {
    /// The corruption model of `acquisition` (its `corruption`, `delta`, `further`,
    /// `further_box_size`; `seed` fixes every draw) for `[rows, cols]` images. Validates the
    /// acquisition ([`Acquisition::validate`]) and the limits that depend on the image shape
    /// (boxes inside the image, the k-space mask functions' limits). The measurements it draws
    /// are noiseless (σ = 0): noise is added at a given σ with [`Measurement::measure_with`].
    pub fn new(acquisition: &Acquisition, rows: usize, cols: usize) -> Result<Self> {
        if rows == 0 || cols == 0 {
            return Err(OpsError::param(
                "shape",
                format!("image must be non-empty, got [{rows}, {cols}]"),
            ));
        }
        acquisition.validate()?;
        if let CorruptionSpec::Boxes { size, .. } = &acquisition.corruption {
            for s in [Some(*size), acquisition.further_box_size]
                .into_iter()
                .flatten()
            {
                if s[0] > rows || s[1] > cols {
                    return Err(OpsError::param(
                        "size",
                        format!("box must be within [1, {rows}] × [1, {cols}], got {s:?}"),
                    ));
                }
            }
        }
        let c = Self {
            acquisition: acquisition.clone(),
            rows,
            cols,
        };
        if let CorruptionSpec::Kspace { .. } = c.acquisition.corruption {
            // Parameter errors of the mask functions surface here rather than mid-training.
            c.kspace_masks(0)?;
        }
        Ok(c)
    }

    /// The acquisition the model draws from.
    pub fn acquisition(&self) -> &Acquisition {
        &self.acquisition
    }

    fn gaussian_m(m: Option<usize>, ratio: Option<f64>, n: usize) -> Result<usize> {
        match (m, ratio) {
            (Some(m), None) if m >= 1 => Ok(m),
            (None, Some(r)) if r > 0.0 && r <= 1.0 => Ok(((r * n as f64).round() as usize).max(1)),
            _ => Err(OpsError::invalid(
                "m / ratio",
                format!("m = {m:?}, ratio = {ratio:?}"),
                "exactly one of m ≥ 1 or ratio in (0, 1]",
            )),
        }
    }

    /// The scan's k-space mask and its ACS region.
    fn kspace_masks(&self, scan: u64) -> Result<(Array2<f32>, Array2<f32>)> {
        let CorruptionSpec::Kspace {
            pattern,
            acceleration,
            center_fraction,
            axis,
        } = &self.acquisition.corruption
        else {
            return Err(OpsError::param("corruption", "not a k-space corruption"));
        };
        let seed = derive(&[self.acquisition.seed, scan, TAG_A]);
        let (r, c) = (self.rows, self.cols);
        let m = match pattern {
            KspacePattern::Poisson => {
                // validated by CorruptionSpec::validate in Corruption::new
                debug_assert!((0.0..=1.0).contains(center_fraction));
                let calib = [
                    (r as f64 * center_fraction).round_ties_even() as usize,
                    (c as f64 * center_fraction).round_ties_even() as usize,
                ];
                let params = PoissonParams {
                    acceleration: *acceleration,
                    calib,
                    ..Default::default()
                };
                let p = poisson_mask(r, c, &params, seed)?;
                let acs = Array2::from_shape_fn((r, c), |(i, j)| {
                    f32::from(u8::from(
                        p.calib_rows.contains(&i) && p.calib_cols.contains(&j),
                    ))
                });
                return Ok((p.mask, acs));
            }
            _ => cartesian_mask(r, c, *axis, *pattern, *acceleration, *center_fraction, seed)?,
        };
        let acs = Array2::from_shape_fn((r, c), |(i, j)| {
            let k = if *axis == 0 { i } else { j };
            f32::from(u8::from(m.acs.contains(&k)))
        });
        Ok((m.mask, acs))
    }

    fn kspace_op(
        &self,
        mask: Array2<f32>,
        maps: Option<&Array3<C32>>,
    ) -> Result<Box<dyn LinearOperator>> {
        Ok(match maps {
            Some(s) => {
                if s.dim().1 != self.rows || s.dim().2 != self.cols {
                    return Err(OpsError::shape(
                        "coil maps [coils, rows, cols]",
                        &[s.dim().0, self.rows, self.cols],
                        s.shape(),
                    ));
                }
                Box::new(Sense::new(s.clone(), mask)?)
            }
            None => Box::new(FourierSampling::new(mask)?),
        })
    }

    /// Draws scan `scan`'s measurement operator `A` (k-space ops use SENSE when `maps`
    /// `[coils, rows, cols]` is given, single-coil sampling otherwise; other specs ignore maps).
    pub fn measurement(&self, scan: u64, maps: Option<&Array3<C32>>) -> Result<Measurement> {
        let (r, c) = (self.rows, self.cols);
        let seed = derive(&[self.acquisition.seed, scan, TAG_A]);
        let noise = Noise::from_sigma(0.0)?;
        let image = |mask: Array2<f32>| -> Result<Measurement> {
            Ok(Measurement {
                op: Box::new(PixelMask::new(mask.clone())?),
                domain: Domain::Image,
                kept: Kept::Mask(mask),
                acs: None,
                noise,
                gaussian: None,
                maps: None,
            })
        };
        match &self.acquisition.corruption {
            CorruptionSpec::Kspace { .. } => {
                let (mask, acs) = self.kspace_masks(scan)?;
                Ok(Measurement {
                    op: self.kspace_op(mask.clone(), maps)?,
                    domain: Domain::Kspace,
                    kept: Kept::Mask(mask),
                    acs: Some(acs),
                    noise,
                    gaussian: None,
                    maps: maps.cloned(),
                })
            }
            CorruptionSpec::Pixel { p } => image(random_pixel_mask(r, c, *p, seed)?),
            CorruptionSpec::Boxes {
                count,
                size,
                convention,
            } => image(
                Blocks::draw(r, c, *count, *size, *convention, seed)?
                    .mask()
                    .clone(),
            ),
            CorruptionSpec::GaussianCs { m, ratio, entries } => {
                let m = Self::gaussian_m(*m, *ratio, r * c)?;
                let g = GaussianCs::new(m, &[r, c], *entries, seed, Storage::Auto)?;
                Ok(Measurement {
                    op: Box::new(g.clone()),
                    domain: Domain::Projection,
                    kept: Kept::Rows {
                        ids: (0..m).collect(),
                        total: m,
                    },
                    acs: None,
                    noise,
                    gaussian: Some(g),
                    maps: None,
                })
            }
        }
    }

    /// Seed of `Ã` for `(scan, step)` under the configured [`FurtherMode`].
    fn further_seed(&self, scan: u64, step: u64) -> u64 {
        further_seed(self.acquisition.seed, self.acquisition.further, scan, step)
    }

    /// Draws `Ã = B·A` from `a` (the measurement of scan `scan`) for training step `step`
    /// (`step` is ignored under [`FurtherMode::PerScan`]). Ã keeps a subset of `a`'s kept set
    /// and all of its ACS region; the maps and noise level are `a`'s.
    pub fn further(&self, a: &Measurement, scan: u64, step: u64) -> Result<Measurement> {
        let delta = self.acquisition.delta;
        let mut rng = ChaCha8Rng::seed_from_u64(self.further_seed(scan, step));
        let hide = |rng: &mut ChaCha8Rng| rng.random::<f64>() < delta;
        match (&a.kept, &self.acquisition.corruption) {
            (Kept::Mask(m), CorruptionSpec::Kspace { pattern, axis, .. }) => {
                let acs = a.acs.clone().unwrap_or_else(|| Array2::zeros(m.dim()));
                let structure = if *pattern == KspacePattern::Poisson {
                    FurtherStructure::Points
                } else {
                    FurtherStructure::Lines { axis: *axis }
                };
                let m2 = hide_further(m, Some(&acs), structure, delta, &mut rng)?;
                Ok(Measurement {
                    op: self.kspace_op(m2.clone(), a.maps.as_ref())?,
                    domain: Domain::Kspace,
                    kept: Kept::Mask(m2),
                    acs: Some(acs),
                    noise: a.noise,
                    gaussian: None,
                    maps: a.maps.clone(),
                })
            }
            (Kept::Mask(m), CorruptionSpec::Pixel { .. }) => {
                let m2 = hide_further(m, None, FurtherStructure::Points, delta, &mut rng)?;
                self.image_measurement(m2, a.noise)
            }
            (
                Kept::Mask(m),
                CorruptionSpec::Boxes {
                    size, convention, ..
                },
            ) => {
                let mut m2 = m.clone();
                let s = self.acquisition.further_box_size.unwrap_or(*size);
                let b = draw_box(self.rows, self.cols, s, *convention, &mut rng)?;
                hide_box(&mut m2, &b);
                self.image_measurement(m2, a.noise)
            }
            (Kept::Rows { ids, total }, CorruptionSpec::GaussianCs { .. }) => {
                let g = a
                    .gaussian
                    .as_ref()
                    .ok_or_else(|| OpsError::param("a", "measurement has no Gaussian operator"))?;
                let keep: Vec<usize> = (0..ids.len()).filter(|_| !hide(&mut rng)).collect();
                let g2 = g.select_rows(&keep)?;
                Ok(Measurement {
                    op: Box::new(g2.clone()),
                    domain: Domain::Projection,
                    kept: Kept::Rows {
                        ids: keep.iter().map(|&k| ids[k]).collect(),
                        total: *total,
                    },
                    acs: None,
                    noise: a.noise,
                    gaussian: Some(g2),
                    maps: None,
                })
            }
            _ => Err(OpsError::param(
                "a",
                "measurement was not drawn by this corruption model",
            )),
        }
    }

    fn image_measurement(&self, mask: Array2<f32>, noise: Noise) -> Result<Measurement> {
        Ok(Measurement {
            op: Box::new(PixelMask::new(mask.clone())?),
            domain: Domain::Image,
            kept: Kept::Mask(mask),
            acs: None,
            noise,
            gaussian: None,
            maps: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An arbitrary measured line mask (not from a mask function): every third column, plus a
    /// 4-column calibration block at the centre and two stray columns.
    fn line_mask(rows: usize, cols: usize) -> (Array2<f32>, Array2<f32>) {
        let keep = |j: usize| j % 3 == 0 || (cols / 2 - 2..cols / 2 + 2).contains(&j) || j == 7;
        let m = Array2::from_shape_fn((rows, cols), |(_, j)| f32::from(u8::from(keep(j))));
        let acs = Array2::from_shape_fn((rows, cols), |(_, j)| {
            f32::from(u8::from((cols / 2 - 2..cols / 2 + 2).contains(&j)))
        });
        (m, acs)
    }

    #[test]
    fn hide_further_on_an_arbitrary_line_mask_hides_whole_lines_keeps_acs_and_about_delta() {
        let (m, acs) = line_mask(8, 96);
        let removable = (0..96)
            .filter(|&j| m[[0, j]] != 0.0 && acs[[0, j]] == 0.0)
            .count();
        let delta = 0.3;
        let (mut hidden, trials) = (0usize, 400u64);
        for t in 0..trials {
            let mut rng = ChaCha8Rng::seed_from_u64(t);
            let m2 = hide_further(
                &m,
                Some(&acs),
                FurtherStructure::Lines { axis: 1 },
                delta,
                &mut rng,
            )
            .expect("valid");
            for j in 0..96 {
                let col: Vec<f32> = m2.column(j).to_vec();
                // whole lines: a column is all kept or all hidden
                assert!(col.iter().all(|v| *v == col[0]), "column {j} split");
                // a subset of A that keeps every calibration line
                assert!(col[0] <= m[[0, j]]);
                if acs[[0, j]] != 0.0 {
                    assert_eq!(col[0], 1.0, "ACS column {j} hidden");
                }
                if m[[0, j]] != 0.0 && col[0] == 0.0 {
                    hidden += 1;
                }
            }
        }
        let frac = hidden as f64 / (removable as f64 * trials as f64);
        // binomial: σ = sqrt(0.3·0.7/(removable·400)) ≈ 0.005
        assert!((frac - delta).abs() < 0.025, "hidden fraction {frac}");
    }

    #[test]
    fn hide_further_on_points_keeps_the_calibration_box() {
        let m = Array2::from_shape_fn((24, 24), |(i, j)| {
            f32::from(u8::from((i * 7 + j * 3) % 4 == 0))
        });
        let mut acs = Array2::zeros((24, 24));
        acs.slice_mut(ndarray::s![10..14, 10..14]).fill(1.0);
        let m = &m + &acs.mapv(|v: f32| v) - &(&m * &acs);
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let m2 =
            hide_further(&m, Some(&acs), FurtherStructure::Points, 0.5, &mut rng).expect("valid");
        for ((idx, v), a) in m2.indexed_iter().zip(acs.iter()) {
            assert!(*v <= m[idx]);
            if *a != 0.0 {
                assert_eq!(*v, 1.0);
            }
        }
        assert!(m2.sum() < m.sum(), "δ = 0.5 hid nothing");
        let err = hide_further(&m, Some(&acs), FurtherStructure::Points, 1.5, &mut rng);
        assert!(err.is_err());
    }

    #[test]
    fn structure_of_measured_masks() {
        let (m, _) = line_mask(8, 32);
        assert_eq!(
            FurtherStructure::of_kspace_mask(&m),
            FurtherStructure::Lines { axis: 1 }
        );
        assert_eq!(
            FurtherStructure::of_kspace_mask(&m.t().to_owned()),
            FurtherStructure::Lines { axis: 0 }
        );
        let p = Array2::from_shape_fn((8, 8), |(i, j)| f32::from(u8::from((i + j) % 3 == 0)));
        assert_eq!(
            FurtherStructure::of_kspace_mask(&p),
            FurtherStructure::Points
        );
    }

    #[test]
    fn corruption_further_is_hide_further_on_its_own_a() {
        for (pattern, structure) in [
            (KspacePattern::Random, FurtherStructure::Lines { axis: 1 }),
            (KspacePattern::Poisson, FurtherStructure::Points),
        ] {
            let mut acq = Acquisition::of(CorruptionSpec::Kspace {
                pattern,
                acceleration: 3.0,
                center_fraction: 0.1,
                axis: 1,
            });
            acq.delta = 0.4;
            acq.further = FurtherMode::PerStep;
            acq.seed = 11;
            let c = Corruption::new(&acq, 32, 32).expect("valid");
            for (scan, step) in [(0u64, 0u64), (3, 7)] {
                let a = c.measurement(scan, None).expect("A");
                let at = c.further(&a, scan, step).expect("Ã");
                let mut rng =
                    ChaCha8Rng::seed_from_u64(further_seed(11, FurtherMode::PerStep, scan, step));
                let want = hide_further(
                    a.mask().expect("mask"),
                    a.acs.as_ref(),
                    structure,
                    0.4,
                    &mut rng,
                )
                .expect("valid");
                assert_eq!(at.mask(), Some(&want));
            }
        }
    }
}

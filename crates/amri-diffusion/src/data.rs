//! Training batches from measured scans, or from image volumes under an acquisition
//! (corruption) model.
//!
//! **Two routes, one loader.** [`TrainingSet::from_measured`] takes measured scans as a user has
//! them ([`MeasuredScan`]: data, mask; no reference): `A_i` is the scan's own mask, `Ã` hides a
//! fraction `δ` of its measured lines or samples ([`FurtherParams`]), coil maps come from its own
//! calibration region. [`TrainingSet::from_volumes`] (ambient objective) first *simulates* the
//! measured data of every slice with `amri simulate`'s recipe and then hands them to the same
//! private loader; only `A_i` and `Ã` stay the protocol's. The rest of this doc describes the
//! simulation route.
//!
//! Each 2-D slice of each input volume is one *scan* `i` (numbered in input order: volume by
//! volume, frame by frame, slice by slice). For training:
//!
//! 1. the data are measured with the recipe `amri simulate` uses, [`amri_ops::simulate::Recipe`]:
//!    if the acquisition asks for it (`synthetic_phase`, default), the slice is multiplied by the
//!    smooth synthetic phase of seed `seed + i`, so the model learns complex images; the noise
//!    and coil maps are `amri simulate`'s too;
//! 2. each volume is divided by its **measurement scale** ([`measurement_scale`]): the
//!    [`NORM_PERCENTILE`]th percentile of the zero-filled magnitude of its *measured* data (see
//!    [`measured_magnitudes`]), so that the same number can be computed from a user's measured
//!    scan at inference — the clean image is never used;
//! 3. the corruption model draws `A_i = Corruption::measurement(i, None)` (seeded by the
//!    acquisition seed only, so the training set is the same one `amri simulate` would produce)
//!    once per scan when the set is built, together with the noiseless measured data
//!    (`amri simulate`'s `y_i = A_i x_i`, divided by the volume's scale); at
//!    training step `t` it draws `Ã = Corruption::further(&A_i, i, t)` (`t` matters only under
//!    `further = "per_step"`). Both are pure functions of `(seed, i[, t])`, so caching `A_i`
//!    leaves every batch bit for bit as it was.
//!
//! Batches are NCHW `f32` on the requested device, channel 0 real and 1 imaginary, masks
//! `[N, 1, H, W]` in {0, 1}:
//! - pixel / box corruptions → [`Batch::AmbientPixel`] with `x_a = A ⊙ x`;
//! - single-coil Cartesian or Poisson k-space → [`Batch::AmbientKspace`] with `y = M ⊙ F x`
//!   (centred orthonormal DFT, as `amri_core::fft::fft2c`);
//! - multi-coil k-space (`coils > 1`) → [`Batch::AmbientMulticoil`] with `y_c = M ⊙ F(S_c x)`
//!   (`S_c` = `amri_ops::coils::synthetic_maps(coils, rows, cols, seed)`, as `amri simulate`)
//!   and coil maps estimated from each scan's measured ACS only ([`acs_maps`]), `[N, coils, 2,
//!   H, W]` each; the data are precomputed when the set is built;
//! - the supervised objective → [`Batch::Supervised`] with the clean `x`;
//! - the clean objective ([`TrainObjective::Clean`], the clean-trained twin of an ambient
//!   prior) → the ambient batch of the corruption's domain with the same `Ã`, but `A` replaced
//!   by "everything measured": `y = F x` (all of k-space) or `x_a = x`, `mask_a = 1`, so the
//!   ambient loss becomes the full supervised error `‖D(Ã …) − x‖²`.
//!
//! Measurement noise (`noise_level`) is not added for the ambient and supervised objectives (their
//! losses model noiseless measurements). [`TrainObjective::Tweedie`] draws each scan's noisy
//! measurement once, as `amri simulate` does (complex noise σ = `noise_level · max|x|` of the
//! volume, on measured entries only, seed `acq.seed ^ (0x5EED_0000 + i)`), normalises it with
//! the rest of the volume, and serves it as [`Batch::Noisy`] with
//! `σ_n = σ/(√2·scale)` per real and imaginary part ([`TrainingSet::noise_levels`]).
//! Gaussian-CS corruptions, multi-coil pixel/box acquisitions and multi-coil noisy-data training
//! return [`DiffusionError::Unsupported`].
//!
//! Data order: step `t` with batch size `B` takes positions `t·B … t·B+B−1` of an endless stream
//! that visits the scans in [`crate::seed::data_order`]`(n, seed, epoch)` for epoch 0, 1, …
//! ([`batch_indices`]) — a pure function of `(seed, t)`, so a resumed run needs no stored
//! position.

use amri_core::fft::{fft2c, ifft2c};
use amri_core::{Volume, C32};
use amri_ops::acquisition::Acquisition;
use amri_ops::coils::rss;
use amri_ops::corruption::{
    further_seed, hide_further, Corruption, CorruptionSpec, Domain, FurtherMode, FurtherStructure,
    Measurement,
};
use amri_ops::espirit::{acs_region_from_mask, espirit_with_region, EspiritConfig};
use amri_ops::linop::LinearOperator;
use amri_ops::noise::sigma_per_component;
use amri_ops::sense::Sense;
use amri_ops::simulate::Recipe;
use candle_core::{Device, Tensor};
use ndarray::{Array2, Array3, ArrayView2, ArrayView3, Axis};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

use crate::batch::Batch;
use crate::checkpoint::Objective;
use crate::error::{DiffusionError, Result};
use crate::seed::data_order;

/// Percentile of `|x|` per volume that normalisation maps to 1.
pub const NORM_PERCENTILE: f64 = 99.5;

/// Which loss the training set feeds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TrainObjective {
    /// Ambient loss from corrupted data only (pixel or k-space, from the corruption's domain).
    Ambient,
    /// Supervised loss on the clean images (a reference / upper bound).
    Supervised,
    /// Noisy-data ambient loss (double Tweedie, [`crate::loss::tweedie_pixel_loss`] /
    /// [`crate::loss::tweedie_kspace_loss`]): the measurements carry the acquisition's
    /// `noise_level` and the loss recovers the clean-data denoiser anyway.
    Tweedie,
    /// The clean-trained twin of an ambient prior: the same network inputs (`Ã` drawn as for
    /// [`TrainObjective::Ambient`]) but the loss on the whole clean image, not only where `A`
    /// measured. Needs the clean images, so it is a reference, not a way to train on scans.
    Clean,
}

/// The `q`th percentile (0–100, nearest-rank on the sorted values) of `|v|`; 0 for empty input.
pub fn abs_percentile(values: &[f32], q: f64) -> f32 {
    let mut a: Vec<f32> = values
        .iter()
        .map(|v| v.abs())
        .filter(|v| v.is_finite())
        .collect();
    if a.is_empty() {
        return 0.0;
    }
    a.sort_unstable_by(f32::total_cmp);
    let rank = ((q / 100.0) * (a.len() - 1) as f64).round() as usize;
    a[rank.min(a.len() - 1)]
}

/// One measured 2-D slice as a user has it, the input of [`measurement_scale`].
#[derive(Debug, Clone, Copy)]
pub enum MeasuredSlice<'a> {
    /// Centred k-space `[coil, row, col]` (DC at `(rows/2, cols/2)`, orthonormal as
    /// `amri_core::fft::fft2c`) with its `[row, col]` sampling mask (1 = measured).
    Kspace {
        /// Measured k-space, one plane per coil (single coil: one plane).
        kspace: ArrayView3<'a, C32>,
        /// Sampling mask, 1 = measured.
        mask: ArrayView2<'a, f32>,
    },
    /// Image-domain measurement (pixel mask, boxes): the corrupted complex image `[row, col]`
    /// and its mask (1 = measured pixel).
    Image {
        /// The measured (corrupted) image.
        image: ArrayView2<'a, C32>,
        /// Pixel mask, 1 = measured.
        mask: ArrayView2<'a, f32>,
    },
}

impl MeasuredSlice<'_> {
    /// The domain its data live in ([`MeasuredSlice::Image`]: [`Domain::Image`]).
    pub fn domain(&self) -> Domain {
        match self {
            MeasuredSlice::Kspace { .. } => Domain::Kspace,
            MeasuredSlice::Image { .. } => Domain::Image,
        }
    }
}

/// The magnitudes one measured slice contributes to [`measurement_scale`]:
/// - k-space: every pixel of the root-sum-of-squares over coils of the zero-filled coil images
///   `|Fᴴ(M ⊙ y_c)|` (single coil: `|Fᴴ(M ⊙ y)|`);
/// - image domain: `|y|` on the measured pixels only (mask ≠ 0), so the result does not depend
///   on how many pixels the mask removed.
///
/// Errors if the mask's shape is not the slice's `[row, col]`.
pub fn measured_magnitudes(slice: &MeasuredSlice) -> Result<Vec<f32>> {
    match slice {
        MeasuredSlice::Kspace { kspace, mask } => {
            let (_, r, c) = kspace.dim();
            if mask.dim() != (r, c) {
                return Err(DiffusionError::Shape(format!(
                    "k-space mask {:?} does not match k-space [{r}, {c}]",
                    mask.shape()
                )));
            }
            let mut masked: Array3<C32> = kspace.to_owned();
            for mut plane in masked.outer_iter_mut() {
                plane.zip_mut_with(mask, |v, m| *v *= *m);
            }
            Ok(rss(ifft2c(&masked).view()).into_iter().collect())
        }
        MeasuredSlice::Image { image, mask } => {
            if mask.dim() != image.dim() {
                return Err(DiffusionError::Shape(format!(
                    "pixel mask {:?} does not match image {:?}",
                    mask.shape(),
                    image.shape()
                )));
            }
            Ok(image
                .iter()
                .zip(mask.iter())
                .filter(|(_, m)| **m != 0.0)
                .map(|(v, _)| v.norm())
                .collect())
        }
    }
}

/// The intensity scale of one volume from its **measured** data only: the
/// [`NORM_PERCENTILE`]th percentile of [`measured_magnitudes`] pooled over all its slices
/// (falling back to the maximum when that percentile is 0). Training divides the volume by it
/// ([`TrainingSet::from_volumes`]); inference must divide a user's measured scan by the same
/// number (and multiply the reconstruction back). Errors on NaN/infinite data or all-zero data.
pub fn measurement_scale(slices: &[MeasuredSlice]) -> Result<f32> {
    let mut all = Vec::new();
    for s in slices {
        all.extend(measured_magnitudes(s)?);
    }
    scale_of(&all)
}

/// [`NORM_PERCENTILE`]th percentile of non-negative magnitudes, max as fallback; errors on
/// non-finite or all-zero input.
fn scale_of(all: &[f32]) -> Result<f32> {
    if all.iter().any(|v| !v.is_finite()) {
        return Err(DiffusionError::Config(
            "measured data holds NaN or infinite values".into(),
        ));
    }
    let mut scale = abs_percentile(all, NORM_PERCENTILE);
    if scale <= 0.0 {
        scale = all.iter().fold(0.0f32, |m, v| m.max(*v));
    }
    if scale <= 0.0 {
        return Err(DiffusionError::Config("measured data is all zeros".into()));
    }
    Ok(scale)
}

/// Divides `values` (one volume's magnitudes) by their [`NORM_PERCENTILE`]th percentile of `|x|`
/// and returns that scale. Errors on non-finite values or an all-zero volume. This is the
/// *clean-image* rule of earlier models; training now uses [`measurement_scale`].
pub fn normalise_volume(values: &mut [f32]) -> Result<f32> {
    if values.iter().any(|v| !v.is_finite()) {
        return Err(DiffusionError::Config(
            "volume holds NaN or infinite values".into(),
        ));
    }
    let mut scale = abs_percentile(values, NORM_PERCENTILE);
    if scale <= 0.0 {
        // mostly-empty volumes: fall back to the maximum
        scale = values.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    }
    if scale <= 0.0 {
        return Err(DiffusionError::Config("volume is all zeros".into()));
    }
    values.iter_mut().for_each(|v| *v /= scale);
    Ok(scale)
}

/// Coil sensitivity maps `[coil, row, col]` of one multi-coil scan from its measured centred
/// k-space `[coil, row, col]` and the `[row, col]` 0/1 calibration (ACS) mask only: ESPIRiT
/// (amri-ops, BART defaults otherwise) on the largest fully sampled rectangle around DC inside
/// `acs`, kernel `min(6, smallest side)`, **no crop** (`crop = 0`): maps have unit norm over
/// coils at every pixel. BART's crop 0.8 zeroes most of an object that fills the field of view
/// when the calibration region is narrow (docs/operators.md), which would hide it from the loss.
/// Errors if the ACS region is missing or smaller than 3×3.
pub fn acs_maps(kspace: ArrayView3<C32>, acs: ArrayView2<f32>) -> Result<Array3<C32>> {
    acs_maps_cached(kspace, acs, None)
}

/// [`acs_maps`] through the on-disk `cache` when one is given ([`crate::maps_cache`]): the
/// maps are read from it when their key (calibration data and ESPIRiT settings) is there and
/// intact, else computed and stored.
pub fn acs_maps_cached(
    kspace: ArrayView3<C32>,
    acs: ArrayView2<f32>,
    cache: Option<&crate::maps_cache::MapsCache>,
) -> Result<Array3<C32>> {
    let sampled = acs.mapv(|v| v != 0.0);
    let region = acs_region_from_mask(sampled.view()).ok_or_else(|| {
        DiffusionError::Config("no calibration (ACS) region at the k-space centre".into())
    })?;
    let side = region.size[0].min(region.size[1]);
    if side < 3 {
        return Err(DiffusionError::Config(format!(
            "calibration region {}×{} is too small to estimate coil maps (needs ≥ 3×3; raise \
             center_fraction)",
            region.size[0], region.size[1]
        )));
    }
    let cfg = EspiritConfig {
        kernel: side.min(6),
        crop: 0.0,
        ..Default::default()
    };
    let compute = || Ok(espirit_with_region(kspace, region, &cfg)?.maps);
    match cache {
        Some(c) => c.maps(kspace, region, &cfg, compute),
        None => compute(),
    }
}

/// [`measured_magnitudes`] of one scan's measurement `y` (flattened `[coils, rows, cols]` k-space
/// or a `[rows, cols]` image) under its operator `a` (whose mask is used).
fn magnitudes_of(a: &Measurement, y: Vec<C32>, rows: usize, cols: usize) -> Result<Vec<f32>> {
    let mask = a
        .mask()
        .ok_or_else(|| DiffusionError::Unsupported("measurement without a mask".into()))?;
    let shape_err = |e: ndarray::ShapeError| DiffusionError::Shape(e.to_string());
    match a.domain {
        Domain::Kspace => {
            let k = Array3::from_shape_vec((y.len() / (rows * cols).max(1), rows, cols), y)
                .map_err(shape_err)?;
            measured_magnitudes(&MeasuredSlice::Kspace {
                kspace: k.view(),
                mask: mask.view(),
            })
        }
        Domain::Image => {
            let im = Array2::from_shape_vec((rows, cols), y).map_err(shape_err)?;
            measured_magnitudes(&MeasuredSlice::Image {
                image: im.view(),
                mask: mask.view(),
            })
        }
        Domain::Projection => Err(DiffusionError::Unsupported(
            "measurement scale of projection measurements".into(),
        )),
    }
}

/// What [`load_measured`] makes of measured data.
struct Loaded {
    /// One scale per range (empty without normalisation).
    scales: Vec<f32>,
    /// The measured data divided by their range's scale.
    y: Vec<Vec<C32>>,
    /// Multi-coil: each scan's ACS coil maps `[coils, rows, cols]` flattened.
    maps: Option<Vec<Vec<C32>>>,
}

/// The loader both routes end in: scan `i` measured `y[i]` (flattened `[coils, rows, cols]`)
/// through `a[i]` (mask and ACS). If `normalise` is `Some(label)`, every range (a volume or a
/// file, named `label k` in errors) is divided by the [`NORM_PERCENTILE`] scale of its measured magnitudes
/// ([`measured_magnitudes`]); for `coils > 1` the coil maps of every scan are estimated once from
/// its own calibration region ([`acs_maps`], errors name `scan i`).
fn load_measured(
    a: &[Measurement],
    mut y: Vec<Vec<C32>>,
    coils: usize,
    (rows, cols): (usize, usize),
    ranges: &[std::ops::Range<usize>],
    normalise: Option<&str>,
    cache: Option<&crate::maps_cache::MapsCache>,
) -> Result<Loaded> {
    let mut scales = Vec::with_capacity(ranges.len());
    if let Some(label) = normalise {
        for (k, range) in ranges.iter().enumerate() {
            let mut mags = Vec::new();
            for i in range.clone() {
                let (ai, yi) = a.get(i).zip(y.get(i)).ok_or_else(|| {
                    DiffusionError::Config(format!("{label} {k}: scan {i} out of range"))
                })?;
                mags.extend(magnitudes_of(ai, yi.clone(), rows, cols)?);
            }
            let scale =
                scale_of(&mags).map_err(|e| DiffusionError::Config(format!("{label} {k}: {e}")))?;
            for yi in &mut y[range.clone()] {
                yi.iter_mut().for_each(|v| *v /= scale);
            }
            scales.push(scale);
        }
    }
    let maps = if coils > 1 {
        // coil maps from each scan's own measured ACS, never from true maps
        let mut maps = Vec::with_capacity(y.len());
        for (i, (ai, yi)) in a.iter().zip(&y).enumerate() {
            let acs = ai.acs.clone().ok_or_else(|| {
                DiffusionError::Config(format!("scan {i}: k-space measurement without ACS"))
            })?;
            let k = Array3::from_shape_vec((coils, rows, cols), yi.clone())
                .map_err(|e| DiffusionError::Shape(format!("scan {i}: {e}")))?;
            let m = acs_maps_cached(k.view(), acs.view(), cache).map_err(|e| {
                DiffusionError::Config(format!(
                    "scan {i}: {coils}-coil data need coil maps from the calibration region: {e}"
                ))
            })?;
            maps.push(m.into_iter().collect());
        }
        Some(maps)
    } else {
        None
    };
    Ok(Loaded { scales, y, maps })
}

/// The simulation recipe of a set built from image volumes.
fn recipe_of(set: &TrainingSet) -> Result<&Recipe> {
    set.recipe
        .as_ref()
        .ok_or_else(|| DiffusionError::Config("a measured set has no simulation recipe".into()))
}

/// The `[rows, cols]` 0/1 calibration region of a measured k-space mask: the largest fully
/// sampled rectangle around DC ([`acs_region_from_mask`]); all zeros if DC is not sampled.
pub fn acs_of_mask(mask: &Array2<f32>) -> Array2<f32> {
    let sampled = mask.mapv(|v| v != 0.0);
    let mut acs = Array2::zeros(mask.dim());
    if let Some(r) = acs_region_from_mask(sampled.view()) {
        acs.slice_mut(ndarray::s![
            r.start[0]..r.start[0] + r.size[0],
            r.start[1]..r.start[1] + r.size[1]
        ])
        .fill(1.0);
    }
    acs
}

/// The `batch` scan indices of training step `step` (see the module docs); empty if `n == 0`.
pub fn batch_indices(n: usize, batch: usize, seed: u64, step: u64) -> Vec<usize> {
    if n == 0 {
        return Vec::new();
    }
    let start = step as u128 * batch as u128;
    let mut out = Vec::with_capacity(batch);
    let mut cached: Option<(u64, Vec<usize>)> = None;
    for k in 0..batch as u128 {
        let pos = start + k;
        let epoch = (pos / n as u128) as u64;
        let within = (pos % n as u128) as usize;
        if cached.as_ref().map(|c| c.0) != Some(epoch) {
            cached = Some((epoch, data_order(n, seed, epoch)));
        }
        if let Some((_, order)) = &cached {
            out.push(order[within]);
        }
    }
    out
}

/// Normalised complex training slices with the corruption model that measured them.
#[derive(Debug, Clone)]
pub struct TrainingSet {
    /// Row-major `[rows, cols]` complex images, one per scan.
    images: Vec<Vec<C32>>,
    rows: usize,
    cols: usize,
    /// The measurement recipe `amri simulate` uses (phase, maps, masks, noise seeds); `None` for
    /// a set built from measured scans ([`TrainingSet::from_measured`]).
    recipe: Option<Recipe>,
    /// For a set built from measured scans: how `Ã` is drawn from each scan's own `A`.
    measured_further: Option<MeasuredFurther>,
    /// Each scan's operator `A_i` (without coil maps), drawn once when the set is built.
    a: Arc<[Measurement]>,
    /// For the noiseless ambient objectives: each scan's `A_i x_i` (current scale), computed
    /// once instead of at every step.
    ax: Option<Vec<Vec<C32>>>,
    objective: Objective,
    /// Measurement scale each volume was divided by ([`measurement_scale`]); empty for sets
    /// built with [`TrainingSet::new`] from already normalised slices.
    scales: Vec<f32>,
    /// For [`TrainObjective::Tweedie`]: every scan's noisy measurement and its σ_n.
    noisy: Option<NoisyData>,
    /// For multi-coil k-space acquisitions: measured coil data and estimated maps.
    coil_data: Option<CoilData>,
    /// [`TrainObjective::Clean`]: the loss target is all of `x` (`mask_a = 1`).
    clean_target: bool,
}

/// How `Ã` is drawn from a measured scan's own `A` ([`TrainingSet::from_measured`]).
#[derive(Debug, Clone)]
struct MeasuredFurther {
    params: FurtherParams,
    /// Each scan's line or point structure (from its mask).
    structures: Vec<FurtherStructure>,
    /// Each scan's id (seeds its `Ã`).
    ids: Vec<u64>,
}

/// The further corruption of training from measured scans: hide a fraction `delta` of each
/// scan's measured lines (line masks) or samples / pixels (other masks), never its ACS region,
/// with seeds [`amri_ops::corruption::further_seed`]`(seed, mode, scan id, step)`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FurtherParams {
    /// Fraction `δ ∈ [0, 1]` of the removable measured set that `Ã` hides (expected value).
    pub delta: f64,
    /// Whether `Ã` is drawn once per scan or at every step.
    pub mode: FurtherMode,
    /// Seed of the draws (training uses the run's `--seed`).
    pub seed: u64,
}

/// One measured 2-D scan (one slice of a measured file) as training takes it: no reference, no
/// stored coil maps, only what the scanner measured.
#[derive(Debug, Clone)]
pub struct MeasuredScan {
    /// Scan id, unique in the training set (seeds its `Ã`; the CLI numbers slices in input
    /// order).
    pub id: u64,
    /// K-space or image-domain data.
    pub domain: Domain,
    /// Measured data `[coil, row, col]`: centred orthonormal k-space (DC at `(rows/2, cols/2)`)
    /// or, for [`Domain::Image`], the corrupted complex image (one "coil"). Entries outside the
    /// mask are ignored (set to 0).
    pub data: Array3<C32>,
    /// Sampling / pixel mask `[row, col]`, non-zero = measured.
    pub mask: Array2<f32>,
}

/// Multi-coil measurements and ACS-estimated coil maps (normalised units).
#[derive(Debug, Clone)]
struct CoilData {
    coils: usize,
    /// `y_i` `[coils, rows, cols]` flattened, centred k-space, zero outside M.
    measured: Vec<Vec<C32>>,
    /// ESPIRiT maps from `y_i`'s ACS, `[coils, rows, cols]` flattened.
    maps: Vec<Vec<C32>>,
}

/// Noisy measurements of a [`TrainObjective::Tweedie`] set (normalised units).
#[derive(Debug, Clone)]
struct NoisyData {
    /// `y_i = A_i x_i + n_i`, flattened like `Measurement::measure`'s output.
    measured: Vec<Vec<C32>>,
    /// Noise standard deviation of each real and imaginary part of `y_i`.
    sigma_n: Vec<f32>,
}

impl TrainingSet {
    /// A training set from already normalised magnitude slices `[rows, cols]` (all the same
    /// shape), scan `i` = `slices[i]`.
    pub fn new(
        slices: &[Array2<f32>],
        acq: &Acquisition,
        objective: TrainObjective,
    ) -> Result<Self> {
        let all = 0..slices.len();
        Self::build(
            slices,
            std::slice::from_ref(&all),
            acq,
            objective,
            false,
            None,
        )
    }

    /// The set of `slices`, `ranges` giving each volume's scans: builds the complex images,
    /// draws the noisy measurements (Tweedie, noise σ = `noise_level · max|x|` of the volume per
    /// complex sample, as `amri simulate`) and, if `normalise`, divides each volume by its
    /// [`measurement_scale`].
    fn build(
        slices: &[Array2<f32>],
        ranges: &[std::ops::Range<usize>],
        acq: &Acquisition,
        objective: TrainObjective,
        normalise: bool,
        cache: Option<&crate::maps_cache::MapsCache>,
    ) -> Result<Self> {
        let first = slices
            .first()
            .ok_or_else(|| DiffusionError::Config("no training slices".into()))?;
        let (rows, cols) = first.dim();
        if let Some(s) = slices.iter().find(|s| s.dim() != (rows, cols)) {
            return Err(DiffusionError::Shape(format!(
                "all training slices must share one shape: [{rows}, {cols}] and {:?}",
                s.shape()
            )));
        }
        let tweedie = objective == TrainObjective::Tweedie;
        let clean_target = objective == TrainObjective::Clean;
        let multicoil = acq.coils > 1 && objective != TrainObjective::Supervised;
        acq.validate()?;
        if multicoil && !matches!(acq.corruption, CorruptionSpec::Kspace { .. }) {
            return Err(DiffusionError::Unsupported(format!(
                "a {}-coil acquisition needs a k-space corruption for training (pixel and box \
                 corruptions are single-image measurements; use coils = 1)",
                acq.coils
            )));
        }
        if multicoil && tweedie {
            return Err(DiffusionError::Unsupported(format!(
                "noisy-data (tweedie) training of {}-coil data is not supported; use the \
                 ambient objective or a single-coil protocol",
                acq.coils
            )));
        }
        let objective =
            match (objective, &acq.corruption) {
                (_, CorruptionSpec::GaussianCs { .. }) => return Err(DiffusionError::Unsupported(
                    "Gaussian compressed-sensing corruptions are not supported for training yet; \
                     use k-space, pixel or box corruptions"
                        .into(),
                )),
                (TrainObjective::Supervised, _) => Objective::Supervised,
                (_, CorruptionSpec::Kspace { .. }) => Objective::AmbientKspace,
                (_, _) => Objective::AmbientPixel,
            };
        if tweedie && !(acq.noise_level.is_finite() && acq.noise_level > 0.0) {
            return Err(DiffusionError::Config(format!(
                "the tweedie (noisy-data) objective needs an acquisition with noise_level > 0, \
                 got {}",
                acq.noise_level
            )));
        }
        // The recipe of `amri simulate`; single-coil unless the set trains on multi-coil data.
        let recipe = if multicoil {
            Recipe::new(acq, rows, cols)?
        } else {
            Recipe::new(
                &Acquisition {
                    coils: 1,
                    ..acq.clone()
                },
                rows,
                cols,
            )?
        };
        let images = slices
            .iter()
            .enumerate()
            .map(|(i, s)| recipe.complex_image(i as u64, s.view()))
            .collect();
        // A_i depends only on (seed, i): draw it once per scan, not at every step.
        let a = (0..slices.len())
            .map(|i| recipe.corruption().measurement(i as u64, None))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let mut set = Self {
            images,
            rows,
            cols,
            recipe: Some(recipe),
            measured_further: None,
            a: a.into(),
            ax: None,
            objective,
            scales: Vec::new(),
            noisy: None,
            coil_data: None,
            clean_target,
        };
        if !tweedie && (multicoil || !clean_target) && objective != Objective::Supervised {
            // the one pipeline: measure every scan as `amri simulate` does (the recipe's y_i,
            // noiseless), then load those measured data exactly as measured files are loaded;
            // a multi-coil clean twin loads them too (same scale, same ACS maps, same inputs)
            // and then replaces each y_i by the fully sampled coil data as its loss target
            let recipe = recipe_of(&set)?;
            let y = (0..set.len())
                .map(|i| {
                    if multicoil {
                        // y_c = M F (S_c x) with the synthetic maps
                        recipe
                            .measure_slice(i as u64, &set.images[i], 0.0)
                            .map(|(_, y)| y)
                    } else {
                        recipe.measure(&set.a[i], i as u64, &set.images[i], 0.0)
                    }
                })
                .collect::<std::result::Result<Vec<_>, _>>()?;
            let true_maps = clean_target.then(|| recipe.maps().cloned()).flatten();
            let loaded = load_measured(
                &set.a,
                y,
                if multicoil { acq.coils } else { 1 },
                (rows, cols),
                ranges,
                normalise.then_some("training volume"),
                cache,
            )?;
            // the images (the simulation's truth) follow the same scales, for reference use
            for (range, scale) in ranges.iter().zip(&loaded.scales) {
                for x in &mut set.images[range.clone()] {
                    x.iter_mut().for_each(|v| *v /= *scale);
                }
            }
            set.scales = loaded.scales;
            match loaded.maps {
                Some(maps) => {
                    let measured = if clean_target {
                        set.full_coil_data(true_maps)?
                    } else {
                        loaded.y
                    };
                    set.coil_data = Some(CoilData {
                        coils: acq.coils,
                        measured,
                        maps,
                    })
                }
                None if clean_target => {
                    return Err(DiffusionError::Config(
                        "the multi-coil clean twin got no coil maps".into(),
                    ))
                }
                None => set.ax = Some(loaded.y),
            }
            return Ok(set);
        }
        // the reference objectives (supervised, clean) and noisy-data training: single coil
        let mut noisy = NoisyData {
            measured: Vec::new(),
            sigma_n: Vec::new(),
        };
        let mut scales = Vec::with_capacity(ranges.len());
        for (k, range) in ranges.iter().enumerate() {
            let mut sigma_abs = 0f32;
            if tweedie {
                let peak = slices[range.clone()]
                    .iter()
                    .flat_map(|s| s.iter())
                    .fold(0f32, |m, v| m.max(v.abs()));
                sigma_abs = acq.noise_level * peak;
                for i in range.clone() {
                    // y = A x + n with the noise `amri simulate` draws for slice i
                    let y =
                        recipe_of(&set)?.measure(&set.a[i], i as u64, &set.images[i], sigma_abs)?;
                    noisy.measured.push(y);
                }
            }
            let mut scale = 1f32;
            if normalise {
                let mut mags = Vec::new();
                for i in range.clone() {
                    let y = if tweedie {
                        noisy.measured[i].clone()
                    } else {
                        set.clean_measurement(i)?
                    };
                    mags.extend(set.measured_magnitudes_of(i, y)?);
                }
                scale = scale_of(&mags)
                    .map_err(|e| DiffusionError::Config(format!("training volume {k}: {e}")))?;
                for i in range.clone() {
                    set.images[i].iter_mut().for_each(|v| *v /= scale);
                    if tweedie {
                        noisy.measured[i].iter_mut().for_each(|v| *v /= scale);
                    }
                }
                scales.push(scale);
            }
            if tweedie {
                // complex σ splits into σ/√2 per real and imaginary part
                let sn = sigma_per_component(sigma_abs, scale);
                noisy.sigma_n.extend(range.clone().map(|_| sn));
            }
        }
        set.scales = scales;
        if tweedie {
            set.noisy = Some(noisy);
        }
        Ok(set)
    }

    /// A training set from image volumes `[frame, slice, row, col]`: every frame and slice is a
    /// scan; each volume is divided by its own [`measurement_scale`] computed from the measured
    /// data of all its frames and slices (never from the clean image). Volumes must share the
    /// in-plane shape.
    pub fn from_volumes(
        volumes: &[Volume<f32>],
        acq: &Acquisition,
        objective: TrainObjective,
    ) -> Result<Self> {
        Self::from_volumes_cached(volumes, acq, objective, None)
    }

    /// [`TrainingSet::from_volumes`] with the coil maps of a multi-coil acquisition read from,
    /// or stored in, the on-disk `cache` ([`crate::maps_cache`]); the set is the same, bit for
    /// bit, with or without it.
    pub fn from_volumes_cached(
        volumes: &[Volume<f32>],
        acq: &Acquisition,
        objective: TrainObjective,
        cache: Option<&crate::maps_cache::MapsCache>,
    ) -> Result<Self> {
        let mut slices = Vec::new();
        let mut ranges = Vec::with_capacity(volumes.len());
        for (k, v) in volumes.iter().enumerate() {
            if v.data.iter().any(|x| !x.is_finite()) {
                return Err(DiffusionError::Config(format!(
                    "training volume {k} holds NaN or infinite values"
                )));
            }
            let start = slices.len();
            for frame in v.data.axis_iter(Axis(0)) {
                for s in frame.axis_iter(Axis(0)) {
                    slices.push(s.to_owned());
                }
            }
            ranges.push(start..slices.len());
        }
        Self::build(&slices, &ranges, acq, objective, true, cache)
    }

    /// A training set from measured scans only (no clean image, reference or stored coil map is
    /// used), all of one `[rows, cols]` shape, one domain and one coil count; `ranges` gives each
    /// file's scans (each file is divided by its own [`measurement_scale`] of its measured data).
    /// Per scan, `A` is its own mask (single-coil k-space sampling, SENSE with coil maps
    /// estimated by [`acs_maps`] from its own calibration region for several coils, or a pixel
    /// mask for [`Domain::Image`]); `Ã` hides a fraction `δ` of its measured lines or samples,
    /// keeping the calibration region ([`FurtherParams`], [`hide_further`]). The objective is
    /// the ambient one of the domain. Errors (naming scan positions; callers add file names) on
    /// mixed shapes, domains or coil counts, a projection domain, NaN/∞ data, an empty or full
    /// mask, or a multi-coil scan without a calibration region of at least 3×3.
    pub fn from_measured(
        scans: &[MeasuredScan],
        ranges: &[std::ops::Range<usize>],
        further: FurtherParams,
    ) -> Result<Self> {
        Self::from_measured_cached(scans, ranges, further, None, None)
    }

    /// [`TrainingSet::from_measured`] with the coil maps read from, or stored in, the on-disk
    /// `cache` ([`crate::maps_cache`]); the set is the same, bit for bit, with or without it.
    ///
    /// With `noise` (one σ per range, the noise standard deviation **per complex sample** of
    /// that file's data in its own units, e.g. 1 after prewhitening) the set trains the
    /// noisy-data objective ([`TrainObjective::Tweedie`]): the measured data are served as they
    /// are, noise included, in [`Batch::Noisy`] with `σ_n = σ / (√2 · scale)` per real and
    /// imaginary part in normalised units. Single-coil k-space and image-domain data only, as on
    /// the simulation route; every σ must be finite and > 0.
    pub fn from_measured_cached(
        scans: &[MeasuredScan],
        ranges: &[std::ops::Range<usize>],
        further: FurtherParams,
        cache: Option<&crate::maps_cache::MapsCache>,
        noise: Option<&[f32]>,
    ) -> Result<Self> {
        if let Some(sig) = noise {
            if sig.len() != ranges.len() {
                return Err(DiffusionError::Config(format!(
                    "{} noise levels for {} files",
                    sig.len(),
                    ranges.len()
                )));
            }
            if let Some(k) = sig.iter().position(|s| !(s.is_finite() && *s > 0.0)) {
                return Err(DiffusionError::Config(format!(
                    "file {k}: noise σ {} is not a positive number; the tweedie objective needs the data's noise level",
                    sig[k]
                )));
            }
            if scans.first().is_some_and(|s| s.data.dim().0 > 1) {
                return Err(DiffusionError::Unsupported(format!(
                    "noisy-data (tweedie) training of {}-coil data is not supported; use --objective ambient, or coil-compress to one virtual coil (--coils 1)",
                    scans.first().map(|s| s.data.dim().0).unwrap_or(0)
                )));
            }
        }
        amri_ops::corruption::check_delta(further.delta)?;
        let first = scans
            .first()
            .ok_or_else(|| DiffusionError::Config("no measured scans".into()))?;
        let (coils, rows, cols) = first.data.dim();
        let domain = first.domain;
        let objective =
            match domain {
                Domain::Kspace => Objective::AmbientKspace,
                Domain::Image => Objective::AmbientPixel,
                Domain::Projection => return Err(DiffusionError::Unsupported(
                    "projection (Gaussian CS) measurements cannot train a prior yet; use k-space \
                     or image-domain data"
                        .into(),
                )),
            };
        if domain == Domain::Image && coils != 1 {
            return Err(DiffusionError::Unsupported(format!(
                "image-domain data with {coils} coils: a corrupted image is one complex plane"
            )));
        }
        let mut a = Vec::with_capacity(scans.len());
        let mut structures = Vec::with_capacity(scans.len());
        let mut data = Vec::with_capacity(scans.len());
        for (k, sc) in scans.iter().enumerate() {
            let at =
                |msg: String| DiffusionError::Config(format!("scan {k} (id {}): {msg}", sc.id));
            if sc.domain != domain {
                return Err(at(format!(
                    "domain {:?} differs from the set's {domain:?}",
                    sc.domain
                )));
            }
            if sc.data.dim() != (coils, rows, cols) {
                return Err(DiffusionError::Shape(format!(
                    "scan {k}: [coil, row, col] {:?} differs from the set's [{coils}, {rows}, \
                     {cols}]",
                    sc.data.shape()
                )));
            }
            if sc.mask.dim() != (rows, cols) {
                return Err(DiffusionError::Shape(format!(
                    "scan {k}: mask {:?} does not match [{rows}, {cols}]",
                    sc.mask.shape()
                )));
            }
            if sc
                .data
                .iter()
                .any(|v| !(v.re.is_finite() && v.im.is_finite()))
                || sc.mask.iter().any(|v| !v.is_finite())
            {
                return Err(at("data or mask hold NaN or infinite values".into()));
            }
            let mask = sc.mask.mapv(|v| f32::from(u8::from(v != 0.0)));
            let kept = mask.iter().filter(|v| **v != 0.0).count();
            if kept == 0 {
                return Err(at("the mask measures nothing".into()));
            }
            if kept == rows * cols {
                return Err(at(
                    "the mask is full (fully sampled data): ambient training needs the mask the \
                     data were undersampled with"
                        .into(),
                ));
            }
            let mut y = sc.data.clone();
            for mut plane in y.outer_iter_mut() {
                plane.zip_mut_with(&mask, |v, m| *v *= *m);
            }
            let (acs, structure) = match domain {
                Domain::Kspace => (
                    Some(acs_of_mask(&mask)),
                    FurtherStructure::of_kspace_mask(&mask),
                ),
                _ => (None, FurtherStructure::Points),
            };
            a.push(Measurement::from_mask(domain, mask, acs)?);
            structures.push(structure);
            data.push(y);
        }
        // one scale per file, from its measured data only; maps from each scan's own ACS
        let loaded = load_measured(
            &a,
            data.into_iter().map(|y| y.into_iter().collect()).collect(),
            coils,
            (rows, cols),
            ranges,
            Some("file"),
            cache,
        )?;
        let mut set = Self {
            images: Vec::new(),
            rows,
            cols,
            recipe: None,
            measured_further: Some(MeasuredFurther {
                params: further,
                structures,
                ids: scans.iter().map(|s| s.id).collect(),
            }),
            a: a.into(),
            ax: None,
            objective,
            scales: loaded.scales,
            noisy: None,
            coil_data: None,
            clean_target: false,
        };
        match (loaded.maps, noise) {
            (Some(maps), _) => {
                set.coil_data = Some(CoilData {
                    coils,
                    measured: loaded.y,
                    maps,
                })
            }
            (None, Some(sig)) => {
                // the measured data are the noisy y = A x + n; σ_n per component, normalised
                let mut sigma_n = vec![0f32; scans.len()];
                for ((range, s), scale) in ranges.iter().zip(sig).zip(&set.scales) {
                    for i in range.clone() {
                        if let Some(v) = sigma_n.get_mut(i) {
                            *v = sigma_per_component(*s, *scale);
                        }
                    }
                }
                set.noisy = Some(NoisyData {
                    measured: loaded.y,
                    sigma_n,
                });
            }
            (None, None) => set.ax = Some(loaded.y),
        }
        Ok(set)
    }

    /// The measurement scale ([`measurement_scale`]) each input volume was divided by, in input
    /// order (empty for [`TrainingSet::new`]).
    pub fn scales(&self) -> &[f32] {
        &self.scales
    }

    /// σ_n of every scan (per real and imaginary part, normalised units) for a
    /// [`TrainObjective::Tweedie`] set; `None` otherwise.
    pub fn noise_levels(&self) -> Option<&[f32]> {
        self.noisy.as_ref().map(|n| n.sigma_n.as_slice())
    }

    /// Every scan's fully sampled coil data `F(S_c x_i)` (centred orthonormal k-space,
    /// `[coils, rows, cols]` flattened) with the recipe's synthetic maps, at the set's current
    /// scale: the loss target of the multi-coil clean twin ([`Sense`] with every sample kept).
    fn full_coil_data(&self, maps: Option<Array3<C32>>) -> Result<Vec<Vec<C32>>> {
        let maps = maps.ok_or_else(|| {
            DiffusionError::Config("a multi-coil recipe without coil maps".into())
        })?;
        let full = Sense::new(maps, Array2::ones((self.rows, self.cols)))?;
        Ok(self
            .images
            .iter()
            .map(|x| {
                let mut y = vec![C32::new(0.0, 0.0); full.osize()];
                full.forward(x, &mut y);
                y
            })
            .collect())
    }

    /// Scan `i`'s noiseless measurement `A_i x_i` at the set's current scale.
    fn clean_measurement(&self, i: usize) -> Result<Vec<C32>> {
        let (a, x) = self
            .a
            .get(i)
            .zip(self.images.get(i))
            .ok_or_else(|| DiffusionError::Config(format!("scan {i} out of range")))?;
        Ok(a.measure(x, 0)?)
    }

    /// Scan `i`'s operator `A_i` (without coil maps).
    fn a(&self, i: usize) -> Result<&Measurement> {
        self.a.get(i).ok_or_else(|| {
            DiffusionError::Config(format!("scan {i} out of range (have {})", self.len()))
        })
    }

    /// Scan `i`'s measured data as training uses it, in normalised units, flattened as
    /// `Measurement::measure`'s output: the noisy `A_i x_i + n_i` ([`TrainObjective::Tweedie`]),
    /// the coil data `[coils, rows, cols]` (multi-coil k-space) or `A_i x_i` (ambient); `None` for
    /// the supervised and clean objectives or out of range. Before normalisation these are
    /// exactly `amri simulate`'s data for the same acquisition ([`Recipe`]).
    pub fn measured(&self, i: usize) -> Option<&[C32]> {
        if let Some(n) = &self.noisy {
            return n.measured.get(i).map(Vec::as_slice);
        }
        if let Some(c) = &self.coil_data {
            return c.measured.get(i).map(Vec::as_slice);
        }
        self.ax.as_ref()?.get(i).map(Vec::as_slice)
    }

    /// [`measured_magnitudes`] of scan `i`'s measurement `y`.
    fn measured_magnitudes_of(&self, i: usize, y: Vec<C32>) -> Result<Vec<f32>> {
        magnitudes_of(self.a(i)?, y, self.rows, self.cols)
    }

    /// Number of scans.
    pub fn len(&self) -> usize {
        self.a.len()
    }

    /// Whether there are no scans (never true for a constructed set).
    pub fn is_empty(&self) -> bool {
        self.a.is_empty()
    }

    /// `(rows, cols)` of every scan.
    pub fn shape(&self) -> (usize, usize) {
        (self.rows, self.cols)
    }

    /// The loss the batches are built for.
    pub fn objective(&self) -> Objective {
        self.objective
    }

    /// The corruption model of a simulated set; `None` for a set of measured scans (there each
    /// scan's `A` is its own mask and `Ã` follows [`FurtherParams`]).
    pub fn corruption(&self) -> Option<&Corruption> {
        self.recipe.as_ref().map(Recipe::corruption)
    }

    /// `Ã` of scan `i` at step `step`, drawn from its `A` `a`: by the corruption model of a
    /// simulated set, or by [`hide_further`] on the measured mask.
    fn further(&self, a: &Measurement, i: usize, step: u64) -> Result<Measurement> {
        if let Some(c) = self.corruption() {
            return Ok(c.further(a, i as u64, step)?);
        }
        let mf = self
            .measured_further
            .as_ref()
            .ok_or_else(|| DiffusionError::Config("training set without a corruption".into()))?;
        let (structure, id) = match (mf.structures.get(i), mf.ids.get(i)) {
            (Some(s), Some(id)) => (*s, *id),
            _ => return Err(DiffusionError::Config(format!("scan {i} out of range"))),
        };
        let p = mf.params;
        let mut rng = ChaCha8Rng::seed_from_u64(further_seed(p.seed, p.mode, id, step));
        let m2 = hide_further(Self::mask(a)?, a.acs.as_ref(), structure, p.delta, &mut rng)?;
        Ok(Measurement::from_mask(a.domain, m2, a.acs.clone())?)
    }

    /// Scan `i`'s normalised complex image, row-major `[rows, cols]` (`None` for measured sets).
    pub fn image(&self, i: usize) -> Option<&[C32]> {
        self.images.get(i).map(Vec::as_slice)
    }

    fn mask(m: &Measurement) -> Result<&Array2<f32>> {
        m.mask()
            .ok_or_else(|| DiffusionError::Unsupported("measurement without a mask".into()))
    }

    /// Scan `i`'s masks `(A, Ã)` at training step `step` (`[rows, cols]`, 1 = kept; k-space
    /// masks are centred).
    pub fn masks(&self, i: usize, step: u64) -> Result<(Array2<f32>, Array2<f32>)> {
        let a = self.a(i)?;
        let at = self.further(a, i, step)?;
        Ok((Self::mask(a)?.clone(), Self::mask(&at)?.clone()))
    }

    /// The batch of scans `scans` at step `step` on `dev` (see the module docs for layouts).
    pub fn batch(&self, scans: &[usize], step: u64, dev: &Device) -> Result<Batch> {
        let (r, c) = (self.rows, self.cols);
        let n = scans.len();
        if n == 0 {
            return Err(DiffusionError::Config("empty batch".into()));
        }
        if let Some(cd) = &self.coil_data {
            return self.multicoil_batch(cd, scans, step, dev);
        }
        let mut data = vec![0f32; n * 2 * r * c];
        let mut ma = vec![0f32; n * r * c];
        let mut mt = vec![0f32; n * r * c];
        for (b, &i) in scans.iter().enumerate() {
            let x = || {
                self.images.get(i).ok_or_else(|| {
                    DiffusionError::Config(format!(
                        "scan {i}: no image (have {}; measured sets hold none)",
                        self.images.len()
                    ))
                })
            };
            let values: Vec<C32> = match self.objective {
                Objective::Supervised => x()?.clone(),
                _ => {
                    let a = self.a(i)?;
                    let at = self.further(a, i, step)?;
                    let expect = match self.objective {
                        Objective::AmbientKspace => Domain::Kspace,
                        _ => Domain::Image,
                    };
                    if a.domain != expect {
                        return Err(DiffusionError::Unsupported(format!(
                            "measurement domain {:?} for objective {:?}",
                            a.domain, self.objective
                        )));
                    }
                    let off = b * r * c;
                    if self.clean_target {
                        ma[off..off + r * c].fill(1.0);
                    } else {
                        ma[off..off + r * c]
                            .iter_mut()
                            .zip(Self::mask(a)?.iter())
                            .for_each(|(d, s)| *d = *s);
                    }
                    mt[off..off + r * c]
                        .iter_mut()
                        .zip(Self::mask(&at)?.iter())
                        .for_each(|(d, s)| *d = *s);
                    match &self.noisy {
                        // the clean twin: everything, in the measurement's domain
                        _ if self.clean_target => match a.domain {
                            Domain::Kspace => {
                                let img = Array2::from_shape_vec((r, c), x()?.clone())
                                    .map_err(|e| DiffusionError::Shape(e.to_string()))?;
                                fft2c(&img).into_iter().collect()
                            }
                            _ => x()?.clone(),
                        },
                        // Tweedie: the stored noisy measurement (zero outside A as well)
                        Some(nd) => nd.measured[i].clone(),
                        // noise σ is 0 (`Corruption` draws noiseless operators): exactly A x,
                        // computed once when the set was built
                        None => match &self.ax {
                            Some(ax) => ax[i].clone(),
                            None => a.measure(x()?, 0)?,
                        },
                    }
                }
            };
            if values.len() != r * c {
                return Err(DiffusionError::Shape(format!(
                    "measurement of scan {i}: expected {} samples, got {}",
                    r * c,
                    values.len()
                )));
            }
            let off = b * 2 * r * c;
            for (k, v) in values.iter().enumerate() {
                data[off + k] = v.re;
                data[off + r * c + k] = v.im;
            }
        }
        let data = Tensor::from_vec(data, (n, 2, r, c), dev)?;
        let mask = |m: Vec<f32>| Tensor::from_vec(m, (n, 1, r, c), dev);
        let batch = match self.objective {
            Objective::Supervised => Batch::Supervised { x0: data },
            Objective::AmbientPixel => Batch::AmbientPixel {
                x_a: data,
                mask_a: mask(ma)?,
                mask_tilde: mask(mt)?,
            },
            Objective::AmbientKspace => Batch::AmbientKspace {
                y: data,
                mask_a: mask(ma)?,
                mask_tilde: mask(mt)?,
            },
        };
        Ok(match &self.noisy {
            None => batch,
            Some(nd) => Batch::Noisy {
                inner: Box::new(batch),
                sigma_n: Tensor::from_vec(
                    scans.iter().map(|&i| nd.sigma_n[i]).collect::<Vec<f32>>(),
                    n,
                    dev,
                )?,
            },
        })
    }

    /// A [`Batch::AmbientMulticoil`]: `y`, maps `[N, coils, 2, H, W]`, masks `[N, 1, H, W]`.
    fn multicoil_batch(
        &self,
        cd: &CoilData,
        scans: &[usize],
        step: u64,
        dev: &Device,
    ) -> Result<Batch> {
        let (r, c, nc, n) = (self.rows, self.cols, cd.coils, scans.len());
        let plane = r * c;
        let mut y = vec![0f32; n * nc * 2 * plane];
        let mut maps = vec![0f32; n * nc * 2 * plane];
        let mut ma = vec![0f32; n * plane];
        let mut mt = vec![0f32; n * plane];
        for (b, &i) in scans.iter().enumerate() {
            let (yi, si) = match (cd.measured.get(i), cd.maps.get(i)) {
                (Some(y), Some(s)) => (y, s),
                _ => {
                    return Err(DiffusionError::Config(format!(
                        "scan {i} out of range (have {})",
                        self.len()
                    )))
                }
            };
            for (src, dst) in [(yi, &mut y), (si, &mut maps)] {
                for k in 0..nc {
                    let off = ((b * nc + k) * 2) * plane;
                    for p in 0..plane {
                        dst[off + p] = src[k * plane + p].re;
                        dst[off + plane + p] = src[k * plane + p].im;
                    }
                }
            }
            let (a, at) = self.masks(i, step)?;
            if self.clean_target {
                // the clean twin: the loss covers all of k-space
                ma[b * plane..(b + 1) * plane].fill(1.0);
            } else {
                ma[b * plane..(b + 1) * plane]
                    .iter_mut()
                    .zip(a.iter())
                    .for_each(|(d, s)| *d = *s);
            }
            mt[b * plane..(b + 1) * plane]
                .iter_mut()
                .zip(at.iter())
                .for_each(|(d, s)| *d = *s);
        }
        Ok(Batch::AmbientMulticoil {
            y: Tensor::from_vec(y, (n, nc, 2, r, c), dev)?,
            maps: Tensor::from_vec(maps, (n, nc, 2, r, c), dev)?,
            mask_a: Tensor::from_vec(ma, (n, 1, r, c), dev)?,
            mask_tilde: Tensor::from_vec(mt, (n, 1, r, c), dev)?,
        })
    }

    /// Number of receive coils of the batches (1 unless a multi-coil k-space set).
    pub fn coils(&self) -> usize {
        self.coil_data.as_ref().map_or(1, |c| c.coils)
    }

    /// The batch of training step `step` for batch size `batch` under `seed`
    /// ([`batch_indices`] then [`TrainingSet::batch`]).
    pub fn step_batch(&self, batch: usize, seed: u64, step: u64, dev: &Device) -> Result<Batch> {
        let idx = batch_indices(self.len(), batch, seed, step);
        self.batch(&idx, step, dev)
    }
}

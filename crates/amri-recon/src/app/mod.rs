//! Reconstruction methods ("apps", as in SigPy's `mri.app`) on a measured [`KSpace`]: each
//! builds the forward model of every slice from amri-ops operators, runs a solver from
//! [`crate::alg`], and returns the complex images `[slice, row, col]` with the iteration logs.
//! Slices run in parallel with rayon.
//!
//! # Forward model
//! For slice `s`, k-space `y` is `[coil, row, col]` (centred, orthonormal FFT), the mask `M`
//! `[row, col]` (0/1; `None` in the [`KSpace`] = fully sampled) and
//! - single-coil data without maps: `A = M F` ([`amri_ops::fourier::FourierSampling`]);
//! - otherwise `A x = (M F (S_c x))_c` ([`amri_ops::sense::Sense`]) with coil maps `S`
//!   `[coil, row, col]` taken from the argument, else from [`KSpace::sensitivities`], else
//!   (multi-coil) estimated by ESPIRiT from the fully sampled centre
//!   ([`amri_ops::espirit::espirit_maps`], BART `ecalib -m1` defaults).
//!
//! # Image-domain data (inpainting)
//! A scan whose [`KSpace::domain()`] is [`MeasuredDomain::Image`] (pixel and box corruptions,
//! as `amri simulate` writes them) holds the corrupted *image* `[slice, 1, row, col]` and its
//! pixel mask: there `A = M` ([`amri_ops::pixel_mask::PixelMask`], `‖A‖² = 1`), so every method here solves
//! the inpainting problem `min_x ½‖M x − y‖² + λ R(x)` (zero-filled and CG-SENSE without λ return
//! the masked image itself). [`DataScaling::Bart`] then takes `s` as the 90th percentile of the
//! measured pixels' magnitudes (BART's rule, which reads the k-space centre, has no image-domain
//! counterpart). Gaussian random projections ([`MeasuredDomain::Projection`]) are refused.
//!
//! # Data scaling and λ (BART compatibility)
//! Every method solves its problem for scaled data `y / s` and returns `s · x̂`, so images are
//! in the units of the input. With [`DataScaling::Bart`] (the default) `s` is BART's
//! `estimate_scaling` (`pics` without `-S`): the fully sampled centre of k-space (at most
//! 32 × 32, found and placed as BART's `calib_geom` does, see [`bart_scaling`]) is
//! inverse-transformed, coil-combined by root-sum-of-squares, divided by
//! `sqrt(N_r N_c / (n_r n_c))`, and `s` is its 90th percentile magnitude, or its maximum when
//! `max − p90 < 2 (p90 − median)` fails (checked against the value BART prints, see
//! `tests/bart_fixture.rs` and `tests/bart_l1_fixture.rs`). amri's `λ` then acts on data of the same scale as BART's
//! `pics -r λ`; BART uses the same unitary centred FFT (its `pics -S -l2` solution is
//! reproduced to 1e-3), but BART v0.8's converged FISTA result depends on its step size, so
//! equal λ gives close, not identical, images (see `docs/benchmarks.md`). BART's `pics` returns
//! `x̂` without multiplying back by `s`. [`DataScaling::None`] uses `s = 1` (λ in the units of
//! the data, BART's `pics -S`).

pub mod cg_sense;
pub mod l1_wavelet;
pub mod tv;
pub mod zero_filled;

pub use cg_sense::{cg_sense, cg_sense_slice, cg_sense_with, CgSenseConfig};
pub use l1_wavelet::{l1_wavelet, l1_wavelet_slice, l1_wavelet_with, L1WaveletConfig};
pub use tv::{tv_recon, tv_recon_slice, tv_recon_with, TvConfig, TvSolver};
pub use zero_filled::{zero_filled, zero_filled_coils};

use std::ops::ControlFlow;

use amri_core::{KSpace, MeasuredDomain, C32};
use amri_ops::espirit::{espirit_maps, EspiritConfig};
use amri_ops::fourier::FourierSampling;
use amri_ops::pixel_mask::PixelMask;
use amri_ops::sense::Sense;
use amri_ops::LinearOperator;
use ndarray::{Array2, Array3, Array4, ArrayView2, ArrayView3, Axis};
use rayon::prelude::*;

use crate::alg::{IterInfo, SolveLog};
use crate::error::{ReconError, Result};

/// How k-space is scaled before solving (see the module docs).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub enum DataScaling {
    /// No scaling, `s = 1`: λ is in the units of the data (BART `pics -S`).
    None,
    /// BART's `estimate_scaling` rule, computed per slice (BART `pics` default).
    #[default]
    Bart,
    /// A fixed scale `s > 0`.
    Fixed(f32),
}

/// The result of a reconstruction: complex images and, per slice, the solver log and the data
/// scale `s` used.
#[derive(Clone, Debug)]
pub struct Reconstruction {
    /// Reconstructed complex images `[slice, row, col]`, in the units of the input image.
    pub images: Array3<C32>,
    /// One solver log per slice, in slice order.
    pub logs: Vec<SolveLog>,
    /// The data scale `s` of each slice (1 for [`DataScaling::None`]).
    pub scales: Vec<f32>,
}

impl Reconstruction {
    /// Magnitude images `[slice, row, col]`.
    pub fn magnitude(&self) -> Array3<f32> {
        self.images.mapv(|v| v.norm())
    }
}

/// The result of one slice: the image `[rows·cols]` (row-major), the log and the data scale.
#[derive(Clone, Debug)]
pub struct SliceResult {
    /// Reconstructed image, row-major `[rows, cols]`, in the units of the input.
    pub image: Vec<C32>,
    /// The solver log.
    pub log: SolveLog,
    /// The data scale `s` used.
    pub scale: f32,
}

/// A progress callback shared by the slices that run in parallel: it gets the slice index and
/// the solver's [`IterInfo`]; `Break` cancels that slice's solver (its last iterate is kept).
pub type Progress<'a> = &'a (dyn Fn(usize, &IterInfo) -> ControlFlow<()> + Sync);

/// A [`Progress`] callback that only continues.
pub fn no_progress(_: usize, _: &IterInfo) -> ControlFlow<()> {
    ControlFlow::Continue(())
}

/// The [`MeasuredDomain`] of `ks` if the classical methods can reconstruct it: k-space, or an
/// image with unmeasured pixels (see the module docs, "Image-domain data"). Gaussian random
/// projections are refused, as are image-domain scans with more than one coil.
pub fn data_domain(ks: &KSpace) -> Result<MeasuredDomain> {
    match ks.domain() {
        MeasuredDomain::Kspace => Ok(MeasuredDomain::Kspace),
        MeasuredDomain::Image => {
            let coils = ks.shape4()[1];
            if coils != 1 {
                return Err(ReconError::Unsupported(format!(
                    "an image-domain (pixel/box) measurement must have one channel, got {coils}"
                )));
            }
            Ok(MeasuredDomain::Image)
        }
        MeasuredDomain::Projection => Err(projections_refused()),
    }
}

/// The error for Gaussian random projections, which no classical method here reconstructs.
fn projections_refused() -> ReconError {
    ReconError::Unsupported(
        "Gaussian random projections: the classical methods reconstruct k-space or \
         image-domain (pixel/box) measurements"
            .into(),
    )
}

/// The data scale of an image-domain slice: the 90th percentile of the measured pixels'
/// magnitudes (`image` `[row, col]`, `mask` 0/1); 1 when none is measured or all are zero.
pub fn image_scaling(image: ArrayView2<C32>, mask: ArrayView2<f32>) -> f32 {
    let mut v: Vec<f32> = image
        .iter()
        .zip(mask.iter())
        .filter(|(_, m)| **m != 0.0)
        .map(|(x, _)| x.norm())
        .filter(|a| a.is_finite())
        .collect();
    if v.is_empty() {
        return 1.0;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let s = v[((v.len() - 1) as f64 * 0.9).round() as usize];
    if s > 0.0 && s.is_finite() {
        s
    } else {
        1.0
    }
}

/// Resolves the coil maps `[slice, coil, row, col]` of a scan: `maps` if given, else the
/// scan's own, else ESPIRiT estimates from each slice's fully sampled centre for multi-coil
/// data; `None` for single-coil data without maps. Errors on a shape mismatch, on non-finite
/// maps, or when ESPIRiT finds no calibration region.
pub fn resolve_maps(ks: &KSpace, maps: Option<&Array4<C32>>) -> Result<Option<Array4<C32>>> {
    let [s, c, r, n] = ks.shape4();
    if let Some(m) = maps.or(ks.sensitivities.as_ref()) {
        if m.shape() != [s, c, r, n] {
            return Err(ReconError::shape("coil maps", &[s, c, r, n], m.shape()));
        }
        if m.iter().any(|v| !v.re.is_finite() || !v.im.is_finite()) {
            return Err(ReconError::NonFinite(
                "coil maps hold NaN or infinity".into(),
            ));
        }
        return Ok(Some(m.clone()));
    }
    if c == 1 {
        return Ok(None);
    }
    let cfg = EspiritConfig::default();
    let per_slice: Vec<Result<Array3<C32>>> = ks
        .data
        .axis_iter(Axis(0))
        .into_par_iter()
        .map(|k| {
            espirit_maps(k, &cfg).map_err(|e| {
                ReconError::param(
                    "maps",
                    format!("{c} coils without maps, and ESPIRiT failed: {e}"),
                )
            })
        })
        .collect();
    let mut out = Array4::<C32>::zeros((s, c, r, n));
    for (i, m) in per_slice.into_iter().enumerate() {
        out.index_axis_mut(Axis(0), i).assign(&m?);
    }
    Ok(Some(out))
}

/// The forward operator of one slice and a rigorous upper bound of `‖A‖²`: with a 0/1 mask
/// and an orthonormal FFT, `‖A‖² ≤ max_pixel Σ_c |S_c|²` (1 without maps).
pub fn slice_operator(
    mask: ArrayView2<f32>,
    maps: Option<ArrayView3<C32>>,
) -> Result<(Box<dyn LinearOperator>, f64)> {
    match maps {
        None => Ok((Box::new(FourierSampling::new(mask.to_owned())?), 1.0)),
        Some(m) => {
            let (c, r, n) = m.dim();
            let mut bound = 0.0f64;
            for i in 0..r {
                for j in 0..n {
                    let s: f64 = (0..c).map(|k| m[[k, i, j]].norm_sqr() as f64).sum();
                    bound = bound.max(s);
                }
            }
            Ok((Box::new(Sense::new(m.to_owned(), mask.to_owned())?), bound))
        }
    }
}

/// BART's `estimate_scaling` for one slice of k-space `[coil, row, col]` with mask
/// `[row, col]` (see the module docs); 1 when the data are zero.
///
/// The calibration region is BART v0.8's `calib_geom` (`src/misc/mri.c`) with BART's axes
/// `x = col` (its readout) and `y = row`: within the central `min(rows, 32)` rows, a box that
/// starts at one sample at `((cols − 1)/2, (r − 1)/2)` grows by one sample along x, then y,
/// alternately, kept at `((n − size)/2)` along each axis, while every sample in it is measured and
/// no side exceeds 32 (odd sizes included); then the box moves along x to the position of most
/// energy (all coils, the first maximum).
pub fn bart_scaling(kspace: ArrayView3<C32>, mask: ArrayView2<f32>) -> f32 {
    let (coils, rows, cols) = kspace.dim();
    if coils == 0 || rows == 0 || cols == 0 {
        return 1.0;
    }
    let sampled = |i: usize, j: usize| mask[[i, j]] != 0.0;
    // BART's dims: 0 = x = cols (readout), 1 = y = rows restricted to the central 32.
    let t1 = rows.min(32);
    let off1 = (rows - t1) / 2;
    let dims = [cols, t1];
    let mut cal = [1usize, 1];
    let mut pos = [(cols - 1) / 2, (t1 - 1) / 2];
    let mut stop = [false, false];
    let all_measured = |cal: [usize; 2], pos: [usize; 2]| {
        (0..cal[1]).all(|b| (0..cal[0]).all(|a| sampled(off1 + pos[1] + b, pos[0] + a)))
    };
    while !(stop[0] && stop[1]) {
        for i in 0..2 {
            if cal[i] == dims[i] || cal[i] >= 32 {
                stop[i] = true;
            }
            if stop[i] {
                continue;
            }
            cal[i] += 1;
            pos[i] = (dims[i] - cal[i]) / 2;
            if !all_measured(cal, pos) {
                cal[i] -= 1;
                pos[i] = (dims[i] - cal[i]) / 2;
                stop[i] = true;
            }
        }
    }
    // Along the readout: the position of most energy.
    let r0 = off1 + pos[1];
    let (nc, nr) = (cal[0], cal[1]);
    let mut best = (0usize, 0.0f64);
    for c0 in 0..=cols - nc {
        let mut e = 0.0f64;
        for c in 0..coils {
            for i in r0..r0 + nr {
                for j in c0..c0 + nc {
                    e += kspace[[c, i, j]].norm_sqr() as f64;
                }
            }
        }
        if e > best.1 {
            best = (c0, e);
        }
    }
    let c0 = best.0;
    let fft = amri_core::fft::Fft2::new(nr, nc);
    let mut rss = vec![0.0f32; nr * nc];
    let mut buf = vec![C32::new(0.0, 0.0); nr * nc];
    for c in 0..coils {
        for i in 0..nr {
            for j in 0..nc {
                buf[i * nc + j] = kspace[[c, r0 + i, c0 + j]];
            }
        }
        fft.inverse(&mut buf);
        rss.iter_mut()
            .zip(&buf)
            .for_each(|(a, v)| *a += v.norm_sqr());
    }
    let rescale = ((rows * cols) as f64 / (nr * nc) as f64).sqrt() as f32;
    let mut v: Vec<f32> = rss.iter().map(|a| a.sqrt() / rescale).collect();
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    let (med, p90, max) = (v[n / 2], v[((n as f64) * 0.9) as usize], v[n - 1]);
    let s = if (max - p90) < 2.0 * (p90 - med) {
        p90
    } else {
        max
    };
    if s > 0.0 && s.is_finite() {
        s
    } else {
        1.0
    }
}

/// The data scale of one slice under `scaling` (`data` `[coil, row, col]`: k-space, or for
/// [`MeasuredDomain::Image`] the one-channel image).
pub(crate) fn data_scale(
    scaling: DataScaling,
    domain: MeasuredDomain,
    data: ArrayView3<C32>,
    mask: ArrayView2<f32>,
) -> Result<f32> {
    match scaling {
        DataScaling::None => Ok(1.0),
        DataScaling::Bart => Ok(match domain {
            MeasuredDomain::Kspace => bart_scaling(data, mask),
            MeasuredDomain::Image => image_scaling(data.index_axis(Axis(0), 0), mask),
            MeasuredDomain::Projection => return Err(projections_refused()),
        }),
        DataScaling::Fixed(s) if s > 0.0 && s.is_finite() => Ok(s),
        DataScaling::Fixed(s) => Err(ReconError::param(
            "scaling",
            format!("fixed data scale must be finite and > 0, got {s}"),
        )),
    }
}

/// Everything a per-slice solver needs.
pub(crate) struct SliceInput<'a> {
    pub index: usize,
    pub op: &'a dyn LinearOperator,
    /// Scaled data `y / s`, flat `[coil, row, col]` (or `[row, col]` for single-coil).
    pub y: Vec<C32>,
    pub lipschitz: f64,
}

/// Validates a scan, resolves maps and runs `solve` on every slice in parallel.
pub(crate) fn run_slices<F>(
    ks: &KSpace,
    maps: Option<&Array4<C32>>,
    scaling: DataScaling,
    solve: F,
) -> Result<Reconstruction>
where
    F: Fn(SliceInput<'_>) -> Result<(Vec<C32>, SolveLog)> + Sync,
{
    let domain = data_domain(ks)?;
    ks.validate()?;
    let [slices, coils, rows, cols] = ks.shape4();
    if slices == 0 || coils == 0 || rows == 0 || cols == 0 {
        return Err(ReconError::param(
            "kspace",
            format!("empty k-space {:?}", ks.shape4()),
        ));
    }
    let maps = match domain {
        MeasuredDomain::Image if maps.is_some() || ks.sensitivities.is_some() => {
            return Err(ReconError::Unsupported(
                "coil maps given for an image-domain (pixel/box) measurement".into(),
            ))
        }
        MeasuredDomain::Image => None,
        MeasuredDomain::Kspace => resolve_maps(ks, maps)?,
        MeasuredDomain::Projection => return Err(projections_refused()),
    };
    let full = Array2::<f32>::ones((rows, cols));
    let results: Vec<Result<SliceResult>> = (0..slices)
        .into_par_iter()
        .map(|s| {
            let mask = match &ks.mask {
                Some(m) => m.index_axis(Axis(0), s),
                None => full.view(),
            };
            let k = ks.data.index_axis(Axis(0), s);
            let (op, lipschitz): (Box<dyn LinearOperator>, f64) = match domain {
                MeasuredDomain::Image => (Box::new(PixelMask::new(mask.to_owned())?), 1.0),
                MeasuredDomain::Kspace | MeasuredDomain::Projection => {
                    slice_operator(mask, maps.as_ref().map(|m| m.index_axis(Axis(0), s)))?
                }
            };
            let scale = data_scale(scaling, domain, k, mask)?;
            let inv = 1.0 / scale;
            let y: Vec<C32> = k.iter().map(|v| v * inv).collect();
            let (mut image, log) = solve(SliceInput {
                index: s,
                op: op.as_ref(),
                y,
                lipschitz,
            })?;
            image.iter_mut().for_each(|v| *v *= scale);
            Ok(SliceResult { image, log, scale })
        })
        .collect();
    let mut images = Array3::<C32>::zeros((slices, rows, cols));
    let mut logs = Vec::with_capacity(slices);
    let mut scales = Vec::with_capacity(slices);
    for (s, r) in results.into_iter().enumerate() {
        let r = r?;
        images
            .index_axis_mut(Axis(0), s)
            .iter_mut()
            .zip(&r.image)
            .for_each(|(d, v)| *d = *v);
        logs.push(r.log);
        scales.push(r.scale);
    }
    Ok(Reconstruction {
        images,
        logs,
        scales,
    })
}

/// Checks that a per-slice operator maps `[rows, cols]` images and that `y` fits its output.
pub(crate) fn check_slice_problem(op: &dyn LinearOperator, y: &[C32]) -> Result<[usize; 2]> {
    let ish = op.ishape();
    if ish.len() != 2 {
        return Err(ReconError::shape(
            "operator input (a [rows, cols] image)",
            &[0, 0],
            ish,
        ));
    }
    if y.len() != op.osize() {
        return Err(ReconError::shape(
            "data of the operator's output",
            &[op.osize()],
            &[y.len()],
        ));
    }
    if y.iter().any(|v| !v.re.is_finite() || !v.im.is_finite()) {
        return Err(ReconError::NonFinite("k-space data".into()));
    }
    Ok([ish[0], ish[1]])
}

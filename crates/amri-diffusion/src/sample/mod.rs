//! Inference with a trained prior: one-step reconstruction, the posterior sampler for inverse
//! problems (mean and per-pixel uncertainty) and the unconditional fixed-mask sampler.
//!
//! Entry points:
//! - [`Prior::load`]: a checkpoint (run folder, checkpoint folder) with its EMA weights, model
//!   card and the SHA-256 of the weights file (provenance);
//! - [`one_step`]: `E[x0 | A y]` from one network call at the measurement's own mask and a small
//!   σ, optionally with hard data consistency on the measured samples;
//! - [`posterior`]: an ambient-diffusion posterior sampler (after Aali et al. 2024) on an EDM
//!   (Karras ρ) σ schedule with an exact Gaussian data step; several samples give a mean and a
//!   per-pixel standard deviation;
//! - [`sample_unconditional`]: new slices from the prior (EDM Heun, one fixed training-type
//!   mask per sample, as the Ambient Diffusion sampler).
//!
//! Every sampler is generic over [`PriorDenoiser`], so tests plug in analytic denoisers.
//!
//! **Conventions.** A [`Problem`] is one 2-D slice as a user has it: centred k-space (DC at
//! `(rows/2, cols/2)`, orthonormal as `amri_core::fft::fft2c`) `[coil, row, col]` with a
//! `[row, col]` mask, or a corrupted complex image with a pixel mask (1 = measured).
//! Variances and noise levels are **per real component** (real and imaginary parts each), the
//! convention of training (`x_t = x0 + σ n`, `n` with i.i.d. N(0, 1) real and imaginary parts).
//!
//! **Intensity scaling.** Training divides each volume by its measurement scale
//! ([`crate::data::measurement_scale`]: the 99.5th percentile of the zero-filled magnitude of the
//! measured data). Inference divides the measured data by the same number computed from the
//! user's scan ([`measured_scale`], over the whole volume when the caller passes all its slices),
//! runs the network in those units and multiplies the result back, so outputs are in the input's
//! units.
//!
//! **Multi-coil.** The network knows single complex images. For multi-coil k-space
//! `y_c = M F S_c x` the maps are the ones given, else those every measured-data prior is trained
//! with ([`crate::data::acs_maps`]: ESPIRiT on the calibration region, no crop; ESPIRiT's
//! defaults when the mask has no calibration region). A k-space prior gets the input it was
//! trained on, `Σ_c conj(S_c) Fᴴ(M̃ ⊙ y_c)` (one-step, from the data) or
//! `Σ_c conj(S_c) Fᴴ(M̃ ⊙ F(S_c x))` (the sampler's iterate `x`). One-step data consistency is
//! the SENSE data step (`one_step::sense_consistency`). The posterior sampler's likelihood step
//! still uses a *virtual single coil*, `x_zf = Σ_c conj(S_c) Fᴴ y_c / Σ_c |S_c|²` and
//! `y_v = M ⊙ F x_zf`: exact for fully sampled data, an approximation under undersampling.
//!
//! **Image size.** The U-Net needs sizes that are multiples of `2^(levels−1)`; other sizes are
//! zero-padded (image and mask channels, centred) before the network call and cropped after.
//!
//! ```
//! use std::sync::atomic::AtomicBool;
//! use amri_core::C32;
//! use amri_diffusion::loss::DenoiseFn;
//! use amri_diffusion::sample::{posterior, InputDomain, PosteriorConfig, PriorDenoiser, Problem};
//! use candle_core::{Device, Tensor};
//! use ndarray::{Array2, Array3};
//!
//! /// The exact denoiser of a zero-mean Gaussian prior with σ_d = 0.5 per component.
//! struct Gauss(Device);
//! impl DenoiseFn for Gauss {
//!     fn denoise(&self, x: &Tensor, _m: &Tensor, s: &Tensor) -> amri_diffusion::Result<Tensor> {
//!         let g = ((s.sqr()? + 0.25)?.recip()? * 0.25)?.reshape((s.dim(0)?, 1, 1, 1))?;
//!         Ok(x.broadcast_mul(&g)?)
//!     }
//! }
//! impl PriorDenoiser for Gauss {
//!     fn input_domain(&self) -> InputDomain { InputDomain::Clean }
//!     fn sigma_data(&self) -> f64 { 0.5 }
//!     fn device(&self) -> &Device { &self.0 }
//! }
//! # fn main() -> amri_diffusion::Result<()> {
//! // half the columns of an 8×8 single-coil k-space measured
//! let mask = Array2::from_shape_fn((8, 8), |(_, c)| (c % 2) as f32);
//! let kspace = Array3::from_elem((1, 8, 8), C32::new(0.3, 0.0));
//! let p = Problem::Kspace { kspace, mask, maps: None };
//! let cfg = PosteriorConfig { steps: 10, samples: 4, scale: Some(1.0), ..Default::default() };
//! let r = posterior(&Gauss(Device::Cpu), &p, &cfg, &|_, _| {}, &AtomicBool::new(false))?;
//! assert_eq!(r.samples.len(), 4);
//! assert_eq!(r.std.dim(), (8, 8)); // per-pixel uncertainty
//! # Ok(())
//! # }
//! ```

mod heun;
mod one_step;
mod posterior;
mod prior;

use amri_core::fft::{fft2c, ifft2c};
use amri_core::{KSpace, MeasuredDomain, C32};
use amri_ops::espirit::{espirit_maps, EspiritConfig};
use candle_core::{DType, Device, Tensor};
use ndarray::{s, Array2, Array3, Axis, Zip};
use rand::Rng;
use rand_distr::StandardNormal;

use crate::data::{measurement_scale, MeasuredSlice};
use crate::error::{DiffusionError, Result};
use crate::loss::DenoiseFn;
use crate::sense_input::{sense_solve, NetworkInput};

pub use heun::{sample_unconditional, UnconditionalConfig};
pub use one_step::{one_step, Averaging, OneStepConfig};
pub use posterior::{posterior, NetMasks, PosteriorConfig, PosteriorResult};
pub use prior::{sha256_file, sha256_hex, Prior};

/// What the network's image input is, fixed by how it was trained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputDomain {
    /// Ambient pixel prior: input `Ã ⊙ x`, mask channel `Ã` (image layout).
    Pixel,
    /// Ambient k-space prior: input `Fᴴ(M̃ ⊙ F x)`, mask channel `M̃` (centred k-space layout).
    Kspace,
    /// Prior trained on clean images: input `x`, mask channel all ones.
    Clean,
}

/// What a sampler needs from a prior: a denoiser `(x [N,2,H,W], mask [N,1,H,W], σ [N]) → x̂0`
/// (as [`DenoiseFn`]) and how it was trained.
pub trait PriorDenoiser: DenoiseFn {
    /// How the network input is formed.
    fn input_domain(&self) -> InputDomain;
    /// σ_d of the preconditioning: the prior's per-component standard deviation, used for the
    /// width of `p(x0 | x_t)` in the posterior sampler's data step.
    fn sigma_data(&self) -> f64;
    /// Device the network runs on.
    fn device(&self) -> &Device;
    /// Height and width given to the network must be multiples of this (inputs are padded).
    fn size_multiple(&self) -> usize {
        1
    }
    /// How a multi-coil k-space input is formed ([`crate::sense_input`]; the adjoint unless the
    /// prior was trained with the SENSE input).
    fn network_input(&self) -> NetworkInput {
        NetworkInput::Adjoint
    }
    /// A mask `Ã` `[rows, cols]` of the training corruption (`A` then the further `B`) drawn
    /// with `draw` as seed; all ones for priors trained without corruption.
    fn training_mask(&self, rows: usize, cols: usize, draw: u64) -> Result<Array2<f32>> {
        let _ = draw;
        Ok(Array2::ones((rows, cols)))
    }
}

/// One 2-D slice as a user has it.
#[derive(Debug, Clone)]
pub enum Problem {
    /// Centred k-space `[coil, row, col]` with its `[row, col]` sampling mask (1 = measured)
    /// and, for several coils, optional maps `[coil, row, col]` (estimated by ESPIRiT if absent).
    Kspace {
        /// Measured k-space (unmeasured samples are ignored).
        kspace: Array3<C32>,
        /// Sampling mask.
        mask: Array2<f32>,
        /// Coil sensitivity maps.
        maps: Option<Array3<C32>>,
    },
    /// Image-domain corruption (pixel mask, boxes): the corrupted complex image and its mask.
    Pixels {
        /// Measured image (unmeasured pixels are ignored).
        image: Array2<C32>,
        /// Pixel mask.
        mask: Array2<f32>,
    },
}

/// A problem reduced to one complex image grid: `y` (k-space or image, zero off the mask).
#[derive(Debug, Clone)]
pub(crate) struct Single {
    /// [`MeasuredDomain::Kspace`] or [`MeasuredDomain::Image`] (never projections).
    pub domain: MeasuredDomain,
    pub y: Array2<C32>,
    pub mask: Array2<f32>,
    /// Multi-coil k-space only: the coil data and maps behind the virtual coil `y`.
    pub coils: Option<Coils>,
}

/// A multi-coil measurement in network units: centred coil k-space `[coil, row, col]` (zero off
/// the mask, divided by the intensity scale) and the coil maps `[coil, row, col]` used for it.
#[derive(Debug, Clone)]
pub(crate) struct Coils {
    pub y: Array3<C32>,
    pub maps: Array3<C32>,
}

impl Coils {
    /// The SENSE-combined zero-filled image `Σ_c conj(S_c) Fᴴ y_c` `[row, col]`: the multi-coil
    /// network input of training ([`crate::loss::multicoil_kspace_input`]) at σ = 0, with the
    /// measurement's own mask.
    pub fn combined(&self) -> Array2<C32> {
        let imgs = ifft2c(&self.y);
        let mut out = Array2::<C32>::zeros((self.y.dim().1, self.y.dim().2));
        for (img, s) in imgs.outer_iter().zip(self.maps.outer_iter()) {
            Zip::from(&mut out)
                .and(&img)
                .and(&s)
                .for_each(|o, x, s| *o += s.conj() * x);
        }
        out
    }

    /// The network input of this coil data under its 0/1 `mask` `[row, col]` at noise level
    /// `sigma` for a prior with `sigma_data`: [`Coils::combined`] for [`NetworkInput::Adjoint`],
    /// else the SENSE solve ([`crate::sense_input::sense_solve`], Tikhonov weight
    /// [`NetworkInput::tikhonov`]).
    pub fn input(
        &self,
        mask: &Array2<f32>,
        kind: NetworkInput,
        sigma: f64,
        sigma_data: f64,
    ) -> Result<Array2<C32>> {
        match kind {
            NetworkInput::Adjoint => Ok(self.combined()),
            NetworkInput::Sense { iterations, .. } => {
                let bin = mask.mapv(|v| (v != 0.0) as u8 as f32);
                let lambda = kind.tikhonov(sigma, sigma_data);
                sense_solve(
                    self.y.view(),
                    self.maps.view(),
                    bin.view(),
                    iterations,
                    lambda,
                )
            }
        }
    }
}

/// Coil maps of a multi-coil scan for inference: those of [`crate::data::acs_maps`] (ESPIRiT on
/// the calibration region without crop, the maps every measured-data prior was trained with),
/// or, when the mask has no usable calibration region, ESPIRiT with its defaults on the data.
fn inference_maps(k: &Array3<C32>, mask: &Array2<f32>) -> Result<Array3<C32>> {
    match crate::data::acs_maps(k.view(), mask.view()) {
        Ok(m) => Ok(m),
        Err(_) => Ok(espirit_maps(k.view(), &EspiritConfig::default())?),
    }
}

impl Problem {
    /// The problems of every slice of a [`KSpace`] as `amri_io` reads it: centred k-space
    /// `[slice, coil, row, col]` with its mask (fully sampled if none) and stored maps, or, when
    /// its domain is [`MeasuredDomain::Image`] (pixel/box corruptions from `amri simulate`), the
    /// corrupted image `[slice, 1, row, col]` with its pixel mask. Gaussian projections are
    /// refused.
    pub fn from_kspace(ks: &KSpace) -> Result<Vec<Problem>> {
        let [slices, _, rows, cols] = ks.shape4();
        let image_domain = match ks.domain() {
            MeasuredDomain::Image => true,
            MeasuredDomain::Projection => {
                return Err(DiffusionError::Unsupported(
                    "Gaussian random projections: the learned priors take k-space or \
                     image-domain measurements"
                        .into(),
                ))
            }
            MeasuredDomain::Kspace => false,
        };
        (0..slices)
            .map(|s| {
                let mask: Array2<f32> = match &ks.mask {
                    Some(m) => m.index_axis(Axis(0), s).to_owned(),
                    None => Array2::ones((rows, cols)),
                };
                let data = ks.data.index_axis(Axis(0), s);
                let p = if image_domain {
                    Problem::Pixels {
                        image: data.index_axis(Axis(0), 0).to_owned(),
                        mask,
                    }
                } else {
                    Problem::Kspace {
                        kspace: data.to_owned(),
                        mask,
                        maps: ks
                            .sensitivities
                            .as_ref()
                            .map(|m| m.index_axis(Axis(0), s).to_owned()),
                    }
                };
                p.validate()?;
                Ok(p)
            })
            .collect()
    }

    /// The domain its data live in ([`Problem::Pixels`]: [`MeasuredDomain::Image`]).
    pub fn domain(&self) -> MeasuredDomain {
        match self {
            Problem::Kspace { .. } => MeasuredDomain::Kspace,
            Problem::Pixels { .. } => MeasuredDomain::Image,
        }
    }

    /// `(rows, cols)` of the image grid.
    pub fn shape(&self) -> (usize, usize) {
        match self {
            Problem::Kspace { mask, .. } | Problem::Pixels { mask, .. } => mask.dim(),
        }
    }

    /// The measured data as [`crate::data::measurement_scale`] takes it.
    pub fn measured_slice(&self) -> MeasuredSlice<'_> {
        match self {
            Problem::Kspace { kspace, mask, .. } => MeasuredSlice::Kspace {
                kspace: kspace.view(),
                mask: mask.view(),
            },
            Problem::Pixels { image, mask } => MeasuredSlice::Image {
                image: image.view(),
                mask: mask.view(),
            },
        }
    }

    /// Checks shapes and finiteness; the error says what is wrong.
    pub fn validate(&self) -> Result<()> {
        let (r, c) = self.shape();
        if r == 0 || c == 0 {
            return Err(DiffusionError::Shape(format!("empty {r}×{c} slice")));
        }
        let finite = |it: &mut dyn Iterator<Item = bool>| {
            let mut ok = true;
            for b in it {
                ok &= b;
            }
            ok
        };
        match self {
            Problem::Kspace { kspace, maps, mask } => {
                let (nc, kr, kc) = kspace.dim();
                if nc == 0 || (kr, kc) != (r, c) {
                    return Err(DiffusionError::Shape(format!(
                        "k-space {:?} does not match mask [{r}, {c}]",
                        kspace.shape()
                    )));
                }
                if let Some(m) = maps {
                    if m.dim() != kspace.dim() {
                        return Err(DiffusionError::Shape(format!(
                            "coil maps {:?} do not match k-space {:?}",
                            m.shape(),
                            kspace.shape()
                        )));
                    }
                }
                if !finite(&mut kspace.iter().map(|v| v.re.is_finite() && v.im.is_finite()))
                    || !finite(&mut mask.iter().map(|v| v.is_finite()))
                {
                    return Err(DiffusionError::Config(
                        "k-space or mask holds NaN or infinite values".into(),
                    ));
                }
            }
            Problem::Pixels { image, mask } => {
                if image.dim() != (r, c) {
                    return Err(DiffusionError::Shape(format!(
                        "image {:?} does not match mask [{r}, {c}]",
                        image.shape()
                    )));
                }
                if !finite(&mut image.iter().map(|v| v.re.is_finite() && v.im.is_finite()))
                    || !finite(&mut mask.iter().map(|v| v.is_finite()))
                {
                    return Err(DiffusionError::Config(
                        "image or mask holds NaN or infinite values".into(),
                    ));
                }
            }
        }
        Ok(())
    }

    /// The single-image form (virtual coil for multi-coil k-space, see the module docs),
    /// divided by `scale`.
    pub(crate) fn single(&self, scale: f32) -> Result<Single> {
        self.validate()?;
        if !(scale.is_finite() && scale > 0.0) {
            return Err(DiffusionError::Config(format!(
                "intensity scale must be > 0, got {scale}"
            )));
        }
        let bin = |m: &Array2<f32>| m.mapv(|v| if v != 0.0 { 1.0f32 } else { 0.0 });
        match self {
            Problem::Pixels { image, mask } => {
                let mask = bin(mask);
                let mut y = image / C32::new(scale, 0.0);
                Zip::from(&mut y).and(&mask).for_each(|v, m| *v *= *m);
                Ok(Single {
                    domain: MeasuredDomain::Image,
                    y,
                    mask,
                    coils: None,
                })
            }
            Problem::Kspace { kspace, mask, maps } => {
                let mask = bin(mask);
                let mut k = kspace / C32::new(scale, 0.0);
                for mut plane in k.outer_iter_mut() {
                    Zip::from(&mut plane).and(&mask).for_each(|v, m| *v *= *m);
                }
                let mut coils = None;
                let y = if k.dim().0 == 1 {
                    k.index_axis(Axis(0), 0).to_owned()
                } else {
                    let maps = match maps {
                        Some(m) => m.clone(),
                        None => inference_maps(&k, &mask)?,
                    };
                    let imgs = ifft2c(&k);
                    let (_, r, c) = k.dim();
                    let mut num = Array2::<C32>::zeros((r, c));
                    let mut den = Array2::<f32>::zeros((r, c));
                    for (img, s) in imgs.outer_iter().zip(maps.outer_iter()) {
                        Zip::from(&mut num)
                            .and(&mut den)
                            .and(&img)
                            .and(&s)
                            .for_each(|n, d, x, s| {
                                *n += s.conj() * x;
                                *d += s.norm_sqr();
                            });
                    }
                    Zip::from(&mut num).and(&den).for_each(|n, d| {
                        *n = if *d > 1e-12 {
                            *n / *d
                        } else {
                            C32::new(0.0, 0.0)
                        };
                    });
                    let mut yv = fft2c(&num);
                    Zip::from(&mut yv).and(&mask).for_each(|v, m| *v *= *m);
                    coils = Some(Coils { y: k, maps });
                    yv
                };
                Ok(Single {
                    domain: MeasuredDomain::Kspace,
                    y,
                    mask,
                    coils,
                })
            }
        }
    }
}

impl Single {
    /// The zero-filled image of the measurement.
    pub fn zero_filled(&self) -> Array2<C32> {
        match self.domain {
            MeasuredDomain::Image => self.y.clone(),
            MeasuredDomain::Kspace | MeasuredDomain::Projection => ifft2c(&self.y),
        }
    }
}

/// The intensity scale of a volume from its measured slices ([`crate::data::measurement_scale`]):
/// divide by it before the network, multiply the reconstruction back.
pub fn measured_scale(problems: &[Problem]) -> Result<f32> {
    let slices: Vec<MeasuredSlice> = problems.iter().map(Problem::measured_slice).collect();
    measurement_scale(&slices)
}

/// The EDM (Karras et al. 2022) noise levels `σ_i = (σ_max^{1/ρ} + i/(n−1)·(σ_min^{1/ρ} −
/// σ_max^{1/ρ}))^ρ`, `i = 0…n−1`, from `σ_max` down to `σ_min` (one level if `n == 1`: σ_max).
pub fn karras_sigmas(n: usize, sigma_min: f64, sigma_max: f64, rho: f64) -> Result<Vec<f64>> {
    if n == 0 {
        return Err(DiffusionError::Config("sampler steps must be ≥ 1".into()));
    }
    if !(sigma_min > 0.0 && sigma_max >= sigma_min && sigma_max.is_finite() && rho > 0.0) {
        return Err(DiffusionError::Config(format!(
            "need 0 < sigma_min ≤ sigma_max and rho > 0, got sigma_min = {sigma_min}, \
             sigma_max = {sigma_max}, rho = {rho}"
        )));
    }
    if n == 1 {
        return Ok(vec![sigma_max]);
    }
    let (a, b) = (sigma_max.powf(1.0 / rho), sigma_min.powf(1.0 / rho));
    Ok((0..n)
        .map(|i| (a + i as f64 / (n - 1) as f64 * (b - a)).powf(rho))
        .collect())
}

/// `[N, H, W]` complex → `[N, 2, H, W]` f32 tensor (real, imag).
pub(crate) fn to_tensor(x: &Array3<C32>, dev: &Device) -> Result<Tensor> {
    let (n, h, w) = x.dim();
    let mut v = Vec::with_capacity(n * 2 * h * w);
    for img in x.outer_iter() {
        v.extend(img.iter().map(|c| c.re));
        v.extend(img.iter().map(|c| c.im));
    }
    Ok(Tensor::from_vec(v, (n, 2, h, w), dev)?)
}

/// `[N, 2, H, W]` f32 tensor → `[N, H, W]` complex.
pub(crate) fn from_tensor(t: &Tensor) -> Result<Array3<C32>> {
    let (n, c, h, w) = t.dims4()?;
    if c != 2 {
        return Err(DiffusionError::Shape(format!(
            "expected 2 channels (real, imag), got {c}"
        )));
    }
    let v = t
        .to_device(&Device::Cpu)?
        .to_dtype(DType::F32)?
        .flatten_all()?
        .to_vec1::<f32>()?;
    let mut out = Array3::<C32>::zeros((n, h, w));
    for (k, mut img) in out.outer_iter_mut().enumerate() {
        let off = k * 2 * h * w;
        for (i, o) in img.iter_mut().enumerate() {
            *o = C32::new(v[off + i], v[off + h * w + i]);
        }
    }
    Ok(out)
}

/// The network input for `x` `[N, H, W]` with per-sample masks `[N, H, W]` under `domain`
/// (see [`InputDomain`]); returns (input, mask channel). With coil `maps` `[coil, H, W]` a
/// k-space prior gets the multi-coil input of training, `Σ_c conj(S_c) Fᴴ(M̃ ⊙ F(S_c x))`.
pub(crate) fn network_input(
    domain: InputDomain,
    x: &Array3<C32>,
    masks: &Array3<f32>,
    maps: Option<&Array3<C32>>,
    kind: NetworkInput,
    sigma: f64,
    sigma_data: f64,
) -> Result<(Array3<C32>, Array3<f32>)> {
    match (domain, maps) {
        (InputDomain::Pixel, _) => {
            let mut inp = x.clone();
            Zip::from(&mut inp).and(masks).for_each(|v, m| *v *= *m);
            Ok((inp, masks.clone()))
        }
        (InputDomain::Kspace, Some(maps)) => {
            if (maps.dim().1, maps.dim().2) != (x.dim().1, x.dim().2) {
                return Err(DiffusionError::Shape(format!(
                    "coil maps {:?} do not match images {:?}",
                    maps.shape(),
                    x.shape()
                )));
            }
            let mut inp = Array3::<C32>::zeros(x.dim());
            for ((xk, mk), mut ik) in x
                .outer_iter()
                .zip(masks.outer_iter())
                .zip(inp.outer_iter_mut())
            {
                let mut coil_k = Array3::<C32>::zeros(maps.dim());
                for (mut ck, s) in coil_k.outer_iter_mut().zip(maps.outer_iter()) {
                    ck.assign(&(&s * &xk));
                }
                let mut k = fft2c(&coil_k);
                for mut plane in k.outer_iter_mut() {
                    Zip::from(&mut plane).and(&mk).for_each(|v, m| *v *= *m);
                }
                let coils = Coils {
                    y: k,
                    maps: maps.clone(),
                };
                ik.assign(&coils.input(&mk.to_owned(), kind, sigma, sigma_data)?);
            }
            Ok((inp, masks.clone()))
        }
        (InputDomain::Kspace, None) => {
            let mut k = fft2c(x);
            Zip::from(&mut k).and(masks).for_each(|v, m| *v *= *m);
            Ok((ifft2c(&k), masks.clone()))
        }
        (InputDomain::Clean, _) => Ok((x.clone(), Array3::ones(x.dim()))),
    }
}

/// `multiple`-aligned size ≥ `n`.
fn round_up(n: usize, multiple: usize) -> usize {
    n.div_ceil(multiple.max(1)) * multiple.max(1)
}

/// One denoiser call on `x` `[N, H, W]` at noise level `sigma` with training-layout masks
/// `[N, H, W]` (and, for multi-coil data, the coil `maps`): builds the network input for `d`'s
/// domain ([`network_input`]) and calls [`denoise_input`].
pub(crate) fn denoise_batch<D: PriorDenoiser + ?Sized>(
    d: &D,
    x: &Array3<C32>,
    masks: &Array3<f32>,
    maps: Option<&Array3<C32>>,
    sigma: f64,
) -> Result<Array3<C32>> {
    let (inp, m) = network_input(
        d.input_domain(),
        x,
        masks,
        maps,
        d.network_input(),
        sigma,
        d.sigma_data(),
    )?;
    denoise_input(d, inp, m, sigma)
}

/// One denoiser call on an already formed network input `inp` `[N, H, W]` with its mask
/// channel `m` `[N, H, W]` at noise level `sigma`: pads to the network's size multiple
/// (centred, zeros), calls, crops.
pub(crate) fn denoise_input<D: PriorDenoiser + ?Sized>(
    d: &D,
    inp: Array3<C32>,
    m: Array3<f32>,
    sigma: f64,
) -> Result<Array3<C32>> {
    let multiple = d.size_multiple();
    let (n, h, w) = inp.dim();
    let (hp, wp) = (round_up(h, multiple), round_up(w, multiple));
    let (r0, c0) = ((hp - h) / 2, (wp - w) / 2);
    let (inp, m) = if (hp, wp) == (h, w) {
        (inp, m)
    } else {
        let mut pi = Array3::<C32>::zeros((n, hp, wp));
        pi.slice_mut(s![.., r0..r0 + h, c0..c0 + w]).assign(&inp);
        let mut pm = Array3::<f32>::zeros((n, hp, wp));
        pm.slice_mut(s![.., r0..r0 + h, c0..c0 + w]).assign(&m);
        (pi, pm)
    };
    let dev = d.device();
    let xt = to_tensor(&inp, dev)?;
    let mt = Tensor::from_vec(m.iter().copied().collect::<Vec<f32>>(), (n, 1, hp, wp), dev)?;
    let st = Tensor::from_vec(vec![sigma as f32; n], n, dev)?;
    let out = from_tensor(&d.denoise(&xt, &mt, &st)?)?;
    Ok(out.slice(s![.., r0..r0 + h, c0..c0 + w]).to_owned())
}

/// Complex white noise `[N, H, W]`, real and imaginary parts i.i.d. N(0, 1).
pub(crate) fn complex_noise<R: Rng + ?Sized>(
    shape: (usize, usize, usize),
    rng: &mut R,
) -> Array3<C32> {
    Array3::from_shape_simple_fn(shape, || {
        let re: f32 = rng.sample(StandardNormal);
        let im: f32 = rng.sample(StandardNormal);
        C32::new(re, im)
    })
}

/// Checks the cancel flag.
pub(crate) fn check_cancel(cancel: &std::sync::atomic::AtomicBool) -> Result<()> {
    if cancel.load(std::sync::atomic::Ordering::Relaxed) {
        Err(DiffusionError::Cancelled)
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn karras_schedule_endpoints_and_monotone() -> Result<()> {
        let s = karras_sigmas(10, 0.002, 80.0, 7.0)?;
        assert_eq!(s.len(), 10);
        assert!((s[0] - 80.0).abs() < 1e-9 && (s[9] - 0.002).abs() < 1e-12);
        assert!(s.windows(2).all(|w| w[1] < w[0]));
        // ρ = 1 is linear
        let l = karras_sigmas(5, 1.0, 5.0, 1.0)?;
        for (a, b) in l.iter().zip([5.0, 4.0, 3.0, 2.0, 1.0]) {
            assert!((a - b).abs() < 1e-12);
        }
        assert!(karras_sigmas(0, 0.1, 1.0, 7.0).is_err());
        assert!(karras_sigmas(3, 0.0, 1.0, 7.0).is_err());
        Ok(())
    }

    #[test]
    fn tensor_round_trip() -> Result<()> {
        let x = Array3::from_shape_fn((2, 3, 4), |(a, b, c)| {
            C32::new(a as f32 + b as f32 * 0.5, c as f32 - 1.0)
        });
        let t = to_tensor(&x, &Device::Cpu)?;
        assert_eq!(t.dims(), &[2, 2, 3, 4]);
        assert_eq!(from_tensor(&t)?, x);
        Ok(())
    }

    #[test]
    fn virtual_coil_is_exact_for_full_sampling() -> Result<()> {
        let (r, c) = (8, 8);
        let x = Array2::from_shape_fn((r, c), |(i, j)| {
            C32::new((i as f32 * 0.3).sin(), (j as f32 * 0.2).cos())
        });
        let maps = amri_ops::coils::synthetic_maps(4, r, c, Some(3));
        let mut k = Array3::<C32>::zeros((4, r, c));
        for (mut kc, s) in k.outer_iter_mut().zip(maps.outer_iter()) {
            kc.assign(&fft2c(&(&x * &s)));
        }
        let p = Problem::Kspace {
            kspace: k,
            mask: Array2::ones((r, c)),
            maps: Some(maps),
        };
        let s = p.single(2.0)?;
        let want = fft2c(&x) / C32::new(2.0, 0.0);
        let err = (&s.y - &want)
            .iter()
            .map(|v| v.norm())
            .fold(0.0f32, f32::max);
        assert!(err < 1e-4, "virtual coil differs by {err}");
        Ok(())
    }

    #[test]
    fn multicoil_network_input_of_an_image_is_training_s_input_of_its_coil_data() -> Result<()> {
        let (n, r, c, nc) = (2, 12, 8, 3);
        let maps = amri_ops::coils::synthetic_maps(nc, r, c, Some(1));
        let x = Array3::from_shape_fn((n, r, c), |(k, i, j)| {
            C32::new((i as f32 * 0.4 + k as f32).sin(), (j as f32 * 0.3).cos())
        });
        let masks = Array3::from_shape_fn((n, r, c), |(k, _, j)| ((j + k) % 2) as f32);
        let (inp, m) = network_input(
            InputDomain::Kspace,
            &x,
            &masks,
            Some(&maps),
            NetworkInput::Adjoint,
            0.0,
            0.5,
        )?;
        assert_eq!(m, masks);
        // training forms Σ_c conj(S_c) Fᴴ(M̃ ⊙ y_c) from coil data y_c = F(S_c x) (σ = 0)
        let mut y = Vec::new();
        let mut sv = Vec::new();
        for xk in x.outer_iter() {
            for s in maps.outer_iter() {
                let k = fft2c(&(&s * &xk));
                y.extend(k.iter().map(|v| v.re));
                y.extend(k.iter().map(|v| v.im));
                sv.extend(s.iter().map(|v| v.re));
                sv.extend(s.iter().map(|v| v.im));
            }
        }
        let dev = Device::Cpu;
        let y = Tensor::from_vec(y, (n, nc, 2, r, c), &dev)?;
        let want = crate::loss::multicoil_kspace_input(
            &crate::fourier::CenteredDft2::new(r, c, &dev)?,
            &y,
            &Tensor::from_vec(sv, (n, nc, 2, r, c), &dev)?,
            &Tensor::from_vec(masks.iter().copied().collect(), (n, 1, r, c), &dev)?,
            &Tensor::zeros(n, DType::F32, &dev)?,
            &y.zeros_like()?,
        )?;
        let want = from_tensor(&want)?;
        let err = (&inp - &want)
            .iter()
            .map(|v| v.norm())
            .fold(0.0f32, f32::max);
        assert!(err < 1e-4, "sampler input differs from training's by {err}");
        Ok(())
    }
}

//! Training losses: ambient (corrupted-data) losses for pixel masks and single-coil Cartesian
//! k-space, and the supervised clean-data loss, all with EDM weighting.
//!
//! Conventions: images `[N, 2, H, W]` (real, imaginary), masks `[N, 1, H, W]` (or broadcastable,
//! e.g. a Cartesian `[N, 1, 1, W]`) with values in {0, 1}, `sigma: [N]` (> 0), noise with the
//! shape of the image and i.i.d. N(0, 1) entries (so each real and imaginary part has variance
//! σ² after scaling). `‖·‖²` sums over channels and pixels of one sample; every loss is
//! `mean_i λ(σ_i) ‖·‖²_i` with `λ(σ) = (σ²+σ_d²)/(σ σ_d)²`.
//!
//! - [`ambient_pixel_loss`]: `x_A = A ⊙ x0`; network input `[Ã ⊙ (x_A + σ n), Ã]`; loss
//!   `‖A ⊙ (D − x_A)‖²`, i.e. on the pixels A measured, not just Ã's.
//! - [`ambient_kspace_loss`]: `y = M ⊙ F x0` (centred orthonormal DFT); network input
//!   `[Fᴴ(M̃ ⊙ (y + σ n_k)), M̃]` (`= Ãᴴ(Ã y + σ Ã n)` with `Ã = M̃ F`; `n_k = F n` is again
//!   white because `F` is unitary); loss `‖M ⊙ (F D − y)‖²` in the measured domain.
//! - [`supervised_loss`]: network input `[x0 + σ n, 1]`; loss `‖D − x0‖²`.
//! - [`multicoil_kspace_loss`]: `y_c = M ⊙ F(S_c x0)` per coil, maps `S_c` estimated from the
//!   ACS; network input the SENSE-combined `Σ_c S_c* Fᴴ(M̃ ⊙ (y_c + σ n_c))`; loss
//!   `Σ_c ‖M ⊙ (F(S_c D) − y_c)‖²`.
//! - [`tweedie_pixel_loss`], [`tweedie_kspace_loss`]: the ambient losses for data carrying known
//!   Gaussian noise `σ_n` (Daras et al. 2024, "Consistent Diffusion Meets Tweedie"); see there.

use candle_core::{CpuStorage, CustomOp2, CustomOp3, DType, Layout, Shape, Tensor};
use rayon::prelude::*;

use crate::error::{DiffusionError, Result};
use crate::fourier::CenteredDft2;
use crate::precond::{per_sample_sq_norm, Denoiser, EdmPrecond};
use crate::sense_input::{sense_input_tensor, NetworkInput};

/// Anything that denoises like [`Denoiser::forward`]: `(x [N,C,H,W], mask, sigma [N]) → [N,C,H,W]`.
pub trait DenoiseFn {
    /// The clean-image estimate for noisy corrupted input `x` with mask channels `mask`.
    fn denoise(&self, x: &Tensor, mask: &Tensor, sigma: &Tensor) -> Result<Tensor>;
}

impl DenoiseFn for Denoiser {
    fn denoise(&self, x: &Tensor, mask: &Tensor, sigma: &Tensor) -> Result<Tensor> {
        self.forward(x, mask, sigma)
    }
}

impl<F> DenoiseFn for F
where
    F: Fn(&Tensor, &Tensor, &Tensor) -> Result<Tensor>,
{
    fn denoise(&self, x: &Tensor, mask: &Tensor, sigma: &Tensor) -> Result<Tensor> {
        self(x, mask, sigma)
    }
}

/// Per-sample masked squared error `‖mask ⊙ (pred − target)‖²`: `[N, C, H, W]` → `[N]`.
pub fn masked_sq_error(pred: &Tensor, target: &Tensor, mask: &Tensor) -> Result<Tensor> {
    if pred.dims() != target.dims() {
        return Err(DiffusionError::Shape(format!(
            "prediction {:?} vs target {:?}",
            pred.dims(),
            target.dims()
        )));
    }
    let r = (pred - target)?.broadcast_mul(&mask.to_dtype(pred.dtype())?)?;
    per_sample_sq_norm(&r)
}

/// `mean_i w_i e_i` for per-sample errors `e: [N]` and weights `w: [N]` → scalar tensor.
pub fn weighted_mean(per_sample: &Tensor, weight: &Tensor) -> Result<Tensor> {
    Ok((per_sample * weight)?.mean_all()?)
}

fn sigma_col(sigma: &Tensor) -> Result<Tensor> {
    let n = sigma.dim(0)?;
    Ok(sigma.reshape((n, 1, 1, 1))?)
}

fn check_batch(x: &Tensor, sigma: &Tensor, noise: &Tensor) -> Result<()> {
    let n = x.dims4()?.0;
    if sigma.dims() != [n] || noise.dims() != x.dims() {
        return Err(DiffusionError::Shape(format!(
            "batch {:?}: sigma must be [{n}] (got {:?}) and noise the same shape (got {:?})",
            x.dims(),
            sigma.dims(),
            noise.dims()
        )));
    }
    Ok(())
}

/// Network input of the pixel-mask ambient loss: `Ã ⊙ (x_A + σ n)`, shape of `x_a`.
pub fn ambient_pixel_input(
    x_a: &Tensor,
    mask_tilde: &Tensor,
    sigma: &Tensor,
    noise: &Tensor,
) -> Result<Tensor> {
    check_batch(x_a, sigma, noise)?;
    let noisy = (x_a + noise.broadcast_mul(&sigma_col(sigma)?)?)?;
    Ok(noisy.broadcast_mul(&mask_tilde.to_dtype(x_a.dtype())?)?)
}

/// Ambient loss for image-domain corruptions (pixel masks, boxes):
/// `mean_i λ(σ_i) ‖A_i ⊙ (D(Ã_i ⊙ (x_A,i + σ_i n_i), Ã_i; σ_i) − x_A,i)‖²`.
///
/// `x_a = A ⊙ x0: [N, 2, H, W]`, `mask_a`/`mask_tilde`: `[N, 1, H, W]` with `Ã ⊆ A`,
/// `sigma: [N]`, `noise: [N, 2, H, W]`. Returns a scalar tensor (differentiable).
pub fn ambient_pixel_loss<M: DenoiseFn + ?Sized>(
    model: &M,
    precond: &EdmPrecond,
    x_a: &Tensor,
    mask_a: &Tensor,
    mask_tilde: &Tensor,
    sigma: &Tensor,
    noise: &Tensor,
) -> Result<Tensor> {
    let input = ambient_pixel_input(x_a, mask_tilde, sigma, noise)?;
    let pred = model.denoise(&input, mask_tilde, sigma)?;
    let err = masked_sq_error(&pred, x_a, mask_a)?;
    weighted_mean(&err, &precond.loss_weight_t(sigma)?)
}

/// Network input of the k-space ambient loss: `Fᴴ(M̃ ⊙ (y + σ n_k))` as `[N, 2, H, W]`
/// (real, imag image). `y`, `noise_k`: `[N, 2, H, W]` centred k-space.
pub fn ambient_kspace_input(
    dft: &CenteredDft2,
    y: &Tensor,
    mask_tilde: &Tensor,
    sigma: &Tensor,
    noise_k: &Tensor,
) -> Result<Tensor> {
    check_batch(y, sigma, noise_k)?;
    let noisy = (y + noise_k.broadcast_mul(&sigma_col(sigma)?)?)?;
    dft.adjoint(&noisy.broadcast_mul(&mask_tilde.to_dtype(y.dtype())?)?)
}

/// Ambient loss for single-coil Cartesian k-space, in the measured domain:
/// `mean_i λ(σ_i) ‖M_i ⊙ (F D(Fᴴ(M̃_i ⊙ (y_i + σ_i n_k,i)), M̃_i; σ_i) − y_i)‖²`.
///
/// `y = M ⊙ F x0: [N, 2, H, W]` centred k-space (real, imag), `mask_a` = M and
/// `mask_tilde` = M̃ ⊆ M: `[N, 1, H, W]` or `[N, 1, 1, W]` (k-space masks, DC at the centre),
/// `noise_k: [N, 2, H, W]`. The mask channel given to the network is M̃ in k-space layout.
#[allow(clippy::too_many_arguments)]
pub fn ambient_kspace_loss<M: DenoiseFn + ?Sized>(
    model: &M,
    precond: &EdmPrecond,
    dft: &CenteredDft2,
    y: &Tensor,
    mask_a: &Tensor,
    mask_tilde: &Tensor,
    sigma: &Tensor,
    noise_k: &Tensor,
) -> Result<Tensor> {
    let input = ambient_kspace_input(dft, y, mask_tilde, sigma, noise_k)?;
    let pred = model.denoise(&input, mask_tilde, sigma)?;
    let err = masked_sq_error(&dft.forward(&pred)?, y, mask_a)?;
    weighted_mean(&err, &precond.loss_weight_t(sigma)?)
}

/// Supervised (clean-data) EDM loss: `mean_i λ(σ_i) ‖D(x0_i + σ_i n_i, 1; σ_i) − x0_i‖²` with an
/// all-ones mask channel, for the comparison with the ambient losses (same network).
pub fn supervised_loss<M: DenoiseFn + ?Sized>(
    model: &M,
    precond: &EdmPrecond,
    x0: &Tensor,
    sigma: &Tensor,
    noise: &Tensor,
) -> Result<Tensor> {
    check_batch(x0, sigma, noise)?;
    let (n, _, h, w) = x0.dims4()?;
    let ones = Tensor::ones((n, 1, h, w), DType::F32, x0.device())?;
    let input = (x0 + noise.broadcast_mul(&sigma_col(sigma)?)?)?;
    let pred = model.denoise(&input, &ones, sigma)?;
    let err = masked_sq_error(&pred, x0, &ones)?;
    weighted_mean(&err, &precond.loss_weight_t(sigma)?)
}

fn check_coils(z: &Tensor, maps: &Tensor) -> Result<(usize, usize, usize, usize)> {
    let d = z.dims();
    if d.len() != 5 || d[2] != 2 || maps.dims() != d {
        return Err(DiffusionError::Shape(format!(
            "multi-coil tensors must be [N, coils, 2, H, W] with maps of the same shape, got {:?} \
             and maps {:?}",
            d,
            maps.dims()
        )));
    }
    Ok((d[0], d[1], d[3], d[4]))
}

/// SENSE coil combination `Σ_c conj(S_c)·z_c`: coil images `z` and maps `[N, coils, 2, H, W]`
/// (real, imaginary) → `[N, 2, H, W]` (the adjoint of [`coil_expand`]).
/// On the CPU a fused op, differentiable in `z` only (the maps are data).
pub fn coil_combine(z: &Tensor, maps: &Tensor) -> Result<Tensor> {
    check_coils(z, maps)?;
    if z.device().is_cpu() {
        return Ok(z
            .to_dtype(DType::F32)?
            .contiguous()?
            .apply_op2(&maps.to_dtype(DType::F32)?.contiguous()?, CoilCombineOp)?);
    }
    let (zr, zi) = (z.narrow(2, 0, 1)?, z.narrow(2, 1, 1)?);
    let (sr, si) = (maps.narrow(2, 0, 1)?, maps.narrow(2, 1, 1)?);
    let re = ((&sr * &zr)? + (&si * &zi)?)?;
    let im = ((&sr * &zi)? - (&si * &zr)?)?;
    Ok(Tensor::cat(&[re, im], 2)?.sum(1)?)
}

/// Coil expansion `x ↦ (S_c·x)_c`: image `x: [N, 2, H, W]`, maps `[N, coils, 2, H, W]` →
/// `[N, coils, 2, H, W]`. On the CPU a fused op, differentiable in `x` only (the maps are data).
pub fn coil_expand(x: &Tensor, maps: &Tensor) -> Result<Tensor> {
    let (n, _, h, w) = x.dims4()?;
    let md = maps.dims();
    if md.len() != 5 || md[0] != n || md[2] != 2 || md[3] != h || md[4] != w {
        return Err(DiffusionError::Shape(format!(
            "maps must be [{n}, coils, 2, {h}, {w}], got {md:?}"
        )));
    }
    if x.device().is_cpu() {
        return Ok(x
            .to_dtype(DType::F32)?
            .contiguous()?
            .apply_op2(&maps.to_dtype(DType::F32)?.contiguous()?, CoilExpandOp)?);
    }
    let x = x.unsqueeze(1)?;
    let (xr, xi) = (x.narrow(2, 0, 1)?, x.narrow(2, 1, 1)?);
    let (sr, si) = (maps.narrow(2, 0, 1)?, maps.narrow(2, 1, 1)?);
    let re = (sr.broadcast_mul(&xr)? - si.broadcast_mul(&xi)?)?;
    let im = (sr.broadcast_mul(&xi)? + si.broadcast_mul(&xr)?)?;
    Ok(Tensor::cat(&[re, im], 2)?)
}

/// `F` or `Fᴴ` of every coil of `[N, coils, 2, H, W]`.
fn per_coil(
    dft: &CenteredDft2,
    z: &Tensor,
    f: fn(&CenteredDft2, &Tensor) -> Result<Tensor>,
) -> Result<Tensor> {
    let d = z.dims().to_vec();
    let flat = z.reshape((d[0] * d[1], d[2], d[3], d[4]))?;
    Ok(f(dft, &flat)?.reshape(d)?)
}

/// `[N, 1, H, W]` (or `[N, 1, 1, W]`) mask → `[N, 1, 1, H|1, W]` to broadcast over coils.
fn coil_mask(mask: &Tensor, dtype: DType) -> Result<Tensor> {
    Ok(mask.to_dtype(dtype)?.unsqueeze(1)?)
}

/// Network input of the multi-coil k-space ambient loss: the SENSE-combined zero-filled image
/// `Σ_c conj(S_c) Fᴴ(M̃ ⊙ (y_c + σ n_c))` as `[N, 2, H, W]`. `y`, `noise_k`, `maps`:
/// `[N, coils, 2, H, W]` (centred k-space; maps in the image domain), `mask_tilde`:
/// `[N, 1, H, W]` (or `[N, 1, 1, W]`). With one coil and `S = 1` it is
/// [`ambient_kspace_input`].
pub fn multicoil_kspace_input(
    dft: &CenteredDft2,
    y: &Tensor,
    maps: &Tensor,
    mask_tilde: &Tensor,
    sigma: &Tensor,
    noise_k: &Tensor,
) -> Result<Tensor> {
    multicoil_network_input(
        &NetworkInput::Adjoint,
        1.0, // σ_d: unused by the adjoint
        dft,
        y,
        maps,
        mask_tilde,
        sigma,
        noise_k,
    )
}

/// Network input of the multi-coil k-space ambient loss formed as `input` says
/// ([`crate::sense_input`]): [`multicoil_kspace_input`] for [`NetworkInput::Adjoint`], or the
/// SENSE solve of the same masked noisy coil data `M̃ ⊙ (y_c + σ n_c)` with Tikhonov weight
/// [`NetworkInput::tikhonov`]`(σ_i, sigma_data)` per example. Shapes as
/// [`multicoil_kspace_input`].
#[allow(clippy::too_many_arguments)]
pub fn multicoil_network_input(
    input: &NetworkInput,
    sigma_data: f64,
    dft: &CenteredDft2,
    y: &Tensor,
    maps: &Tensor,
    mask_tilde: &Tensor,
    sigma: &Tensor,
    noise_k: &Tensor,
) -> Result<Tensor> {
    let (n, _, _, _) = check_coils(y, maps)?;
    if sigma.dims() != [n] || noise_k.dims() != y.dims() {
        return Err(DiffusionError::Shape(format!(
            "multi-coil batch {:?}: sigma must be [{n}] (got {:?}), noise like y (got {:?})",
            y.dims(),
            sigma.dims(),
            noise_k.dims()
        )));
    }
    let masked = if y.device().is_cpu() {
        // one pass: M̃ ⊙ (y + σ n) with the mask broadcast over coils and (re, im)
        let (h, w) = (y.dim(3)?, y.dim(4)?);
        let m = mask_tilde
            .to_dtype(DType::F32)?
            .broadcast_as((n, 1, h, w))?
            .contiguous()?;
        y.to_dtype(DType::F32)?.contiguous()?.apply_op3_no_bwd(
            &noise_k.to_dtype(DType::F32)?.contiguous()?,
            &m,
            &MaskedNoisyOp(sigma.to_dtype(DType::F32)?.to_vec1::<f32>()?),
        )?
    } else {
        let s = sigma.reshape((n, 1, 1, 1, 1))?;
        let noisy = (y + noise_k.broadcast_mul(&s)?)?;
        noisy.broadcast_mul(&coil_mask(mask_tilde, y.dtype())?)?
    };
    match *input {
        NetworkInput::Adjoint => {
            coil_combine(&per_coil(dft, &masked, CenteredDft2::adjoint)?, maps)
        }
        NetworkInput::Sense { iterations, .. } => {
            let lambdas: Vec<f32> = sigma
                .to_dtype(DType::F64)?
                .to_vec1::<f64>()?
                .iter()
                .map(|&s| input.tikhonov(s, sigma_data))
                .collect();
            sense_input_tensor(&masked, maps, mask_tilde, iterations, &lambdas)
        }
    }
}

/// Ambient loss for multi-coil k-space with coil maps estimated from the ACS only, in the
/// measured domain: `mean_i λ(σ_i) Σ_c ‖M_i ⊙ (F(S_c · D(x̃_i, M̃_i; σ_i)) − y_c,i)‖²` with the
/// network input `x̃` formed as `input` says ([`multicoil_network_input`]; the adjoint is
/// [`multicoil_kspace_input`]). `y = M ⊙ F(S_true,c x0) (+ noise)` is all
/// the loss sees of the scan; `maps` are the estimated `S_c`. Shapes as
/// [`multicoil_kspace_input`], `mask_a` = M like `mask_tilde`. With one coil and `S = 1` this is
/// [`ambient_kspace_loss`].
#[allow(clippy::too_many_arguments)]
pub fn multicoil_kspace_loss<M: DenoiseFn + ?Sized>(
    input: &NetworkInput,
    model: &M,
    precond: &EdmPrecond,
    dft: &CenteredDft2,
    y: &Tensor,
    maps: &Tensor,
    mask_a: &Tensor,
    mask_tilde: &Tensor,
    sigma: &Tensor,
    noise_k: &Tensor,
) -> Result<Tensor> {
    let input = multicoil_network_input(
        input,
        precond.sigma_data,
        dft,
        y,
        maps,
        mask_tilde,
        sigma,
        noise_k,
    )?;
    let pred = model.denoise(&input, mask_tilde, sigma)?;
    let k = per_coil(dft, &coil_expand(&pred, maps)?, CenteredDft2::forward)?;
    let err = masked_residual_sq(&k, y, mask_a)?;
    weighted_mean(&err, &precond.loss_weight_t(sigma)?)
}

/// The `f32` values of a contiguous CPU tensor argument of op `op`.
fn cpu_f32<'a>(op: &str, s: &'a CpuStorage, l: &Layout) -> candle_core::Result<&'a [f32]> {
    let CpuStorage::F32(v) = s else {
        candle_core::bail!("{op}: expects f32 tensors")
    };
    let Some((a, b)) = l.contiguous_offsets() else {
        candle_core::bail!("{op}: expects contiguous tensors")
    };
    Ok(&v[a..b])
}

/// `(N, coils, H·W)` of maps `[N, coils, 2, H, W]`.
fn coil_dims(op: &str, l: &Layout) -> candle_core::Result<(usize, usize, usize)> {
    match l.shape().dims() {
        &[n, c, 2, h, w] => Ok((n, c, h * w)),
        d => candle_core::bail!("{op}: maps must be [N, coils, 2, H, W], got {d:?}"),
    }
}

/// Fused CPU coil expansion `(x, maps) ↦ (S_c·x)_c` (see [`coil_expand`]); backward: the exact
/// adjoint [`CoilCombineOp`] for `x`, none for the maps (data, never trained).
struct CoilExpandOp;

impl CustomOp2 for CoilExpandOp {
    fn name(&self) -> &'static str {
        "amri-coil-expand"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (x, s) = (cpu_f32(self.name(), s1, l1)?, cpu_f32(self.name(), s2, l2)?);
        let (n, c, p) = coil_dims(self.name(), l2)?;
        if x.len() != n * 2 * p {
            candle_core::bail!(
                "{}: image {:?} vs maps {:?}",
                self.name(),
                l1.shape(),
                l2.shape()
            )
        }
        let mut out = vec![0f32; s.len()];
        out.par_chunks_mut(2 * p)
            .zip(s.par_chunks(2 * p))
            .enumerate()
            .for_each(|(j, (o, m))| {
                let b = j / c;
                let (xr, xi) = x[b * 2 * p..(b + 1) * 2 * p].split_at(p);
                let (sr, si) = m.split_at(p);
                let (or, oi) = o.split_at_mut(p);
                for q in 0..p {
                    or[q] = sr[q] * xr[q] - si[q] * xi[q];
                    oi[q] = sr[q] * xi[q] + si[q] * xr[q];
                }
            });
        Ok((CpuStorage::F32(out), l2.shape().clone()))
    }

    fn bwd(
        &self,
        _x: &Tensor,
        maps: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        Ok((
            Some(grad.contiguous()?.apply_op2(maps, CoilCombineOp)?),
            None,
        ))
    }
}

/// Fused CPU SENSE combination `(z, maps) ↦ Σ_c conj(S_c)·z_c` (see [`coil_combine`]);
/// backward: the exact adjoint [`CoilExpandOp`] for `z`, none for the maps.
struct CoilCombineOp;

impl CustomOp2 for CoilCombineOp {
    fn name(&self) -> &'static str {
        "amri-coil-combine"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (z, s) = (cpu_f32(self.name(), s1, l1)?, cpu_f32(self.name(), s2, l2)?);
        let (n, c, p) = coil_dims(self.name(), l2)?;
        if z.len() != s.len() {
            candle_core::bail!(
                "{}: coils {:?} vs maps {:?}",
                self.name(),
                l1.shape(),
                l2.shape()
            )
        }
        let (h, w) = (l2.dims()[3], l2.dims()[4]);
        let mut out = vec![0f32; n * 2 * p];
        // parallel over (sample, block of pixels); coils summed in order 0, 1, …
        const BLOCK: usize = 4096;
        let blocks = p.div_ceil(BLOCK);
        let mut parts: Vec<(usize, usize, &mut [f32], &mut [f32])> = Vec::new();
        for (b, o) in out.chunks_mut(2 * p).enumerate() {
            let (or, oi) = o.split_at_mut(p);
            for (k, (r, i)) in or.chunks_mut(BLOCK).zip(oi.chunks_mut(BLOCK)).enumerate() {
                parts.push((b, k * BLOCK, r, i));
            }
        }
        debug_assert_eq!(parts.len(), n * blocks);
        parts.into_par_iter().for_each(|(b, q0, or, oi)| {
            for k in 0..c {
                let base = (b * c + k) * 2 * p;
                let (zr, zi) = (&z[base + q0..], &z[base + p + q0..]);
                let (sr, si) = (&s[base + q0..], &s[base + p + q0..]);
                for q in 0..or.len() {
                    or[q] += sr[q] * zr[q] + si[q] * zi[q];
                    oi[q] += sr[q] * zi[q] - si[q] * zr[q];
                }
            }
        });
        Ok((CpuStorage::F32(out), Shape::from((n, 2, h, w))))
    }

    fn bwd(
        &self,
        _z: &Tensor,
        maps: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        Ok((
            Some(grad.contiguous()?.apply_op2(maps, CoilExpandOp)?),
            None,
        ))
    }
}

/// Fused CPU per-sample masked squared error `e_i = Σ (m ⊙ (k − y))²` of `k`, `y`
/// `[N, R, H, W]`-like (any `R·H·W` per sample) and a mask `[N, 1, H, W]` broadcast over `R`
/// (sums in f64); backward `2 g_i m² (k − y)` for `k`, none for the data `y` and the mask.
struct MaskedSqErrorOp;

/// `(N, H·W, per-sample length)` of `k` with mask layout `lm`.
fn masked_dims(op: &str, lk: &Layout, lm: &Layout) -> candle_core::Result<(usize, usize, usize)> {
    let n = lk.dims()[0];
    let p = lm.shape().elem_count() / n.max(1);
    let len = lk.shape().elem_count() / n.max(1);
    if n == 0 || lm.dims()[0] != n || p == 0 || len % p != 0 {
        candle_core::bail!("{op}: data {:?} vs mask {:?}", lk.shape(), lm.shape())
    }
    Ok((n, p, len))
}

impl CustomOp3 for MaskedSqErrorOp {
    fn name(&self) -> &'static str {
        "amri-masked-sq-error"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let name = self.name();
        let (k, y, m) = (
            cpu_f32(name, s1, l1)?,
            cpu_f32(name, s2, l2)?,
            cpu_f32(name, s3, l3)?,
        );
        let (n, p, len) = masked_dims(name, l1, l3)?;
        if k.len() != y.len() {
            candle_core::bail!(
                "{name}: prediction {:?} vs data {:?}",
                l1.shape(),
                l2.shape()
            )
        }
        let planes = len / p;
        let sums: Vec<f64> = (0..n * planes)
            .into_par_iter()
            .map(|j| {
                let (b, off) = (j / planes, j * p);
                let mb = &m[b * p..(b + 1) * p];
                let mut acc = 0f64;
                for q in 0..p {
                    let r = mb[q] * (k[off + q] - y[off + q]);
                    acc += (r * r) as f64;
                }
                acc
            })
            .collect();
        let out: Vec<f32> = sums
            .chunks(planes)
            .map(|c| c.iter().sum::<f64>() as f32)
            .collect();
        Ok((CpuStorage::F32(out), Shape::from(n)))
    }

    fn bwd(
        &self,
        k: &Tensor,
        y: &Tensor,
        mask: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let g = grad.to_dtype(DType::F32)?.to_vec1::<f32>()?;
        let gk = k.apply_op3_no_bwd(y, mask, &MaskedSqErrorGrad(g))?;
        Ok((Some(gk), None, None))
    }
}

/// `out = f(a, b, m, g_i)` element by element for `a`, `b` `[N, …]` of one shape and a mask
/// `[N, 1, H, W]` broadcast over the middle axes, `g_i` one scalar per sample: the CPU body of
/// [`MaskedSqErrorGrad`] and [`MaskedNoisyOp`].
fn masked_planes_cpu(
    name: &str,
    per_sample: &[f32],
    (s1, l1): (&CpuStorage, &Layout),
    (s2, l2): (&CpuStorage, &Layout),
    (s3, l3): (&CpuStorage, &Layout),
    f: impl Fn(f32, f32, f32, f32) -> f32 + Sync,
) -> candle_core::Result<(CpuStorage, Shape)> {
    let (a, b, m) = (
        cpu_f32(name, s1, l1)?,
        cpu_f32(name, s2, l2)?,
        cpu_f32(name, s3, l3)?,
    );
    let (n, p, len) = masked_dims(name, l1, l3)?;
    if a.len() != b.len() || per_sample.len() != n {
        candle_core::bail!(
            "{name}: shapes {:?} {:?} {}",
            l1.shape(),
            l2.shape(),
            per_sample.len()
        )
    }
    let planes = len / p;
    let mut out = vec![0f32; a.len()];
    out.par_chunks_mut(p).enumerate().for_each(|(j, o)| {
        let (i, off) = (j / planes, j * p);
        let g = per_sample[i];
        let mi = &m[i * p..(i + 1) * p];
        for q in 0..p {
            o[q] = f(a[off + q], b[off + q], mi[q], g);
        }
    });
    Ok((CpuStorage::F32(out), l1.shape().clone()))
}

/// `2 g_i m² (k − y)`: the gradient of [`MaskedSqErrorOp`] with respect to `k`.
struct MaskedSqErrorGrad(Vec<f32>);

impl CustomOp3 for MaskedSqErrorGrad {
    fn name(&self) -> &'static str {
        "amri-masked-sq-error-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        masked_planes_cpu(
            self.name(),
            &self.0,
            (s1, l1),
            (s2, l2),
            (s3, l3),
            |k, y, m, g| 2.0 * g * m * m * (k - y),
        )
    }
}

/// `m ⊙ (y + σ_i n)` for `y`, `n` `[N, …]` and a mask `[N, 1, H, W]` broadcast over the middle
/// axes, `σ_i` per sample (the noisy network input's k-space; no backward: data only).
struct MaskedNoisyOp(Vec<f32>);

impl CustomOp3 for MaskedNoisyOp {
    fn name(&self) -> &'static str {
        "amri-masked-noisy"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        masked_planes_cpu(
            self.name(),
            &self.0,
            (s1, l1),
            (s2, l2),
            (s3, l3),
            |y, z, m, s| (y + z * s) * m,
        )
    }
}

/// Per-sample `‖mask ⊙ (k − y)‖²` for `k`, `y` of one shape `[N, …]` and a mask broadcastable to
/// `[N, 1, …, H, W]` (the last two axes of `k`): the fused op on the CPU (mask made
/// `[N, 1, H, W]` contiguous first), candle ops elsewhere. Differentiable in `k` only.
fn masked_residual_sq(k: &Tensor, y: &Tensor, mask: &Tensor) -> Result<Tensor> {
    let d = k.dims();
    if d != y.dims() || d.len() < 3 {
        return Err(DiffusionError::Shape(format!(
            "prediction {:?} vs data {:?}",
            d,
            y.dims()
        )));
    }
    let (n, h, w) = (d[0], d[d.len() - 2], d[d.len() - 1]);
    if !k.device().is_cpu() {
        // mask [N, 1, H|1, W] → [N, 1, …, H|1, W] to broadcast over the middle axes
        let mut m = mask.to_dtype(k.dtype())?;
        while m.rank() < d.len() {
            m = m.unsqueeze(1)?;
        }
        return per_sample_sq_norm(&(k - y)?.broadcast_mul(&m)?);
    }
    let m = mask
        .to_dtype(DType::F32)?
        .broadcast_as((n, 1, h, w))?
        .contiguous()?;
    Ok(k.to_dtype(DType::F32)?.contiguous()?.apply_op3(
        &y.to_dtype(DType::F32)?.contiguous()?,
        &m,
        MaskedSqErrorOp,
    )?)
}

/// Checks that `sigma` and `sigma_n` are both `[N]` and that `ok(σ_i, σ_n,i)` holds for every
/// sample; the error names the first pair that fails, after `what`.
fn check_noise_levels(
    sigma: &Tensor,
    sigma_n: &Tensor,
    what: &str,
    ok: impl Fn(f32, f32) -> bool,
) -> Result<()> {
    if sigma.dims() != sigma_n.dims() {
        return Err(DiffusionError::Shape(format!(
            "sigma {:?} and sigma_n {:?} must both be [N]",
            sigma.dims(),
            sigma_n.dims()
        )));
    }
    let sv = sigma.to_vec1::<f32>()?;
    let nv = sigma_n.to_vec1::<f32>()?;
    match sv.iter().zip(&nv).find(|(s, n)| !ok(**s, **n)) {
        Some((s, n)) => Err(DiffusionError::Config(format!(
            "{what}, got σ = {s}, σ_n = {n}"
        ))),
        None => Ok(()),
    }
}

/// `s = sqrt(σ² − σ_n²)` and `a = (σ² − σ_n²)/σ²` per sample (`[N]` each); errors unless
/// `σ > σ_n ≥ 0` for every sample.
fn tweedie_coefficients(sigma: &Tensor, sigma_n: &Tensor) -> Result<(Tensor, Tensor)> {
    check_noise_levels(
        sigma,
        sigma_n,
        "noisy-data loss needs σ > σ_n ≥ 0",
        |s, n| s > n && n >= 0.0,
    )?;
    let s2 = sigma.sqr()?;
    let extra = (&s2 - sigma_n.sqr()?)?;
    Ok((extra.sqrt()?, (extra / s2)?))
}

/// Noisy-data ambient loss for image-domain corruptions ("Consistent Diffusion Meets Tweedie",
/// Daras et al. 2024, extended to masks). The data `y = A ⊙ (x0 + σ_n η)` carries known noise
/// `σ_n` per real/imaginary channel; for `σ > σ_n` the network sees
/// `x_σ = Ã ⊙ (y + sqrt(σ² − σ_n²) n)` (distributed as `Ã ⊙ (x0 + σ n')`, so the input
/// convention is [`ambient_pixel_input`]'s) and the loss is
/// `mean_i λ(σ_i) ‖A ⊙ (ŷ_i − y_i)‖²` with the double-Tweedie prediction of the data
/// `ŷ = Ã ⊙ (a·D + (1 − a)·(y + s n)) + (A − Ã) ⊙ D`, `a = (σ² − σ_n²)/σ²`, `s² = σ² − σ_n²`.
/// On Ã, `E[y | x_σ] = a E[x0 | x_σ] + (σ_n²/σ²) x_σ`; on `A \ Ã` the input holds no noise of
/// that pixel, so `E[y | x_σ] = E[x0 | x_σ]`. Either way the minimiser is `D = E[x0 | x_σ]`, the
/// clean-data denoiser, although no clean or noise-free value is ever seen. At `σ_n = 0` this is
/// exactly [`ambient_pixel_loss`]. `sigma_n: [N]` with `0 ≤ σ_n < σ` per sample; other
/// shapes as [`ambient_pixel_loss`] (`y` in place of `x_a`). Below `σ_n` see
/// [`consistency_pixel_loss`].
#[allow(clippy::too_many_arguments)]
pub fn tweedie_pixel_loss<M: DenoiseFn + ?Sized>(
    model: &M,
    precond: &EdmPrecond,
    y: &Tensor,
    mask_a: &Tensor,
    mask_tilde: &Tensor,
    sigma: &Tensor,
    sigma_n: &Tensor,
    noise: &Tensor,
) -> Result<Tensor> {
    let (s, a) = tweedie_coefficients(sigma, sigma_n)?;
    let input = ambient_pixel_input(y, mask_tilde, &s, noise)?;
    let pred = model.denoise(&input, mask_tilde, sigma)?;
    let x_s = (y + noise.broadcast_mul(&sigma_col(&s)?)?)?;
    let target = tweedie_prediction(&pred, &x_s, &a, mask_a, mask_tilde)?;
    let err = masked_sq_error(&target, y, mask_a)?;
    weighted_mean(&err, &precond.loss_weight_t(sigma)?)
}

/// `Ã ⊙ (a·p + (1 − a)·x) + (A − Ã) ⊙ p` (the data prediction of the Tweedie losses).
fn tweedie_prediction(
    p: &Tensor,
    x: &Tensor,
    a: &Tensor,
    mask_a: &Tensor,
    mask_tilde: &Tensor,
) -> Result<Tensor> {
    let a = sigma_col(a)?;
    let mt = mask_tilde.to_dtype(p.dtype())?;
    let hidden = (mask_a.to_dtype(p.dtype())?.broadcast_sub(&mt))?;
    let mix = (p.broadcast_mul(&a)? + x.broadcast_mul(&(1.0 - &a)?)?)?;
    Ok((mix.broadcast_mul(&mt)? + p.broadcast_mul(&hidden)?)?)
}

/// Noisy-data ambient loss for single-coil k-space, in the measured domain: as
/// [`tweedie_pixel_loss`] with `y = M ⊙ (F x0 + σ_n η_k)` centred k-space, network input
/// `Fᴴ(M̃ ⊙ (y + s n_k))` ([`ambient_kspace_input`]'s convention) and loss
/// `mean_i λ(σ_i) ‖M ⊙ (ŷ − y)‖²`, `ŷ = M̃ ⊙ (a·F D + (1 − a)(y + s n_k)) + (M − M̃) ⊙ F D`.
/// Since F is unitary the noise stays white per frequency and the same argument gives the
/// minimiser `D = E[x0 | input]`. At `σ_n = 0` it equals [`ambient_kspace_loss`].
#[allow(clippy::too_many_arguments)]
pub fn tweedie_kspace_loss<M: DenoiseFn + ?Sized>(
    model: &M,
    precond: &EdmPrecond,
    dft: &CenteredDft2,
    y: &Tensor,
    mask_a: &Tensor,
    mask_tilde: &Tensor,
    sigma: &Tensor,
    sigma_n: &Tensor,
    noise_k: &Tensor,
) -> Result<Tensor> {
    let (s, a) = tweedie_coefficients(sigma, sigma_n)?;
    let input = ambient_kspace_input(dft, y, mask_tilde, &s, noise_k)?;
    let pred = model.denoise(&input, mask_tilde, sigma)?;
    let x_s = (y + noise_k.broadcast_mul(&sigma_col(&s)?)?)?;
    let target = tweedie_prediction(&dft.forward(&pred)?, &x_s, &a, mask_a, mask_tilde)?;
    let err = masked_sq_error(&target, y, mask_a)?;
    weighted_mean(&err, &precond.loss_weight_t(sigma)?)
}

/// `r = σ²/σ_n²` and `v = sqrt(σ² (1 − r))` per sample (`[N]` each), the coefficients of the
/// Gaussian reverse step from `σ_n` to `σ`; errors unless `0 < σ ≤ σ_n` for every sample.
fn reverse_coefficients(sigma: &Tensor, sigma_n: &Tensor) -> Result<(Tensor, Tensor)> {
    check_noise_levels(
        sigma,
        sigma_n,
        "consistency loss needs 0 < σ ≤ σ_n",
        |s, n| s > 0.0 && s <= n,
    )?;
    let r = (sigma.sqr()? / sigma_n.sqr()?)?;
    let v = (sigma.sqr()? * (1.0 - &r)?)?.sqrt()?;
    Ok((r, v))
}

/// Per-sample inner product `⟨a_i, b_i⟩` over all but the first axis: `[N, …]` → `[N]`.
fn per_sample_dot(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let n = a.dim(0)?;
    Ok((a * b)?.reshape((n, ()))?.sum(1)?)
}

/// Consistency loss below the data's noise level, image-domain corruptions ("Consistent
/// Diffusion Meets Tweedie", Daras et al. 2024, after "Consistent Diffusion Models", 2023).
/// Noisy data `y = A ⊙ (x0 + σ_n η)` says nothing directly about the denoiser at `σ < σ_n`;
/// the tower property `E[x0 | x_σn] = E[ E[x0 | x_σ] | x_σn ]` does. From the network input at
/// the data's own level, `x_n = Ã ⊙ y`, the target `T = D(x_n, Ã; σ_n)` (no gradient; the
/// Tweedie loss trains it) and two independent reverse draws
/// `x_σ^j = Ã ⊙ (r x_n + (1 − r) T + v z_j)`, `r = σ²/σ_n²`, `v² = σ²(1 − r)` (the Gaussian step
/// from `σ_n` to `σ` with `x0` estimated by `T`), the loss is
/// `mean_i λ(σ_i) ⟨D(x_σ¹; σ) − T, D(x_σ²; σ) − T⟩_i`: with the draws independent given `x_n`
/// its expectation is `λ ‖E[D(x_σ; σ) | x_n] − T‖²`, zero exactly when the low-σ denoiser is
/// consistent with the one at `σ_n` (one draw would add its variance and bias the minimiser
/// towards 0; the estimate can be negative). `0 < σ ≤ σ_n` per sample; `z1`, `z2` like `y`;
/// other shapes as [`tweedie_pixel_loss`].
#[allow(clippy::too_many_arguments)]
pub fn consistency_pixel_loss<M: DenoiseFn + ?Sized>(
    model: &M,
    precond: &EdmPrecond,
    y: &Tensor,
    mask_tilde: &Tensor,
    sigma: &Tensor,
    sigma_n: &Tensor,
    z1: &Tensor,
    z2: &Tensor,
) -> Result<Tensor> {
    let (r, v) = reverse_coefficients(sigma, sigma_n)?;
    check_batch(y, sigma, z2)?;
    let zero = sigma.zeros_like()?;
    let x_n = ambient_pixel_input(y, mask_tilde, &zero, z1)?;
    let target = model.denoise(&x_n, mask_tilde, sigma_n)?.detach();
    let rc = sigma_col(&r)?;
    let mean = (x_n.broadcast_mul(&rc)? + target.broadcast_mul(&(1.0 - &rc)?)?)?;
    let draws = [
        ambient_pixel_input(&mean, mask_tilde, &v, z1)?,
        ambient_pixel_input(&mean, mask_tilde, &v, z2)?,
    ];
    consistency_product(model, precond, mask_tilde, sigma, &target, &draws)
}

/// `mean_i λ(σ_i) ⟨D(x¹; σ) − T, D(x²; σ) − T⟩_i` for the two reverse draws `draws` (network
/// inputs) and the target `T` of the consistency losses.
fn consistency_product<M: DenoiseFn + ?Sized>(
    model: &M,
    precond: &EdmPrecond,
    mask_tilde: &Tensor,
    sigma: &Tensor,
    target: &Tensor,
    draws: &[Tensor; 2],
) -> Result<Tensor> {
    let d1 = (model.denoise(&draws[0], mask_tilde, sigma)? - target)?;
    let d2 = (model.denoise(&draws[1], mask_tilde, sigma)? - target)?;
    weighted_mean(&per_sample_dot(&d1, &d2)?, &precond.loss_weight_t(sigma)?)
}

/// [`consistency_pixel_loss`] for single-coil k-space data `y = M ⊙ (F x0 + σ_n η_k)`: the
/// network input at `σ_n` is `Fᴴ(M̃ ⊙ y)`, the reverse draws are taken on the frequencies M̃ keeps,
/// `Fᴴ(M̃ ⊙ (r y + (1 − r) F T + v z_j))` (F unitary: white noise stays white), and the inner
/// product is taken between the two image-domain predictions, as in the pixel case.
#[allow(clippy::too_many_arguments)]
pub fn consistency_kspace_loss<M: DenoiseFn + ?Sized>(
    model: &M,
    precond: &EdmPrecond,
    dft: &CenteredDft2,
    y: &Tensor,
    mask_tilde: &Tensor,
    sigma: &Tensor,
    sigma_n: &Tensor,
    z1: &Tensor,
    z2: &Tensor,
) -> Result<Tensor> {
    let (r, v) = reverse_coefficients(sigma, sigma_n)?;
    check_batch(y, sigma, z2)?;
    let zero = sigma.zeros_like()?;
    let x_n = ambient_kspace_input(dft, y, mask_tilde, &zero, z1)?;
    let target = model.denoise(&x_n, mask_tilde, sigma_n)?.detach();
    let rc = sigma_col(&r)?;
    let mean = (y.broadcast_mul(&rc)? + dft.forward(&target)?.broadcast_mul(&(1.0 - &rc)?)?)?;
    let draws = [
        ambient_kspace_input(dft, &mean, mask_tilde, &v, z1)?,
        ambient_kspace_input(dft, &mean, mask_tilde, &v, z2)?,
    ];
    consistency_product(model, precond, mask_tilde, sigma, &target, &draws)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::precond::{denoiser, DenoiserConfig};
    use candle_core::{Device, Var};
    use candle_nn::{VarBuilder, VarMap};

    fn bernoulli_mask(vals: &Tensor, p: f32) -> Result<Tensor> {
        Ok(vals.lt(p)?.to_dtype(DType::F32)?)
    }

    /// A live (all weights non-zero) small denoiser.
    fn small_denoiser(vm: &VarMap, dev: &Device) -> Result<Denoiser> {
        let mut cfg = DenoiserConfig::complex_preset("tiny", 0.5)?;
        cfg.unet.base_channels = 8;
        cfg.unet.channel_mult = vec![1, 2];
        cfg.unet.attention_levels = vec![1];
        cfg.unet.groups = 4;
        cfg.unet.attention_head_channels = 8;
        let d = denoiser(&cfg, VarBuilder::from_varmap(vm, DType::F32, dev))?;
        for (name, var) in vm.data().lock().expect("varmap lock").iter() {
            if name.contains("conv1") || name.contains("proj") || name.contains("out_conv") {
                var.set(&Tensor::randn(0f32, 0.1, var.shape(), dev)?)?;
            }
        }
        Ok(d)
    }

    fn max_abs(t: &Tensor) -> Result<f32> {
        Ok(t.abs()?.max_all()?.to_scalar::<f32>()?)
    }

    #[test]
    fn masked_loss_gradient_is_exactly_zero_off_the_mask() -> Result<()> {
        let dev = Device::Cpu;
        let pred = Var::from_tensor(&Tensor::randn(0f32, 1., (2, 2, 4, 4), &dev)?)?;
        let target = Tensor::randn(0f32, 1., (2, 2, 4, 4), &dev)?;
        let mask = bernoulli_mask(&Tensor::rand(0f32, 1., (2, 1, 4, 4), &dev)?, 0.5)?;
        let w = Tensor::new(&[1f32, 3.0], &dev)?;
        let loss = weighted_mean(&masked_sq_error(pred.as_tensor(), &target, &mask)?, &w)?;
        let g = loss
            .backward()?
            .get(pred.as_tensor())
            .cloned()
            .ok_or_else(|| DiffusionError::Config("no gradient".into()))?;
        // analytic: ∂/∂pred = (2/N) w_i A (pred − target)
        let want = ((pred.as_tensor() - &target)?
            .broadcast_mul(&mask)?
            .broadcast_mul(&w.reshape((2, 1, 1, 1))?)?
            * 1.0)?;
        assert!(max_abs(&(&g - &want)?)? < 1e-5);
        let off = g.broadcast_mul(&(1.0 - &mask)?)?;
        assert_eq!(max_abs(&off)?, 0.0);
        // the minimiser over a free output equals the target on A: loss 0 there
        let fixed =
            (target.broadcast_mul(&mask)? + pred.as_tensor().broadcast_mul(&(1.0 - &mask)?)?)?;
        let l0 = weighted_mean(&masked_sq_error(&fixed, &target, &mask)?, &w)?;
        assert_eq!(l0.to_scalar::<f32>()?, 0.0);
        Ok(())
    }

    #[test]
    fn ambient_pixel_loss_ignores_unmeasured_pixels_of_x0() -> Result<()> {
        let dev = Device::Cpu;
        let vm = VarMap::new();
        let d = small_denoiser(&vm, &dev)?;
        let p = EdmPrecond::default();
        let x0 = Tensor::randn(0f32, 1., (2, 2, 8, 8), &dev)?;
        let u = Tensor::rand(0f32, 1., (2, 1, 8, 8), &dev)?;
        let a = bernoulli_mask(&u, 0.6)?;
        let at = bernoulli_mask(&u, 0.4)?; // Ã ⊆ A by construction
        let sigma = Tensor::new(&[0.3f32, 1.5], &dev)?;
        let noise = Tensor::randn(0f32, 1., (2, 2, 8, 8), &dev)?;
        // x0' differs from x0 only where A did not measure
        let junk = (Tensor::randn(0f32, 5., (2, 2, 8, 8), &dev)?.broadcast_mul(&(1.0 - &a)?))?;
        let x0b = (&x0 + junk)?;
        let run = |x0: &Tensor| -> Result<(f32, Vec<f32>)> {
            let x_a = x0.broadcast_mul(&a)?;
            let l = ambient_pixel_loss(&d, &p, &x_a, &a, &at, &sigma, &noise)?;
            let grads = l.backward()?;
            let mut gs = Vec::new();
            let data = vm.data().lock().expect("varmap lock");
            let mut names: Vec<_> = data.keys().cloned().collect();
            names.sort();
            for n in names {
                if let Some(g) = grads.get(data[&n].as_tensor()) {
                    gs.extend(g.flatten_all()?.to_vec1::<f32>()?);
                }
            }
            Ok((l.to_scalar::<f32>()?, gs))
        };
        let (l1, g1) = run(&x0)?;
        let (l2, g2) = run(&x0b)?;
        assert!(l1 > 0.0);
        assert_eq!(l1, l2);
        assert!(!g1.is_empty());
        assert_eq!(g1, g2);
        Ok(())
    }

    #[test]
    fn pixels_hidden_by_a_tilde_reach_only_the_target() -> Result<()> {
        let dev = Device::Cpu;
        let vm = VarMap::new();
        let d = small_denoiser(&vm, &dev)?;
        let p = EdmPrecond::default();
        let u = Tensor::rand(0f32, 1., (1, 1, 8, 8), &dev)?;
        let a = bernoulli_mask(&u, 0.7)?;
        let at = bernoulli_mask(&u, 0.4)?;
        let hidden = (&a - &at)?; // A \ Ã
        let x_a = Tensor::randn(0f32, 1., (1, 2, 8, 8), &dev)?.broadcast_mul(&a)?;
        let x_a2 =
            (&x_a + Tensor::ones((1, 2, 8, 8), DType::F32, &dev)?.broadcast_mul(&hidden)?)?;
        let sigma = Tensor::new(&[0.5f32], &dev)?;
        let noise = Tensor::randn(0f32, 1., (1, 2, 8, 8), &dev)?;
        let i1 = ambient_pixel_input(&x_a, &at, &sigma, &noise)?;
        let i2 = ambient_pixel_input(&x_a2, &at, &sigma, &noise)?;
        assert_eq!(max_abs(&(&i1 - &i2)?)?, 0.0, "network saw Ã-hidden pixels");
        // …but they are supervised: the loss changes by exactly the change of the target there.
        let l1 = ambient_pixel_loss(&d, &p, &x_a, &a, &at, &sigma, &noise)?.to_scalar::<f32>()?;
        let l2 = ambient_pixel_loss(&d, &p, &x_a2, &a, &at, &sigma, &noise)?.to_scalar::<f32>()?;
        assert!((l1 - l2).abs() > 1e-3);
        // input is zero off Ã
        assert_eq!(max_abs(&i1.broadcast_mul(&(1.0 - &at)?)?)?, 0.0);
        Ok(())
    }

    #[test]
    fn ambient_optimum_of_free_output_is_weighted_mean_over_a_not_a_tilde() -> Result<()> {
        // Model: a free per-pixel output θ, ignoring its input. The loss is quadratic in θ with
        // minimiser θ* = Σ_i λ_i A_i x_A,i / Σ_i λ_i A_i per pixel; its gradient must vanish
        // there, and not at the Ã-weighted mean.
        let dev = Device::Cpu;
        let p = EdmPrecond::default();
        let (n, h, w) = (6, 4, 4);
        let x0 = Tensor::randn(0f32, 1., (n, 2, h, w), &dev)?;
        let u = Tensor::rand(0f32, 1., (n, 1, h, w), &dev)?;
        // make every pixel measured by at least one sample and hidden from Ã in at least one
        let a = bernoulli_mask(&u, 0.7)?;
        let a = Tensor::cat(&[&a, &Tensor::ones((1, 1, h, w), DType::F32, &dev)?], 0)?
            .narrow(0, 1, n)?;
        let at = bernoulli_mask(&u, 0.35)?
            .narrow(0, 0, n - 1)?
            .pad_with_zeros(0, 0, 1)?
            .broadcast_mul(&a)?;
        let sigma = Tensor::new(&[0.1f32, 0.4, 1.0, 2.0, 0.7, 0.05], &dev)?;
        let noise = Tensor::randn(0f32, 1., (n, 2, h, w), &dev)?;
        let x_a = x0.broadcast_mul(&a)?;
        let lam = p.loss_weight_t(&sigma)?.reshape((n, 1, 1, 1))?;
        let weighted_mean_over = |m: &Tensor| -> Result<Tensor> {
            let wm = m.broadcast_mul(&lam)?;
            let num = x_a.broadcast_mul(&wm)?.sum_keepdim(0)?;
            let den = wm.sum_keepdim(0)?;
            Ok(num.broadcast_div(&den)?)
        };
        let grad_at = |theta: &Tensor| -> Result<f32> {
            let v = Var::from_tensor(theta)?;
            let model = |x: &Tensor, _m: &Tensor, _s: &Tensor| -> Result<Tensor> {
                Ok(v.as_tensor().broadcast_as(x.dims())?)
            };
            let l = ambient_pixel_loss(&model, &p, &x_a, &a, &at, &sigma, &noise)?;
            let g = l
                .backward()?
                .get(v.as_tensor())
                .cloned()
                .ok_or_else(|| DiffusionError::Config("no gradient".into()))?;
            max_abs(&g)
        };
        let g_zero = grad_at(&Tensor::zeros((1, 2, h, w), DType::F32, &dev)?)?;
        let opt = weighted_mean_over(&a)?;
        let g_opt = grad_at(&opt)?;
        assert!(
            g_opt < 1e-5 * g_zero,
            "gradient at the A-weighted mean: {g_opt} (at 0: {g_zero})"
        );
        let wrong = weighted_mean_over(&(&at + 1e-6)?)?;
        let g_wrong = grad_at(&wrong)?;
        assert!(
            g_wrong > 1e-2 * g_zero,
            "Ã-mean looks optimal: {g_wrong} (at 0: {g_zero})"
        );
        Ok(())
    }

    #[test]
    fn kspace_loss_is_zero_iff_prediction_agrees_on_measured_frequencies() -> Result<()> {
        let dev = Device::Cpu;
        let p = EdmPrecond::default();
        let (h, w) = (8, 8);
        let f = CenteredDft2::new(h, w, &dev)?;
        let cols = bernoulli_mask(&Tensor::rand(0f32, 1., (1, 1, 1, w), &dev)?, 0.5)?;
        let m = cols.broadcast_as((1, 1, h, w))?.contiguous()?;
        let mt = (&m
            * bernoulli_mask(&Tensor::rand(0f32, 1., (1, 1, 1, w), &dev)?, 0.6)?
                .broadcast_as((1, 1, h, w))?)?;
        let x0 = Tensor::randn(0f32, 1., (1, 2, h, w), &dev)?;
        let y = f.forward(&x0)?.broadcast_mul(&m)?;
        let sigma = Tensor::new(&[0.8f32], &dev)?;
        let noise = Tensor::randn(0f32, 1., (1, 2, h, w), &dev)?;
        // predicts y on M, arbitrary values elsewhere
        let other = Tensor::randn(0f32, 3., (1, 2, h, w), &dev)?.broadcast_mul(&(1.0 - &m)?)?;
        let good = f.adjoint(&(&y + &other)?)?;
        let g2 = good.clone();
        let model = move |_: &Tensor, _: &Tensor, _: &Tensor| -> Result<Tensor> { Ok(g2.clone()) };
        let l = ambient_kspace_loss(&model, &p, &f, &y, &m, &mt, &sigma, &noise)?;
        assert!(l.to_scalar::<f32>()? < 1e-8, "{}", l.to_scalar::<f32>()?);
        // perturb one measured frequency by δ: loss = λ(σ) δ²
        let mut bump = vec![0f32; 2 * h * w];
        let mcols = cols.flatten_all()?.to_vec1::<f32>()?;
        let c = mcols.iter().position(|&v| v > 0.5).unwrap_or(0);
        bump[3 * w + c] = 0.5;
        let bump = Tensor::from_vec(bump, (1, 2, h, w), &dev)?.broadcast_mul(&m)?;
        let bad = f.adjoint(&(&y + &other + &bump)?)?;
        let model = move |_: &Tensor, _: &Tensor, _: &Tensor| -> Result<Tensor> { Ok(bad.clone()) };
        let l =
            ambient_kspace_loss(&model, &p, &f, &y, &m, &mt, &sigma, &noise)?.to_scalar::<f32>()?;
        let want = if mcols[c] > 0.5 {
            p.loss_weight(0.8) * 0.25
        } else {
            0.0
        };
        assert!(
            (l as f64 - want).abs() <= 1e-4 * want.max(1.0),
            "{l} vs {want}"
        );
        Ok(())
    }

    #[test]
    fn kspace_loss_gradient_matches_analytic_form() -> Result<()> {
        // ∂/∂x̂ ‖M ⊙ (F x̂ − y)‖² = 2 Fᴴ(M ⊙ (F x̂ − y)) (real representation); checks the
        // DFT matmuls' autograd end to end.
        let dev = Device::Cpu;
        let p = EdmPrecond::default();
        let (h, w) = (8, 4);
        let f = CenteredDft2::new(h, w, &dev)?;
        let m = bernoulli_mask(&Tensor::rand(0f32, 1., (1, 1, h, w), &dev)?, 0.5)?;
        let y = f
            .forward(&Tensor::randn(0f32, 1., (1, 2, h, w), &dev)?)?
            .broadcast_mul(&m)?;
        let v = Var::from_tensor(&Tensor::randn(0f32, 1., (1, 2, h, w), &dev)?)?;
        let model =
            |_: &Tensor, _: &Tensor, _: &Tensor| -> Result<Tensor> { Ok(v.as_tensor().clone()) };
        let sigma = Tensor::new(&[1.0f32], &dev)?;
        let noise = Tensor::zeros((1, 2, h, w), DType::F32, &dev)?;
        let l = ambient_kspace_loss(&model, &p, &f, &y, &m, &m, &sigma, &noise)?;
        let g = l
            .backward()?
            .get(v.as_tensor())
            .cloned()
            .ok_or_else(|| DiffusionError::Config("no gradient".into()))?;
        let r = (f.forward(v.as_tensor())? - &y)?.broadcast_mul(&m)?;
        let want = (f.adjoint(&r)? * (2.0 * p.loss_weight(1.0)))?;
        assert!(max_abs(&(&g - &want)?)? < 1e-4 * max_abs(&want)?.max(1.0));
        Ok(())
    }

    #[test]
    fn kspace_input_is_zero_filled_recon_of_a_tilde_at_zero_noise() -> Result<()> {
        let dev = Device::Cpu;
        let (h, w) = (8, 8);
        let f = CenteredDft2::new(h, w, &dev)?;
        let mt = bernoulli_mask(&Tensor::rand(0f32, 1., (1, 1, 1, w), &dev)?, 0.5)?;
        let y = f.forward(&Tensor::randn(0f32, 1., (1, 2, h, w), &dev)?)?;
        let noise = Tensor::randn(0f32, 1., (1, 2, h, w), &dev)?;
        let inp = ambient_kspace_input(&f, &y, &mt, &Tensor::new(&[0f32], &dev)?, &noise)?;
        let want = f.adjoint(&y.broadcast_mul(&mt)?)?;
        assert!(max_abs(&(inp - want)?)? < 1e-6);
        // with noise, only M̃'s frequencies of the noise enter
        let s = Tensor::new(&[2f32], &dev)?;
        let inp = ambient_kspace_input(&f, &y, &mt, &s, &noise)?;
        let k = f.forward(&inp)?;
        assert!(max_abs(&k.broadcast_mul(&(1.0 - &mt)?)?)? < 1e-5);
        Ok(())
    }

    /// Minimiser of a loss that is quadratic in the parameters `θ` (`k` scalars): with
    /// `g(θ) = Hθ + g0`, `H`'s columns are `g(e_j) − g0`; returns `−H⁻¹ g0` (Gaussian elimination).
    #[allow(clippy::needless_range_loop)] // Gaussian elimination reads best with indices
    fn quadratic_minimiser(k: usize, loss: &dyn Fn(&[Var]) -> Result<Tensor>) -> Result<Vec<f64>> {
        let dev = Device::Cpu;
        let grad = |theta: &[f64]| -> Result<Vec<f64>> {
            let vars: Vec<Var> = theta
                .iter()
                .map(|t| Var::from_tensor(&Tensor::new(&[*t as f32], &dev)?))
                .collect::<std::result::Result<_, _>>()?;
            let g = loss(&vars)?.backward()?;
            vars.iter()
                .map(|v| {
                    let t = g.get(v.as_tensor()).cloned().ok_or_else(|| {
                        DiffusionError::Config("parameter has no gradient".into())
                    })?;
                    Ok(t.to_vec1::<f32>()?[0] as f64)
                })
                .collect()
        };
        let g0 = grad(&vec![0.0; k])?;
        let mut h = vec![vec![0.0; k + 1]; k];
        for j in 0..k {
            let mut e = vec![0.0; k];
            e[j] = 1.0;
            let gj = grad(&e)?;
            for i in 0..k {
                h[i][j] = gj[i] - g0[i];
            }
        }
        for i in 0..k {
            h[i][k] = -g0[i];
        }
        for c in 0..k {
            let p = (c..k)
                .max_by(|a, b| h[*a][c].abs().total_cmp(&h[*b][c].abs()))
                .unwrap_or(c);
            h.swap(c, p);
            for r in 0..k {
                if r != c {
                    let f = h[r][c] / h[c][c];
                    for q in c..=k {
                        h[r][q] -= f * h[c][q];
                    }
                }
            }
        }
        Ok((0..k).map(|i| h[i][k] / h[i][i]).collect())
    }

    #[test]
    fn tweedie_loss_minimiser_is_the_clean_data_denoiser_for_gaussian_data() -> Result<()> {
        // x0 ~ N(μ, s0²) i.i.d. per pixel and channel; the data y = A ⊙ (x0 + σ_n η) is all the
        // loss sees. With D = α x + β + γ (1 − Ã) (γ lets D differ where Ã hid the pixel), the
        // clean denoiser is E[x0 | x_σ] = μ + s0²/(s0² + σ²) (x_σ − μ) on Ã and μ off Ã, i.e.
        // α* = s0²/(s0²+σ²), β* = μ(1 − α*), β* + γ* = μ. The minimiser of the Tweedie loss
        // must be that, and the plain ambient loss on the noisy data must miss it.
        let dev = Device::Cpu;
        let p = EdmPrecond::default();
        let (mu, s0, sn, sig) = (0.3f64, 0.5f64, 0.4f64, 0.7f64);
        let (n, h, w) = (64, 16, 16);
        let x0 = ((Tensor::randn(0f32, 1., (n, 2, h, w), &dev)? * s0)? + mu)?;
        let eta = Tensor::randn(0f32, 1., (n, 2, h, w), &dev)?;
        let u = Tensor::rand(0f32, 1., (n, 1, h, w), &dev)?;
        let a = bernoulli_mask(&u, 0.8)?;
        let at = bernoulli_mask(&u, 0.6)?;
        let y = (&x0 + (eta * sn)?)?.broadcast_mul(&a)?;
        let sigma = Tensor::full(sig as f32, n, &dev)?;
        let sigma_n = Tensor::full(sn as f32, n, &dev)?;
        let noise = Tensor::randn(0f32, 1., (n, 2, h, w), &dev)?;
        let model = |v: &[Var]| {
            let (al, be, ga) = (v[0].clone(), v[1].clone(), v[2].clone());
            move |x: &Tensor, m: &Tensor, _: &Tensor| -> Result<Tensor> {
                let off = (1.0 - m.broadcast_as(x.dims())?)?;
                Ok((x
                    .broadcast_mul(al.as_tensor())?
                    .broadcast_add(be.as_tensor())?
                    + off.broadcast_mul(ga.as_tensor())?)?)
            }
        };
        let tw = quadratic_minimiser(3, &|v| {
            tweedie_pixel_loss(&model(v), &p, &y, &a, &at, &sigma, &sigma_n, &noise)
        })?;
        let alpha = s0 * s0 / (s0 * s0 + sig * sig);
        let beta = mu * (1.0 - alpha);
        eprintln!("Tweedie minimiser {tw:?}; analytic α {alpha}, β {beta}, β+γ {mu}");
        // 32 768 values: sampling error of α̂ ≈ 1 %
        assert!(
            (tw[0] - alpha).abs() < 0.05 * alpha,
            "α {} vs {alpha}",
            tw[0]
        );
        assert!((tw[1] - beta).abs() < 0.02, "β {} vs {beta}", tw[1]);
        assert!(
            (tw[1] + tw[2] - mu).abs() < 0.02,
            "β+γ {} vs {mu}",
            tw[1] + tw[2]
        );
        // control: the noise-blind ambient loss (input y + σ n, target y) learns
        // E[y | y + σ n] with α = (s0²+σ_n²)/(s0²+σ_n²+σ²), far from the clean denoiser
        let naive = quadratic_minimiser(3, &|v| {
            ambient_pixel_loss(&model(v), &p, &y, &a, &at, &sigma, &noise)
        })?;
        let biased = (s0 * s0 + sn * sn) / (s0 * s0 + sn * sn + sig * sig);
        eprintln!("noise-blind minimiser {naive:?}; predicted α {biased}");
        assert!(
            (naive[0] - biased).abs() < 0.05 * biased,
            "naive α {}",
            naive[0]
        );
        assert!((naive[0] - alpha).abs() > 0.25 * alpha);
        Ok(())
    }

    #[test]
    fn consistency_loss_minimiser_is_the_clean_denoiser_below_the_noise_level() -> Result<()> {
        // x0 ~ N(0, s0²) per pixel, data y = A ⊙ (x0 + σ_n η). The denoiser at σ_n is the true
        // one, α_n x with α_n = s0²/(s0²+σ_n²); at σ < σ_n the model is α x. For Gaussian data
        // the reverse draw's mean is exact, so the consistency loss is minimised at the clean
        // denoiser's α* = s0²/(s0²+σ²), a level no sample of the data shows. A single draw
        // (‖D(x_σ) − T‖²) would be biased towards 0 by the draw's variance: the control.
        let dev = Device::Cpu;
        let p = EdmPrecond::default();
        let (s0, sn, sig) = (0.5f64, 0.6f64, 0.25f64);
        let (n, h, w) = (64, 16, 16);
        let x0 = (Tensor::randn(0f32, 1., (n, 2, h, w), &dev)? * s0)?;
        let eta = Tensor::randn(0f32, 1., (n, 2, h, w), &dev)?;
        let u = Tensor::rand(0f32, 1., (n, 1, h, w), &dev)?;
        let a = bernoulli_mask(&u, 0.8)?;
        let at = bernoulli_mask(&u, 0.6)?;
        let y = (&x0 + (eta * sn)?)?.broadcast_mul(&a)?;
        let sigma = Tensor::full(sig as f32, n, &dev)?;
        let sigma_n = Tensor::full(sn as f32, n, &dev)?;
        let z1 = Tensor::randn(0f32, 1., (n, 2, h, w), &dev)?;
        let z2 = Tensor::randn(0f32, 1., (n, 2, h, w), &dev)?;
        let alpha_n = s0 * s0 / (s0 * s0 + sn * sn);
        let model = |v: &[Var]| {
            let al = v[0].clone();
            move |x: &Tensor, _: &Tensor, s: &Tensor| -> Result<Tensor> {
                let at_n = (s.to_vec1::<f32>()?[0] as f64 - sn).abs() < 1e-6;
                if at_n {
                    Ok((x * alpha_n)?)
                } else {
                    Ok(x.broadcast_mul(al.as_tensor())?)
                }
            }
        };
        let alpha = s0 * s0 / (s0 * s0 + sig * sig);
        let fit = quadratic_minimiser(1, &|v| {
            consistency_pixel_loss(&model(v), &p, &y, &at, &sigma, &sigma_n, &z1, &z2)
        })?;
        eprintln!("consistency minimiser {fit:?}; analytic α* {alpha}");
        assert!(
            (fit[0] - alpha).abs() < 0.05 * alpha,
            "α {} vs {alpha}",
            fit[0]
        );
        let one_draw = quadratic_minimiser(1, &|v| {
            consistency_pixel_loss(&model(v), &p, &y, &at, &sigma, &sigma_n, &z1, &z1)
        })?;
        eprintln!("one-draw minimiser {one_draw:?}");
        assert!(one_draw[0] < 0.9 * alpha, "one draw: α {}", one_draw[0]);
        // the k-space form on fully kept frequencies: F is unitary, so the same optimum
        let f = CenteredDft2::new(h, w, &dev)?;
        let yk = f.forward(&(&x0 + (Tensor::randn(0f32, 1., (n, 2, h, w), &dev)? * sn)?)?)?;
        let full = Tensor::ones((n, 1, h, w), DType::F32, &dev)?;
        let fit_k = quadratic_minimiser(1, &|v| {
            consistency_kspace_loss(&model(v), &p, &f, &yk, &full, &sigma, &sigma_n, &z1, &z2)
        })?;
        eprintln!("k-space consistency minimiser {fit_k:?}");
        assert!(
            (fit_k[0] - alpha).abs() < 0.05 * alpha,
            "k-space α {}",
            fit_k[0]
        );
        // σ above σ_n is refused
        let high = Tensor::full(0.9f32, n, &dev)?;
        assert!(consistency_pixel_loss(
            &model(&[Var::new(&[0.5f32], &dev)?]),
            &p,
            &y,
            &at,
            &high,
            &sigma_n,
            &z1,
            &z2
        )
        .is_err());
        Ok(())
    }

    #[test]
    fn tweedie_losses_reduce_to_ambient_at_zero_noise_and_agree_across_domains() -> Result<()> {
        let dev = Device::Cpu;
        let vm = VarMap::new();
        let d = small_denoiser(&vm, &dev)?;
        let p = EdmPrecond::default();
        let (h, w) = (8, 8);
        let f = CenteredDft2::new(h, w, &dev)?;
        let x = Tensor::randn(0f32, 1., (2, 2, h, w), &dev)?;
        let u = Tensor::rand(0f32, 1., (2, 1, h, w), &dev)?;
        let (a, at) = (bernoulli_mask(&u, 0.7)?, bernoulli_mask(&u, 0.4)?);
        let sigma = Tensor::new(&[0.5f32, 1.3], &dev)?;
        let zero = Tensor::zeros(2, DType::F32, &dev)?;
        let noise = Tensor::randn(0f32, 1., (2, 2, h, w), &dev)?;
        let v = |t: Tensor| -> Result<f32> { Ok(t.to_scalar::<f32>()?) };
        let ya = x.broadcast_mul(&a)?;
        let l0 = v(ambient_pixel_loss(&d, &p, &ya, &a, &at, &sigma, &noise)?)?;
        let l1 = v(tweedie_pixel_loss(
            &d, &p, &ya, &a, &at, &sigma, &zero, &noise,
        )?)?;
        assert!((l0 - l1).abs() <= 1e-5 * l0.abs(), "{l0} vs {l1}");
        let yk = f.forward(&x)?.broadcast_mul(&a)?;
        let k0 = v(ambient_kspace_loss(
            &d, &p, &f, &yk, &a, &at, &sigma, &noise,
        )?)?;
        let k1 = v(tweedie_kspace_loss(
            &d, &p, &f, &yk, &a, &at, &sigma, &zero, &noise,
        )?)?;
        assert!((k0 - k1).abs() <= 1e-5 * k0.abs(), "{k0} vs {k1}");
        // fully sampled: the k-space loss with noise F n equals the pixel loss with noise n
        let ones = Tensor::ones((2, 1, h, w), DType::F32, &dev)?;
        let sn = Tensor::new(&[0.2f32, 0.9], &dev)?;
        let lp = v(tweedie_pixel_loss(
            &d, &p, &x, &ones, &ones, &sigma, &sn, &noise,
        )?)?;
        let lk = v(tweedie_kspace_loss(
            &d,
            &p,
            &f,
            &f.forward(&x)?,
            &ones,
            &ones,
            &sigma,
            &sn,
            &f.forward(&noise)?,
        )?)?;
        assert!((lp - lk).abs() <= 1e-4 * lp.abs(), "{lp} vs {lk}");
        // σ ≤ σ_n is refused
        let big = Tensor::new(&[0.6f32, 0.1], &dev)?;
        assert!(tweedie_pixel_loss(&d, &p, &x, &ones, &ones, &sigma, &big, &noise).is_err());
        Ok(())
    }

    /// `[coils, h, w]` complex values (flattened) → `[1, coils, 2, h, w]`.
    fn coil_tensor(v: &[amri_core::C32], coils: usize, h: usize, w: usize) -> Result<Tensor> {
        let mut out = vec![0f32; coils * 2 * h * w];
        for c in 0..coils {
            for p in 0..h * w {
                out[(2 * c) * h * w + p] = v[c * h * w + p].re;
                out[(2 * c + 1) * h * w + p] = v[c * h * w + p].im;
            }
        }
        Ok(Tensor::from_vec(out, (1, coils, 2, h, w), &Device::Cpu)?)
    }

    #[test]
    fn multicoil_loss_gradient_is_the_sense_normal_equation() -> Result<()> {
        // For a free output θ the loss is λ‖Aθ − y‖² with A = M F S (SENSE): zero at the
        // truth, gradient 2λ(AᴴAθ − Aᴴy), its minimiser the SENSE least-squares image. A, Aᴴ and
        // AᴴA come from amri-ops' Sense operator (an independent implementation), the maps
        // from its synthetic coil model.
        use amri_core::C32;
        use amri_ops::LinearOperator;
        let dev = Device::Cpu;
        let p = EdmPrecond::default();
        let (h, w, nc) = (8usize, 8usize, 4usize);
        let f = CenteredDft2::new(h, w, &dev)?;
        let maps = amri_ops::coils::synthetic_maps(nc, h, w, Some(3));
        let cols: Vec<f32> = (0..w)
            .map(|j| f32::from(u8::from(j % 3 != 1 || j == w / 2)))
            .collect();
        let mask = ndarray::Array2::from_shape_fn((h, w), |(_, j)| cols[j]);
        let tcols: Vec<f32> = (0..w)
            .map(|j| if j % 2 == 0 { cols[j] } else { 0.0 })
            .collect();
        let mask_t = ndarray::Array2::from_shape_fn((h, w), |(_, j)| tcols[j]);
        let op = amri_ops::sense::Sense::new(maps.clone(), mask.clone())?;
        let op_t = amri_ops::sense::Sense::new(maps.clone(), mask_t.clone())?;
        let x: Vec<C32> = (0..h * w)
            .map(|k| C32::new((k as f32 * 0.37).sin(), (k as f32 * 0.11).cos()))
            .collect();
        let mut y = vec![C32::new(0.0, 0.0); nc * h * w];
        op.forward(&x, &mut y);
        let yt = coil_tensor(&y, nc, h, w)?;
        let maps_v: Vec<C32> = maps.iter().copied().collect();
        let st = coil_tensor(&maps_v, nc, h, w)?;
        let m = Tensor::from_vec(mask.iter().copied().collect(), (1, 1, h, w), &dev)?;
        let mt = Tensor::from_vec(mask_t.iter().copied().collect(), (1, 1, h, w), &dev)?;
        let img = |v: &[C32]| coil_tensor(v, 1, h, w).and_then(|t| Ok(t.squeeze(1)?));
        let sigma = Tensor::new(&[1.0f32], &dev)?;
        let zeros = Tensor::zeros((1, nc, 2, h, w), DType::F32, &dev)?;
        // input at σ = 0: the SENSE-combined zero-filled image of M̃'s samples = Ãᴴ y
        let inp = multicoil_kspace_input(&f, &yt, &st, &mt, &Tensor::new(&[0f32], &dev)?, &zeros)?;
        let mut aty = vec![C32::new(0.0, 0.0); h * w];
        op_t.adjoint(&y, &mut aty);
        assert!(max_abs(&(&inp - img(&aty)?)?)? < 1e-5);
        // the loss of a model on this problem (adjoint input, σ = 0, no noise)
        let loss = |model: &dyn DenoiseFn| {
            multicoil_kspace_loss(
                &NetworkInput::Adjoint,
                model,
                &p,
                &f,
                &yt,
                &st,
                &m,
                &mt,
                &sigma,
                &zeros,
            )
        };
        // zero loss at the truth
        let truth = img(&x)?;
        let model = |_: &Tensor, _: &Tensor, _: &Tensor| -> Result<Tensor> { Ok(truth.clone()) };
        let l = loss(&model)?;
        assert!(l.to_scalar::<f32>()? < 1e-9, "{}", l.to_scalar::<f32>()?);
        // gradient at an arbitrary θ
        let theta: Vec<C32> = (0..h * w)
            .map(|k| C32::new((k as f32 * 0.7).cos(), (k as f32 * 0.3).sin()))
            .collect();
        let v = Var::from_tensor(&img(&theta)?)?;
        let model =
            |_: &Tensor, _: &Tensor, _: &Tensor| -> Result<Tensor> { Ok(v.as_tensor().clone()) };
        let l = loss(&model)?;
        let g = l
            .backward()?
            .get(v.as_tensor())
            .cloned()
            .ok_or_else(|| DiffusionError::Config("no gradient".into()))?;
        let mut ata = vec![C32::new(0.0, 0.0); h * w];
        op.normal(&theta, &mut ata);
        let mut ay = vec![C32::new(0.0, 0.0); h * w];
        op.adjoint(&y, &mut ay);
        let lam = p.loss_weight(1.0) as f32;
        let want: Vec<C32> = ata
            .iter()
            .zip(&ay)
            .map(|(a, b)| (a - b) * (2.0 * lam))
            .collect();
        let want = img(&want)?;
        assert!(
            max_abs(&(&g - &want)?)? < 1e-4 * max_abs(&want)?,
            "gradient ≠ 2λ(AᴴAθ − Aᴴy)"
        );
        // one coil with S = 1 reduces to the single-coil loss
        let ones = Tensor::cat(
            &[
                Tensor::ones((1, 1, 1, h, w), DType::F32, &dev)?,
                Tensor::zeros((1, 1, 1, h, w), DType::F32, &dev)?,
            ],
            2,
        )?;
        let y1 = f.forward(&truth)?.broadcast_mul(&m)?;
        let n1 = Tensor::randn(0f32, 1., (1, 2, h, w), &dev)?;
        let l1 =
            ambient_kspace_loss(&model, &p, &f, &y1, &m, &mt, &sigma, &n1)?.to_scalar::<f32>()?;
        let l2 = multicoil_kspace_loss(
            &NetworkInput::Adjoint,
            &model,
            &p,
            &f,
            &y1.unsqueeze(1)?,
            &ones,
            &m,
            &mt,
            &sigma,
            &n1.unsqueeze(1)?,
        )?
        .to_scalar::<f32>()?;
        assert!((l1 - l2).abs() <= 1e-5 * l1, "{l1} vs {l2}");
        Ok(())
    }

    #[test]
    fn fused_multicoil_path_matches_the_candle_op_path_values_and_gradients() -> Result<()> {
        // the CPU path (rustfft op, fused coil and masked-error ops) against the same loss
        // written with plain candle ops and the dense DFT (autograd through every op), with the
        // network replaced by a free image θ: loss value, gradient in θ and the network input
        let dev = Device::Cpu;
        let p = EdmPrecond::default();
        let (n, nc, h, w) = (2usize, 3usize, 8usize, 6usize);
        let maps = Tensor::randn(0f32, 1., (n, nc, 2, h, w), &dev)?;
        let y = Tensor::randn(0f32, 1., (n, nc, 2, h, w), &dev)?;
        let noise = Tensor::randn(0f32, 1., (n, nc, 2, h, w), &dev)?;
        let u = Tensor::rand(0f32, 1., (n, 1, 1, w), &dev)?;
        let (m, mt) = (bernoulli_mask(&u, 0.7)?, bernoulli_mask(&u, 0.4)?);
        let sigma = Tensor::new(&[0.3f32, 2.0], &dev)?;
        let theta = Var::from_tensor(&Tensor::randn(0f32, 1., (n, 2, h, w), &dev)?)?;
        let model = |_: &Tensor, _: &Tensor, _: &Tensor| -> Result<Tensor> {
            Ok(theta.as_tensor().clone())
        };
        let fast = CenteredDft2::new(h, w, &dev)?;
        let l1 = multicoil_kspace_loss(
            &NetworkInput::Adjoint,
            &model,
            &p,
            &fast,
            &y,
            &maps,
            &m,
            &mt,
            &sigma,
            &noise,
        )?;
        let g1 = l1.backward()?.get(theta.as_tensor()).cloned();
        let in1 = multicoil_kspace_input(&fast, &y, &maps, &mt, &sigma, &noise)?;
        // reference: plain candle ops
        let dense = CenteredDft2::dense(h, w, &dev)?;
        let cmul = |a: &Tensor, b: &Tensor, conj: bool| -> Result<Tensor> {
            let (ar, ai) = (a.narrow(2, 0, 1)?, a.narrow(2, 1, 1)?);
            let (br, bi) = (b.narrow(2, 0, 1)?, b.narrow(2, 1, 1)?);
            let bi = if conj { bi.neg()? } else { bi };
            let re = (ar.broadcast_mul(&br)? - ai.broadcast_mul(&bi)?)?;
            let im = (ar.broadcast_mul(&bi)? + ai.broadcast_mul(&br)?)?;
            Ok(Tensor::cat(&[re, im], 2)?)
        };
        let flat = |t: &Tensor| t.reshape((n * nc, 2, h, w));
        let m5 = m.unsqueeze(1)?;
        let k = dense
            .forward(&flat(&cmul(
                &theta.as_tensor().unsqueeze(1)?,
                &maps,
                false,
            )?)?)?
            .reshape((n, nc, 2, h, w))?;
        let r = (k - &y)?.broadcast_mul(&m5)?;
        let err = r.sqr()?.sum((1, 2, 3, 4))?;
        let l2 = (err * p.loss_weight_t(&sigma)?)?.mean_all()?;
        let g2 = l2.backward()?.get(theta.as_tensor()).cloned();
        let noisy = (&y + noise.broadcast_mul(&sigma.reshape((n, 1, 1, 1, 1))?)?)?
            .broadcast_mul(&mt.unsqueeze(1)?)?;
        let z = dense.adjoint(&flat(&noisy)?)?.reshape((n, nc, 2, h, w))?;
        // Σ_c conj(S_c) z_c: cmul(z, S, conj) is z·conj(S)
        let in2b = cmul(&z, &maps, true)?.sum(1)?;
        let (l1, l2) = (l1.to_scalar::<f32>()?, l2.to_scalar::<f32>()?);
        assert!((l1 - l2).abs() <= 1e-5 * l2.abs(), "loss {l1} vs {l2}");
        let (g1, g2) = (
            g1.ok_or_else(|| DiffusionError::Config("no gradient".into()))?,
            g2.ok_or_else(|| DiffusionError::Config("no gradient".into()))?,
        );
        let e = max_abs(&(&g1 - &g2)?)?;
        assert!(e <= 1e-5 * max_abs(&g2)?, "gradient max error {e}");
        let e = max_abs(&(&in1 - &in2b)?)?;
        assert!(e <= 1e-5 * max_abs(&in2b)?, "input max error {e}");
        // the coil ops' own adjointness: <E x, z> = <x, Eᴴ z>
        let x = Tensor::randn(0f32, 1., (n, 2, h, w), &dev)?;
        let lhs = (coil_expand(&x, &maps)? * &y)?
            .sum_all()?
            .to_scalar::<f32>()?;
        let rhs = (&x * coil_combine(&y, &maps)?)?
            .sum_all()?
            .to_scalar::<f32>()?;
        assert!(
            (lhs - rhs).abs() <= 1e-4 * lhs.abs().max(1.0),
            "{lhs} vs {rhs}"
        );
        Ok(())
    }

    #[test]
    fn supervised_loss_is_zero_for_an_oracle_and_scales_with_lambda() -> Result<()> {
        let dev = Device::Cpu;
        let p = EdmPrecond::edm(0.5);
        let x0 = Tensor::randn(0f32, 1., (2, 2, 4, 4), &dev)?;
        let sigma = Tensor::new(&[0.2f32, 3.0], &dev)?;
        let noise = Tensor::randn(0f32, 1., (2, 2, 4, 4), &dev)?;
        let x0c = x0.clone();
        let oracle = move |_: &Tensor, m: &Tensor, _: &Tensor| -> Result<Tensor> {
            assert_eq!(
                m.min_all()?.to_scalar::<f32>()?,
                1.0,
                "mask must be all ones"
            );
            Ok(x0c.clone())
        };
        assert_eq!(
            supervised_loss(&oracle, &p, &x0, &sigma, &noise)?.to_scalar::<f32>()?,
            0.0
        );
        // identity "denoiser": error is σ n, loss = mean_i λ_i σ_i² ‖n_i‖²
        let ident = |x: &Tensor, _: &Tensor, _: &Tensor| -> Result<Tensor> { Ok(x.clone()) };
        let l = supervised_loss(&ident, &p, &x0, &sigma, &noise)?.to_scalar::<f32>()? as f64;
        let nn = per_sample_sq_norm(&noise)?.to_vec1::<f32>()?;
        let want = (p.loss_weight(0.2) * 0.04 * nn[0] as f64
            + p.loss_weight(3.0) * 9.0 * nn[1] as f64)
            / 2.0;
        assert!((l - want).abs() < 1e-4 * want, "{l} vs {want}");
        Ok(())
    }
}

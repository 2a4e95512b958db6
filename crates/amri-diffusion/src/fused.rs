//! CPU kernels with hand-written backward passes for the U-Net's hot spots.
//!
//! candle 0.9's CPU backward passes are the slow part of a training step: a 3×3 convolution's
//! input gradient goes through a direct-loop `conv_transpose2d`, GroupNorm and SiLU are
//! composed of a dozen element-wise ops that each allocate, and nearest-neighbour upsampling's
//! gradient is a grouped convolution. The ops here do the same maths in one pass each:
//!
//! - [`conv2d`]: stride-1 "same" convolution (odd square kernel, padding `k/2`) as im2col + one
//!   GEMM per image (faer), with backward passes that are GEMMs + col2im;
//! - [`group_norm`]: GroupNorm with an optional fused SiLU, forward and backward in one pass over
//!   each group;
//! - [`upsample2x`]: nearest-neighbour ×2 upsampling whose backward is a 2×2 sum-pool;
//! - [`pixel_unshuffle`] / [`pixel_shuffle`]: space-to-depth and depth-to-space by a factor `f`
//!   (the U-Net's optional FFDNet-style stem and head), each the other's backward.
//!
//! All take and return NCHW `f32` tensors. On devices other than the CPU they fall back to
//! candle's own ops, so the `cuda` build is unchanged. The unit tests check values and gradients
//! against candle's reference ops.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, CustomOp3, DType, Layout, Shape, Tensor};
use faer::linalg::matmul::matmul;
use faer::{Accum, MatMut, MatRef, Par};
use rayon::prelude::*;

type CResult<T> = candle_core::Result<T>;

/// A contiguous `f32` slice of a CPU storage, or an error naming the op.
fn slice<'a>(s: &'a CpuStorage, l: &Layout, op: &str) -> CResult<&'a [f32]> {
    let data = match s {
        CpuStorage::F32(v) => v.as_slice(),
        _ => candle_core::bail!("{op}: only f32 tensors are supported"),
    };
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&data[a..b]),
        None => candle_core::bail!("{op}: input must be contiguous"),
    }
}

/// Parallelism for one GEMM: all threads when images are not processed in parallel.
fn gemm_par(parallel_over_images: bool) -> Par {
    if parallel_over_images {
        Par::Seq
    } else {
        Par::rayon(0)
    }
}

/// Shape of a stride-1 same convolution: batch, input channels, output channels, H, W, kernel.
#[derive(Debug, Clone, Copy)]
struct ConvDims {
    n: usize,
    ci: usize,
    co: usize,
    h: usize,
    w: usize,
    k: usize,
}

/// What the two operands of a convolution op are (NCHW activations, `[C_out, C_in, k, k]` kernel).
#[derive(Debug, Clone, Copy)]
enum Operands {
    /// Forward: `(x: [N, C_in, H, W], w: [C_out, C_in, k, k])`.
    InputKernel,
    /// Input gradient: `(g: [N, C_out, H, W], w: [C_out, C_in, k, k])`.
    GradKernel,
    /// Kernel gradient: `(x: [N, C_in, H, W], g: [N, C_out, H, W])` for a `k`×`k` kernel.
    InputGrad { k: usize },
}

impl ConvDims {
    /// The dimensions of the convolution behind an op's two operands; an error naming `op` when
    /// the operands do not fit each other or the kernel is not odd and square.
    fn from_layouts(a: &Layout, b: &Layout, operands: Operands, op: &str) -> CResult<Self> {
        let (a0, a1, a2, a3) = a.shape().dims4()?;
        let (b0, b1, b2, b3) = b.shape().dims4()?;
        // (n, ci, co, h, w, k) and whether the shapes agree.
        let ((n, ci, co, h, w, k), fits) = match operands {
            Operands::InputKernel => ((a0, a1, b0, a2, a3, b2), b1 == a1 && b3 == b2),
            Operands::GradKernel => ((a0, b1, a1, a2, a3, b2), b0 == a1 && b3 == b2),
            Operands::InputGrad { k } => {
                ((a0, a1, b1, a2, a3, k), b0 == a0 && b2 == a2 && b3 == a3)
            }
        };
        if !fits || k % 2 == 0 {
            candle_core::bail!(
                "{op}: operands {:?} and {:?} do not fit as {operands:?} (odd square kernels only)",
                a.shape(),
                b.shape()
            );
        }
        Ok(Self { n, ci, co, h, w, k })
    }
    fn hw(&self) -> usize {
        self.h * self.w
    }
    fn kk(&self) -> usize {
        self.ci * self.k * self.k
    }
}

/// im2col for one image: `col[(c·k + ky)·k + kx, y·W + x] = img[c, y + ky − p, x + kx − p]`
/// (zero outside), `col: [C·k², H·W]` row-major.
fn im2col(img: &[f32], d: &ConvDims, col: &mut [f32]) {
    let (h, w, k) = (d.h, d.w, d.k);
    let p = k / 2;
    col.par_chunks_mut(h * w)
        .enumerate()
        .with_min_len(8)
        .for_each(|(row, out)| {
            let c = row / (k * k);
            let ky = (row / k) % k;
            let kx = row % k;
            let src = &img[c * h * w..(c + 1) * h * w];
            for y in 0..h {
                let sy = y as isize + ky as isize - p as isize;
                let dst = &mut out[y * w..(y + 1) * w];
                if sy < 0 || sy >= h as isize {
                    dst.fill(0.0);
                    continue;
                }
                let srow = &src[sy as usize * w..(sy as usize + 1) * w];
                // x + kx − p in [0, w): x in [p − kx, w + p − kx)
                let lo = p.saturating_sub(kx).min(w);
                let hi = (w + p).saturating_sub(kx).min(w);
                dst[..lo].fill(0.0);
                dst[hi..].fill(0.0);
                if lo < hi {
                    let s0 = lo + kx - p;
                    dst[lo..hi].copy_from_slice(&srow[s0..s0 + (hi - lo)]);
                }
            }
        });
}

/// col2im for one image: the adjoint of [`im2col`], accumulated into `img: [C, H, W]`.
fn col2im(col: &[f32], d: &ConvDims, img: &mut [f32]) {
    let (h, w, k) = (d.h, d.w, d.k);
    let p = k / 2;
    img.par_chunks_mut(h * w).enumerate().for_each(|(c, dst)| {
        dst.fill(0.0);
        for ky in 0..k {
            for kx in 0..k {
                let row = (c * k + ky) * k + kx;
                let src = &col[row * h * w..(row + 1) * h * w];
                let lo = p.saturating_sub(kx).min(w);
                let hi = (w + p).saturating_sub(kx).min(w);
                if lo >= hi {
                    continue;
                }
                for y in 0..h {
                    let sy = y as isize + ky as isize - p as isize;
                    if sy < 0 || sy >= h as isize {
                        continue;
                    }
                    let s0 = lo + kx - p;
                    let drow = &mut dst[sy as usize * w + s0..sy as usize * w + s0 + hi - lo];
                    let srow = &src[y * w + lo..y * w + hi];
                    for (a, b) in drow.iter_mut().zip(srow) {
                        *a += *b;
                    }
                }
            }
        }
    });
}

/// Scratch buffers of the im2col GEMMs, kept between ops so that a training step neither
/// allocates nor zero-fills them again (at most [`POOL_MAX`] are kept).
static SCRATCH_POOL: std::sync::Mutex<Vec<Vec<f32>>> = std::sync::Mutex::new(Vec::new());
/// Scratch buffers kept in [`SCRATCH_POOL`] (a few per worker thread).
const POOL_MAX: usize = 16;

/// A scratch buffer from [`SCRATCH_POOL`], returned to it when dropped.
struct Scratch(Vec<f32>);

impl Scratch {
    fn take() -> Self {
        let mut pool = SCRATCH_POOL.lock().unwrap_or_else(|p| p.into_inner());
        Scratch(pool.pop().unwrap_or_default())
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let mut pool = SCRATCH_POOL.lock().unwrap_or_else(|p| p.into_inner());
        if pool.len() < POOL_MAX {
            pool.push(std::mem::take(&mut self.0));
        }
    }
}

/// The first `len` elements of `v`, growing it (zero-filled) only when it is shorter; the
/// contents are stale, every caller overwrites them.
fn fit(v: &mut Vec<f32>, len: usize) -> &mut [f32] {
    if v.len() < len {
        v.resize(len, 0.0);
    }
    &mut v[..len]
}

/// Runs `f(image index, scratch)` for every image, in parallel over images when there are at
/// least as many images as threads, with one pooled scratch buffer per task.
fn for_images<F>(d: &ConvDims, out: &mut [f32], per_image: usize, f: F)
where
    F: Fn(usize, &mut [f32], &mut Vec<f32>, bool) + Sync + Send,
{
    let par = d.n >= rayon::current_num_threads() && d.n > 1;
    if par {
        out.par_chunks_mut(per_image)
            .enumerate()
            .for_each_init(Scratch::take, |scratch, (i, o)| {
                f(i, o, &mut scratch.0, true)
            });
    } else {
        let mut scratch = Scratch::take();
        for (i, o) in out.chunks_mut(per_image).enumerate() {
            f(i, o, &mut scratch.0, false);
        }
    }
}

/// The forward convolution `y[n] = W · im2col(x[n]) (+ bias)` of contiguous operands; `bias`
/// is `[C_out]` (shared) or `[N, C_out]` (per image), added by starting each output row from
/// its bias before the GEMM accumulates.
fn conv_forward(x: &[f32], wt: &[f32], bias: Option<&[f32]>, d: &ConvDims) -> Vec<f32> {
    let mut out = vec![0f32; d.n * d.co * d.hw()];
    let wm = MatRef::from_row_major_slice(wt, d.co, d.kk());
    for_images(d, &mut out, d.co * d.hw(), |i, o, scratch, par| {
        let img = &x[i * d.ci * d.hw()..(i + 1) * d.ci * d.hw()];
        let accum = match bias {
            Some(b) => {
                let bi = if b.len() == d.co {
                    b
                } else {
                    &b[i * d.co..(i + 1) * d.co]
                };
                for (row, v) in o.chunks_mut(d.hw()).zip(bi) {
                    row.fill(*v);
                }
                Accum::Add
            }
            None => Accum::Replace,
        };
        let dst = MatMut::from_row_major_slice_mut(o, d.co, d.hw());
        if d.k == 1 {
            let cm = MatRef::from_row_major_slice(img, d.ci, d.hw());
            matmul(dst, accum, wm, cm, 1.0, gemm_par(par));
        } else {
            let col = fit(scratch, d.kk() * d.hw());
            im2col(img, d, col);
            let cm = MatRef::from_row_major_slice(col, d.kk(), d.hw());
            matmul(dst, accum, wm, cm, 1.0, gemm_par(par));
        }
    });
    out
}

/// The input and kernel gradients of a convolution `(x, W)` for the output gradient `grad`,
/// and `grad` made contiguous (for further reductions).
fn conv_grads(x: &Tensor, wt: &Tensor, grad: &Tensor) -> CResult<(Tensor, Tensor, Tensor)> {
    let grad = grad.contiguous()?;
    let gx = grad.apply_op2_no_bwd(wt, &ConvGradInput)?;
    let gw = x.apply_op2_no_bwd(&grad, &ConvGradWeight { k: wt.dim(2)? })?;
    Ok((gx, gw, grad))
}

/// Forward convolution: `y[n] = W · im2col(x[n])`.
struct Conv2dOp;

impl CustomOp2 for Conv2dOp {
    fn name(&self) -> &'static str {
        "amri-conv2d"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> CResult<(CpuStorage, Shape)> {
        let d = ConvDims::from_layouts(l1, l2, Operands::InputKernel, self.name())?;
        let x = slice(s1, l1, self.name())?;
        let wt = slice(s2, l2, self.name())?;
        let out = conv_forward(x, wt, None, &d);
        Ok((CpuStorage::F32(out), Shape::from((d.n, d.co, d.h, d.w))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        wt: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> CResult<(Option<Tensor>, Option<Tensor>)> {
        let (gx, gw, _) = conv_grads(x, wt, grad)?;
        Ok((Some(gx), Some(gw)))
    }
}

/// Forward convolution plus bias, `(x, W, b) → W · im2col(x[n]) + b`, `b: [C_out]` or
/// `[N, C_out]`: the bias costs no pass of its own, and its gradient is one channel sum.
struct Conv2dBiasOp;

impl CustomOp3 for Conv2dBiasOp {
    fn name(&self) -> &'static str {
        "amri-conv2d-bias"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> CResult<(CpuStorage, Shape)> {
        let d = ConvDims::from_layouts(l1, l2, Operands::InputKernel, self.name())?;
        let fits = match l3.shape().dims() {
            [c] => *c == d.co,
            [n, c] => *n == d.n && *c == d.co,
            _ => false,
        };
        if !fits {
            candle_core::bail!(
                "{}: bias {:?} is neither [C_out] = [{}] nor [N, C_out] = [{}, {}]",
                self.name(),
                l3.shape(),
                d.co,
                d.n,
                d.co
            );
        }
        let x = slice(s1, l1, self.name())?;
        let wt = slice(s2, l2, self.name())?;
        let b = slice(s3, l3, self.name())?;
        let out = conv_forward(x, wt, Some(b), &d);
        Ok((CpuStorage::F32(out), Shape::from((d.n, d.co, d.h, d.w))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        wt: &Tensor,
        b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> CResult<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (gx, gw, grad) = conv_grads(x, wt, grad)?;
        let gb = grad.apply_op1_no_bwd(&ChannelSum)?;
        let gb = if b.rank() == 1 { gb.sum(0)? } else { gb };
        Ok((Some(gx), Some(gw), Some(gb)))
    }
}

/// Per-image channel sums, `[N, C, H, W] → [N, C]` (the gradient of a per-channel bias).
struct ChannelSum;

impl CustomOp1 for ChannelSum {
    fn name(&self) -> &'static str {
        "amri-channel-sum"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> CResult<(CpuStorage, Shape)> {
        let g = slice(s, l, self.name())?;
        let (n, c, h, w) = l.shape().dims4()?;
        let hw = (h * w).max(1);
        let out: Vec<f32> = if h * w == 0 {
            vec![0.0; n * c]
        } else {
            g.par_chunks(hw)
                .with_min_len(16)
                .map(|ch| ch.iter().sum::<f32>())
                .collect()
        };
        Ok((CpuStorage::F32(out), Shape::from((n, c))))
    }
}

/// Input gradient: `dx[n] = col2im(Wᵀ · g[n])`; `(g, W) → dx`.
struct ConvGradInput;

impl CustomOp2 for ConvGradInput {
    fn name(&self) -> &'static str {
        "amri-conv2d-grad-input"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> CResult<(CpuStorage, Shape)> {
        let g = slice(s1, l1, self.name())?;
        let wt = slice(s2, l2, self.name())?;
        let d = ConvDims::from_layouts(l1, l2, Operands::GradKernel, self.name())?;
        let ConvDims { n, ci, co, h, w, k } = d;
        let mut out = vec![0f32; n * ci * d.hw()];
        let wm = MatRef::from_row_major_slice(wt, co, d.kk());
        for_images(&d, &mut out, ci * d.hw(), |i, o, scratch, par| {
            let gi = MatRef::from_row_major_slice(
                &g[i * co * d.hw()..(i + 1) * co * d.hw()],
                co,
                d.hw(),
            );
            if k == 1 {
                let dst = MatMut::from_row_major_slice_mut(o, ci, d.hw());
                matmul(dst, Accum::Replace, wm.transpose(), gi, 1.0, gemm_par(par));
            } else {
                let col = fit(scratch, d.kk() * d.hw());
                let cm = MatMut::from_row_major_slice_mut(col, d.kk(), d.hw());
                matmul(cm, Accum::Replace, wm.transpose(), gi, 1.0, gemm_par(par));
                col2im(col, &d, o);
            }
        });
        Ok((CpuStorage::F32(out), Shape::from((n, ci, h, w))))
    }
}

/// Kernel gradient: `dW = Σ_n g[n] · im2col(x[n])ᵀ`; `(x, g) → dW`.
struct ConvGradWeight {
    k: usize,
}

impl CustomOp2 for ConvGradWeight {
    fn name(&self) -> &'static str {
        "amri-conv2d-grad-weight"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> CResult<(CpuStorage, Shape)> {
        let x = slice(s1, l1, self.name())?;
        let g = slice(s2, l2, self.name())?;
        let d = ConvDims::from_layouts(l1, l2, Operands::InputGrad { k: self.k }, self.name())?;
        let ConvDims { n, ci, co, k, .. } = d;
        let kk = d.kk();
        let hw = d.hw();
        let accumulate = |i: usize, acc: &mut [f32], scratch: &mut Vec<f32>, par: bool| {
            let img = &x[i * ci * hw..(i + 1) * ci * hw];
            let gi = MatRef::from_row_major_slice(&g[i * co * hw..(i + 1) * co * hw], co, hw);
            let dst = MatMut::from_row_major_slice_mut(acc, co, kk);
            if k == 1 {
                let cm = MatRef::from_row_major_slice(img, ci, hw);
                matmul(dst, Accum::Add, gi, cm.transpose(), 1.0, gemm_par(par));
            } else {
                let col = fit(scratch, kk * hw);
                im2col(img, &d, col);
                let cm = MatRef::from_row_major_slice(col, kk, hw);
                matmul(dst, Accum::Add, gi, cm.transpose(), 1.0, gemm_par(par));
            }
        };
        let out = if n >= rayon::current_num_threads() && n > 1 {
            (0..n)
                .into_par_iter()
                .fold(
                    || (vec![0f32; co * kk], Scratch::take()),
                    |(mut acc, mut scratch), i| {
                        accumulate(i, &mut acc, &mut scratch.0, true);
                        (acc, scratch)
                    },
                )
                .map(|(acc, _)| acc)
                .reduce(
                    || vec![0f32; co * kk],
                    |mut a, b| {
                        for (x, y) in a.iter_mut().zip(&b) {
                            *x += *y;
                        }
                        a
                    },
                )
        } else {
            let mut acc = vec![0f32; co * kk];
            let mut scratch = Scratch::take();
            for i in 0..n {
                accumulate(i, &mut acc, &mut scratch.0, false);
            }
            acc
        };
        Ok((CpuStorage::F32(out), Shape::from((co, ci, k, k))))
    }
}

/// Stride-1 "same" 2-D convolution without bias: `x: [N, C_in, H, W]`, `w: [C_out, C_in, k, k]`
/// (odd `k`, zero padding `k/2`) → `[N, C_out, H, W]`. Fast CPU kernels with a hand-written
/// backward; [`conv2d_im2col`] elsewhere.
pub fn conv2d(x: &Tensor, w: &Tensor) -> CResult<Tensor> {
    if x.device().is_cpu() && x.dtype() == DType::F32 && w.dtype() == DType::F32 {
        x.contiguous()?.apply_op2(&w.contiguous()?, Conv2dOp)
    } else {
        conv2d_im2col(x, w)
    }
}

/// The same convolution as [`conv2d`] from candle's device-independent ops: the `k²` shifted
/// copies of the zero-padded input as a `[C_in·k², N·H·W]` matrix, one GEMM with the weights,
/// autograd through copies and the matmul. Used off the CPU instead of candle's `conv2d`, whose
/// CUDA kernel in candle 0.9.2 reads a non-contiguous kernel from the wrong buffer, and the
/// weight gradient of its backward pass is such a kernel: every convolution weight gets a wrong
/// gradient and training does not learn (huggingface/candle#3893, fixed after 0.9.2).
pub fn conv2d_im2col(x: &Tensor, w: &Tensor) -> CResult<Tensor> {
    let (n, c, h, wd) = x.dims4()?;
    let (co, ci, k, k2) = w.dims4()?;
    if ci != c || k != k2 || k % 2 == 0 {
        candle_core::bail!(
            "conv2d: input {:?} and kernel {:?} (odd square kernels, matching channels)",
            x.dims(),
            w.dims()
        );
    }
    let p = k / 2;
    // [C, N, H, W]: channels first so that the columns come out as [C·k², N·H·W]
    let xt = x.transpose(0, 1)?;
    let col = if k == 1 {
        xt.contiguous()?.reshape((c, n * h * wd))?
    } else {
        let xp = xt.pad_with_zeros(2, p, p)?.pad_with_zeros(3, p, p)?;
        let mut shifted = Vec::with_capacity(k * k);
        for dy in 0..k {
            for dx in 0..k {
                shifted.push(xp.narrow(2, dy, h)?.narrow(3, dx, wd)?);
            }
        }
        // [C, k², N, H, W]: row index c·k² + dy·k + dx, the order of w's [C_in, k, k] axes
        Tensor::stack(&shifted, 1)?.reshape((c * k * k, n * h * wd))?
    };
    let y = w.contiguous()?.reshape((co, c * k * k))?.matmul(&col)?;
    y.reshape((co, n, h, wd))?.transpose(0, 1)?.contiguous()
}

/// Stride-1 "same" 2-D convolution plus bias: `x: [N, C_in, H, W]`, `w: [C_out, C_in, k, k]`
/// (odd `k`, zero padding `k/2`), `b: [C_out]` (one bias per channel) or `[N, C_out]` (per image
/// and channel, e.g. a conditioning embedding folded in) → `[N, C_out, H, W]`. One fused CPU
/// op with a hand-written backward; [`conv2d`] and a broadcast addition elsewhere.
pub fn conv2d_bias(x: &Tensor, w: &Tensor, b: &Tensor) -> CResult<Tensor> {
    if x.device().is_cpu() && x.dtype() == DType::F32 && w.dtype() == DType::F32 {
        x.contiguous()?
            .apply_op3(&w.contiguous()?, &b.contiguous()?, Conv2dBiasOp)
    } else {
        let y = conv2d(x, w)?;
        let b = match b.rank() {
            1 => b.reshape((1, (), 1, 1))?,
            _ => b.unsqueeze(2)?.unsqueeze(3)?,
        };
        y.broadcast_add(&b)
    }
}

/// SIMD lanes of the vectorisable reductions below (one AVX-512 register of f32).
const LANES: usize = 16;
/// Lane blocks summed in f32 before the partial sums move to f64 (1 024 elements).
const FLUSH: usize = 64;

/// `Σ f(v[i])` in f64, computed as 16 f32 lane sums flushed to f64 every 1 024 elements, so
/// that the loop vectorises (a serial f64 accumulator is latency-bound) and stays accurate.
#[inline(always)]
fn lane_sum(v: &[f32], f: impl Fn(f32) -> f32) -> f64 {
    let mut total = 0f64;
    let chunks = v.chunks_exact(LANES);
    let rest = chunks.remainder();
    let mut acc = [0f32; LANES];
    for (i, c) in chunks.enumerate() {
        for l in 0..LANES {
            acc[l] += f(c[l]);
        }
        if (i + 1) % FLUSH == 0 {
            total += acc.iter().map(|&a| a as f64).sum::<f64>();
            acc = [0f32; LANES];
        }
    }
    total += acc.iter().map(|&a| a as f64).sum::<f64>();
    total + rest.iter().map(|&a| f(a) as f64).sum::<f64>()
}

/// Statistics of one group: mean and `1/sqrt(var + eps)` (biased variance, as PyTorch), in two
/// passes (mean, then squared deviations).
fn group_stats(v: &[f32], eps: f64) -> (f32, f32) {
    let n = v.len() as f64;
    let mean = lane_sum(v, |a| a) / n;
    let m = mean as f32;
    let var = lane_sum(v, |a| (a - m) * (a - m)) / n;
    (m, (1.0 / (var.max(0.0) + eps).sqrt()) as f32)
}

/// `e^x` in f32 without a libm call, so that loops around it vectorise: `2^k · p(r)` with
/// `k = round(x·log₂e)`, `r = x − k·ln 2` (two-part ln 2) and the degree-7 Taylor polynomial
/// of `e^r` on `|r| ≤ ln2/2` (relative error below 2·10⁻⁷); `x` is clamped to [−87, 88], so
/// the result stays finite and normal.
#[inline(always)]
fn exp_f32(x: f32) -> f32 {
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    let x = x.clamp(-87.0, 88.0);
    let k = (x * std::f32::consts::LOG2_E).round_ties_even();
    let r = (x - k * LN2_HI) - k * LN2_LO;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0
                    + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0 + r / 5040.0))))));
    f32::from_bits(((k as i32 + 127) as u32) << 23) * p
}

/// The logistic function `1/(1 + e^−z)` with [`exp_f32`].
#[inline(always)]
fn sigmoid(z: f32) -> f32 {
    1.0 / (1.0 + exp_f32(-z))
}

/// GroupNorm (+ optional SiLU): `(x, gamma, beta) → act(gamma_c (x − μ_g)/σ_g + beta_c)`.
struct GroupNormOp {
    groups: usize,
    eps: f64,
    silu: bool,
}

impl GroupNormOp {
    fn dims(&self, l: &Layout) -> CResult<(usize, usize, usize)> {
        let (n, c, h, w) = l.shape().dims4()?;
        if self.groups == 0 || c % self.groups != 0 {
            candle_core::bail!(
                "group-norm: {c} channels do not split into {} groups",
                self.groups
            );
        }
        Ok((n, c, h * w))
    }
}

impl CustomOp3 for GroupNormOp {
    fn name(&self) -> &'static str {
        "amri-group-norm"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> CResult<(CpuStorage, Shape)> {
        let (_, c, hw) = self.dims(l1)?;
        let x = slice(s1, l1, self.name())?;
        let gamma = slice(s2, l2, self.name())?;
        let beta = slice(s3, l3, self.name())?;
        let cg = c / self.groups;
        let mut out = vec![0f32; x.len()];
        out.par_chunks_mut(cg * hw)
            .zip(x.par_chunks(cg * hw))
            .enumerate()
            .for_each(|(ng, (o, xi))| {
                let (mean, rstd) = group_stats(xi, self.eps);
                let c0 = (ng % self.groups) * cg;
                for j in 0..cg {
                    let (ga, be) = (
                        gamma[c0 + j] * rstd,
                        beta[c0 + j] - gamma[c0 + j] * rstd * mean,
                    );
                    let src = &xi[j * hw..(j + 1) * hw];
                    let dst = &mut o[j * hw..(j + 1) * hw];
                    if self.silu {
                        for (d, &s) in dst.iter_mut().zip(src) {
                            let z = ga * s + be;
                            *d = z * sigmoid(z);
                        }
                    } else {
                        for (d, &s) in dst.iter_mut().zip(src) {
                            *d = ga * s + be;
                        }
                    }
                }
            });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        gamma: &Tensor,
        beta: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> CResult<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let c = gamma.dim(0)?;
        let gb = Tensor::cat(&[gamma, beta], 0)?;
        let packed = x.apply_op3_no_bwd(
            &gb,
            &grad.contiguous()?,
            &GroupNormGrad {
                groups: self.groups,
                eps: self.eps,
                silu: self.silu,
            },
        )?;
        let nx = x.elem_count();
        let gx = packed.narrow(0, 0, nx)?.reshape(x.shape())?;
        let gg = packed.narrow(0, nx, c)?;
        let gbeta = packed.narrow(0, nx + c, c)?;
        Ok((Some(gx), Some(gg), Some(gbeta)))
    }
}

/// Backward of [`GroupNormOp`]: `(x, [gamma; beta], grad) → [dx (flattened); dgamma; dbeta]`.
struct GroupNormGrad {
    groups: usize,
    eps: f64,
    silu: bool,
}

impl CustomOp3 for GroupNormGrad {
    fn name(&self) -> &'static str {
        "amri-group-norm-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> CResult<(CpuStorage, Shape)> {
        let (_, c, hw) = GroupNormOp {
            groups: self.groups,
            eps: self.eps,
            silu: self.silu,
        }
        .dims(l1)?;
        let x = slice(s1, l1, self.name())?;
        let gb = slice(s2, l2, self.name())?;
        let g = slice(s3, l3, self.name())?;
        let (gamma, beta) = gb.split_at(c);
        let cg = c / self.groups;
        let nx = x.len();
        let mut out = vec![0f32; nx + 2 * c];
        let (dx, _) = out.split_at_mut(nx);
        // Per group: dx and the per-channel partial sums of dgamma, dbeta.
        let partial: Vec<(usize, Vec<f32>, Vec<f32>)> = dx
            .par_chunks_mut(cg * hw)
            .zip(x.par_chunks(cg * hw).zip(g.par_chunks(cg * hw)))
            .enumerate()
            .map(|(ng, (dxi, (xi, gi)))| {
                let (mean, rstd) = group_stats(xi, self.eps);
                let c0 = (ng % self.groups) * cg;
                let mut dgam = vec![0f32; cg];
                let mut dbet = vec![0f32; cg];
                // dz = dy · act'(z); dxhat = dz · gamma; stored temporarily in dxi. Sums in
                // f32 lanes (vectorised), flushed to f64 per block.
                let mut sum_dxhat = 0f64;
                let mut sum_dxhat_xhat = 0f64;
                for j in 0..cg {
                    let (ga, be) = (gamma[c0 + j], beta[c0 + j]);
                    let xs = &xi[j * hw..(j + 1) * hw];
                    let gs = &gi[j * hw..(j + 1) * hw];
                    let ds = &mut dxi[j * hw..(j + 1) * hw];
                    let mut tot = [0f64; 4];
                    // (dz, dxhat, xhat) of one element: dz = dy · act'(z), dxhat = dz · gamma
                    let elem = |x: f32, g: f32| -> (f32, f32, f32) {
                        let xhat = (x - mean) * rstd;
                        let dz = if self.silu {
                            let z = ga * xhat + be;
                            let s = sigmoid(z);
                            g * s * (1.0 + z * (1.0 - s))
                        } else {
                            g
                        };
                        (dz, dz * ga, xhat)
                    };
                    let mut block = |d: &mut [f32], xb: &[f32], gb: &[f32]| {
                        let mut acc = [[0f32; LANES]; 4];
                        for ((dc, xc), gc) in d
                            .chunks_exact_mut(LANES)
                            .zip(xb.chunks_exact(LANES))
                            .zip(gb.chunks_exact(LANES))
                        {
                            for l in 0..LANES {
                                let (dz, dxhat, xhat) = elem(xc[l], gc[l]);
                                acc[0][l] += dz * xhat;
                                acc[1][l] += dz;
                                acc[2][l] += dxhat;
                                acc[3][l] += dxhat * xhat;
                                dc[l] = dxhat;
                            }
                        }
                        for (t, a) in tot.iter_mut().zip(&acc) {
                            *t += a.iter().map(|&v| v as f64).sum::<f64>();
                        }
                    };
                    let whole = hw - hw % LANES;
                    let step = LANES * FLUSH;
                    let mut t0 = 0;
                    while t0 < whole {
                        let t1 = (t0 + step).min(whole);
                        block(&mut ds[t0..t1], &xs[t0..t1], &gs[t0..t1]);
                        t0 = t1;
                    }
                    for t in whole..hw {
                        let (dz, dxhat, xhat) = elem(xs[t], gs[t]);
                        tot[0] += (dz * xhat) as f64;
                        tot[1] += dz as f64;
                        tot[2] += dxhat as f64;
                        tot[3] += (dxhat * xhat) as f64;
                        ds[t] = dxhat;
                    }
                    dgam[j] = tot[0] as f32;
                    dbet[j] = tot[1] as f32;
                    sum_dxhat += tot[2];
                    sum_dxhat_xhat += tot[3];
                }
                let m = (cg * hw) as f64;
                let a = (sum_dxhat / m) as f32;
                let b = (sum_dxhat_xhat / m) as f32;
                for t in 0..cg * hw {
                    let xhat = (xi[t] - mean) * rstd;
                    dxi[t] = rstd * (dxi[t] - a - xhat * b);
                }
                (c0, dgam, dbet)
            })
            .collect();
        for (c0, dgam, dbet) in partial {
            for j in 0..cg {
                out[nx + c0 + j] += dgam[j];
                out[nx + c + c0 + j] += dbet[j];
            }
        }
        Ok((CpuStorage::F32(out), Shape::from(nx + 2 * c)))
    }
}

/// GroupNorm over `groups` channel groups of `x: [N, C, H, W]` with per-channel `gamma`, `beta`
/// (`[C]`), biased variance and `eps` as PyTorch, followed by SiLU when `silu`. Fused CPU kernel
/// with a hand-written backward; composed candle ops elsewhere.
pub fn group_norm(
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    groups: usize,
    eps: f64,
    silu: bool,
) -> CResult<Tensor> {
    if x.device().is_cpu() && x.dtype() == DType::F32 && x.rank() == 4 {
        x.contiguous()?.apply_op3(
            &gamma.contiguous()?,
            &beta.contiguous()?,
            GroupNormOp { groups, eps, silu },
        )
    } else {
        let gn = candle_nn::GroupNorm::new(gamma.clone(), beta.clone(), x.dim(1)?, groups, eps)?;
        let y = candle_core::Module::forward(&gn, x)?;
        if silu {
            y.silu()
        } else {
            Ok(y)
        }
    }
}

/// `(a + b)·s` in one pass, whose backward hands the same `g·s` to both operands.
struct ScaledSum {
    s: f64,
}

impl CustomOp2 for ScaledSum {
    fn name(&self) -> &'static str {
        "amri-scaled-sum"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> CResult<(CpuStorage, Shape)> {
        if l1.shape() != l2.shape() {
            candle_core::bail!(
                "{}: shapes {:?} and {:?} differ",
                self.name(),
                l1.shape(),
                l2.shape()
            );
        }
        let a = slice(s1, l1, self.name())?;
        let b = slice(s2, l2, self.name())?;
        let s = self.s as f32;
        let out: Vec<f32> = a
            .par_iter()
            .zip(b.par_iter())
            .with_min_len(1 << 14)
            .map(|(p, q)| (p + q) * s)
            .collect();
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    fn bwd(
        &self,
        _a: &Tensor,
        _b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> CResult<(Option<Tensor>, Option<Tensor>)> {
        let g = (grad * self.s)?;
        Ok((Some(g.clone()), Some(g)))
    }
}

/// `(a + b)·s` of two tensors of one shape (a scaled residual connection): one fused CPU op
/// whose backward computes `g·s` once for both operands; candle's ops elsewhere.
pub fn scaled_sum(a: &Tensor, b: &Tensor, s: f64) -> CResult<Tensor> {
    if a.device().is_cpu() && a.dtype() == DType::F32 && b.dtype() == DType::F32 {
        a.contiguous()?.apply_op2(&b.contiguous()?, ScaledSum { s })
    } else {
        (a + b)? * s
    }
}

/// Softmax over the last axis: `y = exp(x − max) / Σ exp(x − max)` per row.
struct SoftmaxLastDim;

impl CustomOp1 for SoftmaxLastDim {
    fn name(&self) -> &'static str {
        "amri-softmax-last-dim"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> CResult<(CpuStorage, Shape)> {
        let x = slice(s, l, self.name())?;
        let n = l.shape().dims().last().copied().unwrap_or(1).max(1);
        let mut out = vec![0f32; x.len()];
        out.par_chunks_mut(n)
            .zip(x.par_chunks(n))
            .with_min_len(8)
            .for_each(|(y, row)| {
                let m = row.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
                for (o, &v) in y.iter_mut().zip(row) {
                    *o = exp_f32(v - m);
                }
                let inv = (1.0 / lane_sum(y, |v| v)) as f32;
                for o in y.iter_mut() {
                    *o *= inv;
                }
            });
        Ok((CpuStorage::F32(out), l.shape().clone()))
    }

    fn bwd(&self, _arg: &Tensor, res: &Tensor, grad: &Tensor) -> CResult<Option<Tensor>> {
        Ok(Some(
            res.contiguous()?
                .apply_op2_no_bwd(&grad.contiguous()?, &SoftmaxGrad)?,
        ))
    }
}

/// The softmax backward `(y, g) → y ⊙ (g − Σ_row g ⊙ y)` per row of the last axis.
struct SoftmaxGrad;

impl CustomOp2 for SoftmaxGrad {
    fn name(&self) -> &'static str {
        "amri-softmax-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> CResult<(CpuStorage, Shape)> {
        if l1.shape() != l2.shape() {
            candle_core::bail!("{}: shapes differ", self.name());
        }
        let y = slice(s1, l1, self.name())?;
        let g = slice(s2, l2, self.name())?;
        let n = l1.shape().dims().last().copied().unwrap_or(1).max(1);
        let mut out = vec![0f32; y.len()];
        out.par_chunks_mut(n)
            .zip(y.par_chunks(n).zip(g.par_chunks(n)))
            .with_min_len(8)
            .for_each(|(dx, (yr, gr))| {
                let dot = yr.iter().zip(gr).map(|(a, b)| a * b).sum::<f32>();
                for ((d, &a), &b) in dx.iter_mut().zip(yr).zip(gr) {
                    *d = a * (b - dot);
                }
            });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
}

/// Softmax over the last axis of `x` (any rank): one fused CPU op with a hand-written backward;
/// candle-nn's composed, differentiable softmax elsewhere.
pub fn softmax_last_dim(x: &Tensor) -> CResult<Tensor> {
    if x.device().is_cpu() && x.dtype() == DType::F32 {
        x.contiguous()?.apply_op1(SoftmaxLastDim)
    } else {
        candle_nn::ops::softmax(x, candle_core::D::Minus1)
    }
}

/// Nearest-neighbour ×2 upsampling whose backward is a 2×2 sum-pool.
struct Upsample2x;

impl CustomOp1 for Upsample2x {
    fn name(&self) -> &'static str {
        "amri-upsample2x"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> CResult<(CpuStorage, Shape)> {
        let x = slice(s, l, self.name())?;
        let (n, c, h, w) = l.shape().dims4()?;
        let mut out = vec![0f32; n * c * 4 * h * w];
        out.par_chunks_mut(4 * h * w)
            .zip(x.par_chunks(h * w))
            .for_each(|(o, xi)| {
                for y in 0..2 * h {
                    let src = &xi[(y / 2) * w..(y / 2 + 1) * w];
                    let dst = &mut o[y * 2 * w..(y + 1) * 2 * w];
                    for (xx, v) in src.iter().enumerate() {
                        dst[2 * xx] = *v;
                        dst[2 * xx + 1] = *v;
                    }
                }
            });
        Ok((CpuStorage::F32(out), Shape::from((n, c, 2 * h, 2 * w))))
    }

    fn bwd(&self, _arg: &Tensor, _res: &Tensor, grad: &Tensor) -> CResult<Option<Tensor>> {
        Ok(Some((grad.avg_pool2d(2)? * 4.0)?))
    }
}

/// Nearest-neighbour ×2 upsampling of `[N, C, H, W]` to `[N, C, 2H, 2W]`.
pub fn upsample2x(x: &Tensor) -> CResult<Tensor> {
    if x.device().is_cpu() && x.dtype() == DType::F32 {
        x.contiguous()?.apply_op1(Upsample2x)
    } else {
        // a broadcast copy, whose backward is a sum: no convolution involved (candle's
        // upsample backward is a grouped conv2d)
        let (n, c, h, w) = x.dims4()?;
        x.reshape((n, c, h, 1, w, 1))?
            .broadcast_as((n, c, h, 2, w, 2))?
            .contiguous()?
            .reshape((n, c, 2 * h, 2 * w))
    }
}

/// Pixel unshuffle (space-to-depth) by `f` on the CPU; its backward is [`PixelShuffle`].
struct PixelUnshuffle(usize);

/// Pixel shuffle (depth-to-space) by `f` on the CPU; its backward is [`PixelUnshuffle`].
struct PixelShuffle(usize);

/// Calls `g(p, b)` for every pixel of an `[H, W]` plane: `p` its index in the plane, `b` its
/// index in the plane's `f²` space-to-depth planes `[f, f, H/f, W/f]`.
fn for_each_block_pixel(h: usize, w: usize, f: usize, mut g: impl FnMut(usize, usize)) {
    let (ho, wo) = (h / f, w / f);
    for y in 0..h {
        let (oy, i) = (y / f, y % f);
        for x in 0..w {
            g(y * w + x, ((i * f + x % f) * ho + oy) * wo + x / f);
        }
    }
}

impl CustomOp1 for PixelUnshuffle {
    fn name(&self) -> &'static str {
        "amri-pixel-unshuffle"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> CResult<(CpuStorage, Shape)> {
        let x = slice(s, l, self.name())?;
        let f = self.0;
        let (n, c, h, w) = l.shape().dims4()?;
        let mut out = vec![0f32; x.len()];
        out.par_chunks_mut(h * w)
            .zip(x.par_chunks(h * w))
            .for_each(|(o, xi)| {
                for_each_block_pixel(h, w, f, |p, b| o[b] = xi[p]);
            });
        Ok((
            CpuStorage::F32(out),
            Shape::from((n, c * f * f, h / f, w / f)),
        ))
    }

    fn bwd(&self, _arg: &Tensor, _res: &Tensor, grad: &Tensor) -> CResult<Option<Tensor>> {
        Ok(Some(pixel_shuffle(grad, self.0)?))
    }
}

impl CustomOp1 for PixelShuffle {
    fn name(&self) -> &'static str {
        "amri-pixel-shuffle"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> CResult<(CpuStorage, Shape)> {
        let x = slice(s, l, self.name())?;
        let f = self.0;
        let (n, cf, ho, wo) = l.shape().dims4()?;
        let (h, w) = (ho * f, wo * f);
        let mut out = vec![0f32; x.len()];
        out.par_chunks_mut(h * w)
            .zip(x.par_chunks(h * w))
            .for_each(|(o, xi)| {
                for_each_block_pixel(h, w, f, |p, b| o[p] = xi[b]);
            });
        Ok((CpuStorage::F32(out), Shape::from((n, cf / (f * f), h, w))))
    }

    fn bwd(&self, _arg: &Tensor, _res: &Tensor, grad: &Tensor) -> CResult<Option<Tensor>> {
        Ok(Some(pixel_unshuffle(grad, self.0)?))
    }
}

/// Space-to-depth (pixel unshuffle, FFDNet's input stage) by factor `f`:
/// `[N, C, H, W] → [N, C·f², H/f, W/f]` with
/// `out[n, c·f² + i·f + j, y, x] = in[n, c, y·f + i, x·f + j]` (PyTorch's `pixel_unshuffle`
/// order). Lossless and linear; its gradient is [`pixel_shuffle`] of the output gradient.
/// Errors when `H` or `W` is not a multiple of `f`, or `f == 0`.
pub fn pixel_unshuffle(x: &Tensor, f: usize) -> CResult<Tensor> {
    let (n, c, h, w) = x.dims4()?;
    if f == 0 || h % f != 0 || w % f != 0 {
        candle_core::bail!("pixel unshuffle by {f}: {h}×{w} is not a multiple of {f}");
    }
    if f == 1 {
        return Ok(x.clone());
    }
    if x.device().is_cpu() && x.dtype() == DType::F32 {
        x.contiguous()?.apply_op1(PixelUnshuffle(f))
    } else {
        let (ho, wo) = (h / f, w / f);
        x.reshape((n, c, ho, f, wo, f))?
            .permute((0, 1, 3, 5, 2, 4))?
            .contiguous()?
            .reshape((n, c * f * f, ho, wo))
    }
}

/// Depth-to-space (pixel shuffle, FFDNet's output stage) by factor `f`, the inverse of
/// [`pixel_unshuffle`]: `[N, C·f², h, w] → [N, C, h·f, w·f]` with
/// `out[n, c, y·f + i, x·f + j] = in[n, c·f² + i·f + j, y, x]`. Errors when the channel count is
/// not a multiple of `f²`, or `f == 0`.
pub fn pixel_shuffle(x: &Tensor, f: usize) -> CResult<Tensor> {
    let (n, cf, ho, wo) = x.dims4()?;
    if f == 0 || cf % (f * f) != 0 {
        candle_core::bail!(
            "pixel shuffle by {f}: {cf} channels is not a multiple of {}",
            f * f
        );
    }
    if f == 1 {
        return Ok(x.clone());
    }
    if x.device().is_cpu() && x.dtype() == DType::F32 {
        x.contiguous()?.apply_op1(PixelShuffle(f))
    } else {
        let c = cf / (f * f);
        x.reshape((n, c, f, f, ho, wo))?
            .permute((0, 1, 4, 2, 5, 3))?
            .contiguous()?
            .reshape((n, c, ho * f, wo * f))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    fn max_rel(a: &Tensor, b: &Tensor) -> f32 {
        let d = (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        let m = b
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        d / m.max(1e-12)
    }

    /// Random input `x`, kernel, output weights `r`, the input in a non-contiguous layout and
    /// candle's conv of it (the reference: that layout avoids candle's C == H == W bug).
    fn conv_case(
        n: usize,
        ci: usize,
        co: usize,
        h: usize,
        w: usize,
        k: usize,
    ) -> (Var, Var, Tensor, Tensor, Tensor) {
        let dev = Device::Cpu;
        let x = Var::randn(0f32, 1., (n, ci, h, w), &dev).unwrap();
        let wt = Var::randn(0f32, 1., (co, ci, k, k), &dev).unwrap();
        let r = Tensor::randn(0f32, 1., (n, co, h, w), &dev).unwrap();
        let xr = x
            .transpose(2, 3)
            .unwrap()
            .contiguous()
            .unwrap()
            .transpose(2, 3)
            .unwrap();
        let y_ref = xr.conv2d(&wt, k / 2, 1, 1, 1).unwrap();
        (x, wt, r, xr, y_ref)
    }

    /// Value and both gradients of the fused conv equal candle's conv2d (incl. C == H == W,
    /// 1×1 kernels, batch 1 and batch > threads).
    #[test]
    fn conv_matches_candle() {
        for &(n, ci, co, h, w, k) in &[
            (3, 4, 5, 7, 6, 3),
            (1, 3, 2, 5, 5, 3),
            (4, 8, 8, 8, 8, 3),
            (2, 6, 4, 5, 9, 1),
            (2, 2, 3, 6, 6, 5),
        ] {
            let (x, wt, r, _, y_ref) = conv_case(n, ci, co, h, w, k);
            let y = conv2d(&x, &wt).unwrap();
            assert!(
                max_rel(&y, &y_ref) < 1e-5,
                "value {:?}",
                (n, ci, co, h, w, k)
            );
            let g_ref = (y_ref * &r).unwrap().sum_all().unwrap().backward().unwrap();
            let g = (y * &r).unwrap().sum_all().unwrap().backward().unwrap();
            for v in [&x, &wt] {
                let a = g.get(v).unwrap();
                let b = g_ref.get(v).unwrap();
                assert!(max_rel(a, b) < 1e-4, "grad {:?}", (n, ci, co, h, w, k));
            }
        }
    }

    /// The device-independent im2col convolution (the GPU path) equals candle's conv2d in value
    /// and in both gradients, on contiguous and non-contiguous inputs.
    #[test]
    fn im2col_conv_matches_candle() {
        let dev = Device::Cpu;
        for &(n, ci, co, h, w, k) in &[
            (3, 4, 5, 7, 6, 3),
            (1, 3, 2, 5, 5, 3),
            (2, 6, 4, 5, 9, 1),
            (2, 2, 3, 6, 6, 5),
        ] {
            let (x, wt, r, xr, y_ref) = conv_case(n, ci, co, h, w, k);
            for input in [x.as_tensor(), &xr] {
                let y = conv2d_im2col(input, &wt).unwrap();
                assert!(
                    max_rel(&y, &y_ref) < 1e-5,
                    "value {:?}",
                    (n, ci, co, h, w, k)
                );
                let g_ref = (&y_ref * &r)
                    .unwrap()
                    .sum_all()
                    .unwrap()
                    .backward()
                    .unwrap();
                let g = (y * &r).unwrap().sum_all().unwrap().backward().unwrap();
                for v in [&x, &wt] {
                    let a = g.get(v).unwrap();
                    let b = g_ref.get(v).unwrap();
                    assert!(max_rel(a, b) < 1e-4, "grad {:?}", (n, ci, co, h, w, k));
                }
            }
        }
        let x = Tensor::zeros((1, 3, 4, 4), DType::F32, &dev).unwrap();
        let even = Tensor::zeros((2, 3, 2, 2), DType::F32, &dev).unwrap();
        assert!(conv2d_im2col(&x, &even).is_err());
        let wrong_c = Tensor::zeros((2, 4, 3, 3), DType::F32, &dev).unwrap();
        assert!(conv2d_im2col(&x, &wrong_c).is_err());
    }

    /// The fused conv + bias (shared `[C]` and per-image `[N, C]` bias) equals the conv
    /// followed by candle's broadcast addition, in value and in all three gradients.
    #[test]
    fn conv_bias_matches_conv_plus_broadcast_add() {
        let dev = Device::Cpu;
        for &(n, ci, co, h, w, k, per_image) in &[
            (3, 4, 5, 7, 6, 3, false),
            (3, 4, 5, 7, 6, 3, true),
            (1, 3, 2, 5, 5, 1, true),
            (4, 8, 8, 8, 8, 3, false),
        ] {
            let x = Var::randn(0f32, 1., (n, ci, h, w), &dev).unwrap();
            let wt = Var::randn(0f32, 1., (co, ci, k, k), &dev).unwrap();
            let b = if per_image {
                Var::randn(0f32, 1., (n, co), &dev).unwrap()
            } else {
                Var::randn(0f32, 1., co, &dev).unwrap()
            };
            let r = Tensor::randn(0f32, 1., (n, co, h, w), &dev).unwrap();
            let bb = if per_image {
                b.unsqueeze(2).unwrap().unsqueeze(3).unwrap()
            } else {
                b.reshape((1, co, 1, 1)).unwrap()
            };
            let y_ref = conv2d(&x, &wt).unwrap().broadcast_add(&bb).unwrap();
            let y = conv2d_bias(&x, &wt, &b).unwrap();
            let case = (n, ci, co, h, w, k, per_image);
            assert!(max_rel(&y, &y_ref) < 1e-5, "value {case:?}");
            let g_ref = (y_ref * &r).unwrap().sum_all().unwrap().backward().unwrap();
            let g = (y * &r).unwrap().sum_all().unwrap().backward().unwrap();
            for v in [&x, &wt, &b] {
                let a = g.get(v).unwrap();
                let e = g_ref.get(v).unwrap();
                assert_eq!(a.dims(), e.dims(), "grad shape {case:?}");
                assert!(max_rel(a, e) < 1e-4, "grad {case:?}");
            }
        }
        // A bias of the wrong shape is an error naming the op, not a panic.
        let x = Tensor::zeros((2, 3, 4, 4), DType::F32, &dev).unwrap();
        let wt = Tensor::zeros((5, 3, 3, 3), DType::F32, &dev).unwrap();
        let e = conv2d_bias(&x, &wt, &Tensor::zeros(4, DType::F32, &dev).unwrap()).unwrap_err();
        assert!(e.to_string().contains("amri-conv2d-bias"), "{e}");
    }

    /// GroupNorm (+SiLU) value and gradients equal candle-nn's GroupNorm followed by silu.
    /// The fused scaled sum equals `(a + b)·s` in value and in both gradients, including when
    /// one operand is used twice (its gradients add up) and for non-contiguous inputs.
    #[test]
    fn scaled_sum_matches_candle() {
        let dev = Device::Cpu;
        let a = Var::randn(0f32, 1., (2, 3, 70, 300), &dev).unwrap();
        let b = Var::randn(0f32, 1., (2, 3, 300, 70), &dev).unwrap();
        let bt = b.transpose(2, 3).unwrap();
        let r = Tensor::randn(0f32, 1., (2, 3, 70, 300), &dev).unwrap();
        let y = scaled_sum(&a, &bt, 0.7).unwrap();
        let y = scaled_sum(&y, &a, 0.5).unwrap();
        let y_ref = (((a.as_tensor() + &bt).unwrap() * 0.7).unwrap() + a.as_tensor()).unwrap();
        let y_ref = (y_ref * 0.5).unwrap();
        assert!(max_rel(&y, &y_ref) < 1e-6);
        let g = (y * &r).unwrap().sum_all().unwrap().backward().unwrap();
        let g_ref = (y_ref * &r).unwrap().sum_all().unwrap().backward().unwrap();
        for v in [&a, &b] {
            assert!(max_rel(g.get(v).unwrap(), g_ref.get(v).unwrap()) < 1e-6);
        }
        let c = Tensor::zeros((2, 3), DType::F32, &dev).unwrap();
        assert!(scaled_sum(&c, &c.t().unwrap(), 1.0).is_err());
    }

    /// The fused softmax equals candle-nn's in value and gradient (rows of 5 and of 300, with
    /// large offsets that overflow a naive exponential).
    #[test]
    fn softmax_matches_candle() {
        let dev = Device::Cpu;
        for shape in [(3, 4, 5), (2, 3, 300)] {
            let x = Var::randn(0f32, 3., shape, &dev).unwrap();
            let shifted = (x.as_tensor() + 200.0).unwrap();
            let r = Tensor::randn(0f32, 1., shape, &dev).unwrap();
            let y = softmax_last_dim(&shifted).unwrap();
            let y_ref = candle_nn::ops::softmax(&shifted, candle_core::D::Minus1).unwrap();
            assert!(max_rel(&y, &y_ref) < 1e-5);
            let g = (y * &r).unwrap().sum_all().unwrap().backward().unwrap();
            let g_ref = (y_ref * &r).unwrap().sum_all().unwrap().backward().unwrap();
            assert!(max_rel(g.get(&x).unwrap(), g_ref.get(&x).unwrap()) < 1e-4);
        }
    }

    /// The polynomial exponential against the standard library's, over the whole clamped
    /// range and beyond it (finite, positive).
    #[test]
    fn exp_f32_is_accurate() {
        let mut worst = 0f64;
        let mut x = -87.0f32;
        while x <= 88.0 {
            let (a, b) = (exp_f32(x) as f64, (x as f64).exp());
            worst = worst.max(((a - b) / b).abs());
            x += 0.013;
        }
        assert!(worst < 5e-7, "relative error {worst}");
        for x in [-1e30f32, -200.0, 200.0, 1e30, f32::MIN, f32::MAX] {
            let e = exp_f32(x);
            assert!(e.is_finite() && e > 0.0, "exp({x}) = {e}");
        }
        assert!((sigmoid(0.0) - 0.5).abs() < 1e-7);
        assert!(sigmoid(-200.0) < 1e-30 && (sigmoid(200.0) - 1.0).abs() < 1e-7);
    }

    #[test]
    fn group_norm_matches_candle() {
        let dev = Device::Cpu;
        // 5×4 pixels: one 16-lane block and a remainder; 37×41: past the 1 024-element flush
        for &(silu, groups, h, w) in &[
            (true, 2, 5, 4),
            (false, 4, 5, 4),
            (true, 1, 5, 4),
            (true, 2, 37, 41),
            (false, 8, 37, 41),
        ] {
            let x = Var::randn(0.3f32, 2., (3, 8, h, w), &dev).unwrap();
            let gamma = Var::randn(1f32, 0.5, 8, &dev).unwrap();
            let beta = Var::randn(0f32, 0.5, 8, &dev).unwrap();
            let r = Tensor::randn(0f32, 1., (3, 8, h, w), &dev).unwrap();
            let gn = candle_nn::GroupNorm::new(
                gamma.as_tensor().clone(),
                beta.as_tensor().clone(),
                8,
                groups,
                1e-5,
            )
            .unwrap();
            let mut y_ref = candle_core::Module::forward(&gn, x.as_tensor()).unwrap();
            if silu {
                y_ref = y_ref.silu().unwrap();
            }
            let y = group_norm(&x, &gamma, &beta, groups, 1e-5, silu).unwrap();
            assert!(max_rel(&y, &y_ref) < 1e-5);
            let g_ref = (y_ref * &r).unwrap().sum_all().unwrap().backward().unwrap();
            let g = (y * &r).unwrap().sum_all().unwrap().backward().unwrap();
            for v in [&x, &gamma, &beta] {
                let a = g.get(v).unwrap();
                let b = g_ref.get(v).unwrap();
                assert!(max_rel(a, b) < 1e-4, "silu {silu} groups {groups}");
            }
        }
    }

    /// Upsampling equals candle's upsample_nearest2d, and its gradient is the 2×2 block sum.
    #[test]
    fn upsample_matches_candle() {
        let dev = Device::Cpu;
        let x = Var::randn(0f32, 1., (2, 3, 4, 5), &dev).unwrap();
        let r = Tensor::randn(0f32, 1., (2, 3, 8, 10), &dev).unwrap();
        let y_ref = x.upsample_nearest2d(8, 10).unwrap();
        let y = upsample2x(&x).unwrap();
        assert!(max_rel(&y, &y_ref) < 1e-7);
        let g_ref = (y_ref * &r).unwrap().sum_all().unwrap().backward().unwrap();
        let g = (y * &r).unwrap().sum_all().unwrap().backward().unwrap();
        assert!(max_rel(g.get(&x).unwrap(), g_ref.get(&x).unwrap()) < 1e-6);
    }

    /// The definition of space-to-depth, written out per index (PyTorch's `pixel_unshuffle`
    /// order): `out[n, c·f² + i·f + j, y, x] = in[n, c, y·f + i, x·f + j]`.
    fn unshuffle_by_index(
        x: &[f32],
        (n, c, h, w): (usize, usize, usize, usize),
        f: usize,
    ) -> Vec<f32> {
        let (ho, wo) = (h / f, w / f);
        let mut out = vec![f32::NAN; x.len()];
        for b in 0..n {
            for ch in 0..c {
                for i in 0..f {
                    for j in 0..f {
                        for y in 0..ho {
                            for xx in 0..wo {
                                let oc = ch * f * f + i * f + j;
                                out[((b * c * f * f + oc) * ho + y) * wo + xx] =
                                    x[((b * c + ch) * h + y * f + i) * w + xx * f + j];
                            }
                        }
                    }
                }
            }
        }
        out
    }

    /// Space-to-depth moves every value where the index definition says, on the fused CPU
    /// kernel and on the composed (GPU) path, for ×2 and ×4 on non-square inputs.
    #[test]
    fn pixel_unshuffle_matches_its_index_definition() {
        let dev = Device::Cpu;
        for &(f, dims) in &[
            (2usize, (2usize, 3usize, 6usize, 10usize)),
            (4, (1, 2, 8, 12)),
            (3, (2, 1, 9, 3)),
        ] {
            let x = Tensor::randn(0f32, 1., dims, &dev).unwrap();
            let want =
                unshuffle_by_index(&x.flatten_all().unwrap().to_vec1::<f32>().unwrap(), dims, f);
            let y = pixel_unshuffle(&x, f).unwrap();
            assert_eq!(y.dims(), &[dims.0, dims.1 * f * f, dims.2 / f, dims.3 / f]);
            assert_eq!(
                y.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
                want,
                "fused ×{f}"
            );
            let y64 = pixel_unshuffle(&x.to_dtype(DType::F64).unwrap(), f).unwrap();
            let got64: Vec<f32> = y64
                .flatten_all()
                .unwrap()
                .to_vec1::<f64>()
                .unwrap()
                .iter()
                .map(|&v| v as f32)
                .collect();
            assert_eq!(got64, want, "composed ×{f}");
        }
    }

    /// Depth-to-space inverts space-to-depth both ways, exactly.
    #[test]
    fn pixel_shuffle_inverts_pixel_unshuffle() {
        let dev = Device::Cpu;
        for f in [2usize, 4] {
            let x = Tensor::randn(0f32, 1., (3, 2, 4 * f, 2 * f), &dev).unwrap();
            let back = pixel_shuffle(&pixel_unshuffle(&x, f).unwrap(), f).unwrap();
            assert_eq!(back.dims(), x.dims());
            assert_eq!(max_rel(&back, &x), 0.0);
            let y = Tensor::randn(0f32, 1., (2, 2 * f * f, 3, 5), &dev).unwrap();
            let back = pixel_unshuffle(&pixel_shuffle(&y, f).unwrap(), f).unwrap();
            assert_eq!(max_rel(&back, &y), 0.0);
            // a non-contiguous input gives the same result
            let xt = x
                .transpose(2, 3)
                .unwrap()
                .contiguous()
                .unwrap()
                .transpose(2, 3)
                .unwrap();
            let a = pixel_unshuffle(&xt, f).unwrap();
            assert_eq!(max_rel(&a, &pixel_unshuffle(&x, f).unwrap()), 0.0);
        }
    }

    /// Gradients of both ops: central finite differences of `Σ r ⊙ op(x)` (the ops are linear,
    /// so the difference quotient is exact up to rounding), and the composed reshape/permute
    /// expression's autograd gradient.
    #[test]
    fn pixel_shuffle_gradients_match_finite_differences_and_composed_ops() {
        let dev = Device::Cpu;
        let f = 2;
        for shuffle in [false, true] {
            let dims = if shuffle { (2, 8, 3, 2) } else { (2, 2, 6, 4) };
            let op = |t: &Tensor| {
                if shuffle {
                    pixel_shuffle(t, f)
                } else {
                    pixel_unshuffle(t, f)
                }
            };
            let x = Var::randn(0f32, 1., dims, &dev).unwrap();
            let y = op(x.as_tensor()).unwrap();
            let r = Tensor::randn(0f32, 1., y.dims(), &dev).unwrap();
            let g = (y * &r).unwrap().sum_all().unwrap().backward().unwrap();
            let g = g
                .get(&x)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            let x0 = x
                .as_tensor()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            let loss = |v: &[f32]| -> f64 {
                let t = Tensor::from_vec(v.to_vec(), dims, &dev).unwrap();
                let o = op(&t).unwrap().to_dtype(DType::F64).unwrap();
                (o * r.to_dtype(DType::F64).unwrap())
                    .unwrap()
                    .sum_all()
                    .unwrap()
                    .to_scalar::<f64>()
                    .unwrap()
            };
            let eps = 0.25f32;
            for k in 0..x0.len() {
                let mut p = x0.clone();
                p[k] += eps;
                let mut m = x0.clone();
                m[k] -= eps;
                let fd = (loss(&p) - loss(&m)) / (2.0 * eps as f64);
                assert!(
                    (g[k] as f64 - fd).abs() < 1e-5,
                    "shuffle {shuffle}, entry {k}: {} vs {fd}",
                    g[k]
                );
            }
            // the same gradient through the composed path (f64: candle's reshape/permute ops)
            let x64 = Var::from_tensor(&x.as_tensor().to_dtype(DType::F64).unwrap()).unwrap();
            let y64 = op(x64.as_tensor()).unwrap();
            let g64 = (y64 * r.to_dtype(DType::F64).unwrap())
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
            let g64: Vec<f32> = g64
                .get(&x64)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f64>()
                .unwrap()
                .iter()
                .map(|&v| v as f32)
                .collect();
            assert_eq!(
                g, g64,
                "shuffle {shuffle}: fused and composed gradients differ"
            );
        }
    }

    /// Sizes that do not split into f×f blocks, and channel counts that are not multiples of
    /// f², are errors, not panics.
    #[test]
    fn pixel_shuffle_rejects_indivisible_shapes() {
        let dev = Device::Cpu;
        let x = Tensor::zeros((1, 3, 6, 10), DType::F32, &dev).unwrap();
        assert!(pixel_unshuffle(&x, 4).is_err());
        assert!(pixel_unshuffle(&x, 0).is_err());
        assert!(pixel_shuffle(&x, 2).is_err());
        assert!(pixel_unshuffle(&x.flatten_all().unwrap(), 2).is_err());
    }
}

//! The centred orthonormal 2-D DFT as a differentiable candle op (any device).
//!
//! `F x = fftshift(fft(ifftshift(x)))/√(H·W)` per image, i.e. `amri_core::fft::fft2c` (DC at
//! index `(⌊H/2⌋, ⌊W/2⌋)`, `FᴴF = I`). On the CPU [`CenteredDft2`] runs `amri_core`'s FFT
//! ([`amri_core::fft::Fft2`], rustfft, `O(H·W·log(H·W))` per image) inside a candle custom op
//! whose backward is the adjoint: for the real (re, im) representation of a complex linear map
//! `F`, the transpose is the representation of `Fᴴ`, so the gradient of `F` is `Fᴴ` applied to
//! the output gradient and that of `Fᴴ` is `F` (exact, no approximation). On other devices
//! (CUDA) it multiplies by dense DFT matrices with the centring folded in,
//! `F x = C_H · x · C_Wᵀ` with `C_N[k, n] = exp(−2πi·j·m/N)/√N`, `j = (k − ⌊N/2⌋) mod N`,
//! `m = (n − ⌊N/2⌋) mod N` (`O(H·W·(H+W))` per image; autograd from the matmuls);
//! [`CenteredDft2::dense`] builds that form on any device, the reference of the tests.
//!
//! Complex tensors are NCHW with 2 channels: channel 0 real, channel 1 imaginary.

use std::sync::Arc;

use amri_core::fft::Fft2;
use amri_core::C32;
use candle_core::{CpuStorage, CustomOp1, DType, Device, Layout, Shape, Tensor};
use rayon::prelude::*;

use crate::error::{DiffusionError, Result};

/// Dense DFT factors (real, imaginary), each `[N, N]`.
#[derive(Debug, Clone)]
struct DenseFactors {
    /// Left factor `C_H`.
    left: (Tensor, Tensor),
    /// Left factor of the adjoint, `C_Hᴴ`.
    left_adj: (Tensor, Tensor),
    /// Right factor `C_Wᵀ`.
    right: (Tensor, Tensor),
    /// Right factor of the adjoint, `conj(C_W)`.
    right_adj: (Tensor, Tensor),
}

/// How the transform is computed.
#[derive(Debug, Clone)]
enum Imp {
    /// rustfft in a custom op (CPU tensors).
    Fft(Arc<Fft2>),
    /// Dense matmuls (any device).
    Dense(Box<DenseFactors>),
}

/// Centred orthonormal 2-D DFT for `H × W` images on one device.
#[derive(Debug, Clone)]
pub struct CenteredDft2 {
    h: usize,
    w: usize,
    imp: Imp,
}

/// `C_N` as (real, imaginary) row-major `N × N` matrices in f64.
fn centred_dft_matrix(n: usize) -> (Vec<f64>, Vec<f64>) {
    let half = n / 2;
    let mut re = vec![0.0; n * n];
    let mut im = vec![0.0; n * n];
    let scale = 1.0 / (n as f64).sqrt();
    for k in 0..n {
        let j = (k + n - half) % n;
        for c in 0..n {
            let m = (c + n - half) % n;
            // reduce j·m mod n exactly before converting to an angle
            let phase = -2.0 * std::f64::consts::PI * ((j * m) % n) as f64 / n as f64;
            re[k * n + c] = phase.cos() * scale;
            im[k * n + c] = phase.sin() * scale;
        }
    }
    (re, im)
}

fn transpose(v: &[f64], n: usize) -> Vec<f64> {
    let mut t = vec![0.0; n * n];
    for r in 0..n {
        for c in 0..n {
            t[c * n + r] = v[r * n + c];
        }
    }
    t
}

fn mat(v: Vec<f64>, n: usize, dev: &Device) -> Result<Tensor> {
    let v: Vec<f32> = v.into_iter().map(|x| x as f32).collect();
    Ok(Tensor::from_vec(v, (n, n), dev)?)
}

/// The centred orthonormal FFT (`forward`) or its inverse of `[N, 2, H, W]` f32 (real, imag),
/// as a candle op with the exact adjoint as backward.
#[derive(Clone)]
struct CentredFftOp {
    plan: Arc<Fft2>,
    forward: bool,
}

impl CustomOp1 for CentredFftOp {
    fn name(&self) -> &'static str {
        if self.forward {
            "amri-fft2c"
        } else {
            "amri-ifft2c"
        }
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let CpuStorage::F32(v) = storage else {
            candle_core::bail!("{}: expects an f32 tensor", self.name())
        };
        let Some((start, end)) = layout.contiguous_offsets() else {
            candle_core::bail!("{}: expects a contiguous tensor", self.name())
        };
        let x = &v[start..end];
        let plane = self.plan.len();
        if plane == 0 || x.len() % (2 * plane) != 0 {
            candle_core::bail!(
                "{}: {:?} is not [N, 2, {:?}]",
                self.name(),
                layout.shape(),
                self.plan.shape()
            )
        }
        let mut buf = vec![C32::new(0.0, 0.0); x.len() / 2];
        buf.par_chunks_mut(plane)
            .zip(x.par_chunks(2 * plane))
            .for_each(|(d, s)| {
                let (re, im) = s.split_at(plane);
                for ((d, r), i) in d.iter_mut().zip(re).zip(im) {
                    *d = C32::new(*r, *i);
                }
            });
        if self.forward {
            self.plan.forward_batch(&mut buf);
        } else {
            self.plan.inverse_batch(&mut buf);
        }
        let mut out = vec![0f32; x.len()];
        out.par_chunks_mut(2 * plane)
            .zip(buf.par_chunks(plane))
            .for_each(|(o, b)| {
                let (re, im) = o.split_at_mut(plane);
                for ((r, i), z) in re.iter_mut().zip(im.iter_mut()).zip(b) {
                    *r = z.re;
                    *i = z.im;
                }
            });
        Ok((CpuStorage::F32(out), layout.shape().clone()))
    }

    fn bwd(
        &self,
        _arg: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        // the transpose of a unitary complex map's real representation is its adjoint's
        let adj = Self {
            plan: self.plan.clone(),
            forward: !self.forward,
        };
        Ok(Some(
            grad.to_dtype(DType::F32)?.contiguous()?.apply_op1(adj)?,
        ))
    }
}

impl CenteredDft2 {
    /// The transform of `h × w` images on `dev`: rustfft in a custom op on the CPU, dense DFT
    /// matrices elsewhere (module docs).
    pub fn new(h: usize, w: usize, dev: &Device) -> Result<Self> {
        if dev.is_cpu() {
            Self::check_size(h, w)?;
            Ok(Self {
                h,
                w,
                imp: Imp::Fft(Arc::new(Fft2::new(h, w))),
            })
        } else {
            Self::dense(h, w, dev)
        }
    }

    fn check_size(h: usize, w: usize) -> Result<()> {
        if h == 0 || w == 0 {
            return Err(DiffusionError::Shape(format!(
                "DFT of an empty {h}×{w} image"
            )));
        }
        Ok(())
    }

    /// The dense-matrix form (`C_H · x · C_Wᵀ`, module docs) of `h × w` images on `dev`, on any
    /// device; `O(H·W·(H+W))` per image.
    pub fn dense(h: usize, w: usize, dev: &Device) -> Result<Self> {
        Self::check_size(h, w)?;
        let (hr, hi) = centred_dft_matrix(h);
        let (wr, wi) = centred_dft_matrix(w);
        let neg = |v: Vec<f64>| v.into_iter().map(|x| -x).collect::<Vec<_>>();
        Ok(Self {
            h,
            w,
            imp: Imp::Dense(Box::new(DenseFactors {
                left: (mat(hr.clone(), h, dev)?, mat(hi.clone(), h, dev)?),
                left_adj: (
                    mat(transpose(&hr, h), h, dev)?,
                    mat(neg(transpose(&hi, h)), h, dev)?,
                ),
                right: (
                    mat(transpose(&wr, w), w, dev)?,
                    mat(transpose(&wi, w), w, dev)?,
                ),
                right_adj: (mat(wr, w, dev)?, mat(neg(wi), w, dev)?),
            })),
        })
    }

    /// Image size `(H, W)` this transform was built for.
    pub fn shape(&self) -> (usize, usize) {
        (self.h, self.w)
    }

    fn check(&self, x: &Tensor) -> Result<Tensor> {
        let (_, c, h, w) = x.dims4()?;
        if c != 2 || h != self.h || w != self.w {
            return Err(DiffusionError::Shape(format!(
                "DFT expects [N, 2, {}, {}] (real, imag), got {:?}",
                self.h,
                self.w,
                x.dims()
            )));
        }
        Ok(x.to_dtype(DType::F32)?)
    }

    fn apply(x: &Tensor, l: &(Tensor, Tensor), r: &(Tensor, Tensor)) -> Result<Tensor> {
        let (xr, xi) = (
            x.narrow(1, 0, 1)?.squeeze(1)?,
            x.narrow(1, 1, 1)?.squeeze(1)?,
        );
        // Y = L X
        let yr = (l.0.broadcast_matmul(&xr)? - l.1.broadcast_matmul(&xi)?)?;
        let yi = (l.0.broadcast_matmul(&xi)? + l.1.broadcast_matmul(&xr)?)?;
        // Z = Y R
        let zr = (yr.broadcast_matmul(&r.0)? - yi.broadcast_matmul(&r.1)?)?;
        let zi = (yr.broadcast_matmul(&r.1)? + yi.broadcast_matmul(&r.0)?)?;
        Ok(Tensor::stack(&[zr, zi], 1)?)
    }

    fn run(&self, x: &Tensor, forward: bool) -> Result<Tensor> {
        let x = self.check(x)?;
        match &self.imp {
            Imp::Fft(plan) if x.device().is_cpu() => {
                Ok(x.contiguous()?.apply_op1(CentredFftOp {
                    plan: plan.clone(),
                    forward,
                })?)
            }
            Imp::Fft(_) => Err(DiffusionError::Shape(format!(
                "this DFT was built for the CPU, got a tensor on {:?}",
                x.device().location()
            ))),
            Imp::Dense(f) if forward => Self::apply(&x, &f.left, &f.right),
            Imp::Dense(f) => Self::apply(&x, &f.left_adj, &f.right_adj),
        }
    }

    /// Forward transform `F x` (`fft2c`): `[N, 2, H, W]` image → `[N, 2, H, W]` centred k-space.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.run(x, true)
    }

    /// Adjoint = inverse `Fᴴ k` (`ifft2c`): `[N, 2, H, W]` centred k-space → image.
    pub fn adjoint(&self, k: &Tensor) -> Result<Tensor> {
        self.run(k, false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use amri_core::C32;
    use ndarray::Array2;

    fn to_tensor(a: &Array2<C32>, dev: &Device) -> Result<Tensor> {
        let (h, w) = a.dim();
        let mut v = Vec::with_capacity(2 * h * w);
        v.extend(a.iter().map(|z| z.re));
        v.extend(a.iter().map(|z| z.im));
        Ok(Tensor::from_vec(v, (1, 2, h, w), dev)?)
    }

    fn test_image(h: usize, w: usize) -> Array2<C32> {
        Array2::from_shape_fn((h, w), |(r, c)| {
            let t = (r * 7 + c * 3) as f32;
            C32::new(
                (t * 0.37).sin() + 0.1 * r as f32,
                (t * 0.11).cos() - 0.05 * c as f32,
            )
        })
    }

    #[test]
    fn matches_amri_core_fft2c_even_and_odd_sizes() -> Result<()> {
        let dev = Device::Cpu;
        for &(h, w) in &[(8, 8), (16, 12), (5, 7), (6, 9)] {
            let img = test_image(h, w);
            let want = amri_core::fft::fft2c(&img);
            // the dense form against amri-core's FFT (independent implementations)
            let got = CenteredDft2::dense(h, w, &dev)?.forward(&to_tensor(&img, &dev)?)?;
            let want = to_tensor(&want, &dev)?;
            let err = (got - &want)?.abs()?.max_all()?.to_scalar::<f32>()?;
            let scale = want.abs()?.max_all()?.to_scalar::<f32>()?;
            assert!(err <= 1e-5 * scale.max(1.0), "{h}×{w}: max err {err}");
            let inv = amri_core::fft::ifft2c(&img);
            let got = CenteredDft2::dense(h, w, &dev)?.adjoint(&to_tensor(&img, &dev)?)?;
            let err = (got - to_tensor(&inv, &dev)?)?
                .abs()?
                .max_all()?
                .to_scalar::<f32>()?;
            assert!(
                err <= 1e-5 * scale.max(1.0),
                "{h}×{w} inverse: max err {err}"
            );
        }
        Ok(())
    }

    fn max_abs(t: &Tensor) -> Result<f32> {
        Ok(t.abs()?.max_all()?.to_scalar::<f32>()?)
    }

    #[test]
    fn fft_op_matches_the_dense_form_values_and_gradients() -> Result<()> {
        // the rustfft custom op against the dense matmul form (autograd through matmuls), values
        // and gradients of both directions, even and odd sizes
        use candle_core::Var;
        let dev = Device::Cpu;
        for &(h, w) in &[(8, 8), (16, 12), (5, 7), (6, 9)] {
            let (fast, dense) = (
                CenteredDft2::new(h, w, &dev)?,
                CenteredDft2::dense(h, w, &dev)?,
            );
            assert!(matches!(fast.imp, Imp::Fft(_)));
            let x = Var::from_tensor(&Tensor::randn(0f32, 1., (3, 2, h, w), &dev)?)?;
            let g = Tensor::randn(0f32, 1., (3, 2, h, w), &dev)?;
            for forward in [true, false] {
                let run = |f: &CenteredDft2| -> Result<(Tensor, Tensor)> {
                    let y = if forward {
                        f.forward(x.as_tensor())?
                    } else {
                        f.adjoint(x.as_tensor())?
                    };
                    // a non-linear loss, so the gradient depends on the value too
                    let l = ((&y * &g)?.sum_all()? + y.sqr()?.sum_all()?)?;
                    let grad = l
                        .backward()?
                        .get(x.as_tensor())
                        .cloned()
                        .ok_or_else(|| DiffusionError::Config("no gradient".into()))?;
                    Ok((y, grad))
                };
                let ((y1, g1), (y2, g2)) = (run(&fast)?, run(&dense)?);
                let e = max_abs(&(&y1 - &y2)?)?;
                assert!(
                    e < 1e-5 * max_abs(&y2)?.max(1.0),
                    "{h}×{w} {forward}: value {e}"
                );
                let e = max_abs(&(&g1 - &g2)?)?;
                assert!(
                    e < 1e-5 * max_abs(&g2)?.max(1.0),
                    "{h}×{w} {forward}: grad {e}"
                );
            }
        }
        Ok(())
    }

    #[test]
    fn fft_op_gradient_matches_finite_differences() -> Result<()> {
        // L(x) = ‖M ⊙ F x − y‖² in f64 central differences at a few coordinates
        use candle_core::Var;
        let dev = Device::Cpu;
        let (h, w) = (6, 10);
        let f = CenteredDft2::new(h, w, &dev)?;
        let x0 = Tensor::randn(0f32, 1., (2, 2, h, w), &dev)?;
        let y = Tensor::randn(0f32, 1., (2, 2, h, w), &dev)?;
        let m = Tensor::rand(0f32, 1., (2, 1, h, w), &dev)?
            .ge(0.5)?
            .to_dtype(DType::F32)?;
        let loss = |x: &Tensor| -> Result<Tensor> {
            let r = (f.forward(x)? - &y)?.broadcast_mul(&m)?;
            Ok(r.sqr()?.sum_all()?)
        };
        let v = Var::from_tensor(&x0)?;
        let g = loss(v.as_tensor())?
            .backward()?
            .get(v.as_tensor())
            .cloned()
            .ok_or_else(|| DiffusionError::Config("no gradient".into()))?;
        let g = g.flatten_all()?.to_vec1::<f32>()?;
        let base = x0.flatten_all()?.to_vec1::<f32>()?;
        let eps = 1e-2f32;
        for i in [0usize, 7, 61, 130, 239] {
            let at = |d: f32| -> Result<f64> {
                let mut v = base.clone();
                v[i] += d;
                let t = Tensor::from_vec(v, (2, 2, h, w), &dev)?;
                Ok(loss(&t)?.to_dtype(DType::F64)?.to_scalar::<f64>()?)
            };
            let fd = (at(eps)? - at(-eps)?) / (2.0 * eps as f64);
            // the loss is quadratic, so central differences are exact up to f32 rounding
            assert!(
                (fd - g[i] as f64).abs() < 2e-2 * fd.abs().max(1.0),
                "coordinate {i}: finite difference {fd}, gradient {}",
                g[i]
            );
        }
        Ok(())
    }

    #[test]
    fn adjoint_identity_and_orthonormality() -> Result<()> {
        let dev = Device::Cpu;
        let f = CenteredDft2::new(8, 6, &dev)?;
        let x = Tensor::randn(0f32, 1., (3, 2, 8, 6), &dev)?;
        let y = Tensor::randn(0f32, 1., (3, 2, 8, 6), &dev)?;
        // <F x, y> = <x, Fᴴ y> (real inner product of the (re, im) stacks = Re<·,·>)
        let lhs = (f.forward(&x)? * &y)?.sum_all()?.to_scalar::<f32>()?;
        let rhs = (&x * f.adjoint(&y)?)?.sum_all()?.to_scalar::<f32>()?;
        assert!(
            (lhs - rhs).abs() <= 1e-4 * lhs.abs().max(1.0),
            "{lhs} vs {rhs}"
        );
        let back = f.adjoint(&f.forward(&x)?)?;
        let err = (back - &x)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(err < 1e-5, "FᴴF ≠ I: {err}");
        let nx = x.sqr()?.sum_all()?.to_scalar::<f32>()?;
        let nk = f.forward(&x)?.sqr()?.sum_all()?.to_scalar::<f32>()?;
        assert!((nx - nk).abs() < 1e-4 * nx, "Parseval: {nx} vs {nk}");
        Ok(())
    }

    #[test]
    fn rejects_wrong_shape() -> Result<()> {
        let dev = Device::Cpu;
        let f = CenteredDft2::new(4, 4, &dev)?;
        assert!(f
            .forward(&Tensor::zeros((1, 1, 4, 4), DType::F32, &dev)?)
            .is_err());
        assert!(f
            .forward(&Tensor::zeros((1, 2, 4, 5), DType::F32, &dev)?)
            .is_err());
        assert!(CenteredDft2::new(0, 4, &dev).is_err());
        Ok(())
    }
}

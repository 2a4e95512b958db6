//! The centred orthonormal 2-D DFT as candle matmuls (differentiable, any device).
//!
//! candle has no FFT, so [`CenteredDft2`] multiplies by dense DFT matrices with the centring
//! folded in: `F x = C_H · x · C_Wᵀ` with
//! `C_N[k, n] = exp(−2πi·j·m/N)/√N`, `j = (k − ⌊N/2⌋) mod N`, `m = (n − ⌊N/2⌋) mod N`,
//! which is exactly `fftshift(fft(ifftshift(x)))/√N` per axis, i.e. `amri_core::fft::fft2c`
//! (DC at index `⌊N/2⌋`, `FᴴF = I`). Autograd comes for free from the matmuls. Cost is
//! `O(N·H·W·(H+W))` per call: fine for training crops up to a few hundred pixels.
//!
//! Complex tensors are NCHW with 2 channels: channel 0 real, channel 1 imaginary.

use candle_core::{DType, Device, Tensor};

use crate::error::{DiffusionError, Result};

/// Dense centred orthonormal 2-D DFT for `H × W` images on one device.
#[derive(Debug, Clone)]
pub struct CenteredDft2 {
    h: usize,
    w: usize,
    /// Left factor `C_H` (real, imaginary), `[H, H]`.
    left: (Tensor, Tensor),
    /// Left factor of the adjoint, `C_Hᴴ`.
    left_adj: (Tensor, Tensor),
    /// Right factor `C_Wᵀ`, `[W, W]`.
    right: (Tensor, Tensor),
    /// Right factor of the adjoint, `conj(C_W)`.
    right_adj: (Tensor, Tensor),
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

impl CenteredDft2 {
    /// Builds the DFT matrices for `h × w` images on `dev`.
    pub fn new(h: usize, w: usize, dev: &Device) -> Result<Self> {
        if h == 0 || w == 0 {
            return Err(DiffusionError::Shape(format!(
                "DFT of an empty {h}×{w} image"
            )));
        }
        let (hr, hi) = centred_dft_matrix(h);
        let (wr, wi) = centred_dft_matrix(w);
        let neg = |v: Vec<f64>| v.into_iter().map(|x| -x).collect::<Vec<_>>();
        Ok(Self {
            h,
            w,
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
        })
    }

    /// Image size `(H, W)` this transform was built for.
    pub fn shape(&self) -> (usize, usize) {
        (self.h, self.w)
    }

    fn split(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        let (_, c, h, w) = x.dims4()?;
        if c != 2 || h != self.h || w != self.w {
            return Err(DiffusionError::Shape(format!(
                "DFT expects [N, 2, {}, {}] (real, imag), got {:?}",
                self.h,
                self.w,
                x.dims()
            )));
        }
        let x = x.to_dtype(DType::F32)?;
        Ok((
            x.narrow(1, 0, 1)?.squeeze(1)?,
            x.narrow(1, 1, 1)?.squeeze(1)?,
        ))
    }

    fn apply(x: (Tensor, Tensor), l: &(Tensor, Tensor), r: &(Tensor, Tensor)) -> Result<Tensor> {
        let (xr, xi) = x;
        // Y = L X
        let yr = (l.0.broadcast_matmul(&xr)? - l.1.broadcast_matmul(&xi)?)?;
        let yi = (l.0.broadcast_matmul(&xi)? + l.1.broadcast_matmul(&xr)?)?;
        // Z = Y R
        let zr = (yr.broadcast_matmul(&r.0)? - yi.broadcast_matmul(&r.1)?)?;
        let zi = (yr.broadcast_matmul(&r.1)? + yi.broadcast_matmul(&r.0)?)?;
        Ok(Tensor::stack(&[zr, zi], 1)?)
    }

    /// Forward transform `F x` (`fft2c`): `[N, 2, H, W]` image → `[N, 2, H, W]` centred k-space.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Self::apply(self.split(x)?, &self.left, &self.right)
    }

    /// Adjoint = inverse `Fᴴ k` (`ifft2c`): `[N, 2, H, W]` centred k-space → image.
    pub fn adjoint(&self, k: &Tensor) -> Result<Tensor> {
        Self::apply(self.split(k)?, &self.left_adj, &self.right_adj)
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
            let got = CenteredDft2::new(h, w, &dev)?.forward(&to_tensor(&img, &dev)?)?;
            let want = to_tensor(&want, &dev)?;
            let err = (got - &want)?.abs()?.max_all()?.to_scalar::<f32>()?;
            let scale = want.abs()?.max_all()?.to_scalar::<f32>()?;
            assert!(err <= 1e-5 * scale.max(1.0), "{h}×{w}: max err {err}");
            let inv = amri_core::fft::ifft2c(&img);
            let got = CenteredDft2::new(h, w, &dev)?.adjoint(&to_tensor(&img, &dev)?)?;
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

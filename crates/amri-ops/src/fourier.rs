//! Fourier operators: [`Fft2c`], the centred orthonormal 2-D DFT as an operator, and
//! [`FourierSampling`], single-coil undersampled k-space `y = M ⊙ F x`.
//!
//! `F` is amri-core's `fft2c` over the last two axes: `fftshift ∘ FFT ∘ ifftshift`, scaled by
//! `1/sqrt(rows·cols)` (unitary; DC at `(rows/2, cols/2)`), the convention of fastMRI's `fft2c`
//! and BART's `fft -u` on centred data. Hence `F^H = F^{-1}` and, for a full mask, `A^H A = I`.

use amri_core::fft::Fft2;
use amri_core::C32;
use ndarray::Array2;
use rayon::prelude::*;

use crate::error::{OpsError, Result};
use crate::linop::{assert_len, LinearOperator};
use crate::pixel_mask::check_binary;

/// The centred orthonormal 2-D DFT over the last two axes of `[.., rows, cols]` arrays
/// (leading axes are a batch, transformed in parallel); adjoint = inverse.
#[derive(Clone, Debug)]
pub struct Fft2c {
    shape: Vec<usize>,
    fft: Fft2,
}

impl Fft2c {
    /// The DFT of arrays of `shape = [.., rows, cols]` (at least two axes, each ≥ 1).
    pub fn new(shape: &[usize]) -> Result<Self> {
        let n = shape.len();
        if n < 2 || shape.contains(&0) {
            return Err(OpsError::param(
                "shape",
                format!("Fft2c needs at least two non-empty axes [.., rows, cols], got {shape:?}"),
            ));
        }
        Ok(Self {
            shape: shape.to_vec(),
            fft: Fft2::new(shape[n - 2], shape[n - 1]),
        })
    }
}

impl LinearOperator for Fft2c {
    fn ishape(&self) -> &[usize] {
        &self.shape
    }
    fn oshape(&self) -> &[usize] {
        &self.shape
    }
    fn forward(&self, x: &[C32], y: &mut [C32]) {
        assert_len("Fft2c input", self.isize(), x.len());
        y.copy_from_slice(x);
        self.fft.forward_batch(y);
    }
    fn adjoint(&self, y: &[C32], x: &mut [C32]) {
        assert_len("Fft2c adjoint input", self.osize(), y.len());
        x.copy_from_slice(y);
        self.fft.inverse_batch(x);
    }
    fn normal(&self, x: &[C32], out: &mut [C32]) {
        assert_len("Fft2c normal input", self.isize(), x.len());
        out.copy_from_slice(x);
    }
    fn name(&self) -> String {
        format!("Fft2c{:?}", self.shape)
    }
}

/// Single-coil Cartesian sampling `y = M ⊙ F x`: image `x` `[rows, cols]` → k-space `y`
/// `[rows, cols]` (full grid, zeros where `M = 0`); adjoint `F^H (M ⊙ y)`; normal `F^H M F`.
#[derive(Clone, Debug)]
pub struct FourierSampling {
    shape: [usize; 2],
    mask: Array2<f32>,
    flat: Vec<f32>,
    fft: Fft2,
}

impl FourierSampling {
    /// Sampling on the `[rows, cols]` grid of `mask` (entries 0 or 1; 1 = measured, DC at
    /// `(rows/2, cols/2)`).
    pub fn new(mask: Array2<f32>) -> Result<Self> {
        check_binary("mask", &mask)?;
        let (r, c) = mask.dim();
        if r == 0 || c == 0 {
            return Err(OpsError::param(
                "mask",
                "mask must have rows ≥ 1 and cols ≥ 1",
            ));
        }
        let flat = mask.iter().copied().collect();
        Ok(Self {
            shape: [r, c],
            mask,
            flat,
            fft: Fft2::new(r, c),
        })
    }

    /// The `[rows, cols]` sampling mask (1 = measured).
    pub fn mask(&self) -> &Array2<f32> {
        &self.mask
    }

    /// The FFT plan used, to share with callers.
    pub fn fft(&self) -> &Fft2 {
        &self.fft
    }
}

/// `buf *= mask` elementwise (mask of the same length).
#[inline]
pub(crate) fn mul_mask(buf: &mut [C32], mask: &[f32]) {
    buf.iter_mut().zip(mask).for_each(|(v, m)| *v *= *m);
}

impl LinearOperator for FourierSampling {
    fn ishape(&self) -> &[usize] {
        &self.shape
    }
    fn oshape(&self) -> &[usize] {
        &self.shape
    }
    fn forward(&self, x: &[C32], y: &mut [C32]) {
        assert_len("FourierSampling input", self.isize(), x.len());
        y.copy_from_slice(x);
        self.fft.forward(y);
        mul_mask(y, &self.flat);
    }
    fn adjoint(&self, y: &[C32], x: &mut [C32]) {
        assert_len("FourierSampling adjoint input", self.osize(), y.len());
        x.par_iter_mut()
            .with_min_len(1 << 14)
            .zip(y.par_iter())
            .zip(self.flat.par_iter())
            .for_each(|((xv, yv), m)| *xv = *yv * *m);
        self.fft.inverse(x);
    }
    fn normal(&self, x: &[C32], out: &mut [C32]) {
        assert_len("FourierSampling normal input", self.isize(), x.len());
        out.copy_from_slice(x);
        self.fft.forward(out);
        mul_mask(out, &self.flat);
        self.fft.inverse(out);
    }
    fn name(&self) -> String {
        format!("FourierSampling{:?}", self.shape)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_mask_is_unitary() {
        let op = FourierSampling::new(Array2::ones((6, 5))).unwrap();
        let x: Vec<C32> = (0..30)
            .map(|i| C32::new(i as f32, -(i as f32) * 0.5))
            .collect();
        let mut o = vec![C32::default(); 30];
        op.normal(&x, &mut o);
        for (a, b) in x.iter().zip(&o) {
            assert!((a - b).norm() < 1e-4);
        }
        let mut y = vec![C32::default(); 30];
        op.forward(&x, &mut y);
        let ex: f32 = x.iter().map(|v| v.norm_sqr()).sum();
        let ey: f32 = y.iter().map(|v| v.norm_sqr()).sum();
        assert!((ex - ey).abs() / ex < 1e-5, "Parseval");
    }

    #[test]
    fn delta_at_centre_gives_flat_spectrum_on_mask() {
        let mut mask = Array2::zeros((4, 4));
        mask[[2, 2]] = 1.0;
        mask[[0, 3]] = 1.0;
        let op = FourierSampling::new(mask).unwrap();
        let mut x = vec![C32::default(); 16];
        x[2 * 4 + 2] = C32::new(1.0, 0.0);
        let mut y = vec![C32::default(); 16];
        op.forward(&x, &mut y);
        assert!((y[10] - C32::new(0.25, 0.0)).norm() < 1e-6);
        assert!((y[3] - C32::new(0.25, 0.0)).norm() < 1e-6);
        assert_eq!(y.iter().filter(|v| v.norm() > 0.0).count(), 2);
    }

    #[test]
    fn bad_masks_are_errors() {
        assert!(FourierSampling::new(Array2::zeros((0, 4))).is_err());
        assert!(FourierSampling::new(Array2::from_elem((2, 2), 2.0)).is_err());
        assert!(Fft2c::new(&[4]).is_err());
    }
}

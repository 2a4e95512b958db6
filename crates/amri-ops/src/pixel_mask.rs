//! [`PixelMask`]: multiplication by a fixed 0/1 mask (inpainting in the image domain, or the
//! sampling pattern in k-space), and [`random_pixel_mask`], the Bernoulli pixel-dropping mask.
//!
//! Mask semantics everywhere in amri: `1` = measured / kept, `0` = hidden. The operator keeps the
//! full array shape and writes zeros where the mask is 0, so `A = A^H = A^H A = diag(M)`.

use amri_core::C32;
use ndarray::Array2;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use crate::error::{OpsError, Result};
use crate::linop::{assert_len, LinearOperator};

/// Arrays at least this long are masked with rayon; shorter ones on the calling thread.
const PAR_MIN: usize = 1 << 16;

/// Checks that every entry of `mask` is exactly 0 or 1.
pub(crate) fn check_binary(name: &'static str, mask: &Array2<f32>) -> Result<()> {
    match mask.iter().find(|v| **v != 0.0 && **v != 1.0) {
        Some(v) => Err(OpsError::param(
            name,
            format!("mask entries must be 0 (hidden) or 1 (measured), found {v}"),
        )),
        None => Ok(()),
    }
}

/// `y = M ⊙ x` for a `[rows, cols]` 0/1 mask broadcast over any leading axes `[.., rows, cols]`.
#[derive(Clone, Debug)]
pub struct PixelMask {
    shape: Vec<usize>,
    mask: Array2<f32>,
    flat: Vec<f32>,
}

impl PixelMask {
    /// A mask operator on `[rows, cols]` images (`mask` is `[rows, cols]`, entries 0 or 1).
    pub fn new(mask: Array2<f32>) -> Result<Self> {
        let s = mask.shape().to_vec();
        Self::broadcast(mask, &s)
    }

    /// A mask operator on arrays of `shape = [.., rows, cols]`, the mask repeated over the
    /// leading axes (e.g. `[coils, rows, cols]` k-space with one sampling pattern).
    pub fn broadcast(mask: Array2<f32>, shape: &[usize]) -> Result<Self> {
        check_binary("mask", &mask)?;
        let n = shape.len();
        if n < 2 || shape[n - 2..] != *mask.shape() {
            return Err(OpsError::shape(
                "PixelMask: trailing axes of the operator shape must equal the mask shape",
                mask.shape(),
                shape,
            ));
        }
        let flat = mask.iter().copied().collect();
        Ok(Self {
            shape: shape.to_vec(),
            mask,
            flat,
        })
    }

    /// The `[rows, cols]` 0/1 mask (1 = kept).
    pub fn mask(&self) -> &Array2<f32> {
        &self.mask
    }

    /// Fraction of mask entries equal to 1.
    pub fn kept_fraction(&self) -> f64 {
        let n = self.flat.len().max(1);
        self.flat.iter().filter(|v| **v != 0.0).count() as f64 / n as f64
    }

    fn apply_mask(&self, x: &[C32], y: &mut [C32]) {
        let m = &self.flat;
        let n = m.len().max(1);
        let body = |(xc, yc): (&[C32], &mut [C32])| {
            for ((yv, xv), mv) in yc.iter_mut().zip(xc).zip(m) {
                *yv = *xv * *mv;
            }
        };
        if x.len() >= PAR_MIN {
            x.par_chunks(n).zip(y.par_chunks_mut(n)).for_each(body);
        } else {
            x.chunks(n).zip(y.chunks_mut(n)).for_each(body);
        }
    }
}

impl LinearOperator for PixelMask {
    fn ishape(&self) -> &[usize] {
        &self.shape
    }
    fn oshape(&self) -> &[usize] {
        &self.shape
    }
    fn forward(&self, x: &[C32], y: &mut [C32]) {
        assert_len("PixelMask input", self.isize(), x.len());
        assert_len("PixelMask output", self.osize(), y.len());
        self.apply_mask(x, y)
    }
    fn adjoint(&self, y: &[C32], x: &mut [C32]) {
        self.forward(y, x)
    }
    fn normal(&self, x: &[C32], out: &mut [C32]) {
        self.forward(x, out)
    }
    fn name(&self) -> String {
        format!("PixelMask{:?}", self.shape)
    }
}

/// A `[rows, cols]` mask where each pixel is independently hidden with probability `p`
/// (kept, value 1, with probability `1 − p`); reproducible for a given `seed` (ChaCha8).
pub fn random_pixel_mask(rows: usize, cols: usize, p: f64, seed: u64) -> Result<Array2<f32>> {
    if !(0.0..=1.0).contains(&p) {
        return Err(OpsError::param(
            "p",
            format!("probability of hiding a pixel must be in [0, 1], got {p}"),
        ));
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    Ok(Array2::from_shape_simple_fn((rows, cols), || {
        if rng.random::<f64>() < p {
            0.0
        } else {
            1.0
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_non_binary_and_bad_p() {
        let m = Array2::from_elem((2, 2), 0.5f32);
        assert!(PixelMask::new(m).is_err());
        assert!(random_pixel_mask(4, 4, 1.5, 0).is_err());
        assert!(PixelMask::broadcast(Array2::ones((2, 3)), &[4, 3, 2]).is_err());
    }

    #[test]
    fn random_mask_keeps_one_minus_p() {
        let m = random_pixel_mask(200, 200, 0.3, 7).unwrap();
        let kept = m.sum() as f64 / 40000.0;
        // Binomial std of the kept fraction: sqrt(0.21/40000) ≈ 0.0023; 5 sigma.
        assert!((kept - 0.7).abs() < 0.012, "kept {kept}");
        assert_eq!(m, random_pixel_mask(200, 200, 0.3, 7).unwrap());
        assert_ne!(m, random_pixel_mask(200, 200, 0.3, 8).unwrap());
    }

    #[test]
    fn broadcast_masks_every_leading_image() {
        let mut mask = Array2::zeros((2, 2));
        mask[[0, 1]] = 1.0;
        let op = PixelMask::broadcast(mask, &[3, 2, 2]).unwrap();
        let x = vec![C32::new(1.0, 1.0); 12];
        let mut y = vec![C32::default(); 12];
        op.forward(&x, &mut y);
        for c in 0..3 {
            assert_eq!(y[c * 4 + 1], C32::new(1.0, 1.0));
            assert_eq!(y[c * 4], C32::default());
            assert_eq!(y[c * 4 + 3], C32::default());
        }
    }
}

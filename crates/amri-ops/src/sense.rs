//! Multi-coil SENSE: `y_c = M ⊙ F (S_c ⊙ x)` for coils `c = 0..C`.
//!
//! Image `x` is `[rows, cols]`, coil maps `S` are `[coils, rows, cols]`, k-space `y` is
//! `[coils, rows, cols]` on the full grid (zeros where `M = 0`), `F` the centred orthonormal
//! 2-D FFT. The adjoint is `x = Σ_c conj(S_c) ⊙ F^H (M ⊙ y_c)`.
//!
//! As in SigPy's `mri.linop.Sense`, the operator is the chain
//! `PixelMask ∘ Fft2c ∘ SenseMaps` of primitives ([`Sense::composed`] builds exactly that), but
//! [`Sense`] itself runs a fused loop per coil (multiply, FFT, mask, and for the normal operator
//! inverse FFT and conjugate multiply) with rayon across coils and a pooled scratch buffer, so
//! `forward`, `adjoint` and `normal` do not allocate per call.

use amri_core::fft::Fft2;
use amri_core::C32;
use ndarray::{Array2, Array3};
use rayon::prelude::*;

use crate::error::{OpsError, Result};
use crate::fourier::{mul_mask, Fft2c};
use crate::linop::{assert_len, with_scratch, Compose, LinearOperator};
use crate::pixel_mask::{check_binary, PixelMask};

/// The coil-expansion primitive `x [rows, cols] → (S_c ⊙ x)_c [coils, rows, cols]`, adjoint
/// `Σ_c conj(S_c) ⊙ y_c`.
#[derive(Clone, Debug)]
pub struct SenseMaps {
    ishape: [usize; 2],
    oshape: [usize; 3],
    maps: Vec<C32>,
}

fn check_maps(maps: &Array3<C32>) -> Result<()> {
    let (c, r, n) = maps.dim();
    if c == 0 || r == 0 || n == 0 {
        return Err(OpsError::param(
            "maps",
            format!(
                "coil maps must be [coils ≥ 1, rows ≥ 1, cols ≥ 1], got {:?}",
                maps.shape()
            ),
        ));
    }
    if maps.iter().any(|v| !v.re.is_finite() || !v.im.is_finite()) {
        return Err(OpsError::param("maps", "coil maps contain NaN or infinity"));
    }
    Ok(())
}

impl SenseMaps {
    /// The expansion by coil maps `[coils, rows, cols]` (C order, any normalisation).
    pub fn new(maps: &Array3<C32>) -> Result<Self> {
        check_maps(maps)?;
        let (c, r, n) = maps.dim();
        Ok(Self {
            ishape: [r, n],
            oshape: [c, r, n],
            maps: maps.iter().copied().collect(),
        })
    }
}

impl LinearOperator for SenseMaps {
    fn ishape(&self) -> &[usize] {
        &self.ishape
    }
    fn oshape(&self) -> &[usize] {
        &self.oshape
    }
    fn forward(&self, x: &[C32], y: &mut [C32]) {
        assert_len("SenseMaps input", self.isize(), x.len());
        assert_len("SenseMaps output", self.osize(), y.len());
        let n = x.len();
        y.par_chunks_mut(n)
            .zip(self.maps.par_chunks(n))
            .for_each(|(yc, sc)| {
                for ((yv, sv), xv) in yc.iter_mut().zip(sc).zip(x) {
                    *yv = sv * xv;
                }
            });
    }
    fn adjoint(&self, y: &[C32], x: &mut [C32]) {
        assert_len("SenseMaps adjoint input", self.osize(), y.len());
        assert_len("SenseMaps adjoint output", self.isize(), x.len());
        coil_sum_conj(&self.maps, y, x, self.oshape[0]);
    }
    fn name(&self) -> String {
        format!("SenseMaps{:?}", self.oshape)
    }
}

/// Pixels per rayon task when reducing over coils.
const SUM_CHUNK: usize = 4096;

/// `x[i] = Σ_c conj(s[c, i]) · t[c, i]`, parallel over pixel chunks.
fn coil_sum_conj(s: &[C32], t: &[C32], x: &mut [C32], coils: usize) {
    let n = x.len();
    x.par_chunks_mut(SUM_CHUNK).enumerate().for_each(|(k, xc)| {
        let off = k * SUM_CHUNK;
        for (i, xv) in xc.iter_mut().enumerate() {
            let mut acc = C32::new(0.0, 0.0);
            for c in 0..coils {
                let j = c * n + off + i;
                acc += s[j].conj() * t[j];
            }
            *xv = acc;
        }
    });
}

/// Multi-coil SENSE forward model with a fused, allocation-free fast path (see module docs).
#[derive(Clone, Debug)]
pub struct Sense {
    ishape: [usize; 2],
    oshape: [usize; 3],
    maps: Vec<C32>,
    maps3: Array3<C32>,
    mask: Array2<f32>,
    flat: Vec<f32>,
    fft: Fft2,
}

impl Sense {
    /// SENSE with coil `maps` `[coils, rows, cols]` and a 0/1 sampling `mask` `[rows, cols]`
    /// shared by all coils (1 = measured).
    pub fn new(maps: Array3<C32>, mask: Array2<f32>) -> Result<Self> {
        check_maps(&maps)?;
        check_binary("mask", &mask)?;
        let (c, r, n) = maps.dim();
        if mask.dim() != (r, n) {
            return Err(OpsError::shape(
                "Sense: mask must be [rows, cols] of the maps",
                &[r, n],
                mask.shape(),
            ));
        }
        let maps3 = maps.as_standard_layout().into_owned();
        Ok(Self {
            ishape: [r, n],
            oshape: [c, r, n],
            maps: maps3.iter().copied().collect(),
            maps3,
            flat: mask.iter().copied().collect(),
            mask,
            fft: Fft2::new(r, n),
        })
    }

    /// Number of coils.
    pub fn coils(&self) -> usize {
        self.oshape[0]
    }

    /// The coil maps `[coils, rows, cols]`.
    pub fn maps(&self) -> &Array3<C32> {
        &self.maps3
    }

    /// The `[rows, cols]` sampling mask (1 = measured).
    pub fn mask(&self) -> &Array2<f32> {
        &self.mask
    }

    /// The same operator built SigPy-style from primitives, `PixelMask ∘ Fft2c ∘ SenseMaps`
    /// (slower; used to cross-check the fused path).
    pub fn composed(&self) -> Result<Box<dyn LinearOperator>> {
        let maps = SenseMaps::new(&self.maps3)?;
        let fft = Fft2c::new(&self.oshape)?;
        let mask = PixelMask::broadcast(self.mask.clone(), &self.oshape)?;
        Ok(Box::new(Compose::new(mask, Compose::new(fft, maps)?)?))
    }
}

impl LinearOperator for Sense {
    fn ishape(&self) -> &[usize] {
        &self.ishape
    }
    fn oshape(&self) -> &[usize] {
        &self.oshape
    }
    fn forward(&self, x: &[C32], y: &mut [C32]) {
        assert_len("Sense input", self.isize(), x.len());
        assert_len("Sense output", self.osize(), y.len());
        let n = x.len();
        y.par_chunks_mut(n)
            .zip(self.maps.par_chunks(n))
            .for_each(|(yc, sc)| {
                for ((yv, sv), xv) in yc.iter_mut().zip(sc).zip(x) {
                    *yv = sv * xv;
                }
                self.fft.forward(yc);
                mul_mask(yc, &self.flat);
            });
    }
    fn adjoint(&self, y: &[C32], x: &mut [C32]) {
        assert_len("Sense adjoint input", self.osize(), y.len());
        assert_len("Sense adjoint output", self.isize(), x.len());
        let n = x.len();
        with_scratch(self.osize(), |t| {
            t.par_chunks_mut(n)
                .zip(y.par_chunks(n))
                .for_each(|(tc, yc)| {
                    for ((tv, yv), m) in tc.iter_mut().zip(yc).zip(&self.flat) {
                        *tv = yv * *m;
                    }
                    self.fft.inverse(tc);
                });
            coil_sum_conj(&self.maps, t, x, self.coils());
        })
    }
    fn normal(&self, x: &[C32], out: &mut [C32]) {
        assert_len("Sense normal input", self.isize(), x.len());
        assert_len("Sense normal output", self.isize(), out.len());
        let n = x.len();
        with_scratch(self.osize(), |t| {
            t.par_chunks_mut(n)
                .zip(self.maps.par_chunks(n))
                .for_each(|(tc, sc)| {
                    for ((tv, sv), xv) in tc.iter_mut().zip(sc).zip(x) {
                        *tv = sv * xv;
                    }
                    self.fft.forward(tc);
                    mul_mask(tc, &self.flat);
                    self.fft.inverse(tc);
                });
            coil_sum_conj(&self.maps, t, out, self.coils());
        })
    }
    fn name(&self) -> String {
        format!("Sense{:?}", self.oshape)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Smooth maps with Σ_c |S_c|² = 1 at every pixel.
    fn unit_maps(c: usize, r: usize, n: usize) -> Array3<C32> {
        let mut m = Array3::from_shape_fn((c, r, n), |(k, i, j)| {
            let ph = 0.3 * k as f32 + 0.05 * (i + 2 * j) as f32;
            let mag = 1.0 + 0.5 * ((k as f32 + 1.0) * i as f32 / r as f32).cos();
            C32::from_polar(mag, ph)
        });
        for i in 0..r {
            for j in 0..n {
                let s: f32 = (0..c).map(|k| m[[k, i, j]].norm_sqr()).sum::<f32>().sqrt();
                for k in 0..c {
                    m[[k, i, j]] /= s;
                }
            }
        }
        m
    }

    #[test]
    fn normal_is_identity_for_full_mask_and_unit_maps() {
        let op = Sense::new(unit_maps(4, 8, 6), Array2::ones((8, 6))).unwrap();
        let x: Vec<C32> = (0..48)
            .map(|i| C32::new((i as f32).sin(), 0.3 * i as f32))
            .collect();
        let mut o = vec![C32::default(); 48];
        op.normal(&x, &mut o);
        for (a, b) in x.iter().zip(&o) {
            assert!((a - b).norm() < 1e-4 * (1.0 + a.norm()));
        }
    }

    #[test]
    fn shape_errors() {
        assert!(Sense::new(unit_maps(2, 4, 4), Array2::ones((4, 5))).is_err());
        assert!(Sense::new(Array3::zeros((0, 4, 4)), Array2::ones((4, 4))).is_err());
    }
}

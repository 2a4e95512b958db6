//! Proximal operators `prox_{αg}(v) = argmin_u ½‖u − v‖² + α g(u)` as objects that own their
//! work buffers (SigPy's `Prox` classes): [`L1`], [`L2Squared`], [`L1Wavelet`] (orthonormal,
//! with random cycle spinning), [`BartL1Wavelet`] (BART's `pics -l1` wavelet step) and
//! [`TotalVariation`]. Solvers take plain closures, so pass
//! `|a, x| p.apply(a, x)`.

use amri_core::C32;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::error::Result;
use crate::thresh::{l1_norm, soft};
use crate::tv::{tv, TvProx, TvProxConfig};
use crate::wavelet::{BartWavelet2, Wavelet, Wavelet2};

/// A convex function `g` with a computable proximal map, acting on flat `[rows, cols]` images.
pub trait Prox {
    /// Replaces `x` by `prox_{αg}(x)` (`α ≥ 0` is the solver's step size).
    fn apply(&mut self, alpha: f32, x: &mut [C32]);

    /// The value `g(x)`, in `f64`.
    fn value(&mut self, x: &[C32]) -> f64;
}

/// `g(x) = λ‖x‖₁ = λ Σ |x_i|`; prox: complex soft-thresholding by `αλ`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct L1 {
    /// Weight `λ ≥ 0`.
    pub lambda: f32,
}

impl Prox for L1 {
    fn apply(&mut self, alpha: f32, x: &mut [C32]) {
        crate::thresh::soft_thresh(alpha * self.lambda, x);
    }
    fn value(&mut self, x: &[C32]) -> f64 {
        self.lambda as f64 * l1_norm(x)
    }
}

/// `g(x) = ½λ‖x‖²` (Tikhonov); prox: `x / (1 + αλ)`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct L2Squared {
    /// Weight `λ ≥ 0`.
    pub lambda: f32,
}

impl Prox for L2Squared {
    fn apply(&mut self, alpha: f32, x: &mut [C32]) {
        let s = 1.0 / (1.0 + alpha * self.lambda);
        x.iter_mut().for_each(|v| *v *= s);
    }
    fn value(&mut self, x: &[C32]) -> f64 {
        0.5 * self.lambda as f64 * crate::alg::norm_sqr(x)
    }
}

/// `g(x) = λ Σ_{detail} |(W S x)_i|`: the ℓ1 norm of the detail (non-approximation) wavelet
/// coefficients of the zero-padded image, `W` an orthonormal [`Wavelet2`]. The coarsest
/// approximation band is not penalised (as in BART).
///
/// With `cycle_spin` (the default in [`L1Wavelet::new`], as BART's `pics -l1` does), each
/// [`Prox::apply`] first shifts the padded image circularly by a random `(dr, dc)` drawn from
/// `[0, 2^L)²` with a seeded generator, thresholds there and shifts back: the average over
/// shifts approximates a translation-invariant penalty and removes the block artefacts of a
/// fixed wavelet grid. `S` is the identity for [`Prox::value`]. For a fixed shift the map is
/// the exact prox of `λ‖(W S P x)_detail‖₁` when the image size is a multiple of `2^L`, and
/// its standard approximation otherwise (zero padding makes `W P` an isometry, not unitary).
#[derive(Clone, Debug)]
pub struct L1Wavelet {
    /// Weight `λ ≥ 0`.
    pub lambda: f32,
    /// Whether each application uses a new random circular shift.
    pub cycle_spin: bool,
    w: Wavelet2,
    rng: ChaCha8Rng,
    buf: Vec<C32>,
    work: Vec<C32>,
}

impl L1Wavelet {
    /// The wavelet ℓ1 prox for `[rows, cols]` images, `levels` as in [`Wavelet2::new`], with
    /// cycle spinning drawn from `seed`.
    pub fn new(
        rows: usize,
        cols: usize,
        wavelet: Wavelet,
        levels: Option<usize>,
        lambda: f32,
        seed: u64,
    ) -> Result<Self> {
        let w = Wavelet2::new(rows, cols, wavelet, levels)?;
        Ok(Self {
            lambda,
            cycle_spin: true,
            buf: vec![C32::new(0.0, 0.0); w.len()],
            work: vec![C32::new(0.0, 0.0); w.work_len()],
            w,
            rng: ChaCha8Rng::seed_from_u64(seed),
        })
    }

    /// The wavelet transform used.
    pub fn transform(&self) -> &Wavelet2 {
        &self.w
    }

    fn threshold_details(&mut self, t: f32) {
        let [_, pc] = self.w.padded_shape();
        let [ar, ac] = self.w.approx_shape();
        for (i, row) in self.buf.chunks_exact_mut(pc).enumerate() {
            let start = if i < ar { ac } else { 0 };
            for v in &mut row[start..] {
                *v = soft(t, *v);
            }
        }
    }
}

impl Prox for L1Wavelet {
    fn apply(&mut self, alpha: f32, x: &mut [C32]) {
        let t = alpha * self.lambda;
        let m = 1usize << self.w.levels();
        let shift = if self.cycle_spin && m > 1 {
            (self.rng.random_range(0..m), self.rng.random_range(0..m))
        } else {
            (0, 0)
        };
        self.w.pad(x, &mut self.buf, shift);
        self.w.forward_inplace(&mut self.buf, &mut self.work);
        self.threshold_details(t);
        self.w.inverse_inplace(&mut self.buf, &mut self.work);
        self.w.crop(&self.buf, x, shift);
    }

    fn value(&mut self, x: &[C32]) -> f64 {
        self.w.pad(x, &mut self.buf, (0, 0));
        self.w.forward_inplace(&mut self.buf, &mut self.work);
        let [_, pc] = self.w.padded_shape();
        let [ar, ac] = self.w.approx_shape();
        let mut s = 0.0f64;
        for (i, row) in self.buf.chunks_exact(pc).enumerate() {
            let start = if i < ar { ac } else { 0 };
            s += l1_norm(&row[start..]);
        }
        self.lambda as f64 * s
    }
}

/// BART's random shift generator: glibc's `rand_r` (three steps of the LCG
/// `s ← 1103515245 s + 12345` mod 2³², 11 + 10 + 10 bits of `s / 65536`) and BART's `rand_lim`,
/// which draws uniformly from `0..=limit` by rejection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BartRng {
    state: u32,
}

impl BartRng {
    /// glibc's `RAND_MAX`.
    pub const RAND_MAX: u32 = 2_147_483_647;

    /// A generator with `rand_r` state `state` (BART's wavelet thresholding starts at 1).
    pub fn new(state: u32) -> Self {
        Self { state }
    }

    /// glibc's `rand_r`: the next value in `0..=RAND_MAX`.
    pub fn rand_r(&mut self) -> u32 {
        let mut next = self.state;
        let step = |n: u32| n.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        next = step(next);
        let mut result = (next / 65_536) % 2048;
        next = step(next);
        result = (result << 10) ^ ((next / 65_536) % 1024);
        next = step(next);
        result = (result << 10) ^ ((next / 65_536) % 1024);
        self.state = next;
        result
    }

    /// BART's `rand_lim(state, limit)`: uniform on `0..=limit` (`limit < RAND_MAX`).
    pub fn below_or_at(&mut self, limit: usize) -> usize {
        let limit = limit.min(Self::RAND_MAX as usize - 1) as u32;
        let divisor = Self::RAND_MAX / (limit + 1);
        loop {
            let v = self.rand_r() / divisor;
            if v <= limit {
                return v as usize;
            }
        }
    }
}

/// BART's wavelet ℓ1 step (`pics -l1`, v0.8's `prox_wavelet_thresh_create`):
/// `x ← W⁺ soft(W S x, αλ)` with `W` BART's redundant transform ([`BartWavelet2`]), `W⁺` its
/// synthesis, and *every* coefficient soft-thresholded, the coarsest approximation included.
///
/// With `cycle_spin` (the default, as `pics` without `-n`) each [`Prox::apply`] draws a circular
/// shift `S` from `0..=max` per axis ([`BartWavelet2::max_shift`], 64 for 256 samples), the
/// column shift first, by BART's generator ([`BartRng`], glibc's `rand_r` with BART's
/// `rand_lim`) from the state `seed + 1`: seed 0 draws BART's own sequence (its state starts at
/// 1). The frame is not tight, so this is BART's approximation of the prox of
/// `g(x) = λ‖W x‖₁`, not its exact prox; [`Prox::value`] returns that `g` (no shift).
#[derive(Clone, Debug)]
pub struct BartL1Wavelet {
    /// Weight `λ ≥ 0`.
    pub lambda: f32,
    /// Whether each application uses a new random circular shift.
    pub cycle_spin: bool,
    w: BartWavelet2,
    rng: BartRng,
    coefs: Vec<C32>,
    work: Vec<C32>,
}

impl BartL1Wavelet {
    /// BART's wavelet ℓ1 step for `[rows, cols]` images with cycle spinning drawn from `seed`.
    pub fn new(rows: usize, cols: usize, wavelet: Wavelet, lambda: f32, seed: u64) -> Result<Self> {
        let w = BartWavelet2::new(rows, cols, wavelet)?;
        Ok(Self {
            lambda,
            cycle_spin: true,
            coefs: vec![C32::new(0.0, 0.0); w.len()],
            work: vec![C32::new(0.0, 0.0); w.work_len()],
            w,
            rng: BartRng::new((seed as u32).wrapping_add(1)),
        })
    }

    /// The wavelet transform used.
    pub fn transform(&self) -> &BartWavelet2 {
        &self.w
    }
}

impl Prox for BartL1Wavelet {
    fn apply(&mut self, alpha: f32, x: &mut [C32]) {
        let (mr, mc) = self.w.max_shift();
        let shift = if self.cycle_spin {
            // BART draws along its first dimension (amri's columns) first.
            let dc = self.rng.below_or_at(mc);
            let dr = self.rng.below_or_at(mr);
            (dr, dc)
        } else {
            (0, 0)
        };
        self.w.forward(x, shift, &mut self.coefs, &mut self.work);
        crate::thresh::soft_thresh(alpha * self.lambda, &mut self.coefs);
        self.w.inverse(&self.coefs, shift, x, &mut self.work);
    }

    fn value(&mut self, x: &[C32]) -> f64 {
        self.w.forward(x, (0, 0), &mut self.coefs, &mut self.work);
        self.lambda as f64 * l1_norm(&self.coefs)
    }
}

/// `g(x) = λ TV(x)`, isotropic total variation of a `[rows, cols]` image (see [`crate::tv`]);
/// prox by Chambolle/FGP dual iterations with a warm start ([`TvProx`]).
#[derive(Clone, Debug)]
pub struct TotalVariation {
    /// Weight `λ ≥ 0`.
    pub lambda: f32,
    inner: TvProx,
}

impl TotalVariation {
    /// TV of `[rows, cols]` images with weight `lambda` and inner-loop settings `config`.
    pub fn new(rows: usize, cols: usize, lambda: f32, config: TvProxConfig) -> Self {
        Self {
            lambda,
            inner: TvProx::new(rows, cols, config),
        }
    }
}

impl Prox for TotalVariation {
    fn apply(&mut self, alpha: f32, x: &mut [C32]) {
        self.inner.apply(alpha * self.lambda, x);
    }
    fn value(&mut self, x: &[C32]) -> f64 {
        let [r, c] = self.inner.shape();
        self.lambda as f64 * tv(x, r, c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rand_vec(n: usize, seed: u64) -> Vec<C32> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        (0..n)
            .map(|_| C32::new(rng.random_range(-1.0..1.0), rng.random_range(-1.0..1.0)))
            .collect()
    }

    #[test]
    fn l2_and_l1_closed_forms() {
        let mut x = vec![C32::new(2.0, -4.0)];
        L2Squared { lambda: 3.0 }.apply(0.5, &mut x);
        assert!((x[0] - C32::new(0.8, -1.6)).norm() < 1e-6);
        let mut l1 = L1 { lambda: 2.0 };
        let mut y = vec![C32::new(3.0, 4.0)];
        l1.apply(0.5, &mut y);
        assert!((y[0] - C32::new(2.4, 3.2)).norm() < 1e-6);
        assert!((l1.value(&[C32::new(3.0, 4.0)]) - 10.0).abs() < 1e-9);
    }

    #[test]
    fn wavelet_prox_without_shift_is_the_exact_prox() {
        // For a size that needs no padding, W is unitary and u = W^H soft(W v) minimises
        // ½‖u − v‖² + λ‖(W u)_detail‖₁: check against random perturbations.
        let (r, c) = (16, 8);
        let v = rand_vec(r * c, 3);
        let mut p = L1Wavelet::new(r, c, Wavelet::Db2, Some(2), 0.4, 0).unwrap();
        p.cycle_spin = false;
        let mut u = v.clone();
        p.apply(1.0, &mut u);
        let mut obj = |w: &[C32]| 0.5 * crate::alg::dist_sqr(w, &v) + p.value(w);
        let fu = obj(&u);
        for s in 0..40 {
            let d = rand_vec(r * c, 50 + s);
            let w: Vec<C32> = u.iter().zip(&d).map(|(a, b)| a + b * 1e-2).collect();
            assert!(fu <= obj(&w) + 1e-5);
        }
        // The approximation band is untouched: a constant image passes through unchanged.
        let k = vec![C32::new(5.0, 1.0); r * c];
        let mut kk = k.clone();
        let mut p2 = L1Wavelet::new(r, c, Wavelet::Db4, Some(2), 10.0, 1).unwrap();
        p2.apply(1.0, &mut kk);
        for (a, b) in kk.iter().zip(&k) {
            assert!((a - b).norm() < 1e-4);
        }
    }

    #[test]
    fn bart_rng_is_glibc_rand_r() {
        // Values of glibc's rand_r (libc.so.6 through Python's ctypes) from states 1 and 12345.
        let mut r = BartRng::new(1);
        let got: Vec<u32> = (0..5).map(|_| r.rand_r()).collect();
        assert_eq!(
            got,
            [476707713, 1186278907, 505671508, 2137716191, 936145377]
        );
        assert_eq!(r, BartRng::new(2111915288));
        let mut r = BartRng::new(12345);
        let got: Vec<u32> = (0..3).map(|_| r.rand_r()).collect();
        assert_eq!(got, [1036784229, 1520991917, 1373464794]);
        // rand_lim: within 0..=limit, and every value is reached.
        let mut r = BartRng::new(1);
        let mut seen = [false; 17];
        for _ in 0..2000 {
            seen[r.below_or_at(16)] = true;
        }
        assert!(seen.iter().all(|s| *s));
    }

    #[test]
    fn bart_wavelet_step_is_identity_at_zero_threshold_and_shrinks() {
        let (r, c) = (24, 20);
        let v = rand_vec(r * c, 11);
        let mut p = BartL1Wavelet::new(r, c, Wavelet::Db2, 0.0, 0).unwrap();
        let mut u = v.clone();
        p.apply(1.0, &mut u);
        assert!(crate::alg::dist_sqr(&u, &v).sqrt() < 1e-4 * crate::alg::norm_sqr(&v).sqrt());
        // A huge threshold zeroes every coefficient, the approximation included.
        p.lambda = 1e6;
        let mut u = v.clone();
        p.apply(1.0, &mut u);
        assert!(u.iter().all(|z| z.norm() < 1e-6));
        // The shifts stay within BART's range and the seeded sequence is reproducible.
        let (mr, mc) = p.transform().max_shift();
        assert!(mr < r && mc < c);
    }

    #[test]
    fn cycle_spinning_is_seeded() {
        let v = rand_vec(20 * 12, 9);
        let run = |seed| {
            let mut p = L1Wavelet::new(20, 12, Wavelet::Db2, Some(2), 0.3, seed).unwrap();
            let mut u = v.clone();
            p.apply(1.0, &mut u);
            p.apply(1.0, &mut u);
            u
        };
        assert_eq!(run(4), run(4));
        assert_ne!(run(4), run(5));
    }
}

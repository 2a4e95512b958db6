//! Centred, orthonormal 2-D FFT over the last two axes: `fft2c = fftshift ∘ FFT ∘ ifftshift`,
//! scaled by `1/sqrt(rows·cols)`, so that `ifft2c ∘ fft2c` is the identity and Parseval holds.
//! The same convention as fastMRI's `fft2c` and BART's `fft -u` (centred); the zero frequency
//! (DC) sits at index `(rows/2, cols/2)`.
//!
//! # How it is computed
//! The shifts are never applied as separate passes. With `a = n/2` (ifftshift) and
//! `b = n - n/2` (fftshift), along one axis of length `n` with `w = exp(∓2πi/n)`:
//!
//! ```text
//! Y[k] = fftshift(FFT(ifftshift(x)))[k] = w^(-a·q) · X[q],   q = (k + b) mod n,  X = FFT(x)
//! ```
//!
//! so a centred transform is a plain transform whose output is read rotated by `b` and multiplied
//! by a phase. For even `n` the phase is the real checkerboard `(-1)^(k + n/2)`; for odd `n` it is
//! a complex ramp. Both the rotation and the phase (and the `1/sqrt(rows·cols)` scale) are folded
//! into the two cache-blocked transposes that a row–column 2-D FFT needs anyway, so one image
//! costs: all row FFTs in one batched rustfft call, a transpose, all column FFTs in one call, a
//! transpose. Plans and phase tables are cached process-wide; the work buffer lives in a
//! thread-local scratch that is reused, so the hot path does not allocate after the first call of
//! a size on a thread (each thread keeps one buffer of `rows·cols` samples of the largest image it
//! has transformed). Batches of images run in parallel with rayon.
//!
//! ```
//! use amri_core::{fft::{fft2c, ifft2c}, C32};
//! use ndarray::Array3;
//! let mut x = Array3::<C32>::zeros((2, 4, 6));
//! x[[0, 2, 3]] = C32::new(1.0, 0.0); // a delta at the centre has a flat spectrum
//! let k = fft2c(&x);
//! assert!((k[[0, 0, 0]].re - 1.0 / 24f32.sqrt()).abs() < 1e-6);
//! let back = ifft2c(&k);
//! assert!((back[[0, 2, 3]].re - 1.0).abs() < 1e-6);
//! ```

use std::cell::RefCell;
use std::collections::HashMap;
use std::f64::consts::PI;
use std::sync::{Arc, Mutex, OnceLock};

use ndarray::{ArrayBase, ArrayViewMut, ArrayViewMut2, Axis, DataMut, Dimension, IxDyn};
use rayon::prelude::*;
use rustfft::{Fft, FftDirection, FftPlanner};

use crate::C32;

type Plan = Arc<dyn Fft<f32>>;

/// Everything needed to transform one axis of length `n` in one direction, centred.
struct AxisPlan {
    /// Plain (uncentred, unnormalised) rustfft plan.
    fft: Plan,
    /// Output rotation `b = n - n/2`: centred output `k` reads plain output `(k + b) mod n`.
    rot: usize,
    /// Phase `w^(-a·q)` for each centred output index `k` (before the orthonormal scale).
    phase: Vec<C32>,
    /// Whether every phase is real (`±1`), true for even `n`.
    real: bool,
}

impl AxisPlan {
    fn build(planner: &mut FftPlanner<f32>, n: usize, forward: bool) -> Self {
        let dir = if forward {
            FftDirection::Forward
        } else {
            FftDirection::Inverse
        };
        let fft = planner.plan_fft(n, dir);
        let a = n / 2;
        let rot = n - n / 2;
        let phase: Vec<C32> = (0..n)
            .map(|k| {
                let q = (k + rot) % n;
                // Exact integer reduction first so that the angle stays small and accurate.
                let t = (a * q) % n;
                if 2 * t == n {
                    C32::new(-1.0, 0.0)
                } else if t == 0 {
                    C32::new(1.0, 0.0)
                } else {
                    // forward: w = exp(-2πi/n), so w^(-t) = exp(+2πi t/n); inverse the conjugate.
                    let ang = 2.0 * PI * t as f64 / n as f64 * if forward { 1.0 } else { -1.0 };
                    C32::new(ang.cos() as f32, ang.sin() as f32)
                }
            })
            .collect();
        let real = phase.iter().all(|p| p.im == 0.0);
        Self {
            fft,
            rot: if n == 0 { 0 } else { rot % n },
            phase,
            real,
        }
    }
}

/// Process-wide cache of axis plans keyed by `(length, forward)`.
fn axis_plans(keys: [(usize, bool); 4]) -> [Arc<AxisPlan>; 4] {
    type Cache = (FftPlanner<f32>, HashMap<(usize, bool), Arc<AxisPlan>>);
    static CACHE: OnceLock<Mutex<Cache>> = OnceLock::new();
    let cache = CACHE.get_or_init(|| Mutex::new((FftPlanner::new(), HashMap::new())));
    let mut guard = match cache.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    };
    let (planner, map) = &mut *guard;
    keys.map(|key| {
        map.entry(key)
            .or_insert_with(|| Arc::new(AxisPlan::build(planner, key.0, key.1)))
            .clone()
    })
}

thread_local! {
    /// Per-thread work buffer reused by every transform on this thread.
    static SCRATCH: RefCell<Vec<C32>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` with a zeroed-on-growth scratch slice of `len` elements, reusing this thread's buffer.
fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [C32]) -> R) -> R {
    SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut v) => {
            if v.len() < len {
                v.resize(len, C32::new(0.0, 0.0));
            }
            f(&mut v[..len])
        }
        // Re-entrant use on the same thread (not expected): fall back to a fresh buffer.
        Err(_) => f(&mut vec![C32::new(0.0, 0.0); len]),
    })
}

/// A planned centred orthonormal 2-D FFT of `[rows, cols]` images stored row-major; plans are
/// cached process-wide, so building one is cheap after the first time for a size.
#[derive(Clone)]
pub struct Fft2 {
    rows: usize,
    cols: usize,
    row_fwd: Arc<AxisPlan>,
    row_inv: Arc<AxisPlan>,
    col_fwd: Arc<AxisPlan>,
    col_inv: Arc<AxisPlan>,
    scale: f32,
}

impl std::fmt::Debug for Fft2 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Fft2({}x{})", self.rows, self.cols)
    }
}

impl Fft2 {
    /// Plans the transform of a `[rows, cols]` image.
    pub fn new(rows: usize, cols: usize) -> Self {
        // "row" plans transform along a row (length `cols`), "col" plans along a column.
        let [row_fwd, row_inv, col_fwd, col_inv] =
            axis_plans([(cols, true), (cols, false), (rows, true), (rows, false)]);
        let n = rows * cols;
        Self {
            rows,
            cols,
            row_fwd,
            row_inv,
            col_fwd,
            col_inv,
            scale: if n == 0 {
                1.0
            } else {
                (1.0 / (n as f64).sqrt()) as f32
            },
        }
    }

    /// Image size `[rows, cols]` this plan transforms.
    pub fn shape(&self) -> [usize; 2] {
        [self.rows, self.cols]
    }

    /// Number of samples in one image, `rows·cols`.
    pub fn len(&self) -> usize {
        self.rows * self.cols
    }

    /// Whether the image is empty (`rows·cols == 0`).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Centred orthonormal forward FFT of one image, in place (`buf.len() == rows·cols`).
    ///
    /// # Panics
    /// If `buf.len() != rows·cols` (a programming error: the plan was made for another size).
    pub fn forward(&self, buf: &mut [C32]) {
        self.run(buf, true);
    }

    /// Centred orthonormal inverse FFT of one image, in place (`buf.len() == rows·cols`).
    ///
    /// # Panics
    /// If `buf.len() != rows·cols`.
    pub fn inverse(&self, buf: &mut [C32]) {
        self.run(buf, false);
    }

    /// Forward FFT of every image in a contiguous batch `[n, rows, cols]`, in parallel.
    ///
    /// # Panics
    /// If `buf.len()` is not a multiple of `rows·cols`.
    pub fn forward_batch(&self, buf: &mut [C32]) {
        self.run_batch(buf, true);
    }

    /// Inverse FFT of every image in a contiguous batch `[n, rows, cols]`, in parallel.
    ///
    /// # Panics
    /// If `buf.len()` is not a multiple of `rows·cols`.
    pub fn inverse_batch(&self, buf: &mut [C32]) {
        self.run_batch(buf, false);
    }

    fn run_batch(&self, buf: &mut [C32], forward: bool) {
        let n = self.len();
        if n == 0 {
            return;
        }
        assert!(
            buf.len() % n == 0,
            "Fft2 batch length {} is not a multiple of {}x{}",
            buf.len(),
            self.rows,
            self.cols
        );
        if buf.len() == n {
            self.run(buf, forward);
        } else {
            buf.par_chunks_mut(n).for_each(|img| self.run(img, forward));
        }
    }

    fn run(&self, buf: &mut [C32], forward: bool) {
        let (r, c) = (self.rows, self.cols);
        assert_eq!(
            buf.len(),
            r * c,
            "Fft2 buffer length does not match the plan"
        );
        if r == 0 || c == 0 {
            return;
        }
        let (rp, cp) = if forward {
            (&*self.row_fwd, &*self.col_fwd)
        } else {
            (&*self.row_inv, &*self.col_inv)
        };
        let fft_scratch = rp
            .fft
            .get_outofplace_scratch_len()
            .max(cp.fft.get_outofplace_scratch_len());
        with_scratch(r * c + fft_scratch, |scratch| {
            let (tmp, fs) = scratch.split_at_mut(r * c);
            // All r row transforms in one call: buf [r, c] -> tmp [r, c] (buf is clobbered).
            rp.fft.process_outofplace_with_scratch(buf, tmp, fs);
            // buf [c, r] = centre-along-columns(tmp)^T.
            transpose_centre(tmp, r, c, buf, rp, 1.0);
            // All c column transforms in one call: buf [c, r] -> tmp [c, r].
            cp.fft.process_outofplace_with_scratch(buf, tmp, fs);
            // buf [r, c] = scale · centre-along-rows(tmp)^T.
            transpose_centre(tmp, c, r, buf, cp, self.scale);
        });
    }
}

/// Block edge of the cache-blocked transpose, in elements (32×32 complex64 = 8 KiB). Measured
/// on 256×256 and 640×368: 16 and 32 are equal, 64 is ~30% slower for 256 (the 2 KiB row
/// stride makes 64 rows collide in the L1 sets), and streaming strips of 8 rows was ~10% slower.
const BLOCK: usize = 32;

/// `dst[l, i] = s · phase[l] · src[i, (l + rot) mod sc]` for a row-major `src` of shape
/// `[sr, sc]` and `dst` of shape `[sc, sr]`: a transpose that also applies the centring of the
/// axis that becomes the rows of `dst`.
fn transpose_centre(src: &[C32], sr: usize, sc: usize, dst: &mut [C32], ap: &AxisPlan, s: f32) {
    let rot = ap.rot;
    // Destination rows [0, sc - rot) read source columns l + rot; [sc - rot, sc) read l + rot - sc.
    let segments = [
        (0, sc - rot, rot as isize),
        (sc - rot, sc, rot as isize - sc as isize),
    ];
    for (l_start, l_end, off) in segments {
        if ap.real {
            transpose_segment::<true>(src, sr, sc, dst, l_start, l_end, off, &ap.phase, s);
        } else {
            transpose_segment::<false>(src, sr, sc, dst, l_start, l_end, off, &ap.phase, s);
        }
    }
}

/// Blocked transpose of destination rows `[l_start, l_end)`, source column `l + off`.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn transpose_segment<const REAL: bool>(
    src: &[C32],
    sr: usize,
    sc: usize,
    dst: &mut [C32],
    l_start: usize,
    l_end: usize,
    off: isize,
    phase: &[C32],
    s: f32,
) {
    let mut lb = l_start;
    while lb < l_end {
        let le = (lb + BLOCK).min(l_end);
        let mut ib = 0;
        while ib < sr {
            let ie = (ib + BLOCK).min(sr);
            for l in lb..le {
                let col = (l as isize + off) as usize;
                let p = phase[l] * s;
                let drow = &mut dst[l * sr + ib..l * sr + ie];
                let scol = &src[ib * sc + col..];
                for (t, d) in drow.iter_mut().enumerate() {
                    let v = scol[t * sc];
                    *d = if REAL {
                        C32::new(v.re * p.re, v.im * p.re)
                    } else {
                        v * p
                    };
                }
            }
            ib = ie;
        }
        lb = le;
    }
}

fn apply<S, D>(a: &mut ArrayBase<S, D>, forward: bool)
where
    S: DataMut<Elem = C32>,
    D: Dimension,
{
    let nd = a.ndim();
    assert!(nd >= 2, "fft2c needs at least two axes");
    let (r, c) = (a.shape()[nd - 2], a.shape()[nd - 1]);
    let plan = Fft2::new(r, c);
    if plan.is_empty() || a.is_empty() {
        return;
    }
    if let Some(s) = a.as_slice_mut() {
        plan.run_batch(s, forward);
        return;
    }
    // Non-contiguous input (a strided view): transform each image where it lies if its rows are
    // contiguous, otherwise through a copy, images in parallel.
    let mut images: Vec<ArrayViewMut2<C32>> = Vec::new();
    collect_images(a.view_mut().into_dyn(), &mut images);
    images.into_par_iter().for_each(|mut img| {
        if let Some(s) = img.as_slice_mut() {
            plan.run(s, forward);
        } else {
            let mut owned: Vec<C32> = img.iter().copied().collect();
            plan.run(&mut owned, forward);
            img.iter_mut().zip(owned).for_each(|(d, v)| *d = v);
        }
    });
}

/// Splits an array view of `ndim >= 2` into its trailing 2-D images.
fn collect_images<'a>(a: ArrayViewMut<'a, C32, IxDyn>, out: &mut Vec<ArrayViewMut2<'a, C32>>) {
    if a.ndim() == 2 {
        if let Ok(img) = a.into_dimensionality() {
            out.push(img);
        }
        return;
    }
    let mut rest = a;
    while rest.len_of(Axis(0)) > 0 {
        let (head, tail) = rest.split_at(Axis(0), 1);
        collect_images(head.index_axis_move(Axis(0), 0), out);
        rest = tail;
    }
}

/// In-place centred orthonormal forward FFT over the last two axes of any array `[.., rows, cols]`.
///
/// # Panics
/// If the array has fewer than two axes.
pub fn fft2c_inplace<S, D>(a: &mut ArrayBase<S, D>)
where
    S: DataMut<Elem = C32>,
    D: Dimension,
{
    apply(a, true)
}

/// In-place centred orthonormal inverse FFT over the last two axes of any array `[.., rows, cols]`.
///
/// # Panics
/// If the array has fewer than two axes.
pub fn ifft2c_inplace<S, D>(a: &mut ArrayBase<S, D>)
where
    S: DataMut<Elem = C32>,
    D: Dimension,
{
    apply(a, false)
}

/// Centred orthonormal forward FFT over the last two axes, returning a new array.
///
/// # Panics
/// If the array has fewer than two axes.
pub fn fft2c<D: Dimension>(a: &ndarray::ArrayRef<C32, D>) -> ndarray::Array<C32, D> {
    let mut o = a.to_owned();
    fft2c_inplace(&mut o);
    o
}

/// Centred orthonormal inverse FFT over the last two axes, returning a new array.
///
/// # Panics
/// If the array has fewer than two axes.
pub fn ifft2c<D: Dimension>(a: &ndarray::ArrayRef<C32, D>) -> ndarray::Array<C32, D> {
    let mut o = a.to_owned();
    ifft2c_inplace(&mut o);
    o
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{s, Array3};

    /// Direct O(n²) centred DFT along one axis in f64, the reference for the unit tests.
    fn dft_centred(x: &[C32], forward: bool) -> Vec<num_complex::Complex64> {
        let n = x.len();
        let sign = if forward { -1.0 } else { 1.0 };
        // ifftshift: x'[m] = x[(m + n/2) % n]; fftshift: Y[k] = X'[(k + n - n/2) % n].
        (0..n)
            .map(|k| {
                let kk = (k + n - n / 2) % n;
                (0..n)
                    .map(|m| {
                        let v = x[(m + n / 2) % n];
                        let ang = sign * 2.0 * PI * (m * kk % n) as f64 / n as f64;
                        num_complex::Complex64::new(v.re as f64, v.im as f64)
                            * num_complex::Complex64::from_polar(1.0, ang)
                    })
                    .sum::<num_complex::Complex64>()
                    / (n as f64).sqrt()
            })
            .collect()
    }

    #[test]
    fn one_dimensional_images_match_direct_dft() {
        // A [1, n] image is a 1-D centred transform along the row.
        for n in [1usize, 2, 3, 4, 5, 7, 8, 12, 15, 16] {
            let x: Vec<C32> = (0..n)
                .map(|i| C32::new((i as f32 * 0.7).sin(), (i as f32 * 1.3).cos() - 0.2))
                .collect();
            for forward in [true, false] {
                let mut buf = x.clone();
                let p = Fft2::new(1, n);
                if forward {
                    p.forward(&mut buf)
                } else {
                    p.inverse(&mut buf)
                }
                let want = dft_centred(&x, forward);
                for (g, w) in buf.iter().zip(&want) {
                    assert!((g.re as f64 - w.re).abs() < 1e-5, "n={n} {g} vs {w}");
                    assert!((g.im as f64 - w.im).abs() < 1e-5, "n={n} {g} vs {w}");
                }
                // The same data as a column [n, 1].
                let mut col = x.clone();
                let q = Fft2::new(n, 1);
                if forward {
                    q.forward(&mut col)
                } else {
                    q.inverse(&mut col)
                }
                for (g, w) in col.iter().zip(&buf) {
                    assert!((g - w).norm() < 1e-6);
                }
            }
        }
    }

    #[test]
    fn delta_at_centre_is_flat_and_roundtrip_is_identity() {
        for (r, c) in [(8, 8), (7, 5), (6, 9), (1, 1), (40, 33)] {
            let mut a = Array3::<C32>::zeros((2, r, c));
            a[[0, r / 2, c / 2]] = C32::new(1.0, 0.0);
            let k = fft2c(&a);
            let expect = 1.0 / ((r * c) as f32).sqrt();
            for v in k.index_axis(ndarray::Axis(0), 0) {
                assert!((v - C32::new(expect, 0.0)).norm() < 1e-6);
            }
            let b = ifft2c(&k);
            for (x, y) in a.iter().zip(b.iter()) {
                assert!((x - y).norm() < 1e-6);
            }
        }
    }

    #[test]
    fn strided_views_match_contiguous() {
        let a = Array3::<C32>::from_shape_fn((3, 6, 10), |(b, i, j)| {
            C32::new(
                (b * 7 + i * 3 + j) as f32 * 0.1,
                (i as f32 - j as f32).sin(),
            )
        });
        // Every other column: images whose rows are not contiguous.
        let view = a.slice(s![.., .., ..;2]).to_owned();
        let want = fft2c(&view);
        let mut b = a.clone();
        let mut v = b.slice_mut(s![.., .., ..;2]);
        fft2c_inplace(&mut v);
        for (g, w) in v.iter().zip(want.iter()) {
            assert!((g - w).norm() < 1e-6);
        }
        // A transposed (Fortran-order) array.
        let t = a.view().reversed_axes().to_owned();
        let mut tf = a.clone().reversed_axes();
        fft2c_inplace(&mut tf);
        let want = fft2c(&t);
        for (g, w) in tf.iter().zip(want.iter()) {
            assert!((g - w).norm() < 1e-6);
        }
    }

    #[test]
    fn empty_images_are_left_alone() {
        let mut a = Array3::<C32>::zeros((2, 0, 4));
        fft2c_inplace(&mut a);
        assert_eq!(a.shape(), &[2, 0, 4]);
        let mut b = Array3::<C32>::zeros((0, 3, 4));
        ifft2c_inplace(&mut b);
        assert_eq!(b.shape(), &[0, 3, 4]);
    }
}

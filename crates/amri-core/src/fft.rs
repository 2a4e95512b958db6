//! Centred, orthonormal 2-D FFT over the last two axes: `fft2c = fftshift ∘ FFT ∘ ifftshift`,
//! scaled by `1/sqrt(rows·cols)`, so that `ifft2c ∘ fft2c` is the identity and Parseval holds.
//! The same convention as fastMRI's `fft2c` and BART's `fft -u` (centred).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use ndarray::{ArrayBase, DataMut, Dimension};
use rayon::prelude::*;
use rustfft::{Fft, FftDirection, FftPlanner};

use crate::C32;

type Plan = Arc<dyn Fft<f32>>;

fn plan(n: usize, dir: FftDirection) -> Plan {
    static CACHE: OnceLock<Mutex<(FftPlanner<f32>, HashMap<(usize, bool), Plan>)>> = OnceLock::new();
    let cache = CACHE.get_or_init(|| Mutex::new((FftPlanner::new(), HashMap::new())));
    let mut guard = match cache.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    };
    let key = (n, dir == FftDirection::Forward);
    if let Some(p) = guard.1.get(&key) {
        return p.clone();
    }
    let p = guard.0.plan_fft(n, dir);
    guard.1.insert(key, p.clone());
    p
}

/// A planned centred orthonormal 2-D FFT of `[rows, cols]` images stored row-major; plans are
/// cached process-wide, so building one is cheap after the first time for a size.
#[derive(Clone)]
pub struct Fft2 {
    rows: usize,
    cols: usize,
    row_fwd: Plan,
    row_inv: Plan,
    col_fwd: Plan,
    col_inv: Plan,
}

impl std::fmt::Debug for Fft2 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Fft2({}x{})", self.rows, self.cols)
    }
}

impl Fft2 {
    /// Plans the transform of a `[rows, cols]` image.
    pub fn new(rows: usize, cols: usize) -> Self {
        Self {
            rows,
            cols,
            row_fwd: plan(cols, FftDirection::Forward),
            row_inv: plan(cols, FftDirection::Inverse),
            col_fwd: plan(rows, FftDirection::Forward),
            col_inv: plan(rows, FftDirection::Inverse),
        }
    }

    /// Image size `[rows, cols]` this plan transforms.
    pub fn shape(&self) -> [usize; 2] {
        [self.rows, self.cols]
    }

    /// Centred orthonormal forward FFT of one image, in place (`buf.len() == rows·cols`).
    pub fn forward(&self, buf: &mut [C32]) {
        self.run(buf, true);
    }

    /// Centred orthonormal inverse FFT of one image, in place.
    pub fn inverse(&self, buf: &mut [C32]) {
        self.run(buf, false);
    }

    /// Forward FFT of every image in a contiguous batch `[n, rows, cols]`, in parallel.
    pub fn forward_batch(&self, buf: &mut [C32]) {
        let n = self.rows * self.cols;
        buf.par_chunks_mut(n.max(1)).for_each(|img| self.forward(img));
    }

    /// Inverse FFT of every image in a contiguous batch `[n, rows, cols]`, in parallel.
    pub fn inverse_batch(&self, buf: &mut [C32]) {
        let n = self.rows * self.cols;
        buf.par_chunks_mut(n.max(1)).for_each(|img| self.inverse(img));
    }

    fn run(&self, buf: &mut [C32], forward: bool) {
        let (r, c) = (self.rows, self.cols);
        assert_eq!(buf.len(), r * c, "Fft2 buffer length does not match the plan");
        if r == 0 || c == 0 {
            return;
        }
        let (rp, cp) = if forward {
            (&self.row_fwd, &self.col_fwd)
        } else {
            (&self.row_inv, &self.col_inv)
        };
        // ifftshift both axes, transform rows, transpose, transform, transpose back, fftshift.
        let mut tmp = vec![C32::new(0.0, 0.0); r * c];
        ishift2(buf, &mut tmp, r, c);
        rp.process(&mut tmp);
        transpose(&tmp, buf, r, c);
        cp.process(buf);
        transpose(buf, &mut tmp, c, r);
        shift2(&tmp, buf, r, c);
        let s = 1.0 / ((r * c) as f32).sqrt();
        buf.iter_mut().for_each(|v| *v *= s);
    }
}

/// `dst = ifftshift(src)` over both axes of a `[r, c]` image.
fn ishift2(src: &[C32], dst: &mut [C32], r: usize, c: usize) {
    // ifftshift moves index (i + n/2) % n... precisely: dst[i] = src[(i + ceil(n/2)) % n]... use
    // numpy's definition: ifftshift(x)[i] = x[(i + n//2) % n].
    for i in 0..r {
        let si = (i + r / 2) % r;
        for j in 0..c {
            dst[i * c + j] = src[si * c + (j + c / 2) % c];
        }
    }
}

/// `dst = fftshift(src)`: fftshift(x)[i] = x[(i + n - n//2) % n].
fn shift2(src: &[C32], dst: &mut [C32], r: usize, c: usize) {
    for i in 0..r {
        let si = (i + r - r / 2) % r;
        for j in 0..c {
            dst[i * c + j] = src[si * c + (j + c - c / 2) % c];
        }
    }
}

/// `dst[j, i] = src[i, j]` for a `[r, c]` source.
fn transpose(src: &[C32], dst: &mut [C32], r: usize, c: usize) {
    for i in 0..r {
        for j in 0..c {
            dst[j * r + i] = src[i * c + j];
        }
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
    if let Some(s) = a.as_slice_mut() {
        if forward {
            plan.forward_batch(s)
        } else {
            plan.inverse_batch(s)
        }
        return;
    }
    // Non-contiguous input: copy each image out and back.
    let mut owned = a.to_owned();
    let s = owned.as_slice_mut().expect("owned arrays are contiguous");
    if forward {
        plan.forward_batch(s)
    } else {
        plan.inverse_batch(s)
    }
    a.assign(&owned);
}

/// In-place centred orthonormal forward FFT over the last two axes of any array `[.., rows, cols]`.
pub fn fft2c_inplace<S, D>(a: &mut ArrayBase<S, D>)
where
    S: DataMut<Elem = C32>,
    D: Dimension,
{
    apply(a, true)
}

/// In-place centred orthonormal inverse FFT over the last two axes of any array `[.., rows, cols]`.
pub fn ifft2c_inplace<S, D>(a: &mut ArrayBase<S, D>)
where
    S: DataMut<Elem = C32>,
    D: Dimension,
{
    apply(a, false)
}

/// Centred orthonormal forward FFT over the last two axes, returning a new array.
pub fn fft2c<D: Dimension>(a: &ndarray::ArrayRef<C32, D>) -> ndarray::Array<C32, D> {
    let mut o = a.to_owned();
    fft2c_inplace(&mut o);
    o
}

/// Centred orthonormal inverse FFT over the last two axes, returning a new array.
pub fn ifft2c<D: Dimension>(a: &ndarray::ArrayRef<C32, D>) -> ndarray::Array<C32, D> {
    let mut o = a.to_owned();
    ifft2c_inplace(&mut o);
    o
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array3;

    #[test]
    fn delta_at_centre_is_flat_and_roundtrip_is_identity() {
        for (r, c) in [(8, 8), (7, 5), (6, 9)] {
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
}

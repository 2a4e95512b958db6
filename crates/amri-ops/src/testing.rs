//! Operator self-tests in the style of BART's `lintest`: each function returns a relative error
//! computed on seeded random complex inputs (`N(0,1) + i N(0,1)` entries), with inner products
//! and norms accumulated in f64. For f32 operators expect errors around 1e-7 to 1e-6; amri's
//! tests require ≤ 1e-5.
//!
//! ```
//! use amri_ops::{linop::Identity, testing};
//! assert!(testing::adjoint_error(&Identity::new(&[4, 4]), 0) < 1e-6);
//! ```

use amri_core::C32;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

use crate::linop::LinearOperator;

/// `n` seeded standard complex Gaussian samples.
pub fn random_vector(n: usize, seed: u64) -> Vec<C32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..n)
        .map(|_| {
            C32::new(
                StandardNormal.sample(&mut rng),
                StandardNormal.sample(&mut rng),
            )
        })
        .collect()
}

/// `<a, b> = Σ conj(a_k) b_k` in f64.
pub fn inner(a: &[C32], b: &[C32]) -> (f64, f64) {
    a.iter().zip(b).fold((0.0, 0.0), |(re, im), (u, v)| {
        let (ur, ui, vr, vi) = (u.re as f64, u.im as f64, v.re as f64, v.im as f64);
        (re + ur * vr + ui * vi, im + ur * vi - ui * vr)
    })
}

/// Euclidean norm in f64.
pub fn norm(a: &[C32]) -> f64 {
    a.iter().map(|v| v.norm_sqr() as f64).sum::<f64>().sqrt()
}

fn rel(num: f64, den: f64) -> f64 {
    if num == 0.0 {
        0.0
    } else if den == 0.0 {
        f64::INFINITY
    } else {
        num / den
    }
}

/// `|<A x, y> − <x, A^H y>| / max(‖A x‖‖y‖, ‖x‖‖A^H y‖)` for random `x`, `y` drawn from `seed`
/// (0 when both sides vanish, e.g. an all-zero mask).
pub fn adjoint_error(op: &dyn LinearOperator, seed: u64) -> f64 {
    let x = random_vector(op.isize(), seed);
    let y = random_vector(op.osize(), seed ^ 0x9E37_79B9_7F4A_7C15);
    let mut ax = vec![C32::default(); op.osize()];
    let mut ahy = vec![C32::default(); op.isize()];
    op.forward(&x, &mut ax);
    op.adjoint(&y, &mut ahy);
    let l = inner(&ax, &y);
    let r = inner(&x, &ahy);
    let num = ((l.0 - r.0).powi(2) + (l.1 - r.1).powi(2)).sqrt();
    let den = (norm(&ax) * norm(&y)).max(norm(&x) * norm(&ahy));
    rel(num, den)
}

/// `‖N x − A^H(A x)‖ / ‖A^H(A x)‖` comparing the operator's `normal` (possibly a fast path)
/// with `forward` followed by `adjoint`, for random `x` from `seed`.
pub fn normal_error(op: &dyn LinearOperator, seed: u64) -> f64 {
    let x = random_vector(op.isize(), seed);
    let mut ax = vec![C32::default(); op.osize()];
    let mut reference = vec![C32::default(); op.isize()];
    op.forward(&x, &mut ax);
    op.adjoint(&ax, &mut reference);
    let mut fast = vec![C32::default(); op.isize()];
    op.normal(&x, &mut fast);
    let diff: Vec<C32> = fast.iter().zip(&reference).map(|(a, b)| a - b).collect();
    rel(norm(&diff), norm(&reference).max(norm(&fast)))
}

/// Relative failure of linearity for `forward` and `adjoint`: the larger of
/// `‖A(αx + βz) − αAx − βAz‖ / (|α|‖Ax‖ + |β|‖Az‖)` and the same for `A^H`, with random
/// complex `α`, `β`, `x`, `z` from `seed`.
pub fn linearity_error(op: &dyn LinearOperator, seed: u64) -> f64 {
    let ab = random_vector(2, seed ^ 0x5151);
    let (a, b) = (ab[0], ab[1]);
    let check = |n_in: usize, n_out: usize, f: &dyn Fn(&[C32], &mut [C32]), s: u64| {
        let x = random_vector(n_in, s);
        let z = random_vector(n_in, s.wrapping_add(1));
        let comb: Vec<C32> = x.iter().zip(&z).map(|(u, v)| a * u + b * v).collect();
        let (mut fx, mut fz, mut fc) = (
            vec![C32::default(); n_out],
            vec![C32::default(); n_out],
            vec![C32::default(); n_out],
        );
        f(&x, &mut fx);
        f(&z, &mut fz);
        f(&comb, &mut fc);
        let diff: Vec<C32> = fc
            .iter()
            .zip(fx.iter().zip(&fz))
            .map(|(c, (u, v))| c - (a * u + b * v))
            .collect();
        rel(
            norm(&diff),
            a.norm() as f64 * norm(&fx) + b.norm() as f64 * norm(&fz),
        )
    };
    let ef = check(op.isize(), op.osize(), &|x, y| op.forward(x, y), seed);
    let ea = check(
        op.osize(),
        op.isize(),
        &|y, x| op.adjoint(y, x),
        seed ^ 0xABCD,
    );
    ef.max(ea)
}

/// All three errors, `[adjoint, normal, linearity]`, for one seed.
pub fn all_errors(op: &dyn LinearOperator, seed: u64) -> [f64; 3] {
    [
        adjoint_error(op, seed),
        normal_error(op, seed),
        linearity_error(op, seed),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A deliberately wrong "adjoint" (no conjugation) must be caught.
    struct BadAdjoint;
    impl LinearOperator for BadAdjoint {
        fn ishape(&self) -> &[usize] {
            &[3]
        }
        fn oshape(&self) -> &[usize] {
            &[3]
        }
        fn forward(&self, x: &[C32], y: &mut [C32]) {
            y.iter_mut()
                .zip(x)
                .for_each(|(a, b)| *a = b * C32::new(0.0, 1.0));
        }
        fn adjoint(&self, y: &[C32], x: &mut [C32]) {
            x.iter_mut()
                .zip(y)
                .for_each(|(a, b)| *a = b * C32::new(0.0, 1.0));
        }
    }

    /// Not linear: adds a constant.
    struct Affine;
    impl LinearOperator for Affine {
        fn ishape(&self) -> &[usize] {
            &[3]
        }
        fn oshape(&self) -> &[usize] {
            &[3]
        }
        fn forward(&self, x: &[C32], y: &mut [C32]) {
            y.iter_mut().zip(x).for_each(|(a, b)| *a = b + 1.0);
        }
        fn adjoint(&self, y: &[C32], x: &mut [C32]) {
            x.copy_from_slice(y);
        }
    }

    #[test]
    fn checks_catch_broken_operators() {
        assert!(adjoint_error(&BadAdjoint, 1) > 0.1);
        assert!(linearity_error(&Affine, 1) > 0.1);
        assert!(linearity_error(&BadAdjoint, 1) < 1e-6);
    }
}

//! Power iteration for the largest eigenvalue of a Hermitian positive semi-definite operator,
//! typically `A^H A`, whose largest eigenvalue `‖A‖₂²` is the Lipschitz constant `L` of the
//! gradient of `½‖A x − y‖²` (BART's `maxeigenvalue`, SigPy's `MaxEig`).

use amri_core::C32;
use rand::{Rng, SeedableRng};

use super::{check_finite, dot, norm};
use crate::error::{ReconError, Result};

/// Settings of [`power()`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PowerConfig {
    /// Maximum number of iterations (each costs one application of `N`).
    pub iterations: usize,
    /// Stop when successive eigenvalue estimates differ by less than `tol` relative.
    pub tol: f64,
    /// Seed of the random complex Gaussian-like start vector.
    pub seed: u64,
}

impl Default for PowerConfig {
    fn default() -> Self {
        Self {
            iterations: 30,
            tol: 1e-4,
            seed: 0,
        }
    }
}

/// Estimates the largest eigenvalue of `N` (Hermitian positive semi-definite, acting on
/// vectors of length `n` through `normal(v, out)`, `out = N v`) by power iteration from a
/// seeded random start, returning the Rayleigh quotient `v^H N v` of the last normalised
/// iterate (a lower bound that converges to `λ_max`). Allocates two vectors of length `n`.
///
/// Errors: [`ReconError::Param`] for `n = 0`, [`ReconError::NonFinite`] if `N` produces
/// non-finite values.
pub fn power<N>(mut normal: N, n: usize, cfg: &PowerConfig) -> Result<f64>
where
    N: FnMut(&[C32], &mut [C32]),
{
    if n == 0 {
        return Err(ReconError::param("n", "power iteration on an empty vector"));
    }
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(cfg.seed);
    let mut v: Vec<C32> = (0..n)
        .map(|_| C32::new(rng.random_range(-1.0..1.0), rng.random_range(-1.0..1.0)))
        .collect();
    let nv = norm(&v) as f32;
    v.iter_mut().for_each(|x| *x /= nv);
    let mut w = vec![C32::new(0.0, 0.0); n];
    let mut est = 0.0f64;
    for _ in 0..cfg.iterations.max(1) {
        normal(&v, &mut w);
        let rq = dot(&v, &w).re;
        let nw = norm(&w);
        check_finite("‖N v‖ in power iteration", nw)?;
        if nw == 0.0 {
            return Ok(0.0);
        }
        let prev = est;
        est = rq;
        let inv = (1.0 / nw) as f32;
        v.iter_mut().zip(&w).for_each(|(vi, wi)| *vi = wi * inv);
        if prev > 0.0 && ((est - prev) / est).abs() < cfg.tol {
            break;
        }
    }
    Ok(est)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diagonal_operator_gives_largest_entry() {
        let d: Vec<f32> = (0..50).map(|i| 1.0 + i as f32 * 0.1).collect(); // max 5.9
        let cfg = PowerConfig {
            iterations: 500,
            tol: 1e-9,
            seed: 1,
        };
        let l = power(
            |v, o| {
                o.iter_mut()
                    .zip(v)
                    .zip(&d)
                    .for_each(|((o, v), d)| *o = v * *d)
            },
            d.len(),
            &cfg,
        )
        .unwrap();
        assert!((l - 5.9).abs() < 1e-2, "{l}");
        assert!(l <= 5.9 + 1e-4);
    }

    #[test]
    fn zero_operator_and_empty_input() {
        let l = power(
            |_, o| o.fill(C32::new(0.0, 0.0)),
            4,
            &PowerConfig::default(),
        )
        .unwrap();
        assert_eq!(l, 0.0);
        assert!(power(|v, o| o.copy_from_slice(v), 0, &PowerConfig::default()).is_err());
    }
}

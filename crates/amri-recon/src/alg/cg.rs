//! Conjugate gradient for `(N + λI) x = b` with `N` Hermitian positive semi-definite, e.g. the
//! normal equations `(A^H A + λI) x = A^H y` of Tikhonov-regularised least squares
//! `min_x ½‖A x − y‖² + ½λ‖x‖²` (BART's `conjgrad`, SigPy's `ConjugateGradient`).

use std::ops::ControlFlow;

use amri_core::C32;

use super::{check_finite, check_len, dot, norm_sqr, rel, IterInfo, SolveLog, Stop};
use crate::error::{ReconError, Result};

/// Settings of [`cg()`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CgConfig {
    /// Maximum number of iterations (BART `pics` uses 30 by default; exact arithmetic converges
    /// in at most `n` for an `n`-dimensional system).
    pub iterations: usize,
    /// Stop when the relative residual `‖b − (N + λI) x‖ / ‖b‖` drops below this.
    pub tol: f64,
    /// Tikhonov weight `λ ≥ 0` added to the operator: solves `(N + λI) x = b`.
    pub lambda: f32,
}

impl Default for CgConfig {
    fn default() -> Self {
        Self {
            iterations: 30,
            tol: 1e-6,
            lambda: 0.0,
        }
    }
}

/// Solves `(N + λI) x = b` by conjugate gradient, starting from the `x` given (use zeros for a
/// cold start) and overwriting it with the solution.
///
/// `normal(v, out)` must write `out = N v` with `N` Hermitian positive semi-definite. The
/// callback gets the residual norm `‖b − (N + λI) x‖`, the relative change of `x` and the
/// quadratic objective `½ x^H (N + λI) x − Re(b^H x)` (minimised by the solution); returning
/// `Break` stops with [`Stop::Cancelled`]. Allocates three work vectors of `b.len()` once.
///
/// Errors: [`ReconError::Shape`] if `x` and `b` differ in length, [`ReconError::Param`] for a
/// negative or NaN `λ`, [`ReconError::NonFinite`] if `b` or the iterates are not finite.
pub fn cg<N, F>(
    mut normal: N,
    b: &[C32],
    x: &mut [C32],
    cfg: &CgConfig,
    mut callback: F,
) -> Result<SolveLog>
where
    N: FnMut(&[C32], &mut [C32]),
    F: FnMut(&IterInfo) -> ControlFlow<()>,
{
    check_len("initial guess of cg", b.len(), x.len())?;
    if cfg.lambda.is_nan() || cfg.lambda < 0.0 || !cfg.lambda.is_finite() {
        return Err(ReconError::param(
            "lambda",
            format!("Tikhonov weight must be finite and ≥ 0, got {}", cfg.lambda),
        ));
    }
    let mut log = SolveLog::with_capacity(cfg.iterations);
    let bn2 = norm_sqr(b);
    check_finite("‖b‖ in cg", bn2)?;
    if bn2 == 0.0 {
        x.fill(C32::new(0.0, 0.0));
        log.stop = Stop::Trivial;
        return Ok(log);
    }
    let lam = cfg.lambda;
    let n = b.len();
    let mut r = vec![C32::new(0.0, 0.0); n];
    let mut p = vec![C32::new(0.0, 0.0); n];
    let mut ap = vec![C32::new(0.0, 0.0); n];

    // r = b − (N + λ) x, p = r.
    normal(x, &mut ap);
    for ((ri, bi), (api, xi)) in r.iter_mut().zip(b).zip(ap.iter().zip(x.iter())) {
        *ri = bi - (api + xi * lam);
    }
    p.copy_from_slice(&r);
    let mut rs = norm_sqr(&r);
    check_finite("initial residual of cg", rs)?;
    if (rs / bn2).sqrt() < cfg.tol {
        log.stop = Stop::Converged;
        return Ok(log);
    }
    for it in 1..=cfg.iterations {
        normal(&p, &mut ap);
        if lam != 0.0 {
            ap.iter_mut().zip(&p).for_each(|(a, pi)| *a += pi * lam);
        }
        let pap = dot(&p, &ap).re;
        check_finite("p^H N p in cg", pap)?;
        if pap <= 0.0 {
            // p lies in the null space of a semi-definite N: no further progress possible.
            log.stop = Stop::Converged;
            break;
        }
        let alpha = (rs / pap) as f32;
        let (mut dx2, mut xn2, mut rs_new) = (0.0f64, 0.0f64, 0.0f64);
        for (((xi, ri), pi), api) in x.iter_mut().zip(r.iter_mut()).zip(&p).zip(&ap) {
            let step = pi * alpha;
            *xi += step;
            *ri -= api * alpha;
            dx2 += step.norm_sqr() as f64;
            xn2 += xi.norm_sqr() as f64;
            rs_new += ri.norm_sqr() as f64;
        }
        check_finite("residual of cg", rs_new)?;
        let objective = -0.5 * dot(b, x).re - 0.5 * dot(x, &r).re;
        let info = IterInfo {
            iter: it,
            objective: Some(objective),
            residual: rs_new.sqrt(),
            rel_change: rel(dx2, xn2),
        };
        if log.record(info, &mut callback, (rs_new / bn2).sqrt() < cfg.tol) {
            break;
        }
        let beta = (rs_new / rs) as f32;
        rs = rs_new;
        p.iter_mut()
            .zip(&r)
            .for_each(|(pi, ri)| *pi = ri + *pi * beta);
    }
    Ok(log)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alg::no_callback;
    use rand::{Rng, SeedableRng};

    /// Dense Hermitian positive-definite `M = B^H B + εI` of size n, row-major.
    fn random_hpd(n: usize, seed: u64, eps: f32) -> Vec<C32> {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let bm: Vec<C32> = (0..n * n)
            .map(|_| C32::new(rng.random_range(-1.0..1.0), rng.random_range(-1.0..1.0)))
            .collect();
        let mut m = vec![C32::new(0.0, 0.0); n * n];
        for i in 0..n {
            for j in 0..n {
                let mut acc = C32::new(0.0, 0.0);
                for k in 0..n {
                    acc += bm[k * n + i].conj() * bm[k * n + j];
                }
                m[i * n + j] = acc
                    + if i == j {
                        C32::new(eps, 0.0)
                    } else {
                        C32::new(0.0, 0.0)
                    };
            }
        }
        m
    }

    fn matvec(m: &[C32], n: usize, v: &[C32], out: &mut [C32]) {
        for i in 0..n {
            out[i] = (0..n).map(|j| m[i * n + j] * v[j]).sum();
        }
    }

    #[test]
    fn solves_random_hpd_system_in_at_most_n_iterations() {
        let n = 12;
        let m = random_hpd(n, 3, 2.0);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(4);
        let xt: Vec<C32> = (0..n)
            .map(|_| C32::new(rng.random_range(-1.0..1.0), rng.random_range(-1.0..1.0)))
            .collect();
        let mut b = vec![C32::new(0.0, 0.0); n];
        matvec(&m, n, &xt, &mut b);
        let mut x = vec![C32::new(0.0, 0.0); n];
        let cfg = CgConfig {
            iterations: 100,
            tol: 1e-5,
            lambda: 0.0,
        };
        let log = cg(|v, o| matvec(&m, n, v, o), &b, &mut x, &cfg, no_callback).unwrap();
        assert_eq!(log.stop, Stop::Converged);
        assert!(
            log.iterations() <= n,
            "took {} iterations",
            log.iterations()
        );
        for (a, t) in x.iter().zip(&xt) {
            assert!((a - t).norm() < 1e-3, "{a} vs {t}");
        }
        // The quadratic objective decreases monotonically (CG minimises it over Krylov spaces).
        for w in log.history.windows(2) {
            assert!(w[1].objective.unwrap() <= w[0].objective.unwrap() + 1e-6);
        }
        // ... and at the solution equals −½ b^H x*.
        let f_star = -0.5 * dot(&b, &xt).re;
        let f_last = log.last().unwrap().objective.unwrap();
        assert!((f_last - f_star).abs() < 1e-3 * f_star.abs());
    }

    #[test]
    fn tikhonov_shifts_the_diagonal() {
        // N = diag(d), (N + λ) x = b  ⇒  x = b / (d + λ).
        let d = [0.0f32, 1.0, 3.0, 7.0];
        let b = [C32::new(1.0, 1.0); 4];
        let mut x = [C32::new(0.0, 0.0); 4];
        let cfg = CgConfig {
            iterations: 10,
            tol: 1e-7,
            lambda: 0.5,
        };
        cg(
            |v, o| {
                o.iter_mut()
                    .zip(v)
                    .zip(&d)
                    .for_each(|((o, v), d)| *o = v * *d)
            },
            &b,
            &mut x,
            &cfg,
            no_callback,
        )
        .unwrap();
        for (xi, di) in x.iter().zip(&d) {
            let want = 1.0 / (di + 0.5);
            assert!((xi.re - want).abs() < 1e-5 && (xi.im - want).abs() < 1e-5);
        }
    }

    #[test]
    fn callback_can_cancel_and_zero_rhs_is_trivial() {
        let b = [C32::new(1.0, 0.0), C32::new(2.0, 0.0), C32::new(3.0, 0.0)];
        let mut x = [C32::new(0.0, 0.0); 3];
        let scale = [1.0f32, 10.0, 100.0];
        let op = |v: &[C32], o: &mut [C32]| {
            o.iter_mut()
                .zip(v)
                .zip(&scale)
                .for_each(|((o, v), s)| *o = v * *s)
        };
        let log = cg(op, &b, &mut x, &CgConfig::default(), |i| {
            if i.iter >= 1 {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        })
        .unwrap();
        assert_eq!(log.stop, Stop::Cancelled);
        assert_eq!(log.iterations(), 1);
        let zero = [C32::new(0.0, 0.0); 3];
        let mut x = [C32::new(5.0, 0.0); 3];
        let log = cg(op, &zero, &mut x, &CgConfig::default(), no_callback).unwrap();
        assert_eq!(log.stop, Stop::Trivial);
        assert!(x.iter().all(|v| v.norm() == 0.0));
    }

    #[test]
    fn errors_on_bad_input() {
        let b = [C32::new(1.0, 0.0); 3];
        let mut x = [C32::new(0.0, 0.0); 2];
        let id = |v: &[C32], o: &mut [C32]| o.copy_from_slice(v);
        assert!(matches!(
            cg(id, &b, &mut x, &CgConfig::default(), no_callback),
            Err(ReconError::Shape { .. })
        ));
        let mut x = [C32::new(0.0, 0.0); 3];
        let cfg = CgConfig {
            lambda: -1.0,
            ..CgConfig::default()
        };
        assert!(cg(id, &b, &mut x, &cfg, no_callback).is_err());
        let nan = [C32::new(f32::NAN, 0.0); 3];
        assert!(matches!(
            cg(id, &nan, &mut x, &CgConfig::default(), no_callback),
            Err(ReconError::NonFinite(_))
        ));
    }
}

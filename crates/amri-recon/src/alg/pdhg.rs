//! The primal–dual hybrid gradient method of Chambolle & Pock (2011) for
//! `min_x F(K x) + G(x)` with `K` linear and `F`, `G` convex with computable proximal maps
//! (BART's `chambolle_pock`, SigPy's `PrimalDualHybridGradient`).

use std::ops::ControlFlow;

use amri_core::C32;

use super::{check_finite, rel, IterInfo, Objective, SolveLog, Stop};
use crate::error::{ReconError, Result};

/// Settings of [`pdhg()`]: step sizes must satisfy `τ σ ‖K‖² < 1`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PdhgConfig {
    /// Number of iterations (each: one `K`, one `K^H`, two proximal maps).
    pub iterations: usize,
    /// Stop when `‖x_{k+1} − x_k‖ / ‖x_{k+1}‖ < tol` (0 runs all iterations).
    pub tol: f64,
    /// Primal step `τ > 0`.
    pub tau: f32,
    /// Dual step `σ > 0`.
    pub sigma: f32,
    /// Extrapolation `θ ∈ [0, 1]` (1 is the standard choice with an `O(1/k)` rate).
    pub theta: f32,
}

impl Default for PdhgConfig {
    /// Steps `τ = σ = 0.99` for `‖K‖ ≤ 1`; use [`PdhgConfig::with_norm`] otherwise.
    fn default() -> Self {
        Self {
            iterations: 100,
            tol: 0.0,
            tau: 0.99,
            sigma: 0.99,
            theta: 1.0,
        }
    }
}

impl PdhgConfig {
    /// Steps `τ = 0.99 / (ρ ‖K‖)`, `σ = 0.99 ρ / ‖K‖` (so `τσ‖K‖² = 0.98`) for a given operator
    /// norm `‖K‖` and primal–dual balance `ρ > 0` (1 = equal steps); other fields default.
    pub fn with_norm(k_norm: f64, balance: f64) -> Self {
        let kn = k_norm.max(f64::MIN_POSITIVE);
        Self {
            tau: (0.99 / (balance * kn)) as f32,
            sigma: (0.99 * balance / kn) as f32,
            ..Self::default()
        }
    }
}

/// Runs Chambolle–Pock from primal `x` and dual `y` (zeros for a cold start), overwriting both.
///
/// - `k(x, y)` writes `y = K x`; `kh(y, x)` writes `x = K^H y`;
/// - `prox_g(τ, v)` replaces `v` by `prox_{τG}(v)`;
/// - `prox_fc(σ, w)` replaces `w` by `prox_{σF*}(w)` (the convex conjugate's prox; by Moreau,
///   `prox_{σF*}(w) = w − σ prox_{F/σ}(w/σ)`);
/// - `objective`, when given, returns `F(K x) + G(x)` at each iterate (for the log).
///
/// Iteration (θ = 1 by default): `y ← prox_{σF*}(y + σ K x̄)`, `x⁺ ← prox_{τG}(x − τ K^H y)`,
/// `x̄ ← x⁺ + θ (x⁺ − x)`. Converges for `τσ‖K‖² < 1`. Allocates `2·x.len() + y.len()` once.
///
/// Errors: [`ReconError::Param`] for non-positive steps or `θ` outside `[0, 1]`,
/// [`ReconError::NonFinite`] if the iterates blow up.
#[allow(clippy::too_many_arguments)]
pub fn pdhg<K, KH, PG, PF, F>(
    mut k: K,
    mut kh: KH,
    mut prox_g: PG,
    mut prox_fc: PF,
    x: &mut [C32],
    y: &mut [C32],
    cfg: &PdhgConfig,
    mut objective: Objective<'_>,
    mut callback: F,
) -> Result<SolveLog>
where
    K: FnMut(&[C32], &mut [C32]),
    KH: FnMut(&[C32], &mut [C32]),
    PG: FnMut(f32, &mut [C32]),
    PF: FnMut(f32, &mut [C32]),
    F: FnMut(&IterInfo) -> ControlFlow<()>,
{
    if !(cfg.tau > 0.0 && cfg.tau.is_finite() && cfg.sigma > 0.0 && cfg.sigma.is_finite()) {
        return Err(ReconError::param(
            "tau/sigma",
            format!(
                "PDHG steps must be finite and > 0, got τ={} σ={}",
                cfg.tau, cfg.sigma
            ),
        ));
    }
    if !(0.0..=1.0).contains(&cfg.theta) {
        return Err(ReconError::param(
            "theta",
            format!("PDHG extrapolation must be in [0, 1], got {}", cfg.theta),
        ));
    }
    let n = x.len();
    let mut log = SolveLog::with_capacity(cfg.iterations);
    if cfg.iterations == 0 || n == 0 {
        log.stop = Stop::Trivial;
        return Ok(log);
    }
    let (tau, sigma, theta) = (cfg.tau, cfg.sigma, cfg.theta);
    let mut xbar = x.to_vec();
    let mut x_old = vec![C32::new(0.0, 0.0); n];
    let mut kx = vec![C32::new(0.0, 0.0); y.len()];
    for it in 1..=cfg.iterations {
        k(&xbar, &mut kx);
        y.iter_mut().zip(&kx).for_each(|(yi, ki)| *yi += ki * sigma);
        prox_fc(sigma, y);
        // xbar is free now: use it for K^H y.
        kh(y, &mut xbar);
        x_old.copy_from_slice(x);
        x.iter_mut().zip(&xbar).for_each(|(xi, ki)| *xi -= ki * tau);
        prox_g(tau, x);
        let (mut dx2, mut xn2) = (0.0f64, 0.0f64);
        for ((xb, xi), xo) in xbar.iter_mut().zip(x.iter()).zip(&x_old) {
            let d = xi - xo;
            dx2 += d.norm_sqr() as f64;
            xn2 += xi.norm_sqr() as f64;
            *xb = xi + d * theta;
        }
        check_finite("iterate of pdhg", xn2)?;
        let info = IterInfo {
            iter: it,
            objective: objective.as_mut().map(|f| f(x)),
            residual: dx2.sqrt() / tau as f64,
            rel_change: rel(dx2, xn2),
        };
        if log.record(info, &mut callback, info.rel_change < cfg.tol) {
            break;
        }
    }
    Ok(log)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alg::no_callback;
    use crate::thresh::project_linf_ball;

    #[test]
    fn l1_denoising_matches_soft_threshold() {
        // min_x ½‖x − v‖² + λ‖x‖₁ written as F(Kx) = λ‖x‖₁ (K = I), G = ½‖x − v‖²:
        // prox_{σF*} = projection onto the λ-ball, prox_{τG}(u) = (u + τ v)/(1 + τ).
        let v = [
            C32::new(2.0, 0.0),
            C32::new(0.1, -0.1),
            C32::new(-0.6, 0.8),
            C32::new(0.0, 0.0),
        ];
        let lam = 0.5f32;
        let mut x = [C32::new(0.0, 0.0); 4];
        let mut y = [C32::new(0.0, 0.0); 4];
        let cfg = PdhgConfig {
            iterations: 500,
            ..PdhgConfig::default()
        };
        let mut obj = |u: &[C32]| -> f64 {
            u.iter()
                .zip(&v)
                .map(|(a, b)| 0.5 * (a - b).norm_sqr() as f64 + (lam * a.norm()) as f64)
                .sum()
        };
        let log = pdhg(
            |a, b| b.copy_from_slice(a),
            |a, b| b.copy_from_slice(a),
            |t, u| {
                u.iter_mut()
                    .zip(&v)
                    .for_each(|(ui, vi)| *ui = (*ui + vi * t) / (1.0 + t))
            },
            |_, w| project_linf_ball(lam, w),
            &mut x,
            &mut y,
            &cfg,
            Some(&mut obj),
            no_callback,
        )
        .unwrap();
        let mut want = v;
        crate::thresh::soft_thresh(lam, &mut want);
        for (a, b) in x.iter().zip(&want) {
            assert!((a - b).norm() < 1e-4, "{a} vs {b}");
        }
        let h = &log.history;
        assert!(h.last().unwrap().objective.unwrap() <= h[0].objective.unwrap());
    }

    #[test]
    fn bad_steps_are_errors() {
        let mut x = [C32::new(0.0, 0.0); 2];
        let mut y = [C32::new(0.0, 0.0); 2];
        let cfg = PdhgConfig {
            tau: -1.0,
            ..PdhgConfig::default()
        };
        let id = |a: &[C32], b: &mut [C32]| b.copy_from_slice(a);
        assert!(pdhg(
            id,
            id,
            |_, _| {},
            |_, _| {},
            &mut x,
            &mut y,
            &cfg,
            None,
            no_callback
        )
        .is_err());
        let cfg = PdhgConfig {
            theta: 2.0,
            ..PdhgConfig::default()
        };
        assert!(pdhg(
            id,
            id,
            |_, _| {},
            |_, _| {},
            &mut x,
            &mut y,
            &cfg,
            None,
            no_callback
        )
        .is_err());
    }
}

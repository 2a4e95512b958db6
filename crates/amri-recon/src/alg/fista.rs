//! FISTA (Beck & Teboulle 2009) for `min_x f(x) + g(x)` with `f` convex and differentiable with
//! `L`-Lipschitz gradient and `g` convex with a computable proximal map (BART's `fista`,
//! SigPy's `GradientMethod` with `accelerate=True`).

use std::ops::ControlFlow;

use amri_core::C32;

use super::{check_finite, rel, IterInfo, Objective, SolveLog, Stop};
use crate::error::{ReconError, Result};

/// Settings of [`fista()`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FistaConfig {
    /// Number of iterations (each: one gradient, one proximal map).
    pub iterations: usize,
    /// Stop when `‖x_{k+1} − x_k‖ / ‖x_{k+1}‖ < tol` (0 runs all iterations, as BART does).
    pub tol: f64,
    /// Step size `α ≤ 1/L`, `L` the Lipschitz constant of `∇f` (see [`crate::alg::power()`]);
    /// the default 1 suits `f = ½‖A x − y‖²` with `‖A‖ ≤ 1` (orthonormal FFT, a 0/1 mask and
    /// coil maps normalised to `Σ_c |S_c|² ≤ 1`).
    pub step: f32,
    /// Adaptive gradient restart (O'Donoghue & Candès 2015): reset the momentum when
    /// `Re<z_k − x_{k+1}, x_{k+1} − x_k> > 0`. Off by default (plain FISTA, like BART).
    pub restart: bool,
    /// BART's loop order (v0.8's `fista`, `src/iter/italgos.c`): each iteration is prox,
    /// momentum, gradient step, starting with the prox of the initial `x` and returning the last
    /// gradient step `w_K = y_K − α ∇f(y_K)` (not a prox output). The prox outputs are those of
    /// the standard order when the prox maps the initial `x` to itself (e.g. `x = 0` for ℓ1
    /// penalties); the prox is applied `iterations` times, once more than the standard order
    /// uses for the same number of gradients. Off by default.
    pub bart_order: bool,
}

impl Default for FistaConfig {
    fn default() -> Self {
        Self {
            iterations: 100,
            tol: 0.0,
            step: 1.0,
            restart: false,
            bart_order: false,
        }
    }
}

/// Runs FISTA from the `x` given, overwriting it with the last iterate.
///
/// - `grad(z, out)` writes `∇f(z)`;
/// - `prox(α, v)` replaces `v` by `prox_{αg}(v) = argmin_u ½‖u − v‖² + α g(u)`;
/// - `objective`, when given, returns `f(x) + g(x)`; it is evaluated at each iterate and
///   reported in [`IterInfo::objective`] (costs one extra evaluation per iteration).
///
/// Iteration: `x_{k+1} = prox_{αg}(z_k − α ∇f(z_k))`, `t_{k+1} = (1 + √(1 + 4 t_k²)) / 2`,
/// `z_{k+1} = x_{k+1} + (t_k − 1)/t_{k+1} (x_{k+1} − x_k)`, with `z_0 = x_0`, `t_0 = 1`.
/// Allocates three work vectors of `x.len()` once.
///
/// Errors: [`ReconError::Param`] for a step that is not finite and positive,
/// [`ReconError::NonFinite`] if the iterates blow up (e.g. a step above `2/L`).
pub fn fista<G, P, F>(
    mut grad: G,
    mut prox: P,
    x: &mut [C32],
    cfg: &FistaConfig,
    mut objective: Objective<'_>,
    mut callback: F,
) -> Result<SolveLog>
where
    G: FnMut(&[C32], &mut [C32]),
    P: FnMut(f32, &mut [C32]),
    F: FnMut(&IterInfo) -> ControlFlow<()>,
{
    if !(cfg.step > 0.0 && cfg.step.is_finite()) {
        return Err(ReconError::param(
            "step",
            format!("FISTA step must be finite and > 0, got {}", cfg.step),
        ));
    }
    let n = x.len();
    let mut log = SolveLog::with_capacity(cfg.iterations);
    if cfg.iterations == 0 || n == 0 {
        log.stop = Stop::Trivial;
        return Ok(log);
    }
    let alpha = cfg.step;
    if cfg.bart_order {
        return fista_bart_order(grad, prox, x, cfg, objective, callback, log);
    }
    let mut z = x.to_vec();
    let mut x_old = vec![C32::new(0.0, 0.0); n];
    let mut g = vec![C32::new(0.0, 0.0); n];
    let mut t = 1.0f64;
    for it in 1..=cfg.iterations {
        grad(&z, &mut g);
        x_old.copy_from_slice(x);
        for ((xi, zi), gi) in x.iter_mut().zip(&z).zip(&g) {
            *xi = zi - gi * alpha;
        }
        prox(alpha, x);
        let (dx2, xn2, gm2, restart_dot) = step_stats(x, &z, &x_old);
        check_finite("iterate of fista", xn2)?;
        let beta = momentum(&mut t, cfg.restart && restart_dot > 0.0);
        for ((zi, xi), xo) in z.iter_mut().zip(x.iter()).zip(&x_old) {
            *zi = xi + (xi - xo) * beta;
        }
        let info = IterInfo {
            iter: it,
            objective: objective.as_mut().map(|f| f(x)),
            residual: gm2.sqrt() / alpha as f64,
            rel_change: rel(dx2, xn2),
        };
        if log.record(info, &mut callback, info.rel_change < cfg.tol) {
            break;
        }
    }
    Ok(log)
}

/// Sums over one FISTA step from the point `from` to the prox output `new` (previous output
/// `old`): `(‖new − old‖², ‖new‖², ‖from − new‖², Re⟨from − new, new − old⟩)`, the last being
/// the gradient-restart test (O'Donoghue & Candès).
fn step_stats(new: &[C32], from: &[C32], old: &[C32]) -> (f64, f64, f64, f64) {
    let (mut dx2, mut n2, mut gm2, mut restart_dot) = (0.0f64, 0.0f64, 0.0f64, 0.0f64);
    for ((ni, fi), oi) in new.iter().zip(from).zip(old) {
        let dx = ni - oi;
        let gm = fi - ni;
        dx2 += dx.norm_sqr() as f64;
        n2 += ni.norm_sqr() as f64;
        gm2 += gm.norm_sqr() as f64;
        restart_dot += (gm.re * dx.re + gm.im * dx.im) as f64;
    }
    (dx2, n2, gm2, restart_dot)
}

/// Advances the FISTA momentum sequence `t ← (1 + √(1 + 4t²))/2` and returns `β = (t_old − 1)/t`;
/// on `restart` it resets `t = 1` and returns `β = 0`.
fn momentum(t: &mut f64, restart: bool) -> f32 {
    let t_new = 0.5 * (1.0 + (1.0 + 4.0 * *t * *t).sqrt());
    let beta = ((*t - 1.0) / t_new) as f32;
    if restart {
        *t = 1.0;
        0.0
    } else {
        *t = t_new;
        beta
    }
}

/// [`fista()`] in BART's loop order ([`FistaConfig::bart_order`]): `p_k = prox(w_{k−1})`,
/// `y_k = p_k + β_k (p_k − p_{k−1})`, `w_k = y_k − α ∇f(y_k)`, `w_0 = p_0 = x`; returns `w_K`.
/// The log reports the prox outputs `p_k` (objective, change) and the gradient mapping
/// `‖y_{k−1} − p_k‖ / α`.
fn fista_bart_order<G, P, F>(
    mut grad: G,
    mut prox: P,
    x: &mut [C32],
    cfg: &FistaConfig,
    mut objective: Objective<'_>,
    mut callback: F,
    mut log: SolveLog,
) -> Result<SolveLog>
where
    G: FnMut(&[C32], &mut [C32]),
    P: FnMut(f32, &mut [C32]),
    F: FnMut(&IterInfo) -> ControlFlow<()>,
{
    let n = x.len();
    let alpha = cfg.step;
    // x holds w (the point the prox is applied to); p the prox outputs; y the momentum point.
    let mut p = x.to_vec();
    let mut p_old = x.to_vec();
    let mut y = x.to_vec();
    let mut g = vec![C32::new(0.0, 0.0); n];
    let mut t = 1.0f64;
    for it in 1..=cfg.iterations {
        p.copy_from_slice(x);
        prox(alpha, &mut p);
        let (dx2, pn2, gm2, restart_dot) = step_stats(&p, &y, &p_old);
        check_finite("iterate of fista", pn2)?;
        let beta = momentum(&mut t, cfg.restart && restart_dot > 0.0);
        for ((yi, pi), po) in y.iter_mut().zip(&p).zip(&p_old) {
            *yi = pi + (pi - po) * beta;
        }
        p_old.copy_from_slice(&p);
        grad(&y, &mut g);
        for ((xi, yi), gi) in x.iter_mut().zip(&y).zip(&g) {
            *xi = yi - gi * alpha;
        }
        let info = IterInfo {
            iter: it,
            objective: objective.as_mut().map(|f| f(&p)),
            residual: gm2.sqrt() / alpha as f64,
            rel_change: rel(dx2, pn2),
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
    use crate::thresh::soft_thresh;

    #[test]
    fn lasso_on_diagonal_has_closed_form() {
        // f = ½‖D x − y‖², g = λ‖x‖₁ with D diagonal: x_i = soft(d_i y_i, λ) / d_i².
        let d = [1.0f32, 0.5, 0.8, 0.3];
        let y = [
            C32::new(2.0, 1.0),
            C32::new(-0.3, 0.1),
            C32::new(0.0, -1.5),
            C32::new(1.0, 1.0),
        ];
        let lam = 0.2f32;
        let mut x = [C32::new(0.0, 0.0); 4];
        let cfg = FistaConfig {
            iterations: 3000,
            tol: 0.0,
            step: 1.0,
            restart: false,
            bart_order: false,
        };
        let grad = |v: &[C32], o: &mut [C32]| {
            for i in 0..4 {
                o[i] = (v[i] * d[i] - y[i]) * d[i];
            }
        };
        let mut obj = |v: &[C32]| -> f64 {
            (0..4)
                .map(|i| 0.5 * (v[i] * d[i] - y[i]).norm_sqr() as f64 + (lam * v[i].norm()) as f64)
                .sum()
        };
        let log = fista(
            grad,
            |a, v| soft_thresh(a * lam, v),
            &mut x,
            &cfg,
            Some(&mut obj),
            no_callback,
        )
        .unwrap();
        for i in 0..4 {
            let mut v = [y[i] * d[i]];
            soft_thresh(lam, &mut v);
            let want = v[0] / (d[i] * d[i]);
            assert!((x[i] - want).norm() < 1e-3, "{i}: {} vs {want}", x[i]);
        }
        // FISTA is not monotone, but the objective must end at the minimum and never exceed
        // the starting value.
        let first = log.history[0].objective.unwrap();
        let last = log.last().unwrap().objective.unwrap();
        assert!(last <= first);
        let f0 = obj(&[C32::new(0.0, 0.0); 4]);
        assert!(log
            .history
            .iter()
            .all(|h| h.objective.unwrap() <= f0 + 1e-9));
    }

    #[test]
    fn bart_order_reaches_the_lasso_solution_and_returns_a_gradient_step() {
        // Same diagonal lasso as above: the prox of the returned gradient step is the closed
        // form, and the returned point is not itself thresholded.
        let d = [1.0f32, 0.5, 0.8];
        let y = [C32::new(2.0, 1.0), C32::new(-0.3, 0.1), C32::new(0.0, -1.5)];
        let lam = 0.2f32;
        let cfg = FistaConfig {
            iterations: 3000,
            tol: 0.0,
            step: 0.95,
            restart: false,
            bart_order: true,
        };
        let grad = |v: &[C32], o: &mut [C32]| {
            for i in 0..3 {
                o[i] = (v[i] * d[i] - y[i]) * d[i];
            }
        };
        let mut x = [C32::new(0.0, 0.0); 3];
        fista(
            grad,
            |a, v| soft_thresh(a * lam, v),
            &mut x,
            &cfg,
            None,
            no_callback,
        )
        .unwrap();
        let mut p = x;
        soft_thresh(0.95 * lam, &mut p);
        for i in 0..3 {
            let mut v = [y[i] * d[i]];
            soft_thresh(lam, &mut v);
            let want = v[0] / (d[i] * d[i]);
            assert!((p[i] - want).norm() < 1e-3, "{i}: {} vs {want}", p[i]);
        }
        // y[1] is thresholded to zero, but the gradient step left it non-zero.
        assert!(p[1].norm() < 1e-6 && x[1].norm() > 1e-3);
    }

    #[test]
    fn restart_and_tolerance_stop_early() {
        // Smooth quadratic, g = 0: converges, and tol stops it.
        let mut x = [C32::new(3.0, -2.0); 8];
        let cfg = FistaConfig {
            iterations: 1000,
            tol: 1e-6,
            step: 0.5,
            restart: true,
            bart_order: false,
        };
        let log = fista(
            |v, o| o.copy_from_slice(v),
            |_, _| {},
            &mut x,
            &cfg,
            None,
            no_callback,
        )
        .unwrap();
        assert_eq!(log.stop, Stop::Converged);
        assert!(x.iter().all(|v| v.norm() < 1e-4));
    }

    #[test]
    fn bad_step_is_an_error() {
        let mut x = [C32::new(0.0, 0.0); 2];
        let cfg = FistaConfig {
            step: 0.0,
            ..FistaConfig::default()
        };
        assert!(fista(|_, _| {}, |_, _| {}, &mut x, &cfg, None, no_callback).is_err());
    }
}

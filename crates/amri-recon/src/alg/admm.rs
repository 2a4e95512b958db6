//! ADMM (alternating direction method of multipliers) for regularised least squares
//! `min_x ½‖A x − y‖² + f(G x)` with `G` linear and `f` convex with a computable proximal map,
//! in the form BART's `pics` uses (its `admm`, "ADMM-2" of Afonso, Bioucas-Dias & Figueiredo
//! 2011; scaled dual and over-relaxation as in Boyd et al. 2011, §3.4.3):
//!
//! with the splitting `z = G x`, scaled dual `u`, penalty `ρ > 0` and relaxation `α`, one outer
//! iteration is
//! 1. `x ← argmin ½‖A x − y‖² + ρ/2 ‖G x − z + u‖²`, i.e. `(A^H A + ρ G^H G) x = A^H y +
//!    ρ G^H (z − u)`, solved inexactly by a few conjugate-gradient steps warm-started at the
//!    previous `x`;
//! 2. `ĝ = α G x + (1 − α) z` (over-relaxation; `α = 1` is plain ADMM);
//! 3. `z ← prox_{f/ρ}(ĝ + u)`;
//! 4. `u ← u + ĝ − z`.

use std::ops::ControlFlow;

use amri_core::C32;

use super::{check_finite, check_len, dot, norm_sqr, rel, IterInfo, Objective, SolveLog, Stop};
use crate::error::{ReconError, Result};

/// Settings of [`admm()`]. The defaults are BART's (`iter_admm_defaults` in BART's
/// `src/iter/iter.c`, as used by `pics`): `ρ = 0.5` (`pics -u`), `α = 1.6`, at most 10 CG
/// steps per outer iteration (`pics -C`), CG stopped at `‖r‖ ≤ 10⁻³ ‖rhs‖`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdmmConfig {
    /// Maximum number of outer iterations.
    pub iterations: usize,
    /// Augmented-Lagrangian penalty `ρ > 0` (BART `pics -u`, default 0.5).
    pub rho: f32,
    /// Over-relaxation `α ∈ (0, 2)` (BART: 1.6; 1 is unrelaxed ADMM).
    pub relaxation: f32,
    /// Maximum CG steps of each x-update (BART `pics -C`, default 10); ≥ 1.
    pub cg_iterations: usize,
    /// The x-update's CG stops when `‖rhs − (A^H A + ρ G^H G) x‖ ≤ cg_tol · ‖rhs‖`
    /// (BART: 10⁻³).
    pub cg_tol: f64,
    /// Total number of CG steps (applications of `A^H A`) over the whole solve, or `None` for
    /// no limit. BART's `pics -i N` with ADMM is such a budget, not an outer-iteration count:
    /// its `admm` stops once the CG steps summed over the outer iterations exceed `N`. Here the
    /// last x-update is cut short so that the total never exceeds the budget.
    pub cg_budget: Option<usize>,
    /// Stop when `‖x_{k+1} − x_k‖ / ‖x_{k+1}‖ < tol` after an outer iteration whose x-update
    /// took at least one CG step (0: never). An x-update whose initial residual already meets
    /// `cg_tol` leaves `x` unchanged while `z` and `u` still move, so it is not counted as
    /// convergence.
    pub tol: f64,
}

impl Default for AdmmConfig {
    fn default() -> Self {
        Self {
            iterations: 100,
            rho: 0.5,
            relaxation: 1.6,
            cg_iterations: 10,
            cg_tol: 1e-3,
            cg_budget: None,
            tol: 0.0,
        }
    }
}

/// Runs ADMM (see the module docs) from the initial `x` (zeros for a cold start), overwriting
/// it with the result; `z` starts at `G x` and `u` at zero.
///
/// - `normal(v, out)` writes `out = A^H A v` (Hermitian positive semi-definite);
/// - `g(x, z)` writes `z = G x` with `z.len() = z_len`; `gh(z, x)` writes `x = G^H z`;
/// - `prox(t, v)` replaces `v` (length `z_len`) by `prox_{t f}(v) = argmin_w ½‖w − v‖² +
///   t f(w)`; ADMM calls it with `t = 1/ρ`;
/// - `aty` is `A^H y`;
/// - `objective`, when given, returns `½‖A x − y‖² + f(G x)` at each iterate (for the log).
///
/// The callback gets, after each outer iteration, the primal residual `‖G x − z‖` as
/// `residual` and the relative change of `x`; `Break` stops with [`Stop::Cancelled`]. Stops
/// after `iterations` outer iterations or when the CG budget is spent ([`Stop::MaxIterations`]),
/// or when the relative change falls below `tol` ([`Stop::Converged`]). Allocates four vectors
/// of `z_len` and six of `x.len()` once.
///
/// Errors: [`ReconError::Shape`] if `aty` and `x` differ in length, [`ReconError::Param`] for
/// `ρ ≤ 0`, `α ∉ (0, 2)`, no CG steps or a negative `cg_tol`, [`ReconError::NonFinite`] if the
/// input or the iterates are not finite.
#[allow(clippy::too_many_arguments)]
pub fn admm<N, G, GH, P, F>(
    mut normal: N,
    mut g: G,
    mut gh: GH,
    mut prox: P,
    aty: &[C32],
    x: &mut [C32],
    z_len: usize,
    cfg: &AdmmConfig,
    mut objective: Objective<'_>,
    mut callback: F,
) -> Result<SolveLog>
where
    N: FnMut(&[C32], &mut [C32]),
    G: FnMut(&[C32], &mut [C32]),
    GH: FnMut(&[C32], &mut [C32]),
    P: FnMut(f32, &mut [C32]),
    F: FnMut(&IterInfo) -> ControlFlow<()>,
{
    check_len("initial guess of admm", aty.len(), x.len())?;
    if !(cfg.rho > 0.0 && cfg.rho.is_finite()) {
        return Err(ReconError::param(
            "rho",
            format!("ADMM penalty must be finite and > 0, got {}", cfg.rho),
        ));
    }
    if !(cfg.relaxation > 0.0 && cfg.relaxation < 2.0) {
        return Err(ReconError::param(
            "relaxation",
            format!(
                "ADMM over-relaxation must be in (0, 2), got {}",
                cfg.relaxation
            ),
        ));
    }
    if cfg.cg_iterations == 0 {
        return Err(ReconError::param(
            "cg_iterations",
            "ADMM needs at least one CG step per x-update",
        ));
    }
    if !(cfg.cg_tol >= 0.0 && cfg.cg_tol.is_finite()) {
        return Err(ReconError::param(
            "cg_tol",
            format!("must be finite and ≥ 0, got {}", cfg.cg_tol),
        ));
    }
    check_finite("‖A^H y‖ in admm", norm_sqr(aty))?;
    check_finite("initial guess of admm", norm_sqr(x))?;
    let n = x.len();
    let mut log = SolveLog::with_capacity(cfg.iterations);
    if cfg.iterations == 0 || n == 0 || cfg.cg_budget == Some(0) {
        log.stop = Stop::Trivial;
        return Ok(log);
    }
    let (rho, alpha) = (cfg.rho, cfg.relaxation);
    let zero = C32::new(0.0, 0.0);
    let mut z = vec![zero; z_len];
    let mut u = vec![zero; z_len];
    let mut gx = vec![zero; z_len];
    let mut tm = vec![zero; z_len];
    let mut rhs = vec![zero; n];
    let mut r = vec![zero; n];
    let mut p = vec![zero; n];
    let mut ap = vec![zero; n];
    let mut tn = vec![zero; n];
    let mut x_old = vec![zero; n];
    g(x, &mut z);

    let mut cg_used = 0usize;
    for it in 1..=cfg.iterations {
        // rhs = A^H y + ρ G^H (z − u).
        tm.iter_mut()
            .zip(z.iter().zip(&u))
            .for_each(|(t, (zi, ui))| *t = zi - ui);
        gh(&tm, &mut tn);
        rhs.iter_mut()
            .zip(aty.iter().zip(&tn))
            .for_each(|(b, (a, t))| *b = a + t * rho);

        // x-update: warm-started CG.
        x_old.copy_from_slice(x);
        let max_cg = match cfg.cg_budget {
            Some(b) => cfg.cg_iterations.min(b.saturating_sub(cg_used)),
            None => cfg.cg_iterations,
        };
        let bn2 = norm_sqr(&rhs);
        check_finite("right-hand side of the admm x-update", bn2)?;
        let eps2 = cfg.cg_tol * cfg.cg_tol * bn2;
        apply_m(
            &mut normal,
            &mut g,
            &mut gh,
            rho,
            x,
            &mut ap,
            &mut tm,
            &mut tn,
        );
        r.iter_mut()
            .zip(rhs.iter().zip(&ap))
            .for_each(|(ri, (b, a))| *ri = b - a);
        p.copy_from_slice(&r);
        let mut rs = norm_sqr(&r);
        check_finite("residual of the admm x-update", rs)?;
        let mut steps = 0usize;
        for _ in 0..max_cg {
            if rs <= eps2 || rs == 0.0 {
                break;
            }
            apply_m(
                &mut normal,
                &mut g,
                &mut gh,
                rho,
                &p,
                &mut ap,
                &mut tm,
                &mut tn,
            );
            steps += 1;
            let pap = dot(&p, &ap).re;
            check_finite("p^H M p in the admm x-update", pap)?;
            if pap <= 0.0 {
                break;
            }
            let a = (rs / pap) as f32;
            let mut rs_new = 0.0f64;
            for (((xi, ri), pi), api) in x.iter_mut().zip(r.iter_mut()).zip(&p).zip(&ap) {
                *xi += pi * a;
                *ri -= api * a;
                rs_new += ri.norm_sqr() as f64;
            }
            let beta = (rs_new / rs) as f32;
            rs = rs_new;
            p.iter_mut()
                .zip(&r)
                .for_each(|(pi, ri)| *pi = ri + *pi * beta);
        }

        cg_used += steps;

        // z- and u-updates with over-relaxation.
        g(x, &mut gx);
        let mut res2 = 0.0f64;
        for (((zi, ui), gi), ti) in z.iter_mut().zip(u.iter_mut()).zip(&gx).zip(tm.iter_mut()) {
            let ghat = gi * alpha + *zi * (1.0 - alpha);
            *ti = ghat + *ui; // v = ĝ + u
            *zi = *ti;
        }
        prox(1.0 / rho, &mut z);
        for (((ui, ti), zi), gi) in u.iter_mut().zip(&tm).zip(&z).zip(&gx) {
            *ui = ti - zi;
            res2 += (gi - zi).norm_sqr() as f64;
        }

        let (mut dx2, mut xn2) = (0.0f64, 0.0f64);
        for (xi, xo) in x.iter().zip(&x_old) {
            dx2 += (xi - xo).norm_sqr() as f64;
            xn2 += xi.norm_sqr() as f64;
        }
        check_finite("iterate of admm", xn2 + res2)?;
        let info = IterInfo {
            iter: it,
            objective: objective.as_mut().map(|f| f(x)),
            residual: res2.sqrt(),
            rel_change: rel(dx2, xn2),
        };
        if log.record(info, &mut callback, steps > 0 && info.rel_change < cfg.tol) {
            break;
        }
        if cfg.cg_budget.is_some_and(|b| cg_used >= b) {
            log.stop = Stop::MaxIterations;
            break;
        }
    }
    Ok(log)
}

/// `out = (A^H A + ρ G^H G) v`, using the scratch vectors `tm` (`z_len`) and `tn` (`n`).
#[allow(clippy::too_many_arguments)]
fn apply_m<N, G, GH>(
    normal: &mut N,
    g: &mut G,
    gh: &mut GH,
    rho: f32,
    v: &[C32],
    out: &mut [C32],
    tm: &mut [C32],
    tn: &mut [C32],
) where
    N: FnMut(&[C32], &mut [C32]),
    G: FnMut(&[C32], &mut [C32]),
    GH: FnMut(&[C32], &mut [C32]),
{
    normal(v, out);
    g(v, tm);
    gh(tm, tn);
    out.iter_mut()
        .zip(tn.iter())
        .for_each(|(o, t)| *o += t * rho);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alg::{dist_sqr, no_callback};
    use crate::thresh::soft_thresh;
    use crate::tv::{grad, grad_adjoint, TvDef, TvProx, TvProxConfig};
    use rand::{Rng, SeedableRng};

    fn rand_vec(n: usize, seed: u64) -> Vec<C32> {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        (0..n)
            .map(|_| C32::new(rng.random_range(-1.0..1.0), rng.random_range(-1.0..1.0)))
            .collect()
    }

    fn id(a: &[C32], b: &mut [C32]) {
        b.copy_from_slice(a)
    }

    #[test]
    fn lasso_with_identity_is_soft_thresholding() {
        // min ½‖x − y‖² + λ‖x‖₁ has the closed form x = soft(y, λ).
        let y = rand_vec(40, 1);
        let lam = 0.4f32;
        let mut x = vec![C32::new(0.0, 0.0); 40];
        // A tight inner tolerance: BART's 10⁻³ leaves x stalled at that relative accuracy.
        let cfg = AdmmConfig {
            iterations: 300,
            cg_tol: 1e-7,
            ..AdmmConfig::default()
        };
        let log = admm(
            id,
            id,
            id,
            |t, v| soft_thresh(t * lam, v),
            &y,
            &mut x,
            40,
            &cfg,
            None,
            no_callback,
        )
        .unwrap();
        let mut want = y.clone();
        soft_thresh(lam, &mut want);
        for (a, b) in x.iter().zip(&want) {
            assert!((a - b).norm() < 1e-4, "{a} vs {b}");
        }
        assert!(log.last().unwrap().residual < 1e-4);
        // With a tolerance it stops early, at a point that still satisfies the closed form.
        let mut x2 = vec![C32::new(0.0, 0.0); 40];
        let cfg = AdmmConfig { tol: 1e-6, ..cfg };
        let log2 = admm(
            id,
            id,
            id,
            |t, v| soft_thresh(t * lam, v),
            &y,
            &mut x2,
            40,
            &cfg,
            None,
            no_callback,
        )
        .unwrap();
        assert_eq!(log2.stop, Stop::Converged);
        assert!(log2.iterations() < 300);
        for (a, b) in x2.iter().zip(&want) {
            assert!((a - b).norm() < 1e-4, "{a} vs {b}");
        }
    }

    /// 1-D TV denoising of a step (closed form): levels `a` (k samples) and `b` (n − k), `a < b`,
    /// move towards each other by `λ/k` and `λ/(n−k)` until they meet at the mean.
    fn step_tv(a: f32, b: f32, k: usize, n: usize, lam: f32) -> (f32, f32) {
        let (lo, hi) = (a + lam / k as f32, b - lam / (n - k) as f32);
        if lo < hi {
            (lo, hi)
        } else {
            let m = (a * k as f32 + b * (n - k) as f32) / n as f32;
            (m, m)
        }
    }

    #[test]
    fn tv_denoising_of_a_step_matches_closed_form() {
        // A = I, G = ∇ on a 1 × n image (the row differences vanish): 1-D TV denoising.
        let (n, k) = (16, 6);
        let y: Vec<C32> = (0..n)
            .map(|i| C32::new(if i < k { 1.0 } else { 3.0 }, 0.0))
            .collect();
        let def = TvDef::default();
        for lam in [0.5f32, 3.0, 40.0] {
            let mut x = vec![C32::new(0.0, 0.0); n];
            let mut obj = |x: &[C32]| 0.5 * dist_sqr(x, &y) + lam as f64 * def.value(x, 1, n);
            let cfg = AdmmConfig {
                iterations: 500,
                cg_tol: 1e-7,
                ..AdmmConfig::default()
            };
            let log = admm(
                id,
                |x, z| grad(x, 1, n, z),
                |z, x| grad_adjoint(z, 1, n, x),
                |t, v| def.shrink(t * lam, v),
                &y,
                &mut x,
                2 * n,
                &cfg,
                Some(&mut obj),
                no_callback,
            )
            .unwrap();
            let (wa, wb) = step_tv(1.0, 3.0, k, n, lam);
            for (i, v) in x.iter().enumerate() {
                let want = if i < k { wa } else { wb };
                assert!(
                    (v.re - want).abs() < 1e-3 && v.im.abs() < 1e-5,
                    "λ={lam} i={i}: {v} vs {want}"
                );
            }
            // The objective ends at the closed-form minimum and never rises much above its
            // running minimum after the first few iterations.
            let f: Vec<f64> = log.history.iter().map(|h| h.objective.unwrap()).collect();
            let xs: Vec<C32> = (0..n)
                .map(|i| C32::new(if i < k { wa } else { wb }, 0.0))
                .collect();
            let f_star = 0.5 * dist_sqr(&xs, &y) + lam as f64 * def.value(&xs, 1, n);
            assert!((f[f.len() - 1] - f_star).abs() < 1e-4 * f_star.max(1.0));
            assert!(f[f.len() - 1] < f[0]);
        }
    }

    #[test]
    fn tv_denoising_satisfies_optimality_and_matches_the_dual_prox() {
        // A = I on a random complex 2-D image: ADMM's TV denoising equals the independent
        // dual (FGP) prox of crate::tv and no random perturbation lowers the objective.
        let (r, c) = (9, 11);
        let y = rand_vec(r * c, 7);
        let lam = 0.3f32;
        let def = TvDef::default();
        let mut x = vec![C32::new(0.0, 0.0); r * c];
        let obj = |x: &[C32]| 0.5 * dist_sqr(x, &y) + lam as f64 * def.value(x, r, c);
        let cfg = AdmmConfig {
            iterations: 1000,
            rho: 1.0,
            cg_tol: 1e-7,
            ..AdmmConfig::default()
        };
        admm(
            id,
            |x, z| grad(x, r, c, z),
            |z, x| grad_adjoint(z, r, c, x),
            |t, v| def.shrink(t * lam, v),
            &y,
            &mut x,
            2 * r * c,
            &cfg,
            None,
            no_callback,
        )
        .unwrap();
        let mut fgp = y.clone();
        TvProx::new(
            r,
            c,
            TvProxConfig {
                iterations: 5000,
                tol: 0.0,
            },
        )
        .apply(lam, &mut fgp);
        let e = (dist_sqr(&x, &fgp) / crate::alg::norm_sqr(&fgp)).sqrt();
        assert!(e < 2e-3, "ADMM vs FGP prox: relative difference {e}");
        let fx = obj(&x);
        for s in 0..40u64 {
            let d = rand_vec(r * c, 100 + s);
            for eps in [1e-2f32, 1e-3] {
                let w: Vec<C32> = x.iter().zip(&d).map(|(a, b)| a + b * eps).collect();
                assert!(fx <= obj(&w) + 1e-5, "perturbation {s} eps {eps}");
            }
        }
    }

    #[test]
    fn objective_decreases_on_a_random_least_squares_tv_problem() {
        // A = diagonal 0/1 "mask" times a random gain: an underdetermined denoising-inpainting
        // problem; ADMM's objective falls far below the start and ends near its running minimum.
        let (r, c) = (12, 10);
        let n = r * c;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let d: Vec<f32> = (0..n)
            .map(|_| {
                if rng.random_bool(0.5) {
                    rng.random_range(0.5..1.5)
                } else {
                    0.0
                }
            })
            .collect();
        let truth: Vec<C32> = (0..n)
            .map(|i| C32::new(if (i % c) < c / 2 { 1.0 } else { -0.5 }, 0.2))
            .collect();
        let y: Vec<C32> = truth.iter().zip(&d).map(|(t, di)| t * *di).collect();
        let aty: Vec<C32> = y.iter().zip(&d).map(|(v, di)| v * *di).collect();
        let lam = 0.05f32;
        let def = TvDef::default();
        let mut obj = |x: &[C32]| {
            let res: f64 = x
                .iter()
                .zip(&d)
                .zip(&y)
                .map(|((xi, di), yi)| (xi * *di - yi).norm_sqr() as f64)
                .sum();
            0.5 * res + lam as f64 * def.value(x, r, c)
        };
        let f0 = obj(&vec![C32::new(0.0, 0.0); n]);
        let mut x = vec![C32::new(0.0, 0.0); n];
        let cfg = AdmmConfig {
            iterations: 200,
            cg_tol: 1e-6,
            ..AdmmConfig::default()
        };
        let log = admm(
            |v, o| {
                o.iter_mut()
                    .zip(v.iter().zip(&d))
                    .for_each(|(o, (vi, di))| *o = vi * (di * di))
            },
            |x, z| grad(x, r, c, z),
            |z, x| grad_adjoint(z, r, c, x),
            |t, v| def.shrink(t * lam, v),
            &aty,
            &mut x,
            2 * n,
            &cfg,
            Some(&mut obj),
            no_callback,
        )
        .unwrap();
        let f: Vec<f64> = log.history.iter().map(|h| h.objective.unwrap()).collect();
        let best = f.iter().copied().fold(f64::MAX, f64::min);
        assert!(f[f.len() - 1] < 0.2 * f0, "{} vs {f0}", f[f.len() - 1]);
        assert!(f[f.len() - 1] <= best * (1.0 + 1e-4) + 1e-9);
        // Piecewise-constant truth with half the pixels missing: recovered closely.
        let e = (dist_sqr(&x, &truth) / crate::alg::norm_sqr(&truth)).sqrt();
        assert!(e < 0.1, "relative error {e}");
    }

    #[test]
    fn cg_budget_counts_normal_operator_applications() {
        // Each outer iteration applies A^H A once for the initial residual plus once per CG step.
        let y = rand_vec(30, 2);
        for budget in [1usize, 7, 25] {
            let mut calls = 0usize;
            let mut x = vec![C32::new(0.0, 0.0); 30];
            let cfg = AdmmConfig {
                iterations: 1000,
                cg_budget: Some(budget),
                cg_tol: 0.0,
                ..AdmmConfig::default()
            };
            let log = admm(
                |v, o| {
                    calls += 1;
                    o.iter_mut()
                        .zip(v)
                        .enumerate()
                        .for_each(|(i, (o, v))| *o = v * (1.0 + (i % 5) as f32))
                },
                id,
                id,
                |t, v| soft_thresh(t * 0.1, v),
                &y,
                &mut x,
                30,
                &cfg,
                None,
                no_callback,
            )
            .unwrap();
            assert_eq!(log.stop, Stop::MaxIterations);
            assert_eq!(calls - log.iterations(), budget, "budget {budget}");
        }
    }

    #[test]
    fn bad_settings_are_errors_and_cancel_works() {
        let y = rand_vec(4, 1);
        let mut x = vec![C32::new(0.0, 0.0); 4];
        let run = |cfg: AdmmConfig, x: &mut [C32]| {
            admm(id, id, id, |_, _| {}, &y, x, 4, &cfg, None, no_callback)
        };
        for cfg in [
            AdmmConfig {
                rho: 0.0,
                ..AdmmConfig::default()
            },
            AdmmConfig {
                relaxation: 2.0,
                ..AdmmConfig::default()
            },
            AdmmConfig {
                cg_iterations: 0,
                ..AdmmConfig::default()
            },
            AdmmConfig {
                cg_tol: f64::NAN,
                ..AdmmConfig::default()
            },
        ] {
            assert!(matches!(run(cfg, &mut x), Err(ReconError::Param { .. })));
        }
        let mut short = vec![C32::new(0.0, 0.0); 3];
        assert!(matches!(
            run(AdmmConfig::default(), &mut short),
            Err(ReconError::Shape { .. })
        ));
        let nan = vec![C32::new(f32::NAN, 0.0); 4];
        assert!(matches!(
            admm(
                id,
                id,
                id,
                |_, _| {},
                &nan,
                &mut x,
                4,
                &AdmmConfig::default(),
                None,
                no_callback
            ),
            Err(ReconError::NonFinite(_))
        ));
        let log = admm(
            id,
            id,
            id,
            |_, _| {},
            &y,
            &mut x,
            4,
            &AdmmConfig::default(),
            None,
            |i| {
                if i.iter >= 2 {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                }
            },
        )
        .unwrap();
        assert_eq!(log.stop, Stop::Cancelled);
        assert_eq!(log.iterations(), 2);
    }
}

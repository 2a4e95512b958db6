//! Total-variation compressed sensing: `min_x ½‖A x − y/s‖² + λ TV(x)`, with `TV` the
//! isotropic, Neumann-boundary TV of [`crate::tv`] by default ([`TvConfig::tv`] selects BART's
//! periodic-boundary definition, or an anisotropic TV, instead).
//!
//! # Solvers
//! - [`TvSolver::Admm`] (default), as BART's `pics -R T`: [`crate::alg::admm()`] with the
//!   splitting `z = ∇x`, `(A^H A + ρ∇^H∇) x = A^H y + ρ∇^H(z − u)` by warm-started CG (at most
//!   [`TvConfig::cg_iterations`] steps, stopped at a relative residual of 10⁻³), `z` by
//!   isotropic vector (anisotropic: entry-wise complex) soft-thresholding by `λ/ρ`, over-relaxation
//!   1.6, `ρ` = [`TvConfig::rho`] (BART defaults: `ρ = 0.5`, 10 CG steps).
//!   [`TvConfig::iterations`] counts CG steps, i.e. applications of `A^H A`, summed over the
//!   outer iterations, which is what BART's `pics -i N` counts for ADMM (its `admm` stops once
//!   that sum exceeds `N`; with `-d5` it prints ~50 outer iterations for `-i 100`). Equal
//!   `iterations` therefore means equal work as BART, and about the same as that many PDHG
//!   iterations (one `A` and one `A^H` each).
//! - [`TvSolver::Pdhg`]: Chambolle–Pock with `K = [A; μ∇]`, `F(u, v) = ½‖u − y/s‖² +
//!   (λ/μ)‖v‖`, `G = 0`; the gradient block is scaled by `μ = sqrt(L/8)` so that both blocks
//!   have norm ≈ `sqrt(L)`, `L ≥ ‖A‖²`; then `‖K‖² ≤ 2L` and the steps are
//!   `τ = 0.99/(ρ sqrt(2L))`, `σ = 0.99 ρ/sqrt(2L)` with balance `ρ` ([`TvConfig::balance`]);
//!   one iteration per `iterations`. It converges more slowly per operator application than
//!   ADMM on undersampled data (`docs/benchmarks.md`).

use std::ops::ControlFlow;

use amri_core::{KSpace, C32};
use amri_ops::LinearOperator;
use ndarray::Array4;

use super::{check_slice_problem, no_progress, run_slices, DataScaling, Progress, Reconstruction};
use crate::alg::{
    admm, pdhg, power, AdmmConfig, IterInfo, Objective, PdhgConfig, PowerConfig, SolveLog,
};
use crate::error::{ReconError, Result};
use crate::tv::TvDef;

/// The algorithm that solves the TV problem (see the module docs).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TvSolver {
    /// ADMM with warm-started inner CG (BART `pics -R T`); `iterations` = CG steps in all.
    #[default]
    Admm,
    /// Chambolle–Pock PDHG; `iterations` = PDHG iterations.
    Pdhg,
}

/// Settings of [`tv_recon`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TvConfig {
    /// Regularisation weight `λ ≥ 0` on the scaled problem.
    pub lambda: f32,
    /// Work budget: with [`TvSolver::Admm`] the number of CG steps (applications of `A^H A`)
    /// over all outer iterations, as BART's `pics -i`; with [`TvSolver::Pdhg`] the number of
    /// PDHG iterations.
    pub iterations: usize,
    /// Stop early when the relative change of the iterate after an (outer) iteration falls
    /// below `tol` (0: never).
    pub tol: f64,
    /// The solver (default ADMM).
    pub solver: TvSolver,
    /// The TV definition (default isotropic, Neumann boundary; [`TvDef::BART`] for BART's).
    pub tv: TvDef,
    /// ADMM penalty `ρ > 0` on the scaled problem (BART `pics -u`, default 0.5).
    pub rho: f32,
    /// ADMM: maximum CG steps per outer iteration (BART `pics -C`, default 10).
    pub cg_iterations: usize,
    /// PDHG: primal–dual step balance `ρ > 0` (`σ/τ = ρ²`).
    pub balance: f32,
    /// Data scaling (see [`crate::app`]).
    pub scaling: DataScaling,
    /// Compute `½‖A x − y‖² + λ TV(x)` at every iteration for the log (one extra `A`).
    pub track_objective: bool,
}

impl Default for TvConfig {
    fn default() -> Self {
        Self {
            lambda: 0.005,
            iterations: 100,
            tol: 0.0,
            solver: TvSolver::Admm,
            tv: TvDef::default(),
            rho: 0.5,
            cg_iterations: 10,
            balance: 1.0,
            scaling: DataScaling::Bart,
            track_objective: false,
        }
    }
}

/// TV reconstruction of every slice of `ks` (maps as [`super::resolve_maps`]), starting from
/// zero; images `[slice, row, col]` in the units of the input.
pub fn tv_recon(ks: &KSpace, maps: Option<&Array4<C32>>, cfg: &TvConfig) -> Result<Reconstruction> {
    tv_recon_with(ks, maps, cfg, &no_progress)
}

/// [`tv_recon`] with a progress callback (slice index, iteration report) that can cancel.
pub fn tv_recon_with(
    ks: &KSpace,
    maps: Option<&Array4<C32>>,
    cfg: &TvConfig,
    progress: Progress<'_>,
) -> Result<Reconstruction> {
    run_slices(ks, maps, cfg.scaling, |inp| {
        let i = inp.index;
        tv_recon_slice(inp.op, &inp.y, Some(inp.lipschitz), cfg, |info| {
            progress(i, info)
        })
    })
}

/// TV reconstruction of one slice for any operator `A` from `[rows, cols]` images to data `y`
/// (no data scaling here). `lipschitz` bounds `‖A‖²` (used by PDHG only); `None` estimates it
/// by power iteration when PDHG needs it.
pub fn tv_recon_slice<F>(
    op: &dyn LinearOperator,
    y: &[C32],
    lipschitz: Option<f64>,
    cfg: &TvConfig,
    callback: F,
) -> Result<(Vec<C32>, SolveLog)>
where
    F: FnMut(&IterInfo) -> ControlFlow<()>,
{
    let [r, c] = check_slice_problem(op, y)?;
    if !(cfg.lambda >= 0.0 && cfg.lambda.is_finite()) {
        return Err(ReconError::param(
            "lambda",
            format!("must be finite and ≥ 0, got {}", cfg.lambda),
        ));
    }
    let n = r * c;
    let def = cfg.tv;
    let mut gbuf = vec![C32::new(0.0, 0.0); if cfg.track_objective { 2 * n } else { 0 }];
    let mut ax = vec![C32::new(0.0, 0.0); if cfg.track_objective { op.osize() } else { 0 }];
    let mut obj = |x: &[C32]| -> f64 {
        op.forward(x, &mut ax);
        def.grad(x, r, c, &mut gbuf);
        0.5 * crate::alg::dist_sqr(&ax, y) + cfg.lambda as f64 * def.field_norm(&gbuf)
    };
    let objective: Objective<'_> = if cfg.track_objective {
        Some(&mut obj)
    } else {
        None
    };
    match cfg.solver {
        TvSolver::Admm => solve_admm(op, y, [r, c], cfg, objective, callback),
        TvSolver::Pdhg => solve_pdhg(op, y, [r, c], lipschitz, cfg, objective, callback),
    }
}

fn solve_admm<F>(
    op: &dyn LinearOperator,
    y: &[C32],
    [r, c]: [usize; 2],
    cfg: &TvConfig,
    objective: Objective<'_>,
    callback: F,
) -> Result<(Vec<C32>, SolveLog)>
where
    F: FnMut(&IterInfo) -> ControlFlow<()>,
{
    let n = r * c;
    let def = cfg.tv;
    let acfg = AdmmConfig {
        iterations: cfg.iterations,
        rho: cfg.rho,
        cg_iterations: cfg.cg_iterations,
        cg_budget: Some(cfg.iterations),
        tol: cfg.tol,
        ..AdmmConfig::default()
    };
    let mut aty = vec![C32::new(0.0, 0.0); n];
    op.adjoint(y, &mut aty);
    let lam = cfg.lambda;
    let mut x = vec![C32::new(0.0, 0.0); n];
    let log = admm(
        |v, o| op.normal(v, o),
        |v, g| def.grad(v, r, c, g),
        |g, v| def.grad_adjoint(g, r, c, v),
        |t, z| def.shrink(t * lam, z),
        &aty,
        &mut x,
        2 * n,
        &acfg,
        objective,
        callback,
    )?;
    Ok((x, log))
}

fn solve_pdhg<F>(
    op: &dyn LinearOperator,
    y: &[C32],
    [r, c]: [usize; 2],
    lipschitz: Option<f64>,
    cfg: &TvConfig,
    objective: Objective<'_>,
    callback: F,
) -> Result<(Vec<C32>, SolveLog)>
where
    F: FnMut(&IterInfo) -> ControlFlow<()>,
{
    if !(cfg.balance > 0.0 && cfg.balance.is_finite()) {
        return Err(ReconError::param(
            "balance",
            format!("must be finite and > 0, got {}", cfg.balance),
        ));
    }
    let l = match lipschitz {
        Some(l) => l,
        None => 1.01 * power(|v, o| op.normal(v, o), r * c, &PowerConfig::default())?,
    };
    if !(l > 0.0 && l.is_finite()) {
        return Err(ReconError::param(
            "lipschitz",
            format!("‖A‖² bound must be finite and > 0, got {l}"),
        ));
    }
    let n = r * c;
    let m = op.osize();
    let def = cfg.tv;
    let mu = (l / 8.0).sqrt() as f32;
    let radius = cfg.lambda / mu;
    let knorm = (2.0 * l).sqrt();
    let pcfg = PdhgConfig {
        iterations: cfg.iterations,
        tol: cfg.tol,
        ..PdhgConfig::with_norm(knorm, cfg.balance as f64)
    };
    // Dual layout: [A x (m) | μ∇x (2n)].
    let mut tmp = vec![C32::new(0.0, 0.0); n];
    let k = |x: &[C32], out: &mut [C32]| {
        let (a, g) = out.split_at_mut(m);
        op.forward(x, a);
        def.grad(x, r, c, g);
        g.iter_mut().for_each(|v| *v *= mu);
    };
    let kh = |yd: &[C32], out: &mut [C32]| {
        let (a, g) = yd.split_at(m);
        op.adjoint(a, out);
        def.grad_adjoint(g, r, c, &mut tmp);
        out.iter_mut().zip(&tmp).for_each(|(o, t)| *o += t * mu);
    };
    let prox_fc = |sigma: f32, w: &mut [C32]| {
        let (a, g) = w.split_at_mut(m);
        let inv = 1.0 / (1.0 + sigma);
        a.iter_mut()
            .zip(y)
            .for_each(|(ai, yi)| *ai = (*ai - yi * sigma) * inv);
        def.project(radius, g);
    };
    let mut x = vec![C32::new(0.0, 0.0); n];
    let mut dual = vec![C32::new(0.0, 0.0); m + 2 * n];
    let log = pdhg(
        k,
        kh,
        |_, _| {},
        prox_fc,
        &mut x,
        &mut dual,
        &pcfg,
        objective,
        callback,
    )?;
    Ok((x, log))
}

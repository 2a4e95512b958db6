//! Total-variation compressed sensing: `min_x ½‖A x − y/s‖² + λ TV(x)` with the isotropic TV
//! of [`crate::tv`], solved by Chambolle–Pock PDHG with `K = [A; μ∇]`,
//! `F(u, v) = ½‖u − y/s‖² + (λ/μ)‖v‖_{2,1}`, `G = 0`. The gradient block is scaled by
//! `μ = sqrt(L/8)` so that both blocks have norm ≈ `sqrt(L)`, `L ≥ ‖A‖²`; then
//! `‖K‖² ≤ 2L` and the steps are `τ = 0.99/(ρ sqrt(2L))`, `σ = 0.99 ρ/sqrt(2L)` with balance `ρ`.
//! (BART's `pics -R T:3:0:λ` solves the same problem with anisotropic, periodic TV by ADMM.)

use std::ops::ControlFlow;

use amri_core::{KSpace, C32};
use amri_ops::LinearOperator;
use ndarray::Array4;

use super::{check_slice_problem, no_progress, run_slices, DataScaling, Progress, Reconstruction};
use crate::alg::{pdhg, power, IterInfo, Objective, PdhgConfig, PowerConfig, SolveLog};
use crate::error::{ReconError, Result};
use crate::tv::{grad, grad_adjoint, project_iso, tv};

/// Settings of [`tv_recon`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TvConfig {
    /// Regularisation weight `λ ≥ 0` on the scaled problem.
    pub lambda: f32,
    /// Number of PDHG iterations.
    pub iterations: usize,
    /// Stop early when the relative change of the iterate falls below `tol` (0: never).
    pub tol: f64,
    /// Primal–dual step balance `ρ > 0` (`σ/τ = ρ²`).
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
/// (no data scaling here). `lipschitz` bounds `‖A‖²`; `None` estimates it by power iteration.
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
        grad(x, r, c, g);
        g.iter_mut().for_each(|v| *v *= mu);
    };
    let kh = |yd: &[C32], out: &mut [C32]| {
        let (a, g) = yd.split_at(m);
        op.adjoint(a, out);
        grad_adjoint(g, r, c, &mut tmp);
        out.iter_mut().zip(&tmp).for_each(|(o, t)| *o += t * mu);
    };
    let prox_fc = |sigma: f32, w: &mut [C32]| {
        let (a, g) = w.split_at_mut(m);
        let inv = 1.0 / (1.0 + sigma);
        a.iter_mut()
            .zip(y)
            .for_each(|(ai, yi)| *ai = (*ai - yi * sigma) * inv);
        project_iso(radius, g);
    };
    let mut ax = vec![C32::new(0.0, 0.0); if cfg.track_objective { m } else { 0 }];
    let mut obj = |x: &[C32]| -> f64 {
        op.forward(x, &mut ax);
        0.5 * crate::alg::dist_sqr(&ax, y) + cfg.lambda as f64 * tv(x, r, c)
    };
    let objective: Objective<'_> = if cfg.track_objective {
        Some(&mut obj)
    } else {
        None
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

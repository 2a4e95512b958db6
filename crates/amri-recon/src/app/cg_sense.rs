//! CG-SENSE (Pruessmann et al. 2001): `min_x ½‖A x − y/s‖² + ½λ‖x‖²`, solved by conjugate
//! gradient on the normal equations `(A^H A + λI) x = A^H y/s` (BART `pics -l2 -r λ`, which
//! also uses CG; BART's objective is `‖A x − y‖² + λ‖x‖²`, the same minimiser).

use std::ops::ControlFlow;

use amri_core::{KSpace, C32};
use amri_ops::LinearOperator;
use ndarray::Array4;

use super::{check_slice_problem, no_progress, run_slices, DataScaling, Progress, Reconstruction};
use crate::alg::{cg, CgConfig, IterInfo, SolveLog};
use crate::error::Result;

/// Settings of [`cg_sense`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CgSenseConfig {
    /// Tikhonov weight `λ ≥ 0` on the scaled problem (0: plain least squares).
    pub lambda: f32,
    /// Maximum number of CG iterations (BART `pics -i`, default 30).
    pub iterations: usize,
    /// Stop when `‖A^H y − (A^H A + λ) x‖ / ‖A^H y‖ < tol`.
    pub tol: f64,
    /// Data scaling (see [`crate::app`]).
    pub scaling: DataScaling,
}

impl Default for CgSenseConfig {
    fn default() -> Self {
        Self {
            lambda: 0.0,
            iterations: 30,
            tol: 1e-6,
            scaling: DataScaling::Bart,
        }
    }
}

/// CG-SENSE of every slice of `ks` (maps resolved as [`super::resolve_maps`] does), starting
/// from zero; images `[slice, row, col]` in the units of the input.
pub fn cg_sense(
    ks: &KSpace,
    maps: Option<&Array4<C32>>,
    cfg: &CgSenseConfig,
) -> Result<Reconstruction> {
    cg_sense_with(ks, maps, cfg, &no_progress)
}

/// [`cg_sense`] with a progress callback (slice index, iteration report) that can cancel.
pub fn cg_sense_with(
    ks: &KSpace,
    maps: Option<&Array4<C32>>,
    cfg: &CgSenseConfig,
    progress: Progress<'_>,
) -> Result<Reconstruction> {
    run_slices(ks, maps, cfg.scaling, |inp| {
        let i = inp.index;
        cg_sense_slice(inp.op, &inp.y, cfg, |info| progress(i, info))
    })
}

/// CG-SENSE of one slice for any operator `A` from `[rows, cols]` images to data `y` (no data
/// scaling here): solves `(A^H A + λI) x = A^H y` from `x = 0`; returns `x` row-major.
pub fn cg_sense_slice<F>(
    op: &dyn LinearOperator,
    y: &[C32],
    cfg: &CgSenseConfig,
    callback: F,
) -> Result<(Vec<C32>, SolveLog)>
where
    F: FnMut(&IterInfo) -> ControlFlow<()>,
{
    let [r, c] = check_slice_problem(op, y)?;
    let mut aty = vec![C32::new(0.0, 0.0); r * c];
    op.adjoint(y, &mut aty);
    let mut x = vec![C32::new(0.0, 0.0); r * c];
    let ccfg = CgConfig {
        iterations: cfg.iterations,
        tol: cfg.tol,
        lambda: cfg.lambda,
    };
    let log = cg(|v, o| op.normal(v, o), &aty, &mut x, &ccfg, callback)?;
    Ok((x, log))
}

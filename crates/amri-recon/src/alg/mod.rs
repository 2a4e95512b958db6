//! Bare iterative algorithms on flat complex vectors, in the manner of BART's `italgos` and
//! SigPy's `Alg`: each takes plain callables (operators, gradients, proximal maps) on caller
//! slices, a `Config` that implements `Default`, and a progress callback.
//!
//! - [`cg()`]: conjugate gradient for `N x = b` with `N` Hermitian positive semi-definite;
//! - [`power()`]: power iteration for the largest eigenvalue of `A^H A` (Lipschitz constants);
//! - [`fista()`]: FISTA for `min f(x) + g(x)`, `f` smooth with `L`-Lipschitz gradient;
//! - [`pdhg()`]: Chambolle–Pock primal–dual hybrid gradient for `min_x F(K x) + G(x)`;
//! - [`admm()`]: ADMM for `min_x ½‖A x − y‖² + f(G x)` with warm-started inner CG (BART's
//!   `pics` ADMM).
//!
//! Every solver allocates its work vectors once, before the first iteration, calls the
//! callback after each iteration with an [`IterInfo`], stops when the callback returns
//! [`ControlFlow::Break`], after `iterations` iterations, or when the relative change of the
//! iterate `‖x_{k+1} − x_k‖ / ‖x_{k+1}‖` falls below `tol` (CG: the relative residual
//! `‖b − N x‖ / ‖b‖`), and returns a [`SolveLog`].
//!
//! Vectors are `&[C32]` with the plain Euclidean inner product `<a, b> = Σ conj(a_i) b_i`;
//! reductions accumulate in `f64`.

pub mod admm;
pub mod cg;
pub mod fista;
pub mod pdhg;
pub mod power;

pub use admm::{admm, AdmmConfig};
pub use cg::{cg, CgConfig};
pub use fista::{fista, FistaConfig};
pub use pdhg::{pdhg, PdhgConfig};
pub use power::{power, PowerConfig};

pub use std::ops::ControlFlow;

use amri_core::C32;

/// What a solver reports after each iteration (to draw progress, log, or cancel).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct IterInfo {
    /// Iteration just completed, counting from 1.
    pub iter: usize,
    /// Objective value at the current iterate when the solver computes it (FISTA, PDHG, ADMM when
    /// given an objective callable; CG: the quadratic `½ x^H N x − Re(b^H x)`), else `None`.
    pub objective: Option<f64>,
    /// Residual norm: CG `‖b − N x‖₂`; FISTA the norm of the gradient-map step
    /// `‖x_{k+1} − z_k‖₂ / step`; PDHG the primal step `‖x_{k+1} − x_k‖₂ / τ`; ADMM the primal
    /// residual `‖G x − z‖₂`.
    pub residual: f64,
    /// Relative change of the iterate `‖x_{k+1} − x_k‖₂ / ‖x_{k+1}‖₂` (0 when both are zero).
    pub rel_change: f64,
}

/// Why a solver stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// Ran the configured number of iterations.
    MaxIterations,
    /// The convergence measure fell below `tol`.
    Converged,
    /// The callback returned [`ControlFlow::Break`]; the iterate is the last one computed.
    Cancelled,
    /// Nothing to do (zero right-hand side in CG, zero iterations asked, or an exact solution).
    Trivial,
}

/// The record of one solve: every iteration's [`IterInfo`] and the reason for stopping.
#[derive(Clone, Debug, PartialEq)]
pub struct SolveLog {
    /// One entry per completed iteration, in order.
    pub history: Vec<IterInfo>,
    /// Why the solver stopped.
    pub stop: Stop,
}

impl SolveLog {
    /// Number of iterations completed.
    pub fn iterations(&self) -> usize {
        self.history.len()
    }

    /// The last iteration's report, if any iteration ran.
    pub fn last(&self) -> Option<&IterInfo> {
        self.history.last()
    }

    /// Records one iteration, reports it to `callback` and says whether the solver stops: on a
    /// `Break` from the callback ([`Stop::Cancelled`]) or when `converged` ([`Stop::Converged`]).
    pub(crate) fn record<F>(&mut self, info: IterInfo, callback: &mut F, converged: bool) -> bool
    where
        F: FnMut(&IterInfo) -> ControlFlow<()>,
    {
        self.history.push(info);
        if callback(&info).is_break() {
            self.stop = Stop::Cancelled;
            return true;
        }
        if converged {
            self.stop = Stop::Converged;
            return true;
        }
        false
    }

    pub(crate) fn with_capacity(n: usize) -> Self {
        Self {
            history: Vec::with_capacity(n),
            stop: Stop::MaxIterations,
        }
    }
}

/// An optional objective callable `x ↦ f(x) + g(x)` for the iteration log of FISTA and PDHG.
pub type Objective<'a> = Option<&'a mut dyn FnMut(&[C32]) -> f64>;

/// A callback that never cancels, for callers that only want the returned [`SolveLog`].
pub fn no_callback(_: &IterInfo) -> ControlFlow<()> {
    ControlFlow::Continue(())
}

/// `<a, b> = Σ conj(a_i) b_i`, accumulated in `f64`.
pub fn dot(a: &[C32], b: &[C32]) -> num_complex::Complex64 {
    let (mut re, mut im) = (0.0f64, 0.0f64);
    for (x, y) in a.iter().zip(b) {
        let (xr, xi, yr, yi) = (x.re as f64, x.im as f64, y.re as f64, y.im as f64);
        re += xr * yr + xi * yi;
        im += xr * yi - xi * yr;
    }
    num_complex::Complex64::new(re, im)
}

/// `‖a‖₂²`, accumulated in `f64`.
pub fn norm_sqr(a: &[C32]) -> f64 {
    a.iter().map(|v| v.norm_sqr() as f64).sum()
}

/// `‖a‖₂`, accumulated in `f64`.
pub fn norm(a: &[C32]) -> f64 {
    norm_sqr(a).sqrt()
}

/// `‖a − b‖₂²`, accumulated in `f64`.
pub fn dist_sqr(a: &[C32], b: &[C32]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).norm_sqr() as f64)
        .sum()
}

/// `‖x_new − x_old‖ / ‖x_new‖` from squared norms, 0 when both vanish.
pub(crate) fn rel(diff_sqr: f64, new_sqr: f64) -> f64 {
    if new_sqr > 0.0 {
        (diff_sqr / new_sqr).sqrt()
    } else if diff_sqr > 0.0 {
        f64::INFINITY
    } else {
        0.0
    }
}

/// Checks that a solver buffer has the expected length.
pub(crate) fn check_len(what: &str, expected: usize, got: usize) -> crate::Result<()> {
    if expected == got {
        Ok(())
    } else {
        Err(crate::ReconError::shape(what, &[expected], &[got]))
    }
}

/// Returns [`crate::ReconError::NonFinite`] if `v` is NaN or infinite.
pub(crate) fn check_finite(what: &str, v: f64) -> crate::Result<()> {
    if v.is_finite() {
        Ok(())
    } else {
        Err(crate::ReconError::NonFinite(format!("{what} is {v}")))
    }
}

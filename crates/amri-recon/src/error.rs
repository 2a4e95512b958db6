//! The error type of amri-recon.

use thiserror::Error;

/// Errors raised by the solvers, proximal operators and reconstruction methods.
#[derive(Debug, Error)]
pub enum ReconError {
    /// Array shapes that must agree do not.
    #[error("shape mismatch for {what}: expected {expected:?}, got {got:?}")]
    Shape {
        /// Which argument was wrong (e.g. "initial guess of cg", "coil maps").
        what: String,
        /// The shape (or length) that was expected.
        expected: Vec<usize>,
        /// The shape (or length) that was given.
        got: Vec<usize>,
    },
    /// A parameter is outside its allowed range; the message names the allowed values.
    #[error("invalid parameter `{name}`: {msg}")]
    Param {
        /// The parameter's name as the caller spells it.
        name: &'static str,
        /// What is allowed and what was given.
        msg: String,
    },
    /// The input holds NaN or infinite values, or a solver produced them (diverged).
    #[error("non-finite values: {0}")]
    NonFinite(String),
    /// Multi-coil data came without coil sensitivity maps and none could be estimated.
    #[error("multi-coil data ({0} coils) need coil sensitivity maps: pass them or store them in the KSpace")]
    MissingMaps(usize),
    /// The scan holds data the classical methods do not reconstruct (e.g. Gaussian random
    /// projections); the message says what it holds.
    #[error("unsupported data: {0}")]
    Unsupported(String),
    /// An error from amri-ops (building an operator).
    #[error(transparent)]
    Ops(#[from] amri_ops::error::OpsError),
    /// An error from amri-core.
    #[error(transparent)]
    Core(#[from] amri_core::CoreError),
}

impl ReconError {
    /// Builds a [`ReconError::Param`] for parameter `name`.
    pub fn param(name: &'static str, msg: impl Into<String>) -> Self {
        Self::Param {
            name,
            msg: msg.into(),
        }
    }

    /// Builds a [`ReconError::Shape`].
    pub fn shape(what: impl Into<String>, expected: &[usize], got: &[usize]) -> Self {
        Self::Shape {
            what: what.into(),
            expected: expected.to_vec(),
            got: got.to_vec(),
        }
    }
}

/// Result with [`ReconError`].
pub type Result<T> = std::result::Result<T, ReconError>;

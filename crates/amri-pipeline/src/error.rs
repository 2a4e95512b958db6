//! The pipeline's error type.

/// Result with [`PipelineError`].
pub type Result<T> = std::result::Result<T, PipelineError>;

/// What can go wrong while building or running a [`crate::Plan`].
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// Neither an override nor the protocol names a method.
    #[error(
        "no reconstruction method: name one, or give a protocol with a [reconstruction] section"
    )]
    NoMethod,
    /// An override is out of range; `key` is the parameter's name as in a protocol's
    /// `[reconstruction]` section (`lambda`, `iterations`, `steps`, …).
    #[error("{key} must be {expected}, got {value}")]
    Invalid {
        /// Parameter name.
        key: &'static str,
        /// The value given, as text.
        value: String,
        /// What is allowed, in words.
        expected: &'static str,
    },
    /// Two settings that exclude each other were both given.
    #[error("{key} cannot be combined with {with}")]
    Conflict {
        /// Parameter name.
        key: &'static str,
        /// The other setting, in words.
        with: &'static str,
    },
    /// The given noise covariance cannot whiten (not square, Hermitian or positive definite).
    #[error("noise covariance {source_name}: {source}")]
    NoiseCov {
        /// Where the covariance came from.
        source_name: String,
        /// Why.
        source: amri_ops::OpsError,
    },
    /// Prewhitening or coil compression of the measured data failed.
    #[error("preparing the measured data: {0}")]
    Prepare(amri_ops::OpsError),
    /// A learned-prior parameter was given with a method it does not apply to.
    #[error("{key} applies to {applies_to}, not {method}")]
    NotForMethod {
        /// Parameter name.
        key: &'static str,
        /// The methods it applies to, in words.
        applies_to: &'static str,
        /// The plan's method.
        method: &'static str,
    },
    /// A learned-prior method has no model to load, or none was loaded before running.
    #[error("{method} needs a learned prior (a checkpoint folder or a training run folder)")]
    NeedsModel {
        /// The plan's method.
        method: &'static str,
    },
    /// The model folder could not be loaded as a prior.
    #[error("{path}: cannot load the prior: {source}")]
    LoadPrior {
        /// The model folder.
        path: String,
        /// Why.
        source: amri_diffusion::DiffusionError,
    },
    /// The run was cancelled through its cancel flag; partial results are dropped.
    #[error("cancelled")]
    Cancelled,
    /// A classical reconstruction failed.
    #[error(transparent)]
    Recon(#[from] amri_recon::ReconError),
    /// The measured data could not be turned into the prior's problems or scaled.
    #[error("measured data for the learned prior: {0}")]
    Measured(amri_diffusion::DiffusionError),
    /// The learned prior failed on one slice.
    #[error("{method}, slice {slice}: {source}")]
    Slice {
        /// The plan's method.
        method: &'static str,
        /// Slice index (0-based).
        slice: usize,
        /// Why.
        source: amri_diffusion::DiffusionError,
    },
}

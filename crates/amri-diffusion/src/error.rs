//! The crate's error type.

/// Errors raised by amri-diffusion.
#[derive(Debug, thiserror::Error)]
pub enum DiffusionError {
    /// A tensor operation failed inside candle (shape mismatch, device, dtype, I/O of weights).
    #[error("candle: {0}")]
    Candle(#[from] candle_core::Error),
    /// A configuration is invalid (the message names the field and why).
    #[error("invalid configuration: {0}")]
    Config(String),
    /// An input tensor has the wrong shape for the operation (the message gives expected/got).
    #[error("shape mismatch: {0}")]
    Shape(String),
    /// A file could not be written or read.
    #[error("i/o error on {path}: {source}")]
    Io {
        /// The file that failed.
        path: std::path::PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The corruption model (amri-ops) refused a configuration or a draw.
    #[error("corruption model: {0}")]
    Ops(#[from] amri_ops::OpsError),
    /// A solver of the data step (amri-recon's conjugate gradient) failed.
    #[error("data step: {0}")]
    Solver(#[from] amri_recon::ReconError),
    /// A requested combination is not implemented (the message says which and what works).
    #[error("not supported: {0}")]
    Unsupported(String),
    /// A long computation (sampling) was cancelled by its caller before it finished.
    #[error("cancelled")]
    Cancelled,
    /// A JSON model card could not be (de)serialised.
    #[error("json: {0}")]
    Json(#[from] serde_json::Error),
}

/// Result alias used throughout amri-diffusion.
pub type Result<T> = std::result::Result<T, DiffusionError>;

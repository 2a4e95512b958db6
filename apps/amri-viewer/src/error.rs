//! The viewer's error type: every failure becomes a one-line message shown in the window.

/// Result with [`ViewerError`].
pub type Result<T> = std::result::Result<T, ViewerError>;

/// What can go wrong while loading, reconstructing or exporting.
#[derive(Debug, thiserror::Error)]
pub enum ViewerError {
    /// Reading or writing a file failed (the message names the file).
    #[error(transparent)]
    Io(#[from] amri_io::IoError),
    /// A simulation or operator parameter was rejected.
    #[error(transparent)]
    Ops(#[from] amri_ops::OpsError),
    /// A reconstruction failed.
    #[error(transparent)]
    Recon(#[from] amri_recon::ReconError),
    /// A protocol could not be loaded or is invalid.
    #[error(transparent)]
    Protocol(#[from] amri_protocol::ProtocolError),
    /// A learned-prior reconstruction failed (e.g. a model that does not match the data).
    #[error(transparent)]
    Diffusion(#[from] amri_diffusion::DiffusionError),
    /// A reconstruction plan was invalid or its run failed.
    #[error(transparent)]
    Pipeline(#[from] amri_pipeline::PipelineError),
    /// Arrays or metrics were inconsistent.
    #[error(transparent)]
    Core(#[from] amri_core::CoreError),
    /// Anything else, described in words.
    #[error("{0}")]
    Msg(String),
}

impl ViewerError {
    /// An error described by `msg`.
    pub fn msg(msg: impl Into<String>) -> Self {
        ViewerError::Msg(msg.into())
    }
}

//! Errors of figure drawing.

/// Why a figure could not be drawn or written.
#[derive(Debug, thiserror::Error)]
pub enum FigureError {
    /// The figure's inputs do not fit together (the message says which and how).
    #[error("{0}")]
    Layout(String),
    /// The PNG could not be written.
    #[error(transparent)]
    Io(#[from] amri_io::IoError),
}

/// Result alias of amri-figures.
pub type Result<T> = std::result::Result<T, FigureError>;

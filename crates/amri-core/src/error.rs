//! The error type of amri-core.

use thiserror::Error;

/// Errors raised by core type constructors and numeric routines.
#[derive(Debug, Error)]
pub enum CoreError {
    /// Array shapes that must agree do not.
    #[error("shape mismatch: {0}")]
    Shape(String),
    /// A value is outside its allowed range (NaN, negative size, singular affine...).
    #[error("invalid value: {0}")]
    Invalid(String),
}

/// Result with [`CoreError`].
pub type Result<T> = std::result::Result<T, CoreError>;

//! The error type of amri-ops.

use thiserror::Error;

/// Errors raised when building or applying operators, masks and corruption models.
#[derive(Debug, Error)]
pub enum OpsError {
    /// An array or buffer does not have the shape the operator expects.
    #[error("shape mismatch for {what}: expected {expected:?}, got {got:?}")]
    Shape {
        /// Which argument was wrong (e.g. "input of FourierSampling", "maps").
        what: String,
        /// The shape that was expected.
        expected: Vec<usize>,
        /// The shape that was given.
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
    /// A value of an acquisition is outside its allowed range ([`crate::acquisition::Acquisition::validate`]).
    #[error("invalid {key} = {value}: {allowed}")]
    Invalid {
        /// Dotted key relative to the acquisition, as in TOML (e.g. `corruption.acceleration`).
        key: String,
        /// The value given.
        value: String,
        /// What is allowed.
        allowed: String,
    },
    /// An error from amri-core.
    #[error(transparent)]
    Core(#[from] amri_core::CoreError),
}

impl OpsError {
    /// Builds a [`OpsError::Param`] for parameter `name`.
    pub fn param(name: &'static str, msg: impl Into<String>) -> Self {
        Self::Param {
            name,
            msg: msg.into(),
        }
    }

    /// Builds an [`OpsError::Invalid`] for `key` with the given value and allowed range.
    pub fn invalid(
        key: impl Into<String>,
        value: impl ToString,
        allowed: impl Into<String>,
    ) -> Self {
        Self::Invalid {
            key: key.into(),
            value: value.to_string(),
            allowed: allowed.into(),
        }
    }

    /// Prefixes the key of an [`OpsError::Invalid`] with `prefix.` (other errors unchanged), so a
    /// nested check reports the key path of its caller.
    pub fn under(self, prefix: &str) -> Self {
        match self {
            Self::Invalid {
                key,
                value,
                allowed,
            } => Self::Invalid {
                key: format!("{prefix}.{key}"),
                value,
                allowed,
            },
            other => other,
        }
    }

    /// Builds a [`OpsError::Shape`].
    pub fn shape(what: impl Into<String>, expected: &[usize], got: &[usize]) -> Self {
        Self::Shape {
            what: what.into(),
            expected: expected.to_vec(),
            got: got.to_vec(),
        }
    }
}

/// Result with [`OpsError`].
pub type Result<T> = std::result::Result<T, OpsError>;

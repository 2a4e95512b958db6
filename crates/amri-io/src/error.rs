//! The error type of amri-io: every variant names the file.

use std::path::PathBuf;

use thiserror::Error;

/// Errors raised while reading or writing a file; each names the file and what is wrong.
#[derive(Debug, Error)]
pub enum IoError {
    /// The operating system refused (missing file, permission, disk full...).
    #[error("{path}: {source}")]
    Os {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The file is not valid for its format (bad magic, truncated, inconsistent header...).
    #[error("{path}: {msg}")]
    Malformed {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        msg: String,
    },
    /// The file is valid but uses something amri does not read (datatype, transfer syntax...).
    #[error("{path}: unsupported: {msg}")]
    Unsupported {
        /// The file.
        path: PathBuf,
        /// What is not supported.
        msg: String,
    },
    /// The file's extension names no format amri knows.
    #[error("{path}: unknown file format (expected .nii, .nii.gz, .dcm or a DICOM folder, .cfl/.hdr, .npy, .h5, .png)")]
    UnknownFormat {
        /// The file.
        path: PathBuf,
    },
    /// The data given to a writer cannot be stored in that format.
    #[error("{path}: cannot write: {msg}")]
    Unwritable {
        /// The file.
        path: PathBuf,
        /// Why.
        msg: String,
    },
}

impl IoError {
    /// A [`IoError::Malformed`] for `path`.
    pub fn malformed(path: impl Into<PathBuf>, msg: impl Into<String>) -> Self {
        IoError::Malformed {
            path: path.into(),
            msg: msg.into(),
        }
    }

    /// A [`IoError::Unsupported`] for `path`.
    pub fn unsupported(path: impl Into<PathBuf>, msg: impl Into<String>) -> Self {
        IoError::Unsupported {
            path: path.into(),
            msg: msg.into(),
        }
    }

    /// A [`IoError::Os`] for `path`.
    pub fn os(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        IoError::Os {
            path: path.into(),
            source,
        }
    }
}

/// Result with [`IoError`].
pub type Result<T> = std::result::Result<T, IoError>;

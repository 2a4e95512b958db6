//! Core types of amri: complex arrays, images that carry their geometry, and measured k-space.
//!
//! Conventions shared by every amri crate (see `docs/architecture.md`):
//! - image volumes are [`Volume`]s with data axes `[frame, slice, row, col]` in C order;
//! - measured k-space is [`KSpace`] with axes `[slice, coil, row, col]`, DC at `(rows/2, cols/2)`;
//! - world coordinates are millimetres in the RAS+ convention that NIfTI uses ([`Affine`]).
//!
//! ```
//! use amri_core::{Affine, Volume};
//! use ndarray::Array4;
//! let v = Volume::new(Array4::<f32>::zeros((1, 2, 4, 4)), Affine::from_spacing([0.5, 0.5, 2.0]));
//! assert_eq!(v.voxel_size(), [0.5, 0.5, 2.0]);
//! assert_eq!(v.affine.orientation(), ['R', 'A', 'S']);
//! ```

pub mod error;
pub mod fft;
pub mod geometry;
pub mod metrics;
pub mod volume;

pub use error::{CoreError, Result};
pub use geometry::Affine;
pub use volume::{finite_range, KSpace, MeasuredDomain, Metadata, PatientInfo, SeriesInfo, Volume};

/// Single-precision complex number, the sample type of k-space and complex images.
pub type C32 = num_complex::Complex32;

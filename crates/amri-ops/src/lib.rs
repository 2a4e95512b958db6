//! The amri operator library: everything that turns a clean image into what a scanner or a
//! corruption process measures, and back through the adjoint.

pub mod blocks;
pub mod coils;
pub mod corruption;
pub mod error;
pub mod espirit;
pub mod fourier;
pub mod gaussian_cs;
pub mod linop;
pub mod masks;
pub mod noise;
pub mod pixel_mask;
pub mod sense;
pub mod testing;

pub use error::{OpsError, Result};
pub use linop::LinearOperator;

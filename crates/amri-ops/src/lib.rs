//! The amri operator library: everything that turns a clean image into what a scanner or a
//! corruption process measures, and back through the adjoint.
//!
//! Entry points: the [`LinearOperator`] trait and its combinators ([`linop`]); operators
//! [`fourier::FourierSampling`], [`sense::Sense`], [`pixel_mask::PixelMask`], [`blocks::Blocks`],
//! [`gaussian_cs::GaussianCs`]; the [`noise::Noise`] model; noise prewhitening ([`whiten`]) and SVD coil compression
//! ([`cc`]); mask generators ([`masks`]); the
//! ambient-training corruption model ([`corruption`]); the one description of an acquisition
//! ([`acquisition::Acquisition`]) and its measurement recipe ([`simulate`]); operator self-tests
//! ([`testing`]).
//!
//! Conventions: arrays are C-order `[.., row, col]` (`[coil, row, col]` for multi-coil k-space);
//! k-space is centred (DC at `(rows/2, cols/2)`) with amri-core's orthonormal `fft2c`; masks are
//! `f32` 0/1 with 1 = measured, and operators return the full grid with zeros where unmeasured.
//!
//! ```
//! use amri_core::C32;
//! use amri_ops::masks::{cartesian_mask, KspacePattern};
//! use amri_ops::{fourier::FourierSampling, testing::adjoint_error, LinearOperator};
//! // fastMRI-style 4x random mask, 8 % centre lines, undersampling the columns (axis 1).
//! let m = cartesian_mask(64, 64, 1, KspacePattern::Random, 4.0, 0.08, 0)?;
//! let a = FourierSampling::new(m.mask)?;
//! assert!(adjoint_error(&a, 0) < 1e-5);
//! let x = vec![C32::new(1.0, 0.0); 64 * 64];
//! let mut y = vec![C32::default(); 64 * 64];
//! a.forward(&x, &mut y); // caller-owned buffers: no allocation in the hot path
//! # Ok::<(), amri_ops::OpsError>(())
//! ```

pub mod acquisition;
pub mod blocks;
pub mod cc;
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
pub mod seed;
pub mod sense;
pub mod simulate;
pub mod testing;
pub mod whiten;

pub use error::{OpsError, Result};
pub use linop::LinearOperator;

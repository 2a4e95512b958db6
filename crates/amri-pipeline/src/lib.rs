//! amri-pipeline: one reconstruction plan for the command line, the demo and the viewer.
//!
//! A [`Plan`] is a protocol's `[reconstruction]` settings merged with [`Overrides`] (flags, panel
//! values) and validated ([`Plan::new`]); [`Params::defaults`] is the one place where the method
//! defaults live (λ, iterations, tolerance, seed, sampler steps and samples, ζ, σ, data
//! consistency). [`Plan::run`] reconstructs a [`amri_core::KSpace`] with any method: zero-filled,
//! CG-SENSE, l1-wavelet and TV through `amri-recon`, one-step and iterative through
//! `amri-diffusion` (with a prior attached by [`Plan::with_prior`] or [`Plan::load_prior`]),
//! reporting progress through a callback and stopping when its cancel flag is set. Before any
//! method runs, [`Plan::prepare`] prewhitens the data (noise samples or a given covariance) and
//! compresses the coils when the plan asks for it.
//!
//! Images are magnitudes `[slice, row, col]` in the units of the input; k-space follows the
//! workspace conventions (`[slice, coil, row, col]`, centred orthonormal FFT).
//!
//! ```
//! use std::sync::atomic::AtomicBool;
//! use amri_core::{KSpace, C32};
//! use amri_pipeline::{Overrides, Plan};
//! use amri_protocol::Method;
//!
//! # fn main() -> amri_pipeline::Result<()> {
//! // one slice, one coil, 8×8, fully sampled: a constant k-space
//! let ks = KSpace::new(ndarray::Array4::from_elem((1, 1, 8, 8), C32::new(1.0, 0.0)));
//! let plan = Plan::new(None, &Overrides { method: Some(Method::CgSense), iterations: Some(5), ..Default::default() })?;
//! assert_eq!(plan.params().iterations, 5);
//! assert_eq!(plan.params().lambda, 0.0); // CG-SENSE's default
//! let r = plan.run(&ks, &|| {}, &AtomicBool::new(false))?;
//! assert_eq!(r.image.dim(), (1, 8, 8));
//! # Ok(())
//! # }
//! ```

pub mod autopick;
pub mod error;
pub mod plan;
pub mod run;

pub use autopick::{model_search_path, pick_prior, DataSummary, Pick, PickError};
pub use error::{PipelineError, Result};
pub use plan::{NoiseCovariance, Overrides, Params, Plan};
pub use run::Recon;

//! Seeded, reproducible sampling-mask generators. Every mask is a `[rows, cols]` `f32` array of
//! 0/1 with 1 = measured, on the centred k-space grid (DC at `(rows/2, cols/2)`).
//!
//! - [`cartesian`]: 1-D line patterns with a fully sampled centre, parameters as fastMRI's
//!   `RandomMaskFunc`, `EquispacedMaskFunc`, `EquispacedMaskFractionFunc`;
//! - [`poisson`]: 2-D variable-density Poisson disc with a calibration box, as SigPy's
//!   `mri.poisson` (bisection on the radius slope to hit the target acceleration).

pub mod cartesian;
pub mod poisson;

pub use cartesian::{cartesian_mask, CartesianMask, CartesianPattern};
pub use poisson::{poisson_mask, PoissonMask, PoissonParams};

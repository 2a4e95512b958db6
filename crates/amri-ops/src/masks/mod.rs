//! Seeded, reproducible sampling-mask generators. Every mask is a `[rows, cols]` `f32` array of
//! 0/1 with 1 = measured, on the centred k-space grid (DC at `(rows/2, cols/2)`).
//!
//! - [`cartesian`]: 1-D line patterns with a fully sampled centre, parameters as fastMRI's
//!   `RandomMaskFunc`, `EquispacedMaskFunc`, `EquispacedMaskFractionFunc`;
//! - [`poisson`]: 2-D variable-density Poisson disc with a calibration box, as SigPy's
//!   `mri.poisson` (bisection on the radius slope to hit the target acceleration).

//!
//! [`KspacePattern`] names every pattern, and [`check_acceleration`] / [`check_center_fraction`]
//! hold the one copy of the rules on their parameters that acquisitions, the corruption model and
//! the generators share.

use serde::{Deserialize, Serialize};

use crate::error::{OpsError, Result};

pub mod cartesian;
pub mod poisson;

pub use cartesian::{cartesian_mask, CartesianMask};
pub use poisson::{poisson_mask, PoissonMask, PoissonParams};

/// K-space sampling pattern: 1-D Cartesian lines ([`cartesian`]) or 2-D Poisson disc
/// ([`poisson`]); serde names are snake_case (`random`, `equispaced`, ...).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KspacePattern {
    /// fastMRI `RandomMaskFunc` lines.
    Random,
    /// fastMRI `EquispacedMaskFunc` lines (integer acceleration, centre on top).
    Equispaced,
    /// fastMRI `EquispacedMaskFractionFunc` lines (adjusted spacing, total ≈ n/R).
    EquispacedFraction,
    /// 2-D variable-density Poisson disc (SigPy), calibration box `round(n·center_fraction)`.
    Poisson,
}

/// Largest acceleration an acquisition may ask for.
pub const MAX_ACCELERATION: f64 = 64.0;

/// The rule on an acceleration for `pattern`: finite, in `[1, max]` (`max` may be infinite), and
/// an integer for [`KspacePattern::Equispaced`]. Errors are [`OpsError::Invalid`] with key
/// `acceleration`.
pub fn check_acceleration(pattern: KspacePattern, acceleration: f64, max: f64) -> Result<()> {
    if !(acceleration.is_finite() && acceleration >= 1.0 && acceleration <= max) {
        let allowed = if max.is_finite() {
            format!("a number in [1, {max}]")
        } else {
            "a finite number ≥ 1".to_string()
        };
        return Err(OpsError::invalid("acceleration", acceleration, allowed));
    }
    if pattern == KspacePattern::Equispaced && acceleration.fract() != 0.0 {
        return Err(OpsError::invalid(
            "acceleration",
            acceleration,
            "an integer for pattern = \"equispaced\" (use equispaced_fraction for non-integers)",
        ));
    }
    Ok(())
}

/// The rule on a centre (calibration) fraction: in `[0, 1]`. Errors are [`OpsError::Invalid`]
/// with key `center_fraction`.
pub fn check_center_fraction(center_fraction: f64) -> Result<()> {
    if !(0.0..=1.0).contains(&center_fraction) {
        return Err(OpsError::invalid(
            "center_fraction",
            center_fraction,
            "a fraction in [0, 1]",
        ));
    }
    Ok(())
}

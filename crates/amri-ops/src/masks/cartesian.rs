//! 1-D Cartesian undersampling with a fully sampled centre, with the parameter meanings of
//! fastMRI's `RandomMaskFunc`, `EquispacedMaskFunc` and `EquispacedMaskFractionFunc`
//! (fastmri/data/subsample.py).
//!
//! For `n` lines along the undersampled axis, `center_fraction` `cf` and `acceleration` `R`:
//! - centre: `n_low = round(n · cf)` lines (Python `round`, ties to even), occupying
//!   `[pad, pad + n_low)` with `pad = (n − n_low + 1) / 2` (integer division);
//! - [`KspacePattern::Random`]: every line is also kept independently with probability
//!   `p = (n/R − n_low) / (n − n_low)`, so the expected number of lines is `n/R` *counting the
//!   centre lines in the budget*, exactly as fastMRI does (random draws may fall in the centre);
//! - [`KspacePattern::Equispaced`]: fastMRI ≥ 0.2 `EquispacedMaskFunc`: lines
//!   `offset, offset + R, offset + 2R, …` with `offset` uniform in `[0, round(R))`; `R` must be an
//!   integer here, as numpy slicing requires there. Total ≈ `n/R + n_low` lines (the centre is
//!   on top of the budget);
//! - [`KspacePattern::EquispacedFraction`]: fastMRI `EquispacedMaskFractionFunc` (the v0.1
//!   `EquispacedMaskFunc`): an adjusted spacing `R' = R (n_low − n) / (n_low R − n)` so that the
//!   total is ≈ `n/R`; lines `round(offset + k R')` (ties to even, as `np.around`) for
//!   `offset + k R' < n − 1`, `offset` uniform in `[0, round(R'))`.
//!
//! Differences from fastMRI: the random generator is ChaCha8 seeded with `seed` (numpy's
//! `RandomState` streams cannot be reproduced), so a given seed gives a different but equally
//! distributed mask; the mask is returned on the 2-D `[rows, cols]` grid with lines along
//! `axis` (fastMRI returns a broadcastable `[1, .., n, 1]` tensor along `shape[-2]` because its
//! last axis holds real/imaginary parts — same phase-encode axis as our default `axis = 1`);
//! parameters that fastMRI would silently turn into a negative probability or spacing are
//! errors here.

use std::ops::Range;

use crate::error::{OpsError, Result};
use crate::masks::{check_acceleration, check_center_fraction, KspacePattern};
use ndarray::Array2;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// A drawn Cartesian mask with its metadata.
#[derive(Clone, Debug, PartialEq)]
pub struct CartesianMask {
    /// `[rows, cols]` mask of 0/1 (1 = measured), constant along the fully sampled axis.
    pub mask: Array2<f32>,
    /// Which line along `axis` is measured (`lines.len()` = size of `axis`).
    pub lines: Vec<bool>,
    /// Indices along `axis` of the fully sampled centre (auto-calibration, ACS) lines.
    pub acs: Range<usize>,
    /// The undersampled axis of `mask` (0 = rows, 1 = columns).
    pub axis: usize,
    /// Achieved acceleration `n / (number of measured lines)`.
    pub acceleration: f64,
}

/// Python 3 `round` / numpy `around` for the values used here: nearest, ties to even.
fn round_even(x: f64) -> f64 {
    x.round_ties_even()
}

/// fastMRI's centre: `n_low = round(n·cf)` lines at `[pad, pad + n_low)`,
/// `pad = (n − n_low + 1) / 2`.
pub fn center_lines(n: usize, center_fraction: f64) -> Result<Range<usize>> {
    check_center_fraction(center_fraction)?;
    let n_low = (round_even(n as f64 * center_fraction) as usize).min(n);
    let pad = (n - n_low).div_ceil(2);
    Ok(pad..pad + n_low)
}

/// fastMRI `RandomMaskFunc`'s per-line probability `(n/R − n_low)/(n − n_low)` with
/// `n_low = round(n·cf)` (0 when the centre covers everything).
pub fn random_line_probability(n: usize, acceleration: f64, center_fraction: f64) -> Result<f64> {
    let n_low = center_lines(n, center_fraction)?.len();
    Ok(if n_low == n {
        0.0
    } else {
        (n as f64 / acceleration - n_low as f64) / (n as f64 - n_low as f64)
    })
}

/// Draws the 1-D line pattern of length `n` (see module docs for the exact rule); returns the
/// measured lines and the centre (ACS) range. `offset`, as fastMRI's `offset` argument, fixes the
/// first equispaced line instead of drawing it (ignored by `Random`; must be `< n`).
pub fn cartesian_lines(
    n: usize,
    pattern: KspacePattern,
    acceleration: f64,
    center_fraction: f64,
    seed: u64,
    offset: Option<usize>,
) -> Result<(Vec<bool>, Range<usize>)> {
    if n == 0 {
        return Err(OpsError::param(
            "shape",
            "the undersampled axis must have ≥ 1 line",
        ));
    }
    check_acceleration(pattern, acceleration, f64::INFINITY)?;
    let acs = center_lines(n, center_fraction)?;
    let n_low = acs.len();
    let nf = n as f64;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut lines = vec![false; n];
    if let Some(o) = offset {
        if o >= n {
            return Err(OpsError::param("offset", format!("must be < {n}, got {o}")));
        }
    }
    match pattern {
        KspacePattern::Random => {
            if nf / acceleration < n_low as f64 {
                return Err(OpsError::param(
                    "acceleration",
                    format!(
                        "with {n_low} centre lines of {n} the acceleration can be at most {:.4} \
                         (RandomMaskFunc needs n/acceleration ≥ round(n·center_fraction)), got {acceleration}",
                        nf / n_low as f64
                    ),
                ));
            }
            let prob = random_line_probability(n, acceleration, center_fraction)?;
            for l in lines.iter_mut() {
                *l = rng.random::<f64>() < prob;
            }
        }
        KspacePattern::Equispaced => {
            // check_acceleration: an integer ≥ 1
            let r = acceleration as usize;
            let offset = offset.unwrap_or_else(|| rng.random_range(0..r));
            for l in lines.iter_mut().skip(offset).step_by(r) {
                *l = true;
            }
        }
        KspacePattern::EquispacedFraction => {
            let den = n_low as f64 * acceleration - nf;
            if n_low == 0 || den >= 0.0 {
                return Err(OpsError::param(
                    "acceleration",
                    format!(
                        "EquispacedFraction needs 0 < round(n·center_fraction)·acceleration < n \
                         (n = {n}, centre lines = {n_low}), got acceleration {acceleration}"
                    ),
                ));
            }
            let adjusted = acceleration * (n_low as f64 - nf) / den;
            let hi = round_even(adjusted).max(1.0) as usize;
            let offset = offset.unwrap_or_else(|| rng.random_range(0..hi)) as f64;
            let mut k = 0usize;
            loop {
                let pos = offset + k as f64 * adjusted;
                if pos >= nf - 1.0 {
                    break;
                }
                let idx = round_even(pos) as usize;
                if idx < n {
                    lines[idx] = true;
                }
                k += 1;
            }
        }
        KspacePattern::Poisson => {
            return Err(OpsError::param(
                "pattern",
                "poisson is a 2-D pattern: draw it with masks::poisson_mask",
            ))
        }
    }
    for l in &mut lines[acs.clone()] {
        *l = true;
    }
    Ok((lines, acs))
}

/// Draws a `[rows, cols]` Cartesian mask undersampled along `axis` (1 = columns, fastMRI's
/// phase-encode default; 0 = rows), reproducible for `seed`.
pub fn cartesian_mask(
    rows: usize,
    cols: usize,
    axis: usize,
    pattern: KspacePattern,
    acceleration: f64,
    center_fraction: f64,
    seed: u64,
) -> Result<CartesianMask> {
    if rows == 0 || cols == 0 {
        return Err(OpsError::param(
            "shape",
            format!("mask must be non-empty, got [{rows}, {cols}]"),
        ));
    }
    let n = match axis {
        0 => rows,
        1 => cols,
        _ => {
            return Err(OpsError::param(
                "axis",
                format!("must be 0 (rows) or 1 (columns), got {axis}"),
            ))
        }
    };
    let (lines, acs) = cartesian_lines(n, pattern, acceleration, center_fraction, seed, None)?;
    let mask = Array2::from_shape_fn((rows, cols), |(i, j)| {
        let k = if axis == 0 { i } else { j };
        if lines[k] {
            1.0
        } else {
            0.0
        }
    });
    let count = lines.iter().filter(|l| **l).count().max(1);
    Ok(CartesianMask {
        mask,
        acceleration: n as f64 / count as f64,
        lines,
        acs,
        axis,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn centre_matches_fastmri_arithmetic() {
        // n = 368, cf = 0.08: round(29.44) = 29, pad = (368 - 29 + 1) // 2 = 170.
        assert_eq!(center_lines(368, 0.08).unwrap(), 170..199);
        // n = 320, cf = 0.04: round(12.8) = 13, pad = 154.
        assert_eq!(center_lines(320, 0.04).unwrap(), 154..167);
        // Ties to even: n = 10, cf = 0.25 -> round(2.5) = 2, pad = 4.
        assert_eq!(center_lines(10, 0.25).unwrap(), 4..6);
        assert_eq!(center_lines(10, 0.35).unwrap(), 3..7); // round(3.5) = 4, pad = 3
    }

    #[test]
    fn equispaced_is_offset_stride_plus_centre() {
        let (lines, acs) =
            cartesian_lines(64, KspacePattern::Equispaced, 4.0, 0.08, 3, None).unwrap();
        let off = lines.iter().position(|l| *l).unwrap();
        assert!(off < 4);
        for (k, l) in lines.iter().enumerate() {
            let expect = (k >= off && (k - off) % 4 == 0) || acs.contains(&k);
            assert_eq!(*l, expect, "line {k}");
        }
    }

    #[test]
    fn equispaced_fraction_matches_numpy_reference() {
        // numpy (see tests/fixtures/make_fixtures.py): n = 32, cf = 0.125, R = 4:
        // n_low = 4, adjusted = 4*(4-32)/(16-32) = 7, offset = 2 ->
        // arange(2, 31, 7) = [2, 9, 16, 23, 30]; centre pad = 14 -> [14, 18).
        let (lines, acs) =
            cartesian_lines(32, KspacePattern::EquispacedFraction, 4.0, 0.125, 0, None).unwrap();
        assert_eq!(acs, 14..18);
        let off = lines.iter().position(|l| *l).unwrap();
        let expect: Vec<usize> = (0..)
            .map(|k| off + 7 * k)
            .take_while(|p| *p < 31)
            .chain(14..18)
            .collect();
        for (k, l) in lines.iter().enumerate() {
            assert_eq!(*l, expect.contains(&k), "line {k}");
        }
    }

    #[test]
    fn out_of_range_parameters_are_errors() {
        assert!(cartesian_mask(8, 8, 2, KspacePattern::Random, 4.0, 0.1, 0).is_err());
        assert!(cartesian_lines(32, KspacePattern::Random, 0.5, 0.1, 0, None).is_err());
        assert!(cartesian_lines(32, KspacePattern::Random, 8.0, 0.5, 0, None).is_err());
        assert!(cartesian_lines(32, KspacePattern::Equispaced, 2.5, 0.1, 0, None).is_err());
        assert!(
            cartesian_lines(32, KspacePattern::EquispacedFraction, 8.0, 0.25, 0, None).is_err()
        );
        assert!(cartesian_lines(32, KspacePattern::Random, 4.0, 1.5, 0, None).is_err());
    }
}

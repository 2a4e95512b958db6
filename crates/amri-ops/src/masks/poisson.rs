//! 2-D variable-density Poisson-disc sampling with a fully sampled calibration box, following
//! SigPy's `sigpy.mri.poisson` (itself close to BART's `poisson`).
//!
//! For a `[rows, cols] = [ny, nx]` grid and calibration size `[cy, cx]`:
//! - normalised distance from the calibration box:
//!   `x = max(|j − nx/2| − cx/2, 0) / max_j(..)`, `y` likewise, `r = sqrt(x² + y²)`;
//! - the minimum spacing grows linearly away from the centre: radii
//!   `rx = max(1, (1 + slope·r)·nx/max(nx, ny))`, `ry = max(1, (1 + slope·r)·ny/max(nx, ny))`;
//! - Bridson's dart throwing from a random seed point: each active point proposes up to
//!   `max_attempts` candidates at normalised distance `sqrt(1 + 3u)` ∈ [1, 2) and a uniform
//!   angle; a candidate (snapped to its integer grid point) is accepted when no sampled point
//!   lies strictly inside the candidate's ellipse `(Δx/rx)² + (Δy/ry)² < 1`;
//! - the calibration box rows `[trunc(ny/2 − cy/2), trunc(ny/2 + cy/2))` (columns likewise) is
//!   set to 1; with `crop_corner`, points with `r ≥ 1` (the k-space corners) are dropped;
//! - `slope` is found by bisection on `[0, max(nx, ny)]` until the achieved acceleration
//!   `rows·cols / #samples` is within `tol` of the target, re-seeding the generator with the
//!   same `seed` at every step (as SigPy does), so the result is reproducible.
//!
//! Differences from SigPy: ChaCha8 instead of numpy's generator; the distance test uses the
//! candidate's radius and the integer grid position that is actually stored (SigPy tests the
//! unsnapped position against each existing point's radius), which makes the minimum-distance
//! property exact on the grid; bisection stops after [`MAX_BISECTION_STEPS`].

use std::ops::Range;

use ndarray::Array2;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::error::{OpsError, Result};

/// Upper bound on bisection steps on the radius slope.
pub const MAX_BISECTION_STEPS: usize = 64;

/// Parameters of [`poisson_mask`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PoissonParams {
    /// Target acceleration `rows·cols / #samples`, > 1.
    pub acceleration: f64,
    /// Fully sampled calibration box `[rows, cols]` at the k-space centre (may be `[0, 0]`).
    pub calib: [usize; 2],
    /// Drop samples outside the inscribed ellipse (`r ≥ 1`), as SigPy's `crop_corner`.
    pub crop_corner: bool,
    /// Candidates tried per active point before it is retired (SigPy: 30).
    pub max_attempts: usize,
    /// Accepted absolute error on the acceleration (SigPy: 0.1).
    pub tol: f64,
}

impl Default for PoissonParams {
    fn default() -> Self {
        Self {
            acceleration: 4.0,
            calib: [0, 0],
            crop_corner: true,
            max_attempts: 30,
            tol: 0.1,
        }
    }
}

/// A drawn Poisson-disc mask and its metadata.
#[derive(Clone, Debug, PartialEq)]
pub struct PoissonMask {
    /// `[rows, cols]` 0/1 mask (1 = measured), DC at `(rows/2, cols/2)`.
    pub mask: Array2<f32>,
    /// Achieved acceleration `rows·cols / #samples`.
    pub acceleration: f64,
    /// Rows of the fully sampled calibration box.
    pub calib_rows: Range<usize>,
    /// Columns of the fully sampled calibration box.
    pub calib_cols: Range<usize>,
    /// The radius slope found by bisection.
    pub slope: f64,
    /// Per-pixel minimum spacing `[ry, rx]` used for the final mask (`[rows, cols]` each).
    pub radii: [Array2<f64>; 2],
}

/// The calibration index range `[trunc(n/2 − c/2), trunc(n/2 + c/2))` of SigPy.
fn calib_range(n: usize, c: usize) -> Range<usize> {
    let a = (n as f64 / 2.0 - c as f64 / 2.0).max(0.0) as usize;
    let b = ((n as f64 / 2.0 + c as f64 / 2.0) as usize).min(n);
    a..b
}

struct Geometry {
    ny: usize,
    nx: usize,
    r: Vec<f64>,
}

impl Geometry {
    fn new(ny: usize, nx: usize, calib: [usize; 2]) -> Result<Self> {
        let dist = |n: usize, c: usize| -> Vec<f64> {
            (0..n)
                .map(|i| ((i as f64 - n as f64 / 2.0).abs() - c as f64 / 2.0).max(0.0))
                .collect()
        };
        let (dy, dx) = (dist(ny, calib[0]), dist(nx, calib[1]));
        let my = dy.iter().copied().fold(0.0, f64::max);
        let mx = dx.iter().copied().fold(0.0, f64::max);
        if my == 0.0 || mx == 0.0 {
            return Err(OpsError::param(
                "calib",
                format!(
                    "calibration box {calib:?} must leave k-space outside it in a {ny}×{nx} grid"
                ),
            ));
        }
        let mut r = vec![0.0; ny * nx];
        for i in 0..ny {
            for j in 0..nx {
                r[i * nx + j] = ((dy[i] / my).powi(2) + (dx[j] / mx).powi(2)).sqrt();
            }
        }
        Ok(Self { ny, nx, r })
    }

    fn radii(&self, slope: f64) -> (Vec<f64>, Vec<f64>) {
        let m = self.nx.max(self.ny) as f64;
        let f = |n: usize| -> Vec<f64> {
            self.r
                .iter()
                .map(|r| ((1.0 + r * slope) * n as f64 / m).max(1.0))
                .collect()
        };
        (f(self.nx), f(self.ny))
    }
}

/// One dart-throwing pass (no calibration, no crop) with radii `(rx, ry)`.
fn dart_throw(g: &Geometry, rx: &[f64], ry: &[f64], max_attempts: usize, seed: u64) -> Vec<bool> {
    let (ny, nx) = (g.ny, g.nx);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut mask = vec![false; ny * nx];
    let mut active: Vec<(usize, usize)> = Vec::with_capacity(ny * nx / 4 + 1);
    let start = (rng.random_range(0..ny), rng.random_range(0..nx));
    mask[start.0 * nx + start.1] = true;
    active.push(start);
    while !active.is_empty() {
        let i = rng.random_range(0..active.len());
        let (py, px) = active[i];
        let (prx, pry) = (rx[py * nx + px], ry[py * nx + px]);
        let mut accepted = None;
        for _ in 0..max_attempts {
            let v = (rng.random::<f64>() * 3.0 + 1.0).sqrt();
            let t = 2.0 * std::f64::consts::PI * rng.random::<f64>();
            let qx = px as f64 + v * prx * t.cos();
            let qy = py as f64 + v * pry * t.sin();
            if !(qx >= 0.0 && qx < nx as f64 && qy >= 0.0 && qy < ny as f64) {
                continue;
            }
            let (qxi, qyi) = (qx as usize, qy as usize);
            if mask[qyi * nx + qxi] {
                continue;
            }
            let (qrx, qry) = (rx[qyi * nx + qxi], ry[qyi * nx + qxi]);
            let x0 = (qxi as f64 - qrx).ceil().max(0.0) as usize;
            let x1 = ((qxi as f64 + qrx).floor() as usize).min(nx - 1);
            let y0 = (qyi as f64 - qry).ceil().max(0.0) as usize;
            let y1 = ((qyi as f64 + qry).floor() as usize).min(ny - 1);
            let mut ok = true;
            'scan: for y in y0..=y1 {
                for x in x0..=x1 {
                    if mask[y * nx + x] {
                        let dx = (x as f64 - qxi as f64) / qrx;
                        let dy = (y as f64 - qyi as f64) / qry;
                        if dx * dx + dy * dy < 1.0 {
                            ok = false;
                            break 'scan;
                        }
                    }
                }
            }
            if ok {
                accepted = Some((qyi, qxi));
                break;
            }
        }
        match accepted {
            Some(q) => {
                mask[q.0 * nx + q.1] = true;
                active.push(q);
            }
            None => {
                active.swap_remove(i);
            }
        }
    }
    mask
}

/// Draws a variable-density Poisson-disc mask on a `[rows, cols]` grid (see module docs);
/// reproducible for `seed`. Errors name the parameter when the target cannot be reached.
pub fn poisson_mask(
    rows: usize,
    cols: usize,
    params: &PoissonParams,
    seed: u64,
) -> Result<PoissonMask> {
    let p = params;
    if rows < 2 || cols < 2 {
        return Err(OpsError::param(
            "shape",
            format!("grid must be at least 2×2, got {rows}×{cols}"),
        ));
    }
    if !(p.acceleration.is_finite() && p.acceleration > 1.0) {
        return Err(OpsError::param(
            "acceleration",
            format!("must be finite and > 1, got {}", p.acceleration),
        ));
    }
    if p.max_attempts == 0 {
        return Err(OpsError::param("max_attempts", "must be ≥ 1"));
    }
    if !(p.tol.is_finite() && p.tol > 0.0) {
        return Err(OpsError::param(
            "tol",
            format!("must be finite and > 0, got {}", p.tol),
        ));
    }
    let g = Geometry::new(rows, cols, p.calib)?;
    let (cr, cc) = (calib_range(rows, p.calib[0]), calib_range(cols, p.calib[1]));
    let total = (rows * cols) as f64;
    let calib_count = (cr.len() * cc.len()) as f64;
    if calib_count > 0.0 && total / calib_count <= p.acceleration {
        return Err(OpsError::param(
            "acceleration",
            format!(
                "the {}×{} calibration box alone gives acceleration {:.3}; target {} is unreachable",
                cr.len(),
                cc.len(),
                total / calib_count,
                p.acceleration
            ),
        ));
    }
    let build = |slope: f64| {
        let (rx, ry) = g.radii(slope);
        let mut m = dart_throw(&g, &rx, &ry, p.max_attempts, seed);
        for i in cr.clone() {
            for j in cc.clone() {
                m[i * cols + j] = true;
            }
        }
        if p.crop_corner {
            for (v, r) in m.iter_mut().zip(&g.r) {
                *v &= *r < 1.0;
            }
        }
        let count = m.iter().filter(|v| **v).count().max(1);
        (m, total / count as f64, rx, ry)
    };
    let (mut lo, mut hi) = (0.0f64, rows.max(cols) as f64);
    let mut best: Option<(f64, f64)> = None; // (error, slope)
    for _ in 0..MAX_BISECTION_STEPS {
        let slope = 0.5 * (lo + hi);
        let (_, acc, _, _) = build(slope);
        let err = (acc - p.acceleration).abs();
        if best.is_none_or(|(e, _)| err < e) {
            best = Some((err, slope));
        }
        if err < p.tol {
            break;
        }
        if acc < p.acceleration {
            lo = slope;
        } else {
            hi = slope;
        }
    }
    let (err, slope) = best.unwrap_or((f64::INFINITY, 0.0));
    if err >= p.tol {
        return Err(OpsError::param(
            "acceleration",
            format!(
                "cannot reach acceleration {} within tol {} on a {rows}×{cols} grid (closest error {err:.3})",
                p.acceleration, p.tol
            ),
        ));
    }
    let (m, acc, rx, ry) = build(slope);
    let mask = Array2::from_shape_fn(
        (rows, cols),
        |(i, j)| if m[i * cols + j] { 1.0 } else { 0.0 },
    );
    let to2 = |v: Vec<f64>| Array2::from_shape_vec((rows, cols), v);
    let (ry, rx) = match (to2(ry), to2(rx)) {
        (Ok(a), Ok(b)) => (a, b),
        _ => {
            return Err(OpsError::param(
                "shape",
                "internal radius grid has the wrong size",
            ))
        }
    };
    Ok(PoissonMask {
        mask,
        acceleration: acc,
        calib_rows: cr,
        calib_cols: cc,
        slope,
        radii: [ry, rx],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calib_range_matches_sigpy_truncation() {
        assert_eq!(calib_range(320, 24), 148..172);
        assert_eq!(calib_range(33, 10), 11..21);
        assert_eq!(calib_range(32, 11), 10..21);
        assert_eq!(calib_range(32, 0), 16..16);
    }

    #[test]
    fn unreachable_targets_are_errors() {
        let p = PoissonParams {
            acceleration: 1.0,
            ..Default::default()
        };
        assert!(poisson_mask(32, 32, &p, 0).is_err());
        let p = PoissonParams {
            acceleration: 8.0,
            calib: [16, 16],
            ..Default::default()
        };
        assert!(
            poisson_mask(32, 32, &p, 0).is_err(),
            "calibration alone gives R = 4"
        );
        let p = PoissonParams {
            calib: [40, 4],
            ..Default::default()
        };
        assert!(poisson_mask(32, 32, &p, 0).is_err());
    }
}

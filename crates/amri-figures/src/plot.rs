//! Line plots: log₁₀(y) against x on a white 480×320 canvas (the training loss curve,
//! `loss.png`).

use std::path::Path;

use ndarray::Array3;

use crate::error::Result;

/// Height, width and margin of a plot in pixels.
const H: usize = 320;
const W: usize = 480;
const M: usize = 24;

/// A 480×320 RGB line plot of log₁₀(y) against x: white background, grey axes along the left
/// and bottom margins (24 px), the curve in blue, its x and log₁₀(y) ranges spanning the plot
/// area. Points whose y is not finite and positive are left out; with fewer than two left only
/// the axes are drawn. `points` are in drawing order (x ascending).
pub fn log_line_plot(points: &[(f64, f64)]) -> Array3<u8> {
    let (h, w, m) = (H, W, M);
    let mut img = Array3::<u8>::from_elem((h, w, 3), 255);
    for x in m..w - m {
        img.slice_mut(ndarray::s![h - m, x, ..]).fill(120);
    }
    for y in m..h - m {
        img.slice_mut(ndarray::s![y, m, ..]).fill(120);
    }
    let pts: Vec<(f64, f64)> = points
        .iter()
        .filter(|p| p.1.is_finite() && p.1 > 0.0)
        .map(|p| (p.0, p.1.log10()))
        .collect();
    if pts.len() >= 2 {
        let (x0, x1) = (pts[0].0, pts[pts.len() - 1].0.max(pts[0].0 + 1.0));
        let lo = pts.iter().map(|p| p.1).fold(f64::INFINITY, f64::min);
        let hi = pts.iter().map(|p| p.1).fold(f64::NEG_INFINITY, f64::max);
        let hi = if hi - lo < 1e-9 { lo + 1.0 } else { hi };
        let px = |p: (f64, f64)| -> (f64, f64) {
            (
                m as f64 + (p.0 - x0) / (x1 - x0) * (w - 2 * m - 1) as f64,
                (h - m) as f64 - (p.1 - lo) / (hi - lo) * (h - 2 * m - 1) as f64,
            )
        };
        for pair in pts.windows(2) {
            let (a, b) = (px(pair[0]), px(pair[1]));
            let n = ((b.0 - a.0).abs().max((b.1 - a.1).abs()).ceil() as usize).max(1);
            for k in 0..=n {
                let t = k as f64 / n as f64;
                let (x, y) = (a.0 + t * (b.0 - a.0), a.1 + t * (b.1 - a.1));
                let (xi, yi) = (x.round() as usize, y.round() as usize);
                if yi < h && xi < w {
                    img[[yi, xi, 0]] = 20;
                    img[[yi, xi, 1]] = 90;
                    img[[yi, xi, 2]] = 200;
                }
            }
        }
    }
    img
}

/// Writes [`log_line_plot`] of `points` to `path` as an RGB PNG (atomically).
pub fn write_log_line_plot(path: &Path, points: &[(f64, f64)]) -> Result<()> {
    amri_io::png::write_rgb(path, log_line_plot(points).view())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_curve(img: &Array3<u8>, y: usize, x: usize) -> bool {
        img[[y, x, 0]] == 20 && img[[y, x, 1]] == 90 && img[[y, x, 2]] == 200
    }

    #[test]
    fn a_decade_per_step_is_a_straight_line_corner_to_corner() {
        // y = 10^(-x): log10 falls linearly, so the curve runs from the top-left corner of the
        // plot area to its bottom-right corner.
        let pts: Vec<(f64, f64)> = (0..5).map(|k| (k as f64, 10f64.powi(-k))).collect();
        let img = log_line_plot(&pts);
        assert_eq!(img.dim(), (H, W, 3));
        // the plot area's rows run from M + 1 (top) to H − M (bottom), its columns from M to
        // W − M − 1
        assert!(is_curve(&img, M + 1, M), "first point at the top-left");
        assert!(
            is_curve(&img, H - M, W - M - 1),
            "last point at the bottom-right"
        );
        // the midpoint (x = 2, log10 y = −2) lies halfway
        let mid_x = M as f64 + 0.5 * (W - 2 * M - 1) as f64;
        let mid_y = (H - M) as f64 - 0.5 * (H - 2 * M - 1) as f64;
        assert!(is_curve(
            &img,
            mid_y.round() as usize,
            mid_x.round() as usize
        ));
        // axes in grey, background white
        assert_eq!(img[[H - M, M + 10, 0]], 120);
        assert_eq!(img[[M + 10, M, 1]], 120);
        assert_eq!(img[[5, 5, 2]], 255);
    }

    #[test]
    fn non_positive_and_non_finite_points_are_left_out() {
        let img = log_line_plot(&[(0.0, 0.0), (1.0, f64::NAN), (2.0, 1.0)]);
        // one valid point: axes only
        assert!(!(0..H).any(|y| (0..W).any(|x| is_curve(&img, y, x))));
    }
}

//! Image-quality metrics exactly as fastMRI defines them (`fastmri/evaluate.py`), on magnitude
//! images, computed in f64.
//!
//! - [`nmse`]: `‖gt − pred‖² / ‖gt‖²` (Frobenius norms over all samples).
//! - [`psnr`]: scikit-image's `peak_signal_noise_ratio` with `data_range = gt.max()`:
//!   `10·log10(data_range² / mean((gt − pred)²))`, in dB.
//! - [`ssim`]: scikit-image's `structural_similarity` as fastMRI calls it: a 7×7 uniform window,
//!   `K1 = 0.01`, `K2 = 0.03`, `data_range = gt.max()`, sample (co)variances (`N/(N−1)` with
//!   `N = 49`), averaged over the pixels whose window lies inside the image (scikit-image crops
//!   `(7−1)/2 = 3` pixels from every border, so the reflected border padding never matters).
//! - [`ssim_volume`]: fastMRI's volume SSIM: one `data_range = max` over the whole reference
//!   volume, SSIM of each slice with that range, mean over slices. [`psnr_volume`] and
//!   [`nmse_volume`] treat the volume as one array, as fastMRI does.
//!
//! Arrays are `[row, col]` images or `[slice, row, col]` volumes of magnitudes. Every function
//! checks its inputs and returns [`CoreError`] for mismatched shapes, empty arrays, NaN or
//! infinite samples, and a reference whose maximum (the data range) is not positive.
//!
//! ```
//! use amri_core::metrics::{nmse, psnr, ssim};
//! use ndarray::Array2;
//! let gt = Array2::from_shape_fn((16, 16), |(i, j)| ((i * j) % 7) as f32 + 1.0);
//! let pred = gt.mapv(|v| v + 0.1);
//! assert!((nmse(gt.view(), pred.view()).unwrap() - 0.01 * 256.0 / gt.mapv(|v| v * v).sum() as f64).abs() < 1e-9);
//! assert!((psnr(gt.view(), pred.view()).unwrap() - 20.0 * (7.0f64 / 0.1).log10()).abs() < 1e-4);
//! assert_eq!(ssim(gt.view(), gt.view()).unwrap(), 1.0);
//! ```

use ndarray::{ArrayView, ArrayView2, ArrayView3, Axis, Dimension};
use rayon::prelude::*;

use crate::{CoreError, Result};

/// Side of the square SSIM window, in pixels (fastMRI/scikit-image default).
pub const SSIM_WIN_SIZE: usize = 7;
/// SSIM luminance stabiliser constant: `C1 = (K1·data_range)²`.
pub const SSIM_K1: f64 = 0.01;
/// SSIM contrast stabiliser constant: `C2 = (K2·data_range)²`.
pub const SSIM_K2: f64 = 0.03;

/// The three fastMRI metrics of one reconstruction against its reference.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Metrics {
    /// Normalised mean squared error `‖gt − pred‖² / ‖gt‖²` (dimensionless).
    pub nmse: f64,
    /// Peak signal-to-noise ratio with the reference maximum as peak, in dB.
    pub psnr: f64,
    /// Mean structural similarity (dimensionless, at most 1).
    pub ssim: f64,
}

/// Checks equal non-empty shapes and finite samples in both arrays.
fn check<D: Dimension>(gt: &ArrayView<f32, D>, pred: &ArrayView<f32, D>) -> Result<()> {
    if gt.shape() != pred.shape() {
        return Err(CoreError::Shape(format!(
            "metric inputs differ in shape: reference {:?}, prediction {:?}",
            gt.shape(),
            pred.shape()
        )));
    }
    if gt.is_empty() {
        return Err(CoreError::Shape(format!(
            "metric inputs are empty (shape {:?})",
            gt.shape()
        )));
    }
    if !gt.iter().all(|v| v.is_finite()) {
        return Err(CoreError::Invalid(
            "reference contains NaN or infinite samples".into(),
        ));
    }
    if !pred.iter().all(|v| v.is_finite()) {
        return Err(CoreError::Invalid(
            "prediction contains NaN or infinite samples".into(),
        ));
    }
    Ok(())
}

/// Checks a data range: finite and strictly positive.
fn check_range(data_range: f64) -> Result<f64> {
    if data_range.is_finite() && data_range > 0.0 {
        Ok(data_range)
    } else {
        Err(CoreError::Invalid(format!(
            "data range must be finite and positive, got {data_range} \
             (an all-zero reference has data range 0)"
        )))
    }
}

/// `gt.max()` as the data range, checked positive.
fn max_range<D: Dimension>(gt: &ArrayView<f32, D>) -> Result<f64> {
    let m = gt.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    check_range(m as f64)
}

fn nmse_any<D: Dimension>(gt: ArrayView<f32, D>, pred: ArrayView<f32, D>) -> Result<f64> {
    check(&gt, &pred)?;
    let (mut num, mut den) = (0.0f64, 0.0f64);
    for (&g, &p) in gt.iter().zip(pred.iter()) {
        let (g, p) = (g as f64, p as f64);
        num += (g - p) * (g - p);
        den += g * g;
    }
    if den == 0.0 {
        return Err(CoreError::Invalid(
            "NMSE is undefined for an all-zero reference".into(),
        ));
    }
    Ok(num / den)
}

fn psnr_any<D: Dimension>(
    gt: ArrayView<f32, D>,
    pred: ArrayView<f32, D>,
    data_range: Option<f64>,
) -> Result<f64> {
    check(&gt, &pred)?;
    let r = match data_range {
        Some(r) => check_range(r)?,
        None => max_range(&gt)?,
    };
    let sse: f64 = gt
        .iter()
        .zip(pred.iter())
        .map(|(&g, &p)| (g as f64 - p as f64).powi(2))
        .sum();
    let mse = sse / gt.len() as f64;
    // Identical images: +inf, as numpy's division gives.
    Ok(10.0 * (r * r / mse).log10())
}

/// Normalised mean squared error of a 2-D image: `‖gt − pred‖² / ‖gt‖²`.
pub fn nmse(gt: ArrayView2<f32>, pred: ArrayView2<f32>) -> Result<f64> {
    nmse_any(gt, pred)
}

/// Normalised mean squared error of a `[slice, row, col]` volume, over all its samples.
pub fn nmse_volume(gt: ArrayView3<f32>, pred: ArrayView3<f32>) -> Result<f64> {
    nmse_any(gt, pred)
}

/// PSNR of a 2-D image in dB with `data_range = gt.max()`; `+inf` when the images are equal.
pub fn psnr(gt: ArrayView2<f32>, pred: ArrayView2<f32>) -> Result<f64> {
    psnr_any(gt, pred, None)
}

/// PSNR of a 2-D image in dB with an explicit data range (fastMRI's `maxval` argument).
pub fn psnr_with_range(gt: ArrayView2<f32>, pred: ArrayView2<f32>, data_range: f64) -> Result<f64> {
    psnr_any(gt, pred, Some(data_range))
}

/// PSNR of a `[slice, row, col]` volume in dB over all samples, `data_range = gt.max()`.
pub fn psnr_volume(gt: ArrayView3<f32>, pred: ArrayView3<f32>) -> Result<f64> {
    psnr_any(gt, pred, None)
}

/// SSIM of a 2-D image (at least 7×7) with `data_range = gt.max()`, as fastMRI computes it.
pub fn ssim(gt: ArrayView2<f32>, pred: ArrayView2<f32>) -> Result<f64> {
    check(&gt, &pred)?;
    let r = max_range(&gt)?;
    ssim_core(gt, pred, r)
}

/// SSIM of a 2-D image (at least 7×7) with an explicit data range.
pub fn ssim_with_range(gt: ArrayView2<f32>, pred: ArrayView2<f32>, data_range: f64) -> Result<f64> {
    check(&gt, &pred)?;
    ssim_core(gt, pred, check_range(data_range)?)
}

/// fastMRI's volume SSIM: per-slice SSIM with one `data_range = max` of the whole reference
/// volume, averaged over slices (axis 0 of `[slice, row, col]`).
pub fn ssim_volume(gt: ArrayView3<f32>, pred: ArrayView3<f32>) -> Result<f64> {
    check(&gt, &pred)?;
    let r = max_range(&gt)?;
    ssim_volume_core(gt, pred, r)
}

/// Volume SSIM as [`ssim_volume`] with an explicit data range (fastMRI's `maxval` argument).
pub fn ssim_volume_with_range(
    gt: ArrayView3<f32>,
    pred: ArrayView3<f32>,
    data_range: f64,
) -> Result<f64> {
    check(&gt, &pred)?;
    ssim_volume_core(gt, pred, check_range(data_range)?)
}

/// NMSE, PSNR and SSIM of a `[slice, row, col]` volume, as fastMRI's `evaluate.py` reports them.
pub fn evaluate_volume(gt: ArrayView3<f32>, pred: ArrayView3<f32>) -> Result<Metrics> {
    Ok(Metrics {
        nmse: nmse_volume(gt, pred)?,
        psnr: psnr_volume(gt, pred)?,
        ssim: ssim_volume(gt, pred)?,
    })
}

fn ssim_volume_core(gt: ArrayView3<f32>, pred: ArrayView3<f32>, r: f64) -> Result<f64> {
    let n = gt.len_of(Axis(0));
    let per_slice: Vec<f64> = (0..n)
        .into_par_iter()
        .map(|s| ssim_core(gt.index_axis(Axis(0), s), pred.index_axis(Axis(0), s), r))
        .collect::<Result<_>>()?;
    Ok(per_slice.iter().sum::<f64>() / n as f64)
}

/// Mean SSIM over the valid (uncropped) region of checked, equal-shape images.
fn ssim_core(gt: ArrayView2<f32>, pred: ArrayView2<f32>, data_range: f64) -> Result<f64> {
    let w = SSIM_WIN_SIZE;
    let (rows, cols) = gt.dim();
    if rows < w || cols < w {
        return Err(CoreError::Shape(format!(
            "SSIM needs images of at least {w}x{w} pixels, got {rows}x{cols}"
        )));
    }
    let (vr, vc) = (rows - w + 1, cols - w + 1);
    // Window sums of x, y, x², y², x·y: first down the columns (valid rows), then along rows.
    let mut vsum = vec![[0.0f64; 5]; vr * cols];
    for j in 0..cols {
        let col: Vec<[f64; 5]> = (0..rows)
            .map(|i| {
                let x = gt[[i, j]] as f64;
                let y = pred[[i, j]] as f64;
                [x, y, x * x, y * y, x * y]
            })
            .collect();
        for i in 0..vr {
            let mut acc = [0.0f64; 5];
            for v in &col[i..i + w] {
                for q in 0..5 {
                    acc[q] += v[q];
                }
            }
            vsum[i * cols + j] = acc;
        }
    }
    let np = (w * w) as f64;
    let cov_norm = np / (np - 1.0);
    let c1 = (SSIM_K1 * data_range).powi(2);
    let c2 = (SSIM_K2 * data_range).powi(2);
    let mut total = 0.0f64;
    for i in 0..vr {
        let row = &vsum[i * cols..(i + 1) * cols];
        for j in 0..vc {
            let mut acc = [0.0f64; 5];
            for v in &row[j..j + w] {
                for q in 0..5 {
                    acc[q] += v[q];
                }
            }
            let [ux, uy, uxx, uyy, uxy] = acc.map(|s| s / np);
            let vx = cov_norm * (uxx - ux * ux);
            let vy = cov_norm * (uyy - uy * uy);
            let vxy = cov_norm * (uxy - ux * uy);
            let a1 = 2.0 * ux * uy + c1;
            let a2 = 2.0 * vxy + c2;
            let b1 = ux * ux + uy * uy + c1;
            let b2 = vx + vy + c2;
            total += (a1 * a2) / (b1 * b2);
        }
    }
    Ok(total / (vr * vc) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{Array2, Array3};

    #[test]
    fn identical_images_are_perfect() {
        let a = Array2::from_shape_fn((9, 11), |(i, j)| (i as f32).sin() + j as f32 * 0.3 + 2.0);
        assert_eq!(nmse(a.view(), a.view()).unwrap(), 0.0);
        assert_eq!(psnr(a.view(), a.view()).unwrap(), f64::INFINITY);
        assert!((ssim(a.view(), a.view()).unwrap() - 1.0).abs() < 1e-12);
    }

    #[test]
    fn psnr_of_a_constant_offset_is_analytic() {
        // mse = d², peak = max → PSNR = 20·log10(max/d).
        let a = Array2::from_shape_fn((8, 8), |(i, j)| (i + j) as f32);
        let b = a.mapv(|v| v - 0.5);
        let want = 20.0 * (14.0f64 / 0.5).log10();
        assert!((psnr(a.view(), b.view()).unwrap() - want).abs() < 1e-9);
        let want = 20.0 * (100.0f64 / 0.5).log10();
        assert!((psnr_with_range(a.view(), b.view(), 100.0).unwrap() - want).abs() < 1e-9);
    }

    #[test]
    fn ssim_of_constant_images_follows_the_formula() {
        // Constant windows: zero variances, SSIM = (2·gx·py + C1) / (gx² + py² + C1).
        let g = Array2::from_elem((8, 10), 2.0f32);
        let p = Array2::from_elem((8, 10), 1.0f32);
        let c1 = (0.01f64 * 2.0).powi(2);
        let want = (2.0 * 2.0 * 1.0 + c1) / (4.0 + 1.0 + c1);
        assert!((ssim(g.view(), p.view()).unwrap() - want).abs() < 1e-12);
    }

    #[test]
    fn bad_inputs_are_errors() {
        let a = Array2::<f32>::ones((8, 8));
        let b = Array2::<f32>::ones((8, 9));
        assert!(matches!(psnr(a.view(), b.view()), Err(CoreError::Shape(_))));
        let e = Array2::<f32>::zeros((0, 8));
        assert!(matches!(nmse(e.view(), e.view()), Err(CoreError::Shape(_))));
        let mut n = a.clone();
        n[[3, 3]] = f32::NAN;
        assert!(matches!(
            ssim(a.view(), n.view()),
            Err(CoreError::Invalid(_))
        ));
        assert!(matches!(
            ssim(n.view(), a.view()),
            Err(CoreError::Invalid(_))
        ));
        let z = Array2::<f32>::zeros((8, 8));
        assert!(matches!(
            psnr(z.view(), a.view()),
            Err(CoreError::Invalid(_))
        ));
        assert!(matches!(
            ssim(z.view(), a.view()),
            Err(CoreError::Invalid(_))
        ));
        assert!(matches!(
            nmse(z.view(), a.view()),
            Err(CoreError::Invalid(_))
        ));
        assert!(matches!(
            psnr_with_range(a.view(), a.view(), f64::NAN),
            Err(CoreError::Invalid(_))
        ));
        let small = Array2::<f32>::ones((6, 20));
        assert!(matches!(
            ssim(small.view(), small.view()),
            Err(CoreError::Shape(_))
        ));
        let v = Array3::<f32>::ones((2, 8, 8));
        let w = Array3::<f32>::ones((3, 8, 8));
        assert!(matches!(
            ssim_volume(v.view(), w.view()),
            Err(CoreError::Shape(_))
        ));
    }
}

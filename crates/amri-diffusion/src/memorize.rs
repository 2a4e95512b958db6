//! Memorisation analysis: how close samples from a prior come to its training slices.
//!
//! The published study (Daras et al. 2023) embeds images with DINOv2 and compares cosine
//! similarities. DINOv2 weights cannot be loaded here (no network access at run time, a
//! ~300 MB ViT, and features trained on natural images), so amri measures similarity directly
//! on pixels: the **normalised cross-correlation (NCC) of magnitudes**,
//! `ncc(a, b) = Σ (a − ā)(b − b̄) / sqrt(Σ (a − ā)² Σ (b − b̄)²)` ∈ [−1, 1], optionally maximised
//! over integer shifts `|dr|, |dc| ≤ max_shift` (computed on the overlap of the shifted images),
//! so a copy that is slightly translated still scores near 1. NCC is insensitive to intensity
//! scale and offset, which the per-volume normalisation would otherwise confound. It is a
//! stricter test than DINOv2 similarity (it rewards pixel-level copies, not semantic
//! similarity), so fractions above a threshold are not comparable with the paper's numbers,
//! only between priors measured the same way.

use ndarray::{s, Array2, ArrayView2};

use crate::error::{DiffusionError, Result};

/// NCC of two equally shaped images (0 if either is constant).
pub fn ncc(a: ArrayView2<f32>, b: ArrayView2<f32>) -> Result<f64> {
    if a.dim() != b.dim() {
        return Err(DiffusionError::Shape(format!(
            "ncc of {:?} and {:?}",
            a.shape(),
            b.shape()
        )));
    }
    let n = a.len() as f64;
    if n == 0.0 {
        return Ok(0.0);
    }
    let ma = a.iter().map(|&v| v as f64).sum::<f64>() / n;
    let mb = b.iter().map(|&v| v as f64).sum::<f64>() / n;
    let (mut sab, mut saa, mut sbb) = (0.0, 0.0, 0.0);
    for (&x, &y) in a.iter().zip(b.iter()) {
        let (x, y) = (x as f64 - ma, y as f64 - mb);
        sab += x * y;
        saa += x * x;
        sbb += y * y;
    }
    if saa <= 0.0 || sbb <= 0.0 {
        return Ok(0.0);
    }
    Ok((sab / (saa * sbb).sqrt()).clamp(-1.0, 1.0))
}

/// The largest [`ncc`] of `a` against `b` shifted by `(dr, dc)`, `|dr|, |dc| ≤ max_shift`, on
/// the overlapping region; returns `(ncc, (dr, dc))` (`b` moved by `(dr, dc)` matches `a`).
pub fn ncc_aligned(
    a: ArrayView2<f32>,
    b: ArrayView2<f32>,
    max_shift: usize,
) -> Result<(f64, (isize, isize))> {
    if a.dim() != b.dim() {
        return Err(DiffusionError::Shape(format!(
            "ncc of {:?} and {:?}",
            a.shape(),
            b.shape()
        )));
    }
    let (h, w) = a.dim();
    let m = max_shift.min(h.saturating_sub(1)).min(w.saturating_sub(1)) as isize;
    let mut best = (f64::NEG_INFINITY, (0, 0));
    for dr in -m..=m {
        for dc in -m..=m {
            // a[r, c] vs b[r − dr, c − dc]
            let (ra, rb) = if dr >= 0 {
                (dr as usize..h, 0..h - dr as usize)
            } else {
                (0..h - (-dr) as usize, (-dr) as usize..h)
            };
            let (ca, cb) = if dc >= 0 {
                (dc as usize..w, 0..w - dc as usize)
            } else {
                (0..w - (-dc) as usize, (-dc) as usize..w)
            };
            let v = ncc(
                a.slice(s![ra.clone(), ca.clone()]),
                b.slice(s![rb.clone(), cb.clone()]),
            )?;
            if v > best.0 {
                best = (v, (dr, dc));
            }
        }
    }
    Ok(best)
}

/// The training slice most similar to one sample.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Match {
    /// Index of the nearest training slice.
    pub train_index: usize,
    /// Its similarity (NCC, after alignment when `max_shift > 0`).
    pub similarity: f64,
    /// The shift `(dr, dc)` of the best alignment.
    pub shift: (isize, isize),
}

/// For every sample magnitude, the most similar training magnitude (all the same shape).
pub fn nearest(
    samples: &[Array2<f32>],
    train: &[Array2<f32>],
    max_shift: usize,
) -> Result<Vec<Match>> {
    if train.is_empty() {
        return Err(DiffusionError::Config(
            "no training slices to compare with".into(),
        ));
    }
    samples
        .iter()
        .map(|s| {
            let mut best = Match {
                train_index: 0,
                similarity: f64::NEG_INFINITY,
                shift: (0, 0),
            };
            for (i, t) in train.iter().enumerate() {
                let (v, shift) = ncc_aligned(s.view(), t.view(), max_shift)?;
                if v > best.similarity {
                    best = Match {
                        train_index: i,
                        similarity: v,
                        shift,
                    };
                }
            }
            Ok(best)
        })
        .collect()
}

/// Fraction of `values` strictly above `threshold` (0 for none).
pub fn fraction_above(values: &[f64], threshold: f64) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.iter().filter(|&&v| v > threshold).count() as f64 / values.len() as f64
}

/// Counts of `values` in `bins` equal bins over `[lo, hi]` (values outside are clamped).
pub fn histogram(values: &[f64], bins: usize, lo: f64, hi: f64) -> Vec<usize> {
    let mut h = vec![0usize; bins.max(1)];
    let n = h.len();
    for &v in values {
        let t = ((v - lo) / (hi - lo) * n as f64).floor();
        let k = if t.is_nan() {
            0
        } else {
            (t.max(0.0) as usize).min(n - 1)
        };
        h[k] += 1;
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blob(h: usize, w: usize, r0: f32, c0: f32) -> Array2<f32> {
        Array2::from_shape_fn((h, w), |(r, c)| {
            (-((r as f32 - r0).powi(2) + (c as f32 - c0).powi(2)) / 6.0).exp()
        })
    }

    #[test]
    fn ncc_is_one_for_affine_copies_and_minus_one_for_negatives() -> Result<()> {
        let a = blob(12, 10, 5.0, 4.0);
        let b = a.mapv(|v| 3.0 * v + 2.0);
        assert!((ncc(a.view(), b.view())? - 1.0).abs() < 1e-9);
        let c = a.mapv(|v| -v);
        assert!((ncc(a.view(), c.view())? + 1.0).abs() < 1e-9);
        assert_eq!(ncc(a.view(), Array2::ones((12, 10)).view())?, 0.0);
        assert!(ncc(a.view(), Array2::ones((3, 3)).view()).is_err());
        Ok(())
    }

    #[test]
    fn alignment_recovers_an_integer_shift() -> Result<()> {
        let a = blob(16, 16, 8.0, 7.0);
        let b = blob(16, 16, 6.0, 9.0); // a moved by (−2, +2)
        let plain = ncc(a.view(), b.view())?;
        let (v, shift) = ncc_aligned(a.view(), b.view(), 3)?;
        assert!(v > 0.999 && plain < 0.9, "aligned {v}, plain {plain}");
        assert_eq!(shift, (2, -2));
        Ok(())
    }

    #[test]
    fn nearest_finds_the_copy_and_statistics() -> Result<()> {
        let train = vec![
            blob(8, 8, 2.0, 2.0),
            blob(8, 8, 5.0, 5.0),
            blob(8, 8, 2.0, 6.0),
        ];
        let samples = vec![blob(8, 8, 5.0, 5.0), blob(8, 8, 2.2, 5.8)];
        let m = nearest(&samples, &train, 0)?;
        assert_eq!(m[0].train_index, 1);
        assert!((m[0].similarity - 1.0).abs() < 1e-9);
        assert_eq!(m[1].train_index, 2);
        let sims = [0.5, 0.91, 0.96, 0.995];
        assert_eq!(fraction_above(&sims, 0.9), 0.75);
        assert_eq!(fraction_above(&sims, 0.99), 0.25);
        assert_eq!(histogram(&sims, 4, 0.0, 1.0), vec![0, 0, 1, 3]);
        assert_eq!(histogram(&[-2.0, 5.0], 2, 0.0, 1.0), vec![1, 1]);
        Ok(())
    }
}

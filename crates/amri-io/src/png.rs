//! PNG export of one 2-D slice (grayscale, windowed, 8 or 16 bit) and of RGB figures.
//!
//! Array row 0 is the top line of the picture and column 0 its left edge; nothing is flipped.
//! A grey value `v` maps to `round(clamp((v - min) / (max - min), 0, 1) × (2^bits - 1))`; NaN
//! maps to 0 (black). Without an explicit window the window is the robust range of the finite
//! samples: their 0.5th to 99.5th percentile (nearest rank), which keeps a few hot pixels from
//! darkening the picture; when that range is empty (constant image) every pixel at or below the
//! value is black.

use std::path::Path;

use ndarray::{ArrayView2, ArrayView3};

use crate::{IoError, Result};

/// Lower percentile of the automatic window.
pub const AUTO_LOW_PERCENTILE: f64 = 0.5;
/// Upper percentile of the automatic window.
pub const AUTO_HIGH_PERCENTILE: f64 = 99.5;

/// How [`write_gray`] maps samples to grey levels.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PngOptions {
    /// Display window as `(min, max)` in sample units: `min` and below are black, `max` and above
    /// white. `None` = automatic (0.5–99.5 percentile of the finite samples). Use
    /// [`PngOptions::level_width`] to give a radiological level/width instead.
    pub window: Option<(f32, f32)>,
    /// Bits per pixel: 8 or 16.
    pub bit_depth: u8,
}

impl Default for PngOptions {
    fn default() -> Self {
        Self {
            window: None,
            bit_depth: 8,
        }
    }
}

impl PngOptions {
    /// Options with a window given as level (centre) and width: `(level - width/2,
    /// level + width/2)`, 8-bit.
    pub fn level_width(level: f32, width: f32) -> Self {
        Self {
            window: Some((level - width / 2.0, level + width / 2.0)),
            bit_depth: 8,
        }
    }
}

/// Robust window of `img`: the 0.5th and 99.5th percentile (nearest rank) of its finite
/// samples, or `None` when it has none.
pub fn auto_window(img: ArrayView2<f32>) -> Option<(f32, f32)> {
    let mut v: Vec<f32> = img.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    let n = v.len();
    let rank = |p: f64| (((p / 100.0) * (n - 1) as f64).round() as usize).min(n - 1);
    let (lo_i, hi_i) = (rank(AUTO_LOW_PERCENTILE), rank(AUTO_HIGH_PERCENTILE));
    let (_, lo, _) = v.select_nth_unstable_by(lo_i, |a, b| a.total_cmp(b));
    let lo = *lo;
    let (_, hi, _) = v.select_nth_unstable_by(hi_i, |a, b| a.total_cmp(b));
    Some((lo, *hi))
}

/// Writes `img` (`[row, col]`) as a grayscale PNG with the window and bit depth of `opts`,
/// atomically.
pub fn write_gray(path: &Path, img: ArrayView2<f32>, opts: &PngOptions) -> Result<()> {
    let unwritable = |msg: String| IoError::Unwritable {
        path: path.to_path_buf(),
        msg,
    };
    let (rows, cols) = img.dim();
    if rows == 0 || cols == 0 || rows > u32::MAX as usize || cols > u32::MAX as usize {
        return Err(unwritable(format!("image of {rows}×{cols} pixels")));
    }
    let (depth, maxv) = match opts.bit_depth {
        8 => (png::BitDepth::Eight, 255.0f64),
        16 => (png::BitDepth::Sixteen, 65535.0f64),
        b => {
            return Err(unwritable(format!(
                "bit depth {b}: PNG export takes 8 or 16"
            )))
        }
    };
    let (lo, hi) = match opts.window {
        Some((lo, hi)) => {
            if !(lo.is_finite() && hi.is_finite()) || hi < lo {
                return Err(unwritable(format!(
                    "window ({lo}, {hi}): min and max must be finite with min ≤ max"
                )));
            }
            (lo, hi)
        }
        None => auto_window(img).unwrap_or((0.0, 1.0)),
    };
    let (lo, hi) = (lo as f64, hi as f64);
    let level = |v: f32| -> u16 {
        if v.is_nan() {
            return 0;
        }
        let v = v as f64;
        let t = if hi > lo {
            ((v - lo) / (hi - lo)).clamp(0.0, 1.0)
        } else if v > lo {
            1.0
        } else {
            0.0
        };
        (t * maxv).round() as u16
    };
    let mut buf = Vec::with_capacity(rows * cols * if maxv > 255.0 { 2 } else { 1 });
    for v in img.iter() {
        let l = level(*v);
        if maxv > 255.0 {
            buf.extend_from_slice(&l.to_be_bytes());
        } else {
            buf.push(l as u8);
        }
    }
    encode(
        path,
        cols as u32,
        rows as u32,
        png::ColorType::Grayscale,
        depth,
        &buf,
    )
}

/// Writes an RGB picture `[row, col, 3]` (8 bits per channel) as PNG, atomically.
pub fn write_rgb(path: &Path, rgb: ArrayView3<u8>) -> Result<()> {
    let (rows, cols, ch) = rgb.dim();
    if ch != 3 || rows == 0 || cols == 0 || rows > u32::MAX as usize || cols > u32::MAX as usize {
        return Err(IoError::Unwritable {
            path: path.to_path_buf(),
            msg: format!("RGB picture of shape [{rows}, {cols}, {ch}]; expected [row, col, 3]"),
        });
    }
    let buf: Vec<u8> = rgb.iter().copied().collect();
    encode(
        path,
        cols as u32,
        rows as u32,
        png::ColorType::Rgb,
        png::BitDepth::Eight,
        &buf,
    )
}

fn encode(
    path: &Path,
    width: u32,
    height: u32,
    color: png::ColorType,
    depth: png::BitDepth,
    buf: &[u8],
) -> Result<()> {
    crate::atomic::write_atomic(path, |w| {
        let mut enc = png::Encoder::new(w, width, height);
        enc.set_color(color);
        enc.set_depth(depth);
        let mut wr = enc.write_header().map_err(std::io::Error::other)?;
        wr.write_image_data(buf).map_err(std::io::Error::other)?;
        wr.finish().map_err(std::io::Error::other)?;
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array2;

    #[test]
    fn auto_window_ignores_outliers_and_nan() {
        // 1000 samples 0..999 plus a hot pixel and NaN: nearest-rank 0.5 % and 99.5 %.
        let mut v: Vec<f32> = (0..1000).map(|x| x as f32).collect();
        v.push(1e9);
        v.push(f32::NAN);
        let a = Array2::from_shape_vec((2, 501), v).unwrap();
        let (lo, hi) = auto_window(a.view()).unwrap();
        // n = 1001 finite samples: ranks round(0.005 * 1000) = 5 and round(0.995 * 1000) = 995.
        assert_eq!((lo, hi), (5.0, 995.0));
    }
}

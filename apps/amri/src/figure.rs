//! Comparison figures: labelled tiles (grey images, colour-mapped error maps, log-magnitude
//! k-space with its mask) laid out in a grid and written as an RGB PNG.

use std::path::Path;

use anyhow::Result;
use font8x8::UnicodeFonts;
use ndarray::{Array2, Array3, ArrayView2};

/// One tile of a figure: `[rows, cols]` RGB samples and a label drawn in its top-left corner.
pub struct Tile {
    /// RGB picture `[row, col, 3]`.
    pub rgb: Array3<u8>,
    /// Label (ASCII).
    pub label: String,
}

/// Grey tile of `img` windowed to `[lo, hi]`.
pub fn gray(img: ArrayView2<f32>, lo: f32, hi: f32, label: &str) -> Tile {
    let (r, c) = img.dim();
    let span = (hi - lo).max(f32::EPSILON);
    let rgb = Array3::from_shape_fn((r, c, 3), |(i, j, _)| {
        let v = img[[i, j]];
        let t = if v.is_finite() {
            ((v - lo) / span).clamp(0.0, 1.0)
        } else {
            0.0
        };
        (t * 255.0).round() as u8
    });
    Tile {
        rgb,
        label: label.into(),
    }
}

/// Error-map tile: `|err|` over `[0, max]` through a black–red–yellow–white ("hot") colour map.
pub fn hot(err: ArrayView2<f32>, max: f32, label: &str) -> Tile {
    let (r, c) = err.dim();
    let max = max.max(f32::EPSILON);
    let rgb = Array3::from_shape_fn((r, c, 3), |(i, j, ch)| {
        let e = err[[i, j]];
        let t = if e.is_finite() {
            (e.abs() / max).clamp(0.0, 1.0)
        } else {
            0.0
        };
        let v = match ch {
            0 => (t * 3.0).min(1.0),
            1 => (t * 3.0 - 1.0).clamp(0.0, 1.0),
            _ => (t * 3.0 - 2.0).clamp(0.0, 1.0),
        };
        (v * 255.0).round() as u8
    });
    Tile {
        rgb,
        label: label.into(),
    }
}

/// K-space tile: log(1 + |k|) in grey with measured positions of `mask` tinted green.
pub fn kspace(logmag: ArrayView2<f32>, mask: Option<ArrayView2<f32>>, label: &str) -> Tile {
    let hi = logmag.iter().copied().fold(0.0f32, f32::max);
    let mut t = gray(logmag, 0.0, hi, label);
    if let Some(m) = mask {
        for ((i, j), v) in m.indexed_iter() {
            if *v != 0.0 {
                let px = t.rgb[[i, j, 1]];
                t.rgb[[i, j, 1]] = px.saturating_add(70);
            } else {
                t.rgb[[i, j, 0]] /= 2;
                t.rgb[[i, j, 1]] /= 2;
                t.rgb[[i, j, 2]] /= 2;
            }
        }
    }
    t
}

fn draw_label(rgb: &mut Array3<u8>, y0: usize, x0: usize, text: &str) {
    let (h, w, _) = rgb.dim();
    let scale = 1;
    for (n, ch) in text.chars().enumerate() {
        let Some(glyph) = font8x8::BASIC_FONTS.get(ch) else {
            continue;
        };
        for (gy, bits) in glyph.iter().enumerate() {
            for gx in 0..8 {
                let on = bits & (1 << gx) != 0;
                for sy in 0..scale {
                    for sx in 0..scale {
                        let y = y0 + gy * scale + sy;
                        let x = x0 + (n * 8 + gx) * scale + sx;
                        if y < h && x < w {
                            let v = if on { 255 } else { 0 };
                            for c in 0..3 {
                                if on || rgb[[y, x, c]] > 0 {
                                    rgb[[y, x, c]] = if on { v } else { rgb[[y, x, c]] / 3 };
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Lays `tiles` (all the same size) out in rows of `per_row`, draws their labels and writes the
/// PNG atomically.
pub fn write_grid(path: &Path, tiles: &[Tile], per_row: usize) -> Result<()> {
    let Some(first) = tiles.first() else {
        anyhow::bail!("a figure needs at least one tile");
    };
    let (th, tw, _) = first.rgb.dim();
    let per_row = per_row.max(1);
    let rows = tiles.len().div_ceil(per_row);
    let gap = 2;
    let mut canvas = Array3::<u8>::zeros((rows * (th + gap), per_row * (tw + gap), 3));
    for (n, t) in tiles.iter().enumerate() {
        anyhow::ensure!(t.rgb.dim() == first.rgb.dim(), "tiles differ in size");
        let (y0, x0) = ((n / per_row) * (th + gap), (n % per_row) * (tw + gap));
        canvas
            .slice_mut(ndarray::s![y0..y0 + th, x0..x0 + tw, ..])
            .assign(&t.rgb);
        draw_label(&mut canvas, y0 + 3, x0 + 3, &t.label);
    }
    amri_io::png::write_rgb(path, canvas.view())?;
    Ok(())
}

/// Flips a `[row, col]` slice into radiological display orientation for `affine`.
pub fn display(img: Array2<f32>, affine: &amri_core::Affine) -> Array2<f32> {
    amri_io::format::display_slice(img, affine, false)
}

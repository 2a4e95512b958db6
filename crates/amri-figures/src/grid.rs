//! Comparison figures: labelled tiles (grey images, colour-mapped error maps, log-magnitude
//! k-space with its mask) laid out in a grid and written as an RGB PNG (`amri demo`'s
//! `comparison.png` and `prior_comparison.png`, `amri memorization`'s figures).

use std::path::Path;

use ndarray::{Array2, Array3, ArrayView2};

use crate::colormap::{byte, tint_mask, ColorMap};
use crate::error::{FigureError, Result};
use crate::text::label;

/// One tile of a figure: `[rows, cols]` RGB samples and a label drawn in its top-left corner.
pub struct Tile {
    /// RGB picture `[row, col, 3]`.
    pub rgb: Array3<u8>,
    /// Label (ASCII).
    pub label: String,
}

/// Grey tile of `img` windowed to `[lo, hi]`.
pub fn gray(img: ArrayView2<f32>, lo: f32, hi: f32, name: &str) -> Tile {
    let (r, c) = img.dim();
    let span = (hi - lo).max(f32::EPSILON);
    let rgb = Array3::from_shape_fn((r, c, 3), |(i, j, _)| {
        let v = img[[i, j]];
        let t = if v.is_finite() {
            ((v - lo) / span).clamp(0.0, 1.0)
        } else {
            0.0
        };
        byte(t)
    });
    Tile {
        rgb,
        label: name.into(),
    }
}

/// Error-map tile: `|err|` over `[0, max]` through a black–red–yellow–white ("hot") colour map.
pub fn hot(err: ArrayView2<f32>, max: f32, name: &str) -> Tile {
    let (r, c) = err.dim();
    let max = max.max(f32::EPSILON);
    let rgb = Array3::from_shape_fn((r, c, 3), |(i, j, ch)| {
        let e = err[[i, j]];
        let t = if e.is_finite() {
            (e.abs() / max).clamp(0.0, 1.0)
        } else {
            0.0
        };
        byte(ColorMap::Hot.rgb(t)[ch])
    });
    Tile {
        rgb,
        label: name.into(),
    }
}

/// K-space tile: log(1 + |k|) in grey with measured positions of `mask` tinted green.
pub fn kspace(logmag: ArrayView2<f32>, mask: Option<ArrayView2<f32>>, name: &str) -> Tile {
    let hi = logmag.iter().copied().fold(0.0f32, f32::max);
    let mut t = gray(logmag, 0.0, hi, name);
    if let (Some(m), Some(px)) = (mask, t.rgb.as_slice_mut()) {
        tint_mask(px, 3, m);
    }
    t
}

/// Lays `tiles` (all the same size) out in rows of `per_row`, draws their labels and writes the
/// PNG atomically.
pub fn write_grid(path: &Path, tiles: &[Tile], per_row: usize) -> Result<()> {
    let Some(first) = tiles.first() else {
        return Err(FigureError::Layout(
            "a figure needs at least one tile".into(),
        ));
    };
    let (th, tw, _) = first.rgb.dim();
    let per_row = per_row.max(1);
    let rows = tiles.len().div_ceil(per_row);
    let gap = 2;
    let mut canvas = Array3::<u8>::zeros((rows * (th + gap), per_row * (tw + gap), 3));
    for (n, t) in tiles.iter().enumerate() {
        if t.rgb.dim() != first.rgb.dim() {
            return Err(FigureError::Layout("tiles differ in size".into()));
        }
        let (y0, x0) = ((n / per_row) * (th + gap), (n % per_row) * (tw + gap));
        canvas
            .slice_mut(ndarray::s![y0..y0 + th, x0..x0 + tw, ..])
            .assign(&t.rgb);
        label(&mut canvas, y0 + 3, x0 + 3, &t.label);
    }
    amri_io::png::write_rgb(path, canvas.view())?;
    Ok(())
}

/// Flips a `[row, col]` slice into radiological display orientation for `affine`.
pub fn display(img: Array2<f32>, affine: &amri_core::Affine) -> Array2<f32> {
    amri_io::format::display_slice(img, affine, false)
}

/// Nearest-neighbour enlargement of a tile by an integer `factor` (labels stay 8 px high).
pub fn upscale(t: Tile, factor: usize) -> Tile {
    if factor <= 1 {
        return t;
    }
    let (h, w, _) = t.rgb.dim();
    let rgb = Array3::from_shape_fn((h * factor, w * factor, 3), |(i, j, c)| {
        t.rgb[[i / factor, j / factor, c]]
    });
    Tile {
        rgb,
        label: t.label,
    }
}

/// The slices of one comparison figure, in acquisition orientation (`[row, col]`).
pub struct Comparison {
    /// Fully sampled reference magnitude.
    pub reference: Array2<f32>,
    /// log(1 + |k|) of the measured k-space (first coil).
    pub kspace_logmag: Array2<f32>,
    /// Sampling mask (1 measured, 0 not), if the data carry one.
    pub mask: Option<Array2<f32>>,
    /// (method name, reconstructed magnitude) in display order.
    pub methods: Vec<(String, Array2<f32>)>,
    /// Per-pixel posterior standard deviation (same units as the images), if any.
    pub std: Option<Array2<f32>>,
    /// Affine of the slices (sets the display orientation).
    pub affine: amri_core::Affine,
}

/// Writes the comparison figure: top row reference | k-space with mask | each method |
/// posterior std (if any); bottom row the sampling mask and each method's |error| under it.
/// Errors are windowed to a quarter of the reference's maximum ("x4"); the std to its own maximum. Images smaller than 192 pixels are enlarged by an integer factor so labels fit.
pub fn comparison(path: &Path, c: &Comparison) -> Result<()> {
    let (rows, cols) = c.reference.dim();
    if rows == 0 || cols == 0 {
        return Err(FigureError::Layout("empty reference slice".into()));
    }
    for (name, img) in &c.methods {
        if img.dim() != (rows, cols) {
            return Err(FigureError::Layout(format!(
                "{name}: slice {:?} differs from the reference {:?}",
                img.dim(),
                (rows, cols)
            )));
        }
    }
    let f = 192usize.div_ceil(rows.min(cols)).max(1);
    let refs = display(c.reference.clone(), &c.affine);
    let hi = refs.iter().copied().fold(0.0f32, f32::max);
    let mask = c.mask.clone();
    let mut top = vec![
        gray(refs.view(), 0.0, hi, "reference"),
        kspace(
            c.kspace_logmag.view(),
            mask.as_ref().map(|m| m.view()),
            "k-space + mask",
        ),
    ];
    let mut bottom = vec![
        gray(
            mask.unwrap_or_else(|| Array2::ones((rows, cols))).view(),
            0.0,
            1.0,
            "sampling mask",
        ),
        gray(
            Array2::<f32>::zeros((rows, cols)).view(),
            0.0,
            1.0,
            "|error| x4 below",
        ),
    ];
    for (name, img) in &c.methods {
        let sl = display(img.clone(), &c.affine);
        let err = &sl - &refs;
        top.push(gray(sl.view(), 0.0, hi, name));
        bottom.push(hot(err.view(), hi / 4.0, &format!("err {name}")));
    }
    if let Some(sd) = &c.std {
        let sd = display(sd.clone(), &c.affine);
        let top_sd = sd
            .iter()
            .copied()
            .filter(|v| v.is_finite())
            .fold(0.0f32, f32::max);
        top.push(hot(sd.view(), top_sd, "posterior std"));
        bottom.push(gray(
            Array2::<f32>::zeros((rows, cols)).view(),
            0.0,
            1.0,
            "",
        ));
    }
    let per_row = top.len();
    top.extend(bottom);
    let tiles: Vec<Tile> = top.into_iter().map(|t| upscale(t, f)).collect();
    write_grid(path, &tiles, per_row)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upscale_repeats_each_pixel() {
        let t = Tile {
            rgb: Array3::from_shape_fn((2, 3, 3), |(i, j, c)| (10 * i + j + 100 * c) as u8),
            label: "x".into(),
        };
        let u = upscale(t, 3);
        assert_eq!(u.rgb.dim(), (6, 9, 3));
        for ((i, j, c), v) in u.rgb.indexed_iter() {
            assert_eq!(*v as usize, 10 * (i / 3) + j / 3 + 100 * c);
        }
    }

    #[test]
    fn comparison_lays_out_methods_and_std_with_error_maps_below() {
        let d = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let p = d.path().join("c.png");
        let reference = Array2::from_shape_fn((16, 16), |(i, j)| (i + j) as f32);
        let c = Comparison {
            reference: reference.clone(),
            kspace_logmag: Array2::ones((16, 16)),
            mask: None,
            methods: vec![
                ("a".into(), reference.clone()),
                ("b".into(), reference.mapv(|v| v + 1.0)),
            ],
            std: Some(Array2::zeros((16, 16))),
            affine: amri_core::Affine::default(),
        };
        comparison(&p, &c).unwrap_or_else(|e| panic!("{e:#}"));
        // 5 tiles per row (reference, k-space, a, b, std), 2 rows, 16 px enlarged ×12, 2 px
        // gaps: read width and height from the PNG header (IHDR, big-endian at bytes 16..24).
        let bytes = std::fs::read(&p).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(&bytes[1..4], b"PNG");
        let be =
            |o: usize| u32::from_be_bytes([bytes[o], bytes[o + 1], bytes[o + 2], bytes[o + 3]]);
        assert_eq!((be(16), be(20)), (5 * (192 + 2), 2 * (192 + 2)));
        let bad = Comparison {
            methods: vec![("c".into(), Array2::zeros((8, 8)))],
            ..c
        };
        assert!(comparison(&p, &bad).is_err());
    }
}

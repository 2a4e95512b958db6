//! Block (box) corruption: one or several rectangles of the image are hidden.
//!
//! The operator is a [`PixelMask`] whose mask is 0 inside the boxes and 1 elsewhere. Two
//! placement conventions exist in the literature and both are offered ([`BoxConvention`]).

use amri_core::C32;
use ndarray::Array2;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::error::{OpsError, Result};
use crate::linop::LinearOperator;
use crate::pixel_mask::PixelMask;

/// Where a randomly drawn box may lie.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BoxConvention {
    /// The whole box lies inside the image: top-left corner uniform over
    /// `[0, rows − h] × [0, cols − w]` (Ambient Diffusion's box masks). Always hides `h·w` pixels.
    #[default]
    Inside,
    /// The box centre is uniform over the image pixels and the box is clipped at the border
    /// (Cutout style): rows `[ci − h/2, ci − h/2 + h) ∩ [0, rows)` with `h/2` rounded down.
    Clipped,
}

/// An axis-aligned box in pixel coordinates; rows `[row0, row0 + height)`, columns
/// `[col0, col0 + width)`, already clipped to the image.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BoxRegion {
    /// First row (0-based).
    pub row0: usize,
    /// First column (0-based).
    pub col0: usize,
    /// Number of rows covered.
    pub height: usize,
    /// Number of columns covered.
    pub width: usize,
}

impl BoxRegion {
    /// Whether pixel `(row, col)` lies in the box.
    pub fn contains(&self, row: usize, col: usize) -> bool {
        row >= self.row0
            && row < self.row0 + self.height
            && col >= self.col0
            && col < self.col0 + self.width
    }
}

/// Draws one box of `size = [height, width]` in a `[rows, cols]` image under `convention`.
pub fn draw_box<R: Rng>(
    rows: usize,
    cols: usize,
    size: [usize; 2],
    convention: BoxConvention,
    rng: &mut R,
) -> Result<BoxRegion> {
    let [h, w] = size;
    if rows == 0 || cols == 0 {
        return Err(OpsError::param(
            "shape",
            "image must have rows ≥ 1 and cols ≥ 1",
        ));
    }
    if h == 0 || w == 0 || h > rows || w > cols {
        return Err(OpsError::param(
            "size",
            format!("box [height, width] must be within [1, {rows}] × [1, {cols}], got {size:?}"),
        ));
    }
    if convention == BoxConvention::Inside && h == rows && w == cols {
        return Err(OpsError::param(
            "size",
            format!(
                "a {h}×{w} box inside a {rows}×{cols} image hides every pixel; use a smaller box \
                 (e.g. a quarter of the image)"
            ),
        ));
    }
    Ok(match convention {
        BoxConvention::Inside => BoxRegion {
            row0: rng.random_range(0..=rows - h),
            col0: rng.random_range(0..=cols - w),
            height: h,
            width: w,
        },
        BoxConvention::Clipped => {
            let ci = rng.random_range(0..rows) as isize;
            let cj = rng.random_range(0..cols) as isize;
            let r0 = ci - (h / 2) as isize;
            let c0 = cj - (w / 2) as isize;
            let r1 = (r0 + h as isize).min(rows as isize);
            let c1 = (c0 + w as isize).min(cols as isize);
            let (r0, c0) = (r0.max(0), c0.max(0));
            BoxRegion {
                row0: r0 as usize,
                col0: c0 as usize,
                height: (r1 - r0) as usize,
                width: (c1 - c0) as usize,
            }
        }
    })
}

/// Sets `mask` to 0 inside `b`.
pub fn hide_box(mask: &mut Array2<f32>, b: &BoxRegion) {
    for i in b.row0..(b.row0 + b.height).min(mask.nrows()) {
        for j in b.col0..(b.col0 + b.width).min(mask.ncols()) {
            mask[[i, j]] = 0.0;
        }
    }
}

/// Block corruption on `[rows, cols]` images: `y = M ⊙ x` with `M = 0` inside the boxes.
#[derive(Clone, Debug)]
pub struct Blocks {
    boxes: Vec<BoxRegion>,
    op: PixelMask,
}

impl Blocks {
    /// Hides `count` boxes of `size = [height, width]` drawn independently (they may overlap)
    /// with `convention`; reproducible for a given `seed`.
    pub fn draw(
        rows: usize,
        cols: usize,
        count: usize,
        size: [usize; 2],
        convention: BoxConvention,
        seed: u64,
    ) -> Result<Self> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let boxes = (0..count)
            .map(|_| draw_box(rows, cols, size, convention, &mut rng))
            .collect::<Result<Vec<_>>>()?;
        Self::from_boxes(rows, cols, boxes)
    }

    /// Hides the given boxes (each must lie inside the `[rows, cols]` image).
    pub fn from_boxes(rows: usize, cols: usize, boxes: Vec<BoxRegion>) -> Result<Self> {
        if rows == 0 || cols == 0 {
            return Err(OpsError::param(
                "shape",
                "image must have rows ≥ 1 and cols ≥ 1",
            ));
        }
        let mut mask = Array2::ones((rows, cols));
        for b in &boxes {
            if b.row0 + b.height > rows || b.col0 + b.width > cols {
                return Err(OpsError::param(
                    "boxes",
                    format!("box {b:?} extends outside the {rows}×{cols} image"),
                ));
            }
            hide_box(&mut mask, b);
        }
        Ok(Self {
            boxes,
            op: PixelMask::new(mask)?,
        })
    }

    /// The hidden boxes.
    pub fn boxes(&self) -> &[BoxRegion] {
        &self.boxes
    }

    /// The `[rows, cols]` mask (1 = kept, 0 = inside a box).
    pub fn mask(&self) -> &Array2<f32> {
        self.op.mask()
    }

    /// The underlying mask operator.
    pub fn as_pixel_mask(&self) -> &PixelMask {
        &self.op
    }
}

impl LinearOperator for Blocks {
    fn ishape(&self) -> &[usize] {
        self.op.ishape()
    }
    fn oshape(&self) -> &[usize] {
        self.op.oshape()
    }
    fn forward(&self, x: &[C32], y: &mut [C32]) {
        self.op.forward(x, y)
    }
    fn adjoint(&self, y: &[C32], x: &mut [C32]) {
        self.op.adjoint(y, x)
    }
    fn normal(&self, x: &[C32], out: &mut [C32]) {
        self.op.normal(x, out)
    }
    fn name(&self) -> String {
        format!("Blocks({} boxes, {:?})", self.boxes.len(), self.op.ishape())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inside_boxes_hide_exact_area_and_stay_inside() {
        for seed in 0..50 {
            let b = Blocks::draw(20, 15, 1, [7, 4], BoxConvention::Inside, seed).unwrap();
            assert_eq!(b.mask().iter().filter(|v| **v == 0.0).count(), 28);
            let r = b.boxes()[0];
            assert!(r.row0 + 7 <= 20 && r.col0 + 4 <= 15);
        }
    }

    #[test]
    fn clipped_boxes_reach_the_border_and_are_clipped() {
        let mut saw_clipped = false;
        let mut saw_corner = false;
        for seed in 0..400 {
            let b = Blocks::draw(10, 10, 1, [6, 6], BoxConvention::Clipped, seed).unwrap();
            let r = b.boxes()[0];
            let hidden = b.mask().iter().filter(|v| **v == 0.0).count();
            assert_eq!(hidden, r.height * r.width);
            assert!(r.height <= 6 && r.width <= 6 && r.height >= 3 && r.width >= 3);
            saw_clipped |= hidden < 36;
            saw_corner |= b.mask()[[0, 0]] == 0.0 || b.mask()[[9, 9]] == 0.0;
        }
        assert!(saw_clipped && saw_corner);
    }

    #[test]
    fn inside_convention_covers_corners_with_uniform_top_left() {
        // Pixel (0,0) is hidden only when the top-left is (0,0): probability 1/((10-6+1)^2).
        let n = 5000;
        let hits = (0..n)
            .filter(|s| {
                Blocks::draw(10, 10, 1, [6, 6], BoxConvention::Inside, *s)
                    .unwrap()
                    .mask()[[0, 0]]
                    == 0.0
            })
            .count();
        let p = hits as f64 / n as f64;
        // 1/25 = 0.04, binomial std ≈ 0.0028; 5 sigma.
        assert!((p - 0.04).abs() < 0.014, "p = {p}");
    }

    #[test]
    fn too_large_box_is_an_error() {
        assert!(Blocks::draw(8, 8, 1, [9, 2], BoxConvention::Inside, 0).is_err());
        // A box as large as the image would hide all of it.
        let e = Blocks::draw(8, 8, 1, [8, 8], BoxConvention::Inside, 0).unwrap_err();
        assert!(e.to_string().contains("hides every pixel"), "{e}");
        assert!(Blocks::draw(8, 8, 1, [8, 7], BoxConvention::Inside, 0).is_ok());
        assert!(Blocks::draw(8, 8, 1, [0, 2], BoxConvention::Clipped, 0).is_err());
    }
}

//! The linked view shared by every panel: slice, zoom and pan, window/level, overlays, and the
//! mapping between screen positions, display pixels, voxels and world coordinates.

use amri_core::Affine;

use crate::colormap::{ColorMap, Window};

/// State of the view, linked across panels.
#[derive(Clone, Debug, PartialEq)]
pub struct ViewState {
    /// Current slice index (voxel `k`).
    pub slice: usize,
    /// Magnification: 1 shows the whole slice fitted into the panel.
    pub zoom: f32,
    /// Centre of the visible region as a fraction of the slice `(x, y)`, each in `[0, 1]`.
    pub center: [f32; 2],
    /// Grey window of image panels.
    pub window: Window,
    /// Colour map of error and standard-deviation maps.
    pub colormap: ColorMap,
    /// Error maps reach full colour at `reference max / error_gain`.
    pub error_gain: f32,
    /// Overlay the sampling mask on k-space.
    pub show_mask: bool,
    /// Show the row of error maps.
    pub show_errors: bool,
}

impl Default for ViewState {
    fn default() -> Self {
        ViewState {
            slice: 0,
            zoom: 1.0,
            center: [0.5, 0.5],
            window: Window::from_range(0.0, 1.0),
            colormap: ColorMap::Hot,
            error_gain: 5.0,
            show_mask: true,
            show_errors: true,
        }
    }
}

/// Smallest and largest magnification.
pub const ZOOM_RANGE: (f32, f32) = (1.0, 32.0);

impl ViewState {
    /// Moves the slice by `delta`, clamped to `[0, slices − 1]`.
    pub fn step_slice(&mut self, delta: i64, slices: usize) {
        if slices == 0 {
            self.slice = 0;
            return;
        }
        let s = self.slice as i64 + delta;
        self.slice = s.clamp(0, slices as i64 - 1) as usize;
    }

    /// Multiplies the zoom by `factor` keeping the slice point `anchor` (fractions) fixed on
    /// screen; zoom stays in [`ZOOM_RANGE`].
    pub fn zoom_by(&mut self, factor: f32, anchor: [f32; 2]) {
        if !(factor.is_finite() && factor > 0.0) {
            return;
        }
        let new = (self.zoom * factor).clamp(ZOOM_RANGE.0, ZOOM_RANGE.1);
        let f = self.zoom / new;
        // The anchor stays at the same screen offset: c' = a − (a − c)·zoom/new.
        for (c, a) in self.center.iter_mut().zip(anchor) {
            *c = a - (a - *c) * f;
        }
        self.zoom = new;
        self.clamp_center();
    }

    /// Pans by `(dx, dy)` fractions of the visible region (a drag of a whole panel = 1).
    pub fn pan_by(&mut self, dx: f32, dy: f32) {
        self.center[0] -= dx / self.zoom;
        self.center[1] -= dy / self.zoom;
        self.clamp_center();
    }

    fn clamp_center(&mut self) {
        let half = 0.5 / self.zoom;
        for c in &mut self.center {
            *c = c.clamp(half, 1.0 - half);
        }
    }

    /// Back to the whole slice.
    pub fn reset_zoom(&mut self) {
        self.zoom = 1.0;
        self.center = [0.5, 0.5];
    }

    /// Visible part of the slice as `[x0, y0, x1, y1]` fractions (the texture's UV rectangle).
    pub fn uv_rect(&self) -> [f32; 4] {
        let half = 0.5 / self.zoom;
        [
            self.center[0] - half,
            self.center[1] - half,
            self.center[0] + half,
            self.center[1] + half,
        ]
    }

    /// Display pixel `(row, col)` under the point at fraction `(fx, fy)` of a panel, or `None`
    /// outside the slice.
    pub fn pixel_at(&self, fx: f32, fy: f32, rows: usize, cols: usize) -> Option<(usize, usize)> {
        if !(0.0..=1.0).contains(&fx) || !(0.0..=1.0).contains(&fy) {
            return None;
        }
        let [x0, y0, x1, y1] = self.uv_rect();
        let u = x0 + fx * (x1 - x0);
        let v = y0 + fy * (y1 - y0);
        let c = (u * cols as f32).floor();
        let r = (v * rows as f32).floor();
        if c < 0.0 || r < 0.0 {
            return None;
        }
        let (r, c) = (r as usize, c as usize);
        (r < rows && c < cols).then_some((r.min(rows - 1), c.min(cols - 1)))
    }

    /// Where display pixel `(row, col)`'s centre sits as fractions of the panel, if visible.
    pub fn panel_fraction(
        &self,
        row: usize,
        col: usize,
        rows: usize,
        cols: usize,
    ) -> Option<[f32; 2]> {
        let [x0, y0, x1, y1] = self.uv_rect();
        let u = (col as f32 + 0.5) / cols as f32;
        let v = (row as f32 + 0.5) / rows as f32;
        let f = [(u - x0) / (x1 - x0), (v - y0) / (y1 - y0)];
        (f.iter().all(|x| (0.0..=1.0).contains(x))).then_some(f)
    }
}

/// Stored `(row, col)` of display pixel `(row, col)` of an image panel: undoes the radiological
/// display flips of `affine` (see [`Affine::display_flips`]).
pub fn stored_pixel(
    affine: &Affine,
    row: usize,
    col: usize,
    rows: usize,
    cols: usize,
) -> (usize, usize) {
    let (fr, fc) = affine.display_flips();
    (
        if fr { rows - 1 - row } else { row },
        if fc { cols - 1 - col } else { col },
    )
}

/// World position (RAS mm) of the centre of stored voxel `(row, col)` on `slice`.
pub fn world(affine: &Affine, slice: usize, row: usize, col: usize) -> [f64; 3] {
    affine.apply([col as f64, row as f64, slice as f64])
}

fn opposite(c: char) -> char {
    match c {
        'R' => 'L',
        'L' => 'R',
        'A' => 'P',
        'P' => 'A',
        'S' => 'I',
        'I' => 'S',
        _ => '?',
    }
}

/// Orientation letters at the `[left, right, top, bottom]` edges of a displayed image slice:
/// the world direction each edge faces (e.g. `['R', 'L', 'A', 'P']` for a radiological axial
/// view).
pub fn orientation_labels(affine: &Affine) -> [char; 4] {
    let codes = affine.orientation();
    let (fr, fc) = affine.display_flips();
    let right = if fc { opposite(codes[0]) } else { codes[0] };
    let bottom = if fr { opposite(codes[1]) } else { codes[1] };
    [opposite(right), right, opposite(bottom), bottom]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slice_steps_clamp() {
        let mut v = ViewState::default();
        v.step_slice(5, 3);
        assert_eq!(v.slice, 2);
        v.step_slice(-10, 3);
        assert_eq!(v.slice, 0);
        v.step_slice(1, 0);
        assert_eq!(v.slice, 0);
    }

    #[test]
    fn zoom_keeps_the_anchor_under_the_cursor() {
        let mut v = ViewState::default();
        let anchor = [0.75, 0.25];
        // The anchor sits at panel fraction 0.75, 0.25 before zooming.
        v.zoom_by(4.0, anchor);
        assert_eq!(v.zoom, 4.0);
        let [x0, y0, x1, y1] = v.uv_rect();
        let fx = (anchor[0] - x0) / (x1 - x0);
        let fy = (anchor[1] - y0) / (y1 - y0);
        assert!(
            (fx - 0.75).abs() < 1e-5 && (fy - 0.25).abs() < 1e-5,
            "{fx} {fy}"
        );
        v.zoom_by(100.0, anchor);
        assert_eq!(v.zoom, ZOOM_RANGE.1);
        v.zoom_by(1e-6, anchor);
        assert_eq!(v.zoom, 1.0);
        assert_eq!(v.center, [0.5, 0.5]);
    }

    #[test]
    fn pan_stays_inside_the_slice() {
        let mut v = ViewState::default();
        v.zoom_by(2.0, [0.5, 0.5]);
        v.pan_by(10.0, -10.0);
        assert_eq!(v.uv_rect(), [0.0, 0.5, 0.5, 1.0]);
    }

    #[test]
    fn pixel_lookup_round_trips() {
        let mut v = ViewState::default();
        v.zoom_by(3.0, [0.2, 0.7]);
        for (r, c) in [(0, 0), (5, 7), (9, 9)] {
            if let Some([fx, fy]) = v.panel_fraction(r, c, 10, 10) {
                assert_eq!(v.pixel_at(fx, fy, 10, 10), Some((r, c)));
            }
        }
        let v = ViewState::default();
        assert_eq!(v.pixel_at(0.0, 0.0, 10, 20), Some((0, 0)));
        assert_eq!(v.pixel_at(0.999, 0.999, 10, 20), Some((9, 19)));
        assert_eq!(v.pixel_at(1.5, 0.5, 10, 20), None);
    }

    #[test]
    fn ras_axial_is_shown_radiologically() {
        // NIfTI RAS storage: +i points to the patient's right, +j anterior.
        let ras = Affine::from_spacing([1.0, 1.0, 1.0]);
        assert_eq!(ras.orientation_code(), "RAS");
        // Radiological: patient's right on the viewer's left, anterior up.
        assert_eq!(orientation_labels(&ras), ['R', 'L', 'A', 'P']);
        // Display pixel (0, 0) is the stored voxel at the most right (largest i), most
        // anterior (largest j) corner.
        assert_eq!(stored_pixel(&ras, 0, 0, 4, 6), (3, 5));
        let w = world(&ras, 2, 3, 5);
        assert_eq!(w, [5.0, 3.0, 2.0]);
        // DICOM-like LPS storage (rows towards P, columns towards L) needs no flip.
        let lps = Affine::from_directions(
            [[-1.0, 0.0, 0.0], [0.0, -1.0, 0.0], [0.0, 0.0, 1.0]],
            [1.0, 1.0, 1.0],
            [0.0, 0.0, 0.0],
        );
        assert_eq!(orientation_labels(&lps), ['R', 'L', 'A', 'P']);
        assert_eq!(stored_pixel(&lps, 0, 0, 4, 6), (0, 0));
    }
}

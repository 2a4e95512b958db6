//! Window/level for grey images, colour maps for error and uncertainty maps, percentile
//! windowing and the k-space mask tint.
//!
//! Every map turns a `[row, col]` slice of `f32` into RGBA bytes, row-major, so that the viewer's
//! window and its PNG export share one colour pipeline; the demo's tiles ([`crate::grid`]) use
//! the same maps and tint.

use ndarray::ArrayView2;

/// A grey-value window as level (centre) and width, in the units of the image.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Window {
    /// Centre of the window (image units).
    pub level: f32,
    /// Width of the window (image units, > 0).
    pub width: f32,
}

impl Window {
    /// The window spanning `[lo, hi]`.
    pub fn from_range(lo: f32, hi: f32) -> Self {
        let width = (hi - lo).abs().max(f32::EPSILON);
        Window {
            level: 0.5 * (lo + hi),
            width,
        }
    }

    /// Lower and upper edge `(level − width/2, level + width/2)`.
    pub fn range(&self) -> (f32, f32) {
        (self.level - 0.5 * self.width, self.level + 0.5 * self.width)
    }

    /// Grey value in `[0, 1]` of `v`: 0 at or below the lower edge, 1 at or above the upper;
    /// non-finite values are black.
    pub fn apply(&self, v: f32) -> f32 {
        if !v.is_finite() {
            return 0.0;
        }
        let (lo, _) = self.range();
        ((v - lo) / self.width.max(f32::EPSILON)).clamp(0.0, 1.0)
    }

    /// The window after a right-drag of `(dx, dy)` screen points, as in ITK-SNAP: dragging
    /// right widens the window (less contrast), dragging down raises the level (darker).
    /// `scale` is the image value one point of drag moves (e.g. the image range / 500).
    pub fn dragged(&self, dx: f32, dy: f32, scale: f32) -> Self {
        Window {
            level: self.level + dy * scale,
            width: (self.width + dx * scale).max(scale.abs().max(f32::EPSILON)),
        }
    }
}

/// Colour map of error and uncertainty maps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ColorMap {
    /// Black → red → yellow → white (as the `amri demo` figure).
    #[default]
    Hot,
    /// Perceptually uniform dark blue → green → yellow (matplotlib's viridis, 9 stops).
    Viridis,
    /// Black → white.
    Gray,
}

const VIRIDIS: [[f32; 3]; 9] = [
    [0.267, 0.005, 0.329],
    [0.279, 0.175, 0.483],
    [0.230, 0.322, 0.546],
    [0.173, 0.449, 0.558],
    [0.128, 0.567, 0.551],
    [0.157, 0.684, 0.502],
    [0.369, 0.789, 0.383],
    [0.678, 0.864, 0.190],
    [0.993, 0.906, 0.144],
];

impl ColorMap {
    /// Every map, in the order the panel lists them.
    pub const ALL: [ColorMap; 3] = [ColorMap::Hot, ColorMap::Viridis, ColorMap::Gray];

    /// Name shown in the selector.
    pub fn name(self) -> &'static str {
        match self {
            ColorMap::Hot => "hot",
            ColorMap::Viridis => "viridis",
            ColorMap::Gray => "gray",
        }
    }

    /// RGB in `[0, 1]` of `t ∈ [0, 1]` (clamped; NaN maps to 0).
    pub fn rgb(self, t: f32) -> [f32; 3] {
        let t = if t.is_nan() { 0.0 } else { t.clamp(0.0, 1.0) };
        match self {
            ColorMap::Hot => [
                (t * 3.0).min(1.0),
                (t * 3.0 - 1.0).clamp(0.0, 1.0),
                (t * 3.0 - 2.0).clamp(0.0, 1.0),
            ],
            ColorMap::Gray => [t, t, t],
            ColorMap::Viridis => {
                let x = t * (VIRIDIS.len() - 1) as f32;
                let i = (x.floor() as usize).min(VIRIDIS.len() - 2);
                let f = x - i as f32;
                let (a, b) = (VIRIDIS[i], VIRIDIS[i + 1]);
                [
                    a[0] + f * (b[0] - a[0]),
                    a[1] + f * (b[1] - a[1]),
                    a[2] + f * (b[2] - a[2]),
                ]
            }
        }
    }
}

/// The byte of a colour component `v ∈ [0, 1]` (clamped): `round(255 v)`.
pub fn byte(v: f32) -> u8 {
    (v.clamp(0.0, 1.0) * 255.0).round() as u8
}

/// RGBA bytes (row-major, opaque) of `img` through `window` in grey.
pub fn gray_rgba(img: ArrayView2<f32>, window: &Window) -> Vec<u8> {
    let mut out = Vec::with_capacity(img.len() * 4);
    for v in img.iter() {
        let g = byte(window.apply(*v));
        out.extend_from_slice(&[g, g, g, 255]);
    }
    out
}

/// RGBA bytes of `|img|` over `[0, max]` through `map`.
pub fn colormap_rgba(img: ArrayView2<f32>, max: f32, map: ColorMap) -> Vec<u8> {
    let max = max.abs().max(f32::EPSILON);
    let mut out = Vec::with_capacity(img.len() * 4);
    for v in img.iter() {
        let t = if v.is_finite() { v.abs() / max } else { 0.0 };
        let [r, g, b] = map.rgb(t);
        out.extend_from_slice(&[byte(r), byte(g), byte(b), 255]);
    }
    out
}

/// RGBA bytes of a log-magnitude k-space slice over `[0, max]` in grey; with `mask`, measured
/// samples are tinted green and unmeasured ones dimmed to half (as the `amri demo` figure).
pub fn kspace_rgba(logmag: ArrayView2<f32>, mask: Option<ArrayView2<f32>>) -> Vec<u8> {
    let hi = logmag
        .iter()
        .copied()
        .filter(|v| v.is_finite())
        .fold(0.0f32, f32::max);
    let w = Window::from_range(0.0, hi.max(f32::EPSILON));
    let mut out = gray_rgba(logmag, &w);
    if let Some(m) = mask {
        tint_mask(&mut out, 4, m);
    }
    out
}

/// Marks a sampling `mask` (`[row, col]`, row-major as the pixels) on grey pixels of `channels`
/// bytes each (RGB or RGBA; the first three are tinted): measured samples (mask ≠ 0) get +70
/// green (saturating), unmeasured ones are dimmed to half. Mask entries past the pixels are
/// ignored.
pub fn tint_mask(pixels: &mut [u8], channels: usize, mask: ArrayView2<f32>) {
    for (px, v) in pixels.chunks_exact_mut(channels).zip(mask.iter()) {
        if *v != 0.0 {
            px[1] = px[1].saturating_add(70);
        } else {
            for c in px[..3].iter_mut() {
                *c /= 2;
            }
        }
    }
}

/// The value below which a fraction `p ∈ [0, 1]` of the finite samples lie (nearest rank);
/// `None` when there are none.
pub fn percentile(img: ArrayView2<f32>, p: f64) -> Option<f32> {
    let mut v: Vec<f32> = img.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    let k = ((p.clamp(0.0, 1.0)) * (v.len() - 1) as f64).round() as usize;
    let (_, x, _) = v.select_nth_unstable_by(k, |a, b| a.total_cmp(b));
    Some(*x)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn window_maps_edges_and_centre() {
        let w = Window::from_range(10.0, 30.0);
        assert_eq!(w.level, 20.0);
        assert_eq!(w.width, 20.0);
        assert_eq!(w.apply(10.0), 0.0);
        assert_eq!(w.apply(5.0), 0.0);
        assert_eq!(w.apply(30.0), 1.0);
        assert_eq!(w.apply(20.0), 0.5);
        assert_eq!(w.apply(f32::NAN), 0.0);
    }

    #[test]
    fn right_drag_widens_and_shifts() {
        let w = Window::from_range(0.0, 100.0);
        let d = w.dragged(10.0, -5.0, 0.5);
        assert_eq!(d.width, 105.0);
        assert_eq!(d.level, 47.5);
        // The width never collapses to zero or below.
        let narrow = w.dragged(-1e6, 0.0, 0.5);
        assert!(narrow.width > 0.0);
    }

    #[test]
    fn gray_bytes_follow_the_window() {
        let img = array![[0.0f32, 50.0], [100.0, 200.0]];
        let rgba = gray_rgba(img.view(), &Window::from_range(0.0, 100.0));
        assert_eq!(rgba.len(), 16);
        assert_eq!(&rgba[0..4], &[0, 0, 0, 255]);
        assert_eq!(&rgba[4..8], &[128, 128, 128, 255]);
        assert_eq!(&rgba[8..12], &[255, 255, 255, 255]);
        assert_eq!(&rgba[12..16], &[255, 255, 255, 255]);
    }

    #[test]
    fn maps_are_monotone_in_brightness() {
        for map in ColorMap::ALL {
            let mut last = -1.0f32;
            for i in 0..=20 {
                let [r, g, b] = map.rgb(i as f32 / 20.0);
                let lum = 0.299 * r + 0.587 * g + 0.114 * b;
                assert!(lum >= last - 1e-6, "{} not monotone at {i}", map.name());
                last = lum;
            }
        }
        assert_eq!(ColorMap::Hot.rgb(0.0), [0.0, 0.0, 0.0]);
        assert_eq!(ColorMap::Hot.rgb(1.0), [1.0, 1.0, 1.0]);
    }

    #[test]
    fn kspace_mask_tints_measured_and_dims_the_rest() {
        let k = array![[1.0f32, 1.0]];
        let m = array![[1.0f32, 0.0]];
        let rgba = kspace_rgba(k.view(), Some(m.view()));
        assert_eq!(&rgba[0..4], &[255, 255, 255, 255]);
        assert_eq!(&rgba[4..8], &[127, 127, 127, 255]);
        let k = array![[0.5f32, 1.0]];
        let rgba = kspace_rgba(k.view(), Some(array![[1.0f32, 1.0]].view()));
        assert_eq!(rgba[1], 128 + 70);
    }

    #[test]
    fn percentile_is_nearest_rank() {
        let img = ndarray::Array2::from_shape_fn((1, 101), |(_, j)| j as f32);
        assert_eq!(percentile(img.view(), 0.0), Some(0.0));
        assert_eq!(percentile(img.view(), 0.5), Some(50.0));
        assert_eq!(percentile(img.view(), 0.995), Some(100.0));
        assert_eq!(
            percentile(ndarray::Array2::<f32>::zeros((0, 0)).view(), 0.5),
            None
        );
    }
}

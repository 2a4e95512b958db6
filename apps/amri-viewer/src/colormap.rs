//! Window/level for grey images and colour maps for error and uncertainty maps, shared with the
//! `amri demo` figures through [`amri_figures::colormap`] (the window and the PNG export use one
//! colour pipeline), and the window presets of the side panel.

pub use amri_figures::colormap::{
    colormap_rgba, gray_rgba, kspace_rgba, percentile, ColorMap, Window,
};

/// Window presets offered in the side panel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WindowPreset {
    /// 0.5th to 99.5th percentile of the reference slice (robust to outliers).
    Auto,
    /// Minimum to maximum of the reference volume.
    FullRange,
    /// 0 to half the maximum (brings out dim tissue).
    Bright,
}

impl WindowPreset {
    /// Every preset, in the order the panel lists them.
    pub const ALL: [WindowPreset; 3] = [
        WindowPreset::Auto,
        WindowPreset::FullRange,
        WindowPreset::Bright,
    ];

    /// Name shown on its button.
    pub fn name(self) -> &'static str {
        match self {
            WindowPreset::Auto => "auto",
            WindowPreset::FullRange => "full range",
            WindowPreset::Bright => "bright",
        }
    }
}

//! Figures of amri, drawn in one place: the `amri demo` comparison figures, the training loss
//! plot (`loss.png`) and the viewer's panels and PNG export share these colour maps, windows,
//! labels and layouts.
//!
//! - [`colormap`]: grey windows (level/width), the hot / viridis / gray colour maps, percentile
//!   windowing, RGBA bytes of a slice, the k-space mask tint.
//! - [`text`]: 8×8 bitmap labels and captions.
//! - [`grid`]: labelled RGB tiles laid out in a grid and written as PNG, and the demo's
//!   reference / k-space / methods / error-map comparison figure.
//! - [`plot`]: a line plot of log₁₀(y) against x (the loss curve).
//!
//! Pictures are `[row, col, 3]` RGB (`ndarray::Array3<u8>`) or row-major RGBA bytes; PNGs are
//! written atomically through `amri_io::png`.

pub mod colormap;
pub mod error;
pub mod grid;
pub mod plot;
pub mod text;

pub use error::{FigureError, Result};

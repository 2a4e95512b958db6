//! amri viewer: a scan, its measured k-space and every reconstruction of it side by side.
//!
//! The window ([`ViewerApp`]) shows a grid of linked panels for one slice — the reference, the
//! measured k-space (log-magnitude with the sampling mask), each reconstruction with PSNR/SSIM,
//! error maps and, when computed, posterior standard deviations — with slice navigation,
//! window/level, linked zoom and pan, a pixel readout and PNG export. Reconstructions run on a
//! background thread ([`worker`]) with progress and cancel; the UI polls and never blocks.
//!
//! All state and logic live here so that tests drive the viewer without a window (egui_kittest);
//! the `amri-viewer` binary only hands a [`ViewerApp`] to eframe.
//!
//! ```no_run
//! use amri_viewer::ViewerApp;
//! let mut app = ViewerApp::new();
//! app.settings.auto_reconstruct = false;
//! app.open_blocking(&["sample-scans/colin27/t1_axial_val.nii.gz".into()]);
//! app.reconstruct(None);
//! assert!(app.wait_idle(std::time::Duration::from_secs(600)));
//! println!("{} reconstructions", app.study.results.len());
//! ```

pub mod app;
pub mod browser;
pub mod colormap;
pub mod error;
pub mod render;
pub mod study;
pub mod view;
pub mod worker;

pub use app::ViewerApp;
pub use eframe::egui;
pub use error::{Result, ViewerError};

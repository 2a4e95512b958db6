//! `amri-viewer [FILE…]`: opens the viewer window on the given scans (NIfTI, DICOM file or
//! series folder, cfl, npy/npz, fastMRI HDF5); files can also be opened from the window.

use std::path::PathBuf;

use amri_viewer::{egui, ViewerApp};

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "-h" || a == "--help") {
        println!(
            "amri-viewer [FILE...]\n\nOpens scans (NIfTI, DICOM file or series folder, BART cfl, NumPy npy/npz, fastMRI HDF5)\nand shows the measured k-space and its reconstructions side by side. See docs/viewer.md."
        );
        return std::process::ExitCode::SUCCESS;
    }
    if args.iter().any(|a| a == "-V" || a == "--version") {
        println!("amri-viewer {}", env!("CARGO_PKG_VERSION"));
        return std::process::ExitCode::SUCCESS;
    }
    let files: Vec<PathBuf> = args.into_iter().map(PathBuf::from).collect();
    let options = eframe::NativeOptions {
        viewport: egui::ViewportBuilder::default()
            .with_title("amri viewer")
            .with_inner_size([1400.0, 820.0])
            .with_drag_and_drop(true),
        ..Default::default()
    };
    let result = eframe::run_native(
        "amri-viewer",
        options,
        Box::new(move |cc| {
            let mut app = ViewerApp::new();
            app.open(files, Some(&cc.egui_ctx));
            Ok(Box::new(app))
        }),
    );
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: amri-viewer could not open a window: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

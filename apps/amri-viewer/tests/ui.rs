//! Headless tests of the viewer window with egui_kittest: snapshots of the panel grid and
//! interaction (slice slider, keys and wheel, window/level, reconstruct and cancel, errors,
//! export). Snapshots are rendered by wgpu on a software rasteriser (lavapipe/llvmpipe); update
//! them with `UPDATE_SNAPSHOTS=1 cargo test -p amri-viewer --test ui`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use amri_core::{Affine, Volume};
use amri_io::{Scan, WriteOptions};
use amri_ops::corruption::{CorruptionSpec, KspacePattern};
use amri_viewer::colormap::Window;
use amri_viewer::egui::{self, Key, Role, Vec2};
use amri_viewer::study::PanelKind;
use amri_viewer::ViewerApp;
use egui_kittest::kittest::Queryable;
use egui_kittest::{Harness, SnapshotOptions};
use ndarray::{Array4, Axis};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn sample() -> PathBuf {
    root().join("sample-scans/colin27/t1_axial_val.nii.gz")
}

/// A small phantom image written as NIfTI: `slices` slices of `n × n`, a disc with a checker.
fn phantom_file(dir: &Path, slices: usize, n: usize) -> PathBuf {
    let data = Array4::from_shape_fn((1, slices, n, n), |(_, k, i, j)| {
        let (y, x) = (i as f32 - n as f32 / 2.0, j as f32 - n as f32 / 2.0);
        if x * x + y * y < (n as f32 * 0.4).powi(2) {
            100.0 + 50.0 * ((i / 4 + j / 4 + k) % 2) as f32
        } else {
            0.0
        }
    });
    let p = dir.join("phantom.nii.gz");
    amri_io::write(
        &p,
        &Scan::Image(Volume::new(data, Affine::from_spacing([1.0, 1.0, 2.0]))),
        &WriteOptions::default(),
    )
    .expect("write phantom");
    p
}

fn harness(app: ViewerApp, size: Vec2) -> Harness<'static, ViewerApp> {
    Harness::builder()
        .with_size(size)
        .with_pixels_per_point(1.0)
        .build_ui_state(|ui, app: &mut ViewerApp| app.ui(ui), app)
}

/// How long a test waits before it calls the worker hung: far beyond any run here, so that a
/// slow or loaded machine never fails a test (that the UI does not block is checked by
/// drawing frames while a reconstruction that cannot finish runs).
const HANG: Duration = Duration::from_secs(1800);

/// Steps the window until loading and reconstruction are over.
fn settle(h: &mut Harness<'_, ViewerApp>, timeout: Duration) {
    let t = Instant::now();
    loop {
        h.step();
        if !h.state().busy() {
            break;
        }
        assert!(t.elapsed() < timeout, "still busy after {timeout:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
    h.run();
}

fn app_with_methods(methods: &[&str]) -> ViewerApp {
    let mut app = ViewerApp::new();
    for c in &mut app.settings.methods {
        c.enabled = methods.contains(&c.method.name());
    }
    app
}

#[test]
fn snapshot_panel_grid_on_the_sample_scan() {
    let mut app = app_with_methods(&["zero-filled", "l1-wavelet"]);
    app.settings.only_slice = true;
    for c in &mut app.settings.methods {
        c.params.iterations = c.params.iterations.min(30);
    }
    let mut h = harness(app, Vec2::new(1300.0, 760.0));
    h.state_mut().open(vec![sample()], None);
    settle(&mut h, HANG);
    let st = h.state();
    assert!(st.errors().is_empty(), "{:?}", st.errors());
    assert_eq!(st.study.slices(), 24);
    assert_eq!(st.view.slice, 12);
    assert_eq!(st.study.results.len(), 2, "zero-filled and l1-wavelet");
    // The reconstruction helps: l1-wavelet beats zero-filled in PSNR on this slice.
    let mut study = st.study.clone();
    let zf = study.metrics(0, 12).expect("metrics");
    let l1 = study.metrics(1, 12).expect("metrics");
    assert!(l1.psnr > zf.psnr + 1.0, "l1 {} vs zf {}", l1.psnr, zf.psnr);
    h.get_by_label_contains("l1-wavelet  ");
    // The status line holds a wall time; fix it so that the picture is reproducible.
    h.state_mut().status = "reconstruction finished".into();
    h.run();
    h.snapshot_options(
        "panel_grid_colin27",
        &SnapshotOptions::new().threshold(0.6).max_failed_pixels(10),
    );
}

#[test]
fn slice_slider_keys_and_wheel_move_the_slice() {
    let d = tempfile::tempdir().unwrap();
    let f = phantom_file(d.path(), 6, 32);
    let mut app = ViewerApp::new();
    app.settings.auto_reconstruct = false;
    app.open_blocking(&[f]);
    let mut h = harness(app, Vec2::new(1000.0, 600.0));
    h.run();
    assert_eq!(h.state().view.slice, 3);

    h.get_by_role_and_label(Role::Slider, "slice")
        .set_value_accesskit(5.0);
    h.run();
    assert_eq!(h.state().view.slice, 5);

    // Arrow keys step one slice (clamped), PageDown five, Home to the first.
    h.state_mut().view.slice = 2;
    h.key_press(Key::ArrowUp);
    h.run();
    assert_eq!(h.state().view.slice, 3);
    h.key_press(Key::ArrowDown);
    h.key_press(Key::ArrowDown);
    h.run();
    assert_eq!(h.state().view.slice, 1);
    h.key_press(Key::PageUp);
    h.run();
    assert_eq!(h.state().view.slice, 5);
    h.key_press(Key::End);
    h.run();
    assert_eq!(h.state().view.slice, 5);
    h.key_press(Key::Home);
    h.run();
    assert_eq!(h.state().view.slice, 0);

    // The mouse wheel over a panel steps slices.
    let r = h.get_by_role_and_label(Role::Image, "reference").rect();
    h.hover_at(r.center());
    h.run();
    h.event(egui::Event::MouseWheel {
        unit: egui::MouseWheelUnit::Line,
        delta: Vec2::new(0.0, 1.0),
        phase: egui::TouchPhase::Move,
        modifiers: egui::Modifiers::NONE,
        source: egui::MouseWheelSource::Wheel,
    });
    h.run();
    assert_eq!(h.state().view.slice, 1);
    // The pixel readout shows the voxel under the cursor, and its world position.
    let hov = h.state().hover.clone().expect("hover readout");
    assert_eq!(hov.kind, PanelKind::Reference);
    assert_eq!(hov.voxel[2], 1);
    let w = hov.world.expect("world position");
    assert_eq!(w[2], 2.0, "slice 1 at 2 mm spacing");
}

#[test]
fn window_level_by_right_drag_and_presets() {
    let d = tempfile::tempdir().unwrap();
    let f = phantom_file(d.path(), 2, 32);
    let mut app = ViewerApp::new();
    app.settings.auto_reconstruct = false;
    app.open_blocking(&[f]);
    let mut h = harness(app, Vec2::new(1000.0, 600.0));
    h.run();
    let auto = h.state().view.window;
    // The auto preset is the 0.5–99.5 percentile range of the slice: 0 to 150 here.
    assert_eq!(auto.range(), (0.0, 150.0));

    let r = h.get_by_role_and_label(Role::Image, "reference").rect();
    let start = r.center();
    h.event(egui::Event::PointerMoved(start));
    h.event(egui::Event::PointerButton {
        pos: start,
        button: egui::PointerButton::Secondary,
        pressed: true,
        modifiers: egui::Modifiers::NONE,
    });
    h.step();
    for k in 1..=10 {
        h.event(egui::Event::PointerMoved(
            start + Vec2::new(10.0 * k as f32, 5.0 * k as f32),
        ));
        h.step();
    }
    h.event(egui::Event::PointerButton {
        pos: start + Vec2::new(100.0, 50.0),
        button: egui::PointerButton::Secondary,
        pressed: false,
        modifiers: egui::Modifiers::NONE,
    });
    h.run();
    let w = h.state().view.window;
    // Dragging right widens, dragging down raises the level; one point = max/500.
    let scale = 150.0 / 500.0;
    assert!(w.width > auto.width, "{w:?}");
    assert!(w.level > auto.level, "{w:?}");
    assert!(
        (w.width - auto.width - 100.0 * scale).abs() < 10.0 * scale,
        "{w:?}"
    );
    assert!(
        (w.level - auto.level - 50.0 * scale).abs() < 10.0 * scale,
        "{w:?}"
    );

    h.get_by_label("full range").click();
    h.run();
    assert_eq!(h.state().view.window, Window::from_range(0.0, 150.0));
    h.get_by_label("bright").click();
    h.run();
    assert_eq!(h.state().view.window, Window::from_range(0.0, 75.0));
}

#[test]
fn reconstruct_runs_in_the_background_and_cancel_stops_it() {
    let d = tempfile::tempdir().unwrap();
    let f = phantom_file(d.path(), 4, 48);
    let mut app = app_with_methods(&["tv"]);
    app.settings.auto_reconstruct = false;
    app.settings.acquisition.coils = 1;
    for c in &mut app.settings.methods {
        // far more than can run before the cancel below, on any machine
        c.params.iterations = 1_000_000;
    }
    app.open_blocking(&[f]);
    let mut h = harness(app, Vec2::new(1000.0, 600.0));
    h.run();
    h.get_by_label("Reconstruct").click();
    h.step();
    assert!(h.state().reconstructing());
    // The window keeps drawing while the worker runs, and the progress bar moves.
    let t = Instant::now();
    while h.state().progress().unwrap_or(0.0) == 0.0 {
        h.step();
        assert!(t.elapsed() < HANG);
        std::thread::sleep(Duration::from_millis(10));
    }
    h.key_press(Key::ArrowDown);
    h.step();
    assert_eq!(h.state().view.slice, 1, "keys work during a reconstruction");
    // the frames above returned while a reconstruction that cannot finish runs: the UI is not
    // blocked by it
    assert!(h.state().reconstructing());
    h.get_by_label("Cancel").click();
    settle(&mut h, HANG);
    let st = h.state();
    assert_eq!(st.status, "reconstruction cancelled");
    assert!(st.study.results.is_empty(), "a cancelled result is dropped");
    // The simulated measured data arrived before the cancel and is shown.
    assert!(st.study.measured.is_some());
    h.get_by_label("Reconstruct");
}

#[test]
fn changing_the_acceleration_and_reconstructing_again() {
    let d = tempfile::tempdir().unwrap();
    let f = phantom_file(d.path(), 2, 64);
    let mut app = app_with_methods(&["zero-filled"]);
    app.settings.acquisition.coils = 1;
    // Equispaced lines, so that the measured fraction is known without a random draw.
    if let CorruptionSpec::Kspace { pattern, .. } = &mut app.settings.acquisition.corruption {
        *pattern = KspacePattern::Equispaced;
    }
    let mut h = harness(app, Vec2::new(1000.0, 600.0));
    h.state_mut().open(vec![f], None);
    settle(&mut h, HANG);
    let frac4 = h
        .state()
        .study
        .measured
        .as_ref()
        .expect("simulated on open")
        .kspace
        .sampled_fraction();
    assert_eq!(h.state().study.results.len(), 1);
    h.get_by_role_and_label(Role::Slider, "acceleration R")
        .set_value_accesskit(8.0);
    h.run();
    assert_eq!(h.state().settings.acceleration(), Some(8.0));
    h.get_by_label("Reconstruct").click();
    settle(&mut h, HANG);
    let frac8 = h
        .state()
        .study
        .measured
        .as_ref()
        .unwrap()
        .kspace
        .sampled_fraction();
    // fastMRI equispaced masks on 64 lines: every R-th line plus the 8 % centre (5 lines),
    // so between 64/R and 64/R + 5 lines.
    assert!(
        (16.0..=21.0).contains(&(frac4 * 64.0)),
        "R=4 measured {frac4}"
    );
    assert!(
        (8.0..=13.0).contains(&(frac8 * 64.0)),
        "R=8 measured {frac8}"
    );
    assert_eq!(h.state().study.results.len(), 1);
}

#[test]
fn a_bad_file_shows_an_error_in_the_window() {
    let d = tempfile::tempdir().unwrap();
    let bad = d.path().join("broken.nii");
    std::fs::write(&bad, b"this is not a NIfTI file").unwrap();
    let mut h = harness(ViewerApp::new(), Vec2::new(900.0, 500.0));
    h.state_mut().open(vec![bad], None);
    settle(&mut h, HANG);
    let errs: Vec<String> = h.state().errors().iter().map(|s| s.to_string()).collect();
    assert_eq!(errs.len(), 1);
    assert!(errs[0].contains("broken.nii"), "{}", errs[0]);
    h.get_by_label_contains("broken.nii");
    h.get_by_label("dismiss").click();
    h.run();
    assert!(h.state().errors().is_empty());
    // A missing file is an error too, and the window still has nothing open.
    h.state_mut()
        .open(vec![d.path().join("missing.nii.gz")], None);
    settle(&mut h, HANG);
    assert!(h.state().errors()[0].contains("missing.nii.gz"));
    assert!(h.state().study.is_empty());
}

#[test]
fn k_space_without_a_mask_says_the_mask_was_inferred() {
    // BART-made k-space with no `_mask` sibling (crates/amri-io/tests/fixtures/bart_nomask).
    let d = tempfile::tempdir().unwrap();
    let fx = root().join("crates/amri-io/tests/fixtures/bart_nomask");
    for ext in ["cfl", "hdr"] {
        std::fs::copy(
            fx.join(format!("under.{ext}")),
            d.path().join(format!("k.{ext}")),
        )
        .unwrap();
    }
    let mut app = ViewerApp::new();
    app.settings.auto_reconstruct = false;
    app.open_blocking(&[d.path().join("k.cfl")]);
    assert!(app.errors().is_empty(), "{:?}", app.errors());
    assert!(
        app.status.contains("inferred from the non-zero samples"),
        "{}",
        app.status
    );
}

#[test]
fn export_writes_the_panel_grid() {
    let d = tempfile::tempdir().unwrap();
    let f = phantom_file(d.path(), 2, 32);
    let mut app = app_with_methods(&["zero-filled"]);
    app.settings.acquisition.coils = 1;
    app.export_path = d.path().join("grid.png").display().to_string();
    let mut h = harness(app, Vec2::new(1000.0, 600.0));
    h.state_mut().open(vec![f.clone()], None);
    settle(&mut h, HANG);
    h.get_by_label("Export PNG").click();
    h.run();
    let png = d.path().join("grid.png");
    let dec = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&png).unwrap()));
    let mut reader = dec.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    // Two rows (images, error maps) of three columns (reference, k-space, zero-filled) of
    // 32 × 32 tiles with a 12-pixel caption and 2-pixel gaps.
    assert_eq!((info.width, info.height), (3 * 34, 2 * 46));
    assert_eq!(info.color_type, png::ColorType::Rgb);
    // The reference tile is the display-oriented slice through the window, pixel for pixel.
    let st = h.state();
    let vol = match amri_io::read(&f).unwrap() {
        Scan::Image(v) => v,
        _ => unreachable!(),
    };
    let slice = vol
        .data
        .index_axis(Axis(0), 0)
        .index_axis(Axis(0), st.view.slice)
        .to_owned();
    let shown = amri_io::format::display_slice(slice, &vol.affine, false);
    let w = st.view.window;
    for (r, c) in [(0, 0), (16, 16), (5, 20), (31, 31)] {
        let expect = (w.apply(shown[[r, c]]) * 255.0).round() as u8;
        let at = ((12 + r) * info.width as usize + c) * 3;
        assert_eq!(buf[at], expect, "pixel ({r}, {c})");
    }
}

/// amri-diffusion's tiny k-space ambient prior (`testing::TinyRun`), trained for two steps and
/// saved as a training run in `dir`.
fn tiny_prior(dir: &Path) -> PathBuf {
    let run = dir.join("run");
    amri_diffusion::testing::TinyRun::train(2, &candle_core::Device::Cpu)
        .and_then(|t| t.save(&run))
        .expect("tiny prior");
    run
}

#[test]
fn prior_methods_reconstruct_in_the_background_and_show_their_uncertainty() {
    let d = tempfile::tempdir().unwrap();
    let run = tiny_prior(d.path());
    let f = phantom_file(d.path(), 2, 32);
    let mut app = app_with_methods(&["one-step", "iterative"]);
    app.settings.acquisition.coils = 1;
    app.settings.auto_reconstruct = false;
    for c in &mut app.settings.methods {
        if c.method.name() == "iterative" {
            c.params.iterations = 3;
            c.params.samples = 2;
        }
    }
    app.open_blocking(&[f]);
    // Without a model the prior methods refuse, with a message in the window.
    let mut h = harness(app, Vec2::new(1000.0, 600.0));
    h.get_by_label("Reconstruct").click();
    settle(&mut h, HANG);
    let errs: Vec<String> = h.state().errors().iter().map(|s| s.to_string()).collect();
    assert!(errs.iter().any(|e| e.contains("learned prior")), "{errs:?}");
    h.state_mut().messages.clear();
    // A folder that is not a checkpoint is named in the error.
    h.state_mut().settings.model = d.path().join("nothing").display().to_string();
    h.get_by_label("Reconstruct").click();
    settle(&mut h, HANG);
    assert!(h.state().errors().iter().any(|e| e.contains("nothing")));
    h.state_mut().messages.clear();

    h.state_mut().settings.model = run.display().to_string();
    h.get_by_label("Reconstruct").click();
    settle(&mut h, HANG);
    let st = h.state();
    assert!(st.errors().is_empty(), "{:?}", st.errors());
    let names: Vec<&str> = st.study.results.iter().map(|r| r.label.as_str()).collect();
    assert_eq!(names, ["one-step", "iterative"]);
    for r in &st.study.results {
        assert!(r.image.iter().all(|v| v.is_finite()));
        assert!(r.image.iter().any(|v| *v > 0.0));
    }
    // Iterative returns the posterior std; the grid gets a row for it.
    let std = st.study.results[1].std.as_ref().expect("posterior std");
    assert!(std.iter().all(|v| v.is_finite() && *v >= 0.0));
    assert!(st.study.results[0].std.is_none());
    let layout = st.study.layout(true);
    assert!(layout.last().unwrap().contains(&Some(PanelKind::Std(1))));
    h.get_by_role_and_label(Role::Image, "std iterative");
}

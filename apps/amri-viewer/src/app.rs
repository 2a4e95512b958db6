//! The viewer window: [`ViewerApp`] holds every piece of state and draws itself into an
//! [`egui::Ui`]; the binary only hands it to eframe, and tests drive it headless with
//! egui_kittest.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{channel, Receiver};
use std::sync::Arc;
use std::time::Duration;

use amri_io::Scan;
use amri_ops::corruption::{CorruptionSpec, KspacePattern};
use amri_ops::simulate::Acquisition;
use amri_protocol::{Method, Protocol};
use eframe::egui::{
    self, Align2, Color32, FontId, Key, Pos2, Rect, Sense, Stroke, TextureHandle, TextureOptions,
    Vec2,
};

use crate::browser::Browser;
use crate::colormap::{percentile, ColorMap, Window, WindowPreset};
use crate::render::{caption, export_png, panel_picture};
use crate::study::{Origin, PanelKind, Study};
use crate::view::{orientation_labels, stored_pixel, world, ViewState};
use crate::worker::{Event, Job, MethodParams, ReconMethod, Simulation, Source, Worker};

mod input;
mod panels;
mod settings;

pub use panels::pattern_name;
pub use settings::{MethodChoice, Settings, DEFAULT_PROTOCOL};

/// A message shown in the window until dismissed.
#[derive(Clone, Debug, PartialEq)]
pub struct Message {
    /// True for errors (red), false for notes.
    pub error: bool,
    /// The text.
    pub text: String,
}

/// What is under the mouse.
#[derive(Clone, Debug, PartialEq)]
pub struct Hover {
    /// Panel hovered.
    pub kind: PanelKind,
    /// Display pixel `(row, col)`.
    pub display: (usize, usize),
    /// Stored voxel `(i, j, k) = (col, row, slice)`.
    pub voxel: [usize; 3],
    /// World position, RAS mm (image panels).
    pub world: Option<[f64; 3]>,
    /// Panel value at that pixel.
    pub value: f32,
}

type Loaded = (PathBuf, Result<Scan, String>);

struct Loader {
    rx: Receiver<Loaded>,
    remaining: usize,
}

#[derive(Clone, Copy, Debug, PartialEq)]
struct TexKey {
    version: u64,
    slice: usize,
    window: (u32, u32),
    colormap: ColorMap,
    gain: u32,
    mask: bool,
}

/// The whole viewer: data, view, settings, background work, messages.
pub struct ViewerApp {
    /// The loaded study.
    pub study: Study,
    /// The linked view.
    pub view: ViewState,
    /// Acquisition and reconstruction settings.
    pub settings: Settings,
    /// The open dialog.
    pub browser: Browser,
    /// Messages shown in the window (errors in red), newest last.
    pub messages: Vec<Message>,
    /// What the background work is doing (or did last).
    pub status: String,
    /// Where "Export PNG" writes.
    pub export_path: String,
    /// What is under the mouse.
    pub hover: Option<Hover>,
    worker: Option<Worker>,
    loader: Option<Loader>,
    textures: HashMap<PanelKind, (TexKey, TextureHandle)>,
    reconstruct_after_load: bool,
    scroll_accum: f32,
}

impl Default for ViewerApp {
    fn default() -> Self {
        ViewerApp::new()
    }
}

impl ViewerApp {
    /// An empty viewer with the default protocol.
    pub fn new() -> Self {
        ViewerApp {
            study: Study::default(),
            view: ViewState::default(),
            settings: Settings::default(),
            browser: Browser::default(),
            messages: Vec::new(),
            status: "open a scan: Open… (Ctrl+O), drag and drop, or amri-viewer FILE…".into(),
            export_path: "amri-viewer.png".into(),
            hover: None,
            worker: None,
            loader: None,
            textures: HashMap::new(),
            reconstruct_after_load: false,
            scroll_accum: 0.0,
        }
    }

    /// True while files load or a reconstruction runs.
    pub fn busy(&self) -> bool {
        self.loader.is_some() || self.worker.is_some()
    }

    /// True while a reconstruction runs.
    pub fn reconstructing(&self) -> bool {
        self.worker.is_some()
    }

    /// Fraction of the running reconstruction done, if one runs.
    pub fn progress(&self) -> Option<f32> {
        self.worker.as_ref().map(Worker::progress)
    }

    /// Adds an error message.
    pub fn error(&mut self, text: impl Into<String>) {
        self.messages.push(Message {
            error: true,
            text: text.into(),
        });
    }

    fn note(&mut self, text: impl Into<String>) {
        self.messages.push(Message {
            error: false,
            text: text.into(),
        });
    }

    /// The error messages shown now.
    pub fn errors(&self) -> Vec<&str> {
        self.messages
            .iter()
            .filter(|m| m.error)
            .map(|m| m.text.as_str())
            .collect()
    }

    /// Starts reading `paths` in order on a background thread (results arrive in
    /// [`Self::poll`]); `ctx` is woken when each file is read.
    pub fn open(&mut self, paths: Vec<PathBuf>, ctx: Option<&egui::Context>) {
        if paths.is_empty() {
            return;
        }
        let (tx, rx) = channel();
        let n = paths.len();
        let ctx = ctx.cloned();
        let spawned = std::thread::Builder::new()
            .name("amri-viewer-load".into())
            .spawn(move || {
                for p in paths {
                    let r = std::panic::catch_unwind(|| amri_io::read(&p))
                        .map_err(|_| format!("{}: the reader failed on this file", p.display()))
                        .and_then(|r| r.map_err(|e| e.to_string()));
                    let _ = tx.send((p, r));
                    if let Some(c) = &ctx {
                        c.request_repaint();
                    }
                }
            });
        match spawned {
            Ok(_) => {
                self.status = format!("loading {n} file(s) …");
                self.loader = Some(Loader { rx, remaining: n });
            }
            Err(e) => self.error(format!("cannot start the loader: {e}")),
        }
    }

    /// Reads `paths` now, on this thread (for tests and scripting).
    pub fn open_blocking(&mut self, paths: &[PathBuf]) {
        for p in paths {
            let r = amri_io::read(p).map_err(|e| e.to_string());
            self.loaded(p, r);
        }
        self.after_load();
    }

    fn loaded(&mut self, path: &Path, r: Result<Scan, String>) {
        let had = self.study.grid();
        // How the mask was decided when the file gave none (amri_io::mask_note), shown with
        // the load note.
        let mask_note = match &r {
            Ok(Scan::KSpace(k)) => amri_io::mask_note(k),
            _ => None,
        };
        match r.and_then(|scan| self.study.add_scan(path, scan).map_err(|e| e.to_string())) {
            Ok(note) => {
                self.status = match mask_note {
                    Some(m) => format!("{note}; {m}"),
                    None => note,
                };
                if self.study.grid() != had {
                    self.view.slice = self.study.slices() / 2;
                    self.view.reset_zoom();
                    self.apply_preset(WindowPreset::Auto);
                }
                self.reconstruct_after_load = self.settings.auto_reconstruct;
            }
            Err(e) => self.error(e),
        }
    }

    fn after_load(&mut self) {
        if std::mem::take(&mut self.reconstruct_after_load) && !self.reconstructing() {
            let has_recon_target = self.study.measured.is_some() || self.study.reference.is_some();
            if has_recon_target && self.study.results.iter().all(|r| r.seconds == 0.0) {
                self.reconstruct(None);
            }
        }
    }

    /// Sets the grey window from a preset, computed on the reference (or the first panel with
    /// grey values).
    pub fn apply_preset(&mut self, preset: WindowPreset) {
        let src = [
            PanelKind::Reference,
            PanelKind::Recon(0),
            PanelKind::Measured,
        ]
        .into_iter()
        .find(|k| self.study.has(*k, self.view.slice) && self.study.is_image(*k));
        let Some(kind) = src else { return };
        let slice = self.study.stored_slice(kind, self.view.slice);
        let Some(img) = slice else { return };
        let w = match preset {
            WindowPreset::Auto => amri_io::png::auto_window(img.view()),
            WindowPreset::FullRange => {
                let max = self.study.reference_max();
                let lo = percentile(img.view(), 0.0);
                match (lo, max.or_else(|| percentile(img.view(), 1.0))) {
                    (Some(lo), Some(hi)) => Some((lo.min(0.0), hi)),
                    _ => None,
                }
            }
            WindowPreset::Bright => percentile(img.view(), 1.0).map(|hi| (0.0, 0.5 * hi)),
        };
        if let Some((lo, hi)) = w {
            self.view.window = Window::from_range(lo, if hi > lo { hi } else { lo + 1.0 });
        }
    }

    /// Starts a reconstruction with the enabled methods: of the measured data when it was
    /// loaded from a file or simulated with the current acquisition, else of a new simulation
    /// from the reference. Does nothing (with a message) when there is nothing to reconstruct.
    pub fn reconstruct(&mut self, ctx: Option<&egui::Context>) {
        if self.reconstructing() {
            return;
        }
        let methods: Vec<(ReconMethod, MethodParams)> = self
            .settings
            .methods
            .iter()
            .filter(|c| c.enabled)
            .map(|c| (c.method, c.params))
            .collect();
        if methods.is_empty() {
            self.error("choose at least one method to reconstruct with");
            return;
        }
        let source = match (&self.study.measured, &self.study.reference) {
            (Some(m), _) if matches!(m.origin, Origin::File(_)) => {
                Source::Measured(Box::new(m.kspace.clone()))
            }
            (Some(m), _) if m.origin == Origin::Simulated(self.settings.acquisition.clone()) => {
                Source::Measured(Box::new(m.kspace.clone()))
            }
            (_, Some(r)) => Source::Simulate(Box::new(Simulation {
                image: Arc::new(r.clone()),
                affine: self.study.affine,
                acquisition: self.settings.acquisition.clone(),
            })),
            _ => {
                self.error("nothing to reconstruct: open an image or measured k-space first");
                return;
            }
        };
        let model = self.settings.model.trim();
        let job = Job {
            source,
            methods,
            only_slice: self.settings.only_slice.then_some(self.view.slice),
            model: (!model.is_empty()).then(|| PathBuf::from(model)),
        };
        let ctx = ctx.cloned();
        self.status = "starting …".into();
        self.worker = Some(Worker::spawn(job, move || {
            if let Some(c) = &ctx {
                c.request_repaint();
            }
        }));
    }

    /// Asks the running reconstruction to stop.
    pub fn cancel(&mut self) {
        if let Some(w) = &self.worker {
            w.cancel();
            self.status = "cancelling …".into();
        }
    }

    /// Takes in everything the loader and the worker reported (never blocks).
    pub fn poll(&mut self) {
        if let Some(mut l) = self.loader.take() {
            while let Ok((p, r)) = l.rx.try_recv() {
                self.loaded(&p, r);
                l.remaining = l.remaining.saturating_sub(1);
            }
            if l.remaining > 0 {
                self.loader = Some(l);
            } else {
                self.after_load();
            }
        }
        let Some(mut w) = self.worker.take() else {
            return;
        };
        for e in w.poll() {
            match e {
                Event::Status(s) => self.status = s,
                Event::Simulated(k, acq) => {
                    self.study.set_simulated(*k, acq);
                }
                Event::Maps(m) => {
                    if let Some(meas) = &mut self.study.measured {
                        if meas.kspace.data.shape() == m.shape() {
                            meas.kspace.sensitivities = Some(m);
                        }
                    }
                }
                Event::Result(r) => {
                    self.status = format!("{} done ({:.1} s)", r.label, r.seconds);
                    self.study.add_result(*r);
                    if self.study.results.len() == 1 && self.study.reference.is_none() {
                        self.apply_preset(WindowPreset::Auto);
                    }
                }
                Event::Failed(msg) => self.error(msg),
                Event::Finished { cancelled, seconds } => {
                    self.status = if cancelled {
                        "reconstruction cancelled".into()
                    } else {
                        format!("reconstruction finished in {seconds:.1} s")
                    };
                }
            }
        }
        if !w.is_finished() {
            self.worker = Some(w);
        }
    }

    /// Blocks until loading and reconstruction are over or `timeout` passes (tests); returns
    /// whether everything finished.
    pub fn wait_idle(&mut self, timeout: Duration) -> bool {
        let t = std::time::Instant::now();
        loop {
            self.poll();
            if !self.busy() {
                return true;
            }
            if t.elapsed() > timeout {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Writes the current panel grid to `export_path`.
    pub fn export(&mut self) {
        let path = PathBuf::from(self.export_path.trim());
        match export_png(&mut self.study, &self.view, &path) {
            Ok(()) => self.note(format!("wrote {}", path.display())),
            Err(e) => self.error(e.to_string()),
        }
    }

    /// Draws the whole window into `ui` and handles its input.
    pub fn ui(&mut self, ui: &mut egui::Ui) {
        let ctx = ui.ctx().clone();
        self.poll();
        let dropped: Vec<PathBuf> = ctx.input(|i| {
            i.raw
                .dropped_files
                .iter()
                .map(|f| f.path().to_path_buf())
                .collect()
        });
        if !dropped.is_empty() {
            self.open(dropped, Some(&ctx));
        }
        self.keys(&ctx);
        if self.busy() {
            ctx.request_repaint_after(Duration::from_millis(100));
        }

        egui::Panel::top("toolbar").show(ui, |ui| self.toolbar(ui));
        egui::Panel::bottom("readout").show(ui, |ui| self.readout(ui));
        egui::Panel::left("controls")
            .default_size(270.0)
            .show(ui, |ui| {
                egui::ScrollArea::vertical().show(ui, |ui| self.controls(ui));
            });
        egui::CentralPanel::default_margins().show(ui, |ui| {
            self.message_list(ui);
            self.grid(ui);
        });
        self.browser_window(&ctx);
    }
}

impl eframe::App for ViewerApp {
    fn ui(&mut self, ui: &mut egui::Ui, _frame: &mut eframe::Frame) {
        ViewerApp::ui(self, ui);
    }
}

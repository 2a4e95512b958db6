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

/// Points of scrolling that move one slice (one mouse-wheel notch).
const WHEEL_NOTCH: f32 = 40.0;

/// The protocol applied when the viewer starts.
pub const DEFAULT_PROTOCOL: &str = "brain-r4-cartesian";

/// A message shown in the window until dismissed.
#[derive(Clone, Debug, PartialEq)]
pub struct Message {
    /// True for errors (red), false for notes.
    pub error: bool,
    /// The text.
    pub text: String,
}

/// One method row of the reconstruction panel.
#[derive(Clone, Debug, PartialEq)]
pub struct MethodChoice {
    /// The method.
    pub method: ReconMethod,
    /// Run it on "Reconstruct".
    pub enabled: bool,
    /// Its parameters.
    pub params: MethodParams,
}

/// Acquisition and reconstruction settings edited in the side panel.
#[derive(Clone, Debug, PartialEq)]
pub struct Settings {
    /// Name of the protocol last applied.
    pub protocol: String,
    /// Acquisition used to simulate measured data from an image.
    pub acquisition: Acquisition,
    /// Methods, in panel order.
    pub methods: Vec<MethodChoice>,
    /// Reconstruct only the current slice (fast) instead of the volume.
    pub only_slice: bool,
    /// Reconstruct as soon as a scan is opened.
    pub auto_reconstruct: bool,
    /// Learned prior for one-step / iterative: a checkpoint or training-run folder.
    pub model: String,
}

impl Settings {
    /// Settings of a built-in protocol (or `DEFAULT_PROTOCOL` values if it cannot be read):
    /// its acquisition, zero-filled plus its reconstruction method enabled.
    pub fn from_protocol(p: &Protocol) -> Settings {
        let mut methods: Vec<MethodChoice> = ReconMethod::all()
            .into_iter()
            .map(|m| MethodChoice {
                method: m,
                enabled: m == ReconMethod::Classical(Method::ZeroFilled),
                params: MethodParams::default_for(m),
            })
            .collect();
        // The protocol's method, with its values over the plan's defaults.
        if let Ok(plan) = amri_pipeline::Plan::new(Some(p), &Default::default()) {
            if let Some(c) = methods
                .iter_mut()
                .find(|c| c.method == ReconMethod::Classical(plan.method()))
            {
                c.enabled = true;
                c.params = MethodParams::of_plan(&plan);
            }
        }
        let model = p
            .reconstruction
            .as_ref()
            .and_then(|r| r.model.as_ref())
            .map(|m| m.display().to_string())
            .unwrap_or_default();
        Settings {
            protocol: p.name.clone(),
            acquisition: p.acquisition.clone(),
            methods,
            only_slice: false,
            auto_reconstruct: true,
            model,
        }
    }

    /// Applies protocol `name` (a built-in name or a `.toml` path), keeping `only_slice`,
    /// `auto_reconstruct` and a model chosen before (unless the protocol names one).
    pub fn apply_protocol(&mut self, name: &str) -> crate::Result<()> {
        let p = Protocol::resolve(name)?;
        let keep = (self.only_slice, self.auto_reconstruct, self.model.clone());
        *self = Settings::from_protocol(&p);
        (self.only_slice, self.auto_reconstruct) = (keep.0, keep.1);
        if self.model.is_empty() {
            self.model = keep.2;
        }
        Ok(())
    }

    /// The acceleration of a k-space acquisition, `None` for other corruptions.
    pub fn acceleration(&self) -> Option<f64> {
        match &self.acquisition.corruption {
            CorruptionSpec::Kspace { acceleration, .. } => Some(*acceleration),
            _ => None,
        }
    }

    /// Sets the acceleration of a k-space acquisition (ignored for other corruptions).
    pub fn set_acceleration(&mut self, r: f64) {
        if let CorruptionSpec::Kspace { acceleration, .. } = &mut self.acquisition.corruption {
            *acceleration = r;
        }
    }
}

impl Default for Settings {
    fn default() -> Self {
        match Protocol::resolve(DEFAULT_PROTOCOL) {
            Ok(p) => Settings::from_protocol(&p),
            Err(_) => Settings {
                protocol: String::new(),
                acquisition: Acquisition {
                    corruption: CorruptionSpec::Kspace {
                        pattern: KspacePattern::Random,
                        acceleration: 4.0,
                        center_fraction: 0.08,
                        axis: 1,
                    },
                    delta: 0.1,
                    further: Default::default(),
                    further_box_size: None,
                    coils: 1,
                    synthetic_phase: true,
                    noise_level: 0.0,
                    seed: 0,
                    store_maps: false,
                },
                methods: ReconMethod::all()
                    .into_iter()
                    .map(|m| MethodChoice {
                        method: m,
                        enabled: !m.is_prior(),
                        params: MethodParams::default_for(m),
                    })
                    .collect(),
                only_slice: false,
                auto_reconstruct: true,
                model: String::new(),
            },
        }
    }
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
        match r.and_then(|scan| self.study.add_scan(path, scan).map_err(|e| e.to_string())) {
            Ok(note) => {
                self.status = note;
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

    /// Keyboard shortcuts (ignored while a widget has keyboard focus: a slider or text field
    /// then gets the keys).
    fn keys(&mut self, ctx: &egui::Context) {
        if ctx.egui_wants_keyboard_input() || ctx.memory(|m| m.focused().is_some()) {
            return;
        }
        let n = self.study.slices();
        let (up, down, pgup, pgdn, home, end, m, e, r, esc, f5, open) = ctx.input(|i| {
            (
                i.key_pressed(Key::ArrowUp) || i.key_pressed(Key::ArrowRight),
                i.key_pressed(Key::ArrowDown) || i.key_pressed(Key::ArrowLeft),
                i.key_pressed(Key::PageUp),
                i.key_pressed(Key::PageDown),
                i.key_pressed(Key::Home),
                i.key_pressed(Key::End),
                i.key_pressed(Key::M),
                i.key_pressed(Key::E),
                i.key_pressed(Key::R),
                i.key_pressed(Key::Escape),
                i.key_pressed(Key::F5),
                i.modifiers.command && i.key_pressed(Key::O),
            )
        });
        if up {
            self.view.step_slice(1, n);
        }
        if down {
            self.view.step_slice(-1, n);
        }
        if pgup {
            self.view.step_slice(5, n);
        }
        if pgdn {
            self.view.step_slice(-5, n);
        }
        if home {
            self.view.slice = 0;
        }
        if end {
            self.view.step_slice(n as i64, n);
        }
        if m {
            self.view.show_mask = !self.view.show_mask;
        }
        if e {
            self.view.show_errors = !self.view.show_errors;
        }
        if r {
            self.view.reset_zoom();
        }
        if esc {
            if self.browser.open {
                self.browser.open = false;
            } else {
                self.cancel();
            }
        }
        if f5 {
            self.reconstruct(Some(ctx));
        }
        if open {
            self.open_dialog();
        }
    }

    fn open_dialog(&mut self) {
        let dir = self
            .browser
            .dir
            .is_dir()
            .then(|| self.browser.dir.clone())
            .or_else(|| std::env::current_dir().ok())
            .unwrap_or_else(|| PathBuf::from("."));
        self.browser.show(&dir);
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

    fn toolbar(&mut self, ui: &mut egui::Ui) {
        ui.horizontal(|ui| {
            if ui.button("Open…").clicked() {
                self.open_dialog();
            }
            let ctx = ui.ctx().clone();
            if self.reconstructing() {
                let cancelling = self.worker.as_ref().is_some_and(Worker::is_cancelling);
                if ui
                    .add_enabled(!cancelling, egui::Button::new("Cancel"))
                    .clicked()
                {
                    self.cancel();
                }
                let p = self.progress().unwrap_or(0.0);
                ui.add(
                    egui::ProgressBar::new(p)
                        .desired_width(200.0)
                        .show_percentage(),
                );
            } else if ui
                .add_enabled(!self.study.is_empty(), egui::Button::new("Reconstruct"))
                .clicked()
            {
                self.reconstruct(Some(&ctx));
            }
            if ui
                .add_enabled(!self.study.is_empty(), egui::Button::new("Export PNG"))
                .clicked()
            {
                self.export();
            }
            ui.label(&self.status);
        });
    }

    fn readout(&mut self, ui: &mut egui::Ui) {
        let text = match &self.hover {
            Some(h) => {
                let mut s = format!(
                    "{}  voxel (i, j, k) = ({}, {}, {})",
                    self.study.title(h.kind),
                    h.voxel[0],
                    h.voxel[1],
                    h.voxel[2]
                );
                if let Some(w) = h.world {
                    s.push_str(&format!("  RAS ({:.1}, {:.1}, {:.1}) mm", w[0], w[1], w[2]));
                }
                s.push_str(&format!("  value {:.4}", h.value));
                s
            }
            None => format!(
                "slice {} / {}   zoom {:.1}×   window L {:.3} W {:.3}",
                self.view.slice,
                self.study.slices().saturating_sub(1),
                self.view.zoom,
                self.view.window.level,
                self.view.window.width
            ),
        };
        ui.label(text);
    }

    fn message_list(&mut self, ui: &mut egui::Ui) {
        let mut dismiss = None;
        for (n, m) in self.messages.iter().enumerate() {
            let color = if m.error {
                Color32::from_rgb(220, 60, 60)
            } else {
                Color32::from_rgb(90, 170, 90)
            };
            egui::Frame::new()
                .stroke(Stroke::new(1.0, color))
                .inner_margin(4.0)
                .show(ui, |ui| {
                    ui.horizontal(|ui| {
                        if ui.small_button("dismiss").clicked() {
                            dismiss = Some(n);
                        }
                        ui.colored_label(color, &m.text);
                    });
                });
        }
        if let Some(n) = dismiss {
            self.messages.remove(n);
        }
    }

    fn controls(&mut self, ui: &mut egui::Ui) {
        let n = self.study.slices();
        ui.heading("View");
        if n > 0 {
            let mut s = self.view.slice;
            ui.add(egui::Slider::new(&mut s, 0..=n - 1).text("slice"));
            self.view.slice = s.min(n - 1);
        }
        ui.horizontal(|ui| {
            ui.label("window");
            for p in WindowPreset::ALL {
                if ui.small_button(p.name()).clicked() {
                    self.apply_preset(p);
                }
            }
        });
        let span = self.study.reference_max().unwrap_or(1.0).max(1e-6);
        ui.add(egui::Slider::new(&mut self.view.window.level, -span..=2.0 * span).text("level"));
        ui.add(
            egui::Slider::new(&mut self.view.window.width, span * 1e-3..=3.0 * span).text("width"),
        );
        egui::ComboBox::from_label("error/std colours")
            .selected_text(self.view.colormap.name())
            .show_ui(ui, |ui| {
                for c in ColorMap::ALL {
                    ui.selectable_value(&mut self.view.colormap, c, c.name());
                }
            });
        ui.add(egui::Slider::new(&mut self.view.error_gain, 1.0..=50.0).text("error gain"));
        ui.checkbox(&mut self.view.show_mask, "sampling mask on k-space (M)");
        ui.checkbox(&mut self.view.show_errors, "error maps (E)");
        if ui.button("reset zoom (R)").clicked() {
            self.view.reset_zoom();
        }

        ui.separator();
        ui.heading("Acquisition");
        let file_data = self
            .study
            .measured
            .as_ref()
            .is_some_and(|m| matches!(m.origin, Origin::File(_)));
        let mut chosen = None;
        egui::ComboBox::from_label("protocol")
            .selected_text(self.settings.protocol.clone())
            .show_ui(ui, |ui| {
                for (name, _) in amri_protocol::BUILTIN {
                    if ui
                        .selectable_label(self.settings.protocol == *name, *name)
                        .clicked()
                    {
                        chosen = Some(name.to_string());
                    }
                }
            });
        if let Some(name) = chosen {
            if let Err(e) = self.settings.apply_protocol(&name) {
                self.error(e.to_string());
            }
        }
        if file_data {
            ui.label("measured data from a file: the acquisition is as recorded");
        }
        ui.add_enabled_ui(!file_data, |ui| {
            let acq = &mut self.settings.acquisition;
            match &mut acq.corruption {
                CorruptionSpec::Kspace {
                    pattern,
                    acceleration,
                    center_fraction,
                    ..
                } => {
                    egui::ComboBox::from_label("pattern")
                        .selected_text(pattern_name(*pattern))
                        .show_ui(ui, |ui| {
                            for p in [
                                KspacePattern::Random,
                                KspacePattern::Equispaced,
                                KspacePattern::EquispacedFraction,
                                KspacePattern::Poisson,
                            ] {
                                ui.selectable_value(pattern, p, pattern_name(p));
                            }
                        });
                    ui.add(egui::Slider::new(acceleration, 1.0..=16.0).text("acceleration R"));
                    ui.add(egui::Slider::new(center_fraction, 0.0..=0.5).text("centre fraction"));
                }
                other => {
                    ui.label(format!("corruption: {}", corruption_name(other)));
                }
            }
            ui.add(egui::Slider::new(&mut acq.coils, 1..=32).text("coils"));
            ui.add(egui::Slider::new(&mut acq.noise_level, 0.0..=0.05).text("noise (× max)"));
            let mut seed = acq.seed as u32;
            ui.add(egui::Slider::new(&mut seed, 0..=1000).text("seed"));
            acq.seed = u64::from(seed);
        });

        ui.separator();
        ui.heading("Reconstruction");
        for c in &mut self.settings.methods {
            ui.checkbox(&mut c.enabled, c.method.name());
            if c.enabled && c.method.iterates() {
                ui.indent(c.method.name(), |ui| {
                    if c.method.has_lambda() {
                        ui.add(
                            egui::Slider::new(&mut c.params.lambda, 1e-5..=0.1)
                                .logarithmic(true)
                                .text(format!("λ {}", c.method.name())),
                        );
                    }
                    let what = if c.method.is_prior() {
                        "steps"
                    } else {
                        "iterations"
                    };
                    ui.add(
                        egui::Slider::new(&mut c.params.iterations, 1..=500)
                            .text(format!("{what} {}", c.method.name())),
                    );
                    if c.method.is_prior() {
                        ui.add(
                            egui::Slider::new(&mut c.params.samples, 1..=32)
                                .text(format!("samples {}", c.method.name())),
                        );
                    }
                });
            }
        }
        let label = ui.label("prior model (checkpoint or run folder)");
        ui.text_edit_singleline(&mut self.settings.model)
            .labelled_by(label.id);
        ui.checkbox(&mut self.settings.only_slice, "current slice only (fast)");
        ui.checkbox(&mut self.settings.auto_reconstruct, "reconstruct on open");

        ui.separator();
        ui.heading("Export");
        let label = ui.label("PNG file");
        ui.text_edit_singleline(&mut self.export_path)
            .labelled_by(label.id);
    }

    fn browser_window(&mut self, ctx: &egui::Context) {
        if !self.browser.open {
            return;
        }
        let mut open = true;
        let mut to_open: Option<PathBuf> = None;
        let mut select: Option<String> = None;
        let mut up = false;
        let mut go = false;
        egui::Window::new("Open a scan")
            .open(&mut open)
            .default_size([460.0, 420.0])
            .show(ctx, |ui| {
                ui.horizontal(|ui| {
                    if ui.button("up").clicked() {
                        up = true;
                    }
                    let label = ui.label("path");
                    let r = ui
                        .text_edit_singleline(&mut self.browser.path_text)
                        .labelled_by(label.id);
                    if r.lost_focus() && ui.input(|i| i.key_pressed(Key::Enter)) {
                        go = true;
                    }
                });
                if let Some(e) = &self.browser.error {
                    ui.colored_label(Color32::from_rgb(220, 60, 60), e);
                }
                egui::ScrollArea::vertical()
                    .max_height(300.0)
                    .show(ui, |ui| {
                        for e in &self.browser.entries {
                            let text = if e.is_dir {
                                format!("{}/", e.name)
                            } else {
                                e.name.clone()
                            };
                            if ui.selectable_label(false, text).clicked() {
                                select = Some(e.name.clone());
                            }
                        }
                    });
                ui.horizontal(|ui| {
                    if ui.button("Open").clicked() {
                        go = true;
                    }
                    if ui.button("Open this folder (DICOM series)").clicked() {
                        to_open = Some(self.browser.dir.clone());
                    }
                });
            });
        if up {
            self.browser.up();
        }
        if let Some(s) = select {
            self.browser.select(&s);
        }
        if go {
            let p = self.browser.chosen();
            if p.is_dir() && !looks_like_series(&p) {
                self.browser.enter(&p);
            } else {
                to_open = Some(p);
            }
        }
        if let Some(p) = to_open {
            self.browser.open = false;
            self.open(vec![p], Some(ctx));
        } else if !open {
            self.browser.open = false;
        }
    }

    fn texture(&mut self, ctx: &egui::Context, kind: PanelKind) -> Option<TextureHandle> {
        let key = TexKey {
            version: self.study.version,
            slice: self.view.slice,
            window: (
                self.view.window.level.to_bits(),
                self.view.window.width.to_bits(),
            ),
            colormap: self.view.colormap,
            gain: self.view.error_gain.to_bits(),
            mask: self.view.show_mask,
        };
        if let Some((k, t)) = self.textures.get(&kind) {
            if *k == key {
                return Some(t.clone());
            }
        }
        let p = panel_picture(&self.study, &self.view, kind)?;
        let img = egui::ColorImage::from_rgba_unmultiplied([p.width, p.height], &p.rgba);
        let tex = ctx.load_texture(format!("{kind:?}"), img, TextureOptions::NEAREST);
        self.textures.insert(kind, (key, tex.clone()));
        Some(tex)
    }

    fn grid(&mut self, ui: &mut egui::Ui) {
        let layout = self.study.layout(self.view.show_errors);
        let Some([_, rows, cols]) = self.study.grid() else {
            ui.centered_and_justified(|ui| {
                ui.label("No scan open. Open a NIfTI, DICOM, cfl, npy/npz or fastMRI HDF5 file (Ctrl+O), drop one here, or start amri-viewer FILE….");
            });
            return;
        };
        if rows == 0 || cols == 0 {
            ui.label("this measured data (Gaussian projections) has no image grid to show");
            return;
        }
        let ncols = layout.iter().map(Vec::len).max().unwrap_or(1).max(1);
        let nrows = layout.len().max(1);
        let avail = ui.available_rect_before_wrap();
        let (cap, pad) = (18.0, 4.0);
        let cell = Vec2::new(avail.width() / ncols as f32, avail.height() / nrows as f32);
        let vs = self.study.affine.voxel_size();
        let aspect = (cols as f64 * vs[0]) / (rows as f64 * vs[1]).max(1e-9);
        let aspect = if aspect.is_finite() && aspect > 0.0 {
            aspect as f32
        } else {
            1.0
        };
        let ctx = ui.ctx().clone();
        let mut new_hover = None;
        let hovered_pixel = self.hover.as_ref().map(|h| h.display);
        for (r, row) in layout.iter().enumerate() {
            for (c, kind) in row.iter().enumerate() {
                let Some(kind) = *kind else { continue };
                let cell_rect = Rect::from_min_size(
                    avail.min + Vec2::new(c as f32 * cell.x, r as f32 * cell.y),
                    cell,
                );
                let inner = cell_rect.shrink(pad);
                let img_area = Rect::from_min_max(inner.min + Vec2::new(0.0, cap), inner.max);
                let (w, h) = fit(img_area.size(), aspect);
                let img_rect = Rect::from_center_size(img_area.center(), Vec2::new(w, h));
                let text = caption(&mut self.study, kind, self.view.slice);
                ui.painter().text(
                    inner.min,
                    Align2::LEFT_TOP,
                    &text,
                    FontId::proportional(13.0),
                    ui.visuals().strong_text_color(),
                );
                let resp = ui.allocate_rect(img_rect, Sense::click_and_drag());
                let title = text.clone();
                resp.widget_info(|| {
                    egui::WidgetInfo::labeled(egui::Role::Image, true, title.clone())
                });
                let painter = ui.painter_at(img_rect);
                painter.rect_filled(img_rect, 0.0, Color32::BLACK);
                let Some(tex) = self.texture(&ctx, kind) else {
                    painter.text(
                        img_rect.center(),
                        Align2::CENTER_CENTER,
                        "not reconstructed on this slice",
                        FontId::proportional(12.0),
                        Color32::GRAY,
                    );
                    continue;
                };
                let [u0, v0, u1, v1] = self.view.uv_rect();
                painter.image(
                    tex.id(),
                    img_rect,
                    Rect::from_min_max(Pos2::new(u0, v0), Pos2::new(u1, v1)),
                    Color32::WHITE,
                );
                let image_panel = self.study.is_image(kind);
                if image_panel {
                    let [l, rt, t, b] = orientation_labels(&self.study.affine);
                    let f = FontId::monospace(11.0);
                    let col = Color32::from_rgb(255, 210, 0);
                    painter.text(
                        img_rect.left_center() + Vec2::new(3.0, 0.0),
                        Align2::LEFT_CENTER,
                        l,
                        f.clone(),
                        col,
                    );
                    painter.text(
                        img_rect.right_center() - Vec2::new(3.0, 0.0),
                        Align2::RIGHT_CENTER,
                        rt,
                        f.clone(),
                        col,
                    );
                    painter.text(
                        img_rect.center_top() + Vec2::new(0.0, 2.0),
                        Align2::CENTER_TOP,
                        t,
                        f.clone(),
                        col,
                    );
                    painter.text(
                        img_rect.center_bottom() - Vec2::new(0.0, 2.0),
                        Align2::CENTER_BOTTOM,
                        b,
                        f,
                        col,
                    );
                }
                // Linked cursor: the hovered pixel marked on every panel.
                if let Some((hr, hc)) = hovered_pixel {
                    if let Some([fx, fy]) = self.view.panel_fraction(hr, hc, rows, cols) {
                        let p =
                            img_rect.min + Vec2::new(fx * img_rect.width(), fy * img_rect.height());
                        let s = Stroke::new(1.0, Color32::from_rgba_unmultiplied(0, 255, 255, 160));
                        painter.line_segment([p - Vec2::new(6.0, 0.0), p + Vec2::new(6.0, 0.0)], s);
                        painter.line_segment([p - Vec2::new(0.0, 6.0), p + Vec2::new(0.0, 6.0)], s);
                    }
                }
                self.interact(&resp, img_rect, kind, rows, cols, &mut new_hover);
            }
        }
        self.hover = new_hover;
    }

    fn interact(
        &mut self,
        resp: &egui::Response,
        rect: Rect,
        kind: PanelKind,
        rows: usize,
        cols: usize,
        hover: &mut Option<Hover>,
    ) {
        let frac = |p: Pos2| {
            [
                (p.x - rect.min.x) / rect.width().max(1.0),
                (p.y - rect.min.y) / rect.height().max(1.0),
            ]
        };
        if resp.dragged_by(egui::PointerButton::Primary)
            || resp.dragged_by(egui::PointerButton::Middle)
        {
            let d = resp.drag_delta();
            self.view
                .pan_by(d.x / rect.width().max(1.0), d.y / rect.height().max(1.0));
        }
        if resp.dragged_by(egui::PointerButton::Secondary) {
            let d = resp.drag_delta();
            let scale = self.study.reference_max().unwrap_or(self.view.window.width) / 500.0;
            self.view.window = self.view.window.dragged(d.x, d.y, scale);
        }
        if resp.double_clicked() {
            self.view.reset_zoom();
        }
        let Some(pos) = resp.hover_pos() else { return };
        let [fx, fy] = frac(pos);
        let (zoom, scroll) = resp.ctx.input(|i| {
            // Wheel events without Ctrl/Cmd (those zoom), in points: a line (one notch) is 40.
            let mut points = 0.0;
            for e in &i.raw.events {
                if let egui::Event::MouseWheel {
                    unit,
                    delta,
                    modifiers,
                    ..
                } = e
                {
                    if !modifiers.command && !modifiers.ctrl {
                        points += match unit {
                            egui::MouseWheelUnit::Point => delta.y,
                            egui::MouseWheelUnit::Line => delta.y * WHEEL_NOTCH,
                            egui::MouseWheelUnit::Page => delta.y * 5.0 * WHEEL_NOTCH,
                        };
                    }
                }
            }
            (i.zoom_delta(), points)
        });
        if (zoom - 1.0).abs() > 1e-4 {
            let [u0, v0, u1, v1] = self.view.uv_rect();
            self.view
                .zoom_by(zoom, [u0 + fx * (u1 - u0), v0 + fy * (v1 - v0)]);
        } else if scroll != 0.0 {
            // One notch moves one slice (wheel up = next); trackpad deltas add up.
            self.scroll_accum += scroll;
            let steps = (self.scroll_accum / WHEEL_NOTCH).trunc();
            if steps != 0.0 {
                self.scroll_accum -= steps * WHEEL_NOTCH;
                self.view.step_slice(steps as i64, self.study.slices());
            }
        }
        let Some((r, c)) = self.view.pixel_at(fx, fy, rows, cols) else {
            return;
        };
        let image = self.study.is_image(kind);
        let (sr, sc) = if image {
            stored_pixel(&self.study.affine, r, c, rows, cols)
        } else {
            (r, c)
        };
        let value = self
            .study
            .display_slice(kind, self.view.slice)
            .and_then(|s| s.get((r, c)).copied())
            .unwrap_or(f32::NAN);
        *hover = Some(Hover {
            kind,
            display: (r, c),
            voxel: [sc, sr, self.view.slice],
            world: image.then(|| world(&self.study.affine, self.view.slice, sr, sc)),
            value,
        });
    }
}

fn fit(area: Vec2, aspect: f32) -> (f32, f32) {
    let w = area.x.max(1.0);
    let h = area.y.max(1.0);
    if w / h > aspect {
        (h * aspect, h)
    } else {
        (w, w / aspect)
    }
}

fn looks_like_series(dir: &Path) -> bool {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten().any(|e| {
                let p = e.path();
                p.is_file()
                    && p.extension().is_none_or(|x| {
                        x.eq_ignore_ascii_case("dcm") || x.eq_ignore_ascii_case("ima")
                    })
            })
        })
        .unwrap_or(false)
}

/// Name of a k-space sampling pattern as in protocol files.
pub fn pattern_name(p: KspacePattern) -> &'static str {
    match p {
        KspacePattern::Random => "random",
        KspacePattern::Equispaced => "equispaced",
        KspacePattern::EquispacedFraction => "equispaced_fraction",
        KspacePattern::Poisson => "poisson",
    }
}

fn corruption_name(c: &CorruptionSpec) -> &'static str {
    match c {
        CorruptionSpec::Kspace { .. } => "k-space",
        CorruptionSpec::Pixel { .. } => "pixel inpainting",
        CorruptionSpec::Boxes { .. } => "boxes",
        CorruptionSpec::GaussianCs { .. } => "Gaussian compressed sensing",
    }
}

impl eframe::App for ViewerApp {
    fn ui(&mut self, ui: &mut egui::Ui, _frame: &mut eframe::Frame) {
        ViewerApp::ui(self, ui);
    }
}

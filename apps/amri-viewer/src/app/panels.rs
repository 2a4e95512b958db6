//! Drawing the window's parts: toolbar, readout, messages, the side panel's controls, the
//! file browser and the panel grid.

use super::*;

impl ViewerApp {
    pub(super) fn toolbar(&mut self, ui: &mut egui::Ui) {
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

    pub(super) fn readout(&mut self, ui: &mut egui::Ui) {
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

    pub(super) fn message_list(&mut self, ui: &mut egui::Ui) {
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

    pub(super) fn controls(&mut self, ui: &mut egui::Ui) {
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

    pub(super) fn browser_window(&mut self, ctx: &egui::Context) {
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

    pub(super) fn texture(
        &mut self,
        ctx: &egui::Context,
        kind: PanelKind,
    ) -> Option<TextureHandle> {
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

    pub(super) fn grid(&mut self, ui: &mut egui::Ui) {
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
}

pub(super) fn fit(area: Vec2, aspect: f32) -> (f32, f32) {
    let w = area.x.max(1.0);
    let h = area.y.max(1.0);
    if w / h > aspect {
        (h * aspect, h)
    } else {
        (w, w / aspect)
    }
}

pub(super) fn looks_like_series(dir: &Path) -> bool {
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

pub(super) fn corruption_name(c: &CorruptionSpec) -> &'static str {
    match c {
        CorruptionSpec::Kspace { .. } => "k-space",
        CorruptionSpec::Pixel { .. } => "pixel inpainting",
        CorruptionSpec::Boxes { .. } => "boxes",
        CorruptionSpec::GaussianCs { .. } => "Gaussian compressed sensing",
    }
}

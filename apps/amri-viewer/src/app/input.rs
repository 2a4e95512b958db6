//! Input handling: keyboard shortcuts, the open dialog, and mouse interaction with a panel
//! (hover readout, wheel through slices, zoom and pan).

use super::*;

/// Points of scrolling that move one slice (one mouse-wheel notch).
const WHEEL_NOTCH: f32 = 40.0;

impl ViewerApp {
    /// Keyboard shortcuts (ignored while a widget has keyboard focus: a slider or text field
    /// then gets the keys).
    pub(super) fn keys(&mut self, ctx: &egui::Context) {
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

    pub(super) fn open_dialog(&mut self) {
        let dir = self
            .browser
            .dir
            .is_dir()
            .then(|| self.browser.dir.clone())
            .or_else(|| std::env::current_dir().ok())
            .unwrap_or_else(|| PathBuf::from("."));
        self.browser.show(&dir);
    }

    pub(super) fn interact(
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

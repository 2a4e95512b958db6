//! Panel pictures: the RGBA bytes every panel shows (shared by the window and the PNG export),
//! and the export of the current panel grid as one PNG.

use std::path::Path;

use amri_figures::colormap::{colormap_rgba, gray_rgba, kspace_rgba, percentile};
use amri_figures::text::caption as draw_text;
use ndarray::Array3;

use crate::error::{Result, ViewerError};
use crate::study::{PanelKind, Study};
use crate::view::ViewState;

/// An RGBA picture, row-major, 4 bytes per pixel.
#[derive(Clone, Debug, PartialEq)]
pub struct Picture {
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
    /// `height · width · 4` bytes.
    pub rgba: Vec<u8>,
}

/// The picture of panel `kind` on the view's slice: grey images through the view's window;
/// error maps `|x − ref|` through the colour map over `[0, ref max / error gain]`; standard
/// deviation maps over `[0, their 99.5th percentile]`; k-space as log-magnitude with the mask
/// overlay when enabled. Image panels are in display orientation.
pub fn panel_picture(study: &Study, view: &ViewState, kind: PanelKind) -> Option<Picture> {
    let img = study.display_slice(kind, view.slice)?;
    let (h, w) = img.dim();
    let rgba = match kind {
        PanelKind::Reference | PanelKind::Recon(_) => gray_rgba(img.view(), &view.window),
        PanelKind::Measured => {
            if study.is_image(kind) {
                gray_rgba(img.view(), &view.window)
            } else {
                let mask = if view.show_mask {
                    study.mask_slice(view.slice)
                } else {
                    None
                };
                kspace_rgba(img.view(), mask.as_ref().map(|m| m.view()))
            }
        }
        PanelKind::Error(_) => {
            let max = study.reference_max().unwrap_or(1.0) / view.error_gain.max(1e-3);
            colormap_rgba(img.view(), max, view.colormap)
        }
        PanelKind::Std(_) => {
            let max = percentile(img.view(), 0.995).unwrap_or(1.0);
            colormap_rgba(img.view(), max, view.colormap)
        }
    };
    Some(Picture {
        width: w,
        height: h,
        rgba,
    })
}

/// Caption of a panel: its title and, for reconstructions with a reference, PSNR and SSIM on
/// the current slice.
pub fn caption(study: &mut Study, kind: PanelKind, slice: usize) -> String {
    let title = study.title(kind);
    match kind {
        PanelKind::Recon(i) => match study.metrics(i, slice) {
            Some(m) => format!("{title}  {:.2} dB  SSIM {:.3}", m.psnr, m.ssim),
            None => title,
        },
        _ => title,
    }
}

/// The current panel grid (the view's slice, whole slices, no zoom) as an RGB image
/// `[row, col, 3]`: one tile per panel in the window's layout, each with a 12-pixel caption
/// strip above it, 2-pixel gaps, empty cells black.
pub fn grid_image(study: &mut Study, view: &ViewState) -> Result<Array3<u8>> {
    let layout = study.layout(view.show_errors);
    let Some([_, th, tw]) = study.grid() else {
        return Err(ViewerError::msg("nothing to export: open a scan first"));
    };
    if th == 0 || tw == 0 {
        return Err(ViewerError::msg(
            "nothing to export: the data holds no image grid",
        ));
    }
    let cols = layout.iter().map(Vec::len).max().unwrap_or(0).max(1);
    let (cap, gap) = (12usize, 2usize);
    let (cell_h, cell_w) = (th + cap, tw);
    let mut canvas = Array3::<u8>::zeros((layout.len() * (cell_h + gap), cols * (cell_w + gap), 3));
    for (r, row) in layout.iter().enumerate() {
        for (c, kind) in row.iter().enumerate() {
            let Some(kind) = *kind else { continue };
            let (y0, x0) = (r * (cell_h + gap), c * (cell_w + gap));
            let text = caption(study, kind, view.slice);
            draw_text(&mut canvas, y0 + 2, x0 + 1, &text);
            let Some(p) = panel_picture(study, view, kind) else {
                draw_text(&mut canvas, y0 + cap + th / 2, x0 + 2, "not reconstructed");
                continue;
            };
            if p.width != tw || p.height != th {
                continue;
            }
            for y in 0..th {
                for x in 0..tw {
                    for ch in 0..3 {
                        canvas[[y0 + cap + y, x0 + x, ch]] = p.rgba[4 * (y * tw + x) + ch];
                    }
                }
            }
        }
    }
    Ok(canvas)
}

/// Writes [`grid_image`] to `path` as an RGB PNG (atomically).
pub fn export_png(study: &mut Study, view: &ViewState, path: &Path) -> Result<()> {
    let img = grid_image(study, view)?;
    amri_io::png::write_rgb(path, img.view())?;
    Ok(())
}

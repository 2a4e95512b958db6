//! What the viewer shows: one study = a reference image, its measured data and any number of
//! reconstructions of the same `[slice, row, col]` grid.
//!
//! Files are added in the order they are opened: the first image (or the reference stored with
//! measured k-space) becomes the reference; measured k-space (cfl, npy/npz, fastMRI HDF5)
//! becomes the measured data; a further image on the same grid is shown as one more
//! reconstruction panel (e.g. an `amri recon` output). A file on a different grid starts a new
//! study. Slices are shown in radiological display orientation (see
//! [`amri_io::format::display_slice`]); k-space in its stored order.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use amri_core::metrics::{psnr_with_range, ssim_with_range, Metrics};
use amri_core::{Affine, KSpace, MeasuredDomain};
use amri_io::Scan;
use amri_ops::simulate::Acquisition;
use ndarray::{s, Array2, Array3, Axis};

use crate::error::{Result, ViewerError};

/// Where the measured data came from.
#[derive(Clone, Debug, PartialEq)]
pub enum Origin {
    /// Read from this file: the acquisition is fixed.
    File(PathBuf),
    /// Simulated by the viewer from the reference with this acquisition.
    Simulated(Acquisition),
}

/// Measured data and its provenance.
#[derive(Clone, Debug)]
pub struct Measured {
    /// The data `[slice, coil, row, col]` with mask (and maps once estimated).
    pub kspace: KSpace,
    /// File or simulation it came from.
    pub origin: Origin,
}

impl Measured {
    /// The measurement domain: k-space, image (pixel/box corruptions) or projection.
    pub fn domain(&self) -> MeasuredDomain {
        self.kspace.domain()
    }
}

/// One reconstruction panel's data.
#[derive(Clone, Debug)]
pub struct ReconResult {
    /// Panel title, e.g. `"l1-wavelet"` or a file name.
    pub label: String,
    /// Magnitude image `[slice, row, col]` (zeros where not reconstructed).
    pub image: Array3<f32>,
    /// Which slices hold a reconstruction (a single-slice run fills one).
    pub valid: Vec<bool>,
    /// Per-pixel posterior standard deviation `[slice, row, col]`, when computed.
    pub std: Option<Array3<f32>>,
    /// Wall time of the reconstruction in seconds (0 for a file).
    pub seconds: f64,
    /// Parameters in words, shown under the panel.
    pub details: String,
}

/// Kind of a panel in the grid.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PanelKind {
    /// The fully sampled reference image.
    Reference,
    /// Measured k-space as log-magnitude (root-sum-of-squares over coils) with its mask, or
    /// the corrupted image for image-domain measurements.
    Measured,
    /// Reconstruction number `i`.
    Recon(usize),
    /// `|recon i − reference|`.
    Error(usize),
    /// Posterior standard deviation of reconstruction `i`.
    Std(usize),
}

/// The loaded data of one study.
#[derive(Clone, Debug, Default)]
pub struct Study {
    /// Reference magnitude `[slice, row, col]`.
    pub reference: Option<Array3<f32>>,
    /// Where the reference came from (file name).
    pub reference_source: Option<String>,
    /// Voxel → RAS mm of the image grid.
    pub affine: Affine,
    /// Measured data, when loaded or simulated.
    pub measured: Option<Measured>,
    /// Reconstructions, in panel order.
    pub results: Vec<ReconResult>,
    /// Bumped on every change so that cached textures are rebuilt.
    pub version: u64,
    metrics: HashMap<(usize, usize), Option<Metrics>>,
    ref_max: Option<f32>,
}

impl Study {
    /// `[slices, rows, cols]` of the image grid, if anything is loaded.
    pub fn grid(&self) -> Option<[usize; 3]> {
        if let Some(r) = &self.reference {
            let (s, h, w) = r.dim();
            return Some([s, h, w]);
        }
        if let Some(m) = &self.measured {
            let [s, _, h, w] = m.kspace.shape4();
            if m.domain() != MeasuredDomain::Projection {
                return Some([s, h, w]);
            }
            return Some([s, 0, 0]);
        }
        self.results.first().map(|r| {
            let (s, h, w) = r.image.dim();
            [s, h, w]
        })
    }

    /// Number of slices (0 when empty).
    pub fn slices(&self) -> usize {
        self.grid().map(|g| g[0]).unwrap_or(0)
    }

    /// True when nothing is loaded.
    pub fn is_empty(&self) -> bool {
        self.reference.is_none() && self.measured.is_none() && self.results.is_empty()
    }

    fn touch(&mut self) {
        self.version += 1;
        self.metrics.clear();
        self.ref_max = self.reference.as_ref().map(|r| {
            r.iter()
                .copied()
                .filter(|v| v.is_finite())
                .fold(0.0, f32::max)
        });
    }

    /// Maximum of the reference volume (the PSNR/SSIM data range, as fastMRI).
    pub fn reference_max(&self) -> Option<f32> {
        self.ref_max
    }

    /// Adds a scan read from `path`; returns a note for the status line.
    pub fn add_scan(&mut self, path: &Path, scan: Scan) -> Result<String> {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| path.display().to_string());
        match scan {
            Scan::KSpace(k) => {
                k.validate().map_err(|e| {
                    ViewerError::msg(format!(
                        "{}: inconsistent measured data: {e}",
                        path.display()
                    ))
                })?;
                let [s, _, h, w] = k.shape4();
                let fits = k.domain() == MeasuredDomain::Projection
                    || self.grid().is_none_or(|g| g == [s, h, w]);
                let mut note = format!("{name}: measured data, {s} slices");
                if !fits || self.measured.is_some() {
                    *self = Study::default();
                    note.push_str(" (new study)");
                }
                if self.reference.is_none() {
                    if let Some(r) = &k.reference {
                        self.reference = Some(r.clone());
                        self.reference_source = Some(format!("{name} (stored reference)"));
                    }
                }
                self.affine = k.affine;
                self.measured = Some(Measured {
                    kspace: k,
                    origin: Origin::File(path.to_path_buf()),
                });
                self.results.clear();
                self.touch();
                Ok(note)
            }
            Scan::Image(v) => {
                let img = v.data.index_axis(Axis(0), 0).to_owned();
                Ok(self.add_image(&name, img, v.affine))
            }
            Scan::ComplexImage(v) => {
                let img = v.data.index_axis(Axis(0), 0).mapv(|c| c.norm());
                Ok(self.add_image(&name, img, v.affine))
            }
        }
    }

    fn add_image(&mut self, name: &str, img: Array3<f32>, affine: Affine) -> String {
        let (s, h, w) = img.dim();
        let same_grid = self.grid() == Some([s, h, w]);
        if same_grid && (self.reference.is_some() || self.measured.is_some()) {
            if self.reference.is_none() {
                self.reference = Some(img);
                self.reference_source = Some(name.to_string());
                self.touch();
                return format!("{name}: reference");
            }
            self.results.retain(|r| r.label != name);
            self.results.push(ReconResult {
                label: name.to_string(),
                valid: vec![true; s],
                image: img,
                std: None,
                seconds: 0.0,
                details: "from file".into(),
            });
            self.touch();
            return format!("{name}: shown as a reconstruction panel");
        }
        let fresh = !self.is_empty();
        *self = Study {
            reference: Some(img),
            reference_source: Some(name.to_string()),
            affine,
            ..Study::default()
        };
        self.touch();
        format!(
            "{name}: reference, {s} slices of {h}×{w}{}",
            if fresh { " (new study)" } else { "" }
        )
    }

    /// Replaces the measured data with a simulation from the reference.
    pub fn set_simulated(&mut self, kspace: KSpace, acquisition: Acquisition) {
        self.measured = Some(Measured {
            kspace,
            origin: Origin::Simulated(acquisition),
        });
        self.results.clear();
        self.touch();
    }

    /// Adds (or replaces, by label) a reconstruction; a single-slice result is merged into an
    /// existing one of the same label.
    pub fn add_result(&mut self, mut r: ReconResult) {
        if let Some(old) = self.results.iter_mut().find(|o| o.label == r.label) {
            if old.image.dim() == r.image.dim() && r.valid.iter().any(|v| !v) {
                for (k, ok) in r.valid.iter().enumerate() {
                    if *ok {
                        old.image
                            .index_axis_mut(Axis(0), k)
                            .assign(&r.image.index_axis(Axis(0), k));
                        if let (Some(os), Some(ns)) = (old.std.as_mut(), r.std.as_ref()) {
                            os.index_axis_mut(Axis(0), k)
                                .assign(&ns.index_axis(Axis(0), k));
                        }
                        old.valid[k] = true;
                    }
                }
                if old.std.is_none() {
                    old.std = r.std.take();
                }
                old.seconds = r.seconds;
                old.details = r.details;
            } else {
                *old = r;
            }
        } else {
            self.results.push(r);
        }
        self.touch();
    }

    /// Whether the panel has something to show on `slice`.
    pub fn has(&self, kind: PanelKind, slice: usize) -> bool {
        match kind {
            PanelKind::Reference => self.reference.is_some(),
            PanelKind::Measured => self
                .measured
                .as_ref()
                .is_some_and(|m| m.domain() != MeasuredDomain::Projection),
            PanelKind::Recon(i) => self
                .results
                .get(i)
                .is_some_and(|r| r.valid.get(slice).copied().unwrap_or(false)),
            PanelKind::Error(i) => self.reference.is_some() && self.has(PanelKind::Recon(i), slice),
            PanelKind::Std(i) => {
                self.results.get(i).is_some_and(|r| r.std.is_some())
                    && self.has(PanelKind::Recon(i), slice)
            }
        }
    }

    /// Panel grid: rows of panels (`None` = empty cell). First row: reference, measured data,
    /// each reconstruction; below each reconstruction its error map (when `errors` and a
    /// reference exist) and its standard-deviation map (when computed).
    pub fn layout(&self, errors: bool) -> Vec<Vec<Option<PanelKind>>> {
        let n = self.results.len();
        let mut top = Vec::new();
        if self.reference.is_some() {
            top.push(Some(PanelKind::Reference));
        }
        if self.measured.is_some() {
            top.push(Some(PanelKind::Measured));
        }
        let lead = top.len();
        top.extend((0..n).map(|i| Some(PanelKind::Recon(i))));
        let mut rows = vec![top];
        if errors && self.reference.is_some() && n > 0 {
            let mut r = vec![None; lead];
            r.extend((0..n).map(|i| Some(PanelKind::Error(i))));
            rows.push(r);
        }
        if self.results.iter().any(|r| r.std.is_some()) {
            let mut r = vec![None; lead];
            r.extend(
                self.results
                    .iter()
                    .enumerate()
                    .map(|(i, r)| r.std.as_ref().map(|_| PanelKind::Std(i))),
            );
            rows.push(r);
        }
        rows
    }

    /// Panel title.
    pub fn title(&self, kind: PanelKind) -> String {
        match kind {
            PanelKind::Reference => "reference".into(),
            PanelKind::Measured => match self.measured.as_ref().map(|m| m.domain()) {
                Some(MeasuredDomain::Image) => "measured (corrupted image)".into(),
                _ => "k-space (log |k|, RSS)".into(),
            },
            PanelKind::Recon(i) => self
                .results
                .get(i)
                .map(|r| r.label.clone())
                .unwrap_or_default(),
            PanelKind::Error(i) => format!("|error| {}", self.title(PanelKind::Recon(i))),
            PanelKind::Std(i) => format!("std {}", self.title(PanelKind::Recon(i))),
        }
    }

    /// True for panels in image space (they get orientation labels and window/level).
    pub fn is_image(&self, kind: PanelKind) -> bool {
        match kind {
            PanelKind::Measured => self
                .measured
                .as_ref()
                .is_some_and(|m| m.domain() == MeasuredDomain::Image),
            _ => true,
        }
    }

    /// The raw `[row, col]` values of a panel on `slice`, in stored order (before display flips):
    /// magnitudes for images, `log(1 + RSS|k|)` for k-space, `|recon − ref|` for errors.
    pub fn stored_slice(&self, kind: PanelKind, slice: usize) -> Option<Array2<f32>> {
        if !self.has(kind, slice) || slice >= self.slices() {
            return None;
        }
        match kind {
            PanelKind::Reference => self
                .reference
                .as_ref()
                .map(|r| r.index_axis(Axis(0), slice).to_owned()),
            PanelKind::Measured => {
                let m = self.measured.as_ref()?;
                let k = m.kspace.data.slice(s![slice, .., .., ..]);
                if m.domain() == MeasuredDomain::Image {
                    return Some(k.index_axis(Axis(0), 0).mapv(|c| c.norm()));
                }
                let rss = k.map_axis(Axis(0), |c| c.iter().map(|v| v.norm_sqr()).sum::<f32>());
                Some(rss.mapv(|v| (1.0 + v.sqrt()).ln()))
            }
            PanelKind::Recon(i) => {
                Some(self.results[i].image.index_axis(Axis(0), slice).to_owned())
            }
            PanelKind::Error(i) => {
                let r = self.reference.as_ref()?.index_axis(Axis(0), slice);
                let x = self.results[i].image.index_axis(Axis(0), slice);
                Some((&x - &r).mapv(f32::abs))
            }
            PanelKind::Std(i) => self.results[i]
                .std
                .as_ref()
                .map(|s| s.index_axis(Axis(0), slice).to_owned()),
        }
    }

    /// The sampling mask `[row, col]` of `slice` (1 = measured), when the data has one.
    pub fn mask_slice(&self, slice: usize) -> Option<Array2<f32>> {
        let m = self.measured.as_ref()?;
        if m.domain() != MeasuredDomain::Kspace {
            return None;
        }
        m.kspace
            .mask
            .as_ref()
            .filter(|mk| slice < mk.len_of(Axis(0)))
            .map(|mk| mk.index_axis(Axis(0), slice).to_owned())
    }

    /// The panel's slice as displayed: image panels flipped into radiological orientation,
    /// k-space in stored order.
    pub fn display_slice(&self, kind: PanelKind, slice: usize) -> Option<Array2<f32>> {
        let img = self.stored_slice(kind, slice)?;
        Some(if self.is_image(kind) {
            amri_io::format::display_slice(img, &self.affine, false)
        } else {
            img
        })
    }

    /// PSNR (dB) and SSIM of reconstruction `i` on `slice` against the reference, with the
    /// reference volume's maximum as data range (fastMRI's convention); cached.
    pub fn metrics(&mut self, i: usize, slice: usize) -> Option<Metrics> {
        if let Some(m) = self.metrics.get(&(i, slice)) {
            return *m;
        }
        let m = self.compute_metrics(i, slice);
        self.metrics.insert((i, slice), m);
        m
    }

    fn compute_metrics(&self, i: usize, slice: usize) -> Option<Metrics> {
        if !self.has(PanelKind::Error(i), slice) {
            return None;
        }
        let range = f64::from(self.ref_max?);
        let gt = self.reference.as_ref()?.index_axis(Axis(0), slice);
        let x = self.results.get(i)?.image.index_axis(Axis(0), slice);
        let psnr = psnr_with_range(gt, x, range).ok()?;
        let ssim = ssim_with_range(gt, x, range).ok()?;
        let d = &x - &gt;
        let den: f64 = gt.iter().map(|v| f64::from(*v) * f64::from(*v)).sum();
        let nmse = d.iter().map(|v| f64::from(*v) * f64::from(*v)).sum::<f64>()
            / den.max(f64::MIN_POSITIVE);
        Some(Metrics { nmse, psnr, ssim })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use amri_core::Volume;
    use ndarray::Array4;

    fn image(slices: usize, rows: usize, cols: usize) -> Scan {
        let data = Array4::from_shape_fn((1, slices, rows, cols), |(_, k, i, j)| {
            (k * 100 + i * 10 + j) as f32
        });
        Scan::Image(Volume::new(data, Affine::from_spacing([1.0, 1.0, 1.0])))
    }

    #[test]
    fn first_image_is_reference_then_same_grid_is_a_result() {
        let mut st = Study::default();
        st.add_scan(Path::new("a.nii"), image(2, 4, 5)).unwrap();
        assert!(st.reference.is_some());
        assert_eq!(st.grid(), Some([2, 4, 5]));
        // A second image on the same grid is shown as a reconstruction of it.
        st.add_scan(Path::new("b.nii"), image(2, 4, 5)).unwrap();
        assert_eq!(st.results.len(), 1);
        assert_eq!(st.results[0].label, "b.nii");
        assert_eq!(st.layout(true).len(), 2);
        // Another grid starts a new study.
        let note = st.add_scan(Path::new("c.nii"), image(3, 4, 5)).unwrap();
        assert!(note.contains("new study"), "{note}");
        assert!(st.results.is_empty());
        assert_eq!(st.slices(), 3);
    }

    #[test]
    fn error_panel_is_the_absolute_difference_and_metrics_are_fastmri() {
        let mut st = Study::default();
        st.add_scan(Path::new("a.nii"), image(1, 8, 8)).unwrap();
        let r = st.reference.clone().unwrap();
        let x = r.mapv(|v| v + 2.0);
        st.add_result(ReconResult {
            label: "plus2".into(),
            image: x,
            valid: vec![true],
            std: None,
            seconds: 0.0,
            details: String::new(),
        });
        let e = st.stored_slice(PanelKind::Error(0), 0).unwrap();
        assert!(e.iter().all(|v| (*v - 2.0).abs() < 1e-6));
        let m = st.metrics(0, 0).unwrap();
        let max = r.iter().copied().fold(0.0f32, f32::max) as f64;
        // PSNR = 10 log10(max² / mse) with mse = 4.
        assert!((m.psnr - 10.0 * (max * max / 4.0).log10()).abs() < 1e-6);
        let sum2: f64 = r.iter().map(|v| (*v as f64).powi(2)).sum();
        assert!((m.nmse - 64.0 * 4.0 / sum2).abs() < 1e-9);
        assert!(m.ssim < 1.0 && m.ssim > 0.5);
    }

    #[test]
    fn single_slice_results_merge() {
        let mut st = Study::default();
        st.add_scan(Path::new("a.nii"), image(3, 2, 2)).unwrap();
        let mk = |k: usize, v: f32| {
            let mut img = Array3::zeros((3, 2, 2));
            img.index_axis_mut(Axis(0), k).fill(v);
            let mut valid = vec![false; 3];
            valid[k] = true;
            ReconResult {
                label: "tv".into(),
                image: img,
                valid,
                std: None,
                seconds: 1.0,
                details: String::new(),
            }
        };
        st.add_result(mk(0, 1.0));
        st.add_result(mk(2, 3.0));
        assert_eq!(st.results.len(), 1);
        assert_eq!(st.results[0].valid, vec![true, false, true]);
        assert!(st.has(PanelKind::Recon(0), 2));
        assert!(!st.has(PanelKind::Recon(0), 1));
        assert_eq!(
            st.stored_slice(PanelKind::Recon(0), 2).unwrap()[[1, 1]],
            3.0
        );
        assert_eq!(
            st.stored_slice(PanelKind::Recon(0), 0).unwrap()[[0, 0]],
            1.0
        );
    }

    #[test]
    fn kspace_panel_is_log_rss() {
        let mut data = Array4::<amri_core::C32>::zeros((1, 2, 2, 2));
        data[[0, 0, 0, 0]] = amri_core::C32::new(3.0, 0.0);
        data[[0, 1, 0, 0]] = amri_core::C32::new(0.0, 4.0);
        let mut k = KSpace::new(data);
        k.mask = Some(ndarray::Array3::ones((1, 2, 2)));
        let mut st = Study::default();
        st.add_scan(Path::new("k.npz"), Scan::KSpace(k)).unwrap();
        let s = st.stored_slice(PanelKind::Measured, 0).unwrap();
        assert!((s[[0, 0]] - 6.0f32.ln()).abs() < 1e-6);
        assert_eq!(s[[1, 1]], 0.0);
        assert_eq!(st.mask_slice(0).unwrap().sum(), 4.0);
    }
}

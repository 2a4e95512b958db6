//! Training views of image volumes on the simulation route: every volume resliced in the
//! orientations asked for and resampled in-plane to the pixel sizes asked for, before the
//! acquisition simulates its measured data.
//!
//! - **Orientation from the affine.** [`reslice`] makes the slices perpendicular to a world axis
//!   (axial: S, coronal: A, sagittal: R) by picking the voxel axis that points most along it in
//!   the NIfTI affine ([`amri_core::Affine::orientation`]), not by array order. In-plane rows run
//!   along A/P (axial) or S/I (coronal, sagittal), columns along R/L (axial, coronal) or A/P
//!   (sagittal). Voxel axes are only permuted (no interpolation, no flips; flips are an
//!   augmentation, [`crate::augment`]); the affine's columns are permuted alike, so every voxel
//!   keeps its world position. An oblique volume is resliced along its nearest voxel axes.
//! - **Pixel size by Fourier resampling.** [`resample_inplane`] crops or zero-pads each slice's
//!   centred k-space (`fft2c`, DC index `⌊n/2⌋` kept aligned) to `n' = round(n·Δ/p)` samples per
//!   axis and scales by `√(n'_r n'_c / n_r n_c)` so intensities keep their values; the field of
//!   view is kept, so the new pixel is `n·Δ/n'` (within `p/(2n')` of `p`), and the affine's
//!   in-plane columns scale accordingly with the world position of the centre sample
//!   `(⌊n_c/2⌋, ⌊n_r/2⌋)` kept. Downsampling is the ideal low-pass (Gibbs ringing at sharp edges
//!   is that of a scan acquired at that resolution); the result is the real part.
//! - **Size multiple.** [`pad_to_multiple`] zero-pads rows and columns up to the network's size
//!   multiple (centred like the resampling); views of different matrix sizes then train in
//!   shape buckets ([`crate::measured::TrainingData::from_sets`]).

use amri_core::fft::{fft2c, ifft2c};
use amri_core::{Affine, Volume, C32};
use ndarray::{s, Array2, Array4, Axis};
use serde::{Deserialize, Serialize};

use crate::error::{DiffusionError, Result};

/// A slice orientation: the world axis the slices are perpendicular to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Orientation {
    /// Slices perpendicular to S (rows A/P, columns R/L).
    Axial,
    /// Slices perpendicular to A (rows S/I, columns R/L).
    Coronal,
    /// Slices perpendicular to R (rows S/I, columns A/P).
    Sagittal,
}

impl Orientation {
    /// Parses `axial`, `coronal` or `sagittal`.
    pub fn parse(s: &str) -> Result<Self> {
        match s.trim() {
            "axial" => Ok(Self::Axial),
            "coronal" => Ok(Self::Coronal),
            "sagittal" => Ok(Self::Sagittal),
            o => Err(DiffusionError::Config(format!(
                "orientation {o:?}: expected axial, coronal or sagittal"
            ))),
        }
    }

    /// The lower-case name.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Axial => "axial",
            Self::Coronal => "coronal",
            Self::Sagittal => "sagittal",
        }
    }

    /// World axes (0 = R/L, 1 = A/P, 2 = S/I) of `(slice normal, rows, cols)`.
    fn world_axes(&self) -> [usize; 3] {
        match self {
            Self::Axial => [2, 1, 0],
            Self::Coronal => [1, 2, 0],
            Self::Sagittal => [0, 2, 1],
        }
    }
}

/// Which views of every image volume a simulation-route run trains on (recorded in the model
/// card; see the module docs).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Views {
    /// Orientations, each giving one resliced copy of every volume (empty: as stored).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub orientations: Vec<Orientation>,
    /// In-plane pixel sizes in mm, each giving one resampled copy of every orientation
    /// (empty: the volume's own pixels).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pixel_mm: Vec<f64>,
}

impl Views {
    /// The views a resumed run continues with: its own `run` (the card's); `given` (from
    /// `--orientations`/`--pixel-sizes`) must be absent or equal, since the data stream depends
    /// on it.
    pub fn on_resume(run: &Option<Self>, given: Option<Self>) -> Result<Option<Self>> {
        match given {
            Some(g) if Some(&g) != run.as_ref() => Err(DiffusionError::Config(format!(
                "--resume: the run trained on views {run:?}, not {:?}; leave --orientations and \
                 --pixel-sizes out or give the run's",
                Some(g)
            ))),
            _ => Ok(run.clone()),
        }
    }
}

/// The world axis (0 = R/L, 1 = A/P, 2 = S/I) of an orientation letter.
fn world_of(code: char) -> Option<usize> {
    match code {
        'R' | 'L' => Some(0),
        'A' | 'P' => Some(1),
        'S' | 'I' => Some(2),
        _ => None,
    }
}

/// `v` resliced to orientation `o` (module docs): data `[frame, slice, row, col]` with the voxel
/// axes permuted and the affine's columns permuted alike (origin unchanged).
pub fn reslice(v: &Volume<f32>, o: Orientation) -> Result<Volume<f32>> {
    v.affine
        .validate()
        .map_err(|e| DiffusionError::Config(format!("volume affine: {e}")))?;
    let codes = v.affine.orientation();
    // voxel axis (0 col, 1 row, 2 slice) along each world axis
    let mut voxel_of_world = [usize::MAX; 3];
    for (a, c) in codes.iter().enumerate() {
        let w = world_of(*c).ok_or_else(|| {
            DiffusionError::Config(format!(
                "volume affine has no clear orientation ({})",
                v.affine.orientation_code()
            ))
        })?;
        voxel_of_world[w] = a;
    }
    let [ps, pr, pc] = o.world_axes().map(|w| voxel_of_world[w]);
    // data axis of voxel axis a: 3 − a (col → 3, row → 2, slice → 1)
    let data = v
        .data
        .view()
        .permuted_axes([0, 3 - ps, 3 - pr, 3 - pc])
        .as_standard_layout()
        .into_owned();
    let mut m = v.affine.0;
    for (new, old) in [pc, pr, ps].into_iter().enumerate() {
        for (r, row) in m.iter_mut().enumerate().take(3) {
            row[new] = v.affine.0[r][old];
        }
    }
    Ok(Volume {
        data,
        affine: Affine(m),
        meta: v.meta.clone(),
    })
}

/// Copies the centred block of `src` into `dst` (both `[rows, cols]`): sample `⌊n/2⌋` of each
/// axis lands on `⌊n'/2⌋`, the rest is cropped or stays zero.
fn centred_copy<T: Copy>(src: &Array2<T>, dst: &mut Array2<T>) {
    let ((r, c), (r2, c2)) = (src.dim(), dst.dim());
    let range = |n: usize, n2: usize| {
        // source index i ↦ i − ⌊n/2⌋ + ⌊n2/2⌋
        let off = (n2 / 2) as i64 - (n / 2) as i64;
        let lo = 0i64.max(-off);
        let hi = (n as i64).min(n2 as i64 - off);
        (lo as usize, hi.max(lo) as usize, off)
    };
    let (rl, rh, ro) = range(r, r2);
    let (cl, ch, co) = range(c, c2);
    let d = |i: usize, o: i64| (i as i64 + o) as usize;
    dst.slice_mut(s![d(rl, ro)..d(rh, ro), d(cl, co)..d(ch, co)])
        .assign(&src.slice(s![rl..rh, cl..ch]));
}

/// The affine of a `[n_r', n_c']` grid replacing a `[n_r, n_c]` one with in-plane columns scaled
/// by `(s_c, s_r)`, keeping the world position of the centre sample `(⌊n_c/2⌋, ⌊n_r/2⌋)`.
fn recentred(
    a: &Affine,
    (r, c): (usize, usize),
    (r2, c2): (usize, usize),
    sc: f64,
    sr: f64,
) -> Affine {
    let centre = a.apply([(c / 2) as f64, (r / 2) as f64, 0.0]);
    let mut m = a.0;
    for row in m.iter_mut().take(3) {
        row[0] *= sc;
        row[1] *= sr;
    }
    for (w, row) in m.iter_mut().enumerate().take(3) {
        row[3] = centre[w] - row[0] * (c2 / 2) as f64 - row[1] * (r2 / 2) as f64;
    }
    Affine(m)
}

/// Every `[rows, cols]` slice of `v` mapped to a new in-plane size by `f`.
fn map_slices(
    v: &Volume<f32>,
    (r2, c2): (usize, usize),
    f: impl Fn(Array2<f32>) -> Array2<f32>,
) -> Array4<f32> {
    let [nf, ns, _, _] = v.shape4();
    let mut out = Array4::zeros((nf, ns, r2, c2));
    for t in 0..nf {
        for k in 0..ns {
            let x = f(v.slice(t, k).to_owned());
            out.slice_mut(s![t, k, .., ..]).assign(&x);
        }
    }
    out
}

/// `v` resampled in-plane to `pixel_mm` (module docs: Fourier crop / zero-pad, field of view
/// and centre sample kept, new pixel `n·Δ/n'`). Errors on a non-positive pixel size or an
/// invalid affine.
pub fn resample_inplane(v: &Volume<f32>, pixel_mm: f64) -> Result<Volume<f32>> {
    if !(pixel_mm.is_finite() && pixel_mm > 0.0) {
        return Err(DiffusionError::Config(format!(
            "pixel size {pixel_mm} mm: expected a positive number of millimetres"
        )));
    }
    v.affine
        .validate()
        .map_err(|e| DiffusionError::Config(format!("volume affine: {e}")))?;
    let [_, _, r, c] = v.shape4();
    let [dc, dr, _] = v.affine.voxel_size();
    let n2 = |n: usize, d: f64| ((n as f64 * d / pixel_mm).round() as usize).max(1);
    let (r2, c2) = (n2(r, dr), n2(c, dc));
    let gain = ((r2 * c2) as f64 / (r * c).max(1) as f64).sqrt() as f32;
    let data = map_slices(v, (r2, c2), |x| {
        let k = fft2c(&x.mapv(|v| C32::new(v, 0.0)));
        let mut k2 = Array2::<C32>::zeros((r2, c2));
        centred_copy(&k, &mut k2);
        ifft2c(&k2).mapv(|z| z.re * gain)
    });
    let affine = recentred(
        &v.affine,
        (r, c),
        (r2, c2),
        c as f64 / c2 as f64,
        r as f64 / r2 as f64,
    );
    Ok(Volume {
        data,
        affine,
        meta: v.meta.clone(),
    })
}

/// `v` zero-padded in-plane (centred, module docs) so rows and columns are multiples of
/// `multiple` (`multiple ≤ 1`: unchanged).
pub fn pad_to_multiple(v: &Volume<f32>, multiple: usize) -> Volume<f32> {
    let [_, _, r, c] = v.shape4();
    let m = multiple.max(1);
    let (r2, c2) = (r.div_ceil(m) * m, c.div_ceil(m) * m);
    if (r2, c2) == (r, c) {
        return v.clone();
    }
    let data = map_slices(v, (r2, c2), |x| {
        let mut y = Array2::zeros((r2, c2));
        centred_copy(&x, &mut y);
        y
    });
    Volume {
        data,
        affine: recentred(&v.affine, (r, c), (r2, c2), 1.0, 1.0),
        meta: v.meta.clone(),
    }
}

/// The training views of one volume named `name` (module docs): for each orientation (or the
/// volume as stored, `stored`, when `views.orientations` is empty), for each pixel size (or the
/// volume's own pixels when `views.pixel_mm` is empty), the resliced, resampled volume padded
/// to `multiple`, named `name [orientation, p mm]`.
pub fn views_of(
    name: &str,
    v: &Volume<f32>,
    views: &Views,
    multiple: usize,
) -> Result<Vec<(String, Volume<f32>)>> {
    let err = |e: DiffusionError| DiffusionError::Config(format!("{name}: {e}"));
    let mut resliced = Vec::new();
    if views.orientations.is_empty() {
        resliced.push(("stored".to_owned(), v.clone()));
    }
    for o in &views.orientations {
        resliced.push((o.name().to_owned(), reslice(v, *o).map_err(err)?));
    }
    let mut out = Vec::new();
    for (o, r) in resliced {
        if views.pixel_mm.is_empty() {
            let [dc, dr, _] = r.affine.voxel_size();
            out.push((
                format!("{name} [{o}, {dr:.3}×{dc:.3} mm]"),
                pad_to_multiple(&r, multiple),
            ));
        }
        for p in &views.pixel_mm {
            let x = resample_inplane(&r, *p).map_err(err)?;
            out.push((
                format!("{name} [{o}, {p} mm]"),
                pad_to_multiple(&x, multiple),
            ));
        }
    }
    Ok(out)
}

/// Groups volumes by in-plane `[rows, cols]`, in order of first appearance: `(shape, indices)`.
pub fn group_by_shape(vols: &[(String, Volume<f32>)]) -> Vec<((usize, usize), Vec<usize>)> {
    let mut groups: Vec<((usize, usize), Vec<usize>)> = Vec::new();
    for (k, (_, v)) in vols.iter().enumerate() {
        let d = (v.data.len_of(Axis(2)), v.data.len_of(Axis(3)));
        match groups.iter_mut().find(|g| g.0 == d) {
            Some(g) => g.1.push(k),
            None => groups.push((d, vec![k])),
        }
    }
    groups
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    /// A value that identifies a world position (mm): distinct for every voxel centre below
    /// (steps of 0.9, 40 and 440 along x, y, z) and exact in f32 to about 10⁻³.
    fn tag(w: [f64; 3]) -> f32 {
        (w[0] + 20.0 * w[1] + 400.0 * w[2]) as f32
    }

    /// A coronally acquired volume `[1, 5, 6, 7]`: columns towards L (0.9 mm), rows towards I
    /// (1.1 mm), slices towards A (2 mm); every voxel holds the tag of its world position.
    fn coronal_volume() -> Volume<f32> {
        let affine = Affine::from_directions(
            [[-1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]],
            [0.9, 1.1, 2.0],
            [10.0, -20.0, 30.0],
        );
        let data = Array4::from_shape_fn((1, 5, 6, 7), |(_, k, j, i)| {
            tag(affine.apply([i as f64, j as f64, k as f64]))
        });
        Volume::new(data, affine)
    }

    /// Every voxel of `v` holds the tag of the world position its affine gives it.
    fn world_consistent(v: &Volume<f32>) -> bool {
        v.data.indexed_iter().all(|((_, k, j, i), x)| {
            let t = tag(v.affine.apply([i as f64, j as f64, k as f64]));
            (x - t).abs() <= 1e-6 * t.abs().max(1.0)
        })
    }

    #[test]
    fn reslices_follow_the_affine_not_the_array_order() {
        let v = coronal_volume();
        assert!(world_consistent(&v));
        for (o, shape, code_rows_cols, voxel) in [
            // slices ⊥ S: the row axis (I) gives 6 slices; rows A/P (2 mm), cols R/L (0.9 mm)
            (
                Orientation::Axial,
                [1, 6, 5, 7],
                ('A', 'L'),
                [0.9, 2.0, 1.1],
            ),
            (
                Orientation::Coronal,
                [1, 5, 6, 7],
                ('I', 'L'),
                [0.9, 1.1, 2.0],
            ),
            (
                Orientation::Sagittal,
                [1, 7, 6, 5],
                ('I', 'A'),
                [2.0, 1.1, 0.9],
            ),
        ] {
            let r = reslice(&v, o).unwrap();
            assert_eq!(r.shape4(), shape, "{o:?}");
            let codes = r.affine.orientation();
            assert_eq!((codes[1], codes[0]), code_rows_cols, "{o:?}");
            let world_slice = match o {
                Orientation::Axial => ['S', 'I'],
                Orientation::Coronal => ['A', 'P'],
                Orientation::Sagittal => ['R', 'L'],
            };
            assert!(world_slice.contains(&codes[2]), "{o:?} {codes:?}");
            for (a, b) in r.affine.voxel_size().iter().zip(voxel) {
                assert!((a - b).abs() < 1e-12, "{o:?}");
            }
            // every voxel is still where the new affine says it is
            assert!(world_consistent(&r), "{o:?}");
        }
    }

    /// A Gaussian blob (σ = 3 mm) around world (2, −5, 30), band-limited at 2 mm pixels.
    fn blob(w: [f64; 3]) -> f32 {
        let d2 = (w[0] - 2.0).powi(2) + (w[1] + 5.0).powi(2) + (w[2] - 30.0).powi(2);
        (100.0 * (-d2 / (2.0 * 9.0)).exp()) as f32
    }

    #[test]
    fn fourier_resampling_gives_the_object_at_the_new_pixels_and_their_world_positions() {
        // an axial slice at z = 30, 40 rows towards P (1 mm), 48 columns towards L (1 mm)
        let affine = Affine::from_directions(
            [[-1.0, 0.0, 0.0], [0.0, -1.0, 0.0], [0.0, 0.0, 1.0]],
            [1.0, 1.0, 3.0],
            [26.0, 15.0, 30.0],
        );
        let data = Array4::from_shape_fn((1, 1, 40, 48), |(_, k, j, i)| {
            blob(affine.apply([i as f64, j as f64, k as f64]))
        });
        let v = Volume::new(data, affine);
        for (p, rows, cols) in [(2.0, 20, 24), (1.5, 27, 32), (0.75, 53, 64)] {
            let x = resample_inplane(&v, p).unwrap();
            assert_eq!(x.shape4(), [1, 1, rows, cols], "{p} mm");
            let [dc, dr, ds] = x.affine.voxel_size();
            assert!(
                (dr - 40.0 / rows as f64).abs() < 1e-12 && (dc - 48.0 / cols as f64).abs() < 1e-12
            );
            assert!(
                (dr - p).abs() <= p / (2.0 * rows as f64) + 1e-12,
                "{p}: {dr}"
            );
            assert!((ds - 3.0).abs() < 1e-12);
            // the same directions, the centre sample's world position kept
            assert_eq!(x.affine.orientation_code(), v.affine.orientation_code());
            let c_old = v.affine.apply([24.0, 20.0, 0.0]);
            let c_new = x.affine.apply([(cols / 2) as f64, (rows / 2) as f64, 0.0]);
            assert!((0..3).all(|a| (c_old[a] - c_new[a]).abs() < 1e-9));
            // values: the analytic object at each new pixel's world position
            let worst = x
                .data
                .indexed_iter()
                .map(|((_, k, j, i), val)| {
                    (val - blob(x.affine.apply([i as f64, j as f64, k as f64]))).abs()
                })
                .fold(0f32, f32::max);
            assert!(worst < 0.05, "{p} mm: max error {worst} of a peak of 100");
        }
        assert!(resample_inplane(&v, 0.0).is_err());
    }

    #[test]
    fn padding_to_the_size_multiple_keeps_every_voxel_at_its_world_position() {
        let v = reslice(&coronal_volume(), Orientation::Sagittal).unwrap(); // 6×5 in-plane
        let p = pad_to_multiple(&v, 4);
        assert_eq!(p.shape4(), [1, 7, 8, 8]);
        let kept = p
            .data
            .indexed_iter()
            .filter(|((_, k, j, i), x)| {
                **x != 0.0 && {
                    let t = tag(p.affine.apply([*i as f64, *j as f64, *k as f64]));
                    (**x - t).abs() <= 1e-6 * t.abs()
                }
            })
            .count();
        assert_eq!(
            kept,
            v.data.len(),
            "every original voxel, at its world position"
        );
        assert_eq!(pad_to_multiple(&v, 1), v);
    }

    #[test]
    fn views_give_one_volume_per_orientation_and_pixel_size_grouped_by_shape() {
        let v = coronal_volume();
        let views = Views {
            orientations: vec![
                Orientation::Axial,
                Orientation::Coronal,
                Orientation::Sagittal,
            ],
            pixel_mm: vec![1.0, 2.0],
        };
        let out = views_of("vol.nii", &v, &views, 4).unwrap();
        assert_eq!(out.len(), 6);
        assert_eq!(out[3].0, "vol.nii [coronal, 2 mm]");
        // coronal: 6 rows × 1.1 mm, 7 cols × 0.9 mm → at 2 mm 3×3 → padded 4×4; 5 slices
        assert_eq!(out[3].1.shape4(), [1, 5, 4, 4]);
        // axial at 1 mm: rows 5×2 mm → 10, cols 7×0.9 → 6 → padded 12×8; 6 slices
        assert_eq!(out[0].1.shape4(), [1, 6, 12, 8]);
        for (_, x) in &out {
            let [_, _, r, c] = x.shape4();
            assert!(r % 4 == 0 && c % 4 == 0);
        }
        let groups = group_by_shape(&out);
        let total: usize = groups.iter().map(|g| g.1.len()).sum();
        assert_eq!(total, 6);
        assert!(groups.iter().all(|(s, idx)| idx
            .iter()
            .all(|&k| (out[k].1.shape4()[2], out[k].1.shape4()[3]) == *s)));
        // no orientation: the volume as stored, resampled
        let stored = Views {
            orientations: vec![],
            pixel_mm: vec![2.0],
        };
        let out = views_of("v", &v, &stored, 1).unwrap();
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].0, "v [stored, 2 mm]");
        assert_eq!(out[0].1.shape4(), [1, 5, 3, 3]);
        assert!(resample_inplane(&v, -1.0).is_err());
    }

    #[test]
    fn resume_keeps_the_runs_views_and_refuses_others() {
        let run = Some(Views {
            orientations: vec![Orientation::Axial],
            pixel_mm: vec![1.0],
        });
        assert_eq!(Views::on_resume(&run, None).ok(), Some(run.clone()));
        assert_eq!(Views::on_resume(&run, run.clone()).ok(), Some(run.clone()));
        assert_eq!(Views::on_resume(&None, None).ok(), Some(None));
        let other = Views {
            orientations: vec![Orientation::Coronal],
            pixel_mm: vec![1.0],
        };
        let e = Views::on_resume(&run, Some(other.clone()))
            .err()
            .map(|e| e.to_string());
        assert!(e.is_some_and(|e| e.contains("--orientations")));
        assert!(Views::on_resume(&None, Some(other)).is_err());
    }
}

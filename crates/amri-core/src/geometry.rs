//! Voxel-to-world geometry: a 4×4 affine in millimetres, RAS+ world axes.

use crate::{CoreError, Result};

/// 4×4 affine mapping zero-based voxel indices `(i, j, k)` = `(col, row, slice)` to world
/// coordinates in millimetres, RAS+ (x to the patient's Right... increasing towards Left is
/// negative), exactly as a NIfTI sform/qform. Row-major: `m[r][c]`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Affine(pub [[f64; 4]; 4]);

impl Default for Affine {
    fn default() -> Self {
        Self::IDENTITY
    }
}

impl Affine {
    /// The identity: 1 mm isotropic voxels, axes aligned with R, A, S.
    pub const IDENTITY: Affine = Affine([
        [1.0, 0.0, 0.0, 0.0],
        [0.0, 1.0, 0.0, 0.0],
        [0.0, 0.0, 1.0, 0.0],
        [0.0, 0.0, 0.0, 1.0],
    ]);

    /// Axis-aligned affine with voxel size `[col, row, slice]` in mm and origin at world 0.
    pub fn from_spacing(spacing: [f64; 3]) -> Self {
        let mut m = Self::IDENTITY.0;
        for (a, s) in spacing.iter().enumerate() {
            m[a][a] = *s;
        }
        Affine(m)
    }

    /// Affine from three voxel-axis direction columns (unit or not) scaled by `spacing` (mm) and
    /// an origin (world position of voxel 0, mm). `dirs[a]` is the world direction of voxel axis a.
    pub fn from_directions(dirs: [[f64; 3]; 3], spacing: [f64; 3], origin: [f64; 3]) -> Self {
        let mut m = Self::IDENTITY.0;
        for a in 0..3 {
            let n = norm(dirs[a]);
            let n = if n > 0.0 { n } else { 1.0 };
            for r in 0..3 {
                m[r][a] = dirs[a][r] / n * spacing[a];
            }
            m[a][3] = origin[a];
        }
        Affine(m)
    }

    /// Converts an affine expressed in DICOM's LPS+ world to RAS+ (negates the x and y rows).
    pub fn lps_to_ras(self) -> Self {
        let mut m = self.0;
        for row in m.iter_mut().take(2) {
            for v in row.iter_mut() {
                *v = -*v;
            }
        }
        Affine(m)
    }

    /// Same as [`Affine::lps_to_ras`]: the flip is its own inverse.
    pub fn ras_to_lps(self) -> Self {
        self.lps_to_ras()
    }

    /// World position (mm) of the voxel index `ijk` (fractional indices allowed).
    pub fn apply(&self, ijk: [f64; 3]) -> [f64; 3] {
        let m = &self.0;
        let mut out = [0.0; 3];
        for (r, o) in out.iter_mut().enumerate() {
            *o = m[r][0] * ijk[0] + m[r][1] * ijk[1] + m[r][2] * ijk[2] + m[r][3];
        }
        out
    }

    /// World direction (mm per voxel step) of voxel axis `a` (0 = col, 1 = row, 2 = slice).
    pub fn column(&self, a: usize) -> [f64; 3] {
        [self.0[0][a], self.0[1][a], self.0[2][a]]
    }

    /// Voxel size in mm along `(col, row, slice)`: the norms of the first three columns.
    pub fn voxel_size(&self) -> [f64; 3] {
        [0, 1, 2].map(|a| norm(self.column(a)))
    }

    /// World position (mm) of voxel 0.
    pub fn origin(&self) -> [f64; 3] {
        [self.0[0][3], self.0[1][3], self.0[2][3]]
    }

    /// Axis codes as nibabel's `aff2axcodes`: for each voxel axis, the RAS+ world axis it points
    /// along most, as the letter of the direction it increases towards (`R`/`L`, `A`/`P`, `S`/`I`).
    pub fn orientation(&self) -> [char; 3] {
        const POS: [char; 3] = ['R', 'A', 'S'];
        const NEG: [char; 3] = ['L', 'P', 'I'];
        let mut used = [false; 3];
        let mut out = ['?'; 3];
        // Greedy assignment by largest absolute component, so that oblique axes still get
        // three distinct letters.
        let mut cand: Vec<(f64, usize, usize)> = Vec::with_capacity(9);
        for a in 0..3 {
            let c = self.column(a);
            let n = norm(c);
            for (w, cw) in c.iter().enumerate() {
                let v = if n > 0.0 { cw.abs() / n } else { 0.0 };
                cand.push((v, a, w));
            }
        }
        cand.sort_by(|x, y| y.0.total_cmp(&x.0));
        let mut done = [false; 3];
        for (v, a, w) in cand {
            if done[a] || used[w] || v == 0.0 {
                continue;
            }
            done[a] = true;
            used[w] = true;
            out[a] = if self.0[w][a] >= 0.0 { POS[w] } else { NEG[w] };
        }
        out
    }

    /// Orientation as a three-letter string, e.g. `"RAS"` or `"LPS"`.
    pub fn orientation_code(&self) -> String {
        self.orientation().iter().collect()
    }

    /// Flips `(rows, cols)` that put a slice in radiological display orientation: top of the
    /// picture anterior (or superior), patient's right on the viewer's left. DICOM's stored order
    /// already is; a RAS NIfTI slice needs both flips.
    pub fn display_flips(&self) -> (bool, bool) {
        let codes = self.orientation();
        // Rows should run from the top of the picture down: towards P (axial) or I (coronal,
        // sagittal). Columns should run towards the patient's left (L), or towards P in sagittal.
        let flip_rows = matches!(codes[1], 'A' | 'S');
        let flip_cols = matches!(codes[0], 'R' | 'A');
        (flip_rows, flip_cols)
    }

    /// Checks that every entry is finite and the 3×3 part is non-singular.
    pub fn validate(&self) -> Result<()> {
        if self.0.iter().flatten().any(|v| !v.is_finite()) {
            return Err(CoreError::Invalid("affine has a non-finite entry".into()));
        }
        if self.det3().abs() < 1e-12 {
            return Err(CoreError::Invalid("affine is singular".into()));
        }
        Ok(())
    }

    /// Determinant of the 3×3 linear part (negative for a left-handed voxel grid).
    pub fn det3(&self) -> f64 {
        let m = &self.0;
        m[0][0] * (m[1][1] * m[2][2] - m[1][2] * m[2][1])
            - m[0][1] * (m[1][0] * m[2][2] - m[1][2] * m[2][0])
            + m[0][2] * (m[1][0] * m[2][1] - m[1][1] * m[2][0])
    }

    /// Largest absolute difference between two affines' entries.
    pub fn max_abs_diff(&self, other: &Affine) -> f64 {
        self.0
            .iter()
            .flatten()
            .zip(other.0.iter().flatten())
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max)
    }
}

fn norm(v: [f64; 3]) -> f64 {
    (v[0] * v[0] + v[1] * v[1] + v[2] * v[2]).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lps_ras_flip_is_involution_and_changes_codes() {
        let a = Affine::from_spacing([0.5, 0.7, 2.0]);
        assert_eq!(a.orientation_code(), "RAS");
        let l = a.ras_to_lps();
        assert_eq!(l.orientation_code(), "LPS");
        assert_eq!(l.lps_to_ras(), a);
        assert_eq!(l.voxel_size(), [0.5, 0.7, 2.0]);
    }

    #[test]
    fn apply_maps_voxels_to_world() {
        let a = Affine::from_directions(
            [[0.0, 1.0, 0.0], [0.0, 0.0, -1.0], [1.0, 0.0, 0.0]],
            [2.0, 3.0, 4.0],
            [10.0, 20.0, 30.0],
        );
        assert_eq!(a.apply([1.0, 1.0, 1.0]), [14.0, 22.0, 27.0]);
        assert_eq!(a.orientation_code(), "AIR");
        assert!((a.det3().abs() - 24.0).abs() < 1e-12);
    }

    #[test]
    fn display_flips_follow_radiological_convention() {
        // RAS NIfTI axial: rows go anterior, columns go right: flip both.
        assert_eq!(
            Affine::from_spacing([1.0, 1.0, 1.0]).display_flips(),
            (true, true)
        );
        // DICOM axial (LPS voxel axes): stored order is display order.
        let lps = Affine::from_spacing([1.0, 1.0, 1.0]).ras_to_lps();
        assert_eq!(lps.display_flips(), (false, false));
    }

    #[test]
    fn singular_or_nan_rejected() {
        let mut a = Affine::IDENTITY;
        a.0[0][0] = f64::NAN;
        assert!(a.validate().is_err());
        assert!(Affine::from_spacing([0.0, 1.0, 1.0]).validate().is_err());
        assert!(Affine::IDENTITY.validate().is_ok());
    }
}

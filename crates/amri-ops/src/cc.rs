//! Coil compression to `N` virtual coils by SVD (software channel compression), as BART's
//! `cc -S -p N`.
//!
//! For one slice of centred k-space `y` `[coil, row, col]`, the coil Gram matrix
//! `G = Σ_k y(k) y(k)ᴴ` (`C × C`) is summed over the samples of the calibration region (the fully
//! sampled centre, detected from the mask or the non-zero samples, limited to `24 × 24` around
//! DC like BART's default `-r 24`; [`CcRegion::All`] is BART's `-A`). Its top-`N` eigenvectors
//! `V_N` (`C × N`) give the compression matrix `M = V_Nᴴ` `[virtual, coil]` and the virtual coils
//! `z = M y`. `M` has orthonormal rows, so white noise stays white, and the energy kept,
//! `Σ_k |z(k)|²` over the region, is the sum of the `N` largest eigenvalues of `G` (the squared
//! singular values of the `C × samples` calibration matrix). A virtual coil set is defined up to
//! a unitary `N × N` mixing; root-sum-of-squares images do not depend on it.
//!
//! Each slice gets its own matrix (amri reconstructs 2-D slices independently); data, coil
//! sensitivities and noise samples are compressed by the same matrix.
//!
//! ```
//! use amri_core::{fft::fft2c, KSpace, C32};
//! use amri_ops::cc::{compress, CcConfig};
//! use ndarray::Array4;
//! // Four coils that all see the same image are one virtual coil.
//! let img = Array4::from_shape_fn((1, 4, 16, 16), |(_, c, i, j)| {
//!     C32::new((i * j) as f32 * (c + 1) as f32, 0.0)
//! });
//! let ks = KSpace::new(fft2c(&img));
//! let small = compress(&ks, &CcConfig::new(1))?;
//! assert_eq!(small.shape4(), [1, 1, 16, 16]);
//! let e = |k: &KSpace| k.data.iter().map(|v| v.norm_sqr() as f64).sum::<f64>();
//! assert!((e(&small) - e(&ks)).abs() < 1e-4 * e(&ks));
//! # Ok::<(), amri_ops::OpsError>(())
//! ```

use amri_core::{KSpace, C32};
use faer::Side;
use ndarray::{s, Array2, Array4, ArrayView2, ArrayView3, Axis};

use crate::coils::{coil_gram, mix_coils};
use crate::error::{OpsError, Result};
use crate::espirit::{acs_region_from_kspace, acs_region_from_mask, limit_region, AcsRegion};

/// Which samples the compression matrix is computed from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CcRegion {
    /// The fully sampled centre, at most this many samples per axis around DC (BART `-r`,
    /// default 24); all samples when the centre is not sampled.
    Calibration(usize),
    /// Every sample (BART `-A`).
    All,
}

/// Settings of [`compress`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CcConfig {
    /// Number of virtual coils `N ≥ 1` (BART `-p`).
    pub virtual_coils: usize,
    /// Samples the matrix is computed from.
    pub region: CcRegion,
}

impl CcConfig {
    /// `N` virtual coils from the `24 × 24` calibration centre, as `bart cc -S -p N`.
    pub fn new(virtual_coils: usize) -> Self {
        Self {
            virtual_coils,
            region: CcRegion::Calibration(24),
        }
    }
}

/// The compression of one slice.
#[derive(Clone, Debug)]
pub struct Compression {
    /// `M = V_Nᴴ` `[virtual, coil]`, orthonormal rows.
    pub matrix: Array2<C32>,
    /// Singular values of the `coil × samples` calibration matrix, largest first (k-space units):
    /// the square roots of the eigenvalues of `G`.
    pub singular_values: Vec<f64>,
    /// The calibration region used (`None`: every sample).
    pub region: Option<AcsRegion>,
}

/// The compression matrix of one slice of centred k-space `[coil, row, col]` (see the module
/// docs); `mask` `[row, col]` (1 = measured) locates the calibration centre when given, else the
/// non-zero samples do. `N` must be in `1..=coils`.
pub fn compression_matrix(
    kspace: ArrayView3<C32>,
    mask: Option<ArrayView2<f32>>,
    cfg: &CcConfig,
) -> Result<Compression> {
    let (coils, rows, cols) = kspace.dim();
    let n = cfg.virtual_coils;
    if n == 0 || n > coils {
        return Err(OpsError::param(
            "virtual_coils",
            format!("must be in 1..={coils} (the data's coils), got {n}"),
        ));
    }
    let region = match cfg.region {
        CcRegion::All => None,
        CcRegion::Calibration(size) => {
            if size == 0 {
                return Err(OpsError::param(
                    "calibration size",
                    "must be ≥ 1 sample per axis",
                ));
            }
            let found = match mask {
                Some(m) => acs_region_from_mask(m.mapv(|v| v != 0.0).view()),
                None => acs_region_from_kspace(kspace),
            };
            found.map(|r| limit_region(r, size, [rows, cols]))
        }
    };
    let calib = match region {
        Some(r) => kspace.slice_move(s![
            ..,
            r.start[0]..r.start[0] + r.size[0],
            r.start[1]..r.start[1] + r.size[1]
        ]),
        None => kspace,
    };
    if calib.iter().any(|v| !v.re.is_finite() || !v.im.is_finite()) {
        return Err(OpsError::param(
            "kspace",
            "the calibration samples hold NaN or infinite values",
        ));
    }
    let gram = coil_gram(calib.view());
    let evd = gram.self_adjoint_eigen(Side::Lower).map_err(|e| {
        OpsError::param(
            "kspace",
            format!("coil Gram eigen-decomposition failed: {e:?}"),
        )
    })?;
    let vals = evd.S().column_vector();
    let u = evd.U();
    // faer sorts eigenvalues in increasing order: the largest is the last column.
    let singular_values = (0..coils)
        .map(|i| vals[coils - 1 - i].re.max(0.0).sqrt())
        .collect();
    let matrix = Array2::from_shape_fn((n, coils), |(v, c)| {
        let z = u[(c, coils - 1 - v)].conj();
        C32::new(z.re as f32, z.im as f32)
    });
    Ok(Compression {
        matrix,
        singular_values,
        region,
    })
}

/// `ks` compressed to `cfg.virtual_coils` virtual coils, slice by slice (data, sensitivities
/// and noise samples; the mask, reference and geometry are kept). The `coil_compression`
/// attribute records what was done. `N = 0` is an error; `N ≥` the data's coils returns `ks`
/// unchanged (there is nothing to compress).
pub fn compress(ks: &KSpace, cfg: &CcConfig) -> Result<KSpace> {
    let [slices, coils, rows, cols] = ks.shape4();
    if cfg.virtual_coils == 0 {
        return Err(OpsError::param(
            "virtual_coils",
            "must be ≥ 1 (the number of virtual coils to keep)",
        ));
    }
    if cfg.virtual_coils >= coils {
        return Ok(ks.clone());
    }
    let n = cfg.virtual_coils;
    let mut data = Array4::<C32>::zeros((slices, n, rows, cols));
    let mut maps = ks
        .sensitivities
        .as_ref()
        .map(|_| Array4::<C32>::zeros((slices, n, rows, cols)));
    let mut matrices = Vec::with_capacity(slices);
    for sl in 0..slices {
        let k = ks.data.index_axis(Axis(0), sl);
        let mask = ks.mask.as_ref().map(|m| m.index_axis(Axis(0), sl));
        let c = compression_matrix(k, mask, cfg)?;
        let one = |a: ArrayView3<C32>| mix_coils(a.insert_axis(Axis(0)), c.matrix.view());
        data.index_axis_mut(Axis(0), sl)
            .assign(&one(k)?.index_axis(Axis(0), 0));
        if let (Some(out), Some(s)) = (maps.as_mut(), ks.sensitivities.as_ref()) {
            out.index_axis_mut(Axis(0), sl)
                .assign(&one(s.index_axis(Axis(0), sl))?.index_axis(Axis(0), 0));
        }
        matrices.push(c);
    }
    let mut out = ks.clone();
    out.data = data;
    out.sensitivities = maps;
    // Noise samples are not per slice: compress them by slice 0's matrix when every slice
    // shares it (one slice), else drop them (they no longer describe one coil set).
    out.noise = match (&ks.noise, slices) {
        (Some(nz), 1) => Some(nz.dot(&matrices[0].matrix.t())),
        _ => None,
    };
    let from = match cfg.region {
        CcRegion::All => "all samples".to_string(),
        CcRegion::Calibration(size) => {
            if matrices.iter().all(|m| m.region.is_some()) {
                format!("calibration centre up to {size}x{size}")
            } else {
                format!("calibration centre up to {size}x{size} (all samples where the centre is not sampled)")
            }
        }
    };
    out.attributes.insert(
        "coil_compression".into(),
        format!("SVD, {coils} to {n} virtual coils per slice, from the {from}"),
    );
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_virtual_coils_is_an_error_and_as_many_as_coils_a_no_op() {
        let ks = KSpace::new(Array4::from_elem((1, 3, 4, 4), C32::new(1.0, 0.5)));
        let e = compress(&ks, &CcConfig::new(0)).unwrap_err().to_string();
        assert!(e.contains("≥ 1"), "{e}");
        assert_eq!(compress(&ks, &CcConfig::new(3)).expect("no-op"), ks);
        assert_eq!(compress(&ks, &CcConfig::new(9)).expect("no-op"), ks);
        let e = compression_matrix(ks.data.index_axis(Axis(0), 0), None, &CcConfig::new(4))
            .unwrap_err()
            .to_string();
        assert!(e.contains("1..=3"), "{e}");
    }

    #[test]
    fn the_matrix_has_orthonormal_rows() {
        let k = Array4::from_shape_fn((1, 5, 8, 8), |(_, c, i, j)| {
            C32::new(((c * 7 + i * 3 + j) % 11) as f32, ((c + i * j) % 5) as f32)
        });
        let m = compression_matrix(k.index_axis(Axis(0), 0), None, &CcConfig::new(3))
            .expect("matrix")
            .matrix;
        let mmh = m.dot(&m.t().mapv(|v| v.conj()));
        for ((a, b), v) in mmh.indexed_iter() {
            let want = if a == b { 1.0 } else { 0.0 };
            assert!((v.re - want).abs() < 1e-5 && v.im.abs() < 1e-5, "{v}");
        }
    }
}

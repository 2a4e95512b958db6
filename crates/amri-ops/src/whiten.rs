//! Noise prewhitening: decorrelating the receive coils so that their noise is white with unit
//! variance, as BART's `whiten` and Gadgetron's noise prewhitener do.
//!
//! From noise-only samples `n` `[sample, coil]` the coil noise covariance is estimated as
//! `Σ[i, j] = Σ_s n[s, i] · conj(n[s, j]) / (N − 1)` (BART `whiten`'s estimate, `N` samples).
//! With the lower Cholesky factor `Σ = L Lᴴ`, the whitening matrix is `W = L⁻¹`, so that
//! `W Σ Wᴴ = I`: every whitened coil has noise of variance 1 per complex sample and no two
//! coils are correlated. Whitening multiplies the coil axis of the data, of the coil
//! sensitivities and of the noise samples by `W` ([`crate::coils::mix_coils`]); a SENSE model
//! `y = F S x + n` becomes `W y = F (W S) x + W n` with white noise.
//!
//! ```
//! use amri_core::C32;
//! use amri_ops::whiten::{noise_covariance, whitening_matrix};
//! use ndarray::Array2;
//! // Two coils with noise variances 4 and 1: W scales them by 1/2 and 1.
//! let cov = Array2::from_shape_vec((2, 2), vec![
//!     C32::new(4.0, 0.0), C32::new(0.0, 0.0), C32::new(0.0, 0.0), C32::new(1.0, 0.0)])?;
//! let w = whitening_matrix(cov.view())?;
//! assert!((w[[0, 0]].re - 0.5).abs() < 1e-6 && (w[[1, 1]].re - 1.0).abs() < 1e-6);
//! # let _ = noise_covariance;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use amri_core::{KSpace, C32};
use ndarray::{Array2, ArrayView2};
use num_complex::Complex64;

use crate::coils::mix_coils;
use crate::error::{OpsError, Result};

fn c64(v: C32) -> Complex64 {
    Complex64::new(f64::from(v.re), f64::from(v.im))
}

fn c32(v: Complex64) -> C32 {
    C32::new(v.re as f32, v.im as f32)
}

/// Coil noise covariance `[coil, coil]` of noise samples `[sample, coil]`:
/// `Σ[i, j] = Σ_s n[s, i] conj(n[s, j]) / (N − 1)` (BART `whiten`), accumulated in f64.
/// Needs at least two samples.
pub fn noise_covariance(noise: ArrayView2<C32>) -> Result<Array2<C32>> {
    let (n, coils) = noise.dim();
    if n < 2 || coils == 0 {
        return Err(OpsError::param(
            "noise",
            format!(
                "{n} noise samples of {coils} coils: the covariance needs at least 2 samples and 1 coil"
            ),
        ));
    }
    if noise.iter().any(|v| !v.re.is_finite() || !v.im.is_finite()) {
        return Err(OpsError::param(
            "noise",
            "noise samples hold NaN or infinite values",
        ));
    }
    let mut acc = Array2::<Complex64>::zeros((coils, coils));
    for row in noise.outer_iter() {
        for i in 0..coils {
            let a = c64(row[i]);
            for j in 0..=i {
                acc[[i, j]] += a * c64(row[j]).conj();
            }
        }
    }
    let scale = 1.0 / (n as f64 - 1.0);
    Ok(Array2::from_shape_fn((coils, coils), |(i, j)| {
        if j <= i {
            c32(acc[[i, j]] * scale)
        } else {
            c32(acc[[j, i]].conj() * scale)
        }
    }))
}

/// Whitening matrix `W = L⁻¹` `[coil, coil]` (lower triangular) of a Hermitian positive definite
/// covariance `Σ = L Lᴴ`, so that `W Σ Wᴴ = I` (BART `whiten`'s matrix; BART stores its
/// transpose). Computed in f64; a covariance that is not square, not Hermitian (to 1e-4
/// relative) or not positive definite is an error naming the coil where it fails.
pub fn whitening_matrix(cov: ArrayView2<C32>) -> Result<Array2<C32>> {
    let (c, c2) = cov.dim();
    if c != c2 || c == 0 {
        return Err(OpsError::param(
            "noise covariance",
            format!(
                "shape {:?}: expected a square [coil, coil] matrix",
                cov.shape()
            ),
        ));
    }
    let s = cov.mapv(c64);
    if s.iter().any(|v| !v.re.is_finite() || !v.im.is_finite()) {
        return Err(OpsError::param(
            "noise covariance",
            "holds NaN or infinite values",
        ));
    }
    let big = s.iter().map(|v| v.norm()).fold(0.0f64, f64::max);
    for i in 0..c {
        for j in 0..i {
            if (s[[i, j]] - s[[j, i]].conj()).norm() > 1e-4 * big {
                return Err(OpsError::param(
                    "noise covariance",
                    format!("not Hermitian: entry ({i}, {j}) is not the conjugate of ({j}, {i})"),
                ));
            }
        }
    }
    // Cholesky–Banachiewicz: L[i][j] = (Σ[i][j] − Σ_k<j L[i][k] conj(L[j][k])) / L[j][j].
    let mut l = Array2::<Complex64>::zeros((c, c));
    for i in 0..c {
        for j in 0..=i {
            let mut sum = s[[i, j]];
            for k in 0..j {
                sum -= l[[i, k]] * l[[j, k]].conj();
            }
            if i == j {
                if sum.re.is_nan() || sum.re <= 1e-12 * big {
                    return Err(OpsError::param(
                        "noise covariance",
                        format!(
                            "not positive definite (fails at coil {i}): is a coil dead or duplicated?"
                        ),
                    ));
                }
                l[[i, i]] = Complex64::new(sum.re.sqrt(), 0.0);
            } else {
                l[[i, j]] = sum / l[[j, j]];
            }
        }
    }
    // W = L⁻¹ by forward substitution, column by column of the identity.
    let mut w = Array2::<Complex64>::zeros((c, c));
    for col in 0..c {
        for i in col..c {
            let mut sum = if i == col {
                Complex64::new(1.0, 0.0)
            } else {
                Complex64::new(0.0, 0.0)
            };
            for k in col..i {
                sum -= l[[i, k]] * w[[k, col]];
            }
            w[[i, col]] = sum / l[[i, i]];
        }
    }
    Ok(w.mapv(c32))
}

/// Where the noise statistics of [`prewhiten`] come from.
#[derive(Clone, Copy, Debug)]
pub enum NoiseSource<'a> {
    /// The k-space's own noise samples ([`KSpace::noise`]).
    Samples,
    /// A given coil covariance `[coil, coil]` (e.g. from a separate noise scan).
    Covariance(ArrayView2<'a, C32>),
}

/// Prewhitens `ks` in place: data, coil sensitivities and noise samples (when present) are
/// multiplied over the coil axis by the whitening matrix of the noise covariance from `source`.
/// Afterwards the noise is white with σ = 1 per complex sample, so [`KSpace::noise_sigma`] is
/// set to 1 and the `prewhitened` attribute records the source. Returns the whitening matrix.
pub fn prewhiten(ks: &mut KSpace, source: NoiseSource<'_>) -> Result<Array2<C32>> {
    let coils = ks.shape4()[1];
    let (cov, what) = match source {
        NoiseSource::Samples => {
            let n = ks.noise.as_ref().ok_or_else(|| {
                OpsError::param("noise", "the data carry no noise samples to prewhiten with")
            })?;
            (
                noise_covariance(n.view())?,
                format!("noise samples ({} per coil)", n.nrows()),
            )
        }
        NoiseSource::Covariance(c) => (c.to_owned(), "given noise covariance".to_string()),
    };
    if cov.dim() != (coils, coils) {
        return Err(OpsError::shape(
            "noise covariance [coil, coil] (the data's coil count)",
            &[coils, coils],
            cov.shape(),
        ));
    }
    let w = whitening_matrix(cov.view())?;
    ks.data = mix_coils(ks.data.view(), w.view())?;
    if let Some(s) = &ks.sensitivities {
        ks.sensitivities = Some(mix_coils(s.view(), w.view())?);
    }
    if let Some(n) = &ks.noise {
        // [sample, coil]: n' = n Wᵀ.
        ks.noise = Some(n.dot(&w.t()));
    }
    ks.attributes.insert("prewhitened".into(), what);
    ks.noise_sigma = Some(1.0);
    Ok(w)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn herm(n: usize, seed: u64) -> Array2<C32> {
        // A Aᴴ + I for a fixed pseudo-random A.
        let mut x = seed;
        let mut next = || {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((x >> 33) as f32 / (1u64 << 31) as f32) - 0.5
        };
        let a = Array2::from_shape_fn((n, n), |_| C32::new(next(), next()));
        let ah = a.t().mapv(|v| v.conj());
        a.dot(&ah) + Array2::from_diag_elem(n, C32::new(1.0, 0.0))
    }

    #[test]
    fn whitening_matrix_times_covariance_times_its_adjoint_is_the_identity() {
        for n in [1, 2, 5, 12] {
            let s = herm(n, n as u64);
            let w = whitening_matrix(s.view()).expect("positive definite");
            let wh = w.t().mapv(|v| v.conj());
            let i = w.dot(&s).dot(&wh);
            for ((a, b), v) in i.indexed_iter() {
                let want = if a == b { 1.0 } else { 0.0 };
                assert!((v.re - want).abs() < 1e-4 && v.im.abs() < 1e-4, "{n}: {v}");
            }
            // lower triangular, real positive diagonal
            for ((a, b), v) in w.indexed_iter() {
                if b > a {
                    assert_eq!(*v, C32::new(0.0, 0.0));
                }
            }
        }
    }

    #[test]
    fn bad_covariances_are_clear_errors() {
        let mut s = herm(3, 1);
        s[[2, 0]] += C32::new(5.0, 0.0);
        let e = whitening_matrix(s.view()).unwrap_err().to_string();
        assert!(e.contains("not Hermitian"), "{e}");
        let mut d = Array2::<C32>::zeros((3, 3));
        d[[0, 0]] = C32::new(1.0, 0.0);
        d[[1, 1]] = C32::new(1.0, 0.0);
        let e = whitening_matrix(d.view()).unwrap_err().to_string();
        assert!(e.contains("not positive definite (fails at coil 2)"), "{e}");
        let e = whitening_matrix(Array2::<C32>::zeros((2, 3)).view())
            .unwrap_err()
            .to_string();
        assert!(e.contains("square"), "{e}");
        let e = noise_covariance(Array2::<C32>::zeros((1, 3)).view())
            .unwrap_err()
            .to_string();
        assert!(e.contains("at least 2 samples"), "{e}");
    }

    #[test]
    fn prewhiten_refuses_data_without_noise_and_a_covariance_of_other_coils() {
        let mut ks = KSpace::new(ndarray::Array4::zeros((1, 3, 4, 4)));
        let e = prewhiten(&mut ks, NoiseSource::Samples)
            .unwrap_err()
            .to_string();
        assert!(e.contains("no noise samples"), "{e}");
        let c = herm(2, 3);
        let e = prewhiten(&mut ks, NoiseSource::Covariance(c.view()))
            .unwrap_err()
            .to_string();
        assert!(e.contains("[3, 3]"), "{e}");
    }
}

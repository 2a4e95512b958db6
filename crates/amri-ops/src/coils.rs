//! Receive-coil helpers: root-sum-of-squares and SENSE coil combination, and synthetic coil
//! sensitivity maps and smooth phases for simulation.
//!
//! All arrays follow the workspace convention: coil images and maps are `[coil, row, col]`
//! (batched: `[slice, coil, row, col]`), C order, with the image centre at `(rows/2, cols/2)`.
//!
//! ```
//! use amri_ops::coils::{rss, synthetic_maps};
//! use amri_core::C32;
//! use ndarray::Array3;
//! // Normalised maps: the RSS of S_c·x is |x| for any image x.
//! let maps = synthetic_maps(8, 32, 32, Some(1));
//! let x = C32::new(0.0, 2.0);
//! let coil_images: Array3<C32> = maps.mapv(|s| s * x);
//! assert!(rss(coil_images.view()).iter().all(|&v| (v - 2.0).abs() < 1e-4));
//! ```

use amri_core::C32;
use ndarray::{Array2, Array3, Array4, ArrayView2, ArrayView3, ArrayView4, Axis, Zip};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use crate::error::{OpsError, Result};

/// Root-sum-of-squares combination `sqrt(Σ_c |x_c|²)` of coil images `[coil, row, col]`,
/// returning a `[row, col]` magnitude image in the units of the input.
pub fn rss(coil_images: ArrayView3<C32>) -> Array2<f32> {
    let (_, rows, cols) = coil_images.dim();
    let mut acc = Array2::<f32>::zeros((rows, cols));
    for img in coil_images.axis_iter(Axis(0)) {
        Zip::from(&mut acc)
            .and(&img)
            .for_each(|a, v| *a += v.norm_sqr());
    }
    acc.mapv_inplace(f32::sqrt);
    acc
}

/// Root-sum-of-squares of a batch of coil images `[slice, coil, row, col]`, giving
/// `[slice, row, col]`; slices are combined in parallel.
pub fn rss_batch(coil_images: ArrayView4<C32>) -> Array3<f32> {
    let (slices, _, rows, cols) = coil_images.dim();
    let mut out = Array3::<f32>::zeros((slices, rows, cols));
    out.axis_iter_mut(Axis(0))
        .into_par_iter()
        .zip(coil_images.axis_iter(Axis(0)).into_par_iter())
        .for_each(|(mut o, s)| o.assign(&rss(s)));
    out
}

/// SENSE coil combination `Σ_c conj(S_c)·x_c` of coil images `[coil, row, col]` with maps of
/// the same shape: the adjoint of the coil expansion `x ↦ (S_c·x)_c`. For maps with
/// `Σ_c |S_c|² = 1` (normalised synthetic maps, or ESPIRiT inside its support) it returns the
/// least-squares image; elsewhere the result is weighted by `Σ_c |S_c|²`.
pub fn coil_combine(coil_images: ArrayView3<C32>, maps: ArrayView3<C32>) -> Result<Array2<C32>> {
    if coil_images.dim() != maps.dim() {
        return Err(OpsError::shape(
            "maps of coil_combine",
            coil_images.shape(),
            maps.shape(),
        ));
    }
    let (_, rows, cols) = coil_images.dim();
    let mut acc = Array2::<C32>::zeros((rows, cols));
    for (img, s) in coil_images.axis_iter(Axis(0)).zip(maps.axis_iter(Axis(0))) {
        Zip::from(&mut acc)
            .and(&img)
            .and(&s)
            .for_each(|a, &v, &m| *a += m.conj() * v);
    }
    Ok(acc)
}

/// Normalised image coordinates `(x, y)` of pixel `(row, col)`: `x` along columns, `y` along
/// rows, origin at `(rows/2, cols/2)`, one unit = half of the larger image side (isotropic
/// pixels), so the field of view spans about `[-1, 1]` along its longer side.
fn norm_coords(row: usize, col: usize, rows: usize, cols: usize) -> (f64, f64) {
    let half = (rows.max(cols) as f64 / 2.0).max(0.5);
    (
        (col as f64 - (cols / 2) as f64) / half,
        (row as f64 - (rows / 2) as f64) / half,
    )
}

/// Smooth synthetic coil sensitivity maps `[coil, row, col]` for simulation, normalised so that
/// `Σ_c |S_c(r)|² = 1` at every pixel.
///
/// Model: coil `c` is a straight conductor parallel to B0 placed on a ring around the field of
/// view at complex position `p_c = R·e^{iθ_c}` (in units of half the larger image side, see the
/// module docs). Its 2-D Biot–Savart receive field is `B_x − i·B_y ∝ −i / (z − p_c)` with
/// `z = x + i·y` the pixel position, so the magnitude falls off as `1/|z − p_c|` and the phase
/// `−π/2 − arg(z − p_c)` varies smoothly across the object; a constant phase `φ_c` per coil
/// is added. With `seed = None` the coils are evenly spaced (`θ_c = 2πc/C`, `R = 1.5`,
/// `φ_c = 0`); with `Some(seed)` the angles are jittered by up to a quarter of the spacing,
/// `R` is drawn from `[1.4, 1.8]` per coil and `φ_c` from `[0, 2π)`, reproducibly.
/// Empty dimensions give an empty array.
pub fn synthetic_maps(coils: usize, rows: usize, cols: usize, seed: Option<u64>) -> Array3<C32> {
    let mut params = Vec::with_capacity(coils);
    let spacing = std::f64::consts::TAU / coils.max(1) as f64;
    let mut rng = seed.map(ChaCha8Rng::seed_from_u64);
    for c in 0..coils {
        let (theta, radius, phi) = match rng.as_mut() {
            None => (spacing * c as f64, 1.5, 0.0),
            Some(r) => (
                spacing * (c as f64 + r.random_range(-0.25..0.25)),
                r.random_range(1.4..1.8),
                r.random_range(0.0..std::f64::consts::TAU),
            ),
        };
        params.push((radius * theta.cos(), radius * theta.sin(), phi));
    }
    let mut maps = Array3::<C32>::zeros((coils, rows, cols));
    let npix = rows * cols;
    if npix == 0 || coils == 0 {
        return maps;
    }
    // Pixel-major scratch so each pixel is normalised in one pass, in parallel.
    let mut pix = vec![C32::new(0.0, 0.0); npix * coils];
    pix.par_chunks_mut(coils).enumerate().for_each(|(p, out)| {
        let (x, y) = norm_coords(p / cols, p % cols, rows, cols);
        let mut norm2 = 0.0f64;
        let mut vals = Vec::with_capacity(coils);
        for &(px, py, phi) in &params {
            let (dx, dy) = (x - px, y - py);
            let r2 = (dx * dx + dy * dy).max(1e-12);
            // -i / (dx + i dy) = -i (dx - i dy) / r² = (-dy - i dx) / r²
            let (re, im) = (-dy / r2, -dx / r2);
            let (sp, cp) = phi.sin_cos();
            let v = (re * cp - im * sp, re * sp + im * cp);
            norm2 += v.0 * v.0 + v.1 * v.1;
            vals.push(v);
        }
        let inv = 1.0 / norm2.sqrt();
        for (o, v) in out.iter_mut().zip(vals) {
            *o = C32::new((v.0 * inv) as f32, (v.1 * inv) as f32);
        }
    });
    for ((c, r, col), v) in maps.indexed_iter_mut() {
        *v = pix[(r * cols + col) * coils + c];
    }
    maps
}

/// A smooth unit-magnitude phase image `e^{iφ(x, y)}` of shape `[rows, cols]`, with `φ` a
/// random second-order polynomial `a₀ + a₁x + a₂y + a₃x² + a₄xy + a₅y²` in the normalised
/// coordinates of [`synthetic_maps`] (field of view ≈ `[-1, 1]`); `a₀` is drawn from
/// `[-π, π)` and the other coefficients from `[-π/2, π/2)`, reproducibly from `seed`.
/// Multiplying a real (magnitude) image by it makes its k-space non-Hermitian, as measured
/// data are.
pub fn smooth_phase(rows: usize, cols: usize, seed: u64) -> Array2<C32> {
    use std::f64::consts::{FRAC_PI_2, PI};
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let a0: f64 = rng.random_range(-PI..PI);
    let a: [f64; 5] = std::array::from_fn(|_| rng.random_range(-FRAC_PI_2..FRAC_PI_2));
    Array2::from_shape_fn((rows, cols), |(r, c)| {
        let (x, y) = norm_coords(r, c, rows, cols);
        let phi = a0 + a[0] * x + a[1] * y + a[2] * x * x + a[3] * x * y + a[4] * y * y;
        let (s, co) = phi.sin_cos();
        C32::new(co as f32, s as f32)
    })
}

/// Mixes the coil axis of multi-coil data `[slice, coil, row, col]` (k-space or coil images,
/// any scaling) by a matrix `m` `[out, in]`: `y'[s, o, r, c] = Σ_i m[o, i] · y[s, i, r, c]`.
/// Prewhitening (`m` = the whitening matrix) and coil compression (`m` = the compression
/// matrix, fewer rows than columns) both apply it. Accumulates in f64.
pub fn mix_coils(data: ArrayView4<C32>, m: ArrayView2<C32>) -> Result<Array4<C32>> {
    let (slices, coils, rows, cols) = data.dim();
    if m.ncols() != coils {
        return Err(OpsError::shape(
            "coil-mixing matrix [out, in]",
            &[m.nrows(), coils],
            m.shape(),
        ));
    }
    let nout = m.nrows();
    let mut out = Array4::<C32>::zeros((slices, nout, rows, cols));
    out.axis_iter_mut(Axis(0))
        .into_par_iter()
        .zip(data.axis_iter(Axis(0)).into_par_iter())
        .for_each(|(mut o, d)| {
            for r in 0..rows {
                for c in 0..cols {
                    for k in 0..nout {
                        let mut acc = num_complex::Complex64::new(0.0, 0.0);
                        for i in 0..coils {
                            let a = m[[k, i]];
                            let b = d[[i, r, c]];
                            acc += num_complex::Complex64::new(f64::from(a.re), f64::from(a.im))
                                * num_complex::Complex64::new(f64::from(b.re), f64::from(b.im));
                        }
                        o[[k, r, c]] = C32::new(acc.re as f32, acc.im as f32);
                    }
                }
            }
        });
    Ok(out)
}

/// Coil Gram matrix `G[a, b] = Σ_k y_a(k) conj(y_b(k))` `[coil, coil]` (f64) of calibration
/// samples `[coil, row, col]`: the covariance whose eigenvectors ESPIRiT's phase reference and
/// SVD coil compression use.
pub(crate) fn coil_gram(calib: ndarray::ArrayView3<C32>) -> faer::Mat<faer::c64> {
    use faer::c64;
    let nc = calib.dim().0;
    let flat: Vec<Vec<c64>> = calib
        .outer_iter()
        .map(|c| {
            c.iter()
                .map(|v| c64::new(f64::from(v.re), f64::from(v.im)))
                .collect()
        })
        .collect();
    faer::Mat::<c64>::from_fn(nc, nc, |a, b| {
        flat[a]
            .iter()
            .zip(&flat[b])
            .map(|(x, y)| x * y.conj())
            .sum()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use amri_core::fft::fft2c;
    use ndarray::s;

    /// Fraction of the energy of `img` whose k-space lies within the central `frac` of each axis.
    fn low_freq_fraction(img: &Array2<C32>, frac: f64) -> f64 {
        let k = fft2c(img);
        let (r, c) = k.dim();
        let (hr, hc) = (
            ((r as f64 * frac) / 2.0) as usize,
            ((c as f64 * frac) / 2.0) as usize,
        );
        let total: f64 = k.iter().map(|v| v.norm_sqr() as f64).sum();
        let inner: f64 = k
            .slice(s![r / 2 - hr..r / 2 + hr, c / 2 - hc..c / 2 + hc])
            .iter()
            .map(|v| v.norm_sqr() as f64)
            .sum();
        inner / total
    }

    #[test]
    fn synthetic_maps_are_normalised_everywhere() {
        for seed in [None, Some(3), Some(11)] {
            let maps = synthetic_maps(8, 40, 56, seed);
            let ss = rss(maps.view());
            for v in ss.iter() {
                assert!((v - 1.0).abs() < 1e-5, "sum of squares {v}");
            }
        }
    }

    #[test]
    fn synthetic_maps_are_smooth_and_differ_between_coils() {
        let maps = synthetic_maps(8, 64, 64, Some(5));
        for c in 0..8 {
            let m = maps.index_axis(Axis(0), c).to_owned();
            let f = low_freq_fraction(&m, 0.25);
            assert!(
                f > 0.97,
                "coil {c}: only {f} of the energy in the central quarter"
            );
        }
        // Coils see different parts of the object: maps are far from collinear on average.
        let a = maps.index_axis(Axis(0), 0);
        let b = maps.index_axis(Axis(0), 4);
        let ip: C32 = a.iter().zip(b.iter()).map(|(x, y)| x.conj() * y).sum();
        let na: f32 = a.iter().map(|v| v.norm_sqr()).sum::<f32>().sqrt();
        let nb: f32 = b.iter().map(|v| v.norm_sqr()).sum::<f32>().sqrt();
        assert!(ip.norm() / (na * nb) < 0.8);
    }

    #[test]
    fn synthetic_maps_fall_off_away_from_the_coil() {
        // Unjittered coil 0 sits at angle 0, i.e. on the +x (column) side of the image.
        let maps = synthetic_maps(4, 32, 32, None);
        let near = maps[[0, 16, 30]].norm();
        let far = maps[[0, 16, 1]].norm();
        assert!(near > 2.0 * far, "near {near}, far {far}");
    }

    #[test]
    fn seeds_are_reproducible() {
        assert_eq!(
            synthetic_maps(4, 16, 16, Some(9)),
            synthetic_maps(4, 16, 16, Some(9))
        );
        assert_ne!(
            synthetic_maps(4, 16, 16, Some(9)),
            synthetic_maps(4, 16, 16, Some(10))
        );
        assert_eq!(smooth_phase(16, 16, 2), smooth_phase(16, 16, 2));
        assert_ne!(smooth_phase(16, 16, 2), smooth_phase(16, 16, 3));
    }

    #[test]
    fn rss_of_normalised_maps_times_image_is_magnitude() {
        let maps = synthetic_maps(6, 24, 20, Some(2));
        let x = Array2::from_shape_fn((24, 20), |(r, c)| {
            C32::new((r as f32 * 0.3).sin() + 1.5, (c as f32 * 0.2).cos())
        });
        let coil = &maps * &x.view().insert_axis(Axis(0));
        let r = rss(coil.view());
        for (a, b) in r.iter().zip(x.iter()) {
            assert!((a - b.norm()).abs() < 1e-4 * b.norm().max(1.0));
        }
        // SENSE combination with normalised maps returns x itself.
        let comb = coil_combine(coil.view(), maps.view()).expect("same shapes");
        for (a, b) in comb.iter().zip(x.iter()) {
            assert!((a - b).norm() < 1e-4 * b.norm().max(1.0));
        }
        // Batched RSS agrees with the per-slice one.
        let batch = ndarray::stack(Axis(0), &[coil.view(), maps.view()]).expect("same shapes");
        let rb = rss_batch(batch.view());
        assert_eq!(rb.index_axis(Axis(0), 0), r);
        assert_eq!(rb.index_axis(Axis(0), 1), rss(maps.view()));
    }

    #[test]
    fn rss_matches_hand_computed_value() {
        let mut a = Array3::<C32>::zeros((2, 1, 2));
        a[[0, 0, 0]] = C32::new(3.0, 0.0);
        a[[1, 0, 0]] = C32::new(0.0, 4.0);
        a[[1, 0, 1]] = C32::new(-1.0, 0.0);
        let r = rss(a.view());
        assert_eq!(r[[0, 0]], 5.0);
        assert_eq!(r[[0, 1]], 1.0);
    }

    #[test]
    fn coil_combine_rejects_shape_mismatch() {
        let a = Array3::<C32>::zeros((2, 4, 4));
        let b = Array3::<C32>::zeros((3, 4, 4));
        assert!(coil_combine(a.view(), b.view()).is_err());
    }

    #[test]
    fn smooth_phase_is_unit_smooth_and_breaks_hermitian_symmetry() {
        let (r, c) = (48, 48);
        let ph = smooth_phase(r, c, 7);
        assert!(ph.iter().all(|v| (v.norm() - 1.0).abs() < 1e-5));
        assert!(low_freq_fraction(&ph, 0.25) > 0.95);
        // A real disc has Hermitian-symmetric k-space, k(-m) = conj(k(m)) about the centre;
        // after multiplying by the phase it no longer has.
        let disc = Array2::from_shape_fn((r, c), |(i, j)| {
            let (x, y) = norm_coords(i, j, r, c);
            C32::new(if x * x + y * y < 0.5 { 1.0 } else { 0.0 }, 0.0)
        });
        let asym = |img: &Array2<C32>| {
            let k = fft2c(img);
            let (mut num, mut den) = (0.0f64, 0.0f64);
            for i in 1..r {
                for j in 1..c {
                    let m = k[[i, j]];
                    let n = k[[r - i, c - j]];
                    num += (m - n.conj()).norm_sqr() as f64;
                    den += m.norm_sqr() as f64;
                }
            }
            (num / den).sqrt()
        };
        assert!(asym(&disc) < 1e-3);
        assert!(asym(&(&disc * &ph)) > 0.3);
    }
}

//! Centred orthonormal FFT against numpy fixtures and analytic properties.
//!
//! Fixtures: `tests/fixtures/fft_*.bin`, made by `tests/fixtures/make_fixtures.py` with
//! `np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(x), norm='ortho'))` (and `ifft2`).

use std::f64::consts::PI;
use std::path::PathBuf;

use amri_core::fft::{fft2c, fft2c_inplace, ifft2c, ifft2c_inplace, Fft2};
use amri_core::C32;
use ndarray::{Array2, ArrayD, IxDyn};
use proptest::prelude::*;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn read_c32(name: &str, shape: &[usize]) -> ArrayD<C32> {
    let bytes = std::fs::read(fixture(name)).expect("fixture file");
    let vals: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    let data: Vec<C32> = vals.chunks_exact(2).map(|p| C32::new(p[0], p[1])).collect();
    ArrayD::from_shape_vec(IxDyn(shape), data).expect("fixture shape")
}

/// `‖a − b‖ / ‖b‖` over all samples.
fn rel_err(a: &ArrayD<C32>, b: &ArrayD<C32>) -> f64 {
    let num: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| (x - y).norm_sqr() as f64)
        .sum();
    let den: f64 = b.iter().map(|y| y.norm_sqr() as f64).sum();
    (num / den).sqrt()
}

fn cases() -> Vec<(String, Vec<usize>)> {
    std::fs::read_to_string(fixture("fft_cases.txt"))
        .expect("fft_cases.txt")
        .lines()
        .map(|l| {
            let mut it = l.split_whitespace();
            let name = it.next().expect("name").to_string();
            let shape = it.map(|s| s.parse().expect("dim")).collect();
            (name, shape)
        })
        .collect()
}

#[test]
fn matches_numpy_centred_ortho_fft() {
    let cases = cases();
    assert!(cases.len() >= 10, "fixture manifest lists the cases");
    for (name, shape) in cases {
        let x = read_c32(&format!("fft_{name}_in.bin"), &shape);
        let fwd = read_c32(&format!("fft_{name}_fwd.bin"), &shape);
        let inv = read_c32(&format!("fft_{name}_inv.bin"), &shape);
        let k = fft2c(&x);
        let e = rel_err(&k, &fwd);
        assert!(e < 1e-5, "{name}: forward relative error {e}");
        let i = ifft2c(&x);
        let e = rel_err(&i, &inv);
        assert!(e < 1e-5, "{name}: inverse relative error {e}");
        // The plan API on the contiguous buffer gives the same result.
        let (r, c) = (shape[shape.len() - 2], shape[shape.len() - 1]);
        let plan = Fft2::new(r, c);
        assert_eq!(plan.shape(), [r, c]);
        let mut buf = x.as_slice().expect("contiguous").to_vec();
        plan.forward_batch(&mut buf);
        let e = rel_err(
            &ArrayD::from_shape_vec(IxDyn(&shape), buf.clone()).unwrap(),
            &fwd,
        );
        assert!(e < 1e-5, "{name}: forward_batch relative error {e}");
        plan.inverse_batch(&mut buf);
        let e = rel_err(&ArrayD::from_shape_vec(IxDyn(&shape), buf).unwrap(), &x);
        assert!(e < 1e-5, "{name}: batch round trip relative error {e}");
    }
}

#[test]
fn single_image_plan_matches_numpy() {
    let x = read_c32("fft_m9x6_in.bin", &[9, 6]);
    let fwd = read_c32("fft_m9x6_fwd.bin", &[9, 6]);
    let plan = Fft2::new(9, 6);
    let mut buf = x.as_slice().unwrap().to_vec();
    plan.forward(&mut buf);
    let e = rel_err(
        &ArrayD::from_shape_vec(IxDyn(&[9, 6]), buf.clone()).unwrap(),
        &fwd,
    );
    assert!(e < 1e-5, "forward relative error {e}");
    plan.inverse(&mut buf);
    let e = rel_err(&ArrayD::from_shape_vec(IxDyn(&[9, 6]), buf).unwrap(), &x);
    assert!(e < 1e-5, "round trip relative error {e}");
}

#[test]
fn shifted_delta_gives_analytic_phase_ramp() {
    // A delta at (r/2 + dy, c/2 + dx) has the centred spectrum
    // exp(-2πi (dy (k - r/2) / r + dx (l - c/2) / c)) / sqrt(r c); the inverse has the conjugate.
    for (r, c, dy, dx) in [
        (8usize, 8usize, 1isize, -2isize),
        (7, 5, -3, 2),
        (6, 9, 2, 4),
        (256, 256, 17, -40),
        (33, 20, 16, -10),
    ] {
        let mut x = Array2::<C32>::zeros((r, c));
        let (y0, x0) = (
            (r as isize / 2 + dy) as usize,
            (c as isize / 2 + dx) as usize,
        );
        x[[y0, x0]] = C32::new(1.0, 0.0);
        let k = fft2c(&x);
        let ki = ifft2c(&x);
        let s = 1.0 / ((r * c) as f64).sqrt();
        for ((i, j), v) in k.indexed_iter() {
            let ph = -2.0
                * PI
                * (dy as f64 * (i as f64 - (r / 2) as f64) / r as f64
                    + dx as f64 * (j as f64 - (c / 2) as f64) / c as f64);
            let want = num_complex::Complex64::from_polar(s, ph);
            let got = ki[[i, j]];
            assert!(
                (v.re as f64 - want.re).abs() < 1e-6 && (v.im as f64 - want.im).abs() < 1e-6,
                "{r}x{c} ({i},{j}): {v} vs {want}"
            );
            assert!(
                (got.re as f64 - want.re).abs() < 1e-6 && (got.im as f64 + want.im).abs() < 1e-6,
                "{r}x{c} inverse ({i},{j}): {got} vs conj {want}"
            );
        }
    }
}

fn image(r: usize, c: usize, seed: &[f32]) -> Array2<C32> {
    Array2::from_shape_fn((r, c), |(i, j)| {
        let t = (i * c + j) % seed.len();
        let u = (i * 31 + j * 17 + 3) % seed.len();
        C32::new(seed[t], seed[u] - 0.5 * seed[t])
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn parseval_roundtrip_and_linearity(
        r in 1usize..40,
        c in 1usize..40,
        seed in proptest::collection::vec(-10.0f32..10.0, 1..64),
        alpha in -3.0f32..3.0,
        beta in -3.0f32..3.0,
    ) {
        let x = image(r, c, &seed);
        let y = image(r, c, &seed.iter().rev().map(|v| v * 0.5 + 1.0).collect::<Vec<_>>());
        let kx = fft2c(&x);
        // Parseval: orthonormal scaling preserves energy.
        let ex: f64 = x.iter().map(|v| v.norm_sqr() as f64).sum();
        let ek: f64 = kx.iter().map(|v| v.norm_sqr() as f64).sum();
        prop_assert!((ex - ek).abs() <= 1e-5 * ex.max(1e-20), "energy {} vs {}", ex, ek);
        // Round trip, both orders.
        let back = ifft2c(&kx);
        let err: f64 = x.iter().zip(&back).map(|(a, b)| (a - b).norm_sqr() as f64).sum();
        prop_assert!(err.sqrt() <= 1e-5 * ex.sqrt().max(1e-20));
        let mut z = x.clone();
        ifft2c_inplace(&mut z);
        fft2c_inplace(&mut z);
        let err: f64 = x.iter().zip(&z).map(|(a, b)| (a - b).norm_sqr() as f64).sum();
        prop_assert!(err.sqrt() <= 1e-5 * ex.sqrt().max(1e-20));
        // Linearity: F(αx + βy) = αF(x) + βF(y).
        let ky = fft2c(&y);
        let comb = x.mapv(|v| v * alpha) + y.mapv(|v| v * beta);
        let kc = fft2c(&comb);
        let want = kx.mapv(|v| v * alpha) + ky.mapv(|v| v * beta);
        let scale: f64 = want.iter().map(|v| v.norm_sqr() as f64).sum::<f64>().sqrt()
            + comb.iter().map(|v| v.norm_sqr() as f64).sum::<f64>().sqrt();
        let err: f64 = kc.iter().zip(&want).map(|(a, b)| (a - b).norm_sqr() as f64).sum();
        prop_assert!(err.sqrt() <= 1e-5 * scale.max(1e-20));
    }

    #[test]
    fn batch_equals_image_by_image(
        n in 1usize..5,
        r in 1usize..24,
        c in 1usize..24,
        seed in proptest::collection::vec(-1.0f32..1.0, 1..32),
    ) {
        let imgs: Vec<Array2<C32>> = (0..n)
            .map(|b| image(r, c, &seed.iter().map(|v| v + b as f32).collect::<Vec<_>>()))
            .collect();
        let mut batch: Vec<C32> = imgs.iter().flat_map(|a| a.iter().copied()).collect();
        Fft2::new(r, c).forward_batch(&mut batch);
        for (b, img) in imgs.iter().enumerate() {
            let k = fft2c(img);
            for (g, w) in batch[b * r * c..(b + 1) * r * c].iter().zip(k.iter()) {
                prop_assert!((g - w).norm() <= 1e-6 * (1.0 + w.norm()));
            }
        }
    }
}

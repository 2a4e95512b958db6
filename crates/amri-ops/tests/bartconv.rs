//! Noise prewhitening and coil compression against BART (`bart whiten`, `bart cc -S -p 4`;
//! fixtures made by tests/fixtures/bartconv/make_fixtures.py) and against analytic results.

use std::path::PathBuf;

use amri_core::fft::ifft2c;
use amri_core::{KSpace, C32};
use amri_ops::cc::{compress, compression_matrix, CcConfig, CcRegion};
use amri_ops::coils::rss_batch;
use amri_ops::whiten::{noise_covariance, prewhiten, whitening_matrix, NoiseSource};
use ndarray::{Array2, Array3, Array4, Axis};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("tests/fixtures/bartconv/{name}"))
}

/// Reads a BART cfl/hdr pair: the dimensions (d0 fastest) and the complex float32 samples.
fn read_cfl(name: &str) -> (Vec<usize>, Vec<C32>) {
    let hdr = std::fs::read_to_string(fixture(&format!("{name}.hdr"))).expect("hdr");
    let dims: Vec<usize> = hdr
        .lines()
        .nth(1)
        .expect("dims line")
        .split_whitespace()
        .map(|t| t.parse().expect("integer dim"))
        .collect();
    let bytes = std::fs::read(fixture(&format!("{name}.cfl"))).expect("cfl");
    let data: Vec<C32> = bytes
        .chunks_exact(8)
        .map(|b| {
            C32::new(
                f32::from_le_bytes([b[0], b[1], b[2], b[3]]),
                f32::from_le_bytes([b[4], b[5], b[6], b[7]]),
            )
        })
        .collect();
    assert_eq!(data.len(), dims.iter().product::<usize>());
    (dims, data)
}

/// A BART `[d0 = row, d1 = col, 1, d3 = coil]` array as amri k-space `[1, coil, row, col]`.
fn bart_kspace(name: &str) -> Array4<C32> {
    let (d, v) = read_cfl(name);
    let (rows, cols, coils) = (d[0], d[1], d[3]);
    Array4::from_shape_fn((1, coils, rows, cols), |(_, c, i, j)| {
        v[i + rows * (j + cols * c)]
    })
}

fn max_rel(a: &Array4<C32>, b: &Array4<C32>) -> f32 {
    let big = b.iter().map(|v| v.norm()).fold(0.0, f32::max);
    a.iter()
        .zip(b.iter())
        .map(|(x, y)| (x - y).norm())
        .fold(0.0, f32::max)
        / big
}

fn rss_image(k: &Array4<C32>) -> Array3<f32> {
    rss_batch(ifft2c(k).view())
}

/// Circular complex Gaussian samples `[n, c]` with unit variance per complex sample.
fn white(n: usize, c: usize, seed: u64) -> Array2<C32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let s = std::f32::consts::FRAC_1_SQRT_2;
    Array2::from_shape_fn((n, c), |_| {
        let re: f32 = StandardNormal.sample(&mut rng);
        let im: f32 = StandardNormal.sample(&mut rng);
        C32::new(re * s, im * s)
    })
}

#[test]
fn covariance_and_whitened_data_equal_bart_whiten() {
    let data = bart_kspace("wdata");
    let (nd, nv) = read_cfl("wnoise");
    let (ns, coils) = (nd[0], nd[3]);
    let noise = Array2::from_shape_fn((ns, coils), |(s, c)| nv[s + ns * c]);
    // BART's covariance: dims [1, 1, 1, i, j], d3 fastest.
    let (_, cv) = read_cfl("wcovar");
    let cov = noise_covariance(noise.view()).expect("covariance");
    for i in 0..coils {
        for j in 0..coils {
            let want = cv[i + coils * j];
            assert!(
                (cov[[i, j]] - want).norm() < 1e-4 * want.norm().max(1.0),
                "covariance ({i}, {j}): amri {} BART {want}",
                cov[[i, j]]
            );
        }
    }
    let mut ks = KSpace::new(data);
    ks.noise = Some(noise);
    prewhiten(&mut ks, NoiseSource::Samples).expect("prewhiten");
    let want = bart_kspace("wout");
    // BART estimates the covariance in float32: agreement to about 1e-5 of the largest sample.
    let e = max_rel(&ks.data, &want);
    assert!(e < 1e-4, "whitened data differ from bart whiten by {e}");
    assert_eq!(ks.noise_sigma, Some(1.0));
    // A given covariance gives the same result as the samples it came from.
    let mut ks2 = KSpace::new(bart_kspace("wdata"));
    prewhiten(&mut ks2, NoiseSource::Covariance(cov.view())).expect("prewhiten");
    assert!(max_rel(&ks2.data, &ks.data) < 1e-6);
}

#[test]
fn whitened_noise_has_identity_covariance() {
    // Correlated noise n = w Aᵀ of known covariance A Aᴴ, for several mixings A: the covariance
    // estimated from one set of samples whitens an independent set to I (to the sampling error
    // of 100 000 samples, about 1/√N ≈ 0.003).
    for seed in 0..4u64 {
        let coils = 3 + seed as usize * 2;
        let a = white(coils, coils, 100 + seed) + Array2::from_diag_elem(coils, C32::new(0.5, 0.0));
        let train = white(100_000, coils, 200 + seed).dot(&a.t());
        let test = white(100_000, coils, 300 + seed).dot(&a.t());
        let w = whitening_matrix(noise_covariance(train.view()).expect("cov").view()).expect("W");
        let whitened = test.dot(&w.t());
        let c = noise_covariance(whitened.view()).expect("cov");
        for ((i, j), v) in c.indexed_iter() {
            let want = if i == j { 1.0 } else { 0.0 };
            assert!(
                (v.re - want).abs() < 0.03 && v.im.abs() < 0.03,
                "seed {seed}: whitened covariance ({i}, {j}) = {v}"
            );
        }
        // ... while the raw noise is far from white.
        let raw = noise_covariance(test.view()).expect("cov");
        let off: f32 = raw
            .indexed_iter()
            .filter(|((i, j), _)| i != j)
            .map(|(_, v)| v.norm())
            .fold(0.0, f32::max);
        assert!(off > 0.1, "seed {seed}: the raw noise should be correlated");
    }
}

#[test]
fn compressed_rss_equals_bart_cc() {
    let k = bart_kspace("cckspace");
    let ks = KSpace::new(k);
    for (cfg, name) in [
        (CcConfig::new(4), "cc4"),
        (
            CcConfig {
                virtual_coils: 4,
                region: CcRegion::All,
            },
            "cca4",
        ),
    ] {
        let ours = compress(&ks, &cfg).expect("compress");
        assert_eq!(ours.shape4(), [1, 4, 32, 32]);
        let bart = bart_kspace(name);
        let (a, b) = (rss_image(&ours.data), rss_image(&bart));
        let big = b.iter().cloned().fold(0.0, f32::max);
        let e = (&a - &b).mapv(f32::abs).fold(0.0f32, |m, v| m.max(*v)) / big;
        assert!(
            e < 1e-5,
            "{name}: RSS differs from BART's by {e} of the maximum"
        );
    }
    // The two regions give different coils (so the test above tells them apart).
    let (c, a) = (bart_kspace("cc4"), bart_kspace("cca4"));
    let d = (&rss_image(&c) - &rss_image(&a))
        .mapv(f32::abs)
        .fold(0.0f32, |m, v| m.max(*v));
    assert!(d > 1e-5 * rss_image(&c).fold(0.0f32, |m, v| m.max(*v)));
}

#[test]
fn kept_energy_is_the_sum_of_the_top_squared_singular_values() {
    // y_c(k) = Σ_j U[c, j] σ_j v_j(k): U a unitary DFT over coils, v_j orthonormal DFT rows over
    // the samples, so the singular values of the coil × sample matrix are exactly σ.
    let (coils, rows, cols) = (6usize, 8usize, 8usize);
    let sigma = [6.0f64, 5.0, 3.0, 2.0, 1.0, 0.5];
    let kk = (rows * cols) as f64;
    let tau = std::f64::consts::TAU;
    let y = Array4::from_shape_fn((1, coils, rows, cols), |(_, c, r, q)| {
        let k = (r * cols + q) as f64;
        let mut z = num_complex::Complex64::new(0.0, 0.0);
        for (j, s) in sigma.iter().enumerate() {
            let u = num_complex::Complex64::from_polar(
                1.0 / (coils as f64).sqrt(),
                tau * (c * j) as f64 / coils as f64,
            );
            let v =
                num_complex::Complex64::from_polar(1.0 / kk.sqrt(), tau * (j * 3) as f64 * k / kk);
            z += u * s * v;
        }
        C32::new(z.re as f32, z.im as f32)
    });
    let ks = KSpace::new(y);
    for n in 1..coils {
        let cfg = CcConfig {
            virtual_coils: n,
            region: CcRegion::All,
        };
        let out = compress(&ks, &cfg).expect("compress");
        let kept: f64 = out.data.iter().map(|v| f64::from(v.norm_sqr())).sum();
        let want: f64 = sigma[..n].iter().map(|s| s * s).sum();
        assert!(
            (kept - want).abs() < 1e-4 * want,
            "N = {n}: kept {kept}, top singular values give {want}"
        );
        let sv = compression_matrix(ks.data.index_axis(Axis(0), 0), None, &cfg)
            .expect("matrix")
            .singular_values;
        for (a, b) in sv.iter().zip(sigma) {
            assert!(
                (a - b).abs() < 1e-4 * b,
                "singular values {sv:?} vs {sigma:?}"
            );
        }
    }
}

#[test]
fn sensitivities_and_noise_follow_the_data() {
    // Compressing S·x's k-space equals the k-space of (M S)·x: maps are compressed consistently.
    let k = bart_kspace("cckspace");
    let imgs = ifft2c(&k);
    let x = imgs.index_axis(Axis(1), 0).to_owned(); // any image
    let maps = Array4::from_shape_fn(k.dim(), |(s, c, i, j)| {
        C32::from_polar(1.0 + 0.1 * c as f32, 0.3 * (c * i + j) as f32 / 32.0)
            * x[[s, i, j]].norm().min(1.0)
    });
    let mut ks = KSpace::new(k);
    ks.sensitivities = Some(maps.clone());
    ks.noise = Some(white(64, 8, 9));
    let out = compress(&ks, &CcConfig::new(3)).expect("compress");
    let m = compression_matrix(ks.data.index_axis(Axis(0), 0), None, &CcConfig::new(3))
        .expect("matrix")
        .matrix;
    let want = amri_ops::coils::mix_coils(maps.view(), m.view()).expect("mix");
    assert!(max_rel(out.sensitivities.as_ref().expect("maps"), &want) < 1e-6);
    assert_eq!(out.noise.as_ref().map(|n| n.dim()), Some((64, 3)));
}

//! The noisy-data (Tweedie) objective on measured files: the data are served as measured, noise
//! included, with the noise level the file gives; the σ_n handed to the loss matches the noise
//! that was actually added (its empirical standard deviation per real and imaginary part after
//! the file's intensity scale), and a file whose noise level is unknown is refused by name.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use amri_core::fft::fft2c;
use amri_core::{KSpace, C32};
use amri_diffusion::data::FurtherParams;
use amri_diffusion::measured::{MeasuredFile, TrainingData};
use amri_diffusion::train::Batch;
use amri_ops::corruption::FurtherMode;
use candle_core::Device;
use ndarray::{Array2, Array3, Array4};
use rand::SeedableRng;
use rand_distr::{Distribution, StandardNormal};

const N: usize = 32;
const SLICES: usize = 4;
/// Noise standard deviation per complex sample, in the k-space's units.
const SIGMA: f32 = 0.8;

/// The noiseless k-space of the test object (the same for every slice).
fn clean() -> Array2<C32> {
    let x = Array2::from_shape_fn((N, N), |(i, j)| {
        let (u, v) = (i as f32 / N as f32 - 0.5, j as f32 / N as f32 - 0.5);
        let a = if u * u + v * v < 0.12 {
            100.0 + 30.0 * u
        } else {
            5.0
        };
        C32::from_polar(a, 2.0 * v)
    });
    fft2c(&x)
}

fn mask() -> Array2<f32> {
    Array2::from_shape_fn((N, N), |(_, j)| {
        f32::from(u8::from((12..20).contains(&j) || j % 3 == 0))
    })
}

/// `SLICES` slices of the clean k-space plus complex Gaussian noise of σ = `SIGMA` per complex
/// sample (σ/√2 per real and imaginary part), drawn here with rand_distr, masked.
fn noisy_file(attribute: bool) -> KSpace {
    let (k, m) = (clean(), mask());
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
    let mut data = Array4::<C32>::zeros((SLICES, 1, N, N));
    for sl in 0..SLICES {
        for ((i, j), v) in k.indexed_iter() {
            let re: f32 = StandardNormal.sample(&mut rng);
            let im: f32 = StandardNormal.sample(&mut rng);
            let n = C32::new(re, im) * (SIGMA / std::f32::consts::SQRT_2);
            data[[sl, 0, i, j]] = (*v + n) * m[[i, j]];
        }
    }
    let mut ks = KSpace::new(data);
    ks.mask = Some(Array3::from_shape_fn((SLICES, N, N), |(_, i, j)| m[[i, j]]));
    if attribute {
        ks.noise_sigma = Some(f64::from(SIGMA));
    }
    ks
}

fn further() -> FurtherParams {
    FurtherParams {
        delta: 0.2,
        mode: FurtherMode::PerStep,
        seed: 2,
    }
}

#[test]
fn tweedie_on_measured_files_serves_the_noisy_data_with_the_files_noise_level() {
    let f = MeasuredFile::new("noisy.npz", noisy_file(true)).unwrap();
    assert_eq!(f.noise_sigma, Some(SIGMA));
    let d = TrainingData::from_measured_noisy(std::slice::from_ref(&f), further(), None).unwrap();
    let set = d.sets().next().unwrap();
    let scale = set.scales()[0];
    let levels = set.noise_levels().expect("a noisy-data set").to_vec();
    assert_eq!(levels.len(), SLICES);
    let batch = d.step_batch(SLICES, 0, 0, &Device::Cpu).unwrap();
    let Batch::Noisy { inner, sigma_n } = batch else {
        panic!("expected a noisy-data batch");
    };
    let sn = sigma_n.to_vec1::<f32>().unwrap();
    assert!(sn.iter().all(|v| *v == levels[0]), "{sn:?} vs {levels:?}");
    let Batch::AmbientKspace { y, mask_a, .. } = *inner else {
        panic!("expected single-coil k-space inside");
    };
    // every slice holds the same clean k-space: served − clean/scale is the noise alone
    let y: Vec<f32> = y.flatten_all().unwrap().to_vec1().unwrap();
    let ma: Vec<f32> = mask_a.flatten_all().unwrap().to_vec1().unwrap();
    let (k, plane) = (clean(), N * N);
    let mut resid = Vec::new();
    for b in 0..SLICES {
        for p in 0..plane {
            if ma[b * plane + p] == 0.0 {
                continue;
            }
            let c = k[[p / N, p % N]] / scale;
            resid.push(y[b * 2 * plane + p] - c.re);
            resid.push(y[b * 2 * plane + plane + p] - c.im);
        }
    }
    let n = resid.len() as f64;
    let std = (resid.iter().map(|r| f64::from(*r).powi(2)).sum::<f64>() / n).sqrt();
    let want = f64::from(SIGMA) / (std::f64::consts::SQRT_2 * f64::from(scale));
    // ≈ 1500 noise values: the sample std is within a few percent of the true one
    assert!(
        (std / want - 1.0).abs() < 0.08,
        "empirical σ {std} vs σ/(√2·scale) {want} over {n} values"
    );
    assert!(
        (f64::from(levels[0]) / want - 1.0).abs() < 1e-5,
        "σ_n {} vs {want}",
        levels[0]
    );
}

#[test]
fn an_unknown_noise_level_is_refused_by_file_and_a_given_one_is_used() {
    let f = MeasuredFile::new("quiet.npz", noisy_file(false)).unwrap();
    assert_eq!(f.noise_sigma, None);
    let e = TrainingData::from_measured_noisy(std::slice::from_ref(&f), further(), None)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        e.contains("quiet.npz") && e.contains("--noise-sigma"),
        "{e}"
    );
    let d = TrainingData::from_measured_noisy(std::slice::from_ref(&f), further(), Some(SIGMA))
        .unwrap();
    let set = d.sets().next().unwrap();
    let want = SIGMA / (std::f32::consts::SQRT_2 * set.scales()[0]);
    assert!(set
        .noise_levels()
        .unwrap()
        .iter()
        .all(|v| (v / want - 1.0).abs() < 1e-6));
}

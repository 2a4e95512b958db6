//! The plan's preparation of measured data: noise prewhitening before coil maps are estimated,
//! and coil compression. A SENSE reconstruction of a simulation with strongly correlated,
//! unequal coil noise is measured with and without prewhitening.

use std::sync::atomic::AtomicBool;

use amri_core::fft::fft2c;
use amri_core::metrics::nmse_volume;
use amri_core::{KSpace, C32};
use amri_ops::coils::synthetic_maps;
use amri_ops::masks::{cartesian_mask, KspacePattern};
use amri_ops::noise::Noise;
use amri_pipeline::{NoiseCovariance, Overrides, PipelineError, Plan};
use amri_protocol::Method;
use ndarray::{Array2, Array3, Array4, Axis};

const N: usize = 64;
const COILS: usize = 8;

/// A piecewise-smooth test object `[1, row, col]`: an ellipse with two inner features.
fn object() -> Array3<f32> {
    Array3::from_shape_fn((1, N, N), |(_, i, j)| {
        let (y, x) = (i as f32 / N as f32 - 0.5, j as f32 / N as f32 - 0.5);
        let mut v = 0.0;
        if (x / 0.38).powi(2) + (y / 0.45).powi(2) < 1.0 {
            v = 1.0 + 0.3 * (6.0 * x).sin();
        }
        if (x - 0.1).powi(2) + (y + 0.1).powi(2) < 0.01 {
            v += 0.8;
        }
        if (x + 0.15).abs() < 0.04 && y.abs() < 0.2 {
            v = 0.3;
        }
        v
    })
}

/// Noise mixing `A` `[coil, coil]`: coil gains from 0.25 to 8 and strong correlations.
fn mixing() -> Array2<C32> {
    Array2::from_shape_fn((COILS, COILS), |(i, j)| {
        let g = 0.25 * 2f32.powf(5.0 * i as f32 / (COILS - 1) as f32);
        if i == j {
            C32::new(g, 0.0)
        } else if j < i {
            C32::from_polar(0.7 * g, (i * 3 + j) as f32)
        } else {
            C32::new(0.0, 0.0)
        }
    })
}

/// `count` noise vectors `[count, coil]` with covariance `σ² A Aᴴ` (white noise mixed by `A`).
fn correlated(count: usize, sigma: f32, seed: u64) -> Array2<C32> {
    let mut w = vec![C32::new(0.0, 0.0); count * COILS];
    Noise::from_sigma(sigma).expect("σ").add(&mut w, seed);
    let w = Array2::from_shape_vec((count, COILS), w).expect("shape");
    w.dot(&mixing().t())
}

/// Undersampled (R = 3, ACS 12 %) 8-coil k-space of [`object`] with correlated noise on the
/// measured samples, the true maps attached when `maps`, and 4096 noise-only samples.
fn measured(maps: bool) -> (KSpace, Array3<f32>) {
    let x = object();
    let s = synthetic_maps(COILS, N, N, Some(3));
    let coil_imgs =
        Array4::from_shape_fn((1, COILS, N, N), |(_, c, i, j)| s[[c, i, j]] * x[[0, i, j]]);
    let mut k = fft2c(&coil_imgs);
    let m = cartesian_mask(N, N, 1, KspacePattern::Random, 3.0, 0.12, 5)
        .expect("mask")
        .mask;
    let noise = correlated(N * N, 0.02, 11);
    for c in 0..COILS {
        for i in 0..N {
            for j in 0..N {
                k[[0, c, i, j]] = if m[[i, j]] != 0.0 {
                    k[[0, c, i, j]] + noise[[i * N + j, c]]
                } else {
                    C32::new(0.0, 0.0)
                };
            }
        }
    }
    let mut ks = KSpace::new(k);
    ks.mask = Some(m.insert_axis(Axis(0)));
    ks.noise = Some(correlated(4096, 0.02, 12));
    if maps {
        ks.sensitivities = Some(s.insert_axis(Axis(0)));
    }
    (ks, x)
}

fn plan(prewhiten: Option<bool>, coils: Option<usize>) -> Plan {
    Plan::new(
        None,
        &Overrides {
            method: Some(Method::CgSense),
            lambda: Some(0.01),
            prewhiten,
            coils,
            ..Overrides::default()
        },
    )
    .expect("plan")
}

fn recon(p: &Plan, ks: &KSpace) -> Array3<f32> {
    p.run(ks, &|| {}, &AtomicBool::new(false))
        .expect("recon")
        .image
}

/// NMSE of `y` against `x` after the least-squares global scale `α = <x, y> / <y, y>`:
/// prewhitened data reconstruct in whitened units (noise σ = 1), so only the shape of the
/// image is compared.
fn scaled_nmse(x: &Array3<f32>, y: &Array3<f32>) -> f64 {
    let xy: f64 = x.iter().zip(y).map(|(a, b)| f64::from(a * b)).sum();
    let yy: f64 = y.iter().map(|b| f64::from(b * b)).sum();
    let a = (xy / yy) as f32;
    nmse_volume(x.view(), y.mapv(|v| v * a).view()).expect("nmse")
}

#[test]
fn sense_with_correlated_noise_is_better_prewhitened() {
    for maps in [true, false] {
        let (ks, x) = measured(maps);
        let white = scaled_nmse(&x, &recon(&plan(None, None), &ks));
        let raw = scaled_nmse(&x, &recon(&plan(Some(false), None), &ks));
        eprintln!(
            "CG-SENSE, {} maps: NMSE prewhitened {white:.5}, not prewhitened {raw:.5}",
            if maps { "true" } else { "ESPIRiT" }
        );
        assert!(
            white < raw,
            "maps {maps}: prewhitened NMSE {white} should beat {raw}"
        );
    }
}

#[test]
fn prepare_whitens_once_and_compresses_to_the_asked_coils() {
    let (ks, _) = measured(true);
    let p = plan(None, Some(3));
    let once = p.prepare(&ks).expect("prepare").into_owned();
    assert_eq!(once.shape4(), [1, 3, N, N]);
    assert_eq!(once.sensitivities.as_ref().map(|s| s.dim().1), Some(3));
    assert!(once.attributes.contains_key("prewhitened"));
    assert!(once.attributes.contains_key("coil_compression"));
    assert_eq!(once.noise_sigma, Some(1.0));
    let twice = p.prepare(&once).expect("prepare");
    assert_eq!(*twice, once, "preparing prepared data changes nothing");
    // Off, and nothing to compress: the data are borrowed as they are.
    let off = plan(Some(false), Some(COILS));
    assert!(matches!(
        off.prepare(&ks).expect("prepare"),
        std::borrow::Cow::Borrowed(_)
    ));
    // Without noise samples nothing is whitened.
    let mut quiet = ks.clone();
    quiet.noise = None;
    assert!(!plan(None, None)
        .prepare(&quiet)
        .expect("prepare")
        .attributes
        .contains_key("prewhitened"));
}

#[test]
fn a_given_covariance_whitens_like_the_samples_it_came_from_and_bad_ones_are_refused() {
    let (ks, _) = measured(true);
    let cov =
        amri_ops::whiten::noise_covariance(ks.noise.as_ref().expect("noise").view()).expect("cov");
    let mut no_samples = ks.clone();
    no_samples.noise = None;
    let given = Plan::new(
        None,
        &Overrides {
            method: Some(Method::ZeroFilled),
            noise_cov: Some(NoiseCovariance {
                source: "cov.npy".into(),
                matrix: cov.clone(),
            }),
            ..Overrides::default()
        },
    )
    .expect("plan");
    let a = given.prepare(&no_samples).expect("prepare").into_owned();
    let b = plan(None, None).prepare(&ks).expect("prepare").into_owned();
    let e = (&a.data - &b.data)
        .mapv(|v| v.norm())
        .fold(0.0f32, |m, v| m.max(*v));
    assert!(e < 1e-4, "{e}");

    let bad = |matrix: Array2<C32>, prewhiten: Option<bool>| {
        Plan::new(
            None,
            &Overrides {
                method: Some(Method::ZeroFilled),
                prewhiten,
                noise_cov: Some(NoiseCovariance {
                    source: "cov.npy".into(),
                    matrix,
                }),
                ..Overrides::default()
            },
        )
        .expect_err("refused")
    };
    let e = bad(Array2::zeros((COILS, COILS)), None);
    assert!(matches!(e, PipelineError::NoiseCov { .. }));
    assert!(e.to_string().contains("cov.npy") && e.to_string().contains("positive definite"));
    let e = bad(cov.clone(), Some(false));
    assert!(matches!(e, PipelineError::Conflict { .. }), "{e}");
    // A covariance of other coils than the data's is an error when run.
    let small = Array2::from_diag_elem(3, C32::new(1.0, 0.0));
    let p = Plan::new(
        None,
        &Overrides {
            method: Some(Method::ZeroFilled),
            noise_cov: Some(NoiseCovariance {
                source: "small.npy".into(),
                matrix: small,
            }),
            ..Overrides::default()
        },
    )
    .expect("plan");
    let e = p.prepare(&ks).expect_err("3 vs 8 coils").to_string();
    assert!(e.contains("[8, 8]"), "{e}");
    let e = Plan::new(
        None,
        &Overrides {
            method: Some(Method::ZeroFilled),
            coils: Some(0),
            ..Overrides::default()
        },
    )
    .expect_err("0 coils")
    .to_string();
    assert!(e.contains("coils must be ≥ 1"), "{e}");
}

//! The reconstruction methods on synthetic scans with known truth.

mod common;

use std::ops::ControlFlow;

use amri_core::C32;
use amri_ops::coils::synthetic_maps;
use amri_ops::fourier::FourierSampling;
use amri_ops::linop::Scaled;
use amri_ops::sense::Sense;
use amri_ops::LinearOperator;
use amri_recon::alg::{power, PowerConfig, Stop};
use amri_recon::app::{
    cg_sense, cg_sense_with, l1_wavelet, l1_wavelet_slice, tv_recon, tv_recon_slice, zero_filled,
    CgSenseConfig, DataScaling, L1WaveletConfig, TvConfig, TvSolver,
};
use amri_recon::tv::{Boundary, TvDef, TvNorm};

use amri_recon::ReconError;
use ndarray::{Array2, Array4, Axis};

#[test]
fn cg_sense_fully_sampled_returns_the_image() {
    let img = common::phantom(24, 20);
    let full = Array2::ones((24, 20));
    // Single coil, no maps.
    let ks = common::simulate(&img, None, &full);
    let rec = cg_sense(&ks, None, &CgSenseConfig::default()).expect("recon");
    let err = common::rel_err(
        rec.images.as_slice().expect("c"),
        img.as_slice().expect("c"),
    );
    assert!(err < 1e-4, "single-coil error {err}");
    // Eight coils with normalised maps, given as an argument.
    let maps = synthetic_maps(8, 24, 20, Some(3));
    let ks = common::simulate(&img, Some(&maps), &full);
    let m4 = maps.clone().insert_axis(Axis(0));
    let rec = cg_sense(&ks, Some(&m4), &CgSenseConfig::default()).expect("recon");
    let err = common::rel_err(
        rec.images.as_slice().expect("c"),
        img.as_slice().expect("c"),
    );
    assert!(err < 1e-4, "8-coil error {err}");
    assert!(
        rec.logs[0].iterations() <= 3,
        "A^H A = I should converge at once"
    );
}

#[test]
fn cg_sense_undersampled_multicoil_recovers_the_image() {
    // R = 2 with 8 coils is well posed: noiseless CG-SENSE gets the image back.
    let img = common::phantom(32, 32);
    let maps = synthetic_maps(8, 32, 32, Some(1));
    let mask = common::column_mask(32, 32, 2, 6);
    let mut ks = common::simulate(&img, Some(&maps), &mask);
    ks.sensitivities = Some(maps.insert_axis(Axis(0)));
    let cfg = CgSenseConfig {
        iterations: 200,
        tol: 1e-7,
        ..CgSenseConfig::default()
    };
    let rec = cg_sense(&ks, None, &cfg).expect("recon");
    let err = common::rel_err(
        rec.images.as_slice().expect("c"),
        img.as_slice().expect("c"),
    );
    assert!(err < 1e-3, "error {err}");
    // Zero-filled is far worse (aliasing).
    let zf = zero_filled(&ks).expect("zf");
    let zf_err = common::rel_err(
        &zf.iter().map(|&v| C32::new(v, 0.0)).collect::<Vec<_>>(),
        &img.iter()
            .map(|v| C32::new(v.norm(), 0.0))
            .collect::<Vec<_>>(),
    );
    assert!(zf_err > 0.1, "zero-filled error {zf_err}");
}

#[test]
fn zero_filled_is_magnitude_and_rss() {
    let img = common::phantom(16, 12);
    let full = Array2::ones((16, 12));
    let ks = common::simulate(&img, None, &full);
    let zf = zero_filled(&ks).expect("zf");
    for (a, b) in zf.iter().zip(img.iter()) {
        assert!((a - b.norm()).abs() < 1e-5);
    }
    // Normalised maps: RSS of the coil images is |x|.
    let maps = synthetic_maps(4, 16, 12, None);
    let ks = common::simulate(&img, Some(&maps), &full);
    let zf = zero_filled(&ks).expect("zf");
    for (a, b) in zf.iter().zip(img.iter()) {
        assert!((a - b.norm()).abs() < 1e-4);
    }
}

#[test]
fn l1_wavelet_with_vanishing_lambda_is_least_squares() {
    let img = common::phantom(32, 32);
    let maps = synthetic_maps(8, 32, 32, Some(2));
    let mask = common::column_mask(32, 32, 2, 4);
    let ks = common::simulate(&img, Some(&maps), &mask);
    let m4 = maps.insert_axis(Axis(0));
    let ls = cg_sense(
        &ks,
        Some(&m4),
        &CgSenseConfig {
            iterations: 300,
            tol: 1e-8,
            ..CgSenseConfig::default()
        },
    )
    .expect("cg");
    let cfg = L1WaveletConfig {
        lambda: 1e-7,
        iterations: 600,
        restart: true,
        ..L1WaveletConfig::default()
    };
    let l1 = l1_wavelet(&ks, Some(&m4), &cfg).expect("l1");
    let err = common::rel_err(
        l1.images.as_slice().expect("c"),
        ls.images.as_slice().expect("c"),
    );
    assert!(err < 2e-3, "l1-wavelet (λ→0) vs least squares: {err}");
}

#[test]
fn l1_wavelet_beats_zero_filled_and_its_objective_decreases() {
    let img = common::phantom(48, 48);
    // Single coil, random-ish columns at R ≈ 3 with a fully sampled centre.
    let mut mask = common::column_mask(48, 48, 3, 8);
    for j in [1usize, 5, 13, 20, 34, 41] {
        mask.column_mut(j).fill(1.0);
    }
    let ks = common::simulate(&img, None, &mask);
    let cfg = L1WaveletConfig {
        lambda: 0.02,
        iterations: 150,
        ..L1WaveletConfig::default()
    };
    let rec = l1_wavelet(&ks, None, &cfg).expect("l1");
    let zf = ks
        .data
        .index_axis(Axis(0), 0)
        .index_axis(Axis(0), 0)
        .to_owned();
    let mut zf_img: Vec<C32> = zf.iter().copied().collect();
    amri_core::fft::Fft2::new(48, 48).inverse(&mut zf_img);
    let e_l1 = common::rel_err(
        rec.images.as_slice().expect("c"),
        img.as_slice().expect("c"),
    );
    let e_zf = common::rel_err(&zf_img, img.as_slice().expect("c"));
    assert!(e_l1 < 0.8 * e_zf, "l1 {e_l1} vs zero-filled {e_zf}");
    // With a fixed wavelet grid the objective is well defined (cycle spinning changes the
    // penalty every iteration).
    let fixed = L1WaveletConfig {
        cycle_spin: false,
        track_objective: true,
        ..cfg
    };
    let rec = l1_wavelet(&ks, None, &fixed).expect("l1");
    let h = &rec.logs[0].history;
    assert_eq!(h.len(), 150);
    let f: Vec<f64> = h.iter().map(|i| i.objective.expect("tracked")).collect();
    assert!(f[149] < f[0]);
    // Monotone up to FISTA's momentum ripples and the random shifts: after the first ten
    // iterations never more than 1 % above the running minimum.
    let mut best = f[..10].iter().copied().fold(f64::MAX, f64::min);
    for (k, v) in f.iter().enumerate().skip(10) {
        assert!(*v <= best * 1.01 + 1e-12, "iteration {k}: {v} > {best}");
        best = best.min(*v);
    }
}

#[test]
fn tv_reconstruction_beats_zero_filled_and_decreases_objective() {
    let img = common::phantom(48, 48);
    let maps = synthetic_maps(4, 48, 48, Some(5));
    let mask = common::column_mask(48, 48, 4, 6);
    let ks = common::simulate(&img, Some(&maps), &mask);
    let m4 = maps.insert_axis(Axis(0));
    let cfg = TvConfig {
        lambda: 0.002,
        iterations: 300,
        track_objective: true,
        ..TvConfig::default()
    };
    let rec = tv_recon(&ks, Some(&m4), &cfg).expect("tv");
    let zfc = amri_recon::app::cg_sense(
        &ks,
        Some(&m4),
        &CgSenseConfig {
            iterations: 1,
            ..CgSenseConfig::default()
        },
    )
    .expect("adjoint-ish");
    let e_tv = common::rel_err(
        rec.images.as_slice().expect("c"),
        img.as_slice().expect("c"),
    );
    let e_one = common::rel_err(
        zfc.images.as_slice().expect("c"),
        img.as_slice().expect("c"),
    );
    assert!(e_tv < 0.5 * e_one, "tv {e_tv} vs one CG step {e_one}");
    let f: Vec<f64> = rec.logs[0]
        .history
        .iter()
        .map(|i| i.objective.expect("tracked"))
        .collect();
    assert!(f[f.len() - 1] < f[0]);
    // ADMM (the default solver) is not monotone in the objective, but the late iterations
    // must settle.
    let tail = &f[f.len() - 50..];
    let (lo, hi) = tail
        .iter()
        .fold((f64::MAX, f64::MIN), |(a, b), v| (a.min(*v), b.max(*v)));
    assert!((hi - lo) / lo < 1e-2, "objective still moving: {lo}..{hi}");
}

#[test]
fn power_iteration_finds_the_operator_norm() {
    // ‖M F‖ = 1 for any non-empty 0/1 mask (F unitary).
    let mask = common::column_mask(20, 16, 3, 2);
    let op = FourierSampling::new(mask.clone()).expect("op");
    let cfg = PowerConfig {
        iterations: 50,
        ..PowerConfig::default()
    };
    let l = power(|v, o| op.normal(v, o), 320, &cfg).expect("power");
    assert!((l - 1.0).abs() < 1e-3, "{l}");
    // Scaling by α scales the eigenvalue by |α|².
    let scaled = Scaled::new(C32::new(0.0, 3.0), FourierSampling::new(mask).expect("op"));
    let l = power(|v, o| scaled.normal(v, o), 320, &cfg).expect("power");
    assert!((l - 9.0).abs() < 1e-2, "{l}");
    // SENSE with normalised maps and a full mask: A^H A = I.
    let maps = synthetic_maps(4, 20, 16, Some(1));
    let s = Sense::new(maps, Array2::ones((20, 16))).expect("sense");
    let l = power(|v, o| s.normal(v, o), 320, &cfg).expect("power");
    assert!((l - 1.0).abs() < 1e-3, "{l}");
}

#[test]
fn slice_api_estimates_lipschitz_and_callback_cancels() {
    let img = common::phantom(16, 16);
    let mask = common::column_mask(16, 16, 2, 4);
    let op = Scaled::new(C32::new(2.0, 0.0), FourierSampling::new(mask).expect("op"));
    let x: Vec<C32> = img.iter().copied().collect();
    let mut y = vec![C32::new(0.0, 0.0); 256];
    op.forward(&x, &mut y);
    // ‖A‖² = 4: the power-iteration step keeps FISTA stable (a step of 1 would diverge).
    let cfg = L1WaveletConfig {
        lambda: 1e-4,
        iterations: 50,
        ..L1WaveletConfig::default()
    };
    let (out, log) =
        l1_wavelet_slice(&op, &y, None, 0, &cfg, |_| ControlFlow::Continue(())).expect("solve");
    assert!(out.iter().all(|v| v.re.is_finite()));
    assert!(log.last().expect("ran").residual.is_finite());
    let (_, log) = l1_wavelet_slice(&op, &y, None, 0, &cfg, |i| {
        if i.iter == 7 {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    })
    .expect("solve");
    assert_eq!(log.stop, Stop::Cancelled);
    assert_eq!(log.iterations(), 7);
}

#[test]
fn progress_sees_every_slice_in_parallel_runs() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let img = common::phantom(16, 16);
    let full = Array2::ones((16, 16));
    let one = common::simulate(&img, None, &full);
    let mut data = Array4::<C32>::zeros((3, 1, 16, 16));
    for s in 0..3 {
        data.index_axis_mut(Axis(0), s)
            .assign(&one.data.index_axis(Axis(0), 0));
    }
    let ks = amri_core::KSpace::new(data);
    let seen = [
        AtomicUsize::new(0),
        AtomicUsize::new(0),
        AtomicUsize::new(0),
    ];
    let rec = cg_sense_with(&ks, None, &CgSenseConfig::default(), &|s, _| {
        seen[s].fetch_add(1, Ordering::Relaxed);
        ControlFlow::Continue(())
    })
    .expect("recon");
    assert_eq!(rec.images.dim(), (3, 16, 16));
    assert!(seen.iter().all(|c| c.load(Ordering::Relaxed) >= 1));
}

#[test]
fn bad_inputs_are_errors_not_panics() {
    let img = common::phantom(8, 8);
    let maps = synthetic_maps(2, 8, 8, None);
    let full = Array2::ones((8, 8));
    let ks = common::simulate(&img, Some(&maps), &full);
    // Maps of the wrong shape.
    let wrong = Array4::<C32>::zeros((1, 3, 8, 8));
    assert!(matches!(
        cg_sense(&ks, Some(&wrong), &CgSenseConfig::default()),
        Err(ReconError::Shape { .. })
    ));
    // NaN in the data.
    let mut bad = ks.clone();
    bad.data[[0, 0, 1, 1]] = C32::new(f32::NAN, 0.0);
    let m4 = maps.insert_axis(Axis(0));
    assert!(cg_sense(&bad, Some(&m4), &CgSenseConfig::default()).is_err());
    // Negative λ, non-binary mask, bad fixed scale.
    let cfg = L1WaveletConfig {
        lambda: -1.0,
        ..L1WaveletConfig::default()
    };
    assert!(l1_wavelet(&ks, Some(&m4), &cfg).is_err());
    let mut half = ks.clone();
    half.mask = Some(ndarray::Array3::from_elem((1, 8, 8), 0.5));
    assert!(tv_recon(&half, Some(&m4), &TvConfig::default()).is_err());
    let cfg = CgSenseConfig {
        scaling: DataScaling::Fixed(0.0),
        ..CgSenseConfig::default()
    };
    assert!(cg_sense(&ks, Some(&m4), &cfg).is_err());
}

#[test]
fn tv_admm_and_pdhg_reach_the_same_minimiser() {
    // Two independent algorithms on the same undersampled 4-coil problem, run to convergence,
    // for the default, BART's and an anisotropic TV.
    let img = common::phantom(32, 32);
    let maps = synthetic_maps(4, 32, 32, Some(5));
    let mask = common::column_mask(32, 32, 3, 6);
    let ks = common::simulate(&img, Some(&maps), &mask);
    let m4 = maps.insert_axis(Axis(0));
    let aniso = TvDef {
        norm: TvNorm::Anisotropic,
        boundary: Boundary::Neumann,
    };
    for def in [TvDef::default(), TvDef::BART, aniso] {
        let base = TvConfig {
            lambda: 0.01,
            tv: def,
            scaling: DataScaling::None,
            ..TvConfig::default()
        };
        let admm = tv_recon(
            &ks,
            Some(&m4),
            &TvConfig {
                iterations: 3000,
                ..base
            },
        )
        .expect("admm");
        let pdhg = tv_recon(
            &ks,
            Some(&m4),
            &TvConfig {
                iterations: 6000,
                solver: TvSolver::Pdhg,
                ..base
            },
        )
        .expect("pdhg");
        let d = common::rel_err(
            admm.images.as_slice().expect("c"),
            pdhg.images.as_slice().expect("c"),
        );
        assert!(d < 5e-3, "{def:?}: ADMM vs PDHG differ by {d}");
    }
}

#[test]
fn tv_admm_with_bart_definition_denoises_a_periodic_step_exactly() {
    // A = M F with a full mask is unitary, so the problem is TV denoising of x₀. Every row is
    // the same periodic 1-D step (levels a on k columns, b on n − k, two jumps), so with
    // BART's periodic TV the row differences vanish and each level moves towards
    // the other by 2λ/k and 2λ/(n − k) (closed form, while they stay apart).
    let (rows, n, k) = (6, 16, 6);
    let x0: Vec<C32> = (0..rows * n)
        .map(|i| C32::new(if i % n < k { 1.0 } else { 3.0 }, 0.0))
        .collect();
    let op = FourierSampling::new(Array2::ones((rows, n))).expect("op");
    let mut y = vec![C32::new(0.0, 0.0); rows * n];
    op.forward(&x0, &mut y);
    let lam = 0.9f32;
    let cfg = TvConfig {
        lambda: lam,
        iterations: 400,
        tv: TvDef::BART,
        ..TvConfig::default()
    };
    let (x, log) = tv_recon_slice(&op, &y, None, &cfg, |_| ControlFlow::Continue(())).expect("tv");
    assert!(log.iterations() > 0);
    let (wa, wb) = (1.0 + 2.0 * lam / k as f32, 3.0 - 2.0 * lam / (n - k) as f32);
    for (i, v) in x.iter().enumerate() {
        let want = if i % n < k { wa } else { wb };
        assert!(
            (v.re - want).abs() < 5e-3 && v.im.abs() < 5e-3,
            "pixel {i}: {v} vs {want}"
        );
    }
}

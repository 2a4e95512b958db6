//! amri against BART v0.8 on a 32×32, 4-coil Shepp–Logan fixture
//! (tests/fixtures/bart/make_bart_fixture.sh): CG-SENSE with Tikhonov regularisation versus
//! `bart pics -l2`, TV by ADMM versus `bart pics -R T:3:0:λ`, and the data scale versus the one
//! `pics` prints without `-S`.

mod common;

use amri_core::{KSpace, C32};
use amri_recon::app::{bart_scaling, cg_sense, tv_recon, CgSenseConfig, DataScaling, TvConfig};
use amri_recon::tv::TvDef;
use ndarray::{Array2, Array3, Array4, Axis};

/// BART dims `[x, y, 1, coil]` in Fortran order are amri's `[coil, row = y, col = x]` in C order.
fn load_scan() -> (KSpace, Array4<C32>) {
    let (d, k) = common::read_cfl(&common::fixture("bart/ksp"));
    let (dm, s) = common::read_cfl(&common::fixture("bart/sens"));
    assert_eq!(&d[..4], &[32, 32, 1, 4]);
    assert_eq!(&dm[..4], &[32, 32, 1, 4]);
    let data = Array4::from_shape_vec((1, 4, 32, 32), k).expect("shape");
    let maps = Array4::from_shape_vec((1, 4, 32, 32), s).expect("shape");
    // The script samples BART y-lines (amri rows) 0, 2, 4, … and 12..20.
    let mask = Array2::from_shape_fn((32, 32), |(i, _)| {
        if i % 2 == 0 || (12..20).contains(&i) {
            1.0f32
        } else {
            0.0
        }
    });
    for ((_, _, i, j), v) in data.indexed_iter() {
        if mask[[i, j]] == 0.0 {
            assert_eq!(*v, C32::new(0.0, 0.0), "data outside the mask");
        }
    }
    let mut ks = KSpace::new(data);
    ks.mask = Some(mask.insert_axis(Axis(0)));
    (ks, maps)
}

fn load_image(name: &str) -> Array3<C32> {
    let (d, v) = common::read_cfl(&common::fixture(name));
    assert_eq!(&d[..2], &[32, 32]);
    Array3::from_shape_vec((1, 32, 32), v).expect("shape")
}

#[test]
fn tikhonov_cg_sense_matches_bart_pics_l2() {
    let (ks, maps) = load_scan();
    let want = load_image("bart/rec_l2");
    let cfg = CgSenseConfig {
        lambda: 0.01,
        iterations: 100,
        tol: 1e-7,
        scaling: DataScaling::None,
    };
    let got = cg_sense(&ks, Some(&maps), &cfg).expect("cg-sense");
    let err = common::rel_err(
        got.images.as_slice().expect("contiguous"),
        want.as_slice().expect("contiguous"),
    );
    assert!(err < 1e-3, "relative difference to BART {err}");
}

#[test]
fn data_scaling_matches_bart_pics_estimate() {
    let (ks, maps) = load_scan();
    let text = std::fs::read_to_string(common::fixture("bart/scaling.txt")).expect("scaling");
    let bart: f32 = text
        .trim()
        .trim_start_matches("Scaling:")
        .trim()
        .parse()
        .expect("number");
    let mask = ks
        .mask
        .as_ref()
        .expect("mask")
        .index_axis(Axis(0), 0)
        .to_owned();
    let ours = bart_scaling(ks.data.index_axis(Axis(0), 0), mask.view());
    assert!(
        ((ours - bart) / bart).abs() < 1e-3,
        "scale {ours} vs BART {bart}"
    );
    // The reconstruction reports the scale it used.
    let cfg = CgSenseConfig {
        scaling: DataScaling::Bart,
        ..CgSenseConfig::default()
    };
    let got = cg_sense(&ks, Some(&maps), &cfg).expect("cg-sense");
    assert!((got.scales[0] - ours).abs() <= 1e-6 * ours);
}

#[test]
fn tv_admm_matches_bart_pics_tv() {
    // Same problem (BART's periodic isotropic TV, λ = 0.01; `pics -S` still divides the data
    // by its estimated scale and multiplies the image back, as DataScaling::Bart does) and the
    // same algorithm and budget: `pics -i 100` counts CG steps, as TvConfig::iterations does.
    let (ks, maps) = load_scan();
    let base = TvConfig {
        lambda: 0.01,
        tv: TvDef::BART,
        scaling: DataScaling::Bart,
        ..TvConfig::default()
    };
    // Compare inside the coil support: the maps are zero outside the phantom, where A has a
    // null space that only TV (slowly) fills in.
    let support: Vec<bool> = (0..32 * 32)
        .map(|p| {
            let e: f32 = (0..4)
                .map(|c| maps[[0, c, p / 32, p % 32]].norm_sqr())
                .sum();
            e > 0.5
        })
        .collect();
    let err_to = |cfg: &TvConfig, name: &str| {
        let got = tv_recon(&ks, Some(&maps), cfg).expect("tv");
        let want = load_image(name);
        let pick = |v: &[C32]| -> Vec<C32> {
            v.iter()
                .zip(&support)
                .filter(|(_, s)| **s)
                .map(|(x, _)| *x)
                .collect()
        };
        common::rel_err(
            &pick(got.images.as_slice().expect("contiguous")),
            &pick(want.as_slice().expect("contiguous")),
        )
    };
    let e100 = err_to(
        &TvConfig {
            iterations: 100,
            ..base
        },
        "bart/rec_tv",
    );
    let econv = err_to(
        &TvConfig {
            iterations: 3000,
            ..base
        },
        "bart/rec_tv_conv",
    );
    // amri's default TV (Neumann boundary) is a different problem: farther from BART.
    let eneu = err_to(
        &TvConfig {
            iterations: 3000,
            tv: TvDef::default(),
            ..base
        },
        "bart/rec_tv_conv",
    );
    // Measured on 2026-11-23: 1.3e-2 (100 steps), 1.2e-2 (3000 steps), Neumann 3.1e-2. The
    // residual 1 % is not explained yet; likely (unverified) both solvers' inner CG, stopped at
    // a relative residual of 1e-3, stalls x at slightly different points.
    eprintln!("TV vs BART: 100 CG steps {e100:.2e}, converged {econv:.2e}, Neumann {eneu:.2e}");
    assert!(
        e100 < 2e-2,
        "100 CG steps: relative difference to BART {e100}"
    );
    assert!(
        econv < 2e-2,
        "converged: relative difference to BART {econv}"
    );
    assert!(eneu > 2.0 * econv, "Neumann {eneu} vs periodic {econv}");
}

//! amri against BART v0.8 on a 32×32, 4-coil Shepp–Logan fixture
//! (tests/fixtures/bart/make_bart_fixture.sh): CG-SENSE with Tikhonov regularisation versus
//! `bart pics -l2`, and the data scale versus the one `pics` prints without `-S`.

mod common;

use amri_core::{KSpace, C32};
use amri_recon::app::{bart_scaling, cg_sense, CgSenseConfig, DataScaling};
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

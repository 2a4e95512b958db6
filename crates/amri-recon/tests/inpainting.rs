//! The classical methods on image-domain (pixel/box) measurements: `A = M`, inpainting.

mod common;

use amri_core::{KSpace, C32};
use amri_ops::pixel_mask::random_pixel_mask;
use amri_recon::app::{
    cg_sense, data_domain, image_scaling, l1_wavelet, tv_recon, zero_filled, CgSenseConfig,
    L1WaveletConfig, TvConfig,
};
use amri_recon::wavelet::WaveletDef;
use amri_recon::ReconError;
use ndarray::{Array2, Array4, Axis};

/// An image-domain scan `[1, 1, rows, cols]` of `img` under `mask`, as `amri simulate` writes
/// pixel corruptions (unmeasured pixels zero, domain `Image`).
fn image_scan(img: &Array2<C32>, mask: &Array2<f32>) -> KSpace {
    let data = (img * &mask.mapv(|m| C32::new(m, 0.0)))
        .insert_axis(Axis(0))
        .insert_axis(Axis(0));
    let mut ks = KSpace::new(data);
    ks.mask = Some(mask.clone().insert_axis(Axis(0)));
    ks.domain = Some(amri_core::MeasuredDomain::Image);
    ks
}

fn flat(a: &ndarray::Array3<C32>) -> &[C32] {
    a.as_slice().expect("contiguous")
}

#[test]
fn tv_inpainting_restores_a_constant_image_exactly() {
    // x = c is the unique minimiser of ½‖M(x − y)‖² + λ TV(x) when y = M c: zero data error and
    // zero TV, and any other zero-TV image is a different constant.
    let c = C32::new(2.0, -1.0);
    let img = Array2::from_elem((24, 20), c);
    let mask = random_pixel_mask(24, 20, 0.5, 7).expect("mask");
    let ks = image_scan(&img, &mask);
    let cfg = TvConfig {
        lambda: 0.05,
        iterations: 400,
        ..TvConfig::default()
    };
    let rec = tv_recon(&ks, None, &cfg).expect("tv");
    let worst = rec
        .images
        .iter()
        .map(|v| (v - c).norm() / c.norm())
        .fold(0.0f32, f32::max);
    assert!(
        worst < 0.02,
        "largest relative deviation from the constant {worst}"
    );
}

#[test]
fn tv_and_l1_inpainting_beat_the_masked_image_on_a_phantom() {
    let img = common::phantom(32, 32);
    let mask = random_pixel_mask(32, 32, 0.6, 3).expect("mask");
    let ks = image_scan(&img, &mask);
    let truth = img.clone().insert_axis(Axis(0));
    let zf = common::rel_err(
        ks.data.index_axis(Axis(1), 0).as_slice().expect("c"),
        flat(&truth),
    );
    assert!(
        zf > 0.6,
        "the masked image should miss ~60 % of the energy: {zf}"
    );
    let tv = tv_recon(
        &ks,
        None,
        &TvConfig {
            lambda: 0.01,
            iterations: 300,
            ..TvConfig::default()
        },
    )
    .expect("tv");
    let e_tv = common::rel_err(flat(&tv.images), flat(&truth));
    eprintln!("relative errors: masked {zf:.3}, TV {e_tv:.3}");
    assert!(e_tv < 0.3 * zf, "TV inpainting error {e_tv} vs masked {zf}");
    let l1 = l1_wavelet(
        &ks,
        None,
        &L1WaveletConfig {
            lambda: 0.02,
            iterations: 300,
            ..L1WaveletConfig::default()
        },
    )
    .expect("l1");
    let e_l1 = common::rel_err(flat(&l1.images), flat(&truth));
    eprintln!("relative error: l1-wavelet {e_l1:.3}");
    // The default (WaveletDef::Auto) inpaints with the orthonormal wavelet.
    let ortho = l1_wavelet(
        &ks,
        None,
        &L1WaveletConfig {
            lambda: 0.02,
            iterations: 300,
            def: WaveletDef::Orthonormal,
            ..L1WaveletConfig::default()
        },
    )
    .expect("l1");
    assert_eq!(flat(&ortho.images), flat(&l1.images));
    assert!(
        e_l1 < 0.5 * zf,
        "l1-wavelet inpainting error {e_l1} vs masked {zf}"
    );
    // Measured pixels stay close to the data (the data term is weighted against small λ).
    for ((i, j), m) in mask.indexed_iter() {
        if *m != 0.0 {
            let d = (tv.images[[0, i, j]] - img[[i, j]]).norm();
            assert!(d < 0.35, "measured pixel ({i},{j}) moved by {d}");
        }
    }
}

#[test]
fn unregularised_cg_and_zero_filled_return_the_masked_image() {
    // Without λ, CG from zero on MᴴM x = Mᴴ y gives the minimum-norm solution M y.
    let img = common::phantom(16, 12);
    let mask = random_pixel_mask(16, 12, 0.7, 1).expect("mask");
    let ks = image_scan(&img, &mask);
    let want: Vec<C32> = ks.data.iter().copied().collect();
    let cg = cg_sense(
        &ks,
        None,
        &CgSenseConfig {
            lambda: 0.0,
            ..CgSenseConfig::default()
        },
    )
    .expect("cg");
    assert!(common::rel_err(flat(&cg.images), &want) < 1e-5);
    let zf = zero_filled(&ks).expect("zero-filled");
    for (a, b) in zf.iter().zip(&want) {
        assert!((a - b.norm()).abs() < 1e-6);
    }
}

#[test]
fn inpainting_is_equivariant_to_the_data_scale() {
    // With the default (BART-like) scaling λ acts on data divided by the measured pixels' 90th
    // percentile, so scaling the data scales the reconstruction.
    let img = common::phantom(20, 20);
    let mask = random_pixel_mask(20, 20, 0.5, 9).expect("mask");
    let cfg = TvConfig {
        lambda: 0.03,
        iterations: 60,
        ..TvConfig::default()
    };
    let a = tv_recon(&image_scan(&img, &mask), None, &cfg).expect("tv");
    let big = img.mapv(|v| v * 1000.0);
    let b = tv_recon(&image_scan(&big, &mask), None, &cfg).expect("tv");
    let scaled = a.images.mapv(|v| v * 1000.0);
    assert!(common::rel_err(flat(&b.images), flat(&scaled)) < 1e-4);
}

#[test]
fn image_scaling_is_the_measured_90th_percentile() {
    // Measured magnitudes 1..=10 (the unmeasured pixel holds 1000 and must be ignored).
    let mut img = Array2::from_shape_fn((1, 11), |(_, j)| C32::new(0.0, j as f32 + 1.0));
    img[[0, 10]] = C32::new(1000.0, 0.0);
    let mut mask = Array2::ones((1, 11));
    mask[[0, 10]] = 0.0;
    assert_eq!(image_scaling(img.view(), mask.view()), 9.0);
    assert_eq!(
        image_scaling(img.view(), Array2::zeros((1, 11)).view()),
        1.0
    );
}

#[test]
fn domains_that_are_not_k_space_or_one_image_are_refused() {
    let img = common::phantom(8, 8);
    let mask = Array2::ones((8, 8));
    let ks = image_scan(&img, &mask);
    assert_eq!(
        data_domain(&ks).expect("image"),
        amri_core::MeasuredDomain::Image
    );
    let mut proj = ks.clone();
    proj.domain = Some(amri_core::MeasuredDomain::Projection);
    let err = tv_recon(&proj, None, &TvConfig::default()).expect_err("projections");
    assert!(matches!(err, ReconError::Unsupported(_)));
    assert!(err.to_string().contains("projection"), "{err}");
    let err = zero_filled(&proj).expect_err("projections");
    assert!(err.to_string().contains("projection"), "{err}");
    let mut two = KSpace::new(Array4::zeros((1, 2, 8, 8)));
    two.domain = Some(amri_core::MeasuredDomain::Image);
    let err = cg_sense(&two, None, &CgSenseConfig::default()).expect_err("two channels");
    assert!(err.to_string().contains("one channel"), "{err}");
    let maps = Array4::from_elem((1, 1, 8, 8), C32::new(1.0, 0.0));
    let err = tv_recon(&ks, Some(&maps), &TvConfig::default()).expect_err("maps");
    assert!(err.to_string().contains("coil maps"), "{err}");
}

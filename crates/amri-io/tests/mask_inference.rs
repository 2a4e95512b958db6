//! A k-space file without a mask gets the mask BART's `pics` infers from the non-zero samples
//! (fixture made by BART: tests/fixtures/bart_nomask/make_fixtures.sh), in every format.

// Test helpers unwrap: a failure here is a failed test, not a user-facing error.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use amri_core::{KSpace, C32};
use amri_io::{cfl, Scan, WriteOptions};
use ndarray::{Array3, Array4};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn kspace(p: &Path) -> KSpace {
    match amri_io::read(p).unwrap() {
        Scan::KSpace(k) => k,
        _ => panic!("{}: not k-space", p.display()),
    }
}

#[test]
fn cfl_without_mask_gets_the_pattern_bart_infers() {
    let p = fixture("bart_nomask/under.cfl");
    // The reader itself returns the file as it is ...
    let Scan::KSpace(raw) = cfl::read(&p).unwrap() else {
        panic!("not k-space")
    };
    assert!(raw.mask.is_none());
    // ... the format-free entry point infers the mask.
    let k = kspace(&p);
    assert_eq!(k.attributes["mask_source"], "inferred");
    let mask = k.mask.as_ref().expect("inferred mask");
    let (dims, pattern) = cfl::read_array(&fixture("bart_nomask/pattern.cfl")).unwrap();
    assert_eq!(&dims[..3], &[32, 32, 1]);
    let mut differ = 0;
    let mut measured = 0;
    for ((s, r, c), m) in mask.indexed_iter() {
        assert_eq!(s, 0);
        // BART [d0 = row, d1 = col], d0 fastest.
        let want = pattern[r + 32 * c].re;
        assert!(want == 0.0 || want == 1.0);
        differ += usize::from(*m != want);
        measured += usize::from(*m == 1.0);
    }
    assert_eq!(
        differ, 0,
        "mask differs from bart pattern at {differ} samples"
    );
    assert!(
        measured > 32 && measured < 32 * 32 / 2,
        "{measured} measured: the fixture is undersampled"
    );
}

#[test]
fn fully_measured_data_stay_fully_sampled_and_a_file_mask_is_kept() {
    let d = tempfile::tempdir().unwrap();
    let full = Array4::from_shape_fn((2, 3, 4, 5), |(s, c, r, k)| {
        C32::new(1.0 + (s + c + r + k) as f32, 0.5)
    });
    let p = d.path().join("full.npy");
    amri_io::write(
        &p,
        &Scan::KSpace(KSpace::new(full)),
        &WriteOptions::default(),
    )
    .unwrap();
    let k = kspace(&p);
    assert!(k.mask.is_none());
    assert_eq!(k.attributes["mask_source"], "none");

    // A file's own mask is never replaced, even where it disagrees with the zeros.
    let mut with = KSpace::new(Array4::zeros((1, 1, 4, 4)));
    with.mask = Some(Array3::ones((1, 4, 4)));
    let p = d.path().join("m.npz");
    amri_io::write(&p, &Scan::KSpace(with), &WriteOptions::default()).unwrap();
    let k = kspace(&p);
    assert_eq!(k.mask, Some(Array3::ones((1, 4, 4))));
    assert_eq!(k.attributes["mask_source"], "file");
}

#[test]
fn a_sample_counts_as_measured_when_any_coil_is_non_zero_per_slice() {
    let d = tempfile::tempdir().unwrap();
    let mut data = Array4::<C32>::zeros((2, 2, 3, 3));
    data[[0, 0, 1, 1]] = C32::new(1.0, 0.0); // coil 0 only
    data[[0, 1, 2, 0]] = C32::new(0.0, -2.0); // coil 1 only
    data[[1, 1, 0, 2]] = C32::new(3.0, 0.0); // slice 1
    let p = d.path().join("k.npz");
    amri_io::write(
        &p,
        &Scan::KSpace(KSpace::new(data)),
        &WriteOptions::default(),
    )
    .unwrap();
    let k = kspace(&p);
    let mut want = Array3::<f32>::zeros((2, 3, 3));
    want[[0, 1, 1]] = 1.0;
    want[[0, 2, 0]] = 1.0;
    want[[1, 0, 2]] = 1.0;
    assert_eq!(k.mask, Some(want));
    assert_eq!(k.attributes["mask_source"], "inferred");
    // The zeros hold an inferred mask, so the data may still go to a bare .npy.
    let q = d.path().join("k.npy");
    amri_io::write(&q, &Scan::KSpace(k.clone()), &WriteOptions::default()).unwrap();
    assert_eq!(kspace(&q).mask, k.mask);
}

#[test]
fn hdf5_without_mask_infers_it_and_image_domain_data_keep_every_pixel() {
    // fastMRI-style fixture whose sample (slice 0, row 0, col 0) is exactly zero.
    let k = kspace(&fixture("hdf5/singlecoil_gzip.h5"));
    let m = k.mask.as_ref().expect("one zero sample");
    assert_eq!(m[[0, 0, 0]], 0.0);
    assert_eq!(m.iter().filter(|v| **v == 0.0).count(), 1);

    // A corrupted image with dark (zero) pixels and no mask: zeros are measured values.
    let d = tempfile::tempdir().unwrap();
    let mut img = KSpace::new(Array4::zeros((1, 1, 4, 4)));
    img.data[[0, 0, 1, 2]] = C32::new(1.0, 0.0);
    img.domain = Some(amri_core::MeasuredDomain::Image);
    let p = d.path().join("img.npz");
    amri_io::write(&p, &Scan::KSpace(img), &WriteOptions::default()).unwrap();
    let k = kspace(&p);
    assert!(k.mask.is_none());
    assert_eq!(k.attributes["mask_source"], "none");
}

#[test]
fn noise_covariance_reads_bart_s_output_and_npy_and_refuses_other_shapes() {
    // `bart whiten`'s covariance output [1, 1, 1, C, C] (fixture of amri-ops).
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../amri-ops/tests/fixtures/bartconv/wcovar.cfl");
    let c = amri_io::read_noise_covariance(&p).unwrap();
    let (_, raw) = cfl::read_array(&p).unwrap();
    assert_eq!(c.dim(), (4, 4));
    for ((i, j), v) in c.indexed_iter() {
        assert_eq!(*v, raw[i + 4 * j]);
        assert!(
            (v - c[[j, i]].conj()).norm() <= 1e-6 * v.norm().max(1.0),
            "Hermitian"
        );
    }
    assert!(c.diag().iter().all(|v| v.re > 0.0));
    // A [coil, coil] .npy, C order; a real one is read as complex.
    let d = tempfile::tempdir().unwrap();
    let m = ndarray::Array2::from_shape_fn((3, 3), |(i, j)| C32::new(i as f32, j as f32));
    let q = d.path().join("c.npy");
    amri_io::npy::write_array(&q, &amri_io::npy::NpyArray::C64(m.clone().into_dyn())).unwrap();
    assert_eq!(amri_io::read_noise_covariance(&q).unwrap(), m);
    let r = d.path().join("r.npy");
    let real = ndarray::Array2::from_shape_fn((2, 2), |(i, j)| (i + 2 * j) as f32);
    amri_io::npy::write_array(&r, &amri_io::npy::NpyArray::F32(real.into_dyn())).unwrap();
    assert_eq!(
        amri_io::read_noise_covariance(&r).unwrap()[[0, 1]],
        C32::new(2.0, 0.0)
    );
    let bad = d.path().join("b.npy");
    amri_io::npy::write_array(
        &bad,
        &amri_io::npy::NpyArray::C64(ndarray::Array3::<C32>::zeros((2, 2, 2)).into_dyn()),
    )
    .unwrap();
    let e = amri_io::read_noise_covariance(&bad)
        .unwrap_err()
        .to_string();
    assert!(e.contains("b.npy") && e.contains("2-D"), "{e}");
    let e = amri_io::read_noise_covariance(&fixture("bart_nomask/under.cfl"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("under.cfl") && e.contains("square"), "{e}");
}

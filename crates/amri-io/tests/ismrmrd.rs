//! ISMRMRD: files made by Debian's `ismrmrd_generate_cartesian_shepp_logan` (truth: the coil
//! images it stores beside the data, and the Python `ismrmrd` package's reading of every
//! acquisition), a file rewritten by the Python package with reversed readouts, a file written by
//! amri and read by the Python package, round trips, and malformed input. The fixtures and how
//! they were made: tests/fixtures/ismrmrd/make_ismrmrd.py.

// Test helpers unwrap: a failure here is a failed test, not a user-facing error.
#![allow(clippy::unwrap_used)]
// Index loops mirror the [slice, coil, row, col] layout the assertions talk about.
#![allow(clippy::needless_range_loop)]

use std::path::{Path, PathBuf};

use amri_core::fft::{fft2c, ifft2c};
use amri_core::{Affine, KSpace, C32};
use amri_io::npy::{read_array, NpyArray};
use amri_io::{ismrmrd, Format, IoError, Scan};
use ndarray::{s, Array2, Array3, Array4};
use serde_json::Value;

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/ismrmrd")
}

fn expected() -> Value {
    serde_json::from_str(&std::fs::read_to_string(dir().join("expected.json")).unwrap()).unwrap()
}

fn read(name: &str) -> KSpace {
    match amri_io::read(&dir().join(name)).unwrap_or_else(|e| panic!("{name}: {e}")) {
        Scan::KSpace(k) => k,
        other => panic!("{name}: not k-space: {other:?}"),
    }
}

/// The generator's coil images `[1, coil, y, x]` (x oversampled) as amri images
/// `[coil, row = x, col = y]`, readout oversampling removed by a centre crop to `rows`.
fn coil_images(name: &str, rows: usize) -> Array3<C32> {
    let NpyArray::C64(a) = read_array(&dir().join(name)).unwrap() else {
        panic!("{name}: not complex64");
    };
    let a = a.into_dimensionality::<ndarray::Ix4>().unwrap();
    let (coils, ny, nx) = (a.shape()[1], a.shape()[2], a.shape()[3]);
    let start = nx / 2 - rows / 2;
    Array3::from_shape_fn((coils, rows, ny), |(c, x, y)| a[[0, c, y, start + x]])
}

fn max_abs(a: impl Iterator<Item = C32>) -> f32 {
    a.map(|v| v.norm()).fold(0.0, f32::max)
}

fn usizes(v: &Value) -> Vec<usize> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as usize)
        .collect()
}

fn has_flag(acq: &Value, bit: u64) -> bool {
    acq["flags"]
        .as_array()
        .unwrap()
        .iter()
        .any(|f| f.as_u64() == Some(bit))
}

#[test]
fn generator_files_are_detected_as_ismrmrd_and_fastmri_files_are_not() {
    for name in ["full.h5", "accel.h5", "reverse.h5"] {
        assert_eq!(Format::detect(&dir().join(name)).unwrap(), Format::Ismrmrd);
    }
    let fastmri = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hdf5/multicoil.h5");
    assert_eq!(Format::detect(&fastmri).unwrap(), Format::Hdf5);
    assert!(!ismrmrd::is_ismrmrd(&fastmri));
}

#[test]
fn full_file_is_fft2c_of_the_generator_coil_images_after_oversampling_removal() {
    let e = &expected()["full.h5"];
    let k = read("full.h5");
    let enc = usizes(&e["header"]["encoded_matrix"]);
    let rec = usizes(&e["header"]["recon_matrix"]);
    assert_eq!(enc, [32, 16, 1]);
    // rows = readout at the recon matrix x, cols = phase encode (encoded y).
    assert_eq!(k.shape4(), [1, 4, rec[0], enc[1]]);
    assert_eq!(k.attributes["readout_oversampling_removed"], "32 -> 16");
    let mask = k.mask.as_ref().unwrap();
    assert!(mask.iter().all(|v| *v == 1.0), "fully sampled");
    assert!(k.noise.is_none());
    let img = ifft2c(&k.data.index_axis(ndarray::Axis(0), 0));
    let want = coil_images("full_coil_images.npy", rec[0]);
    let scale = max_abs(want.iter().copied());
    let err = max_abs(img.iter().zip(want.iter()).map(|(a, b)| a - b));
    assert!(err < 1e-4 * scale, "max error {err} vs image max {scale}");
    // FOV -> voxel size: recon FOV x / recon x along rows, encoded FOV y / y along columns.
    let fov_r = e["header"]["recon_fov_mm"][0].as_f64().unwrap();
    let fov_c = e["header"]["encoded_fov_mm"][1].as_f64().unwrap();
    let fov_z = e["header"]["encoded_fov_mm"][2].as_f64().unwrap();
    let vs = k.affine.voxel_size();
    assert!((vs[0] - fov_c / enc[1] as f64).abs() < 1e-9, "{vs:?}");
    assert!((vs[1] - fov_r / rec[0] as f64).abs() < 1e-9, "{vs:?}");
    assert!((vs[2] - fov_z).abs() < 1e-9, "{vs:?}");
    assert_eq!(k.attributes["ismrmrd_trajectory"], "cartesian");
    assert_eq!(k.attributes["ismrmrd_encoded_matrix"], "32x16x1");
}

#[test]
fn accelerated_file_mask_acs_repetitions_and_noise_match_the_acquisitions() {
    let e = &expected()["accel.h5"];
    let k = read("accel.h5");
    let acqs = e["acquisitions"].as_array().unwrap();
    let imaging: Vec<&Value> = acqs.iter().filter(|a| !has_flag(a, 19)).collect();
    let reps: std::collections::BTreeSet<usize> = imaging
        .iter()
        .map(|a| a["repetition"].as_u64().unwrap() as usize)
        .collect();
    assert!(reps.len() > 1, "the fixture has repetitions");
    let [ns, nc, nr, ncol] = k.shape4();
    assert_eq!((ns, nc), (reps.len(), 4));
    // Mask: exactly the acquired (repetition, ky) lines, every row of them.
    let mut want = Array3::<f32>::zeros((ns, nr, ncol));
    let mut acs = (usize::MAX, 0);
    for a in &imaging {
        let r = reps
            .iter()
            .position(|v| *v == a["repetition"].as_u64().unwrap() as usize)
            .unwrap();
        let ky = a["ky"].as_u64().unwrap() as usize;
        want.slice_mut(s![r, .., ky]).fill(1.0);
        if has_flag(a, 20) || has_flag(a, 21) {
            acs = (acs.0.min(ky), acs.1.max(ky));
        }
    }
    assert_eq!(k.mask.as_ref().unwrap(), &want);
    assert!(k.sampled_fraction() < 0.75, "{}", k.sampled_fraction());
    assert_eq!(k.attributes["acs_cols"], format!("{}-{}", acs.0, acs.1));
    assert!(k.attributes["ismrmrd_slice_order"].contains("repetitions 2"));
    // Noise samples [sample, coil], exactly as the Python package reads them.
    let noise = k.noise.as_ref().unwrap();
    let en = e["noise"].as_array().unwrap();
    assert_eq!(noise.shape(), [en.len(), nc]);
    for (i, row) in en.iter().enumerate() {
        for (c, v) in row.as_array().unwrap().iter().enumerate() {
            let got = noise[[i, c]];
            assert_eq!(got.re, v[0].as_f64().unwrap() as f32);
            assert_eq!(got.im, v[1].as_f64().unwrap() as f32);
        }
    }
    // Measured lines = fft2c of the cropped coil images plus the generator's noise: the residual
    // has the noise scan's standard deviation.
    let truth = fft2c(&coil_images("accel_coil_images.npy", nr));
    let mut res = 0.0f64;
    let mut n = 0usize;
    for sl in 0..ns {
        for col in 0..ncol {
            if want[[sl, 0, col]] == 0.0 {
                assert!(k
                    .data
                    .slice(s![sl, .., .., col])
                    .iter()
                    .all(|v| v.norm() == 0.0));
                continue;
            }
            for c in 0..nc {
                for r in 0..nr {
                    res += (k.data[[sl, c, r, col]] - truth[[c, r, col]]).norm_sqr() as f64;
                    n += 1;
                }
            }
        }
    }
    let res_std = (res / n as f64).sqrt();
    let noise_std =
        (noise.iter().map(|v| v.norm_sqr() as f64).sum::<f64>() / noise.len() as f64).sqrt();
    let ratio = res_std / noise_std;
    assert!(
        (0.6..1.6).contains(&ratio),
        "residual std {res_std} vs noise std {noise_std}"
    );
    let signal = max_abs(truth.iter().copied()) as f64;
    assert!(
        res_std < 0.1 * signal,
        "residual {res_std} vs signal {signal}"
    );
}

#[test]
fn reverse_readouts_written_by_the_python_package_read_as_the_forward_file() {
    let e = &expected()["reverse.h5"];
    let reversed = e["acquisitions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| has_flag(a, 22))
        .count();
    assert!(reversed > 0);
    let fwd = read("full.h5");
    let rev = read("reverse.h5");
    assert_eq!(fwd.shape4(), rev.shape4());
    let err = max_abs(fwd.data.iter().zip(rev.data.iter()).map(|(a, b)| a - b));
    let scale = max_abs(fwd.data.iter().copied());
    assert!(err < 1e-5 * scale, "{err} vs {scale}");
}

#[test]
fn counters_map_onto_slices_in_the_documented_order_and_averages_are_meaned() {
    // counters.h5 (written by the Python package): lines ky 6..=9 of full.h5's coil 0 for
    // 2 averages x 2 slices x 2 contrasts, scaled by (1 + 2*contrast + slice) * (1.5 | 0.5).
    let e = &expected()["counters.h5"];
    let acqs = e["acquisitions"].as_array().unwrap();
    assert_eq!(acqs.len(), 32);
    assert!(acqs.iter().any(|a| a["average"] == 1 && a["contrast"] == 1));
    let full = read("full.h5");
    let k = read("counters.h5");
    let [ns, nc, nr, ncol] = k.shape4();
    assert_eq!((ns, nc, nr, ncol), (4, 1, 16, 16));
    assert!(k.attributes["ismrmrd_slice_order"].contains("contrasts 2, slices 2"));
    assert!(k.attributes["ismrmrd_averages_combined"].contains("2"));
    let mask = k.mask.as_ref().unwrap();
    for i in 0..ns {
        // amri slice = contrast * 2 + slice, and the average is the mean: factor 1 + i.
        let factor = (1 + i) as f32;
        for col in 0..ncol {
            let measured = (6..=9).contains(&col);
            assert_eq!(mask[[i, 0, col]], if measured { 1.0 } else { 0.0 });
            for r in 0..nr {
                let want = if measured {
                    full.data[[0, 0, r, col]] * factor
                } else {
                    C32::new(0.0, 0.0)
                };
                let got = k.data[[i, 0, r, col]];
                assert!(
                    (got - want).norm() <= 1e-5 * (1.0 + want.norm()),
                    "slice {i} ({r}, {col}): {got} vs {want}"
                );
            }
        }
    }
}

/// A k-space whose every value shows its index, with a column mask per slice, noise and
/// geometry.
fn test_kspace() -> KSpace {
    let (ns, nc, nr, ncol) = (2, 2, 8, 6);
    let data = Array4::from_shape_fn((ns, nc, nr, ncol), |(s, c, r, k)| {
        C32::new(
            (1000 * s + 100 * c + 10 * r + k) as f32,
            -((s + c + r + k) as f32) / 7.0,
        )
    });
    let mut mask = Array3::<f32>::zeros((ns, nr, ncol));
    for (s, cols) in [(0, vec![0, 2, 3, 5]), (1, vec![1, 3, 4])] {
        for c in cols {
            mask.slice_mut(s![s, .., c]).fill(1.0);
        }
    }
    let mut k = KSpace::new(
        &data
            * &mask
                .clone()
                .insert_axis(ndarray::Axis(1))
                .mapv(|m| C32::new(m, 0.0)),
    );
    k.mask = Some(mask);
    k.noise = Some(Array2::from_shape_fn((11, nc), |(i, c)| {
        C32::new(i as f32 * 0.5 - c as f32, (i * c) as f32 * 0.25)
    }));
    k.affine = Affine::from_spacing([1.5, 2.0, 3.0]);
    k.attributes.insert("acs_cols".into(), "2-3".into());
    k.attributes
        .insert("protocol".into(), "brain <r4> & \"quoted\"".into());
    k.reference = Some(Array3::from_shape_fn((ns, nr, ncol), |(s, r, c)| {
        (s * 100 + r * 10 + c) as f32 / 3.0
    }));
    k.sensitivities = Some(Array4::from_shape_fn((ns, nc, nr, ncol), |(s, c, r, k)| {
        C32::new((s + c) as f32 * 0.5, (r as f32 - k as f32) * 0.125)
    }));
    k
}

#[test]
fn amri_written_file_reads_back_identically() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("rt.h5");
    let k = test_kspace();
    amri_io::write(&p, &Scan::KSpace(k.clone()), &Default::default()).unwrap();
    assert_eq!(Format::detect(&p).unwrap(), Format::Ismrmrd);
    let back = match amri_io::read(&p).unwrap() {
        Scan::KSpace(b) => b,
        other => panic!("{other:?}"),
    };
    assert_eq!(back.shape4(), k.shape4());
    assert_eq!(back.data, k.data);
    assert_eq!(back.mask, k.mask);
    assert_eq!(back.noise, k.noise);
    assert!(
        back.affine.max_abs_diff(&k.affine) < 1e-5,
        "{:?}",
        back.affine
    );
    assert_eq!(back.attributes["acs_cols"], "2-3");
    // amri's extras: attributes as XML user parameters, reference and maps as extra datasets.
    assert_eq!(back.attributes["protocol"], k.attributes["protocol"]);
    assert_eq!(back.reference, k.reference);
    assert_eq!(back.sensitivities, k.sensitivities);
    assert!(!back.attributes.contains_key("readout_oversampling_removed"));
    // No partial file left behind.
    let names: Vec<_> = std::fs::read_dir(d.path()).unwrap().collect();
    assert_eq!(names.len(), 1);
}

#[test]
fn oblique_geometry_round_trips_through_the_direction_and_position_fields() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("oblique.h5");
    let mut k = test_kspace();
    let (c, s) = (0.8f64, 0.6f64);
    k.affine = Affine::from_directions(
        [[c, s, 0.0], [-s, c, 0.0], [0.0, 0.0, 1.0]],
        [1.5, 2.0, 3.0],
        [-40.0, 12.5, 7.0],
    );
    ismrmrd::write(&p, &k).unwrap();
    let back = match amri_io::read(&p).unwrap() {
        Scan::KSpace(b) => b,
        other => panic!("{other:?}"),
    };
    assert!(
        back.affine.max_abs_diff(&k.affine) < 1e-4,
        "{:?} vs {:?}",
        back.affine,
        k.affine
    );
}

#[test]
fn python_ismrmrd_reads_the_amri_written_file() {
    let p = dir().join("amri_written.h5");
    let k = test_kspace();
    let mut now = tempfile::NamedTempFile::new_in(dir()).unwrap();
    ismrmrd::write(now.path(), &k).unwrap();
    if std::env::var_os("AMRI_REGEN_FIXTURES").is_some() {
        std::fs::copy(now.path(), &p).unwrap();
    }
    let _ = &mut now;
    // The committed file is what amri writes today, so the Python reading below is of it.
    assert_eq!(
        std::fs::read(now.path()).unwrap(),
        std::fs::read(&p).unwrap(),
        "amri's ISMRMRD output changed: regenerate amri_written.h5 and rerun make_ismrmrd.py"
    );
    let e: Value =
        serde_json::from_str(&std::fs::read_to_string(dir().join("amri_written.json")).unwrap())
            .unwrap();
    let [ns, nc, nr, ncol] = k.shape4();
    assert_eq!(usizes(&e["header"]["encoded_matrix"]), [nr, ncol, 1]);
    assert_eq!(usizes(&e["header"]["recon_matrix"]), [nr, ncol, 1]);
    assert_eq!(usizes(&e["header"]["ky_limits"]), [0, ncol - 1, ncol / 2]);
    assert_eq!(e["header"]["trajectory"], "cartesian");
    assert_eq!(e["header"]["receiver_channels"].as_u64(), Some(nc as u64));
    let fov: Vec<f64> = e["header"]["encoded_fov_mm"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    assert_eq!(fov, [nr as f64 * 2.0, ncol as f64 * 1.5, 3.0]);
    let acqs = e["acquisitions"].as_array().unwrap();
    // Noise readouts first (11 samples in chunks of `nr`), then the measured lines.
    let noise: Vec<&Value> = acqs.iter().filter(|a| has_flag(a, 19)).collect();
    assert_eq!(noise.len(), 2);
    let mut got_noise = Vec::new();
    for a in &noise {
        let d = a["data"].as_array().unwrap();
        let n = a["samples"].as_u64().unwrap() as usize;
        for i in 0..n {
            for c in 0..nc {
                let v = &d[c].as_array().unwrap()[i];
                got_noise.push(C32::new(
                    v[0].as_f64().unwrap() as f32,
                    v[1].as_f64().unwrap() as f32,
                ));
            }
        }
    }
    assert_eq!(
        got_noise,
        k.noise
            .as_ref()
            .unwrap()
            .iter()
            .copied()
            .collect::<Vec<_>>()
    );
    let mask = k.mask.as_ref().unwrap();
    let lines: Vec<&Value> = acqs.iter().filter(|a| !has_flag(a, 19)).collect();
    assert_eq!(lines.len(), mask.iter().filter(|v| **v != 0.0).count() / nr);
    let mut seen = Array3::<f32>::zeros((ns, nr, ncol));
    for a in &lines {
        let (s, col) = (
            a["slice"].as_u64().unwrap() as usize,
            a["ky"].as_u64().unwrap() as usize,
        );
        seen.slice_mut(s![s, .., col]).fill(1.0);
        assert_eq!(a["samples"].as_u64(), Some(nr as u64));
        assert_eq!(a["channels"].as_u64(), Some(nc as u64));
        assert_eq!(a["center_sample"].as_u64(), Some((nr / 2) as u64));
        assert_eq!(
            has_flag(a, 21),
            (2..=3).contains(&col),
            "ACS flag of column {col}"
        );
        let d = a["data"].as_array().unwrap();
        for c in 0..nc {
            let ch = d[c].as_array().unwrap();
            for r in 0..nr {
                let want = k.data[[s, c, r, col]];
                assert_eq!(ch[r][0].as_f64().unwrap() as f32, want.re);
                assert_eq!(ch[r][1].as_f64().unwrap() as f32, want.im);
            }
        }
        // Geometry: rows run along +y (A) in RAS+, which is -y in ISMRMRD's LPS read_dir.
        let rd: Vec<f64> = a["read_dir"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        assert_eq!(rd, [0.0, -1.0, 0.0]);
    }
    assert_eq!(&seen, mask);
    for (i, a) in lines.iter().enumerate() {
        let s = a["slice"].as_u64().unwrap() as usize;
        let first = i == 0 || lines[i - 1]["slice"].as_u64().unwrap() as usize != s;
        let last = i + 1 == lines.len() || lines[i + 1]["slice"].as_u64().unwrap() as usize != s;
        assert_eq!(has_flag(a, 7), first);
        assert_eq!(has_flag(a, 8), last);
        assert_eq!(has_flag(a, 25), i + 1 == lines.len());
    }
}

#[test]
fn cpp_ismrmrd_recon_of_the_amri_written_file_is_amri_ifft2c() {
    // ismrmrd_recon_cartesian_2d (C++ libismrmrd) fills one k-space buffer by
    // kspace_encode_step_1, each readout overwriting earlier ones (it ignores the slice counter),
    // inverse-FFTs without normalisation and stores the root sum of squares as [y][x].
    let e: Value =
        serde_json::from_str(&std::fs::read_to_string(dir().join("amri_written.json")).unwrap())
            .unwrap();
    let k = test_kspace();
    let [ns, nc, nr, ncol] = k.shape4();
    let mask = k.mask.as_ref().unwrap();
    let mut buf = Array3::<C32>::zeros((nc, nr, ncol));
    for s in 0..ns {
        for col in 0..ncol {
            if mask[[s, 0, col]] != 0.0 {
                buf.slice_mut(s![.., .., col])
                    .assign(&k.data.slice(s![s, .., .., col]));
            }
        }
    }
    let img = ifft2c(&buf);
    let rss = Array2::from_shape_fn((nr, ncol), |(r, c)| {
        (0..nc)
            .map(|i| img[[i, r, c]].norm_sqr())
            .sum::<f32>()
            .sqrt() as f64
    });
    let cpp: Vec<Vec<f64>> = e["cpp_recon"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| {
            row.as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap())
                .collect()
        })
        .collect();
    assert_eq!((cpp.len(), cpp[0].len()), (ncol, nr), "[y][x] = [col][row]");
    let (mut num, mut den) = (0.0, 0.0);
    for r in 0..nr {
        for c in 0..ncol {
            num += cpp[c][r] * rss[[r, c]];
            den += rss[[r, c]] * rss[[r, c]];
        }
    }
    let scale = num / den;
    let peak = cpp.iter().flatten().fold(0.0f64, |a, b| a.max(*b));
    for r in 0..nr {
        for c in 0..ncol {
            let d = (cpp[c][r] - scale * rss[[r, c]]).abs();
            assert!(
                d < 1e-4 * peak,
                "({r}, {c}): {} vs {}",
                cpp[c][r],
                scale * rss[[r, c]]
            );
        }
    }
    // FFTW's unnormalised inverse: the scale is sqrt(rows * cols).
    assert!(
        (scale - ((nr * ncol) as f64).sqrt()).abs() < 1e-3 * scale,
        "{scale}"
    );
}

#[test]
fn writer_refuses_what_ismrmrd_cannot_hold() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("x.h5");
    let mut k = test_kspace();
    k.mask.as_mut().unwrap()[[0, 3, 1]] = 1.0;
    let e = ismrmrd::write(&p, &k).unwrap_err().to_string();
    assert!(e.contains("partly measured") && e.contains("x.h5"), "{e}");
    let mut k = test_kspace();
    k.domain = Some(amri_core::MeasuredDomain::Image);
    let e = ismrmrd::write(&p, &k).unwrap_err().to_string();
    assert!(e.contains("ISMRMRD holds k-space"), "{e}");
    let e = amri_io::write(
        &p,
        &Scan::Image(amri_core::Volume::new(
            Array4::zeros((1, 1, 2, 2)),
            Affine::IDENTITY,
        )),
        &Default::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("k-space"), "{e}");
    assert!(!p.exists());
}

/// Replaces the first occurrence of `from` by `to` (same length) in the file's bytes.
fn patched(src: &Path, dst: &Path, from: &[u8], to: &[u8]) {
    assert_eq!(from.len(), to.len());
    let mut b = std::fs::read(src).unwrap();
    let i = b
        .windows(from.len())
        .position(|w| w == from)
        .unwrap_or_else(|| panic!("{} not found", String::from_utf8_lossy(from)));
    b[i..i + to.len()].copy_from_slice(to);
    std::fs::write(dst, b).unwrap();
}

#[test]
fn non_cartesian_and_3d_headers_are_refused_naming_the_file() {
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("src.h5");
    ismrmrd::write(&src, &test_kspace()).unwrap();
    let radial = d.path().join("radial.h5");
    patched(&src, &radial, b">cartesian<", b">radial   <");
    let e = amri_io::read(&radial).unwrap_err();
    assert!(matches!(e, IoError::Unsupported { .. }), "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains("radial.h5") && msg.contains("'radial'") && msg.contains("Cartesian"),
        "{msg}"
    );
    let three_d = d.path().join("3d.h5");
    patched(&src, &three_d, b"<z>1</z>", b"<z>8</z>");
    let msg = amri_io::read(&three_d).unwrap_err().to_string();
    assert!(msg.contains("3d.h5") && msg.contains("3-D"), "{msg}");
    let huge = d.path().join("huge.h5");
    patched(&src, &huge, b"<y>6</y>", b"<y>0</y>");
    let msg = amri_io::read(&huge).unwrap_err().to_string();
    assert!(
        msg.contains("huge.h5") && msg.contains("matrixSize/y"),
        "{msg}"
    );
}

#[test]
fn a_header_claiming_a_huge_matrix_is_refused_before_allocating() {
    // huge_matrix.h5 (written by the Python package): 65536 x 65536 matrices, one readout.
    let e = amri_io::read(&dir().join("huge_matrix.h5"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("huge_matrix.h5") && e.contains("far larger than the file"),
        "{e}"
    );
}

#[test]
fn truncated_and_corrupted_files_give_errors_not_panics() {
    let d = tempfile::tempdir().unwrap();
    let full = std::fs::read(dir().join("accel.h5")).unwrap();
    let p = d.path().join("bad.h5");
    for cut in [100, 2000, full.len() / 3, full.len() / 2, full.len() - 100] {
        std::fs::write(&p, &full[..cut]).unwrap();
        if let Err(e) = amri_io::read(&p) {
            assert!(e.to_string().contains("bad.h5"), "{e}");
        }
    }
    // Flipped bytes all over the file: any outcome but a panic.
    for step in [97usize, 389, 1201] {
        let mut b = full.clone();
        for i in (0..b.len()).step_by(step) {
            b[i] ^= 0x5a;
        }
        std::fs::write(&p, &b).unwrap();
        let _ = amri_io::read(&p);
    }
}

#[test]
fn siemens_twix_files_are_refused_with_conversion_advice() {
    let d = tempfile::tempdir().unwrap();
    // VD/VE: MrParcRaidFileHeader (hdSize 0, one measurement).
    let vd = d.path().join("meas_vd.dat");
    let mut b = vec![0u8; 10240];
    b[4] = 1;
    std::fs::write(&vd, &b).unwrap();
    // VB: header length, buffer count, then "Config".
    let vb = d.path().join("meas_vb.dat");
    let mut b = vec![0u8; 4096];
    b[0..4].copy_from_slice(&2048u32.to_le_bytes());
    b[4] = 4;
    b[8..15].copy_from_slice(b"Config\0");
    std::fs::write(&vb, &b).unwrap();
    for p in [&vd, &vb] {
        assert_eq!(Format::detect(p).unwrap(), Format::Twix);
        let e = amri_io::read(p).unwrap_err();
        assert!(matches!(e, IoError::Unsupported { .. }));
        let m = e.to_string();
        assert!(
            m.contains("siemens_to_ismrmrd") && m.contains("twix"),
            "{m}"
        );
    }
    // Any other .dat is still an unknown format.
    let other = d.path().join("other.dat");
    std::fs::write(&other, b"plain text, not raw data").unwrap();
    assert!(matches!(
        Format::detect(&other),
        Err(IoError::UnknownFormat { .. })
    ));
}

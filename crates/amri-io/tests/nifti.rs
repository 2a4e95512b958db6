//! NIfTI: fixtures written by nibabel (expected values are nibabel's own reading of them), a file
//! written by amri and read by nibabel, round trips, and malformed input.

// Test helpers unwrap: a failure here is a failed test, not a user-facing error.
#![allow(clippy::unwrap_used)]

use std::io::Read;
use std::path::{Path, PathBuf};

use amri_core::{Affine, KSpace, Metadata, Volume, C32};
use amri_io::{nifti, IoError, Scan};
use ndarray::Array4;
use serde_json::Value;

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/nifti")
}

fn json(name: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(dir().join(name)).unwrap()).unwrap()
}

fn affine_of(v: &Value) -> Affine {
    let mut m = [[0.0; 4]; 4];
    for (r, row) in v.as_array().unwrap().iter().enumerate() {
        for (c, x) in row.as_array().unwrap().iter().enumerate() {
            m[r][c] = x.as_f64().unwrap();
        }
    }
    Affine(m)
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

fn shape4(v: &Value) -> [usize; 4] {
    let s: Vec<usize> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as usize)
        .collect();
    [s[0], s[1], s[2], s[3]]
}

#[test]
fn every_nibabel_fixture_matches_nibabels_reading() {
    let exp = json("expected.json");
    let exp = exp.as_object().unwrap();
    assert!(exp.len() >= 9);
    for (name, e) in exp {
        let scan = nifti::read(&dir().join(name)).unwrap_or_else(|err| panic!("{name}: {err}"));
        let want_aff = affine_of(&e["affine"]);
        let shape = shape4(&e["shape_tzyx"]);
        let descrip = e["descrip"].as_str().unwrap();
        match scan {
            Scan::Image(v) => {
                assert_eq!(v.shape4(), shape, "{name}");
                let want = floats(&e["data"]);
                for (i, (got, w)) in v.data.iter().zip(&want).enumerate() {
                    assert!(
                        (*got as f64 - w).abs() <= 1e-5 * w.abs().max(1.0),
                        "{name}[{i}]: {got} vs nibabel {w}"
                    );
                }
                assert!(
                    v.affine.max_abs_diff(&want_aff) < 1e-5,
                    "{name}: {:?}",
                    v.affine
                );
                assert_eq!(v.meta.description, descrip, "{name}");
            }
            Scan::ComplexImage(v) => {
                assert_eq!(v.shape4(), shape, "{name}");
                let (re, im) = (floats(&e["re"]), floats(&e["im"]));
                for (i, got) in v.data.iter().enumerate() {
                    assert_eq!(
                        (got.re as f64, got.im as f64),
                        (re[i], im[i]),
                        "{name}[{i}]"
                    );
                }
                assert!(v.affine.max_abs_diff(&want_aff) < 1e-5, "{name}");
                assert_eq!(v.meta.source_datatype, "complex64");
            }
            Scan::KSpace(_) => panic!("{name}: NIfTI read as k-space"),
        }
    }
}

fn image(name: &str) -> Volume<f32> {
    match nifti::read(&dir().join(name)).unwrap() {
        Scan::Image(v) => v,
        _ => panic!("{name} is not a real image"),
    }
}

#[test]
fn header_details_scaling_versions_and_byte_order() {
    // int16 with slope 2.5, inter -3: voxel (x=4, y=3, z=2) stores 432 -> 1077.
    let v = image("int16_slope.nii.gz");
    assert_eq!(v.data[[0, 2, 3, 4]], 432.0 * 2.5 - 3.0);
    assert_eq!(v.meta.source_datatype, "int16");
    assert_eq!(v.meta.source_format, "NIfTI-1");
    assert_eq!(v.voxel_size(), [1.5, 2.0, 3.0]);
    // Big-endian int16 gives the same numbers as little-endian.
    let be = image("int16_be.nii");
    assert_eq!(be.data[[0, 2, 3, 4]], 432.0);
    assert_eq!(be.meta.attributes["nifti.byte_order"], "big-endian");
    // NIfTI-2, int32, oblique sform.
    let n2 = image("nifti2_int32.nii");
    assert_eq!(n2.meta.source_format, "NIfTI-2");
    assert_eq!(n2.data[[0, 1, 2, 3]], 321.0 - 30.0);
    assert_eq!(n2.meta.description, "NIfTI-2 int32");
    // 4-D: frames are the first axis, TR kept.
    let v4 = image("float32_4d.nii.gz");
    assert_eq!(v4.shape4(), [3, 2, 3, 4]);
    assert_eq!(v4.data[[2, 1, 2, 3]], 3212.0);
    assert_eq!(v4.meta.attributes["nifti.pixdim_t"], "2");
    assert_eq!(v4.meta.attributes["nifti.time_units"], "s");
    // qform only: the quaternion gives nibabel's affine, oblique, 0.9 x 1.1 x 2.5 mm.
    let q = image("qform_only.nii.gz");
    let vs = q.voxel_size();
    assert!((vs[0] - 0.9).abs() < 1e-6 && (vs[1] - 1.1).abs() < 1e-6 && (vs[2] - 2.5).abs() < 1e-6);
    // RGB24 is read as Rec. 601 luminance.
    let rgb = image("rgb24.nii");
    assert_eq!(rgb.meta.source_datatype, "RGB24");
    let want = 0.299 * 211.0 + 0.587 * 200.0 + 0.114 * (11.0 * 20.0);
    assert!((rgb.data[[0, 1, 1, 2]] as f64 - want).abs() < 1e-4);
}

fn oblique() -> Affine {
    let t = 20f64.to_radians();
    Affine::from_directions(
        [
            [t.cos(), t.sin(), 0.0],
            [-t.sin(), t.cos(), 0.0],
            [0.0, 0.0, -1.0],
        ],
        [0.75, 0.8, 3.0],
        [-40.5, 12.25, 60.0],
    )
}

/// The volume amri writes into `amri_written.nii.gz` (and compares against nibabel's reading).
fn test_volume() -> Volume<f32> {
    let data = Array4::from_shape_fn((1, 3, 4, 5), |(_, z, y, x)| {
        (x + 10 * y + 100 * z) as f32 + 0.25
    });
    let mut v = Volume::new(data, oblique());
    v.meta.description = "amri test volume".into();
    v
}

#[test]
fn nibabel_reads_amri_output_identically() {
    let p = dir().join("amri_written.nii.gz");
    if std::env::var_os("AMRI_REGEN_FIXTURES").is_some() {
        nifti::write(&p, &Scan::Image(test_volume())).unwrap();
    }
    let e = json("amri_written.json");
    let v = test_volume();
    assert_eq!(shape4(&e["shape_tzyx"]), v.shape4());
    let data = floats(&e["data"]);
    assert_eq!(data, v.data.iter().map(|x| *x as f64).collect::<Vec<_>>());
    // sform is stored in f32: exact to f32 precision; qform to quaternion precision.
    assert!(affine_of(&e["sform"]).max_abs_diff(&v.affine) < 1e-5);
    assert!(
        affine_of(&e["qform"]).max_abs_diff(&v.affine) < 1e-4,
        "{:?}",
        e["qform"]
    );
    assert_eq!(e["sform_code"], 2);
    assert_eq!(e["qform_code"], 1);
    assert_eq!(e["datatype"], "float32");
    assert_eq!(e["descrip"], "amri test volume");
    assert_eq!(e["xyzt_units"][0], "mm");
    let zooms = floats(&e["zooms"]);
    for (z, w) in zooms.iter().zip(v.voxel_size()) {
        assert!((z - w).abs() < 1e-5);
    }
    // What amri writes today still decompresses to the committed bytes (the header is stable).
    let d = tempfile::tempdir().unwrap();
    let q = d.path().join("now.nii.gz");
    nifti::write(&q, &Scan::Image(v)).unwrap();
    assert_eq!(gunzip(&q), gunzip(&p));
}

fn gunzip(p: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(std::fs::File::open(p).unwrap())
        .read_to_end(&mut out)
        .unwrap();
    out
}

#[test]
fn round_trips_keep_data_affine_and_description() {
    let d = tempfile::tempdir().unwrap();
    // 4-D float, both .nii and .nii.gz.
    let data = Array4::from_shape_fn((3, 2, 4, 5), |(t, z, y, x)| {
        ((t * 1000 + z * 100 + y * 10 + x) as f32).sqrt() - 3.0
    });
    let mut v = Volume::new(data, oblique());
    v.meta.description = "ü".repeat(50); // 100 bytes: cut to 79 bytes on a char boundary
    for name in ["a.nii", "a.nii.gz"] {
        let p = d.path().join(name);
        nifti::write(&p, &Scan::Image(v.clone())).unwrap();
        let back = image_at(&p);
        assert_eq!(back.data, v.data, "{name}");
        assert!(back.affine.max_abs_diff(&v.affine) < 1e-5, "{name}");
        assert_eq!(back.meta.description, "ü".repeat(39), "{name}");
        assert_eq!(back.meta.source_datatype, "float32");
    }
    // Complex image.
    let c = Array4::from_shape_fn((1, 2, 3, 4), |(_, z, y, x)| {
        C32::new(x as f32 - y as f32, (z * 3) as f32 + 0.5)
    });
    let cv = Volume::new(c, Affine::from_spacing([0.5, 0.5, 2.0]));
    let p = d.path().join("c.nii.gz");
    nifti::write(&p, &Scan::ComplexImage(cv.clone())).unwrap();
    match nifti::read(&p).unwrap() {
        Scan::ComplexImage(b) => {
            assert_eq!(b.data, cv.data);
            assert_eq!(b.affine, cv.affine);
        }
        _ => panic!("complex NIfTI not read as a complex image"),
    }
    // A left-handed (LPS-like) affine survives through the qform's qfac too.
    let mut lv = v.clone();
    lv.affine = Affine::from_spacing([1.0, 1.0, 1.0]).ras_to_lps();
    lv.meta = Metadata::default();
    let p = d.path().join("lps.nii");
    nifti::write(&p, &Scan::Image(lv.clone())).unwrap();
    assert_eq!(image_at(&p).affine, lv.affine);
}

fn image_at(p: &Path) -> Volume<f32> {
    match nifti::read(p).unwrap() {
        Scan::Image(v) => v,
        _ => panic!("not a real image"),
    }
}

#[test]
fn kspace_is_refused_on_write() {
    let d = tempfile::tempdir().unwrap();
    let k = KSpace::new(Array4::zeros((1, 1, 2, 2)));
    let e = nifti::write(&d.path().join("k.nii"), &Scan::KSpace(k)).unwrap_err();
    assert!(matches!(e, IoError::Unwritable { .. }), "{e}");
    assert!(!d.path().join("k.nii").exists());
}

/// Copy of uint8.nii with `patch` applied to its header bytes.
fn patched(d: &Path, name: &str, patch: impl Fn(&mut Vec<u8>)) -> PathBuf {
    let mut b = std::fs::read(dir().join("uint8.nii")).unwrap();
    patch(&mut b);
    let p = d.join(name);
    std::fs::write(&p, b).unwrap();
    p
}

#[test]
fn malformed_files_give_errors_not_panics_or_huge_allocations() {
    let d = tempfile::tempdir().unwrap();
    let d = d.path();
    // Truncated voxel data.
    let p = patched(d, "trunc.nii", |b| b.truncate(b.len() - 5));
    let e = nifti::read(&p).unwrap_err();
    assert!(
        e.to_string().contains("trunc.nii") && e.to_string().contains("truncated"),
        "{e}"
    );
    // A header claiming 30000^3 voxels from a 376-byte file: refused before allocating.
    let p = patched(d, "huge.nii", |b| {
        for i in 1..4 {
            b[40 + 2 * i..42 + 2 * i].copy_from_slice(&30000i16.to_le_bytes());
        }
    });
    assert!(matches!(nifti::read(&p), Err(IoError::Malformed { .. })));
    // The same claim inside a gzip file.
    let gz = d.join("huge.nii.gz");
    {
        use std::io::Write;
        let mut enc = flate2::write::GzEncoder::new(
            std::fs::File::create(&gz).unwrap(),
            flate2::Compression::default(),
        );
        enc.write_all(&std::fs::read(&p).unwrap()).unwrap();
        enc.finish().unwrap();
    }
    assert!(matches!(nifti::read(&gz), Err(IoError::Malformed { .. })));
    // 5-D with a real fifth dimension.
    let p = patched(d, "5d.nii", |b| {
        b[40..42].copy_from_slice(&5i16.to_le_bytes());
        b[50..52].copy_from_slice(&2i16.to_le_bytes());
    });
    let e = nifti::read(&p).unwrap_err();
    assert!(
        matches!(e, IoError::Unsupported { .. }) && e.to_string().contains("5-D"),
        "{e}"
    );
    // float128 datatype.
    let p = patched(d, "f128.nii", |b| {
        b[70..72].copy_from_slice(&1536i16.to_le_bytes())
    });
    let e = nifti::read(&p).unwrap_err();
    assert!(e.to_string().contains("float128"), "{e}");
    // Negative dimension, bad magic, not NIfTI at all, corrupt gzip.
    let p = patched(d, "neg.nii", |b| {
        b[42..44].copy_from_slice(&(-3i16).to_le_bytes())
    });
    assert!(matches!(nifti::read(&p), Err(IoError::Malformed { .. })));
    let p = patched(d, "magic.nii", |b| b[344..348].copy_from_slice(b"abcd"));
    assert!(nifti::read(&p).unwrap_err().to_string().contains("magic"));
    let p = d.join("text.nii");
    std::fs::write(&p, b"hello, this is not an image").unwrap();
    assert!(matches!(nifti::read(&p), Err(IoError::Malformed { .. })));
    let p = d.join("bad.nii.gz");
    std::fs::write(&p, [0x1f, 0x8b, 8, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9]).unwrap();
    assert!(matches!(nifti::read(&p), Err(IoError::Malformed { .. })));
    assert!(matches!(
        nifti::read(&d.join("missing.nii")),
        Err(IoError::Os { .. })
    ));
}

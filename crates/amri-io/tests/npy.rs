//! NumPy `.npy`/`.npz`: fixtures written by numpy hold a closed-form formula
//! `v[i, j, k] = 100 i + 10 j + k`, so byte order, Fortran order and axis order are all checked.

// Test helpers unwrap: a failure here is a failed test, not a user-facing error.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use amri_core::{Affine, KSpace, Volume, C32};
use amri_io::npy::{self, NpyArray};
use amri_io::{IoError, Scan};
use ndarray::{Array3, Array4, ArrayD, IxDyn};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/npy")
        .join(name)
}

fn formula(shape: &[usize]) -> ArrayD<f64> {
    ArrayD::from_shape_fn(IxDyn(shape), |ix| {
        let n = shape.len();
        (0..n)
            .map(|k| ix[k] as f64 * 10f64.powi((n - 1 - k) as i32))
            .sum()
    })
}

#[test]
fn numpy_fixtures_of_every_dtype_read_as_the_formula() {
    let want = formula(&[2, 3, 4]);
    let f32s = want.mapv(|v| v as f32);
    for name in ["f32.npy", "f32_be.npy", "f32_fortran.npy"] {
        match npy::read_array(&fixture(name)).unwrap() {
            NpyArray::F32(a) => assert_eq!(a, f32s, "{name}"),
            other => panic!("{name}: {}", other.dtype_name()),
        }
    }
    assert_eq!(
        npy::read_array(&fixture("f64.npy")).unwrap(),
        NpyArray::F64(want.clone())
    );
    assert_eq!(
        npy::read_array(&fixture("i16.npy")).unwrap(),
        NpyArray::I16(want.mapv(|v| v as i16 - 100))
    );
    assert_eq!(
        npy::read_array(&fixture("u8.npy")).unwrap(),
        NpyArray::U8(want.mapv(|v| v as u8))
    );
    let c = want.mapv(|v| C32::new(v as f32, -0.5 * v as f32));
    for name in ["c64.npy", "c64_fortran_be.npy"] {
        assert_eq!(
            npy::read_array(&fixture(name)).unwrap(),
            NpyArray::C64(c.clone()),
            "{name}"
        );
    }
    match npy::read_array(&fixture("c128.npy")).unwrap() {
        NpyArray::C128(a) => assert_eq!(a.mapv(|v| C32::new(v.re as f32, v.im as f32)), c),
        other => panic!("c128: {}", other.dtype_name()),
    }
    assert_eq!(
        npy::read_array(&fixture("bool_1d.npy")).unwrap(),
        NpyArray::Bool(ArrayD::from_shape_vec(IxDyn(&[4]), vec![true, false, true, true]).unwrap())
    );
}

#[test]
fn scans_are_left_padded_images_or_kspace() {
    match npy::read(&fixture("f32.npy")).unwrap() {
        Scan::Image(v) => {
            assert_eq!(v.shape4(), [1, 2, 3, 4]);
            assert_eq!(v.data[[0, 1, 2, 3]], 123.0);
            assert_eq!(v.meta.source_datatype, "float32");
        }
        _ => panic!("real npy must be an image"),
    }
    match npy::read(&fixture("img_2d.npy")).unwrap() {
        Scan::Image(v) => {
            assert_eq!(v.shape4(), [1, 1, 3, 5]);
            assert_eq!(v.data[[0, 0, 2, 4]], 24.0);
        }
        _ => panic!("real npy must be an image"),
    }
    match npy::read(&fixture("c64_fortran_be.npy")).unwrap() {
        Scan::KSpace(k) => {
            assert_eq!(k.shape4(), [1, 2, 3, 4]);
            assert_eq!(k.data[[0, 1, 2, 3]], C32::new(123.0, -61.5));
        }
        _ => panic!("complex npy must be k-space"),
    }
}

fn bundle_truth() -> KSpace {
    let kv = formula(&[2, 3, 4, 5]);
    let mask = Array3::from_shape_fn(
        (2, 4, 5),
        |(_, _, c)| {
            if [0, 2, 3].contains(&c) {
                1.0
            } else {
                0.0
            }
        },
    );
    let data = Array4::from_shape_fn((2, 3, 4, 5), |(s, k, r, c)| {
        let v = kv[[s, k, r, c]] as f32;
        C32::new(v, -0.5 * v) * mask[[s, r, c]]
    });
    let mut ks = KSpace::new(data);
    ks.mask = Some(mask);
    ks.reference = Some(
        formula(&[2, 4, 5])
            .mapv(|v| v as f32)
            .into_dimensionality()
            .unwrap(),
    );
    ks.sensitivities = Some(
        kv.mapv(|v| C32::new((v * 0.01) as f32, -1.0))
            .into_dimensionality()
            .unwrap(),
    );
    ks.affine = Affine([
        [0.0, 0.0, 2.0, -5.0],
        [0.0, 1.5, 0.0, 3.0],
        [-1.0, 0.0, 0.0, 7.0],
        [0.0, 0.0, 0.0, 1.0],
    ]);
    ks.attributes
        .insert("acquisition".into(), "CORPD_FBK".into());
    ks.attributes.insert("acceleration".into(), "4".into());
    ks
}

#[test]
fn numpy_written_bundles_read_completely() {
    let k = npy::read_kspace_npz(&fixture("bundle.npz")).unwrap();
    let want = bundle_truth();
    assert_eq!(k.data, want.data);
    assert_eq!(k.mask, want.mask);
    assert_eq!(k.reference, want.reference);
    assert_eq!(k.sensitivities, want.sensitivities);
    assert_eq!(k.affine, want.affine);
    assert_eq!(k.attributes, want.attributes);
    // Compressed, complex128 k-space and a 1-D bool column mask broadcast to [slice, row, col].
    let Scan::KSpace(c) = npy::read(&fixture("bundle_compressed.npz")).unwrap() else {
        panic!("npz must be k-space");
    };
    assert_eq!(c.data, want.data);
    assert_eq!(c.mask, want.mask);
    assert_eq!(c.affine, Affine::IDENTITY);
}

#[test]
fn npz_round_trip_and_numpy_reads_amri_output() {
    let want = bundle_truth();
    let p = fixture("amri_written.npz");
    if std::env::var_os("AMRI_REGEN_FIXTURES").is_some() {
        npy::write_kspace_npz(&p, &want).unwrap();
    }
    let d = tempfile::tempdir().unwrap();
    let q = d.path().join("k.npz");
    npy::write(&q, &Scan::KSpace(want.clone())).unwrap();
    assert_eq!(npy::read_kspace_npz(&q).unwrap(), want);
    // numpy's reading of the committed amri-written bundle (made by make_fixtures.py).
    let e: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("amri_written.json")).unwrap())
            .unwrap();
    assert_eq!(e["kspace"]["dtype"], "complex64");
    assert_eq!(e["kspace"]["shape"], serde_json::json!([2, 3, 4, 5]));
    let sum: f64 = want.data.iter().map(|c| c.norm() as f64).sum();
    assert!((e["kspace"]["sum_abs"].as_f64().unwrap() - sum).abs() < 1e-3 * sum);
    assert_eq!(e["mask"]["dtype"], "float32");
    assert_eq!(e["mask"]["shape"], serde_json::json!([2, 4, 5]));
    assert_eq!(e["sensitivities"]["dtype"], "complex64");
    assert_eq!(e["reference"]["dtype"], "float32");
    assert_eq!(e["affine"]["dtype"], "float64");
    assert_eq!(
        e["affine"]["values"][0],
        serde_json::json!([0.0, 0.0, 2.0, -5.0])
    );
    assert_eq!(e["attributes"]["json"]["acquisition"], "CORPD_FBK");
    // And amri reads back its own committed file.
    assert_eq!(npy::read_kspace_npz(&p).unwrap(), want);
}

#[test]
fn npy_round_trips_every_written_dtype() {
    let d = tempfile::tempdir().unwrap();
    let base = formula(&[3, 1, 2]);
    let arrays = [
        NpyArray::F32(base.mapv(|v| v as f32 - 0.5)),
        NpyArray::F64(base.mapv(|v| v / 3.0)),
        NpyArray::I16(base.mapv(|v| -(v as i16))),
        NpyArray::U8(base.mapv(|v| v as u8)),
        NpyArray::C64(base.mapv(|v| C32::new(v as f32, 1.0 - v as f32))),
        NpyArray::C128(base.mapv(|v| num_complex::Complex64::new(v, -v / 7.0))),
        NpyArray::F32(ArrayD::from_elem(IxDyn(&[7]), 2.5)),
    ];
    for (i, a) in arrays.iter().enumerate() {
        let p = d.path().join(format!("{i}.npy"));
        npy::write_array(&p, a).unwrap();
        let bytes = std::fs::read(&p).unwrap();
        let hlen = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
        assert_eq!(
            (10 + hlen) % 64,
            0,
            "header is 64-byte aligned as numpy writes it"
        );
        assert_eq!(&npy::read_array(&p).unwrap(), a, "dtype {}", a.dtype_name());
    }
    // Scans: image and complex image as 4-D arrays.
    let img = Volume::new(
        Array4::from_shape_fn((1, 2, 3, 4), |(_, s, r, c)| (s * 12 + r * 4 + c) as f32),
        Affine::IDENTITY,
    );
    let p = d.path().join("img.npy");
    npy::write(&p, &Scan::Image(img.clone())).unwrap();
    match npy::read(&p).unwrap() {
        Scan::Image(v) => assert_eq!(v.data, img.data),
        _ => panic!("image"),
    }
    // k-space with a mask cannot go to .npy (it would lose the mask).
    let e = npy::write(&d.path().join("k.npy"), &Scan::KSpace(bundle_truth())).unwrap_err();
    assert!(matches!(e, IoError::Unwritable { .. }), "{e}");
}

fn npy_bytes(header: &str, data: &[u8]) -> Vec<u8> {
    let mut b = b"\x93NUMPY\x01\x00".to_vec();
    b.extend_from_slice(&(header.len() as u16).to_le_bytes());
    b.extend_from_slice(header.as_bytes());
    b.extend_from_slice(data);
    b
}

#[test]
fn malformed_npy_and_npz_give_errors() {
    let d = tempfile::tempdir().unwrap();
    let w = |name: &str, b: &[u8]| {
        let p = d.path().join(name);
        std::fs::write(&p, b).unwrap();
        p
    };
    // Truncated data.
    let mut b = std::fs::read(fixture("f32.npy")).unwrap();
    b.truncate(b.len() - 3);
    let e = npy::read_array(&w("trunc.npy", &b)).unwrap_err();
    assert!(
        e.to_string().contains("trunc.npy") && e.to_string().contains("truncated"),
        "{e}"
    );
    // Header claiming a huge shape from a tiny file: refused before allocating.
    let p = w(
        "huge.npy",
        &npy_bytes(
            "{'descr': '<f4', 'fortran_order': False, 'shape': (100000, 100000, 1000), }\n",
            &[0; 16],
        ),
    );
    assert!(matches!(
        npy::read_array(&p),
        Err(IoError::Malformed { .. })
    ));
    // Overflowing shape.
    let p = w(
        "overflow.npy",
        &npy_bytes(
            "{'descr': '<f8', 'fortran_order': False, 'shape': (18446744073709551615, 4), }\n",
            &[],
        ),
    );
    assert!(npy::read_array(&p).is_err());
    // Unsupported dtype, structured dtype, bad magic, header length past the end.
    let p = w(
        "str.npy",
        &npy_bytes(
            "{'descr': '<U3', 'fortran_order': False, 'shape': (1,), }\n",
            &[0; 12],
        ),
    );
    assert!(npy::read_array(&p).unwrap_err().to_string().contains("<U3"));
    let p = w(
        "rec.npy",
        &npy_bytes(
            "{'descr': [('r', '<f4'), ('i', '<f4')], 'fortran_order': False, 'shape': (1,), }\n",
            &[0; 8],
        ),
    );
    assert!(npy::read_array(&p)
        .unwrap_err()
        .to_string()
        .contains("structured"));
    assert!(npy::read_array(&w("magic.npy", b"NOTNUMPY0123456789")).is_err());
    let mut b = b"\x93NUMPY\x01\x00".to_vec();
    b.extend_from_slice(&60000u16.to_le_bytes());
    assert!(npy::read_array(&w("hlen.npy", &b)).is_err());
    // 5-D arrays are not scans.
    let p = d.path().join("5d.npy");
    npy::write_array(&p, &NpyArray::F32(ArrayD::zeros(IxDyn(&[1, 1, 1, 1, 2])))).unwrap();
    assert!(matches!(npy::read(&p), Err(IoError::Unsupported { .. })));
    // npz: not a zip; a zip without 'kspace'; 'kspace' real.
    assert!(npy::read_kspace_npz(&w("bad.npz", b"PK but not really a zip")).is_err());
    let other = d.path().join("other.npz");
    let mut k = KSpace::new(Array4::zeros((1, 1, 2, 2)));
    npy::write_kspace_npz(&other, &k).unwrap();
    let bytes = std::fs::read(&other).unwrap();
    // Rename the entry: "kspace.npy" -> "kspacX.npy" in both local and central headers.
    let renamed: Vec<u8> = {
        let mut b = bytes.clone();
        let pat = b"kspace.npy";
        let mut i = 0;
        while i + pat.len() <= b.len() {
            if &b[i..i + pat.len()] == pat {
                b[i + 5] = b'X';
            }
            i += 1;
        }
        b
    };
    let e = npy::read_kspace_npz(&w("nok.npz", &renamed)).unwrap_err();
    assert!(e.to_string().contains("no 'kspace'"), "{e}");
    k.data[[0, 0, 0, 0]] = C32::new(f32::NAN, 0.0);
    assert!(npy::write_kspace_npz(&d.path().join("nan.npz"), &k).is_err());
}

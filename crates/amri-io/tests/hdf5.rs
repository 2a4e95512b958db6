//! fastMRI-style HDF5: fixtures written by h5py hold k-space whose value encodes its index
//! (`v = 1000 s + 100 c + 10 r + k`, imaginary part `-v/2`).

// Test helpers unwrap: a failure here is a failed test, not a user-facing error.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use amri_core::{KSpace, C32};
use amri_io::{hdf5, IoError, Scan};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/hdf5")
        .join(name)
}

fn kspace(name: &str) -> KSpace {
    match hdf5::read(&fixture(name)).unwrap_or_else(|e| panic!("{name}: {e}")) {
        Scan::KSpace(k) => k,
        _ => panic!("{name}: not k-space"),
    }
}

fn val(v: usize) -> C32 {
    C32::new(v as f32, -0.5 * v as f32)
}

#[test]
fn multicoil_with_column_mask_and_attributes() {
    let k = kspace("multicoil.h5");
    assert_eq!(k.shape4(), [2, 3, 4, 5]);
    for ((s, c, r, col), x) in k.data.indexed_iter() {
        assert_eq!(*x, val(1000 * s + 100 * c + 10 * r + col));
    }
    // h5py stores the bool mask as an HDF5 enum; 1-D over columns, broadcast to [slice, row, col].
    let m = k.mask.as_ref().expect("mask");
    assert_eq!(m.shape(), [2, 4, 5]);
    for ((_, _, col), x) in m.indexed_iter() {
        assert_eq!(*x, [1.0, 0.0, 1.0, 1.0, 0.0][col]);
    }
    assert!((k.sampled_fraction() - 0.6).abs() < 1e-12);
    // The 3x3 reconstruction_rss does not match the 4x5 grid: dropped, with a note.
    assert!(k.reference.is_none());
    assert!(k.attributes["reference_dropped"].contains("reconstruction_rss"));
    assert_eq!(k.attributes["acquisition"], "CORPD_FBK");
    assert_eq!(k.attributes["max"].parse::<f64>().unwrap(), 0.000425);
    assert_eq!(k.attributes["norm"].parse::<f64>().unwrap(), 0.0312);
    assert_eq!(k.attributes["padding_left"], "3");
    assert!(
        !k.attributes.contains_key("patient_id"),
        "patient_id must not be copied"
    );
    assert!(k.attributes.values().all(|v| !v.contains("d9c1a8e0f2")));
}

#[test]
fn single_coil_chunked_gzip_keeps_matching_reference() {
    let k = kspace("singlecoil_gzip.h5");
    assert_eq!(k.shape4(), [2, 1, 4, 5]);
    for ((s, _, r, c), x) in k.data.indexed_iter() {
        assert_eq!(*x, val(100 * s + 10 * r + c));
    }
    assert!(k.mask.is_none());
    let reference = k
        .reference
        .as_ref()
        .expect("reconstruction_esc matches the grid");
    for ((s, r, c), x) in reference.indexed_iter() {
        assert_eq!(*x, 0.5 * (100 * s + 10 * r + c) as f32);
    }
    assert_eq!(k.attributes["reference_source"], "reconstruction_esc");
    assert_eq!(k.attributes["coils"], "single");
}

#[test]
fn complex128_and_2d_uint8_mask() {
    let k = kspace("complex128_mask2d.h5");
    assert_eq!(k.attributes["source_datatype"], "complex128");
    assert_eq!(k.data[[1, 0, 3, 4]], val(134));
    let m = k.mask.as_ref().expect("mask");
    for ((_, _, c), x) in m.indexed_iter() {
        assert_eq!(*x, if c == 1 { 1.0 } else { 0.0 });
    }
}

#[test]
fn bad_files_give_errors_naming_the_file() {
    let e = hdf5::read(&fixture("no_kspace.h5")).unwrap_err();
    assert!(
        e.to_string().contains("no_kspace.h5") && e.to_string().contains("'kspace'"),
        "{e}"
    );
    let e = hdf5::read(&fixture("real_kspace.h5")).unwrap_err();
    assert!(
        matches!(e, IoError::Unsupported { .. }) && e.to_string().contains("complex"),
        "{e}"
    );
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("text.h5");
    std::fs::write(&p, "not an hdf5 file at all").unwrap();
    let e = hdf5::read(&p).unwrap_err();
    assert!(
        e.to_string().contains("text.h5") && e.to_string().contains("HDF5"),
        "{e}"
    );
    // Truncated: the signature is there but metadata or data are not (h5py put the k-space
    // samples at bytes 2048..3008, the mask and reference just after them).
    let b = std::fs::read(fixture("multicoil.h5")).unwrap();
    for cut in [64, 800, 2500, 3010] {
        let p = d.path().join(format!("cut{cut}.h5"));
        std::fs::write(&p, &b[..cut]).unwrap();
        assert!(
            hdf5::read(&p).is_err(),
            "file cut at {cut} bytes was accepted"
        );
    }
    assert!(matches!(
        hdf5::read(&d.path().join("missing.h5")),
        Err(IoError::Os { .. })
    ));
}

//! BART cfl/hdr: fixtures written the way BART's python/cfl.py writes (numpy, Fortran order);
//! values are a closed-form formula of the BART indices, so any axis mix-up fails.

// Test helpers unwrap: a failure here is a failed test, not a user-facing error.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use amri_core::{Affine, KSpace, Volume, C32};
use amri_io::{cfl, IoError, Scan};
use ndarray::{Array3, Array4};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/cfl")
        .join(name)
}

/// The fixture's value at BART index (read, phs1, phs2, coil).
fn bart_value(r: usize, c: usize, s: usize, k: usize) -> C32 {
    let v = (r * 1000 + c * 100 + s * 10 + k) as f32;
    C32::new(v, -0.5 * v)
}

#[test]
fn read_array_keeps_bart_dims_and_fortran_order() {
    for p in ["kspace", "kspace.cfl", "kspace.hdr"] {
        let (dims, data) = cfl::read_array(&fixture(p)).unwrap();
        assert_eq!(
            dims,
            [4, 3, 2, 2]
                .iter()
                .copied()
                .chain([1; 12])
                .collect::<Vec<_>>()
        );
        // Fortran order: index r + 4 (c + 3 (s + 2 k)).
        for (k, s, c, r) in itertools(2, 2, 3, 4) {
            assert_eq!(data[r + 4 * (c + 3 * (s + 2 * k))], bart_value(r, c, s, k));
        }
    }
}

fn itertools(a: usize, b: usize, c: usize, d: usize) -> Vec<(usize, usize, usize, usize)> {
    let mut v = Vec::new();
    for i in 0..a {
        for j in 0..b {
            for k in 0..c {
                for l in 0..d {
                    v.push((i, j, k, l));
                }
            }
        }
    }
    v
}

#[test]
fn read_maps_read_phs1_phs2_coil_to_row_col_slice_coil() {
    let Scan::KSpace(k) = cfl::read(&fixture("kspace.cfl")).unwrap() else {
        panic!("expected k-space");
    };
    assert_eq!(k.shape4(), [2, 2, 4, 3]); // [slice, coil, row, col]
    for (s, coil, r, c) in itertools(2, 2, 4, 3) {
        assert_eq!(k.data[[s, coil, r, c]], bart_value(r, c, s, coil));
    }
    let m = k.mask.expect("sibling kspace_mask.cfl is read");
    assert_eq!(m.shape(), [2, 4, 3]);
    for (s, _, r, c) in itertools(2, 1, 4, 3) {
        let want = if s == 0 && c == 1 { 0.0 } else { 1.0 };
        assert_eq!(m[[s, r, c]], want, "mask at slice {s} row {r} col {c}");
    }
}

#[test]
fn kspace_with_mask_round_trips_exactly() {
    let d = tempfile::tempdir().unwrap();
    let data = Array4::from_shape_fn((3, 2, 5, 4), |(s, k, r, c)| {
        C32::new((s * 7 + k) as f32 * 0.1 + r as f32, c as f32 - 1.5)
    });
    let mut ks = KSpace::new(data);
    ks.mask = Some(Array3::from_shape_fn((3, 5, 4), |(s, _, c)| {
        ((s + c) % 2) as f32
    }));
    let p = d.path().join("out.cfl");
    cfl::write(&p, &Scan::KSpace(ks.clone())).unwrap();
    assert!(d.path().join("out.hdr").exists());
    assert!(d.path().join("out_mask.cfl").exists());
    let Scan::KSpace(back) = cfl::read(&d.path().join("out")).unwrap() else {
        panic!("expected k-space");
    };
    assert_eq!(back.data, ks.data);
    assert_eq!(back.mask, ks.mask);
    // The written header is BART's: 16 dims, READ PHS1 PHS2 COIL first.
    let hdr = std::fs::read_to_string(d.path().join("out.hdr")).unwrap();
    assert_eq!(
        hdr.lines().nth(1).unwrap().trim(),
        "5 4 3 2 1 1 1 1 1 1 1 1 1 1 1 1"
    );
}

#[test]
fn images_round_trip_with_frames_on_time_axis() {
    let d = tempfile::tempdir().unwrap();
    let data = Array4::from_shape_fn((2, 3, 4, 5), |(t, s, r, c)| {
        C32::new((t * 1000 + s * 100 + r * 10 + c) as f32, t as f32)
    });
    let v = Volume::new(data, Affine::IDENTITY);
    let p = d.path().join("img");
    cfl::write(&p, &Scan::ComplexImage(v.clone())).unwrap();
    let (dims, _) = cfl::read_array(&p).unwrap();
    assert_eq!(dims[..4], [4, 5, 3, 1]);
    assert_eq!(dims[cfl::BART_TIME_DIM], 2);
    let back = cfl::read_image(&p).unwrap();
    assert_eq!(back.data, v.data);
    // As k-space the TIME axis is refused with a clear message.
    let e = cfl::read(&p).unwrap_err();
    assert!(matches!(e, IoError::Unsupported { .. }), "{e}");
    assert!(e.to_string().contains("dimension 10"), "{e}");
}

#[test]
fn bad_input_gives_errors_naming_the_file() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("x");
    // Header dims inconsistent with the cfl size.
    std::fs::write(d.path().join("x.hdr"), "# Dimensions\n4 4 1 1 1\n").unwrap();
    std::fs::write(d.path().join("x.cfl"), vec![0u8; 8 * 15]).unwrap();
    let e = cfl::read_array(&p).unwrap_err();
    assert!(
        e.to_string().contains("x.cfl") && e.to_string().contains("128"),
        "{e}"
    );
    // A header claiming a huge array is refused from the size check, without allocating.
    std::fs::write(
        d.path().join("x.hdr"),
        "# Dimensions\n100000 100000 100000 1\n",
    )
    .unwrap();
    assert!(matches!(
        cfl::read_array(&p),
        Err(IoError::Malformed { .. })
    ));
    // Non-numeric header.
    std::fs::write(d.path().join("x.hdr"), "# Dimensions\n4 four 1\n").unwrap();
    let e = cfl::read_array(&p).unwrap_err();
    assert!(
        e.to_string().contains("x.hdr") && e.to_string().contains("four"),
        "{e}"
    );
    // Missing cfl.
    std::fs::write(d.path().join("y.hdr"), "# Dimensions\n1 1\n").unwrap();
    let e = cfl::read(&d.path().join("y.cfl")).unwrap_err();
    assert!(
        matches!(e, IoError::Os { .. }) && e.to_string().contains("y.cfl"),
        "{e}"
    );
    // Data length disagreeing with dims on write.
    assert!(cfl::write_array(&d.path().join("z"), &[2, 2], &[C32::new(0.0, 0.0); 3]).is_err());
}

//! Inputs found by the cargo-fuzz targets in fuzz/ that crashed a reader; each must now be a
//! clear error naming the file.
#![allow(clippy::unwrap_used)]

use std::path::Path;

fn check(name: &str, expect: &str) {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/fuzz")
        .join(name);
    let e = amri_io::read_all(&p).unwrap_err().to_string();
    assert!(e.contains(name), "{e}");
    assert!(e.contains(expect), "{e}");
}

#[test]
fn corrupt_rle_pixel_data_is_an_error_not_a_panic() {
    // dicom-pixeldata 0.10.1's RLE decoder indexes out of bounds on this file.
    // Now refused by amri's own segment check, before the decoder sees it.
    check("dicom_rle_out_of_bounds.dcm", "corrupt RLE pixel data");
}

#[test]
fn non_ascii_fortran_order_value_is_an_error_not_a_panic() {
    // A multi-byte character inside the 'fortran_order' value once sliced a str mid-character.
    check("npy_fortran_order_utf8.npy", "fortran_order");
}

#[test]
fn npz_member_with_the_same_header_bug_is_an_error() {
    // The npz target found the same 'fortran_order' slicing bug inside a bundle member.
    check("npz_fortran_order_utf8.npz", "fortran_order");
}

#[test]
fn jpeg2000_codestream_larger_than_rows_columns_is_an_error_not_a_panic() {
    // dicom-pixeldata 0.10.1's JPEG 2000 adapter indexed out of bounds: the codestream's SIZ
    // says 64×63807 for a 64×64 image (found by the dicom target, 2026-11-23).
    check(
        "dicom_j2k_siz_larger_than_rows.dcm",
        "component 0 is 63807×64 (rows×columns), larger than Rows×Columns 64×64",
    );
}

#[test]
fn item_longer_than_its_sequence_is_an_error_not_4_gb() {
    // A 6.6 kB enhanced MR file whose nested item claims 8240 bytes inside a 56-byte sequence:
    // dicom-rs allocated 4 GB (found by the dicom target as an out-of-memory, 2026-11-23). The
    // second file is the same with a length that fits in the file but not in the sequence.
    check(
        "dicom_item_longer_than_sequence.dcm",
        "past the end of its enclosing sequence or item",
    );
    check(
        "dicom_item_inside_file_past_sequence.dcm",
        "claims 4096 bytes, past the end of its enclosing sequence or item",
    );
}

#[test]
fn an_empty_axis_beside_two_trillion_slices_is_an_error_not_a_hang() {
    // A 14 kB fastMRI-style file whose 'kspace' has 2 199 023 255 554 slices and an empty axis:
    // no data, yet mask inference looped over every slice (found by the hdf5 target as a
    // timeout, 2026-12-06).
    check(
        "hdf5_empty_axis_of_2e12_slices.h5",
        "holds no data: its array has an empty axis",
    );
}

//! DICOM reader and writer against pydicom-decoded references (tests/fixtures/dicom, made by
//! sample-scans/make_dicom.sh) and against themselves (write → read round trips).
#![allow(clippy::unwrap_used)] // helpers outside #[test] fns: a failed fixture load is a test failure

use std::path::{Path, PathBuf};

use amri_core::{Affine, Volume};
use amri_io::dicom::{read, write_series, DicomWriteOptions};
use amri_io::IoError;
use ndarray::Array4;
use serde_json::Value;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn sample(name: &str) -> PathBuf {
    root().join("sample-scans/dicom").join(name)
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/dicom")
}

fn expected() -> Value {
    let text = std::fs::read_to_string(fixtures().join("expected.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// Stored values (before rescale) that pydicom decoded, raw little-endian int32.
fn stored(name: &str) -> Vec<i32> {
    let b = std::fs::read(fixtures().join(name)).unwrap();
    b.chunks_exact(4)
        .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
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

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

/// Checks one volume against an expected entry: shape, every sample equal to
/// `stored × slope + intercept` (pydicom's stored values, slope/intercept per slice), affine,
/// UIDs.
fn check_volume(label: &str, vol: &Volume<f32>, exp: &Value) {
    let shape: Vec<usize> = exp["shape"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as usize)
        .collect();
    assert_eq!(vol.shape4().to_vec(), shape, "{label}: shape");
    let refs = strings(&exp["stored"]);
    let slopes = exp["slope"].as_array().unwrap();
    let intercepts = exp["intercept"].as_array().unwrap();
    for (k, r) in refs.iter().enumerate() {
        let s = stored(r);
        let (m, b) = (slopes[k].as_f64().unwrap(), intercepts[k].as_f64().unwrap());
        let got = vol.slice(0, k);
        assert_eq!(got.len(), s.len(), "{label}: slice {k} size");
        for (i, (g, st)) in got.iter().zip(&s).enumerate() {
            let want = (f64::from(*st) * m + b) as f32;
            assert_eq!(*g, want, "{label}: slice {k} sample {i}: stored {st}");
        }
    }
    let a = affine_of(&exp["affine"]);
    let d = vol.affine.max_abs_diff(&a);
    assert!(
        d < 1e-4,
        "{label}: affine differs by {d}:\n{:?}\n{:?}",
        vol.affine,
        a
    );
    let series = vol.meta.series.as_ref().expect("series info");
    assert_eq!(
        series.series_instance_uid,
        exp["series_instance_uid"].as_str().unwrap(),
        "{label}"
    );
    assert_eq!(
        series.sop_instance_uids,
        strings(&exp["sop_instance_uids"]),
        "{label}: SOP order"
    );
    assert_eq!(vol.meta.source_format, "DICOM");
}

#[test]
fn every_transfer_syntax_decodes_to_pydicom_values() {
    let exp = expected();
    let files = exp["files"].as_object().unwrap();
    assert!(files.len() >= 11);
    for (name, e) in files {
        if is_jpeg_ls(e) && !cfg!(feature = "jpegls") {
            continue; // jpeg_ls_needs_the_feature_and_says_so checks these
        }
        let vols = read(&sample(name)).unwrap_or_else(|err| panic!("{name}: {err}"));
        assert_eq!(vols.len(), 1, "{name}");
        check_volume(name, &vols[0], e);
        let series = vols[0].meta.series.as_ref().unwrap();
        assert_eq!(
            series.transfer_syntax,
            e["transfer_syntax"].as_str().unwrap(),
            "{name}"
        );
        let bits = e["bits_allocated"].as_u64().unwrap();
        let signed = e["pixel_representation"].as_u64().unwrap() == 1;
        assert_eq!(
            vols[0].meta.source_datatype,
            format!("{}int{bits}", if signed { "" } else { "u" }),
            "{name}"
        );
    }
}

/// Whether a pydicom record names a JPEG-LS transfer syntax.
fn is_jpeg_ls(e: &Value) -> bool {
    matches!(
        e["transfer_syntax"].as_str(),
        Some("1.2.840.10008.1.2.4.80" | "1.2.840.10008.1.2.4.81")
    )
}

/// Without the `jpegls` feature (no CharLS), a JPEG-LS file is refused with an error that names
/// the file, the transfer syntax and the way out; with it, the file decodes (checked against
/// pydicom above).
#[test]
fn jpeg_ls_needs_the_feature_and_says_so() {
    let exp = expected();
    let jls: Vec<&String> = exp["files"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(_, e)| is_jpeg_ls(e))
        .map(|(n, _)| n)
        .collect();
    assert!(!jls.is_empty(), "the samples include a JPEG-LS file");
    let with_codec = cfg!(feature = "jpegls");
    for name in jls {
        let p = sample(name);
        match read(&p) {
            Ok(v) => assert!(
                with_codec,
                "{name} decoded without CharLS ({} volumes)",
                v.len()
            ),
            Err(err) => {
                assert!(!with_codec, "{name}: {err}");
                assert!(matches!(err, IoError::Unsupported { .. }), "{err}");
                assert_err_names(&p, &err);
                let msg = err.to_string();
                assert!(
                    msg.contains("JPEG-LS") && msg.contains("--features jpegls"),
                    "{msg}"
                );
            }
        }
    }
}

#[test]
fn mr_small_metadata_and_geometry() {
    let v = &read(&sample("MR_small.dcm")).unwrap()[0];
    let s = v.meta.series.as_ref().unwrap();
    assert_eq!(s.modality, "MR");
    assert_eq!(s.manufacturer, "TOSHIBA_MEC");
    assert_eq!(s.repetition_time_ms, Some(4000.0));
    assert_eq!(s.echo_time_ms, Some(240.0));
    assert_eq!(s.sop_class_uid, "1.2.840.10008.5.1.4.1.1.4");
    assert_eq!(s.transfer_syntax, "1.2.840.10008.1.2.1");
    let p = v.meta.patient.as_ref().unwrap();
    assert_eq!(p.name, "CompressedSamples^MR1");
    assert_eq!(p.id, "4MR1");
    // Axial slice, IOP (1,0,0,0,1,0): LPS x → RAS −x, rows run posterior → 'P', normal +S.
    assert_eq!(v.affine.orientation_code(), "LPS");
    assert_eq!(v.voxel_size(), [0.3125, 0.3125, 0.8]);
    // Voxel (0,0,0) is ImagePositionPatient (LPS) negated in x and y.
    let o = v.affine.origin();
    assert!((o[0] - 83.9063).abs() < 1e-9 && (o[1] - 91.2).abs() < 1e-9);
    assert!((o[2] - 6.6406).abs() < 1e-9);
}

#[test]
fn rescale_is_applied() {
    // uint8 with slope 0.5 intercept 10; int32 with slope 0.001 intercept 1000.
    let e = expected();
    for name in ["MR_small_uint8.dcm", "MR_small_int32.dcm"] {
        let v = &read(&sample(name)).unwrap()[0];
        let raw = stored(e["files"][name]["stored"][0].as_str().unwrap());
        let i = raw.iter().position(|&x| x != 0).unwrap();
        assert_ne!(
            v.data.as_slice().unwrap()[i],
            raw[i] as f32,
            "{name}: no rescale"
        );
    }
    let v = &read(&sample("MR_small_uint8.dcm")).unwrap()[0];
    let min = v.finite_range().unwrap().0;
    assert_eq!(min, 10.0 + 0.5 * 15.0); // stored minimum 15 = floor(127 * 255 / 2145)
}

#[test]
fn oblique_stack_sorted_along_normal_not_by_instance_number() {
    let exp = expected();
    let vols = read(&sample("oblique_stack")).unwrap();
    let e = exp["series"]["oblique_stack"].as_array().unwrap();
    assert_eq!(vols.len(), 1, "README.txt must be skipped, one series");
    check_volume("oblique_stack", &vols[0], &e[0]);
    let v = &vols[0];
    // Row spacing 0.5 and column spacing 0.3125 (PixelSpacing [row, col]), 2 mm slices.
    let vs = v.voxel_size();
    assert!((vs[0] - 0.3125).abs() < 1e-6 && (vs[1] - 0.5).abs() < 1e-6);
    assert!((vs[2] - 2.0).abs() < 1e-3);
    // Slice index increases along row_dir × col_dir: right-handed in LPS, and negating x and y
    // (LPS → RAS) keeps the determinant's sign.
    assert!(v.affine.det3() > 0.0);
    assert!(!v
        .meta
        .attributes
        .contains_key("dicom.irregular_slice_spacing"));
}

#[test]
fn localiser_series_split_by_orientation() {
    let exp = expected();
    let vols = read(&sample("MR700")).unwrap();
    let e = exp["series"]["MR700"].as_array().unwrap();
    assert_eq!(vols.len(), e.len());
    for (i, (v, e)) in vols.iter().zip(e).enumerate() {
        check_volume(&format!("MR700[{i}]"), v, e);
    }
}

#[test]
fn mixed_series_folder_is_split_never_merged() {
    let exp = expected();
    let vols = read(&sample("MR2")).unwrap();
    let e = exp["series"]["MR2"].as_array().unwrap();
    assert_eq!(vols.len(), e.len());
    for (i, (v, e)) in vols.iter().zip(e).enumerate() {
        check_volume(&format!("MR2[{i}]"), v, e);
    }
    let mut uids: Vec<&str> = vols
        .iter()
        .map(|v| v.meta.series.as_ref().unwrap().series_instance_uid.as_str())
        .collect();
    uids.dedup();
    assert_eq!(uids.len(), 3, "three series, each contiguous in the output");
    // Stable: reading again gives the same order.
    let again = read(&sample("MR2")).unwrap();
    assert_eq!(again, vols);
}

#[test]
fn enhanced_multiframe_per_frame_geometry_and_rescale() {
    let exp = expected();
    for name in [
        "enhanced/MR700_enhanced.dcm",
        "enhanced/oblique_stack_enhanced.dcm",
    ] {
        let vols = read(&sample(name)).unwrap();
        let e = exp["series"][name].as_array().unwrap();
        assert_eq!(vols.len(), e.len(), "{name}");
        for (i, (v, e)) in vols.iter().zip(e).enumerate() {
            check_volume(&format!("{name}[{i}]"), v, e);
        }
    }
    // The Enhanced version of the oblique stack has the classic stack's geometry.
    let classic = &read(&sample("oblique_stack")).unwrap()[0];
    let enh = &read(&sample("enhanced/oblique_stack_enhanced.dcm")).unwrap()[0];
    assert!(classic.affine.max_abs_diff(&enh.affine) < 1e-9);
    let s = enh.meta.series.as_ref().unwrap();
    assert_eq!(s.sop_class_uid, "1.2.840.10008.5.1.4.1.1.4.1");
    assert_eq!(s.field_strength_t, Some(1.5));
}

fn assert_err_names(path: &Path, err: &IoError) {
    let msg = err.to_string();
    eprintln!("{msg}");
    assert!(
        msg.contains(&path.display().to_string()),
        "error does not name {}: {msg}",
        path.display()
    );
}

#[test]
fn truncated_files_are_errors_naming_the_file() {
    let p = sample("MR_truncated.dcm");
    let err = read(&p).unwrap_err();
    assert_err_names(&p, &err);

    let full = std::fs::read(sample("MR_small.dcm")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    for cut in [
        0,
        100,
        131,
        132,
        140,
        200,
        333,
        700,
        1000,
        1500,
        full.len() - 2,
    ] {
        let p = dir.path().join(format!("cut{cut}.dcm"));
        std::fs::write(&p, &full[..cut]).unwrap();
        let err = read(&p).unwrap_err();
        assert_err_names(&p, &err);
    }
    // Compressed: truncated inside the JPEG-LS codestream and inside the fragment table.
    let jls = std::fs::read(sample("MR_small_jpeg_ls_lossless.dcm")).unwrap();
    for cut in [jls.len() - 1000, jls.len() - 10] {
        let p = dir.path().join(format!("jls{cut}.dcm"));
        std::fs::write(&p, &jls[..cut]).unwrap();
        let err = read(&p).unwrap_err();
        assert_err_names(&p, &err);
    }
}

#[test]
fn flipped_magic_is_not_dicom() {
    let mut b = std::fs::read(sample("MR_small.dcm")).unwrap();
    b[128..132].copy_from_slice(b"MCID");
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("flipped.dcm");
    std::fs::write(&p, &b).unwrap();
    let err = read(&p).unwrap_err();
    assert!(matches!(err, IoError::Malformed { .. }));
    assert!(err.to_string().contains("DICM"), "{err}");
    assert_err_names(&p, &err);
}

/// Finds an element by its little-endian tag bytes followed by its explicit VR.
fn find_element(b: &[u8], group: u16, elem: u16, vr: &[u8; 2]) -> usize {
    let mut pat = Vec::new();
    pat.extend_from_slice(&group.to_le_bytes());
    pat.extend_from_slice(&elem.to_le_bytes());
    pat.extend_from_slice(vr);
    b.windows(6).position(|w| w == pat.as_slice()).unwrap()
}

#[test]
fn absurd_sizes_are_rejected_without_allocating() {
    let dir = tempfile::tempdir().unwrap();
    let base = std::fs::read(sample("MR_small.dcm")).unwrap();
    // Rows = Columns = 65535 (US, value at +8).
    let mut b = base.clone();
    for e in [0x0010u16, 0x0011] {
        let at = find_element(&b, 0x0028, e, b"US") + 8;
        b[at..at + 2].copy_from_slice(&65535u16.to_le_bytes());
    }
    let p = dir.path().join("huge_rows.dcm");
    std::fs::write(&p, &b).unwrap();
    let err = read(&p).unwrap_err();
    assert_err_names(&p, &err);
    assert!(err.to_string().contains("65535"), "{err}");

    // The same for a compressed file (no Pixel Data length to compare with).
    let mut b = std::fs::read(sample("MR_small_jp2klossless.dcm")).unwrap();
    for e in [0x0010u16, 0x0011] {
        let at = find_element(&b, 0x0028, e, b"US") + 8;
        b[at..at + 2].copy_from_slice(&65535u16.to_le_bytes());
    }
    let p = dir.path().join("huge_j2k.dcm");
    std::fs::write(&p, &b).unwrap();
    assert_err_names(&p, &read(&p).unwrap_err());

    // Pixel Data claiming 4 GB (OW long length at +8).
    let mut b = base.clone();
    let at = find_element(&b, 0x7FE0, 0x0010, b"OW") + 8;
    b[at..at + 4].copy_from_slice(&0xFFFF_FFF0u32.to_le_bytes());
    let p = dir.path().join("huge_pixeldata.dcm");
    std::fs::write(&p, &b).unwrap();
    let err = read(&p).unwrap_err();
    assert_err_names(&p, &err);
    assert!(err.to_string().contains("claims"), "{err}");

    // NumberOfFrames of 12 digits (the IS maximum): no overflow, no allocation.
    let mut obj = dicom_object::open_file(sample("MR_small.dcm")).unwrap();
    obj.put(dicom_core::DataElement::new(
        dicom_dictionary_std::tags::NUMBER_OF_FRAMES,
        dicom_core::VR::IS,
        dicom_core::PrimitiveValue::from("999999999999"),
    ));
    let p = dir.path().join("many_frames.dcm");
    obj.write_to_file(&p).unwrap();
    let err = read(&p).unwrap_err();
    assert_err_names(&p, &err);
    assert!(err.to_string().contains("999999999999"), "{err}");

    // A text element claiming 60 kB in a 10 kB file.
    let mut b = base;
    let at = find_element(&b, 0x0008, 0x0070, b"LO") + 6;
    b[at..at + 2].copy_from_slice(&60000u16.to_le_bytes());
    let p = dir.path().join("long_text.dcm");
    std::fs::write(&p, &b).unwrap();
    assert_err_names(&p, &read(&p).unwrap_err());
}

#[test]
fn missing_file_and_empty_folder() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("nope.dcm");
    let err = read(&p).unwrap_err();
    assert!(matches!(err, IoError::Os { .. }));
    assert_err_names(&p, &err);

    std::fs::write(dir.path().join("notes.txt"), b"not an image").unwrap();
    std::fs::write(dir.path().join("DICOMDIR"), vec![0u8; 300]).unwrap();
    let err = read(dir.path()).unwrap_err();
    assert_err_names(dir.path(), &err);
    assert!(err.to_string().contains("no DICOM"), "{err}");
}

#[test]
fn inconsistent_rows_in_a_series_is_an_error_naming_the_file() {
    // A 64×64 MR_small given the SeriesInstanceUID of the 16×16 MR700 series.
    let dir = tempfile::tempdir().unwrap();
    let mr700 = sample("MR700/4467");
    let uid = read(&mr700).unwrap()[0]
        .meta
        .series
        .as_ref()
        .unwrap()
        .series_instance_uid
        .clone();
    let mut obj = dicom_object::open_file(sample("MR_small.dcm")).unwrap();
    obj.put(dicom_core::DataElement::new(
        dicom_dictionary_std::tags::SERIES_INSTANCE_UID,
        dicom_core::VR::UI,
        dicom_core::PrimitiveValue::from(uid.as_str()),
    ));
    std::fs::copy(&mr700, dir.path().join("a.dcm")).unwrap();
    let bad = dir.path().join("b.dcm");
    obj.write_to_file(&bad).unwrap();
    let err = read(dir.path()).unwrap_err();
    assert_err_names(&bad, &err);
    assert!(err.to_string().contains("64×64"), "{err}");
}

#[test]
fn write_read_round_trip_keeps_values_and_geometry() {
    let dir = tempfile::tempdir().unwrap();
    for src in [
        "oblique_stack",
        "enhanced/oblique_stack_enhanced.dcm",
        "MR_small_int32.dcm",
    ] {
        let v = read(&sample(src)).unwrap().remove(0);
        let out = dir.path().join(src.replace('/', "_"));
        let files = write_series(&out, &v, &DicomWriteOptions::default()).unwrap();
        assert_eq!(files.len(), v.slices());
        let back = read(&out).unwrap();
        assert_eq!(back.len(), 1, "{src}");
        let b = &back[0];
        assert_eq!(b.shape4(), v.shape4());
        let d = b.affine.max_abs_diff(&v.affine);
        assert!(d < 1e-4, "{src}: affine moved by {d} mm");
        let (lo, hi) = v.finite_range().unwrap();
        let tol = f64::from(hi - lo) / 131070.0 * 1.001 + 1e-6 * f64::from(hi.abs().max(lo.abs()));
        let err = v
            .data
            .iter()
            .zip(b.data.iter())
            .map(|(x, y)| f64::from((x - y).abs()))
            .fold(0.0, f64::max);
        assert!(err <= tol, "{src}: max error {err} > {tol}");
        let s = b.meta.series.as_ref().unwrap();
        let src_series = v.meta.series.as_ref().unwrap();
        assert_ne!(s.series_instance_uid, src_series.series_instance_uid);
        assert!(s.series_instance_uid.starts_with("2.25."));
        assert_eq!(s.study_instance_uid, src_series.study_instance_uid);
        assert_eq!(s.frame_of_reference_uid, src_series.frame_of_reference_uid);
        assert_eq!(s.sop_class_uid, "1.2.840.10008.5.1.4.1.1.4");
        assert_eq!(s.transfer_syntax, "1.2.840.10008.1.2.1");
        assert_eq!(b.meta.patient, v.meta.patient);
        // The source SOP Instance UIDs are referenced.
        let bytes = std::fs::read(&files[0]).unwrap();
        for uid in &src_series.sop_instance_uids {
            let found = bytes.windows(uid.len()).any(|w| w == uid.as_bytes());
            assert!(found, "{src}: source SOP {uid} not referenced");
        }
    }
}

#[test]
fn integer_data_round_trips_exactly_and_frames_are_kept() {
    let dir = tempfile::tempdir().unwrap();
    let mut data = Array4::<f32>::zeros((2, 3, 5, 4));
    for (i, x) in data.iter_mut().enumerate() {
        *x = (i as f32 * 37.0) % 900.0 - 300.0;
    }
    let affine = Affine::from_directions(
        [[0.0, 1.0, 0.0], [0.0, 0.0, -1.0], [-1.0, 0.0, 0.0]],
        [0.7, 0.9, 3.0],
        [12.5, -40.25, 7.0],
    );
    let v = Volume::new(data, affine);
    let files = write_series(dir.path(), &v, &DicomWriteOptions::default()).unwrap();
    assert_eq!(files.len(), 6);
    let back = read(dir.path()).unwrap();
    assert_eq!(back.len(), 1);
    assert_eq!(
        back[0].data, v.data,
        "integer samples must be stored exactly"
    );
    assert!(back[0].affine.max_abs_diff(&affine) < 1e-9);
    assert_eq!(back[0].affine.orientation_code(), "AIL");
}

#[test]
fn deidentify_removes_patient_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let v = read(&sample("oblique_stack")).unwrap().remove(0);
    let p = v.meta.patient.clone().unwrap();
    assert_eq!(p.birth_date, "19510412");
    let plain = write_series(&dir.path().join("plain"), &v, &DicomWriteOptions::default()).unwrap();
    let opts = DicomWriteOptions {
        deidentify: true,
        ..DicomWriteOptions::default()
    };
    let anon = write_series(&dir.path().join("anon"), &v, &opts).unwrap();
    let contains = |b: &[u8], s: &str| b.windows(s.len()).any(|w| w == s.as_bytes());
    let secrets = [p.name.as_str(), p.id.as_str(), p.birth_date.as_str()];
    // Without de-identification the patient module is copied (so the test can fail).
    let bytes = std::fs::read(&plain[0]).unwrap();
    for s in secrets {
        assert!(contains(&bytes, s), "plain copy lacks {s}");
    }
    let source_uids = v.meta.series.as_ref().unwrap();
    for f in &anon {
        let bytes = std::fs::read(f).unwrap();
        for s in secrets {
            assert!(!contains(&bytes, s), "{}: still holds {s}", f.display());
        }
        for uid in [
            &source_uids.study_instance_uid,
            &source_uids.series_instance_uid,
            &source_uids.frame_of_reference_uid,
        ] {
            assert!(
                !contains(&bytes, uid),
                "{}: links to source {uid}",
                f.display()
            );
        }
    }
    let back = &read(&dir.path().join("anon")).unwrap()[0];
    assert_eq!(back.meta.patient.as_ref().unwrap().name, "ANONYMOUS");
    assert!(back.affine.max_abs_diff(&v.affine) < 1e-4);
}

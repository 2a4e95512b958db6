//! DICOM writer: a derived MR Image Storage series, one explicit-VR-little-endian file per slice.

use std::borrow::Cow;
use std::path::{Path, PathBuf};

use amri_core::{PatientInfo, SeriesInfo, Volume};
use dicom_core::value::{DataSetSequence, PrimitiveValue};
use dicom_core::{DataElement, Tag, VR};
use dicom_dictionary_std::{tags, uids};
use dicom_object::{FileMetaTableBuilder, InMemDicomObject};

use crate::{atomic, IoError, Result};

/// SOP Class UID of MR Image Storage, the class every written file has.
const MR_IMAGE_STORAGE: &str = "1.2.840.10008.5.1.4.1.1.4";
/// Largest |dot| between the affine's unit row and column directions accepted as perpendicular.
const ORTHO_TOL: f64 = 1e-4;

/// Options of [`write_series`].
#[derive(Clone, Debug, PartialEq)]
pub struct DicomWriteOptions {
    /// Replace patient identity and drop links to the source (see docs/formats.md, `## DICOM`).
    pub deidentify: bool,
    /// SeriesDescription (0008,103E) of the new series.
    pub series_description: String,
    /// SeriesNumber (0020,0011) of the new series.
    pub series_number: i32,
    /// DerivationDescription (0008,2111): how the images were derived from the source.
    pub derivation_description: String,
}

impl Default for DicomWriteOptions {
    fn default() -> Self {
        Self {
            deidentify: false,
            series_description: "amri reconstruction".into(),
            series_number: 1001,
            derivation_description: "reconstructed by amri".into(),
        }
    }
}

/// A new UID under the `2.25` root: a random (version 4) UUID written as one decimal integer.
fn new_uid() -> String {
    let mut u: u128 = rand::random();
    u = (u & !(0xF_u128 << 76)) | (0x4_u128 << 76);
    u = (u & !(0x3_u128 << 62)) | (0x2_u128 << 62);
    format!("2.25.{u}")
}

/// A decimal string (DS) of at most 16 characters, as precise as fits.
fn ds(v: f64) -> String {
    if v == 0.0 || !v.is_finite() {
        return "0".into();
    }
    let s = format!("{v}");
    if s.len() <= 16 {
        return s;
    }
    for prec in (0..=15).rev() {
        let s = format!("{v:.prec$}");
        let s = if s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.').to_string()
        } else {
            s
        };
        if s.len() <= 16 && s != "0" && s != "-0" {
            return s;
        }
    }
    for prec in (0..=9).rev() {
        let s = format!("{v:.prec$e}");
        if s.len() <= 16 {
            return s;
        }
    }
    "0".into()
}

/// Parses back a DS written by [`ds`] (so quantisation uses what readers will see).
fn ds_value(s: &str) -> f64 {
    s.parse().unwrap_or(0.0)
}

/// Int16 storage of `data`: `(slope, intercept, stored)` as DS strings and values, with
/// `value ≈ stored × slope + intercept`. Integer data that fits is stored exactly (slope 1);
/// otherwise the finite range is spread over all 65536 codes, so the error is at most
/// `slope / 2 = (max − min) / 131070`. Non-finite samples become the nearest finite extreme
/// (NaN the minimum).
fn quantise(data: &[f32]) -> (String, String, Vec<i16>) {
    let Some((lo, hi)) = amri_core::finite_range(data.iter().copied()) else {
        return ("1".into(), "0".into(), vec![0; data.len()]);
    };
    let (lo, hi) = (f64::from(lo), f64::from(hi));
    let integral = data
        .iter()
        .filter(|v| v.is_finite())
        .all(|v| v.fract() == 0.0);
    let (slope, intercept) = if integral && lo >= -32768.0 && hi <= 32767.0 {
        ("1".to_string(), "0".to_string())
    } else if integral && hi - lo <= 65535.0 {
        ("1".to_string(), ds(lo + 32768.0))
    } else if hi > lo {
        let s = ds((hi - lo) / 65535.0 * (1.0 + 1e-9));
        let b = ds(lo + 32768.0 * ds_value(&s));
        (s, b)
    } else {
        ("1".to_string(), ds(lo))
    };
    let (s, b) = (ds_value(&slope), ds_value(&intercept));
    let stored = data
        .iter()
        .map(|&v| {
            let v = if v.is_nan() {
                lo
            } else {
                f64::from(v).clamp(lo, hi)
            };
            ((v - b) / s).round().clamp(-32768.0, 32767.0) as i16
        })
        .collect();
    (slope, intercept, stored)
}

fn put_str(obj: &mut InMemDicomObject, tag: Tag, vr: VR, s: &str) {
    obj.put(DataElement::new(tag, vr, PrimitiveValue::from(s)));
}

fn put_strs(obj: &mut InMemDicomObject, tag: Tag, vr: VR, v: &[String]) {
    obj.put(DataElement::new(
        tag,
        vr,
        PrimitiveValue::Strs(v.to_vec().into()),
    ));
}

fn put_us(obj: &mut InMemDicomObject, tag: Tag, v: u16) {
    obj.put(DataElement::new(tag, VR::US, PrimitiveValue::from(v)));
}

fn put_seq(obj: &mut InMemDicomObject, tag: Tag, items: Vec<InMemDicomObject>) {
    obj.put(DataElement::new(tag, VR::SQ, DataSetSequence::from(items)));
}

fn sop_ref(class: &str, instance: &str) -> InMemDicomObject {
    let mut it = InMemDicomObject::new_empty();
    put_str(&mut it, tags::REFERENCED_SOP_CLASS_UID, VR::UI, class);
    put_str(&mut it, tags::REFERENCED_SOP_INSTANCE_UID, VR::UI, instance);
    it
}

fn norm(v: [f64; 3]) -> f64 {
    (v[0] * v[0] + v[1] * v[1] + v[2] * v[2]).sqrt()
}

/// Writes `vol` as a derived MR image series into folder `dir` (created if missing): one file
/// `IM00001.dcm`, ... per slice and frame (frame-major: file `t × slices + k + 1`), explicit VR
/// little endian, MR Image Storage, ImageType `DERIVED\SECONDARY`, int16 samples with
/// RescaleSlope/Intercept (exact for integer data within 65536 codes, else error ≤ range/131070),
/// geometry from the affine (RAS → LPS ImagePositionPatient per slice, ImageOrientationPatient,
/// PixelSpacing `[row, col]`, SliceThickness = SpacingBetweenSlices = slice step). New Study
/// (unless the source's is known), Series and SOP Instance UIDs use the `2.25` UUID root. When the
/// volume came from DICOM, FrameOfReference and Study are kept and ReferencedSeriesSequence /
/// SourceImageSequence name the source; with `deidentify` patient identity is replaced and no
/// source UID is written. Each file is written atomically; returns the paths in slice order.
pub fn write_series(
    dir: &Path,
    vol: &Volume<f32>,
    opts: &DicomWriteOptions,
) -> Result<Vec<PathBuf>> {
    let [nframes, nslices, rows, cols] = vol.shape4();
    if nframes == 0 || nslices == 0 || rows == 0 || cols == 0 {
        return Err(IoError::Unwritable {
            path: dir.to_path_buf(),
            msg: format!("empty volume {:?}", vol.shape4()),
        });
    }
    if rows > 65535 || cols > 65535 {
        return Err(IoError::Unwritable {
            path: dir.to_path_buf(),
            msg: format!("{rows}×{cols} slices exceed DICOM's 65535 rows/columns"),
        });
    }
    vol.affine.validate().map_err(|e| IoError::Unwritable {
        path: dir.to_path_buf(),
        msg: format!("affine: {e}"),
    })?;
    let lps = vol.affine.ras_to_lps();
    let (c0, c1, c2) = (lps.column(0), lps.column(1), lps.column(2));
    let (col_spacing, row_spacing, slice_step) = (norm(c0), norm(c1), norm(c2));
    let rowdir = c0.map(|x| x / col_spacing);
    let coldir = c1.map(|x| x / row_spacing);
    let d = rowdir[0] * coldir[0] + rowdir[1] * coldir[1] + rowdir[2] * coldir[2];
    if d.abs() > ORTHO_TOL {
        return Err(IoError::Unwritable {
            path: dir.to_path_buf(),
            msg: format!(
                "in-plane axes of the affine are not perpendicular (cos = {d:.2e}); DICOM cannot \
                 store a sheared pixel grid"
            ),
        });
    }
    std::fs::create_dir_all(dir).map_err(|e| IoError::os(dir, e))?;

    let source: Option<&SeriesInfo> = vol
        .meta
        .series
        .as_ref()
        .filter(|s| !s.series_instance_uid.is_empty());
    let link = source.filter(|_| !opts.deidentify);
    let study_uid = link
        .map(|s| s.study_instance_uid.clone())
        .filter(|u| !u.is_empty())
        .unwrap_or_else(new_uid);
    let for_uid = link
        .map(|s| s.frame_of_reference_uid.clone())
        .filter(|u| !u.is_empty())
        .unwrap_or_else(new_uid);
    let series_uid = new_uid();
    let patient = if opts.deidentify {
        PatientInfo {
            name: "ANONYMOUS".into(),
            id: format!("AMRI-{:016X}", rand::random::<u64>()),
            birth_date: String::new(),
            sex: String::new(),
        }
    } else {
        vol.meta.patient.clone().unwrap_or_default()
    };

    let flat: Cow<'_, [f32]> = match vol.data.as_slice() {
        Some(s) => Cow::Borrowed(s),
        None => Cow::Owned(vol.data.iter().copied().collect()),
    };
    let (slope, intercept, stored) = quantise(&flat);
    let (lo, hi) = vol.finite_range().unwrap_or((0.0, 0.0));
    let center = ds((f64::from(lo) + f64::from(hi)) / 2.0);
    let width = ds((f64::from(hi) - f64::from(lo)).max(1.0));

    let iop: Vec<String> = rowdir.iter().chain(coldir.iter()).map(|v| ds(*v)).collect();
    let pixel_spacing = vec![ds(row_spacing), ds(col_spacing)];
    let thickness = ds(slice_step);
    let sop_uids: Vec<String> = (0..nframes * nslices).map(|_| new_uid()).collect();

    // References to the source (not when de-identifying).
    let referenced_series = link.map(|s| {
        let mut it = InMemDicomObject::new_empty();
        put_str(
            &mut it,
            tags::SERIES_INSTANCE_UID,
            VR::UI,
            &s.series_instance_uid,
        );
        let class = if s.sop_class_uid.is_empty() {
            MR_IMAGE_STORAGE
        } else {
            &s.sop_class_uid
        };
        let refs = s
            .sop_instance_uids
            .iter()
            .map(|u| sop_ref(class, u))
            .collect();
        put_seq(&mut it, tags::REFERENCED_INSTANCE_SEQUENCE, refs);
        it
    });

    let plane = rows * cols;
    let mut paths = Vec::with_capacity(nframes * nslices);
    for t in 0..nframes {
        for k in 0..nslices {
            let index = t * nslices + k;
            let path = dir.join(format!("IM{:05}.dcm", index + 1));
            let mut o = InMemDicomObject::new_empty();
            put_str(&mut o, tags::SPECIFIC_CHARACTER_SET, VR::CS, "ISO_IR 192");
            put_strs(
                &mut o,
                tags::IMAGE_TYPE,
                VR::CS,
                &["DERIVED".to_string(), "SECONDARY".to_string()],
            );
            put_str(&mut o, tags::SOP_CLASS_UID, VR::UI, MR_IMAGE_STORAGE);
            put_str(&mut o, tags::SOP_INSTANCE_UID, VR::UI, &sop_uids[index]);
            put_str(&mut o, tags::STUDY_DATE, VR::DA, "");
            put_str(&mut o, tags::STUDY_TIME, VR::TM, "");
            put_str(&mut o, tags::ACCESSION_NUMBER, VR::SH, "");
            put_str(&mut o, tags::MODALITY, VR::CS, "MR");
            put_str(&mut o, tags::MANUFACTURER, VR::LO, "amri");
            put_str(&mut o, tags::REFERRING_PHYSICIAN_NAME, VR::PN, "");
            // PS3.15 Basic Profile: Series and Derivation Description are X (removed), as a
            // free-text description may name the patient.
            if !opts.deidentify {
                put_str(
                    &mut o,
                    tags::SERIES_DESCRIPTION,
                    VR::LO,
                    &opts.series_description,
                );
                put_str(
                    &mut o,
                    tags::DERIVATION_DESCRIPTION,
                    VR::ST,
                    &opts.derivation_description,
                );
            }
            if let Some(rs) = &referenced_series {
                put_seq(&mut o, tags::REFERENCED_SERIES_SEQUENCE, vec![rs.clone()]);
            }
            if let Some(s) = link {
                // The source instance of this slice: per slice when the source had one
                // instance per slice (and frame), else the single multi-frame instance.
                let class = if s.sop_class_uid.is_empty() {
                    MR_IMAGE_STORAGE
                } else {
                    &s.sop_class_uid
                };
                let src = if s.sop_instance_uids.len() == nframes * nslices {
                    s.sop_instance_uids.get(index)
                } else if s.sop_instance_uids.len() == nslices {
                    s.sop_instance_uids.get(k)
                } else if s.sop_instance_uids.len() == 1 {
                    s.sop_instance_uids.first()
                } else {
                    None
                };
                if let Some(u) = src {
                    put_seq(&mut o, tags::SOURCE_IMAGE_SEQUENCE, vec![sop_ref(class, u)]);
                }
            }
            put_str(&mut o, tags::PATIENT_NAME, VR::PN, &patient.name);
            put_str(&mut o, tags::PATIENT_ID, VR::LO, &patient.id);
            put_str(
                &mut o,
                tags::PATIENT_BIRTH_DATE,
                VR::DA,
                &patient.birth_date,
            );
            put_str(&mut o, tags::PATIENT_SEX, VR::CS, &patient.sex);
            if opts.deidentify {
                put_str(&mut o, tags::PATIENT_IDENTITY_REMOVED, VR::CS, "YES");
                put_str(
                    &mut o,
                    tags::DEIDENTIFICATION_METHOD,
                    VR::LO,
                    "amri: PS3.15 Basic Profile on the attributes amri writes",
                );
                // De-identification Method Code Sequence: 113100 "Basic Application
                // Confidentiality Profile" (DCM, PS3.16 CID 7050).
                let mut code = InMemDicomObject::new_empty();
                put_str(&mut code, tags::CODE_VALUE, VR::SH, "113100");
                put_str(&mut code, tags::CODING_SCHEME_DESIGNATOR, VR::SH, "DCM");
                put_str(
                    &mut code,
                    tags::CODE_MEANING,
                    VR::LO,
                    "Basic Application Confidentiality Profile",
                );
                put_seq(
                    &mut o,
                    tags::DEIDENTIFICATION_METHOD_CODE_SEQUENCE,
                    vec![code],
                );
            }
            put_strs(&mut o, tags::SCANNING_SEQUENCE, VR::CS, &["RM".to_string()]);
            put_strs(
                &mut o,
                tags::SEQUENCE_VARIANT,
                VR::CS,
                &["NONE".to_string()],
            );
            put_str(&mut o, tags::SCAN_OPTIONS, VR::CS, "");
            put_str(&mut o, tags::MR_ACQUISITION_TYPE, VR::CS, "");
            put_str(&mut o, tags::SLICE_THICKNESS, VR::DS, &thickness);
            put_str(&mut o, tags::SPACING_BETWEEN_SLICES, VR::DS, &thickness);
            if let Some(s) = source {
                if let Some(tr) = s.repetition_time_ms {
                    put_str(&mut o, tags::REPETITION_TIME, VR::DS, &ds(tr));
                }
                if let Some(te) = s.echo_time_ms {
                    put_str(&mut o, tags::ECHO_TIME, VR::DS, &ds(te));
                }
                if let Some(b) = s.field_strength_t {
                    put_str(&mut o, tags::MAGNETIC_FIELD_STRENGTH, VR::DS, &ds(b));
                }
            }
            put_str(&mut o, tags::ECHO_TRAIN_LENGTH, VR::IS, "");
            put_str(
                &mut o,
                tags::SOFTWARE_VERSIONS,
                VR::LO,
                concat!("amri ", env!("CARGO_PKG_VERSION")),
            );
            put_str(&mut o, tags::STUDY_INSTANCE_UID, VR::UI, &study_uid);
            put_str(&mut o, tags::SERIES_INSTANCE_UID, VR::UI, &series_uid);
            put_str(&mut o, tags::STUDY_ID, VR::SH, "");
            put_str(
                &mut o,
                tags::SERIES_NUMBER,
                VR::IS,
                &opts.series_number.to_string(),
            );
            put_str(
                &mut o,
                tags::INSTANCE_NUMBER,
                VR::IS,
                &(index + 1).to_string(),
            );
            let ipp: Vec<String> = lps
                .apply([0.0, 0.0, k as f64])
                .iter()
                .map(|v| ds(*v))
                .collect();
            put_strs(&mut o, tags::IMAGE_POSITION_PATIENT, VR::DS, &ipp);
            put_strs(&mut o, tags::IMAGE_ORIENTATION_PATIENT, VR::DS, &iop);
            put_str(&mut o, tags::FRAME_OF_REFERENCE_UID, VR::UI, &for_uid);
            if nframes > 1 {
                put_str(
                    &mut o,
                    tags::TEMPORAL_POSITION_IDENTIFIER,
                    VR::IS,
                    &(t + 1).to_string(),
                );
                put_str(
                    &mut o,
                    tags::NUMBER_OF_TEMPORAL_POSITIONS,
                    VR::IS,
                    &nframes.to_string(),
                );
            }
            put_str(&mut o, tags::POSITION_REFERENCE_INDICATOR, VR::LO, "");
            put_us(&mut o, tags::SAMPLES_PER_PIXEL, 1);
            put_str(
                &mut o,
                tags::PHOTOMETRIC_INTERPRETATION,
                VR::CS,
                "MONOCHROME2",
            );
            put_us(&mut o, tags::ROWS, rows as u16);
            put_us(&mut o, tags::COLUMNS, cols as u16);
            put_strs(&mut o, tags::PIXEL_SPACING, VR::DS, &pixel_spacing);
            put_us(&mut o, tags::BITS_ALLOCATED, 16);
            put_us(&mut o, tags::BITS_STORED, 16);
            put_us(&mut o, tags::HIGH_BIT, 15);
            put_us(&mut o, tags::PIXEL_REPRESENTATION, 1);
            put_str(&mut o, tags::WINDOW_CENTER, VR::DS, &center);
            put_str(&mut o, tags::WINDOW_WIDTH, VR::DS, &width);
            put_str(&mut o, tags::RESCALE_INTERCEPT, VR::DS, &intercept);
            put_str(&mut o, tags::RESCALE_SLOPE, VR::DS, &slope);
            put_str(&mut o, tags::RESCALE_TYPE, VR::LO, "US");
            let px: Vec<i16> = stored[index * plane..(index + 1) * plane].to_vec();
            o.put(DataElement::new(
                tags::PIXEL_DATA,
                VR::OW,
                PrimitiveValue::I16(px.into()),
            ));

            let file = o
                .with_meta(
                    FileMetaTableBuilder::new()
                        .transfer_syntax(uids::EXPLICIT_VR_LITTLE_ENDIAN)
                        .media_storage_sop_class_uid(MR_IMAGE_STORAGE)
                        .media_storage_sop_instance_uid(sop_uids[index].as_str()),
                )
                .map_err(|e| IoError::Unwritable {
                    path: path.clone(),
                    msg: format!("file meta group: {e}"),
                })?;
            let mut bytes = Vec::with_capacity(plane * 2 + 4096);
            file.write_all(&mut bytes)
                .map_err(|e| IoError::Unwritable {
                    path: path.clone(),
                    msg: format!("encoding: {e}"),
                })?;
            atomic::write_bytes(&path, &bytes)?;
            paths.push(path);
        }
    }
    Ok(paths)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ds_fits_sixteen_chars_and_keeps_precision() {
        for v in [
            0.1 + 0.2,
            -83.90630000001,
            1.0 / 3.0,
            -123456.789012345,
            6.53996e-01,
            1e-12,
            -2.5e20,
        ] {
            let s = ds(v);
            assert!(s.len() <= 16, "{s}");
            let back: f64 = s.parse().unwrap();
            assert!(
                (back - v).abs() <= 1e-9 * v.abs().max(1.0) || (back - v).abs() / v.abs() < 1e-6,
                "{v} -> {s}"
            );
        }
        assert_eq!(ds(0.0), "0");
        assert_eq!(ds(-83.90625), "-83.90625");
    }

    #[test]
    fn quantise_is_exact_for_int16_and_bounded_otherwise() {
        let ints = [-5.0f32, 0.0, 1200.0, -32768.0, 32767.0];
        let (s, b, q) = quantise(&ints);
        assert_eq!((s.as_str(), b.as_str()), ("1", "0"));
        assert_eq!(q, vec![-5, 0, 1200, -32768, 32767]);

        let shifted = [40000.0f32, 100000.0];
        let (s, b, q) = quantise(&shifted);
        let (s, b) = (ds_value(&s), ds_value(&b));
        for (v, q) in shifted.iter().zip(&q) {
            assert_eq!(f64::from(*q) * s + b, f64::from(*v));
        }

        let real: Vec<f32> = (0..1000)
            .map(|i| (i as f32 * 0.37).sin() * 3.5e-3 + 1.0)
            .collect();
        let (s, b, q) = quantise(&real);
        let (s, b) = (ds_value(&s), ds_value(&b));
        let range = 2.0 * 3.5e-3;
        for (v, q) in real.iter().zip(&q) {
            let err = (f64::from(*q) * s + b - f64::from(*v)).abs();
            assert!(err <= range / 131070.0 * 1.01 + 1e-7, "{err}");
        }
        assert_eq!(q.iter().min(), Some(&-32768));
        assert_eq!(q.iter().max(), Some(&32767));
    }

    #[test]
    fn uids_are_2_25_and_distinct() {
        let a = new_uid();
        let b = new_uid();
        assert!(a.starts_with("2.25.") && a.len() <= 64);
        assert_ne!(a, b);
        assert!(a[5..].chars().all(|c| c.is_ascii_digit()));
    }

    /// What PS3.15 Table E.1-1 (Basic Profile) asks of each attribute amri writes, as applied
    /// with `deidentify` (docs/reliability.md lists the same table).
    #[derive(Clone, Copy, Debug, PartialEq)]
    enum Action {
        /// Not in the profile (or K): kept.
        K,
        /// Z: written empty.
        Z,
        /// Z with a dummy value that is not the source's.
        ZDummy,
        /// X: not written.
        X,
        /// U: a new `2.25.` UID, never the source's.
        U,
        /// Added by the profile (Patient Identity Removed and the method attributes).
        Added,
    }

    const PROFILE: &[(Tag, Action)] = &[
        (tags::SPECIFIC_CHARACTER_SET, Action::K),
        (tags::IMAGE_TYPE, Action::K),
        (tags::SOP_CLASS_UID, Action::K),
        (tags::SOP_INSTANCE_UID, Action::U),
        (tags::STUDY_DATE, Action::Z),
        (tags::STUDY_TIME, Action::Z),
        (tags::ACCESSION_NUMBER, Action::Z),
        (tags::MODALITY, Action::K),
        (tags::MANUFACTURER, Action::K),
        (tags::REFERRING_PHYSICIAN_NAME, Action::Z),
        (tags::SERIES_DESCRIPTION, Action::X),
        (tags::REFERENCED_SERIES_SEQUENCE, Action::X),
        (tags::DERIVATION_DESCRIPTION, Action::X),
        (tags::SOURCE_IMAGE_SEQUENCE, Action::X),
        (tags::PATIENT_NAME, Action::ZDummy),
        (tags::PATIENT_ID, Action::ZDummy),
        (tags::PATIENT_BIRTH_DATE, Action::Z),
        (tags::PATIENT_SEX, Action::Z),
        (tags::PATIENT_IDENTITY_REMOVED, Action::Added),
        (tags::DEIDENTIFICATION_METHOD, Action::Added),
        (tags::DEIDENTIFICATION_METHOD_CODE_SEQUENCE, Action::Added),
        (tags::SCANNING_SEQUENCE, Action::K),
        (tags::SEQUENCE_VARIANT, Action::K),
        (tags::SCAN_OPTIONS, Action::K),
        (tags::MR_ACQUISITION_TYPE, Action::K),
        (tags::SLICE_THICKNESS, Action::K),
        (tags::REPETITION_TIME, Action::K),
        (tags::ECHO_TIME, Action::K),
        (tags::MAGNETIC_FIELD_STRENGTH, Action::K),
        (tags::SPACING_BETWEEN_SLICES, Action::K),
        (tags::ECHO_TRAIN_LENGTH, Action::K),
        (tags::SOFTWARE_VERSIONS, Action::K),
        (tags::STUDY_INSTANCE_UID, Action::U),
        (tags::SERIES_INSTANCE_UID, Action::U),
        (tags::STUDY_ID, Action::Z),
        (tags::SERIES_NUMBER, Action::K),
        (tags::INSTANCE_NUMBER, Action::K),
        (tags::IMAGE_POSITION_PATIENT, Action::K),
        (tags::IMAGE_ORIENTATION_PATIENT, Action::K),
        (tags::FRAME_OF_REFERENCE_UID, Action::U),
        (tags::TEMPORAL_POSITION_IDENTIFIER, Action::K),
        (tags::NUMBER_OF_TEMPORAL_POSITIONS, Action::K),
        (tags::POSITION_REFERENCE_INDICATOR, Action::K),
        (tags::SAMPLES_PER_PIXEL, Action::K),
        (tags::PHOTOMETRIC_INTERPRETATION, Action::K),
        (tags::ROWS, Action::K),
        (tags::COLUMNS, Action::K),
        (tags::PIXEL_SPACING, Action::K),
        (tags::BITS_ALLOCATED, Action::K),
        (tags::BITS_STORED, Action::K),
        (tags::HIGH_BIT, Action::K),
        (tags::PIXEL_REPRESENTATION, Action::K),
        (tags::WINDOW_CENTER, Action::K),
        (tags::WINDOW_WIDTH, Action::K),
        (tags::RESCALE_INTERCEPT, Action::K),
        (tags::RESCALE_SLOPE, Action::K),
        (tags::RESCALE_TYPE, Action::K),
        (tags::PIXEL_DATA, Action::K),
    ];

    /// A two-frame, two-slice volume that came from a DICOM series with a known patient.
    fn identified_volume() -> Volume<f32> {
        let data = ndarray::Array4::from_shape_fn((2, 2, 4, 3), |(t, k, r, c)| {
            (t * 100 + k * 10 + r * 3 + c) as f32
        });
        let mut v = Volume::new(data, amri_core::Affine::IDENTITY);
        v.meta.patient = Some(PatientInfo {
            name: "Doe^Jane".into(),
            id: "PID-0042-SECRET".into(),
            birth_date: "19610723".into(),
            sex: "F".into(),
        });
        v.meta.series = Some(SeriesInfo {
            modality: "MR".into(),
            series_description: "Jane Doe knee".into(),
            study_instance_uid: "1.2.3.4.100".into(),
            series_instance_uid: "1.2.3.4.200".into(),
            frame_of_reference_uid: "1.2.3.4.300".into(),
            sop_class_uid: MR_IMAGE_STORAGE.into(),
            sop_instance_uids: (0..4).map(|i| format!("1.2.3.4.40{i}")).collect(),
            manufacturer: "ACME".into(),
            field_strength_t: Some(3.0),
            repetition_time_ms: Some(500.0),
            echo_time_ms: Some(15.0),
            transfer_syntax: uids::EXPLICIT_VR_LITTLE_ENDIAN.into(),
        });
        v
    }

    #[test]
    fn deidentified_files_follow_the_basic_profile_tag_by_tag() {
        let v = identified_volume();
        let dir = tempfile::tempdir().unwrap();
        let opts = DicomWriteOptions {
            series_description: "Jane Doe knee recon".into(),
            ..DicomWriteOptions::default()
        };
        let plain = write_series(&dir.path().join("plain"), &v, &opts).unwrap();
        let deid = DicomWriteOptions {
            deidentify: true,
            ..opts
        };
        let anon = write_series(&dir.path().join("anon"), &v, &deid).unwrap();
        let source_uids = ["1.2.3.4.100", "1.2.3.4.200", "1.2.3.4.300", "1.2.3.4.400"];
        let text = |o: &InMemDicomObject, t: Tag| {
            o.get(t)
                .and_then(|e| e.to_str().ok())
                .map(|s| s.trim_end_matches(['\0', ' ']).to_string())
        };

        // Without de-identification the identity and the links are there (the test can fail).
        let p = dicom_object::open_file(&plain[0]).unwrap();
        assert_eq!(text(&p, tags::PATIENT_NAME).as_deref(), Some("Doe^Jane"));
        assert_eq!(
            text(&p, tags::STUDY_INSTANCE_UID).as_deref(),
            Some("1.2.3.4.100")
        );
        for (tag, action) in PROFILE {
            if *action == Action::X {
                assert!(p.get(*tag).is_some(), "{tag} missing from the plain file");
            }
        }

        for f in &anon {
            let o = dicom_object::open_file(f).unwrap();
            let sop = text(&o, tags::SOP_INSTANCE_UID).unwrap();
            assert_eq!(o.meta().media_storage_sop_instance_uid(), sop);
            for e in o.iter() {
                let tag = e.header().tag;
                assert!(
                    PROFILE.iter().any(|(t, _)| *t == tag),
                    "{}: writes {tag}, which the profile table does not list",
                    f.display()
                );
            }
            for (tag, action) in PROFILE {
                let value = text(&o, *tag);
                match action {
                    Action::K => {}
                    Action::Z => assert_eq!(value.as_deref(), Some(""), "{tag}"),
                    Action::ZDummy => {
                        let s = value.unwrap();
                        assert!(!s.is_empty() && !s.contains("Doe") && !s.contains("0042"));
                    }
                    Action::X => assert!(o.get(*tag).is_none(), "{tag} written"),
                    Action::U => {
                        let u = value.unwrap();
                        assert!(u.starts_with("2.25."), "{tag} = {u}");
                        assert!(!source_uids.iter().any(|s| u.starts_with(s)), "{tag} = {u}");
                    }
                    Action::Added => assert!(o.get(*tag).is_some(), "{tag} missing"),
                }
            }
            assert_eq!(
                text(&o, tags::PATIENT_IDENTITY_REMOVED).as_deref(),
                Some("YES")
            );
            let code = o
                .get(tags::DEIDENTIFICATION_METHOD_CODE_SEQUENCE)
                .and_then(|e| e.items())
                .and_then(|i| i.first())
                .unwrap();
            assert_eq!(text(code, tags::CODE_VALUE).as_deref(), Some("113100"));
            let bytes = std::fs::read(f).unwrap();
            for secret in ["Doe", "Jane", "PID-0042", "19610723", "1.2.3.4."] {
                assert!(
                    !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
                    "{}: holds {secret}",
                    f.display()
                );
            }
        }
    }
}

//! DICOM reader: files and series folders into [`Volume`]s with geometry.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use amri_core::{Affine, Metadata, PatientInfo, SeriesInfo, Volume};
use dicom_core::value::Value;
use dicom_core::{DataDictionary, Tag};
use dicom_dictionary_std::tags;
use dicom_object::file::ReadPreamble;
use dicom_object::{DefaultDicomObject, InMemDicomObject, OpenFileOptions};
use dicom_pixeldata::PixelDecoder;
use ndarray::Array4;

use super::guard;
use crate::{IoError, Result};

/// Largest decoded pixel buffer accepted from an encapsulated (compressed) file is this many bytes
/// plus [`MAX_COMPRESSION_RATIO`] times the file size.
const DECODED_SLACK: u64 = 64 << 20;
/// Largest compression ratio trusted when sizing the decoded pixel buffer of a compressed file.
const MAX_COMPRESSION_RATIO: u64 = 1000;
/// Two orientation vectors closer than this (max abs component difference) are the same.
const ORIENTATION_TOL: f64 = 1e-4;
/// Two slice positions closer than this along the normal (mm) are the same position.
const POSITION_TOL: f64 = 1e-3;

/// One 2-D image plane of one instance (a single-frame file, or one frame of a multi-frame file).
#[derive(Clone, Debug)]
struct Plane {
    file: PathBuf,
    frame_index: usize,
    series_uid: String,
    series_number: i64,
    instance_number: i64,
    temporal_index: i64,
    sop_uid: String,
    rows: usize,
    cols: usize,
    /// Row direction (increasing column index) then column direction, LPS.
    iop: Option<[f64; 6]>,
    ipp: Option<[f64; 3]>,
    /// `[row spacing, col spacing]` mm.
    pixel_spacing: Option<[f64; 2]>,
    slice_thickness: Option<f64>,
    spacing_between: Option<f64>,
    /// Rescaled samples, row-major `[row, col]`.
    data: Vec<f32>,
}

/// What every plane of an instance shares (series-level description).
#[derive(Clone, Debug)]
struct InstanceInfo {
    series: SeriesInfo,
    patient: PatientInfo,
    datatype: String,
    series_number: i64,
}

/// Reads a DICOM file (classic single-frame, classic multi-frame or Enhanced MR multi-frame) or
/// a folder of DICOM files into volumes `[frame, slice, row, col]` (f32 after rescale), each with
/// an RAS+ affine mapping `(col, row, slice)` and the source series in `meta.series`.
///
/// A folder is scanned non-recursively; files without the `DICM` marker and `DICOMDIR` are
/// skipped quietly, while a file with the marker that cannot be read is an error. Planes are
/// grouped by SeriesInstanceUID and, within a series, by ImageOrientationPatient (a localiser
/// whose planes are not parallel becomes one volume per orientation); each group is sorted by
/// position along the slice normal `row_dir × col_dir` (InstanceNumber breaks ties), and planes
/// sharing a position become frames. Volumes are returned ordered by SeriesNumber,
/// SeriesInstanceUID, then InstanceNumber (frame number) of their first plane.
pub fn read(path: &Path) -> Result<Vec<Volume<f32>>> {
    let md = std::fs::metadata(path).map_err(|e| IoError::os(path, e))?;
    let mut planes = Vec::new();
    let mut infos: BTreeMap<String, InstanceInfo> = BTreeMap::new();
    if md.is_dir() {
        let mut files: Vec<PathBuf> = std::fs::read_dir(path)
            .map_err(|e| IoError::os(path, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file())
            .filter(|p| {
                p.file_name()
                    .map(|n| !n.eq_ignore_ascii_case("DICOMDIR"))
                    .unwrap_or(false)
            })
            .collect();
        files.sort();
        for f in files {
            if !starts_with_magic(&f)? {
                continue;
            }
            read_instance(&f, &mut planes, &mut infos)?;
        }
        if planes.is_empty() {
            return Err(IoError::malformed(
                path,
                "folder holds no DICOM file (none has the 'DICM' marker at byte 128)",
            ));
        }
    } else {
        read_instance(path, &mut planes, &mut infos)?;
    }
    assemble(planes, &infos)
}

/// True when the file's bytes 128..132 are `DICM`; short files are not DICOM.
fn starts_with_magic(path: &Path) -> Result<bool> {
    let mut head = [0u8; guard::MAGIC_OFFSET + 4];
    let mut f = File::open(path).map_err(|e| IoError::os(path, e))?;
    let mut got = 0;
    while got < head.len() {
        match f.read(&mut head[got..]) {
            Ok(0) => return Ok(false),
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(IoError::os(path, e)),
        }
    }
    Ok(guard::has_magic(&head))
}

fn tag_name(tag: Tag) -> String {
    match dicom_dictionary_std::StandardDataDictionary.by_tag(tag) {
        Some(e) => format!("{} ({:04X},{:04X})", e.alias, tag.0, tag.1),
        None => format!("({:04X},{:04X})", tag.0, tag.1),
    }
}

fn text(obj: &InMemDicomObject, tag: Tag) -> Option<String> {
    let e = obj.get(tag)?;
    let s = e.to_str().ok()?;
    let s = s.trim_matches(|c: char| c == '\0' || c.is_whitespace());
    Some(s.to_string())
}

fn float(obj: &InMemDicomObject, tag: Tag) -> Option<f64> {
    obj.get(tag)?.to_float64().ok().filter(|v| v.is_finite())
}

fn floats(obj: &InMemDicomObject, tag: Tag) -> Option<Vec<f64>> {
    let v = obj.get(tag)?.to_multi_float64().ok()?;
    if v.iter().all(|x| x.is_finite()) {
        Some(v)
    } else {
        None
    }
}

fn int(obj: &InMemDicomObject, tag: Tag) -> Option<i64> {
    obj.get(tag)?.to_int::<i64>().ok()
}

fn required_int(path: &Path, obj: &InMemDicomObject, tag: Tag) -> Result<i64> {
    int(obj, tag)
        .ok_or_else(|| IoError::malformed(path, format!("missing or invalid {}", tag_name(tag))))
}

/// First item of sequence `seq` in `obj`.
fn item(obj: &InMemDicomObject, seq: Tag) -> Option<&InMemDicomObject> {
    obj.get(seq)?.items()?.first()
}

/// A functional-group macro: `group` (e.g. PlanePositionSequence) from the per-frame item when
/// present there, else from the shared item.
fn macro_item<'a>(
    per_frame: Option<&'a InMemDicomObject>,
    shared: Option<&'a InMemDicomObject>,
    group: Tag,
) -> Option<&'a InMemDicomObject> {
    per_frame
        .and_then(|p| item(p, group))
        .or_else(|| shared.and_then(|s| item(s, group)))
}

fn to6(v: Vec<f64>) -> Option<[f64; 6]> {
    <[f64; 6]>::try_from(v.as_slice()).ok()
}

fn to3(v: Vec<f64>) -> Option<[f64; 3]> {
    <[f64; 3]>::try_from(v.as_slice()).ok()
}

fn to2(v: Vec<f64>) -> Option<[f64; 2]> {
    v.get(..2).and_then(|s| <[f64; 2]>::try_from(s).ok())
}

/// Opens one file, decodes its pixel data and appends one [`Plane`] per frame.
fn read_instance(
    path: &Path,
    planes: &mut Vec<Plane>,
    infos: &mut BTreeMap<String, InstanceInfo>,
) -> Result<()> {
    let bytes = std::fs::read(path).map_err(|e| IoError::os(path, e))?;
    let ts = guard::check(path, &bytes)?;
    let file_len = bytes.len() as u64;
    let obj: DefaultDicomObject = OpenFileOptions::new()
        .read_preamble(ReadPreamble::Never)
        .from_reader(&bytes[guard::MAGIC_OFFSET..])
        .map_err(|e| IoError::malformed(path, format!("cannot parse DICOM: {e}")))?;
    drop(bytes);

    if obj.get(tags::PIXEL_DATA).is_none() {
        if obj.get(tags::FLOAT_PIXEL_DATA).is_some()
            || obj.get(tags::DOUBLE_FLOAT_PIXEL_DATA).is_some()
        {
            return Err(IoError::unsupported(path, "floating-point pixel data"));
        }
        return Err(IoError::malformed(
            path,
            "no Pixel Data (7FE0,0010): not an image",
        ));
    }
    let rows = required_int(path, &obj, tags::ROWS)?;
    let cols = required_int(path, &obj, tags::COLUMNS)?;
    let bits = required_int(path, &obj, tags::BITS_ALLOCATED)?;
    let stored_bits = int(&obj, tags::BITS_STORED).unwrap_or(bits);
    let signed = int(&obj, tags::PIXEL_REPRESENTATION).unwrap_or(0) == 1;
    let spp = int(&obj, tags::SAMPLES_PER_PIXEL).unwrap_or(1);
    let frames = int(&obj, tags::NUMBER_OF_FRAMES).unwrap_or(1);
    if !(1..=65535).contains(&rows) || !(1..=65535).contains(&cols) {
        return Err(IoError::malformed(
            path,
            format!("invalid image size Rows={rows} Columns={cols}"),
        ));
    }
    if frames < 1 {
        return Err(IoError::malformed(
            path,
            format!("invalid NumberOfFrames {frames}"),
        ));
    }
    if spp != 1 {
        return Err(IoError::unsupported(
            path,
            format!("{spp} samples per pixel (colour images); amri reads greyscale MR"),
        ));
    }
    if !matches!(bits, 8 | 16 | 32) {
        return Err(IoError::unsupported(
            path,
            format!("BitsAllocated {bits} (amri reads 8, 16 and 32)"),
        ));
    }
    if stored_bits < 1 || stored_bits > bits {
        return Err(IoError::malformed(
            path,
            format!("BitsStored {stored_bits} does not fit BitsAllocated {bits}"),
        ));
    }
    let (rows, cols, frames) = (rows as usize, cols as usize, frames as usize);
    let bytes_per = (bits / 8) as usize;
    // Saturating: NumberOfFrames is an IS of up to 12 digits.
    let need = (rows as u64)
        .saturating_mul(cols as u64)
        .saturating_mul(frames as u64)
        .saturating_mul(bytes_per as u64);
    let native_len = match obj.get(tags::PIXEL_DATA).map(|e| e.value()) {
        Some(Value::Primitive(p)) => Some(p.to_bytes().len() as u64),
        _ => None,
    };
    match native_len {
        Some(have) if have < need => {
            return Err(IoError::malformed(
                path,
                format!(
                    "Pixel Data holds {have} bytes but Rows×Columns×NumberOfFrames×{bytes_per} \
                     = {rows}×{cols}×{frames}×{bytes_per} needs {need}"
                ),
            ));
        }
        None if need
            > DECODED_SLACK.saturating_add(MAX_COMPRESSION_RATIO.saturating_mul(file_len)) =>
        {
            return Err(IoError::malformed(
                path,
                format!(
                    "header claims {rows}×{cols}×{frames} pixels ({need} bytes decoded) from a \
                     {file_len}-byte file: refusing an implausible size"
                ),
            ));
        }
        _ => {}
    }

    // dicom-pixeldata's RLE decoder indexes out of bounds on corrupt segments (found by
    // fuzzing): check them first. Its other codecs could still panic on corrupt data; a corrupt
    // file must be an error, not a crash, so decoding also runs under catch_unwind.
    if obj.meta().transfer_syntax() == guard::RLE_LOSSLESS {
        if let Some(Value::PixelSequence(seq)) = obj.get(tags::PIXEL_DATA).map(|e| e.value()) {
            guard::check_rle(path, seq.fragments(), rows, cols, bytes_per)?;
        }
    }
    if guard::JPEG2000.contains(&obj.meta().transfer_syntax()) {
        if let Some(Value::PixelSequence(seq)) = obj.get(tags::PIXEL_DATA).map(|e| e.value()) {
            guard::check_jpeg2000(path, seq.fragments(), rows, cols, spp as usize)?;
        }
    }
    // CharLS is C++ built with cmake: only builds with the `jpegls` feature decode JPEG-LS.
    if !cfg!(feature = "jpegls") && guard::JPEG_LS.contains(&obj.meta().transfer_syntax()) {
        return Err(IoError::unsupported(
            path,
            format!(
                "JPEG-LS compressed pixel data (transfer syntax {ts}): this build of amri has \
                 no JPEG-LS codec. Rebuild with `--features jpegls` (needs cmake and a C++ \
                 compiler, e.g. `cargo install --path apps/amri --features jpegls`), or \
                 decompress the file first (`gdcmconv --raw` or dcmtk's `dcmdjpls`)"
            ),
        ));
    }
    let decoded =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| obj.decode_pixel_data()))
            .map_err(|_| {
                IoError::malformed(
                    path,
                    format!("cannot decode pixel data ({ts}): the compressed data are corrupt"),
                )
            })?
            .map_err(|e| {
                IoError::malformed(path, format!("cannot decode pixel data ({ts}): {e}"))
            })?;
    let raw: &[u8] = decoded.data();
    if (raw.len() as u64) < need {
        return Err(IoError::malformed(
            path,
            format!(
                "decoded pixel data has {} bytes, {need} expected for {rows}×{cols}×{frames}",
                raw.len()
            ),
        ));
    }
    let samples = to_i64_samples(
        raw,
        bits as u32,
        stored_bits as u32,
        signed,
        rows * cols * frames,
    );

    // Series-level information.
    let series_uid = text(&obj, tags::SERIES_INSTANCE_UID).unwrap_or_default();
    let sop_uid = text(&obj, tags::SOP_INSTANCE_UID).unwrap_or_default();
    let series_number = int(&obj, tags::SERIES_NUMBER).unwrap_or(0);
    let instance_number = int(&obj, tags::INSTANCE_NUMBER).unwrap_or(0);
    let shared = item(&obj, tags::SHARED_FUNCTIONAL_GROUPS_SEQUENCE);
    let per_frame: Option<&[InMemDicomObject]> = obj
        .get(tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE)
        .and_then(|e| e.items());
    if let Some(p) = per_frame {
        if p.len() != frames {
            return Err(IoError::malformed(
                path,
                format!(
                    "PerFrameFunctionalGroupsSequence has {} items for NumberOfFrames {frames}",
                    p.len()
                ),
            ));
        }
    }
    let enhanced = per_frame.is_some() || shared.is_some();
    let mr_timing = macro_item(
        None,
        shared,
        Tag(0x0018, 0x9112), // MRTimingAndRelatedParametersSequence
    );
    let mr_echo = macro_item(
        per_frame.and_then(|p| p.first()),
        shared,
        tags::MR_ECHO_SEQUENCE,
    );
    let info = InstanceInfo {
        series: SeriesInfo {
            modality: text(&obj, tags::MODALITY).unwrap_or_default(),
            series_description: text(&obj, tags::SERIES_DESCRIPTION).unwrap_or_default(),
            study_instance_uid: text(&obj, tags::STUDY_INSTANCE_UID).unwrap_or_default(),
            series_instance_uid: series_uid.clone(),
            frame_of_reference_uid: text(&obj, tags::FRAME_OF_REFERENCE_UID).unwrap_or_default(),
            sop_class_uid: text(&obj, tags::SOP_CLASS_UID).unwrap_or_default(),
            sop_instance_uids: Vec::new(),
            manufacturer: text(&obj, tags::MANUFACTURER).unwrap_or_default(),
            field_strength_t: float(&obj, tags::MAGNETIC_FIELD_STRENGTH),
            repetition_time_ms: float(&obj, tags::REPETITION_TIME)
                .or_else(|| mr_timing.and_then(|t| float(t, tags::REPETITION_TIME))),
            echo_time_ms: float(&obj, tags::ECHO_TIME)
                .or_else(|| mr_echo.and_then(|t| float(t, tags::EFFECTIVE_ECHO_TIME))),
            transfer_syntax: ts.clone(),
        },
        patient: PatientInfo {
            name: text(&obj, tags::PATIENT_NAME).unwrap_or_default(),
            id: text(&obj, tags::PATIENT_ID).unwrap_or_default(),
            birth_date: text(&obj, tags::PATIENT_BIRTH_DATE).unwrap_or_default(),
            sex: text(&obj, tags::PATIENT_SEX).unwrap_or_default(),
        },
        datatype: format!("{}int{bits}", if signed { "" } else { "u" }),
        series_number,
    };
    infos.entry(series_uid.clone()).or_insert(info);

    let top_iop = floats(&obj, tags::IMAGE_ORIENTATION_PATIENT).and_then(to6);
    let top_ipp = floats(&obj, tags::IMAGE_POSITION_PATIENT).and_then(to3);
    let top_ps = floats(&obj, tags::PIXEL_SPACING).and_then(to2);
    let top_thick = float(&obj, tags::SLICE_THICKNESS);
    let top_between = float(&obj, tags::SPACING_BETWEEN_SLICES);
    let top_slope = float(&obj, tags::RESCALE_SLOPE).unwrap_or(1.0);
    let top_intercept = float(&obj, tags::RESCALE_INTERCEPT).unwrap_or(0.0);

    let n = rows * cols;
    for f in 0..frames {
        let pf = per_frame.and_then(|p| p.get(f));
        let (mut iop, mut ipp, mut ps, mut thick, mut between) =
            (top_iop, top_ipp, top_ps, top_thick, top_between);
        let (mut slope, mut intercept) = (top_slope, top_intercept);
        let mut temporal = 0;
        if enhanced {
            if let Some(g) = macro_item(pf, shared, tags::PLANE_ORIENTATION_SEQUENCE) {
                iop = floats(g, tags::IMAGE_ORIENTATION_PATIENT)
                    .and_then(to6)
                    .or(iop);
            }
            if let Some(g) = macro_item(pf, shared, tags::PLANE_POSITION_SEQUENCE) {
                ipp = floats(g, tags::IMAGE_POSITION_PATIENT)
                    .and_then(to3)
                    .or(ipp);
            }
            if let Some(g) = macro_item(pf, shared, tags::PIXEL_MEASURES_SEQUENCE) {
                ps = floats(g, tags::PIXEL_SPACING).and_then(to2).or(ps);
                thick = float(g, tags::SLICE_THICKNESS).or(thick);
                between = float(g, tags::SPACING_BETWEEN_SLICES).or(between);
            }
            if let Some(g) = macro_item(pf, shared, tags::PIXEL_VALUE_TRANSFORMATION_SEQUENCE) {
                slope = float(g, tags::RESCALE_SLOPE).unwrap_or(slope);
                intercept = float(g, tags::RESCALE_INTERCEPT).unwrap_or(intercept);
            }
            if let Some(g) = macro_item(pf, None, tags::FRAME_CONTENT_SEQUENCE) {
                temporal = int(g, tags::TEMPORAL_POSITION_INDEX).unwrap_or(0);
            }
        } else {
            temporal = int(&obj, tags::TEMPORAL_POSITION_IDENTIFIER).unwrap_or(0);
        }
        if let Some(p) = ps {
            if p.iter().any(|v| *v <= 0.0) {
                return Err(IoError::malformed(
                    path,
                    format!("PixelSpacing {p:?} is not positive"),
                ));
            }
        }
        let data: Vec<f32> = samples[f * n..(f + 1) * n]
            .iter()
            .map(|&s| (s as f64 * slope + intercept) as f32)
            .collect();
        planes.push(Plane {
            file: path.to_path_buf(),
            frame_index: f,
            series_uid: series_uid.clone(),
            series_number,
            instance_number,
            temporal_index: temporal,
            sop_uid: sop_uid.clone(),
            rows,
            cols,
            iop,
            ipp,
            pixel_spacing: ps,
            slice_thickness: thick,
            spacing_between: between,
            data,
        });
    }
    Ok(())
}

/// Stored sample values (before rescale) from native little-endian bytes: `bits` allocated per
/// sample, the low `stored` bits meaningful, sign-extended from bit `stored - 1` when `signed`.
fn to_i64_samples(raw: &[u8], bits: u32, stored: u32, signed: bool, count: usize) -> Vec<i64> {
    let bytes = (bits / 8) as usize;
    let shift = 64 - stored;
    raw.chunks_exact(bytes)
        .take(count)
        .map(|c| {
            let mut u: u64 = 0;
            for (i, b) in c.iter().enumerate() {
                u |= u64::from(*b) << (8 * i);
            }
            if signed {
                ((u << shift) as i64) >> shift
            } else {
                ((u << shift) >> shift) as i64
            }
        })
        .collect()
}

fn cross(a: [f64; 3], b: [f64; 3]) -> [f64; 3] {
    [
        a[1] * b[2] - a[2] * b[1],
        a[2] * b[0] - a[0] * b[2],
        a[0] * b[1] - a[1] * b[0],
    ]
}

fn dot(a: [f64; 3], b: [f64; 3]) -> f64 {
    a[0] * b[0] + a[1] * b[1] + a[2] * b[2]
}

fn same_orientation(a: Option<[f64; 6]>, b: Option<[f64; 6]>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => a
            .iter()
            .zip(&b)
            .all(|(x, y)| (x - y).abs() < ORIENTATION_TOL),
        _ => false,
    }
}

/// Output order of a volume: SeriesNumber, SeriesInstanceUID, first InstanceNumber, first frame.
type OrderKey = (i64, String, i64, usize);

/// Groups planes into volumes and builds geometry and metadata.
fn assemble(
    planes: Vec<Plane>,
    infos: &BTreeMap<String, InstanceInfo>,
) -> Result<Vec<Volume<f32>>> {
    // Series in a stable order.
    let mut by_series: BTreeMap<String, Vec<Plane>> = BTreeMap::new();
    for p in planes {
        by_series.entry(p.series_uid.clone()).or_default().push(p);
    }
    let mut out: Vec<(OrderKey, Volume<f32>)> = Vec::new();
    for (uid, planes) in by_series {
        let first = &planes[0];
        let series_number = first.series_number;
        if let Some(bad) = planes
            .iter()
            .find(|p| p.rows != first.rows || p.cols != first.cols)
        {
            return Err(IoError::malformed(
                &bad.file,
                format!(
                    "image size {}×{} differs from {}×{} of {} in the same series {uid}",
                    bad.rows,
                    bad.cols,
                    first.rows,
                    first.cols,
                    first.file.display()
                ),
            ));
        }
        // Split by orientation (localisers: non-parallel planes cannot share one affine).
        let mut groups: Vec<Vec<Plane>> = Vec::new();
        for p in planes {
            match groups
                .iter_mut()
                .find(|g| same_orientation(g[0].iop, p.iop))
            {
                Some(g) => g.push(p),
                None => groups.push(vec![p]),
            }
        }
        let ngroups = groups.len();
        for (gi, group) in groups.into_iter().enumerate() {
            let first_key = group
                .iter()
                .map(|p| (p.instance_number, p.frame_index))
                .min()
                .unwrap_or((0, 0));
            let info = infos.get(&uid);
            let mut vol = stack(group, info)?;
            if ngroups > 1 {
                vol.meta.attributes.insert(
                    "dicom.orientation_group".into(),
                    format!(
                        "{} of {ngroups} (series planes are not parallel; one volume per orientation)",
                        gi + 1
                    ),
                );
            }
            out.push(((series_number, uid.clone(), first_key.0, first_key.1), vol));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out.into_iter().map(|(_, v)| v).collect())
}

/// Sorts the planes of one orientation group along the normal and stacks them.
fn stack(mut group: Vec<Plane>, info: Option<&InstanceInfo>) -> Result<Volume<f32>> {
    let iop = group[0].iop;
    let (rowdir, coldir) = match iop {
        Some(o) => ([o[0], o[1], o[2]], [o[3], o[4], o[5]]),
        None => ([1.0, 0.0, 0.0], [0.0, 1.0, 0.0]),
    };
    let normal = cross(rowdir, coldir);
    let key = |p: &Plane| p.ipp.map(|x| dot(x, normal));
    group.sort_by(|a, b| {
        let ka = key(a).unwrap_or(0.0);
        let kb = key(b).unwrap_or(0.0);
        let by_pos = if (ka - kb).abs() < POSITION_TOL {
            Ordering::Equal
        } else {
            ka.total_cmp(&kb)
        };
        by_pos
            .then(a.temporal_index.cmp(&b.temporal_index))
            .then(a.instance_number.cmp(&b.instance_number))
            .then(a.frame_index.cmp(&b.frame_index))
            .then(a.file.cmp(&b.file))
    });
    // Positions: consecutive runs of equal keys (planes without a position: one per slice).
    let mut runs: Vec<Vec<Plane>> = Vec::new();
    for p in group {
        let same = match (runs.last().and_then(|r| r.first()), p.ipp) {
            (Some(q), Some(ipp)) => match q.ipp {
                Some(qi) => (0..3).all(|i| (qi[i] - ipp[i]).abs() < POSITION_TOL),
                None => false,
            },
            _ => false,
        };
        match runs.last_mut() {
            Some(r) if same => r.push(p),
            _ => runs.push(vec![p]),
        }
    }
    let nslices = runs.len();
    let nframes = runs[0].len();
    if let Some(bad) = runs.iter().find(|r| r.len() != nframes) {
        return Err(IoError::malformed(
            &bad[0].file,
            format!(
                "series {}: slice positions hold unequal numbers of images ({} here, {nframes} at \
                 the first position); cannot stack them into frames",
                bad[0].series_uid,
                bad.len()
            ),
        ));
    }
    let (rows, cols) = (runs[0][0].rows, runs[0][0].cols);
    let mut data = Array4::<f32>::zeros((nframes, nslices, rows, cols));
    let mut sops: Vec<String> = Vec::new();
    for t in 0..nframes {
        for (k, run) in runs.iter().enumerate() {
            let p = &run[t];
            let src = ndarray::ArrayView2::from_shape((rows, cols), &p.data)
                .map_err(|e| IoError::malformed(&p.file, format!("internal shape error: {e}")))?;
            data.slice_mut(ndarray::s![t, k, .., ..]).assign(&src);
            if sops.last() != Some(&p.sop_uid) {
                sops.push(p.sop_uid.clone());
            }
        }
    }

    // Geometry (LPS), then RAS.
    let first = &runs[0][0];
    let ps = first.pixel_spacing.unwrap_or([1.0, 1.0]);
    let mut attrs = BTreeMap::new();
    if first.pixel_spacing.is_none() {
        attrs.insert(
            "dicom.geometry".into(),
            "no PixelSpacing: 1 mm pixels assumed".to_string(),
        );
    }
    let origin = first.ipp.unwrap_or([0.0; 3]);
    let step: [f64; 3] = match (nslices > 1, first.ipp, runs[nslices - 1][0].ipp) {
        (true, Some(p0), Some(p1)) => {
            let d = (nslices - 1) as f64;
            let step = [
                (p1[0] - p0[0]) / d,
                (p1[1] - p0[1]) / d,
                (p1[2] - p0[2]) / d,
            ];
            let mean = dot(step, step).sqrt();
            let irregular: Vec<String> = runs
                .windows(2)
                .filter_map(|w| match (w[0][0].ipp, w[1][0].ipp) {
                    (Some(a), Some(b)) => {
                        let gap = dot([b[0] - a[0], b[1] - a[1], b[2] - a[2]], normal);
                        ((gap.abs() - mean).abs() > 1e-3 + 1e-2 * mean).then(|| format!("{gap:.4}"))
                    }
                    _ => None,
                })
                .collect();
            if !irregular.is_empty() {
                attrs.insert(
                    "dicom.irregular_slice_spacing".into(),
                    format!(
                        "mean step {mean:.4} mm; gaps differing by more than 1%: {}",
                        irregular.join(", ")
                    ),
                );
            }
            step
        }
        _ => {
            let dz = first
                .spacing_between
                .filter(|v| *v > 0.0)
                .or(first.slice_thickness.filter(|v| *v > 0.0))
                .unwrap_or(1.0);
            [normal[0] * dz, normal[1] * dz, normal[2] * dz]
        }
    };
    let mut m = Affine::IDENTITY.0;
    for r in 0..3 {
        m[r][0] = rowdir[r] * ps[1];
        m[r][1] = coldir[r] * ps[0];
        m[r][2] = step[r];
        m[r][3] = origin[r];
    }
    let affine = Affine(m).lps_to_ras();
    if let Some(o) = iop {
        attrs.insert(
            "dicom.image_orientation_patient".into(),
            o.iter()
                .map(|v| v.to_string())
                .collect::<Vec<_>>()
                .join("\\"),
        );
    }

    let mut meta = Metadata {
        source_format: "DICOM".into(),
        ..Metadata::default()
    };
    if let Some(info) = info {
        let mut series = info.series.clone();
        series.sop_instance_uids = sops;
        meta.series = Some(series);
        meta.patient = Some(info.patient.clone());
        meta.source_datatype = info.datatype.clone();
        meta.description = info.series.series_description.clone();
        attrs.insert("dicom.series_number".into(), info.series_number.to_string());
    }
    meta.attributes = attrs;
    Ok(Volume { data, affine, meta })
}

//! The ISMRMRD writer: the HDF5 structure comes from `hdf5-writer`; the acquisitions'
//! variable-length samples live in global-heap collections appended after it.
//!
//! `hdf5-writer` encodes compound datasets from raw bytes but cannot place variable-length
//! members inside a compound, which every ISMRMRD acquisition has (`traj`, `data`). The file is
//! therefore encoded once with the acquisition records' sample references left empty, to learn
//! its length `L`; the samples go into global-heap collections starting at `L` rounded up to 8,
//! the records are encoded again pointing at them (same length, since record sizes do not
//! change), the collections are appended, and the superblock's end-of-file address and checksum
//! are updated. The result is checked by the Python `ismrmrd` package (h5py/libhdf5) in the
//! fixture test.

use std::path::Path;

use amri_core::{KSpace, MeasuredDomain};
use hdf5_writer::{
    jenkins_lookup3, ByteOrder, CompoundField, DatasetBuilder, Datatype, Hdf5Builder,
    StringEncoding, StringPadding, VarLenKind, WriteOptions,
};
use ndarray::Axis;

use super::flags;
use super::header::{to_xml, Limit, Space, WriteHeader};
use crate::{IoError, Result};

/// Byte size of the C `ISMRMRD_AcquisitionHeader` (packed).
const HEAD_SIZE: usize = 340;
/// Byte offsets of the acquisition record's members: head, traj, data; and its size.
const TRAJ_OFF: usize = 344;
const DATA_OFF: usize = 360;
const RECORD_SIZE: usize = 376;
/// Objects in one global-heap collection (indices are 16 bits, 0 is the free space).
const HEAP_MAX_OBJECTS: usize = u16::MAX as usize;
/// Bytes of payload after which a new collection is started.
const HEAP_MAX_BYTES: usize = 16 << 20;
/// Default H1 frequency (1.5 T) when the k-space does not say; the schema requires one.
const DEFAULT_H1_HZ: u64 = 63_500_000;

fn le(size: u8, signed: bool) -> Datatype {
    Datatype::FixedPoint {
        size,
        signed,
        byte_order: ByteOrder::LittleEndian,
    }
}

fn f32t() -> Datatype {
    Datatype::FloatingPoint {
        size: 4,
        byte_order: ByteOrder::LittleEndian,
    }
}

fn arr(base: Datatype, n: u64) -> Datatype {
    Datatype::Array {
        base: Box::new(base),
        dims: vec![n],
    }
}

fn field(name: &str, off: usize, datatype: Datatype) -> CompoundField {
    CompoundField {
        name: name.into(),
        byte_offset: off as u32,
        datatype,
    }
}

/// The acquisition compound as the ISMRMRD C library declares it.
fn acquisition_type() -> Datatype {
    let u16t = || le(2, false);
    let idx = Datatype::Compound {
        size: 34,
        fields: vec![
            field("kspace_encode_step_1", 0, u16t()),
            field("kspace_encode_step_2", 2, u16t()),
            field("average", 4, u16t()),
            field("slice", 6, u16t()),
            field("contrast", 8, u16t()),
            field("phase", 10, u16t()),
            field("repetition", 12, u16t()),
            field("set", 14, u16t()),
            field("segment", 16, u16t()),
            field("user", 18, arr(u16t(), 8)),
        ],
    };
    let head = Datatype::Compound {
        size: HEAD_SIZE as u32,
        fields: vec![
            field("version", 0, u16t()),
            field("flags", 2, le(8, false)),
            field("measurement_uid", 10, le(4, false)),
            field("scan_counter", 14, le(4, false)),
            field("acquisition_time_stamp", 18, le(4, false)),
            field("physiology_time_stamp", 22, arr(le(4, false), 3)),
            field("number_of_samples", 34, u16t()),
            field("available_channels", 36, u16t()),
            field("active_channels", 38, u16t()),
            field("channel_mask", 40, arr(le(8, false), 16)),
            field("discard_pre", 168, u16t()),
            field("discard_post", 170, u16t()),
            field("center_sample", 172, u16t()),
            field("encoding_space_ref", 174, u16t()),
            field("trajectory_dimensions", 176, u16t()),
            field("sample_time_us", 178, f32t()),
            field("position", 182, arr(f32t(), 3)),
            field("read_dir", 194, arr(f32t(), 3)),
            field("phase_dir", 206, arr(f32t(), 3)),
            field("slice_dir", 218, arr(f32t(), 3)),
            field("patient_table_position", 230, arr(f32t(), 3)),
            field("idx", 242, idx),
            field("user_int", 276, arr(le(4, true), 8)),
            field("user_float", 308, arr(f32t(), 8)),
        ],
    };
    let vlen_f32 = || Datatype::VarLen {
        base: Box::new(f32t()),
        kind: VarLenKind::Sequence,
        encoding: StringEncoding::Ascii,
        padding: StringPadding::NullTerminate,
    };
    Datatype::Compound {
        size: RECORD_SIZE as u32,
        fields: vec![
            field("head", 0, head),
            field("traj", TRAJ_OFF, vlen_f32()),
            field("data", DATA_OFF, vlen_f32()),
        ],
    }
}

/// One acquisition to write: its header record (without sample references) and its samples as
/// interleaved little-endian `f32` (re, im), channel-major.
struct Record {
    head: [u8; HEAD_SIZE],
    samples: Vec<u8>,
}

fn put(b: &mut [u8], off: usize, v: &[u8]) {
    b[off..off + v.len()].copy_from_slice(v);
}

fn put_vec3(b: &mut [u8], off: usize, v: [f64; 3]) {
    for (i, x) in v.iter().enumerate() {
        put(b, off + 4 * i, &(*x as f32).to_le_bytes());
    }
}

struct Geometry {
    read: [f64; 3],
    phase: [f64; 3],
    slice: [f64; 3],
}

/// Builds one record; `scan` is the running scan counter.
#[allow(clippy::too_many_arguments)]
fn record(
    flags_set: &[u32],
    samples: &[amri_core::C32],
    channels: usize,
    center: usize,
    ky: usize,
    slice: usize,
    scan: u32,
    g: &Geometry,
    position: [f64; 3],
) -> Record {
    let mut h = [0u8; HEAD_SIZE];
    let n = samples.len() / channels.max(1);
    let mut fl = 0u64;
    for b in flags_set {
        fl |= 1u64 << (b - 1);
    }
    put(&mut h, 0, &1u16.to_le_bytes());
    put(&mut h, 2, &fl.to_le_bytes());
    put(&mut h, 14, &scan.to_le_bytes());
    put(&mut h, 34, &(n as u16).to_le_bytes());
    put(&mut h, 36, &(channels as u16).to_le_bytes());
    put(&mut h, 38, &(channels as u16).to_le_bytes());
    for c in 0..channels {
        let word = 40 + 8 * (c / 64);
        let mut w = u64::from_le_bytes(h[word..word + 8].try_into().unwrap_or([0; 8]));
        w |= 1u64 << (c % 64);
        put(&mut h, word, &w.to_le_bytes());
    }
    put(&mut h, 172, &(center as u16).to_le_bytes());
    put_vec3(&mut h, 182, position);
    put_vec3(&mut h, 194, g.read);
    put_vec3(&mut h, 206, g.phase);
    put_vec3(&mut h, 218, g.slice);
    put(&mut h, 242, &(ky as u16).to_le_bytes());
    put(&mut h, 248, &(slice as u16).to_le_bytes());
    let mut s = Vec::with_capacity(samples.len() * 8);
    for v in samples {
        s.extend_from_slice(&v.re.to_le_bytes());
        s.extend_from_slice(&v.im.to_le_bytes());
    }
    Record {
        head: h,
        samples: s,
    }
}

fn unit(v: [f64; 3]) -> [f64; 3] {
    let n = (v[0] * v[0] + v[1] * v[1] + v[2] * v[2]).sqrt();
    if n > 0.0 && n.is_finite() {
        v.map(|x| x / n)
    } else {
        [0.0; 3]
    }
}

/// Writes `k` to `path` as ISMRMRD (HDF5), atomically (see the module docs of
/// [`crate::ismrmrd`] for what is written). Refuses data that are not k-space, masks that are not
/// whole columns (ISMRMRD stores whole readouts), and sizes past ISMRMRD's 16-bit header fields.
pub fn write(path: &Path, k: &KSpace) -> Result<()> {
    let unwritable = |msg: String| IoError::Unwritable {
        path: path.to_path_buf(),
        msg,
    };
    if k.domain() != MeasuredDomain::Kspace {
        return Err(unwritable(format!(
            "ISMRMRD holds k-space, but these data are {:?} measurements; write them as .npz",
            k.domain()
        )));
    }
    k.validate().map_err(|e| unwritable(e.to_string()))?;
    let [ns, nc, nr, ncol] = k.shape4();
    if [ns, nc, nr, ncol]
        .iter()
        .any(|&v| v == 0 || v > u16::MAX as usize)
        || nc > 1024
    {
        return Err(unwritable(format!(
            "shape {:?} does not fit ISMRMRD's 16-bit counters (and at most 1024 channels)",
            k.shape4()
        )));
    }
    // Measured columns per slice; the mask must be whole columns.
    let mut measured: Vec<Vec<usize>> = Vec::with_capacity(ns);
    for s in 0..ns {
        let mut cols = Vec::new();
        for c in 0..ncol {
            match &k.mask {
                None => cols.push(c),
                Some(m) => {
                    let col = m.index_axis(Axis(0), s);
                    let col = col.index_axis(Axis(1), c);
                    let on = col.iter().filter(|v| **v != 0.0).count();
                    if on == nr {
                        cols.push(c);
                    } else if on != 0 {
                        return Err(unwritable(format!(
                            "slice {s} column {c} is partly measured ({on} of {nr} rows); ISMRMRD stores whole readouts (columns), so a 2-D sampling pattern cannot be written"
                        )));
                    }
                }
            }
        }
        measured.push(cols);
    }
    let acs = k.attributes.get("acs_cols").and_then(|v| {
        let (a, b) = v.split_once('-')?;
        Some((
            a.trim().parse::<usize>().ok()?,
            b.trim().parse::<usize>().ok()?,
        ))
    });

    let vs = k.affine.voxel_size();
    let lps = k.affine.ras_to_lps();
    let g = Geometry {
        read: unit(lps.column(1)),
        phase: unit(lps.column(0)),
        slice: unit(lps.column(2)),
    };
    let measured0 = measured.first().map(Vec::len).unwrap_or(ncol).max(1);
    let r = ((ncol as f64 / measured0 as f64).round() as u64).max(1);
    let wh = WriteHeader {
        space: Space {
            matrix: [nr, ncol, 1],
            fov_mm: [nr as f64 * vs[1], ncol as f64 * vs[0], vs[2]],
        },
        coils: nc,
        slices: ns,
        ky: Limit {
            minimum: 0,
            maximum: (ncol - 1) as u64,
            center: (ncol / 2) as u64,
        },
        h1_hz: k
            .attributes
            .get("ismrmrd_h1_frequency_hz")
            .and_then(|v| v.trim().parse::<f64>().ok())
            .filter(|v| v.is_finite() && *v > 0.0)
            .map(|v| v.round() as u64)
            .unwrap_or(DEFAULT_H1_HZ),
        acceleration: (r > 1).then_some(r),
        user: crate::attrs::with_typed(k)
            .iter()
            .filter(|(key, _)| super::keeps_attribute(key))
            .map(|(key, v)| (format!("{}{key}", super::USER_PREFIX), v.clone()))
            .collect(),
    };
    let xml = to_xml(&wh);

    let mut recs = Vec::new();
    let mut scan = 0u32;
    if let Some(noise) = &k.noise {
        let rows: Vec<_> = noise.axis_chunks_iter(Axis(0), nr).collect();
        for chunk in rows {
            // [sample, coil] -> channel-major samples.
            let samples: Vec<_> = chunk.t().iter().copied().collect();
            recs.push(record(
                &[flags::IS_NOISE_MEASUREMENT],
                &samples,
                nc,
                0,
                0,
                0,
                scan,
                &g,
                [0.0; 3],
            ));
            scan += 1;
        }
    }
    let last_slice_with_data = measured.iter().rposition(|m| !m.is_empty());
    for (s, cols) in measured.iter().enumerate() {
        let centre = lps.apply([(ncol / 2) as f64, (nr / 2) as f64, s as f64]);
        for (j, &c) in cols.iter().enumerate() {
            let mut fl = Vec::new();
            if j == 0 {
                fl.push(flags::FIRST_IN_SLICE);
            }
            if j + 1 == cols.len() {
                fl.push(flags::LAST_IN_SLICE);
                if Some(s) == last_slice_with_data {
                    fl.push(flags::LAST_IN_MEASUREMENT);
                }
            }
            if acs.is_some_and(|(a, b)| (a..=b).contains(&c)) {
                fl.push(flags::IS_PARALLEL_CALIBRATION_AND_IMAGING);
            }
            let line = k.data.slice(ndarray::s![s, .., .., c]);
            let samples: Vec<_> = line.iter().copied().collect();
            recs.push(record(&fl, &samples, nc, nr / 2, c, s, scan, &g, centre));
            scan = scan.wrapping_add(1);
        }
    }
    if recs.is_empty() {
        return Err(unwritable("no measured line to write".into()));
    }
    let extras = extra_datasets(k).map_err(unwritable)?;
    let bytes = encode(&xml, &recs, &extras).map_err(unwritable)?;
    crate::atomic::write_bytes(path, &bytes)
}

/// Places the records' samples into global-heap collections that start at `heap_at`; returns
/// the collections' bytes and each record's `(collection address, object index)`.
fn heap(recs: &[Record], heap_at: u64) -> (Vec<u8>, Vec<(u64, u16)>) {
    let mut out = Vec::new();
    let mut refs = Vec::with_capacity(recs.len());
    let mut start = 0;
    while start < recs.len() {
        let mut end = start;
        let mut bytes = 0;
        while end < recs.len()
            && end - start < HEAP_MAX_OBJECTS
            && (bytes < HEAP_MAX_BYTES || end == start)
        {
            bytes += recs[end].samples.len();
            end += 1;
        }
        let addr = heap_at + out.len() as u64;
        let mut body = Vec::new();
        for (j, r) in recs[start..end].iter().enumerate() {
            let index = (j + 1) as u16;
            body.extend_from_slice(&index.to_le_bytes());
            body.extend_from_slice(&1u16.to_le_bytes());
            body.extend_from_slice(&[0; 4]);
            body.extend_from_slice(&(r.samples.len() as u64).to_le_bytes());
            body.extend_from_slice(&r.samples);
            body.resize(body.len().next_multiple_of(8), 0);
            refs.push((addr, index));
        }
        // The free-space object (index 0) closes the collection; its size counts its own
        // 16-byte header. libhdf5 wants collections of at least 4096 bytes.
        let used = 16 + body.len();
        let size = (used + 16).next_multiple_of(8).max(4096);
        body.extend_from_slice(&[0; 8]);
        body.extend_from_slice(&((size - used) as u64).to_le_bytes());
        let mut coll = Vec::with_capacity(size);
        coll.extend_from_slice(b"GCOL");
        coll.extend_from_slice(&[1, 0, 0, 0]);
        coll.extend_from_slice(&(size as u64).to_le_bytes());
        coll.extend_from_slice(&body);
        coll.resize(size, 0);
        out.extend_from_slice(&coll);
        start = end;
    }
    (out, refs)
}

fn records_bytes(recs: &[Record], refs: Option<&[(u64, u16)]>) -> Vec<u8> {
    let mut raw = vec![0u8; recs.len() * RECORD_SIZE];
    for (i, r) in recs.iter().enumerate() {
        let b = &mut raw[i * RECORD_SIZE..(i + 1) * RECORD_SIZE];
        b[..HEAD_SIZE].copy_from_slice(&r.head);
        // traj stays an empty sequence (all-zero reference).
        if let Some(refs) = refs {
            let (addr, index) = refs[i];
            let n = (r.samples.len() / 4) as u32;
            put(b, DATA_OFF, &n.to_le_bytes());
            put(b, DATA_OFF + 4, &addr.to_le_bytes());
            put(b, DATA_OFF + 12, &u32::from(index).to_le_bytes());
        }
    }
    raw
}

/// Datasets beside `xml` and `data` that only amri reads (other ISMRMRD tools ignore them, as
/// they ignore the generator's `phantom`, `csm` and `coil_images`): the reference image
/// (`amri_reference`, float32 `[slice, row, col]`) and the coil maps (`amri_sensitivities`,
/// compound `{real, imag}` of float32 `[slice, coil, row, col]`).
fn extra_datasets(k: &KSpace) -> std::result::Result<Vec<DatasetBuilder>, String> {
    let mut out = Vec::new();
    if let Some(r) = &k.reference {
        let shape: Vec<u64> = r.shape().iter().map(|&d| d as u64).collect();
        let v: Vec<f32> = r.iter().copied().collect();
        out.push(
            DatasetBuilder::new(format!("dataset/{}", super::REFERENCE), f32t(), shape)
                .data(&v)
                .map_err(|e| format!("HDF5 encoding of the reference: {e}"))?,
        );
    }
    if let Some(m) = &k.sensitivities {
        let shape: Vec<u64> = m.shape().iter().map(|&d| d as u64).collect();
        let mut raw = Vec::with_capacity(m.len() * 8);
        for v in m.iter() {
            raw.extend_from_slice(&v.re.to_le_bytes());
            raw.extend_from_slice(&v.im.to_le_bytes());
        }
        let dt = Datatype::Compound {
            size: 8,
            fields: vec![field("real", 0, f32t()), field("imag", 4, f32t())],
        };
        out.push(
            DatasetBuilder::new(format!("dataset/{}", super::SENSITIVITIES), dt, shape)
                .raw_data(raw),
        );
    }
    Ok(out)
}

fn encode_once(
    xml: &str,
    raw: Vec<u8>,
    n: usize,
    extras: &[DatasetBuilder],
) -> std::result::Result<Vec<u8>, String> {
    let xml_ds = DatasetBuilder::vlen_string_data("dataset/xml", vec![1u64], &[xml])
        .map_err(|e| format!("HDF5 encoding of the header: {e}"))?;
    let data =
        DatasetBuilder::new("dataset/data", acquisition_type(), vec![n as u64]).raw_data(raw);
    let mut b = Hdf5Builder::new().dataset(xml_ds).dataset(data);
    for e in extras {
        b = b.dataset(e.clone());
    }
    b.into_plan()
        .and_then(|p| p.encode(WriteOptions::default()))
        .map_err(|e| format!("HDF5 encoding: {e}"))
}

/// The whole file: header and records through `hdf5-writer`, then the samples' heap.
fn encode(
    xml: &str,
    recs: &[Record],
    extras: &[DatasetBuilder],
) -> std::result::Result<Vec<u8>, String> {
    let n = recs.len();
    let first = encode_once(xml, records_bytes(recs, None), n, extras)?;
    let heap_at = (first.len() as u64).next_multiple_of(8);
    let (coll, refs) = heap(recs, heap_at);
    let mut bytes = encode_once(xml, records_bytes(recs, Some(&refs)), n, extras)?;
    if bytes.len() != first.len() {
        return Err("HDF5 encoding changed length between passes (internal error)".into());
    }
    // Superblock v2/v3: signature, version, sizes (8-byte offsets), ..., EOF address at 28,
    // root address at 36, checksum of bytes 0..44 at 44.
    let ok = bytes.len() >= 48
        && bytes[..8] == *b"\x89HDF\r\n\x1a\n"
        && matches!(bytes[8], 2 | 3)
        && bytes[9] == 8
        && bytes[28..36] == (bytes.len() as u64).to_le_bytes();
    if !ok {
        return Err("unexpected superblock from the HDF5 encoder (internal error)".into());
    }
    bytes.resize(heap_at as usize, 0);
    bytes.extend_from_slice(&coll);
    let eof = bytes.len() as u64;
    bytes[28..36].copy_from_slice(&eof.to_le_bytes());
    let sum = jenkins_lookup3(&bytes[..44]);
    bytes[44..48].copy_from_slice(&sum.to_le_bytes());
    Ok(bytes)
}

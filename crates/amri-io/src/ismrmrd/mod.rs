//! ISMRMRD raw data (`.h5`, HDF5), read and written with the pure-Rust `hdf5-reader` and
//! `hdf5-writer` crates; the XML header is parsed with `roxmltree`.
//!
//! An `.h5` file is ISMRMRD when a top-level group (normally `/dataset`) holds both an `xml`
//! dataset (the header) and a `data` dataset (the acquisitions); any other `.h5` is read as
//! fastMRI ([`crate::hdf5`]).
//!
//! # Reading ([`read`])
//! - Header: the first `<encoding>`'s encoded and recon matrix and field of view, the
//!   `kspace_encoding_step_1` limits, the trajectory, the parallel-imaging settings, and a few
//!   patient-free fields for `amri info` (`subjectInformation` and `studyInformation` are never
//!   read). A trajectory other than `cartesian` is refused ([`IoError::Unsupported`]), as is
//!   3-D encoding (`encodedSpace/matrixSize/z` > 1 or a non-zero `kspace_encode_step_2`).
//! - Acquisitions of encoding space 0, by their flags: noise measurements (flag 19) become
//!   [`KSpace::noise`] `[sample, coil]`, their samples unchanged; parallel-calibration lines
//!   (flags 20, 21) are k-space lines like any other (they fill the data and the mask) and their
//!   column range is recorded in the `acs_cols` attribute (`first-last`, inclusive); navigator,
//!   phase-correction, feedback, dummy-scan, surface-coil-correction and phase-stabilisation
//!   readouts (flags 23, 24, 26–31) are skipped and counted in `ismrmrd_skipped`.
//! - Readout: samples `discard_pre` and `discard_post` are dropped; sample `k` lands at readout
//!   index `k − center_sample + Nx/2` (`Nx` = encoded matrix x), or `center_sample − k + Nx/2` for a
//!   reverse readout (flag 22), so that `center_sample` is k-space centre either way. Readout
//!   oversampling is then removed when the recon matrix x is smaller: centred inverse FFT along
//!   the readout, centre crop to the recon x, centred forward FFT (orthonormal, so white noise
//!   keeps its variance). The attribute `readout_oversampling_removed` says `64 -> 32`.
//! - Phase encode: line `kspace_encode_step_1 = ky` lands at column `ky − center + Ny/2` (`Ny` =
//!   encoded matrix y, `center` from `encodingLimits`, `Ny/2` when absent).
//! - Counters → amri's slice axis: `amri slice = (((repetition·Nset + set)·Nphase + phase)·
//!   Ncontrast + contrast)·Nslice + slice`, where each counter is replaced by its rank among the
//!   values present in the file and `N…` is how many values it takes (slice fastest, repetition
//!   slowest); the attribute `ismrmrd_slice_order` states it with the counts. Lines measured more
//!   than once for the same amri slice (averages, repeated calibration lines) are averaged (mean).
//! - Axes as fastMRI/amri: k-space `[slice, coil, row, col]` with rows = readout (kx) and
//!   columns = phase encode (ky, the undersampled axis), centred as [`amri_core::fft::fft2c`]
//!   (the convention `ismrmrd_generate_cartesian_shepp_logan` uses: its k-space is
//!   `fft2c` of its coil images). The mask marks the columns acquired in each slice.
//! - Geometry: voxel size = field of view / matrix of the output grid (recon x after the crop,
//!   encoded y, encoded z); orientation and position from the first imaging readout's
//!   `read_dir` (rows), `phase_dir` (columns), `slice_dir` and `position` (LPS, converted to
//!   RAS+) when they are unit vectors, else axis-aligned.
//!
//! # Writing ([`write`])
//! An XML header (encoded = recon space: nothing oversampled, Cartesian, slice limits) and one
//! acquisition per measured column per slice (readout = the rows, `center_sample` = rows/2,
//! `kspace_encode_step_1` = column, `slice` counter = amri slice, `FIRST/LAST_IN_SLICE` and
//! `LAST_IN_MEASUREMENT` flags, columns inside `acs_cols` flagged as calibration-and-imaging),
//! preceded by the noise samples as noise readouts. Geometry goes into the direction and
//! position fields. amri's attributes (protocol, seed, ...) go into the header's
//! `userParameters` as `userParameterString` entries named `amri.<key>`; a reference image and
//! coil maps go into the datasets [`REFERENCE`] and [`SENSITIVITIES`] beside `xml` and `data`,
//! which other ISMRMRD tools ignore. The reader takes all three back when their shapes fit.

mod header;
mod write;

pub use header::{Header, Limit, Space};
pub use write::write;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use amri_core::fft::{fft2c_inplace, ifft2c_inplace};
use amri_core::{Affine, KSpace, C32};
use hdf5_reader::{ByteOrder, Dataset, Datatype, Hdf5File};
use ndarray::{s, Array2, Array3, Array4};

use crate::hdf5::{decode_num, dtype_size, h5err, MAX_EXPANSION};
use crate::{IoError, Result, Scan};

/// Dataset beside `xml` and `data` holding amri's reference image, float32 `[slice, row, col]`.
pub const REFERENCE: &str = "amri_reference";
/// Dataset beside `xml` and `data` holding amri's coil maps, `{real, imag}` float32
/// `[slice, coil, row, col]`.
pub const SENSITIVITIES: &str = "amri_sensitivities";
/// Prefix of the `userParameterString` names that carry amri's attributes.
pub const USER_PREFIX: &str = "amri.";

/// Whether the writer keeps attribute `key` (as a user parameter): not the ones the reader
/// derives from the file itself.
fn keeps_attribute(key: &str) -> bool {
    !(key.starts_with("ismrmrd_")
        || key.starts_with("source_")
        || key == "readout_oversampling_removed"
        || key == "reference_source")
}

/// Acquisition flag bits (1-based, as ISMRMRD numbers them: bit `b` is `1 << (b - 1)`).
pub mod flags {
    /// First readout of a slice.
    pub const FIRST_IN_SLICE: u32 = 7;
    /// Last readout of a slice.
    pub const LAST_IN_SLICE: u32 = 8;
    /// Noise measurement (no RF excitation).
    pub const IS_NOISE_MEASUREMENT: u32 = 19;
    /// Parallel-imaging calibration line only.
    pub const IS_PARALLEL_CALIBRATION: u32 = 20;
    /// Parallel-imaging calibration line that is also part of the image.
    pub const IS_PARALLEL_CALIBRATION_AND_IMAGING: u32 = 21;
    /// Readout acquired in the reverse direction.
    pub const IS_REVERSE: u32 = 22;
    /// Last readout of the measurement.
    pub const LAST_IN_MEASUREMENT: u32 = 25;
    /// Readouts that are not k-space lines of the image: navigator (23), phase correction (24),
    /// HP feedback (26), dummy scan (27), RT feedback (28), surface-coil correction (29), phase
    /// stabilisation reference and data (30, 31).
    pub const SKIPPED: [u32; 8] = [23, 24, 26, 27, 28, 29, 30, 31];

    /// Whether flag `bit` is set in `flags`.
    pub fn has(flags: u64, bit: u32) -> bool {
        (1..=64).contains(&bit) && flags & (1u64 << (bit - 1)) != 0
    }
}

/// Top-level group holding an ISMRMRD data set (`xml` and `data`) in an open file, `dataset`
/// first.
fn find_group(file: &Hdf5File) -> Option<String> {
    let root = file.root_group().ok()?;
    let (mut groups, _) = root.member_names().ok()?;
    groups.sort_by_key(|g| (g != "dataset", g.clone()));
    groups.into_iter().find(|g| {
        file.group(g)
            .and_then(|grp| grp.member_names())
            .map(|(_, ds)| ds.iter().any(|d| d == "xml") && ds.iter().any(|d| d == "data"))
            .unwrap_or(false)
    })
}

/// Whether `path` is an HDF5 file laid out as ISMRMRD (a top-level group with `xml` and `data`).
pub fn is_ismrmrd(path: &Path) -> bool {
    crate::hdf5::open(path)
        .ok()
        .and_then(|f| find_group(&f))
        .is_some()
}

/// Exact unsigned value of an integer stored with `dt` at the start of `b`.
fn uint_at(b: &[u8], dt: &Datatype) -> Option<u64> {
    let Datatype::FixedPoint {
        size, byte_order, ..
    } = dt
    else {
        return decode_num(b, dt).filter(|v| *v >= 0.0).map(|v| v as u64);
    };
    let n = *size as usize;
    if !(1..=8).contains(&n) {
        return None;
    }
    let mut a = [0u8; 8];
    let src = b.get(..n)?;
    if *byte_order == ByteOrder::BigEndian {
        for (i, v) in src.iter().rev().enumerate() {
            a[i] = *v;
        }
    } else {
        a[..n].copy_from_slice(src);
    }
    Some(u64::from_le_bytes(a))
}

/// A field of the acquisition record: byte offset from the record start and its type.
#[derive(Clone, Debug)]
struct Field {
    off: usize,
    dt: Datatype,
}

impl Field {
    fn uint(&self, rec: &[u8]) -> Option<u64> {
        uint_at(rec.get(self.off..)?, &self.dt)
    }

    /// Three floats of an array field (direction cosines, position).
    fn vec3(&self, rec: &[u8]) -> Option<[f64; 3]> {
        let Datatype::Array { base, dims } = &self.dt else {
            return None;
        };
        if dims.iter().product::<u64>() != 3 {
            return None;
        }
        let sz = dtype_size(base)?;
        let mut o = [0.0; 3];
        for (i, v) in o.iter_mut().enumerate() {
            *v = decode_num(rec.get(self.off + i * sz..)?, base)?;
        }
        Some(o)
    }
}

/// Where the fields amri uses sit in the file's acquisition compound.
struct Layout {
    size: usize,
    flags: Field,
    samples: Field,
    channels: Field,
    center: Field,
    discard_pre: Option<Field>,
    discard_post: Option<Field>,
    space_ref: Option<Field>,
    ky: Field,
    kz: Option<Field>,
    counters: [Option<Field>; 6],
    dirs: [Option<Field>; 4],
    /// Offset of the `data` vlen reference and the byte size of its float base type.
    data: (usize, Datatype),
}

/// Names of the counters of [`Layout::counters`]: `average` first, then those mapped onto amri's
/// slice axis, slowest first.
const COUNTERS: [&str; 6] = ["average", "repetition", "set", "phase", "contrast", "slice"];

fn compound_fields(dt: &Datatype) -> Option<&[hdf5_reader::CompoundField]> {
    match dt {
        Datatype::Compound { fields, .. } => Some(fields),
        _ => None,
    }
}

fn layout(path: &Path, dt: &Datatype) -> Result<Layout> {
    let bad = |m: String| IoError::unsupported(path, format!("ISMRMRD 'data': {m}"));
    let Datatype::Compound { size, fields } = dt else {
        return Err(bad(format!(
            "datatype {dt:?}; expected the acquisition compound {{head, traj, data}}"
        )));
    };
    let get = |name: &str| fields.iter().find(|f| f.name == name);
    let head = get("head").ok_or_else(|| bad("no 'head' member".into()))?;
    let hbase = head.byte_offset as usize;
    let hfields =
        compound_fields(&head.datatype).ok_or_else(|| bad("'head' is not a compound".into()))?;
    let hf = |name: &str| {
        hfields.iter().find(|f| f.name == name).map(|f| Field {
            off: hbase + f.byte_offset as usize,
            dt: f.datatype.clone(),
        })
    };
    let need = |name: &str| hf(name).ok_or_else(|| bad(format!("'head' has no '{name}'")));
    let idx = hfields
        .iter()
        .find(|f| f.name == "idx")
        .ok_or_else(|| bad("'head' has no 'idx'".into()))?;
    let ibase = hbase + idx.byte_offset as usize;
    let ifields =
        compound_fields(&idx.datatype).ok_or_else(|| bad("'idx' is not a compound".into()))?;
    let ix = |name: &str| {
        ifields.iter().find(|f| f.name == name).map(|f| Field {
            off: ibase + f.byte_offset as usize,
            dt: f.datatype.clone(),
        })
    };
    let data = get("data").ok_or_else(|| bad("no 'data' member".into()))?;
    let base = match &data.datatype {
        Datatype::VarLen { base, .. }
            if matches!(**base, Datatype::FloatingPoint { size: 4 | 8, .. }) =>
        {
            (**base).clone()
        }
        other => {
            return Err(bad(format!(
                "'data' has datatype {other:?}; expected a variable-length float sequence"
            )))
        }
    };
    let l = Layout {
        size: *size as usize,
        flags: need("flags")?,
        samples: need("number_of_samples")?,
        channels: need("active_channels")?,
        center: need("center_sample")?,
        discard_pre: hf("discard_pre"),
        discard_post: hf("discard_post"),
        space_ref: hf("encoding_space_ref"),
        ky: ix("kspace_encode_step_1").ok_or_else(|| bad("'idx' has no step 1".into()))?,
        kz: ix("kspace_encode_step_2"),
        counters: COUNTERS.map(ix),
        dirs: ["read_dir", "phase_dir", "slice_dir", "position"].map(hf),
        data: (data.byte_offset as usize, base),
    };
    Ok(l)
}

/// The header fields of one acquisition that amri uses.
#[derive(Clone, Debug)]
struct Acq {
    flags: u64,
    samples: usize,
    channels: usize,
    center: usize,
    pre: usize,
    post: usize,
    space_ref: u64,
    ky: u64,
    kz: u64,
    /// `average, repetition, set, phase, contrast, slice`.
    counters: [u64; 6],
}

fn acq_head(path: &Path, i: usize, rec: &[u8], l: &Layout) -> Result<Acq> {
    let bad = || IoError::malformed(path, format!("acquisition {i}: unreadable header field"));
    let opt = |f: &Option<Field>| -> Result<u64> {
        match f {
            Some(f) => f.uint(rec).ok_or_else(bad),
            None => Ok(0),
        }
    };
    let mut counters = [0u64; 6];
    for (c, f) in counters.iter_mut().zip(&l.counters) {
        *c = opt(f)?;
    }
    Ok(Acq {
        flags: l.flags.uint(rec).ok_or_else(bad)?,
        samples: l.samples.uint(rec).ok_or_else(bad)? as usize,
        channels: l.channels.uint(rec).ok_or_else(bad)? as usize,
        center: l.center.uint(rec).ok_or_else(bad)? as usize,
        pre: opt(&l.discard_pre)? as usize,
        post: opt(&l.discard_post)? as usize,
        space_ref: opt(&l.space_ref)?,
        ky: l.ky.uint(rec).ok_or_else(bad)?,
        kz: opt(&l.kz)?,
        counters,
    })
}

/// Samples of one acquisition as `[channel, sample]`.
fn acq_data(
    path: &Path,
    i: usize,
    rec: &[u8],
    l: &Layout,
    ds: &Dataset,
    a: &Acq,
) -> Result<Array2<C32>> {
    let rsz = ds.vlen_reference_size();
    let (off, base) = &l.data;
    let r = rec
        .get(*off..off + rsz)
        .ok_or_else(|| IoError::malformed(path, format!("acquisition {i}: record too short")))?;
    let fsz = dtype_size(base).unwrap_or(4);
    let bytes = ds
        .resolve_vlen_reference_bytes(r, fsz)
        .map_err(|e| h5err(path, &format!("acquisition {i}: reading its samples"), e))?;
    let want = a
        .channels
        .checked_mul(a.samples)
        .and_then(|v| v.checked_mul(2))
        .unwrap_or(usize::MAX);
    if bytes.len() / fsz != want || bytes.len() % fsz != 0 {
        return Err(IoError::malformed(
            path,
            format!(
                "acquisition {i}: holds {} values, but its header says {} channels × {} samples × 2",
                bytes.len() / fsz,
                a.channels,
                a.samples
            ),
        ));
    }
    let mut v = Vec::with_capacity(want / 2);
    for c in bytes.chunks_exact(2 * fsz) {
        let re = decode_num(c, base).unwrap_or(f64::NAN) as f32;
        let im = decode_num(&c[fsz..], base).unwrap_or(f64::NAN) as f32;
        v.push(C32::new(re, im));
    }
    Array2::from_shape_vec((a.channels, a.samples), v)
        .map_err(|e| IoError::malformed(path, format!("acquisition {i}: {e}")))
}

/// Reads an ISMRMRD file as [`Scan::KSpace`] (see the module docs for what is read and how).
pub fn read(path: &Path) -> Result<Scan> {
    read_kspace(path).map(Scan::KSpace)
}

/// Rank of each value in a set, for the dense counter numbering.
fn ranks(set: &BTreeSet<u64>) -> BTreeMap<u64, usize> {
    set.iter().enumerate().map(|(r, v)| (*v, r)).collect()
}

fn read_kspace(path: &Path) -> Result<KSpace> {
    let file_len = std::fs::metadata(path)
        .map_err(|e| IoError::os(path, e))?
        .len();
    let file = crate::hdf5::open(path)?;
    let group = find_group(&file).ok_or_else(|| {
        IoError::malformed(
            path,
            "not an ISMRMRD file: no group holds both 'xml' and 'data'",
        )
    })?;
    let xml_ds = file
        .dataset(&format!("{group}/xml"))
        .map_err(|e| h5err(path, "opening the XML header", e))?;
    let strings = xml_ds
        .read_strings()
        .map_err(|e| h5err(path, "reading the XML header", e))?;
    let xml = strings
        .first()
        .ok_or_else(|| IoError::malformed(path, "the XML header dataset is empty"))?;
    let h = header::parse(xml).map_err(|m| IoError::malformed(path, m))?;
    if !h.trajectory.eq_ignore_ascii_case("cartesian") {
        return Err(IoError::unsupported(
            path,
            format!(
                "ISMRMRD trajectory '{}' is not Cartesian; amri reads Cartesian ISMRMRD only (grid non-Cartesian data first, e.g. with BART or Gadgetron)",
                h.trajectory
            ),
        ));
    }
    if h.encoded.matrix[2] > 1 {
        return Err(IoError::unsupported(
            path,
            format!(
                "ISMRMRD 3-D encoding (encodedSpace matrix z = {}); amri reads 2-D (multi-slice) Cartesian data",
                h.encoded.matrix[2]
            ),
        ));
    }
    let [ex, ey, _] = h.encoded.matrix;
    let rx = h.recon.matrix[0];
    let rows = if rx < ex { rx } else { ex };
    let cols = ey;
    let center_ky = h.ky.map(|l| l.center).unwrap_or((ey / 2) as u64);

    let ds = file
        .dataset(&format!("{group}/data"))
        .map_err(|e| h5err(path, "opening the acquisitions", e))?;
    let l = layout(path, ds.dtype())?;
    if ds.shape().len() != 1 {
        return Err(IoError::malformed(
            path,
            format!(
                "ISMRMRD 'data' has shape {:?}; expected one axis",
                ds.shape()
            ),
        ));
    }
    let raw = ds
        .read_raw_bytes()
        .map_err(|e| h5err(path, "reading the acquisitions", e))?;
    let rsz = ds.vlen_reference_size();
    if l.size == 0 || l.data.0 + rsz > l.size || raw.len() % l.size != 0 {
        return Err(IoError::malformed(
            path,
            "ISMRMRD 'data': inconsistent acquisition record layout",
        ));
    }
    let n = raw.len() / l.size;
    let rec = |i: usize| &raw[i * l.size..(i + 1) * l.size];

    // Pass 1: headers only, to size the output and check the counters.
    let mut heads = Vec::with_capacity(n);
    let mut coils: Option<usize> = None;
    let mut values: [BTreeSet<u64>; 6] = Default::default();
    let mut skipped = 0usize;
    let mut other_space = 0usize;
    let mut n_noise = 0usize;
    let mut noise_samples = 0usize;
    for i in 0..n {
        let a = acq_head(path, i, rec(i), &l)?;
        if a.channels == 0 || a.samples == 0 {
            return Err(IoError::malformed(
                path,
                format!(
                    "acquisition {i}: {} channels × {} samples",
                    a.channels, a.samples
                ),
            ));
        }
        if flags::has(a.flags, flags::IS_NOISE_MEASUREMENT) {
            n_noise += 1;
            noise_samples = noise_samples.saturating_add(a.samples);
        } else if flags::SKIPPED.iter().any(|b| flags::has(a.flags, *b)) {
            skipped += 1;
            heads.push(None);
            continue;
        } else if a.space_ref != 0 {
            other_space += 1;
            heads.push(None);
            continue;
        } else {
            if a.kz != 0 {
                return Err(IoError::unsupported(
                    path,
                    format!(
                        "acquisition {i}: kspace_encode_step_2 = {} (3-D encoding); amri reads 2-D Cartesian data",
                        a.kz
                    ),
                ));
            }
            let col =
                a.ky.checked_add((ey / 2) as u64)
                    .and_then(|v| v.checked_sub(center_ky));
            if col.is_none_or(|c| c >= ey as u64) {
                return Err(IoError::malformed(
                    path,
                    format!(
                        "acquisition {i}: kspace_encode_step_1 = {} lies outside the encoded matrix y = {ey} (centre {center_ky})",
                        a.ky
                    ),
                ));
            }
            for (set, v) in values.iter_mut().zip(a.counters) {
                set.insert(v);
            }
        }
        match coils {
            None => coils = Some(a.channels),
            Some(c) if c != a.channels => {
                return Err(IoError::unsupported(
                    path,
                    format!(
                    "acquisition {i} has {} channels, earlier ones {c}; amri needs one coil count",
                    a.channels
                ),
                ))
            }
            _ => {}
        }
        heads.push(Some(a));
    }
    let coils = coils.ok_or_else(|| IoError::malformed(path, "holds no acquisitions"))?;
    if values[5].is_empty() {
        return Err(IoError::malformed(
            path,
            "holds no imaging or calibration readouts (only noise or skipped data)",
        ));
    }
    // Dense ranks of repetition, set, phase, contrast, slice (values[1..]).
    let rank: Vec<BTreeMap<u64, usize>> = values[1..].iter().map(ranks).collect();
    let counts: Vec<usize> = rank.iter().map(BTreeMap::len).collect();
    let frames = counts
        .iter()
        .try_fold(1usize, |a, &b| a.checked_mul(b))
        .unwrap_or(usize::MAX);
    let budget = file_len
        .saturating_mul(MAX_EXPANSION)
        .saturating_add(1 << 20);
    let grid = (frames as u64)
        .saturating_mul(coils as u64)
        .saturating_mul(ex.max(rows) as u64)
        .saturating_mul(cols as u64)
        .saturating_mul(8);
    if grid > budget || noise_samples.saturating_mul(coils).saturating_mul(8) as u64 > budget {
        return Err(IoError::malformed(
            path,
            format!(
                "k-space grid of {frames} slices × {coils} coils × {ex} × {cols} is far larger than the file ({file_len} bytes) can hold"
            ),
        ));
    }
    let frame_of = |a: &Acq| -> usize {
        let mut f = 0usize;
        for (k, r) in rank.iter().enumerate() {
            f = f * counts[k] + r.get(&a.counters[k + 1]).copied().unwrap_or(0);
        }
        f
    };

    // Pass 2: samples.
    let mut sum = Array4::<C32>::zeros((frames, coils, rows, cols));
    let mut count = Array2::<u32>::zeros((frames, cols));
    let mut noise = Array2::<C32>::zeros((noise_samples, coils));
    let mut noise_at = 0usize;
    let mut acs: Option<(usize, usize)> = None;
    let mut first_dirs: Option<[[f64; 3]; 4]> = None;
    let mut line = Array3::<C32>::zeros((coils, ex, 1));
    let mut out = Array3::<C32>::zeros((coils, rows, 1));
    for (i, a) in heads.iter().enumerate() {
        let Some(a) = a else { continue };
        let d = acq_data(path, i, rec(i), &l, &ds, a)?;
        if flags::has(a.flags, flags::IS_NOISE_MEASUREMENT) {
            noise
                .slice_mut(s![noise_at..noise_at + a.samples, ..])
                .assign(&d.t());
            noise_at += a.samples;
            continue;
        }
        if first_dirs.is_none() {
            let r = rec(i);
            let v: Option<Vec<[f64; 3]>> = l
                .dirs
                .iter()
                .map(|f| f.as_ref().and_then(|f| f.vec3(r)))
                .collect();
            if let Some(v) = v {
                first_dirs = Some([v[0], v[1], v[2], v[3]]);
            }
        }
        if a.pre.saturating_add(a.post) > a.samples {
            return Err(IoError::malformed(
                path,
                format!(
                    "acquisition {i}: discards {} + {} of its {} samples",
                    a.pre, a.post, a.samples
                ),
            ));
        }
        let reverse = flags::has(a.flags, flags::IS_REVERSE);
        line.fill(C32::new(0.0, 0.0));
        let half = (ex / 2) as i128;
        for k in a.pre..a.samples - a.post {
            let pos = if reverse {
                a.center as i128 - k as i128 + half
            } else {
                k as i128 - a.center as i128 + half
            };
            if (0..ex as i128).contains(&pos) {
                for c in 0..coils {
                    line[[c, pos as usize, 0]] = d[[c, k]];
                }
            }
        }
        if rows < ex {
            ifft2c_inplace(&mut line);
            let start = ex / 2 - rows / 2;
            out.assign(&line.slice(s![.., start..start + rows, ..]));
            fft2c_inplace(&mut out);
        } else {
            out.assign(&line);
        }
        let f = frame_of(a);
        let col = (a.ky + (ey / 2) as u64 - center_ky) as usize;
        for c in 0..coils {
            let mut dst = sum.slice_mut(s![f, c, .., col]);
            dst += &out.slice(s![c, .., 0]);
        }
        count[[f, col]] += 1;
        if flags::has(a.flags, flags::IS_PARALLEL_CALIBRATION)
            || flags::has(a.flags, flags::IS_PARALLEL_CALIBRATION_AND_IMAGING)
        {
            acs = Some(match acs {
                None => (col, col),
                Some((lo, hi)) => (lo.min(col), hi.max(col)),
            });
        }
    }
    let mut mask = Array3::<f32>::zeros((frames, rows, cols));
    let mut max_count = 0u32;
    for f in 0..frames {
        for col in 0..cols {
            let n = count[[f, col]];
            if n == 0 {
                continue;
            }
            max_count = max_count.max(n);
            mask.slice_mut(s![f, .., col]).fill(1.0);
            if n > 1 {
                let inv = 1.0 / n as f32;
                sum.slice_mut(s![f, .., .., col]).mapv_inplace(|v| v * inv);
            }
        }
    }

    let mut k = KSpace::new(sum);
    k.mask = Some(mask);
    if noise_samples > 0 {
        k.noise = Some(noise);
    }
    let spacing = |fov: f64, n: usize| if fov > 0.0 { fov / n as f64 } else { 1.0 };
    let row_mm = if rows < ex {
        spacing(h.recon.fov_mm[0], rows)
    } else {
        spacing(h.encoded.fov_mm[0], ex)
    };
    let col_mm = spacing(h.encoded.fov_mm[1], ey);
    let slice_mm = spacing(h.encoded.fov_mm[2], 1);
    k.affine = geometry(first_dirs, [col_mm, row_mm, slice_mm], rows, cols);

    // amri's own extras: reference image, coil maps, attributes (user parameters).
    let grid = [frames, rows, cols];
    if let Ok(ds) = file.dataset(&format!("{group}/{REFERENCE}")) {
        let a = crate::hdf5::read_real(path, REFERENCE, &ds)?;
        if a.shape() == grid {
            k.reference = a.into_dimensionality().ok();
        }
    }
    if let Ok(ds) = file.dataset(&format!("{group}/{SENSITIVITIES}")) {
        let (a, _) = crate::hdf5::read_complex(path, SENSITIVITIES, &ds)?;
        if a.shape() == [frames, coils, rows, cols] {
            k.sensitivities = a.into_dimensionality().ok();
        }
    }
    for (name, v) in &h.user {
        if let Some(key) = name.strip_prefix(USER_PREFIX) {
            if keeps_attribute(key) {
                k.attributes.insert(key.to_string(), v.clone());
            }
        }
    }
    let at = &mut k.attributes;
    let dims = |m: [usize; 3]| format!("{}x{}x{}", m[0], m[1], m[2]);
    let fov = |f: [f64; 3]| format!("{}x{}x{}", f[0], f[1], f[2]);
    at.insert("source_format".into(), "ISMRMRD".into());
    at.insert(
        "source_datatype".into(),
        match l.data.1 {
            Datatype::FloatingPoint { size: 8, .. } => "complex128",
            _ => "complex64",
        }
        .into(),
    );
    at.insert("ismrmrd_group".into(), group);
    at.insert("ismrmrd_encoded_matrix".into(), dims(h.encoded.matrix));
    at.insert("ismrmrd_recon_matrix".into(), dims(h.recon.matrix));
    at.insert("ismrmrd_encoded_fov_mm".into(), fov(h.encoded.fov_mm));
    at.insert("ismrmrd_recon_fov_mm".into(), fov(h.recon.fov_mm));
    at.insert("ismrmrd_trajectory".into(), h.trajectory.clone());
    if let Some((a, b)) = h.acceleration {
        at.insert("ismrmrd_acceleration".into(), format!("{a}x{b}"));
    }
    if let Some(m) = &h.calibration_mode {
        at.insert("ismrmrd_calibration_mode".into(), m.clone());
    }
    if h.encodings > 1 {
        at.insert(
            "ismrmrd_encodings".into(),
            format!("{} (only encoding 0 read)", h.encodings),
        );
    }
    for (key, v) in &h.info {
        at.insert(key.clone(), v.clone());
    }
    at.insert(
        "ismrmrd_acquisitions".into(),
        format!(
            "{n} ({n_noise} noise, {skipped} skipped, {other_space} of other encodings, {} k-space lines)",
            n - n_noise - skipped - other_space
        ),
    );
    if rows < ex {
        at.insert(
            "readout_oversampling_removed".into(),
            format!("{ex} -> {rows}"),
        );
    }
    if skipped > 0 {
        at.insert(
            "ismrmrd_skipped".into(),
            format!("{skipped} navigator/phase-correction/feedback/dummy readouts"),
        );
    }
    if let Some((lo, hi)) = acs {
        at.insert("acs_cols".into(), format!("{lo}-{hi}"));
    }
    if max_count > 1 {
        at.insert(
            "ismrmrd_averages_combined".into(),
            format!("mean of up to {max_count} readouts per line"),
        );
    }
    at.insert(
        "ismrmrd_slice_order".into(),
        format!(
            "amri slice = (((repetition*{1} + set)*{2} + phase)*{3} + contrast)*{4} + slice (counters ranked; repetitions {0}, sets {1}, phases {2}, contrasts {3}, slices {4})",
            counts[0], counts[1], counts[2], counts[3], counts[4]
        ),
    );
    crate::attrs::take_typed(path, &mut k)?;
    k.validate()
        .map_err(|e| IoError::malformed(path, e.to_string()))?;
    Ok(k)
}

fn norm(v: [f64; 3]) -> f64 {
    (v[0] * v[0] + v[1] * v[1] + v[2] * v[2]).sqrt()
}

/// Affine of the output grid: `spacing` is `[col, row, slice]` in mm; `dirs` are the read, phase
/// and slice directions and the slice-centre position in LPS (ISMRMRD's patient coordinates).
fn geometry(dirs: Option<[[f64; 3]; 4]>, spacing: [f64; 3], rows: usize, cols: usize) -> Affine {
    let unit = |v: [f64; 3]| (norm(v) - 1.0).abs() < 1e-3;
    match dirs {
        Some([read, phase, slice, pos])
            if unit(read) && unit(phase) && unit(slice) && pos.iter().all(|p| p.is_finite()) =>
        {
            let mut origin = pos;
            for (a, o) in origin.iter_mut().enumerate() {
                *o -= (cols / 2) as f64 * spacing[0] * phase[a]
                    + (rows / 2) as f64 * spacing[1] * read[a];
            }
            Affine::from_directions([phase, read, slice], spacing, origin).lps_to_ras()
        }
        _ => Affine::from_spacing(spacing),
    }
}

//! fastMRI-style HDF5 k-space files (read only), with the pure-Rust `hdf5-reader` crate.
//!
//! Layout read (as the fastMRI data set stores it):
//! - `kspace`: complex (h5py compound `{r, i}` of f32 or f64) `[slice, coil, row, col]`
//!   (multi-coil) or `[slice, row, col]` (single-coil, read with a coil axis of 1); centred, so
//!   `ifft2c` gives the image. Required.
//! - `mask` (optional): sampling mask over columns `[col]` (fastMRI's test and challenge sets),
//!   or `[row, col]` / `[slice, row, col]`; any integer, bool or float type, non-zero = measured;
//!   broadcast to `[slice, row, col]`.
//! - `reconstruction_rss` or `reconstruction_esc` (optional): the fully sampled reference. fastMRI
//!   crops it to 320×320, so it is kept as [`KSpace::reference`] only when its shape equals the
//!   k-space grid `[slice, row, col]`; otherwise it is dropped and the attribute
//!   `reference_dropped` says why.
//! - Root attributes: numbers and strings (e.g. `acquisition`, `max`, `norm`, `patient_id`) are
//!   copied into [`KSpace::attributes`] as text, except any attribute whose name contains
//!   `patient` (fastMRI's `patient_id` is a hash that still identifies a patient).
//!
//! Chunked and deflate-compressed datasets are read. There is no geometry in these files; the
//! affine is the identity.

use std::path::Path;

use amri_core::{KSpace, C32};
use hdf5_reader::{ByteOrder, Dataset, Datatype, Hdf5File, OpenOptions};
use ndarray::{Array3, Array4, ArrayD, IxDyn};

use crate::{IoError, Result, Scan};

/// Largest plausible ratio of decoded dataset bytes to file bytes (deflate's maximum is ~1032);
/// a read past it is refused before allocating.
pub(crate) const MAX_EXPANSION: u64 = 1100;

pub(crate) fn h5err(path: &Path, what: &str, e: hdf5_reader::error::Error) -> IoError {
    IoError::malformed(path, format!("{what}: {e}"))
}

/// Decodes a number stored with `dt` at the start of `b`, as f64; `None` for other classes.
pub(crate) fn decode_num(b: &[u8], dt: &Datatype) -> Option<f64> {
    fn bytes<const N: usize>(b: &[u8], order: &ByteOrder) -> Option<[u8; N]> {
        let mut a = [0u8; N];
        a.copy_from_slice(b.get(..N)?);
        if *order == ByteOrder::BigEndian {
            a.reverse();
        }
        Some(a)
    }
    Some(match dt {
        Datatype::FloatingPoint {
            size: 4,
            byte_order,
        } => f32::from_le_bytes(bytes(b, byte_order)?) as f64,
        Datatype::FloatingPoint {
            size: 8,
            byte_order,
        } => f64::from_le_bytes(bytes(b, byte_order)?),
        Datatype::FixedPoint {
            size,
            signed,
            byte_order,
        } => match (size, signed) {
            (1, true) => *b.first()? as i8 as f64,
            (1, false) => *b.first()? as f64,
            (2, true) => i16::from_le_bytes(bytes(b, byte_order)?) as f64,
            (2, false) => u16::from_le_bytes(bytes(b, byte_order)?) as f64,
            (4, true) => i32::from_le_bytes(bytes(b, byte_order)?) as f64,
            (4, false) => u32::from_le_bytes(bytes(b, byte_order)?) as f64,
            (8, true) => i64::from_le_bytes(bytes(b, byte_order)?) as f64,
            (8, false) => u64::from_le_bytes(bytes(b, byte_order)?) as f64,
            _ => return None,
        },
        Datatype::Enum { base, .. } => decode_num(b, base)?,
        _ => return None,
    })
}

pub(crate) fn dtype_size(dt: &Datatype) -> Option<usize> {
    match dt {
        Datatype::FloatingPoint { size, .. } | Datatype::FixedPoint { size, .. } => {
            Some(*size as usize)
        }
        Datatype::Enum { base, .. } => dtype_size(base),
        Datatype::Compound { size, .. } => Some(*size as usize),
        _ => None,
    }
}

/// Dataset shape as usize.
fn shape_of(ds: &Dataset) -> Vec<usize> {
    ds.shape().iter().map(|&d| d as usize).collect()
}

/// Reads a real (integer, bool/enum, float) dataset as f32 in C order.
pub(crate) fn read_real(path: &Path, name: &str, ds: &Dataset) -> Result<ArrayD<f32>> {
    let dt = ds.dtype().clone();
    let sz = dtype_size(&dt)
        .filter(|_| !matches!(dt, Datatype::Compound { .. }))
        .ok_or_else(|| {
            IoError::unsupported(
                path,
                format!("'{name}' has datatype {dt:?}, expected a real number"),
            )
        })?;
    let raw = ds
        .read_raw_bytes()
        .map_err(|e| h5err(path, &format!("reading '{name}'"), e))?;
    let mut v = Vec::with_capacity(raw.len() / sz.max(1));
    for c in raw.chunks_exact(sz) {
        let x = decode_num(c, &dt).ok_or_else(|| {
            IoError::unsupported(
                path,
                format!("'{name}' has datatype {dt:?}, expected a real number"),
            )
        })?;
        v.push(x as f32);
    }
    ArrayD::from_shape_vec(IxDyn(&shape_of(ds)), v)
        .map_err(|e| IoError::malformed(path, format!("'{name}': {e}")))
}

/// Reads a complex dataset (compound of two floats named `r`/`i` or `real`/`imag`).
pub(crate) fn read_complex(
    path: &Path,
    name: &str,
    ds: &Dataset,
) -> Result<(ArrayD<C32>, &'static str)> {
    let dt = ds.dtype().clone();
    let bad = || {
        IoError::unsupported(
            path,
            format!(
                "'{name}' has datatype {dt:?}; expected complex (an h5py compound {{r, i}} of floats)"
            ),
        )
    };
    let Datatype::Compound { size, fields } = &dt else {
        return Err(bad());
    };
    let find = |names: &[&str]| {
        fields
            .iter()
            .find(|f| names.iter().any(|n| f.name.eq_ignore_ascii_case(n)))
    };
    let (re, im) = match (find(&["r", "real", "re"]), find(&["i", "imag", "im"])) {
        (Some(r), Some(i)) => (r, i),
        _ => return Err(bad()),
    };
    let (rs, is) = (dtype_size(&re.datatype), dtype_size(&im.datatype));
    let float = |d: &Datatype| matches!(d, Datatype::FloatingPoint { .. });
    if !float(&re.datatype) || !float(&im.datatype) || rs != is {
        return Err(bad());
    }
    let fsz = rs.unwrap_or(0);
    let (ro, io, size) = (
        re.byte_offset as usize,
        im.byte_offset as usize,
        *size as usize,
    );
    if size == 0 || ro + fsz > size || io + fsz > size {
        return Err(IoError::malformed(
            path,
            format!("'{name}': inconsistent compound layout"),
        ));
    }
    let raw = ds
        .read_raw_bytes()
        .map_err(|e| h5err(path, &format!("reading '{name}'"), e))?;
    let v: Vec<C32> = raw
        .chunks_exact(size)
        .map(|c| {
            C32::new(
                decode_num(&c[ro..], &re.datatype).unwrap_or(f64::NAN) as f32,
                decode_num(&c[io..], &im.datatype).unwrap_or(f64::NAN) as f32,
            )
        })
        .collect();
    let a = ArrayD::from_shape_vec(IxDyn(&shape_of(ds)), v)
        .map_err(|e| IoError::malformed(path, format!("'{name}': {e}")))?;
    Ok((a, if fsz == 8 { "complex128" } else { "complex64" }))
}

/// Text of a root attribute: a string, a number, or a short numeric vector; `None` otherwise.
fn attr_text(a: &hdf5_reader::Attribute) -> Option<String> {
    if let Ok(s) = a.read_string() {
        return Some(s);
    }
    if a.shape.is_empty() || a.shape.iter().product::<u64>() == 1 {
        if let Ok(x) = a.read_as_f64() {
            return Some(x.to_string());
        }
    }
    let sz = dtype_size(&a.datatype)?;
    if matches!(a.datatype, Datatype::Compound { .. }) || sz == 0 {
        return None;
    }
    let vals: Option<Vec<String>> = a
        .raw_data
        .chunks_exact(sz)
        .take(64)
        .map(|c| decode_num(c, &a.datatype).map(|x| x.to_string()))
        .collect();
    vals.map(|v| format!("[{}]", v.join(", ")))
}

/// Opens `path` as HDF5 after checking its signature, with reads capped at
/// [`MAX_EXPANSION`] times the file size.
pub(crate) fn open(path: &Path) -> Result<Hdf5File> {
    let len = std::fs::metadata(path)
        .map_err(|e| IoError::os(path, e))?
        .len();
    let mut magic = [0u8; 8];
    {
        use std::io::Read;
        let mut f = std::fs::File::open(path).map_err(|e| IoError::os(path, e))?;
        let n = f.read(&mut magic).map_err(|e| IoError::os(path, e))?;
        if n < 8 || &magic != b"\x89HDF\r\n\x1a\n" {
            return Err(IoError::malformed(
                path,
                "not an HDF5 file (no HDF5 signature)",
            ));
        }
    }
    let budget = usize::try_from(len.saturating_mul(MAX_EXPANSION).saturating_add(1 << 20))
        .unwrap_or(usize::MAX);
    let opts = OpenOptions::default().with_max_read_bytes(budget);
    Hdf5File::open_with_options(path, opts).map_err(|e| h5err(path, "not a readable HDF5 file", e))
}

/// Reads a fastMRI-style HDF5 file as [`Scan::KSpace`] (see the module docs for the layout).
pub fn read(path: &Path) -> Result<Scan> {
    let file = open(path)?;
    let root = file
        .root_group()
        .map_err(|e| h5err(path, "root group", e))?;
    let (_, names) = root
        .member_names()
        .map_err(|e| h5err(path, "listing datasets", e))?;
    if !names.iter().any(|n| n == "kspace") {
        return Err(IoError::malformed(
            path,
            format!("no 'kspace' dataset (datasets: {})", names.join(", ")),
        ));
    }
    let ds = file
        .dataset("kspace")
        .map_err(|e| h5err(path, "opening 'kspace'", e))?;
    let (k, src_dtype) = read_complex(path, "kspace", &ds)?;
    let shape = k.shape().to_vec();
    let s4 = match shape.as_slice() {
        [s, c, r, k] => [*s, *c, *r, *k],
        [s, r, k] => [*s, 1, *r, *k],
        _ => {
            return Err(IoError::malformed(
                path,
                format!(
                    "'kspace' has shape {shape:?}; expected [slice, coil, row, col] or [slice, row, col]"
                ),
            ))
        }
    };
    let data: Array4<C32> = k
        .into_shape_with_order(s4)
        .map_err(|e| IoError::malformed(path, format!("'kspace': {e}")))?;
    let [s, _, r, c] = s4;
    let mut ks = KSpace::new(data);
    ks.attributes
        .insert("source_format".into(), "fastMRI HDF5".into());
    ks.attributes
        .insert("source_datatype".into(), src_dtype.into());
    ks.attributes.insert(
        "coils".into(),
        if shape.len() == 3 { "single" } else { "multi" }.into(),
    );

    if names.iter().any(|n| n == "mask") {
        let ds = file
            .dataset("mask")
            .map_err(|e| h5err(path, "opening 'mask'", e))?;
        let m = read_real(path, "mask", &ds)?;
        let sh = m.shape().to_vec();
        let srk = [s, r, c];
        let ok = !sh.is_empty()
            && sh.len() <= 3
            && sh.iter().rev().zip(srk.iter().rev()).all(|(a, b)| a == b);
        if !ok {
            return Err(IoError::malformed(
                path,
                format!("'mask' has shape {sh:?}, which does not fit k-space [slice, row, col] = {srk:?}"),
            ));
        }
        let view = m.broadcast(IxDyn(&srk)).ok_or_else(|| {
            IoError::malformed(path, format!("'mask' of shape {sh:?} does not broadcast"))
        })?;
        let mask = Array3::from_shape_fn(
            (s, r, c),
            |(a, b, d)| {
                if view[[a, b, d]] != 0.0 {
                    1.0
                } else {
                    0.0
                }
            },
        );
        ks.mask = Some(mask);
    }

    for name in ["reconstruction_rss", "reconstruction_esc"] {
        if !names.iter().any(|n| n == name) {
            continue;
        }
        let ds = file
            .dataset(name)
            .map_err(|e| h5err(path, &format!("opening '{name}'"), e))?;
        let sh = shape_of(&ds);
        if sh == [s, r, c] {
            let a = read_real(path, name, &ds)?;
            let a3: Array3<f32> = a
                .into_dimensionality()
                .map_err(|e| IoError::malformed(path, format!("'{name}': {e}")))?;
            ks.reference = Some(a3);
            ks.attributes.insert("reference_source".into(), name.into());
            ks.attributes.remove("reference_dropped");
            break;
        }
        ks.attributes.insert(
            "reference_dropped".into(),
            format!(
                "{name} has shape {sh:?} (fastMRI crops it), not the k-space grid [slice, row, col] = [{s}, {r}, {c}]"
            ),
        );
    }

    let attrs = root
        .attributes()
        .map_err(|e| h5err(path, "root attributes", e))?;
    for a in &attrs {
        if a.name.to_ascii_lowercase().contains("patient") {
            continue;
        }
        if let Some(t) = attr_text(a) {
            ks.attributes.insert(a.name.clone(), t);
        }
    }
    crate::attrs::take_typed(path, &mut ks)?;
    ks.validate()
        .map_err(|e| IoError::malformed(path, e.to_string()))?;
    Ok(Scan::KSpace(ks))
}

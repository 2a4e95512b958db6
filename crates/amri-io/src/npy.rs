//! NumPy `.npy` arrays and amri's `.npz` k-space bundle.
//!
//! `.npy` (format versions 1, 2 and 3) is read for the dtypes `f4 f8 i1 i2 i4 i8 u1 u2 u4 u8 b1
//! c8 c16` in either byte order and in C or Fortran order; arrays are always returned in C
//! (row-major) order. amri writes version 1.0 (2.0 when the header needs it), little-endian,
//! C order.
//!
//! As a [`Scan`] ([`read`]): a complex array of 1 to 4 dimensions is k-space, its shape
//! left-padded with 1s to `[slice, coil, row, col]`; a real array of 1 to 4 dimensions is an image
//! left-padded to `[frame, slice, row, col]` with an identity affine. (A `.npy` carries no tag, so
//! a complex image written as `.npy` reads back as k-space.)
//!
//! The `.npz` bundle ([`write_kspace_npz`], [`read_kspace_npz`]) is amri's own measured-data file,
//! the fastMRI layout in a form `numpy.load` opens: `kspace` complex64 `[slice, coil, row, col]`;
//! optional `mask` float32 `[slice, row, col]` (1 measured, 0 not), `reference` float32
//! `[slice, row, col]`, `sensitivities` complex64 `[slice, coil, row, col]`; `affine` float64 4×4
//! (the image grid's voxel-to-RAS+ mm matrix, `(col, row, slice)` voxel order); `attributes`
//! uint8 bytes of a JSON object of strings.

use std::fs::File;
use std::io::{Read, Write};
use std::path::Path;

use amri_core::{Affine, KSpace, Metadata, Volume, C32};
use ndarray::{Array2, Array3, Array4, ArrayD, Axis, IxDyn, ShapeBuilder};
use num_complex::Complex64;

use crate::{IoError, Result, Scan};

/// Largest `.npy` header amri accepts, in bytes (numpy's own default limit is 10 000).
const MAX_HEADER: usize = 1 << 20;
/// Largest plausible expansion of deflate data in an `.npz` entry.
const MAX_DEFLATE_RATIO: u64 = 1100;

/// An n-dimensional array as stored in a `.npy` file, in C order, one variant per dtype.
#[derive(Clone, Debug, PartialEq)]
pub enum NpyArray {
    /// `f4`
    F32(ArrayD<f32>),
    /// `f8`
    F64(ArrayD<f64>),
    /// `i1`
    I8(ArrayD<i8>),
    /// `i2`
    I16(ArrayD<i16>),
    /// `i4`
    I32(ArrayD<i32>),
    /// `i8`
    I64(ArrayD<i64>),
    /// `u1`
    U8(ArrayD<u8>),
    /// `u2`
    U16(ArrayD<u16>),
    /// `u4`
    U32(ArrayD<u32>),
    /// `u8`
    U64(ArrayD<u64>),
    /// `b1` (numpy bool)
    Bool(ArrayD<bool>),
    /// `c8` (complex64: two f32)
    C64(ArrayD<C32>),
    /// `c16` (complex128: two f64)
    C128(ArrayD<Complex64>),
}

/// A sample type that can live in a `.npy` file.
trait Elem: Sized + Clone {
    /// Type code without byte order, e.g. `f4`.
    const CODE: &'static str;
    /// Decodes one element from `size_of` bytes.
    fn decode(c: &[u8], big: bool) -> Self;
    /// Appends the little-endian bytes of `self`.
    fn encode(&self, out: &mut Vec<u8>);
}

fn arr<const N: usize>(c: &[u8], big: bool) -> [u8; N] {
    let mut a = [0u8; N];
    a.copy_from_slice(&c[..N]);
    if big {
        a.reverse();
    }
    a
}

macro_rules! elem_num {
    ($t:ty, $code:literal, $n:literal) => {
        impl Elem for $t {
            const CODE: &'static str = $code;
            fn decode(c: &[u8], big: bool) -> Self {
                <$t>::from_le_bytes(arr::<$n>(c, big))
            }
            fn encode(&self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.to_le_bytes());
            }
        }
    };
}
elem_num!(f32, "f4", 4);
elem_num!(f64, "f8", 8);
elem_num!(i8, "i1", 1);
elem_num!(i16, "i2", 2);
elem_num!(i32, "i4", 4);
elem_num!(i64, "i8", 8);
elem_num!(u8, "u1", 1);
elem_num!(u16, "u2", 2);
elem_num!(u32, "u4", 4);
elem_num!(u64, "u8", 8);

impl Elem for bool {
    const CODE: &'static str = "b1";
    fn decode(c: &[u8], _big: bool) -> Self {
        c[0] != 0
    }
    fn encode(&self, out: &mut Vec<u8>) {
        out.push(*self as u8);
    }
}

impl Elem for C32 {
    const CODE: &'static str = "c8";
    fn decode(c: &[u8], big: bool) -> Self {
        C32::new(f32::decode(&c[..4], big), f32::decode(&c[4..8], big))
    }
    fn encode(&self, out: &mut Vec<u8>) {
        self.re.encode(out);
        self.im.encode(out);
    }
}

impl Elem for Complex64 {
    const CODE: &'static str = "c16";
    fn decode(c: &[u8], big: bool) -> Self {
        Complex64::new(f64::decode(&c[..8], big), f64::decode(&c[8..16], big))
    }
    fn encode(&self, out: &mut Vec<u8>) {
        self.re.encode(out);
        self.im.encode(out);
    }
}

/// Parsed `.npy` header.
#[derive(Debug)]
struct Header {
    code: String,
    big: bool,
    fortran: bool,
    shape: Vec<usize>,
}

fn item_size(code: &str) -> Option<usize> {
    Some(match code {
        "f4" | "i4" | "u4" => 4,
        "f8" | "i8" | "u8" | "c8" => 8,
        "i2" | "u2" => 2,
        "i1" | "u1" | "b1" => 1,
        "c16" => 16,
        _ => return None,
    })
}

/// Value text after `'key':` in a numpy header dict.
fn dict_value<'a>(h: &'a str, key: &str) -> Option<&'a str> {
    let k1 = format!("'{key}'");
    let k2 = format!("\"{key}\"");
    let i = h
        .find(&k1)
        .map(|i| i + k1.len())
        .or_else(|| h.find(&k2).map(|i| i + k2.len()))?;
    let rest = h[i..].trim_start().strip_prefix(':')?;
    Some(rest.trim_start())
}

fn parse_header(text: &str) -> std::result::Result<Header, String> {
    let descr = dict_value(text, "descr").ok_or("header has no 'descr'")?;
    let q = descr.chars().next().ok_or("empty 'descr'")?;
    if q != '\'' && q != '"' {
        return Err(format!(
            "structured dtype {} is not supported (expected a plain dtype such as '<f4')",
            descr.split('}').next().unwrap_or(descr)
        ));
    }
    let end = descr[1..].find(q).ok_or("unterminated 'descr'")?;
    let d = &descr[1..1 + end];
    let (big, code) = match d.chars().next() {
        Some('<') | Some('|') | Some('=') => (false, &d[1..]),
        Some('>') => (true, &d[1..]),
        _ => (false, d),
    };
    // `=` means native; amri runs on little-endian machines only in practice, and numpy itself
    // writes `<` or `>` explicitly.
    let code = match code {
        "?" => "b1",
        "B" => "u1",
        "b" => "i1",
        c => c,
    };
    if item_size(code).is_none() {
        return Err(format!(
            "dtype '{d}' is not supported (amri reads f4 f8 i1 i2 i4 i8 u1 u2 u4 u8 b1 c8 c16)"
        ));
    }
    let fo = dict_value(text, "fortran_order").ok_or("header has no 'fortran_order'")?;
    let fortran = if fo.starts_with("True") {
        true
    } else if fo.starts_with("False") {
        false
    } else {
        return Err(format!(
            "bad 'fortran_order' value {}",
            fo.chars().take(10).collect::<String>()
        ));
    };
    let sh = dict_value(text, "shape").ok_or("header has no 'shape'")?;
    let sh = sh.strip_prefix('(').ok_or("'shape' is not a tuple")?;
    let close = sh.find(')').ok_or("unterminated 'shape'")?;
    let shape = sh[..close]
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(|t| {
            t.trim_end_matches('L')
                .parse::<usize>()
                .map_err(|_| format!("shape entry '{t}' is not a non-negative integer"))
        })
        .collect::<std::result::Result<Vec<_>, _>>()?;
    Ok(Header {
        code: code.to_string(),
        big,
        fortran,
        shape,
    })
}

/// Reads one `.npy` stream; `avail` bounds the bytes the data may claim, `what` names the source
/// in errors (the file, or `entry 'x.npy'` of an `.npz`).
fn read_stream(path: &Path, what: &str, r: &mut dyn Read, avail: u64) -> Result<NpyArray> {
    let bad = |msg: String| IoError::malformed(path, format!("{what}{msg}"));
    let io = |e: std::io::Error| IoError::malformed(path, format!("{what}read failed: {e}"));
    let mut pre = [0u8; 10];
    r.read_exact(&mut pre)
        .map_err(|_| bad("too short for an .npy header".into()))?;
    if &pre[..6] != b"\x93NUMPY" {
        return Err(bad("not an .npy file (no \\x93NUMPY magic)".into()));
    }
    let (major, minor) = (pre[6], pre[7]);
    let (hlen, used) = match major {
        1 => (u16::from_le_bytes([pre[8], pre[9]]) as usize, 10usize),
        2 | 3 => {
            let mut b = [0u8; 2];
            r.read_exact(&mut b)
                .map_err(|_| bad("truncated .npy header".into()))?;
            (
                u32::from_le_bytes([pre[8], pre[9], b[0], b[1]]) as usize,
                12usize,
            )
        }
        _ => {
            return Err(bad(format!(
                "unsupported .npy format version {major}.{minor}"
            )))
        }
    };
    if hlen > MAX_HEADER || (hlen + used) as u64 > avail {
        return Err(bad(format!(
            "header length {hlen} is impossible for {avail} bytes"
        )));
    }
    let mut hb = vec![0u8; hlen];
    r.read_exact(&mut hb)
        .map_err(|_| bad("truncated .npy header".into()))?;
    let text: String = if major == 3 {
        String::from_utf8_lossy(&hb).into_owned()
    } else {
        hb.iter().map(|&b| b as char).collect()
    };
    let h = parse_header(&text).map_err(bad)?;
    let isz = item_size(&h.code).unwrap_or(1) as u64;
    let n = h
        .shape
        .iter()
        .try_fold(1u64, |a, &d| a.checked_mul(d as u64))
        .and_then(|n| n.checked_mul(isz))
        .ok_or_else(|| bad(format!("shape {:?} overflows", h.shape)))?;
    let left = avail - (hlen + used) as u64;
    if n > left {
        return Err(bad(format!(
            "truncated: shape {:?} of {} needs {n} bytes of data, only {left} present",
            h.shape, h.code
        )));
    }
    let mut raw = Vec::new();
    r.take(n).read_to_end(&mut raw).map_err(io)?;
    if raw.len() as u64 != n {
        return Err(bad(format!(
            "truncated: shape {:?} of {} needs {n} bytes of data, found {}",
            h.shape,
            h.code,
            raw.len()
        )));
    }
    fn build<T: Elem>(h: &Header, raw: &[u8]) -> std::result::Result<ArrayD<T>, String> {
        let sz = raw.len() / h.shape.iter().product::<usize>().max(1);
        let v: Vec<T> = if raw.is_empty() {
            Vec::new()
        } else {
            raw.chunks_exact(sz.max(1))
                .map(|c| T::decode(c, h.big))
                .collect()
        };
        let a = if h.fortran {
            ArrayD::from_shape_vec(IxDyn(&h.shape).f(), v)
                .map(|a| a.as_standard_layout().into_owned())
        } else {
            ArrayD::from_shape_vec(IxDyn(&h.shape), v)
        };
        a.map_err(|e| format!("shape {:?}: {e}", h.shape))
    }
    let out = match h.code.as_str() {
        "f4" => build::<f32>(&h, &raw).map(NpyArray::F32),
        "f8" => build::<f64>(&h, &raw).map(NpyArray::F64),
        "i1" => build::<i8>(&h, &raw).map(NpyArray::I8),
        "i2" => build::<i16>(&h, &raw).map(NpyArray::I16),
        "i4" => build::<i32>(&h, &raw).map(NpyArray::I32),
        "i8" => build::<i64>(&h, &raw).map(NpyArray::I64),
        "u1" => build::<u8>(&h, &raw).map(NpyArray::U8),
        "u2" => build::<u16>(&h, &raw).map(NpyArray::U16),
        "u4" => build::<u32>(&h, &raw).map(NpyArray::U32),
        "u8" => build::<u64>(&h, &raw).map(NpyArray::U64),
        "b1" => build::<bool>(&h, &raw).map(NpyArray::Bool),
        "c8" => build::<C32>(&h, &raw).map(NpyArray::C64),
        "c16" => build::<Complex64>(&h, &raw).map(NpyArray::C128),
        c => Err(format!("dtype {c} is not supported")),
    };
    out.map_err(bad)
}

impl NpyArray {
    /// Shape of the array (C order).
    pub fn shape(&self) -> &[usize] {
        match self {
            NpyArray::F32(a) => a.shape(),
            NpyArray::F64(a) => a.shape(),
            NpyArray::I8(a) => a.shape(),
            NpyArray::I16(a) => a.shape(),
            NpyArray::I32(a) => a.shape(),
            NpyArray::I64(a) => a.shape(),
            NpyArray::U8(a) => a.shape(),
            NpyArray::U16(a) => a.shape(),
            NpyArray::U32(a) => a.shape(),
            NpyArray::U64(a) => a.shape(),
            NpyArray::Bool(a) => a.shape(),
            NpyArray::C64(a) => a.shape(),
            NpyArray::C128(a) => a.shape(),
        }
    }

    /// numpy name of the dtype, e.g. `float32`, `complex64`.
    pub fn dtype_name(&self) -> &'static str {
        match self {
            NpyArray::F32(_) => "float32",
            NpyArray::F64(_) => "float64",
            NpyArray::I8(_) => "int8",
            NpyArray::I16(_) => "int16",
            NpyArray::I32(_) => "int32",
            NpyArray::I64(_) => "int64",
            NpyArray::U8(_) => "uint8",
            NpyArray::U16(_) => "uint16",
            NpyArray::U32(_) => "uint32",
            NpyArray::U64(_) => "uint64",
            NpyArray::Bool(_) => "bool",
            NpyArray::C64(_) => "complex64",
            NpyArray::C128(_) => "complex128",
        }
    }

    /// Whether the dtype is complex (`c8` or `c16`).
    pub fn is_complex(&self) -> bool {
        matches!(self, NpyArray::C64(_) | NpyArray::C128(_))
    }

    /// The samples as f32 (bool as 0/1; 64-bit types rounded), or `None` for complex arrays.
    pub fn to_f32(&self) -> Option<ArrayD<f32>> {
        Some(match self {
            NpyArray::F32(a) => a.clone(),
            NpyArray::F64(a) => a.mapv(|v| v as f32),
            NpyArray::I8(a) => a.mapv(|v| v as f32),
            NpyArray::I16(a) => a.mapv(|v| v as f32),
            NpyArray::I32(a) => a.mapv(|v| v as f32),
            NpyArray::I64(a) => a.mapv(|v| v as f32),
            NpyArray::U8(a) => a.mapv(|v| v as f32),
            NpyArray::U16(a) => a.mapv(|v| v as f32),
            NpyArray::U32(a) => a.mapv(|v| v as f32),
            NpyArray::U64(a) => a.mapv(|v| v as f32),
            NpyArray::Bool(a) => a.mapv(|v| v as u8 as f32),
            NpyArray::C64(_) | NpyArray::C128(_) => return None,
        })
    }

    /// The samples as complex64 (complex128 rounded), or `None` for real arrays.
    pub fn to_c32(&self) -> Option<ArrayD<C32>> {
        match self {
            NpyArray::C64(a) => Some(a.clone()),
            NpyArray::C128(a) => Some(a.mapv(|v| C32::new(v.re as f32, v.im as f32))),
            _ => None,
        }
    }

    /// The `.npy` bytes of this array: format 1.0 (2.0 for huge headers), little-endian, C order.
    pub fn to_bytes(&self) -> Vec<u8> {
        fn enc<T: Elem>(a: &ArrayD<T>) -> (String, Vec<usize>, Vec<u8>) {
            let mut out = Vec::with_capacity(a.len() * 8);
            for v in a.iter() {
                v.encode(&mut out);
            }
            let bo = if T::CODE == "b1" || T::CODE.ends_with('1') {
                '|'
            } else {
                '<'
            };
            (format!("{bo}{}", T::CODE), a.shape().to_vec(), out)
        }
        let (descr, shape, data) = match self {
            NpyArray::F32(a) => enc(a),
            NpyArray::F64(a) => enc(a),
            NpyArray::I8(a) => enc(a),
            NpyArray::I16(a) => enc(a),
            NpyArray::I32(a) => enc(a),
            NpyArray::I64(a) => enc(a),
            NpyArray::U8(a) => enc(a),
            NpyArray::U16(a) => enc(a),
            NpyArray::U32(a) => enc(a),
            NpyArray::U64(a) => enc(a),
            NpyArray::Bool(a) => enc(a),
            NpyArray::C64(a) => enc(a),
            NpyArray::C128(a) => enc(a),
        };
        let shape_txt = match shape.len() {
            0 => "()".to_string(),
            1 => format!("({},)", shape[0]),
            _ => format!(
                "({})",
                shape
                    .iter()
                    .map(|s| s.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
        let dict =
            format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape_txt}, }}");
        let v1 = dict.len() + 1 + 10 <= u16::MAX as usize;
        let pre = if v1 { 10 } else { 12 };
        let total = (pre + dict.len() + 1).div_ceil(64) * 64;
        let hlen = total - pre;
        let mut out = Vec::with_capacity(total + data.len());
        out.extend_from_slice(b"\x93NUMPY");
        if v1 {
            out.extend_from_slice(&[1, 0]);
            out.extend_from_slice(&(hlen as u16).to_le_bytes());
        } else {
            out.extend_from_slice(&[2, 0]);
            out.extend_from_slice(&(hlen as u32).to_le_bytes());
        }
        out.extend_from_slice(dict.as_bytes());
        out.resize(total - 1, b' ');
        out.push(b'\n');
        out.extend_from_slice(&data);
        out
    }
}

/// Reads a `.npy` file of any supported dtype, byte order and memory order, in C order.
pub fn read_array(path: &Path) -> Result<NpyArray> {
    let mut f = File::open(path).map_err(|e| IoError::os(path, e))?;
    let len = f.metadata().map_err(|e| IoError::os(path, e))?.len();
    let mut r = std::io::BufReader::new(&mut f);
    read_stream(path, "", &mut r, len)
}

/// Writes `a` as a `.npy` file (little-endian, C order), atomically.
pub fn write_array(path: &Path, a: &NpyArray) -> Result<()> {
    crate::atomic::write_bytes(path, &a.to_bytes())
}

fn is_npz(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("npz"))
}

/// Left-pads `shape` with 1s to four axes; `None` for 0 or more than 4 axes.
fn pad4(shape: &[usize]) -> Option<[usize; 4]> {
    if shape.is_empty() || shape.len() > 4 {
        return None;
    }
    let mut s = [1usize; 4];
    s[4 - shape.len()..].copy_from_slice(shape);
    Some(s)
}

/// Reads a `.npz` k-space bundle as [`Scan::KSpace`], or a `.npy` array: complex as k-space
/// `[slice, coil, row, col]`, real as an image `[frame, slice, row, col]`, both left-padded.
pub fn read(path: &Path) -> Result<Scan> {
    if is_npz(path) {
        return read_kspace_npz(path).map(Scan::KSpace);
    }
    let a = read_array(path)?;
    let shape = a.shape().to_vec();
    let s4 = pad4(&shape).ok_or_else(|| {
        IoError::unsupported(
            path,
            format!("array of shape {shape:?}: amri reads .npy arrays of 1 to 4 dimensions"),
        )
    })?;
    if shape.contains(&0) {
        return Err(IoError::malformed(
            path,
            format!("array of shape {shape:?} has a zero-sized dimension: no samples"),
        ));
    }
    let dtype = a.dtype_name();
    let shape_err = |e: ndarray::ShapeError| IoError::malformed(path, format!("shape: {e}"));
    if let Some(c) = a.to_c32() {
        let data = c
            .into_shape_with_order(s4)
            .map_err(shape_err)?
            .into_dimensionality()
            .map_err(shape_err)?;
        let mut k = KSpace::new(data);
        k.attributes.insert("source_format".into(), "npy".into());
        k.attributes.insert("source_datatype".into(), dtype.into());
        return Ok(Scan::KSpace(k));
    }
    let r = a
        .to_f32()
        .ok_or_else(|| IoError::unsupported(path, "dtype"))?;
    let data: Array4<f32> = r
        .into_shape_with_order(s4)
        .map_err(shape_err)?
        .into_dimensionality()
        .map_err(shape_err)?;
    let mut v = Volume::new(data, Affine::IDENTITY);
    v.meta = Metadata {
        source_format: "npy".into(),
        source_datatype: dtype.into(),
        ..Metadata::default()
    };
    Ok(Scan::Image(v))
}

/// Writes a scan as `.npy` (image: float32 `[frame, slice, row, col]`; complex image or k-space
/// without mask, reference or maps: complex64, 4-D) or, for a `.npz` path, k-space as the bundle
/// of [`write_kspace_npz`]. K-space with a mask (other than one inferred from its zero samples,
/// which the samples hold), reference or maps must go to `.npz`.
pub fn write(path: &Path, scan: &Scan) -> Result<()> {
    if is_npz(path) {
        return match scan {
            Scan::KSpace(k) => write_kspace_npz(path, k),
            _ => Err(IoError::Unwritable {
                path: path.to_path_buf(),
                msg: "an .npz bundle holds measured k-space; write images as .npy or .nii.gz"
                    .into(),
            }),
        };
    }
    let a = match scan {
        Scan::Image(v) => NpyArray::F32(v.data.clone().into_dyn()),
        Scan::ComplexImage(v) => NpyArray::C64(v.data.clone().into_dyn()),
        Scan::KSpace(k) => {
            // A mask inferred from the non-zero samples is held by the samples themselves.
            let inferred = k.attributes.get("mask_source").map(String::as_str)
                == Some(crate::format::MASK_INFERRED);
            if (k.mask.is_some() && !inferred) || k.reference.is_some() || k.sensitivities.is_some()
            {
                return Err(IoError::Unwritable {
                    path: path.to_path_buf(),
                    msg: "this k-space has a mask, reference or coil maps that .npy cannot hold; write it as .npz".into(),
                });
            }
            NpyArray::C64(k.data.clone().into_dyn())
        }
    };
    write_array(path, &a)
}

/// Writes k-space as amri's `.npz` bundle (see the module docs), uncompressed, atomically.
pub fn write_kspace_npz(path: &Path, k: &KSpace) -> Result<()> {
    k.validate().map_err(|e| IoError::Unwritable {
        path: path.to_path_buf(),
        msg: e.to_string(),
    })?;
    let mut entries: Vec<(&str, NpyArray)> =
        vec![("kspace", NpyArray::C64(k.data.clone().into_dyn()))];
    if let Some(m) = &k.mask {
        entries.push(("mask", NpyArray::F32(m.clone().into_dyn())));
    }
    if let Some(r) = &k.reference {
        entries.push(("reference", NpyArray::F32(r.clone().into_dyn())));
    }
    if let Some(s) = &k.sensitivities {
        entries.push(("sensitivities", NpyArray::C64(s.clone().into_dyn())));
    }
    let aff = Array2::from_shape_fn((4, 4), |(r, c)| k.affine.0[r][c]);
    entries.push(("affine", NpyArray::F64(aff.into_dyn())));
    let json =
        serde_json::to_vec(&*crate::attrs::with_typed(k)).map_err(|e| IoError::Unwritable {
            path: path.to_path_buf(),
            msg: format!("attributes: {e}"),
        })?;
    let n = json.len();
    entries.push((
        "attributes",
        NpyArray::U8(ArrayD::from_shape_vec(IxDyn(&[n]), json).map_err(|e| {
            IoError::Unwritable {
                path: path.to_path_buf(),
                msg: e.to_string(),
            }
        })?),
    ));
    crate::atomic::write_atomic(path, |w| {
        let mut z = zip::ZipWriter::new_stream(w);
        for (name, a) in &entries {
            let bytes = a.to_bytes();
            let opts = zip::write::SimpleFileOptions::default()
                .compression_method(zip::CompressionMethod::Stored)
                .large_file(bytes.len() as u64 >= u32::MAX as u64);
            z.start_file(format!("{name}.npy"), opts)
                .map_err(std::io::Error::other)?;
            z.write_all(&bytes)?;
        }
        z.finish().map_err(std::io::Error::other)?;
        Ok(())
    })
}

/// One entry of an open `.npz`, or `None` if absent.
fn npz_entry(
    path: &Path,
    z: &mut zip::ZipArchive<std::io::BufReader<File>>,
    name: &str,
) -> Result<Option<NpyArray>> {
    let file = format!("{name}.npy");
    let mut e = match z.by_name(&file) {
        Ok(e) => e,
        Err(zip::result::ZipError::FileNotFound) => return Ok(None),
        Err(err) => return Err(IoError::malformed(path, format!("entry '{file}': {err}"))),
    };
    let size = e.size();
    let csize = e.compressed_size();
    if size > csize.saturating_mul(MAX_DEFLATE_RATIO).saturating_add(4096) {
        return Err(IoError::malformed(
            path,
            format!("entry '{file}' claims {size} bytes from {csize} compressed bytes"),
        ));
    }
    let what = format!("entry '{file}': ");
    read_stream(path, &what, &mut e, size).map(Some)
}

/// Broadcasts a real mask of shape `[col]`, `[row, col]` or `[slice, row, col]` to
/// `[slice, row, col]` as 0/1.
fn broadcast_mask(path: &Path, name: &str, m: ArrayD<f32>, srk: [usize; 3]) -> Result<Array3<f32>> {
    let sh = m.shape().to_vec();
    let ok = sh.len() <= 3
        && !sh.is_empty()
        && sh
            .iter()
            .rev()
            .zip(srk.iter().rev())
            .all(|(a, b)| a == b || *a == 1);
    if !ok {
        return Err(IoError::malformed(
            path,
            format!("{name} of shape {sh:?} does not broadcast to [slice, row, col] = {srk:?}"),
        ));
    }
    let bad = m.iter().filter(|v| !v.is_finite()).count();
    if bad > 0 {
        return Err(IoError::malformed(
            path,
            format!("{name} holds {bad} NaN or infinite values (of {})", m.len()),
        ));
    }
    let m = m
        .broadcast(IxDyn(&srk))
        .ok_or_else(|| {
            IoError::malformed(path, format!("{name} of shape {sh:?} does not broadcast"))
        })?
        .to_owned();
    let m3 = m
        .into_shape_with_order(srk)
        .map_err(|e| IoError::malformed(path, format!("{name}: {e}")))?;
    Ok(m3.mapv(|v| if v != 0.0 { 1.0 } else { 0.0 }))
}

/// Reads amri's `.npz` k-space bundle (see the module docs); `kspace` may also be complex128 or
/// have fewer than 4 axes (left-padded), `mask` may be any real or bool dtype of shape `[col]`,
/// `[row, col]` or `[slice, row, col]` (broadcast; non-zero = measured).
pub fn read_kspace_npz(path: &Path) -> Result<KSpace> {
    let f = File::open(path).map_err(|e| IoError::os(path, e))?;
    let mut z = zip::ZipArchive::new(std::io::BufReader::new(f))
        .map_err(|e| IoError::malformed(path, format!("not a readable .npz (zip) file: {e}")))?;
    let ks = npz_entry(path, &mut z, "kspace")?
        .ok_or_else(|| IoError::malformed(path, "no 'kspace' array in the .npz bundle"))?;
    let shape = ks.shape().to_vec();
    let c = ks.to_c32().ok_or_else(|| {
        IoError::malformed(
            path,
            format!("'kspace' is {}, expected complex64", ks.dtype_name()),
        )
    })?;
    let s4 = pad4(&shape).ok_or_else(|| {
        IoError::malformed(
            path,
            format!("'kspace' has shape {shape:?}, expected [slice, coil, row, col]"),
        )
    })?;
    if shape.contains(&0) {
        return Err(IoError::malformed(
            path,
            format!("'kspace' of shape {shape:?} has a zero-sized dimension: no samples"),
        ));
    }
    let shape_err = |e: ndarray::ShapeError| IoError::malformed(path, format!("shape: {e}"));
    let data: Array4<C32> = c
        .into_shape_with_order(s4)
        .map_err(shape_err)?
        .into_dimensionality()
        .map_err(shape_err)?;
    let [s, _nc, r, col] = s4;
    let mut k = KSpace::new(data);
    if let Some(m) = npz_entry(path, &mut z, "mask")? {
        let dt = m.dtype_name();
        let m = m.to_f32().ok_or_else(|| {
            IoError::malformed(path, format!("'mask' is {dt}, expected a real dtype"))
        })?;
        k.mask = Some(broadcast_mask(path, "'mask'", m, [s, r, col])?);
    }
    if let Some(m) = npz_entry(path, &mut z, "reference")? {
        let dt = m.dtype_name();
        let m = m.to_f32().ok_or_else(|| {
            IoError::malformed(path, format!("'reference' is {dt}, expected float32"))
        })?;
        k.reference = Some(
            m.into_dimensionality()
                .map_err(|_| IoError::malformed(path, "'reference' must be [slice, row, col]"))?,
        );
    }
    if let Some(m) = npz_entry(path, &mut z, "sensitivities")? {
        let dt = m.dtype_name();
        let m = m.to_c32().ok_or_else(|| {
            IoError::malformed(path, format!("'sensitivities' is {dt}, expected complex64"))
        })?;
        k.sensitivities = Some(m.into_dimensionality().map_err(|_| {
            IoError::malformed(path, "'sensitivities' must be [slice, coil, row, col]")
        })?);
    }
    if let Some(a) = npz_entry(path, &mut z, "affine")? {
        let a64: ArrayD<f64> = match a {
            NpyArray::F64(a) => a,
            other => match other.to_f32() {
                Some(a) => a.mapv(|v| v as f64),
                None => return Err(IoError::malformed(path, "'affine' must be real")),
            },
        };
        if a64.shape() != [4, 4] {
            return Err(IoError::malformed(
                path,
                format!("'affine' has shape {:?}, expected [4, 4]", a64.shape()),
            ));
        }
        let mut m = [[0.0; 4]; 4];
        for (i, row) in a64.axis_iter(Axis(0)).enumerate() {
            for (j, v) in row.iter().enumerate() {
                m[i][j] = *v;
            }
        }
        k.affine = Affine(m);
    }
    if let Some(a) = npz_entry(path, &mut z, "attributes")? {
        let NpyArray::U8(bytes) = a else {
            return Err(IoError::malformed(
                path,
                "'attributes' must be uint8 JSON bytes",
            ));
        };
        let v: serde_json::Value = serde_json::from_slice(bytes.as_slice().unwrap_or(&[]))
            .map_err(|e| IoError::malformed(path, format!("'attributes' is not JSON: {e}")))?;
        let obj = v
            .as_object()
            .ok_or_else(|| IoError::malformed(path, "'attributes' JSON is not an object"))?;
        for (key, val) in obj {
            let s = match val {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            k.attributes.insert(key.clone(), s);
        }
    }
    crate::attrs::take_typed(path, &mut k)?;
    k.validate()
        .map_err(|e| IoError::malformed(path, e.to_string()))?;
    Ok(k)
}

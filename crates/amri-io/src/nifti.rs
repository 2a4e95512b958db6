//! NIfTI-1 and NIfTI-2 single-file images (`.nii`, `.nii.gz`): read both, write NIfTI-1.
//!
//! Axes: NIfTI's on-disk x (fastest) is amri's col, y is row, z is slice and t is frame, so an
//! array of NIfTI shape `(nx, ny, nz, nt)` becomes [`Volume::data`] of shape `[nt, nz, ny, nx]`
//! with the same bytes in the same order (no transposition, no reorientation). The affine is the
//! NIfTI voxel-to-world (RAS+, mm) matrix: the sform when `sform_code > 0`, else the qform
//! (quaternion, `qfac` from `pixdim[0]`) when `qform_code > 0`, else `pixdim` scaling with the
//! origin at voxel 0 (the NIfTI spec's "method 1"; nibabel's fallback differs: it centres the
//! grid and flips x).
//!
//! Samples are scaled by `scl_slope`/`scl_inter` when the slope is finite and non-zero. RGB24
//! is read as luminance `0.299 R + 0.587 G + 0.114 B` (Rec. 601). Complex types become
//! [`Scan::ComplexImage`]. Dimensions 5 to 7 are accepted only when they are all 1.

use std::fs::File;
use std::io::{Read, Write};
use std::path::Path;

use amri_core::{Affine, Metadata, Volume, C32};
use flate2::read::MultiGzDecoder;
use flate2::write::GzEncoder;
use ndarray::Array4;

use crate::{IoError, Result, Scan};

/// Size in bytes of a NIfTI-1 header.
const N1_HDR: usize = 348;
/// Size in bytes of a NIfTI-2 header.
const N2_HDR: usize = 540;
/// Largest plausible expansion of deflate data; a gzip file claiming more voxel bytes than its
/// size times this is refused before any allocation.
const MAX_GZ_RATIO: u64 = 1100;

/// NIfTI datatype codes amri reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Dtype {
    U8,
    I8,
    I16,
    U16,
    I32,
    U32,
    I64,
    U64,
    F32,
    F64,
    C64,
    C128,
    Rgb24,
}

impl Dtype {
    fn from_code(code: i64) -> Option<Dtype> {
        Some(match code {
            2 => Dtype::U8,
            4 => Dtype::I16,
            8 => Dtype::I32,
            16 => Dtype::F32,
            32 => Dtype::C64,
            64 => Dtype::F64,
            128 => Dtype::Rgb24,
            256 => Dtype::I8,
            512 => Dtype::U16,
            768 => Dtype::U32,
            1024 => Dtype::I64,
            1280 => Dtype::U64,
            1792 => Dtype::C128,
            _ => return None,
        })
    }

    fn size(self) -> usize {
        match self {
            Dtype::U8 | Dtype::I8 => 1,
            Dtype::I16 | Dtype::U16 => 2,
            Dtype::Rgb24 => 3,
            Dtype::I32 | Dtype::U32 | Dtype::F32 => 4,
            Dtype::I64 | Dtype::U64 | Dtype::F64 | Dtype::C64 => 8,
            Dtype::C128 => 16,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Dtype::U8 => "uint8",
            Dtype::I8 => "int8",
            Dtype::I16 => "int16",
            Dtype::U16 => "uint16",
            Dtype::I32 => "int32",
            Dtype::U32 => "uint32",
            Dtype::I64 => "int64",
            Dtype::U64 => "uint64",
            Dtype::F32 => "float32",
            Dtype::F64 => "float64",
            Dtype::C64 => "complex64",
            Dtype::C128 => "complex128",
            Dtype::Rgb24 => "RGB24",
        }
    }

    fn is_complex(self) -> bool {
        matches!(self, Dtype::C64 | Dtype::C128)
    }
}

/// Name of a NIfTI datatype code outside what amri reads, for error messages.
fn unsupported_dtype_name(code: i64) -> String {
    match code {
        0 => "unknown (0)".into(),
        1 => "binary (1)".into(),
        1536 => "float128 (1536)".into(),
        2048 => "complex256 (2048)".into(),
        2304 => "RGBA32 (2304)".into(),
        c => format!("code {c}"),
    }
}

/// Little- or big-endian field reader over a header.
struct Fields<'a> {
    b: &'a [u8],
    big: bool,
}

impl Fields<'_> {
    fn arr<const N: usize>(&self, off: usize) -> [u8; N] {
        let mut a = [0u8; N];
        a.copy_from_slice(&self.b[off..off + N]);
        if self.big {
            a.reverse();
        }
        a
    }
    fn i16(&self, off: usize) -> i16 {
        i16::from_le_bytes(self.arr(off))
    }
    fn i32(&self, off: usize) -> i32 {
        i32::from_le_bytes(self.arr(off))
    }
    fn i64(&self, off: usize) -> i64 {
        i64::from_le_bytes(self.arr(off))
    }
    fn f32(&self, off: usize) -> f64 {
        f32::from_le_bytes(self.arr(off)) as f64
    }
    fn f64(&self, off: usize) -> f64 {
        f64::from_le_bytes(self.arr(off))
    }
    fn text(&self, off: usize, len: usize) -> String {
        let s = &self.b[off..off + len];
        let end = s.iter().position(|&c| c == 0).unwrap_or(len);
        String::from_utf8_lossy(&s[..end]).trim_end().to_string()
    }
}

/// The header fields amri uses, common to NIfTI-1 and NIfTI-2.
#[derive(Debug)]
struct Header {
    version: u8,
    big: bool,
    dims: Vec<i64>,
    datatype: i64,
    pixdim: [f64; 8],
    vox_offset: f64,
    slope: f64,
    inter: f64,
    descrip: String,
    intent_code: i64,
    intent_name: String,
    qform_code: i64,
    sform_code: i64,
    quatern: [f64; 3],
    qoffset: [f64; 3],
    srow: [[f64; 4]; 3],
    xyzt_units: i64,
    cal: (f64, f64),
}

fn parse_header(path: &Path, b: &[u8]) -> Result<Header> {
    if b.len() < 4 {
        return Err(IoError::malformed(
            path,
            "file too short for a NIfTI header",
        ));
    }
    let le = i32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    let be = i32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    let (size, big) = match (le, be) {
        (348, _) => (N1_HDR, false),
        (_, 348) => (N1_HDR, true),
        (540, _) => (N2_HDR, false),
        (_, 540) => (N2_HDR, true),
        _ => {
            return Err(IoError::malformed(
                path,
                format!(
                    "not a NIfTI file: sizeof_hdr is {le}, expected 348 (NIfTI-1) or 540 (NIfTI-2)"
                ),
            ))
        }
    };
    if b.len() < size {
        return Err(IoError::malformed(
            path,
            format!("truncated NIfTI header: {} of {size} bytes", b.len()),
        ));
    }
    let f = Fields { b, big };
    if size == N1_HDR {
        let magic = &b[344..348];
        if magic == b"ni1\0" {
            return Err(IoError::unsupported(
                path,
                "two-file NIfTI (.hdr/.img pair, magic 'ni1'); amri reads single-file .nii/.nii.gz",
            ));
        }
        if magic != b"n+1\0" {
            return Err(IoError::malformed(
                path,
                format!("bad NIfTI-1 magic {magic:?}, expected \"n+1\\0\""),
            ));
        }
        let mut pixdim = [0.0; 8];
        for (i, p) in pixdim.iter_mut().enumerate() {
            *p = f.f32(76 + 4 * i);
        }
        let mut srow = [[0.0; 4]; 3];
        for (r, row) in srow.iter_mut().enumerate() {
            for (c, v) in row.iter_mut().enumerate() {
                *v = f.f32(280 + 16 * r + 4 * c);
            }
        }
        Ok(Header {
            version: 1,
            big,
            dims: (0..8).map(|i| f.i16(40 + 2 * i) as i64).collect(),
            datatype: f.i16(70) as i64,
            pixdim,
            vox_offset: f.f32(108),
            slope: f.f32(112),
            inter: f.f32(116),
            descrip: f.text(148, 80),
            intent_code: f.i16(68) as i64,
            intent_name: f.text(328, 16),
            qform_code: f.i16(252) as i64,
            sform_code: f.i16(254) as i64,
            quatern: [f.f32(256), f.f32(260), f.f32(264)],
            qoffset: [f.f32(268), f.f32(272), f.f32(276)],
            srow,
            xyzt_units: b[123] as i64,
            cal: (f.f32(128), f.f32(124)),
        })
    } else {
        let magic = &b[4..12];
        if &magic[..4] == b"ni2\0" {
            return Err(IoError::unsupported(
                path,
                "two-file NIfTI-2 (magic 'ni2'); amri reads single-file .nii/.nii.gz",
            ));
        }
        if &magic[..4] != b"n+2\0" {
            return Err(IoError::malformed(
                path,
                format!("bad NIfTI-2 magic {magic:?}, expected \"n+2\\0\\r\\n\\x1a\\n\""),
            ));
        }
        let mut pixdim = [0.0; 8];
        for (i, p) in pixdim.iter_mut().enumerate() {
            *p = f.f64(104 + 8 * i);
        }
        let mut srow = [[0.0; 4]; 3];
        for (r, row) in srow.iter_mut().enumerate() {
            for (c, v) in row.iter_mut().enumerate() {
                *v = f.f64(400 + 32 * r + 8 * c);
            }
        }
        Ok(Header {
            version: 2,
            big,
            dims: (0..8).map(|i| f.i64(16 + 8 * i)).collect(),
            datatype: f.i16(12) as i64,
            pixdim,
            vox_offset: f.i64(168) as f64,
            slope: f.f64(176),
            inter: f.f64(184),
            descrip: f.text(240, 80),
            intent_code: f.i32(504) as i64,
            intent_name: f.text(508, 16),
            qform_code: f.i32(344) as i64,
            sform_code: f.i32(348) as i64,
            quatern: [f.f64(352), f.f64(360), f.f64(368)],
            qoffset: [f.f64(376), f.f64(384), f.f64(392)],
            srow,
            xyzt_units: f.i32(500) as i64,
            cal: (f.f64(200), f.f64(192)),
        })
    }
}

impl Header {
    /// `[nx, ny, nz, nt]` after checking `dim[0]` and that dimensions 5+ are 1.
    fn shape(&self, path: &Path) -> Result<[usize; 4]> {
        let nd = self.dims[0];
        if !(1..=7).contains(&nd) {
            return Err(IoError::malformed(
                path,
                format!("dim[0] = {nd}: the number of dimensions must be 1 to 7"),
            ));
        }
        let nd = nd as usize;
        let mut out = [1usize; 4];
        for a in 1..=nd {
            let n = self.dims[a];
            if n < 1 {
                return Err(IoError::malformed(
                    path,
                    format!("dim[{a}] = {n}: every dimension must be at least 1"),
                ));
            }
            if a <= 4 {
                out[a - 1] = usize::try_from(n).map_err(|_| {
                    IoError::malformed(path, format!("dim[{a}] = {n} is too large"))
                })?;
            } else if n != 1 {
                return Err(IoError::unsupported(
                    path,
                    format!("{nd}-D image (dim[{a}] = {n}); amri reads 3-D and 4-D NIfTI"),
                ));
            }
        }
        Ok(out)
    }

    /// Voxel-to-world affine: sform, else qform, else pixdim scaling.
    fn affine(&self) -> Affine {
        if self.sform_code > 0 {
            let mut m = Affine::IDENTITY.0;
            m[..3].copy_from_slice(&self.srow);
            return Affine(m);
        }
        let zoom = |i: usize| {
            let p = self.pixdim[i].abs();
            if p > 0.0 && p.is_finite() {
                p
            } else {
                1.0
            }
        };
        if self.qform_code > 0 {
            let [b, c, d] = self.quatern;
            let a2 = 1.0 - (b * b + c * c + d * d);
            // As nifti1_io: a slightly negative a² is rounding; renormalise (b, c, d).
            let (a, b, c, d) = if a2 < 1e-7 {
                let n = (b * b + c * c + d * d).sqrt();
                if n > 0.0 {
                    (0.0, b / n, c / n, d / n)
                } else {
                    (1.0, 0.0, 0.0, 0.0)
                }
            } else {
                (a2.sqrt(), b, c, d)
            };
            let r = [
                [
                    a * a + b * b - c * c - d * d,
                    2.0 * (b * c - a * d),
                    2.0 * (b * d + a * c),
                ],
                [
                    2.0 * (b * c + a * d),
                    a * a + c * c - b * b - d * d,
                    2.0 * (c * d - a * b),
                ],
                [
                    2.0 * (b * d - a * c),
                    2.0 * (c * d + a * b),
                    a * a + d * d - c * c - b * b,
                ],
            ];
            let qfac = if self.pixdim[0] < 0.0 { -1.0 } else { 1.0 };
            let z = [zoom(1), zoom(2), zoom(3) * qfac];
            let mut m = Affine::IDENTITY.0;
            for i in 0..3 {
                for j in 0..3 {
                    m[i][j] = r[i][j] * z[j];
                }
                m[i][3] = self.qoffset[i];
            }
            return Affine(m);
        }
        Affine::from_spacing([zoom(1), zoom(2), zoom(3)])
    }
}

/// Opens `path` as a byte stream, gunzipping when it starts with the gzip magic.
fn open_stream(path: &Path) -> Result<(Box<dyn Read>, u64, bool)> {
    let mut file = File::open(path).map_err(|e| IoError::os(path, e))?;
    let len = file.metadata().map_err(|e| IoError::os(path, e))?.len();
    let mut magic = [0u8; 2];
    let n = read_up_to(&mut file, &mut magic).map_err(|e| IoError::os(path, e))?;
    let head = std::io::Cursor::new(magic[..n].to_vec());
    let chained = head.chain(file);
    if n == 2 && magic == [0x1f, 0x8b] {
        Ok((Box::new(MultiGzDecoder::new(chained)), len, true))
    } else {
        Ok((Box::new(chained), len, false))
    }
}

/// Reads until `buf` is full or the stream ends; returns the bytes read.
fn read_up_to(r: &mut dyn Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Reads a `.nii` or `.nii.gz` file (NIfTI-1 or NIfTI-2, either byte order) as an image:
/// [`Scan::Image`] for real and RGB data, [`Scan::ComplexImage`] for complex data.
pub fn read(path: &Path) -> Result<Scan> {
    let (mut stream, file_len, gz) = open_stream(path)?;
    let corrupt = |e: std::io::Error| {
        if gz {
            IoError::malformed(path, format!("corrupt gzip stream: {e}"))
        } else {
            IoError::os(path, e)
        }
    };
    let mut hbuf = vec![0u8; N1_HDR];
    let n = read_up_to(&mut stream, &mut hbuf).map_err(corrupt)?;
    hbuf.truncate(n);
    if n >= 4 && (hbuf[..4] == 540i32.to_le_bytes() || hbuf[..4] == 540i32.to_be_bytes()) {
        let mut rest = vec![0u8; N2_HDR - N1_HDR];
        let k = read_up_to(&mut stream, &mut rest).map_err(corrupt)?;
        hbuf.extend_from_slice(&rest[..k]);
    }
    let h = parse_header(path, &hbuf)?;
    let shape = h.shape(path)?;
    let dtype = Dtype::from_code(h.datatype).ok_or_else(|| {
        IoError::unsupported(
            path,
            format!("NIfTI datatype {}", unsupported_dtype_name(h.datatype)),
        )
    })?;
    let hsize = hbuf.len();
    if !(h.vox_offset.is_finite() && h.vox_offset >= 0.0 && h.vox_offset < 1e15) {
        return Err(IoError::malformed(
            path,
            format!("vox_offset {} is not a valid byte offset", h.vox_offset),
        ));
    }
    // vox_offset 0 is legal in old writers' single files only in error; data then follows the header.
    let offset = (h.vox_offset as u64).max(hsize as u64);
    let nvox = shape
        .iter()
        .try_fold(1u64, |acc, &n| acc.checked_mul(n as u64))
        .ok_or_else(|| IoError::malformed(path, format!("dimensions {shape:?} overflow")))?;
    let nbytes = nvox
        .checked_mul(dtype.size() as u64)
        .ok_or_else(|| IoError::malformed(path, format!("dimensions {shape:?} overflow")))?;
    let limit = if gz {
        file_len.saturating_mul(MAX_GZ_RATIO)
    } else {
        file_len
    };
    if offset.saturating_add(nbytes) > limit {
        return Err(IoError::malformed(
            path,
            if gz {
                format!(
                    "header claims {nbytes} bytes of voxel data ({shape:?} {}), impossible from a {file_len}-byte gzip file",
                    dtype.name()
                )
            } else {
                format!(
                    "truncated: header claims {nbytes} bytes of voxel data at offset {offset} ({shape:?} {}), file has {file_len} bytes",
                    dtype.name()
                )
            },
        ));
    }
    // Skip extensions up to vox_offset.
    let skip = offset - hsize as u64;
    let skipped =
        std::io::copy(&mut (&mut stream).take(skip), &mut std::io::sink()).map_err(corrupt)?;
    let mut raw = Vec::new();
    (&mut stream)
        .take(nbytes)
        .read_to_end(&mut raw)
        .map_err(corrupt)?;
    if skipped != skip || raw.len() as u64 != nbytes {
        return Err(IoError::malformed(
            path,
            format!(
                "truncated: expected {nbytes} bytes of voxel data after offset {offset}, found {}",
                raw.len()
            ),
        ));
    }
    let [nx, ny, nz, nt] = shape;
    let dim4 = (nt, nz, ny, nx);
    let scale = if h.slope.is_finite() && h.slope != 0.0 && !(h.slope == 1.0 && h.inter == 0.0) {
        Some((h.slope, if h.inter.is_finite() { h.inter } else { 0.0 }))
    } else {
        None
    };
    let affine = h.affine();
    let mut meta = Metadata {
        source_format: format!("NIfTI-{}", h.version),
        source_datatype: dtype.name().to_string(),
        description: h.descrip.clone(),
        ..Metadata::default()
    };
    let attrs = &mut meta.attributes;
    attrs.insert("nifti.qform_code".into(), h.qform_code.to_string());
    attrs.insert("nifti.sform_code".into(), h.sform_code.to_string());
    if h.big {
        attrs.insert("nifti.byte_order".into(), "big-endian".into());
    }
    if let Some((s, i)) = scale {
        attrs.insert("nifti.scl_slope".into(), s.to_string());
        attrs.insert("nifti.scl_inter".into(), i.to_string());
    }
    if h.intent_code != 0 {
        attrs.insert("nifti.intent_code".into(), h.intent_code.to_string());
    }
    if !h.intent_name.is_empty() {
        attrs.insert("nifti.intent_name".into(), h.intent_name.clone());
    }
    let space_units = match h.xyzt_units & 0x07 {
        1 => Some("m"),
        2 => Some("mm"),
        3 => Some("um"),
        _ => None,
    };
    if let Some(u) = space_units {
        attrs.insert("nifti.space_units".into(), u.into());
    }
    if nt > 1 && h.pixdim[4] > 0.0 {
        attrs.insert("nifti.pixdim_t".into(), h.pixdim[4].to_string());
        let tu = match h.xyzt_units & 0x38 {
            8 => "s",
            16 => "ms",
            24 => "us",
            _ => "",
        };
        if !tu.is_empty() {
            attrs.insert("nifti.time_units".into(), tu.into());
        }
    }
    if h.cal.1 > h.cal.0 {
        attrs.insert("nifti.cal_min".into(), h.cal.0.to_string());
        attrs.insert("nifti.cal_max".into(), h.cal.1.to_string());
    }
    let big = h.big;
    let shape_err = |e: ndarray::ShapeError| IoError::malformed(path, format!("shape: {e}"));
    if dtype.is_complex() {
        let vals: Vec<C32> = decode_complex(&raw, dtype, big, scale);
        let data = Array4::from_shape_vec(dim4, vals).map_err(shape_err)?;
        Ok(Scan::ComplexImage(Volume { data, affine, meta }))
    } else {
        let vals: Vec<f32> = decode_real(&raw, dtype, big, scale);
        let data = Array4::from_shape_vec(dim4, vals).map_err(shape_err)?;
        Ok(Scan::Image(Volume { data, affine, meta }))
    }
}

fn take<const N: usize>(c: &[u8], big: bool) -> [u8; N] {
    let mut a = [0u8; N];
    a.copy_from_slice(&c[..N]);
    if big {
        a.reverse();
    }
    a
}

/// Decodes real samples (and RGB24 as luminance) to f32, applying the scaling.
fn decode_real(raw: &[u8], dt: Dtype, big: bool, scale: Option<(f64, f64)>) -> Vec<f32> {
    let sz = dt.size();
    let conv = |c: &[u8]| -> f64 {
        match dt {
            Dtype::U8 => c[0] as f64,
            Dtype::I8 => c[0] as i8 as f64,
            Dtype::I16 => i16::from_le_bytes(take(c, big)) as f64,
            Dtype::U16 => u16::from_le_bytes(take(c, big)) as f64,
            Dtype::I32 => i32::from_le_bytes(take(c, big)) as f64,
            Dtype::U32 => u32::from_le_bytes(take(c, big)) as f64,
            Dtype::I64 => i64::from_le_bytes(take(c, big)) as f64,
            Dtype::U64 => u64::from_le_bytes(take(c, big)) as f64,
            Dtype::F32 => f32::from_le_bytes(take(c, big)) as f64,
            Dtype::F64 => f64::from_le_bytes(take(c, big)),
            Dtype::Rgb24 => 0.299 * c[0] as f64 + 0.587 * c[1] as f64 + 0.114 * c[2] as f64,
            Dtype::C64 | Dtype::C128 => 0.0,
        }
    };
    // RGB is not scaled (NIfTI-1: scl_* do not apply to RGB).
    let scale = if dt == Dtype::Rgb24 { None } else { scale };
    raw.chunks_exact(sz)
        .map(|c| {
            let v = conv(c);
            match scale {
                Some((s, i)) => (v * s + i) as f32,
                None => v as f32,
            }
        })
        .collect()
}

/// Decodes complex samples to complex64; scaling multiplies both parts and adds to the real part.
fn decode_complex(raw: &[u8], dt: Dtype, big: bool, scale: Option<(f64, f64)>) -> Vec<C32> {
    let sz = dt.size();
    raw.chunks_exact(sz)
        .map(|c| {
            let (re, im) = if dt == Dtype::C64 {
                (
                    f32::from_le_bytes(take(&c[..4], big)) as f64,
                    f32::from_le_bytes(take(&c[4..], big)) as f64,
                )
            } else {
                (
                    f64::from_le_bytes(take(&c[..8], big)),
                    f64::from_le_bytes(take(&c[8..], big)),
                )
            };
            match scale {
                Some((s, i)) => C32::new((re * s + i) as f32, (im * s) as f32),
                None => C32::new(re as f32, im as f32),
            }
        })
        .collect()
}

/// Polar decomposition of a 3×3 matrix: the nearest rotation (or reflection) to `m`, by the
/// iteration `X ← (X + X⁻ᵀ) / 2` that nifti1_io's `nifti_mat33_polar` uses.
fn polar(m: [[f64; 3]; 3]) -> [[f64; 3]; 3] {
    let mut x = m;
    for _ in 0..100 {
        let Some(inv) = inv3(x) else {
            return x;
        };
        let mut next = [[0.0; 3]; 3];
        let mut delta: f64 = 0.0;
        for i in 0..3 {
            for j in 0..3 {
                next[i][j] = 0.5 * (x[i][j] + inv[j][i]);
                delta = delta.max((next[i][j] - x[i][j]).abs());
            }
        }
        x = next;
        if delta < 1e-12 {
            break;
        }
    }
    x
}

fn det3(m: &[[f64; 3]; 3]) -> f64 {
    m[0][0] * (m[1][1] * m[2][2] - m[1][2] * m[2][1])
        - m[0][1] * (m[1][0] * m[2][2] - m[1][2] * m[2][0])
        + m[0][2] * (m[1][0] * m[2][1] - m[1][1] * m[2][0])
}

fn inv3(m: [[f64; 3]; 3]) -> Option<[[f64; 3]; 3]> {
    let d = det3(&m);
    if d.abs() < 1e-300 || !d.is_finite() {
        return None;
    }
    let mut r = [[0.0; 3]; 3];
    for (i, row) in r.iter_mut().enumerate() {
        for (j, v) in row.iter_mut().enumerate() {
            let (a, b) = ((j + 1) % 3, (j + 2) % 3);
            let (c, e) = ((i + 1) % 3, (i + 2) % 3);
            *v = (m[a][c] * m[b][e] - m[a][e] * m[b][c]) / d;
        }
    }
    Some(r)
}

/// Quaternion `(b, c, d)`, offsets, zooms and `qfac` encoding `affine` as a NIfTI qform
/// (exact for orthogonal axes; for sheared affines the nearest rotation, as nibabel does).
fn affine_to_qform(affine: &Affine) -> ([f64; 3], [f64; 3], [f64; 3], f64) {
    let m = affine.0;
    let zooms = affine.voxel_size().map(|z| if z > 0.0 { z } else { 1.0 });
    let mut r = [[0.0; 3]; 3];
    for i in 0..3 {
        for j in 0..3 {
            r[i][j] = m[i][j] / zooms[j];
        }
    }
    let mut qfac = 1.0;
    if det3(&r) < 0.0 {
        qfac = -1.0;
        for row in r.iter_mut() {
            row[2] = -row[2];
        }
    }
    let r = polar(r);
    let (r11, r12, r13) = (r[0][0], r[0][1], r[0][2]);
    let (r21, r22, r23) = (r[1][0], r[1][1], r[1][2]);
    let (r31, r32, r33) = (r[2][0], r[2][1], r[2][2]);
    let trace1 = r11 + r22 + r33 + 1.0;
    let (a, mut b, mut c, mut d): (f64, f64, f64, f64);
    if trace1 > 0.5 {
        a = 0.5 * trace1.sqrt();
        b = 0.25 * (r32 - r23) / a;
        c = 0.25 * (r13 - r31) / a;
        d = 0.25 * (r21 - r12) / a;
    } else {
        let xd = 1.0 + r11 - (r22 + r33);
        let yd = 1.0 + r22 - (r11 + r33);
        let zd = 1.0 + r33 - (r11 + r22);
        if xd > 1.0 {
            b = 0.5 * xd.sqrt();
            c = 0.25 * (r12 + r21) / b;
            d = 0.25 * (r13 + r31) / b;
            a = 0.25 * (r32 - r23) / b;
        } else if yd > 1.0 {
            c = 0.5 * yd.sqrt();
            b = 0.25 * (r12 + r21) / c;
            d = 0.25 * (r23 + r32) / c;
            a = 0.25 * (r13 - r31) / c;
        } else {
            d = 0.5 * zd.sqrt();
            b = 0.25 * (r13 + r31) / d;
            c = 0.25 * (r23 + r32) / d;
            a = 0.25 * (r21 - r12) / d;
        }
        if a < 0.0 {
            b = -b;
            c = -c;
            d = -d;
        }
    }
    ([b, c, d], [m[0][3], m[1][3], m[2][3]], zooms, qfac)
}

/// Valid NIfTI xform code (1..=4) stored in an attribute, else `default`.
fn code_attr(meta: &Metadata, key: &str, default: i16) -> i16 {
    meta.attributes
        .get(key)
        .and_then(|s| s.parse::<i16>().ok())
        .filter(|c| (1..=4).contains(c))
        .unwrap_or(default)
}

/// Builds a little-endian NIfTI-1 header (348 bytes + 4-byte empty extension flag).
fn build_header(
    shape: [usize; 4],
    datatype: i16,
    bitpix: i16,
    affine: &Affine,
    meta: &Metadata,
) -> Vec<u8> {
    let mut h = vec![0u8; N1_HDR + 4];
    let put = |h: &mut Vec<u8>, off: usize, b: &[u8]| h[off..off + b.len()].copy_from_slice(b);
    put(&mut h, 0, &(N1_HDR as i32).to_le_bytes());
    h[38] = b'r'; // regular
    let [nx, ny, nz, nt] = shape;
    let ndim: i16 = if nt > 1 { 4 } else { 3 };
    let dims = [ndim, nx as i16, ny as i16, nz as i16, nt as i16, 1, 1, 1];
    for (i, d) in dims.iter().enumerate() {
        put(&mut h, 40 + 2 * i, &d.to_le_bytes());
    }
    put(&mut h, 70, &datatype.to_le_bytes());
    put(&mut h, 72, &bitpix.to_le_bytes());
    let (quat, off, zooms, qfac) = affine_to_qform(affine);
    let dt = meta
        .attributes
        .get("nifti.pixdim_t")
        .and_then(|s| s.parse::<f32>().ok())
        .filter(|v| v.is_finite() && *v > 0.0)
        .unwrap_or(1.0);
    let pixdim = [
        qfac as f32,
        zooms[0] as f32,
        zooms[1] as f32,
        zooms[2] as f32,
        dt,
        1.0,
        1.0,
        1.0,
    ];
    for (i, p) in pixdim.iter().enumerate() {
        put(&mut h, 76 + 4 * i, &p.to_le_bytes());
    }
    put(&mut h, 108, &((N1_HDR + 4) as f32).to_le_bytes());
    put(&mut h, 112, &1.0f32.to_le_bytes()); // scl_slope
    put(&mut h, 116, &0.0f32.to_le_bytes()); // scl_inter
    let time_units = match meta.attributes.get("nifti.time_units").map(String::as_str) {
        Some("ms") => 16,
        Some("us") => 24,
        _ => 8,
    };
    h[123] = 2 | time_units; // mm, and the time unit
    let mut desc = meta.description.as_str();
    while desc.len() > 79 {
        let mut cut = 79;
        while !desc.is_char_boundary(cut) {
            cut -= 1;
        }
        desc = &desc[..cut];
    }
    put(&mut h, 148, desc.as_bytes());
    put(
        &mut h,
        252,
        &code_attr(meta, "nifti.qform_code", 1).to_le_bytes(),
    );
    put(
        &mut h,
        254,
        &code_attr(meta, "nifti.sform_code", 2).to_le_bytes(),
    );
    for (i, q) in quat.iter().chain(off.iter()).enumerate() {
        put(&mut h, 256 + 4 * i, &(*q as f32).to_le_bytes());
    }
    for r in 0..3 {
        for c in 0..4 {
            put(
                &mut h,
                280 + 16 * r + 4 * c,
                &(affine.0[r][c] as f32).to_le_bytes(),
            );
        }
    }
    put(&mut h, 344, b"n+1\0");
    h
}

/// Writes an image as NIfTI-1: `.nii.gz` (gzip) or `.nii`, little-endian, float32 for
/// [`Scan::Image`] and complex64 for [`Scan::ComplexImage`], with sform (code 2, aligned, unless
/// the source's code is in `meta.attributes["nifti.sform_code"]`) and qform (code 1, scanner)
/// both set from the affine; `descrip` keeps the first 79 bytes of the description. K-space is
/// refused. The file is written atomically.
pub fn write(path: &Path, scan: &Scan) -> Result<()> {
    let (shape, meta, affine, payload, datatype, bitpix) = match scan {
        Scan::Image(v) => {
            let mut b = Vec::with_capacity(v.data.len() * 4);
            for x in v.data.iter() {
                b.extend_from_slice(&x.to_le_bytes());
            }
            (v.shape4(), &v.meta, v.affine, b, 16i16, 32i16)
        }
        Scan::ComplexImage(v) => {
            let mut b = Vec::with_capacity(v.data.len() * 8);
            for x in v.data.iter() {
                b.extend_from_slice(&x.re.to_le_bytes());
                b.extend_from_slice(&x.im.to_le_bytes());
            }
            (v.shape4(), &v.meta, v.affine, b, 32i16, 64i16)
        }
        Scan::KSpace(_) => {
            return Err(IoError::Unwritable {
                path: path.to_path_buf(),
                msg: "NIfTI holds images, not k-space; reconstruct first, or write k-space as .npz or .cfl".into(),
            })
        }
    };
    let [nt, nz, ny, nx] = shape;
    if [nt, nz, ny, nx]
        .iter()
        .any(|&n| n == 0 || n > i16::MAX as usize)
    {
        return Err(IoError::Unwritable {
            path: path.to_path_buf(),
            msg: format!(
                "shape [frame, slice, row, col] = {shape:?}: NIfTI-1 dimensions must be 1 to 32767"
            ),
        });
    }
    if affine.0.iter().flatten().any(|v| !v.is_finite()) {
        return Err(IoError::Unwritable {
            path: path.to_path_buf(),
            msg: "affine has a non-finite entry".into(),
        });
    }
    let header = build_header([nx, ny, nz, nt], datatype, bitpix, &affine, meta);
    let gz = path
        .file_name()
        .map(|n| n.to_string_lossy().to_ascii_lowercase().ends_with(".gz"))
        .unwrap_or(false);
    crate::atomic::write_atomic(path, |w| {
        if gz {
            let mut enc = GzEncoder::new(w, flate2::Compression::new(6));
            enc.write_all(&header)?;
            enc.write_all(&payload)?;
            enc.finish()?;
            Ok(())
        } else {
            w.write_all(&header)?;
            w.write_all(&payload)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qform_of_oblique_rotation_reproduces_it() {
        // 30° about z then a flip of the slice axis (qfac = -1), 0.9 x 1.1 x 2.5 mm.
        let t = 30f64.to_radians();
        let dirs = [
            [t.cos(), t.sin(), 0.0],
            [-t.sin(), t.cos(), 0.0],
            [0.0, 0.0, -1.0],
        ];
        let aff = Affine::from_directions(dirs, [0.9, 1.1, 2.5], [-10.0, 5.0, 30.0]);
        let (q, off, zooms, qfac) = affine_to_qform(&aff);
        assert_eq!(qfac, -1.0);
        let mut h = Header {
            version: 1,
            big: false,
            dims: vec![3, 1, 1, 1, 1, 1, 1, 1],
            datatype: 16,
            pixdim: [qfac, zooms[0], zooms[1], zooms[2], 1.0, 1.0, 1.0, 1.0],
            vox_offset: 352.0,
            slope: 0.0,
            inter: 0.0,
            descrip: String::new(),
            intent_code: 0,
            intent_name: String::new(),
            qform_code: 1,
            sform_code: 0,
            quatern: q,
            qoffset: off,
            srow: [[0.0; 4]; 3],
            xyzt_units: 2,
            cal: (0.0, 0.0),
        };
        assert!(
            h.affine().max_abs_diff(&aff) < 1e-9,
            "{:?} vs {:?}",
            h.affine(),
            aff
        );
        h.qform_code = 0;
        assert_eq!(h.affine(), Affine::from_spacing([0.9, 1.1, 2.5]));
    }

    #[test]
    fn polar_orthogonalises_a_sheared_matrix() {
        let m = [[1.0, 0.1, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]];
        let r = polar(m);
        for i in 0..3 {
            for j in 0..3 {
                let dot: f64 = (0..3).map(|k| r[k][i] * r[k][j]).sum();
                assert!((dot - if i == j { 1.0 } else { 0.0 }).abs() < 1e-9);
            }
        }
    }
}

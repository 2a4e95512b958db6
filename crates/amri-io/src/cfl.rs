//! BART `.cfl` + `.hdr` pairs: complex float arrays in Fortran (first-index-fastest) order.
//!
//! A BART array is a text header `<stem>.hdr` (`# Dimensions` followed by a line of sizes) and a
//! raw file `<stem>.cfl` of little-endian complex64 samples (`re, im` as two f32). Paths may name
//! the `.cfl`, the `.hdr` or the bare stem.
//!
//! Axis mapping (BART `READ, PHS1, PHS2, COIL, ...` → amri): `d0 = row`, `d1 = col`,
//! `d2 = slice`, `d3 = coil`, so the PHS1 axis BART undersamples is amri's last axis, as in
//! fastMRI. Reading therefore transposes BART's in-memory order (d0 fastest) into amri's C order
//! `[slice, coil, row, col]` (col fastest); writing transposes back.
//!
//! A `.cfl` carries no tag saying whether it holds k-space or an image, so [`read`] returns
//! k-space and [`read_image`] returns a complex image; images are written with frames on BART's
//! TIME axis (`d10`) and a coil axis of 1. The sampling mask of k-space lives in a sibling
//! `<stem>_mask.cfl` with BART's pattern layout `[row, col, slice or 1]`, 1 where measured.

use std::path::{Path, PathBuf};

use amri_core::{Affine, KSpace, Metadata, Volume, C32};
use ndarray::{Array3, Array4};

use crate::{IoError, Result, Scan};

/// BART's number of named dimensions (`DIMS`); amri writes headers with this many sizes.
pub const BART_DIMS: usize = 16;
/// BART's TIME dimension, where amri writes image frames.
pub const BART_TIME_DIM: usize = 10;

/// `(stem.hdr, stem.cfl)` for a path naming the `.cfl`, the `.hdr` or the stem.
pub fn pair_paths(path: &Path) -> (PathBuf, PathBuf) {
    let stem = match path.extension().and_then(|e| e.to_str()) {
        Some(e) if e.eq_ignore_ascii_case("cfl") || e.eq_ignore_ascii_case("hdr") => {
            path.with_extension("")
        }
        _ => path.to_path_buf(),
    };
    let with = |ext: &str| {
        let mut s = stem.clone().into_os_string();
        s.push(ext);
        PathBuf::from(s)
    };
    (with(".hdr"), with(".cfl"))
}

/// Parses the dimensions of a BART header text.
fn parse_hdr(hdr: &Path, text: &str) -> Result<Vec<usize>> {
    let mut lines = text.lines();
    while let Some(l) = lines.next() {
        if l.trim_start().starts_with('#') && l.contains("Dimensions") {
            let dims_line = lines
                .by_ref()
                .find(|l| !l.trim().is_empty())
                .ok_or_else(|| IoError::malformed(hdr, "'# Dimensions' has no sizes after it"))?;
            let dims = dims_line
                .split_whitespace()
                .map(|t| {
                    t.parse::<usize>().map_err(|_| {
                        IoError::malformed(
                            hdr,
                            format!("dimension '{t}' is not a non-negative integer"),
                        )
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            if dims.is_empty() {
                return Err(IoError::malformed(
                    hdr,
                    "no dimensions after '# Dimensions'",
                ));
            }
            return Ok(dims);
        }
    }
    Err(IoError::malformed(
        hdr,
        "no '# Dimensions' line: not a BART header",
    ))
}

/// Reads a BART array: its dimensions as in the `.hdr` and its samples in BART (Fortran,
/// `d0` fastest) order. The `.cfl` size must equal the product of the dimensions × 8 bytes.
pub fn read_array(path: &Path) -> Result<(Vec<usize>, Vec<C32>)> {
    let (hdr, cfl) = pair_paths(path);
    let text = std::fs::read(&hdr).map_err(|e| IoError::os(&hdr, e))?;
    if text.len() > 1 << 20 {
        return Err(IoError::malformed(
            &hdr,
            "header larger than 1 MiB: not a BART header",
        ));
    }
    let dims = parse_hdr(&hdr, &String::from_utf8_lossy(&text))?;
    let n = dims
        .iter()
        .try_fold(1u64, |a, &d| a.checked_mul(d as u64))
        .and_then(|n| n.checked_mul(8))
        .ok_or_else(|| IoError::malformed(&hdr, format!("dimensions {dims:?} overflow")))?;
    let len = std::fs::metadata(&cfl)
        .map_err(|e| IoError::os(&cfl, e))?
        .len();
    if len != n {
        return Err(IoError::malformed(
            &cfl,
            format!(
                "holds {len} bytes but its header {} gives dimensions {dims:?} = {n} bytes",
                hdr.display()
            ),
        ));
    }
    let raw = std::fs::read(&cfl).map_err(|e| IoError::os(&cfl, e))?;
    if raw.len() as u64 != n {
        return Err(IoError::malformed(
            &cfl,
            "file changed size while being read",
        ));
    }
    let data = raw
        .chunks_exact(8)
        .map(|c| {
            C32::new(
                f32::from_le_bytes([c[0], c[1], c[2], c[3]]),
                f32::from_le_bytes([c[4], c[5], c[6], c[7]]),
            )
        })
        .collect();
    Ok((dims, data))
}

/// Writes a BART array (`data` in Fortran order, `dims.iter().product() == data.len()`) as
/// `<stem>.hdr` + `<stem>.cfl`, each atomically.
pub fn write_array(path: &Path, dims: &[usize], data: &[C32]) -> Result<()> {
    let (hdr, cfl) = pair_paths(path);
    let n: usize = dims.iter().product();
    if dims.is_empty() || n != data.len() {
        return Err(IoError::Unwritable {
            path: cfl,
            msg: format!(
                "dimensions {dims:?} hold {n} samples but {} were given",
                data.len()
            ),
        });
    }
    let mut text = String::from("# Dimensions\n");
    for d in dims {
        text.push_str(&format!("{d} "));
    }
    text.push('\n');
    crate::atomic::write_atomic(&cfl, |w| {
        let mut buf = Vec::with_capacity(1 << 16);
        for chunk in data.chunks(8192) {
            buf.clear();
            for c in chunk {
                buf.extend_from_slice(&c.re.to_le_bytes());
                buf.extend_from_slice(&c.im.to_le_bytes());
            }
            w.write_all(&buf)?;
        }
        Ok(())
    })?;
    crate::atomic::write_bytes(&hdr, text.as_bytes())
}

/// Sizes `[d0, d1, d2, d3]` after checking that every later dimension (except `allow`) is 1.
fn first4(path: &Path, dims: &[usize], allow: Option<usize>) -> Result<[usize; 5]> {
    let mut out = [1usize; 5];
    for (i, &d) in dims.iter().enumerate() {
        if i < 4 {
            out[i] = d;
        } else if Some(i) == allow {
            out[4] = d;
        } else if d != 1 {
            return Err(IoError::unsupported(
                path,
                format!(
                    "BART dimension {i} has size {d}; amri maps only READ, PHS1, PHS2, COIL{} (dims {dims:?})",
                    if allow.is_some() { " and TIME" } else { "" }
                ),
            ));
        }
    }
    if out.contains(&0) {
        return Err(IoError::malformed(
            path,
            format!("empty array: dimensions {dims:?}"),
        ));
    }
    Ok(out)
}

/// Reads a BART array as k-space `[slice, coil, row, col]` (`d0 = row`, `d1 = col`,
/// `d2 = slice`, `d3 = coil`; every other dimension must be 1), with the mask from a sibling
/// `<stem>_mask.cfl` when one exists (non-zero real part = measured; `[row, col]` or
/// `[row, col, slice]`, broadcast over slices).
pub fn read(path: &Path) -> Result<Scan> {
    let (_, cfl) = pair_paths(path);
    let (dims, v) = read_array(path)?;
    let [r, c, s, k, _] = first4(&cfl, &dims, None)?;
    // BART index r + R (c + C (s + S k)) → amri [s, k, r, c].
    let data = Array4::from_shape_fn((s, k, r, c), |(si, ki, ri, ci)| {
        v[ri + r * (ci + c * (si + s * ki))]
    });
    let mut ks = KSpace::new(data);
    ks.attributes.insert("source_format".into(), "cfl".into());
    let (_, mask_cfl) = pair_paths(&mask_stem(path));
    if mask_cfl.exists() {
        let (mdims, m) = read_array(&mask_cfl)?;
        let [mr, mc, ms, mk, _] = first4(&mask_cfl, &mdims, None)?;
        if mr != r || mc != c || !(ms == 1 || ms == s) || mk != 1 {
            return Err(IoError::malformed(
                &mask_cfl,
                format!(
                    "mask dimensions {mdims:?} do not match k-space [row, col, slice] = [{r}, {c}, {s}]"
                ),
            ));
        }
        let mask = Array3::from_shape_fn((s, r, c), |(si, ri, ci)| {
            let sj = if ms == 1 { 0 } else { si };
            if m[ri + r * (ci + c * sj)].re != 0.0 {
                1.0
            } else {
                0.0
            }
        });
        ks.mask = Some(mask);
    }
    Ok(Scan::KSpace(ks))
}

/// Reads a BART array as a complex image `[frame, slice, row, col]` (`d0 = row`, `d1 = col`,
/// `d2 = slice`, `d10 = frame`, all other dimensions 1), identity affine.
pub fn read_image(path: &Path) -> Result<Volume<C32>> {
    let (_, cfl) = pair_paths(path);
    let (dims, v) = read_array(path)?;
    let [r, c, s, k, t] = first4(&cfl, &dims, Some(BART_TIME_DIM))?;
    if k != 1 {
        return Err(IoError::unsupported(
            &cfl,
            format!("COIL dimension is {k}: an image has one coil; read it as k-space"),
        ));
    }
    let data = Array4::from_shape_fn((t, s, r, c), |(ti, si, ri, ci)| {
        v[ri + r * (ci + c * (si + s * ti))]
    });
    let mut vol = Volume::new(data, Affine::IDENTITY);
    vol.meta = Metadata {
        source_format: "cfl".into(),
        source_datatype: "complex64".into(),
        ..Metadata::default()
    };
    Ok(vol)
}

/// Stem of the mask file that goes with `path`: `<stem>_mask`.
fn mask_stem(path: &Path) -> PathBuf {
    let (hdr, _) = pair_paths(path);
    let mut s = hdr.with_extension("").into_os_string();
    s.push("_mask");
    PathBuf::from(s)
}

/// BART dimension vector of length [`BART_DIMS`] with the first entries set.
fn bart_dims(first: &[(usize, usize)]) -> Vec<usize> {
    let mut d = vec![1usize; BART_DIMS];
    for &(i, n) in first {
        d[i] = n;
    }
    d
}

/// Writes a scan as BART arrays: k-space `[slice, coil, row, col]` as dims
/// `[row, col, slice, coil]` plus, when it has a mask, `<stem>_mask.cfl` as `[row, col, slice]`
/// (1 + 0i measured, 0 not); images `[frame, slice, row, col]` as `[row, col, slice, 1, ...,
/// frame at d10]`. Reference, maps, affine and attributes are not stored (cfl has no place for
/// them); write k-space as `.npz` to keep them.
pub fn write(path: &Path, scan: &Scan) -> Result<()> {
    match scan {
        Scan::KSpace(k) => {
            let [s, nc, r, c] = k.shape4();
            let mut v = Vec::with_capacity(k.data.len());
            for ki in 0..nc {
                for si in 0..s {
                    for ci in 0..c {
                        for ri in 0..r {
                            v.push(k.data[[si, ki, ri, ci]]);
                        }
                    }
                }
            }
            write_array(path, &bart_dims(&[(0, r), (1, c), (2, s), (3, nc)]), &v)?;
            if let Some(m) = &k.mask {
                if m.shape() != [s, r, c] {
                    return Err(IoError::Unwritable {
                        path: path.to_path_buf(),
                        msg: format!(
                            "mask {:?} does not match k-space [slice, row, col] = {:?}",
                            m.shape(),
                            [s, r, c]
                        ),
                    });
                }
                let mut mv = Vec::with_capacity(m.len());
                for si in 0..s {
                    for ci in 0..c {
                        for ri in 0..r {
                            let on = m[[si, ri, ci]] != 0.0;
                            mv.push(C32::new(if on { 1.0 } else { 0.0 }, 0.0));
                        }
                    }
                }
                write_array(&mask_stem(path), &bart_dims(&[(0, r), (1, c), (2, s)]), &mv)?;
            }
            Ok(())
        }
        Scan::ComplexImage(vol) => write_image(path, vol.shape4(), |i| vol.data[i]),
        Scan::Image(vol) => write_image(path, vol.shape4(), |i| C32::new(vol.data[i], 0.0)),
    }
}

fn write_image(path: &Path, shape: [usize; 4], at: impl Fn([usize; 4]) -> C32) -> Result<()> {
    let [t, s, r, c] = shape;
    let mut v = Vec::with_capacity(t * s * r * c);
    for ti in 0..t {
        for si in 0..s {
            for ci in 0..c {
                for ri in 0..r {
                    v.push(at([ti, si, ri, ci]));
                }
            }
        }
    }
    write_array(
        path,
        &bart_dims(&[(0, r), (1, c), (2, s), (BART_TIME_DIM, t)]),
        &v,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pair_paths_accept_stem_cfl_and_hdr() {
        let want = (PathBuf::from("/a/x.y.hdr"), PathBuf::from("/a/x.y.cfl"));
        assert_eq!(pair_paths(Path::new("/a/x.y")), want);
        assert_eq!(pair_paths(Path::new("/a/x.y.cfl")), want);
        assert_eq!(pair_paths(Path::new("/a/x.y.hdr")), want);
        assert_eq!(mask_stem(Path::new("/a/k.cfl")), PathBuf::from("/a/k_mask"));
    }

    #[test]
    fn header_parsing_tolerates_bart_extras_and_rejects_text() {
        let p = Path::new("x.hdr");
        let d = parse_hdr(p, "# Dimensions\n4 3 1 2 1 \n# Command\nbart phantom\n").unwrap();
        assert_eq!(d, vec![4, 3, 1, 2, 1]);
        assert!(parse_hdr(p, "# Dimensions\n4 x 1\n").is_err());
        assert!(parse_hdr(p, "hello\n").is_err());
        assert!(parse_hdr(p, "# Dimensions\n").is_err());
    }
}

//! Structural check of a DICOM Part-10 byte stream before dicom-rs parses it.
//!
//! dicom-rs allocates (and zero-fills) each value at the length its header claims, so a 10 kB file
//! whose header claims a 4 GB value would make it allocate 4 GB. This walk reads only element
//! headers and refuses any value longer than the bytes that follow it, so that a truncated or
//! corrupt file yields an error naming the element instead of a huge allocation.

use std::io::Read;
use std::path::Path;

use dicom_core::dictionary::{DataDictionary, DataDictionaryEntry, VirtualVr};
use dicom_core::{Tag, VR};
use dicom_dictionary_std::StandardDataDictionary;

use crate::{IoError, Result};

/// Byte offset of the `DICM` marker in a Part-10 file (after the 128-byte preamble).
pub(crate) const MAGIC_OFFSET: usize = 128;

/// Largest dataset a deflated file may inflate to (bytes).
const MAX_INFLATED: u64 = 1 << 30;

/// True when `bytes` starts with a 128-byte preamble followed by `DICM`.
pub(crate) fn has_magic(bytes: &[u8]) -> bool {
    bytes.get(MAGIC_OFFSET..MAGIC_OFFSET + 4) == Some(b"DICM")
}

/// How the data set after the file meta group is encoded.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Encoding {
    ExplicitLe,
    ImplicitLe,
    ExplicitBe,
    DeflatedExplicitLe,
}

/// Checks the `DICM` marker and that every element header of the meta group and data set fits
/// in the file; returns the transfer syntax UID of the data set.
pub(crate) fn check(path: &Path, bytes: &[u8]) -> Result<String> {
    if bytes.len() < MAGIC_OFFSET + 4 {
        return Err(IoError::malformed(
            path,
            format!(
                "not a DICOM file: {} bytes, shorter than the 132-byte preamble and 'DICM' marker",
                bytes.len()
            ),
        ));
    }
    if !has_magic(bytes) {
        return Err(IoError::malformed(
            path,
            "not a DICOM Part-10 file: no 'DICM' marker at byte 128",
        ));
    }
    let start = MAGIC_OFFSET + 4;
    // File meta group: always explicit VR little endian, elements of group 0002.
    let mut w = Walker {
        path,
        b: bytes,
        pos: start,
        base: 0,
        enc: Encoding::ExplicitLe,
        fragments: false,
        ends: Vec::new(),
    };
    let mut ts: Option<String> = None;
    // dicom-rs reads the meta group as (0002,0000) UL, then elements of *any* group until the
    // bytes read reach that group length; the data set starts where it stopped. Walk the same
    // way, or the data set would be checked from another offset than the one dicom-rs parses
    // (a 2 kB file with an off-group (0003,0016) element inside the meta group length made it
    // allocate 2.4 GB; found by fuzzing). Without a group length dicom-rs refuses the file.
    let mut meta_left: Option<usize> = None;
    if w.pos + 12 <= bytes.len() {
        let (tag, _, len, value_at) = w.header()?;
        if tag == Tag(0x0002, 0x0000) && len == 4 {
            w.fits(tag, value_at, 4)?;
            meta_left = Some(u32::from_le_bytes([
                bytes[value_at],
                bytes[value_at + 1],
                bytes[value_at + 2],
                bytes[value_at + 3],
            ]) as usize);
            w.pos = value_at + 4;
        }
    }
    let in_meta = |w: &Walker<'_>, left: Option<usize>| match left {
        Some(left) => left > 0 && w.pos < bytes.len(),
        None => {
            w.pos + 4 <= bytes.len() && u16::from_le_bytes([bytes[w.pos], bytes[w.pos + 1]]) == 2
        }
    };
    while in_meta(&w, meta_left) {
        let at = w.pos;
        let (tag, _, len, value_at) = w.header()?;
        let len = w.defined(tag, len)?;
        w.fits(tag, value_at, len)?;
        if let Some(left) = meta_left.as_mut() {
            *left = left.saturating_sub(value_at + len - at);
        }
        if tag == Tag(0x0002, 0x0010) {
            let raw = &bytes[value_at..value_at + len];
            ts = Some(
                String::from_utf8_lossy(raw)
                    .trim_end_matches(['\0', ' '])
                    .to_string(),
            );
        }
        w.pos = value_at + len;
    }
    let ts = match ts {
        Some(ts) => ts,
        None if w.pos + 4 > bytes.len() => {
            return Err(IoError::malformed(
                path,
                format!(
                    "truncated: the file ends at byte {} inside the file meta group",
                    bytes.len()
                ),
            ))
        }
        None => {
            return Err(IoError::malformed(
                path,
                "file meta group has no TransferSyntaxUID (0002,0010)",
            ))
        }
    };
    let enc = match ts.as_str() {
        "1.2.840.10008.1.2" => Encoding::ImplicitLe,
        "1.2.840.10008.1.2.2" => Encoding::ExplicitBe,
        "1.2.840.10008.1.2.1.99" => Encoding::DeflatedExplicitLe,
        _ => Encoding::ExplicitLe,
    };
    if enc == Encoding::DeflatedExplicitLe {
        let mut inflated = Vec::new();
        flate2::read::DeflateDecoder::new(&bytes[w.pos..])
            .take(MAX_INFLATED + 1)
            .read_to_end(&mut inflated)
            .map_err(|e| {
                IoError::malformed(path, format!("deflated data set cannot be inflated: {e}"))
            })?;
        if inflated.len() as u64 > MAX_INFLATED {
            return Err(IoError::unsupported(
                path,
                format!("deflated data set inflates to more than {MAX_INFLATED} bytes"),
            ));
        }
        let mut d = Walker {
            path,
            b: &inflated,
            pos: 0,
            base: w.pos,
            enc: Encoding::ExplicitLe,
            fragments: false,
            ends: Vec::new(),
        };
        d.walk()?;
    } else {
        w.enc = enc;
        w.walk()?;
    }
    Ok(ts)
}

/// Reads element headers one after another, entering sequences and items instead of skipping
/// them so that nested lengths are checked too.
struct Walker<'a> {
    path: &'a Path,
    b: &'a [u8],
    pos: usize,
    /// Offset of `b` in the file, for messages (inflated data sets start at 0).
    base: usize,
    enc: Encoding,
    /// Inside encapsulated pixel data: items are fragments to skip.
    fragments: bool,
    /// Ends (offsets in `b`) of the defined-length sequences and items the walk is inside,
    /// innermost last: nothing inside may run past them.
    ends: Vec<usize>,
}

const UNDEFINED: u32 = 0xFFFF_FFFF;

impl Walker<'_> {
    fn u16_at(&self, at: usize) -> u16 {
        let x = [self.b[at], self.b[at + 1]];
        if self.enc == Encoding::ExplicitBe {
            u16::from_be_bytes(x)
        } else {
            u16::from_le_bytes(x)
        }
    }

    fn u32_at(&self, at: usize) -> u32 {
        let x = [self.b[at], self.b[at + 1], self.b[at + 2], self.b[at + 3]];
        if self.enc == Encoding::ExplicitBe {
            u32::from_be_bytes(x)
        } else {
            u32::from_le_bytes(x)
        }
    }

    fn truncated(&self, what: &str) -> IoError {
        IoError::malformed(
            self.path,
            format!(
                "truncated: {what} at byte {} runs past the end of the data ({} bytes)",
                self.base + self.pos,
                self.base + self.b.len()
            ),
        )
    }

    /// Reads the header at `pos`: tag, VR (explicit syntaxes), length, offset of the value.
    fn header(&self) -> Result<(Tag, Option<VR>, u32, usize)> {
        let p = self.pos;
        if p + 8 > self.b.len() {
            return Err(self.truncated("element header"));
        }
        let tag = Tag(self.u16_at(p), self.u16_at(p + 2));
        if tag.0 == 0xFFFE || self.enc == Encoding::ImplicitLe {
            return Ok((tag, None, self.u32_at(p + 4), p + 8));
        }
        let vr_bytes = [self.b[p + 4], self.b[p + 5]];
        let vr = VR::from_binary(vr_bytes);
        let long = matches!(
            vr,
            Some(
                VR::OB
                    | VR::OD
                    | VR::OF
                    | VR::OL
                    | VR::OV
                    | VR::OW
                    | VR::SQ
                    | VR::SV
                    | VR::UC
                    | VR::UN
                    | VR::UR
                    | VR::UT
                    | VR::UV
            )
        );
        if vr.is_none() {
            return Err(IoError::malformed(
                self.path,
                format!(
                    "element ({:04X},{:04X}) at byte {} has an invalid VR {:?}",
                    tag.0,
                    tag.1,
                    self.base + p,
                    String::from_utf8_lossy(&vr_bytes)
                ),
            ));
        }
        if long {
            if p + 12 > self.b.len() {
                return Err(self.truncated("element header"));
            }
            Ok((tag, vr, self.u32_at(p + 8), p + 12))
        } else {
            Ok((tag, vr, u32::from(self.u16_at(p + 6)), p + 8))
        }
    }

    fn defined(&self, tag: Tag, len: u32) -> Result<usize> {
        if len == UNDEFINED {
            return Err(IoError::malformed(
                self.path,
                format!(
                    "element ({:04X},{:04X}) at byte {} has an undefined length where one is required",
                    tag.0,
                    tag.1,
                    self.base + self.pos
                ),
            ));
        }
        Ok(len as usize)
    }

    fn fits(&self, tag: Tag, value_at: usize, len: usize) -> Result<()> {
        if let Some(&end) = self.ends.last() {
            if end < self.b.len() && value_at.saturating_add(len) > end {
                return Err(IoError::malformed(
                    self.path,
                    format!(
                        "corrupt: element ({:04X},{:04X}) at byte {} claims {len} bytes, past \
                         the end of its enclosing sequence or item at byte {}",
                        tag.0,
                        tag.1,
                        self.base + self.pos,
                        self.base + end
                    ),
                ));
            }
        }
        let left = self.b.len().saturating_sub(value_at);
        if len > left {
            return Err(IoError::malformed(
                self.path,
                format!(
                    "truncated or corrupt: element ({:04X},{:04X}) at byte {} claims {len} bytes \
                     but only {left} remain",
                    tag.0,
                    tag.1,
                    self.base + self.pos
                ),
            ));
        }
        Ok(())
    }

    fn is_sequence_implicit(tag: Tag) -> bool {
        matches!(
            StandardDataDictionary.by_tag(tag).map(|e| e.vr()),
            Some(VirtualVr::Exact(VR::SQ))
        )
    }

    fn walk(&mut self) -> Result<()> {
        while self.pos < self.b.len() {
            while self.ends.last().is_some_and(|&e| self.pos >= e) {
                self.ends.pop();
            }
            let (tag, vr, len, value_at) = self.header()?;
            if tag.0 == 0xFFFE {
                match tag.1 {
                    0xE000 if self.fragments => {
                        let len = self.defined(tag, len)?;
                        self.fits(tag, value_at, len)?;
                        self.pos = value_at + len;
                    }
                    // An item of a sequence: its data set follows; enter it. A defined item
                    // length must fit in the file and in its sequence (dicom-rs otherwise
                    // allocated 4 GB for a 6.6 kB file whose nested item claimed more than its
                    // sequence held; found by fuzzing).
                    0xE000 => {
                        if len != UNDEFINED {
                            self.fits(tag, value_at, len as usize)?;
                            self.ends.push(value_at + len as usize);
                        }
                        self.pos = value_at;
                    }
                    0xE0DD => {
                        self.fragments = false;
                        self.pos = value_at;
                    }
                    _ => self.pos = value_at,
                }
                continue;
            }
            let is_sq = match vr {
                Some(v) => v == VR::SQ,
                None => len == UNDEFINED || Self::is_sequence_implicit(tag),
            };
            if len == UNDEFINED {
                if !is_sq && tag == Tag(0x7FE0, 0x0010) {
                    self.fragments = true;
                }
                // Undefined-length sequence (or UN read as one): enter.
                self.pos = value_at;
                continue;
            }
            if is_sq {
                self.fits(tag, value_at, len as usize)?;
                self.ends.push(value_at + len as usize);
                self.pos = value_at;
                continue;
            }
            self.fits(tag, value_at, len as usize)?;
            self.whole_values(tag, vr, len as usize)?;
            self.pos = value_at + len as usize;
        }
        Ok(())
    }

    /// Refuses a binary value whose length is not a whole number of values: dicom-rs reads
    /// `len / size` values but counts `len` bytes as read, so the rest of the data set is read
    /// from the wrong offset and a misread length can claim hundreds of MB (a 6 kB file whose
    /// Columns had VR SL and length 2 made it allocate 764 MB; found by fuzzing). In implicit VR
    /// syntaxes the VR is the one dicom-rs takes from its dictionary.
    fn whole_values(&self, tag: Tag, vr: Option<VR>, len: usize) -> Result<()> {
        let vr = match vr {
            Some(v) => v,
            None if tag == Tag(0x7FE0, 0x0010) || (tag.0 >> 8 == 0x60 && tag.1 == 0x3000) => VR::OW,
            None => StandardDataDictionary
                .by_tag(tag)
                .map_or(VR::UN, |e| e.vr().relaxed()),
        };
        let size = match vr {
            VR::US | VR::SS | VR::OW => 2,
            VR::AT | VR::UL | VR::SL | VR::FL | VR::OL | VR::OF => 4,
            VR::FD | VR::OD | VR::SV | VR::UV | VR::OV => 8,
            _ => return Ok(()),
        };
        if len % size != 0 {
            return Err(IoError::malformed(
                self.path,
                format!(
                    "corrupt: element ({:04X},{:04X}) at byte {} has VR {vr} and {len} bytes, \
                     not a whole number of {size}-byte values",
                    tag.0,
                    tag.1,
                    self.base + self.pos,
                ),
            ));
        }
        Ok(())
    }
}

/// Transfer syntax UID of RLE Lossless (PS3.5 Annex G).
pub(crate) const RLE_LOSSLESS: &str = "1.2.840.10008.1.2.5";

/// Checks every RLE Lossless fragment (one per frame, PS3.5 G.4) before dicom-pixeldata decodes
/// it: a 64-byte header with at most 15 segments, increasing offsets inside the fragment, and
/// each segment amri needs (`bytes_per_sample` for one sample per pixel) decoding to at least
/// `rows × cols` bytes. dicom-pixeldata 0.10 indexes out of bounds on fragments that break any
/// of these (found by fuzzing).
pub(crate) fn check_rle(
    path: &Path,
    fragments: &[Vec<u8>],
    rows: usize,
    cols: usize,
    bytes_per_sample: usize,
) -> Result<()> {
    let bad = |msg: String| IoError::malformed(path, format!("corrupt RLE pixel data: {msg}"));
    let plane = (rows as u64) * (cols as u64);
    for (i, f) in fragments.iter().enumerate() {
        if f.len() < 64 {
            return Err(bad(format!(
                "fragment {i} has {} bytes, shorter than the 64-byte RLE header",
                f.len()
            )));
        }
        let word =
            |k: usize| u32::from_le_bytes([f[4 * k], f[4 * k + 1], f[4 * k + 2], f[4 * k + 3]]);
        let n = word(0) as usize;
        if n > 15 || n < bytes_per_sample {
            return Err(bad(format!(
                "fragment {i} declares {n} segments ({bytes_per_sample} needed, at most 15)"
            )));
        }
        let mut offsets: Vec<usize> = (1..=n).map(|k| word(k) as usize).collect();
        offsets.push(f.len());
        for s in 0..bytes_per_sample {
            let (a, b) = (offsets[s], offsets[s + 1]);
            if a < 64 || a > b || b > f.len() {
                return Err(bad(format!(
                    "fragment {i} segment {s} spans bytes {a}..{b} of {}",
                    f.len()
                )));
            }
            let got = packbits_len(&f[a..b]);
            if got < plane {
                return Err(bad(format!(
                    "fragment {i} segment {s} decodes to {got} bytes, {rows}×{cols} = {plane} needed"
                )));
            }
        }
    }
    Ok(())
}

/// Transfer syntax UIDs of JPEG-LS (lossless and near-lossless, PS3.5 A.4.3), decoded by CharLS
/// only in builds with the `jpegls` feature.
pub(crate) const JPEG_LS: [&str; 2] = ["1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.81"];

/// Transfer syntax UIDs that dicom-pixeldata decodes with OpenJPEG (JPEG 2000 and HTJ2K).
pub(crate) const JPEG2000: [&str; 7] = [
    "1.2.840.10008.1.2.4.90",
    "1.2.840.10008.1.2.4.91",
    "1.2.840.10008.1.2.4.92",
    "1.2.840.10008.1.2.4.93",
    "1.2.840.10008.1.2.4.201",
    "1.2.840.10008.1.2.4.202",
    "1.2.840.10008.1.2.4.203",
];

/// The first `n` bytes of the concatenation of `fragments[i..]` (fewer if there are not that
/// many): a frame's encoded data is always whole fragments from some index on.
fn head(fragments: &[Vec<u8>], i: usize, n: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(n);
    for f in &fragments[i..] {
        let take = (n - out.len()).min(f.len());
        out.extend_from_slice(&f[..take]);
        if out.len() == n {
            break;
        }
    }
    out
}

/// Checks the JPEG 2000 codestream header (SIZ, ISO 15444-1 A.5.1) of every frame before
/// dicom-pixeldata decodes it: no JP2 file-format wrapper (PS3.5 A.4.4 excludes it; its palette
/// box could add components), at most `samples` components, and each component no larger than
/// `rows × cols`. dicom-pixeldata 0.10 copies every decoded sample into a buffer sized from
/// Rows × Columns and indexes out of bounds otherwise (found by fuzzing). A frame starts at a
/// fragment boundary, so the header is read at each one.
pub(crate) fn check_jpeg2000(
    path: &Path,
    fragments: &[Vec<u8>],
    rows: usize,
    cols: usize,
    samples: usize,
) -> Result<()> {
    const JP2: [u8; 12] = [
        0x00, 0x00, 0x00, 0x0c, 0x6a, 0x50, 0x20, 0x20, 0x0d, 0x0a, 0x87, 0x0a,
    ];
    const SOC_SIZ: [u8; 4] = [0xff, 0x4f, 0xff, 0x51];
    let bad =
        |msg: String| IoError::malformed(path, format!("corrupt JPEG 2000 pixel data: {msg}"));
    for i in 0..fragments.len() {
        let h = head(fragments, i, 42);
        if h.starts_with(&JP2) {
            return Err(bad(format!(
                "fragment {i} is a JP2 file, which DICOM does not allow (a bare codestream is required)"
            )));
        }
        if !h.starts_with(&SOC_SIZ) || h.len() < 42 {
            // Not the start of a codestream (OpenJPEG refuses such a frame) or too short to
            // hold a SIZ segment (OpenJPEG refuses it too).
            continue;
        }
        let u32_at = |k: usize| u64::from(u32::from_be_bytes([h[k], h[k + 1], h[k + 2], h[k + 3]]));
        // SOC(2) SIZ(2) Lsiz(2) Rsiz(2) Xsiz Ysiz XOsiz YOsiz XTsiz YTsiz XTOsiz YTOsiz Csiz(2)
        let (x, y, x0, y0) = (u32_at(8), u32_at(12), u32_at(16), u32_at(20));
        let ncomp = usize::from(u16::from_be_bytes([h[40], h[41]]));
        if ncomp == 0 || ncomp > samples {
            return Err(bad(format!(
                "fragment {i} holds {ncomp} components, {samples} expected (SamplesPerPixel)"
            )));
        }
        if x <= x0 || y <= y0 {
            return Err(bad(format!(
                "fragment {i} declares an empty image (Xsiz {x}, XOsiz {x0}, Ysiz {y}, YOsiz {y0})"
            )));
        }
        let h = head(fragments, i, 42 + 3 * ncomp);
        if h.len() < 42 + 3 * ncomp {
            continue; // truncated SIZ: OpenJPEG refuses it
        }
        for c in 0..ncomp {
            let (dx, dy) = (u64::from(h[43 + 3 * c]), u64::from(h[44 + 3 * c]));
            if dx == 0 || dy == 0 {
                return Err(bad(format!(
                    "fragment {i} component {c} has a zero subsampling factor"
                )));
            }
            let w = x.div_ceil(dx) - x0.div_ceil(dx);
            let hgt = y.div_ceil(dy) - y0.div_ceil(dy);
            if w > cols as u64 || hgt > rows as u64 {
                return Err(bad(format!(
                    "fragment {i} component {c} is {hgt}×{w} (rows×columns), larger than \
                     Rows×Columns {rows}×{cols}"
                )));
            }
        }
    }
    Ok(())
}

/// Number of bytes the PackBits stream `seg` decodes to, counted the way dicom-pixeldata decodes
/// it (a literal run cut short by the end of the segment yields what is there; a replicate run
/// missing its byte yields nothing).
fn packbits_len(seg: &[u8]) -> u64 {
    let (mut p, mut out) = (0usize, 0u64);
    while p < seg.len() {
        let h = seg[p] as i8;
        p += 1;
        if h >= 0 {
            let n = h as usize + 1;
            out += n.min(seg.len() - p) as u64;
            p += n;
        } else if h != -128 {
            if p >= seg.len() {
                break;
            }
            out += (1 - h as i64) as u64;
            p += 1;
        }
    }
    out
}

#[cfg(test)]
mod codec_tests {
    use super::*;

    /// The PackBits example of Apple Technical Note TN1023: 15 bytes decoding to 24.
    const TN1023: [u8; 15] = [
        0xFE, 0xAA, 0x02, 0x80, 0x00, 0x2A, 0xFD, 0xAA, 0x03, 0x80, 0x00, 0x2A, 0x22, 0xF7, 0xAA,
    ];

    /// An RLE fragment: the 64-byte header giving one segment at byte 64, then `segment`.
    fn fragment(segments: u32, segment: &[u8]) -> Vec<u8> {
        let mut f = vec![0u8; 64];
        f[..4].copy_from_slice(&segments.to_le_bytes());
        f[4..8].copy_from_slice(&64u32.to_le_bytes());
        f.extend_from_slice(segment);
        f
    }

    #[test]
    fn packbits_length_matches_the_tn1023_example() {
        assert_eq!(packbits_len(&TN1023), 24);
        // Cut inside the final replicate run: that run yields nothing.
        assert_eq!(packbits_len(&TN1023[..14]), 24 - 10);
        // A literal run of 4 cut after 2 bytes yields those 2.
        assert_eq!(packbits_len(&[0x03, 1, 2]), 2);
        // -128 is a no-op.
        assert_eq!(packbits_len(&[0x80, 0x80]), 0);
    }

    #[test]
    fn rle_fragments_are_checked_against_the_image_size() {
        let p = Path::new("x.dcm");
        // 24 decoded bytes: enough for 4×6 at 8 bits, not for 5×5.
        check_rle(p, &[fragment(1, &TN1023)], 4, 6, 1).unwrap();
        let e = check_rle(p, &[fragment(1, &TN1023)], 5, 5, 1)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("x.dcm") && e.contains("decodes to 24 bytes"),
            "{e}"
        );
        // 16-bit samples need two segments.
        let e = check_rle(p, &[fragment(1, &TN1023)], 4, 6, 2)
            .unwrap_err()
            .to_string();
        assert!(e.contains("declares 1 segments"), "{e}");
        let e = check_rle(p, &[fragment(16, &TN1023)], 4, 6, 1)
            .unwrap_err()
            .to_string();
        assert!(e.contains("at most 15"), "{e}");
        let e = check_rle(p, &[vec![1, 0, 0, 0]], 4, 6, 1)
            .unwrap_err()
            .to_string();
        assert!(e.contains("shorter than the 64-byte RLE header"), "{e}");
        // An offset past the end of the fragment.
        let mut f = fragment(1, &TN1023);
        f[4..8].copy_from_slice(&1000u32.to_le_bytes());
        let e = check_rle(p, &[f], 4, 6, 1).unwrap_err().to_string();
        assert!(e.contains("spans bytes 1000..79"), "{e}");
    }

    /// A Part-10 file: preamble, `DICM`, a meta group holding only the transfer syntax `ts`,
    /// then `data` as it is.
    fn part10(ts: &str, data: &[u8]) -> Vec<u8> {
        let mut b = vec![0u8; MAGIC_OFFSET];
        b.extend_from_slice(b"DICM");
        let mut uid = ts.as_bytes().to_vec();
        if uid.len() % 2 == 1 {
            uid.push(0);
        }
        b.extend_from_slice(&[0x02, 0x00, 0x10, 0x00, b'U', b'I']);
        b.extend_from_slice(&(uid.len() as u16).to_le_bytes());
        b.extend_from_slice(&uid);
        b.extend_from_slice(data);
        b
    }

    /// The meta group ends where (0002,0000) says, as dicom-rs reads it, even when the group
    /// holds an element of another group; the deflated data set starts after it.
    #[test]
    fn meta_group_length_decides_where_the_data_set_starts() {
        use std::io::Write;
        let p = Path::new("x.dcm");
        let ts = b"1.2.840.10008.1.2.1.99";
        let mut meta = vec![0x02, 0x00, 0x10, 0x00, b'U', b'I', ts.len() as u8, 0];
        meta.extend_from_slice(ts);
        // An off-group element inside the meta group length (as in fuzz finding 6).
        meta.extend_from_slice(&[0x03, 0x00, 0x16, 0x00, b'A', b'E', 8, 0]);
        meta.extend_from_slice(b"CLUNIE1 ");
        // The data set: PatientName claiming 200 bytes of which 4 exist.
        let data = [0x10, 0, 0x10, 0, b'P', b'N', 200, 0, b'A', b'B', b'C', b'D'];
        let mut enc =
            flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(&data).unwrap();
        let deflated = enc.finish().unwrap();
        let mut b = vec![0u8; MAGIC_OFFSET];
        b.extend_from_slice(b"DICM");
        b.extend_from_slice(&[0x02, 0x00, 0x00, 0x00, b'U', b'L', 4, 0]);
        b.extend_from_slice(&(meta.len() as u32).to_le_bytes());
        b.extend_from_slice(&meta);
        b.extend_from_slice(&deflated);
        let e = check(p, &b).unwrap_err().to_string();
        // Inflated from the right byte, the walk reaches the bad length (inflating from the
        // off-group element, as before, failed on a stream that is not one).
        assert!(
            e.contains("element (0010,0010)") && e.contains("claims 200 bytes but only 4 remain"),
            "{e}"
        );
        // The same data set complete is accepted.
        let mut ok_data = data[..8].to_vec();
        ok_data[6] = 4;
        ok_data.extend_from_slice(b"ABCD");
        let mut enc =
            flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(&ok_data).unwrap();
        let n = b.len() - deflated.len();
        let mut good = b[..n].to_vec();
        good.extend_from_slice(&enc.finish().unwrap());
        assert_eq!(check(p, &good).unwrap(), "1.2.840.10008.1.2.1.99");
    }

    #[test]
    fn binary_values_must_hold_whole_values() {
        let p = Path::new("x.dcm");
        // Explicit VR LE: Rows (0028,0010) US with 2 bytes is fine, Columns SL with 2 is not.
        let ok = [0x28, 0, 0x10, 0, b'U', b'S', 2, 0, 64, 0];
        check(p, &part10("1.2.840.10008.1.2.1", &ok)).unwrap();
        let mut bad = ok.to_vec();
        bad.extend_from_slice(&[0x28, 0, 0x11, 0, b'S', b'L', 2, 0, 64, 0]);
        let file = part10("1.2.840.10008.1.2.1", &bad);
        let e = check(p, &file).unwrap_err().to_string();
        assert!(
            e.contains("x.dcm")
                && e.contains(&format!(
                    "element (0028,0011) at byte {} has VR SL and 2 bytes, not a whole number of \
                     4-byte values",
                    file.len() - 10
                )),
            "{e}"
        );
        // FD with 12 bytes (8-byte values).
        let fd = [
            0x18, 0, 0x87, 0, b'F', b'D', 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        ];
        let e = check(p, &part10("1.2.840.10008.1.2.1", &fd))
            .unwrap_err()
            .to_string();
        assert!(e.contains("has VR FD and 12 bytes"), "{e}");
        // Implicit VR LE: the VR is the dictionary's (Rows is US), as dicom-rs reads it.
        let implicit = |len: u32| {
            let mut d = vec![0x28, 0, 0x10, 0];
            d.extend_from_slice(&len.to_le_bytes());
            d.extend(std::iter::repeat_n(0u8, len as usize));
            part10("1.2.840.10008.1.2", &d)
        };
        check(p, &implicit(4)).unwrap();
        let e = check(p, &implicit(3)).unwrap_err().to_string();
        assert!(
            e.contains("(0028,0010)") && e.contains("has VR US and 3 bytes"),
            "{e}"
        );
        // An odd-length OB value is whole bytes: left alone.
        let ob = [
            0x09, 0x00, 0x10, 0x10, b'O', b'B', 0, 0, 3, 0, 0, 0, 1, 2, 3,
        ];
        check(p, &part10("1.2.840.10008.1.2.1", &ob)).unwrap();
    }

    /// A bare codestream header: SOC, SIZ for a `w`×`h` image of `comps` 8-bit components
    /// with subsampling 1, then a few bytes standing in for the rest.
    fn codestream(w: u32, h: u32, comps: u16) -> Vec<u8> {
        let mut b = vec![0xff, 0x4f, 0xff, 0x51];
        b.extend_from_slice(&(38 + 3 * comps).to_be_bytes()); // Lsiz
        b.extend_from_slice(&0u16.to_be_bytes()); // Rsiz
        for v in [w, h, 0, 0, w, h, 0, 0] {
            b.extend_from_slice(&v.to_be_bytes());
        }
        b.extend_from_slice(&comps.to_be_bytes());
        for _ in 0..comps {
            b.extend_from_slice(&[7, 1, 1]);
        }
        b.extend_from_slice(&[0xff, 0x52, 0, 0]);
        b
    }

    #[test]
    fn jpeg2000_headers_are_checked_against_rows_columns_and_samples() {
        let p = Path::new("x.dcm");
        check_jpeg2000(p, &[codestream(64, 32, 1)], 32, 64, 1).unwrap();
        // Split across fragments after an empty one (a frame is whole fragments from some index).
        let cs = codestream(64, 33, 1);
        let frags = vec![Vec::new(), cs[..3].to_vec(), cs[3..].to_vec()];
        let e = check_jpeg2000(p, &frags, 32, 64, 1)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("x.dcm") && e.contains("is 33×64 (rows×columns)"),
            "{e}"
        );
        let e = check_jpeg2000(p, &[codestream(64, 32, 3)], 32, 64, 1)
            .unwrap_err()
            .to_string();
        assert!(e.contains("3 components, 1 expected"), "{e}");
        let mut jp2 = vec![
            0, 0, 0, 0x0c, 0x6a, 0x50, 0x20, 0x20, 0x0d, 0x0a, 0x87, 0x0a,
        ];
        jp2.extend(codestream(64, 32, 1));
        let e = check_jpeg2000(p, &[jp2], 32, 64, 1)
            .unwrap_err()
            .to_string();
        assert!(e.contains("JP2 file"), "{e}");
        // Not a codestream at all: left to the decoder, which refuses it.
        check_jpeg2000(p, &[b"not jpeg".to_vec()], 32, 64, 1).unwrap();
    }
}

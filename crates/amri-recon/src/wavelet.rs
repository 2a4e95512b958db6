//! Orthonormal 2-D discrete wavelet transforms (Daubechies db1–db8), multi-level, periodic
//! boundary, any image size.
//!
//! # Convention
//! The 1-D analysis step of a length-`N` signal (`N` even) with decomposition low-pass filter
//! `h` of length `F` and high-pass `g[j] = (−1)^(j+1) h[F−1−j]` is
//!
//! ```text
//! a[k] = Σ_j h[j] x[(2k + F/2 − j) mod N],   d[k] = Σ_j g[j] x[(2k + F/2 − j) mod N],   k < N/2
//! ```
//!
//! which is exactly PyWavelets' `mode='periodization'` (`pywt.dwt`, `pywt.wavedec2`), filters
//! from `pywt.Wavelet('dbN').dec_lo`. Being orthonormal, the synthesis step is the adjoint.
//!
//! The 2-D transform applies the 1-D step along columns (axis 1) then rows (axis 0) of the
//! current approximation band and recurses on it, leaving the coefficients in the Mallat layout
//! on a `[prows, pcols]` grid: after `L` levels the top-left `[prows/2^L, pcols/2^L]` block is
//! the approximation; at level `l` (1 = finest) with `(r, c) = (prows/2^(l−1), pcols/2^(l−1))`
//! the block `[r/2.., ..c/2]` holds PyWavelets' `cH` (detail along rows, axis 0), `[..r/2, c/2..]`
//! holds `cV` (detail along columns) and `[r/2.., c/2..]` holds `cD`.
//!
//! # Any image size
//! A `[rows, cols]` image is zero-padded at the bottom and right to `[prows, pcols]`, the next
//! multiples of `2^L`, and transformed there. The padded transform `W` is orthonormal
//! (`W^H W = W W^H = I` on the padded grid), so the map from the image to its coefficients,
//! `W P` with `P` the zero-padding, is an isometry: `‖W P x‖ = ‖x‖` and `P^H W^H W P x = x`
//! (perfect reconstruction). Note that PyWavelets handles odd lengths differently (it repeats
//! the last sample), so the coefficients agree with `pywt.wavedec2(..., mode='periodization')`
//! only when the sizes are multiples of `2^L`.
//!
//! # Levels
//! [`default_levels`] follows BART's `minsize = 16`: as many levels as keep the coarsest band at
//! least 16 samples along the shorter side (at least one level when both sides are ≥ 2).
//!
//! # BART's transform
//! [`BartWavelet2`] is the other transform here: BART v0.8's redundant one with half-sample
//! symmetric boundaries, the one `pics -l1` thresholds (with Daubechies 2, 4 taps,
//! `WAVELET_DAU2`). [`crate::app::l1_wavelet()`] uses it by default ([`WaveletDef::Bart`]) to
//! reproduce `pics -l1` on k-space data; [`Wavelet2`] is [`WaveletDef::Orthonormal`].
//!
//! ```
//! use amri_recon::wavelet::{Wavelet, Wavelet2};
//! use amri_core::C32;
//! use ndarray::Array2;
//! let x = Array2::from_shape_fn((13, 10), |(i, j)| C32::new(i as f32, j as f32 * 0.5));
//! let w = Wavelet2::new(13, 10, Wavelet::Db2, Some(2)).unwrap();
//! let c = w.forward(x.view()).unwrap(); // [16, 12] coefficients
//! assert_eq!(c.dim(), (16, 12));
//! let back = w.inverse(c.view()).unwrap();
//! assert!(back.iter().zip(x.iter()).all(|(a, b)| (a - b).norm() < 1e-4));
//! ```

use std::fmt;
use std::str::FromStr;

use amri_core::C32;
use ndarray::{Array2, ArrayView2};

use crate::error::{ReconError, Result};

/// An orthonormal Daubechies wavelet with `N` vanishing moments (`2N` taps); `Haar` = db1.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Wavelet {
    /// Haar wavelet (Daubechies 1), 2 taps.
    Haar,
    /// Daubechies 2, 4 taps (BART's `WAVELET_DAU2`).
    Db2,
    /// Daubechies 3, 6 taps.
    Db3,
    /// Daubechies 4, 8 taps.
    Db4,
    /// Daubechies 5, 10 taps.
    Db5,
    /// Daubechies 6, 12 taps.
    Db6,
    /// Daubechies 7, 14 taps.
    Db7,
    /// Daubechies 8, 16 taps.
    Db8,
}

// Decomposition low-pass filters, as PyWavelets 1.8 lists them (`pywt.Wavelet('dbN').dec_lo`).
const DB1: [f64; 2] = [
    std::f64::consts::FRAC_1_SQRT_2,
    std::f64::consts::FRAC_1_SQRT_2,
];
const DB2: [f64; 4] = [
    -0.12940952255126037,
    0.2241438680420134,
    0.8365163037378079,
    0.48296291314453416,
];
const DB3: [f64; 6] = [
    0.03522629188570953,
    -0.08544127388202666,
    -0.13501102001025458,
    0.45987750211849154,
    0.8068915093110925,
    0.33267055295008263,
];
const DB4: [f64; 8] = [
    -0.010597401785069032,
    0.0328830116668852,
    0.030841381835560764,
    -0.18703481171909309,
    -0.027983769416859854,
    0.6308807679298589,
    0.7148465705529157,
    0.2303778133088965,
];
const DB5: [f64; 10] = [
    0.0033357252854737712,
    -0.012580751999081999,
    -0.006241490212798274,
    0.07757149384004572,
    -0.032244869584638375,
    -0.24229488706638203,
    0.13842814590132074,
    0.7243085284377729,
    0.6038292697971896,
    0.16010239797419293,
];
const DB6: [f64; 12] = [
    -0.0010773010853084796,
    0.004777257510945511,
    0.0005538422011614961,
    -0.03158203931748603,
    0.027522865530305727,
    0.09750160558732304,
    -0.12976686756726194,
    -0.22626469396543983,
    0.31525035170919763,
    0.7511339080210954,
    0.49462389039845306,
    0.11154074335010947,
];
const DB7: [f64; 14] = [
    0.00035371379997452024,
    -0.0018016407040474908,
    0.0004295779729213665,
    0.01255099855609984,
    -0.01657454163066688,
    -0.03802993693501441,
    0.08061260915108308,
    0.07130921926683026,
    -0.22403618499387498,
    -0.14390600392856498,
    0.4697822874051931,
    0.7291320908462351,
    0.3965393194819173,
    0.07785205408500918,
];
const DB8: [f64; 16] = [
    -0.00011747678412476953,
    0.0006754494064505693,
    -0.00039174037337694705,
    -0.004870352993451574,
    0.008746094047405777,
    0.013981027917398282,
    -0.044088253930794755,
    -0.017369301001807547,
    0.12874742662047847,
    0.0004724845739132828,
    -0.2840155429615469,
    -0.015829105256349306,
    0.5853546836542067,
    0.6756307362972898,
    0.31287159091429995,
    0.05441584224310401,
];

impl Wavelet {
    /// All supported wavelets, shortest first.
    pub const ALL: [Wavelet; 8] = [
        Wavelet::Haar,
        Wavelet::Db2,
        Wavelet::Db3,
        Wavelet::Db4,
        Wavelet::Db5,
        Wavelet::Db6,
        Wavelet::Db7,
        Wavelet::Db8,
    ];

    /// The Daubechies wavelet with `n` vanishing moments, `n` in `1..=8` (1 = Haar).
    pub fn daubechies(n: usize) -> Result<Self> {
        match n {
            1..=8 => Ok(Self::ALL[n - 1]),
            _ => Err(ReconError::param(
                "wavelet",
                format!("Daubechies order must be 1..=8, got {n}"),
            )),
        }
    }

    /// Decomposition low-pass filter `h` (PyWavelets' `dec_lo`), unit norm, sums to `√2`.
    pub fn dec_lo(self) -> &'static [f64] {
        match self {
            Wavelet::Haar => &DB1,
            Wavelet::Db2 => &DB2,
            Wavelet::Db3 => &DB3,
            Wavelet::Db4 => &DB4,
            Wavelet::Db5 => &DB5,
            Wavelet::Db6 => &DB6,
            Wavelet::Db7 => &DB7,
            Wavelet::Db8 => &DB8,
        }
    }

    /// Decomposition high-pass filter `g[j] = (−1)^(j+1) h[F−1−j]` (PyWavelets' `dec_hi`).
    pub fn dec_hi(self) -> Vec<f64> {
        let h = self.dec_lo();
        let f = h.len();
        (0..f)
            .map(|j| {
                if j % 2 == 1 {
                    h[f - 1 - j]
                } else {
                    -h[f - 1 - j]
                }
            })
            .collect()
    }

    /// Number of filter taps `F = 2N`.
    pub fn taps(self) -> usize {
        self.dec_lo().len()
    }

    /// PyWavelets' name of the wavelet (`db1` … `db8`; Haar is `db1`).
    pub fn name(self) -> &'static str {
        match self {
            Wavelet::Haar => "db1",
            Wavelet::Db2 => "db2",
            Wavelet::Db3 => "db3",
            Wavelet::Db4 => "db4",
            Wavelet::Db5 => "db5",
            Wavelet::Db6 => "db6",
            Wavelet::Db7 => "db7",
            Wavelet::Db8 => "db8",
        }
    }
}

impl fmt::Display for Wavelet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Wavelet {
    type Err = ReconError;

    /// Parses `haar`, `db1` … `db8` (case-insensitive).
    fn from_str(s: &str) -> Result<Self> {
        let l = s.trim().to_ascii_lowercase();
        if l == "haar" {
            return Ok(Wavelet::Haar);
        }
        match l.strip_prefix("db").and_then(|n| n.parse::<usize>().ok()) {
            Some(n) => Self::daubechies(n),
            None => Err(ReconError::param(
                "wavelet",
                format!("expected haar or db1..db8, got `{s}`"),
            )),
        }
    }
}

/// BART-like default number of levels for a `[rows, cols]` image: the largest `L` with
/// `min(rows, cols) / 2^L ≥ 16`, at least 1 when both sides are ≥ 2, 0 otherwise.
pub fn default_levels(rows: usize, cols: usize) -> usize {
    let m = rows.min(cols);
    if m < 2 {
        return 0;
    }
    let mut l = 0;
    while m >> (l + 1) >= 16 {
        l += 1;
    }
    l.max(1)
}

/// A planned multi-level orthonormal 2-D DWT of `[rows, cols]` images on the zero-padded
/// `[prows, pcols]` grid (see the module docs for conventions).
#[derive(Clone, Debug)]
pub struct Wavelet2 {
    rows: usize,
    cols: usize,
    prows: usize,
    pcols: usize,
    levels: usize,
    wavelet: Wavelet,
    /// Reversed low-pass `h[F−1−i]`, f32.
    lo_rev: Vec<f32>,
    /// Reversed high-pass `g[F−1−i]`, f32.
    hi_rev: Vec<f32>,
    /// Low-pass `h[j]`, f32.
    lo: Vec<f32>,
    /// High-pass `g[j]`, f32.
    hi: Vec<f32>,
}

impl Wavelet2 {
    /// Plans the transform of `[rows, cols]` images with `levels` levels (`None`:
    /// [`default_levels`]); errors on an empty image or more than 16 levels.
    pub fn new(rows: usize, cols: usize, wavelet: Wavelet, levels: Option<usize>) -> Result<Self> {
        if rows == 0 || cols == 0 {
            return Err(ReconError::param(
                "shape",
                format!("wavelet transform of an empty image [{rows}, {cols}]"),
            ));
        }
        let levels = levels.unwrap_or_else(|| default_levels(rows, cols));
        if levels > 16 {
            return Err(ReconError::param(
                "levels",
                format!("at most 16 wavelet levels, got {levels}"),
            ));
        }
        let m = 1usize << levels;
        let h = wavelet.dec_lo();
        let g = wavelet.dec_hi();
        Ok(Self {
            rows,
            cols,
            prows: rows.div_ceil(m) * m,
            pcols: cols.div_ceil(m) * m,
            levels,
            wavelet,
            lo_rev: h.iter().rev().map(|&v| v as f32).collect(),
            hi_rev: g.iter().rev().map(|&v| v as f32).collect(),
            lo: h.iter().map(|&v| v as f32).collect(),
            hi: g.iter().map(|&v| v as f32).collect(),
        })
    }

    /// Image shape `[rows, cols]`.
    pub fn shape(&self) -> [usize; 2] {
        [self.rows, self.cols]
    }

    /// Coefficient grid `[prows, pcols]` (image shape rounded up to multiples of `2^levels`).
    pub fn padded_shape(&self) -> [usize; 2] {
        [self.prows, self.pcols]
    }

    /// Shape of the coarsest approximation band, `[prows/2^L, pcols/2^L]` (top-left block).
    pub fn approx_shape(&self) -> [usize; 2] {
        [self.prows >> self.levels, self.pcols >> self.levels]
    }

    /// Number of decomposition levels `L`.
    pub fn levels(&self) -> usize {
        self.levels
    }

    /// The wavelet used.
    pub fn wavelet(&self) -> Wavelet {
        self.wavelet
    }

    /// Number of coefficients, `prows·pcols`.
    pub fn len(&self) -> usize {
        self.prows * self.pcols
    }

    /// Always false (empty images are rejected by [`Wavelet2::new`]).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Length of the work buffer that [`Wavelet2::forward_inplace`] and
    /// [`Wavelet2::inverse_inplace`] need.
    pub fn work_len(&self) -> usize {
        self.prows * self.pcols + 2 * (self.prows.max(self.pcols) + self.lo.len())
    }

    /// Writes image `x` (`[rows, cols]`, row-major) into the padded grid `buf` circularly
    /// shifted by `shift = (dr, dc)`: `buf[(i + dr) mod prows, (j + dc) mod pcols] = x[i, j]`,
    /// zeros elsewhere.
    ///
    /// # Panics
    /// If `x.len() != rows·cols` or `buf.len() != prows·pcols`.
    pub fn pad(&self, x: &[C32], buf: &mut [C32], shift: (usize, usize)) {
        assert_eq!(x.len(), self.rows * self.cols, "Wavelet2::pad image length");
        assert_eq!(buf.len(), self.len(), "Wavelet2::pad buffer length");
        buf.fill(C32::new(0.0, 0.0));
        let (dr, dc) = (shift.0 % self.prows, shift.1 % self.pcols);
        for (i, row) in x.chunks_exact(self.cols).enumerate() {
            let pi = (i + dr) % self.prows;
            let prow = &mut buf[pi * self.pcols..(pi + 1) * self.pcols];
            for (j, v) in row.iter().enumerate() {
                prow[(j + dc) % self.pcols] = *v;
            }
        }
    }

    /// The adjoint of [`Wavelet2::pad`]: reads the image back from the shifted padded grid.
    ///
    /// # Panics
    /// If `x.len() != rows·cols` or `buf.len() != prows·pcols`.
    pub fn crop(&self, buf: &[C32], x: &mut [C32], shift: (usize, usize)) {
        assert_eq!(
            x.len(),
            self.rows * self.cols,
            "Wavelet2::crop image length"
        );
        assert_eq!(buf.len(), self.len(), "Wavelet2::crop buffer length");
        let (dr, dc) = (shift.0 % self.prows, shift.1 % self.pcols);
        for (i, row) in x.chunks_exact_mut(self.cols).enumerate() {
            let pi = (i + dr) % self.prows;
            let prow = &buf[pi * self.pcols..(pi + 1) * self.pcols];
            for (j, v) in row.iter_mut().enumerate() {
                *v = prow[(j + dc) % self.pcols];
            }
        }
    }

    /// Forward transform in place on the padded grid `buf` (`[prows, pcols]`, row-major), using
    /// `work` (at least [`Wavelet2::work_len`] long) as scratch; does not allocate.
    ///
    /// # Panics
    /// If `buf.len() != prows·pcols` or `work` is too short.
    pub fn forward_inplace(&self, buf: &mut [C32], work: &mut [C32]) {
        assert_eq!(buf.len(), self.len(), "Wavelet2 buffer length");
        assert!(
            work.len() >= self.work_len(),
            "Wavelet2 work buffer too short"
        );
        let (mut r, mut c) = (self.prows, self.pcols);
        for _ in 0..self.levels {
            // Along columns (axis 1): each of the first r rows, its first c samples.
            for i in 0..r {
                let row = &mut buf[i * self.pcols..i * self.pcols + c];
                self.analyse_row(row, work);
            }
            // Along rows (axis 0): whole-row linear combinations, contiguous.
            self.analyse_cols(buf, r, c, work);
            r /= 2;
            c /= 2;
        }
    }

    /// Inverse (= adjoint) transform in place on the padded grid, the inverse of
    /// [`Wavelet2::forward_inplace`]; does not allocate.
    ///
    /// # Panics
    /// If `buf.len() != prows·pcols` or `work` is too short.
    pub fn inverse_inplace(&self, buf: &mut [C32], work: &mut [C32]) {
        assert_eq!(buf.len(), self.len(), "Wavelet2 buffer length");
        assert!(
            work.len() >= self.work_len(),
            "Wavelet2 work buffer too short"
        );
        for level in (0..self.levels).rev() {
            let (r, c) = (self.prows >> level, self.pcols >> level);
            self.synthesise_cols(buf, r, c, work);
            for i in 0..r {
                let row = &mut buf[i * self.pcols..i * self.pcols + c];
                self.synthesise_row(row, work);
            }
        }
    }

    /// Coefficients `[prows, pcols]` of image `x` (`[rows, cols]`), zero-padded.
    pub fn forward(&self, x: ArrayView2<C32>) -> Result<Array2<C32>> {
        if x.dim() != (self.rows, self.cols) {
            return Err(ReconError::shape(
                "wavelet input",
                &[self.rows, self.cols],
                x.shape(),
            ));
        }
        let xs: Vec<C32> = x.iter().copied().collect();
        let mut buf = vec![C32::new(0.0, 0.0); self.len()];
        let mut work = vec![C32::new(0.0, 0.0); self.work_len()];
        self.pad(&xs, &mut buf, (0, 0));
        self.forward_inplace(&mut buf, &mut work);
        Array2::from_shape_vec((self.prows, self.pcols), buf)
            .map_err(|e| ReconError::param("shape", e.to_string()))
    }

    /// Image `[rows, cols]` from coefficients `[prows, pcols]`: `P^H W^H c`.
    pub fn inverse(&self, coefs: ArrayView2<C32>) -> Result<Array2<C32>> {
        if coefs.dim() != (self.prows, self.pcols) {
            return Err(ReconError::shape(
                "wavelet coefficients",
                &[self.prows, self.pcols],
                coefs.shape(),
            ));
        }
        let mut buf: Vec<C32> = coefs.iter().copied().collect();
        let mut work = vec![C32::new(0.0, 0.0); self.work_len()];
        self.inverse_inplace(&mut buf, &mut work);
        let mut x = vec![C32::new(0.0, 0.0); self.rows * self.cols];
        self.crop(&buf, &mut x, (0, 0));
        Array2::from_shape_vec((self.rows, self.cols), x)
            .map_err(|e| ReconError::param("shape", e.to_string()))
    }

    /// Whether padded-grid index `(i, j)` lies in the coarsest approximation band.
    pub fn is_approx(&self, i: usize, j: usize) -> bool {
        let [ar, ac] = self.approx_shape();
        i < ar && j < ac
    }

    /// One 1-D analysis step of a contiguous even-length row, in place (low half then high).
    fn analyse_row(&self, row: &mut [C32], work: &mut [C32]) {
        let n = row.len();
        let f = self.lo.len();
        let o = f / 2;
        let (ext, rest) = work.split_at_mut(n + f);
        // ext[t] = x[(t + o − (F−1)) mod n]
        for (t, e) in ext.iter_mut().enumerate() {
            *e = row[(t + o + f * n - (f - 1)) % n];
        }
        let half = n / 2;
        let out = &mut rest[..n];
        for k in 0..half {
            let seg = &ext[2 * k..2 * k + f];
            let (mut a, mut d) = (C32::new(0.0, 0.0), C32::new(0.0, 0.0));
            for ((s, &l), &h) in seg.iter().zip(&self.lo_rev).zip(&self.hi_rev) {
                a += s * l;
                d += s * h;
            }
            out[k] = a;
            out[half + k] = d;
        }
        row.copy_from_slice(out);
    }

    /// One 1-D synthesis step of a contiguous row `[a | d]`, in place.
    fn synthesise_row(&self, row: &mut [C32], work: &mut [C32]) {
        let n = row.len();
        let f = self.lo.len();
        let o = f / 2;
        let half = n / 2;
        let ext = &mut work[..n + f];
        ext.fill(C32::new(0.0, 0.0));
        for k in 0..half {
            let (a, d) = (row[k], row[half + k]);
            let seg = &mut ext[2 * k..2 * k + f];
            for ((s, &l), &h) in seg.iter_mut().zip(&self.lo_rev).zip(&self.hi_rev) {
                *s += a * l + d * h;
            }
        }
        row.fill(C32::new(0.0, 0.0));
        for (t, e) in ext.iter().enumerate() {
            row[(t + o + f * n - (f - 1)) % n] += *e;
        }
    }

    /// Analysis along axis 0 of the top-left `[r, c]` block of `buf` (row stride `pcols`).
    fn analyse_cols(&self, buf: &mut [C32], r: usize, c: usize, work: &mut [C32]) {
        let f = self.lo.len();
        let o = f / 2;
        let pc = self.pcols;
        let half = r / 2;
        let tmp = &mut work[..r * c];
        tmp.fill(C32::new(0.0, 0.0));
        for k in 0..half {
            for j in 0..f {
                let src = (2 * k + o + f * r - j) % r;
                let srow = &buf[src * pc..src * pc + c];
                let (l, h) = (self.lo[j], self.hi[j]);
                let (lo_part, hi_part) = tmp.split_at_mut(half * c);
                let lrow = &mut lo_part[k * c..(k + 1) * c];
                for (d, s) in lrow.iter_mut().zip(srow) {
                    *d += s * l;
                }
                let hrow = &mut hi_part[k * c..(k + 1) * c];
                for (d, s) in hrow.iter_mut().zip(srow) {
                    *d += s * h;
                }
            }
        }
        for i in 0..r {
            buf[i * pc..i * pc + c].copy_from_slice(&tmp[i * c..(i + 1) * c]);
        }
    }

    /// Synthesis along axis 0 of the top-left `[r, c]` block of `buf` (row stride `pcols`).
    fn synthesise_cols(&self, buf: &mut [C32], r: usize, c: usize, work: &mut [C32]) {
        let f = self.lo.len();
        let o = f / 2;
        let pc = self.pcols;
        let half = r / 2;
        let tmp = &mut work[..r * c];
        tmp.fill(C32::new(0.0, 0.0));
        for k in 0..half {
            let arow = &buf[k * pc..k * pc + c];
            let drow = &buf[(half + k) * pc..(half + k) * pc + c];
            for j in 0..f {
                let dst = (2 * k + o + f * r - j) % r;
                let (l, h) = (self.lo[j], self.hi[j]);
                let out = &mut tmp[dst * c..(dst + 1) * c];
                for ((d, a), b) in out.iter_mut().zip(arow).zip(drow) {
                    *d += a * l + b * h;
                }
            }
        }
        for i in 0..r {
            buf[i * pc..i * pc + c].copy_from_slice(&tmp[i * c..(i + 1) * c]);
        }
    }
}

/// Which wavelet ℓ1 penalty an l1-wavelet reconstruction uses (see [`crate::prox`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum WaveletDef {
    /// [`WaveletDef::Bart`] on k-space data, [`WaveletDef::Orthonormal`] on image-domain
    /// (inpainting) data, where BART has no counterpart and penalising the coarsest band darkens
    /// the unmeasured pixels (see docs/benchmarks.md); [`WaveletDef::Bart`] for a bare operator.
    #[default]
    Auto,
    /// BART v0.8's `pics -l1`: [`BartWavelet2`] (redundant, symmetric boundary, bands down to
    /// 16 samples, every coefficient thresholded, shifts up to `2^(levels+1)`);
    /// [`crate::prox::BartL1Wavelet`].
    Bart,
    /// amri's orthonormal periodic [`Wavelet2`] (coarsest band ≥ 16 samples and not penalised,
    /// shifts below `2^levels`); [`crate::prox::L1Wavelet`], the exact prox for a fixed shift.
    Orthonormal,
}

impl fmt::Display for WaveletDef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            WaveletDef::Auto => "auto",
            WaveletDef::Bart => "bart",
            WaveletDef::Orthonormal => "orthonormal",
        })
    }
}

impl FromStr for WaveletDef {
    type Err = ReconError;

    /// Parses `auto`, `bart` or `orthonormal` (case-insensitive).
    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(WaveletDef::Auto),
            "bart" => Ok(WaveletDef::Bart),
            "orthonormal" => Ok(WaveletDef::Orthonormal),
            _ => Err(ReconError::param(
                "wavelet definition",
                format!("expected auto, bart or orthonormal, got `{s}`"),
            )),
        }
    }
}

/// Smallest band BART's `pics -l1` decomposes further: an axis is transformed again while its
/// band is at least `min(size, 16)` long (`minsize` in BART's `src/grecon/optreg.c`).
pub const BART_MIN_BAND: usize = 16;

/// One level of [`BartWavelet2`]: the approximation block `[r, c]` it transforms and whether it
/// transforms along rows (axis 0) and columns (axis 1); bands are `(n + F − 1) / 2` long.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct BartLevel {
    r: usize,
    c: usize,
    along_rows: bool,
    along_cols: bool,
}

impl BartLevel {
    /// Output block `[or, oc]`: the low halves first along each transformed axis.
    fn out_shape(&self, f: usize) -> (usize, usize) {
        let b = |n: usize, on: bool| if on { 2 * ((n + f - 1) / 2) } else { n };
        (b(self.r, self.along_rows), b(self.c, self.along_cols))
    }

    /// The low-low block `[lr, lc]` (the next level's input).
    fn low_shape(&self, f: usize) -> (usize, usize) {
        let b = |n: usize, on: bool| if on { (n + f - 1) / 2 } else { n };
        (b(self.r, self.along_rows), b(self.c, self.along_cols))
    }
}

/// BART v0.8's multi-level 2-D wavelet transform (`src/wavelet/wavelet.c`, the one behind
/// `pics -l1` and `bart wavelet`), for `[rows, cols]` images: a redundant frame, not an
/// orthonormal basis.
///
/// # Convention
/// One 1-D analysis step of a length-`n` signal with decomposition filters `h`, `g` of length
/// `F` (PyWavelets' `dec_lo` / `dec_hi`, the same numbers as BART's `wavelet_dau2[0]`) gives
/// bands of length `b = (n + F − 1) / 2` (integer division):
///
/// ```text
/// a[j] = Σ_m h[m] x[e(2j + 1 − m)],   d[j] = Σ_m g[m] x[e(2j + 1 − m)],   j < b,
/// e(t) = −t − 1 for t < 0,   2n − 1 − t for t ≥ n   (half-sample symmetric extension)
/// ```
///
/// and the synthesis step is the transpose of the analysis *without* the extension,
/// `x[t] = Σ_{2j+1−m = t} (h[m] a[j] + g[m] d[j])`; since every sample's full filter support is
/// covered by the `b` coefficients, synthesis after analysis is the identity (perfect
/// reconstruction), but the two are not adjoint (`‖W x‖ ≠ ‖x‖` near the edges).
///
/// The levels (BART's `fwt2` recursion): level 1 transforms the image along both axes (each
/// axis of length ≥ `F`); every next level transforms the low-low block along those axes whose
/// band from the previous level is still at least `min(size, 16)` ([`BART_MIN_BAND`]), and the
/// recursion stops when no axis is left. A 256 × 256 image has 5 levels (bands 129, 66, 34, 18,
/// 10), and its coarsest approximation is 10 × 10. The coefficients are laid out level by
/// level, finest first, each level's block `[or, oc]` in row-major order without its low-low
/// block, then the coarsest approximation: a different order from BART's, the same values.
///
/// Before the analysis the image is circularly shifted by `(dr, dc)`
/// (`y[(i + dr) mod rows, (j + dc) mod cols] = x[i, j]`), and the synthesis shifts back, as
/// BART's random cycle spinning does.
#[derive(Clone, Debug)]
pub struct BartWavelet2 {
    rows: usize,
    cols: usize,
    wavelet: Wavelet,
    levels: Vec<BartLevel>,
    lo: Vec<f32>,
    hi: Vec<f32>,
    len: usize,
}

impl BartWavelet2 {
    /// Plans BART's transform of `[rows, cols]` images with `wavelet` (BART's `pics -l1` uses
    /// [`Wavelet::Db2`]); errors on an empty image.
    pub fn new(rows: usize, cols: usize, wavelet: Wavelet) -> Result<Self> {
        if rows == 0 || cols == 0 {
            return Err(ReconError::param(
                "shape",
                format!("wavelet transform of an empty image [{rows}, {cols}]"),
            ));
        }
        let f = wavelet.taps();
        let band = |n: usize| (n + f - 1) / 2;
        let (min_r, min_c) = (rows.min(BART_MIN_BAND), cols.min(BART_MIN_BAND));
        // Level 1 transforms every axis long enough to shrink; later levels continue along an
        // axis while its band stays ≥ min(size, 16) (and still shrinks).
        let mut on = (rows >= f && rows >= 3, cols >= f && cols >= 3);
        let (mut r, mut c) = (rows, cols);
        let mut levels = Vec::new();
        let mut len = 0;
        while on.0 || on.1 {
            let lvl = BartLevel {
                r,
                c,
                along_rows: on.0,
                along_cols: on.1,
            };
            let (or, oc) = lvl.out_shape(f);
            let (lr, lc) = lvl.low_shape(f);
            len += or * oc - lr * lc;
            levels.push(lvl);
            if on.0 {
                on.0 = band(r) >= min_r && band(band(r)) < band(r);
                r = band(r);
            }
            if on.1 {
                on.1 = band(c) >= min_c && band(band(c)) < band(c);
                c = band(c);
            }
        }
        len += r * c;
        let h = wavelet.dec_lo();
        let g = wavelet.dec_hi();
        Ok(Self {
            rows,
            cols,
            wavelet,
            levels,
            lo: h.iter().map(|&v| v as f32).collect(),
            hi: g.iter().map(|&v| v as f32).collect(),
            len,
        })
    }

    /// Image shape `[rows, cols]`.
    pub fn shape(&self) -> [usize; 2] {
        [self.rows, self.cols]
    }

    /// The wavelet used.
    pub fn wavelet(&self) -> Wavelet {
        self.wavelet
    }

    /// Number of decomposition levels (5 for 256 × 256 with [`Wavelet::Db2`]).
    pub fn levels(&self) -> usize {
        self.levels.len()
    }

    /// Number of coefficients (more than `rows·cols`: the frame is redundant).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Always false (empty images are rejected by [`BartWavelet2::new`]).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Shape of the coarsest approximation (the last `r·c` coefficients).
    pub fn approx_shape(&self) -> [usize; 2] {
        match self.levels.last() {
            Some(l) => {
                let (r, c) = l.low_shape(self.lo.len());
                [r, c]
            }
            None => [self.rows, self.cols],
        }
    }

    /// The largest random shift along (rows, cols) that BART's cycle spinning draws:
    /// `2^(k+1)` with `k` the number of levels that transform that axis (BART's
    /// `wavelet_num_levels` of the axis alone), at most `size − 1`; shifts are uniform on
    /// `0..=max`.
    pub fn max_shift(&self) -> (usize, usize) {
        let kr = self.levels.iter().filter(|l| l.along_rows).count();
        let kc = self.levels.iter().filter(|l| l.along_cols).count();
        let lim = |k: usize, n: usize| (1usize << (k + 1).min(30)).min(n.saturating_sub(1));
        (lim(kr, self.rows), lim(kc, self.cols))
    }

    /// Length of the work buffer that [`BartWavelet2::forward`] and [`BartWavelet2::inverse`]
    /// need.
    pub fn work_len(&self) -> usize {
        let (or, oc) = match self.levels.first() {
            Some(l) => l.out_shape(self.lo.len()),
            None => (self.rows, self.cols),
        };
        2 * or.max(self.rows) * oc.max(self.cols)
    }

    /// Coefficients of image `x` (`[rows, cols]` row-major) shifted by `shift`, into `coefs`
    /// (length [`BartWavelet2::len`]), using `work` (at least [`BartWavelet2::work_len`]).
    ///
    /// # Panics
    /// On a wrong `x`, `coefs` or `work` length.
    pub fn forward(&self, x: &[C32], shift: (usize, usize), coefs: &mut [C32], work: &mut [C32]) {
        assert_eq!(x.len(), self.rows * self.cols, "BartWavelet2 image length");
        assert_eq!(coefs.len(), self.len, "BartWavelet2 coefficient length");
        assert!(work.len() >= self.work_len(), "BartWavelet2 work too short");
        let half = work.len() / 2;
        let a = &mut work[..half];
        let (dr, dc) = (shift.0 % self.rows, shift.1 % self.cols);
        for (i, row) in x.chunks_exact(self.cols).enumerate() {
            let pi = (i + dr) % self.rows;
            let arow = &mut a[pi * self.cols..(pi + 1) * self.cols];
            for (j, v) in row.iter().enumerate() {
                arow[(j + dc) % self.cols] = *v;
            }
        }
        self.forward_levels(work, coefs);
    }

    fn forward_levels(&self, work: &mut [C32], coefs: &mut [C32]) {
        let f = self.lo.len();
        let half = work.len() / 2;
        let (a, b) = work.split_at_mut(half);
        let mut pos = 0;
        for lvl in &self.levels {
            let (r, c) = (lvl.r, lvl.c);
            let (or, oc) = lvl.out_shape(f);
            let (lr, lc) = lvl.low_shape(f);
            // a holds [r, c]; along columns into b as [r, oc].
            if lvl.along_cols {
                let bc = oc / 2;
                for i in 0..r {
                    let src = &a[i * c..(i + 1) * c];
                    let dst = &mut b[i * oc..(i + 1) * oc];
                    for j in 0..bc {
                        let (mut lo, mut hi) = (C32::new(0.0, 0.0), C32::new(0.0, 0.0));
                        for (m, (&h, &g)) in self.lo.iter().zip(&self.hi).enumerate() {
                            let v = src[sym(2 * j as isize + 1 - m as isize, c)];
                            lo += v * h;
                            hi += v * g;
                        }
                        dst[j] = lo;
                        dst[bc + j] = hi;
                    }
                }
            } else {
                b[..r * c].copy_from_slice(&a[..r * c]);
            }
            // b holds [r, oc]; along rows into a as [or, oc].
            if lvl.along_rows {
                let br = or / 2;
                a[..or * oc].fill(C32::new(0.0, 0.0));
                for k in 0..br {
                    for (m, (&h, &g)) in self.lo.iter().zip(&self.hi).enumerate() {
                        let s = sym(2 * k as isize + 1 - m as isize, r);
                        let (top, bot) = a.split_at_mut((br + k) * oc);
                        let lrow = &mut top[k * oc..(k + 1) * oc];
                        let hrow = &mut bot[..oc];
                        let srow = &b[s * oc..(s + 1) * oc];
                        for ((l, hh), v) in lrow.iter_mut().zip(hrow.iter_mut()).zip(srow) {
                            *l += v * h;
                            *hh += v * g;
                        }
                    }
                }
            } else {
                a[..or * oc].copy_from_slice(&b[..or * oc]);
            }
            // Emit all but the low-low block; the low-low block becomes the next input.
            for i in 0..or {
                let row = &a[i * oc..(i + 1) * oc];
                let start = if i < lr { lc } else { 0 };
                let n = oc - start;
                coefs[pos..pos + n].copy_from_slice(&row[start..]);
                pos += n;
            }
            for i in 0..lr {
                let (src, dst) = (i * oc, i * lc);
                a.copy_within(src..src + lc, dst);
            }
        }
        let [ar, ac] = self.approx_shape();
        coefs[pos..pos + ar * ac].copy_from_slice(&a[..ar * ac]);
        debug_assert_eq!(pos + ar * ac, self.len);
    }

    /// Image `x` (`[rows, cols]`) from coefficients `coefs`: synthesis level by level, coarsest
    /// first, then the shift back (see the type docs).
    ///
    /// # Panics
    /// On a wrong `x`, `coefs` or `work` length.
    pub fn inverse(&self, coefs: &[C32], shift: (usize, usize), x: &mut [C32], work: &mut [C32]) {
        assert_eq!(x.len(), self.rows * self.cols, "BartWavelet2 image length");
        assert_eq!(coefs.len(), self.len, "BartWavelet2 coefficient length");
        assert!(work.len() >= self.work_len(), "BartWavelet2 work too short");
        let f = self.lo.len();
        let half = work.len() / 2;
        let (a, b) = work.split_at_mut(half);
        let [ar, ac] = self.approx_shape();
        let mut pos = self.len - ar * ac;
        // a holds the current approximation [lr, lc].
        a[..ar * ac].copy_from_slice(&coefs[pos..]);
        for lvl in self.levels.iter().rev() {
            let (r, c) = (lvl.r, lvl.c);
            let (or, oc) = lvl.out_shape(f);
            let (lr, lc) = lvl.low_shape(f);
            let n_lvl = or * oc - lr * lc;
            pos -= n_lvl;
            // Assemble the block [or, oc] in b: low-low from a, the rest from coefs.
            let mut p = pos;
            for i in 0..or {
                let row = &mut b[i * oc..(i + 1) * oc];
                let start = if i < lr {
                    row[..lc].copy_from_slice(&a[i * lc..(i + 1) * lc]);
                    lc
                } else {
                    0
                };
                let n = oc - start;
                row[start..].copy_from_slice(&coefs[p..p + n]);
                p += n;
            }
            // Along rows: b [or, oc] -> a [r, oc].
            if lvl.along_rows {
                let br = or / 2;
                a[..r * oc].fill(C32::new(0.0, 0.0));
                for k in 0..br {
                    for (m, (&h, &g)) in self.lo.iter().zip(&self.hi).enumerate() {
                        let t = 2 * k as isize + 1 - m as isize;
                        if t < 0 || t >= r as isize {
                            continue;
                        }
                        let t = t as usize;
                        let (lrow, hrow) = (
                            &b[k * oc..(k + 1) * oc],
                            &b[(br + k) * oc..(br + k + 1) * oc],
                        );
                        let out = &mut a[t * oc..(t + 1) * oc];
                        for ((o, l), hh) in out.iter_mut().zip(lrow).zip(hrow) {
                            *o += l * h + hh * g;
                        }
                    }
                }
            } else {
                a[..r * oc].copy_from_slice(&b[..r * oc]);
            }
            // Along columns: a [r, oc] -> b [r, c], then back to a.
            if lvl.along_cols {
                let bc = oc / 2;
                for i in 0..r {
                    let src = &a[i * oc..(i + 1) * oc];
                    let dst = &mut b[i * c..(i + 1) * c];
                    dst.fill(C32::new(0.0, 0.0));
                    for j in 0..bc {
                        let (lo, hi) = (src[j], src[bc + j]);
                        for (m, (&h, &g)) in self.lo.iter().zip(&self.hi).enumerate() {
                            let t = 2 * j as isize + 1 - m as isize;
                            if t >= 0 && (t as usize) < c {
                                dst[t as usize] += lo * h + hi * g;
                            }
                        }
                    }
                }
                a[..r * c].copy_from_slice(&b[..r * c]);
            }
        }
        debug_assert_eq!(pos, 0);
        let (dr, dc) = (shift.0 % self.rows, shift.1 % self.cols);
        for i in 0..self.rows {
            let pi = (i + dr) % self.rows;
            for j in 0..self.cols {
                x[i * self.cols + j] = a[pi * self.cols + (j + dc) % self.cols];
            }
        }
    }
}

/// Half-sample symmetric extension of index `t` into `0..n` (BART's `coord`, one reflection).
#[inline]
fn sym(t: isize, n: usize) -> usize {
    let n = n as isize;
    let t = if t < 0 { -t - 1 } else { t };
    let t = if t >= n { 2 * n - 1 - t } else { t };
    t.clamp(0, n - 1) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rand_image(r: usize, c: usize, seed: u64) -> Array2<C32> {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        Array2::from_shape_fn((r, c), |_| {
            C32::new(rng.random_range(-1.0..1.0), rng.random_range(-1.0..1.0))
        })
    }

    #[test]
    fn filters_are_orthonormal_quadrature_mirrors() {
        for w in Wavelet::ALL {
            let h = w.dec_lo();
            let g = w.dec_hi();
            let f = h.len();
            assert_eq!(f, w.taps());
            // Σ h = √2, Σ g = 0, and double-shift orthonormality of h and g.
            assert!((h.iter().sum::<f64>() - 2f64.sqrt()).abs() < 1e-12, "{w}");
            assert!(g.iter().sum::<f64>().abs() < 1e-12, "{w}");
            for s in (0..f).step_by(2) {
                let hh: f64 = (0..f - s).map(|j| h[j] * h[j + s]).sum();
                let gg: f64 = (0..f - s).map(|j| g[j] * g[j + s]).sum();
                let want = if s == 0 { 1.0 } else { 0.0 };
                assert!((hh - want).abs() < 1e-12, "{w} shift {s}: {hh}");
                assert!((gg - want).abs() < 1e-12, "{w} shift {s}: {gg}");
            }
            for s in (0..f).step_by(2) {
                let hg: f64 = (0..f - s).map(|j| h[j] * g[j + s]).sum();
                let gh: f64 = (0..f - s).map(|j| g[j] * h[j + s]).sum();
                assert!(hg.abs() < 1e-12 && gh.abs() < 1e-12, "{w} shift {s}");
            }
        }
    }

    #[test]
    fn parse_and_name_round_trip() {
        for w in Wavelet::ALL {
            assert_eq!(w.name().parse::<Wavelet>().unwrap(), w);
        }
        assert_eq!("HAAR".parse::<Wavelet>().unwrap(), Wavelet::Haar);
        assert!("db9".parse::<Wavelet>().is_err());
        assert!("sym4".parse::<Wavelet>().is_err());
    }

    #[test]
    fn default_levels_follow_bart_minsize() {
        assert_eq!(default_levels(256, 256), 4);
        assert_eq!(default_levels(320, 256), 4);
        assert_eq!(default_levels(32, 40), 1);
        assert_eq!(default_levels(8, 8), 1);
        assert_eq!(default_levels(1, 8), 0);
    }

    #[test]
    fn odd_sizes_are_isometric_and_perfectly_reconstructed() {
        for (r, c, lev) in [(13, 10, 2), (7, 9, 3), (31, 17, 1), (5, 64, 4), (1, 6, 1)] {
            for w in [Wavelet::Haar, Wavelet::Db2, Wavelet::Db4, Wavelet::Db8] {
                let t = Wavelet2::new(r, c, w, Some(lev)).unwrap();
                let x = rand_image(r, c, (r * 31 + c) as u64);
                let co = t.forward(x.view()).unwrap();
                let nx: f64 = x.iter().map(|v| v.norm_sqr() as f64).sum();
                let nc: f64 = co.iter().map(|v| v.norm_sqr() as f64).sum();
                assert!((nx - nc).abs() < 1e-4 * nx, "{w} {r}x{c}: {nx} vs {nc}");
                let back = t.inverse(co.view()).unwrap();
                for (a, b) in back.iter().zip(x.iter()) {
                    assert!((a - b).norm() < 1e-4, "{w} {r}x{c}");
                }
            }
        }
    }

    #[test]
    fn padded_transform_is_unitary() {
        // W W^H = I on the padded grid: synthesis then analysis of arbitrary coefficients.
        let t = Wavelet2::new(12, 20, Wavelet::Db3, Some(2)).unwrap();
        let c = rand_image(12, 20, 5);
        let mut buf: Vec<C32> = c.iter().copied().collect();
        let mut work = vec![C32::new(0.0, 0.0); t.work_len()];
        t.inverse_inplace(&mut buf, &mut work);
        t.forward_inplace(&mut buf, &mut work);
        for (a, b) in buf.iter().zip(c.iter()) {
            assert!((a - b).norm() < 1e-5);
        }
    }

    #[test]
    fn haar_one_level_matches_hand_computation() {
        // A 2x2 block [[a, b], [c, d]]; with PyWavelets' g = [−1/√2, 1/√2] the 1-D detail is
        // d[k] = (x[2k] − x[2k+1])/√2.
        let x = Array2::from_shape_vec(
            (2, 2),
            vec![
                C32::new(1.0, 0.0),
                C32::new(2.0, 0.0),
                C32::new(3.0, 0.0),
                C32::new(5.0, 0.0),
            ],
        )
        .unwrap();
        let t = Wavelet2::new(2, 2, Wavelet::Haar, Some(1)).unwrap();
        let c = t.forward(x.view()).unwrap();
        let (a, b, cc, d) = (1.0f32, 2.0f32, 3.0f32, 5.0f32);
        assert!((c[[0, 0]].re - (a + b + cc + d) / 2.0).abs() < 1e-6);
        // cV: detail along columns, approx along rows.
        assert!((c[[0, 1]].re - ((a - b) + (cc - d)) / 2.0).abs() < 1e-6);
        // cH: detail along rows.
        assert!((c[[1, 0]].re - ((a - cc) + (b - d)) / 2.0).abs() < 1e-6);
        assert!((c[[1, 1]].re - (a - b - cc + d) / 2.0).abs() < 1e-6);
    }

    #[test]
    fn shifted_pad_and_crop_are_adjoint_inverse() {
        let t = Wavelet2::new(5, 7, Wavelet::Db2, Some(2)).unwrap();
        let x = rand_image(5, 7, 9);
        let xs: Vec<C32> = x.iter().copied().collect();
        let mut buf = vec![C32::new(0.0, 0.0); t.len()];
        let mut y = vec![C32::new(0.0, 0.0); 35];
        t.pad(&xs, &mut buf, (3, 6));
        t.crop(&buf, &mut y, (3, 6));
        assert_eq!(xs, y);
    }

    #[test]
    fn bart_levels_follow_bart_minsize() {
        // BART's bands (n + 3) / 2 for db2: 256 → 129 → 66 → 34 → 18 → 10.
        let w = BartWavelet2::new(256, 256, Wavelet::Db2).unwrap();
        assert_eq!(w.levels(), 5);
        assert_eq!(w.approx_shape(), [10, 10]);
        assert_eq!(w.max_shift(), (64, 64));
        // 320 → 161 → 82 → 42 → 22 → 12 rows, 64 → 33 → 18 → 10 columns (3 levels).
        let w = BartWavelet2::new(320, 64, Wavelet::Db2).unwrap();
        assert_eq!(w.levels(), 5);
        assert_eq!(w.approx_shape(), [12, 10]);
        assert_eq!(w.max_shift(), (64, 16));
        assert!(BartWavelet2::new(0, 8, Wavelet::Db2).is_err());
    }

    #[test]
    fn bart_transform_reconstructs_perfectly() {
        for (r, c) in [(256, 256), (13, 10), (31, 17), (64, 48), (3, 40), (1, 9)] {
            for w in [Wavelet::Haar, Wavelet::Db2, Wavelet::Db4] {
                let t = BartWavelet2::new(r, c, w).unwrap();
                let x: Vec<C32> = rand_image(r, c, (r * 7 + c) as u64)
                    .iter()
                    .copied()
                    .collect();
                let mut co = vec![C32::new(0.0, 0.0); t.len()];
                let mut work = vec![C32::new(0.0, 0.0); t.work_len()];
                let shift = (r / 3, c / 2);
                t.forward(&x, shift, &mut co, &mut work);
                assert!(t.len() >= r * c);
                let mut back = vec![C32::new(0.0, 0.0); r * c];
                t.inverse(&co, shift, &mut back, &mut work);
                for (a, b) in back.iter().zip(&x) {
                    assert!((a - b).norm() < 1e-4, "{w} {r}x{c}");
                }
            }
        }
    }

    #[test]
    fn bad_shapes_are_errors() {
        assert!(Wavelet2::new(0, 4, Wavelet::Haar, None).is_err());
        let t = Wavelet2::new(4, 4, Wavelet::Haar, Some(1)).unwrap();
        assert!(t.forward(Array2::zeros((3, 4)).view()).is_err());
        assert!(t.inverse(Array2::zeros((3, 4)).view()).is_err());
    }
}

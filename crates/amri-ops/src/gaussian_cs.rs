//! Gaussian compressed sensing: `y = A x` with a dense random `m × n` matrix, i.i.d. entries of
//! variance `1/m` (so `E[A^H A] = I`), `x` of any shape flattened in C order to `n` values.
//!
//! Row `i` of the matrix is generated from `(seed, i)` alone (a ChaCha8 stream per row), so the
//! matrix is never stored when large: each apply regenerates rows on the fly, in parallel.
//! Small matrices (≤ [`STORE_MAX_ENTRIES`] entries with [`Storage::Auto`]) are stored once.
//! Because rows are addressed by index, dropping rows ([`GaussianCs::select_rows`]) gives
//! exactly `B·A` for a row-selection `B`, as ambient training needs.

use amri_core::C32;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::{OpsError, Result};
use crate::linop::{assert_len, numel, LinearOperator};

/// With [`Storage::Auto`], matrices with at most this many entries (32 MiB) are stored.
pub const STORE_MAX_ENTRIES: usize = 1 << 22;

/// Entry distribution of the projection matrix.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Entries {
    /// Real entries `N(0, 1/m)`.
    #[default]
    Real,
    /// Circular complex entries with real and imaginary parts `N(0, 1/(2m))`, so `E|a|² = 1/m`.
    Complex,
}

/// Whether the matrix is kept in memory or regenerated at each apply.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Storage {
    /// Store when `m·n ≤ STORE_MAX_ENTRIES`, otherwise generate on the fly.
    #[default]
    Auto,
    /// Always store the matrix (`8·m·n` bytes).
    Stored,
    /// Never store; regenerate rows at every apply (no memory, more compute).
    OnTheFly,
}

/// A seeded Gaussian random projection `C^ishape → C^[m]` (see module docs).
#[derive(Clone, Debug)]
pub struct GaussianCs {
    ishape: Vec<usize>,
    oshape: [usize; 1],
    n: usize,
    scale: f32,
    variance_m: usize,
    seed: u64,
    entries: Entries,
    rows: Vec<u64>,
    stored: Option<Vec<C32>>,
}

impl GaussianCs {
    /// An `m × numel(ishape)` projection with `entries` drawn from `seed`.
    pub fn new(
        m: usize,
        ishape: &[usize],
        entries: Entries,
        seed: u64,
        storage: Storage,
    ) -> Result<Self> {
        let n = numel(ishape);
        if n == 0 {
            return Err(OpsError::param(
                "ishape",
                format!("input must be non-empty, got {ishape:?}"),
            ));
        }
        if m == 0 {
            return Err(OpsError::param("m", "number of measurements must be ≥ 1"));
        }
        let mut op = Self {
            ishape: ishape.to_vec(),
            oshape: [m],
            n,
            scale: 0.0,
            variance_m: m,
            seed,
            entries,
            rows: (0..m as u64).collect(),
            stored: None,
        };
        op.scale = match entries {
            Entries::Real => (1.0 / m as f64).sqrt() as f32,
            Entries::Complex => (0.5 / m as f64).sqrt() as f32,
        };
        op.set_storage(storage);
        Ok(op)
    }

    fn set_storage(&mut self, storage: Storage) {
        let entries = self.rows.len().saturating_mul(self.n);
        let store = match storage {
            Storage::Auto => entries <= STORE_MAX_ENTRIES,
            Storage::Stored => true,
            Storage::OnTheFly => false,
        };
        self.stored = store.then(|| {
            let mut a = vec![C32::new(0.0, 0.0); entries];
            a.par_chunks_mut(self.n)
                .zip(self.rows.par_iter())
                .for_each(|(row, id)| {
                    self.row_iter(*id)
                        .zip(row.iter_mut())
                        .for_each(|(v, o)| *o = v)
                });
            a
        });
    }

    /// The entries of generator row `id`, in column order.
    fn row_iter(&self, id: u64) -> impl Iterator<Item = C32> + '_ {
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
        rng.set_stream(id);
        let s = self.scale;
        let complex = self.entries == Entries::Complex;
        (0..self.n).map(move |_| {
            let re: f32 = StandardNormal.sample(&mut rng);
            let im: f32 = if complex {
                StandardNormal.sample(&mut rng)
            } else {
                0.0
            };
            C32::new(re * s, im * s)
        })
    }

    /// Number of measurements (rows currently in the operator).
    pub fn m(&self) -> usize {
        self.rows.len()
    }

    /// The generator row ids of the rows in this operator (`0..m` for a fresh one).
    pub fn row_ids(&self) -> &[u64] {
        &self.rows
    }

    /// Whether the matrix is held in memory.
    pub fn is_stored(&self) -> bool {
        self.stored.is_some()
    }

    /// `B·A`: the operator keeping rows `keep` (indices into `0..m`, in the given order, no
    /// duplicates) with identical entries; the variance stays `1/m` of the original.
    pub fn select_rows(&self, keep: &[usize]) -> Result<Self> {
        let m = self.m();
        let mut seen = vec![false; m];
        for &k in keep {
            if k >= m || seen[k] {
                return Err(OpsError::param(
                    "keep",
                    format!("row indices must be distinct and < {m}, got {k}"),
                ));
            }
            seen[k] = true;
        }
        let stored = self.stored.as_ref().map(|a| {
            keep.iter()
                .flat_map(|&k| a[k * self.n..(k + 1) * self.n].iter().copied())
                .collect()
        });
        Ok(Self {
            ishape: self.ishape.clone(),
            oshape: [keep.len()],
            n: self.n,
            scale: self.scale,
            variance_m: self.variance_m,
            seed: self.seed,
            entries: self.entries,
            rows: keep.iter().map(|&k| self.rows[k]).collect(),
            stored,
        })
    }

    /// The `m` that sets the entry variance `1/m` (the original row count).
    pub fn variance_m(&self) -> usize {
        self.variance_m
    }
}

/// Columns per rayon task in the stored adjoint.
const COL_CHUNK: usize = 512;

impl LinearOperator for GaussianCs {
    fn ishape(&self) -> &[usize] {
        &self.ishape
    }
    fn oshape(&self) -> &[usize] {
        &self.oshape
    }
    fn forward(&self, x: &[C32], y: &mut [C32]) {
        assert_len("GaussianCs input", self.n, x.len());
        assert_len("GaussianCs output", self.m(), y.len());
        match &self.stored {
            Some(a) => y
                .par_iter_mut()
                .zip(a.par_chunks(self.n))
                .for_each(|(yv, row)| {
                    *yv = row.iter().zip(x).map(|(a, b)| a * b).sum();
                }),
            None => y
                .par_iter_mut()
                .zip(self.rows.par_iter())
                .for_each(|(yv, id)| {
                    *yv = self.row_iter(*id).zip(x).map(|(a, b)| a * b).sum();
                }),
        }
    }
    fn adjoint(&self, y: &[C32], x: &mut [C32]) {
        assert_len("GaussianCs adjoint input", self.m(), y.len());
        assert_len("GaussianCs adjoint output", self.n, x.len());
        let n = self.n;
        match &self.stored {
            Some(a) => x.par_chunks_mut(COL_CHUNK).enumerate().for_each(|(k, xc)| {
                let off = k * COL_CHUNK;
                xc.fill(C32::new(0.0, 0.0));
                for (i, yv) in y.iter().enumerate() {
                    let row = &a[i * n + off..i * n + off + xc.len()];
                    for (xv, av) in xc.iter_mut().zip(row) {
                        *xv += av.conj() * yv;
                    }
                }
            }),
            None => {
                // One accumulator per rayon task (not per call of a stored matrix): rows are
                // regenerated, so this path trades memory for compute by design.
                let acc = self
                    .rows
                    .par_iter()
                    .zip(y.par_iter())
                    .fold(
                        || vec![C32::new(0.0, 0.0); n],
                        |mut acc, (id, yv)| {
                            for (a, v) in acc.iter_mut().zip(self.row_iter(*id)) {
                                *a += v.conj() * yv;
                            }
                            acc
                        },
                    )
                    .reduce(
                        || vec![C32::new(0.0, 0.0); n],
                        |mut a, b| {
                            a.iter_mut().zip(&b).for_each(|(u, v)| *u += v);
                            a
                        },
                    );
                x.copy_from_slice(&acc);
            }
        }
    }
    fn name(&self) -> String {
        format!("GaussianCs({}×{}, {:?})", self.m(), self.n, self.entries)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_and_on_the_fly_agree_and_rows_select_exactly() {
        let a = GaussianCs::new(7, &[3, 4], Entries::Complex, 11, Storage::Stored).unwrap();
        let b = GaussianCs::new(7, &[3, 4], Entries::Complex, 11, Storage::OnTheFly).unwrap();
        assert!(a.is_stored() && !b.is_stored());
        let x: Vec<C32> = (0..12)
            .map(|i| C32::new(i as f32 * 0.1, 1.0 - i as f32 * 0.2))
            .collect();
        let (mut ya, mut yb) = (vec![C32::default(); 7], vec![C32::default(); 7]);
        a.forward(&x, &mut ya);
        b.forward(&x, &mut yb);
        for (u, v) in ya.iter().zip(&yb) {
            assert!((u - v).norm() < 1e-5);
        }
        let sel = b.select_rows(&[5, 1]).unwrap();
        let mut ys = vec![C32::default(); 2];
        sel.forward(&x, &mut ys);
        assert!((ys[0] - ya[5]).norm() < 1e-5 && (ys[1] - ya[1]).norm() < 1e-5);
        assert!(a.select_rows(&[1, 1]).is_err());
        assert!(a.select_rows(&[7]).is_err());
    }

    #[test]
    fn entries_have_variance_one_over_m() {
        for entries in [Entries::Real, Entries::Complex] {
            let m = 50;
            let a = GaussianCs::new(m, &[400], entries, 3, Storage::Stored).unwrap();
            let s = a.stored.as_ref().unwrap();
            let var = s.iter().map(|v| v.norm_sqr() as f64).sum::<f64>() / s.len() as f64;
            // 20000 samples: relative std of the variance estimate ≈ sqrt(2/20000) = 1 %.
            assert!((var * m as f64 - 1.0).abs() < 0.05, "{entries:?}: {var}");
            let imag = s.iter().map(|v| v.im.abs()).sum::<f32>();
            assert_eq!(imag == 0.0, entries == Entries::Real);
        }
    }

    #[test]
    fn invalid_sizes_are_errors() {
        assert!(GaussianCs::new(0, &[4], Entries::Real, 0, Storage::Auto).is_err());
        assert!(GaussianCs::new(3, &[0, 4], Entries::Real, 0, Storage::Auto).is_err());
    }
}

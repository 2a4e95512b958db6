//! An on-disk cache of the ESPIRiT coil maps that training from measured multi-coil files
//! estimates from each scan's calibration (ACS) region ([`crate::data::acs_maps`]).
//!
//! **Key.** One file per scan, named by the SHA-256 ([`cache_key`]) of a format tag, the
//! k-space shape `[coils, rows, cols]`, the calibration rectangle, every ESPIRiT parameter
//! (kernel, calibration limit, threshold, crop, phase rotation) and the bits of the k-space
//! samples inside the calibration rectangle, in the units training sees them (after the file's
//! intensity scale). ESPIRiT reads nothing else, so a changed file (or a changed scale, which
//! depends on every slice of the file), ACS or setting gives another key and the maps are
//! computed again; stale entries are never read, only left behind.
//!
//! **File.** `<key>.maps`: the 8 bytes `AMRIMAP1`, `coils`, `rows`, `cols` as little-endian
//! `u64`, the maps `[coil, row, col]` as little-endian `f32` pairs (re, im), then the 64 ASCII
//! hex digits of the SHA-256 of everything before them. It is written atomically
//! ([`crate::checkpoint::write_atomic`]: temporary file, `fsync`, rename). A file that is
//! truncated, of another shape, or fails its checksum is reported in [`MapsCache::notes`],
//! counted as [`CacheStats::corrupt`], recomputed and rewritten, never trusted and never a panic.
//! A cache that cannot be written (read-only folder) is noted and training goes on.
//!
//! **Where.** `amri train` keeps it in the run's output folder (`<out>/espirit-cache/`), so
//! `--resume` and a rerun into the same folder skip ESPIRiT; deleting the folder is always safe.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use amri_core::C32;
use amri_ops::espirit::{AcsRegion, EspiritConfig};
use ndarray::{s, Array3, ArrayView3};

use crate::checkpoint::write_atomic;
use crate::error::Result;
use crate::sample::sha256_hex;

/// Leading bytes of a cache file (format version 1).
pub const MAGIC: &[u8; 8] = b"AMRIMAP1";
/// Name of the cache folder inside a training run's output folder.
pub const RUN_DIR: &str = "espirit-cache";
/// Extension of cache files.
pub const EXTENSION: &str = "maps";

/// What a [`MapsCache`] did so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Maps read from a valid cache file (ESPIRiT skipped).
    pub hits: usize,
    /// Maps computed because no file had their key.
    pub misses: usize,
    /// Maps computed because their file was corrupted or truncated (included in neither count).
    pub corrupt: usize,
}

/// A folder of cached coil maps (module docs).
#[derive(Debug)]
pub struct MapsCache {
    dir: PathBuf,
    hits: AtomicUsize,
    misses: AtomicUsize,
    corrupt: AtomicUsize,
    notes: Mutex<Vec<String>>,
}

/// The cache key (hex SHA-256) of ESPIRiT on `kspace` `[coil, row, col]` with calibration
/// rectangle `region` and settings `cfg` (module docs).
pub fn cache_key(kspace: ArrayView3<C32>, region: AcsRegion, cfg: &EspiritConfig) -> String {
    let (nc, rows, cols) = kspace.dim();
    let mut b = Vec::with_capacity(128);
    b.extend_from_slice(b"amri-espirit-maps/1");
    for v in [
        nc,
        rows,
        cols,
        region.start[0],
        region.start[1],
        region.size[0],
        region.size[1],
        cfg.kernel,
        cfg.calib,
    ] {
        b.extend_from_slice(&(v as u64).to_le_bytes());
    }
    b.extend_from_slice(&cfg.threshold.to_bits().to_le_bytes());
    b.extend_from_slice(&cfg.crop.to_bits().to_le_bytes());
    b.push(u8::from(cfg.rotate_phase));
    let [r0, c0] = region.start;
    let r1 = (r0 + region.size[0]).min(rows);
    let c1 = (c0 + region.size[1]).min(cols);
    for v in kspace.slice(s![.., r0.min(r1)..r1, c0.min(c1)..c1]).iter() {
        b.extend_from_slice(&v.re.to_bits().to_le_bytes());
        b.extend_from_slice(&v.im.to_bits().to_le_bytes());
    }
    sha256_hex(&b)
}

/// The bytes of a cache file holding `maps`.
fn encode(maps: &Array3<C32>) -> Vec<u8> {
    let (nc, rows, cols) = maps.dim();
    let mut b = Vec::with_capacity(32 + 8 * maps.len() + 64);
    b.extend_from_slice(MAGIC);
    for v in [nc, rows, cols] {
        b.extend_from_slice(&(v as u64).to_le_bytes());
    }
    for v in maps.iter() {
        b.extend_from_slice(&v.re.to_le_bytes());
        b.extend_from_slice(&v.im.to_le_bytes());
    }
    let sum = sha256_hex(&b);
    b.extend_from_slice(sum.as_bytes());
    b
}

/// The maps in `bytes` if they are a complete, intact cache file of shape `dims`; else why not.
fn decode(bytes: &[u8], dims: (usize, usize, usize)) -> std::result::Result<Array3<C32>, String> {
    let n = dims.0 * dims.1 * dims.2;
    let want = 32 + 8 * n + 64;
    if bytes.len() != want {
        return Err(format!(
            "{} bytes, a [{}, {}, {}] map file has {want} (truncated or of another shape)",
            bytes.len(),
            dims.0,
            dims.1,
            dims.2
        ));
    }
    let (body, sum) = bytes.split_at(want - 64);
    if sha256_hex(body).as_bytes() != sum {
        return Err("checksum mismatch (the file is corrupted)".into());
    }
    if &body[..8] != MAGIC {
        return Err("not an amri coil-map cache file".into());
    }
    let word = |i: usize| {
        let mut w = [0u8; 8];
        w.copy_from_slice(&body[8 + 8 * i..16 + 8 * i]);
        u64::from_le_bytes(w)
    };
    let found = (word(0), word(1), word(2));
    if found != (dims.0 as u64, dims.1 as u64, dims.2 as u64) {
        return Err(format!("holds maps of shape {found:?}, expected {dims:?}"));
    }
    let f = |o: usize| {
        let mut w = [0u8; 4];
        w.copy_from_slice(&body[o..o + 4]);
        f32::from_le_bytes(w)
    };
    let data: Vec<C32> = (0..n)
        .map(|i| C32::new(f(32 + 8 * i), f(36 + 8 * i)))
        .collect();
    Array3::from_shape_vec(dims, data).map_err(|e| e.to_string())
}

impl MapsCache {
    /// A cache in the folder `dir` (created when the first maps are written).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            hits: AtomicUsize::new(0),
            misses: AtomicUsize::new(0),
            corrupt: AtomicUsize::new(0),
            notes: Mutex::new(Vec::new()),
        }
    }

    /// The cache folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The cache file of `key`.
    pub fn path_of(&self, key: &str) -> PathBuf {
        self.dir.join(format!("{key}.{EXTENSION}"))
    }

    /// Hits, misses and corrupted files so far.
    pub fn stats(&self) -> CacheStats {
        CacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            corrupt: self.corrupt.load(Ordering::Relaxed),
        }
    }

    /// Messages about corrupted files recomputed and writes that failed (for the caller's log).
    pub fn notes(&self) -> Vec<String> {
        self.notes
            .lock()
            .map(|n| n.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    fn note(&self, msg: String) {
        match self.notes.lock() {
            Ok(mut n) => n.push(msg),
            Err(p) => p.into_inner().push(msg),
        }
    }

    /// The maps of ESPIRiT on `kspace` with `region` and `cfg`: from the cache file of their key
    /// when it is intact, else `compute()`d and written to the cache.
    pub fn maps(
        &self,
        kspace: ArrayView3<C32>,
        region: AcsRegion,
        cfg: &EspiritConfig,
        compute: impl FnOnce() -> Result<Array3<C32>>,
    ) -> Result<Array3<C32>> {
        let key = cache_key(kspace, region, cfg);
        let path = self.path_of(&key);
        match std::fs::read(&path) {
            Ok(bytes) => match decode(&bytes, kspace.dim()) {
                Ok(maps) => {
                    self.hits.fetch_add(1, Ordering::Relaxed);
                    return Ok(maps);
                }
                Err(why) => {
                    self.corrupt.fetch_add(1, Ordering::Relaxed);
                    self.note(format!(
                        "{}: {why}; recomputing these coil maps",
                        path.display()
                    ));
                }
            },
            Err(_) => {
                self.misses.fetch_add(1, Ordering::Relaxed);
            }
        }
        let maps = compute()?;
        let written = std::fs::create_dir_all(&self.dir)
            .map_err(|e| format!("{}: {e}", self.dir.display()))
            .and_then(|()| write_atomic(&path, &encode(&maps)).map_err(|e| e.to_string()));
        if let Err(e) = written {
            self.note(format!("cannot write the coil-map cache: {e}"));
        }
        Ok(maps)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn region() -> AcsRegion {
        AcsRegion {
            start: [2, 2],
            size: [4, 4],
        }
    }

    fn kspace(v: f32) -> Array3<C32> {
        Array3::from_shape_fn((2, 8, 8), |(c, r, k)| {
            C32::new(v + (c * 64 + r * 8 + k) as f32, 0.5)
        })
    }

    /// `slices` slices of 4-coil 32×32 k-space of a disc (intensity `1 + bump`), each slice
    /// its own line mask with 8 centre (ACS) lines; unmeasured samples 0.
    fn multicoil(slices: usize, bump: f32) -> amri_core::KSpace {
        use amri_core::fft::fft2c;
        let (n, coils) = (32, 4);
        let maps = amri_ops::coils::synthetic_maps(coils, n, n, Some(1));
        let mut data = ndarray::Array4::zeros((slices, coils, n, n));
        let mut mask = Array3::zeros((slices, n, n));
        for sl in 0..slices {
            let m = ndarray::Array2::from_shape_fn((n, n), |(_, j)| {
                f32::from(u8::from((12..20).contains(&j) || j % (3 + sl) == 0))
            });
            let x = ndarray::Array2::from_shape_fn((n, n), |(i, j)| {
                let (u, v) = (i as f32 / 32.0 - 0.5, j as f32 / 32.0 - 0.5);
                let a = if u * u + v * v < 0.12 {
                    1.0 + bump + 0.3 * u
                } else {
                    0.05
                };
                C32::from_polar(a, 2.0 * v)
            });
            for c in 0..coils {
                let y = fft2c(&(&x * &maps.index_axis(ndarray::Axis(0), c)))
                    * m.mapv(|v| C32::new(v, 0.0));
                data.slice_mut(s![sl, c, .., ..]).assign(&y);
            }
            mask.slice_mut(s![sl, .., ..]).assign(&m);
        }
        let mut k = amri_core::KSpace::new(data);
        k.mask = Some(mask);
        k
    }

    fn bits(d: &crate::measured::TrainingData) -> Vec<u32> {
        (0..3)
            .flat_map(
                |step| match d.step_batch(2, 1, step, &candle_core::Device::Cpu).unwrap() {
                    crate::batch::Batch::AmbientMulticoil {
                        y,
                        maps,
                        mask_a,
                        mask_tilde,
                    } => [y, maps, mask_a, mask_tilde]
                        .iter()
                        .flat_map(|t| t.flatten_all().unwrap().to_vec1::<f32>().unwrap())
                        .map(f32::to_bits)
                        .collect::<Vec<_>>(),
                    _ => panic!("expected a multi-coil batch"),
                },
            )
            .collect()
    }

    /// A second build reads every scan's maps from the cache and gives the same training batches
    /// bit for bit; damaged files are detected, recomputed and rewritten; another input misses.
    #[test]
    fn a_rerun_reads_the_cache_damage_is_recomputed_and_a_changed_input_misses() {
        use crate::measured::{MeasuredFile, TrainingData};
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("espirit-cache");
        let further = crate::data::FurtherParams {
            delta: 0.3,
            mode: amri_ops::corruption::FurtherMode::PerStep,
            seed: 4,
        };
        let file = MeasuredFile::new("mc.npz", multicoil(2, 0.0)).unwrap();
        let build = |f: &MeasuredFile| {
            let cache = MapsCache::new(&dir);
            let d =
                TrainingData::from_measured_cached(std::slice::from_ref(f), further, Some(&cache))
                    .unwrap();
            (bits(&d), cache.stats(), cache.notes())
        };
        let plain =
            bits(&TrainingData::from_measured(std::slice::from_ref(&file), further).unwrap());
        let (first, stats, _) = build(&file);
        assert_eq!(
            stats,
            CacheStats {
                hits: 0,
                misses: 2,
                corrupt: 0
            }
        );
        assert_eq!(first, plain);
        let (second, stats, notes) = build(&file);
        assert_eq!(
            stats,
            CacheStats {
                hits: 2,
                misses: 0,
                corrupt: 0
            }
        );
        assert!(notes.is_empty(), "{notes:?}");
        assert_eq!(second, plain);
        // damage both files: one bit flipped in the maps, one cut short
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        assert_eq!(files.len(), 2, "{files:?}");
        let mut b = std::fs::read(&files[0]).unwrap();
        b[100] ^= 0x10;
        std::fs::write(&files[0], &b).unwrap();
        let b = std::fs::read(&files[1]).unwrap();
        std::fs::write(&files[1], &b[..b.len() / 2]).unwrap();
        let (third, stats, notes) = build(&file);
        assert_eq!(
            stats,
            CacheStats {
                hits: 0,
                misses: 0,
                corrupt: 2
            }
        );
        assert_eq!(notes.len(), 2, "{notes:?}");
        assert!(notes.iter().any(|n| n.contains("checksum")), "{notes:?}");
        assert!(notes.iter().any(|n| n.contains("truncated")), "{notes:?}");
        assert_eq!(third, plain);
        // rewritten intact
        let (_, stats, _) = build(&file);
        assert_eq!(
            stats,
            CacheStats {
                hits: 2,
                misses: 0,
                corrupt: 0
            }
        );
        // another input (other intensities, so other normalised ACS data) misses
        let changed = MeasuredFile::new("mc.npz", multicoil(2, 0.5)).unwrap();
        let (_, stats, _) = build(&changed);
        assert_eq!(
            stats,
            CacheStats {
                hits: 0,
                misses: 2,
                corrupt: 0
            }
        );
    }

    #[test]
    fn cache_files_round_trip_and_damage_is_detected() {
        let maps = kspace(0.25);
        let b = encode(&maps);
        assert_eq!(decode(&b, (2, 8, 8)), Ok(maps.clone()));
        // truncated, flipped bit, wrong shape: each refused with a reason
        assert!(decode(&b[..b.len() - 1], (2, 8, 8)).is_err());
        let mut flipped = b.clone();
        flipped[40] ^= 1;
        assert!(decode(&flipped, (2, 8, 8))
            .err()
            .is_some_and(|e| e.contains("checksum")));
        assert!(decode(&b, (1, 8, 8)).is_err());
    }

    #[test]
    fn the_key_follows_the_calibration_data_and_every_setting_only() {
        let cfg = EspiritConfig::default();
        let k = kspace(1.0);
        let key = cache_key(k.view(), region(), &cfg);
        // a sample outside the calibration rectangle does not change it
        let mut outside = k.clone();
        outside[[0, 0, 0]] = C32::new(9.0, 9.0);
        assert_eq!(cache_key(outside.view(), region(), &cfg), key);
        // one inside does, and so does each setting
        let mut inside = k.clone();
        inside[[1, 3, 3]].im += 1e-6;
        assert_ne!(cache_key(inside.view(), region(), &cfg), key);
        for other in [
            EspiritConfig { kernel: 5, ..cfg },
            EspiritConfig { calib: 20, ..cfg },
            EspiritConfig {
                threshold: 0.002,
                ..cfg
            },
            EspiritConfig { crop: 0.0, ..cfg },
            EspiritConfig {
                rotate_phase: false,
                ..cfg
            },
        ] {
            assert_ne!(cache_key(k.view(), region(), &other), key);
        }
        let moved = AcsRegion {
            start: [3, 2],
            size: [4, 4],
        };
        assert_ne!(cache_key(k.view(), moved, &cfg), key);
    }
}

//! Helpers shared by the integration tests: fixture readers and small synthetic scans.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use amri_core::fft::Fft2;
use amri_core::{KSpace, C32};
use ndarray::{Array2, Array3, Array4};

/// Path of a file under tests/fixtures.
pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// Reads a BART .hdr/.cfl pair: the dims and the samples in file (Fortran) order.
pub fn read_cfl(base: &Path) -> (Vec<usize>, Vec<C32>) {
    let hdr = std::fs::read_to_string(base.with_extension("hdr")).expect("hdr");
    let dims: Vec<usize> = hdr
        .lines()
        .skip_while(|l| !l.starts_with("# Dimensions"))
        .nth(1)
        .expect("dims line")
        .split_whitespace()
        .map(|t| t.parse().expect("dim"))
        .collect();
    let raw = std::fs::read(base.with_extension("cfl")).expect("cfl");
    let vals: Vec<C32> = raw
        .chunks_exact(8)
        .map(|b| {
            C32::new(
                f32::from_le_bytes([b[0], b[1], b[2], b[3]]),
                f32::from_le_bytes([b[4], b[5], b[6], b[7]]),
            )
        })
        .collect();
    assert_eq!(vals.len(), dims.iter().product::<usize>());
    (dims, vals)
}

/// A piecewise-constant complex test image `[rows, cols]`: ellipses of different intensities
/// with a smooth phase.
pub fn phantom(rows: usize, cols: usize) -> Array2<C32> {
    Array2::from_shape_fn((rows, cols), |(i, j)| {
        let y = (i as f32 - rows as f32 / 2.0) / (rows as f32 / 2.0);
        let x = (j as f32 - cols as f32 / 2.0) / (cols as f32 / 2.0);
        let mut v = 0.0;
        if (x / 0.8).powi(2) + (y / 0.9).powi(2) < 1.0 {
            v += 1.0;
        }
        if ((x - 0.2) / 0.3).powi(2) + ((y + 0.1) / 0.4).powi(2) < 1.0 {
            v -= 0.5;
        }
        if ((x + 0.35) / 0.15).powi(2) + ((y - 0.3) / 0.2).powi(2) < 1.0 {
            v += 0.7;
        }
        let ph = 0.6 * x - 0.3 * y;
        C32::from_polar(v, ph)
    })
}

/// Simulates a scan `[1, coils, rows, cols]` of `img` with `maps` (or one coil without maps)
/// and a `[rows, cols]` mask; the mask is stored in the KSpace.
pub fn simulate(img: &Array2<C32>, maps: Option<&Array3<C32>>, mask: &Array2<f32>) -> KSpace {
    let (r, c) = img.dim();
    let coils = maps.map_or(1, |m| m.dim().0);
    let fft = Fft2::new(r, c);
    let mut data = Array4::<C32>::zeros((1, coils, r, c));
    for k in 0..coils {
        let mut buf: Vec<C32> = match maps {
            Some(m) => img
                .indexed_iter()
                .map(|((i, j), v)| v * m[[k, i, j]])
                .collect(),
            None => img.iter().copied().collect(),
        };
        fft.forward(&mut buf);
        for (idx, v) in buf.into_iter().enumerate() {
            let (i, j) = (idx / c, idx % c);
            data[[0, k, i, j]] = v * mask[[i, j]];
        }
    }
    let mut ks = KSpace::new(data);
    ks.mask = Some(mask.clone().insert_axis(ndarray::Axis(0)));
    ks
}

/// A Cartesian mask sampling every `r`-th column plus `acs` centre columns.
pub fn column_mask(rows: usize, cols: usize, r: usize, acs: usize) -> Array2<f32> {
    Array2::from_shape_fn((rows, cols), |(_, j)| {
        let centre = j + acs / 2 >= cols / 2 && j < cols / 2 + acs - acs / 2;
        if j % r == 0 || centre {
            1.0
        } else {
            0.0
        }
    })
}

/// Relative ℓ2 error `‖a − b‖ / ‖b‖`.
pub fn rel_err(a: &[C32], b: &[C32]) -> f64 {
    let num: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| (x - y).norm_sqr() as f64)
        .sum();
    let den: f64 = b.iter().map(|y| y.norm_sqr() as f64).sum();
    (num / den).sqrt()
}

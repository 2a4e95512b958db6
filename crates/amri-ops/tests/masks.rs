//! Mask generator tests: fastMRI arithmetic against a numpy transcription of
//! fastmri/data/subsample.py (tests/fixtures/fastmri_masks.txt), sampling statistics, and the
//! Poisson-disc properties (acceleration, calibration box, minimum distance, reproducibility).
#![allow(clippy::unwrap_used)]

use amri_ops::masks::cartesian::{
    cartesian_lines, cartesian_mask, center_lines, random_line_probability,
};
use amri_ops::masks::poisson::{poisson_mask, PoissonParams};
use amri_ops::masks::KspacePattern;

fn fixture() -> String {
    let path = format!(
        "{}/tests/fixtures/fastmri_masks.txt",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read_to_string(path).unwrap()
}

#[test]
fn fastmri_fixture_centre_probability_and_equispaced_lines() {
    let text = fixture();
    let mut checked = 0;
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        let n: usize = f[1].parse().unwrap();
        let cf: f64 = f[2].parse().unwrap();
        match f[0] {
            "center" => {
                let (lo, hi): (usize, usize) = (f[3].parse().unwrap(), f[4].parse().unwrap());
                assert_eq!(center_lines(n, cf).unwrap(), lo..hi, "{line}");
            }
            "prob" => {
                let acc: f64 = f[3].parse().unwrap();
                let p: f64 = f[4].parse().unwrap();
                assert!(
                    (random_line_probability(n, acc, cf).unwrap() - p).abs() < 1e-10,
                    "{line}"
                );
            }
            "equispaced" | "fraction" => {
                let acc: f64 = f[3].parse().unwrap();
                let off: usize = f[4].parse().unwrap();
                let want: Vec<usize> = f[5].split(',').map(|v| v.parse().unwrap()).collect();
                let pattern = if f[0] == "equispaced" {
                    KspacePattern::Equispaced
                } else {
                    KspacePattern::EquispacedFraction
                };
                let (lines, _) = cartesian_lines(n, pattern, acc, cf, 0, Some(off)).unwrap();
                let got: Vec<usize> = (0..n).filter(|k| lines[*k]).collect();
                assert_eq!(got, want, "{line}");
            }
            other => panic!("unknown fixture line {other}"),
        }
        checked += 1;
    }
    assert_eq!(checked, 28);
}

#[test]
fn random_mask_has_the_fastmri_expected_line_count() {
    // Lines = centre ∪ {k : u_k < p}: E[#lines] = n_low + p·(n − n_low), which fastMRI's p makes
    // exactly n/R.
    let (n, acc, cf) = (368usize, 4.0, 0.08);
    let p = random_line_probability(n, acc, cf).unwrap();
    let n_low = center_lines(n, cf).unwrap().len();
    let expect = n_low as f64 + p * (n - n_low) as f64;
    assert!((expect - n as f64 / acc).abs() < 1e-9);
    let trials = 400;
    let mean = (0..trials)
        .map(|s| {
            let (l, _) = cartesian_lines(n, KspacePattern::Random, acc, cf, s, None).unwrap();
            l.iter().filter(|v| **v).count() as f64
        })
        .sum::<f64>()
        / trials as f64;
    // Std of one count ≈ sqrt(339·p(1−p)) ≈ 7.2; of the mean over 400 ≈ 0.36; 5 sigma.
    assert!((mean - expect).abs() < 1.8, "mean {mean} vs {expect}");
}

#[test]
fn cartesian_masks_are_seeded_and_follow_the_axis() {
    let a = cartesian_mask(20, 30, 1, KspacePattern::Random, 4.0, 0.1, 5).unwrap();
    let b = cartesian_mask(20, 30, 1, KspacePattern::Random, 4.0, 0.1, 5).unwrap();
    assert_eq!(a, b);
    let differs = (6..20)
        .any(|s| cartesian_mask(20, 30, 1, KspacePattern::Random, 4.0, 0.1, s).unwrap() != a);
    assert!(differs);
    // axis = 1: whole columns; every row equals the line pattern.
    for row in a.mask.rows() {
        for (j, v) in row.iter().enumerate() {
            assert_eq!(*v == 1.0, a.lines[j]);
        }
    }
    for k in a.acs.clone() {
        assert!(a.lines[k]);
    }
    let r = cartesian_mask(20, 30, 0, KspacePattern::Equispaced, 2.0, 0.2, 1).unwrap();
    assert_eq!(r.lines.len(), 20);
    for col in r.mask.columns() {
        for (i, v) in col.iter().enumerate() {
            assert_eq!(*v == 1.0, r.lines[i]);
        }
    }
    let count = r.lines.iter().filter(|v| **v).count();
    assert!((r.acceleration - 20.0 / count as f64).abs() < 1e-12);
}

fn poisson_params(acc: f64, calib: usize) -> PoissonParams {
    PoissonParams {
        acceleration: acc,
        calib: [calib, calib],
        ..Default::default()
    }
}

#[test]
fn poisson_reaches_target_with_calibration_and_min_distance() {
    // Samples whose radii exceed 1.5 pixels on both axes, where the distance property is not
    // implied by the integer grid alone.
    let mut big = 0;
    for (rows, cols, acc, calib, seed) in [
        (64, 64, 4.0, 12, 0),
        (80, 60, 6.0, 16, 3),
        (48, 72, 3.0, 8, 9),
    ] {
        let p = poisson_mask(rows, cols, &poisson_params(acc, calib), seed).unwrap();
        let count = p.mask.iter().filter(|v| **v == 1.0).count();
        assert!(p.mask.iter().all(|v| *v == 0.0 || *v == 1.0));
        let achieved = (rows * cols) as f64 / count as f64;
        assert!((achieved - p.acceleration).abs() < 1e-12);
        assert!(
            (achieved - acc).abs() < 0.1,
            "{rows}x{cols} R={acc}: got {achieved}"
        );
        assert_eq!(p.calib_rows.len(), calib);
        assert_eq!(p.calib_cols.len(), calib);
        for i in p.calib_rows.clone() {
            for j in p.calib_cols.clone() {
                assert_eq!(p.mask[[i, j]], 1.0);
            }
        }
        // Minimum distance: for any two samples outside the calibration box, the later one was
        // accepted only if the earlier lay outside its ellipse, so at least one of the two
        // normalised distances is ≥ 1.
        let [ry, rx] = &p.radii;
        let pts: Vec<(usize, usize)> = p
            .mask
            .indexed_iter()
            .filter(|((i, j), v)| {
                **v == 1.0 && !(p.calib_rows.contains(i) && p.calib_cols.contains(j))
            })
            .map(|(ij, _)| ij)
            .collect();
        assert!(pts.len() > 20);
        for (a, &(i1, j1)) in pts.iter().enumerate() {
            for &(i2, j2) in &pts[a + 1..] {
                let (dy, dx) = (i1 as f64 - i2 as f64, j1 as f64 - j2 as f64);
                let d1 = (dy / ry[[i1, j1]]).powi(2) + (dx / rx[[i1, j1]]).powi(2);
                let d2 = (dy / ry[[i2, j2]]).powi(2) + (dx / rx[[i2, j2]]).powi(2);
                assert!(d1.max(d2) >= 1.0 - 1e-12, "({i1},{j1}) ({i2},{j2})");
            }
        }
        big += pts
            .iter()
            .filter(|(i, j)| ry[[*i, *j]].min(rx[[*i, *j]]) > 1.5)
            .count();
    }
    assert!(big > 100, "only {big} samples with radii > 1.5");
}

#[test]
fn poisson_is_reproducible_and_variable_density() {
    let a = poisson_mask(64, 64, &poisson_params(5.0, 10), 7).unwrap();
    let b = poisson_mask(64, 64, &poisson_params(5.0, 10), 7).unwrap();
    assert_eq!(a, b);
    let c = poisson_mask(64, 64, &poisson_params(5.0, 10), 8).unwrap();
    assert_ne!(a.mask, c.mask);
    // Density falls with distance from the centre: compare an inner ring with an outer ring.
    let density = |lo: f64, hi: f64| {
        let (mut n, mut k) = (0usize, 0usize);
        for ((i, j), v) in a.mask.indexed_iter() {
            let r = ((i as f64 - 32.0).powi(2) + (j as f64 - 32.0).powi(2)).sqrt();
            if r >= lo && r < hi {
                n += 1;
                k += (*v == 1.0) as usize;
            }
        }
        k as f64 / n as f64
    };
    assert!(density(6.0, 12.0) > 1.5 * density(22.0, 30.0));
    // Corners (r ≥ 1 in normalised units) are cropped.
    assert_eq!(a.mask[[0, 0]], 0.0);
    assert_eq!(a.mask[[63, 63]], 0.0);
}

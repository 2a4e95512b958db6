//! ESPIRiT and coil helpers against BART (`ecalib -m1` on a BART phantom, fixtures made by
//! tests/fixtures/espirit/make_fixtures.sh) and against known synthetic sensitivities.

use std::path::PathBuf;

use amri_core::fft::{fft2c, ifft2c};
use amri_core::C32;
use amri_ops::coils::{coil_combine, rss, smooth_phase, synthetic_maps};
use amri_ops::espirit::{
    acs_region_from_mask, acs_size_from_mask, espirit, espirit_maps, espirit_with_region,
    AcsRegion, EspiritConfig,
};
use ndarray::{s, Array2, Array3, ArrayView1, Axis};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("tests/fixtures/espirit/{name}"))
}

/// Reads a BART cfl/hdr pair: the dimensions (d0 fastest) and the complex float32 samples.
fn read_cfl(name: &str) -> (Vec<usize>, Vec<C32>) {
    let hdr = std::fs::read_to_string(fixture(&format!("{name}.hdr"))).expect("hdr");
    let mut lines = hdr.lines();
    let mut dims = Vec::new();
    while let Some(line) = lines.next() {
        if line.starts_with("# Dimensions") {
            dims = lines
                .next()
                .expect("dims line")
                .split_whitespace()
                .map(|t| t.parse().expect("integer dim"))
                .collect();
            break;
        }
    }
    let bytes = std::fs::read(fixture(&format!("{name}.cfl"))).expect("cfl");
    let data: Vec<C32> = bytes
        .chunks_exact(8)
        .map(|b| {
            C32::new(
                f32::from_le_bytes([b[0], b[1], b[2], b[3]]),
                f32::from_le_bytes([b[4], b[5], b[6], b[7]]),
            )
        })
        .collect();
    assert_eq!(data.len(), dims.iter().product::<usize>());
    (dims, data)
}

/// A BART `[d0 = row, d1 = col, 1, d3 = coil]` array as amri `[coil, row, col]`.
fn bart_to_amri(name: &str) -> Array3<C32> {
    let (d, data) = read_cfl(name);
    assert_eq!(d[2], 1);
    let (rows, cols, coils) = (d[0], d[1], d[3]);
    Array3::from_shape_fn((coils, rows, cols), |(c, i, j)| {
        data[i + rows * (j + cols * c)]
    })
}

fn bart_image(name: &str) -> Array2<f32> {
    bart_to_amri(name).index_axis(Axis(0), 0).mapv(|v| v.re)
}

fn norm(v: ArrayView1<C32>) -> f32 {
    v.iter().map(|z| z.norm_sqr()).sum::<f32>().sqrt()
}

/// `|<a, b>| / (‖a‖‖b‖)`: 1 when the two coil vectors agree up to a global phase.
fn phase_free_similarity(a: ArrayView1<C32>, b: ArrayView1<C32>) -> f32 {
    let ip: C32 = a.iter().zip(b.iter()).map(|(x, y)| x.conj() * y).sum();
    ip.norm() / (norm(a) * norm(b))
}

fn coil_vec(maps: &Array3<C32>, i: usize, j: usize) -> ArrayView1<'_, C32> {
    maps.slice(s![.., i, j])
}

/// Object support of the phantom: RSS above 10% of its maximum.
fn support(img_rss: &Array2<f32>) -> Array2<bool> {
    let max = img_rss.iter().cloned().fold(0.0, f32::max);
    img_rss.mapv(|v| v > 0.1 * max)
}

#[test]
fn cfl_axis_mapping_and_rss_match_bart() {
    let k = bart_to_amri("kspace");
    let ours = rss(ifft2c(&k).view());
    let theirs = bart_image("rss");
    let max = theirs.iter().cloned().fold(0.0, f32::max);
    for (a, b) in ours.iter().zip(theirs.iter()) {
        assert!((a - b).abs() < 1e-4 * max, "{a} vs {b}");
    }
}

#[test]
fn maps_match_bart_ecalib_on_phantom() {
    let k = bart_to_amri("kspace");
    let bart = bart_to_amri("maps");
    let bart_eig = bart_image("eigen");
    let est = espirit(k.view(), &EspiritConfig::default()).expect("espirit");
    assert_eq!(
        est.region,
        AcsRegion {
            start: [12, 12],
            size: [24, 24]
        }
    );
    // BART (`ecalib -d4`) reports "Using 47/288 kernels".
    assert_eq!(est.kernels, 47);
    assert_eq!(est.singular_values.len(), 288);

    let (_, rows, cols) = k.dim();
    let obj = support(&rss(ifft2c(&k).view()));
    let (mut sim_sum, mut n_both, mut same_crop, mut eig_err, mut phase_ok) =
        (0.0f64, 0usize, 0usize, 0.0f64, 0usize);
    for i in 0..rows {
        for j in 0..cols {
            let a = coil_vec(&est.maps, i, j);
            let b = coil_vec(&bart, i, j);
            let (ka, kb) = (norm(a) > 0.0, norm(b) > 0.0);
            same_crop += usize::from(ka == kb);
            eig_err += f64::from((est.eigenvalues[[i, j]] - bart_eig[[i, j]]).abs());
            if ka && kb && obj[[i, j]] {
                n_both += 1;
                sim_sum += f64::from(phase_free_similarity(a, b));
                let ip: C32 = a.iter().zip(b.iter()).map(|(x, y)| x.conj() * y).sum();
                phase_ok += usize::from(ip.arg().abs() < 0.1);
            }
        }
    }
    let npix = (rows * cols) as f64;
    let mean_sim = sim_sum / n_both as f64;
    eprintln!(
        "pixels compared {n_both}, mean similarity {mean_sim:.5}, crop agreement {:.4}, \
         mean |Δλ| {:.5}, phase within 0.1 rad {:.4}",
        same_crop as f64 / npix,
        eig_err / npix,
        phase_ok as f64 / n_both as f64
    );
    assert!(n_both > 500, "only {n_both} object pixels with maps");
    assert!(mean_sim >= 0.98, "mean similarity {mean_sim}");
    assert!(same_crop as f64 / npix > 0.97);
    assert!(eig_err / npix < 0.02);
    // The phase reference (first principal component of the ACS data) matches BART's too.
    assert!(phase_ok as f64 / n_both as f64 > 0.95);
}

#[test]
fn maps_reproduce_phantom_coil_images_on_support() {
    let k = bart_to_amri("kspace");
    let x = ifft2c(&k);
    let maps = espirit_maps(k.view(), &EspiritConfig::default()).expect("espirit");
    let obj = support(&rss(x.view()));
    let combined = coil_combine(x.view(), maps.view()).expect("shapes");
    let (_, rows, cols) = x.dim();
    let (mut err, mut tot) = (0.0f64, 0.0f64);
    for i in 0..rows {
        for j in 0..cols {
            if !obj[[i, j]] {
                continue;
            }
            let s = coil_vec(&maps, i, j);
            assert!(norm(s) > 0.99, "map cropped inside the object at ({i},{j})");
            for c in 0..s.len() {
                // S Sᴴ x, with Sᴴ x the SENSE combination.
                let proj = s[c] * combined[[i, j]];
                err += f64::from((proj - x[[c, i, j]]).norm_sqr());
                tot += f64::from(x[[c, i, j]].norm_sqr());
            }
        }
    }
    let rel = (err / tot).sqrt();
    eprintln!("‖S Sᴴ x − x‖ / ‖x‖ on the object: {rel:.4}");
    assert!(rel < 0.05, "projection error {rel}");
}

#[test]
fn sense_combination_matches_rss_up_to_smooth_scaling() {
    let k = bart_to_amri("kspace");
    let x = ifft2c(&k);
    let maps = espirit_maps(k.view(), &EspiritConfig::default()).expect("espirit");
    let combined = coil_combine(x.view(), maps.view()).expect("shapes");
    let r = rss(x.view());
    let obj = support(&r);
    let ratios: Vec<f32> = combined
        .iter()
        .zip(r.iter())
        .zip(obj.iter())
        .filter(|(_, &o)| o)
        .map(|((c, r), _)| c.norm() / r)
        .collect();
    let mean = ratios.iter().sum::<f32>() / ratios.len() as f32;
    let min = ratios.iter().cloned().fold(f32::INFINITY, f32::min);
    let max = ratios.iter().cloned().fold(0.0, f32::max);
    eprintln!("|Sᴴx| / RSS on the object: mean {mean:.4}, min {min:.4}, max {max:.4}");
    // |Sᴴ x| ≤ ‖x‖ (Cauchy–Schwarz, ‖S‖ = 1), with equality when x ∝ S.
    assert!(max <= 1.0 + 1e-4);
    assert!(min > 0.9 && mean > 0.98);
}

/// A piecewise-smooth test object: two overlapping ellipses on a background disc.
fn test_object(rows: usize, cols: usize) -> Array2<C32> {
    Array2::from_shape_fn((rows, cols), |(i, j)| {
        let y = (i as f32 - rows as f32 / 2.0) / (rows as f32 / 2.0);
        let x = (j as f32 - cols as f32 / 2.0) / (cols as f32 / 2.0);
        let mut v = 0.0;
        if (x / 0.8).powi(2) + (y / 0.9).powi(2) < 1.0 {
            v += 1.0;
        }
        if ((x - 0.2) / 0.3).powi(2) + ((y + 0.1) / 0.5).powi(2) < 1.0 {
            v -= 0.4;
        }
        if ((x + 0.3) / 0.2).powi(2) + ((y - 0.3) / 0.2).powi(2) < 1.0 {
            v += 0.5;
        }
        C32::new(v, 0.0)
    })
}

#[test]
fn recovers_synthetic_sensitivities() {
    let (rows, cols, coils) = (64, 64, 8);
    let truth = synthetic_maps(coils, rows, cols, Some(4));
    let x = &test_object(rows, cols) * &smooth_phase(rows, cols, 1);
    let coil_images = &truth * &x.view().insert_axis(Axis(0));
    let k = fft2c(&coil_images);
    let est = espirit(k.view(), &EspiritConfig::default()).expect("espirit");
    let (mut worst, mut sum, mut n) = (1.0f32, 0.0f32, 0usize);
    for i in 0..rows {
        for j in 0..cols {
            if x[[i, j]].norm() < 0.3 {
                continue;
            }
            let s = coil_vec(&est.maps, i, j);
            assert!(norm(s) > 0.99, "map cropped inside the object at ({i},{j})");
            let sim = phase_free_similarity(s, coil_vec(&truth, i, j));
            worst = worst.min(sim);
            sum += sim;
            n += 1;
        }
    }
    eprintln!(
        "synthetic maps: mean similarity {:.5}, worst {worst:.5}",
        sum / n as f32
    );
    assert!(sum / n as f32 > 0.995);
    assert!(worst > 0.97);
    // The maps have unit norm where kept and are zero elsewhere.
    for i in 0..rows {
        for j in 0..cols {
            let nrm = norm(coil_vec(&est.maps, i, j));
            assert!(nrm == 0.0 || (nrm - 1.0).abs() < 1e-4);
            assert_eq!(nrm > 0.0, est.eigenvalues[[i, j]] > 0.8);
        }
    }
}

#[test]
fn undersampled_kspace_uses_only_the_acs_region() {
    let full = bart_to_amri("kspace");
    let (_, rows, cols) = full.dim();
    // Columns: every fourth line plus 24 central ACS lines, as a fastMRI-style 1-D mask.
    let mask = Array2::from_shape_fn((rows, cols), |(_, j)| {
        j % 4 == 1 || (cols / 2 - 12..cols / 2 + 12).contains(&j)
    });
    assert_eq!(acs_size_from_mask(mask.view()), [rows, 24]);
    let mut under = full.clone();
    for mut coil in under.outer_iter_mut() {
        ndarray::Zip::from(&mut coil).and(&mask).for_each(|v, &m| {
            if !m {
                *v = C32::new(0.0, 0.0);
            }
        });
    }
    let cfg = EspiritConfig::default();
    let a = espirit(full.view(), &cfg).expect("full");
    let b = espirit(under.view(), &cfg).expect("undersampled");
    let region = acs_region_from_mask(mask.view()).expect("centre sampled");
    let c = espirit_with_region(under.view(), region, &cfg).expect("explicit region");
    assert_eq!(a.region, b.region);
    assert_eq!(b.region, c.region);
    for (x, y) in a.maps.iter().zip(b.maps.iter()) {
        assert!((x - y).norm() < 1e-4);
    }
    for (x, y) in b.maps.iter().zip(c.maps.iter()) {
        assert!((x - y).norm() < 1e-6);
    }
}

#[test]
fn smaller_acs_and_first_coil_phase_reference() {
    let full = bart_to_amri("kspace");
    let cfg = EspiritConfig {
        calib: 16,
        rotate_phase: false,
        ..EspiritConfig::default()
    };
    let est = espirit(full.view(), &cfg).expect("espirit");
    assert_eq!(est.region.size, [16, 16]);
    let mut kept = 0;
    for i in 0..48 {
        for j in 0..48 {
            let s0 = est.maps[[0, i, j]];
            if s0.norm() > 1e-3 {
                kept += 1;
                assert!(
                    s0.im.abs() < 1e-5 && s0.re > 0.0,
                    "coil 0 at ({i},{j}) is {s0}"
                );
            }
        }
    }
    assert!(kept > 500);
}

#[test]
fn bad_inputs_are_errors_not_panics() {
    let k = bart_to_amri("kspace");
    let cfg = EspiritConfig::default();
    // No signal at all.
    let zeros = Array3::<C32>::zeros((4, 32, 32));
    assert!(espirit(zeros.view(), &cfg).is_err());
    // Kernel larger than the ACS region.
    let small = EspiritConfig {
        kernel: 8,
        calib: 6,
        ..cfg
    };
    assert!(espirit(k.view(), &small).is_err());
    let region = AcsRegion {
        start: [22, 22],
        size: [4, 4],
    };
    assert!(espirit_with_region(k.view(), region, &cfg).is_err());
    // Region outside the grid.
    let outside = AcsRegion {
        start: [40, 40],
        size: [24, 24],
    };
    assert!(espirit_with_region(k.view(), outside, &cfg).is_err());
    // Non-finite calibration data.
    let mut nan = k.clone();
    nan[[0, 24, 24]] = C32::new(f32::NAN, 0.0);
    assert!(espirit(nan.view(), &cfg).is_err());
    // Out-of-range parameters.
    for bad in [
        EspiritConfig { crop: 1.5, ..cfg },
        EspiritConfig {
            threshold: -0.1,
            ..cfg
        },
        EspiritConfig { kernel: 0, ..cfg },
    ] {
        assert!(espirit(k.view(), &bad).is_err());
    }
    // Empty input.
    assert!(espirit(Array3::<C32>::zeros((0, 8, 8)).view(), &cfg).is_err());
}

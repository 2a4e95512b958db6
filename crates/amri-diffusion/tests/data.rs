//! Training batches follow the corruption model exactly: masks are amri-ops' A and Ã (Ã ⊆ A),
//! ambient tensors equal A ⊙ x (or M ⊙ F x), nothing outside A leaks, draws are seeded.

use amri_core::fft::fft2c;
use amri_core::C32;
use amri_diffusion::data::{
    abs_percentile, batch_indices, normalise_volume, TrainObjective, TrainingSet, NORM_PERCENTILE,
};
use amri_diffusion::train::{Batch, Objective};
use amri_diffusion::{DiffusionError, Result};
use amri_ops::corruption::Corruption;
use amri_ops::simulate::Acquisition;
use candle_core::{Device, Tensor};
use ndarray::Array2;

const R: usize = 16;
const C: usize = 16;

fn acq(json: serde_json::Value) -> Result<Acquisition> {
    Ok(serde_json::from_value(json)?)
}

/// Smooth positive phantoms, different per slice, normalised to max 1.
fn slices(n: usize) -> Vec<Array2<f32>> {
    (0..n)
        .map(|k| {
            Array2::from_shape_fn((R, C), |(i, j)| {
                let (y, x) = (i as f32 / R as f32 - 0.5, j as f32 / C as f32 - 0.5);
                let r2 = x * x + y * y;
                (1.0 - 2.0 * r2) * (0.6 + 0.4 * ((k as f32 + 1.0) * 3.0 * x).cos())
            })
        })
        .collect()
}

/// A batch tensor `[n][c][h][w]`.
type Nchw = Vec<Vec<Vec<Vec<f32>>>>;

fn vec4(t: &Tensor) -> Result<Nchw> {
    let (n, c, h, _) = t.dims4()?;
    let mut out = Vec::with_capacity(n);
    for b in 0..n {
        let mut ch = Vec::with_capacity(c);
        for k in 0..c {
            let mut rows = Vec::with_capacity(h);
            for i in 0..h {
                rows.push(t.get(b)?.get(k)?.get(i)?.to_vec1::<f32>()?);
            }
            ch.push(rows);
        }
        out.push(ch);
    }
    Ok(out)
}

fn parts(b: &Batch) -> Result<(Nchw, Nchw, Nchw)> {
    match b {
        Batch::AmbientPixel {
            x_a,
            mask_a,
            mask_tilde,
        } => Ok((vec4(x_a)?, vec4(mask_a)?, vec4(mask_tilde)?)),
        Batch::AmbientKspace {
            y,
            mask_a,
            mask_tilde,
        } => Ok((vec4(y)?, vec4(mask_a)?, vec4(mask_tilde)?)),
        Batch::Supervised { .. } | Batch::Noisy { .. } | Batch::AmbientMulticoil { .. } => Err(
            DiffusionError::Config("not a noiseless ambient batch".into()),
        ),
    }
}

#[test]
fn pixel_batches_are_a_times_x_with_the_models_masks() -> Result<()> {
    let dev = Device::Cpu;
    let a = acq(serde_json::json!({
        "corruption": {"type": "pixel", "p": 0.4}, "delta": 0.3, "seed": 7
    }))?;
    let set = TrainingSet::new(&slices(5), &a, TrainObjective::Ambient)?;
    assert_eq!(set.objective(), Objective::AmbientPixel);
    // independent corruption model with the same configuration
    let model = Corruption::new(&a, R, C)?;
    let scans = [3usize, 0, 4];
    let batch = set.batch(&scans, 11, &dev)?;
    let (x, ma, mt) = parts(&batch)?;
    let mut hidden_by_tilde = 0usize;
    for (b, &i) in scans.iter().enumerate() {
        let am = model.measurement(i as u64, None)?;
        let atm = model.further(&am, i as u64, 11)?;
        let (a_mask, t_mask) = (am.mask().cloned(), atm.mask().cloned());
        let (a_mask, t_mask) = match (a_mask, t_mask) {
            (Some(p), Some(q)) => (p, q),
            _ => return Err(DiffusionError::Config("no masks".into())),
        };
        let img = set
            .image(i)
            .ok_or_else(|| DiffusionError::Config("no image".into()))?;
        for r in 0..R {
            for c in 0..C {
                let (av, tv) = (a_mask[[r, c]], t_mask[[r, c]]);
                assert_eq!(ma[b][0][r][c], av);
                assert_eq!(mt[b][0][r][c], tv);
                assert!(tv <= av, "Ã not within A at {r},{c}");
                hidden_by_tilde += usize::from(av == 1.0 && tv == 0.0);
                let v = img[r * C + c];
                // exact A ⊙ x: nothing of the clean image outside A reaches the batch
                assert_eq!(x[b][0][r][c], v.re * av);
                assert_eq!(x[b][1][r][c], v.im * av);
            }
        }
    }
    assert!(hidden_by_tilde > 0, "Ã hid nothing");
    // complex images (synthetic phase on by default)
    let im_energy: f32 = x
        .iter()
        .flat_map(|s| s[1].iter().flatten())
        .map(|v| v.abs())
        .sum();
    assert!(im_energy > 0.0);
    // seeded: the same call gives the same batch; per-scan Ã ignores the step
    let again = parts(&set.batch(&scans, 11, &dev)?)?;
    assert!(again == (x.clone(), ma.clone(), mt.clone()));
    let other_step = parts(&set.batch(&scans, 12, &dev)?)?;
    assert!(other_step.2 == mt, "per-scan Ã changed with the step");
    Ok(())
}

#[test]
fn per_step_further_corruption_redraws_tilde_only() -> Result<()> {
    let dev = Device::Cpu;
    let a = acq(serde_json::json!({
        "corruption": {"type": "boxes", "count": 1, "size": [4, 4]},
        "further": "per_step", "seed": 2
    }))?;
    let set = TrainingSet::new(&slices(3), &a, TrainObjective::Ambient)?;
    let (x1, a1, t1) = parts(&set.batch(&[0, 1, 2], 1, &dev)?)?;
    let (x2, a2, t2) = parts(&set.batch(&[0, 1, 2], 2, &dev)?)?;
    assert!(x1 == x2 && a1 == a2, "A changed with the step");
    assert!(t1 != t2, "per-step Ã did not change");
    Ok(())
}

#[test]
fn kspace_batches_are_mask_times_centred_dft() -> Result<()> {
    let dev = Device::Cpu;
    let a = acq(serde_json::json!({
        "corruption": {"type": "kspace", "pattern": "random", "acceleration": 4.0,
                       "center_fraction": 0.125},
        "delta": 0.5, "seed": 5
    }))?;
    let set = TrainingSet::new(&slices(4), &a, TrainObjective::Ambient)?;
    assert_eq!(set.objective(), Objective::AmbientKspace);
    let scans = [2usize, 1];
    let (y, ma, mt) = parts(&set.batch(&scans, 0, &dev)?)?;
    for (b, &i) in scans.iter().enumerate() {
        let img = set
            .image(i)
            .ok_or_else(|| DiffusionError::Config("no image".into()))?;
        let x = Array2::from_shape_vec((R, C), img.to_vec())
            .map_err(|e| DiffusionError::Config(e.to_string()))?;
        let k: Array2<C32> = fft2c(&x);
        let (mask_a, mask_t) = set.masks(i, 0)?;
        let mut err = 0f32;
        for r in 0..R {
            for c in 0..C {
                assert_eq!(ma[b][0][r][c], mask_a[[r, c]]);
                assert_eq!(mt[b][0][r][c], mask_t[[r, c]]);
                assert!(mask_t[[r, c]] <= mask_a[[r, c]]);
                let want = k[[r, c]] * mask_a[[r, c]];
                err = err
                    .max((y[b][0][r][c] - want.re).abs())
                    .max((y[b][1][r][c] - want.im).abs());
                if mask_a[[r, c]] == 0.0 {
                    assert_eq!((y[b][0][r][c], y[b][1][r][c]), (0.0, 0.0));
                }
            }
        }
        assert!(err < 1e-5, "y differs from M ⊙ F x by {err}");
        // whole phase-encode lines (axis 1); the centre (ACS) columns stay in Ã
        for c in 0..C {
            let col: Vec<f32> = (0..R).map(|r| mask_a[[r, c]]).collect();
            assert!(col.iter().all(|v| *v == col[0]), "column {c} not a line");
        }
        for c in [C / 2 - 1, C / 2] {
            assert_eq!(mask_t[[0, c]], 1.0, "ACS column {c} hidden by Ã");
        }
        assert!(mask_t.sum() < mask_a.sum(), "Ã hid no line at δ = 0.5");
    }
    Ok(())
}

#[test]
fn supervised_batches_are_the_clean_images() -> Result<()> {
    let dev = Device::Cpu;
    let a = acq(serde_json::json!({
        "corruption": {"type": "pixel", "p": 0.5}, "synthetic_phase": false
    }))?;
    let s = slices(2);
    let set = TrainingSet::new(&s, &a, TrainObjective::Supervised)?;
    let Batch::Supervised { x0 } = set.batch(&[1, 0], 0, &dev)? else {
        return Err(DiffusionError::Config("not supervised".into()));
    };
    let x = vec4(&x0)?;
    for (b, i) in [1usize, 0].into_iter().enumerate() {
        for r in 0..R {
            for c in 0..C {
                assert_eq!(x[b][0][r][c], s[i][[r, c]]);
                assert_eq!(x[b][1][r][c], 0.0);
            }
        }
    }
    Ok(())
}

#[test]
fn clean_twin_batches_share_the_ambient_inputs_but_target_everything() -> Result<()> {
    let dev = Device::Cpu;
    let s = slices(3);
    let scans = [2usize, 0];
    for corruption in [
        serde_json::json!({"type": "kspace", "pattern": "random", "acceleration": 4.0,
                           "center_fraction": 0.125}),
        serde_json::json!({"type": "pixel", "p": 0.6}),
    ] {
        let a = acq(serde_json::json!({"corruption": corruption, "delta": 0.3, "seed": 9}))?;
        let amb = TrainingSet::new(&s, &a, TrainObjective::Ambient)?;
        let cln = TrainingSet::new(&s, &a, TrainObjective::Clean)?;
        assert_eq!(cln.objective(), amb.objective());
        let kspace = amb.objective() == Objective::AmbientKspace;
        let (ya, _, mta) = parts(&amb.batch(&scans, 3, &dev)?)?;
        let (yc, mac, mtc) = parts(&cln.batch(&scans, 3, &dev)?)?;
        // the same network inputs: same Ã
        assert_eq!(mta, mtc);
        for (b, &i) in scans.iter().enumerate() {
            let img = cln
                .image(i)
                .ok_or_else(|| DiffusionError::Config("no image".into()))?;
            let x = Array2::from_shape_vec((R, C), img.to_vec())
                .map_err(|e| DiffusionError::Config(e.to_string()))?;
            let full: Array2<C32> = if kspace { fft2c(&x) } else { x };
            let (mask_a, _) = cln.masks(i, 3)?;
            let mut err = 0f32;
            let mut hidden = 0;
            for r in 0..R {
                for c in 0..C {
                    assert_eq!(
                        mac[b][0][r][c], 1.0,
                        "the clean twin's loss covers everything"
                    );
                    err = err
                        .max((yc[b][0][r][c] - full[[r, c]].re).abs())
                        .max((yc[b][1][r][c] - full[[r, c]].im).abs());
                    if mask_a[[r, c]] == 1.0 {
                        // where A measured, the ambient data are the same samples
                        assert!((ya[b][0][r][c] - yc[b][0][r][c]).abs() < 1e-5);
                    } else {
                        hidden += (full[[r, c]].norm() > 1e-6) as usize;
                    }
                }
            }
            assert!(
                err < 1e-5,
                "clean target differs from the full data by {err}"
            );
            assert!(
                hidden > 0,
                "A hid nothing: the test would not tell the objectives apart"
            );
        }
    }
    Ok(())
}

#[test]
fn unsupported_multicoil_combinations_and_gaussian_cs_are_refused_clearly() -> Result<()> {
    // 16×16 at 12.5 % centre lines: a 2-line ACS cannot calibrate coil maps
    let mc = acq(serde_json::json!({
        "corruption": {"type": "kspace", "pattern": "equispaced", "acceleration": 4.0,
                       "center_fraction": 0.125},
        "coils": 4
    }))?;
    let e = TrainingSet::new(&slices(1), &mc, TrainObjective::Ambient)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(e.contains("too small to estimate coil maps"), "{e}");
    let px = acq(serde_json::json!({"corruption": {"type": "pixel", "p": 0.5}, "coils": 4}))?;
    let e = TrainingSet::new(&slices(1), &px, TrainObjective::Ambient)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        e.contains("4-coil") && e.contains("k-space corruption"),
        "{e}"
    );
    let g = acq(serde_json::json!({"corruption": {"type": "gaussian_cs", "ratio": 0.5}}))?;
    let e = TrainingSet::new(&slices(1), &g, TrainObjective::Ambient)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        e.contains("Gaussian") && e.contains("not supported for training yet"),
        "{e}"
    );
    Ok(())
}

#[test]
fn volumes_are_normalised_to_the_percentile() -> Result<()> {
    let mut v: Vec<f32> = (1..=1000).map(|k| k as f32 * 0.5).collect();
    let scale = normalise_volume(&mut v)?;
    // nearest rank of 0.995·999 = 994.005 → the 995th value, 497.5
    assert_eq!(scale, 497.5);
    assert_eq!(abs_percentile(&v, NORM_PERCENTILE), 1.0);
    assert!(normalise_volume(&mut [0.0, 0.0]).is_err());
    assert!(normalise_volume(&mut [1.0, f32::NAN]).is_err());
    Ok(())
}

#[test]
fn batch_order_visits_every_scan_once_per_epoch() {
    let (n, b) = (5usize, 2usize);
    let stream: Vec<usize> = (0..5u64).flat_map(|t| batch_indices(n, b, 9, t)).collect();
    assert_eq!(stream.len(), 10);
    for epoch in stream.chunks(n) {
        let mut e = epoch.to_vec();
        e.sort_unstable();
        assert_eq!(e, (0..n).collect::<Vec<_>>());
    }
    assert_eq!(batch_indices(n, b, 9, 3), batch_indices(n, b, 9, 3));
    assert_ne!(stream[..n], stream[n..]);
}

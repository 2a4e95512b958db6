//! Exact resume: a run interrupted at step k and resumed from its checkpoint ends bitwise where
//! an uninterrupted run ends; a half-written checkpoint never replaces the last complete one.

use std::collections::HashMap;
use std::path::Path;

use amri_diffusion::checkpoint::{checkpoint_name, resolve_checkpoint, LATEST_FILE, WEIGHTS_FILE};
use amri_diffusion::precond::DenoiserConfig;
use amri_diffusion::train::{save_run_checkpoint, Batch, Objective, TrainConfig, Trainer};
use amri_diffusion::{DiffusionError, Result};
use candle_core::{Device, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn small_cfg() -> Result<DenoiserConfig> {
    let mut cfg = DenoiserConfig::complex_preset("tiny", 0.5)?;
    cfg.unet.base_channels = 16;
    cfg.unet.channel_mult = vec![1, 2];
    cfg.unet.attention_levels = vec![1];
    cfg.unet.groups = 4;
    cfg.unet.attention_head_channels = 16;
    Ok(cfg)
}

/// The batch of step `step`: random images with Bernoulli masks, a pure function of `step`.
fn batch(step: usize, dev: &Device) -> Result<Batch> {
    let (n, s) = (2, 8);
    let mut rng = ChaCha8Rng::seed_from_u64(1000 + step as u64);
    let x: Vec<f32> = (0..n * 2 * s * s)
        .map(|_| rng.random_range(-0.5..0.5))
        .collect();
    let mut a = Vec::new();
    let mut at = Vec::new();
    for _ in 0..n * s * s {
        let keep = rng.random_bool(0.7);
        a.push(f32::from(u8::from(keep)));
        at.push(f32::from(u8::from(keep && rng.random_bool(0.8))));
    }
    let x = Tensor::from_vec(x, (n, 2, s, s), dev)?;
    let mask_a = Tensor::from_vec(a, (n, 1, s, s), dev)?;
    let mask_tilde = Tensor::from_vec(at, (n, 1, s, s), dev)?;
    Ok(Batch::AmbientPixel {
        x_a: x.broadcast_mul(&mask_a)?,
        mask_a,
        mask_tilde,
    })
}

/// Bit patterns (f32 and f64 tensors; f32 → f64 is exact).
fn bits(t: &Tensor) -> Result<Vec<u64>> {
    Ok(t.flatten_all()?
        .to_dtype(candle_core::DType::F64)?
        .to_vec1::<f64>()?
        .into_iter()
        .map(f64::to_bits)
        .collect())
}

fn assert_same(a: &HashMap<String, Tensor>, b: &HashMap<String, Tensor>, what: &str) -> Result<()> {
    assert_eq!(a.len(), b.len(), "{what}: different variable sets");
    for (name, t) in a {
        let u = b
            .get(name)
            .ok_or_else(|| DiffusionError::Config(format!("{what}: {name} missing")))?;
        assert!(bits(t)? == bits(u)?, "{what}: {name} differs");
    }
    Ok(())
}

fn raw(t: &Trainer) -> HashMap<String, Tensor> {
    let data = t.varmap().data().lock().unwrap_or_else(|p| p.into_inner());
    data.iter()
        .map(|(k, v)| (k.clone(), v.as_tensor().clone()))
        .collect()
}

fn io(p: &Path) -> impl FnOnce(std::io::Error) -> DiffusionError + '_ {
    move |source| DiffusionError::Io {
        path: p.to_path_buf(),
        source,
    }
}

#[test]
fn resumed_run_is_bitwise_equal_to_uninterrupted_run() -> Result<()> {
    let dev = Device::Cpu;
    let tmp = tempfile::tempdir().map_err(io(Path::new("tempdir")))?;
    let run = tmp.path().join("run");
    let cfg = TrainConfig {
        lr: 2e-3,
        warmup_steps: 3, // the warm-up spans the interruption
        weight_decay: 0.01,
        grad_clip: Some(0.5),
        ema_decay: 0.9,
        seed: 42,
        ..Default::default()
    };
    let (k, total) = (3usize, 7usize);
    let mut a = Trainer::new(&small_cfg()?, &cfg, &dev)?;
    let mut losses_a = Vec::new();
    for step in 0..total {
        if step == k {
            let card = a.card(Objective::AmbientPixel, Some("tiny"), None)?;
            save_run_checkpoint(&a, &run, &card)?;
        }
        losses_a.push(a.step(&batch(step, &dev)?)?.loss);
    }

    let (mut b, card) = Trainer::resume(&run, &dev)?;
    assert_eq!(card.steps, k);
    assert_eq!(b.steps(), k);
    assert_eq!(b.config(), &cfg);
    let mut losses_b = Vec::new();
    for step in k..total {
        losses_b.push(b.step(&batch(step, &dev)?)?.loss);
    }
    assert_eq!(b.steps(), total);
    assert_eq!(&losses_a[k..], &losses_b[..], "losses after resume differ");
    assert_same(&raw(&a), &raw(&b), "raw weights")?;
    assert_same(&a.ema_weights(), &b.ema_weights(), "EMA weights")?;
    assert_same(
        &a.optimizer().state()?,
        &b.optimizer().state()?,
        "optimizer state",
    )?;
    assert_eq!(b.optimizer().step_count(), total as u64);

    // A control: resuming but losing the optimiser moments does not reproduce the run, so the
    // comparison above is sensitive to them.
    let (mut c, _) = Trainer::from_base(&run, &cfg, &dev)?;
    for step in k..total {
        c.step(&batch(step, &dev)?)?;
    }
    let differs = raw(&a)
        .iter()
        .any(|(n, t)| bits(t).ok() != raw(&c).get(n).and_then(|u| bits(u).ok()));
    assert!(differs, "fresh optimiser reproduced the run: test is blind");
    Ok(())
}

#[test]
fn interrupted_checkpoint_write_leaves_previous_checkpoint_usable() -> Result<()> {
    let dev = Device::Cpu;
    let tmp = tempfile::tempdir().map_err(io(Path::new("tempdir")))?;
    let run = tmp.path().to_path_buf();
    let cfg = TrainConfig {
        seed: 3,
        ..Default::default()
    };
    let mut t = Trainer::new(&small_cfg()?, &cfg, &dev)?;
    for step in 0..2 {
        t.step(&batch(step, &dev)?)?;
        let card = t.card(Objective::AmbientPixel, None, None)?;
        save_run_checkpoint(&t, &run, &card)?;
    }
    t.step(&batch(2, &dev)?)?;
    for step in 3..5 {
        t.step(&batch(step, &dev)?)?;
        let card = t.card(Objective::AmbientPixel, None, None)?;
        save_run_checkpoint(&t, &run, &card)?;
    }
    // only the newest and the one before it are kept
    let mut names: Vec<String> = std::fs::read_dir(&run)
        .map_err(io(&run))?
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect();
    names.sort();
    assert_eq!(
        names,
        vec![
            checkpoint_name(4),
            checkpoint_name(5),
            LATEST_FILE.to_owned()
        ]
    );
    // a kill while writing step 6: its folder exists with a truncated weights file, `latest`
    // was not yet replaced
    let partial = run.join(checkpoint_name(6));
    std::fs::create_dir_all(&partial).map_err(io(&partial))?;
    std::fs::write(partial.join(WEIGHTS_FILE), b"trunc").map_err(io(&partial))?;
    assert_eq!(resolve_checkpoint(&run)?, run.join(checkpoint_name(5)));
    let (r, card) = Trainer::resume(&run, &dev)?;
    assert_eq!((r.steps(), card.steps), (5, 5));
    assert_same(&raw(&t), &raw(&r), "raw weights")?;

    // a missing checkpoint is a clear I/O error naming the path
    let err = Trainer::resume(&run.join("nowhere"), &dev)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        err.contains("nowhere") && err.contains("no checkpoint"),
        "{err}"
    );
    Ok(())
}

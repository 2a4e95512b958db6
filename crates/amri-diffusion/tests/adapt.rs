//! Fine-tuning with low-rank adapters (LoRA) and with the last layers only: what trains, what
//! stays frozen bit for bit, that the merged checkpoint is the adapted network, and that a LoRA
//! run resumes exactly.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use amri_diffusion::adapt::{
    adapter_names, is_adapted, last_layers_freeze, LoraConfig, BASE_PREFIX, LORA_FILE,
};
use amri_diffusion::checkpoint::{
    load_checkpoint, resolve_checkpoint, Weights, EMA_FILE, WEIGHTS_FILE,
};
use amri_diffusion::testing::TinyRun;
use amri_diffusion::train::{save_run_checkpoint, Objective, TrainConfig, Trainer};
use amri_diffusion::{DiffusionError, Result};
use candle_core::{DType, Device, Tensor};

fn io(p: &Path) -> impl FnOnce(std::io::Error) -> DiffusionError + '_ {
    move |source| DiffusionError::Io {
        path: p.to_path_buf(),
        source,
    }
}

/// A tiny prior trained for 4 steps, saved as a run under `dir`; returns the run and its folder.
fn base(dir: &Path) -> Result<(TinyRun, PathBuf)> {
    let run = TinyRun::train(4, &Device::Cpu)?;
    let ckpt = run.save(&dir.join("base"))?;
    Ok((run, ckpt))
}

fn lora_cfg(rank: usize) -> TrainConfig {
    TrainConfig {
        lr: 5e-3,
        warmup_steps: 2,
        ema_decay: 0.9,
        seed: 7,
        lora: Some(LoraConfig {
            rank,
            alpha: 2.0 * rank as f64,
        }),
        ..Default::default()
    }
}

fn bits(t: &Tensor) -> Result<Vec<u32>> {
    Ok(t.flatten_all()?
        .to_vec1::<f32>()?
        .into_iter()
        .map(f32::to_bits)
        .collect())
}

fn vars(t: &Trainer) -> HashMap<String, Tensor> {
    let data = t.varmap().data().lock().unwrap_or_else(|p| p.into_inner());
    data.iter()
        .map(|(k, v)| {
            (
                k.clone(),
                v.as_tensor()
                    .copy()
                    .unwrap_or_else(|_| v.as_tensor().clone()),
            )
        })
        .collect()
}

/// Random denoiser inputs for the tiny prior's 32×32 images (candle's own RNG).
fn inputs() -> Result<(Tensor, Tensor, Tensor)> {
    let dev = Device::Cpu;
    let x = Tensor::randn(0f32, 1., (2, 2, 32, 32), &dev)?;
    let m = Tensor::randn(0f32, 1., (2, 1, 32, 32), &dev)?
        .ge(0f32)?
        .to_dtype(DType::F32)?;
    let s = Tensor::new(&[0.3f32, 2.0], &dev)?;
    Ok((x, m, s))
}

fn max_abs(a: &Tensor, b: &Tensor) -> Result<f32> {
    Ok((a - b)?.abs()?.max_all()?.to_scalar::<f32>()?)
}

#[test]
fn lora_at_step_0_is_the_base_model_and_after_steps_only_adapters_moved() -> Result<()> {
    let dev = Device::Cpu;
    let tmp = tempfile::tempdir().map_err(io(Path::new("tempdir")))?;
    let (run, ckpt) = base(tmp.path())?;
    let (_, base_model) = load_checkpoint(&ckpt, Weights::Ema, &dev)?;
    let base_ema = candle_core::safetensors::load(ckpt.join(EMA_FILE), &dev)?;
    let (mut t, _) = Trainer::from_base(&ckpt, &lora_cfg(2), &dev)?;

    // B = 0: the adapted network is the base network exactly
    let (x, m, s) = inputs()?;
    let want = base_model.forward(&x, &m, &s)?;
    assert_eq!(max_abs(&t.model().forward(&x, &m, &s)?, &want)?, 0.0);

    // only the adapters are optimised; they cover every conv and linear weight
    let adapters = t
        .lora_adapters()
        .ok_or_else(|| DiffusionError::Config("no adapters".into()))?
        .clone();
    let n_adapted = base_ema
        .iter()
        .filter(|(n, w)| is_adapted(n, w.dims()))
        .count();
    assert!(n_adapted > 10);
    assert_eq!(adapters.all_vars().len(), 2 * n_adapted);
    let adapter_params: usize = adapters.all_vars().iter().map(|v| v.elem_count()).sum();
    assert_eq!(t.trained_parameters(), adapter_params);
    assert!(t.trained_parameters() < t.num_parameters());

    for step in 0..3 {
        t.step(&run.set.step_batch(2, 0, step, &dev)?)?;
    }
    // the frozen base is bit for bit the base checkpoint's EMA weights
    let frozen = t
        .lora_base()
        .ok_or_else(|| DiffusionError::Config("no base".into()))?;
    assert_eq!(frozen.len(), base_ema.len());
    for (n, w) in &base_ema {
        assert_eq!(bits(&frozen[n])?, bits(w)?, "base {n} moved");
    }
    // the weights the model runs with: adapted ones moved, all others (biases, GroupNorm) did
    // not, nor did their EMA
    let now = vars(&t);
    let ema = t.ema_weights();
    let mut moved = 0;
    for (n, w) in &base_ema {
        if is_adapted(n, w.dims()) {
            moved += usize::from(bits(&now[n])? != bits(w)?);
        } else {
            assert_eq!(bits(&now[n])?, bits(w)?, "{n} is not adapted but moved");
            assert_eq!(bits(&ema[n])?, bits(w)?, "EMA of {n} moved");
        }
    }
    assert!(moved > 0, "no adapted weight moved");
    // the B adapters left zero
    let b_norm: f32 = adapters
        .data()
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .filter(|(n, _)| n.ends_with(".lora_b"))
        .map(|(_, v)| v.as_tensor().abs()?.max_all()?.to_scalar::<f32>())
        .collect::<candle_core::Result<Vec<_>>>()?
        .into_iter()
        .fold(0f32, f32::max);
    assert!(b_norm > 0.0);
    Ok(())
}

#[test]
fn the_merged_checkpoint_is_the_adapted_network_and_follows_the_lora_formula() -> Result<()> {
    let dev = Device::Cpu;
    let tmp = tempfile::tempdir().map_err(io(Path::new("tempdir")))?;
    let (run, ckpt) = base(tmp.path())?;
    let cfg = lora_cfg(3);
    let (mut t, _) = Trainer::from_base(&ckpt, &cfg, &dev)?;
    for step in 0..3 {
        t.step(&run.set.step_batch(2, 0, step, &dev)?)?;
    }
    let out = tmp.path().join("ft");
    let card = t.card(Objective::AmbientKspace, Some("tiny"), None)?;
    let dir = save_run_checkpoint(&t, &out, &card)?;
    // an ordinary checkpoint: loads with the card's network, no adapters needed
    let (_, raw) = load_checkpoint(&out, Weights::Raw, &dev)?;
    for _ in 0..3 {
        let (x, m, s) = inputs()?;
        let want = t.model().forward(&x, &m, &s)?;
        let got = raw.forward(&x, &m, &s)?;
        let scale = want.abs()?.max_all()?.to_scalar::<f32>()?.max(1e-3);
        let err = max_abs(&got, &want)?;
        assert!(
            err <= 1e-5 * scale,
            "merged vs adapted: {err} (scale {scale})"
        );
    }
    // the merge, recomputed by plain loops from the saved base and adapters:
    // merged[o,i,y,x] = W[o,i,y,x] + (alpha/R)·Σ_r B[o,r]·A[r,i,y,x]
    let lora = candle_core::safetensors::load(dir.join(LORA_FILE), &dev)?;
    let merged = candle_core::safetensors::load(dir.join(WEIGHTS_FILE), &dev)?;
    let scale = (6.0 / 3.0) as f32;
    let mut checked = 0;
    for name in [
        "unet.conv_in.weight",
        "unet.map0.weight",
        "unet.dec.0.0.attn.qkv.weight",
    ] {
        let Some(w) = lora.get(&format!("{BASE_PREFIX}{name}")) else {
            continue;
        };
        let (an, bn) = adapter_names(name);
        let dims = w.dims().to_vec();
        let (o, rest) = (dims[0], w.elem_count() / dims[0]);
        let wv = w.flatten_all()?.to_vec1::<f32>()?;
        let av = lora[&an].flatten_all()?.to_vec1::<f32>()?;
        let bv = lora[&bn].flatten_all()?.to_vec1::<f32>()?;
        let mv = merged[name].flatten_all()?.to_vec1::<f32>()?;
        let r = bv.len() / o;
        assert_eq!(r, 3);
        for oi in 0..o {
            for j in 0..rest {
                let mut d = 0f64;
                for k in 0..r {
                    d += bv[oi * r + k] as f64 * av[k * rest + j] as f64;
                }
                let want = wv[oi * rest + j] as f64 + scale as f64 * d;
                let got = mv[oi * rest + j] as f64;
                assert!(
                    (got - want).abs() <= 1e-6 * want.abs().max(1e-2),
                    "{name}[{oi},{j}]: {got} vs {want}"
                );
            }
        }
        checked += 1;
    }
    assert!(checked >= 2, "only {checked} weights checked");
    Ok(())
}

#[test]
fn lora_resume_is_bitwise_equal_to_uninterrupted() -> Result<()> {
    let dev = Device::Cpu;
    let tmp = tempfile::tempdir().map_err(io(Path::new("tempdir")))?;
    let (run, ckpt) = base(tmp.path())?;
    let cfg = lora_cfg(2);
    let (k, total) = (2u64, 5u64);
    let out = tmp.path().join("ft");
    let (mut a, _) = Trainer::from_base(&ckpt, &cfg, &dev)?;
    let mut losses_a = Vec::new();
    for step in 0..total {
        if step == k {
            let card = a.card(Objective::AmbientKspace, Some("tiny"), None)?;
            save_run_checkpoint(&a, &out, &card)?;
        }
        losses_a.push(a.step(&run.set.step_batch(2, 0, step, &dev)?)?.loss);
    }
    let (mut b, card) = Trainer::resume(&out, &dev)?;
    assert_eq!(card.train.lora, cfg.lora);
    assert_eq!(b.steps(), k as usize);
    let mut losses_b = Vec::new();
    for step in k..total {
        losses_b.push(b.step(&run.set.step_batch(2, 0, step, &dev)?)?.loss);
    }
    assert_eq!(&losses_a[k as usize..], &losses_b[..]);
    let (va, vb) = (vars(&a), vars(&b));
    let (ea, eb) = (a.ema_weights(), b.ema_weights());
    for (n, t) in &va {
        assert_eq!(bits(t)?, bits(&vb[n])?, "merged {n} differs after resume");
        assert_eq!(bits(&ea[n])?, bits(&eb[n])?, "EMA {n} differs after resume");
    }
    let adapters = |t: &Trainer| -> Result<Vec<(String, Vec<u32>)>> {
        let mut v: Vec<(String, Vec<u32>)> = t
            .lora_adapters()
            .ok_or_else(|| DiffusionError::Config("no adapters".into()))?
            .data()
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(n, v)| Ok((n.clone(), bits(v.as_tensor())?)))
            .collect::<Result<_>>()?;
        v.sort();
        Ok(v)
    };
    assert_eq!(adapters(&a)?, adapters(&b)?);
    // a checkpoint without its adapters file is refused, naming it
    let dir = resolve_checkpoint(&out)?;
    std::fs::remove_file(dir.join(LORA_FILE)).map_err(io(&dir))?;
    let err = Trainer::resume(&out, &dev)
        .err()
        .ok_or_else(|| DiffusionError::Config("resumed without lora.safetensors".into()))?;
    assert!(err.to_string().contains(LORA_FILE), "{err}");
    Ok(())
}

#[test]
fn last_layers_train_only_the_decoder_tail_and_head() -> Result<()> {
    let dev = Device::Cpu;
    let tmp = tempfile::tempdir().map_err(io(Path::new("tempdir")))?;
    let (run, ckpt) = base(tmp.path())?;
    let (card, _) = load_checkpoint(&ckpt, Weights::Ema, &dev)?;
    let freeze = last_layers_freeze(&card.denoiser.unet, 2)?;
    let cfg = TrainConfig {
        lr: 5e-3,
        warmup_steps: 0,
        ema_decay: 0.5,
        freeze,
        ..Default::default()
    };
    let base_ema = candle_core::safetensors::load(ckpt.join(EMA_FILE), &dev)?;
    let (mut t, _) = Trainer::from_base(&ckpt, &cfg, &dev)?;
    for step in 0..3 {
        t.step(&run.set.step_batch(2, 0, step, &dev)?)?;
    }
    let now = vars(&t);
    let ema = t.ema_weights();
    let (mut trained, mut moved) = (0usize, 0usize);
    for (n, w) in &base_ema {
        // the tiny prior has 2 levels, 2 decoder blocks per level: the last two are dec.0.*
        let tail = n.starts_with("unet.dec.0.") || n.starts_with("unet.out_");
        if tail {
            trained += w.elem_count();
            moved += usize::from(bits(&now[n])? != bits(w)?);
        } else {
            assert_eq!(bits(&now[n])?, bits(w)?, "{n} is frozen but moved");
            assert_eq!(bits(&ema[n])?, bits(w)?, "EMA of frozen {n} moved");
        }
    }
    assert_eq!(t.trained_parameters(), trained);
    assert!(moved > 0, "no tail weight moved");
    Ok(())
}

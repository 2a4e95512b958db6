//! Times one training step (forward, backward, AdamW) of the amri denoiser on the CPU, for the
//! side-by-side comparison with `bench/torch_step.py` (same architecture, loss and optimiser).
//!
//! ```text
//! cargo run --release -p amri-diffusion --example step_bench -- [preset] [size] [batch] [steps] [device]
//! ```
//! `device` is `cpu` (default) or `cuda` (GPU 0; a build with `--features cuda`), timed after a
//! device synchronisation. Prints one line:
//! `amri preset=tiny size=64 batch=8 device=cpu threads=2 ms_per_step=...` (median).
//!
//! `preset` is a preset name, optionally followed by `:` and comma-separated overrides of its
//! U-Net (the same spelling as `bench/torch_step.py`): `f` (space-to-depth factor), `base`,
//! `mult` and `attn` (dash-separated lists), `blocks`, `groups`, `head`; e.g.
//! `tiny:f=4,base=48` or `tiny:f=2,base=16,mult=1-1-2-2,attn=3,groups=4`.
use std::time::Instant;

use amri_diffusion::loss::supervised_loss;
use amri_diffusion::optim::{AdamW, AdamWParams};
use amri_diffusion::precond::{denoiser, DenoiserConfig};
use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};

fn main() -> anyhow::Result<()> {
    amri_diffusion::alloc::keep_freed_memory();
    let args: Vec<String> = std::env::args().collect();
    let preset = args.get(1).map(String::as_str).unwrap_or("tiny");
    let size: usize = args.get(2).map(|s| s.parse()).transpose()?.unwrap_or(64);
    let batch: usize = args.get(3).map(|s| s.parse()).transpose()?.unwrap_or(8);
    let steps: usize = args.get(4).map(|s| s.parse()).transpose()?.unwrap_or(5);
    let dev_name = args.get(5).map(String::as_str).unwrap_or("cpu");
    let dev = match dev_name {
        "cpu" => Device::Cpu,
        "cuda" => Device::new_cuda(0)?,
        other => anyhow::bail!("device {other:?}: expected cpu or cuda"),
    };
    let vm = VarMap::new();
    let cfg = bench_config(preset)?;
    let model = denoiser(&cfg, VarBuilder::from_varmap(&vm, DType::F32, &dev))?;
    let vars: Vec<_> = {
        let data = vm
            .data()
            .lock()
            .map_err(|_| anyhow::anyhow!("varmap lock"))?;
        let mut v: Vec<_> = data.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    };
    let mut opt = AdamW::new(vars, AdamWParams::default())?;
    let x0 = Tensor::randn(0f32, 0.5, (batch, 2, size, size), &dev)?;
    let noise = Tensor::randn(0f32, 1.0, (batch, 2, size, size), &dev)?;
    let sigma = Tensor::new(vec![0.5f32; batch], &dev)?;
    let precond = cfg.precond;
    let mut times = Vec::new();
    for i in 0..steps + 1 {
        let t = Instant::now();
        let loss = supervised_loss(&model, &precond, &x0, &sigma, &noise)?;
        let grads = loss.backward()?;
        opt.step(&grads)?;
        dev.synchronize()?;
        if i > 0 {
            times.push(t.elapsed().as_secs_f64() * 1e3);
        }
    }
    times.sort_by(|a, b| a.total_cmp(b));
    println!(
        "amri preset={preset} size={size} batch={batch} device={dev_name} threads={} params={} ms_per_step={:.1}",
        rayon::current_num_threads(),
        vm.all_vars().iter().map(|v| v.elem_count()).sum::<usize>(),
        times[times.len() / 2]
    );
    Ok(())
}

/// A preset name with optional `:key=value,…` overrides of its U-Net (see the module docs).
fn bench_config(spec: &str) -> anyhow::Result<DenoiserConfig> {
    let (name, overrides) = spec.split_once(':').unwrap_or((spec, ""));
    let mut cfg = DenoiserConfig::complex_preset(name, 0.5)?;
    let list = |v: &str| -> anyhow::Result<Vec<usize>> {
        v.split('-')
            .map(|x| x.parse().map_err(anyhow::Error::from))
            .collect()
    };
    for kv in overrides.split(',').filter(|s| !s.is_empty()) {
        let (k, v) = kv
            .split_once('=')
            .ok_or_else(|| anyhow::anyhow!("override {kv:?}: expected key=value"))?;
        let u = &mut cfg.unet;
        match k {
            "f" => u.space_to_depth = v.parse()?,
            "base" => u.base_channels = v.parse()?,
            "mult" => u.channel_mult = list(v)?,
            "attn" => u.attention_levels = list(v)?,
            "blocks" => u.blocks_per_level = v.parse()?,
            "groups" => u.groups = v.parse()?,
            "head" => u.attention_head_channels = v.parse()?,
            other => anyhow::bail!(
                "unknown override {other:?} (f, base, mult, attn, blocks, groups, head)"
            ),
        }
    }
    cfg.validate()?;
    Ok(cfg)
}

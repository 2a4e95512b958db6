//! Times one training step (forward, backward, AdamW) of the amri denoiser on the CPU, for the
//! side-by-side comparison with `bench/torch_step.py` (same architecture, loss and optimiser).
//!
//! ```text
//! cargo run --release -p amri-diffusion --example step_bench -- [preset] [size] [batch] [steps] [device]
//! ```
//! `device` is `cpu` (default) or `cuda` (GPU 0; a build with `--features cuda`), timed after a
//! device synchronisation. Prints one line:
//! `amri preset=tiny size=64 batch=8 device=cpu threads=2 ms_per_step=...` (median).
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
    let cfg = DenoiserConfig::complex_preset(preset, 0.5)?;
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
        "amri preset={preset} size={size} batch={batch} device={dev_name} threads={} ms_per_step={:.1}",
        rayon::current_num_threads(),
        times[times.len() / 2]
    );
    Ok(())
}

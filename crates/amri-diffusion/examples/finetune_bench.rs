//! Times one fine-tuning step ([`Trainer::step`]: forward, backward, clipping, AdamW, EMA) of a
//! base model under each adaptation: full, LoRA (rank 4, alpha 4) and last layers (the default
//! 2 decoder blocks and the head), on the CPU, and counts the parameters each one trains.
//!
//! ```text
//! cargo run --release -p amri-diffusion --example finetune_bench -- [preset] [size] [batch] [steps]
//! ```
//! The base is the preset freshly initialised (seed 0) and saved to a temporary folder; the
//! batch is a random complex image `[batch, 2, size, size]` with Bernoulli(0.7) pixel masks A and
//! Ã = A with a further 20 % hidden. Prints one line per adaptation:
//! `adapt=lora preset=clinical size=256 batch=8 threads=2 trained=… of=… ms_per_step=…`
//! (median of `steps` steps after one warm-up step).
use std::time::Instant;

use amri_diffusion::adapt::{last_layers_freeze, LoraConfig, DEFAULT_TRAIN_LAYERS};
use amri_diffusion::precond::DenoiserConfig;
use amri_diffusion::train::{save_run_checkpoint, Batch, Objective, TrainConfig, Trainer};
use candle_core::{DType, Device, Tensor};

fn main() -> anyhow::Result<()> {
    amri_diffusion::alloc::keep_freed_memory();
    let args: Vec<String> = std::env::args().collect();
    let preset = args.get(1).map(String::as_str).unwrap_or("clinical");
    let size: usize = args.get(2).map(|s| s.parse()).transpose()?.unwrap_or(256);
    let batch: usize = args.get(3).map(|s| s.parse()).transpose()?.unwrap_or(8);
    let steps: usize = args.get(4).map(|s| s.parse()).transpose()?.unwrap_or(3);
    let dev = Device::Cpu;
    let dcfg = DenoiserConfig::complex_preset(preset, 0.5)?;
    let tmp = tempfile::tempdir()?;
    let base = Trainer::new(&dcfg, &TrainConfig::default(), &dev)?;
    let card = base.card(Objective::AmbientPixel, Some(preset), None)?;
    save_run_checkpoint(&base, tmp.path(), &card)?;
    let x = Tensor::randn(0f32, 0.5, (batch, 2, size, size), &dev)?;
    let u = Tensor::rand(0f32, 1., (batch, 1, size, size), &dev)?;
    let mask_a = u.lt(0.7f32)?.to_dtype(DType::F32)?;
    let mask_tilde = u.lt(0.56f32)?.to_dtype(DType::F32)?;
    let batch_t = Batch::AmbientPixel {
        x_a: x.broadcast_mul(&mask_a)?,
        mask_a,
        mask_tilde,
    };
    let modes: Vec<(&str, TrainConfig)> = vec![
        ("full", TrainConfig::default()),
        (
            "lora",
            TrainConfig {
                lora: Some(LoraConfig {
                    rank: 4,
                    alpha: 4.0,
                }),
                ..Default::default()
            },
        ),
        (
            "last-layers",
            TrainConfig {
                freeze: last_layers_freeze(&dcfg.unet, DEFAULT_TRAIN_LAYERS)?,
                ..Default::default()
            },
        ),
    ];
    for (name, cfg) in modes {
        let (mut t, _) = Trainer::from_base(tmp.path(), &cfg, &dev)?;
        let mut times = Vec::new();
        for i in 0..steps + 1 {
            let t0 = Instant::now();
            t.step(&batch_t)?;
            if i > 0 {
                times.push(t0.elapsed().as_secs_f64() * 1e3);
            }
        }
        times.sort_by(|a, b| a.total_cmp(b));
        println!(
            "adapt={name} preset={preset} size={size} batch={batch} threads={} trained={} of={} ms_per_step={:.1}",
            rayon::current_num_threads(),
            t.trained_parameters(),
            t.num_parameters(),
            times[times.len() / 2]
        );
    }
    Ok(())
}

//! Times the training step on measured k-space, single-coil against multi-coil, phase by phase
//! (#18 §2): the same `Trainer` and `TrainingSet::from_measured` path `amri train` takes on
//! measured files, on synthetic scans (a smooth complex object, `amri_ops::coils::synthetic_maps`
//! coils, 1-D Cartesian R = 4 line masks with 24 centre lines, a different offset per slice).
//!
//! ```text
//! cargo run --release -p amri-diffusion --example measured_step_bench -- [preset] [size] [batch] [steps] [coils,…]
//! ```
//! Defaults: `clinical 256 8 3 1,8`. For each coil count it prints one line with the median over
//! `steps` timed steps (after one warm-up) of each phase in ms:
//! `batch` (`TrainingSet::step_batch`: gathering y, maps, masks), `noise` (`Trainer::draw_noise`),
//! `input` (the zero-filled network input alone), `net_fwd` (the network's forward alone on
//! that input), `loss_fwd` (`Trainer::loss`: input, network, Fourier/coil loss), `backward`
//! (`loss.backward()`), `net_bwd` (backward of the network alone, through a fixed random
//! projection of its output) and `step` (`Trainer::step`: noise, loss, backward, clipping,
//! AdamW, EMA — the step `amri train` times, without the batch).
use std::time::Instant;

use amri_core::fft::fft2c;
use amri_core::C32;
use amri_diffusion::batch::Batch;
use amri_diffusion::checkpoint::TrainConfig;
use amri_diffusion::data::{FurtherParams, MeasuredScan, TrainingSet};
use amri_diffusion::fourier::CenteredDft2;
use amri_diffusion::loss::{ambient_kspace_input, multicoil_kspace_input};
use amri_diffusion::precond::DenoiserConfig;
use amri_diffusion::train::Trainer;
use amri_ops::corruption::{Domain, FurtherMode};
use candle_core::{Device, Tensor};
use ndarray::{Array2, Array3, Axis};

fn main() -> anyhow::Result<()> {
    amri_diffusion::alloc::keep_freed_memory();
    let args: Vec<String> = std::env::args().collect();
    let preset = args.get(1).map(String::as_str).unwrap_or("clinical");
    let size: usize = args.get(2).map(|s| s.parse()).transpose()?.unwrap_or(256);
    let batch: usize = args.get(3).map(|s| s.parse()).transpose()?.unwrap_or(8);
    let steps: usize = args.get(4).map(|s| s.parse()).transpose()?.unwrap_or(3);
    let coil_list: Vec<usize> = args
        .get(5)
        .map(String::as_str)
        .unwrap_or("1,8")
        .split(',')
        .map(|s| s.parse())
        .collect::<Result<_, _>>()?;
    let dev = Device::Cpu;
    for &coils in &coil_list {
        let scans = synthetic_scans(batch, coils, size);
        let t = Instant::now();
        let all = 0..scans.len();
        let set = TrainingSet::from_measured(
            &scans,
            std::slice::from_ref(&all),
            FurtherParams {
                delta: 0.1,
                mode: FurtherMode::PerStep,
                seed: 3,
            },
        )?;
        let setup = t.elapsed().as_secs_f64();
        let dcfg = DenoiserConfig::complex_preset(preset, 0.5)?;
        let mut trainer = Trainer::new(&dcfg, &TrainConfig::default(), &dev)?;
        let names = [
            "batch", "noise", "input", "net_fwd", "loss_fwd", "backward", "net_bwd", "step",
        ];
        let mut times = vec![Vec::new(); names.len()];
        for i in 0..=steps {
            let mut ms = Vec::with_capacity(names.len());
            let mut lap = Instant::now();
            let mut tick = |ms: &mut Vec<f64>| {
                ms.push(lap.elapsed().as_secs_f64() * 1e3);
                lap = Instant::now();
            };
            let b = set.step_batch(batch, 0, i as u64, &dev)?;
            tick(&mut ms);
            let (sigma, noise) = trainer.draw_noise(&b)?;
            tick(&mut ms);
            let (input, mask) = network_input(&b, &sigma, &noise)?;
            tick(&mut ms);
            let pred = trainer.model().forward(&input, &mask, &sigma)?;
            tick(&mut ms);
            let loss = trainer.loss(&b, &sigma, &noise)?;
            let _ = loss.to_scalar::<f32>()?;
            tick(&mut ms);
            let _g = loss.backward()?;
            tick(&mut ms);
            let proj = Tensor::randn(0f32, 1.0, pred.dims(), &dev)?;
            let _g = (pred * proj)?.sum_all()?.backward()?;
            tick(&mut ms);
            trainer.step(&b)?;
            tick(&mut ms);
            if i > 0 {
                for (t, m) in times.iter_mut().zip(ms) {
                    t.push(m);
                }
            }
        }
        let med = |v: &mut Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        let cols: Vec<String> = names
            .iter()
            .zip(times.iter_mut())
            .map(|(n, v)| format!("{n}={:.0}", med(v)))
            .collect();
        println!(
            "measured preset={preset} size={size} batch={batch} coils={coils} threads={} \
             setup_s={setup:.1} ms: {}",
            rayon::current_num_threads(),
            cols.join(" ")
        );
    }
    Ok(())
}

/// The network input and mask channel of a measured k-space batch (as the loss builds them).
fn network_input(b: &Batch, sigma: &Tensor, noise: &Tensor) -> anyhow::Result<(Tensor, Tensor)> {
    Ok(match b {
        Batch::AmbientKspace { y, mask_tilde, .. } => {
            let (_, _, h, w) = y.dims4()?;
            let dft = CenteredDft2::new(h, w, y.device())?;
            (
                ambient_kspace_input(&dft, y, mask_tilde, sigma, noise)?,
                mask_tilde.clone(),
            )
        }
        Batch::AmbientMulticoil {
            y,
            maps,
            mask_tilde,
            ..
        } => {
            let d = y.dims();
            let dft = CenteredDft2::new(d[3], d[4], y.device())?;
            (
                multicoil_kspace_input(&dft, y, maps, mask_tilde, sigma, noise)?,
                mask_tilde.clone(),
            )
        }
        _ => anyhow::bail!("expected a measured k-space batch"),
    })
}

/// `n` measured scans `[coils, size, size]`: a smooth complex object seen by synthetic coils,
/// sampled on 1-D Cartesian R = 4 line masks with 24 centre lines.
fn synthetic_scans(n: usize, coils: usize, size: usize) -> Vec<MeasuredScan> {
    let maps = amri_ops::coils::synthetic_maps(coils, size, size, Some(1));
    (0..n)
        .map(|s| {
            let x = Array2::from_shape_fn((size, size), |(i, j)| {
                let (u, v) = (i as f32 / size as f32 - 0.5, j as f32 / size as f32 - 0.5);
                let m = if u * u + v * v < 0.15 {
                    1.0 + 0.3 * (20.0 * u).sin() * (13.0 * v).cos() + 0.05 * s as f32
                } else {
                    0.02
                };
                C32::from_polar(m, 2.0 * v)
            });
            let c0 = size / 2;
            let mask = Array2::from_shape_fn((size, size), |(_, j)| {
                let centre = j + 12 >= c0 && j < c0 + 12;
                f32::from(u8::from(centre || (j + s) % 4 == 0))
            });
            let mut data = Array3::<C32>::zeros((coils, size, size));
            for (c, mut out) in data.axis_iter_mut(Axis(0)).enumerate() {
                let sx = if coils == 1 {
                    x.clone()
                } else {
                    &x * &maps.index_axis(Axis(0), c)
                };
                out.assign(&(fft2c(&sx) * mask.mapv(|v| C32::new(v, 0.0))));
            }
            MeasuredScan {
                id: s as u64,
                domain: Domain::Kspace,
                data,
                mask,
            }
        })
        .collect()
}

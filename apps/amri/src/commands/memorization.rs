//! `amri memorization`: how close does a prior come to copying its training slices?
//!
//! Plan: load the prior → read the training image volumes (files or folders) and take every
//! slice's magnitude → draw `--samples` slices from the prior with the unconditional fixed-mask
//! sampler at the training slice shape → for each sample find the most similar training slice
//! by normalised cross-correlation of magnitudes (`amri_diffusion::memorize`, optionally after
//! the best integer shift up to `--max-shift`) → write, each atomically, into `--out`:
//!
//! - `similarity.csv`: `sample,train_index,train_file,train_slice,similarity,shift_row,shift_col`;
//! - `histogram.png`: histogram of the similarities over [0, 1] (20 bins);
//! - `report.json`: model, settings, fractions of samples above 0.9 / 0.95 / 0.99, mean, median
//!   and maximum similarity;
//! - `closest_pairs.png`: the closest pairs, one row each (sample | nearest training slice).
//!
//! The published study used DINOv2 features; they cannot be used here (the weights are a
//! separate ~300 MB download, there is no network at run time, and they are trained on natural
//! images), so similarity is NCC on pixels — see `amri_diffusion::memorize`.

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;

use amri_diffusion::memorize::{fraction_above, histogram, nearest};
use amri_diffusion::sample::{sample_unconditional, Prior, UnconditionalConfig};
use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use ndarray::{Array2, Axis};
use serde::Serialize;

use super::volumes::read_volumes_with_files;
use amri_figures::grid as figure;

/// Arguments of `amri memorization`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The prior: a checkpoint folder or a training run folder.
    #[arg(long)]
    pub model: PathBuf,
    /// Training image volumes (NIfTI, npy, DICOM series folders) or folders of them.
    #[arg(long, required = true, num_args = 1.., value_name = "PATH")]
    pub train: Vec<PathBuf>,
    /// Samples to draw from the prior.
    #[arg(long, default_value_t = 16)]
    pub samples: usize,
    /// Sampler noise levels (two network calls each).
    #[arg(long, default_value_t = 32)]
    pub steps: usize,
    /// Seed of the samples.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Align each pair by the best integer shift up to this many pixels per axis (0: none).
    #[arg(long, default_value_t = 0)]
    pub max_shift: usize,
    /// Samples drawn per network batch.
    #[arg(long, default_value_t = 8)]
    pub batch: usize,
    /// Output folder (created).
    #[arg(long, default_value = "out/memorization")]
    pub out: PathBuf,
    /// Hide the progress bar.
    #[arg(long)]
    pub no_progress: bool,
}

/// Names of the files written into `--out`.
pub const FILES: [&str; 4] = [
    "similarity.csv",
    "histogram.png",
    "report.json",
    "closest_pairs.png",
];

/// One training slice: its magnitude and where it came from.
struct TrainSlice {
    file: String,
    slice: usize,
    mag: Array2<f32>,
}

/// Every slice of the training volumes, as magnitude, with the file and slice index it came from.
fn read_training(inputs: &[PathBuf]) -> Result<Vec<TrainSlice>> {
    let mut out = Vec::new();
    for (f, v) in read_volumes_with_files(inputs)? {
        let mut k = 0;
        for frame in v.data.axis_iter(Axis(0)) {
            for sl in frame.axis_iter(Axis(0)) {
                out.push(TrainSlice {
                    file: f.display().to_string(),
                    slice: k,
                    mag: sl.mapv(f32::abs),
                });
                k += 1;
            }
        }
    }
    Ok(out)
}

/// `report.json`.
#[derive(Serialize)]
struct Report {
    model: String,
    model_checkpoint: String,
    model_sha256: String,
    objective: String,
    training_slices: usize,
    samples: usize,
    steps: usize,
    seed: u64,
    max_shift: usize,
    shape: [usize; 2],
    similarity: &'static str,
    fraction_above_0_90: f64,
    fraction_above_0_95: f64,
    fraction_above_0_99: f64,
    mean: f64,
    median: f64,
    max: f64,
    note: &'static str,
}

/// A histogram figure: bars of `counts` as a grey image with a label.
fn histogram_tile(counts: &[usize], label: &str) -> figure::Tile {
    let (bar_w, height) = (8usize, 96usize);
    let peak = counts.iter().copied().max().unwrap_or(0).max(1);
    let mut img = Array2::<f32>::zeros((height, counts.len() * bar_w));
    for (b, &c) in counts.iter().enumerate() {
        let h = (c as f64 / peak as f64 * (height - 1) as f64).round() as usize;
        for r in height - h..height {
            for x in b * bar_w..(b + 1) * bar_w - 1 {
                img[(r, x)] = 1.0;
            }
        }
    }
    figure::gray(img.view(), 0.0, 1.0, label)
}

fn range(img: &Array2<f32>) -> (f32, f32) {
    let hi = img.iter().copied().fold(0.0f32, f32::max);
    (0.0, hi.max(f32::EPSILON))
}

/// Runs `amri memorization`.
pub fn run(a: Args) -> Result<()> {
    if a.samples == 0 {
        bail!("--samples must be ≥ 1");
    }
    if a.steps == 0 {
        bail!("--steps must be ≥ 1");
    }
    let dev = candle_core::Device::Cpu;
    let prior = Prior::load(&a.model, &dev)
        .with_context(|| format!("--model {}: cannot load the prior", a.model.display()))?;
    let train = read_training(&a.train)?;
    let shape = train[0].mag.dim();
    if let Some(t) = train.iter().find(|t| t.mag.dim() != shape) {
        bail!(
            "training slices must share one shape: {:?} ({}) vs {:?} ({} slice {})",
            shape,
            train[0].file,
            t.mag.dim(),
            t.file,
            t.slice
        );
    }
    let cfg = UnconditionalConfig {
        steps: a.steps,
        seed: a.seed,
        ..Default::default()
    };
    let bar = ProgressBar::new(0);
    if a.no_progress {
        bar.set_draw_target(ProgressDrawTarget::hidden());
    }
    bar.set_style(
        ProgressStyle::with_template("{prefix:>8} [{bar:30}] {pos}/{len} network calls {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_prefix("sample");
    let never = AtomicBool::new(false);
    let samples = sample_unconditional(
        &prior,
        shape,
        a.samples,
        a.batch,
        &cfg,
        &|done, total| {
            bar.set_length(total as u64);
            bar.set_position(done as u64);
        },
        &never,
    )
    .context("sampling from the prior")?;
    bar.finish_and_clear();
    let mags: Vec<Array2<f32>> = samples.iter().map(|s| s.mapv(|v| v.norm())).collect();
    let train_mags: Vec<Array2<f32>> = train.iter().map(|t| t.mag.clone()).collect();
    let matches = nearest(&mags, &train_mags, a.max_shift)?;
    let sims: Vec<f64> = matches.iter().map(|m| m.similarity).collect();

    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    let mut csv =
        String::from("sample,train_index,train_file,train_slice,similarity,shift_row,shift_col\n");
    for (i, m) in matches.iter().enumerate() {
        let t = &train[m.train_index];
        csv.push_str(&format!(
            "{i},{},\"{}\",{},{:.6},{},{}\n",
            m.train_index,
            t.file.replace('"', "\"\""),
            t.slice,
            m.similarity,
            m.shift.0,
            m.shift.1
        ));
    }
    amri_io::atomic::write_bytes(&a.out.join(FILES[0]), csv.as_bytes())?;

    let counts = histogram(&sims, 20, 0.0, 1.0);
    let hist = histogram_tile(&counts, "NCC 0..1");
    figure::write_grid(&a.out.join(FILES[1]), &[hist], 1)?;

    let mut sorted = sims.clone();
    sorted.sort_by(f64::total_cmp);
    let median = if sorted.len() % 2 == 1 {
        sorted[sorted.len() / 2]
    } else {
        0.5 * (sorted[sorted.len() / 2 - 1] + sorted[sorted.len() / 2])
    };
    let report = Report {
        model: a.model.display().to_string(),
        model_checkpoint: prior.checkpoint_dir().display().to_string(),
        model_sha256: prior.sha256().to_owned(),
        objective: format!("{:?}", prior.card().objective),
        training_slices: train.len(),
        samples: a.samples,
        steps: a.steps,
        seed: a.seed,
        max_shift: a.max_shift,
        shape: [shape.0, shape.1],
        similarity: "normalised cross-correlation of magnitudes (best integer shift)",
        fraction_above_0_90: fraction_above(&sims, 0.90),
        fraction_above_0_95: fraction_above(&sims, 0.95),
        fraction_above_0_99: fraction_above(&sims, 0.99),
        mean: sims.iter().sum::<f64>() / sims.len() as f64,
        median,
        max: sorted.last().copied().unwrap_or(0.0),
        note: "DINOv2 features (used in the paper) are not available here; NCC on pixels rewards pixel-level copies",
    };
    let json = serde_json::to_string_pretty(&report)?;
    amri_io::atomic::write_bytes(&a.out.join(FILES[2]), json.as_bytes())?;

    // closest pairs first, at most 8 rows
    let mut order: Vec<usize> = (0..matches.len()).collect();
    order.sort_by(|&i, &j| sims[j].total_cmp(&sims[i]));
    let mut tiles = Vec::new();
    for &i in order.iter().take(8) {
        let m = &matches[i];
        let (lo, hi) = range(&mags[i]);
        tiles.push(figure::gray(mags[i].view(), lo, hi, &format!("s{i}")));
        let t = &train_mags[m.train_index];
        let (lo, hi) = range(t);
        tiles.push(figure::gray(
            t.view(),
            lo,
            hi,
            &format!("{:.3}", m.similarity),
        ));
    }
    figure::write_grid(&a.out.join(FILES[3]), &tiles, 2)?;

    println!(
        "{} samples vs {} training slices: NCC mean {:.3}, max {:.3}; above 0.90: {:.0} %, 0.95: {:.0} %, 0.99: {:.0} %",
        a.samples,
        train.len(),
        report.mean,
        report.max,
        100.0 * report.fraction_above_0_90,
        100.0 * report.fraction_above_0_95,
        100.0 * report.fraction_above_0_99
    );
    println!("wrote {} in {}", FILES.join(", "), a.out.display());
    Ok(())
}

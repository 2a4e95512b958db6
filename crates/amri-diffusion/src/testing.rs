//! A tiny trained prior for tests and examples: four 32×32 disc phantoms measured with random
//! Cartesian R=4 (12.5 % centre lines, δ = 0.2, single coil), a `tiny` U-Net narrowed to 8 base
//! channels, trained for a few steps and saved as a training run. Training it takes about a
//! second on a CPU; it is not a useful prior, only a real one of the shipped format.

use std::path::{Path, PathBuf};

use amri_ops::simulate::Acquisition;
use candle_core::Device;
use ndarray::Array2;

use crate::checkpoint::TrainingRecord;
use crate::data::{TrainObjective, TrainingSet};
use crate::precond::DenoiserConfig;
use crate::train::{save_run_checkpoint, Objective, TrainConfig, Trainer};
use crate::{DiffusionError, Result};

/// Side of the tiny prior's square images, pixels.
pub const TINY_SIZE: usize = 32;

/// The tiny prior's acquisition: random Cartesian R=4, 12.5 % centre lines, δ = 0.2, one coil.
pub fn tiny_acquisition() -> Result<Acquisition> {
    serde_json::from_value(serde_json::json!({
        "corruption": {"type": "kspace", "pattern": "random", "acceleration": 4.0,
                       "center_fraction": 0.125},
        "delta": 0.2
    }))
    .map_err(|e| DiffusionError::Config(format!("tiny acquisition: {e}")))
}

/// The tiny prior's training slices: four 32×32 discs of radius 10 with a linear fall-off,
/// their centres one pixel apart along the columns.
pub fn tiny_slices() -> Vec<Array2<f32>> {
    let c = TINY_SIZE as f32 / 2.0;
    (0..4)
        .map(|k| {
            Array2::from_shape_fn((TINY_SIZE, TINY_SIZE), |(r, col)| {
                let d =
                    ((r as f32 - c).powi(2) + (col as f32 - (c - 1.0) - k as f32).powi(2)).sqrt();
                if d < 10.0 {
                    1.0 - d / 20.0
                } else {
                    0.0
                }
            })
        })
        .collect()
}

/// The smallest complex denoiser the tests train: the `tiny` preset (σ_d = 0.5) narrowed to 8
/// base channels, levels ×(1, 2), groups of 4 and no attention.
pub fn micro_config() -> Result<DenoiserConfig> {
    let mut cfg = DenoiserConfig::complex_preset("tiny", 0.5)?;
    cfg.unet.base_channels = 8;
    cfg.unet.channel_mult = vec![1, 2];
    cfg.unet.attention_levels = vec![];
    cfg.unet.groups = 4;
    cfg.unet.attention_head_channels = 8;
    Ok(cfg)
}

/// A tiny prior in training: its data set and its trainer after `steps` ambient k-space steps
/// of batch 2 (seed 0).
pub struct TinyRun {
    /// The acquisition the slices were measured with.
    pub acquisition: Acquisition,
    /// The measured training set.
    pub set: TrainingSet,
    /// The trainer (raw and EMA weights).
    pub trainer: Trainer,
}

impl TinyRun {
    /// Trains the tiny prior for `steps` steps on `dev`.
    pub fn train(steps: u64, dev: &Device) -> Result<TinyRun> {
        let acquisition = tiny_acquisition()?;
        let set = TrainingSet::new(&tiny_slices(), &acquisition, TrainObjective::Ambient)?;
        let mut dcfg = DenoiserConfig::complex_preset("tiny", 0.5)?;
        dcfg.unet.base_channels = 8;
        dcfg.unet.channel_mult = vec![1, 2];
        dcfg.unet.attention_levels = vec![1];
        dcfg.unet.groups = 4;
        dcfg.unet.attention_head_channels = 8;
        let mut trainer = Trainer::new(&dcfg, &TrainConfig::default(), dev)?;
        for step in 0..steps {
            trainer.step(&set.step_batch(2, 0, step, dev)?)?;
        }
        Ok(TinyRun {
            acquisition,
            set,
            trainer,
        })
    }

    /// Saves the run's checkpoint with its model card under `run` (a training-run folder, as
    /// `amri train --out` writes) and returns the checkpoint folder.
    pub fn save(&self, run: &Path) -> Result<PathBuf> {
        let card = self.trainer.card(
            Objective::AmbientKspace,
            Some("tiny"),
            Some(TrainingRecord {
                protocol: "test".into(),
                acquisition: self.acquisition.clone(),
                batch: 2,
                objective: TrainObjective::Ambient,
                slices: self.set.len(),
                base: None,
                measured: None,
                augment: Default::default(),
                views: None,
                finetune: None,
                matrices: None,
            }),
        )?;
        save_run_checkpoint(&self.trainer, run, &card)
    }
}

//! Training: AdamW with linear learning-rate warm-up, gradient clipping by global norm, an
//! exponential moving average (EMA) of the weights, seeded noise levels / noise / data order, and
//! checkpoints as safetensors plus a JSON model card, each written atomically (temp file +
//! rename).
//!
//! A step takes a [`Batch`] already carrying the corruption (A and Ã masks); σ and the noise are
//! drawn by the trainer from its seeded RNG, so the same seed and the same batches give the same
//! weights. Resume, fine-tuning and CLI wiring are not here yet.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::backprop::GradStore;
use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{AdamW, Optimizer, ParamsAdamW, VarBuilder, VarMap};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use serde::{Deserialize, Serialize};

use crate::error::{DiffusionError, Result};
use crate::fourier::CenteredDft2;
use crate::loss::{ambient_kspace_loss, ambient_pixel_loss, supervised_loss};
use crate::precond::{denoiser, Denoiser, DenoiserConfig, SigmaSampler};

/// File name of the raw (optimiser) weights inside a checkpoint directory.
pub const WEIGHTS_FILE: &str = "model.safetensors";
/// File name of the EMA weights inside a checkpoint directory.
pub const EMA_FILE: &str = "ema.safetensors";
/// File name of the model card inside a checkpoint directory.
pub const CARD_FILE: &str = "model.json";

/// Optimisation hyper-parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    /// Peak learning rate of AdamW.
    pub lr: f64,
    /// Steps of linear warm-up from `lr/warmup_steps` to `lr` (0: none).
    pub warmup_steps: usize,
    /// AdamW decoupled weight decay.
    pub weight_decay: f64,
    /// Clip gradients to this global L2 norm (`None`: no clipping).
    pub grad_clip: Option<f64>,
    /// EMA decay per step, in [0, 1) (0.999 is typical; 0 copies the weights).
    pub ema_decay: f64,
    /// Seed of σ, noise and data-order draws.
    pub seed: u64,
    /// Log-normal training noise levels.
    pub sigma: SigmaSampler,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            lr: 1e-3,
            warmup_steps: 100,
            weight_decay: 0.0,
            grad_clip: Some(1.0),
            ema_decay: 0.999,
            seed: 0,
            sigma: SigmaSampler::default(),
        }
    }
}

/// Which loss a model was trained with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Objective {
    /// [`crate::loss::ambient_pixel_loss`].
    AmbientPixel,
    /// [`crate::loss::ambient_kspace_loss`].
    AmbientKspace,
    /// [`crate::loss::supervised_loss`].
    Supervised,
}

/// One mini-batch, NCHW `f32`, masks `[N, 1, H, W]` (or broadcastable) in {0, 1}.
#[derive(Debug, Clone)]
pub enum Batch {
    /// Image-domain corruption: `x_a = A ⊙ x0` `[N, 2, H, W]`, A and Ã ⊆ A.
    AmbientPixel {
        /// `A ⊙ x0`, real/imag.
        x_a: Tensor,
        /// A.
        mask_a: Tensor,
        /// Ã.
        mask_tilde: Tensor,
    },
    /// Single-coil Cartesian k-space: `y = M ⊙ F x0` `[N, 2, H, W]` centred, M and M̃ ⊆ M.
    AmbientKspace {
        /// `M ⊙ F x0`, real/imag.
        y: Tensor,
        /// M.
        mask_a: Tensor,
        /// M̃.
        mask_tilde: Tensor,
    },
    /// Clean images `x0` `[N, 2, H, W]`.
    Supervised {
        /// x0, real/imag.
        x0: Tensor,
    },
}

impl Batch {
    /// The objective this batch trains.
    pub fn objective(&self) -> Objective {
        match self {
            Batch::AmbientPixel { .. } => Objective::AmbientPixel,
            Batch::AmbientKspace { .. } => Objective::AmbientKspace,
            Batch::Supervised { .. } => Objective::Supervised,
        }
    }

    fn data(&self) -> &Tensor {
        match self {
            Batch::AmbientPixel { x_a, .. } => x_a,
            Batch::AmbientKspace { y, .. } => y,
            Batch::Supervised { x0 } => x0,
        }
    }
}

/// What one optimisation step did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepStats {
    /// Step index (0-based) that was just taken.
    pub step: usize,
    /// Loss value before the update.
    pub loss: f32,
    /// Global gradient L2 norm before clipping.
    pub grad_norm: f32,
    /// Learning rate used.
    pub lr: f64,
}

/// Deterministic order of `n` examples for `epoch` under `seed` (a permutation of `0..n`).
pub fn data_order(n: usize, seed: u64, epoch: u64) -> Vec<usize> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ epoch.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let mut idx: Vec<usize> = (0..n).collect();
    idx.shuffle(&mut rng);
    idx
}

/// Learning rate at `step` (0-based): linear warm-up `lr·(step+1)/warmup` then constant `lr`.
pub fn warmup_lr(cfg: &TrainConfig, step: usize) -> f64 {
    if cfg.warmup_steps == 0 || step >= cfg.warmup_steps {
        cfg.lr
    } else {
        cfg.lr * (step + 1) as f64 / cfg.warmup_steps as f64
    }
}

/// Scales the gradients of `vars` in `grads` so their global L2 norm is at most `max_norm`;
/// returns the norm before clipping. Vars without a gradient are skipped.
pub fn clip_grad_norm(grads: &mut GradStore, vars: &[Var], max_norm: Option<f64>) -> Result<f32> {
    let mut total = 0f64;
    for v in vars {
        if let Some(g) = grads.get(v.as_tensor()) {
            total += g
                .sqr()?
                .sum_all()?
                .to_dtype(DType::F64)?
                .to_scalar::<f64>()?;
        }
    }
    let norm = total.sqrt();
    if let Some(max) = max_norm {
        if norm > max && norm.is_finite() {
            let scale = max / norm;
            for v in vars {
                if let Some(g) = grads.remove(v.as_tensor()) {
                    grads.insert(v.as_tensor(), (g * scale)?);
                }
            }
        }
    }
    Ok(norm as f32)
}

/// Everything needed to rebuild and interpret a checkpoint; stored as `model.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelCard {
    /// Card format tag, `"amri-diffusion/1"`.
    pub format: String,
    /// Version of amri-diffusion that wrote the card.
    pub amri_version: String,
    /// U-Net preset name the model started from, if any (`"tiny"`, `"base"`).
    pub preset: Option<String>,
    /// Network and preconditioning (channels: 2 image (real, imag) + mask channels).
    pub denoiser: DenoiserConfig,
    /// Training loss.
    pub objective: Objective,
    /// Free-form description of the corruption protocol (e.g. amri-ops `CorruptionConfig` JSON).
    pub corruption: serde_json::Value,
    /// Optimisation steps taken.
    pub steps: usize,
    /// Training seed.
    pub seed: u64,
    /// Optimisation hyper-parameters.
    pub train: TrainConfig,
}

/// Trains a [`Denoiser`] with AdamW, warm-up, clipping and EMA.
pub struct Trainer {
    dcfg: DenoiserConfig,
    cfg: TrainConfig,
    varmap: VarMap,
    model: Denoiser,
    opt: AdamW,
    /// (name, var, EMA copy), sorted by name.
    ema: Vec<(String, Var, Tensor)>,
    step: usize,
    rng: ChaCha8Rng,
    dft: Option<CenteredDft2>,
}

impl std::fmt::Debug for Trainer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Trainer")
            .field("denoiser", &self.dcfg)
            .field("train", &self.cfg)
            .field("step", &self.step)
            .finish()
    }
}

fn sorted_vars(vm: &VarMap) -> Vec<(String, Var)> {
    let data = vm.data().lock().unwrap_or_else(|p| p.into_inner());
    let mut v: Vec<(String, Var)> = data.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

impl Trainer {
    /// A freshly initialised model on `dev`; initial weights are drawn by candle's RNG.
    pub fn new(dcfg: &DenoiserConfig, cfg: &TrainConfig, dev: &Device) -> Result<Self> {
        if !(0.0..1.0).contains(&cfg.ema_decay) || cfg.lr.is_nan() || cfg.lr <= 0.0 {
            return Err(DiffusionError::Config(
                "ema_decay must be in [0, 1) and lr > 0".into(),
            ));
        }
        let varmap = VarMap::new();
        let model = denoiser(dcfg, VarBuilder::from_varmap(&varmap, DType::F32, dev))?;
        let vars = sorted_vars(&varmap);
        let opt = AdamW::new(
            vars.iter().map(|(_, v)| v.clone()).collect(),
            ParamsAdamW {
                lr: warmup_lr(cfg, 0),
                weight_decay: cfg.weight_decay,
                ..Default::default()
            },
        )?;
        let ema = vars
            .into_iter()
            .map(|(n, v)| {
                let e = v.as_tensor().copy()?;
                Ok((n, v, e))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            dcfg: dcfg.clone(),
            cfg: cfg.clone(),
            varmap,
            model,
            opt,
            ema,
            step: 0,
            rng: ChaCha8Rng::seed_from_u64(cfg.seed),
            dft: None,
        })
    }

    /// The model being trained (raw weights).
    pub fn model(&self) -> &Denoiser {
        &self.model
    }

    /// The trainable variables.
    pub fn varmap(&self) -> &VarMap {
        &self.varmap
    }

    /// Steps taken so far.
    pub fn steps(&self) -> usize {
        self.step
    }

    /// Total number of trainable parameters.
    pub fn num_parameters(&self) -> usize {
        self.ema.iter().map(|(_, v, _)| v.elem_count()).sum()
    }

    /// The EMA weights by variable name.
    pub fn ema_weights(&self) -> HashMap<String, Tensor> {
        self.ema
            .iter()
            .map(|(n, _, e)| (n.clone(), e.clone()))
            .collect()
    }

    fn dft_for(&mut self, h: usize, w: usize, dev: &Device) -> Result<CenteredDft2> {
        match &self.dft {
            Some(d) if d.shape() == (h, w) => Ok(d.clone()),
            _ => {
                let d = CenteredDft2::new(h, w, dev)?;
                self.dft = Some(d.clone());
                Ok(d)
            }
        }
    }

    /// The batch's loss (scalar tensor, differentiable) at given `sigma: [N]` and
    /// `noise: [N, 2, H, W]` (image noise, or k-space noise for [`Batch::AmbientKspace`]).
    pub fn loss(&mut self, batch: &Batch, sigma: &Tensor, noise: &Tensor) -> Result<Tensor> {
        let p = self.dcfg.precond;
        match batch {
            Batch::AmbientPixel {
                x_a,
                mask_a,
                mask_tilde,
            } => ambient_pixel_loss(&self.model, &p, x_a, mask_a, mask_tilde, sigma, noise),
            Batch::AmbientKspace {
                y,
                mask_a,
                mask_tilde,
            } => {
                let (_, _, h, w) = y.dims4()?;
                let dft = self.dft_for(h, w, y.device())?;
                ambient_kspace_loss(&self.model, &p, &dft, y, mask_a, mask_tilde, sigma, noise)
            }
            Batch::Supervised { x0 } => supervised_loss(&self.model, &p, x0, sigma, noise),
        }
    }

    /// Draws σ `[N]` and noise shaped like the batch from the trainer's seeded RNG.
    pub fn draw_noise(&mut self, batch: &Batch) -> Result<(Tensor, Tensor)> {
        let x = batch.data();
        let dims = x.dims4()?;
        let sig = self.cfg.sigma.sample(dims.0, &mut self.rng)?;
        let count = x.elem_count();
        let noise: Vec<f32> = (0..count)
            .map(|_| StandardNormal.sample(&mut self.rng))
            .collect();
        Ok((
            Tensor::from_vec(sig, dims.0, x.device())?,
            Tensor::from_vec(noise, dims, x.device())?,
        ))
    }

    /// One optimisation step: draw σ and noise, loss, backward, clip, AdamW at the warm-up
    /// learning rate, EMA update.
    pub fn step(&mut self, batch: &Batch) -> Result<StepStats> {
        let (sigma, noise) = self.draw_noise(batch)?;
        let loss = self.loss(batch, &sigma, &noise)?;
        let loss_value = loss.to_scalar::<f32>()?;
        if !loss_value.is_finite() {
            return Err(DiffusionError::Config(format!(
                "non-finite loss {loss_value} at step {}",
                self.step
            )));
        }
        let mut grads = loss.backward()?;
        let vars: Vec<Var> = self.ema.iter().map(|(_, v, _)| v.clone()).collect();
        let grad_norm = clip_grad_norm(&mut grads, &vars, self.cfg.grad_clip)?;
        let lr = warmup_lr(&self.cfg, self.step);
        self.opt.set_learning_rate(lr);
        self.opt.step(&grads)?;
        let d = self.cfg.ema_decay;
        for (_, v, e) in self.ema.iter_mut() {
            *e = ((&*e * d)? + (v.as_tensor().detach() * (1.0 - d))?)?;
        }
        let stats = StepStats {
            step: self.step,
            loss: loss_value,
            grad_norm,
            lr,
        };
        self.step += 1;
        Ok(stats)
    }

    /// The model card for the current state, trained with `objective` on the corruption protocol
    /// described by `corruption`.
    pub fn card(
        &self,
        objective: Objective,
        preset: Option<&str>,
        corruption: serde_json::Value,
    ) -> Result<ModelCard> {
        Ok(ModelCard {
            format: "amri-diffusion/1".into(),
            amri_version: env!("CARGO_PKG_VERSION").into(),
            preset: preset.map(str::to_owned),
            denoiser: self.dcfg.clone(),
            objective,
            corruption,
            steps: self.step,
            seed: self.cfg.seed,
            train: self.cfg.clone(),
        })
    }

    /// Writes `model.safetensors` (raw weights), `ema.safetensors` and `model.json` into `dir`
    /// (created if missing), each via a temporary file renamed into place.
    pub fn save_checkpoint(&self, dir: &Path, card: &ModelCard) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|source| DiffusionError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let weights = dir.join(WEIGHTS_FILE);
        let tmp = tmp_path(&weights);
        self.varmap.save(&tmp)?;
        rename(&tmp, &weights)?;
        let ema = dir.join(EMA_FILE);
        let tmp = tmp_path(&ema);
        candle_core::safetensors::save(&self.ema_weights(), &tmp)?;
        rename(&tmp, &ema)?;
        let json = serde_json::to_vec_pretty(card)?;
        write_atomic(&dir.join(CARD_FILE), &json)
    }
}

/// Which weights of a checkpoint to load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Weights {
    /// The optimiser's weights (`model.safetensors`).
    Raw,
    /// The EMA weights (`ema.safetensors`), normally used for inference.
    Ema,
}

/// Reads a checkpoint directory: its card and a [`Denoiser`] with the chosen weights on `dev`.
pub fn load_checkpoint(dir: &Path, which: Weights, dev: &Device) -> Result<(ModelCard, Denoiser)> {
    let card_path = dir.join(CARD_FILE);
    let bytes = std::fs::read(&card_path).map_err(|source| DiffusionError::Io {
        path: card_path.clone(),
        source,
    })?;
    let card: ModelCard = serde_json::from_slice(&bytes)?;
    let mut vm = VarMap::new();
    let model = denoiser(
        &card.denoiser,
        VarBuilder::from_varmap(&vm, DType::F32, dev),
    )?;
    let file = dir.join(match which {
        Weights::Raw => WEIGHTS_FILE,
        Weights::Ema => EMA_FILE,
    });
    vm.load(&file)?;
    Ok((card, model))
}

fn tmp_path(p: &Path) -> PathBuf {
    let mut name = p.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(format!(".tmp{}", std::process::id()));
    p.with_file_name(name)
}

fn rename(from: &Path, to: &Path) -> Result<()> {
    std::fs::rename(from, to).map_err(|source| DiffusionError::Io {
        path: to.to_path_buf(),
        source,
    })
}

/// Writes `bytes` to `path` through a temporary file in the same directory and a rename, so a
/// reader never sees a half-written file.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = tmp_path(path);
    std::fs::write(&tmp, bytes).map_err(|source| DiffusionError::Io {
        path: tmp.clone(),
        source,
    })?;
    rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::Rng;

    fn small_cfg() -> Result<DenoiserConfig> {
        let mut cfg = DenoiserConfig::complex_preset("tiny", 0.5)?;
        cfg.unet.base_channels = 16;
        cfg.unet.channel_mult = vec![1, 2];
        cfg.unet.attention_levels = vec![1];
        cfg.unet.groups = 4;
        cfg.unet.attention_head_channels = 16;
        Ok(cfg)
    }

    /// Smooth synthetic complex images `[n, 2, s, s]` (random low-frequency sinusoids, σ ≈ 0.5)
    /// with Bernoulli(p_keep) pixel masks A and Ã = A with a further fraction `delta` hidden.
    fn synthetic_pixel_batch(
        n: usize,
        s: usize,
        p_keep: f64,
        delta: f64,
        rng: &mut ChaCha8Rng,
        dev: &Device,
    ) -> Result<Batch> {
        let mut x = Vec::with_capacity(n * 2 * s * s);
        let mut a = Vec::with_capacity(n * s * s);
        let mut at = Vec::with_capacity(n * s * s);
        for _ in 0..n {
            let (fx, fy, ph): (f64, f64, f64) = (
                rng.random_range(0.5..2.0),
                rng.random_range(0.5..2.0),
                rng.random_range(0.0..std::f64::consts::TAU),
            );
            for c in 0..2 {
                for r in 0..s {
                    for q in 0..s {
                        let t = std::f64::consts::TAU * (fx * r as f64 + fy * q as f64) / s as f64
                            + ph
                            + c as f64;
                        x.push((0.5 * t.sin()) as f32);
                    }
                }
            }
            for _ in 0..s * s {
                let keep = rng.random_bool(p_keep);
                a.push(keep as u8 as f32);
                at.push((keep && !rng.random_bool(delta)) as u8 as f32);
            }
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

    #[test]
    fn data_order_is_a_seeded_permutation() {
        let a = data_order(50, 3, 0);
        assert_eq!(a, data_order(50, 3, 0));
        assert_ne!(a, data_order(50, 3, 1));
        assert_ne!(a, data_order(50, 4, 0));
        let mut s = a.clone();
        s.sort_unstable();
        assert_eq!(s, (0..50).collect::<Vec<_>>());
    }

    #[test]
    fn warmup_is_linear_then_constant() {
        let cfg = TrainConfig {
            lr: 1e-3,
            warmup_steps: 4,
            ..Default::default()
        };
        let lrs: Vec<f64> = (0..6).map(|s| warmup_lr(&cfg, s)).collect();
        let want = [2.5e-4, 5e-4, 7.5e-4, 1e-3, 1e-3, 1e-3];
        for (a, b) in lrs.iter().zip(want) {
            assert!((a - b).abs() < 1e-15);
        }
    }

    #[test]
    fn clipping_bounds_global_norm_and_keeps_direction() -> Result<()> {
        let dev = Device::Cpu;
        let v1 = Var::from_tensor(&Tensor::new(&[1f32, 2.0], &dev)?)?;
        let v2 = Var::from_tensor(&Tensor::new(&[[3f32]], &dev)?)?;
        // loss = 3·Σv1 + 4·Σv2 → grads (3, 3) and (4): norm √34
        let loss = ((v1.as_tensor().sum_all()? * 3.0)? + (v2.as_tensor().sum_all()? * 4.0)?)?;
        let mut g = loss.backward()?;
        let vars = [v1.clone(), v2.clone()];
        let n = clip_grad_norm(&mut g, &vars, Some(1.0))?;
        assert!((n - 34f32.sqrt()).abs() < 1e-5);
        let after = clip_grad_norm(&mut g, &vars, None)?;
        assert!((after - 1.0).abs() < 1e-5);
        let g1 = g
            .get(v1.as_tensor())
            .map(|t| t.to_vec1::<f32>())
            .transpose()?;
        let k = 1.0 / 34f32.sqrt();
        assert_eq!(g1.map(|v| v.len()), Some(2));
        let g1 = g
            .get(v1.as_tensor())
            .map(|t| t.to_vec1::<f32>())
            .transpose()?
            .unwrap_or_default();
        assert!((g1[0] - 3.0 * k).abs() < 1e-6 && (g1[1] - 3.0 * k).abs() < 1e-6);
        Ok(())
    }

    #[test]
    fn ema_follows_its_recursion() -> Result<()> {
        let dev = Device::Cpu;
        let cfg = TrainConfig {
            ema_decay: 0.9,
            warmup_steps: 0,
            lr: 1e-2,
            ..Default::default()
        };
        let mut t = Trainer::new(&small_cfg()?, &cfg, &dev)?;
        let before = t.ema_weights();
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let b = synthetic_pixel_batch(2, 8, 0.7, 0.2, &mut rng, &dev)?;
        t.step(&b)?;
        let after = t.ema_weights();
        let mut moved = 0usize;
        for (name, var) in sorted_vars(t.varmap()) {
            let want = ((&before[&name] * 0.9)? + (var.as_tensor() * 0.1)?)?;
            let err = (&after[&name] - want)?
                .abs()?
                .max_all()?
                .to_scalar::<f32>()?;
            assert!(err < 1e-6, "{name}: {err}");
            let d = (&after[&name] - &before[&name])?
                .abs()?
                .max_all()?
                .to_scalar::<f32>()?;
            moved += (d > 0.0) as usize;
        }
        assert!(moved > 0, "no weight moved");
        Ok(())
    }

    #[test]
    fn ambient_training_loss_decreases_on_synthetic_images() -> Result<()> {
        let dev = Device::Cpu;
        let cfg = TrainConfig {
            lr: 3e-3,
            warmup_steps: 5,
            grad_clip: Some(1.0),
            ema_decay: 0.9,
            seed: 11,
            ..Default::default()
        };
        let mut t = Trainer::new(&small_cfg()?, &cfg, &dev)?;
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let eval = synthetic_pixel_batch(16, 16, 0.8, 0.2, &mut rng, &dev)?;
        // fixed evaluation σ grid and noise
        let sig = Tensor::from_vec(
            (0..16)
                .map(|i| 0.05f32 * 1.3f32.powi(i))
                .collect::<Vec<_>>(),
            16,
            &dev,
        )?;
        let noise = Tensor::randn(0f32, 1., (16, 2, 16, 16), &dev)?;
        let l0 = t.loss(&eval, &sig, &noise)?.to_scalar::<f32>()?;
        let mut first = 0.0;
        for step in 0..50 {
            let b = synthetic_pixel_batch(8, 16, 0.8, 0.2, &mut rng, &dev)?;
            let s = t.step(&b)?;
            assert!(s.loss.is_finite() && s.grad_norm.is_finite());
            if step == 0 {
                first = s.loss;
            }
        }
        let l1 = t.loss(&eval, &sig, &noise)?.to_scalar::<f32>()?;
        eprintln!("eval loss {l0} -> {l1} (first train batch {first})");
        assert!(
            l1 < 0.7 * l0,
            "eval loss did not decrease enough: {l0} -> {l1}"
        );
        Ok(())
    }

    #[test]
    fn checkpoint_round_trip_and_card() -> Result<()> {
        let dev = Device::Cpu;
        let dir = tempfile::tempdir().map_err(|source| DiffusionError::Io {
            path: "tempdir".into(),
            source,
        })?;
        let cfg = TrainConfig {
            ema_decay: 0.5,
            seed: 9,
            ..Default::default()
        };
        let mut t = Trainer::new(&small_cfg()?, &cfg, &dev)?;
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        let b = synthetic_pixel_batch(2, 8, 0.7, 0.2, &mut rng, &dev)?;
        t.step(&b)?;
        t.step(&b)?;
        let corruption = serde_json::json!({"kind": "pixel", "p_keep": 0.7, "delta": 0.2});
        let card = t.card(Objective::AmbientPixel, Some("tiny"), corruption)?;
        t.save_checkpoint(dir.path(), &card)?;
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .map_err(|source| DiffusionError::Io {
                path: dir.path().into(),
                source,
            })?
            .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect();
        assert_eq!(names.len(), 3, "stray files: {names:?}");
        let (card2, raw) = load_checkpoint(dir.path(), Weights::Raw, &dev)?;
        assert_eq!(card2, card);
        assert_eq!(card2.steps, 2);
        assert_eq!(card2.seed, 9);
        let (_, ema) = load_checkpoint(dir.path(), Weights::Ema, &dev)?;
        let x = Tensor::randn(0f32, 1., (1, 2, 8, 8), &dev)?;
        let m = Tensor::ones((1, 1, 8, 8), DType::F32, &dev)?;
        let s = Tensor::new(&[0.7f32], &dev)?;
        let want = t.model().forward(&x, &m, &s)?;
        let got = raw.forward(&x, &m, &s)?;
        assert_eq!(
            (want.clone() - got)?.abs()?.max_all()?.to_scalar::<f32>()?,
            0.0
        );
        let got_ema = ema.forward(&x, &m, &s)?;
        assert!(
            (want - got_ema)?.abs()?.max_all()?.to_scalar::<f32>()? > 0.0,
            "EMA equals raw weights"
        );
        assert!(load_checkpoint(&dir.path().join("missing"), Weights::Raw, &dev).is_err());
        Ok(())
    }
}

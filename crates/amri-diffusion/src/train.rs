//! Training: AdamW with linear learning-rate warm-up, gradient clipping by global norm, an
//! exponential moving average (EMA) of the weights, seeded noise levels / noise / data order, and
//! checkpoints (written through [`crate::checkpoint`]: safetensors plus a JSON model card, each
//! through a synced temporary file and a rename).
//!
//! A step takes a [`Batch`] already carrying the corruption (A and Ã masks); σ and the noise of
//! step `t` are drawn from an RNG seeded by `(seed, t)` ([`step_rng`]), so nothing but the step
//! counter is needed to continue the random stream.
//!
//! **Exact resume.** A checkpoint holds the raw weights, the EMA weights, the optimiser state
//! ([`crate::optim::AdamW`]: first/second moments and its step count) and the card with the step
//! counter and configuration. Because every random draw of step `t` — σ, noise and (with
//! [`crate::data`]) the data order and `Ã` — is a function of `(seed, t)`, [`Trainer::resume`]
//! continues bitwise as if training had never stopped (tested).
//!
//! **Checkpoints.** [`save_run_checkpoint`] writes `RUN/ckpt-<step:08>/` and then points
//! `RUN/latest` at it; the layout, the card and loading live in [`crate::checkpoint`].

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::backprop::GradStore;
use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

use crate::adapt::{is_adapted, LoraBackend, BASE_PREFIX, LORA_FILE};
use crate::checkpoint::{
    check_tensors, create_dir, load_varmap, missing, read_card, resolve_checkpoint, save_in_run,
    sorted_vars, varmap_shapes, write_atomic, write_file_atomic, IntensityNorm, ModelCard,
    TrainingRecord, CARD_FILE, EMA_FILE, OPTIM_FILE, WEIGHTS_FILE,
};
use crate::error::{DiffusionError, Result};
use crate::fourier::CenteredDft2;
use crate::optim::{AdamW, AdamWParams};
use crate::precond::{denoiser, Denoiser, DenoiserConfig};
use crate::seed::{derive_seed, name_hash, step_rng, TAG_INIT};

// The trainer's inputs: the batch type, and the configuration and objective defined with the
// model card, whose on-disk shape they are part of.
pub use crate::batch::Batch;
pub use crate::checkpoint::{Objective, TrainConfig};

/// Variable-name prefixes of the U-Net encoder (input convolution and `enc.*` blocks), for
/// [`TrainConfig::freeze`].
pub const ENCODER_PREFIXES: [&str; 2] = ["conv_in", "enc."];

/// Whether variable `name` is frozen by `prefixes`: a prefix matches the full variable name or
/// the U-Net's own name below the denoiser's `unet.` scope (so `enc.` freezes `unet.enc.*`).
pub fn is_frozen(name: &str, prefixes: &[String]) -> bool {
    let inner = name.strip_prefix("unet.");
    prefixes
        .iter()
        .any(|p| name.starts_with(p.as_str()) || inner.is_some_and(|n| n.starts_with(p.as_str())))
}

/// Draws the initial value of variable `name` with `shape` under candle-nn's `init` rule (same
/// distributions and bounds as `candle_nn::Init::var`), from a ChaCha8 RNG seeded by
/// [`derive_seed`]`(seed, fnv1a(name), TAG_INIT)`: a pure function of `(seed, name, shape, init)`,
/// independent of the order in which the model creates its variables.
pub fn seeded_init(
    init: candle_nn::Init,
    shape: &candle_core::Shape,
    name: &str,
    seed: u64,
    dev: &Device,
) -> Result<Tensor> {
    use candle_nn::init::NormalOrUniform;
    use candle_nn::Init;
    let n = shape.elem_count();
    let mut rng = ChaCha8Rng::seed_from_u64(derive_seed(seed, name_hash(name), TAG_INIT));
    let uniform = |rng: &mut ChaCha8Rng, lo: f64, up: f64| -> Vec<f32> {
        (0..n)
            .map(|_| (lo + (up - lo) * rand::Rng::random::<f64>(rng)) as f32)
            .collect()
    };
    let normal = |rng: &mut ChaCha8Rng, mean: f64, std: f64| -> Vec<f32> {
        (0..n)
            .map(|_| {
                let z: f64 = StandardNormal.sample(rng);
                (mean + std * z) as f32
            })
            .collect()
    };
    let values = match init {
        Init::Const(c) => vec![c as f32; n],
        Init::Uniform { lo, up } => uniform(&mut rng, lo, up),
        Init::Randn { mean, stdev } => normal(&mut rng, mean, stdev),
        Init::Kaiming {
            dist,
            fan,
            non_linearity,
        } => {
            let std = non_linearity.gain() / (fan.for_shape(shape) as f64).sqrt();
            match dist {
                NormalOrUniform::Uniform => {
                    let bound = 3f64.sqrt() * std;
                    uniform(&mut rng, -bound, bound)
                }
                NormalOrUniform::Normal => normal(&mut rng, 0.0, std),
            }
        }
    };
    Ok(Tensor::from_vec(values, shape.clone(), dev)?)
}

/// A [`VarMap`] whose missing variables are created by [`seeded_init`] instead of candle's
/// global RNG, so that building a model twice with one seed gives bitwise equal weights.
struct SeededVarMap {
    vm: VarMap,
    seed: u64,
    /// Prefixes of frozen variables ([`is_frozen`]): served detached, as constants of the graph,
    /// so that backward computes no gradient for them (nor for layers before the first trained
    /// one).
    frozen: Vec<String>,
}

impl SeededVarMap {
    /// The tensor the model holds for `var`: detached (same storage, no gradient) when frozen.
    fn serve(&self, name: &str, var: &Var) -> Tensor {
        if is_frozen(name, &self.frozen) {
            var.as_tensor().detach()
        } else {
            var.as_tensor().clone()
        }
    }
}

impl candle_nn::var_builder::SimpleBackend for SeededVarMap {
    fn get(
        &self,
        s: candle_core::Shape,
        name: &str,
        h: candle_nn::Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        let mut data = self.vm.data().lock().unwrap_or_else(|p| p.into_inner());
        if let Some(v) = data.get(name) {
            if v.shape() != &s {
                candle_core::bail!("shape mismatch on {name}: {s:?} <> {:?}", v.shape());
            }
            return Ok(self.serve(name, v));
        }
        let t = seeded_init(h, &s, name, self.seed, dev)
            .map_err(|e| candle_core::Error::Msg(format!("initialising {name}: {e}")))?
            .to_dtype(dtype)?;
        let var = Var::from_tensor(&t)?;
        let out = self.serve(name, &var);
        data.insert(name.to_owned(), var);
        Ok(out)
    }

    fn get_unchecked(&self, name: &str, _: DType, _: &Device) -> candle_core::Result<Tensor> {
        candle_core::bail!("variable {name} must be created with a shape")
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.vm
            .data()
            .lock()
            .map(|d| d.contains_key(name))
            .unwrap_or(false)
    }
}

/// A [`VarBuilder`] over `vm` that initialises every new variable with [`seeded_init`] under
/// `seed`.
pub fn seeded_var_builder(vm: &VarMap, seed: u64, dev: &Device) -> VarBuilder<'static> {
    frozen_var_builder(vm, seed, Vec::new(), dev)
}

/// [`seeded_var_builder`] whose variables matching the `frozen` prefixes ([`is_frozen`]) are
/// served detached: the model treats them as constants, so backward neither computes their
/// gradient nor runs through layers that only depend on frozen weights.
pub fn frozen_var_builder(
    vm: &VarMap,
    seed: u64,
    frozen: Vec<String>,
    dev: &Device,
) -> VarBuilder<'static> {
    VarBuilder::from_backend(
        Box::new(SeededVarMap {
            vm: vm.clone(),
            seed,
            frozen,
        }),
        DType::F32,
        dev.clone(),
    )
}

/// What one optimisation step did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepStats {
    /// Step index (0-based) that was just taken.
    pub step: usize,
    /// Loss value before the update.
    pub loss: f32,
    /// Global gradient L2 norm of the trainable (non-frozen) variables before clipping.
    pub grad_norm: f32,
    /// Learning rate used.
    pub lr: f64,
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

/// Trains a [`Denoiser`] with AdamW, warm-up, clipping and EMA.
pub struct Trainer {
    pub(crate) dcfg: DenoiserConfig,
    pub(crate) cfg: TrainConfig,
    varmap: VarMap,
    pub(crate) model: Denoiser,
    opt: AdamW,
    /// (name, var, EMA copy), sorted by name.
    ema: Vec<(String, Var, Tensor)>,
    /// The variables the optimiser updates (not frozen, or the LoRA adapters), sorted by name.
    trainable: Vec<Var>,
    /// Their names, in the same order.
    trainable_names: Vec<String>,
    /// Per entry of `ema`: whether the variable can change (trainable, or adapted by LoRA);
    /// the EMA of the others is left as it is, bit for bit.
    ema_moves: Vec<bool>,
    /// The LoRA state (frozen base and adapters) when `cfg.lora` is set; `varmap` then holds the
    /// merged weights and `model` is rebuilt from this after every update.
    lora: Option<LoraBackend>,
    pub(crate) step: usize,
    /// The centred DFT of the last k-space batch's size ([`crate::objective`]).
    pub(crate) dft: Option<CenteredDft2>,
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

/// The variable whose gradient differs most between two computations, as (name, relative L2
/// error `‖a − b‖/‖b‖`), over `(name, a, b)` triples on any devices; variables whose reference
/// gradient `b` is below 10⁻⁴ of the largest reference norm are skipped (their relative error is
/// rounding noise). ("", 0) when nothing is compared.
pub fn worst_gradient_mismatch(pairs: &[(String, Tensor, Tensor)]) -> Result<(String, f64)> {
    let cpu = Device::Cpu;
    let mut rows = Vec::with_capacity(pairs.len());
    for (name, a, b) in pairs {
        let a = a.to_device(&cpu)?.to_dtype(DType::F64)?;
        let b = b.to_device(&cpu)?.to_dtype(DType::F64)?;
        let diff = (a - &b)?.sqr()?.sum_all()?.to_scalar::<f64>()?.sqrt();
        let norm = b.sqr()?.sum_all()?.to_scalar::<f64>()?.sqrt();
        rows.push((name, diff, norm));
    }
    let largest = rows.iter().map(|r| r.2).fold(0.0, f64::max);
    let mut worst = (String::new(), 0.0);
    for (name, diff, norm) in rows {
        if norm <= 1e-4 * largest {
            continue;
        }
        let err = if diff.is_nan() {
            f64::INFINITY
        } else {
            diff / norm
        };
        if err > worst.1 {
            worst = (name.clone(), err);
        }
    }
    Ok(worst)
}

impl Trainer {
    /// A freshly initialised model on `dev`. Initial weights are drawn by [`seeded_init`] from
    /// `cfg.seed` (candle-nn's distributions, a ChaCha8 stream per variable name), so two fresh
    /// trainers with one seed hold bitwise equal weights.
    pub fn new(dcfg: &DenoiserConfig, cfg: &TrainConfig, dev: &Device) -> Result<Self> {
        if !(0.0..1.0).contains(&cfg.ema_decay) || cfg.lr.is_nan() || cfg.lr <= 0.0 {
            return Err(DiffusionError::Config(
                "ema_decay must be in [0, 1) and lr > 0".into(),
            ));
        }
        if !(cfg.consistency_weight.is_finite() && cfg.consistency_weight >= 0.0) {
            return Err(DiffusionError::Config(format!(
                "consistency_weight must be ≥ 0, got {}",
                cfg.consistency_weight
            )));
        }
        let varmap = VarMap::new();
        let mut model = denoiser(
            dcfg,
            frozen_var_builder(&varmap, cfg.seed, cfg.freeze.clone(), dev),
        )?;
        let vars = sorted_vars(&varmap);
        let mut lora = None;
        let trainable: Vec<(String, Var)> = if let Some(l) = cfg.lora {
            l.validate()?;
            if !cfg.freeze.is_empty() {
                return Err(DiffusionError::Config(
                    "LoRA freezes the whole base model; give no freeze prefixes with it".into(),
                ));
            }
            let base = vars
                .iter()
                .map(|(n, v)| Ok((n.clone(), v.as_tensor().copy()?.detach())))
                .collect::<Result<HashMap<_, _>>>()?;
            let backend = LoraBackend {
                base: Arc::new(base),
                adapters: VarMap::new(),
                cfg: l,
                seed: cfg.seed,
            };
            model = denoiser(dcfg, backend.var_builder(dev))?;
            let adapters = sorted_vars(&backend.adapters);
            lora = Some(backend);
            adapters
        } else {
            vars.iter()
                .filter(|(n, _)| !is_frozen(n, &cfg.freeze))
                .cloned()
                .collect()
        };
        if trainable.is_empty() {
            return Err(DiffusionError::Config(format!(
                "freeze prefixes {:?} leave no trainable variable",
                cfg.freeze
            )));
        }
        if let Some(p) = cfg.freeze.iter().find(|p| {
            !vars
                .iter()
                .any(|(n, _)| is_frozen(n, std::slice::from_ref(*p)))
        }) {
            return Err(DiffusionError::Config(format!(
                "freeze prefix {p:?} matches no variable of the model"
            )));
        }
        let trainable_vars = trainable.iter().map(|(_, v)| v.clone()).collect();
        let trainable_names = trainable.iter().map(|(n, _)| n.clone()).collect();
        let ema_moves = vars
            .iter()
            .map(|(n, v)| match cfg.lora {
                Some(_) => is_adapted(n, v.dims()),
                None => !is_frozen(n, &cfg.freeze),
            })
            .collect();
        let opt = AdamW::new(
            trainable,
            AdamWParams {
                lr: warmup_lr(cfg, 0),
                weight_decay: cfg.weight_decay,
                ..Default::default()
            },
        )?;
        let ema = vars
            .into_iter()
            .map(|(n, v)| {
                let e = v.as_tensor().copy()?.detach();
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
            trainable: trainable_vars,
            trainable_names,
            ema_moves,
            lora,
            step: 0,
            dft: None,
        })
    }

    /// With LoRA: replaces the frozen base weights by `base` (every variable of the model, by
    /// name) and rebuilds the adapted network and the merged weights.
    fn set_lora_base(&mut self, base: HashMap<String, Tensor>) -> Result<()> {
        if let Some(l) = &mut self.lora {
            let shapes = varmap_shapes(&self.varmap);
            for (n, (_, shape)) in &shapes {
                match base.get(n) {
                    Some(t) if t.dims() == shape.as_slice() => {}
                    _ => {
                        return Err(DiffusionError::Config(format!(
                            "LoRA base lacks {n} {shape:?} of the model"
                        )))
                    }
                }
            }
            l.base = Arc::new(base);
        }
        self.refresh_lora()
    }

    /// With LoRA: rebuilds the adapted network from the current adapters and writes the merged
    /// weights into the variables (`varmap`), which checkpoints save and the EMA follows.
    fn refresh_lora(&mut self) -> Result<()> {
        let Some(l) = &self.lora else {
            return Ok(());
        };
        let dev = self.model_device();
        self.model = denoiser(&self.dcfg, l.var_builder(&dev))?;
        for (name, var) in sorted_vars(&self.varmap) {
            if is_adapted(&name, var.dims()) {
                var.set(&l.weight(&name, &dev)?.detach())?;
            }
        }
        Ok(())
    }

    /// The LoRA adapters (`<layer>.lora_a`, `<layer>.lora_b`) when training with LoRA.
    pub fn lora_adapters(&self) -> Option<&VarMap> {
        self.lora.as_ref().map(|l| &l.adapters)
    }

    /// The frozen base weights by name when training with LoRA.
    pub fn lora_base(&self) -> Option<&HashMap<String, Tensor>> {
        self.lora.as_ref().map(|l| l.base.as_ref())
    }

    /// Number of parameters the optimiser updates (trainable variables or LoRA adapters).
    pub fn trained_parameters(&self) -> usize {
        self.trainable.iter().map(|v| v.elem_count()).sum()
    }

    /// Continues a run from a checkpoint (a run folder with `latest`, or a checkpoint folder):
    /// raw and EMA weights, optimiser moments and step count, the step counter and the
    /// configuration all come from it, so further [`Trainer::step`]s with the same batches give
    /// bitwise the weights an uninterrupted run would have. Returns the trainer and the card.
    pub fn resume(path: &Path, dev: &Device) -> Result<(Self, ModelCard)> {
        let dir = resolve_checkpoint(path)?;
        let card = read_card(&dir)?;
        let mut t = Self::new(&card.denoiser, &card.train, dev)?;
        load_varmap(&mut t.varmap, &dir.join(WEIGHTS_FILE))?;
        if t.lora.is_some() {
            t.load_lora(&dir.join(LORA_FILE))?;
        }
        t.load_ema(&dir.join(EMA_FILE))?;
        let optim = dir.join(OPTIM_FILE);
        if optim.is_file() {
            check_tensors(
                &optim,
                &t.optimizer_shapes(),
                "the optimiser state of the card's model",
            )?;
        }
        t.opt.load(&optim)?;
        if t.opt.step_count() != card.steps as u64 {
            return Err(DiffusionError::Config(format!(
                "checkpoint {}: optimiser has taken {} steps but the card says {}",
                dir.display(),
                t.opt.step_count(),
                card.steps
            )));
        }
        t.step = card.steps;
        Ok((t, card))
    }

    /// Starts fine-tuning from a checkpoint's **EMA** weights (raw and EMA copies both start
    /// there) with a new optimisation configuration `cfg`: fresh optimiser, step 0. The network
    /// and preconditioning come from the base card, which is returned.
    pub fn from_base(path: &Path, cfg: &TrainConfig, dev: &Device) -> Result<(Self, ModelCard)> {
        let dir = resolve_checkpoint(path)?;
        let card = read_card(&dir)?;
        let mut t = Self::new(&card.denoiser, cfg, dev)?;
        load_varmap(&mut t.varmap, &dir.join(EMA_FILE))?;
        if t.lora.is_some() {
            let base = sorted_vars(&t.varmap)
                .into_iter()
                .map(|(n, v)| Ok((n, v.as_tensor().copy()?.detach())))
                .collect::<Result<HashMap<_, _>>>()?;
            t.set_lora_base(base)?;
        }
        for (_, v, e) in t.ema.iter_mut() {
            *e = v.as_tensor().copy()?.detach();
        }
        Ok((t, card))
    }

    /// The tensors of [`LORA_FILE`]: every base weight under [`BASE_PREFIX`] and every adapter.
    fn lora_state(&self) -> Result<HashMap<String, Tensor>> {
        let mut out = HashMap::new();
        if let Some(l) = &self.lora {
            for (n, t) in l.base.iter() {
                out.insert(format!("{BASE_PREFIX}{n}"), t.clone());
            }
            for (n, v) in sorted_vars(&l.adapters) {
                out.insert(n, v.as_tensor().clone());
            }
        }
        Ok(out)
    }

    /// Restores the base weights and adapters from a [`LORA_FILE`] (shapes checked first).
    fn load_lora(&mut self, path: &Path) -> Result<()> {
        if !path.is_file() {
            return Err(missing(path));
        }
        let Some(l) = &self.lora else {
            return Ok(());
        };
        let mut expected = BTreeMap::new();
        for (n, (d, s)) in varmap_shapes(&self.varmap) {
            expected.insert(format!("{BASE_PREFIX}{n}"), (d, s));
        }
        for (n, (d, s)) in varmap_shapes(&l.adapters) {
            expected.insert(n, (d, s));
        }
        check_tensors(path, &expected, "the LoRA run its card describes")?;
        let dev = self.model_device();
        let mut loaded = candle_core::safetensors::load(path, &dev)?;
        for (n, v) in sorted_vars(&l.adapters) {
            let t = loaded
                .remove(&n)
                .ok_or_else(|| DiffusionError::Config(format!("{} lacks {n}", path.display())))?;
            v.set(&t)?;
        }
        let base = loaded
            .into_iter()
            .filter_map(|(n, t)| n.strip_prefix(BASE_PREFIX).map(|s| (s.to_owned(), t)))
            .collect();
        self.set_lora_base(base)
    }

    fn load_ema(&mut self, path: &Path) -> Result<()> {
        if !path.is_file() {
            return Err(missing(path));
        }
        check_tensors(
            path,
            &varmap_shapes(&self.varmap),
            "the model its card describes",
        )?;
        let dev = self.model_device();
        let loaded = candle_core::safetensors::load(path, &dev)?;
        for (n, v, e) in self.ema.iter_mut() {
            let t = loaded.get(n).ok_or_else(|| {
                DiffusionError::Config(format!("{} lacks variable {n}", path.display()))
            })?;
            if t.dims() != v.dims() {
                return Err(DiffusionError::Shape(format!(
                    "{n} in {}: expected {:?}, got {:?}",
                    path.display(),
                    v.dims(),
                    t.dims()
                )));
            }
            *e = t.clone();
        }
        Ok(())
    }

    /// Tensors of a saved optimiser state: `m.<name>`, `v.<name>` per trainable variable and
    /// the scalar `F64` `step`.
    fn optimizer_shapes(&self) -> BTreeMap<String, (&'static str, Vec<usize>)> {
        let mut out = BTreeMap::new();
        for (name, var) in self.trainable_names.iter().zip(&self.trainable) {
            out.insert(format!("m.{name}"), ("F32", var.dims().to_vec()));
            out.insert(format!("v.{name}"), ("F32", var.dims().to_vec()));
        }
        out.insert("step".into(), ("F64", Vec::new()));
        out
    }

    fn model_device(&self) -> Device {
        self.ema
            .first()
            .map(|(_, v, _)| v.device().clone())
            .unwrap_or(Device::Cpu)
    }

    /// The training configuration.
    pub fn config(&self) -> &TrainConfig {
        &self.cfg
    }

    /// The denoiser configuration.
    pub fn denoiser_config(&self) -> &DenoiserConfig {
        &self.dcfg
    }

    /// The optimiser (its state is part of every checkpoint).
    pub fn optimizer(&self) -> &AdamW {
        &self.opt
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

    /// Draws σ `[N]` and noise shaped like the batch for the current step, from
    /// [`step_rng`]`(seed, step)`: the same step always gets the same draws. For a
    /// [`Batch::Noisy`] each σ is redrawn until it exceeds the sample's σ_n (the log-normal
    /// restricted to σ > σ_n), unless the consistency loss is on (then any σ).
    pub fn draw_noise(&self, batch: &Batch) -> Result<(Tensor, Tensor)> {
        let x = batch.data();
        let dims = x.dims().to_vec();
        if dims.len() < 4 {
            return Err(DiffusionError::Shape(format!(
                "batch data must be [N, …, H, W], got {dims:?}"
            )));
        }
        let mut rng = step_rng(self.cfg.seed, self.step as u64);
        let sig = match batch {
            Batch::Noisy { .. } if self.cfg.consistency_weight > 0.0 => {
                self.cfg.sigma.sample(dims[0], &mut rng)?
            }
            Batch::Noisy { sigma_n, .. } => {
                let floor = sigma_n.to_vec1::<f32>()?;
                let mut out = Vec::with_capacity(floor.len());
                for sn in floor {
                    let mut tries = 0;
                    let s = loop {
                        let s = self.cfg.sigma.sample(1, &mut rng)?[0];
                        if s > sn {
                            break s;
                        }
                        tries += 1;
                        if tries > 100_000 {
                            return Err(DiffusionError::Config(format!(
                                "noise level σ_n = {sn} is above almost every training σ \
                                 (log-normal P_mean {}, P_std {})",
                                self.cfg.sigma.p_mean, self.cfg.sigma.p_std
                            )));
                        }
                    };
                    out.push(s);
                }
                out
            }
            _ => self.cfg.sigma.sample(dims[0], &mut rng)?,
        };
        let count = x.elem_count();
        let noise: Vec<f32> = (0..count)
            .map(|_| StandardNormal.sample(&mut rng))
            .collect();
        Ok((
            Tensor::from_vec(sig, dims[0], x.device())?,
            Tensor::from_vec(noise, dims, x.device())?,
        ))
    }

    /// Checks the gradient this trainer's device computes against the CPU's: the loss of `batch`
    /// at this step's σ and noise, backward on the model's device and on a CPU copy of the same
    /// weights, compared variable by variable (relative L2 error; variables whose CPU gradient
    /// is below 10⁻⁴ of the largest are skipped). Returns the largest error, 0 on the CPU;
    /// [`DiffusionError::Config`] names the worst variable when it exceeds `tol`. Guards GPU
    /// training against a backend that computes wrong gradients (e.g. candle 0.9.2's CUDA conv
    /// with a non-contiguous kernel, huggingface/candle#3893), which otherwise trains silently
    /// to nothing.
    pub fn check_gradients_against_cpu(&mut self, batch: &Batch, tol: f64) -> Result<f64> {
        if self.model_device().is_cpu() {
            return Ok(0.0);
        }
        self.check_gradients_on(batch, tol, &Device::Cpu)
    }

    /// [`Trainer::check_gradients_against_cpu`] with the reference computed on `reference`
    /// (any device, also this trainer's own).
    pub fn check_gradients_on(
        &mut self,
        batch: &Batch,
        tol: f64,
        reference: &Device,
    ) -> Result<f64> {
        let dev = self.model_device();
        let mut twin = Trainer::new(&self.dcfg, &self.cfg, reference)?;
        // the same step: draws derived from the step (the consistency loss's) must agree
        twin.step = self.step;
        {
            let mine = self.varmap.data().lock().unwrap_or_else(|p| p.into_inner());
            let theirs = twin.varmap.data().lock().unwrap_or_else(|p| p.into_inner());
            for (name, v) in mine.iter() {
                let t = theirs.get(name).ok_or_else(|| {
                    DiffusionError::Config(format!("the reference copy lacks variable {name}"))
                })?;
                t.set(&v.as_tensor().to_device(reference)?)?;
            }
        }
        if let Some(l) = &self.lora {
            for (name, v) in sorted_vars(&l.adapters) {
                if let Some(t) = twin.lora_adapters().and_then(|a| {
                    a.data()
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .get(&name)
                        .cloned()
                }) {
                    t.set(&v.as_tensor().to_device(reference)?)?;
                }
            }
            let base = l
                .base
                .iter()
                .map(|(n, t)| Ok((n.clone(), t.to_device(reference)?)))
                .collect::<Result<HashMap<_, _>>>()?;
            twin.set_lora_base(base)?;
        }
        let (sigma, noise) = self.draw_noise(batch)?;
        let grads = self.loss(batch, &sigma, &noise)?.backward()?;
        let moved = |t: &Tensor| -> Result<Tensor> { Ok(t.to_device(reference)?) };
        let ref_grads = twin
            .loss(&batch.map(&moved)?, &moved(&sigma)?, &moved(&noise)?)?
            .backward()?;
        // the trainable variables (frozen ones are constants of the graph and get no gradient)
        let theirs: HashMap<&String, &Var> =
            twin.trainable_names.iter().zip(&twin.trainable).collect();
        let mut pairs = Vec::new();
        for (name, v) in self.trainable_names.iter().zip(&self.trainable) {
            let (Some(g), Some(t)) = (grads.get(v.as_tensor()), theirs.get(name)) else {
                continue;
            };
            if let Some(r) = ref_grads.get(t.as_tensor()) {
                pairs.push((name.clone(), g.clone(), r.clone()));
            }
        }
        drop(theirs);
        let (name, err) = worst_gradient_mismatch(&pairs)?;
        if err > tol {
            return Err(DiffusionError::Config(format!(
                "the gradient computed on {dev:?} differs from the one on {reference:?}: relative \
                 error {err:.3} in {name} (tolerance {tol}); this device's backend computes wrong \
                 gradients, so training on it would not learn (train with --device cpu)"
            )));
        }
        Ok(err)
    }

    /// One optimisation step: draw σ and noise, loss, backward, clip the global gradient norm of
    /// the trainable (non-frozen) variables, AdamW at the warm-up learning rate, EMA update.
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
        // only the trainable variables: frozen ones have gradients too but are never updated
        let grad_norm = clip_grad_norm(&mut grads, &self.trainable, self.cfg.grad_clip)?;
        let lr = warmup_lr(&self.cfg, self.step);
        self.opt.set_learning_rate(lr);
        self.opt.step(&grads)?;
        self.refresh_lora()?;
        let d = self.cfg.ema_decay;
        for ((_, v, e), moves) in self.ema.iter_mut().zip(&self.ema_moves) {
            if *moves {
                *e = ((&*e * d)? + (v.as_tensor().detach() * (1.0 - d))?)?.detach();
            }
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

    /// The model card for the current state, trained with `objective` on what `record` describes
    /// (`None`: no training record), with data normalised by [`crate::data::measurement_scale`]
    /// ([`IntensityNorm::MeasuredPercentile`], the rule of [`crate::data::TrainingSet`]).
    pub fn card(
        &self,
        objective: Objective,
        preset: Option<&str>,
        record: Option<TrainingRecord>,
    ) -> Result<ModelCard> {
        Ok(ModelCard {
            format: "amri-diffusion/1".into(),
            amri_version: env!("CARGO_PKG_VERSION").into(),
            preset: preset.map(str::to_owned),
            denoiser: self.dcfg.clone(),
            objective,
            record,
            steps: self.step,
            seed: self.cfg.seed,
            train: self.cfg.clone(),
            normalisation: IntensityNorm::MeasuredPercentile,
        })
    }

    /// Writes `model.safetensors` (raw weights), `ema.safetensors`, `optim.safetensors` and
    /// `model.json` (last) into `dir` (created if missing), each via a synced temporary file
    /// renamed into place ([`write_file_atomic`]). For crash safety across the four files use [`save_run_checkpoint`].
    pub fn save_checkpoint(&self, dir: &Path, card: &ModelCard) -> Result<()> {
        create_dir(dir)?;
        write_file_atomic(&dir.join(WEIGHTS_FILE), |tmp| Ok(self.varmap.save(tmp)?))?;
        write_file_atomic(&dir.join(EMA_FILE), |tmp| {
            Ok(candle_core::safetensors::save(&self.ema_weights(), tmp)?)
        })?;
        write_file_atomic(&dir.join(OPTIM_FILE), |tmp| self.opt.save(tmp))?;
        if self.lora.is_some() {
            let state = self.lora_state()?;
            write_file_atomic(&dir.join(LORA_FILE), |tmp| {
                Ok(candle_core::safetensors::save(&state, tmp)?)
            })?;
        }
        let json = serde_json::to_vec_pretty(card)?;
        write_atomic(&dir.join(CARD_FILE), &json)
    }
}

/// Saves `trainer`'s state as `run/ckpt-<steps>/` then points `run/latest` at it (atomic
/// replace), then removes older `ckpt-*` folders except the one `latest` named before
/// ([`save_in_run`]). Returns the checkpoint folder. Safe against a kill at any point: `latest`
/// always names a complete checkpoint (or does not exist yet).
pub fn save_run_checkpoint(trainer: &Trainer, run: &Path, card: &ModelCard) -> Result<PathBuf> {
    save_in_run(run, trainer.steps(), |dir| {
        trainer.save_checkpoint(dir, card)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::{load_checkpoint, Weights};
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

    fn weights_of(t: &Trainer) -> Result<Vec<(String, Vec<u32>)>> {
        sorted_vars(t.varmap())
            .into_iter()
            .map(|(n, v)| {
                let bits = v
                    .as_tensor()
                    .flatten_all()?
                    .to_vec1::<f32>()?
                    .into_iter()
                    .map(f32::to_bits)
                    .collect();
                Ok((n, bits))
            })
            .collect()
    }

    #[test]
    fn hidden_weight_scales_only_the_hidden_samples_terms() -> Result<()> {
        let dev = Device::Cpu;
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let batch = synthetic_pixel_batch(2, 16, 0.7, 0.4, &mut rng, &dev)?;
        let Batch::AmbientPixel {
            x_a,
            mask_a,
            mask_tilde,
        } = &batch
        else {
            return Err(DiffusionError::Config("not a pixel batch".into()));
        };
        // the same batch with nothing hidden from the loss: only Ã's terms
        let tilde_only = Batch::AmbientPixel {
            x_a: x_a.broadcast_mul(mask_tilde)?,
            mask_a: mask_tilde.clone(),
            mask_tilde: mask_tilde.clone(),
        };
        let sigma = Tensor::new(&[0.3f32, 0.8], &dev)?;
        let noise = Tensor::randn(0f32, 1., (2, 2, 16, 16), &dev)?;
        let trainer = |w: f64| {
            let cfg = TrainConfig {
                hidden_weight: w,
                ..Default::default()
            };
            Trainer::new(&small_cfg()?, &cfg, &dev)
        };
        let loss = |w: f64, b: &Batch| -> Result<f64> {
            Ok(trainer(w)?.loss(b, &sigma, &noise)?.to_scalar::<f32>()? as f64)
        };
        let (l1, lt) = (loss(1.0, &batch)?, loss(1.0, &tilde_only)?);
        let hidden = l1 - lt;
        assert!(hidden > 1e-3 * l1, "no hidden term: {l1} vs {lt}");
        for w in [0.25, 4.0] {
            let lw = loss(w, &batch)?;
            let want = lt + w * hidden;
            assert!((lw - want).abs() < 1e-4 * want, "w = {w}: {lw} vs {want}");
        }
        assert!(loss(0.0, &batch).is_err());
        // the multi-coil k-space loss weighs its hidden samples the same way
        let coils = 2;
        let y = Tensor::randn(0f32, 1., (2, coils, 2, 16, 16), &dev)?;
        let maps = (Tensor::randn(0f32, 1., (2, coils, 2, 16, 16), &dev)? * 0.5)?;
        let mc = |ma: &Tensor| Batch::AmbientMulticoil {
            y: y.clone(),
            maps: maps.clone(),
            mask_a: ma.clone(),
            mask_tilde: mask_tilde.clone(),
        };
        let noise_k = Tensor::randn(0f32, 1., (2, coils, 2, 16, 16), &dev)?;
        let mloss = |w: f64, b: &Batch| -> Result<f64> {
            Ok(trainer(w)?.loss(b, &sigma, &noise_k)?.to_scalar::<f32>()? as f64)
        };
        let (m1, mt) = (mloss(1.0, &mc(mask_a))?, mloss(1.0, &mc(mask_tilde))?);
        let hidden = m1 - mt;
        assert!(hidden > 1e-3 * m1, "no hidden term: {m1} vs {mt}");
        for w in [0.25, 4.0] {
            let lw = mloss(w, &mc(mask_a))?;
            let want = mt + w * hidden;
            assert!(
                (lw - want).abs() < 1e-4 * want,
                "multi-coil, w = {w}: {lw} vs {want}"
            );
        }
        Ok(())
    }

    #[test]
    fn fresh_trainers_with_one_seed_have_bitwise_equal_weights() -> Result<()> {
        let dev = Device::Cpu;
        let cfg = |seed| TrainConfig {
            seed,
            warmup_steps: 0,
            ..Default::default()
        };
        let mut a = Trainer::new(&small_cfg()?, &cfg(3), &dev)?;
        let mut b = Trainer::new(&small_cfg()?, &cfg(3), &dev)?;
        let c = Trainer::new(&small_cfg()?, &cfg(4), &dev)?;
        let (wa, wb, wc) = (weights_of(&a)?, weights_of(&b)?, weights_of(&c)?);
        assert!(wa.len() > 10);
        assert!(wa == wb, "same seed, different initial weights");
        // every randomly initialised variable differs under another seed; constants do not
        let mut differing = 0;
        for ((n, x), (_, y)) in wa.iter().zip(&wc) {
            let constant = x.iter().all(|v| *v == x[0]);
            if constant {
                assert_eq!(x, y, "{n}: constant init changed with the seed");
            } else {
                assert_ne!(x, y, "{n}: random init ignores the seed");
                differing += 1;
            }
        }
        assert!(differing > 5);
        // and they stay equal through training on the same batches
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let batch = synthetic_pixel_batch(2, 8, 0.7, 0.2, &mut rng, &dev)?;
        a.step(&batch)?;
        b.step(&batch)?;
        assert!(weights_of(&a)? == weights_of(&b)?);
        Ok(())
    }

    #[test]
    fn seeded_init_follows_candle_distributions() -> Result<()> {
        use candle_nn::init::{FanInOut, NonLinearity, NormalOrUniform};
        use candle_nn::Init;
        let dev = Device::Cpu;
        let shape = candle_core::Shape::from((64, 32, 3, 3));
        let stats = |t: &Tensor| -> Result<(f64, f64, f64)> {
            let v = t.flatten_all()?.to_vec1::<f32>()?;
            let n = v.len() as f64;
            let mean = v.iter().map(|x| *x as f64).sum::<f64>() / n;
            let var = v.iter().map(|x| (*x as f64 - mean).powi(2)).sum::<f64>() / n;
            let max = v.iter().fold(0f64, |m, x| m.max((*x as f64).abs()));
            Ok((mean, var.sqrt(), max))
        };
        // Kaiming uniform, fan-in 32·9, ReLU gain √2: U(−b, b) with b = √3·√2/√288
        let k = seeded_init(
            Init::Kaiming {
                dist: NormalOrUniform::Uniform,
                fan: FanInOut::FanIn,
                non_linearity: NonLinearity::ReLU,
            },
            &shape,
            "w",
            0,
            &dev,
        )?;
        let b = 3f64.sqrt() * 2f64.sqrt() / 288f64.sqrt();
        let (mean, std, max) = stats(&k)?;
        assert!(max < b && max > 0.99 * b, "max {max} vs bound {b}");
        assert!(mean.abs() < 0.01 * b);
        assert!((std / (b / 3f64.sqrt()) - 1.0).abs() < 0.02, "std {std}");
        let r = seeded_init(
            Init::Randn {
                mean: 1.0,
                stdev: 0.5,
            },
            &shape,
            "w",
            0,
            &dev,
        )?;
        let (mean, std, _) = stats(&r)?;
        assert!((mean - 1.0).abs() < 0.01 && (std - 0.5).abs() < 0.01);
        let c = seeded_init(Init::Const(0.25), &shape, "w", 0, &dev)?;
        assert_eq!(stats(&c)?, (0.25, 0.0, 0.25));
        // a pure function of (seed, name): another name or seed gives another draw
        let again = seeded_init(
            Init::Randn {
                mean: 1.0,
                stdev: 0.5,
            },
            &shape,
            "w",
            0,
            &dev,
        )?;
        let other = seeded_init(
            Init::Randn {
                mean: 1.0,
                stdev: 0.5,
            },
            &shape,
            "v",
            0,
            &dev,
        )?;
        let diff = |a: &Tensor, b: &Tensor| -> Result<f32> {
            Ok((a - b)?.abs()?.max_all()?.to_scalar::<f32>()?)
        };
        assert_eq!(diff(&r, &again)?, 0.0);
        assert!(diff(&r, &other)? > 0.0);
        Ok(())
    }

    #[test]
    fn clipping_counts_only_trainable_variables_and_frozen_ones_get_no_gradient() -> Result<()> {
        let dev = Device::Cpu;
        let cfg = TrainConfig {
            seed: 2,
            warmup_steps: 0,
            grad_clip: Some(1e-3),
            freeze: ENCODER_PREFIXES.iter().map(|p| p.to_string()).collect(),
            ..Default::default()
        };
        let mut t = Trainer::new(&small_cfg()?, &cfg, &dev)?;
        // a live network (the zero-initialised output convolution would block every gradient)
        for (_, var) in sorted_vars(t.varmap()) {
            var.set(&Tensor::randn(0f32, 0.2, var.shape(), &dev)?)?;
        }
        let mut rng = ChaCha8Rng::seed_from_u64(4);
        let batch = synthetic_pixel_batch(2, 8, 0.7, 0.2, &mut rng, &dev)?;
        // independent computation of the two norms from the same draws
        let (sigma, noise) = t.draw_noise(&batch)?;
        let grads = t.loss(&batch, &sigma, &noise)?.backward()?;
        let (mut trainable, mut frozen) = (0f64, 0f64);
        for (name, var) in sorted_vars(t.varmap()) {
            if let Some(g) = grads.get(var.as_tensor()) {
                let sq = g.sqr()?.sum_all()?.to_scalar::<f32>()? as f64;
                if is_frozen(&name, &cfg.freeze) {
                    frozen += sq;
                } else {
                    trainable += sq;
                }
            }
        }
        // frozen weights are constants of the graph: backward computes no gradient for them
        assert_eq!(frozen, 0.0, "a frozen variable received a gradient");
        assert!(trainable > 0.0, "no trainable gradient: nothing tested");
        let before = weights_of(&t)?;
        let stats = t.step(&batch)?;
        let want = trainable.sqrt();
        assert!(
            (stats.grad_norm as f64 - want).abs() <= 1e-4 * want,
            "reported {} vs trainable-only {want} (all: {})",
            stats.grad_norm,
            (trainable + frozen).sqrt()
        );
        // frozen variables did not move, trainable ones did
        for ((n, a), (_, b)) in before.iter().zip(weights_of(&t)?.iter()) {
            if is_frozen(n, &cfg.freeze) {
                assert_eq!(a, b, "{n} is frozen but moved");
            }
        }
        assert!(before != weights_of(&t)?);
        Ok(())
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
    fn consistency_weight_splits_the_noisy_batch_at_sigma_n() -> Result<()> {
        // σ_n = 0.3: the log-normal puts about half its draws below it, so a batch of 8 mixes
        // the Tweedie and consistency terms; the loss is their count-weighted sum, weight 0
        // for the consistency part leaves exactly the Tweedie part of the same draws
        let dev = Device::Cpu;
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        let inner = synthetic_pixel_batch(8, 16, 0.8, 0.2, &mut rng, &dev)?;
        let b = Batch::Noisy {
            inner: Box::new(inner),
            sigma_n: Tensor::full(0.3f32, 8, &dev)?,
        };
        let cfg = |w: f64| TrainConfig {
            seed: 4,
            consistency_weight: w,
            ..Default::default()
        };
        let mut on = Trainer::new(&small_cfg()?, &cfg(1.0), &dev)?;
        let (sigma, noise) = on.draw_noise(&b)?;
        let sv = sigma.to_vec1::<f32>()?;
        let below = sv.iter().filter(|s| **s <= 0.3).count();
        assert!(below > 0 && below < 8, "σ draws {sv:?}");
        let l_on = on.loss(&b, &sigma, &noise)?.to_scalar::<f32>()?;
        let mut half = Trainer::new(&small_cfg()?, &cfg(0.5), &dev)?;
        let l_half = half.loss(&b, &sigma, &noise)?.to_scalar::<f32>()?;
        let mut zero = Trainer::new(&small_cfg()?, &cfg(1e-300), &dev)?;
        let l_zero = zero.loss(&b, &sigma, &noise)?.to_scalar::<f32>()?;
        // linear in the weight: L(1) − L(½) = L(½) − L(0)
        assert!(
            ((l_on - l_half) - (l_half - l_zero)).abs() < 1e-4 * l_on.abs().max(1.0),
            "{l_on} {l_half} {l_zero}"
        );
        // training with it runs and gives finite losses and gradients
        for _ in 0..3 {
            let st = on.step(&b)?;
            assert!(st.loss.is_finite() && st.grad_norm.is_finite());
        }
        // off: σ is drawn above σ_n only
        let off = Trainer::new(&small_cfg()?, &cfg(0.0), &dev)?;
        let (s_off, _) = off.draw_noise(&b)?;
        assert!(s_off.to_vec1::<f32>()?.iter().all(|s| *s > 0.3));
        assert!(Trainer::new(&small_cfg()?, &cfg(-1.0), &dev).is_err());
        Ok(())
    }

    #[test]
    fn gradient_mismatch_names_the_worst_variable() -> Result<()> {
        let dev = Device::Cpu;
        let a = Tensor::randn(0f32, 1., (4, 5), &dev)?;
        let b = Tensor::randn(0f32, 1., 7, &dev)?;
        let tiny = (Tensor::randn(0f32, 1., 3, &dev)? * 1e-9)?;
        let same = vec![
            ("a".to_string(), a.clone(), a.clone()),
            ("b".to_string(), b.clone(), b.clone()),
        ];
        assert_eq!(worst_gradient_mismatch(&same)?.1, 0.0);
        // b off by 10 %, a by 1 %, a negligible variable completely wrong: b is the worst
        let pairs = vec![
            ("a".to_string(), (&a * 1.01)?, a.clone()),
            ("b".to_string(), (&b * 1.1)?, b.clone()),
            ("tiny".to_string(), tiny.neg()?, tiny.clone()),
        ];
        let (name, err) = worst_gradient_mismatch(&pairs)?;
        assert_eq!(name, "b");
        assert!((err - 0.1).abs() < 1e-6, "{err}");
        // a NaN gradient is the worst possible
        let nan = Tensor::new(&[f32::NAN, 0., 0., 0., 0., 0., 0.], &dev)?;
        let (name, err) = worst_gradient_mismatch(&[("b".to_string(), nan, b.clone())])?;
        assert_eq!(name, "b");
        assert!(err.is_infinite());
        Ok(())
    }

    #[test]
    fn gradient_check_passes_for_the_same_computation() -> Result<()> {
        // CPU against CPU: the plumbing (copying weights, moving the batch, drawing this step's
        // σ and noise once) must give the reference exactly the same loss and gradients.
        let dev = Device::Cpu;
        let cfg = TrainConfig {
            seed: 3,
            ..Default::default()
        };
        let mut t = Trainer::new(&small_cfg()?, &cfg, &dev)?;
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        for _ in 0..3 {
            let b = synthetic_pixel_batch(4, 16, 0.8, 0.2, &mut rng, &dev)?;
            t.step(&b)?;
        }
        let b = synthetic_pixel_batch(4, 16, 0.8, 0.2, &mut rng, &dev)?;
        assert_eq!(t.check_gradients_against_cpu(&b, 1e-3)?, 0.0);
        let err = t.check_gradients_on(&b, 1e-6, &dev)?;
        assert!(err < 1e-6, "{err}");
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
        let card = t.card(Objective::AmbientPixel, Some("tiny"), None)?;
        t.save_checkpoint(dir.path(), &card)?;
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .map_err(|source| DiffusionError::Io {
                path: dir.path().into(),
                source,
            })?
            .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect();
        assert_eq!(names.len(), 4, "stray files: {names:?}");
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

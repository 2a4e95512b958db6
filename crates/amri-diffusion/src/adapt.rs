//! Cheap fine-tuning of a trained prior: low-rank adapters (LoRA, Hu et al. 2021) on every
//! convolution and linear layer, or the last decoder layers only ([`Adapt`]).
//!
//! **LoRA.** Every weight `W` with two or more axes (`[out, in, k, k]` convolutions, including
//! the attention's 1×1 `qkv`/`proj`, and `[out, in]` linear layers of the noise embedding) gets
//! `A: [R, in, k, k]` (a k×k convolution to `R` channels, Kaiming-uniform initialised) and
//! `B: [out, R]` (a 1×1 convolution `R → out`, zero-initialised), and the network runs with
//! ```text
//! W' = W + scale · B·A,   W'[o, i, :, :] = W[o, i, :, :] + scale · Σ_r B[o, r] · A[r, i, :, :]
//! ```
//! (`scale = alpha / R`), which is the k×k convolution `A` followed by the 1×1 convolution `B`
//! added to the frozen layer, computed as one kernel. Base weights, biases and GroupNorm
//! parameters are constants of the graph (no gradient); only `A` and `B` are optimised. With
//! `B = 0` the adapted network is the base network exactly. The merged weights `W'` are what a
//! checkpoint's `model.safetensors`/`ema.safetensors` hold, so inference loads an ordinary
//! checkpoint; the base weights and the adapters go to [`LORA_FILE`] for exact resume.
//!
//! **Last layers.** [`last_layers_freeze`] lists the variable prefixes to freeze so that only
//! the last `N` decoder residual blocks (in forward order), the upsampling convolutions after
//! the first of them and the output head (`out_norm`, `out_conv`) train. Frozen weights are
//! constants of the graph, so backward stops at the first trained block.

use std::collections::HashMap;
use std::sync::Arc;

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use serde::{Deserialize, Serialize};

use crate::error::{DiffusionError, Result};
use crate::unet::UNetConfig;

/// Checkpoint file of a LoRA run: `base.<name>` (the frozen base weights, every variable) and
/// `<layer>.lora_a` / `<layer>.lora_b` (the raw adapters), all `f32`.
pub const LORA_FILE: &str = "lora.safetensors";

/// Key prefix of the base weights in [`LORA_FILE`].
pub const BASE_PREFIX: &str = "base.";

/// Default of `amri finetune --train-layers`: the last two decoder blocks (for the presets with
/// one block per level: both full-resolution decoder blocks) and the head.
pub const DEFAULT_TRAIN_LAYERS: usize = 2;

/// How `amri finetune` adapts a base model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Adapt {
    /// Every weight trains (optionally with the encoder frozen).
    Full,
    /// Low-rank adapters on every convolution and linear layer; base weights frozen.
    Lora,
    /// Only the last decoder blocks and the output head train.
    LastLayers,
}

impl std::str::FromStr for Adapt {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "full" => Ok(Self::Full),
            "lora" => Ok(Self::Lora),
            "last-layers" | "last_layers" => Ok(Self::LastLayers),
            _ => Err(format!("expected full, lora or last-layers, got {s:?}")),
        }
    }
}

/// Rank and scale of the LoRA adapters; part of [`crate::train::TrainConfig`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LoraConfig {
    /// Rank `R` of every adapter (≥ 1).
    pub rank: usize,
    /// `alpha`: the update is scaled by `alpha / rank`.
    pub alpha: f64,
}

impl LoraConfig {
    /// `alpha / rank`, the factor of `B·A`.
    pub fn scale(&self) -> f64 {
        self.alpha / self.rank.max(1) as f64
    }

    /// Checks rank ≥ 1 and a finite, positive alpha.
    pub fn validate(&self) -> Result<()> {
        if self.rank == 0 || !(self.alpha.is_finite() && self.alpha > 0.0) {
            return Err(DiffusionError::Config(format!(
                "LoRA needs rank ≥ 1 and alpha > 0, got rank {} alpha {}",
                self.rank, self.alpha
            )));
        }
        Ok(())
    }
}

/// How a fine-tuned model was made, in its card's training record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FinetuneRecord {
    /// `full`, `lora` or `last-layers`.
    pub adapt: Adapt,
    /// LoRA rank and alpha (`lora` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lora: Option<LoraConfig>,
    /// Decoder blocks trained (`last-layers` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub train_layers: Option<usize>,
    /// Lower-case hex SHA-256 of the base checkpoint's EMA weights file (the weights it started
    /// from; [`crate::sample::Prior::sha256`] of the base).
    pub base_sha256: String,
    /// Parameters the optimiser updated.
    pub trained_parameters: usize,
}

/// Whether a variable of shape `dims` named `name` gets a LoRA adapter: weights (`*.weight`)
/// with two or more axes (convolutions and linear layers; not GroupNorm parameters or biases).
pub fn is_adapted(name: &str, dims: &[usize]) -> bool {
    name.ends_with(".weight") && dims.len() >= 2
}

/// Names of the two adapters of weight `name` (`x.weight` → `x.lora_a`, `x.lora_b`).
pub fn adapter_names(name: &str) -> (String, String) {
    let stem = name.strip_suffix(".weight").unwrap_or(name);
    (format!("{stem}.lora_a"), format!("{stem}.lora_b"))
}

/// `W + scale · B·A` for `W: [out, rest…]`, `A: [R, rest…]`, `B: [out, R]` (the merged weight).
pub fn merge(w: &Tensor, a: &Tensor, b: &Tensor, scale: f64) -> Result<Tensor> {
    let dims = w.dims();
    let r = a.dim(0)?;
    let rest: usize = dims[1..].iter().product();
    if b.dims() != [dims[0], r] || a.elem_count() != r * rest {
        return Err(DiffusionError::Shape(format!(
            "LoRA merge: W {:?}, A {:?}, B {:?} do not fit",
            dims,
            a.dims(),
            b.dims()
        )));
    }
    let delta = b.matmul(&a.reshape((r, rest))?)?.reshape(dims)?;
    Ok((w + (delta * scale)?)?)
}

/// The variable prefixes [`crate::train::TrainConfig::freeze`] needs so that only the last
/// `n` decoder residual blocks of `cfg`'s U-Net (forward order: `dec.<L-1>.*`, `up.<L-2>`, …,
/// `up.0`, `dec.0.*`), the upsampling convolutions after the first of them and the head
/// (`out_norm`, `out_conv`) train. The noise embedding, encoder and middle are frozen.
pub fn last_layers_freeze(cfg: &UNetConfig, n: usize) -> Result<Vec<String>> {
    // the decoder in forward order: (prefix, is a residual block)
    let mut units = Vec::new();
    for l in (0..cfg.levels()).rev() {
        for b in 0..=cfg.blocks_per_level {
            units.push((format!("dec.{l}.{b}."), true));
        }
        if l > 0 {
            units.push((format!("up.{}.", l - 1), false));
        }
    }
    let blocks = units.iter().filter(|u| u.1).count();
    if n == 0 || n > blocks {
        return Err(DiffusionError::Config(format!(
            "--train-layers {n}: the network has {blocks} decoder blocks; give 1 to {blocks}"
        )));
    }
    // index of the first trained block: the n-th residual block from the end
    let mut seen = 0;
    let mut first = units.len();
    for (i, u) in units.iter().enumerate().rev() {
        if u.1 {
            seen += 1;
            if seen == n {
                first = i;
                break;
            }
        }
    }
    let mut freeze: Vec<String> = ["map0.", "map1.", "conv_in.", "enc.", "mid."]
        .iter()
        .map(|s| s.to_string())
        .collect();
    freeze.extend(units[..first].iter().map(|u| u.0.clone()));
    Ok(freeze)
}

/// The adaptation flags of `amri finetune`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Adaptation {
    /// What trains.
    pub adapt: Adapt,
    /// LoRA rank (`lora` only; default [`DEFAULT_RANK`]).
    pub rank: Option<usize>,
    /// LoRA alpha (`lora` only; default the rank, scale 1).
    pub alpha: Option<f64>,
    /// Decoder blocks that train (`last-layers` only; default [`DEFAULT_TRAIN_LAYERS`]).
    pub train_layers: Option<usize>,
    /// Freeze the encoder ([`crate::train::ENCODER_PREFIXES`]; `full` only).
    pub freeze_down: bool,
}

/// Default LoRA rank of `amri finetune --adapt lora`.
pub const DEFAULT_RANK: usize = 4;

/// What a fine-tuning run trains, from [`Adaptation`].
#[derive(Debug, Clone, PartialEq)]
pub struct AdaptPlan {
    /// [`crate::train::TrainConfig::freeze`].
    pub freeze: Vec<String>,
    /// [`crate::train::TrainConfig::lora`].
    pub lora: Option<LoraConfig>,
    /// The card's record, with `base_sha256` empty and `trained_parameters` 0 (known later).
    pub record: FinetuneRecord,
}

/// The plan for fine-tuning a network of shape `unet` under the flags `a`; a flag that does not
/// belong to the chosen `adapt` is an error naming it.
pub fn plan_adaptation(unet: &UNetConfig, a: &Adaptation) -> Result<AdaptPlan> {
    let bad = |m: &str| Err(DiffusionError::Config(m.to_owned()));
    if a.adapt != Adapt::Lora && (a.rank.is_some() || a.alpha.is_some()) {
        return bad("--rank and --alpha set the LoRA adapters: they need --adapt lora");
    }
    if a.adapt != Adapt::LastLayers && a.train_layers.is_some() {
        return bad("--train-layers needs --adapt last-layers");
    }
    if a.adapt != Adapt::Full && a.freeze_down {
        return bad("--freeze-down is for --adapt full (lora and last-layers freeze the encoder)");
    }
    let mut record = FinetuneRecord {
        adapt: a.adapt,
        lora: None,
        train_layers: None,
        base_sha256: String::new(),
        trained_parameters: 0,
    };
    let (freeze, lora) = match a.adapt {
        Adapt::Full if a.freeze_down => (
            crate::train::ENCODER_PREFIXES
                .iter()
                .map(|s| s.to_string())
                .collect(),
            None,
        ),
        Adapt::Full => (Vec::new(), None),
        Adapt::Lora => {
            let rank = a.rank.unwrap_or(DEFAULT_RANK);
            let l = LoraConfig {
                rank,
                alpha: a.alpha.unwrap_or(rank as f64),
            };
            l.validate()?;
            record.lora = Some(l);
            (Vec::new(), Some(l))
        }
        Adapt::LastLayers => {
            let n = a.train_layers.unwrap_or(DEFAULT_TRAIN_LAYERS);
            record.train_layers = Some(n);
            (last_layers_freeze(unet, n)?, None)
        }
    };
    Ok(AdaptPlan {
        freeze,
        lora,
        record,
    })
}

/// A [`candle_nn::var_builder::SimpleBackend`] that serves the base weights as constants and
/// every adapted weight as `W + scale·B·A` computed from the adapter variables (created on first
/// use: `A` by [`crate::train::seeded_init`] Kaiming-uniform under `seed`, `B` zero). A model
/// built from it is the adapted network; it must be rebuilt after the adapters change.
#[derive(Clone)]
pub(crate) struct LoraBackend {
    /// The frozen base weights by variable name (plain tensors, no gradient).
    pub(crate) base: Arc<HashMap<String, Tensor>>,
    /// The adapters (`<layer>.lora_a`, `<layer>.lora_b`).
    pub(crate) adapters: VarMap,
    pub(crate) cfg: LoraConfig,
    pub(crate) seed: u64,
}

impl LoraBackend {
    /// The adapters of weight `name` with shape `dims`, created if missing.
    fn adapter(&self, name: &str, dims: &[usize], dev: &Device) -> Result<(Var, Var)> {
        let (an, bn) = adapter_names(name);
        let r = self.cfg.rank;
        let mut a_shape = dims.to_vec();
        a_shape[0] = r;
        let b_shape = vec![dims[0], r];
        let mut data = self
            .adapters
            .data()
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let mut get = |n: &str, shape: Vec<usize>, init: candle_nn::Init| -> Result<Var> {
            if let Some(v) = data.get(n) {
                if v.dims() != shape.as_slice() {
                    return Err(DiffusionError::Shape(format!(
                        "adapter {n}: expected {shape:?}, got {:?}",
                        v.dims()
                    )));
                }
                return Ok(v.clone());
            }
            let t = crate::train::seeded_init(
                init,
                &candle_core::Shape::from_dims(&shape),
                n,
                self.seed,
                dev,
            )?;
            let v = Var::from_tensor(&t)?;
            data.insert(n.to_owned(), v.clone());
            Ok(v)
        };
        let a = get(&an, a_shape, candle_nn::init::DEFAULT_KAIMING_UNIFORM)?;
        let b = get(&bn, b_shape, candle_nn::Init::Const(0.0))?;
        Ok((a, b))
    }

    /// The weight `name` as the adapted network uses it (merged for adapted weights, the base
    /// otherwise), tracked for backward to the adapters.
    pub(crate) fn weight(&self, name: &str, dev: &Device) -> Result<Tensor> {
        let w = self
            .base
            .get(name)
            .ok_or_else(|| DiffusionError::Config(format!("the base model has no {name}")))?;
        if !is_adapted(name, w.dims()) {
            return Ok(w.clone());
        }
        let (a, b) = self.adapter(name, w.dims(), dev)?;
        merge(w, a.as_tensor(), b.as_tensor(), self.cfg.scale())
    }

    /// A builder of the adapted network on `dev`.
    pub(crate) fn var_builder(&self, dev: &Device) -> VarBuilder<'static> {
        VarBuilder::from_backend(Box::new(self.clone()), DType::F32, dev.clone())
    }
}

impl candle_nn::var_builder::SimpleBackend for LoraBackend {
    fn get(
        &self,
        s: candle_core::Shape,
        name: &str,
        _: candle_nn::Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        let w = self
            .weight(name, dev)
            .map_err(|e| candle_core::Error::Msg(format!("LoRA weight {name}: {e}")))?;
        if w.shape() != &s {
            candle_core::bail!("shape mismatch on {name}: {s:?} <> {:?}", w.shape());
        }
        w.to_dtype(dtype)
    }

    fn get_unchecked(&self, name: &str, _: DType, _: &Device) -> candle_core::Result<Tensor> {
        candle_core::bail!("variable {name} must be requested with a shape")
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.base.contains_key(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merged_kernel_is_conv_a_then_1x1_conv_b() -> Result<()> {
        // independent truth: run A (k×k, in → R) then B (1×1, R → out) with candle's own conv
        // and compare with one convolution by the merged ΔW
        let dev = Device::Cpu;
        let (o, i, r, k) = (5usize, 3usize, 2usize, 3usize);
        let a = Tensor::randn(0f32, 1., (r, i, k, k), &dev)?;
        let b = Tensor::randn(0f32, 1., (o, r), &dev)?;
        let zero = Tensor::zeros((o, i, k, k), DType::F32, &dev)?;
        let dw = merge(&zero, &a, &b, 0.5)?;
        let x = Tensor::randn(0f32, 1., (2, i, 9, 11), &dev)?;
        let two = x
            .conv2d(&a, 1, 1, 1, 1)?
            .conv2d(&b.reshape((o, r, 1, 1))?, 0, 1, 1, 1)?;
        let one = x.conv2d(&dw, 1, 1, 1, 1)?;
        let err = ((two * 0.5)? - one)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(err < 1e-4, "{err}");
        Ok(())
    }

    #[test]
    fn last_layers_freeze_keeps_the_tail_of_the_decoder() -> Result<()> {
        let cfg = UNetConfig::tiny(3, 2); // 3 levels, 2 decoder blocks per level
        let f = last_layers_freeze(&cfg, 2)?;
        assert!(f.contains(&"dec.1.1.".to_string()) && f.contains(&"up.0.".to_string()));
        assert!(!f
            .iter()
            .any(|p| p.starts_with("dec.0") || p.starts_with("out_")));
        let f3 = last_layers_freeze(&cfg, 3)?;
        // the third block from the end is dec.1.1; the upsampling after it trains too
        assert!(!f3.contains(&"up.0.".to_string()) && !f3.contains(&"dec.1.1.".to_string()));
        assert!(f3.contains(&"dec.1.0.".to_string()));
        assert!(last_layers_freeze(&cfg, 0).is_err() && last_layers_freeze(&cfg, 7).is_err());
        Ok(())
    }
}

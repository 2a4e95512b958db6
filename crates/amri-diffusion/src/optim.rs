//! AdamW over candle [`Var`]s with a state that can be saved and restored exactly.
//!
//! candle-nn's `AdamW` keeps its moments private, so a checkpoint could not resume it. This one
//! applies **the same update rule, in the same floating-point operation order** as candle-nn 0.9
//! (`candle_nn::optim::AdamW::step`), so results are bitwise identical to it (tested), and its
//! state — first and second moments per variable and the step count — round-trips through
//! safetensors.
//!
//! For step `t = 1, 2, …` (the count is incremented before the update), gradient `g`:
//! ```text
//! m ← β1·m + (1−β1)·g
//! v ← β2·v + (1−β2)·g²
//! θ ← θ·(1 − lr·λ) − lr · (m/(1−β1ᵗ)) / (sqrt(v/(1−β2ᵗ)) + ε)
//! ```
//! Variables without a gradient in a step are left untouched (their moments too), but `t` still
//! advances, as in candle-nn.

use std::collections::HashMap;
use std::path::Path;

use candle_core::backprop::GradStore;
use candle_core::{Tensor, Var};
use serde::{Deserialize, Serialize};

use crate::error::{DiffusionError, Result};

/// AdamW hyper-parameters (candle-nn's defaults except where the trainer sets them).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct AdamWParams {
    /// Learning rate.
    pub lr: f64,
    /// Exponential decay of the first moment.
    pub beta1: f64,
    /// Exponential decay of the second moment.
    pub beta2: f64,
    /// Added to `sqrt(v̂)` in the denominator.
    pub eps: f64,
    /// Decoupled weight decay λ (the update multiplies θ by `1 − lr·λ`).
    pub weight_decay: f64,
}

impl Default for AdamWParams {
    fn default() -> Self {
        Self {
            lr: 1e-3,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.01,
        }
    }
}

/// Key prefix of first moments in a saved state (`m.<var name>`).
const M_PREFIX: &str = "m.";
/// Key prefix of second moments in a saved state (`v.<var name>`).
const V_PREFIX: &str = "v.";
/// Key of the step count in a saved state (a `u32`-valued scalar stored as `f64` is lossless for
/// every count below 2⁵³).
const STEP_KEY: &str = "step";

/// One optimised variable with its moments.
#[derive(Debug)]
struct Slot {
    name: String,
    var: Var,
    m: Tensor,
    v: Tensor,
}

/// AdamW over named variables; see the module docs for the rule.
#[derive(Debug)]
pub struct AdamW {
    slots: Vec<Slot>,
    step: u64,
    params: AdamWParams,
}

impl AdamW {
    /// An optimiser over `vars` (name, variable) with zero moments and step count 0.
    pub fn new(vars: Vec<(String, Var)>, params: AdamWParams) -> Result<Self> {
        let slots = vars
            .into_iter()
            .map(|(name, var)| {
                let m = var.as_tensor().zeros_like()?;
                let v = var.as_tensor().zeros_like()?;
                Ok(Slot { name, var, m, v })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            slots,
            step: 0,
            params,
        })
    }

    /// Hyper-parameters.
    pub fn params(&self) -> &AdamWParams {
        &self.params
    }

    /// Sets the learning rate used from the next step on.
    pub fn set_learning_rate(&mut self, lr: f64) {
        self.params.lr = lr;
    }

    /// Updates taken so far (`t`).
    pub fn step_count(&self) -> u64 {
        self.step
    }

    /// Names of the optimised variables, in update order.
    pub fn names(&self) -> Vec<&str> {
        self.slots.iter().map(|s| s.name.as_str()).collect()
    }

    /// One AdamW update of every variable that has a gradient in `grads`.
    pub fn step(&mut self, grads: &GradStore) -> Result<()> {
        let p = self.params;
        self.step += 1;
        let t = i32::try_from(self.step).unwrap_or(i32::MAX);
        let lr_lambda = p.lr * p.weight_decay;
        let scale_m = 1f64 / (1f64 - p.beta1.powi(t));
        let scale_v = 1f64 / (1f64 - p.beta2.powi(t));
        for s in self.slots.iter_mut() {
            let theta = &s.var;
            if let Some(g) = grads.get(theta.as_tensor()) {
                // Gradients carry candle's backprop graph (they are computed from the forward
                // activations); detached moments keep no link to it, or every step's activations
                // would stay alive through the moment chain.
                let g = &g.detach();
                let next_m = ((&s.m * p.beta1)? + (g * (1.0 - p.beta1))?)?;
                let next_v = ((&s.v * p.beta2)? + (g.sqr()? * (1.0 - p.beta2))?)?;
                let m_hat = (&next_m * scale_m)?;
                let v_hat = (&next_v * scale_v)?;
                let next_theta = (theta.as_tensor() * (1f64 - lr_lambda))?;
                let adjusted_grad = (m_hat / (v_hat.sqrt()? + p.eps)?)?;
                let next_theta = (next_theta - (adjusted_grad * p.lr)?)?;
                s.m = next_m.detach();
                s.v = next_v.detach();
                theta.set(&next_theta.detach())?;
            }
        }
        Ok(())
    }

    /// The state as named tensors: `m.<name>`, `v.<name>` and `step` (scalar `f64`).
    pub fn state(&self) -> Result<HashMap<String, Tensor>> {
        let mut out = HashMap::with_capacity(2 * self.slots.len() + 1);
        for s in &self.slots {
            out.insert(format!("{M_PREFIX}{}", s.name), s.m.clone());
            out.insert(format!("{V_PREFIX}{}", s.name), s.v.clone());
        }
        let dev = self
            .slots
            .first()
            .map(|s| s.var.device().clone())
            .unwrap_or(candle_core::Device::Cpu);
        out.insert(STEP_KEY.into(), Tensor::new(self.step as f64, &dev)?);
        Ok(out)
    }

    /// Restores moments and step count from [`AdamW::state`]'s output; every variable must be
    /// present with its shape ([`DiffusionError::Config`] names the first that is not).
    pub fn load_state(&mut self, state: &HashMap<String, Tensor>) -> Result<()> {
        let step = state
            .get(STEP_KEY)
            .ok_or_else(|| DiffusionError::Config("optimizer state has no step count".into()))?
            .to_dtype(candle_core::DType::F64)?
            .to_scalar::<f64>()?;
        if !(step >= 0.0 && step.fract() == 0.0) {
            return Err(DiffusionError::Config(format!(
                "optimizer step count {step} is not a whole number"
            )));
        }
        let mut restored = Vec::with_capacity(self.slots.len());
        for s in &self.slots {
            let get = |prefix: &str| -> Result<Tensor> {
                let key = format!("{prefix}{}", s.name);
                let t = state.get(&key).ok_or_else(|| {
                    DiffusionError::Config(format!("optimizer state lacks {key}"))
                })?;
                if t.dims() != s.var.dims() {
                    return Err(DiffusionError::Shape(format!(
                        "optimizer {key}: expected {:?}, got {:?}",
                        s.var.dims(),
                        t.dims()
                    )));
                }
                Ok(t.to_device(s.var.device())?.to_dtype(s.var.dtype())?)
            };
            restored.push((get(M_PREFIX)?, get(V_PREFIX)?));
        }
        for (s, (m, v)) in self.slots.iter_mut().zip(restored) {
            s.m = m;
            s.v = v;
        }
        self.step = step as u64;
        Ok(())
    }

    /// Writes [`AdamW::state`] to a safetensors file.
    pub fn save(&self, path: &Path) -> Result<()> {
        Ok(candle_core::safetensors::save(&self.state()?, path)?)
    }

    /// Reads a state written by [`AdamW::save`] onto the device of the variables.
    pub fn load(&mut self, path: &Path) -> Result<()> {
        if !path.is_file() {
            return Err(DiffusionError::Io {
                path: path.to_path_buf(),
                source: std::io::Error::new(std::io::ErrorKind::NotFound, "no optimizer state"),
            });
        }
        let dev = self
            .slots
            .first()
            .map(|s| s.var.device().clone())
            .unwrap_or(candle_core::Device::Cpu);
        let state = candle_core::safetensors::load(path, &dev)?;
        self.load_state(&state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, D};
    use candle_nn::Optimizer;

    fn problem(dev: &Device) -> Result<(Var, Var, Tensor)> {
        let w = Var::from_tensor(&Tensor::new(&[[0.3f32, -1.2, 0.7], [2.0, 0.1, -0.4]], dev)?)?;
        let b = Var::from_tensor(&Tensor::new(&[0.5f32, -0.25], dev)?)?;
        let x = Tensor::new(&[[1f32, 2.0, -1.0], [0.5, -0.3, 0.8]], dev)?;
        Ok((w, b, x))
    }

    fn loss(w: &Var, b: &Var, x: &Tensor) -> Result<Tensor> {
        let y = x
            .matmul(&w.as_tensor().t()?)?
            .broadcast_add(b.as_tensor())?;
        Ok(y.sqr()?.sum(D::Minus1)?.mean_all()?)
    }

    #[test]
    fn matches_candle_nn_adamw_bitwise() -> Result<()> {
        let dev = Device::Cpu;
        let (w1, b1, x) = problem(&dev)?;
        let (w2, b2, _) = problem(&dev)?;
        let params = AdamWParams {
            lr: 0.05,
            weight_decay: 0.1,
            ..Default::default()
        };
        let mut ours = AdamW::new(
            vec![("w".into(), w1.clone()), ("b".into(), b1.clone())],
            params,
        )?;
        let mut theirs = candle_nn::AdamW::new(
            vec![w2.clone(), b2.clone()],
            candle_nn::ParamsAdamW {
                lr: 0.05,
                weight_decay: 0.1,
                ..Default::default()
            },
        )?;
        for _ in 0..7 {
            ours.step(&loss(&w1, &b1, &x)?.backward()?)?;
            theirs.step(&loss(&w2, &b2, &x)?.backward()?)?;
        }
        assert_eq!(
            w1.as_tensor().to_vec2::<f32>()?,
            w2.as_tensor().to_vec2::<f32>()?
        );
        assert_eq!(
            b1.as_tensor().to_vec1::<f32>()?,
            b2.as_tensor().to_vec1::<f32>()?
        );
        assert_eq!(ours.step_count(), 7);
        Ok(())
    }

    #[test]
    fn first_step_moves_each_weight_by_lr_against_the_gradient_sign() -> Result<()> {
        // At t = 1 with λ = 0: m̂ = g, v̂ = g², so Δθ = −lr·g/(|g| + ε) ≈ −lr·sign(g).
        let dev = Device::Cpu;
        let (w, b, x) = problem(&dev)?;
        let before = w.as_tensor().to_vec2::<f32>()?;
        let g = loss(&w, &b, &x)?.backward()?;
        let gw = g
            .get(w.as_tensor())
            .ok_or_else(|| DiffusionError::Config("no grad".into()))?
            .to_vec2::<f32>()?;
        let mut opt = AdamW::new(
            vec![("w".into(), w.clone())],
            AdamWParams {
                lr: 0.01,
                weight_decay: 0.0,
                ..Default::default()
            },
        )?;
        opt.step(&g)?;
        let after = w.as_tensor().to_vec2::<f32>()?;
        for i in 0..2 {
            for j in 0..3 {
                let want = before[i][j] - 0.01 * gw[i][j].signum();
                assert!((after[i][j] - want).abs() < 1e-6, "{i},{j}");
            }
        }
        Ok(())
    }

    #[test]
    fn state_round_trips_and_resumes_exactly() -> Result<()> {
        let dev = Device::Cpu;
        let dir = tempfile::tempdir().map_err(|source| DiffusionError::Io {
            path: "tempdir".into(),
            source,
        })?;
        let params = AdamWParams {
            lr: 0.02,
            ..Default::default()
        };
        let (w1, b1, x) = problem(&dev)?;
        let mut a = AdamW::new(
            vec![("w".into(), w1.clone()), ("b".into(), b1.clone())],
            params,
        )?;
        for _ in 0..3 {
            a.step(&loss(&w1, &b1, &x)?.backward()?)?;
        }
        let path = dir.path().join("opt.safetensors");
        a.save(&path)?;
        // a fresh optimiser on copies of the current weights, state loaded from disk
        let w2 = Var::from_tensor(&w1.as_tensor().copy()?)?;
        let b2 = Var::from_tensor(&b1.as_tensor().copy()?)?;
        let mut b = AdamW::new(
            vec![("w".into(), w2.clone()), ("b".into(), b2.clone())],
            params,
        )?;
        b.load(&path)?;
        assert_eq!(b.step_count(), 3);
        for _ in 0..4 {
            a.step(&loss(&w1, &b1, &x)?.backward()?)?;
            b.step(&loss(&w2, &b2, &x)?.backward()?)?;
        }
        assert_eq!(
            w1.as_tensor().to_vec2::<f32>()?,
            w2.as_tensor().to_vec2::<f32>()?
        );
        assert_eq!(
            b1.as_tensor().to_vec1::<f32>()?,
            b2.as_tensor().to_vec1::<f32>()?
        );
        // a state lacking a variable is refused
        let mut c = AdamW::new(vec![("other".into(), w2)], params)?;
        assert!(c.load(&path).is_err());
        Ok(())
    }
}

//! EDM preconditioning (Karras et al. 2022, "Elucidating the Design Space of Diffusion-Based
//! Generative Models", Table 1) and the amri [`Denoiser`].
//!
//! With `s = σ² + σ_d²`:
//! `c_skip = σ_d²/s`, `c_out = σ σ_d/√s`, `c_in = 1/√s`, `c_noise = ln(σ)/4`,
//! `D(x; σ) = c_skip x + c_out F(c_in x, c_noise)`, loss weight `λ(σ) = s/(σ σ_d)²`
//! (so that `λ c_out² = 1`: the effective training target of `F` has unit variance), and
//! training noise levels are log-normal, `ln σ ~ N(P_mean, P_std²)` with `P_mean = −1.2`,
//! `P_std = 1.2`.
//!
//! [`PrecondKind::Ambient`] changes one thing for networks whose input is *corrupted* (aliased
//! k-space, masked pixels), not just noisy: `c_out = σ_d` at every σ (EDM's large-σ limit), so the
//! loss weight is `λ = 1/σ_d²`. Under EDM's `c_out → 0` as σ → 0 the output at small σ is
//! `≈ x`, the corrupted input itself: a correction of the aliasing, which does not shrink with σ,
//! needs `F` of size `1/σ`, which a network neither learns nor outputs. With a constant `c_out`
//! the skip path still carries the input and `F` predicts the correction at unit scale.

use candle_core::{Tensor, D};
use candle_nn::VarBuilder;
use rand::Rng;
use rand_distr::{Distribution, Normal};
use serde::{Deserialize, Serialize};

use crate::error::{DiffusionError, Result};
use crate::sense_input::NetworkInput;
use crate::unet::{unet, UNet, UNetConfig};

/// How `c_out` (and with it the loss weight) depends on σ; cards without the field are `Edm`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PrecondKind {
    /// Karras et al.: `c_out = σ σ_d/√(σ²+σ_d²)`, `λ = (σ²+σ_d²)/(σ σ_d)²`.
    #[default]
    Edm,
    /// For corrupted inputs: `c_out = σ_d`, `λ = 1/σ_d²` (see the module docs).
    Ambient,
}

impl std::str::FromStr for PrecondKind {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "edm" => Ok(Self::Edm),
            "ambient" => Ok(Self::Ambient),
            _ => Err(format!("expected edm or ambient, got {s:?}")),
        }
    }
}

/// EDM preconditioning coefficients for a data standard deviation `sigma_data` (σ_d).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct EdmPrecond {
    /// σ_d, the standard deviation of the clean data (EDM default 0.5; for images normalised to
    /// unit max magnitude choose it from the data).
    pub sigma_data: f64,
    /// The σ-dependence of `c_out` ([`PrecondKind::Edm`] when absent from a card).
    #[serde(default)]
    pub kind: PrecondKind,
}

impl Default for EdmPrecond {
    fn default() -> Self {
        Self::edm(0.5)
    }
}

impl EdmPrecond {
    /// Karras et al.'s preconditioning with σ_d = `sigma_data`.
    pub fn edm(sigma_data: f64) -> Self {
        Self {
            sigma_data,
            kind: PrecondKind::Edm,
        }
    }

    /// [`PrecondKind::Ambient`] preconditioning with σ_d = `sigma_data`.
    pub fn ambient(sigma_data: f64) -> Self {
        Self {
            sigma_data,
            kind: PrecondKind::Ambient,
        }
    }

    /// `σ_d²/(σ²+σ_d²)`.
    pub fn c_skip(&self, sigma: f64) -> f64 {
        let sd2 = self.sigma_data * self.sigma_data;
        sd2 / (sigma * sigma + sd2)
    }

    /// `σ σ_d / √(σ²+σ_d²)` ([`PrecondKind::Edm`]) or `σ_d` ([`PrecondKind::Ambient`]).
    pub fn c_out(&self, sigma: f64) -> f64 {
        match self.kind {
            PrecondKind::Edm => {
                sigma * self.sigma_data / (sigma * sigma + self.sigma_data * self.sigma_data).sqrt()
            }
            PrecondKind::Ambient => self.sigma_data,
        }
    }

    /// `1/√(σ²+σ_d²)`.
    pub fn c_in(&self, sigma: f64) -> f64 {
        1.0 / (sigma * sigma + self.sigma_data * self.sigma_data).sqrt()
    }

    /// `ln(σ)/4`.
    pub fn c_noise(&self, sigma: f64) -> f64 {
        sigma.ln() / 4.0
    }

    /// Loss weight `λ(σ) = 1/c_out(σ)²`: `(σ²+σ_d²)/(σ σ_d)²` (EDM) or `1/σ_d²` (ambient).
    pub fn loss_weight(&self, sigma: f64) -> f64 {
        let sd = self.sigma_data;
        match self.kind {
            PrecondKind::Edm => (sigma * sigma + sd * sd) / (sigma * sd).powi(2),
            PrecondKind::Ambient => 1.0 / (sd * sd),
        }
    }

    /// [`Self::loss_weight`] element-wise on a `[N]` tensor of σ.
    pub fn loss_weight_t(&self, sigma: &Tensor) -> Result<Tensor> {
        let sd2 = self.sigma_data * self.sigma_data;
        match self.kind {
            PrecondKind::Edm => {
                let s2 = sigma.sqr()?;
                Ok(((&s2 + sd2)? / (s2 * sd2)?)?)
            }
            PrecondKind::Ambient => Ok((sigma.ones_like()? / sd2)?),
        }
    }

    /// Applies the preconditioning around a raw network `f(c_in·x, c_noise)`:
    /// `x: [N, C, H, W]`, `sigma: [N]` (> 0), `cond: [N, Cm, H, W]` extra channels passed to
    /// `f` unscaled after the scaled image (pass `None` for none). Returns `D(x; σ)`, same shape
    /// as `x`; `f` must return that shape too.
    pub fn denoise<F>(
        &self,
        x: &Tensor,
        cond: Option<&Tensor>,
        sigma: &Tensor,
        f: F,
    ) -> Result<Tensor>
    where
        F: FnOnce(&Tensor, &Tensor) -> Result<Tensor>,
    {
        let (n, _, _, _) = x.dims4()?;
        if sigma.dims() != [n] {
            return Err(DiffusionError::Shape(format!(
                "sigma must be [{n}], got {:?}",
                sigma.dims()
            )));
        }
        let sd2 = self.sigma_data * self.sigma_data;
        let s2 = sigma.sqr()?;
        let total = (&s2 + sd2)?; // σ² + σ_d²
        let c_skip = (total.recip()? * sd2)?;
        let c_out = match self.kind {
            PrecondKind::Edm => ((sigma / total.sqrt()?)? * self.sigma_data)?,
            PrecondKind::Ambient => (sigma.ones_like()? * self.sigma_data)?,
        };
        let c_in = total.sqrt()?.recip()?;
        let c_noise = (sigma.log()? / 4.0)?;
        let col = |t: &Tensor| t.reshape((n, 1, 1, 1));
        let scaled = x.broadcast_mul(&col(&c_in)?)?;
        let net_in = match cond {
            Some(c) => Tensor::cat(&[&scaled, c], 1)?,
            None => scaled,
        };
        let fx = f(&net_in, &c_noise)?;
        if fx.dims() != x.dims() {
            return Err(DiffusionError::Shape(format!(
                "raw network returned {:?}, expected {:?}",
                fx.dims(),
                x.dims()
            )));
        }
        Ok((x.broadcast_mul(&col(&c_skip)?)? + fx.broadcast_mul(&col(&c_out)?)?)?)
    }
}

/// Log-normal training noise levels: `σ = exp(P_mean + P_std·z)`, `z ~ N(0, 1)`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SigmaSampler {
    /// Mean of ln σ (EDM: −1.2).
    pub p_mean: f64,
    /// Standard deviation of ln σ (EDM: 1.2).
    pub p_std: f64,
    /// A second log-normal that a fraction of the draws come from (absent: none; cards without
    /// the field have none and are not rewritten with it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mix: Option<SigmaMix>,
}

/// A second log-normal component of [`SigmaSampler`]: with probability `fraction` a draw is
/// `exp(p_mean + p_std·z)` instead of the main component's.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SigmaMix {
    /// Probability in [0, 1] that a draw comes from this component.
    pub fraction: f64,
    /// Mean of ln σ of this component.
    pub p_mean: f64,
    /// Standard deviation of ln σ of this component (> 0).
    pub p_std: f64,
}

impl std::str::FromStr for SigmaMix {
    type Err = String;
    /// Parses `FRACTION:MEAN:STD`, e.g. `0.5:-5:0.5`.
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let parts: Vec<&str> = s.split(':').collect();
        let [f, m, d] = parts.as_slice() else {
            return Err(format!(
                "expected FRACTION:MEAN:STD (e.g. 0.5:-5:0.5), got {s:?}"
            ));
        };
        let num = |t: &str, what: &str| {
            t.trim()
                .parse::<f64>()
                .map_err(|e| format!("{what} {t:?} in {s:?}: {e}"))
        };
        let mix = Self {
            fraction: num(f, "fraction")?,
            p_mean: num(m, "mean of ln σ")?,
            p_std: num(d, "standard deviation of ln σ")?,
        };
        mix.validate().map_err(|e| format!("{s:?}: {e}"))?;
        Ok(mix)
    }
}

impl std::fmt::Display for SigmaMix {
    /// `FRACTION:MEAN:STD`, the form [`SigmaMix::from_str`] parses.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}:{}", self.fraction, self.p_mean, self.p_std)
    }
}

/// Whether `m` is an accepted mean of ln σ for training noise levels: finite, in [−20, 20].
pub fn valid_log_mean(m: f64) -> bool {
    m.is_finite() && m.abs() <= 20.0
}

/// Whether `s` is an accepted standard deviation of ln σ: finite, in (0, 10].
pub fn valid_log_std(s: f64) -> bool {
    s.is_finite() && s > 0.0 && s <= 10.0
}

impl SigmaMix {
    /// Checks `fraction ∈ [0, 1]`, [`valid_log_mean`] and [`valid_log_std`].
    pub fn validate(&self) -> std::result::Result<(), String> {
        if !(self.fraction.is_finite() && (0.0..=1.0).contains(&self.fraction)) {
            return Err(format!("fraction must be in [0, 1], got {}", self.fraction));
        }
        if !valid_log_mean(self.p_mean) {
            return Err(format!(
                "mean of ln σ must be in [−20, 20], got {}",
                self.p_mean
            ));
        }
        if !valid_log_std(self.p_std) {
            return Err(format!(
                "standard deviation of ln σ must be in (0, 10], got {}",
                self.p_std
            ));
        }
        Ok(())
    }
}

impl Default for SigmaSampler {
    fn default() -> Self {
        Self {
            p_mean: -1.2,
            p_std: 1.2,
            mix: None,
        }
    }
}

impl SigmaSampler {
    /// `sigma` if it lies within two standard deviations (in ln σ) of a component the training
    /// draws from, else the nearest such σ (nearest in ln σ): the noise level at which a network
    /// trained on these draws can be asked for a one-step reconstruction.
    pub fn within_training(&self, sigma: f64) -> f64 {
        let mut comps = Vec::with_capacity(2);
        if self.mix.is_none_or(|m| m.fraction < 1.0) {
            comps.push((self.p_mean, self.p_std));
        }
        if let Some(m) = self.mix.filter(|m| m.fraction > 0.0) {
            comps.push((m.p_mean, m.p_std));
        }
        let l = sigma.ln();
        let nearest = comps
            .into_iter()
            .map(|(mu, sd)| l.clamp(mu - 2.0 * sd, mu + 2.0 * sd))
            .min_by(|a, b| (a - l).abs().total_cmp(&(b - l).abs()));
        match nearest {
            Some(c) if c != l => c.exp(),
            _ => sigma,
        }
    }

    /// Draws `n` noise levels from `rng` (deterministic for a seeded RNG). Without
    /// [`SigmaSampler::mix`] this takes exactly one normal draw per level, as before the mixture
    /// existed, so runs without it resume bit for bit; with it, a uniform draw picks the
    /// component first.
    pub fn sample<R: Rng + ?Sized>(&self, n: usize, rng: &mut R) -> Result<Vec<f32>> {
        let normal = Normal::new(self.p_mean, self.p_std)
            .map_err(|e| DiffusionError::Config(format!("sigma sampler: {e}")))?;
        let Some(mix) = self.mix else {
            return Ok((0..n).map(|_| normal.sample(rng).exp() as f32).collect());
        };
        mix.validate()
            .map_err(|e| DiffusionError::Config(format!("sigma mixture: {e}")))?;
        let second = Normal::new(mix.p_mean, mix.p_std)
            .map_err(|e| DiffusionError::Config(format!("sigma mixture: {e}")))?;
        Ok((0..n)
            .map(|_| {
                let u: f64 = rng.random();
                let z = if u < mix.fraction {
                    second.sample(rng)
                } else {
                    normal.sample(rng)
                };
                z.exp() as f32
            })
            .collect())
    }
}

/// Configuration of a [`Denoiser`]; serialised into model cards.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DenoiserConfig {
    /// The raw network; `in_channels = image_channels + mask_channels`,
    /// `out_channels = image_channels`.
    pub unet: UNetConfig,
    /// Image channels (2: real and imaginary parts of a complex MR image).
    pub image_channels: usize,
    /// Conditioning mask channels (1 for a pixel mask or a single k-space sampling mask).
    pub mask_channels: usize,
    /// EDM preconditioning (σ_d).
    pub precond: EdmPrecond,
    /// How a multi-coil k-space prior's image input is formed (absent in cards before the
    /// option, and not written when [`NetworkInput::Adjoint`], so those cards keep their bytes).
    #[serde(default, skip_serializing_if = "NetworkInput::is_adjoint")]
    pub input: NetworkInput,
}

impl DenoiserConfig {
    /// A complex-image (2 channels) denoiser with one mask channel on a named U-Net preset
    /// (`"tiny"`, `"small"`, `"clinical"` or `"base"`), σ_d = `sigma_data`.
    pub fn complex_preset(preset: &str, sigma_data: f64) -> Result<Self> {
        Ok(Self {
            unet: UNetConfig::preset(preset, 3, 2)?,
            image_channels: 2,
            mask_channels: 1,
            precond: EdmPrecond::edm(sigma_data),
            input: NetworkInput::Adjoint,
        })
    }

    /// Checks channel bookkeeping, σ_d > 0 and the U-Net configuration.
    pub fn validate(&self) -> Result<()> {
        if self.unet.in_channels != self.image_channels + self.mask_channels
            || self.unet.out_channels != self.image_channels
        {
            return Err(DiffusionError::Config(format!(
                "U-Net channels {}→{} do not match {} image + {} mask channels",
                self.unet.in_channels,
                self.unet.out_channels,
                self.image_channels,
                self.mask_channels
            )));
        }
        if !(self.precond.sigma_data.is_finite() && self.precond.sigma_data > 0.0) {
            return Err(DiffusionError::Config("sigma_data must be > 0".into()));
        }
        self.input.validate()?;
        self.unet.validate()
    }
}

/// The amri denoiser `D_θ(x, mask; σ)`: EDM preconditioning around a [`UNet`] whose input is the
/// (corrupted, noisy) image followed by the mask channels and whose output is the clean-image
/// estimate.
#[derive(Debug, Clone)]
pub struct Denoiser {
    cfg: DenoiserConfig,
    net: UNet,
}

/// Builds a [`Denoiser`] (weights under `vb.pp("unet")`).
pub fn denoiser(cfg: &DenoiserConfig, vb: VarBuilder) -> Result<Denoiser> {
    cfg.validate()?;
    Ok(Denoiser {
        cfg: cfg.clone(),
        net: unet(&cfg.unet, vb.pp("unet"))?,
    })
}

impl Denoiser {
    /// The configuration this denoiser was built from.
    pub fn config(&self) -> &DenoiserConfig {
        &self.cfg
    }

    /// `x: [N, image_channels, H, W]` (real/imag of the corrupted noisy image),
    /// `mask: [N, mask_channels, H, W]` (or anything broadcastable to it, e.g. a Cartesian
    /// `[N, 1, 1, W]`; values in {0, 1}), `sigma: [N]` (> 0) → clean estimate, shape of `x`.
    pub fn forward(&self, x: &Tensor, mask: &Tensor, sigma: &Tensor) -> Result<Tensor> {
        let (n, c, h, w) = x.dims4()?;
        if c != self.cfg.image_channels {
            return Err(DiffusionError::Shape(format!(
                "denoiser expects {} image channels, got {c}",
                self.cfg.image_channels
            )));
        }
        let mask = mask
            .broadcast_as((n, self.cfg.mask_channels, h, w))
            .map_err(|e| DiffusionError::Shape(format!("mask {:?}: {e}", mask.dims())))?
            .to_dtype(x.dtype())?
            .contiguous()?;
        self.cfg
            .precond
            .denoise(x, Some(&mask), sigma, |inp, c_noise| {
                self.net.forward(inp, c_noise)
            })
    }
}

/// Per-sample sum of squares over all but the batch axis: `[N, …] → [N]`.
pub(crate) fn per_sample_sq_norm(t: &Tensor) -> Result<Tensor> {
    let n = t.dim(0)?;
    Ok(t.sqr()?.reshape((n, ()))?.sum(D::Minus1)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};
    use candle_nn::VarMap;
    use rand::SeedableRng;

    #[test]
    fn coefficient_identities() {
        let p = EdmPrecond::edm(0.7);
        for &s in &[1e-3, 0.1, 0.7, 2.0, 80.0] {
            // Closed forms: c_skip + c_out²/σ_d² = 1 and c_in² (σ²+σ_d²) = 1.
            let cs = p.c_skip(s);
            let co = p.c_out(s);
            assert!((cs + co * co / (0.7 * 0.7) - 1.0).abs() < 1e-12);
            assert!((p.c_in(s).powi(2) * (s * s + 0.49) - 1.0).abs() < 1e-12);
            // λ(σ) c_out(σ)² = 1 (unit effective target weight).
            assert!((p.loss_weight(s) * co * co - 1.0).abs() < 1e-12);
            assert!((p.c_noise(s) - s.ln() / 4.0).abs() < 1e-15);
        }
        // σ = σ_d: c_skip = 1/2.
        assert!((p.c_skip(0.7) - 0.5).abs() < 1e-12);
    }

    #[test]
    fn denoise_tends_to_identity_as_sigma_vanishes_for_any_network() -> Result<()> {
        let dev = Device::Cpu;
        let p = EdmPrecond::edm(0.5);
        let x = Tensor::randn(0f32, 1., (2, 2, 4, 4), &dev)?;
        let big = |_: &Tensor, _: &Tensor| -> Result<Tensor> {
            Ok((Tensor::ones((2, 2, 4, 4), DType::F32, &dev)? * 100.0)?)
        };
        let mut prev = f32::INFINITY;
        for &s in &[1e-1f32, 1e-3, 1e-5] {
            let sig = Tensor::new(&[s, s], &dev)?;
            let d = p.denoise(&x, None, &sig, big)?;
            let err = (d - &x)?.abs()?.max_all()?.to_scalar::<f32>()?;
            // |D − x| = (1 − c_skip)|x| + c_out·100 ≤ ~ σ·100/σ_d·σ_d
            let bound = (1.0 - p.c_skip(s as f64)) * 10.0 + p.c_out(s as f64) * 100.0 + 1e-5;
            assert!((err as f64) <= bound, "σ={s}: err {err} > {bound}");
            assert!(err < prev);
            prev = err;
        }
        assert!(prev < 1e-2);
        Ok(())
    }

    #[test]
    fn ambient_kind_keeps_unit_target_weight_and_a_full_scale_correction_at_small_sigma(
    ) -> Result<()> {
        let p = EdmPrecond::ambient(0.7);
        let e = EdmPrecond::edm(0.7);
        for &s in &[1e-4, 1e-2, 0.7, 80.0] {
            assert_eq!(p.c_skip(s), e.c_skip(s));
            assert_eq!(p.c_in(s), e.c_in(s));
            assert!((p.c_out(s) - 0.7).abs() < 1e-15);
            assert!((p.loss_weight(s) * p.c_out(s).powi(2) - 1.0).abs() < 1e-12);
        }
        // at large σ both kinds agree (EDM's c_out → σ_d)
        assert!((e.c_out(1e4) - p.c_out(1e4)).abs() < 1e-8);
        // F ≡ 1 at σ = 1e-4: EDM moves the input by ~1e-4, the ambient kind by σ_d
        let dev = Device::Cpu;
        let x = Tensor::zeros((1, 1, 2, 2), DType::F32, &dev)?;
        let sig = Tensor::new(&[1e-4f32], &dev)?;
        let one = |_: &Tensor, _: &Tensor| Tensor::ones((1, 1, 2, 2), DType::F32, &dev);
        let d_amb = p.denoise(&x, None, &sig, |a, b| Ok(one(a, b)?))?;
        let d_edm = e.denoise(&x, None, &sig, |a, b| Ok(one(a, b)?))?;
        assert!((d_amb.max_all()?.to_scalar::<f32>()? - 0.7).abs() < 1e-6);
        assert!(d_edm.max_all()?.to_scalar::<f32>()? < 1e-3);
        // a card without `kind` is EDM
        let old: EdmPrecond = serde_json::from_str(r#"{"sigma_data":0.5}"#)
            .map_err(|e| DiffusionError::Config(e.to_string()))?;
        assert_eq!(old, EdmPrecond::edm(0.5));
        let new: EdmPrecond = serde_json::from_str(r#"{"sigma_data":0.5,"kind":"ambient"}"#)
            .map_err(|e| DiffusionError::Config(e.to_string()))?;
        assert_eq!(new, EdmPrecond::ambient(0.5));
        Ok(())
    }

    #[test]
    fn denoise_matches_scalar_formula_and_passes_cond_unscaled() -> Result<()> {
        for p in [EdmPrecond::edm(0.5), EdmPrecond::ambient(0.5)] {
            denoise_matches_scalar_formula(p)?;
        }
        Ok(())
    }

    fn denoise_matches_scalar_formula(p: EdmPrecond) -> Result<()> {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 1., (2, 1, 2, 2), &dev)?;
        let cond = Tensor::ones((2, 1, 2, 2), DType::F32, &dev)?;
        let sig = [0.3f32, 4.0];
        // F returns its input image channel plus the c_noise value; checks c_in, c_noise, cond.
        let d = p.denoise(&x, Some(&cond), &Tensor::new(&sig, &dev)?, |inp, cn| {
            assert_eq!(inp.dims(), &[2, 2, 2, 2]);
            let c = inp.narrow(1, 1, 1)?;
            let cmax = c.max_all()?.to_scalar::<f32>()?;
            let cmin = c.min_all()?.to_scalar::<f32>()?;
            assert_eq!((cmin, cmax), (1.0, 1.0));
            Ok(inp
                .narrow(1, 0, 1)?
                .broadcast_add(&cn.reshape((2, 1, 1, 1))?)?)
        })?;
        let xv = x.flatten_all()?.to_vec1::<f32>()?;
        let dv = d.flatten_all()?.to_vec1::<f32>()?;
        for (i, (&xi, &di)) in xv.iter().zip(&dv).enumerate() {
            let s = sig[i / 4] as f64;
            let want =
                p.c_skip(s) * xi as f64 + p.c_out(s) * (p.c_in(s) * xi as f64 + p.c_noise(s));
            assert!((di as f64 - want).abs() < 1e-5, "{i}: {di} vs {want}");
        }
        Ok(())
    }

    #[test]
    fn loss_weight_tensor_matches_scalar() -> Result<()> {
        for p in [EdmPrecond::edm(0.5), EdmPrecond::ambient(0.5)] {
            let s = [0.01f32, 0.5, 3.0];
            let w = p
                .loss_weight_t(&Tensor::new(&s, &Device::Cpu)?)?
                .to_vec1::<f32>()?;
            for (a, b) in s.iter().zip(w) {
                let want = p.loss_weight(*a as f64);
                assert!(((b as f64) - want).abs() / want < 1e-5);
            }
        }
        Ok(())
    }

    #[test]
    fn sigma_sampler_is_seeded_and_log_normal() -> Result<()> {
        let s = SigmaSampler::default();
        let mut r1 = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let mut r2 = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let a = s.sample(4000, &mut r1)?;
        assert_eq!(a, s.sample(4000, &mut r2)?);
        let logs: Vec<f64> = a.iter().map(|&v| (v as f64).ln()).collect();
        let mean = logs.iter().sum::<f64>() / logs.len() as f64;
        let var = logs.iter().map(|l| (l - mean).powi(2)).sum::<f64>() / logs.len() as f64;
        // standard errors: 1.2/√4000 ≈ 0.019 for the mean
        assert!((mean + 1.2).abs() < 0.08, "mean ln σ = {mean}");
        assert!((var.sqrt() - 1.2).abs() < 0.08, "std ln σ = {}", var.sqrt());
        Ok(())
    }

    #[test]
    fn sigma_mixture_draws_its_fraction_from_the_second_log_normal() -> Result<()> {
        // two well-separated components: ln σ ~ N(−1.2, 0.3²) and N(−6, 0.3²); every draw with
        // ln σ < −3.6 (8 standard deviations from both means) comes from the second
        let s = SigmaSampler {
            p_mean: -1.2,
            p_std: 0.3,
            mix: Some(SigmaMix {
                fraction: 0.3,
                p_mean: -6.0,
                p_std: 0.3,
            }),
        };
        let mut r1 = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let mut r2 = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let a = s.sample(20_000, &mut r1)?;
        assert_eq!(a, s.sample(20_000, &mut r2)?);
        let (low, high): (Vec<f64>, Vec<f64>) =
            a.iter().map(|&v| (v as f64).ln()).partition(|l| *l < -3.6);
        // binomial standard error √(0.3·0.7/20000) ≈ 0.0032
        let frac = low.len() as f64 / a.len() as f64;
        assert!(
            (frac - 0.3).abs() < 0.015,
            "fraction from the second component: {frac}"
        );
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
        assert!((mean(&low) + 6.0).abs() < 0.02, "{}", mean(&low));
        assert!((mean(&high) + 1.2).abs() < 0.02, "{}", mean(&high));
        // no mixture, or a mixture with fraction 0 / 1, are the single log-normals
        let plain = SigmaSampler { mix: None, ..s };
        let mut r3 = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let p = plain.sample(2000, &mut r3)?;
        assert!(p.iter().all(|&v| (v as f64).ln() > -3.6));
        let all = SigmaSampler {
            mix: Some(SigmaMix {
                fraction: 1.0,
                ..s.mix.unwrap()
            }),
            ..s
        };
        assert!(all
            .sample(2000, &mut r3)?
            .iter()
            .all(|&v| (v as f64).ln() < -3.6));
        Ok(())
    }

    #[test]
    fn within_training_keeps_a_covered_sigma_and_clamps_others_to_the_nearest_component() {
        let edm = SigmaSampler::default();
        // EDM's N(−1.2, 1.2²) covers [e^−3.6, e^1.2] ≈ [0.027, 3.3]
        assert_eq!(edm.within_training(0.05), 0.05);
        assert!((edm.within_training(0.001) - (-3.6f64).exp()).abs() < 1e-12);
        assert!((edm.within_training(100.0) - 1.2f64.exp()).abs() < 1e-9);
        // a one-step run, N(−5, 0.5²): [e^−6, e^−4] ≈ [0.0025, 0.018]
        let small = SigmaSampler {
            p_mean: -5.0,
            p_std: 0.5,
            mix: None,
        };
        assert!((small.within_training(0.05) - (-4.0f64).exp()).abs() < 1e-12);
        assert_eq!(small.within_training(0.01), 0.01);
        // a mixture covers both ranges; a fraction of 1 leaves only the second
        let mix = SigmaMix {
            fraction: 0.5,
            p_mean: -5.0,
            p_std: 0.5,
        };
        let both = SigmaSampler {
            mix: Some(mix),
            ..edm
        };
        assert_eq!(both.within_training(0.01), 0.01);
        assert_eq!(both.within_training(0.05), 0.05);
        let only = SigmaSampler {
            mix: Some(SigmaMix {
                fraction: 1.0,
                ..mix
            }),
            ..edm
        };
        assert!((only.within_training(0.05) - (-4.0f64).exp()).abs() < 1e-12);
    }

    #[test]
    fn sigma_mixture_parses_and_rejects_bad_values() {
        let m: SigmaMix = "0.5:-5:0.5".parse().unwrap();
        assert_eq!(
            m,
            SigmaMix {
                fraction: 0.5,
                p_mean: -5.0,
                p_std: 0.5
            }
        );
        for bad in [
            "0.5:-5",
            "1.5:-5:0.5",
            "0.5:-5:0",
            "x:-5:0.5",
            "0.5:-50:1",
            "0.5:-5:0.5:1",
        ] {
            let e = bad.parse::<SigmaMix>().unwrap_err();
            assert!(e.contains(bad) || e.contains("expected"), "{bad}: {e}");
        }
    }

    #[test]
    fn sigma_sampler_card_without_mixture_keeps_its_bytes() {
        // cards written before the mixture existed read back without one and serialise unchanged
        let old = r#"{"p_mean":-1.2,"p_std":1.2}"#;
        let s: SigmaSampler = serde_json::from_str(old).unwrap();
        assert_eq!(s, SigmaSampler::default());
        assert_eq!(serde_json::to_string(&s).unwrap(), old);
        let with = SigmaSampler {
            mix: Some(SigmaMix {
                fraction: 0.5,
                p_mean: -5.0,
                p_std: 0.5,
            }),
            ..s
        };
        let back: SigmaSampler =
            serde_json::from_str(&serde_json::to_string(&with).unwrap()).unwrap();
        assert_eq!(back, with);
    }

    #[test]
    fn denoiser_at_init_returns_c_skip_times_input() -> Result<()> {
        let dev = Device::Cpu;
        let mut cfg = DenoiserConfig::complex_preset("tiny", 0.5)?;
        cfg.unet.base_channels = 8;
        cfg.unet.groups = 4;
        cfg.unet.attention_head_channels = 8;
        let vm = VarMap::new();
        let d = denoiser(&cfg, VarBuilder::from_varmap(&vm, DType::F32, &dev))?;
        let x = Tensor::randn(0f32, 1., (1, 2, 16, 16), &dev)?;
        let m = Tensor::ones((1, 1, 1, 16), DType::F32, &dev)?; // Cartesian broadcast
        let out = d.forward(&x, &m, &Tensor::new(&[0.5f32], &dev)?)?;
        let diff = (out - (x * 0.5)?)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(diff < 1e-6);
        assert!(d
            .forward(
                &Tensor::zeros((1, 3, 16, 16), DType::F32, &dev)?,
                &m,
                &Tensor::new(&[0.5f32], &dev)?
            )
            .is_err());
        let mut bad = cfg.clone();
        bad.mask_channels = 2;
        assert!(bad.validate().is_err());
        Ok(())
    }
}

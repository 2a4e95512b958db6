//! The posterior sampler for inverse problems with an ambient prior (after Ambient Diffusion
//! Posterior Sampling, Aali et al. 2024).
//!
//! Noise levels `σ_0 > … > σ_{S−1}` follow the EDM schedule ([`super::karras_sigmas`]).
//! Starting from `x ~ N(0, σ_0² I)`, each step at `σ = σ_i`:
//!
//! 1. **prior**: `x̂0 = D(Ã x, Ã; σ)`, the network's `E[x0 | Ã x_t]`, with a fresh mask `Ã` of
//!    the training corruption for every step and sample ([`NetMasks::Training`], ADPS), or the
//!    measurement's own mask ([`NetMasks::Measurement`]);
//! 2. **likelihood**: `p(x0 | x_t)` is approximated by `N(x̂0, r² I)` with
//!    `r² = σ² σ_d²/(σ² + σ_d²)` (exact for a Gaussian prior of per-component variance σ_d²), and
//!    combined exactly with the Gaussian likelihood of the measurement
//!    (`y = A x0 + η ε`, `A` a k-space mask after the orthonormal DFT or a pixel mask, so the
//!    combination is diagonal in the measured domain). On measured entries the mean moves by
//!    `g (y − x̂0)` with gain `g = ζ r²/(r² + η²)` and the variance is `r² (1 − g)`; unmeasured
//!    entries keep `x̂0` and `r²`. `ζ ∈ (0, 1]` is the likelihood step size (1: the exact
//!    Gaussian combination). This gives a mean `m` and a draw `x0' = m + √ξ · noise`;
//! 3. **step** to `σ' = σ_{i+1}`: `x ← x0' + σ' (√(1−ξ) (x − m)/σ + √ξ z)`, `z ~ N(0, I)`.
//!    `ξ = 0` ([`PosteriorConfig::stochasticity`]) is the deterministic Euler step of the
//!    probability-flow ODE with the data-corrected estimate (`x + (σ'−σ)(x − m)/σ`); `ξ = 1`
//!    re-noises the conditional draw, which keeps `p(x_t | y)` invariant when step 1 is exact, so
//!    for a Gaussian prior the samples follow the exact posterior whatever the number of steps.
//!
//! For multi-coil k-space the data step is the same Gaussian combination with the coil data
//! `y_c = M F S_c x0 + η ε` (SENSE solves, a perturb-and-MAP draw: `sense_data_step`), and the
//! network sees its training input built from the iterate's coil data.
//!
//! The sample is the last `x0'` (at `σ_{S−1} = σ_min`). Several samples run as one batch and
//! give the mean and the per-pixel standard deviation
//! `std = sqrt(Σ_s |x_s − x̄|² / (n − 1))` (complex: real and imaginary spread together).
//! Noise levels are per real component; `noise_sigma` is in the input's units (for amri
//! simulations, whose `noise_sigma` is per complex sample, divide by √2).

use std::sync::atomic::AtomicBool;

use amri_core::fft::{fft2c, ifft2c};
use amri_core::{MeasuredDomain, C32};
use ndarray::{Array2, Array3, Axis, Zip};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::one_step::{own_mask, sense_fit};
use super::{
    check_cancel, complex_noise, denoise_batch, karras_sigmas, measured_scale, PriorDenoiser,
    Problem, Single,
};
use crate::error::{DiffusionError, Result};
use crate::seed::{derive_seed, TAG_POSTERIOR};
use amri_ops::sense::Sense;

/// Which masks the network sees during sampling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NetMasks {
    /// A fresh mask of the training corruption `Ã` per step and sample (ADPS).
    #[default]
    Training,
    /// The measurement's own mask at every step (the prior must match the measurement domain).
    Measurement,
}

/// Settings of [`posterior`].
#[derive(Debug, Clone, PartialEq)]
pub struct PosteriorConfig {
    /// Noise levels (network calls) per sample, ≥ 1.
    pub steps: usize,
    /// Posterior samples, ≥ 1 (run as one batch).
    pub samples: usize,
    /// Largest noise level (normalised units).
    pub sigma_max: f64,
    /// Smallest noise level.
    pub sigma_min: f64,
    /// Karras schedule exponent ρ.
    pub rho: f64,
    /// Likelihood step size ζ ∈ (0, 1] (1: exact Gaussian combination).
    pub zeta: f64,
    /// ξ ∈ [0, 1]: 0 deterministic Euler steps, 1 fully stochastic (exact for Gaussian priors).
    pub stochasticity: f64,
    /// Measurement noise standard deviation η per real component, in the input's units.
    pub noise_sigma: f64,
    /// Seed of the initial noise, the per-step noise and the training masks.
    pub seed: u64,
    /// Masks given to the network.
    pub net_masks: NetMasks,
    /// Intensity scale; `None`: [`measured_scale`] of this slice.
    pub scale: Option<f32>,
}

impl Default for PosteriorConfig {
    fn default() -> Self {
        Self {
            steps: 50,
            samples: 4,
            sigma_max: 80.0,
            sigma_min: 0.002,
            rho: 7.0,
            zeta: 1.0,
            stochasticity: 1.0,
            noise_sigma: 0.0,
            seed: 0,
            net_masks: NetMasks::Training,
            scale: None,
        }
    }
}

impl PosteriorConfig {
    /// Checks ranges; the message names the field.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(DiffusionError::Config(m));
        if self.steps == 0 {
            return bad("posterior steps must be ≥ 1".into());
        }
        if self.samples == 0 {
            return bad("posterior samples must be ≥ 1".into());
        }
        if !(self.zeta > 0.0 && self.zeta <= 1.0) {
            return bad(format!("zeta must be in (0, 1], got {}", self.zeta));
        }
        if !(0.0..=1.0).contains(&self.stochasticity) {
            return bad(format!(
                "stochasticity must be in [0, 1], got {}",
                self.stochasticity
            ));
        }
        if !(self.noise_sigma.is_finite() && self.noise_sigma >= 0.0) {
            return bad(format!("noise_sigma must be ≥ 0, got {}", self.noise_sigma));
        }
        karras_sigmas(self.steps, self.sigma_min, self.sigma_max, self.rho).map(|_| ())
    }
}

/// What [`posterior`] returns, in the input's units.
#[derive(Debug, Clone)]
pub struct PosteriorResult {
    /// Mean of the samples `[row, col]`.
    pub mean: Array2<C32>,
    /// Per-pixel standard deviation of the samples (0 for a single sample).
    pub std: Array2<f32>,
    /// The samples.
    pub samples: Vec<Array2<C32>>,
}

/// Step 2 of the module docs for one sample: returns `(m, x0')` in the image domain.
#[allow(clippy::too_many_arguments)]
fn data_step(
    xhat: &Array2<C32>,
    single: &Single,
    r2: f64,
    eta2: f64,
    zeta: f64,
    xi: f64,
    rng: &mut ChaCha8Rng,
) -> (Array2<C32>, Array2<C32>) {
    let total = r2 + eta2;
    let g = if total > 0.0 { zeta * r2 / total } else { zeta };
    let v_meas = (r2 * (1.0 - g)).max(0.0);
    let to = |x: &Array2<C32>| match single.domain {
        MeasuredDomain::Image => x.clone(),
        MeasuredDomain::Kspace | MeasuredDomain::Projection => fft2c(x),
    };
    let back = |x: &Array2<C32>| match single.domain {
        MeasuredDomain::Image => x.clone(),
        MeasuredDomain::Kspace | MeasuredDomain::Projection => ifft2c(x),
    };
    let mut m = to(xhat);
    Zip::from(&mut m)
        .and(&single.y)
        .and(&single.mask)
        .for_each(|k, y, mk| {
            if *mk != 0.0 {
                *k += (*y - *k) * g as f32;
            }
        });
    let (h, w) = m.dim();
    let noise = complex_noise((1, h, w), rng).index_axis_move(Axis(0), 0);
    let mut draw = m.clone();
    let sx = xi.sqrt();
    Zip::from(&mut draw)
        .and(&noise)
        .and(&single.mask)
        .for_each(|d, z, mk| {
            let v = if *mk != 0.0 { v_meas } else { r2 };
            *d += *z * (sx * v.sqrt()) as f32;
        });
    (back(&m), back(&draw))
}

/// CG iterations of each solve of [`sense_data_step`].
pub const SENSE_STEP_ITERATIONS: usize = 10;

/// Step 2 for multi-coil k-space `y_c = M F S_c x0 + η ε`: the exact Gaussian combination of
/// `N(x̂0, r² I)` with that likelihood, by SENSE solves instead of a diagonal update. The mean
/// `m* = argmin ‖A x − y‖²/η² + ‖x − x̂0‖²/r²` (`A = M F S`, CG from x̂0,
/// [`SENSE_STEP_ITERATIONS`] steps), `m = x̂0 + ζ (m* − x̂0)`; a draw by perturb-and-MAP (the same
/// solve with `x̂0 + r z₁` and `y + η z₂`, an exact posterior sample when solved exactly):
/// `x0' = m + √ξ (s − m*)`. Returns `(m, x0')`.
#[allow(clippy::too_many_arguments)]
fn sense_data_step(
    xhat: &Array2<C32>,
    op: &Sense,
    y: &[C32],
    r2: f64,
    eta2: f64,
    zeta: f64,
    xi: f64,
    rng: &mut ChaCha8Rng,
) -> Result<(Array2<C32>, Array2<C32>)> {
    let lambda = if r2 > 0.0 { (eta2 / r2) as f32 } else { 0.0 };
    let fit = sense_fit(op, y, xhat, lambda, SENSE_STEP_ITERATIONS)?;
    let mean = xhat + &((&fit - xhat) * C32::new(zeta as f32, 0.0));
    if xi == 0.0 {
        return Ok((mean.clone(), mean));
    }
    let (h, w) = xhat.dim();
    let z1 = complex_noise((1, h, w), rng).index_axis_move(Axis(0), 0);
    let prior_draw = xhat + &(z1 * C32::new(r2.sqrt() as f32, 0.0));
    let eta = eta2.sqrt() as f32;
    let coils = y.len() / (h * w).max(1);
    let z2 = complex_noise((coils, h, w), rng);
    // unmeasured entries get noise too; the operator's adjoint masks them out
    let y_draw: Vec<C32> = y.iter().zip(z2.iter()).map(|(v, z)| v + z * eta).collect();
    let s = sense_fit(op, &y_draw, &prior_draw, lambda, SENSE_STEP_ITERATIONS)?;
    let draw = &mean + &((&s - &fit) * C32::new(xi.sqrt() as f32, 0.0));
    Ok((mean, draw))
}

/// Posterior samples of `p` under `prior` (see the module docs). `progress(done, total)` is
/// called after every step; setting `cancel` stops at the next step with
/// [`DiffusionError::Cancelled`].
pub fn posterior<D: PriorDenoiser + ?Sized>(
    prior: &D,
    p: &Problem,
    cfg: &PosteriorConfig,
    progress: &dyn Fn(usize, usize),
    cancel: &AtomicBool,
) -> Result<PosteriorResult> {
    cfg.validate()?;
    p.validate()?;
    let scale = match cfg.scale {
        Some(s) => s,
        None => measured_scale(std::slice::from_ref(p))?,
    };
    let single = p.single(scale)?;
    let (h, w) = single.mask.dim();
    let n = cfg.samples;
    let own = match cfg.net_masks {
        NetMasks::Measurement => Some(own_mask(prior.input_domain(), single.domain, &single.mask)?),
        NetMasks::Training => None,
    };
    let sigmas = karras_sigmas(cfg.steps, cfg.sigma_min, cfg.sigma_max, cfg.rho)?;
    let mut rng = ChaCha8Rng::seed_from_u64(derive_seed(cfg.seed, 0, TAG_POSTERIOR));
    let sd2 = prior.sigma_data().powi(2);
    let eta = cfg.noise_sigma / scale as f64;
    let eta2 = eta * eta;
    let xi = cfg.stochasticity;
    // multi-coil k-space: the SENSE data step on the coil data (the virtual coil otherwise)
    let sense = match &single.coils {
        Some(c) => Some((
            Sense::new(c.maps.clone(), single.mask.clone())?,
            c.y.iter().copied().collect::<Vec<C32>>(),
        )),
        None => None,
    };
    let mut x = complex_noise((n, h, w), &mut rng) * C32::new(sigmas[0] as f32, 0.0);
    let mut out: Option<Array3<C32>> = None;
    for (i, &sigma) in sigmas.iter().enumerate() {
        check_cancel(cancel)?;
        let mut masks = Array3::<f32>::zeros((n, h, w));
        for (k, mut mk) in masks.outer_iter_mut().enumerate() {
            match &own {
                Some(m) => mk.assign(m),
                None => mk.assign(&prior.training_mask(
                    h,
                    w,
                    derive_seed(cfg.seed, i as u64, k as u64),
                )?),
            }
        }
        let maps = single.coils.as_ref().map(|c| &c.maps);
        let xhat = denoise_batch(prior, &x, &masks, maps, sigma)?;
        let r2 = sigma * sigma * sd2 / (sigma * sigma + sd2);
        let mut mean = Array3::<C32>::zeros((n, h, w));
        let mut draw = Array3::<C32>::zeros((n, h, w));
        for k in 0..n {
            let xk = xhat.index_axis(Axis(0), k).to_owned();
            let (m, d) = match &sense {
                Some((op, y)) => sense_data_step(&xk, op, y, r2, eta2, cfg.zeta, xi, &mut rng)?,
                None => data_step(&xk, &single, r2, eta2, cfg.zeta, xi, &mut rng),
            };
            mean.index_axis_mut(Axis(0), k).assign(&m);
            draw.index_axis_mut(Axis(0), k).assign(&d);
        }
        if let Some(&next) = sigmas.get(i + 1) {
            let z = complex_noise((n, h, w), &mut rng);
            let (a, b) = ((1.0 - xi).sqrt() / sigma, xi.sqrt());
            Zip::from(&mut x)
                .and(&draw)
                .and(&mean)
                .and(&z)
                .for_each(|x, d, m, z| {
                    *x = *d + (((*x - *m) * a as f32) + *z * b as f32) * next as f32;
                });
        } else {
            out = Some(draw);
        }
        progress(i + 1, sigmas.len());
    }
    let out = out.ok_or_else(|| DiffusionError::Config("no sampler steps".into()))?;
    let sc = C32::new(scale, 0.0);
    let samples: Vec<Array2<C32>> = out.outer_iter().map(|s| s.to_owned() * sc).collect();
    let mut mean = Array2::<C32>::zeros((h, w));
    for s in &samples {
        mean += s;
    }
    mean /= C32::new(n as f32, 0.0);
    let mut std = Array2::<f32>::zeros((h, w));
    if n > 1 {
        for s in &samples {
            Zip::from(&mut std)
                .and(s)
                .and(&mean)
                .for_each(|v, s, m| *v += (s - m).norm_sqr());
        }
        std.mapv_inplace(|v| (v / (n - 1) as f32).sqrt());
    }
    Ok(PosteriorResult { mean, std, samples })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::loss::DenoiseFn;
    use crate::sample::InputDomain;
    use candle_core::{Device, Tensor};
    use std::cell::Cell;
    use std::sync::atomic::Ordering;

    /// The exact denoiser of x0 ~ N(μ, s² I) per real component:
    /// `E[x0 | x0 + σn] = μ + s²/(s²+σ²)(x − μ)`; ignores the mask (a clean-data prior).
    pub(crate) struct Gaussian {
        pub mu: Array2<C32>,
        pub s: f64,
        pub dev: Device,
    }
    impl DenoiseFn for Gaussian {
        fn denoise(&self, x: &Tensor, _m: &Tensor, sigma: &Tensor) -> Result<Tensor> {
            let (n, _, h, w) = x.dims4()?;
            let mu = crate::sample::to_tensor(
                &self
                    .mu
                    .broadcast((n, h, w))
                    .ok_or_else(|| DiffusionError::Shape("mu".into()))?
                    .to_owned(),
                &self.dev,
            )?;
            let s2 = self.s * self.s;
            let g = ((sigma.sqr()? + s2)?.recip()? * s2)?.reshape((n, 1, 1, 1))?;
            Ok((&mu + (x - &mu)?.broadcast_mul(&g)?)?)
        }
    }
    impl PriorDenoiser for Gaussian {
        fn input_domain(&self) -> InputDomain {
            InputDomain::Clean
        }
        fn sigma_data(&self) -> f64 {
            self.s
        }
        fn device(&self) -> &Device {
            &self.dev
        }
    }

    pub(crate) fn prior_mean(h: usize, w: usize) -> Array2<C32> {
        Array2::from_shape_fn((h, w), |(i, j)| {
            C32::new(0.8 * (i as f32 - 1.5), 0.5 - 0.4 * j as f32)
        })
    }

    /// Per-entry analytic posterior (mean, variance per real component) of a measured entry
    /// with prior mean `mu`, prior variance `s2` and noise variance `eta2`, or the prior.
    fn analytic(mu: C32, y: C32, measured: bool, s2: f64, eta2: f64) -> (C32, f64) {
        if measured {
            let g = (s2 / (s2 + eta2)) as f32;
            (mu + (y - mu) * g, s2 * eta2 / (s2 + eta2))
        } else {
            (mu, s2)
        }
    }

    /// Compares sample means and variances of `samples` (transformed to the measured domain
    /// by `to`) with the analytic posterior; tolerances from the sample count.
    fn check_against_analytic(
        samples: &[Array2<C32>],
        to: &dyn Fn(&Array2<C32>) -> Array2<C32>,
        mu: &Array2<C32>,
        y: &Array2<C32>,
        mask: &Array2<f32>,
        s2: f64,
        eta2: f64,
    ) {
        let n = samples.len() as f64;
        let t: Vec<Array2<C32>> = samples.iter().map(to).collect();
        let mut ratio_sum = 0.0;
        let mut count = 0.0;
        for ((idx, &m), &yv) in mu.indexed_iter().zip(y.iter()) {
            let measured = mask[idx] != 0.0;
            let (pm, pv) = analytic(m, yv, measured, s2, eta2);
            for part in 0..2 {
                let get = |c: C32| if part == 0 { c.re as f64 } else { c.im as f64 };
                let vals: Vec<f64> = t.iter().map(|s| get(s[idx])).collect();
                let mean = vals.iter().sum::<f64>() / n;
                let var = vals.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0);
                // 5 standard errors: SE(mean) = √(v/n), SE(var) = v √(2/(n−1))
                let tol_m = 5.0 * (pv / n).sqrt() + 1e-3;
                assert!(
                    (mean - get(pm)).abs() < tol_m,
                    "{idx:?}/{part}: mean {mean} vs {} (±{tol_m})",
                    get(pm)
                );
                let tol_v = 5.0 * pv * (2.0 / (n - 1.0)).sqrt() + 1e-5;
                assert!(
                    (var - pv).abs() < tol_v,
                    "{idx:?}/{part}: var {var} vs {pv} (±{tol_v})"
                );
                ratio_sum += var / pv;
                count += 1.0;
            }
        }
        // pooled over all components: much tighter
        let pooled = ratio_sum / count;
        let tol = 5.0 * (2.0 / (n - 1.0) / count).sqrt();
        assert!(
            (pooled - 1.0).abs() < tol,
            "pooled variance ratio {pooled} (±{tol})"
        );
    }

    #[test]
    fn gaussian_prior_pixel_measurement_matches_the_analytic_posterior() -> Result<()> {
        let (h, w) = (4, 4);
        let s = 0.5;
        let mu = prior_mean(h, w);
        let prior = Gaussian {
            mu: mu.clone(),
            s,
            dev: Device::Cpu,
        };
        let mask = Array2::from_shape_fn((h, w), |(i, j)| ((i + 2 * j) % 3 != 0) as u8 as f32);
        let eta = 0.2;
        // a fixed measurement (any y: the posterior formula holds for every y)
        let y = Array2::from_shape_fn((h, w), |(i, j)| {
            C32::new(0.3 * i as f32 - 0.2, 0.1 * j as f32) * mask[(i, j)]
        });
        let p = Problem::Pixels {
            image: y.clone(),
            mask: mask.clone(),
        };
        let cfg = PosteriorConfig {
            steps: 12,
            samples: 3000,
            noise_sigma: eta,
            scale: Some(1.0),
            seed: 5,
            ..Default::default()
        };
        let r = posterior(&prior, &p, &cfg, &|_, _| {}, &AtomicBool::new(false))?;
        assert_eq!(r.samples.len(), 3000);
        check_against_analytic(&r.samples, &|x| x.clone(), &mu, &y, &mask, s * s, eta * eta);
        Ok(())
    }

    #[test]
    fn gaussian_prior_kspace_measurement_matches_the_analytic_posterior() -> Result<()> {
        // x0 ~ N(μ, s² I) ⇒ F x0 ~ N(F μ, s² I) (F unitary): the posterior is diagonal in
        // k-space with the same per-entry formula.
        let (h, w) = (4, 6);
        let s = 0.5;
        let mu = prior_mean(h, w);
        let prior = Gaussian {
            mu: mu.clone(),
            s,
            dev: Device::Cpu,
        };
        let mask = Array2::from_shape_fn((h, w), |(_, j)| (j % 2 == 0 || j == 3) as u8 as f32);
        let eta = 0.1;
        let y = Array2::from_shape_fn((h, w), |(i, j)| {
            C32::new(0.5 - 0.2 * i as f32, 0.3 * j as f32 - 0.6) * mask[(i, j)]
        });
        let p = Problem::Kspace {
            kspace: y.clone().insert_axis(Axis(0)),
            mask: mask.clone(),
            maps: None,
        };
        let cfg = PosteriorConfig {
            steps: 8,
            samples: 3000,
            noise_sigma: eta,
            scale: Some(1.0),
            seed: 11,
            ..Default::default()
        };
        let r = posterior(&prior, &p, &cfg, &|_, _| {}, &AtomicBool::new(false))?;
        check_against_analytic(
            &r.samples,
            &|x| fft2c(x),
            &fft2c(&mu),
            &y,
            &mask,
            s * s,
            eta * eta,
        );
        // mean and std outputs agree with the samples
        let mean0 = r.samples.iter().map(|s| s[(1, 1)]).sum::<C32>() / C32::new(3000.0, 0.0);
        assert!((mean0 - r.mean[(1, 1)]).norm() < 1e-4);
        Ok(())
    }

    #[test]
    fn noiseless_measurement_is_reproduced_exactly_and_unmeasured_follow_the_prior() -> Result<()> {
        let (h, w) = (4, 4);
        let mu = prior_mean(h, w);
        let prior = Gaussian {
            mu: mu.clone(),
            s: 0.5,
            dev: Device::Cpu,
        };
        let mask = Array2::from_shape_fn((h, w), |(i, j)| ((i * j) % 2 == 0) as u8 as f32);
        let y = Array2::from_shape_fn((h, w), |(i, j)| C32::new(i as f32, -(j as f32)))
            * mask.mapv(|m| C32::new(m, 0.0));
        let p = Problem::Pixels {
            image: y.clone(),
            mask: mask.clone(),
        };
        let cfg = PosteriorConfig {
            steps: 6,
            samples: 8,
            scale: Some(1.0),
            ..Default::default()
        };
        let r = posterior(&prior, &p, &cfg, &|_, _| {}, &AtomicBool::new(false))?;
        for s in &r.samples {
            Zip::from(s).and(&y).and(&mask).for_each(|a, b, m| {
                if *m != 0.0 {
                    assert!((a - b).norm() < 1e-5, "{a} vs {b}");
                }
            });
        }
        Zip::from(&r.std).and(&mask).for_each(|s, m| {
            if *m != 0.0 {
                assert!(*s < 1e-5);
            } else {
                assert!(*s > 0.1, "unmeasured pixel has std {s}");
            }
        });
        Ok(())
    }

    #[test]
    fn seeds_shapes_and_cancel() -> Result<()> {
        let (h, w) = (4, 6);
        let prior = Gaussian {
            mu: prior_mean(h, w),
            s: 0.5,
            dev: Device::Cpu,
        };
        let mask = Array2::from_shape_fn((h, w), |(_, j)| (j % 2) as f32);
        let p = Problem::Kspace {
            kspace: Array3::from_elem((1, h, w), C32::new(0.3, 0.1)),
            mask,
            maps: None,
        };
        let cfg = PosteriorConfig {
            steps: 5,
            samples: 3,
            seed: 7,
            ..Default::default()
        };
        let no = AtomicBool::new(false);
        let calls = Cell::new(0usize);
        let a = posterior(
            &prior,
            &p,
            &cfg,
            &|d, t| {
                assert_eq!(t, 5);
                calls.set(calls.get() + 1);
                assert_eq!(d, calls.get());
            },
            &no,
        )?;
        assert_eq!(calls.get(), 5);
        assert_eq!(a.samples.len(), 3);
        assert_eq!(a.mean.dim(), (h, w));
        assert_eq!(a.std.dim(), (h, w));
        let b = posterior(&prior, &p, &cfg, &|_, _| {}, &no)?;
        assert_eq!(a.samples, b.samples, "same seed, different samples");
        let c = posterior(
            &prior,
            &p,
            &PosteriorConfig {
                seed: 8,
                ..cfg.clone()
            },
            &|_, _| {},
            &no,
        )?;
        assert_ne!(a.samples, c.samples);
        assert_ne!(a.samples[0], a.samples[1], "samples of one batch are equal");
        // cancel after the second step
        let cancel = AtomicBool::new(false);
        let seen = Cell::new(0usize);
        let e = posterior(
            &prior,
            &p,
            &cfg,
            &|d, _| {
                seen.set(d);
                if d == 2 {
                    cancel.store(true, Ordering::Relaxed);
                }
            },
            &cancel,
        )
        .unwrap_err();
        assert!(matches!(e, DiffusionError::Cancelled), "{e}");
        assert_eq!(seen.get(), 2);
        // invalid settings name the field
        let e = posterior(
            &prior,
            &p,
            &PosteriorConfig { zeta: 0.0, ..cfg },
            &|_, _| {},
            &no,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("zeta"), "{e}");
        Ok(())
    }

    #[test]
    fn noiseless_multicoil_data_that_determine_the_image_give_it_back() -> Result<()> {
        let (h, w, nc) = (16, 16, 4);
        let mut maps = amri_ops::coils::synthetic_maps(nc, h, w, Some(4));
        for i in 0..h {
            for j in 0..w {
                let s: f32 = (0..nc)
                    .map(|k| maps[[k, i, j]].norm_sqr())
                    .sum::<f32>()
                    .sqrt();
                for k in 0..nc {
                    maps[[k, i, j]] /= s;
                }
            }
        }
        let x = Array2::from_shape_fn((h, w), |(i, j)| {
            C32::new(
                0.5 + (i as f32 * 0.6).sin() * (j as f32 * 0.4).cos(),
                0.2 * (j as f32 * 0.5).sin(),
            )
        });
        // every second column and a centre block: with 4 coils A is injective
        let mask = Array2::from_shape_fn((h, w), |(_, j)| {
            (j % 2 == 0 || (6..10).contains(&j)) as u8 as f32
        });
        let mut k = Array3::<C32>::zeros((nc, h, w));
        for (mut kc, s) in k.outer_iter_mut().zip(maps.outer_iter()) {
            let f = fft2c(&(&s * &x)) * mask.mapv(|m| C32::new(m, 0.0));
            kc.assign(&f);
        }
        let p = Problem::Kspace {
            kspace: k,
            mask,
            maps: Some(maps),
        };
        let prior = Gaussian {
            mu: Array2::zeros((h, w)),
            s: 1.0,
            dev: Device::Cpu,
        };
        let cfg = PosteriorConfig {
            steps: 12,
            samples: 2,
            scale: Some(1.0),
            ..Default::default()
        };
        let r = posterior(&prior, &p, &cfg, &|_, _| {}, &AtomicBool::new(false))?;
        let norm = |a: &Array2<C32>| a.iter().map(|v| v.norm_sqr()).sum::<f32>().sqrt();
        for s in &r.samples {
            let rel = norm(&(s - &x)) / norm(&x);
            assert!(
                rel < 1e-2,
                "sample differs from the determined image by {rel}"
            );
        }
        Ok(())
    }
}

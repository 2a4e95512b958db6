//! The unconditional fixed-mask sampler: new slices from the prior.
//!
//! As the Ambient Diffusion sampler, every sample gets one mask `Ã` of the training corruption,
//! drawn once and kept for all steps; the network's `E[x0 | Ã x_t]` drives EDM's second-order
//! Heun integration of the probability-flow ODE `dx/dσ = (x − D(x; σ))/σ` over the Karras
//! schedule, with a final Euler step to σ = 0 (which returns `D(x; σ_min)`). Priors trained on
//! clean images get an all-ones mask. Outputs are in normalised units (the training scale).

use std::sync::atomic::AtomicBool;

use amri_core::C32;
use ndarray::{Array2, Array3, Zip};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::{check_cancel, complex_noise, denoise_batch, karras_sigmas, PriorDenoiser};
use crate::error::{DiffusionError, Result};
use crate::seed::{derive_seed, TAG_HEUN_MASK, TAG_HEUN_START};

/// Settings of [`sample_unconditional`].
#[derive(Debug, Clone, PartialEq)]
pub struct UnconditionalConfig {
    /// Noise levels of the schedule (each costs two network calls but the last), ≥ 1.
    pub steps: usize,
    /// Largest noise level.
    pub sigma_max: f64,
    /// Smallest noise level before the final step to 0.
    pub sigma_min: f64,
    /// Karras schedule exponent ρ.
    pub rho: f64,
    /// Seed of the initial noise and of the fixed masks.
    pub seed: u64,
}

impl Default for UnconditionalConfig {
    fn default() -> Self {
        Self {
            steps: 32,
            sigma_max: 80.0,
            sigma_min: 0.002,
            rho: 7.0,
            seed: 0,
        }
    }
}

/// Draws `n` slices of `shape = (rows, cols)` from `prior` in batches of at most `batch`
/// (see the module docs). `progress(done, total)` counts network calls; `cancel` stops early
/// with [`DiffusionError::Cancelled`].
pub fn sample_unconditional<D: PriorDenoiser + ?Sized>(
    prior: &D,
    shape: (usize, usize),
    n: usize,
    batch: usize,
    cfg: &UnconditionalConfig,
    progress: &dyn Fn(usize, usize),
    cancel: &AtomicBool,
) -> Result<Vec<Array2<C32>>> {
    let (h, w) = shape;
    if h == 0 || w == 0 {
        return Err(DiffusionError::Shape(format!("empty {h}×{w} sample shape")));
    }
    let sigmas = karras_sigmas(cfg.steps, cfg.sigma_min, cfg.sigma_max, cfg.rho)?;
    let batch = batch.max(1);
    let calls_per_batch = 2 * sigmas.len() - 1;
    let total = n.div_ceil(batch) * calls_per_batch;
    let mut done = 0usize;
    let mut out = Vec::with_capacity(n);
    let mut start = 0usize;
    while start < n {
        let b = batch.min(n - start);
        let mut rng =
            ChaCha8Rng::seed_from_u64(derive_seed(cfg.seed, start as u64, TAG_HEUN_START));
        let mut masks = Array3::<f32>::zeros((b, h, w));
        for (k, mut m) in masks.outer_iter_mut().enumerate() {
            m.assign(&prior.training_mask(
                h,
                w,
                derive_seed(cfg.seed, (start + k) as u64, TAG_HEUN_MASK),
            )?);
        }
        let mut x = complex_noise((b, h, w), &mut rng) * C32::new(sigmas[0] as f32, 0.0);
        for (i, &sigma) in sigmas.iter().enumerate() {
            check_cancel(cancel)?;
            let next = sigmas.get(i + 1).copied().unwrap_or(0.0);
            let d0 = denoise_batch(prior, &x, &masks, None, sigma)?;
            done += 1;
            progress(done, total);
            // slope (x − D)/σ
            let slope0 = (&x - &d0) / C32::new(sigma as f32, 0.0);
            let dt = C32::new((next - sigma) as f32, 0.0);
            let euler = &x + &(&slope0 * dt);
            if next > 0.0 {
                check_cancel(cancel)?;
                let d1 = denoise_batch(prior, &euler, &masks, None, next)?;
                done += 1;
                progress(done, total);
                let slope1 = (&euler - &d1) / C32::new(next as f32, 0.0);
                Zip::from(&mut x)
                    .and(&slope0)
                    .and(&slope1)
                    .for_each(|x, a, b| *x += (*a + *b) * dt * 0.5);
            } else {
                x = euler;
            }
        }
        out.extend(x.outer_iter().map(|s| s.to_owned()));
        start += b;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sample::posterior::tests::{prior_mean, Gaussian};
    use candle_core::Device;
    use std::cell::Cell;
    use std::sync::atomic::Ordering;

    #[test]
    fn heun_samples_of_a_gaussian_prior_have_its_mean_and_variance() -> Result<()> {
        let (h, w) = (3, 4);
        let s = 0.5;
        let mu = prior_mean(h, w);
        let prior = Gaussian {
            mu: mu.clone(),
            s,
            dev: Device::Cpu,
        };
        let n = 2000usize;
        let cfg = UnconditionalConfig {
            steps: 24,
            seed: 3,
            ..Default::default()
        };
        let xs = sample_unconditional(
            &prior,
            (h, w),
            n,
            1000,
            &cfg,
            &|_, _| {},
            &AtomicBool::new(false),
        )?;
        assert_eq!(xs.len(), n);
        let nf = n as f64;
        for ((i, j), m) in mu.indexed_iter() {
            for part in 0..2 {
                let get = |c: C32| if part == 0 { c.re as f64 } else { c.im as f64 };
                let v: Vec<f64> = xs.iter().map(|x| get(x[(i, j)])).collect();
                let mean = v.iter().sum::<f64>() / nf;
                let var = v.iter().map(|a| (a - mean).powi(2)).sum::<f64>() / (nf - 1.0);
                // 5 standard errors plus the ODE's discretisation error (small at 24 steps)
                assert!(
                    (mean - get(*m)).abs() < 5.0 * s / nf.sqrt() + 0.01,
                    "mean {mean}"
                );
                assert!(
                    (var - s * s).abs() < 5.0 * s * s * (2.0 / nf).sqrt() + 0.01,
                    "var {var}"
                );
            }
        }
        Ok(())
    }

    #[test]
    fn seeded_batched_and_cancellable() -> Result<()> {
        let prior = Gaussian {
            mu: prior_mean(2, 2),
            s: 0.5,
            dev: Device::Cpu,
        };
        let cfg = UnconditionalConfig {
            steps: 4,
            ..Default::default()
        };
        let no = AtomicBool::new(false);
        let last = Cell::new((0, 0));
        let a = sample_unconditional(&prior, (2, 2), 5, 2, &cfg, &|d, t| last.set((d, t)), &no)?;
        assert_eq!(a.len(), 5);
        // 3 batches × (2·4 − 1) calls
        assert_eq!(last.get(), (21, 21));
        let b = sample_unconditional(&prior, (2, 2), 5, 2, &cfg, &|_, _| {}, &no)?;
        assert_eq!(a, b);
        let cancel = AtomicBool::new(false);
        let e = sample_unconditional(
            &prior,
            (2, 2),
            5,
            2,
            &cfg,
            &|d, _| {
                if d == 3 {
                    cancel.store(true, Ordering::Relaxed)
                }
            },
            &cancel,
        )
        .unwrap_err();
        assert!(matches!(e, DiffusionError::Cancelled));
        Ok(())
    }
}

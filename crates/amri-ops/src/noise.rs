//! Additive circular complex Gaussian noise, kept apart from the linear operators:
//! `y = A x + n`, `n = σ (a + i b)/√2` with `a, b ~ N(0, 1)` i.i.d., so `E|n_k|² = σ²` per complex
//! sample (the real and imaginary parts each have standard deviation `σ/√2`).
//!
//! SNR convention: `SNR_dB = 20 log10(rms(s) / σ)`, where `rms(s) = sqrt(mean_k |s_k|²)` is taken
//! over the measured entries of the noiseless signal `s = A x` only (entries where the mask is
//! 1; all entries if no mask is given).

use amri_core::C32;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

use crate::error::{OpsError, Result};

/// Floating-point types with a known `√2` (`f32`, `f64`), for [`sigma_per_component`].
pub trait Sqrt2: Copy + std::ops::Mul<Output = Self> + std::ops::Div<Output = Self> {
    /// `√2` in this type.
    const SQRT_2: Self;
}

impl Sqrt2 for f32 {
    const SQRT_2: f32 = std::f32::consts::SQRT_2;
}

impl Sqrt2 for f64 {
    const SQRT_2: f64 = std::f64::consts::SQRT_2;
}

/// The standard deviation of each real and imaginary part, `σ / (√2 · scale)`, of circular
/// complex noise whose standard deviation per complex sample is `sigma` (the convention of
/// [`Noise`] and of `amri simulate`'s `noise_sigma`), in data units divided by `scale` (1: the
/// same units). The one place this conversion is written.
pub fn sigma_per_component<T: Sqrt2>(sigma: T, scale: T) -> T {
    sigma / (T::SQRT_2 * scale)
}

/// A complex Gaussian noise model of standard deviation `σ` per complex sample (see module docs).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Noise {
    sigma: f32,
}

/// `sqrt(mean |s_k|²)` over entries where `mask` is non-zero (all entries if `mask` is `None`);
/// 0 for an empty selection. Accumulates in f64.
pub fn signal_rms(signal: &[C32], mask: Option<&[f32]>) -> Result<f64> {
    let (sum, count) = match mask {
        Some(m) => {
            if m.len() != signal.len() {
                return Err(OpsError::shape(
                    "signal_rms mask",
                    &[signal.len()],
                    &[m.len()],
                ));
            }
            signal
                .iter()
                .zip(m)
                .filter(|(_, m)| **m != 0.0)
                .fold((0.0f64, 0usize), |(s, c), (v, _)| {
                    (s + v.norm_sqr() as f64, c + 1)
                })
        }
        None => (
            signal.iter().map(|v| v.norm_sqr() as f64).sum(),
            signal.len(),
        ),
    };
    Ok(if count == 0 {
        0.0
    } else {
        (sum / count as f64).sqrt()
    })
}

impl Noise {
    /// Noise of standard deviation `sigma ≥ 0` per complex sample (`E|n|² = σ²`).
    pub fn from_sigma(sigma: f32) -> Result<Self> {
        if !(sigma >= 0.0 && sigma.is_finite()) {
            return Err(OpsError::param(
                "sigma",
                format!("must be finite and ≥ 0, got {sigma}"),
            ));
        }
        Ok(Self { sigma })
    }

    /// Noise at `snr_db = 20 log10(rms(signal)/σ)` for the noiseless `signal`, rms over entries
    /// where `mask` is 1 (all entries when `None`); `snr_db` must be finite.
    pub fn from_snr_db(snr_db: f64, signal: &[C32], mask: Option<&[f32]>) -> Result<Self> {
        if !snr_db.is_finite() {
            return Err(OpsError::param(
                "snr_db",
                format!("must be finite, got {snr_db}"),
            ));
        }
        let rms = signal_rms(signal, mask)?;
        Self::from_sigma((rms / 10f64.powf(snr_db / 20.0)) as f32)
    }

    /// The standard deviation `σ` per complex sample.
    pub fn sigma(&self) -> f32 {
        self.sigma
    }

    /// The SNR in dB that this noise gives for `signal` (rms over `mask`); `+∞` when `σ = 0`.
    pub fn snr_db(&self, signal: &[C32], mask: Option<&[f32]>) -> Result<f64> {
        let rms = signal_rms(signal, mask)?;
        Ok(20.0 * (rms / self.sigma as f64).log10())
    }

    /// Adds noise drawn from `seed` to every entry of `y`.
    pub fn add(&self, y: &mut [C32], seed: u64) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let s = self.sigma * std::f32::consts::FRAC_1_SQRT_2;
        for v in y.iter_mut() {
            let a: f32 = StandardNormal.sample(&mut rng);
            let b: f32 = StandardNormal.sample(&mut rng);
            *v += C32::new(a * s, b * s);
        }
    }

    /// Adds noise only where `mask` is non-zero (unmeasured entries stay exactly 0), so that
    /// `y` stays in the range of a masked operator. The mask is the flattened operator output
    /// mask, e.g. a `[rows, cols]` k-space mask repeated for every coil. The noise drawn at an
    /// entry does not depend on the mask (same seed, same value), so nested masks share noise.
    pub fn add_masked(&self, y: &mut [C32], mask: &[f32], seed: u64) -> Result<()> {
        if mask.is_empty() || y.len() % mask.len() != 0 {
            return Err(OpsError::shape(
                "Noise::add_masked: output length must be a multiple of the mask length",
                &[mask.len()],
                &[y.len()],
            ));
        }
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let s = self.sigma * std::f32::consts::FRAC_1_SQRT_2;
        for (v, m) in y.iter_mut().zip(mask.iter().cycle()) {
            let a: f32 = StandardNormal.sample(&mut rng);
            let b: f32 = StandardNormal.sample(&mut rng);
            if *m != 0.0 {
                *v += C32::new(a * s, b * s);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sigma_per_component_is_sigma_over_root_two_times_scale() {
        for s in [0.0f64, 0.01, 0.3, 7.5] {
            assert_eq!(sigma_per_component(s, 1.0), s / std::f64::consts::SQRT_2);
        }
        let (s, scale) = (0.02f32, 3.7f32);
        assert_eq!(
            sigma_per_component(s, scale),
            s / (std::f32::consts::SQRT_2 * scale)
        );
        // the per-component draws of `Noise` have this standard deviation
        let n = 200_000;
        let mut y = vec![C32::new(0.0, 0.0); n];
        Noise::from_sigma(0.5).unwrap().add(&mut y, 3);
        let var = y.iter().map(|v| (v.re as f64).powi(2)).sum::<f64>() / n as f64;
        assert!(
            (var.sqrt() - sigma_per_component(0.5, 1.0)).abs() < 3e-3,
            "{var}"
        );
    }

    #[test]
    fn sigma_and_snr_definitions_hold() {
        let n = 200_000;
        let noise = Noise::from_sigma(0.5).unwrap();
        let mut y = vec![C32::new(0.0, 0.0); n];
        noise.add(&mut y, 1);
        let p = y.iter().map(|v| v.norm_sqr() as f64).sum::<f64>() / n as f64;
        // E|n|² = σ² = 0.25; estimate std ≈ 0.25/sqrt(n) ≈ 5.6e-4.
        assert!((p - 0.25).abs() < 3e-3, "{p}");
        let pr = y.iter().map(|v| (v.re as f64).powi(2)).sum::<f64>() / n as f64;
        assert!((pr - 0.125).abs() < 2e-3, "real part variance {pr}");

        let signal = vec![C32::new(3.0, 4.0); 10]; // rms 5
        let nz = Noise::from_snr_db(20.0, &signal, None).unwrap();
        assert!((nz.sigma() - 0.5).abs() < 1e-6);
        assert!((nz.snr_db(&signal, None).unwrap() - 20.0).abs() < 1e-5);
    }

    #[test]
    fn masked_noise_leaves_zeros_and_is_seeded() {
        let mask = [1.0, 0.0, 1.0];
        let noise = Noise::from_sigma(1.0).unwrap();
        let mut a = vec![C32::default(); 6];
        noise.add_masked(&mut a, &mask, 9).unwrap();
        assert_eq!(a[1], C32::default());
        assert_eq!(a[4], C32::default());
        assert!(a[0].norm() > 0.0 && a[5].norm() > 0.0);
        let mut b = vec![C32::default(); 6];
        noise.add_masked(&mut b, &mask, 9).unwrap();
        assert_eq!(a, b);
        let mut full = vec![C32::default(); 6];
        noise.add(&mut full, 9);
        assert_eq!(full[0], a[0]);
        assert!(noise.add_masked(&mut b, &[1.0; 4], 0).is_err());
        assert!(Noise::from_sigma(-1.0).is_err());
    }

    #[test]
    fn rms_over_mask_ignores_unmeasured_entries() {
        let s = [C32::new(2.0, 0.0), C32::new(0.0, 0.0)];
        assert!((signal_rms(&s, Some(&[1.0, 0.0])).unwrap() - 2.0).abs() < 1e-12);
        assert!((signal_rms(&s, None).unwrap() - 2f64.sqrt()).abs() < 1e-12);
    }
}

//! One-step reconstruction: `E[x0 | A y]` from a single network evaluation.
//!
//! The network sees the measurement exactly as it saw training inputs, with the measurement's
//! own mask in place of `Ã`: a k-space prior gets `Fᴴ(M ⊙ y)` and the k-space mask `M`, a pixel
//! prior gets `A ⊙ y` and the pixel mask `A` (a prior trained on clean images gets the
//! zero-filled image and an all-ones mask). Its output is the posterior mean of the clean image
//! given what was measured. With `data_consistency`, measured samples (k-space entries or
//! pixels) are then replaced by the measured values.
//!
//! The noise level given to the network is [`OneStepConfig::sigma`]. EDM preconditioning makes
//! any denoiser tend to its input as σ → 0 (`c_skip → 1`, `c_out → 0`), so a very small σ gives
//! back nearly the zero-filled image; the default 0.05 (in units of the normalised image, where
//! the 99.5th percentile of the zero-filled magnitude is 1) lies inside the training range of σ.

use ndarray::{Array2, Array3, Axis, Zip};

use super::{denoise_batch, measured_scale, InputDomain, PriorDenoiser, Problem};
use crate::error::{DiffusionError, Result};
use amri_core::fft::{fft2c, ifft2c};
use amri_core::{MeasuredDomain, C32};

/// Settings of [`one_step`].
#[derive(Debug, Clone, PartialEq)]
pub struct OneStepConfig {
    /// Noise level σ given to the network (normalised units; > 0).
    pub sigma: f64,
    /// Replace measured samples by the measured values after the network call.
    pub data_consistency: bool,
    /// Intensity scale to divide by (see the module docs of [`crate::sample`]); `None`: computed
    /// from this slice alone with [`measured_scale`]. Pass the volume's scale for volumes.
    pub scale: Option<f32>,
}

impl Default for OneStepConfig {
    fn default() -> Self {
        Self {
            sigma: 0.05,
            data_consistency: false,
            scale: None,
        }
    }
}

/// The measurement's own mask in the network's layout, or an error if the prior cannot take it.
pub(crate) fn own_mask(
    domain: InputDomain,
    measured: MeasuredDomain,
    mask: &Array2<f32>,
) -> Result<Array2<f32>> {
    match (domain, measured) {
        (InputDomain::Kspace, MeasuredDomain::Kspace)
        | (InputDomain::Pixel, MeasuredDomain::Image) => Ok(mask.clone()),
        (InputDomain::Clean, _) => Ok(Array2::ones(mask.dim())),
        (InputDomain::Kspace, MeasuredDomain::Image) => Err(DiffusionError::Unsupported(
            "a k-space prior cannot take an image-domain (pixel/box) measurement in one step; \
             use a pixel prior, or the iterative sampler"
                .into(),
        )),
        (InputDomain::Pixel, MeasuredDomain::Kspace) => Err(DiffusionError::Unsupported(
            "a pixel/box prior cannot take a k-space measurement in one step; use a k-space \
             prior, or the iterative sampler"
                .into(),
        )),
        (_, MeasuredDomain::Projection) => Err(DiffusionError::Unsupported(
            "Gaussian random projections: the learned priors take k-space or image-domain \
             measurements"
                .into(),
        )),
    }
}

/// Hard data consistency: measured samples of `x` (k-space entries or pixels) set to `y`.
pub(crate) fn hard_consistency(
    x: &Array2<C32>,
    y: &Array2<C32>,
    mask: &Array2<f32>,
    measured: MeasuredDomain,
) -> Array2<C32> {
    let replace = |mut v: Array2<C32>| {
        Zip::from(&mut v).and(y).and(mask).for_each(|v, y, m| {
            if *m != 0.0 {
                *v = *y
            }
        });
        v
    };
    match measured {
        MeasuredDomain::Image => replace(x.clone()),
        MeasuredDomain::Kspace | MeasuredDomain::Projection => ifft2c(&replace(fft2c(x))),
    }
}

/// One-step reconstruction of `p` with `prior` (see the module docs); the complex image
/// `[row, col]` in the input's units.
pub fn one_step<D: PriorDenoiser + ?Sized>(
    prior: &D,
    p: &Problem,
    cfg: &OneStepConfig,
) -> Result<Array2<C32>> {
    if !(cfg.sigma.is_finite() && cfg.sigma > 0.0) {
        return Err(DiffusionError::Config(format!(
            "one-step sigma must be > 0, got {}",
            cfg.sigma
        )));
    }
    p.validate()?;
    let scale = match cfg.scale {
        Some(s) => s,
        None => measured_scale(std::slice::from_ref(p))?,
    };
    let single = p.single(scale)?;
    let mask = own_mask(prior.input_domain(), single.domain, &single.mask)?;
    let zf = single.zero_filled();
    let x = zf.clone().insert_axis(Axis(0));
    let m: Array3<f32> = mask.insert_axis(Axis(0));
    let out = denoise_batch(prior, &x, &m, cfg.sigma)?;
    let mut img = out.index_axis(Axis(0), 0).to_owned();
    if cfg.data_consistency {
        img = hard_consistency(&img, &single.y, &single.mask, single.domain);
    }
    Ok(img * C32::new(scale, 0.0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loss::DenoiseFn;
    use crate::precond::{denoiser, DenoiserConfig};
    use crate::sample::karras_sigmas;
    use candle_core::{DType, Device, Tensor};
    use candle_nn::{VarBuilder, VarMap};

    /// A denoiser that returns `a·x + b` (identity for a = 1, b = 0), squared if `square`.
    struct Affine {
        a: f64,
        b: f64,
        square: bool,
        domain: InputDomain,
        dev: Device,
    }
    impl DenoiseFn for Affine {
        fn denoise(&self, x: &Tensor, _m: &Tensor, _s: &Tensor) -> Result<Tensor> {
            let y = x.affine(self.a, self.b)?;
            Ok(if self.square { y.sqr()? } else { y })
        }
    }
    impl PriorDenoiser for Affine {
        fn input_domain(&self) -> InputDomain {
            self.domain
        }
        fn sigma_data(&self) -> f64 {
            0.5
        }
        fn device(&self) -> &Device {
            &self.dev
        }
    }

    /// A real network at initialisation: `D(x) = c_skip(σ)·x` (zero-initialised output layer).
    struct Net(crate::precond::Denoiser, Device);
    impl DenoiseFn for Net {
        fn denoise(&self, x: &Tensor, m: &Tensor, s: &Tensor) -> Result<Tensor> {
            self.0.forward(x, m, s)
        }
    }
    impl PriorDenoiser for Net {
        fn input_domain(&self) -> InputDomain {
            InputDomain::Kspace
        }
        fn sigma_data(&self) -> f64 {
            0.5
        }
        fn device(&self) -> &Device {
            &self.1
        }
        fn size_multiple(&self) -> usize {
            self.0.config().unet.size_multiple()
        }
    }

    fn image(r: usize, c: usize) -> Array2<C32> {
        Array2::from_shape_fn((r, c), |(i, j)| {
            C32::new(
                1.0 + (i as f32 * 0.7).sin() * (j as f32 * 0.3).cos(),
                0.3 * (j as f32 * 0.5).sin(),
            )
        })
    }

    fn max_diff(a: &Array2<C32>, b: &Array2<C32>) -> f32 {
        (a - b).iter().map(|v| v.norm()).fold(0.0, f32::max)
    }

    #[test]
    fn identity_denoiser_on_fully_sampled_kspace_returns_the_image() -> Result<()> {
        let x = image(12, 10);
        let p = Problem::Kspace {
            kspace: fft2c(&x).insert_axis(Axis(0)),
            mask: Array2::ones((12, 10)),
            maps: None,
        };
        let id = Affine {
            a: 1.0,
            b: 0.0,
            square: false,
            domain: InputDomain::Kspace,
            dev: Device::Cpu,
        };
        let out = one_step(&id, &p, &OneStepConfig::default())?;
        assert!(max_diff(&out, &x) < 1e-4, "{}", max_diff(&out, &x));
        Ok(())
    }

    #[test]
    fn real_network_in_the_small_sigma_limit_returns_nearly_the_input() -> Result<()> {
        let dev = Device::Cpu;
        let mut cfg = DenoiserConfig::complex_preset("tiny", 0.5)?;
        cfg.unet.base_channels = 8;
        cfg.unet.channel_mult = vec![1, 2];
        cfg.unet.attention_levels = vec![];
        cfg.unet.groups = 4;
        let vm = VarMap::new();
        let net = Net(
            denoiser(&cfg, VarBuilder::from_varmap(&vm, DType::F32, &dev))?,
            dev.clone(),
        );
        // 15×13 is not a multiple of 2: exercises padding and cropping too.
        let x = image(15, 13);
        let p = Problem::Kspace {
            kspace: fft2c(&x).insert_axis(Axis(0)),
            mask: Array2::ones((15, 13)),
            maps: None,
        };
        let peak = x.iter().map(|v| v.norm()).fold(0.0, f32::max);
        let sd2 = 0.25f64;
        for sigma in karras_sigmas(3, 1e-3, 1e-1, 1.0)? {
            let c = OneStepConfig {
                sigma,
                ..Default::default()
            };
            let out = one_step(&net, &p, &c)?;
            // at initialisation D = c_skip(σ)·x with c_skip = σ_d²/(σ²+σ_d²)
            let want = (1.0 - sd2 / (sigma * sigma + sd2)) as f32 * peak;
            let err = max_diff(&out, &x);
            assert!(
                (err - want).abs() < 1e-4 * peak,
                "σ={sigma}: {err} vs {want}"
            );
        }
        Ok(())
    }

    #[test]
    fn data_consistency_returns_exactly_the_measured_samples() -> Result<()> {
        let (r, c) = (16, 16);
        let x = image(r, c);
        // odd columns and the centre measured
        let mask = Array2::from_shape_fn((r, c), |(_, j)| (j % 2 == 1 || j == c / 2) as u8 as f32);
        let mut k = fft2c(&x);
        Zip::from(&mut k).and(&mask).for_each(|v, m| *v *= *m);
        let p = Problem::Kspace {
            kspace: k.clone().insert_axis(Axis(0)),
            mask: mask.clone(),
            maps: None,
        };
        // A denoiser that is wrong everywhere and fills unmeasured frequencies: (0.5·x + 0.3)²
        let bad = Affine {
            a: 0.5,
            b: 0.3,
            square: true,
            domain: InputDomain::Kspace,
            dev: Device::Cpu,
        };
        let cfg = OneStepConfig {
            data_consistency: true,
            scale: Some(2.0),
            ..Default::default()
        };
        let out = one_step(&bad, &p, &cfg)?;
        let ko = fft2c(&out);
        let mut worst = 0f32;
        let mut moved = 0f32;
        Zip::from(&ko).and(&k).and(&mask).for_each(|a, b, m| {
            if *m != 0.0 {
                worst = worst.max((a - b).norm());
            } else {
                moved = moved.max(a.norm());
            }
        });
        assert!(worst < 1e-5, "measured samples changed by {worst}");
        assert!(moved > 1e-3, "unmeasured samples are all zero");
        // pixels: measured pixels exact
        let pm = Array2::from_shape_fn((r, c), |(i, j)| ((i * 7 + j * 3) % 5 != 0) as u8 as f32);
        let mut y = x.clone();
        Zip::from(&mut y).and(&pm).for_each(|v, m| *v *= *m);
        let pp = Problem::Pixels {
            image: y.clone(),
            mask: pm.clone(),
        };
        let badp = Affine {
            domain: InputDomain::Pixel,
            square: false,
            ..bad
        };
        let out = one_step(&badp, &pp, &cfg)?;
        Zip::from(&out).and(&y).and(&pm).for_each(|a, b, m| {
            if *m != 0.0 {
                assert!((a - b).norm() < 1e-6);
            } else {
                // 0.5·0 + 0.3 on both channels, times the scale 2
                assert!((a - C32::new(0.6, 0.6)).norm() < 1e-5, "{a}");
            }
        });
        Ok(())
    }

    #[test]
    fn mismatched_prior_and_measurement_is_a_clear_error() {
        let x = image(8, 8);
        let p = Problem::Pixels {
            image: x,
            mask: Array2::ones((8, 8)),
        };
        let k = Affine {
            a: 1.0,
            b: 0.0,
            square: false,
            domain: InputDomain::Kspace,
            dev: Device::Cpu,
        };
        let e = one_step(&k, &p, &OneStepConfig::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("k-space prior"), "{e}");
    }
}

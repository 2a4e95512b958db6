//! Running a plan on measured data: every method, classical or learned prior.

use std::borrow::Cow;
use std::ops::ControlFlow;
use std::sync::atomic::{AtomicBool, Ordering};

use amri_core::KSpace;
use amri_diffusion::sample::{measured_scale, one_step, posterior, PosteriorConfig, Problem};
use amri_diffusion::seed;
use amri_ops::cc::{compress, CcConfig};
use amri_ops::whiten::{prewhiten, NoiseSource};
use amri_protocol::Method;
use amri_recon::alg::IterInfo;
use amri_recon::app;
use ndarray::{Array2, Array3, Axis};

use crate::error::{PipelineError, Result};
use crate::plan::Plan;

/// A reconstruction: magnitude images `[slice, row, col]` in the units of the input and, for
/// `iterative`, the per-pixel standard deviation of the posterior samples.
#[derive(Clone, Debug, PartialEq)]
pub struct Recon {
    /// Magnitude of the reconstruction (for `iterative`, of the posterior mean).
    pub image: Array3<f32>,
    /// Per-pixel posterior standard deviation (`iterative` only), same shape and units.
    pub std: Option<Array3<f32>>,
}

/// The noise level of the measured data per real component: [`KSpace::noise_sigma`] is σ per
/// complex sample; the sampler takes it per component (σ/√2). Absent or invalid: 0.
fn noise_sigma_per_component(ks: &KSpace) -> f64 {
    let sigma = ks
        .noise_sigma
        .filter(|v| v.is_finite() && *v >= 0.0)
        .unwrap_or(0.0);
    amri_ops::noise::sigma_per_component(sigma, 1.0)
}

impl Plan {
    /// The measured data as the methods see them, before any coil maps are estimated:
    /// 1. prewhitened (`amri_ops::whiten`) with the plan's noise covariance, else with the data's
    ///    own noise samples ([`KSpace::noise`]), unless the plan switches prewhitening off or the
    ///    data were already prewhitened (`prewhitened` attribute); afterwards the noise has
    ///    σ = 1 per complex sample ([`KSpace::noise_sigma`] = 1);
    /// 2. compressed to the plan's virtual coils (`amri_ops::cc`, as `bart cc -S -p N`; a count
    ///    ≥ the data's coils keeps them).
    ///
    /// Borrowed unchanged when neither applies; applying it twice changes nothing more, so a
    /// caller may prepare (to report what was done, from the `prewhitened` and
    /// `coil_compression` attributes) and then [`Plan::run`] the result.
    pub fn prepare<'a>(&self, ks: &'a KSpace) -> Result<Cow<'a, KSpace>> {
        let mut out = Cow::Borrowed(ks);
        let done = ks.attributes.contains_key("prewhitened");
        if self.prewhitens() && !done {
            let source = match self.noise_cov() {
                Some(c) => Some(NoiseSource::Covariance(c.view())),
                None if ks.noise.is_some() => Some(NoiseSource::Samples),
                None => None,
            };
            if let Some(source) = source {
                prewhiten(out.to_mut(), source).map_err(PipelineError::Prepare)?;
            }
        }
        if let Some(n) = self.coils() {
            if n < out.shape4()[1] {
                out =
                    Cow::Owned(compress(&out, &CcConfig::new(n)).map_err(PipelineError::Prepare)?);
            }
        }
        Ok(out)
    }

    /// Reconstructs every slice of `ks`, [prepared](Plan::prepare) first. `progress` is called once per solver iteration
    /// (classical methods) or network step (learned prior); when `cancel` becomes true the run
    /// stops at the next one and returns [`PipelineError::Cancelled`]. Image-domain (pixel/box)
    /// data are inpainted by the classical methods with A = M, and random projections refused,
    /// by amri-recon. The learned-prior methods need a prior ([`Plan::with_prior`],
    /// [`Plan::load_prior`]); they use one intensity scale for the whole volume
    /// ([`measured_scale`] of all slices).
    pub fn run(
        &self,
        ks: &KSpace,
        progress: &(dyn Fn() + Sync),
        cancel: &AtomicBool,
    ) -> Result<Recon> {
        let ks = &*self.prepare(ks)?;
        let r = if self.method().is_prior() {
            self.run_prior(ks, progress, cancel)
        } else {
            self.run_classical(ks, progress, cancel)
                .map(|image| Recon { image, std: None })
        };
        // A cancelled run's partial result or error is dropped.
        if cancel.load(Ordering::Relaxed) {
            return Err(PipelineError::Cancelled);
        }
        r
    }

    fn run_classical(
        &self,
        ks: &KSpace,
        progress: &(dyn Fn() + Sync),
        cancel: &AtomicBool,
    ) -> Result<Array3<f32>> {
        let tick = |_: usize, _: &IterInfo| {
            progress();
            if cancel.load(Ordering::Relaxed) {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        };
        let img = match self.method() {
            Method::ZeroFilled => return Ok(app::zero_filled(ks)?),
            Method::CgSense => app::cg_sense_with(ks, None, &self.cg_sense_config(), &tick)?,
            Method::L1Wavelet => app::l1_wavelet_with(ks, None, &self.l1_wavelet_config(), &tick)?,
            Method::Tv => app::tv_recon_with(ks, None, &self.tv_config(), &tick)?,
            m @ (Method::OneStep | Method::Iterative) => {
                return Err(PipelineError::NeedsModel { method: m.name() })
            }
        };
        Ok(img.magnitude())
    }

    fn run_prior(
        &self,
        ks: &KSpace,
        progress: &(dyn Fn() + Sync),
        cancel: &AtomicBool,
    ) -> Result<Recon> {
        let method = self.method().name();
        let prior = self.prior().ok_or(PipelineError::NeedsModel { method })?;
        let probs = Problem::from_kspace(ks).map_err(PipelineError::Measured)?;
        let scale = measured_scale(&probs).map_err(PipelineError::Measured)?;
        let [slices, _, rows, cols] = ks.shape4();
        let mut image = Array3::<f32>::zeros((slices, rows, cols));
        let mag = |x: &Array2<amri_core::C32>| x.mapv(|v| v.norm());
        let at = |slice: usize| {
            move |source| PipelineError::Slice {
                method,
                slice,
                source,
            }
        };
        if self.method() == Method::OneStep {
            let cfg = amri_diffusion::sample::OneStepConfig {
                scale: Some(scale),
                ..self.one_step_config()
            };
            for (k, p) in probs.iter().enumerate() {
                if cancel.load(Ordering::Relaxed) {
                    return Err(PipelineError::Cancelled);
                }
                let x = one_step(prior, p, &cfg).map_err(at(k))?;
                image.index_axis_mut(Axis(0), k).assign(&mag(&x));
                progress();
            }
            return Ok(Recon { image, std: None });
        }
        let cfg = PosteriorConfig {
            noise_sigma: noise_sigma_per_component(ks),
            scale: Some(scale),
            ..self.posterior_config()
        };
        let mut std = Array3::<f32>::zeros((slices, rows, cols));
        for (k, p) in probs.iter().enumerate() {
            let slice_cfg = PosteriorConfig {
                seed: seed::derive_seed(cfg.seed, k as u64, seed::TAG_SLICE),
                ..cfg.clone()
            };
            let r = posterior(prior, p, &slice_cfg, &|_, _| progress(), cancel).map_err(at(k))?;
            image.index_axis_mut(Axis(0), k).assign(&mag(&r.mean));
            std.index_axis_mut(Axis(0), k).assign(&r.std);
        }
        Ok(Recon {
            image,
            std: Some(std),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::Overrides;
    use amri_core::C32;
    use ndarray::Array4;
    use std::sync::atomic::AtomicUsize;

    /// A smooth positive image `[slice, row, col]`.
    fn image(slices: usize, n: usize) -> Array3<f32> {
        Array3::from_shape_fn((slices, n, n), |(s, i, j)| {
            1.0 + (s as f32) + ((i * 3 + j) as f32 * 0.1).sin()
        })
    }

    /// Fully sampled single-coil k-space of `img` (centred orthonormal FFT).
    fn full_kspace(img: &Array3<f32>) -> KSpace {
        let (s, r, c) = img.dim();
        let x = Array4::from_shape_fn((s, 1, r, c), |(k, _, i, j)| C32::new(img[[k, i, j]], 0.0));
        KSpace::new(amri_core::fft::fft2c(&x))
    }

    fn max_err(a: &Array3<f32>, b: &Array3<f32>) -> f32 {
        (a - b).mapv(f32::abs).fold(0.0, |m, v| m.max(*v))
    }

    #[test]
    fn zero_filled_and_cg_sense_of_a_fully_sampled_single_coil_scan_are_the_image() -> Result<()> {
        let img = image(2, 16);
        let ks = full_kspace(&img);
        let never = AtomicBool::new(false);
        let zf = Plan::for_method(Method::ZeroFilled).run(&ks, &|| {}, &never)?;
        assert!(zf.std.is_none());
        assert!(
            max_err(&zf.image, &img) < 1e-4,
            "{}",
            max_err(&zf.image, &img)
        );
        let ticks = AtomicUsize::new(0);
        let cg = Plan::for_method(Method::CgSense).run(
            &ks,
            &|| {
                ticks.fetch_add(1, Ordering::Relaxed);
            },
            &never,
        )?;
        assert!(
            max_err(&cg.image, &img) < 1e-3,
            "{}",
            max_err(&cg.image, &img)
        );
        assert!(
            ticks.load(Ordering::Relaxed) >= 2,
            "progress once per iteration and slice"
        );
        Ok(())
    }

    #[test]
    fn a_set_cancel_flag_stops_the_run() {
        let ks = full_kspace(&image(1, 16));
        let cancel = AtomicBool::new(true);
        for m in [Method::ZeroFilled, Method::L1Wavelet, Method::Tv] {
            assert!(matches!(
                Plan::for_method(m).run(&ks, &|| {}, &cancel),
                Err(PipelineError::Cancelled)
            ));
        }
    }

    #[test]
    fn prior_methods_need_an_attached_prior() {
        let ks = full_kspace(&image(1, 16));
        let plan = Plan::new(
            None,
            &Overrides {
                method: Some(Method::OneStep),
                model: Some("nowhere".into()),
                ..Overrides::default()
            },
        )
        .expect("valid plan");
        let e = plan
            .run(&ks, &|| {}, &AtomicBool::new(false))
            .expect_err("no prior");
        assert!(matches!(
            e,
            PipelineError::NeedsModel { method: "one-step" }
        ));
        assert!(e.to_string().contains("needs a learned prior"));
    }

    #[test]
    fn noise_level_is_converted_to_per_component() {
        let mut ks = full_kspace(&image(1, 4));
        assert_eq!(noise_sigma_per_component(&ks), 0.0);
        ks.noise_sigma = Some(0.2);
        assert!((noise_sigma_per_component(&ks) - 0.2 / 2f64.sqrt()).abs() < 1e-12);
        ks.noise_sigma = Some(-1.0);
        assert_eq!(noise_sigma_per_component(&ks), 0.0);
    }

    #[test]
    fn problems_follow_the_measurement_domain(
    ) -> std::result::Result<(), Box<dyn std::error::Error>> {
        // Moved from apps/amri/src/commands/recon.rs: the prior's problems of each slice.
        let data = ndarray::Array4::from_elem((2, 3, 4, 5), C32::new(1.0, 0.0));
        let mut ks = KSpace::new(data);
        let ps = Problem::from_kspace(&ks)?;
        assert_eq!(ps.len(), 2);
        assert!(
            matches!(&ps[0], Problem::Kspace { kspace, mask, maps: None }
            if kspace.dim() == (3, 4, 5) && mask.iter().all(|&m| m == 1.0))
        );
        ks.domain = Some(amri_core::MeasuredDomain::Image);
        assert!(
            matches!(&Problem::from_kspace(&ks)?[1], Problem::Pixels { image, .. } if image.dim() == (4, 5))
        );
        ks.domain = Some(amri_core::MeasuredDomain::Projection);
        assert!(Problem::from_kspace(&ks).is_err());
        Ok(())
    }
}

//! The plan: a protocol's `[reconstruction]` settings merged with overrides (command-line flags,
//! panel values), validated, with the one set of method defaults ([`Params::defaults`]).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use amri_core::C32;
use amri_diffusion::sample::{Averaging, OneStepConfig, PosteriorConfig, Prior};
use amri_protocol::{Method, Protocol, Reconstruction};
use amri_recon::app::{CgSenseConfig, L1WaveletConfig, TvConfig};
use ndarray::Array2;
use serde::Serialize;

use crate::error::{PipelineError, Result};

/// Values that override a protocol's reconstruction settings; `None` keeps the protocol's value
/// (or the method's default). Keys are named as in a protocol's `[reconstruction]` section.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Overrides {
    /// The method (required when there is no protocol, or it has no `[reconstruction]`).
    pub method: Option<Method>,
    /// Regularisation weight λ ≥ 0 (BART `pics -r` scaling; Tikhonov weight for CG-SENSE).
    pub lambda: Option<f32>,
    /// Solver iterations ≥ 1 (TV: inner CG steps, as BART's `pics -i`).
    pub iterations: Option<usize>,
    /// Stop when the relative change falls below this (0: run every iteration; not checked,
    /// as the command line never did).
    pub tol: Option<f32>,
    /// Seed of random choices (wavelet cycle-spinning shifts; sampler noise).
    pub seed: Option<u64>,
    /// Learned prior (one-step, iterative): a checkpoint folder or a training run folder.
    pub model: Option<PathBuf>,
    /// Iterative: sampler noise levels ≥ 1 (network calls per sample).
    pub steps: Option<usize>,
    /// Iterative: posterior samples ≥ 1 per slice.
    pub samples: Option<usize>,
    /// Iterative: likelihood step size ζ in (0, 1].
    pub zeta: Option<f64>,
    /// One-step: replace the measured samples by the measured data after the network call.
    pub data_consistency: Option<bool>,
    /// One-step: noise level σ > 0 given to the network (normalised units).
    pub sigma: Option<f64>,
    /// One-step: average the network's estimate over the flips and transposes of the slice
    /// (`None`: when the prior was trained with flips and transposes).
    pub average_flips: Option<bool>,
    /// Coil compression to this many virtual coils ≥ 1 (SVD, as `bart cc -S -p N`) before coil
    /// maps are estimated; `None` keeps every coil, as does a count ≥ the data's coils.
    pub coils: Option<usize>,
    /// Noise prewhitening: `None` or `Some(true)` prewhiten when there is a noise covariance
    /// ([`Overrides::noise_cov`]) or the data carry noise samples; `Some(false)` never does.
    pub prewhiten: Option<bool>,
    /// A coil noise covariance `[coil, coil]` to prewhiten with (instead of the data's noise
    /// samples), and where it came from.
    pub noise_cov: Option<NoiseCovariance>,
}

/// A coil noise covariance given to the plan, e.g. read from a `--noise-cov` file.
#[derive(Clone, Debug, PartialEq)]
pub struct NoiseCovariance {
    /// Where it came from (a file name), for messages and the provenance record.
    pub source: String,
    /// The covariance `[coil, coil]`, Hermitian positive definite, in the data's units squared.
    pub matrix: Array2<C32>,
}

/// Every parameter of a method with its value resolved: the plan's value, or the default.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Params {
    /// Regularisation weight λ (BART `pics -r` scaling; 0 where the method has none).
    pub lambda: f32,
    /// Solver iterations (1 for the methods that do not iterate a solver).
    pub iterations: usize,
    /// Relative-change stopping tolerance (0: run every iteration).
    pub tol: f64,
    /// Seed (wavelet cycle spinning; the posterior sampler's seed before per-slice derivation).
    pub seed: u64,
    /// Iterative: sampler noise levels (network calls per sample).
    pub steps: usize,
    /// Iterative: posterior samples per slice.
    pub samples: usize,
    /// Iterative: likelihood step size ζ in (0, 1].
    pub zeta: f64,
    /// One-step: noise level σ given to the network (normalised units).
    pub sigma: f64,
    /// One-step: hard data consistency on the measured samples.
    pub data_consistency: bool,
    /// One-step: average over the flips and transposes of the slice (8 network calls for a
    /// square slice, 4 otherwise).
    pub average_flips: bool,
}

impl Params {
    /// The defaults of `method`: the only place they are decided. Classical methods take their
    /// `amri-recon` config's `Default` (λ = 0 and 30 iterations for CG-SENSE; λ = 0.005 and 100
    /// iterations for l1-wavelet and TV), the prior methods their `amri-diffusion` config's
    /// (`OneStepConfig`, `PosteriorConfig`); the seed is 0.
    pub fn defaults(method: Method) -> Params {
        let post = PosteriorConfig::default();
        let one = OneStepConfig::default();
        let (lambda, iterations, tol) = match method {
            Method::CgSense => {
                let c = CgSenseConfig::default();
                (c.lambda, c.iterations, c.tol)
            }
            Method::L1Wavelet => {
                let c = L1WaveletConfig::default();
                (c.lambda, c.iterations, c.tol)
            }
            Method::Tv => {
                let c = TvConfig::default();
                (c.lambda, c.iterations, c.tol)
            }
            Method::ZeroFilled | Method::OneStep | Method::Iterative => (0.0, 1, 0.0),
        };
        Params {
            lambda,
            iterations,
            tol,
            seed: 0,
            steps: post.steps,
            samples: post.samples,
            zeta: post.zeta,
            sigma: one.sigma,
            data_consistency: one.data_consistency,
            average_flips: one.averaging.dihedral,
        }
    }
}

/// A validated reconstruction plan: the method, the values given for it (absent ones take
/// [`Params::defaults`]) and, for the learned-prior methods, the loaded prior.
///
/// It serialises as the provenance record written beside each output: `protocol`, `method`, the
/// values given (`null` = default), `seed`, `model`, `model_sha256` and `model_checkpoint`.
#[derive(Clone, Serialize)]
pub struct Plan {
    protocol: Option<String>,
    method: Method,
    lambda: Option<f32>,
    iterations: Option<usize>,
    tol: Option<f32>,
    seed: u64,
    model: Option<PathBuf>,
    model_sha256: Option<String>,
    model_checkpoint: Option<String>,
    /// The model was chosen for the data ([`crate::autopick`]), not given.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    model_picked: bool,
    steps: Option<usize>,
    samples: Option<usize>,
    zeta: Option<f64>,
    data_consistency: Option<bool>,
    sigma: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    average_flips: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    coils: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    prewhiten: Option<bool>,
    /// The `--noise-cov` source and a digest of its values (FNV-1a of the f32 bits), so that a
    /// changed covariance makes an output stale.
    #[serde(skip_serializing_if = "Option::is_none")]
    noise_cov: Option<(String, String)>,
    #[serde(skip)]
    noise_cov_matrix: Option<Arc<Array2<C32>>>,
    #[serde(skip)]
    prior: Option<Arc<Prior>>,
}

impl std::fmt::Debug for Plan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plan")
            .field("protocol", &self.protocol)
            .field("method", &self.method)
            .field("params", &self.params())
            .field("model", &self.model)
            .field("model_sha256", &self.model_sha256)
            .field("coils", &self.coils)
            .field("prewhiten", &self.prewhiten)
            .field("noise_cov", &self.noise_cov)
            .field("prior_loaded", &self.prior.is_some())
            .finish()
    }
}

fn check<T: Copy + std::fmt::Display>(
    key: &'static str,
    v: Option<T>,
    ok: impl Fn(T) -> bool,
    expected: &'static str,
) -> Result<()> {
    match v {
        Some(x) if !ok(x) => Err(PipelineError::Invalid {
            key,
            value: x.to_string(),
            expected,
        }),
        _ => Ok(()),
    }
}

impl Plan {
    /// A plan of `method` with every parameter at its default (no protocol, no prior).
    pub fn for_method(method: Method) -> Plan {
        Plan {
            protocol: None,
            method,
            lambda: None,
            iterations: None,
            tol: None,
            seed: 0,
            model: None,
            model_sha256: None,
            model_checkpoint: None,
            model_picked: false,
            steps: None,
            samples: None,
            zeta: None,
            data_consistency: None,
            sigma: None,
            average_flips: None,
            coils: None,
            prewhiten: None,
            noise_cov: None,
            noise_cov_matrix: None,
            prior: None,
        }
    }

    /// Merges `protocol`'s `[reconstruction]` section with `overrides` (an override wins) and
    /// validates the result. The method is the override's, else the protocol's. λ, iterations,
    /// tol and seed come from the protocol whatever the method; its model, steps, samples, ζ and
    /// data consistency only when the method is the protocol's own. Learned-prior parameters
    /// given with a classical method are an error. The model is not required here (see
    /// [`Plan::load_prior`] and [`Plan::with_prior`]).
    pub fn new(protocol: Option<&Protocol>, overrides: &Overrides) -> Result<Plan> {
        let o = overrides;
        let base = protocol
            .and_then(|p| p.reconstruction.clone())
            .unwrap_or(Reconstruction::new(Method::ZeroFilled));
        let method = match (o.method, protocol.is_some()) {
            (Some(m), _) => m,
            (None, true) => base.method,
            (None, false) => return Err(PipelineError::NoMethod),
        };
        check(
            "lambda",
            o.lambda,
            |l| l.is_finite() && l >= 0.0,
            "a number ≥ 0",
        )?;
        check("iterations", o.iterations, |n| n >= 1, "≥ 1")?;
        check("steps", o.steps, |n| n >= 1, "≥ 1")?;
        check("samples", o.samples, |n| n >= 1, "≥ 1")?;
        check("sigma", o.sigma, |v| v.is_finite() && v > 0.0, "> 0")?;
        check("zeta", o.zeta, |z| z > 0.0 && z <= 1.0, "in (0, 1]")?;
        check("coils", o.coils, |n| n >= 1, "≥ 1")?;
        if let Some(c) = &o.noise_cov {
            if o.prewhiten == Some(false) {
                return Err(PipelineError::Conflict {
                    key: "noise_cov",
                    with: "prewhiten = false",
                });
            }
            amri_ops::whiten::whitening_matrix(c.matrix.view()).map_err(|e| {
                PipelineError::NoiseCov {
                    source_name: c.source.clone(),
                    source: e,
                }
            })?;
        }
        if !method.is_prior() {
            let given = [
                ("model", o.model.is_some()),
                ("steps", o.steps.is_some()),
                ("samples", o.samples.is_some()),
                ("zeta", o.zeta.is_some()),
                ("data_consistency", o.data_consistency.is_some()),
                ("sigma", o.sigma.is_some()),
            ];
            if let Some((key, _)) = given.iter().find(|(_, g)| *g) {
                return Err(PipelineError::NotForMethod {
                    key,
                    applies_to: "the learned-prior methods (one-step, iterative)",
                    method: method.name(),
                });
            }
        }
        // given, or set by the protocol for its own method
        let flips_given =
            o.average_flips.is_some() || (base.method == method && base.average_flips.is_some());
        if method != Method::OneStep && flips_given {
            return Err(PipelineError::NotForMethod {
                key: "average_flips",
                applies_to: "one-step",
                method: method.name(),
            });
        }
        // The protocol's prior settings belong to its own method.
        let own = base.method == method;
        fn pick<T>(own: bool, given: Option<T>, proto: Option<T>) -> Option<T> {
            if own {
                given.or(proto)
            } else {
                given
            }
        }
        Ok(Plan {
            protocol: protocol.map(|p| p.name.clone()),
            method,
            lambda: o.lambda.or(base.lambda),
            iterations: o.iterations.or(base.iterations),
            tol: o.tol.or(base.tol),
            seed: o.seed.or(base.seed).unwrap_or(0),
            model: pick(own, o.model.clone(), base.model.clone()),
            model_sha256: None,
            model_checkpoint: None,
            model_picked: false,
            steps: pick(own, o.steps, base.steps),
            samples: pick(own, o.samples, base.samples),
            zeta: pick(own, o.zeta, base.zeta),
            data_consistency: pick(own, o.data_consistency, base.data_consistency),
            sigma: o.sigma,
            average_flips: pick(own, o.average_flips, base.average_flips),
            coils: o.coils,
            prewhiten: o.prewhiten,
            noise_cov: o
                .noise_cov
                .as_ref()
                .map(|c| (c.source.clone(), digest(&c.matrix))),
            noise_cov_matrix: o.noise_cov.as_ref().map(|c| Arc::new(c.matrix.clone())),
            prior: None,
        })
    }

    /// Virtual coils to compress to, when the plan compresses.
    pub fn coils(&self) -> Option<usize> {
        self.coils
    }

    /// Whether the plan prewhitens data that carry noise samples (or with its given covariance).
    pub fn prewhitens(&self) -> bool {
        self.prewhiten != Some(false)
    }

    /// The given noise covariance `[coil, coil]`, if any.
    pub fn noise_cov(&self) -> Option<&Array2<C32>> {
        self.noise_cov_matrix.as_deref()
    }

    /// The method.
    pub fn method(&self) -> Method {
        self.method
    }

    /// Name of the protocol the plan was built from, if any.
    pub fn protocol(&self) -> Option<&str> {
        self.protocol.as_deref()
    }

    /// The learned prior's folder, as given (one-step, iterative).
    pub fn model(&self) -> Option<&Path> {
        self.model.as_deref()
    }

    /// SHA-256 (hex) of the attached prior's weights file (provenance).
    pub fn model_sha256(&self) -> Option<&str> {
        self.model_sha256.as_deref()
    }

    /// The attached learned prior, if any.
    pub fn prior(&self) -> Option<&Prior> {
        self.prior.as_deref()
    }

    /// One-step σ when none was given: `default`, moved into the attached prior's training
    /// noise levels (two standard deviations of ln σ) when it lies outside them, so that a
    /// prior trained only at small σ is not asked at a σ it never saw.
    fn default_sigma(&self, default: f64) -> f64 {
        match self.prior() {
            Some(p) if self.method == Method::OneStep => {
                p.card().train.sigma.within_training(default)
            }
            _ => default,
        }
    }

    /// One-step flip averaging when none was asked for: on when the attached prior was trained
    /// with flips of rows and columns and transposes (its estimate of a reflected slice is then
    /// as good as of the slice itself), else `default`.
    fn default_average_flips(&self, default: bool) -> bool {
        match (self.prior(), self.method) {
            (Some(p), Method::OneStep) => p.card().record.as_ref().map_or(default, |r| {
                r.augment.flip_rows && r.augment.flip_cols && r.augment.transpose
            }),
            _ => default,
        }
    }

    /// Every parameter resolved: the plan's values over [`Params::defaults`] of its method
    /// (one-step's σ also over the attached prior's training noise levels).
    pub fn params(&self) -> Params {
        let d = Params::defaults(self.method);
        Params {
            lambda: self.lambda.unwrap_or(d.lambda),
            iterations: self.iterations.unwrap_or(d.iterations),
            tol: self.tol.map(f64::from).unwrap_or(d.tol),
            seed: self.seed,
            steps: self.steps.unwrap_or(d.steps),
            samples: self.samples.unwrap_or(d.samples),
            zeta: self.zeta.unwrap_or(d.zeta),
            sigma: self.sigma.unwrap_or_else(|| self.default_sigma(d.sigma)),
            data_consistency: self.data_consistency.unwrap_or(d.data_consistency),
            average_flips: self
                .average_flips
                .unwrap_or_else(|| self.default_average_flips(d.average_flips)),
        }
    }

    /// Progress ticks to expect per slice (a progress bar's length): the iteration count when
    /// one was given, else the solver's iterations (classical), the sampler's steps (iterative)
    /// or 1 (zero-filled, one-step). TV ticks once per outer ADMM iteration, fewer times than
    /// its (inner) iteration count.
    pub fn ticks_per_slice(&self) -> usize {
        let p = self.params();
        self.iterations.unwrap_or(match self.method {
            Method::ZeroFilled | Method::OneStep => 1,
            Method::Iterative => p.steps,
            Method::CgSense | Method::L1Wavelet | Method::Tv => p.iterations,
        })
    }

    /// CG-SENSE settings of this plan.
    pub fn cg_sense_config(&self) -> CgSenseConfig {
        let p = self.params();
        CgSenseConfig {
            lambda: p.lambda,
            iterations: p.iterations,
            tol: p.tol,
            ..CgSenseConfig::default()
        }
    }

    /// l1-wavelet settings of this plan.
    pub fn l1_wavelet_config(&self) -> L1WaveletConfig {
        let p = self.params();
        L1WaveletConfig {
            lambda: p.lambda,
            iterations: p.iterations,
            tol: p.tol,
            seed: p.seed,
            ..L1WaveletConfig::default()
        }
    }

    /// TV settings of this plan.
    pub fn tv_config(&self) -> TvConfig {
        let p = self.params();
        TvConfig {
            lambda: p.lambda,
            iterations: p.iterations,
            tol: p.tol,
            ..TvConfig::default()
        }
    }

    /// One-step settings of this plan (intensity scale not yet set); `lambda` and `iterations`,
    /// when given, set the multi-coil data step's λ and CG iterations.
    pub fn one_step_config(&self) -> OneStepConfig {
        let p = self.params();
        let d = OneStepConfig::default();
        OneStepConfig {
            sigma: p.sigma,
            data_consistency: p.data_consistency,
            dc_lambda: self.lambda.unwrap_or(d.dc_lambda),
            dc_iterations: self.iterations.unwrap_or(d.dc_iterations),
            averaging: Averaging {
                dihedral: p.average_flips,
            },
            ..d
        }
    }

    /// Posterior-sampler settings of this plan (before the per-slice seed, the noise level of
    /// the data and the intensity scale are set).
    pub fn posterior_config(&self) -> PosteriorConfig {
        let p = self.params();
        PosteriorConfig {
            steps: p.steps,
            samples: p.samples,
            zeta: p.zeta,
            seed: p.seed,
            ..PosteriorConfig::default()
        }
    }

    /// Attaches a loaded prior (shared, e.g. by several plans or threads) and records its
    /// provenance (weights SHA-256, checkpoint folder).
    pub fn with_prior(mut self, prior: Arc<Prior>) -> Plan {
        self.model_sha256 = Some(prior.sha256().to_owned());
        self.model_checkpoint = Some(prior.checkpoint_dir().display().to_string());
        self.prior = Some(prior);
        self
    }

    /// Attaches a prior chosen for the data from the folder `dir` ([`crate::autopick`]): as
    /// [`Plan::with_prior`], and the plan records `dir` as its model, marked as picked.
    pub fn with_picked_prior(mut self, prior: Arc<Prior>, dir: &Path) -> Plan {
        self.model = Some(dir.to_path_buf());
        self.model_picked = true;
        self.with_prior(prior)
    }

    /// Whether the plan's model was chosen for the data rather than given.
    pub fn model_picked(&self) -> bool {
        self.model_picked
    }

    /// Loads the plan's model onto `device` and attaches it, for a learned-prior method;
    /// nothing for a classical one. Errors when the method needs a model and none was given.
    pub fn load_prior(&mut self, device: &candle_core::Device) -> Result<()> {
        if !self.method.is_prior() {
            return Ok(());
        }
        let path = self.model.clone().ok_or(PipelineError::NeedsModel {
            method: self.method.name(),
        })?;
        let p = Prior::load(&path, device).map_err(|source| PipelineError::LoadPrior {
            path: path.display().to_string(),
            source,
        })?;
        *self = self.clone().with_prior(Arc::new(p));
        Ok(())
    }
}

/// FNV-1a (64-bit) of the f32 bits of a complex matrix, as hex: a digest for provenance.
fn digest(m: &Array2<C32>) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for v in m.iter() {
        for x in [v.re.to_bits(), v.im.to_bits()] {
            for b in x.to_le_bytes() {
                h ^= u64::from(b);
                h = h.wrapping_mul(0x0100_0000_01b3);
            }
        }
    }
    format!("{h:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(method: Method) -> Overrides {
        Overrides {
            method: Some(method),
            ..Overrides::default()
        }
    }

    #[test]
    fn defaults_are_the_library_configs_defaults() -> Result<()> {
        // The numbers, written out: CG-SENSE λ = 0 and 30 iterations, l1-wavelet and TV
        // λ = 0.005 and 100 iterations, seed 0.
        let cg = Plan::new(None, &with(Method::CgSense))?;
        assert_eq!(cg.cg_sense_config(), CgSenseConfig::default());
        assert_eq!((cg.params().lambda, cg.params().iterations), (0.0, 30));
        let l1 = Plan::new(None, &with(Method::L1Wavelet))?.l1_wavelet_config();
        let d = L1WaveletConfig::default();
        assert_eq!(
            (l1.lambda, l1.iterations, l1.tol, l1.seed),
            (d.lambda, d.iterations, d.tol, d.seed)
        );
        assert_eq!((l1.lambda, l1.iterations, l1.seed), (0.005, 100, 0));
        let tv = Plan::new(None, &with(Method::Tv))?.tv_config();
        let d = TvConfig::default();
        assert_eq!(
            (tv.lambda, tv.iterations, tv.tol),
            (d.lambda, d.iterations, d.tol)
        );
        assert_eq!((tv.lambda, tv.iterations), (0.005, 100));
        let it = Plan::new(None, &with(Method::Iterative))?.posterior_config();
        let d = PosteriorConfig::default();
        assert_eq!(
            (it.steps, it.samples, it.zeta, it.seed),
            (d.steps, d.samples, d.zeta, d.seed)
        );
        let one = Plan::new(None, &with(Method::OneStep))?.one_step_config();
        let d = OneStepConfig::default();
        assert_eq!(
            (one.sigma, one.data_consistency),
            (d.sigma, d.data_consistency)
        );
        for m in Method::EVERY {
            assert_eq!(Plan::for_method(m).params(), Params::defaults(m));
        }
        Ok(())
    }

    #[test]
    fn overrides_beat_the_protocol_and_the_protocol_beats_the_defaults() -> Result<()> {
        // box-corruption: TV, λ = 0.05, 300 iterations (not the defaults)
        let p = Protocol::resolve("box-corruption").expect("built-in protocol");
        let plan = Plan::new(Some(&p), &Overrides::default())?;
        assert_eq!(plan.method(), Method::Tv);
        assert_eq!(plan.protocol(), Some("box-corruption"));
        let c = plan.tv_config();
        assert_eq!((c.lambda, c.iterations), (0.05, 300));
        let plan = Plan::new(
            Some(&p),
            &Overrides {
                iterations: Some(7),
                lambda: Some(0.25),
                tol: Some(0.5),
                ..Overrides::default()
            },
        )?;
        let c = plan.tv_config();
        assert_eq!((c.iterations, c.lambda, c.tol), (7, 0.25, 0.5));
        // another method keeps the protocol's λ and iterations (as the command line always did)
        let l1 = Plan::new(
            Some(&p),
            &Overrides {
                seed: Some(3),
                ..with(Method::L1Wavelet)
            },
        )?;
        let c = l1.l1_wavelet_config();
        assert_eq!((c.lambda, c.iterations, c.seed), (0.05, 300, 3));
        // prior parameters
        let it = Plan::new(
            None,
            &Overrides {
                steps: Some(3),
                samples: Some(2),
                zeta: Some(0.5),
                model: Some("m".into()),
                ..with(Method::Iterative)
            },
        )?;
        let c = it.posterior_config();
        assert_eq!((c.steps, c.samples, c.zeta), (3, 2, 0.5));
        assert_eq!(it.model(), Some(Path::new("m")));
        assert_eq!(it.ticks_per_slice(), 3);
        let one = Plan::new(
            None,
            &Overrides {
                sigma: Some(0.2),
                data_consistency: Some(true),
                ..with(Method::OneStep)
            },
        )?;
        let c = one.one_step_config();
        assert_eq!((c.sigma, c.data_consistency), (0.2, true));
        Ok(())
    }

    #[test]
    fn a_protocols_prior_settings_belong_to_its_own_method() -> Result<()> {
        let p = Protocol::resolve("singlecoil-r4-ambient-train").expect("built-in protocol");
        let own = Plan::new(Some(&p), &Overrides::default())?;
        assert_eq!(own.method(), Method::OneStep);
        assert!(own.model().is_some());
        let other = Plan::new(Some(&p), &with(Method::Iterative))?;
        assert_eq!(other.model(), None);
        // a protocol's average_flips: taken by its own method, an override wins, and without a
        // prior the default is off
        let mut q = p.clone();
        if let Some(r) = q.reconstruction.as_mut() {
            r.average_flips = Some(true);
        }
        let on = Plan::new(Some(&q), &Overrides::default())?;
        assert!(on.params().average_flips && on.one_step_config().averaging.dihedral);
        let off = Plan::new(
            Some(&q),
            &Overrides {
                average_flips: Some(false),
                ..Overrides::default()
            },
        )?;
        assert!(!off.one_step_config().averaging.dihedral);
        // a protocol whose own method is not one-step cannot set it
        let mut it = q.clone();
        if let Some(r) = it.reconstruction.as_mut() {
            r.method = Method::Iterative;
        }
        assert!(matches!(
            Plan::new(Some(&it), &Overrides::default()),
            Err(PipelineError::NotForMethod {
                key: "average_flips",
                ..
            })
        ));
        // but another method than the protocol's ignores the protocol's key
        assert!(Plan::new(Some(&q), &with(Method::Tv)).is_ok());
        assert!(!own.params().average_flips);
        Ok(())
    }

    #[test]
    fn invalid_overrides_are_clear_errors() {
        let bad = |o: Overrides| Plan::new(None, &o).expect_err("invalid").to_string();
        let e = bad(Overrides {
            lambda: Some(-1.0),
            ..with(Method::Tv)
        });
        assert_eq!(e, "lambda must be a number ≥ 0, got -1");
        assert!(bad(Overrides {
            lambda: Some(f32::NAN),
            ..with(Method::Tv)
        })
        .starts_with("lambda must be"));
        assert_eq!(
            bad(Overrides {
                iterations: Some(0),
                ..with(Method::CgSense)
            }),
            "iterations must be ≥ 1, got 0"
        );
        assert!(bad(Overrides {
            zeta: Some(1.5),
            ..with(Method::Iterative)
        })
        .contains("zeta must be in (0, 1]"));
        assert!(bad(Overrides {
            sigma: Some(0.0),
            ..with(Method::OneStep)
        })
        .contains("sigma must be > 0"));
        assert!(bad(Overrides {
            steps: Some(0),
            ..with(Method::Iterative)
        })
        .contains("steps must be ≥ 1"));
        assert!(matches!(
            Plan::new(
                None,
                &Overrides {
                    samples: Some(3),
                    ..with(Method::Tv)
                }
            ),
            Err(PipelineError::NotForMethod {
                key: "samples",
                method: "tv",
                ..
            })
        ));
        assert!(matches!(
            Plan::new(
                None,
                &Overrides {
                    average_flips: Some(true),
                    ..with(Method::Iterative)
                }
            ),
            Err(PipelineError::NotForMethod {
                key: "average_flips",
                applies_to: "one-step",
                method: "iterative"
            })
        ));
        assert!(matches!(
            Plan::new(None, &Overrides::default()),
            Err(PipelineError::NoMethod)
        ));
    }

    #[test]
    fn a_prior_method_without_a_model_cannot_load_one() {
        let mut p = Plan::for_method(Method::Iterative);
        assert!(matches!(
            p.load_prior(&candle_core::Device::Cpu),
            Err(PipelineError::NeedsModel {
                method: "iterative"
            })
        ));
        let mut c = Plan::for_method(Method::Tv);
        assert!(c.load_prior(&candle_core::Device::Cpu).is_ok());
        assert!(c.prior().is_none());
    }

    #[test]
    fn the_plan_serialises_as_the_provenance_record() {
        let v = serde_json_value(&Plan::for_method(Method::Tv));
        for k in [
            "protocol",
            "method",
            "lambda",
            "iterations",
            "tol",
            "seed",
            "model",
            "model_sha256",
            "model_checkpoint",
            "steps",
            "samples",
            "zeta",
            "data_consistency",
            "sigma",
        ] {
            assert!(v.contains(&format!("\"{k}\":")), "{k} missing in {v}");
        }
        assert!(v.contains("\"method\":\"tv\""), "{v}");
    }

    fn serde_json_value(p: &Plan) -> String {
        serde_json::to_string(p).expect("serialises")
    }
}

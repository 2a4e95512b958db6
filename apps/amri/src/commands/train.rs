//! `amri train` and `amri finetune`: learn a diffusion prior from measured files (the measured
//! route) or from image volumes under a protocol's acquisition model (the simulation route), with
//! exact resume.
//!
//! Plan: read the inputs → measured files (k-space or corrupted images with their masks; no
//! `--protocol`) build [`TrainingData::from_measured`] (each scan its own A, ACS coil maps, Ã
//! from `--delta`/`--further`, buckets by matrix size); image volumes with `--protocol` build
//! the simulated [`TrainingSet`] (per-volume normalisation, A and Ã from the protocol) → a fresh
//! trainer, a base checkpoint (`finetune`) or the run's own latest checkpoint (`--resume`) → check
//! every matrix size against the network → step with a progress bar → every
//! `--checkpoint-every` steps and at the end: checkpoint (atomic, `latest` pointer), `loss.csv`
//! (rewritten atomically) and `loss.png`.
//!
//! Output folder: `ckpt-<step>/` (model, EMA, optimiser, card), `latest`, `loss.csv`
//! (`step,loss,lr,grad_norm,seconds`), `loss.png`.

use std::path::{Path, PathBuf};
use std::time::Instant;

use amri_diffusion::adapt::{plan_adaptation, Adapt, Adaptation, FinetuneRecord};
use amri_diffusion::augment::Augmentation;
use amri_diffusion::checkpoint::{
    read_card, resolve_checkpoint, MeasuredInput, ModelCard, TrainingRecord, EMA_FILE, LATEST_FILE,
};
use amri_diffusion::data::{FurtherParams, TrainObjective, TrainingSet};
use amri_diffusion::maps_cache::{self, MapsCache};
use amri_diffusion::measured::{prepare, MeasuredFile, Preparation, TrainingData};
use amri_diffusion::precond::{self, DenoiserConfig, PrecondKind, SigmaMix, SigmaSampler};
use amri_diffusion::run::{
    check_run_folder, format_loss_log, ignored_on_resume, read_loss_log, resume_mismatch, LogRow,
    ResumeFlags, LOSS_CSV,
};
use amri_diffusion::sample::sha256_file;
use amri_diffusion::sense_input::NetworkInput;
use amri_diffusion::train::{save_run_checkpoint, Objective, StepStats, TrainConfig, Trainer};
use amri_diffusion::views::{group_by_shape, views_of, Orientation, Views};
use amri_ops::corruption::FurtherMode;
use amri_protocol::Protocol;
use anyhow::{bail, Context, Result};
use candle_core::Device;
use indicatif::{ProgressBar, ProgressStyle};

use super::volumes::{read_training_inputs, TrainingInputs};

/// σ_data of the EDM preconditioning for volumes divided by their measurement scale
/// (`amri_diffusion::data::measurement_scale`, 99.5th percentile of the zero-filled magnitude).
const SIGMA_DATA: f64 = 0.5;
/// Name of the loss-curve figure in the output folder.
pub const LOSS_PNG: &str = "loss.png";

/// Steps after the first at which a GPU run checks its gradient against the CPU's once more.
const GRADIENT_RECHECK: usize = 20;
/// Largest relative L2 error of any variable's GPU gradient against the CPU's (f32 rounding
/// differences are ~10⁻⁵; a wrong backend kernel gives errors of order 1).
const GRADIENT_TOLERANCE: f64 = 0.02;

/// Options shared by `train` and `finetune`.
#[derive(clap::Args, Debug)]
pub struct Common {
    /// Simulation route only: protocol (preset name or .toml file) whose `[acquisition]` measures
    /// the image volumes. Measured files carry their own masks and take no protocol.
    #[arg(long, short)]
    pub protocol: Option<String>,
    /// Measured route: fraction δ of each scan's measured lines (line masks) or samples/pixels
    /// (other masks) that the further corruption Ã hides; calibration lines are always kept
    /// [default: 0.1; --resume: the run's]. On the simulation route δ is the protocol's.
    #[arg(long)]
    pub delta: Option<f64>,
    /// Measured route: draw Ã once per scan (per-scan) or at every step (per-step)
    /// [default: per-scan; --resume: the run's]. On the simulation route it is the protocol's.
    #[arg(long, value_parser = parse_further)]
    pub further: Option<FurtherMode>,
    /// Measured route: compress multi-coil k-space to N virtual coils by SVD (as `bart cc -S -p
    /// N`, as `amri recon --coils`) before coil maps are estimated; give the same N on --resume.
    #[arg(long, visible_alias = "virtual-coils", value_name = "N")]
    pub coils: Option<usize>,
    /// Measured route: train files that carry no mask with the mask their non-zero samples
    /// define (BART's convention, which `amri recon` follows); without it they are refused.
    #[arg(long)]
    pub infer_mask: bool,
    /// Measured route: do not prewhiten files that carry noise samples (ISMRMRD noise readouts);
    /// by default they are prewhitened, as `amri recon` does.
    #[arg(long)]
    pub no_prewhiten: bool,
    /// Augment every training example in the measured domain (comma-separated): flip (reflect
    /// rows and columns about the k-space centre, each w.p. 1/2; or flip-rows / flip-cols),
    /// transpose (square matrices only, w.p. 1/2), intensity (gain log-uniform in [0.5, 2]; or
    /// intensity=LO:HI), none. Masks, Ã and coil maps follow the data. Drawn from (seed, step,
    /// example), so --resume stays exact [default: none; --resume: the run's, a different value
    /// is an error].
    #[arg(long, value_parser = parse_augment, value_name = "LIST")]
    pub augment: Option<Augmentation>,
    /// Simulation route: train on every image volume sliced in each of these orientations
    /// (axial, coronal, sagittal; comma-separated), read from the NIfTI affine, not the array
    /// order [default: the volumes' stored slices; --resume: the run's].
    #[arg(long, value_delimiter = ',', value_parser = parse_orientation, value_name = "LIST")]
    pub orientations: Option<Vec<Orientation>>,
    /// Simulation route: also resample every slice in-plane to each of these pixel sizes in mm
    /// (comma-separated, e.g. 1,1.5,2; Fourier crop / zero-pad keeping the field of view), then
    /// zero-pad to the network's size multiple; views of different sizes train in shape buckets
    /// [default: the volumes' own pixels; --resume: the run's].
    #[arg(long, value_delimiter = ',', value_name = "MM")]
    pub pixel_sizes: Option<Vec<f64>>,
    /// Measured route with --objective tweedie: the noise standard deviation per complex sample
    /// of every file, in the files' units [default: each file's own: 1 after prewhitening with
    /// its noise samples, else its `noise_sigma` attribute; a file with neither is refused].
    #[arg(long, value_name = "SIGMA")]
    pub noise_sigma: Option<f32>,
    /// Total optimisation steps of the run (a resumed run continues up to this count).
    #[arg(long)]
    pub steps: usize,
    /// Slices per mini-batch [default: 8; --resume: the run's, a different value is an error].
    #[arg(long)]
    pub batch: Option<usize>,
    /// Output folder: checkpoints, `latest`, loss.csv, loss.png.
    #[arg(long)]
    pub out: PathBuf,
    /// Continue the run in --out from its latest checkpoint (bitwise as if uninterrupted). The
    /// run's own seed, learning rate, warm-up, EMA and preset are used: other values given for
    /// them are ignored with a warning; a different --batch, --objective or protocol is an error.
    #[arg(long)]
    pub resume: bool,
    /// Seed of weight initialisation, σ, noise and data order [default: 0].
    #[arg(long)]
    pub seed: Option<u64>,
    /// Loss: ambient (from corrupted data only), tweedie (noisy corrupted data, double-Tweedie
    /// loss: the protocol's Gaussian noise_level, or measured files' own noise level), clean (the clean-trained twin of an ambient
    /// prior: same corrupted inputs, loss on the whole clean image; reference) or supervised
    /// (clean denoiser without corruption; reference)
    /// [default: ambient; --resume: the run's, a different value is an error].
    #[arg(long, value_parser = parse_objective)]
    pub objective: Option<TrainObjective>,
    /// Loss weight of the samples the further corruption hid, relative to the kept ones (1: the
    /// unweighted ambient loss; the minimiser is the same for any value > 0, larger values
    /// train the filling-in faster) [default: 1].
    #[arg(long)]
    pub hidden_weight: Option<f64>,
    /// Training noise levels are log-normal, ln σ ~ N(MEAN, STD²) (normalised units; EDM's
    /// −1.2): a lower mean puts more of the training on the small σ that one-step
    /// reconstruction uses [default: −1.2; --resume: the run's].
    #[arg(long, value_name = "MEAN", allow_hyphen_values = true)]
    pub sigma_log_mean: Option<f64>,
    /// Standard deviation of ln σ of the training noise levels [default: 1.2; --resume: the
    /// run's].
    #[arg(long, value_name = "STD")]
    pub sigma_log_std: Option<f64>,
    /// Draw a FRACTION of the training noise levels from a second log-normal, ln σ ~ N(MEAN,
    /// STD²), e.g. `0.5:-5:0.5`: half the steps' examples at σ ≈ 0.007, where one-step
    /// reconstruction runs and the network learns to undo the corruption, the rest from the
    /// main log-normal for the sampler [default: none; --resume: the run's].
    #[arg(long, value_name = "FRACTION:MEAN:STD", allow_hyphen_values = true)]
    pub sigma_mix: Option<SigmaMix>,
    /// With --objective tweedie: also train below the data's noise level with the consistency
    /// loss at this weight (σ drawn from the whole log-normal; samples with σ ≤ σ_n get it)
    /// [default: 0, off].
    #[arg(long, value_name = "WEIGHT")]
    pub consistency: Option<f64>,
    /// Save a checkpoint every N steps (and always at the end).
    #[arg(long, default_value_t = 500)]
    pub checkpoint_every: usize,
    /// Warm-up steps of the learning rate [default: 100].
    #[arg(long)]
    pub warmup: Option<usize>,
    /// EMA decay per step [default: 0.999].
    #[arg(long)]
    pub ema: Option<f64>,
    /// Stop early, with a checkpoint, at the first step that ends after this many minutes of
    /// wall time in this process (e.g. to fit a GPU job slot); `--resume` continues the run.
    #[arg(long, value_name = "MINUTES")]
    pub max_minutes: Option<f64>,
    /// Hide the progress bar.
    #[arg(long)]
    pub no_progress: bool,
    /// Measured files as `amri recon` reads them (.npz bundles with `mask`, fastMRI .h5, .cfl
    /// with `_mask`; k-space single- or multi-coil, or `domain = image` with a pixel mask) →
    /// measured route; or image volumes (NIfTI, DICOM series folders, npy) with --protocol →
    /// simulation route; or folders of either. Mixing both is an error.
    #[arg(required = true, value_name = "TRAIN_INPUTS")]
    pub inputs: Vec<PathBuf>,
}

/// Arguments of `amri train`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// U-Net size: tiny (0.79 M parameters, CPU, 64×64), clinical (1.19 M, CPU, 256×256: ×4
    /// space-to-depth stem), small (1.2 M) or base (26.9 M, GPU) [default: tiny].
    #[arg(long)]
    pub preset: Option<String>,
    /// Peak AdamW learning rate [default: 0.001].
    #[arg(long)]
    pub lr: Option<f64>,
    /// Preconditioning: ambient (c_out = σ_d at every σ, so one call can undo aliasing) or edm
    /// (Karras et al.) [default: ambient; edm for --objective supervised].
    #[arg(long)]
    pub precond: Option<PrecondKind>,
    /// Multi-coil k-space only: the network's image input, adjoint (the coil-combined
    /// zero-filled image) or sense[:K[:LAMBDA]] (K conjugate-gradient iterations of SENSE on the
    /// same data, so the coils' information reaches the network; default K 10, λ 0)
    /// [default: adjoint].
    #[arg(long, value_name = "KIND", value_parser = parse_network_input)]
    pub network_input: Option<NetworkInput>,
    /// Override the preset's space-to-depth factor: 1 (none), 2, 4 or 8 (a lossless stem that
    /// runs the U-Net on (H/f)×(W/f) positions with f² times the channels; cheaper per step,
    /// but the network has fewer channels per pixel) [default: the preset's; --resume: the run's].
    #[arg(long, value_name = "F")]
    pub space_to_depth: Option<usize>,
    /// Override the preset's base channel width (a multiple of 8; the other levels keep their
    /// multipliers) [default: the preset's; --resume: the run's].
    #[arg(long, value_name = "C")]
    pub base_channels: Option<usize>,
    #[command(flatten)]
    pub common: Common,
}

/// Arguments of `amri finetune`.
#[derive(clap::Args, Debug)]
pub struct FinetuneArgs {
    /// Base checkpoint: a run folder (its `latest`) or a checkpoint folder.
    #[arg(long)]
    pub base: PathBuf,
    /// Peak AdamW learning rate, lower than training's default [default: 0.0001].
    #[arg(long)]
    pub lr: Option<f64>,
    /// Freeze the U-Net encoder (input convolution and down-path blocks); --adapt full only.
    #[arg(long)]
    pub freeze_down: bool,
    /// What trains: full (every weight), lora (low-rank adapters on every convolution and
    /// linear layer, base frozen; checkpoints hold the merged weights) or last-layers (the last
    /// --train-layers decoder blocks and the output head) [default: full].
    #[arg(long)]
    pub adapt: Option<Adapt>,
    /// --adapt lora: rank R of the adapters [default: 4].
    #[arg(long, value_name = "R")]
    pub rank: Option<usize>,
    /// --adapt lora: the adapters' update is scaled by ALPHA / R [default: R, scale 1].
    #[arg(long)]
    pub alpha: Option<f64>,
    /// --adapt last-layers: decoder residual blocks that train, counted from the output (the
    /// head always trains) [default: 2].
    #[arg(long, value_name = "N")]
    pub train_layers: Option<usize>,
    #[command(flatten)]
    pub common: Common,
}

fn parse_further(s: &str) -> Result<FurtherMode, String> {
    match s {
        "per-scan" | "per_scan" => Ok(FurtherMode::PerScan),
        "per-step" | "per_step" => Ok(FurtherMode::PerStep),
        _ => Err(format!("expected per-scan or per-step, got {s:?}")),
    }
}

fn parse_network_input(s: &str) -> Result<NetworkInput, String> {
    NetworkInput::parse(s).map_err(|e| e.to_string())
}

fn parse_augment(s: &str) -> Result<Augmentation, String> {
    Augmentation::parse(s).map_err(|e| e.to_string())
}

fn parse_orientation(s: &str) -> Result<Orientation, String> {
    Orientation::parse(s).map_err(|e| e.to_string())
}

fn parse_objective(s: &str) -> Result<TrainObjective, String> {
    match s {
        "ambient" => Ok(TrainObjective::Ambient),
        "supervised" => Ok(TrainObjective::Supervised),
        "tweedie" => Ok(TrainObjective::Tweedie),
        "clean" => Ok(TrainObjective::Clean),
        _ => Err(format!(
            "expected ambient, supervised, tweedie or clean, got {s:?}"
        )),
    }
}

/// Default of `amri train --preset`.
const DEFAULT_PRESET: &str = "tiny";
/// Default of `amri train --lr`.
const DEFAULT_LR: f64 = 1e-3;
/// Default of `amri finetune --lr`.
const DEFAULT_FINETUNE_LR: f64 = 1e-4;

/// `amri train`.
pub fn run(a: Args) -> Result<()> {
    let c = &a.common;
    let preset = a.preset.clone().unwrap_or_else(|| DEFAULT_PRESET.into());
    let start = |set: &TrainingData, dev: &Device| -> Result<Trainer> {
        let mut dcfg = DenoiserConfig::complex_preset(&preset, SIGMA_DATA)
            .with_context(|| format!("--preset {preset}"))?;
        if let Some(f) = a.space_to_depth {
            if ![1, 2, 4, 8].contains(&f) {
                anyhow::bail!("--space-to-depth must be 1, 2, 4 or 8, got {f}");
            }
            dcfg.unet.space_to_depth = f;
        }
        if let Some(c) = a.base_channels {
            if c == 0 || c % dcfg.unet.groups != 0 || c > 1024 {
                anyhow::bail!(
                    "--base-channels must be a positive multiple of {} (≤ 1024), got {c}",
                    dcfg.unet.groups
                );
            }
            dcfg.unet.base_channels = c;
        }
        dcfg.unet
            .validate()
            .context("--space-to-depth / --base-channels")?;
        dcfg.precond.kind = a.precond.unwrap_or(match set.objective() {
            Objective::Supervised => PrecondKind::Edm,
            _ => PrecondKind::Ambient,
        });
        if let Some(kind) = a.network_input {
            if !kind.is_adjoint() && set.coils() < 2 {
                anyhow::bail!(
                    "--network-input {kind}: the SENSE input needs multi-coil k-space, and these training data have {} coil(s)",
                    set.coils()
                );
            }
            dcfg.input = kind;
        }
        Ok(Trainer::new(
            &dcfg,
            &train_config(c, a.lr.unwrap_or(DEFAULT_LR), Vec::new()),
            dev,
        )?)
    };
    let flags = ResumeFlags {
        preset: a.preset.clone(),
        lr: a.lr,
        precond: a.precond,
        network_input: a.network_input,
        space_to_depth: a.space_to_depth,
        base_channels: a.base_channels,
        ..resume_flags(c)
    };
    drive(c, Some(preset.as_str()), None, None, &start, flags)
}

/// `amri finetune`.
pub fn finetune(a: FinetuneArgs) -> Result<()> {
    let c = &a.common;
    let base_dir = resolve_checkpoint(&a.base)
        .with_context(|| format!("--base {}: not a checkpoint", a.base.display()))?;
    let base_card = read_card(&base_dir)
        .with_context(|| format!("--base {}: unreadable model card", base_dir.display()))?;
    check_base(&base_card, &base_dir)?;
    let plan = plan_adaptation(
        &base_card.denoiser.unet,
        &Adaptation {
            adapt: a.adapt.unwrap_or(Adapt::Full),
            rank: a.rank,
            alpha: a.alpha,
            train_layers: a.train_layers,
            freeze_down: a.freeze_down,
        },
    )?;
    let freeze = plan.freeze.clone();
    let base_ema = base_dir.join(EMA_FILE);
    let finetune = FinetuneRecord {
        base_sha256: sha256_file(&base_ema)
            .with_context(|| format!("--base: hashing {}", base_ema.display()))?,
        ..plan.record.clone()
    };
    let start = |_: &TrainingData, dev: &Device| -> Result<Trainer> {
        let mut cfg = train_config(c, a.lr.unwrap_or(DEFAULT_FINETUNE_LR), freeze.clone());
        cfg.lora = plan.lora;
        Ok(Trainer::from_base(&base_dir, &cfg, dev)?.0)
    };
    let adapt_given = a.adapt.is_some() || a.rank.is_some() || a.alpha.is_some();
    let flags = ResumeFlags {
        lr: a.lr,
        freeze: a.freeze_down.then(|| freeze.clone()),
        base: Some(base_dir.display().to_string()),
        adapt: adapt_given.then_some((plan.record.adapt, plan.lora)),
        train_layers: a.train_layers.map(|n| (n, freeze.clone())),
        ..resume_flags(c)
    };
    drive(
        c,
        base_card.preset.as_deref(),
        Some(base_dir.display().to_string()),
        Some(finetune),
        &start,
        flags,
    )
}

fn check_base(card: &ModelCard, dir: &Path) -> Result<()> {
    if card.format != "amri-diffusion/1" {
        bail!(
            "--base {}: model card format {:?} is not amri-diffusion/1",
            dir.display(),
            card.format
        );
    }
    if card.denoiser.image_channels != 2 {
        bail!(
            "--base {}: the model takes {} image channels; training here uses complex images (2)",
            dir.display(),
            card.denoiser.image_channels
        );
    }
    Ok(())
}

/// Says how many coil maps `cache` served and how many ESPIRiT computed (nothing for
/// single-coil data), and warns of its notes (damaged files replaced).
fn report_cache(cache: &MapsCache) {
    for note in cache.notes() {
        tracing::warn!("{note}");
    }
    let st = cache.stats();
    if st.hits + st.misses + st.corrupt > 0 {
        eprintln!(
            "coil maps: {} read from {}, {} computed by ESPIRiT ({} of them replacing damaged cache files)",
            st.hits,
            cache.dir().display(),
            st.misses + st.corrupt,
            st.corrupt
        );
    }
}

/// Default of `--batch`.
const DEFAULT_BATCH: usize = 8;
/// Default of `--warmup`.
const DEFAULT_WARMUP: usize = 100;
/// Default of `--ema`.
const DEFAULT_EMA: f64 = 0.999;

fn train_config(c: &Common, lr: f64, freeze: Vec<String>) -> TrainConfig {
    TrainConfig {
        lr,
        warmup_steps: c.warmup.unwrap_or(DEFAULT_WARMUP),
        ema_decay: c.ema.unwrap_or(DEFAULT_EMA),
        seed: c.seed.unwrap_or(0),
        freeze,
        hidden_weight: c.hidden_weight.unwrap_or(1.0),
        consistency_weight: c.consistency.unwrap_or(0.0),
        sigma: sigma_sampler(c),
        ..Default::default()
    }
}

/// The training noise-level distribution `--sigma-log-mean/--sigma-log-std` ask for (EDM's
/// defaults for the one not given).
fn sigma_sampler(c: &Common) -> SigmaSampler {
    let d = SigmaSampler::default();
    SigmaSampler {
        p_mean: c.sigma_log_mean.unwrap_or(d.p_mean),
        p_std: c.sigma_log_std.unwrap_or(d.p_std),
        mix: c.sigma_mix,
    }
}

/// The common flags a resumed run takes from its checkpoint instead.
fn resume_flags(c: &Common) -> ResumeFlags {
    ResumeFlags {
        warmup: c.warmup,
        ema: c.ema,
        seed: c.seed,
        consistency: c.consistency,
        hidden_weight: c.hidden_weight,
        sigma_log_mean: c.sigma_log_mean,
        sigma_log_std: c.sigma_log_std,
        sigma_mix: c.sigma_mix,
        ..Default::default()
    }
}

type Start<'a> = dyn Fn(&TrainingData, &Device) -> Result<Trainer> + 'a;

fn drive(
    c: &Common,
    preset: Option<&str>,
    base: Option<String>,
    finetune: Option<FinetuneRecord>,
    start: &Start,
    flags: ResumeFlags,
) -> Result<()> {
    if c.steps == 0 {
        bail!("--steps must be ≥ 1");
    }
    if c.batch == Some(0) {
        bail!("--batch must be ≥ 1");
    }
    if let Some(m) = c.max_minutes.filter(|m| !(m.is_finite() && *m > 0.0)) {
        bail!("--max-minutes must be a positive number of minutes, got {m}");
    }
    if c.checkpoint_every == 0 {
        bail!("--checkpoint-every must be ≥ 1");
    }
    if let Some(w) = c.consistency.filter(|w| !(w.is_finite() && *w >= 0.0)) {
        bail!("--consistency must be ≥ 0, got {w}");
    }
    if let Some(w) = c.hidden_weight.filter(|w| !(w.is_finite() && *w > 0.0)) {
        bail!("--hidden-weight must be > 0, got {w}");
    }
    if let Some(m) = c.sigma_log_mean.filter(|m| !precond::valid_log_mean(*m)) {
        bail!("--sigma-log-mean must be a finite ln σ in [−20, 20], got {m}");
    }
    if let Some(s) = c.sigma_log_std.filter(|s| !precond::valid_log_std(*s)) {
        bail!("--sigma-log-std must be in (0, 10], got {s}");
    }
    if let Some(d) = c.delta.filter(|d| !(0.0..=1.0).contains(d)) {
        bail!("--delta must be a fraction in [0, 1], got {d}");
    }
    check_run_folder(&c.out, c.resume)?;
    // the route: measured files (no protocol) or image volumes under --protocol
    let route = match read_training_inputs(&c.inputs)? {
        TrainingInputs::Measured(files) => {
            if let Some(p) = &c.protocol {
                bail!(
                    "--protocol {p}: the inputs are measured files, which carry their own masks; \
                     leave --protocol out (--delta and --further set the further corruption), or \
                     give image volumes for the simulation route"
                );
            }
            if c.orientations.is_some() || c.pixel_sizes.is_some() {
                bail!(
                    "--orientations and --pixel-sizes reslice and resample image volumes (the \
                     simulation route); measured files train at their own orientation and \
                     resolution (never resampled)"
                );
            }
            let how = Preparation {
                prewhiten: !c.no_prewhiten,
                virtual_coils: c.coils,
            };
            let files = files
                .into_iter()
                .map(|(f, k)| {
                    super::log_mask_note(&f, &k);
                    let name = f.display().to_string();
                    let inferred = k.attributes.get("mask_source").map(String::as_str)
                        == Some(amri_io::format::MASK_INFERRED);
                    if inferred && !c.infer_mask {
                        bail!(
                            "{name}: has no sampling mask; its non-zero samples imply one \
                                 ({:.1} % measured), but a training set's A must be known, not \
                                 guessed: add a `mask` array to the bundle ([slice, row, col] or \
                                 [row, col], 1 = measured; .cfl: `<name>_mask.cfl` beside it), \
                                 or pass --infer-mask to train with the mask its zeros define \
                                 (as BART's pics and amri recon do)",
                            100.0 * k.mean_sampled_fraction()
                        );
                    }
                    let k = prepare(&name, k, how)?;
                    if let Some(src) = k.attributes.get("prewhitened") {
                        tracing::info!("{name}: prewhitened with its {src}");
                    }
                    Ok(MeasuredFile::new(&name, k)?)
                })
                .collect::<std::result::Result<Vec<_>, _>>()
                .context("checking the measured training files")?;
            Route::Measured(files)
        }
        TrainingInputs::Volumes(v) => {
            let Some(p) = &c.protocol else {
                bail!(
                    "{} is an image volume: image volumes train on the simulation route and need \
                     --protocol (the acquisition that measures them); measured files (.npz with \
                     mask, .h5, .cfl with _mask) need none",
                    v.first()
                        .map(|f| f.0.display().to_string())
                        .unwrap_or_default()
                );
            };
            if c.coils.is_some() || c.no_prewhiten || c.infer_mask {
                bail!(
                    "--coils, --no-prewhiten and --infer-mask condition measured files; on the simulation route \
                     the protocol's `coils` sets the simulated coil count"
                );
            }
            if let Some(p) = c
                .pixel_sizes
                .iter()
                .flatten()
                .find(|p| !(p.is_finite() && **p > 0.0))
            {
                bail!("--pixel-sizes: {p} is not a positive number of millimetres");
            }
            if c.delta.is_some() || c.further.is_some() {
                bail!(
                    "--delta and --further are for measured files; on the simulation route they \
                     are the protocol's `delta` and `further` (write them in a protocol .toml)"
                );
            }
            Route::Simulated(Box::new(Protocol::resolve(p)?), v)
        }
    };
    let dev = super::device::current()?;
    // A resumed run's card fixes the data stream (batch, objective, Ã) and the optimisation
    // (seed, lr, warm-up, EMA, preset): read it before building the training set.
    let resumed = if c.resume {
        let (t, card) = Trainer::resume(&c.out, &dev)
            .with_context(|| format!("resuming from {}", c.out.display()))?;
        let info: TrainingRecord = card
            .record
            .clone()
            .context("the checkpoint's card has no amri training record")?;
        Some((t, card, info))
    } else {
        None
    };
    let objective = resumed
        .as_ref()
        .map(|r| r.2.objective)
        .or(c.objective)
        .unwrap_or(TrainObjective::Ambient);
    let seed = resumed
        .as_ref()
        .map(|r| r.1.train.seed)
        .or(c.seed)
        .unwrap_or(0);
    // the augmentation is part of the data stream: a resumed run keeps its own
    let augment = match &resumed {
        Some((_, _, info)) => Augmentation::on_resume(&info.augment, c.augment.as_ref())?,
        None => c.augment.unwrap_or_default(),
    };
    // the views of the simulation route: also part of the data stream
    let given_views = (c.orientations.is_some() || c.pixel_sizes.is_some()).then(|| Views {
        orientations: c.orientations.clone().unwrap_or_default(),
        pixel_mm: c.pixel_sizes.clone().unwrap_or_default(),
    });
    let views = match &resumed {
        Some((_, _, info)) => Views::on_resume(&info.views, given_views)?,
        None => given_views,
    };
    // the size multiple views are padded to: the network's
    let multiple = match &resumed {
        Some((_, card, _)) => card.denoiser.unet.size_multiple(),
        None => preset
            .and_then(|p| DenoiserConfig::complex_preset(p, SIGMA_DATA).ok())
            .map_or(1, |d| d.unet.size_multiple()),
    };
    // build the data (every input check happens here, before the first step)
    let (data, protocol_name, acquisition, measured) = match route {
        Route::Simulated(protocol, volumes) => {
            if c.noise_sigma.is_some() {
                bail!(
                    "--noise-sigma applies to measured files; on the simulation route the noise is the protocol's noise_level"
                );
            }
            let names = volumes
                .iter()
                .map(|(f, _)| f.display().to_string())
                .collect();
            let vols: Vec<_> = volumes.into_iter().map(|(_, v)| v).collect();
            let cache = MapsCache::new(c.out.join(maps_cache::RUN_DIR));
            let data = match &views {
                None => {
                    let set = TrainingSet::from_volumes_cached(
                        &vols,
                        &protocol.acquisition,
                        objective,
                        Some(&cache),
                    )
                    .context("building the training set")?;
                    TrainingData::single(set, names)
                }
                Some(views) => {
                    let mut all = Vec::new();
                    for (name, v) in names.iter().zip(&vols) {
                        all.extend(views_of(name, v, views, multiple)?);
                    }
                    let mut sets = Vec::new();
                    for ((r, cols), idx) in group_by_shape(&all) {
                        let group: Vec<_> = idx.iter().map(|&k| all[k].1.clone()).collect();
                        let set = TrainingSet::from_volumes_cached(
                            &group,
                            &protocol.acquisition,
                            objective,
                            Some(&cache),
                        )
                        .with_context(|| format!("building the {r}×{cols} training set"))?;
                        sets.push((set, idx.iter().map(|&k| all[k].0.clone()).collect()));
                    }
                    TrainingData::from_sets(sets)?
                }
            };
            report_cache(&cache);
            (data, protocol.name, protocol.acquisition, None)
        }
        Route::Measured(files) => {
            if !matches!(objective, TrainObjective::Ambient | TrainObjective::Tweedie) {
                bail!(
                    "--objective {objective:?}: measured files train with the ambient objective only, or tweedie given the data's noise level (supervised and clean need clean images); use image volumes with --protocol for those"
                );
            }
            if let Some(s) = c.noise_sigma {
                if objective != TrainObjective::Tweedie {
                    bail!("--noise-sigma is the noise level of --objective tweedie (got {objective:?})");
                }
                if !(s.is_finite() && s > 0.0) {
                    bail!("--noise-sigma must be > 0, got {s}");
                }
            }
            let run_acq = resumed.as_ref().map(|r| &r.2.acquisition);
            let further = FurtherParams {
                delta: c.delta.or(run_acq.map(|a| a.delta)).unwrap_or(0.1),
                mode: c.further.or(run_acq.map(|a| a.further)).unwrap_or_default(),
                seed,
            };
            // ESPIRiT maps of multi-coil scans are cached in the run folder: a resume or a
            // rerun into it reads them instead of recomputing (amri_diffusion::maps_cache)
            let cache = MapsCache::new(c.out.join(maps_cache::RUN_DIR));
            let data = if objective == TrainObjective::Tweedie {
                TrainingData::from_measured_noisy(&files, further, c.noise_sigma)
            } else {
                TrainingData::from_measured_cached(&files, further, Some(&cache))
            }
            .context("building the training set from measured files")?;
            report_cache(&cache);
            let acq = data.acquisition(further)?;
            let inputs: Vec<MeasuredInput> = files
                .iter()
                .map(|f| {
                    let (slices, coils, rows, cols) = f.dims();
                    MeasuredInput {
                        file: f.name.clone(),
                        slices,
                        coils,
                        matrix: [rows, cols],
                    }
                })
                .collect();
            (data, MEASURED_PROTOCOL.to_owned(), acq, Some(inputs))
        }
    };
    let data = data.with_augmentation(augment);
    if augment.transpose {
        for (r, cols, _) in data.shapes().into_iter().filter(|(r, c, _)| r != c) {
            tracing::warn!(
                "--augment transpose: the {r}×{cols} slices are not square and train without \
                 transposes (a transposed slice would leave its matrix size)"
            );
        }
    }
    if let Some((_, _, info)) = &resumed {
        if let Some(m) = resume_mismatch(
            info,
            &protocol_name,
            &acquisition,
            c.batch,
            c.objective,
            measured.as_deref(),
        ) {
            return Err(m.into());
        }
    }
    if c.consistency.is_some_and(|w| w > 0.0) && objective != TrainObjective::Tweedie {
        bail!(
            "--consistency is the noisy-data loss below σ_n: it needs --objective tweedie (got \
             {objective:?})"
        );
    }
    let batch_size = resumed
        .as_ref()
        .map(|r| r.2.batch)
        .or(c.batch)
        .unwrap_or(DEFAULT_BATCH);
    let (mut trainer, info, preset, mut log) = match resumed {
        Some((t, card, info)) => {
            for ignored in ignored_on_resume(&flags, &card, &info) {
                tracing::warn!("{ignored}");
            }
            let path = c.out.join(LOSS_CSV);
            let log = read_loss_log(&path, t.steps())
                .with_context(|| format!("reading {}", path.display()))?;
            (t, info, card.preset, log)
        }
        None => {
            let t = start(&data, &dev)?;
            let info = TrainingRecord {
                protocol: protocol_name.clone(),
                acquisition,
                batch: batch_size,
                objective,
                slices: data.len(),
                base,
                measured,
                augment,
                views: views.clone(),
                finetune: finetune.map(|f| FinetuneRecord {
                    trained_parameters: t.trained_parameters(),
                    ..f
                }),
                matrices: Some(data.shapes().iter().map(|(r, c, _)| [*r, *c]).collect()),
            };
            (t, info, preset.map(str::to_owned), Vec::new())
        }
    };
    // every matrix size must suit the network, before the first step
    data.check_size_multiple(trainer.denoiser_config().unet.size_multiple())
        .context("checking the training matrix sizes against the network")?;
    // ... and its attention maps must fit in memory, rather than the run being killed for it
    if let Some(available) = available_memory() {
        data.check_attention_memory(&trainer.denoiser_config().unet, batch_size, available)
            .context("checking the network's memory at the training matrix sizes")?;
    }
    // the data order follows the run's own seed (the card's), never a flag given on resume
    debug_assert_eq!(seed, trainer.config().seed);
    std::fs::create_dir_all(&c.out).with_context(|| format!("creating {}", c.out.display()))?;
    let first = trainer.steps();
    if first >= c.steps {
        eprintln!(
            "{} already at step {first} ≥ --steps {}; nothing to do",
            c.out.display(),
            c.steps
        );
        return Ok(());
    }
    let sizes = data
        .shapes()
        .iter()
        .map(|(r, c, n)| format!("{n} of {r}×{c}"))
        .collect::<Vec<_>>()
        .join(", ");
    let updated = if trainer.trained_parameters() == trainer.num_parameters() {
        String::new()
    } else {
        format!(" ({} updated)", trainer.trained_parameters())
    };
    eprintln!(
        "training {} parameters{updated} on {} slices ({sizes}; {:?}, {}{}), steps {first}..{}",
        trainer.num_parameters(),
        data.len(),
        data.objective(),
        if info.measured.is_some() {
            "measured files".to_owned()
        } else {
            format!("protocol {protocol_name}")
        },
        if augment.is_off() {
            String::new()
        } else {
            format!(", augment {}", augment.describe())
        },
        c.steps
    );
    let bar = if c.no_progress {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(c.steps as u64)
    };
    bar.set_style(
        ProgressStyle::with_template(
            "{prefix:>8} [{bar:30}] {pos}/{len} steps {per_sec} {elapsed_precise} eta {eta} {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_prefix("train");
    bar.set_position(first as u64);
    let limit = c.max_minutes;
    let t0 = Instant::now();
    let offset = log.last().map(|r| r.seconds).unwrap_or(0.0);
    let save = |trainer: &Trainer, log: &[LogRow]| -> Result<()> {
        let card = trainer.card(data.objective(), preset.as_deref(), Some(info.clone()))?;
        // the log first: a kill between the two leaves rows past the checkpoint, which a
        // resume drops, never a checkpoint whose rows are missing from the log
        write_log(&c.out.join(LOSS_CSV), log)?;
        plot_loss(&c.out.join(LOSS_PNG), log)?;
        save_run_checkpoint(trainer, &c.out, &card)?;
        Ok(())
    };
    for step in first..c.steps {
        let batch = data.step_batch(batch_size, seed, step as u64, &dev)?;
        // off the CPU, compare the device's gradient with the CPU's at the first step and again
        // once the zero-initialised output layer no longer hides the inner layers' gradients
        if !dev.is_cpu() && (step == first || step == first + GRADIENT_RECHECK) {
            let err = trainer
                .check_gradients_against_cpu(&batch, GRADIENT_TOLERANCE)
                .with_context(|| format!("checking the {dev:?} gradients at step {step}"))?;
            tracing::info!(
                "step {step}: {dev:?} gradient matches the CPU's (relative error {err:.1e})"
            );
        }
        let s: StepStats = trainer
            .step(&batch)
            .with_context(|| format!("step {step}"))?;
        log.push(LogRow {
            step: s.step,
            loss: s.loss,
            lr: s.lr,
            grad_norm: s.grad_norm,
            seconds: offset + t0.elapsed().as_secs_f64(),
        });
        bar.set_message(format!("loss {:.4}", s.loss));
        bar.inc(1);
        let done = step + 1;
        let out_of_time = limit.is_some_and(|m| t0.elapsed().as_secs_f64() >= 60.0 * m);
        if done % c.checkpoint_every == 0 || done == c.steps || out_of_time {
            save(&trainer, &log)?;
        }
        if out_of_time && done < c.steps {
            bar.finish_and_clear();
            eprintln!(
                "--max-minutes {}: stopped at step {done} of {}; continue with --resume",
                limit.unwrap_or_default(),
                c.steps
            );
            break;
        }
    }
    bar.finish_and_clear();
    let last = log.last().map(|r| r.loss).unwrap_or(f32::NAN);
    println!(
        "trained to step {} (final loss {last:.4}); checkpoint {}",
        trainer.steps(),
        c.out.join(LATEST_FILE).display()
    );
    Ok(())
}

/// Memory this process may use, in bytes: `AMRI_MEMORY_LIMIT` (bytes) when set, else Linux's
/// `MemAvailable`; `None` where neither is known (the check is then skipped).
fn available_memory() -> Option<u64> {
    if let Ok(v) = std::env::var("AMRI_MEMORY_LIMIT") {
        return v.trim().parse().ok();
    }
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// The `protocol` a measured run's training record names.
const MEASURED_PROTOCOL: &str = "measured";

/// Where the training data come from.
enum Route {
    /// Image volumes under a protocol.
    Simulated(Box<Protocol>, Vec<(PathBuf, amri_core::Volume<f32>)>),
    /// Measured files, checked.
    Measured(Vec<MeasuredFile>),
}

fn write_log(path: &Path, rows: &[LogRow]) -> Result<()> {
    amri_io::atomic::write_bytes(path, format_loss_log(rows).as_bytes())
        .with_context(|| format!("writing {}", path.display()))
}

/// The loss curve `loss.png`: log10(loss) against step ([`amri_figures::plot`]).
fn plot_loss(path: &Path, rows: &[LogRow]) -> Result<()> {
    let points: Vec<(f64, f64)> = rows
        .iter()
        .map(|r| (r.step as f64, f64::from(r.loss)))
        .collect();
    amri_figures::plot::write_log_line_plot(path, &points)
        .with_context(|| format!("writing {}", path.display()))
}

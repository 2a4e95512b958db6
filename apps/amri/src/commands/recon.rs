//! `amri recon`: reconstruct measured data, one file or a whole study, with any method.
//!
//! Plan: expand inputs (files, folders walked recursively, glob patterns) → keep this shard's
//! share → skip files whose outputs are complete (unless `--force`) → reconstruct in parallel
//! (`--jobs`) with progress bars → write each image atomically with a JSON provenance sidecar →
//! print (and optionally save) a per-file summary. The exit status is 1 if any file failed.
//!
//! The learned-prior methods (`one-step`, `iterative`) load the model once (`--model`, a
//! checkpoint or run folder) and reconstruct each slice with `amri_diffusion::sample`; the
//! intensity scale is computed per file from the measured data of all its slices, and the
//! model's SHA-256 goes into every sidecar. `iterative` also writes `<output>_std` (per-pixel
//! standard deviation of the posterior samples, same format).

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use amri_core::{KSpace, Volume, C32};
use amri_diffusion::sample::{
    measured_scale, one_step, posterior, OneStepConfig, PosteriorConfig, Prior, Problem,
};
use amri_io::{Scan, WriteOptions};
use amri_protocol::{Method, Protocol, Reconstruction as ReconSettings};
use amri_recon::alg::IterInfo;
use amri_recon::app::{self, CgSenseConfig, L1WaveletConfig, TvConfig};
use anyhow::{anyhow, bail, Context, Result};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use ndarray::{Array2, Array3, Axis};
use serde::Serialize;

use crate::batch::{self, Job, Shard};

/// Arguments of `amri recon`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Measured-data inputs (`.npz`, fastMRI `.h5`, `.cfl`, complex `.npy`; folders are walked
    /// recursively; quoted glob patterns are expanded), then the output: a file (`.nii.gz`,
    /// `.nii`, `.npy`, `.cfl`) for one input, or a folder that mirrors the input tree.
    #[arg(required = true, num_args = 2.., value_name = "PATH")]
    pub paths: Vec<PathBuf>,
    /// Protocol (preset name or .toml file) whose `[reconstruction]` section gives the method
    /// and its parameters; flags below override it.
    #[arg(long, short)]
    pub protocol: Option<String>,
    /// Method: zero-filled, cg-sense, l1-wavelet, tv, or with a learned prior (--model):
    /// one-step, iterative.
    #[arg(long, short)]
    pub method: Option<Method>,
    /// Learned prior for one-step / iterative: a checkpoint folder or a training run folder
    /// (its `latest` checkpoint).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Iterative: sampler noise levels (network calls per sample).
    #[arg(long)]
    pub steps: Option<usize>,
    /// Iterative: posterior samples per scan (their mean is the reconstruction, their per-pixel
    /// standard deviation goes to `<output>_std`).
    #[arg(long)]
    pub samples: Option<usize>,
    /// Iterative: likelihood step size ζ in (0, 1].
    #[arg(long)]
    pub zeta: Option<f64>,
    /// One-step: replace the measured samples by the measured data after the network call.
    #[arg(long)]
    pub data_consistency: bool,
    /// One-step: noise level σ given to the network (normalised units, default 0.05; as σ → 0
    /// the output tends to the zero-filled input).
    #[arg(long)]
    pub sigma: Option<f64>,
    /// Regularisation weight λ (BART `pics -r` scaling; Tikhonov weight for cg-sense).
    #[arg(long)]
    pub lambda: Option<f32>,
    /// Iterations.
    #[arg(long)]
    pub iters: Option<usize>,
    /// Stop when the relative change falls below this (0: run all iterations).
    #[arg(long)]
    pub tol: Option<f32>,
    /// Seed (wavelet cycle-spinning shifts; sampler noise of `iterative`).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Fully sampled reference image to report PSNR/SSIM/NMSE against (single input only; by
    /// default the reference stored with the data, if any, is used).
    #[arg(long)]
    pub reference: Option<PathBuf>,
    /// Output format in folder mode: nii.gz, nii, npy, cfl.
    #[arg(long, default_value = "nii.gz")]
    pub format: String,
    /// Files reconstructed at the same time.
    #[arg(long, short, default_value_t = 1)]
    pub jobs: usize,
    /// Process only share K of N of the sorted file list (`K/N`, K from 0); defaults to
    /// `SLURM_ARRAY_TASK_ID`/`SLURM_ARRAY_TASK_COUNT` when those are set.
    #[arg(long)]
    pub shard: Option<Shard>,
    /// Reconstruct again even when a complete output exists.
    #[arg(long)]
    pub force: bool,
    /// Also write the summary to this `.json` or `.csv` file.
    #[arg(long)]
    pub summary: Option<PathBuf>,
    /// Print the summary as JSON on standard output (progress bars stay on standard error).
    #[arg(long)]
    pub json: bool,
    /// Hide progress bars.
    #[arg(long)]
    pub no_progress: bool,
}

/// What was done with one input.
#[derive(Clone, Debug, Serialize)]
pub struct FileReport {
    /// Input file.
    pub input: String,
    /// Output image file.
    pub output: String,
    /// `ok`, `skipped` (complete output exists) or `failed`.
    pub status: String,
    /// Error message when failed.
    pub error: Option<String>,
    /// Wall time in seconds.
    pub seconds: f64,
    /// PSNR (dB) against the reference, when there is one.
    pub psnr: Option<f64>,
    /// SSIM against the reference.
    pub ssim: Option<f64>,
    /// NMSE against the reference.
    pub nmse: Option<f64>,
}

/// Method and parameters after merging protocol and flags.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Settings {
    /// Protocol name, if one was given.
    pub protocol: Option<String>,
    /// Method name.
    pub method: Method,
    /// λ, when the method has one.
    pub lambda: Option<f32>,
    /// Iterations, when the method iterates.
    pub iterations: Option<usize>,
    /// Tolerance.
    pub tol: Option<f32>,
    /// Seed.
    pub seed: u64,
    /// Learned prior (one-step, iterative): the folder given.
    pub model: Option<PathBuf>,
    /// SHA-256 of the prior's weights file (provenance).
    pub model_sha256: Option<String>,
    /// Checkpoint folder the weights came from.
    pub model_checkpoint: Option<String>,
    /// Sampler steps (iterative).
    pub steps: Option<usize>,
    /// Posterior samples (iterative).
    pub samples: Option<usize>,
    /// Likelihood step size ζ (iterative).
    pub zeta: Option<f64>,
    /// Hard data consistency (one-step).
    pub data_consistency: Option<bool>,
    /// Noise level given to the network (one-step).
    pub sigma: Option<f64>,
}

impl Settings {
    fn from_args(a: &Args) -> Result<Settings> {
        let (protocol, base) = match &a.protocol {
            Some(p) => {
                let p = Protocol::resolve(p)?;
                let r = p.reconstruction.clone();
                (Some(p.name), r)
            }
            None => (None, None),
        };
        let base = base.unwrap_or(ReconSettings::new(Method::ZeroFilled));
        let method = match (a.method, protocol.is_some()) {
            (Some(m), _) => m,
            (None, true) => base.method,
            (None, false) => {
                bail!("give --method (zero-filled, cg-sense, l1-wavelet, tv, one-step, iterative) or --protocol")
            }
        };
        if let Some(l) = a.lambda {
            if !(l.is_finite() && l >= 0.0) {
                bail!("--lambda must be a number ≥ 0, got {l}");
            }
        }
        if a.iters == Some(0) {
            bail!("--iters must be ≥ 1");
        }
        if a.steps == Some(0) {
            bail!("--steps must be ≥ 1");
        }
        if a.samples == Some(0) {
            bail!("--samples must be ≥ 1");
        }
        if let Some(v) = a.sigma {
            if !(v.is_finite() && v > 0.0) {
                bail!("--sigma must be > 0, got {v}");
            }
        }
        if let Some(z) = a.zeta {
            if !(z > 0.0 && z <= 1.0) {
                bail!("--zeta must be in (0, 1], got {z}");
            }
        }
        // Prior options with a classical method are a mistake worth reporting.
        let base_is_prior = base.method == method;
        if !method.is_prior() {
            let given = [
                ("--model", a.model.is_some()),
                ("--steps", a.steps.is_some()),
                ("--samples", a.samples.is_some()),
                ("--zeta", a.zeta.is_some()),
                ("--data-consistency", a.data_consistency),
                ("--sigma", a.sigma.is_some()),
            ];
            if let Some((flag, _)) = given.iter().find(|(_, g)| *g) {
                bail!(
                    "{flag} applies to the learned-prior methods (one-step, iterative), not {}",
                    method.name()
                );
            }
        }
        fn pick<T>(use_base: bool, flag: Option<T>, proto: Option<T>) -> Option<T> {
            if use_base {
                flag.or(proto)
            } else {
                flag
            }
        }
        let model = pick(base_is_prior, a.model.clone(), base.model.clone());
        if method.is_prior() && model.is_none() {
            bail!(
                "--method {} needs --model (a checkpoint folder or a training run folder)",
                method.name()
            );
        }
        Ok(Settings {
            protocol,
            method,
            lambda: a.lambda.or(base.lambda),
            iterations: a.iters.or(base.iterations),
            tol: a.tol.or(base.tol),
            seed: a.seed.or(base.seed).unwrap_or(0),
            model,
            model_sha256: None,
            model_checkpoint: None,
            steps: pick(base_is_prior, a.steps, base.steps),
            samples: pick(base_is_prior, a.samples, base.samples),
            zeta: pick(base_is_prior, a.zeta, base.zeta),
            data_consistency: pick(
                base_is_prior,
                a.data_consistency.then_some(true),
                base.data_consistency,
            ),
            sigma: a.sigma,
        })
    }

    /// The posterior sampler's settings (iterative).
    fn posterior_config(&self) -> PosteriorConfig {
        let d = PosteriorConfig::default();
        PosteriorConfig {
            steps: self.steps.unwrap_or(d.steps),
            samples: self.samples.unwrap_or(d.samples),
            zeta: self.zeta.unwrap_or(d.zeta),
            seed: self.seed,
            ..d
        }
    }

    fn iterations_or_default(&self) -> usize {
        self.iterations.unwrap_or(match self.method {
            Method::ZeroFilled => 1,
            Method::CgSense => CgSenseConfig::default().iterations,
            Method::L1Wavelet => L1WaveletConfig::default().iterations,
            Method::Tv => TvConfig::default().iterations,
            Method::OneStep => 1,
            Method::Iterative => self.posterior_config().steps,
        })
    }
}

/// Reconstructs `ks` with `s`, reporting each solver iteration to `progress`.
pub fn reconstruct(
    ks: &KSpace,
    s: &Settings,
    progress: &(dyn Fn(usize, &IterInfo) -> ControlFlow<()> + Sync),
) -> Result<Array3<f32>> {
    // Image-domain (pixel/box) data are inpainted by the same methods with A = M, and random
    // projections refused, by amri-recon (`app::data_domain`).
    let tol = s.tol.map(f64::from);
    let img = match s.method {
        Method::OneStep | Method::Iterative => {
            bail!(
                "{} needs a learned prior: use reconstruct_prior",
                s.method.name()
            )
        }
        Method::ZeroFilled => return Ok(app::zero_filled(ks)?),
        Method::CgSense => {
            let mut c = CgSenseConfig::default();
            c.lambda = s.lambda.unwrap_or(c.lambda);
            c.iterations = s.iterations.unwrap_or(c.iterations);
            c.tol = tol.unwrap_or(c.tol);
            app::cg_sense_with(ks, None, &c, progress)?
        }
        Method::L1Wavelet => {
            let mut c = L1WaveletConfig::default();
            c.lambda = s.lambda.unwrap_or(c.lambda);
            c.iterations = s.iterations.unwrap_or(c.iterations);
            c.tol = tol.unwrap_or(c.tol);
            c.seed = s.seed;
            app::l1_wavelet_with(ks, None, &c, progress)?
        }
        Method::Tv => {
            let mut c = TvConfig::default();
            c.lambda = s.lambda.unwrap_or(c.lambda);
            c.iterations = s.iterations.unwrap_or(c.iterations);
            c.tol = tol.unwrap_or(c.tol);
            app::tv_recon_with(ks, None, &c, progress)?
        }
    };
    Ok(img.magnitude())
}

/// A learned-prior reconstruction: magnitude images `[slice, row, col]` and, for `iterative`,
/// the per-pixel standard deviation of the posterior samples.
pub struct PriorRecon {
    /// Magnitude of the reconstruction (one-step output, or the posterior mean).
    pub image: Array3<f32>,
    /// Per-pixel standard deviation (iterative only).
    pub std: Option<Array3<f32>>,
}

/// The 2-D problems of every slice of `ks` ([`Problem::from_kspace`]).
pub fn problems(ks: &KSpace) -> Result<Vec<Problem>> {
    Ok(Problem::from_kspace(ks)?)
}

/// Reconstructs every slice of `ks` with the learned prior: one scale for the whole file
/// ([`measured_scale`] of all slices), `progress` called once per network step.
pub fn reconstruct_prior(
    ks: &KSpace,
    s: &Settings,
    prior: &Prior,
    progress: &(dyn Fn() + Sync),
) -> Result<PriorRecon> {
    let probs = problems(ks)?;
    let scale = measured_scale(&probs).context("intensity scale of the measured data")?;
    let [slices, _, rows, cols] = ks.shape4();
    let mut image = Array3::<f32>::zeros((slices, rows, cols));
    let mag = |x: &Array2<C32>| x.mapv(|v| v.norm());
    match s.method {
        Method::OneStep => {
            let cfg = OneStepConfig {
                data_consistency: s.data_consistency.unwrap_or(false),
                scale: Some(scale),
                sigma: s.sigma.unwrap_or(OneStepConfig::default().sigma),
            };
            for (k, p) in probs.iter().enumerate() {
                let x = one_step(prior, p, &cfg).with_context(|| format!("slice {k}"))?;
                image.index_axis_mut(Axis(0), k).assign(&mag(&x));
                progress();
            }
            Ok(PriorRecon { image, std: None })
        }
        Method::Iterative => {
            // amri simulate stores σ per complex sample; the sampler takes it per component.
            let noise = ks
                .attributes
                .get("noise_sigma")
                .and_then(|v| v.parse::<f64>().ok())
                .filter(|v| v.is_finite() && *v >= 0.0)
                .unwrap_or(0.0)
                / std::f64::consts::SQRT_2;
            let cfg = PosteriorConfig {
                noise_sigma: noise,
                scale: Some(scale),
                ..s.posterior_config()
            };
            let mut std = Array3::<f32>::zeros((slices, rows, cols));
            let never = AtomicBool::new(false);
            for (k, p) in probs.iter().enumerate() {
                let slice_cfg = PosteriorConfig {
                    seed: amri_diffusion::seed::derive_seed(cfg.seed, k as u64, 0x511CE),
                    ..cfg.clone()
                };
                let r = posterior(prior, p, &slice_cfg, &|_, _| progress(), &never)
                    .with_context(|| format!("slice {k}"))?;
                image.index_axis_mut(Axis(0), k).assign(&mag(&r.mean));
                std.index_axis_mut(Axis(0), k).assign(&r.std);
            }
            Ok(PriorRecon {
                image,
                std: Some(std),
            })
        }
        m => bail!("{} is not a learned-prior method", m.name()),
    }
}

/// `<stem>_std<ext>` beside `output` (the uncertainty map of `iterative`).
pub fn std_path(output: &Path) -> PathBuf {
    let name = output
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    for e in [".nii.gz", ".nii", ".npy", ".cfl"] {
        if let Some(stem) = name.strip_suffix(e) {
            return output.with_file_name(format!("{stem}_std{e}"));
        }
    }
    output.with_file_name(format!("{name}_std"))
}

fn read_kspace(path: &Path) -> Result<KSpace> {
    match amri_io::read(path)? {
        Scan::KSpace(k) => Ok(k),
        Scan::Image(_) | Scan::ComplexImage(_) => Err(anyhow!(
            "{}: holds an image, not measured data (make measured data with amri simulate)",
            path.display()
        )),
    }
}

fn read_reference(path: &Path) -> Result<Array3<f32>> {
    let v: Volume<f32> = match amri_io::read(path)? {
        Scan::Image(v) => v,
        Scan::ComplexImage(v) => v.with_data(v.data.mapv(|c| c.norm()))?,
        Scan::KSpace(k) => {
            return k
                .reference
                .ok_or_else(|| anyhow!("{}: k-space without a reference image", path.display()))
        }
    };
    Ok(v.data.index_axis(Axis(0), 0).to_owned())
}

/// Runs `amri recon`.
pub fn run(args: Args) -> Result<()> {
    let mut settings = Settings::from_args(&args)?;
    let prior = match (&settings.model, settings.method.is_prior()) {
        (Some(m), true) => {
            let p = Prior::load(m, &super::device::current()?)
                .with_context(|| format!("--model {}: cannot load the prior", m.display()))?;
            settings.model_sha256 = Some(p.sha256().to_owned());
            settings.model_checkpoint = Some(p.checkpoint_dir().display().to_string());
            Some(p)
        }
        _ => None,
    };
    let (inputs, output) = args.paths.split_at(args.paths.len() - 1);
    let output = &output[0];
    for i in inputs {
        super::convert::refuse_same_path(i, output)?;
    }
    let ext = batch::OutputExt::parse(&args.format)?;
    let mut jobs = batch::plan(inputs, output, ext)?;
    if args.reference.is_some() && jobs.len() != 1 {
        bail!("--reference applies to a single input; batch inputs use the reference stored with each file");
    }
    let shard = match args.shard {
        Some(s) => Some(s),
        None => Shard::from_slurm_env()?,
    };
    let total = jobs.len();
    if let Some(sh) = shard {
        jobs = sh.select(jobs);
        tracing::info!(
            "shard {}/{}: {} of {total} files",
            sh.index,
            sh.count,
            jobs.len()
        );
    }
    if jobs.is_empty() {
        bail!("no measured-data files to reconstruct (looked for .npz, .h5, .cfl, .npy)");
    }
    let reference = match &args.reference {
        Some(r) => Some(read_reference(r)?),
        None => None,
    };

    let mp = MultiProgress::new();
    if args.no_progress {
        mp.set_draw_target(ProgressDrawTarget::hidden());
    }
    let files_bar = mp.add(ProgressBar::new(jobs.len() as u64));
    files_bar.set_style(
        ProgressStyle::with_template(
            "{prefix:>8} [{bar:30}] {pos}/{len} files {elapsed_precise} eta {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    files_bar.set_prefix("recon");
    let jobs_n = args.jobs.max(1).min(jobs.len());
    let next = AtomicUsize::new(0);
    let reports: Mutex<Vec<(usize, FileReport)>> = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..jobs_n {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some(job) = jobs.get(i) else { break };
                let report = run_one(
                    job,
                    &settings,
                    &args,
                    reference.as_ref(),
                    prior.as_ref(),
                    &mp,
                );
                files_bar.inc(1);
                match &report.status[..] {
                    "failed" => tracing::error!("{}", report.error.clone().unwrap_or_default()),
                    s => tracing::info!("{}: {s} in {:.1} s", report.input, report.seconds),
                }
                if let Ok(mut r) = reports.lock() {
                    r.push((i, report));
                }
            });
        }
    });
    files_bar.finish_and_clear();
    let mut reports = reports
        .into_inner()
        .map_err(|_| anyhow!("a worker thread panicked"))?;
    reports.sort_by_key(|(i, _)| *i);
    let reports: Vec<FileReport> = reports.into_iter().map(|(_, r)| r).collect();
    let failed = reports.iter().filter(|r| r.status == "failed").count();
    if let Some(p) = &args.summary {
        batch::write_summary(
            p,
            &reports,
            &[
                "input", "output", "status", "seconds", "psnr", "ssim", "nmse", "error",
            ],
        )?;
    }
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "settings": settings,
                "files": reports,
                "failed": failed,
            }))?
        );
    } else {
        print_table(&reports, &settings);
    }
    if failed > 0 {
        bail!("{failed} of {} files failed", reports.len());
    }
    Ok(())
}

fn print_table(reports: &[FileReport], s: &Settings) {
    println!(
        "method {}{}",
        s.method.name(),
        s.protocol
            .as_ref()
            .map(|p| format!(" (protocol {p})"))
            .unwrap_or_default()
    );
    println!(
        "{:<8} {:>8} {:>9} {:>7} {:>9}  file",
        "status", "time s", "PSNR dB", "SSIM", "NMSE"
    );
    let opt = |v: Option<f64>, prec: usize| {
        v.map(|x| format!("{x:.prec$}"))
            .unwrap_or_else(|| "-".into())
    };
    for r in reports {
        println!(
            "{:<8} {:>8.2} {:>9} {:>7} {:>9}  {}{}",
            r.status,
            r.seconds,
            opt(r.psnr, 2),
            opt(r.ssim, 4),
            opt(r.nmse, 5),
            r.output,
            r.error
                .as_ref()
                .map(|e| format!("  ({e})"))
                .unwrap_or_default()
        );
    }
}

fn run_one(
    job: &Job,
    settings: &Settings,
    args: &Args,
    reference: Option<&Array3<f32>>,
    prior: Option<&Prior>,
    mp: &MultiProgress,
) -> FileReport {
    let start = Instant::now();
    let mut report = FileReport {
        input: job.input.display().to_string(),
        output: job.output.display().to_string(),
        status: "ok".into(),
        error: None,
        seconds: 0.0,
        psnr: None,
        ssim: None,
        nmse: None,
    };
    if !args.force && batch::is_complete(job) {
        report.status = "skipped".into();
        return report;
    }
    // Temporary files of a run that was killed mid-write: never complete, safe to remove.
    for p in [&job.output, &job.sidecar] {
        let n = amri_io::atomic::remove_stale_parts(p);
        if n > 0 {
            tracing::info!(
                "removed {n} temporary file(s) of an interrupted write of {}",
                p.display()
            );
        }
    }
    match recon_file(job, settings, reference, prior, mp) {
        Ok(m) => {
            if let Some(m) = m {
                report.psnr = Some(m.psnr);
                report.ssim = Some(m.ssim);
                report.nmse = Some(m.nmse);
            }
        }
        Err(e) => {
            report.status = "failed".into();
            report.error = Some(format!("{e:#}"));
        }
    }
    report.seconds = start.elapsed().as_secs_f64();
    if report.status == "ok" {
        if let Err(e) = batch::write_sidecar(job, settings, &report) {
            report.status = "failed".into();
            report.error = Some(format!("{e:#}"));
        }
    }
    report
}

fn recon_file(
    job: &Job,
    s: &Settings,
    reference: Option<&Array3<f32>>,
    prior: Option<&Prior>,
    mp: &MultiProgress,
) -> Result<Option<amri_core::metrics::Metrics>> {
    let ks = read_kspace(&job.input)?;
    ks.validate()
        .with_context(|| format!("{}", job.input.display()))?;
    let [slices, ..] = ks.shape4();
    // TV's ADMM reports once per outer iteration while `--iters` counts inner CG steps (as
    // BART's `pics -i` does), so its bar counts without a total.
    let bar = if s.method == Method::Tv {
        let b = mp.add(ProgressBar::no_length());
        b.set_style(
            ProgressStyle::with_template("{prefix:>8} {spinner} {pos} outer iterations {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        b
    } else {
        let b = mp.add(ProgressBar::new(
            (slices * s.iterations_or_default()) as u64,
        ));
        b.set_style(
            ProgressStyle::with_template("{prefix:>8} [{bar:30}] {pos}/{len} iterations {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        b
    };
    bar.set_prefix(s.method.name());
    bar.set_message(
        job.input
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
    );
    let progress = |_slice: usize, _info: &IterInfo| {
        bar.inc(1);
        ControlFlow::Continue(())
    };
    let (img, std) = match (s.method.is_prior(), prior) {
        (false, _) => (reconstruct(&ks, s, &progress), None),
        (true, Some(p)) => match reconstruct_prior(&ks, s, p, &|| bar.inc(1)) {
            Ok(r) => (Ok(r.image), r.std),
            Err(e) => (Err(e), None),
        },
        (true, None) => (Err(anyhow!("{} needs --model", s.method.name())), None),
    };
    bar.finish_and_clear();
    mp.remove(&bar);
    let img = img.with_context(|| format!("{}", job.input.display()))?;
    let metrics = match reference.or(ks.reference.as_ref()) {
        Some(r) if r.shape() == img.shape() => Some(
            amri_core::metrics::evaluate_volume(r.view(), img.view()).with_context(|| {
                format!("{}: metrics against the reference", job.input.display())
            })?,
        ),
        Some(r) => bail!(
            "reference {:?} does not match the reconstruction {:?}",
            r.shape(),
            img.shape()
        ),
        None => None,
    };
    let description = format!(
        "amri {} {}{}{}",
        env!("CARGO_PKG_VERSION"),
        s.method.name(),
        s.protocol
            .as_ref()
            .map(|p| format!(" {p}"))
            .unwrap_or_default(),
        s.model_sha256
            .as_ref()
            .map(|h| format!(" model sha256:{}", &h[..h.len().min(16)]))
            .unwrap_or_default()
    );
    let volume = |img: Array3<f32>, what: &str| -> Result<Volume<f32>> {
        let (sl, r, c) = img.dim();
        let data = img
            .into_shape_with_order((1, sl, r, c))
            .map_err(|e| anyhow!("internal shape error: {e}"))?;
        let mut vol = Volume::new(data, ks.affine);
        vol.meta.description = format!("{description}{what}");
        Ok(vol)
    };
    if let Some(parent) = job.output.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    // The uncertainty map first: the image and then the sidecar mark a complete output.
    if let Some(sd) = std {
        let p = std_path(&job.output);
        amri_io::atomic::remove_stale_parts(&p);
        amri_io::write(
            &p,
            &Scan::Image(volume(sd, " posterior std")?),
            &WriteOptions::default(),
        )?;
    }
    amri_io::write(
        &job.output,
        &Scan::Image(volume(img, "")?),
        &WriteOptions::default(),
    )?;
    Ok(metrics)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn std_path_keeps_the_format_extension() {
        for (a, b) in [
            ("out/x.nii.gz", "out/x_std.nii.gz"),
            ("x.nii", "x_std.nii"),
            ("a/b.npy", "a/b_std.npy"),
            ("c.cfl", "c_std.cfl"),
            ("noext", "noext_std"),
        ] {
            assert_eq!(std_path(Path::new(a)), PathBuf::from(b));
        }
    }

    #[test]
    fn problems_follow_the_measurement_domain() -> Result<()> {
        let data = ndarray::Array4::from_elem((2, 3, 4, 5), C32::new(1.0, 0.0));
        let mut ks = KSpace::new(data);
        let ps = problems(&ks)?;
        assert_eq!(ps.len(), 2);
        assert!(
            matches!(&ps[0], Problem::Kspace { kspace, mask, maps: None }
            if kspace.dim() == (3, 4, 5) && mask.iter().all(|&m| m == 1.0))
        );
        ks.attributes.insert("domain".into(), "image".into());
        assert!(
            matches!(&problems(&ks)?[1], Problem::Pixels { image, .. } if image.dim() == (4, 5))
        );
        ks.attributes.insert("domain".into(), "projection".into());
        assert!(problems(&ks).is_err());
        Ok(())
    }
}

//! `amri recon`: reconstruct measured data, one file or a whole study, with any method.
//!
//! Plan: expand inputs (files, folders walked recursively, glob patterns) → keep this shard's
//! share → skip files whose outputs are complete and current, made from the same input with the
//! same settings (unless `--force`) → reconstruct in parallel
//! (`--jobs`) with progress bars → write each image atomically with a JSON provenance sidecar →
//! print (and optionally save) a per-file summary. The exit status is 1 if any file failed.
//!
//! The learned-prior methods (`one-step`, `iterative`) load the model once (`--model`, a
//! checkpoint or run folder) and reconstruct each slice with `amri_diffusion::sample`; the
//! intensity scale is computed per file from the measured data of all its slices, and the
//! model's SHA-256 goes into every sidecar. `iterative` also writes `<output>_std` (per-pixel
//! standard deviation of the posterior samples, same format).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use amri_core::{KSpace, Volume};
use amri_diffusion::sample::Prior;
use amri_io::{Scan, WriteOptions};
use amri_pipeline::{NoiseCovariance, Overrides, PipelineError, Plan};
use amri_protocol::{Method, Protocol};
use anyhow::{anyhow, bail, Context, Result};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use ndarray::{Array3, Axis};
use serde::Serialize;

use crate::batch::{self, Job, Shard};

/// Arguments of `amri recon`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Measured-data inputs (`.npz`, fastMRI or ISMRMRD `.h5`, `.cfl`, complex `.npy`; folders are walked
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
    /// (its `latest` checkpoint). Without it, each file gets the shipped prior that fits it
    /// (matrix, domain, mask family, closest acceleration; search order in docs/cli.md), or an
    /// error says why none does.
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
    /// One-step: noise level σ given to the network (normalised units, default 0.05, or the
    /// nearest σ the model was trained at when 0.05 lies outside its training noise levels; as
    /// σ → 0 the output tends to the zero-filled input).
    #[arg(long)]
    pub sigma: Option<f64>,
    /// One-step: average the network's estimate over the 8 flips and transposes of the slice
    /// (4 flips for a non-square slice), each mapped back; 8× the network calls. The default
    /// when the model was trained with flips and transposes (`--augment flip,transpose`).
    #[arg(long, conflicts_with = "no_average_flips")]
    pub average_flips: bool,
    /// One-step: one network call per slice, even for a model trained with flips and transposes.
    #[arg(long)]
    pub no_average_flips: bool,
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
    /// Compress to N virtual coils by SVD (as `bart cc -S -p N`) before coil maps are estimated;
    /// N ≥ the data's coils keeps them.
    #[arg(long, visible_alias = "virtual-coils", value_name = "N")]
    pub coils: Option<usize>,
    /// Coil noise covariance `[coil, coil]` (complex `.npy`, or `.cfl` such as `bart whiten`'s
    /// covariance output) to prewhiten with instead of the data's own noise samples.
    #[arg(long, value_name = "FILE")]
    pub noise_cov: Option<PathBuf>,
    /// Do not prewhiten, even when the data carry noise samples (prewhitening is on by default
    /// when they do).
    #[arg(long, conflicts_with = "noise_cov")]
    pub no_prewhiten: bool,
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
    /// Reconstruct again even when a complete output of the same input and settings exists.
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

/// The reconstruction plan of `a`: its protocol's `[reconstruction]` section with the flags
/// on top ([`Plan::new`]), errors named by flag.
pub fn plan_from_args(a: &Args) -> Result<Plan> {
    let protocol = match &a.protocol {
        Some(p) => Some(Protocol::resolve(p)?),
        None => None,
    };
    let overrides = Overrides {
        method: a.method,
        lambda: a.lambda,
        iterations: a.iters,
        tol: a.tol,
        seed: a.seed,
        model: a.model.clone(),
        steps: a.steps,
        samples: a.samples,
        zeta: a.zeta,
        data_consistency: a.data_consistency.then_some(true),
        sigma: a.sigma,
        average_flips: match (a.average_flips, a.no_average_flips) {
            (true, _) => Some(true),
            (_, true) => Some(false),
            _ => None,
        },
        coils: a.coils,
        prewhiten: a.no_prewhiten.then_some(false),
        noise_cov: match &a.noise_cov {
            Some(p) => Some(NoiseCovariance {
                source: p.display().to_string(),
                matrix: amri_io::read_noise_covariance(p)
                    .with_context(|| format!("--noise-cov {}", p.display()))?,
            }),
            None => None,
        },
    };
    Plan::new(protocol.as_ref(), &overrides).map_err(flag_error)
}

/// A plan error in the words of the command line: parameters by their flag names.
fn flag_error(e: PipelineError) -> anyhow::Error {
    let flag = |key: &str| match key {
        "iterations" => "--iters".to_owned(),
        k => format!("--{}", k.replace('_', "-")),
    };
    match e {
        PipelineError::NoMethod => anyhow!(
            "give --method (zero-filled, cg-sense, l1-wavelet, tv, one-step, iterative) or --protocol"
        ),
        PipelineError::Invalid {
            key,
            value,
            expected,
        } => anyhow!("{} must be {expected}, got {value}", flag(key)),
        PipelineError::NotForMethod {
            key,
            applies_to,
            method,
        } => anyhow!("{} applies to {applies_to}, not {method}", flag(key)),
        PipelineError::NeedsModel { method } => anyhow!(
            "--method {method} needs --model (a checkpoint folder or a training run folder)"
        ),
        PipelineError::Conflict { key, with } => anyhow!(
            "{} cannot be combined with {}",
            flag(key),
            if with == "prewhiten = false" {
                "--no-prewhiten"
            } else {
                with
            }
        ),
        PipelineError::NoiseCov {
            source_name,
            source,
        } => anyhow!("--noise-cov {source_name}: {source}"),
        PipelineError::LoadPrior { path, source } => {
            anyhow::Error::new(source).context(format!("--model {path}: cannot load the prior"))
        }
        e => e.into(),
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
    let mut plan = plan_from_args(&args)?;
    // A learned-prior method without a model picks one per file (`Picker`).
    let picker = if plan.method().is_prior() && plan.model().is_none() {
        Some(Picker::new(super::device::current()?))
    } else {
        if plan.method().is_prior() {
            plan.load_prior(&super::device::current()?)
                .map_err(flag_error)?;
        }
        None
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
                let report = run_one(job, &plan, picker.as_ref(), &args, reference.as_ref(), &mp);
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
                "settings": plan,
                "files": reports,
                "failed": failed,
            }))?
        );
    } else {
        print_table(&reports, &plan);
    }
    if failed > 0 {
        bail!("{failed} of {} files failed", reports.len());
    }
    Ok(())
}

fn print_table(reports: &[FileReport], plan: &Plan) {
    println!(
        "method {}{}",
        plan.method().name(),
        plan.protocol()
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

/// Chooses a shipped prior for each file when `--model` is not given
/// ([`amri_pipeline::autopick`]), loading each chosen prior once.
struct Picker {
    device: candle_core::Device,
    dirs: Vec<PathBuf>,
    loaded: Mutex<HashMap<PathBuf, Arc<Prior>>>,
}

impl Picker {
    fn new(device: candle_core::Device) -> Picker {
        let search = amri_pipeline::model_search_path();
        for (d, why) in &search {
            tracing::debug!("looking for priors in {} ({why})", d.display());
        }
        Picker {
            device,
            dirs: search.into_iter().map(|(d, _)| d).collect(),
            loaded: Mutex::new(HashMap::new()),
        }
    }

    /// `plan` with the prior that fits `ks` (read from `input`) attached, or why none does.
    fn plan_for(&self, plan: &Plan, input: &Path, ks: &KSpace) -> Result<Plan> {
        let data = amri_pipeline::DataSummary::of(ks);
        let pick = amri_pipeline::pick_prior(&data, plan.method(), &self.dirs)
            .map_err(|e| anyhow!("{}: no --model given and {e}", input.display()))?;
        tracing::info!("{}: {}", input.display(), pick.reason);
        let mut loaded = self
            .loaded
            .lock()
            .map_err(|_| anyhow!("a worker thread panicked"))?;
        let prior = match loaded.get(&pick.dir) {
            Some(p) => p.clone(),
            None => {
                // said once per prior, whatever the log level; each file's choice is logged above
                eprintln!("{}: {}", input.display(), pick.reason);
                let p =
                    Arc::new(Prior::load(&pick.dir, &self.device).with_context(|| {
                        format!("{}: cannot load the prior", pick.dir.display())
                    })?);
                loaded.insert(pick.dir.clone(), p.clone());
                p
            }
        };
        Ok(plan.clone().with_picked_prior(prior, &pick.dir))
    }
}

fn run_one(
    job: &Job,
    plan: &Plan,
    picker: Option<&Picker>,
    args: &Args,
    reference: Option<&Array3<f32>>,
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
    // Without --model the prior depends on the data: read them first, then check freshness
    // against the plan with the chosen prior.
    let mut read = None;
    let picked;
    let plan = match picker {
        None => plan,
        Some(p) => {
            let chosen = read_kspace(&job.input).and_then(|ks| {
                let pl = p.plan_for(plan, &job.input, &ks)?;
                read = Some(ks);
                Ok(pl)
            });
            match chosen {
                Ok(pl) => {
                    picked = pl;
                    &picked
                }
                Err(e) => {
                    report.status = "failed".into();
                    report.error = Some(format!("{e:#}"));
                    report.seconds = start.elapsed().as_secs_f64();
                    return report;
                }
            }
        }
    };
    if !args.force {
        match batch::freshness(job, plan) {
            batch::Freshness::Current => {
                report.status = "skipped".into();
                return report;
            }
            batch::Freshness::Stale(why) => {
                tracing::info!("{}: {why}; reconstructing it again", job.output.display())
            }
            batch::Freshness::Missing => {}
        }
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
    match recon_file(job, plan, read, reference, mp) {
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
        if let Err(e) = batch::write_sidecar(job, plan, &report) {
            report.status = "failed".into();
            report.error = Some(format!("{e:#}"));
        }
    }
    report
}

fn recon_file(
    job: &Job,
    plan: &Plan,
    read: Option<KSpace>,
    reference: Option<&Array3<f32>>,
    mp: &MultiProgress,
) -> Result<Option<amri_core::metrics::Metrics>> {
    let ks = match read {
        Some(ks) => ks,
        None => read_kspace(&job.input)?,
    };
    ks.validate()
        .with_context(|| format!("{}", job.input.display()))?;
    super::log_mask_note(&job.input, &ks);
    // Prewhitening and coil compression, reported here; `Plan::run` finds them done.
    let prepared = plan
        .prepare(&ks)
        .with_context(|| format!("{}", job.input.display()))?;
    for key in ["prewhitened", "coil_compression"] {
        if let (Some(v), None) = (prepared.attributes.get(key), ks.attributes.get(key)) {
            let what = if key == "prewhitened" {
                "prewhitened with the"
            } else {
                "coil compression:"
            };
            tracing::info!("{}: {what} {v}", job.input.display());
        }
    }
    let [slices, ..] = ks.shape4();
    // TV's ADMM reports once per outer iteration while `--iters` counts inner CG steps (as
    // BART's `pics -i` does), so its bar counts without a total.
    let method = plan.method();
    let bar = if method == Method::Tv {
        let b = mp.add(ProgressBar::no_length());
        b.set_style(
            ProgressStyle::with_template("{prefix:>8} {spinner} {pos} outer iterations {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        b
    } else {
        let b = mp.add(ProgressBar::new((slices * plan.ticks_per_slice()) as u64));
        b.set_style(
            ProgressStyle::with_template("{prefix:>8} [{bar:30}] {pos}/{len} iterations {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        b
    };
    bar.set_prefix(method.name());
    bar.set_message(
        job.input
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
    );
    let r = plan.run(&prepared, &|| bar.inc(1), &AtomicBool::new(false));
    bar.finish_and_clear();
    mp.remove(&bar);
    let r = r.with_context(|| format!("{}", job.input.display()))?;
    let (img, std) = (r.image, r.std);
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
        method.name(),
        plan.protocol().map(|p| format!(" {p}")).unwrap_or_default(),
        plan.model_sha256()
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
}

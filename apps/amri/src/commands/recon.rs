//! `amri recon`: reconstruct measured data, one file or a whole study, with any method.
//!
//! Plan: expand inputs (files, folders walked recursively, glob patterns) → keep this shard's
//! share → skip files whose outputs are complete (unless `--force`) → reconstruct in parallel
//! (`--jobs`) with progress bars → write each image atomically with a JSON provenance sidecar →
//! print (and optionally save) a per-file summary. The exit status is 1 if any file failed.

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use amri_core::{KSpace, Volume};
use amri_io::{Scan, WriteOptions};
use amri_protocol::{Method, Protocol, Reconstruction as ReconSettings};
use amri_recon::alg::IterInfo;
use amri_recon::app::{self, CgSenseConfig, L1WaveletConfig, TvConfig};
use anyhow::{anyhow, bail, Context, Result};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use ndarray::{Array3, Axis};
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
    /// Method: zero-filled, cg-sense, l1-wavelet, tv.
    #[arg(long, short)]
    pub method: Option<Method>,
    /// Regularisation weight λ (BART `pics -r` scaling; Tikhonov weight for cg-sense).
    #[arg(long)]
    pub lambda: Option<f32>,
    /// Iterations.
    #[arg(long)]
    pub iters: Option<usize>,
    /// Stop when the relative change falls below this (0: run all iterations).
    #[arg(long)]
    pub tol: Option<f32>,
    /// Seed (wavelet cycle-spinning shifts).
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
#[derive(Clone, Debug, Serialize)]
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
        let base = base.unwrap_or(ReconSettings {
            method: Method::ZeroFilled,
            lambda: None,
            iterations: None,
            tol: None,
            seed: None,
        });
        let method = match (a.method, protocol.is_some()) {
            (Some(m), _) => m,
            (None, true) => base.method,
            (None, false) => {
                bail!("give --method (zero-filled, cg-sense, l1-wavelet, tv) or --protocol")
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
        Ok(Settings {
            protocol,
            method,
            lambda: a.lambda.or(base.lambda),
            iterations: a.iters.or(base.iterations),
            tol: a.tol.or(base.tol),
            seed: a.seed.or(base.seed).unwrap_or(0),
        })
    }

    fn iterations_or_default(&self) -> usize {
        self.iterations.unwrap_or(match self.method {
            Method::ZeroFilled => 1,
            Method::CgSense => CgSenseConfig::default().iterations,
            Method::L1Wavelet => L1WaveletConfig::default().iterations,
            Method::Tv => TvConfig::default().iterations,
        })
    }
}

/// Reconstructs `ks` with `s`, reporting each solver iteration to `progress`.
pub fn reconstruct(
    ks: &KSpace,
    s: &Settings,
    progress: &(dyn Fn(usize, &IterInfo) -> ControlFlow<()> + Sync),
) -> Result<Array3<f32>> {
    match ks.attributes.get("domain").map(String::as_str) {
        Some("image") => {
            if s.method != Method::ZeroFilled {
                bail!(
                    "holds an image-domain measurement (pixel or box corruption); {} reconstructs k-space — use --method zero-filled, or a learned prior",
                    s.method.name()
                );
            }
            return Ok(ks.data.index_axis(Axis(1), 0).mapv(|v| v.norm()));
        }
        Some("projection") => bail!(
            "holds Gaussian random projections; the classical methods here reconstruct k-space"
        ),
        _ => {}
    }
    let tol = s.tol.map(f64::from);
    let img = match s.method {
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
    let settings = Settings::from_args(&args)?;
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
                let report = run_one(job, &settings, &args, reference.as_ref(), &mp);
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
    match recon_file(job, settings, reference, mp) {
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
    let img = reconstruct(&ks, s, &progress);
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
    let (sl, r, c) = img.dim();
    let data = img
        .into_shape_with_order((1, sl, r, c))
        .map_err(|e| anyhow!("internal shape error: {e}"))?;
    let mut vol = Volume::new(data, ks.affine);
    vol.meta.description = format!(
        "amri {} {}{}",
        env!("CARGO_PKG_VERSION"),
        s.method.name(),
        s.protocol
            .as_ref()
            .map(|p| format!(" {p}"))
            .unwrap_or_default()
    );
    if let Some(parent) = job.output.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    amri_io::write(&job.output, &Scan::Image(vol), &WriteOptions::default())?;
    Ok(metrics)
}

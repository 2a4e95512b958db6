//! `amri demo`: the README's main command, run on the shipped sample scans.
//!
//! Simulates 8-coil k-space at R=4 (protocol `brain-r4-cartesian`) from the Colin27 validation
//! slices, reconstructs it with every classical method, writes the images, a metrics table and a
//! comparison figure, converts the shipped DICOM samples, and prints where everything is.
//! Then the learned-prior part, on the data the prior fits (`amri_pipeline::autopick`): the
//! central `--prior-slices` slices of that same 8-coil measurement when the prior was trained
//! for it (then one figure shows zero-filled, CG-SENSE, l1-wavelet, TV, one-step, iterative and
//! the posterior std side by side), otherwise single-coil R=4 (`singlecoil-r4-cartesian`)
//! simulated from the 64×64 validation slices the shipped 64×64 prior was trained for. Either way
//! it reconstructs with the classical baselines, one-step and iterative (posterior mean and
//! std), with its own metrics table, provenance (model SHA-256) and comparison figure.
//! `--no-prior` skips it.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Instant;

use amri_core::{KSpace, Volume};
use amri_diffusion::sample::Prior;
use amri_io::{Scan, WriteOptions};
use amri_pipeline::{Overrides, Params, Plan};
use amri_protocol::{Method, Protocol};
use anyhow::{bail, Context, Result};
use ndarray::{Array2, Array3, Axis};

use amri_figures::grid as figure;

/// Arguments of `amri demo`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Folder for the outputs (created).
    #[arg(long, default_value = "out/demo")]
    pub out: PathBuf,
    /// Folder holding the shipped sample scans.
    #[arg(long, default_value = "sample-scans")]
    pub samples: PathBuf,
    /// Protocol to simulate and reconstruct with.
    #[arg(long, default_value = "brain-r4-cartesian")]
    pub protocol: String,
    /// Iterations of the iterative methods.
    #[arg(long, default_value_t = 60)]
    pub iters: usize,
    /// Use only this many central validation slices (default: all 24).
    #[arg(long)]
    pub slices: Option<usize>,
    /// Learned prior for the prior part: a checkpoint folder or a training run folder.
    #[arg(long, default_value = "models/colin27-64-r4-ambient")]
    pub model: PathBuf,
    /// Prior part: this many central slices of its data (the validation volume's 24 slices, or
    /// fewer with --slices when the prior fits the main measurement).
    #[arg(long, default_value_t = 8)]
    pub prior_slices: usize,
    /// Prior part: sampler noise levels of the iterative method (network calls per sample).
    #[arg(long, default_value_t = 40)]
    pub prior_steps: usize,
    /// Prior part: posterior samples per slice (their mean is the reconstruction, their
    /// per-pixel standard deviation the uncertainty map).
    #[arg(long, default_value_t = 3)]
    pub prior_samples: usize,
    /// Skip the learned-prior part.
    #[arg(long)]
    pub no_prior: bool,
}

/// Protocol of the learned-prior part (the shipped prior was trained for it).
const PRIOR_PROTOCOL: &str = "singlecoil-r4-cartesian";

/// Keeps the `n` central slices of `vol` (moving the affine's origin to the first kept one).
fn keep_central_slices(vol: &mut Volume<f32>, n: usize, flag: &str) -> Result<()> {
    let total = vol.slices();
    if n == 0 || n > total {
        bail!("{flag} must be in [1, {total}], got {n}");
    }
    let first = (total - n) / 2;
    vol.data = vol
        .data
        .slice(ndarray::s![.., first..first + n, .., ..])
        .to_owned();
    let step = vol.affine.column(2);
    for (r, d) in step.iter().enumerate() {
        vol.affine.0[r][3] += d * first as f64;
    }
    Ok(())
}

/// A table of image metrics against the reference, one row per method: printed as it fills
/// and written as CSV (`method,psnr_db,ssim,nmse,seconds`).
struct MetricsTable {
    csv: String,
}

impl MetricsTable {
    /// An empty table; prints its header.
    fn new() -> Self {
        println!(
            "\n{:<12} {:>8} {:>7} {:>9} {:>8}",
            "method", "PSNR dB", "SSIM", "NMSE", "time s"
        );
        Self {
            csv: String::from("method,psnr_db,ssim,nmse,seconds\n"),
        }
    }

    /// Scores `img` against `reference` (`[slice, row, col]`), prints and records the row;
    /// `secs` is the reconstruction's wall time in seconds.
    fn add(
        &mut self,
        method: Method,
        reference: &Array3<f32>,
        img: &Array3<f32>,
        secs: f64,
    ) -> Result<()> {
        let m = amri_core::metrics::evaluate_volume(reference.view(), img.view())?;
        println!(
            "{:<12} {:>8.2} {:>7.4} {:>9.5} {:>8.1}",
            method.name(),
            m.psnr,
            m.ssim,
            m.nmse,
            secs
        );
        writeln!(
            self.csv,
            "{},{:.4},{:.5},{:.6},{:.2}",
            method.name(),
            m.psnr,
            m.ssim,
            m.nmse,
            secs
        )?;
        Ok(())
    }

    /// Writes the CSV to `path` (atomically) and adds it to `written`.
    fn write(&self, path: &Path, written: &mut Vec<PathBuf>) -> Result<()> {
        amri_io::atomic::write_bytes(path, self.csv.as_bytes())?;
        written.push(path.to_path_buf());
        Ok(())
    }
}

/// Slice `s` of the measured data for a figure: log(1 + |k|) of the first coil, and the
/// sampling mask if the data carry one.
fn kspace_and_mask(ks: &KSpace, s: usize) -> (Array2<f32>, Option<Array2<f32>>) {
    let kmag = ks
        .data
        .index_axis(Axis(0), s)
        .index_axis(Axis(0), 0)
        .mapv(|c| (1.0 + c.norm()).ln());
    let mask = ks
        .mask
        .as_ref()
        .map(|m| m.index_axis(Axis(0), s).to_owned());
    (kmag, mask)
}

fn need(p: &Path) -> Result<()> {
    if !p.exists() {
        bail!(
            "{} is missing: run amri demo from the repository root or pass --samples",
            p.display()
        );
    }
    Ok(())
}

/// Runs `amri demo`.
pub fn run(args: Args) -> Result<()> {
    let samples = &args.samples;
    let out = &args.out;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let val = samples.join("colin27/t1_axial_val.nii.gz");
    let mr = samples.join("dicom/MR_small.dcm");
    let stack = samples.join("dicom/oblique_stack");
    for p in [&val, &mr, &stack] {
        need(p)?;
    }
    let val64 = samples.join("colin27/lowres/t1_axial_val_64.nii.gz");
    // Check the prior part's inputs before spending minutes on the classical part.
    let prior = if args.no_prior {
        None
    } else {
        for (flag, v) in [
            ("--prior-slices", args.prior_slices),
            ("--prior-steps", args.prior_steps),
            ("--prior-samples", args.prior_samples),
        ] {
            if v == 0 {
                bail!("{flag} must be ≥ 1 (or skip the learned-prior part with --no-prior)");
            }
        }
        Some(Arc::new(load_prior(&args.model)?))
    };
    let mut written: Vec<PathBuf> = Vec::new();

    // 1. Simulate the measurement.
    let protocol = Protocol::resolve(&args.protocol)?;
    let mut vol = match amri_io::read(&val)? {
        Scan::Image(v) => v,
        _ => bail!("{}: expected an image", val.display()),
    };
    if let Some(n) = args.slices {
        keep_central_slices(&mut vol, n, "--slices")?;
    }
    let t = Instant::now();
    let mut ks = amri_ops::simulate::simulate(&vol, 0, &protocol.acquisition)?;
    ks.attributes
        .insert("protocol".into(), protocol.name.clone());
    let [slices, coils, rows, cols] = ks.shape4();
    // The prior part's data, chosen (and checked) before the minutes of the classical part.
    let prior = match prior {
        Some(p) => Some((prior_data(&args, &val, &val64, &ks)?, p)),
        None => None,
    };
    let ks_path = out.join("val_measured.npz");
    written.extend(amri_io::write(
        &ks_path,
        &Scan::KSpace(ks.clone()),
        &WriteOptions::default(),
    )?);
    println!(
        "simulated {} ({}): {slices} slices, {coils} coils, {rows}x{cols}, {:.1} % of k-space measured, in {:.1} s",
        protocol.name,
        protocol.description,
        100.0 * ks.mean_sampled_fraction(),
        t.elapsed().as_secs_f64()
    );
    println!("  (k-space is simulated from magnitude images with synthetic coil maps and phase: no package ships raw k-space)");

    // 2. Coil maps once (ESPIRiT from the calibration lines), then every method.
    let t = Instant::now();
    ks.sensitivities = amri_recon::app::resolve_maps(&ks, None)?;
    if ks.sensitivities.is_some() {
        println!(
            "ESPIRiT coil maps from the calibration region in {:.1} s",
            t.elapsed().as_secs_f64()
        );
    }
    let reference = ks
        .reference
        .clone()
        .context("simulated data carry their reference")?;
    let mut table = MetricsTable::new();
    let mut results: Vec<(Method, ndarray::Array3<f32>)> = Vec::new();
    for method in Method::ALL {
        // The methods' default λ; the demo's iterations (CG-SENSE capped at its default).
        let iterations = match method {
            Method::ZeroFilled => None,
            Method::CgSense => Some(args.iters.min(Params::defaults(method).iterations)),
            _ => Some(args.iters),
        };
        let plan = Plan::new(
            None,
            &Overrides {
                method: Some(method),
                iterations,
                ..Overrides::default()
            },
        )?;
        let t = Instant::now();
        let img = plan
            .run(&ks, &|| {}, &AtomicBool::new(false))
            .with_context(|| format!("reconstructing with {}", method.name()))?
            .image;
        table.add(method, &reference, &img, t.elapsed().as_secs_f64())?;
        let mut v = Volume::new(img.clone().insert_axis(Axis(0)), ks.affine);
        v.meta.description = format!(
            "amri {} {} {}",
            env!("CARGO_PKG_VERSION"),
            method.name(),
            protocol.name
        );
        let p = out.join(format!("val_{}.nii.gz", method.name()));
        written.extend(amri_io::write(
            &p,
            &Scan::Image(v),
            &WriteOptions::default(),
        )?);
        results.push((method, img));
    }
    table.write(&out.join("metrics.csv"), &mut written)?;

    // 3. The comparison figure on the middle slice.
    let s = slices / 2;
    let aff = &ks.affine;
    let refs = figure::display(reference.index_axis(Axis(0), s).to_owned(), aff);
    let hi = refs.iter().copied().fold(0.0f32, f32::max);
    let (kmag, mask) = kspace_and_mask(&ks, s);
    let mut top = vec![
        figure::gray(refs.view(), 0.0, hi, "reference"),
        figure::kspace(
            kmag.view(),
            mask.as_ref().map(|m| m.view()),
            "k-space coil 1 + mask",
        ),
    ];
    let mut bottom = vec![
        figure::gray(
            mask.clone()
                .unwrap_or_else(|| Array2::ones((rows, cols)))
                .view(),
            0.0,
            1.0,
            "sampling mask",
        ),
        figure::gray(
            Array2::<f32>::zeros((rows, cols)).view(),
            0.0,
            1.0,
            "|error| x10 below",
        ),
    ];
    for (method, img) in &results {
        let sl = figure::display(img.index_axis(Axis(0), s).to_owned(), aff);
        let err = &sl - &refs;
        top.push(figure::gray(sl.view(), 0.0, hi, method.name()));
        bottom.push(figure::hot(
            err.view(),
            hi / 10.0,
            &format!("error {}", method.name()),
        ));
    }
    let per_row = top.len();
    top.extend(bottom);
    let fig = out.join("comparison.png");
    figure::write_grid(&fig, &top, per_row)?;
    written.push(fig.clone());

    // 4. The DICOM samples: read, convert, write a de-identified derived series.
    let mut convert = |input: &Path, output: PathBuf, opts: &WriteOptions| -> Result<()> {
        let scan: Scan = amri_io::read(input)?;
        written.extend(amri_io::write(&output, &scan, opts)?);
        Ok(())
    };
    convert(&mr, out.join("mr_small.nii.gz"), &WriteOptions::default())?;
    convert(
        &stack,
        out.join("oblique_stack.nii.gz"),
        &WriteOptions::default(),
    )?;
    let mut deid = WriteOptions::default();
    deid.dicom.deidentify = true;
    deid.dicom.series_description = "amri demo: l1-wavelet reconstruction".into();
    convert(
        &out.join("val_l1-wavelet.nii.gz"),
        out.join("val_l1-wavelet_dicom"),
        &deid,
    )?;

    // 5. The learned prior on the data it was trained for.
    let prior_summary = match &prior {
        Some((data, p)) => Some(prior_part(&args, data, p, &mut written)?),
        None => None,
    };

    println!("\nwrote {} files under {}:", written.len(), out.display());
    println!(
        "  {}   comparison figure (reference | k-space | methods; error maps below)",
        fig.display()
    );
    println!("  {}   metrics table", out.join("metrics.csv").display());
    println!("  {}   simulated measured data", ks_path.display());
    println!("  {}/val_<method>.nii.gz   reconstructions", out.display());
    println!(
        "  {}/val_l1-wavelet_dicom/   derived DICOM series (de-identified)",
        out.display()
    );
    match prior_summary {
        Some(p) => {
            println!(
                "  {}   learned-prior figure (reference | k-space | methods | posterior std; error maps below)",
                p.figure.display()
            );
            println!("  {}   learned-prior metrics table", p.table.display());
            println!(
                "  {}   its measured data ({})",
                out.join("prior_measured.npz").display(),
                p.data
            );
            println!(
                "  {}/prior_<method>.nii.gz, prior_iterative_std.nii.gz   learned-prior reconstructions and posterior std",
                out.display()
            );
            println!(
                "  {}   provenance (model sha256, settings)",
                p.provenance.display()
            );
        }
        None => println!("  (learned-prior part skipped: --no-prior)"),
    }
    Ok(())
}

/// `x` as the f64 of its shortest decimal form, so that JSON shows 0.005 for `0.005_f32`
/// rather than its binary expansion 0.004999999888241291.
fn json_f32(x: f32) -> f64 {
    x.to_string().parse().unwrap_or(f64::from(x))
}

/// Loads the demo's prior, or says how to get one or skip the part.
fn load_prior(model: &Path) -> Result<Prior> {
    if !model.exists() {
        bail!(
            "{}: no learned prior there. Run amri demo from the repository root (the shipped prior is models/colin27-64-r4-ambient), \
             pass --model <checkpoint or training-run folder> (make one with amri train --protocol {PRIOR_PROTOCOL}), \
             or skip the learned-prior part with --no-prior",
            model.display()
        );
    }
    Prior::load(model, &candle_core::Device::Cpu).with_context(|| {
        format!(
            "--model {}: cannot load the prior (or skip this part with --no-prior)",
            model.display()
        )
    })
}

/// Where the prior part wrote its summary files.
struct PriorSummary {
    figure: PathBuf,
    table: PathBuf,
    provenance: PathBuf,
    /// Its data, in words.
    data: String,
}

/// The measured data of the learned-prior part and where they came from.
struct PriorData {
    /// Measured k-space (no coil maps: each method estimates its own).
    ks: KSpace,
    /// The image volume it was simulated from.
    input: PathBuf,
    /// Protocol name.
    protocol: String,
}

/// The prior part's data: the central `--prior-slices` slices of the classical part's
/// measurement `main` when the prior fits it for both prior methods (a one-step prior does not
/// fit the iterative one), else single-coil R=4 simulated from the 64×64
/// validation slices (the shipped 64×64 prior's data).
fn prior_data(args: &Args, val: &Path, val64: &Path, main: &KSpace) -> Result<PriorData> {
    use amri_pipeline::autopick::{DataSummary, PriorSummary as Card};
    let fits_main = Card::read(&args.model)
        .map(|c| {
            c.misfits(&DataSummary::of(main), Method::Iterative)
                .is_empty()
        })
        .unwrap_or(false);
    if fits_main {
        return Ok(PriorData {
            ks: central_kspace_slices(main, args.prior_slices)?,
            input: val.to_path_buf(),
            protocol: args.protocol.clone(),
        });
    }
    need(val64)?;
    let mut vol64 = match amri_io::read(val64)? {
        Scan::Image(v) => v,
        _ => bail!("{}: expected an image", val64.display()),
    };
    keep_central_slices(&mut vol64, args.prior_slices, "--prior-slices")?;
    let protocol = Protocol::resolve(PRIOR_PROTOCOL)?;
    let mut ks = amri_ops::simulate::simulate(&vol64, 0, &protocol.acquisition)?;
    ks.attributes
        .insert("protocol".into(), protocol.name.clone());
    Ok(PriorData {
        ks,
        input: val64.to_path_buf(),
        protocol: protocol.name,
    })
}

/// The `n` central slices of `ks` (data, mask, reference; no coil maps), the affine's origin
/// moved to the first kept one as [`keep_central_slices`] does.
fn central_kspace_slices(ks: &KSpace, n: usize) -> Result<KSpace> {
    let total = ks.shape4()[0];
    if n == 0 || n > total {
        bail!("--prior-slices must be in [1, {total}], got {n}");
    }
    let first = (total - n) / 2;
    let r = first..first + n;
    let mut out = ks.clone();
    out.data = ks.data.slice(ndarray::s![r.clone(), .., .., ..]).to_owned();
    out.mask = ks
        .mask
        .as_ref()
        .map(|m| m.slice(ndarray::s![r.clone(), .., ..]).to_owned());
    out.reference = ks
        .reference
        .as_ref()
        .map(|m| m.slice(ndarray::s![r.clone(), .., ..]).to_owned());
    out.sensitivities = None;
    let step = ks.affine.column(2);
    for (row, d) in step.iter().enumerate() {
        out.affine.0[row][3] += d * first as f64;
    }
    Ok(out)
}

/// The learned-prior part on `data`: reconstructs it with the classical baselines (CG-SENSE
/// too for multi-coil data) and the prior (one-step, iterative), and writes the measured data,
/// the images, the posterior std, `prior_metrics.csv`, a provenance JSON and
/// `prior_comparison.png`.
fn prior_part(
    args: &Args,
    data: &PriorData,
    prior: &Arc<Prior>,
    written: &mut Vec<PathBuf>,
) -> Result<PriorSummary> {
    let out = &args.out;
    let protocol = Protocol::resolve(&data.protocol)?;
    let ks = &data.ks;
    let [slices, coils, rows, cols] = ks.shape4();
    let ks_path = out.join("prior_measured.npz");
    written.extend(amri_io::write(
        &ks_path,
        &Scan::KSpace(ks.clone()),
        &WriteOptions::default(),
    )?);
    let sha = prior.sha256().to_owned();
    println!(
        "\nlearned prior {} (sha256 {sha})",
        prior.checkpoint_dir().display()
    );
    let described = format!(
        "{slices} slices, {coils} coil{}, {rows}x{cols}",
        if coils == 1 { "" } else { "s" }
    );
    println!(
        "simulated {} ({}): {described}, {:.1} % of k-space measured",
        protocol.name,
        protocol.description,
        100.0 * ks.mean_sampled_fraction()
    );
    let reference = ks
        .reference
        .clone()
        .context("simulated data carry their reference")?;
    let mut table = MetricsTable::new();
    let methods: Vec<Method> = [
        Method::ZeroFilled,
        Method::CgSense,
        Method::L1Wavelet,
        Method::Tv,
        Method::OneStep,
        Method::Iterative,
    ]
    .into_iter()
    .filter(|m| *m != Method::CgSense || coils > 1)
    .collect();
    let mut results: Vec<(Method, Array3<f32>)> = Vec::new();
    let mut std_map: Option<Array3<f32>> = None;
    for method in methods {
        // The methods' default λ; the demo's iterations, sampler steps and samples.
        let classical = matches!(method, Method::L1Wavelet | Method::Tv);
        let cg = method == Method::CgSense;
        let iterative = method == Method::Iterative;
        let mut plan = Plan::new(
            None,
            &Overrides {
                method: Some(method),
                iterations: if cg {
                    Some(args.iters.min(Params::defaults(method).iterations))
                } else {
                    classical.then_some(args.iters)
                },
                model: method.is_prior().then(|| args.model.clone()),
                steps: iterative.then_some(args.prior_steps),
                samples: iterative.then_some(args.prior_samples),
                ..Overrides::default()
            },
        )?;
        if method.is_prior() {
            plan = plan.with_prior(Arc::clone(prior));
        }
        let t = Instant::now();
        let r = plan
            .run(ks, &|| {}, &AtomicBool::new(false))
            .with_context(|| format!("reconstructing with {}", method.name()))?;
        let (img, std) = (r.image, r.std);
        table.add(method, &reference, &img, t.elapsed().as_secs_f64())?;
        let description = format!(
            "amri {} {} {}{}",
            env!("CARGO_PKG_VERSION"),
            method.name(),
            protocol.name,
            if method.is_prior() {
                format!(" model sha256:{}", &sha[..sha.len().min(16)])
            } else {
                String::new()
            }
        );
        let image_volume = |img: Array3<f32>, what: &str| {
            let mut v = Volume::new(img.insert_axis(Axis(0)), ks.affine);
            v.meta.description = format!("{description}{what}");
            Scan::Image(v)
        };
        if let Some(sd) = std {
            let p = out.join(format!("prior_{}_std.nii.gz", method.name()));
            written.extend(amri_io::write(
                &p,
                &image_volume(sd.clone(), " posterior std"),
                &WriteOptions::default(),
            )?);
            std_map = Some(sd);
        }
        let p = out.join(format!("prior_{}.nii.gz", method.name()));
        written.extend(amri_io::write(
            &p,
            &image_volume(img.clone(), ""),
            &WriteOptions::default(),
        )?);
        results.push((method, img));
    }
    let table_path = out.join("prior_metrics.csv");
    table.write(&table_path, written)?;
    let provenance = out.join("prior_provenance.json");
    let prov = serde_json::json!({
        "amri_version": env!("CARGO_PKG_VERSION"),
        "protocol": protocol.name,
        "input": data.input.display().to_string(),
        "slices": slices,
        "model": args.model.display().to_string(),
        "model_checkpoint": prior.checkpoint_dir().display().to_string(),
        "model_sha256": sha,
        "iterative": { "steps": args.prior_steps, "samples": args.prior_samples },
        "l1_wavelet_tv": {
            "lambda": json_f32(Params::defaults(Method::L1Wavelet).lambda),
            "iterations": args.iters,
        },
        "seed": 0,
    });
    amri_io::atomic::write_bytes(&provenance, serde_json::to_string_pretty(&prov)?.as_bytes())?;
    written.push(provenance.clone());

    let fig = out.join("prior_comparison.png");
    let (kmag, mask) = kspace_and_mask(ks, slices / 2);
    figure::comparison(
        &fig,
        &figure::Comparison {
            reference: reference.index_axis(Axis(0), slices / 2).to_owned(),
            kspace_logmag: kmag,
            mask,
            methods: results
                .iter()
                .map(|(m, img)| {
                    (
                        m.name().to_owned(),
                        img.index_axis(Axis(0), slices / 2).to_owned(),
                    )
                })
                .collect(),
            std: std_map.map(|s| s.index_axis(Axis(0), slices / 2).to_owned()),
            affine: ks.affine,
        },
    )?;
    written.push(fig.clone());
    Ok(PriorSummary {
        figure: fig,
        table: table_path,
        provenance,
        data: described,
    })
}

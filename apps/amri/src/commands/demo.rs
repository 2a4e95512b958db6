//! `amri demo`: the README's main command, run on the shipped sample scans.
//!
//! Simulates 8-coil k-space at R=4 (protocol `brain-r4-cartesian`) from the Colin27 validation
//! slices, reconstructs it with every classical method, writes the images, a metrics table and a
//! comparison figure, converts the shipped DICOM samples, and prints where everything is.

use std::fmt::Write as _;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::time::Instant;

use amri_core::Volume;
use amri_io::{Scan, WriteOptions};
use amri_protocol::{Method, Protocol};
use anyhow::{bail, Context, Result};
use ndarray::{Array2, Axis};

use super::recon::{reconstruct, Settings};
use crate::figure;

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
    let mut written: Vec<PathBuf> = Vec::new();

    // 1. Simulate the measurement.
    let protocol = Protocol::resolve(&args.protocol)?;
    let mut vol = match amri_io::read(&val)? {
        Scan::Image(v) => v,
        _ => bail!("{}: expected an image", val.display()),
    };
    if let Some(n) = args.slices {
        let total = vol.slices();
        if n == 0 || n > total {
            bail!("--slices must be in [1, {total}], got {n}");
        }
        let first = (total - n) / 2;
        vol.data = vol
            .data
            .slice(ndarray::s![.., first..first + n, .., ..])
            .to_owned();
        // The affine's origin moves to the first kept slice.
        let step = vol.affine.column(2);
        for (r, d) in step.iter().enumerate() {
            vol.affine.0[r][3] += d * first as f64;
        }
    }
    let t = Instant::now();
    let mut ks = amri_ops::simulate::simulate(&vol, 0, &protocol.acquisition)?;
    ks.attributes
        .insert("protocol".into(), protocol.name.clone());
    let [slices, coils, rows, cols] = ks.shape4();
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
        100.0 * ks.sampled_fraction(),
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
    let mut table = String::from("method,psnr_db,ssim,nmse,seconds\n");
    println!(
        "\n{:<12} {:>8} {:>7} {:>9} {:>8}",
        "method", "PSNR dB", "SSIM", "NMSE", "time s"
    );
    let mut results: Vec<(Method, ndarray::Array3<f32>)> = Vec::new();
    for method in Method::ALL {
        let s = Settings {
            protocol: Some(protocol.name.clone()),
            method,
            lambda: match method {
                Method::CgSense => Some(0.0),
                Method::L1Wavelet | Method::Tv => Some(0.005),
                _ => None,
            },
            iterations: (method != Method::ZeroFilled).then_some(match method {
                Method::CgSense => args.iters.min(30),
                _ => args.iters,
            }),
            tol: None,
            seed: 0,
            ..Settings::default()
        };
        let t = Instant::now();
        let img = reconstruct(&ks, &s, &|_, _| ControlFlow::Continue(()))
            .with_context(|| format!("reconstructing with {}", method.name()))?;
        let secs = t.elapsed().as_secs_f64();
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
            table,
            "{},{:.4},{:.5},{:.6},{:.2}",
            method.name(),
            m.psnr,
            m.ssim,
            m.nmse,
            secs
        )?;
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
    let table_path = out.join("metrics.csv");
    amri_io::atomic::write_bytes(&table_path, table.as_bytes())?;
    written.push(table_path);

    // 3. The comparison figure on the middle slice.
    let s = slices / 2;
    let aff = &ks.affine;
    let refs = figure::display(reference.index_axis(Axis(0), s).to_owned(), aff);
    let hi = refs.iter().copied().fold(0.0f32, f32::max);
    let kmag: Array2<f32> = ks
        .data
        .index_axis(Axis(0), s)
        .index_axis(Axis(0), 0)
        .mapv(|c| (1.0 + c.norm()).ln());
    let mask = ks
        .mask
        .as_ref()
        .map(|m| m.index_axis(Axis(0), s).to_owned());
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
    Ok(())
}

//! `amri convert IN OUT`: convert a scan between formats, geometry kept.

use std::path::{Path, PathBuf};

use amri_io::{Format, Scan, WriteOptions};
use anyhow::{bail, Context, Result};

/// Arguments of `amri convert`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Input file or DICOM series folder.
    pub input: PathBuf,
    /// Output: `.nii.gz`/`.nii`, `.png`, `.cfl`, `.npy`, `.npz`, `.h5` (ISMRMRD raw data, for
    /// k-space), or a path with no extension for a DICOM series folder.
    pub output: PathBuf,
    /// Slice written to PNG (default: the middle one).
    #[arg(long)]
    pub slice: Option<usize>,
    /// PNG window as `MIN:MAX` in image units (default: 0.5–99.5 percentile of the slice).
    #[arg(long, value_parser = parse_window)]
    pub window: Option<(f32, f32)>,
    /// PNG bit depth, 8 or 16.
    #[arg(long, default_value_t = 8, value_parser = parse_bits)]
    pub bits: u8,
    /// PNG: keep the stored row/column order instead of radiological display orientation
    /// (anterior up, patient's right on the left).
    #[arg(long)]
    pub native_order: bool,
    /// DICOM output: drop the patient's identity (PS3.15 basic profile on the tags amri writes).
    #[arg(long)]
    pub deidentify: bool,
    /// DICOM output: SeriesDescription of the derived series.
    #[arg(long)]
    pub series_description: Option<String>,
}

fn parse_bits(s: &str) -> std::result::Result<u8, String> {
    match s {
        "8" => Ok(8),
        "16" => Ok(16),
        _ => Err(format!("bit depth must be 8 or 16, got '{s}'")),
    }
}

fn parse_window(s: &str) -> std::result::Result<(f32, f32), String> {
    let (a, b) = s
        .split_once(':')
        .ok_or_else(|| format!("expected MIN:MAX, got '{s}'"))?;
    let lo: f32 = a
        .trim()
        .parse()
        .map_err(|_| format!("'{a}' is not a number"))?;
    let hi: f32 = b
        .trim()
        .parse()
        .map_err(|_| format!("'{b}' is not a number"))?;
    if !(lo.is_finite() && hi.is_finite() && hi > lo) {
        return Err(format!("window {lo}:{hi} must have MIN < MAX, both finite"));
    }
    Ok((lo, hi))
}

/// Refuses an output that would overwrite the input.
pub fn refuse_same_path(input: &Path, output: &Path) -> Result<()> {
    let canon = |p: &Path| std::fs::canonicalize(p).ok();
    if input == output || (canon(input).is_some() && canon(input) == canon(output)) {
        bail!(
            "output {} is the input; amri never modifies its inputs",
            output.display()
        );
    }
    Ok(())
}

/// Runs `amri convert`.
pub fn run(args: Args) -> Result<()> {
    refuse_same_path(&args.input, &args.output)?;
    let fmt = Format::for_output(&args.output)?;
    let scan = amri_io::read(&args.input)?;
    let mut opts = WriteOptions {
        slice: args.slice,
        native_order: args.native_order,
        ..WriteOptions::default()
    };
    opts.png.window = args.window;
    opts.png.bit_depth = args.bits;
    opts.dicom.deidentify = args.deidentify;
    if let Some(d) = args.series_description {
        opts.dicom.series_description = d;
    }
    if let Some(parent) = args.output.parent() {
        if !parent.as_os_str().is_empty() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
    }
    let written = amri_io::write(&args.output, &scan, &opts)?;
    let what = match &scan {
        Scan::Image(_) => "image",
        Scan::ComplexImage(_) => "complex image",
        Scan::KSpace(_) => "k-space",
    };
    println!(
        "{} ({what}) -> {} ({}, {} file{})",
        args.input.display(),
        args.output.display(),
        fmt.name(),
        written.len(),
        if written.len() == 1 { "" } else { "s" }
    );
    Ok(())
}

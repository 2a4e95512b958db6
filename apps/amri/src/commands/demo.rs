//! `amri demo`: the README's main command, run on the shipped sample scans.

use std::path::{Path, PathBuf};

use amri_io::{Scan, WriteOptions};
use anyhow::{Context, Result};

/// Arguments of `amri demo`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Folder for the outputs (created).
    #[arg(long, default_value = "out/demo")]
    pub out: PathBuf,
    /// Folder holding the shipped sample scans.
    #[arg(long, default_value = "sample-scans")]
    pub samples: PathBuf,
}

/// Runs `amri demo`.
pub fn run(args: Args) -> Result<()> {
    let samples = &args.samples;
    let out = &args.out;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let val = samples.join("colin27/t1_axial_val.nii.gz");
    let mr = samples.join("dicom/MR_small.dcm");
    let series = samples.join("dicom/oblique_stack");
    for p in [&val, &mr, &series] {
        if !p.exists() {
            anyhow::bail!(
                "{} is missing: run amri demo from the repository root or pass --samples",
                p.display()
            );
        }
        print!("{}", super::info::describe(p, false)?);
    }
    let mut written: Vec<PathBuf> = Vec::new();
    let mut convert = |input: &Path, output: PathBuf, opts: &WriteOptions| -> Result<()> {
        let scan: Scan = amri_io::read(input)?;
        written.extend(amri_io::write(&output, &scan, opts)?);
        Ok(())
    };
    convert(&val, out.join("colin27_val.png"), &WriteOptions::default())?;
    convert(&mr, out.join("mr_small.nii.gz"), &WriteOptions::default())?;
    convert(
        &series,
        out.join("oblique_stack.nii.gz"),
        &WriteOptions::default(),
    )?;
    let mut deid = WriteOptions::default();
    deid.dicom.deidentify = true;
    deid.dicom.series_description = "amri demo: Colin27 validation slices".into();
    convert(&val, out.join("colin27_val_dicom"), &deid)?;
    println!("\nwrote {} files under {}:", written.len(), out.display());
    let mut shown = 0;
    for w in &written {
        if shown < 6 {
            println!("  {}", w.display());
        }
        shown += 1;
    }
    if shown > 6 {
        println!("  ... and {} more", shown - 6);
    }
    Ok(())
}

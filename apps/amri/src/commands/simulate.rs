//! `amri simulate --protocol P IN OUT`: measured data from an image series, as a protocol says.

use std::path::PathBuf;

use amri_io::{Scan, WriteOptions};
use amri_protocol::Protocol;
use anyhow::{bail, Context, Result};

/// Arguments of `amri simulate`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Protocol: a preset name (`amri protocol list`) or a .toml file.
    #[arg(long, short)]
    pub protocol: String,
    /// Input image (NIfTI, DICOM file or series folder, npy).
    pub input: PathBuf,
    /// Output measured-data bundle: `.npz` (k-space, mask, reference, maps, attributes), `.cfl`,
    /// or `.h5` (ISMRMRD raw data: one readout per measured column; k-space corruptions only).
    pub output: PathBuf,
    /// Frame of a 4-D input to use.
    #[arg(long, default_value_t = 0)]
    pub frame: usize,
    /// Override the protocol's seed.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Override the protocol's number of coils.
    #[arg(long)]
    pub coils: Option<usize>,
    /// After measuring, compress the coils to N virtual coils by SVD (as `bart cc -S -p N`;
    /// `--coils` sets the simulated receive coils, this the coils written).
    #[arg(long, value_name = "N")]
    pub virtual_coils: Option<usize>,
    /// Store the synthetic coil maps in the output.
    #[arg(long)]
    pub store_maps: bool,
}

/// Runs `amri simulate`.
pub fn run(args: Args) -> Result<()> {
    super::convert::refuse_same_path(&args.input, &args.output)?;
    let mut protocol = Protocol::resolve(&args.protocol)?;
    if let Some(s) = args.seed {
        protocol.acquisition.seed = s;
    }
    if let Some(c) = args.coils {
        protocol.acquisition.coils = c;
    }
    protocol.acquisition.store_maps |= args.store_maps;
    protocol.validate(&args.protocol)?;
    let vol = match amri_io::read(&args.input)? {
        Scan::Image(v) => v,
        Scan::ComplexImage(v) => v.with_data(v.data.mapv(|c| c.norm()))?,
        Scan::KSpace(_) => bail!(
            "{} holds k-space; simulate starts from an image",
            args.input.display()
        ),
    };
    let bad = vol.data.iter().filter(|v| !v.is_finite()).count();
    if bad > 0 {
        bail!(
            "{}: {bad} of {} pixel values are NaN or infinite; simulate needs a finite image",
            args.input.display(),
            vol.data.len()
        );
    }
    let mut k = amri_ops::simulate::simulate(&vol, args.frame, &protocol.acquisition)
        .with_context(|| format!("simulating {} with {}", args.input.display(), protocol.name))?;
    if let Some(n) = args.virtual_coils {
        k = amri_ops::cc::compress(&k, &amri_ops::cc::CcConfig::new(n))
            .with_context(|| format!("--virtual-coils {n}"))?;
    }
    k.attributes
        .insert("protocol".into(), protocol.name.clone());
    k.attributes
        .insert("amri_version".into(), env!("CARGO_PKG_VERSION").into());
    k.attributes.insert(
        "source".into(),
        args.input
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
    );
    if let Some(parent) = args.output.parent() {
        if !parent.as_os_str().is_empty() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
    }
    let [s, c, r, col] = k.shape4();
    let measured = if k.domain() == amri_core::MeasuredDomain::Projection {
        format!("{col} projections per slice")
    } else {
        // every slice draws its own mask: report the mean, and slice 0 when they differ
        let mean = k.mean_sampled_fraction();
        let first = k.sampled_fraction();
        if (mean - first).abs() < 5e-4 {
            format!("{:.1} % measured", 100.0 * mean)
        } else {
            format!(
                "{:.1} % measured (mean over slices; slice 0: {:.1} %)",
                100.0 * mean,
                100.0 * first
            )
        }
    };
    amri_io::write(&args.output, &Scan::KSpace(k), &WriteOptions::default())?;
    println!(
        "{} -> {}: {} ({}), [slice {s}, coil {c}, row {r}, col {col}], {measured}",
        args.input.display(),
        args.output.display(),
        protocol.name,
        protocol.description,
    );
    Ok(())
}

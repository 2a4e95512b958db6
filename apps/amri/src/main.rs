//! `amri`: inspect, convert, simulate and reconstruct undersampled MRI from the command line.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod batch;
mod commands;

/// Reconstruct undersampled MRI with classical solvers and diffusion priors learned from
/// corrupted scans only.
#[derive(Parser, Debug)]
#[command(name = "amri", version, about, long_about = None)]
struct Cli {
    /// More log output on standard error (-v info, -vv debug).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    /// Only errors on standard error.
    #[arg(short, long, global = true)]
    quiet: bool,
    /// Device of the learned prior: cpu, cuda, cuda:N, or auto (the first GPU in a build with
    /// the cuda feature, else the CPU).
    #[arg(long, global = true, default_value = "auto")]
    device: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Print what a scan file holds: dims, datatype, voxel size, orientation, affine.
    #[command(
        after_help = "Example:\n  amri info sample-scans/colin27/t1_axial_val.nii.gz\n  amri info --json sample-scans/dicom/MR700"
    )]
    Info(commands::info::Args),
    /// Convert a scan between formats (NIfTI, DICOM series folder, PNG, cfl, npy, npz).
    #[command(
        after_help = "Example:\n  amri convert sample-scans/dicom/MR_small.dcm out/mr_small.nii.gz\n  amri convert sample-scans/colin27/t1_axial_val.nii.gz out/val_dicom --deidentify\n  amri convert sample-scans/colin27/t1_axial_val.nii.gz out/val.png --slice 12"
    )]
    Convert(commands::convert::Args),
    /// List, show and check acquisition/reconstruction protocols (TOML presets).
    #[command(
        after_help = "Example:\n  amri protocol list\n  amri protocol show brain-r4-cartesian > my.toml\n  amri protocol check my.toml"
    )]
    Protocol(commands::protocol::Args),
    /// Simulate measured data (k-space with mask, or a corrupted image) from an image series.
    #[command(
        after_help = "Example:\n  amri simulate --protocol brain-r4-cartesian sample-scans/colin27/t1_axial_val.nii.gz out/val_r4.npz"
    )]
    Simulate(commands::simulate::Args),
    /// Reconstruct measured data: one file, or folders/globs of files in batch.
    #[command(
        after_help = "Examples:\n  amri recon --method l1-wavelet --lambda 0.005 --iters 100 out/val_r4.npz out/val_l1.nii.gz\n  amri recon --method iterative --model out/prior --samples 8 --steps 50 out/val_r4.npz out/val_prior.nii.gz   # also writes val_prior_std.nii.gz\n  amri recon --protocol brain-r4-cartesian study/ out/recon/ --jobs 2 --summary out/summary.csv\n  amri recon --method cg-sense study/ out/recon/ --shard 3/16   # one of 16 Slurm array tasks"
    )]
    Recon(commands::recon::Args),
    /// Train a diffusion prior from measured files (each scan its own mask), or from image volumes
    /// under a protocol's corruption model.
    #[command(
        after_help = "Example:\n  amri train --preset tiny --steps 2000 --batch 8 --out out/prior my_scans/   # measured .npz/.h5/.cfl\n  amri train --protocol brain-r4-cartesian --preset tiny --steps 2000 --batch 8 --out out/prior sample-scans/colin27/t1_axial_train2.nii.gz\n  amri train --protocol brain-r4-cartesian --steps 4000 --batch 8 --out out/prior --resume sample-scans/colin27/t1_axial_train2.nii.gz"
    )]
    Train(commands::train::Args),
    /// Fine-tune a trained prior (lower learning rate, optionally frozen encoder).
    #[command(
        after_help = "Example:\n  amri finetune --base out/prior --protocol brain-r4-cartesian --steps 500 --freeze-down --out out/prior_ft scans/"
    )]
    Finetune(commands::train::FinetuneArgs),
    /// Draw samples from a prior and measure how close they come to its training slices.
    #[command(
        after_help = "Example:\n  amri memorization --model out/prior --train sample-scans/colin27/t1_axial_train2.nii.gz --samples 16 --out out/memorization"
    )]
    Memorization(commands::memorization::Args),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    #[command(
        after_help = "Example:\n  amri completions bash > ~/.local/share/bash-completion/completions/amri"
    )]
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Write man pages (amri.1 and one per subcommand) into a folder.
    #[command(after_help = "Example:\n  amri manpages out/man && man -l out/man/amri.1")]
    Manpages {
        /// Output folder (created).
        dir: std::path::PathBuf,
    },
    /// Run the demonstration on the shipped sample scans and say where its outputs are.
    #[command(after_help = "Example:\n  amri demo --out out/demo")]
    Demo(commands::demo::Args),
}

fn write_manpages(dir: &std::path::Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    let cmd = <Cli as clap::CommandFactory>::command();
    clap_mangen::generate_to(cmd, dir)?;
    println!("man pages written to {}", dir.display());
    Ok(())
}

/// The error and its causes joined by ": ", leaving out a cause whose text the message already
/// holds (library errors often print their source too; `{:#}` would say it twice).
fn chain_message(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let s = cause.to_string();
        if out.contains(&s) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&s);
    }
    out
}

fn main() -> ExitCode {
    amri_diffusion::alloc::keep_freed_memory();
    let cli = Cli::parse();
    let level = if cli.quiet {
        tracing::Level::ERROR
    } else {
        match cli.verbose {
            0 => tracing::Level::WARN,
            1 => tracing::Level::INFO,
            _ => tracing::Level::DEBUG,
        }
    };
    tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .without_time()
        .init();
    commands::device::set(&cli.device);
    let r = match cli.command {
        Command::Info(a) => commands::info::run(a),
        Command::Convert(a) => commands::convert::run(a),
        Command::Demo(a) => commands::demo::run(a),
        Command::Protocol(a) => commands::protocol::run(a),
        Command::Simulate(a) => commands::simulate::run(a),
        Command::Recon(a) => commands::recon::run(a),
        Command::Train(a) => commands::train::run(a),
        Command::Finetune(a) => commands::train::finetune(a),
        Command::Memorization(a) => commands::memorization::run(a),
        Command::Completions { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            let mut buf = Vec::new();
            clap_complete::generate(shell, &mut cmd, "amri", &mut buf);
            // A closed pipe (`| head`) is not an error worth a message.
            let _ = std::io::Write::write_all(&mut std::io::stdout(), &buf);
            Ok(())
        }
        Command::Manpages { dir } => write_manpages(&dir),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", chain_message(&e));
            ExitCode::from(1)
        }
    }
}

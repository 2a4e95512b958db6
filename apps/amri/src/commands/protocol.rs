//! `amri protocol list|show|check`: the named acquisition and reconstruction presets.

use std::path::PathBuf;

use amri_protocol::Protocol;
use anyhow::Result;

/// Arguments of `amri protocol`.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    pub action: Action,
}

/// What to do with protocols.
#[derive(clap::Subcommand, Debug)]
pub enum Action {
    /// List the built-in presets with a one-line description.
    List,
    /// Print a preset (or a protocol file) as TOML, defaults filled in.
    Show {
        /// Preset name or path to a .toml file.
        protocol: String,
    },
    /// Check protocol files: parse, validate ranges, report every problem.
    Check {
        /// Protocol files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

/// Runs `amri protocol`.
pub fn run(args: Args) -> Result<()> {
    match args.action {
        Action::List => {
            for p in amri_protocol::builtin()? {
                println!("{:<26} {}", p.name, p.description);
            }
        }
        Action::Show { protocol } => print!("{}", Protocol::resolve(&protocol)?.to_toml()),
        Action::Check { files } => {
            let mut bad = 0;
            for f in &files {
                match Protocol::load(f) {
                    Ok(p) => println!("{}: ok ({})", f.display(), p.name),
                    Err(e) => {
                        eprintln!("error: {e}");
                        bad += 1;
                    }
                }
            }
            if bad > 0 {
                anyhow::bail!("{bad} of {} protocol files have errors", files.len());
            }
        }
    }
    Ok(())
}

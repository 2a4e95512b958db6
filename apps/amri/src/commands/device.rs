//! The compute device of the learned prior (`amri --device`): `cpu`, `cuda`, `cuda:N` or `auto`.
//!
//! Only the prior (training, one-step, iterative, memorisation) runs on a GPU; I/O, operators and
//! the classical solvers stay on the CPU. GPUs need a build with the `cuda` feature
//! (`scripts/build-cuda.sh`); default builds run everything on the CPU.

use std::sync::OnceLock;

use anyhow::{bail, Context, Result};
use candle_core::Device;

static SPEC: OnceLock<String> = OnceLock::new();

/// Records the `--device` value for [`current`] (the first call wins).
pub fn set(spec: &str) {
    let _ = SPEC.set(spec.to_string());
}

/// The device named by `--device` (default `auto`).
pub fn current() -> Result<Device> {
    parse(SPEC.get().map(String::as_str).unwrap_or("auto"))
}

/// A candle error without the backtrace candle attaches (a user without a GPU needs the message,
/// not a stack of candle's frames).
fn plain(e: candle_core::Error) -> anyhow::Error {
    match e {
        candle_core::Error::WithBacktrace { inner, .. } => plain(*inner),
        other => anyhow::Error::msg(other.to_string()),
    }
}

/// `cpu`; `cuda` or `cuda:N` (GPU N, an error in a build without the `cuda` feature or without
/// that GPU); `auto`: GPU 0 in a `cuda` build when it can be opened, else the CPU.
pub fn parse(spec: &str) -> Result<Device> {
    let cuda_built = candle_core::utils::cuda_is_available();
    match spec {
        "cpu" => Ok(Device::Cpu),
        "auto" => Ok(if cuda_built {
            Device::new_cuda(0).unwrap_or(Device::Cpu)
        } else {
            Device::Cpu
        }),
        s if s == "cuda" || s.starts_with("cuda:") => {
            let n: usize = match s.strip_prefix("cuda:") {
                None => 0,
                Some(k) => k
                    .parse()
                    .with_context(|| format!("--device {s}: {k:?} is not a GPU number"))?,
            };
            if !cuda_built {
                bail!(
                    "--device {s}: this amri was built without the cuda feature; build it with \
                     scripts/build-cuda.sh (cargo build --release -p amri --features cuda)"
                );
            }
            Device::new_cuda(n)
                .map_err(plain)
                .with_context(|| format!("--device {s}: cannot open CUDA GPU {n}"))
        }
        _ => bail!("--device {spec}: expected cpu, cuda, cuda:N or auto"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candle_backtraces_are_left_out_of_the_message() {
        let inner = candle_core::Error::Msg("no CUDA driver".into());
        let e = candle_core::Error::WithBacktrace {
            inner: Box::new(inner),
            backtrace: Box::new(std::backtrace::Backtrace::force_capture()),
        };
        assert!(
            e.to_string().lines().count() > 1,
            "the backtrace is in candle's message"
        );
        assert_eq!(plain(e).to_string(), "no CUDA driver");
    }

    #[test]
    fn cpu_and_auto_and_bad_names() {
        assert!(matches!(parse("cpu"), Ok(Device::Cpu)));
        let auto = parse("auto").map(|d| d.is_cpu());
        // without the feature `auto` must fall back to the CPU
        if !candle_core::utils::cuda_is_available() {
            assert!(matches!(auto, Ok(true)));
        }
        let e = parse("gpu")
            .err()
            .map(|e| format!("{e:#}"))
            .unwrap_or_default();
        assert!(e.contains("expected cpu, cuda"), "{e}");
        let e = parse("cuda:x")
            .err()
            .map(|e| format!("{e:#}"))
            .unwrap_or_default();
        assert!(e.contains("not a GPU number"), "{e}");
    }

    #[cfg(not(feature = "cuda"))]
    #[test]
    fn cuda_without_the_feature_says_how_to_build_it() {
        for s in ["cuda", "cuda:1"] {
            let e = parse(s).err().map(|e| format!("{e:#}")).unwrap_or_default();
            assert!(
                e.contains("without the cuda feature") && e.contains("build-cuda.sh"),
                "{e}"
            );
        }
    }
}

#!/usr/bin/env bash
# Classical reconstruction, amri vs BART: l1-wavelet and TV on one 256x256 slice of the shipped
# Colin27 validation scan, 1 and 8 coils, six masks; prints a Markdown table (PSNR/SSIM against
# the fully sampled image, wall time). Needs `bart` on PATH (Debian: apt-get install bart).
# Usage: bench/bart_compare.sh [extra options of the example, e.g. --iters 50 --slice 10]
set -euo pipefail
cd "$(dirname "$0")/.."
command -v bart >/dev/null || { echo "bart not found on PATH" >&2; exit 1; }
cargo build --release -p amri-recon --example bart_compare
echo "machine: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores; date: $(date -u +%Y-%m-%d); $(bart version 2>/dev/null | sed 's/^/BART /')"
./target/release/examples/bart_compare "$@"

#!/usr/bin/env bash
# Classical reconstruction, amri vs BART: l1-wavelet and TV on one 256x256 slice of the shipped
# Colin27 validation scan, as a complex image (smooth synthetic phase) and as a real-valued one
# (the magnitude, zero phase), 1 and 8 coils, six masks; prints Markdown tables (PSNR/SSIM
# against the fully sampled image, wall time; l1-wavelet PSNR at λ = 0.001, 0.005, 0.01).
# l1-wavelet: amri's defaults (BART's transform and FISTA) and, at λ = 0.005, amri's l1-wavelet
# before #19 (orthonormal db4). TV: amri's ADMM with its default TV and with BART's
# periodic TV (TvDef::BART), each against the one `bart pics -R T:3:0:λ` run; `--iters` is
# BART's `-i`, which for ADMM counts CG steps. Prints the load average before and after, since
# the timings are wall times, and OMP_NUM_THREADS (BART's OpenMP threads: on a loaded machine
# OMP_NUM_THREADS=1 keeps BART from spinning against other jobs). Needs `bart` on PATH (Debian:
# apt-get install bart).
# Usage: bench/bart_compare.sh [extra options of the example, e.g. --iters 50 --slice 10]
set -euo pipefail
cd "$(dirname "$0")/.."
command -v bart >/dev/null || { echo "bart not found on PATH" >&2; exit 1; }
cargo build --release -p amri-recon --example bart_compare
echo "machine: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc --all) cores; date: $(date -u +%Y-%m-%d); $(bart version 2>/dev/null | sed 's/^/BART /')"
echo "OMP_NUM_THREADS=${OMP_NUM_THREADS:-unset}"
echo "load before: $(uptime | sed 's/.*load average: //')"
./target/release/examples/bart_compare "$@"
echo "load after: $(uptime | sed 's/.*load average: //')"

#!/usr/bin/env bash
# One training step (forward, backward, AdamW; batch B) of the same U-Net in amri and in PyTorch,
# CPU, side by side: for every network spec and image size, amri's `step_bench` then
# `bench/torch_step.py`, back to back, ROUNDS times interleaved, each a median of STEPS steps after
# one warm-up step. The 1-minute load average is printed before every run (the machine may be
# shared). Output: one line per run, then a markdown table of the medians over rounds (a job listed
# twice pools its runs; the median of an even count is the lower middle value).
#
# Usage (repository root, after
#   cargo build --release --locked -p amri-diffusion --example step_bench
# and `pip install torch`):
#   bash bench/step_compare.sh [THREADS] [BATCH] [STEPS] [ROUNDS] SPEC@SIZE...
# e.g. bash bench/step_compare.sh 2 8 3 2 tiny@64 clinical@256 'tiny:f=2,base=16@256'
# SPEC is a preset name with optional `:key=value,…` overrides (see step_bench.rs); a spec whose
# amri preset name PyTorch does not know (a new one) needs the same name in torch_step.py's PRESETS.
set -euo pipefail
threads=${1:-2}
batch=${2:-8}
steps=${3:-3}
rounds=${4:-1}
shift 4 || true
bin=${STEP_BENCH:-target/release/examples/step_bench}
[ -x "$bin" ] || { echo "no $bin: build it first (see the header)" >&2; exit 1; }
export RAYON_NUM_THREADS=$threads OMP_NUM_THREADS=$threads
# On a shared machine PyTorch's OpenMP threads spin at barriers while another process holds the
# core: tiny 64×64 took 7.9 s per step with the default policy against 1.4 s with PASSIVE
# (2026-12-05, load average ≈ 8.5). PASSIVE is used unless the caller sets another policy.
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
declare -A amri torch
echo "# $(date -u +%FT%TZ) $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(grep -c ^processor /proc/cpuinfo) cores;" \
  "torch $(python3 -c 'import torch; print(torch.__version__)') (OMP_WAIT_POLICY=$OMP_WAIT_POLICY); threads $threads, batch $batch, median of $steps steps"
load() { cut -d' ' -f1 /proc/loadavg; }
for r in $(seq 1 "$rounds"); do
  for job in "$@"; do
    spec=${job%@*}
    size=${job##*@}
    l=$(load)
    a=$("$bin" "$spec" "$size" "$batch" "$steps" | sed -n 's/.*ms_per_step=\([0-9.]*\).*/\1/p')
    l2=$(load)
    t=$(python3 bench/torch_step.py "$spec" "$size" "$batch" "$steps" | sed -n 's/.*ms_per_step=\([0-9.]*\).*/\1/p')
    echo "round $r  $spec @ $size: amri $a ms (load $l)  torch $t ms (load $l2)"
    amri[$job]="${amri[$job]:-} $a"
    torch[$job]="${torch[$job]:-} $t"
  done
done
median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}'; }
echo
echo "| network | size | amri ms/step | PyTorch ms/step | ratio |"
echo "| --- | ---: | ---: | ---: | ---: |"
declare -A shown
for job in "$@"; do
  [ -n "${shown[$job]:-}" ] && continue
  shown[$job]=1
  a=$(echo "${amri[$job]}" | median)
  t=$(echo "${torch[$job]}" | median)
  ratio=$(awk -v a="$a" -v t="$t" 'BEGIN { if (t > 0) printf "%.2f×", a / t; else print "—" }')
  echo "| \`${job%@*}\` | ${job##*@} | $a (${amri[$job]# }) | $t (${torch[$job]# }) | $ratio |"
done

#!/usr/bin/env bash
# CI smoke run of every cargo-fuzz target: installs cargo-fuzz (pinned) if missing, builds the
# targets with the stable toolchain (RUSTC_BOOTSTRAP=1 lets it take cargo-fuzz's nightly flags),
# and runs each for SECONDS_PER_TARGET seconds (default 10) from a fresh seed corpus of the
# sample scans and fixtures. Any crash, hang (> 10 s per input) or allocation over 2 GiB fails
# the run; the input lands in fuzz/artifacts/<target>/. AMRI_FUZZ_SMOKE=0 skips it. The long
# run: fuzz/run_long.sh.
set -euo pipefail
cd "$(dirname "$0")"
if [ "${AMRI_FUZZ_SMOKE:-1}" = 0 ]; then
  echo "fuzz smoke: skipped (AMRI_FUZZ_SMOKE=0)"
  exit 0
fi
export RUSTC_BOOTSTRAP=1
CARGO_FUZZ_VERSION=0.13.2
SECONDS_PER_TARGET=${SECONDS_PER_TARGET:-10}
targets=(dicom nifti nifti_gz npy npz cfl hdf5 ismrmrd protocol)
start=$(date +%s)
if ! cargo fuzz --version 2>/dev/null | grep -qF "$CARGO_FUZZ_VERSION"; then
  cargo install cargo-fuzz --version "$CARGO_FUZZ_VERSION" --locked
fi
installed=$(date +%s)
cargo fuzz build -O
built=$(date +%s)
seeds=$(mktemp -d)
trap 'rm -rf "$seeds"' EXIT
bash seed_corpus.sh "$seeds" >/dev/null
for t in "${targets[@]}"; do
  mkdir -p "artifacts/$t"
  log="$seeds/$t.log"
  # A fixed libFuzzer seed (FUZZ_SEED) makes a CI failure reproducible.
  if ! cargo fuzz run -O "$t" "$seeds/$t" -- -max_total_time="$SECONDS_PER_TARGET" \
    -seed="${FUZZ_SEED:-1}" -rss_limit_mb=2048 -malloc_limit_mb=2048 -max_len=65536 -timeout=10 \
    -print_final_stats=1 >"$log" 2>&1; then
    tail -n 60 "$log"
    echo "fuzz smoke: target $t FAILED; the input is in fuzz/artifacts/$t/" >&2
    exit 1
  fi
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1)
  echo "fuzz smoke: $t ok, ${execs:-?} executions in ${SECONDS_PER_TARGET} s"
done
echo "fuzz smoke: cargo-fuzz $((installed - start)) s, build $((built - installed)) s," \
  "runs $(($(date +%s) - built)) s"

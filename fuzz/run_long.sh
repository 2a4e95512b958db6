#!/usr/bin/env bash
# The long fuzz run: builds every cargo-fuzz target and runs them one after another (one
# libFuzzer process at a time, at the lowest CPU priority), each until it has executed RUNS
# inputs or MAX_SECONDS have passed, whichever comes first. Logs go to LOG_DIR, one per target,
# and a summary line per target (executions, seconds, result) to LOG_DIR/summary.txt.
#
#   bash fuzz/run_long.sh                         # all targets, 1 M executions each (≤ 30 min each)
#   RUNS=5000000 MAX_SECONDS=3600 bash fuzz/run_long.sh dicom npy
#
# A crash, hang or out-of-memory input lands in fuzz/artifacts/<target>/; keep it as a
# regression test (crates/amri-io/tests/fuzz_regressions.rs) once fixed.
set -euo pipefail
cd "$(dirname "$0")"
export RUSTC_BOOTSTRAP=1 # cargo-fuzz needs nightly flags; this lets the stable toolchain take them
RUNS=${RUNS:-1000000}
MAX_SECONDS=${MAX_SECONDS:-1800}
LOG_DIR=${LOG_DIR:-target/logs} # relative to fuzz/; fuzz/target is git-ignored
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(dicom nifti nifti_gz npy npz cfl hdf5 ismrmrd protocol)
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --version 0.13.2 --locked
mkdir -p "$LOG_DIR"
[ -d corpus/dicom ] || bash seed_corpus.sh
nice -n 19 cargo fuzz build -O
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t" "artifacts/$t"
  log="$LOG_DIR/$t.log"
  start=$(date +%s)
  set +e
  # -max_len: the largest seed (a 43 kB DICOM file) with room to grow; -timeout: a hang is an
  # input taking over 10 s; -rss_limit_mb: an allocation the input cannot justify is a bug.
  nice -n 19 cargo fuzz run -O "$t" "corpus/$t" -- \
    -runs="$RUNS" -max_total_time="$MAX_SECONDS" -rss_limit_mb=2048 -malloc_limit_mb=2048 \
    -max_len=65536 -timeout=10 -print_final_stats=1 >"$log" 2>&1
  rc=$?
  set -e
  secs=$(($(date +%s) - start))
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1)
  if [ "$rc" = 0 ]; then result=ok; else result="FAILED (exit $rc): see $log and artifacts/$t/"; fi
  echo "$(date -u +%FT%TZ) $t executions=${execs:-?} seconds=$secs $result" | tee -a "$LOG_DIR/summary.txt"
done

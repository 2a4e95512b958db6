#!/usr/bin/env bash
# One-step quality of training checkpoints on one measured-data bundle: for each checkpoint folder,
# `amri recon --method one-step` (σ = $SIGMA, default the CLI's) with and without
# --data-consistency, PSNR/SSIM as amri reports them against the bundle's reference. Prints CSV:
# checkpoint,steps,psnr,ssim,psnr_dc,ssim_dc (steps: the "steps" field of the checkpoint's card).
#
# Usage: bench/checkpoint_psnr.sh DATA.npz CKPT_DIR [CKPT_DIR ...]
#   AMRI=path/to/amri (default: target/release/amri), SIGMA=σ given to the network (default: the
#   CLI's), RECON_ARGS=more `amri recon` flags (e.g. --no-average-flips), RAYON_NUM_THREADS as usual.
# Example (the curve of docs/benchmarks.md, "Longer training"):
#   amri simulate --protocol singlecoil-r4-cartesian \
#     sample-scans/colin27/lowres/t1_axial_val_64.nii.gz runs/val_r4.npz
#   bench/checkpoint_psnr.sh runs/val_r4.npz runs/r4-ambient-cont/ckpt-* > curve.csv
# The 256×256 runs' STATE.md scores (training/*/README.md for val_r4.h5):
#   SIGMA=0.01 bench/checkpoint_psnr.sh val_r4.h5 run/ckpt-00001750 > curve.csv
set -euo pipefail
AMRI=${AMRI:-target/release/amri}
[[ $# -ge 2 ]] || { sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
DATA=$1
shift
[[ -f $DATA ]] || { echo "checkpoint_psnr.sh: $DATA: no such file" >&2; exit 2; }
[[ -x $AMRI ]] || { echo "checkpoint_psnr.sh: $AMRI is not an executable (set AMRI=...)" >&2; exit 2; }
SIGMA_ARGS=()
[[ -n ${SIGMA:-} ]] && SIGMA_ARGS=(--sigma "$SIGMA")
read -r -a MORE_ARGS <<< "${RECON_ARGS:-}"
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
# prints "psnr,ssim" of one reconstruction
one() {
    rm -f "$TMP/o.nii.gz" "$TMP/s.csv"
    "$AMRI" recon -q --method one-step "${SIGMA_ARGS[@]}" "${MORE_ARGS[@]}" --model "$@" --summary "$TMP/s.csv" "$DATA" "$TMP/o.nii.gz" >/dev/null
    awk -F, 'NR == 2 { if ($3 != "ok") { print "recon failed: " $0 > "/dev/stderr"; exit 1 } printf "%.3f,%.4f", $5, $6 }' "$TMP/s.csv"
}
echo "checkpoint,steps,psnr,ssim,psnr_dc,ssim_dc"
for c in "$@"; do
    steps=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["steps"])' "$c/model.json")
    echo "$c,$steps,$(one "$c"),$(one "$c" --data-consistency)"
done

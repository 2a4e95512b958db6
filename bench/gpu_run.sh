#!/usr/bin/env bash
# The GPU measurements of docs/benchmarks.md in one go, on a machine with an NVIDIA GPU, a CUDA 13
# driver and a PyTorch with CUDA (its pip-installed nvidia/cu13 libraries serve the amri binary):
#   1. a 3-step smoke run of `amri --device cuda train` (stops here if the GPU path fails);
#   2. one training step of the same U-Net in amri (release/examples/step_bench) and in PyTorch
#      (bench/torch_step.py), same GPU, tiny preset at 64×64 (batch 8 and 32) and base at 256×256;
#   3. the R=4 ambient prior and its clean twin trained side by side on the GPU for MINUTES of
#      wall time each (`--max-minutes`), batch 32, with the shipped priors' other settings
#      (`amri train` checks the GPU's gradient against the CPU's at steps 0 and 20);
#   4. one-step PSNR of the shipped priors and of the two new runs on the R=4 validation slices.
# Usage (repository root): bash bench/gpu_run.sh BIN_DIR OUT_DIR [MINUTES]
#   BIN_DIR holds `amri` and `step_bench` from `bash scripts/build-cuda.sh` (release/ and
#   release/examples/ of its target folder); OUT_DIR receives gpu.log, bench.txt and one
#   <run>.tar.gz per training run (latest checkpoint, loss.csv, loss.png; resumable).
set -uo pipefail
bin=${1:?BIN_DIR}
out=${2:?OUT_DIR}
minutes=${3:-5}
mkdir -p "$out"
exec > >(tee -a "$out/gpu.log") 2>&1

# The loader must find CUDA 13's cudart, cuBLAS and cuRAND (libcuda comes with the driver).
libs=$(python3 - <<'EOF'
import glob, os, site
dirs = []
for sp in site.getsitepackages():
    for name in ("libcudart.so.13", "libcublas.so.13", "libcurand.so.10"):
        for f in glob.glob(os.path.join(sp, "nvidia", "**", name), recursive=True):
            d = os.path.dirname(f)
            if d not in dirs:
                dirs.append(d)
print(":".join(dirs))
EOF
)
export LD_LIBRARY_PATH="$libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
echo "== $(date -u +%FT%TZ) $(nvidia-smi -L 2>&1 | head -1); driver $(nvidia-smi --query-gpu=driver_version --format=csv,noheader 2>&1)"
echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
python3 -c 'import torch; print("torch", torch.__version__, torch.cuda.get_device_name(0))'

train_inputs=(sample-scans/colin27/lowres/t1_axial_train1_64.nii.gz
              sample-scans/colin27/lowres/t1_axial_train2_64.nii.gz)
work=$(mktemp -d)

echo "== smoke: 3 training steps on the GPU"
if ! timeout 180 "$bin/amri" --device cuda train --protocol protocols/singlecoil-r4-ambient-train.toml \
    --preset tiny --steps 3 --batch 4 --no-progress --out "$work/smoke" "${train_inputs[@]}"; then
  echo "SMOKE FAILED"
  exit 3
fi

echo "== one training step, amri vs PyTorch on the same GPU (median ms)"
for cfg in "tiny 64 8 30" "tiny 64 32 30" "base 256 8 10"; do
  timeout 120 "$bin/step_bench" $cfg cuda | tee -a "$out/bench.txt"
  timeout 120 python3 bench/torch_step.py $cfg cuda | tee -a "$out/bench.txt"
done

echo "== training for $minutes min each (ambient and clean twin side by side)"
common=(--protocol protocols/singlecoil-r4-ambient-train.toml --preset tiny --steps 1000000
        --batch 32 --lr 0.002 --warmup 200 --ema 0.999 --checkpoint-every 1000 --seed 0
        --max-minutes "$minutes" --no-progress)
"$bin/amri" --device cuda train "${common[@]}" --objective ambient --hidden-weight 4 \
  --out "$work/gpu-r4-ambient" "${train_inputs[@]}" &
a=$!
"$bin/amri" --device cuda train "${common[@]}" --objective clean \
  --out "$work/gpu-r4-clean" "${train_inputs[@]}" &
c=$!
wait $a; echo "ambient exit $?"
wait $c; echo "clean exit $?"
echo "== one-step PSNR on the R=4 validation slices (shipped CPU priors: ambient 18.91 (7500 steps) / clean 19.03 dB)"
"$bin/amri" simulate --protocol protocols/singlecoil-r4-cartesian.toml \
  sample-scans/colin27/lowres/t1_axial_val_64.nii.gz "$work/val_r4.npz" >/dev/null
for d in models/colin27-64-r4-ambient models/colin27-64-r4-clean "$work/gpu-r4-ambient" "$work/gpu-r4-clean"; do
  echo "$d: $("$bin/amri" --device cuda recon --no-progress --force --method one-step --model "$d" \
    "$work/val_r4.npz" "$work/one.npy" 2>&1 | tail -1)"
done
for run in gpu-r4-ambient gpu-r4-clean; do
  d="$work/$run"
  [ -f "$d/latest" ] || continue
  tail -1 "$d/loss.csv"
  tar czf "$out/$run.tar.gz" -C "$d" latest loss.csv loss.png "$(cat "$d/latest")"
done
ls -la "$out"

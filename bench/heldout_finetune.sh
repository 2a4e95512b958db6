#!/usr/bin/env bash
# #18 §4 on a held-out subject (docs/benchmarks.md, "Fine-tuning on a held-out subject"):
# fine-tune the shipped 64x64 R=4 prior on 30 corrupted slices of a subject it never saw (the
# MNI ICBM152 2009a T1 template, sample-scans/make_heldout.py) and score every method on that
# subject's OTHER slices. Nothing is chosen on the scored slices: classical λ are picked by PSNR
# on the 30 fine-tuning slices (their references are read only for that), and the fine-tuned
# model for the iterative row by its one-step PSNR on the fine-tuning slices.
#
# Steps (each skipped when its output exists, so an interrupted run continues):
#   data      make_heldout.py -> OUT/data/mni_{finetune,score}_64.nii.gz; amri simulate
#             singlecoil-r4-cartesian, seed 1 (fine-tuning) and seed 2 (scored)
#   classical zero-filled, cg-sense; amri l1-wavelet / tv and BART pics -l1 / -R T over the λ grid
#             on the fine-tuning slices, the best λ of each applied to the scored slices
#   finetune  amri finetune --base models/colin27-64-r4-ambient --adapt full|lora|last-layers
#             --steps 400 --batch 8 --lr 1e-3 --warmup 20 --seed 0 on OUT/data/ft_r4.npz only
#             (measured route: k-space and mask; its reference is never read), timed
#   priors    one-step (default σ) with and without --data-consistency on both splits for the
#             base, its clean twin and the three fine-tunes; iterative (default steps/samples)
#             for the base and the fine-tune with the best one-step PSNR on the fine-tuning slices
# Writes OUT/results.csv (split,method,label,lambda,psnr,ssim,nmse,seconds), OUT/finetune.csv
# (mode, wall seconds, load averages), OUT/commands.log.
#
# Usage: bench/heldout_finetune.sh [--out DIR] [--amri PATH] [--wheel PATH] [--modes LIST]
#        [--skip-bart] [--skip-iterative] [--ema E] [--tag T --ft-args "ARGS"]
#        [--seed N]
# --ema E fine-tunes with EMA decay E (default amri's 0.999) into runs/ft-MODE-emaE, rows
# one-step-ft-MODE-emaE; a run with --ema adds those models beside the earlier ones. --tag T
# --ft-args "ARGS" does the same with further amri finetune flags (suffix -T); --seed N is the
# fine-tunes' seed (default 0; give another --tag with it).
# Needs python3 with numpy, scipy, nibabel, scikit-image; bart (unless --skip-bart); the nilearn
# 0.14.1 wheel (pip download nilearn==0.14.1 --no-deps). Heavy commands run under nice -n 19,
# except the fine-tunes (their wall time is what is measured).
set -euo pipefail
{
cd "$(dirname "$0")/.."
OUT=runs/heldout
AMRI=target/release/amri
WHEEL=/tmp/nl/nilearn-0.14.1-py3-none-any.whl
MODES="full lora last-layers"
SKIP_BART=0
SKIP_IT=0
EMA=""
TAG=""
FTSEED=0
FTARGS=""
LAMBDAS="0.001 0.002 0.005 0.01 0.02 0.05 0.1 0.2 0.5"
BASE=models/colin27-64-r4-ambient
CLEAN=models/colin27-64-r4-clean
die() { echo "heldout_finetune.sh: $*" >&2; exit 2; }
while [[ $# -gt 0 ]]; do
    case $1 in
        --out) OUT=$2; shift 2 ;;
        --amri) AMRI=$2; shift 2 ;;
        --wheel) WHEEL=$2; shift 2 ;;
        --modes) MODES=${2//,/ }; shift 2 ;;
        --skip-bart) SKIP_BART=1; shift ;;
        --skip-iterative) SKIP_IT=1; shift ;;
        --ema) EMA=$2; shift 2 ;;
        --tag) TAG=$2; shift 2 ;;
        --seed) FTSEED=$2; shift 2 ;;
        --ft-args) FTARGS=$2; shift 2 ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown option $1 (see --help)" ;;
    esac
done
[[ -x $AMRI ]] || die "no amri binary at $AMRI (cargo build --release -p amri, or --amri PATH)"
[[ -f $WHEEL ]] || die "no nilearn wheel at $WHEEL (pip download nilearn==0.14.1 --no-deps -d DIR)"
python3 -c "import numpy, scipy, nibabel, skimage" 2>/dev/null || die "python3 needs numpy scipy nibabel scikit-image"
[[ $SKIP_BART == 1 ]] || command -v bart >/dev/null || die "bart not found (apt-get install bart, or --skip-bart)"
mkdir -p "$OUT"/{data,recon,logs,bart,runs}
LOG=$OUT/commands.log
RES=$OUT/results.csv
[[ -f $RES ]] || echo "split,method,label,lambda,psnr,ssim,nmse,seconds" >"$RES"
NICE=(nice -n 19)
PY=bench/quality_metrics.py
run() { printf '$ %s\n' "$(printf '%q ' "$@")" >>"$LOG"; "$@" >>"$LOG" 2>&1; }

# --- data
if [[ ! -f $OUT/data/score_r4.npz ]]; then
    run python3 sample-scans/make_heldout.py --wheel "$WHEEL" --out "$OUT/data"
    run "$AMRI" simulate --protocol singlecoil-r4-cartesian --seed 1 "$OUT/data/mni_finetune_64.nii.gz" "$OUT/data/ft_r4.npz"
    run "$AMRI" simulate --protocol singlecoil-r4-cartesian --seed 2 "$OUT/data/mni_score_64.nii.gz" "$OUT/data/score_r4.npz"
fi
declare -A NPZ=([ft]=$OUT/data/ft_r4.npz [score]=$OUT/data/score_r4.npz)

have() { awk -F, -v s="$1" -v m="$2" -v l="$3" '$1 == s && $2 == m && $4 == l { f = 1 } END { exit !f }' "$RES"; }
# recon SPLIT METHOD LABEL LAMBDA amri-recon-args...: one amri recon, one row of results.csv
recon() {
    local split=$1 method=$2 label=$3 lam=$4
    shift 4
    have "$split" "$method" "$lam" && return 0
    local sum=$OUT/logs/$split.$method.$lam.csv
    mkdir -p "$OUT/recon/$split"
    rm -f "$sum"
    run "${NICE[@]}" "$AMRI" recon --no-progress --force "$@" --summary "$sum" "${NPZ[$split]}" \
        "$OUT/recon/$split/$method${lam:+_$lam}.npy"
    python3 - "$sum" "$split" "$method" "$label" "$lam" >>"$RES" <<'PYEOF'
import csv, sys
r = list(csv.DictReader(open(sys.argv[1], newline="")))[0]
if r["status"] != "ok":
    raise SystemExit(f"{sys.argv[1]}: {r['error']}")
print(",".join(sys.argv[2:6] + [r["psnr"], r["ssim"], r["nmse"], r["seconds"]]))
PYEOF
}
# best SPLIT METHOD: the λ with the highest PSNR among METHOD's rows of SPLIT
best() { awk -F, -v s="$1" -v m="$2" '$1 == s && $2 == m && $5 > b { b = $5; l = $4 } END { print l }' "$RES"; }
# bart_run SPLIT METHOD LAMBDA: BART pics slice by slice, metrics by quality_metrics.py
bart_run() {
    local split=$1 meth=$2 lam=$3 d=$OUT/bart/$1 reg n i
    have "$split" "bart-$meth" "$lam" && return 0
    if [[ ! -f $d/ksp.cfl ]]; then
        mkdir -p "$d"
        run "$AMRI" convert "${NPZ[$split]}" "$d/ksp.cfl"
        run bart ones 4 64 64 1 1 "$d/sens"
        n=$(python3 -c "import numpy as np; print(np.load('${NPZ[$split]}')['mask'].shape[0])")
        for ((i = 0; i < n; i++)); do
            run bart slice 2 "$i" "$d/ksp" "$d/k$i"; run bart slice 2 "$i" "$d/ksp_mask" "$d/m$i"
        done
    fi
    [[ $meth == l1 ]] && reg=(-l1 -r "$lam") || reg=(-R "T:3:0:$lam")
    local parts=() t0 t1
    t0=$(date +%s.%N)
    for f in "$d"/k[0-9]*.cfl; do
        i=${f##*/k}; i=${i%.cfl}
        run "${NICE[@]}" bart pics -S -p "$d/m$i" "${reg[@]}" -i 100 "$d/k$i" "$d/sens" "$d/r$i"
    done
    n=$(ls "$d"/k[0-9]*.cfl | wc -l)
    for ((i = 0; i < n; i++)); do parts+=("$d/r$i"); done
    t1=$(date +%s.%N)
    run bart join 2 "${parts[@]}" "$d/$meth-$lam"
    local m
    m=$(python3 "$PY" metrics "${NPZ[$split]}" "$d/$meth-$lam")
    echo "$split,bart-$meth,$([[ $meth == l1 ]] && echo 'l1-wavelet (BART pics)' || echo 'TV (BART pics)'),$lam,$m,$(echo "$t1 - $t0" | bc)" >>"$RES"
}

# --- classical
for s in ft score; do
    recon "$s" zero-filled zero-filled "" --method zero-filled
    recon "$s" cg-sense CG-SENSE "" --method cg-sense --iters 100 --lambda 0
done
for lam in $LAMBDAS; do
    recon ft l1-wavelet "l1-wavelet (amri)" "$lam" --method l1-wavelet --lambda "$lam" --iters 100 --tol 0 --seed 0
    recon ft tv "TV (amri)" "$lam" --method tv --lambda "$lam" --iters 100 --tol 0
    if [[ $SKIP_BART == 0 ]]; then bart_run ft l1 "$lam"; bart_run ft tv "$lam"; fi
done
lam=$(best ft l1-wavelet); recon score l1-wavelet "l1-wavelet (amri)" "$lam" --method l1-wavelet --lambda "$lam" --iters 100 --tol 0 --seed 0
lam=$(best ft tv); recon score tv "TV (amri)" "$lam" --method tv --lambda "$lam" --iters 100 --tol 0
if [[ $SKIP_BART == 0 ]]; then
    bart_run score l1 "$(best ft bart-l1)"
    bart_run score tv "$(best ft bart-tv)"
fi

# --- fine-tunes (one at a time, not niced: their wall time is measured)
FT=$OUT/finetune.csv
[[ -f $FT ]] || echo "adapt,seconds,load1_start,load1_end,start_utc" >"$FT"
[[ -z $FTARGS || -n $TAG ]] || die "--ft-args needs --tag"
SUF=${EMA:+-ema$EMA}${TAG:+-$TAG}
EMAARG=(); [[ -z $EMA ]] || EMAARG=(--ema "$EMA")
read -r -a more <<<"$FTARGS"
EMAARG+=("${more[@]}")
for mode in $MODES; do
    r=$OUT/runs/ft-$mode$SUF
    [[ -f $r/latest ]] && continue   # done (or run by hand; add its row to finetune.csv)
    l0=$(cut -d' ' -f1 /proc/loadavg); st=$(date -u +%FT%TZ); t0=$(date +%s)
    run "$AMRI" finetune --base "$BASE" --adapt "$mode" --steps 400 --batch 8 --lr 1e-3 --warmup 20 \
        --checkpoint-every 400 --seed "$FTSEED" "${EMAARG[@]}" --no-progress --out "$r" "${NPZ[ft]}"
    echo "$mode$SUF,$(($(date +%s) - t0)),$l0,$(cut -d' ' -f1 /proc/loadavg),$st" >>"$FT"
done

# --- priors
declare -A MODEL=([base]=$BASE [clean]=$CLEAN)
for d in "$OUT"/runs/ft-*; do [[ -f $d/latest ]] && MODEL[${d##*/}]=$d; done
for name in base clean $(for m in $MODES; do echo "ft-$m$SUF"; done); do
    for s in ft score; do
        recon "$s" "one-step-$name" "one-step $name" "" --method one-step --model "${MODEL[$name]}"
        recon "$s" "one-step-dc-$name" "one-step + DC $name" "" --method one-step --data-consistency --model "${MODEL[$name]}"
    done
done
if [[ $SKIP_IT == 0 ]]; then
    top=$(awk -F, '$1 == "ft" && $2 ~ /^one-step-ft-/ && $5 > b { b = $5; m = $2 } END { sub("one-step-", "", m); print m }' "$RES")
    for name in base $top; do
        recon score "iterative-$name" "iterative $name" "" --method iterative --model "${MODEL[$name]}" --seed 0
    done
fi
# --- per slice: each one-step + DC row against the base's and against the classical method with
# the best PSNR on the fine-tuning slices (PSNR per slice, data range = the scored volume's max)
cls=$(awk -F, '$1 == "ft" && $2 !~ /^(one-step|iterative)/ && $5 > b { b = $5; m = $2; l = $4 } END { print m "," l }' "$RES")
python3 - "$OUT" "$cls" >"$OUT/perslice.txt" <<'PYEOF'
import glob, sys
import numpy as np
sys.path.insert(0, "bench")
from quality_metrics import read_image
out, (meth, lam) = sys.argv[1], sys.argv[2].split(",")
gt = np.load(f"{out}/data/score_r4.npz")["reference"].astype(np.float64)
rng = gt.max()
def psnr(path):
    return np.array([10 * np.log10(rng**2 / np.mean((g - p) ** 2)) for g, p in zip(gt, read_image(path))])
cpath = f"{out}/bart/score/{meth[5:]}-{lam}" if meth.startswith("bart-") else f"{out}/recon/score/{meth}_{lam}.npy"
ref = {f"{meth} λ {lam}": psnr(cpath), "one-step + DC base": psnr(f"{out}/recon/score/one-step-dc-base.npy")}
print(f"# {len(gt)} scored slices; per-slice PSNR differences (dB): mean, min, max, slices above")
for f in sorted(glob.glob(f"{out}/recon/score/one-step-dc-*.npy")):
    p = psnr(f)
    for name, r in ref.items():
        d = p - r
        print(f"{f.split('/')[-1][:-4]:32s} vs {name:28s} {d.mean():+.2f} {d.min():+.2f} {d.max():+.2f} {int((d > 0).sum())}/{len(d)}")
PYEOF
cat "$OUT/perslice.txt"
column -s, -t "$RES"
}; exit

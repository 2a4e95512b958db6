#!/usr/bin/env bash
# The quality table of issue #6: classical and learned-prior reconstructions of the low-res
# (64x64) Colin27 validation slices under six single-coil settings, with fastMRI's PSNR / SSIM /
# NMSE (amri's numbers) and wall time per slice; writes OUT/quality.csv, OUT/quality.md (one
# Markdown table per setting, then the λ sweeps), OUT/quality.png (the central slice of each
# reconstruction in the tables), OUT/commands.log (every command run, with its output) and the
# data and reconstructions under OUT/data, OUT/recon, OUT/bart.
#
# Settings (simulated with `amri simulate`, the protocol's fixed seed unless --seed):
#   r4-random      protocols/singlecoil-r4-cartesian.toml        1-D random R=4, 8 % centre
#   r8-random      bench/protocols/singlecoil-r8-cartesian.toml  1-D random R=8, 4 % centre
#   r4-equispaced  bench/protocols/singlecoil-r4-equispaced.toml equispaced R=4, 8 % centre
#   r8-equispaced  bench/protocols/singlecoil-r8-equispaced.toml equispaced R=8, 4 % centre
#   pixel-90       protocols/pixel-90.toml                       90 % of pixels hidden
#   box-32         bench/protocols/box-32.toml                   one 32x32 box hidden (the preset
#                  box-corruption hides a 64x64 box: all of a 64x64 slice)
# Methods: zero-filled; CG-SENSE (single coil without maps: A = M F with M a 0/1 mask and F
# unitary, so CG from zero returns the zero-filled image after one step); amri l1-wavelet and TV
# and BART `pics -S -l1 -r λ` / `pics -S -R T:3:0:λ` (one process per slice, unit coil map, the
# slice's mask as `-p`), each at the λ of the grid with the best PSNR (chosen on these slices:
# optimistic); for each --models DIR: one-step, one-step --data-consistency and iterative.
# On pixel/box data amri's classical methods inpaint (A = M, amri-recon's image-domain data),
# BART pics does not apply (k-space only) and a k-space prior cannot do one-step: those rows say
# "n/a"; a second classical inpainting baseline (scikit-image's biharmonic inpainting, not amri)
# is added there.
#
# Usage: bench/quality_table.sh --out DIR [--models DIR1,DIR2,...] [--slices N] [options]
#   --slices N           the N central validation slices (default all 24)
#   --settings LIST      comma-separated subset of the settings above (default all)
#   --lambdas "L1 L2 …"  λ grid of the sweeps (default "0.001 0.002 0.005 0.01 0.02 0.05 0.1 0.2 0.5")
#   --iters N            iterations of amri l1/TV and BART pics -i (default 100; TV: CG steps)
#   --steps N --samples N  iterative sampler (default 40 steps × 3 samples)
#   --zeta Z --sigma S   passed to amri recon (iterative ζ, one-step σ) when given
#   --seed N             simulation seed (default: the protocol's, 0)
#   --skip-classical     no classical rows at all (prior rows only); to put new models beside the
#                        classical rows of an earlier run, use --classical-from instead
#   --classical-from DIR[,DIR…]  reuse the classical rows of earlier runs (each setting from the
#                        first DIR that has rows for it; its data must be identical: checked by
#                        SHA-256 of the simulated .npz files)
#   --prior-from DIR[,DIR…]  also take the prior rows of earlier runs (each setting from the first
#                        DIR with prior rows for it; identical data, checked the same way), e.g.
#                        models run separately; --models adds to them
#   --skip-bart          no BART rows
#   --amri PATH          amri binary (default: build $CARGO_TARGET_DIR/release/amri)
#   --no-build           do not run cargo build
# Heavy commands run under `nice -n 19`. Needs python3 with numpy, scikit-image, nibabel, PIL (for
# bench/quality_metrics.py: slice subsets, the metrics of BART's images, which are checked
# against amri's own numbers on an amri output in every run, the inpainting baseline and the
# figure) and `bart` (unless --skip-bart).
# Example: the classical part once, then new models beside it (the data must be identical):
#   bench/quality_table.sh --out runs/quality-classical
#   bench/quality_table.sh --out runs/quality --classical-from runs/quality-classical \
#       --models out/prior-ambient,out/prior-clean --steps 40 --samples 3
set -euo pipefail
# The whole script is one brace group, read before it runs, so editing this file cannot disturb
# a run in progress.
{
cd "$(dirname "$0")/.."
ROOT=$PWD
ARGS_ORIG=("$@")

OUT=""
MODELS=""
SLICES=24
SETTINGS="r4-random,r8-random,r4-equispaced,r8-equispaced,pixel-90,box-32"
LAMBDAS="0.001 0.002 0.005 0.01 0.02 0.05 0.1 0.2 0.5"
ITERS=100
STEPS=40
SAMPLES=3
ZETA=""
SIGMA=""
SEED=""
SKIP_CLASSICAL=0
CLASSICAL_FROM=""
PRIOR_FROM=""
SKIP_BART=0
AMRI=""
BUILD=1
NICE=(nice -n 19)
PY="$ROOT/bench/quality_metrics.py"
VAL="sample-scans/colin27/lowres/t1_axial_val_64.nii.gz"

die() { echo "quality_table.sh: $*" >&2; exit 2; }
need() { [[ $# -ge 2 && -n $2 ]] || die "$1 needs a value"; }
while [[ $# -gt 0 ]]; do
    case $1 in
        --out) need "$@"; OUT=$2; shift 2 ;;
        --models) need "$@"; MODELS=$2; shift 2 ;;
        --slices) need "$@"; SLICES=$2; shift 2 ;;
        --settings) need "$@"; SETTINGS=$2; shift 2 ;;
        --lambdas) need "$@"; LAMBDAS=$2; shift 2 ;;
        --iters) need "$@"; ITERS=$2; shift 2 ;;
        --steps) need "$@"; STEPS=$2; shift 2 ;;
        --samples) need "$@"; SAMPLES=$2; shift 2 ;;
        --zeta) need "$@"; ZETA=$2; shift 2 ;;
        --sigma) need "$@"; SIGMA=$2; shift 2 ;;
        --seed) need "$@"; SEED=$2; shift 2 ;;
        --skip-classical) SKIP_CLASSICAL=1; shift ;;
        --classical-from) need "$@"; CLASSICAL_FROM=$2; shift 2 ;;
        --prior-from) need "$@"; PRIOR_FROM=$2; shift 2 ;;
        --skip-bart) SKIP_BART=1; shift ;;
        --amri) need "$@"; AMRI=$2; shift 2 ;;
        --no-build) BUILD=0; shift ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown option $1 (see --help)" ;;
    esac
done
[[ -n $OUT ]] || die "--out DIR is required (see --help)"
[[ $SLICES =~ ^[1-9][0-9]*$ ]] || die "--slices takes a positive integer, got '$SLICES'"
for n in "$ITERS" "$STEPS" "$SAMPLES"; do
    [[ $n =~ ^[1-9][0-9]*$ ]] || die "--iters/--steps/--samples take positive integers, got '$n'"
done
[[ -z $SEED || $SEED =~ ^[0-9]+$ ]] || die "--seed takes a non-negative integer, got '$SEED'"
for l in $LAMBDAS; do
    [[ $l =~ ^[0-9]*\.?[0-9]+([eE][-+]?[0-9]+)?$ ]] || die "--lambdas: '$l' is not a number"
done
IFS=, read -r -a CLASSICAL_DIRS <<<"$CLASSICAL_FROM"
for d in "${CLASSICAL_DIRS[@]}"; do
    [[ -f $d/classical.csv ]] || die "--classical-from $d: no classical.csv there"
done
IFS=, read -r -a PRIOR_DIRS <<<"$PRIOR_FROM"
for d in "${PRIOR_DIRS[@]}"; do
    [[ -f $d/prior.csv ]] || die "--prior-from $d: no prior.csv there"
done
[[ $SKIP_CLASSICAL == 0 || -z $CLASSICAL_FROM ]] || die "--skip-classical and --classical-from exclude each other"
command -v python3 >/dev/null || die "python3 not found"
python3 -c "import numpy, skimage, nibabel, PIL" 2>/dev/null ||
    die "python3 needs numpy, scikit-image, nibabel and PIL (pip install numpy scikit-image nibabel pillow)"
if [[ $SKIP_BART == 0 && $SKIP_CLASSICAL == 0 && -z $CLASSICAL_FROM ]]; then
    command -v bart >/dev/null || die "bart not found on PATH (Debian: apt-get install bart), or use --skip-bart"
fi
IFS=, read -r -a MODEL_DIRS <<<"$MODELS"
for m in "${MODEL_DIRS[@]}"; do
    [[ -d $m ]] || die "--models: $m is not a folder"
done

# key|protocol|label|domain
# key|protocol|label|domain; labels without commas (rows are read back with awk -F,).
SETTING_TABLE="r4-random|protocols/singlecoil-r4-cartesian.toml|1-D random R=4|kspace
r8-random|bench/protocols/singlecoil-r8-cartesian.toml|1-D random R=8|kspace
r4-equispaced|bench/protocols/singlecoil-r4-equispaced.toml|equispaced R=4|kspace
r8-equispaced|bench/protocols/singlecoil-r8-equispaced.toml|equispaced R=8|kspace
pixel-90|protocols/pixel-90.toml|pixel corruption: 90 % of pixels hidden|image
box-32|bench/protocols/box-32.toml|box corruption: one 32×32 box hidden|image"
IFS=, read -r -a WANT <<<"$SETTINGS"
for w in "${WANT[@]}"; do
    grep -q "^$w|" <<<"$SETTING_TABLE" || die "--settings: unknown setting '$w'"
done

mkdir -p "$OUT"/{data,recon,bart,logs}
OUT=$(cd "$OUT" && pwd)
LOG=$OUT/commands.log
: >"$LOG"

# Runs a command, appending it and its output to the log; returns its exit status.
run() {
    printf '$ %s\n' "$(printf '%q ' "$@")" >>"$LOG"
    local rc=0
    "$@" >>"$LOG" 2>&1 || rc=$?
    [[ $rc == 0 ]] || echo "  (exit $rc)" >>"$LOG"
    return $rc
}
# Runs a command, logging it and its standard error; its standard output is printed and logged.
run_out() {
    printf '$ %s\n' "$(printf '%q ' "$@")" >>"$LOG"
    local out rc=0
    out=$("$@" 2>>"$LOG") || rc=$?
    printf '%s\n' "$out" >>"$LOG"
    [[ $rc == 0 ]] || echo "  (exit $rc)" >>"$LOG"
    printf '%s\n' "$out"
    return $rc
}
now() { date +%s.%N; }
csvq() { local s=${1//\"/\"\"}; printf '"%s"' "$s"; }

# --- the binary -------------------------------------------------------------------------------
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/work/target-native}
if [[ -z $AMRI ]]; then
    AMRI=$CARGO_TARGET_DIR/release/amri
    if [[ $BUILD == 1 ]]; then
        echo "building amri (release) ..."
        run "${NICE[@]}" cargo build --release -p amri || die "cargo build failed (see $LOG)"
    fi
fi
[[ -x $AMRI ]] || die "amri binary $AMRI not found (build it, or pass --amri)"
AMRI=$(cd "$(dirname "$AMRI")" && pwd)/$(basename "$AMRI")

COMMIT=$(git -C "$ROOT" rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
DIRTY=$(git -C "$ROOT" status --porcelain -- apps crates Cargo.toml Cargo.lock 2>/dev/null | wc -l)
{
    echo "# quality_table.sh $(printf '%q ' "${ARGS_ORIG[@]}")"
    echo "# date: $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo "# machine: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores"
    echo "# amri: $AMRI, $("$AMRI" --version), commit $COMMIT, $DIRTY uncommitted files under apps/ crates/ Cargo.*; binary sha256 $(sha256sum "$AMRI" | cut -c1-16), built $(date -u -r "$AMRI" '+%Y-%m-%d %H:%M UTC')"
    echo "# load average before: $(uptime | sed 's/.*load average: //')"
} >>"$LOG"
LOAD_BEFORE=$(uptime | sed 's/.*load average: //')

# --- data -------------------------------------------------------------------------------------
INPUT=$VAL
if [[ $SLICES != 24 ]]; then
    INPUT=$OUT/data/t1_axial_val_64_central$SLICES.nii.gz
    run python3 "$PY" subset "$VAL" "$INPUT" "$SLICES" || die "cannot take $SLICES slices of $VAL (see $LOG)"
fi
declare -A MEASURED
for key in "${WANT[@]}"; do
    IFS='|' read -r _ proto _ _ < <(grep "^$key|" <<<"$SETTING_TABLE")
    seed_args=()
    [[ -n $SEED ]] && seed_args=(--seed "$SEED")
    line=$("$AMRI" simulate --protocol "$proto" "${seed_args[@]}" "$INPUT" "$OUT/data/$key.npz" 2>>"$LOG") ||
        die "amri simulate failed for $key (see $LOG)"
    printf '$ %s\n%s\n' "$(printf '%q ' "$AMRI" simulate --protocol "$proto" "${seed_args[@]}" "$INPUT" "$OUT/data/$key.npz")" "$line" >>"$LOG"
    # The first number: amri reports the mean over slices (and slice 0's when they differ).
    MEASURED[$key]=$(grep -o '[0-9.]* % measured' <<<"$line" | head -n 1 | cut -d' ' -f1)
    echo "$key: ${MEASURED[$key]} % measured"
done
(cd "$OUT/data" && sha256sum -- *.npz >SHA256SUMS)
{
    echo "setting,measured_pct"
    for key in "${WANT[@]}"; do echo "$key,${MEASURED[$key]}"; done
} >"$OUT/data/measured.csv"

HEADER_COLS="setting,setting_label,protocol,measured_pct,slices,method,label,model,lambda,iters,psnr,ssim,nmse,seconds,seconds_per_slice,status,note"
# Appends one row to a rows file.
# row FILE key method label model lambda iters psnr ssim nmse seconds status note
row() {
    local f=$1 key=$2 proto label dom
    IFS='|' read -r _ proto label dom < <(grep "^$key|" <<<"$SETTING_TABLE")
    local per=""
    [[ -n ${11} ]] && per=$(awk -v s="${11}" -v n="$SLICES" 'BEGIN { printf "%.6f", s / n }')
    printf '%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s\n' \
        "$key" "$(csvq "$label")" "$proto" "${MEASURED[$key]}" "$SLICES" "$3" "$(csvq "$4")" \
        "$(csvq "$5")" "$6" "$7" "$8" "$9" "${10}" "${11}" "$per" "${12}" "$(csvq "${13}")" >>"$f"
}

# One `amri recon`; appends its row.
# amri_row FILE key tag label model lambda iters name amri-method [more amri recon args]
amri_row() {
    local f=$1 key=$2 method=$3 label=$4 model=$5 lambda=$6 iters=$7 name=$8 amethod=$9
    shift 9
    local dir=$OUT/recon/$key sum
    mkdir -p "$dir"
    sum=$OUT/logs/$key.$name.csv
    rm -f "$sum"
    run "${NICE[@]}" "$AMRI" recon --no-progress --force --method "$amethod" "$@" \
        --summary "$sum" "$OUT/data/$key.npz" "$dir/$name.npy" || true
    local status seconds psnr ssim nmse err
    if [[ ! -f $sum ]]; then
        row "$f" "$key" "$method" "$label" "$model" "$lambda" "$iters" "" "" "" "" failed "amri recon wrote no summary (see commands.log)"
        FAILURES=$((FAILURES + 1))
        return
    fi
    IFS=$'\t' read -r status seconds psnr ssim nmse err < <(python3 - "$sum" <<'EOF'
import csv, sys
r = list(csv.DictReader(open(sys.argv[1], newline="")))[0]
# Empty fields as "-": `read` with IFS=tab would merge consecutive tabs.
print("\t".join(v or "-" for v in [r["status"], r["seconds"], r["psnr"], r["ssim"], r["nmse"],
                                    " ".join(r["error"].split())]))
EOF
    )
    [[ $err == - ]] && err=""
    [[ $seconds == - ]] && seconds=""
    if [[ $status == ok ]]; then
        row "$f" "$key" "$method" "$label" "$model" "$lambda" "$iters" "$psnr" "$ssim" "$nmse" "$seconds" ok "$NOTE"
    elif [[ $err == *"k-space prior cannot"* ]]; then
        row "$f" "$key" "$method" "$label" "$model" "$lambda" "$iters" "" "" "" "" n/a "n/a (k-space prior)"
    elif [[ $err == *"pixel/box prior cannot"* ]]; then
        row "$f" "$key" "$method" "$label" "$model" "$lambda" "$iters" "" "" "" "" n/a "n/a (pixel/box prior)"
    else
        row "$f" "$key" "$method" "$label" "$model" "$lambda" "$iters" "" "" "" "" failed "$err"
        FAILURES=$((FAILURES + 1))
    fi
}
FAILURES=0
NOTE=""

# --- classical --------------------------------------------------------------------------------
# Checks that run DIR simulated the same data as this one (SHA-256 of each setting's .npz).
# same_data DIR FLAG KEY...
same_data() {
    local dir=$1 flag=$2 key old new
    shift 2
    for key in "$@"; do
        old=$(grep " $key.npz\$" "$dir/data/SHA256SUMS" 2>/dev/null | cut -c1-64) || true
        new=$(grep " $key.npz\$" "$OUT/data/SHA256SUMS" | cut -c1-64)
        echo "# $key.npz sha256: this run $new, $dir ${old:-none}" >>"$LOG"
        [[ $old == "$new" ]] ||
            die "$flag $dir: its $key data differ from this run's or are missing (slices, seed or amri changed?)"
    done
}
CLASSICAL=$OUT/classical.csv
if [[ -n $CLASSICAL_FROM ]]; then
    echo "$HEADER_COLS" >"$CLASSICAL"
    CLASSICAL_SOURCES=""
    for key in "${WANT[@]}"; do
        found=""
        for d in "${CLASSICAL_DIRS[@]}"; do
            if awk -F, -v k="$key" 'NR > 1 && $1 == k { found = 1 } END { exit !found }' "$d/classical.csv"; then
                found=$d
                break
            fi
        done
        [[ -n $found ]] || die "--classical-from $CLASSICAL_FROM: no classical rows for $key"
        same_data "$found" --classical-from "$key"
        awk -F, -v k="$key" 'NR > 1 && $1 == k' "$found/classical.csv" >>"$CLASSICAL"
        echo "# classical rows of $key reused from $found/classical.csv" >>"$LOG"
        CLASSICAL_SOURCES+="${CLASSICAL_SOURCES:+, }$key from \`$found\`"
    done
elif [[ $SKIP_CLASSICAL == 1 ]]; then
    echo "$HEADER_COLS" >"$CLASSICAL"
else
    echo "$HEADER_COLS" >"$CLASSICAL"
    if [[ $SKIP_BART == 0 ]]; then
        run bart ones 4 64 64 1 1 "$OUT/bart/sens" || die "bart ones failed (see $LOG)"
    fi
    for key in "${WANT[@]}"; do
        IFS='|' read -r _ _ _ dom < <(grep "^$key|" <<<"$SETTING_TABLE")
        echo "$key: classical ..."
        NOTE=""
        amri_row "$CLASSICAL" "$key" zero-filled "zero-filled" "" "" "" zero-filled zero-filled
        if [[ $dom == image ]]; then
            for lab in "l1-wavelet (BART pics)" "TV (BART pics)"; do
                row "$CLASSICAL" "$key" classical "$lab" "" "" "" "" "" "" "" n/a \
                    "n/a (BART pics reconstructs k-space; image-domain measurement)"
            done
            # A classical inpainting baseline instead (not amri: scikit-image).
            img=$OUT/recon/$key/biharmonic.npy
            lab="biharmonic inpainting (scikit-image)"
            if secs=$(run_out "${NICE[@]}" python3 "$PY" inpaint "$OUT/data/$key.npz" "$img") &&
                m=$(run_out python3 "$PY" metrics "$OUT/data/$key.npz" "$img"); then
                IFS=, read -r psnr ssim nmse <<<"$m"
                row "$CLASSICAL" "$key" biharmonic "$lab" "" "" "" "$psnr" "$ssim" "$nmse" "$secs" ok \
                    "classical inpainting of the measured pixels, not amri (one Python thread)"
            else
                row "$CLASSICAL" "$key" biharmonic "$lab" "" "" "" "" "" "" "" failed "see commands.log"
                FAILURES=$((FAILURES + 1))
            fi
            NOTE="A = M without λ: equals the masked image"
        else
            NOTE="single coil: equals zero-filled"
        fi
        amri_row "$CLASSICAL" "$key" cg-sense "CG-SENSE" "" "" "$ITERS" cg-sense cg-sense --iters "$ITERS" --lambda 0
        NOTE=""
        checked=0
        for lam in $LAMBDAS; do
            amri_row "$CLASSICAL" "$key" l1-wavelet "l1-wavelet (amri)" "" "$lam" "$ITERS" "l1_$lam" \
                l1-wavelet --lambda "$lam" --iters "$ITERS" --tol 0 --seed 0
            amri_row "$CLASSICAL" "$key" tv "TV (amri)" "" "$lam" "$ITERS" "tv_$lam" \
                tv --lambda "$lam" --iters "$ITERS" --tol 0
            if [[ $checked == 0 && -f $OUT/recon/$key/tv_$lam.npy ]]; then
                # The helper's metrics against amri's on the same image (used for BART's rows).
                mine=$(run_out python3 "$PY" metrics "$OUT/data/$key.npz" "$OUT/recon/$key/tv_$lam.npy")
                theirs=$(tail -n 1 "$CLASSICAL" | awk -F, '{ print $11 "," $12 "," $13 }')
                echo "# metric check $key tv_$lam: quality_metrics.py $mine, amri $theirs" >>"$LOG"
                awk -F, -v a="$mine" -v b="$theirs" 'BEGIN { split(a, x); split(b, y);
                    exit !((x[1] - y[1])^2 < 1e-6 && (x[2] - y[2])^2 < 1e-8 && ((x[3] - y[3]) / y[3])^2 < 1e-8) }' ||
                    die "quality_metrics.py disagrees with amri's metrics ($mine vs $theirs)"
                checked=1
            fi
        done
        [[ $SKIP_BART == 1 || $dom == image ]] && continue
        bdir=$OUT/bart/$key
        mkdir -p "$bdir"
        run "$AMRI" convert "$OUT/data/$key.npz" "$bdir/ksp.cfl" || die "amri convert to cfl failed (see $LOG)"
        for ((i = 0; i < SLICES; i++)); do
            if ! { run bart slice 2 "$i" "$bdir/ksp" "$bdir/k$i" &&
                run bart slice 2 "$i" "$bdir/ksp_mask" "$bdir/m$i"; }; then
                die "bart slice failed (see $LOG)"
            fi
        done
        for lam in $LAMBDAS; do
            for meth in l1 tv; do
                if [[ $meth == l1 ]]; then
                    reg=(-l1 -r "$lam"); lab="l1-wavelet (BART pics)"
                else
                    reg=(-R "T:3:0:$lam"); lab="TV (BART pics)"
                fi
                total=0
                ok=1
                parts=()
                for ((i = 0; i < SLICES; i++)); do
                    t0=$(now)
                    run "${NICE[@]}" bart pics -S -p "$bdir/m$i" "${reg[@]}" -i "$ITERS" \
                        "$bdir/k$i" "$OUT/bart/sens" "$bdir/r$i" || { ok=0; break; }
                    t1=$(now)
                    total=$(awk -v a="$total" -v b="$t0" -v c="$t1" 'BEGIN { printf "%.6f", a + c - b }')
                    parts+=("$bdir/r$i")
                done
                img=$bdir/${meth}_$lam
                if [[ $ok == 1 ]] && run bart join 2 "${parts[@]}" "$img" &&
                    m=$(run_out python3 "$PY" metrics "$OUT/data/$key.npz" "$img"); then
                    IFS=, read -r psnr ssim nmse <<<"$m"
                    row "$CLASSICAL" "$key" "bart-$meth" "$lab" "" "$lam" "$ITERS" "$psnr" "$ssim" "$nmse" "$total" ok \
                        "one bart process per slice (wall time incl. start-up and file I/O)"
                else
                    row "$CLASSICAL" "$key" "bart-$meth" "$lab" "" "$lam" "$ITERS" "" "" "" "" failed "bart pics failed (see commands.log)"
                    FAILURES=$((FAILURES + 1))
                fi
                rm -f "${parts[@]/%/.cfl}" "${parts[@]/%/.hdr}"
            done
        done
        for ((i = 0; i < SLICES; i++)); do rm -f "$bdir/k$i".{cfl,hdr} "$bdir/m$i".{cfl,hdr}; done
    done
fi

# --- learned priors ---------------------------------------------------------------------------
PRIOR=$OUT/prior.csv
echo "$HEADER_COLS" >"$PRIOR"
if [[ -n $PRIOR_FROM ]]; then
    PRIOR_SOURCES=""
    for key in "${WANT[@]}"; do
        for d in "${PRIOR_DIRS[@]}"; do
            if awk -F, -v k="$key" 'NR > 1 && $1 == k { found = 1 } END { exit !found }' "$d/prior.csv"; then
                same_data "$d" --prior-from "$key"
                awk -F, -v k="$key" 'NR > 1 && $1 == k' "$d/prior.csv" >>"$PRIOR"
                echo "# prior rows of $key reused from $d/prior.csv" >>"$LOG"
                PRIOR_SOURCES+="${PRIOR_SOURCES:+, }$key from \`$d\`"
                break
            fi
        done
    done
fi
extra=()
[[ -n $ZETA ]] && extra+=(--zeta "$ZETA")
[[ -n $SIGMA ]] && extra+=(--sigma "$SIGMA")
for m in "${MODEL_DIRS[@]}"; do
    mname=$(basename "$(cd "$m" && pwd)")
    for key in "${WANT[@]}"; do
        echo "$key: prior $mname ..."
        NOTE=""
        [[ -n $SIGMA ]] && NOTE="σ = $SIGMA"
        amri_row "$PRIOR" "$key" one-step "one-step ($mname)" "$m" "" "" "${mname}_one-step" \
            one-step --model "$m" "${extra[@]}"
        amri_row "$PRIOR" "$key" one-step-dc "one-step + data consistency ($mname)" "$m" "" "" "${mname}_one-step-dc" \
            one-step --model "$m" --data-consistency "${extra[@]}"
        NOTE="mean of $SAMPLES posterior samples, seed 0"
        [[ -n $ZETA ]] && NOTE="$NOTE, ζ = $ZETA"
        amri_row "$PRIOR" "$key" iterative "iterative ${STEPS} steps × ${SAMPLES} ($mname)" "$m" "" "$STEPS" \
            "${mname}_iterative" iterative --model "$m" --steps "$STEPS" --samples "$SAMPLES" --seed 0 "${extra[@]}"
    done
done

# --- tables -----------------------------------------------------------------------------------
LOAD_AFTER=$(uptime | sed 's/.*load average: //')
echo "# load average after: $LOAD_AFTER" >>"$LOG"
HDR=$OUT/logs/header.md
{
    echo "## Quality table (bench/quality_table.sh)"
    echo
    echo "- Command: \`bench/quality_table.sh $(printf '%q ' "${ARGS_ORIG[@]}")\`"
    echo "- Date: $(date -u '+%Y-%m-%d %H:%M UTC'); machine: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores, load average $LOAD_BEFORE before, $LOAD_AFTER after (shared machine: wall times vary)"
    echo "- amri $("$AMRI" --version | awk '{ print $NF }') at commit $COMMIT ($DIRTY uncommitted files under apps/, crates/, Cargo.*), release build; $(command -v bart >/dev/null && bart version | sed 's/^/BART /')"
    echo "- Data: $SLICES central low-res (64×64) validation slices of \`$VAL\`, simulated with \`amri simulate\` (protocol seed${SEED:+ overridden to $SEED}); metrics are fastMRI's PSNR/SSIM/NMSE on magnitudes against the stored reference, as \`amri recon\` reports them (BART's images through bench/quality_metrics.py, checked against amri's numbers in this run)"
    if [[ -n $CLASSICAL_FROM ]]; then
        echo "- Classical rows reused: $CLASSICAL_SOURCES (identical simulated data, SHA-256 checked)"
    fi
    if [[ -n $PRIOR_FROM ]]; then
        echo "- Prior rows reused: ${PRIOR_SOURCES:-none} (identical simulated data, SHA-256 checked; their settings in their own quality.md)"
    fi
    for d in "${CLASSICAL_DIRS[@]}" "${PRIOR_DIRS[@]}"; do
        # The date, load and binary of each run rows were taken from (their wall times are theirs).
        echo "- \`$d\`: $(sed -n 's/^# date: //p' "$d/commands.log" | head -n 1), load average $(sed -n 's/^# load average before: //p' "$d/commands.log" | head -n 1) at its start; $(sed -n 's/^# amri: [^,]*, //p' "$d/commands.log" | head -n 1)"
    done
    echo "- λ grid: $LAMBDAS; $ITERS iterations (amri \`--iters\`, \`--tol 0\`; BART \`pics -i\`; TV counts CG steps in both); the best-PSNR λ is chosen on these same slices, so the l1/TV rows are optimistic"
    echo "- CG-SENSE with one coil and no maps is \`A = M F\` with a 0/1 mask and a unitary FFT: its least-squares solution from zero is the zero-filled image"
    echo "- Wall time per slice: amri's own timing of each file (read, reconstruct, write; slices in parallel on $(nproc) cores; no process start-up or model loading), divided by the slices; BART: one process per slice, timed from outside"
    [[ ${#MODEL_DIRS[@]} -gt 0 ]] && echo "- Priors: ${MODELS//,/, }; iterative: $STEPS steps × $SAMPLES samples (mean), seed 0${ZETA:+, ζ = $ZETA}${SIGMA:+; one-step σ = $SIGMA}"
    echo
} >"$HDR"
tail -n +2 "$PRIOR" | cat "$CLASSICAL" - >"$OUT/logs/rows.csv"
run python3 "$PY" table "$OUT/logs/rows.csv" "$OUT/quality.csv" "$OUT/quality.md" "$HDR" "$OUT/data/measured.csv" ||
    die "writing the tables failed (see $LOG)"
run python3 "$PY" figure "$OUT" "$OUT/quality.png" "${CLASSICAL_DIRS[@]}" "${PRIOR_DIRS[@]}" ||
    echo "quality_table.sh: the figure failed (see $LOG)" >&2
echo "wrote $OUT/quality.md, $OUT/quality.csv, $OUT/quality.png, $OUT/commands.log"
if [[ $FAILURES -gt 0 ]]; then
    echo "$FAILURES reconstructions failed unexpectedly (see $OUT/quality.md and $LOG)" >&2
    exit 1
fi
exit 0
}

#!/usr/bin/env bash
# The prepared device run of benchmarks/side_by_side.py (issue 25): hmrepro against the authors' code on one GPU, fp32
# with TF32 off, HSNet / VAT / ASNet with FM and HM, evaluation 1- and 5-shot and training iterations; JSON per step
# under $OUT, a log with the tables. Kept under ~8 minutes (BUDGET seconds; a step that would not fit is skipped).
#
# The device machine has no network: export the authors' code (and einops/timm) beforehand, here, and carry it:
#   .venv/bin/python benchmarks/side_by_side.py --export-from-mirror --export-only     # or --clone --export-only
#   run(command="bash benchmarks/gpu_side_by_side.sh", carry=["benchmarks/.authors"], timeout_s=540)
# Dry run on the CPU (tiny settings, the same steps; FAMILIES=hsnet for the quickest):
#   DEVICE=cpu SIZE=64 SHOTS=1,2 REPEATS=1 TRAIN_REPEATS=1 WARMUP=0 TRAIN_BSZ=1 VAT_TRAIN_BSZ=1 PY=.venv/bin/python \
#     BUDGET=3600 TIMEOUT_SCALE=20 OUT=/tmp/dry bash benchmarks/gpu_side_by_side.sh
set -u
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
PY=${PY:-python3}
DEVICE=${DEVICE:-cuda}
OUT=${OUT:-/tmp/gpu_side_by_side}
BUDGET=${BUDGET:-480}
SIZE=${SIZE:-}                 # empty: 400 px HSNet / ASNet, 473 px VAT (the fixtures' and recipes' sizes)
SHOTS=${SHOTS:-1,5}
REPEATS=${REPEATS:-10}         # timed evaluation calls per side (interleaved)
WARMUP=${WARMUP:-2}            # untimed interleaved calls per side before each shot's timing
TRAIN_REPEATS=${TRAIN_REPEATS:-5}
TRAIN_BSZ=${TRAIN_BSZ:-8}      # HSNet / ASNet training batch (random inputs above 2)
VAT_TRAIN_BSZ=${VAT_TRAIN_BSZ:-4}
THREADS=${THREADS:-2}
FAMILIES=${FAMILIES-hsnet asnet vat}  # FAMILIES= (empty): none, e.g. only the bench eval step
TIMEOUT_SCALE=${TIMEOUT_SCALE:-1}  # multiplies each step's timeout (a CPU dry run needs ~20)
mkdir -p "$OUT"
if [ ! -f benchmarks/.authors/SOURCES.json ]; then
  echo "benchmarks/.authors missing: export it first (side_by_side.py --export-from-mirror --export-only) and carry it"
  exit 2
fi
. benchmarks/device_setup.sh  # editable install on the device, gpu.txt, env.txt
SIZE_ARG=()
[ -n "$SIZE" ] && SIZE_ARG=(--img-size "$SIZE")
COMMON=(--device "$DEVICE" --threads "$THREADS" "${SIZE_ARG[@]}")

step() {  # step NAME TIMEOUT args...: one harness call unless the budget is spent; its JSON is $OUT/NAME.json
  local name=$1 to=$(( $2 * TIMEOUT_SCALE )); shift 2
  if (( SECONDS + 30 > BUDGET )); then echo "### SKIPPED (budget): $name"; return; fi
  (( to > BUDGET - SECONDS )) && to=$(( BUDGET - SECONDS ))
  echo "### [$SECONDS s] $name: $*"
  local t0=$SECONDS
  timeout "$to" $PY benchmarks/side_by_side.py "${COMMON[@]}" --json "$OUT/$name.json" "$@"
  echo "### $name rc=$? in $(( SECONDS - t0 )) s"
}

{
  for fam in $FAMILIES; do
    step "eval_$fam" 120 --families "$fam" --shots "$SHOTS" --repeats "$REPEATS" --warmup "$WARMUP"
  done
  for fam in $FAMILIES; do
    bsz=$TRAIN_BSZ; to=90
    [ "$fam" = vat ] && bsz=$VAT_TRAIN_BSZ && to=120
    step "train_$fam" "$to" --families "$fam" --train --repeats "$TRAIN_REPEATS" --warmup "$WARMUP" --bsz "$bsz"
  done
  # bench eval's peak, split (issue 25): building + the first batch (cuDNN autotuning's trial workspace) against the
  # batches after it; fp32 then bf16, hsnet-hm, 20 episodes of the synthetic benchmark
  if (( SECONDS + 90 <= BUDGET )) && [ "${BENCH_EVAL:-1}" = 1 ]; then
    syn=$OUT/syn
    $PY -m hmrepro prepare synthetic --data-root "$syn" > /dev/null 2>&1 || echo "prepare synthetic failed"
    for amp in --no-amp --amp; do
      echo "### [$SECONDS s] bench eval hsnet-hm $amp"
      timeout $(( 60 * TIMEOUT_SCALE )) $PY -m hmrepro bench eval -m hsnet-hm -b pascal --data-root "$syn" \
        --splits "$syn/splits" --episodes 20 --device "$DEVICE" $amp ${SIZE:+--img-size $SIZE} --results "$OUT/bench_eval"
    done
  fi
  echo "### done in $SECONDS s"
} 2>&1 | tee "$OUT/log.txt"

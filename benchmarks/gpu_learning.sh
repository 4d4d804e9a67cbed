#!/usr/bin/env bash
# The prepared device run of the learning checks that do not fit this project's 2-core CPU (docs/models/vat.md and
# asnet.md, "Learning check"): vat, vat-hm, asnet and asnet-hm trained from a random backbone on the synthetic
# benchmark, each against its untrained model (one iteration at lr 1e-12: the same seed, calibrated backbone and
# validation episodes). HSNet's check, on the CPU, is the template: the recipe's optimiser, batch 8, 8 epochs.
# - VAT: the FSS-like split (scale 1), 64 px (VAT's learner runs on fixed 128/64/32/16 grids whatever the size);
# - ASNet: the PASCAL-like split at scale 8, fold 0, 400 px (ASNet's learner takes 393-512 px only; no FSS loader in
#   the authors' code), 100 validation episodes.
# Per run under $OUT/<name>/: config.json, metrics.jsonl, run.json, train.log; $OUT/summary.txt: best validation mIoU
# against the untrained model's, per model. Budgeted (BUDGET seconds; a run that would start too late is skipped).
#
#   run(command="bash benchmarks/gpu_learning.sh", timeout_s=590)
# Dry run on the CPU (the same steps, tiny: one iteration per epoch, 2 validation episodes, FSS-like for both):
#   DEVICE=cpu EPOCHS=1 EPOCH_ITERS=1 VAL_EPISODES=2 BSZ=1 SCALE=1 BUDGET=3600 PY=.venv/bin/python OUT=/tmp/dry \
#     bash benchmarks/gpu_learning.sh
set -u
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
PY=${PY:-python3}
DEVICE=${DEVICE:-cuda}
OUT=${OUT:-/tmp/gpu_learning}
BUDGET=${BUDGET:-560}
MODELS=${MODELS:-vat-hm vat asnet-hm asnet}
EPOCHS=${EPOCHS:-8}
BSZ=${BSZ:-8}
SCALE=${SCALE:-8}                 # the PASCAL-like part's scale for ASNet (CRCNet's check needed 8 to generalise)
VAL_EPISODES=${VAL_EPISODES:-}    # empty: all 40 FSS-like validation episodes (VAT), 100 PASCAL-like (ASNet)
EPOCH_ITERS=${EPOCH_ITERS:-}      # empty: whole epochs
DATA=${DATA:-$OUT/data}
mkdir -p "$OUT"
. benchmarks/device_setup.sh  # editable install on the device, gpu.txt, env.txt

prepare() {  # prepare ROOT SCALE: the synthetic benchmark, once
  [ -d "$1/splits" ] || $PY -m hmrepro prepare synthetic --data-root "$1" --scale "$2" > "$OUT/prepare_$(basename "$1").log" 2>&1
}

settings() {  # settings MODEL: the benchmark arguments of the model's family
  case $1 in
    vat*) prepare "$DATA/scale1" 1
      echo "-b fss --data-root $DATA/scale1 --splits $DATA/scale1/splits --img-size 64 --val-episodes ${VAL_EPISODES:-0}" ;;
    asnet*) if [ "$DEVICE" = cpu ] && [ "$SCALE" = 1 ]; then root=$DATA/scale1; else root=$DATA/scale$SCALE; fi
      prepare "$root" "$SCALE"
      echo "-b pascal -f 0 --data-root $root --splits $root/splits --img-size 400 --val-episodes ${VAL_EPISODES:-100}" ;;
  esac
}

train() {  # train NAME MODEL args...: one hmrepro train unless the budget is spent
  local name=$1 model=$2; shift 2
  if (( SECONDS + 20 > BUDGET )); then echo "### SKIPPED (budget): $name"; return; fi
  echo "### [$SECONDS s] $name"
  local t0=$SECONDS
  # shellcheck disable=SC2046
  timeout $(( BUDGET - SECONDS )) $PY -m hmrepro train "$model" $(settings "$model") --no-pretrained --bsz "$BSZ" \
    --val-bsz "$BSZ" --workers 2 --seed 0 --device "$DEVICE" --checkpoint-every 0 --no-progress \
    --out "$OUT/$name" "$@" > "$OUT/$name.log" 2>&1
  echo "### $name rc=$? in $(( SECONDS - t0 )) s"
  rm -f "$OUT/$name"/*.pt  # checkpoints are not kept
}

{
  iters=()
  [ -n "$EPOCH_ITERS" ] && iters=(--epoch-iterations "$EPOCH_ITERS")
  for model in $MODELS; do
    train "${model}_untrained" "$model" --lr 1e-12 --epochs 1 --epoch-iterations 1
    train "$model" "$model" --epochs "$EPOCHS" "${iters[@]}"
  done
  $PY - "$OUT" $MODELS <<'EOF' | tee "$OUT/summary.txt"
import json, sys
from pathlib import Path

out = Path(sys.argv[1])
def best(run):
    path = out / run / "metrics.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    return max((r["val_miou"] for r in rows), default=None), [round(r["val_miou"], 1) for r in rows]


for model in sys.argv[2:]:
    (untrained, _), (trained, curve) = best(f"{model}_untrained"), best(model)
    gain = None if None in (untrained, trained) else round(trained - untrained, 1)
    print(f"{model}: untrained {untrained}, epochs {curve}, best - untrained {gain}")
EOF
} 2>&1 | tee "$OUT/gpu_learning.log"

#!/usr/bin/env bash
# One prepared device run (issue 16): bench eval / bench train for hsnet-hm and vat-hm (fp32, bf16), CUDA parity,
# CUDA training end to end (single process bf16, torchrun DDP/NCCL), bench model breakdowns, Table 7 timings.
# Usage (repo root): bash data/gpu/run.sh OUTDIR [BUDGET_SECONDS]
set -u
OUTDIR=${1:?outdir}; BUDGET=${2:-500}
export PYTHONUNBUFFERED=1
R=$OUTDIR/results; mkdir -p "$R" /tmp/runs
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  && export PYTHONPATH=/tmp/site
python3 -m pip install -q --no-deps --no-build-isolation --no-index -e . \
  || { echo "editable install failed: using PYTHONPATH"; export PYTHONPATH=$PWD:${PYTHONPATH:-}; }
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
python3 -c "import torch, hmrepro; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'cudnn', torch.backends.cudnn.version(), torch.cuda.get_device_name(0))"
H="python3 -m hmrepro"
D="--data-root data/syn --splits data/syn/splits"
step() {  # step TIMEOUT cmd...: run unless the budget is spent; log the wall time and exit status
  local to=$1; shift
  if (( SECONDS + 20 > BUDGET )); then echo "### SKIPPED (budget): $*"; return; fi
  (( to > BUDGET - SECONDS )) && to=$(( BUDGET - SECONDS ))
  echo "### [$SECONDS s] $*"
  local t0=$SECONDS; timeout "$to" "$@"; echo "### rc=$? in $(( SECONDS - t0 )) s"
}
for m in hsnet-hm vat-hm; do
  for a in --no-amp --amp; do
    step 90 $H bench eval -m $m -b pascal $D --episodes 200 --workers 4 --device cuda $a --results "$R" --json
    step 60 $H bench train -m $m -b pascal --device cuda $a --iterations 10 --warmup 3 --results "$R" --json
  done
done
step 90 python3 data/gpu/parity_cuda.py cuda
for m in hsnet-hm vat-hm; do
  step 60 $H bench eval -m $m -b pascal -k 5 $D --episodes 50 --workers 4 --device cuda --results "$R" --json
done
step 90 $H train hsnet-hm -b pascal $D --device cuda --epochs 2 --img-size 200 --bsz 8 --val-episodes 100 \
  --amp bf16 --no-pretrained --out /tmp/runs/hsnet-hm --no-progress
step 90 python3 -m torch.distributed.run --nproc_per_node 1 -m hmrepro train vat-hm -b pascal $D --device cuda \
  --epochs 1 --img-size 200 --bsz 4 --val-episodes 50 --no-pretrained --out /tmp/runs/vat-hm-ddp --no-progress
for m in hsnet hsnet-hm vat-hm asnet-hm; do for k in 1 5; do
  step 40 $H bench model -m $m -k $k --device cuda --runs 10 --results "$R" --json
done; done
for m in crcnet-hm mce-hm; do step 40 $H bench model -m $m -k 1 --device cuda --runs 10 --results "$R" --json; done
for m in hsnet vat asnet; do step 60 $H bench --model $m --device cuda --runs 30 --results "$R"; done
(cd "$OUTDIR" && tar czf results.tgz results && rm -rf results)
echo "### done in $SECONDS s"

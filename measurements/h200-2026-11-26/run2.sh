#!/usr/bin/env bash
# Second device run: benches again now that bench/bench model/bench train apply the evaluation's / training's CUDA
# numerics (TF32 off; the first run's bench model and Table 7 timed TF32 convolutions), then CRCNet and MCE
# learning on the synthetic benchmark (untrained vs trained, the helpers' CPU settings, more epochs), concurrently.
set -u
OUTDIR=${1:?outdir}; BUDGET=${2:-330}
export PYTHONUNBUFFERED=1
R=$OUTDIR/results; L=$OUTDIR/learn; mkdir -p "$R" "$L" /tmp/runs
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  && export PYTHONPATH=/tmp/site
python3 -m pip install -q --no-deps --no-build-isolation --no-index -e . \
  || { echo "editable install failed: using PYTHONPATH"; export PYTHONPATH=$PWD:${PYTHONPATH:-}; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
H="python3 -m hmrepro"
D="--data-root data/syn --splits data/syn/splits"
step() {
  local to=$1; shift
  if (( SECONDS + 15 > BUDGET )); then echo "### SKIPPED (budget): $*"; return; fi
  (( to > BUDGET - SECONDS )) && to=$(( BUDGET - SECONDS ))
  echo "### [$SECONDS s] $*"; local t0=$SECONDS; timeout "$to" "$@" > "$R/last.txt" 2>&1; local rc=$?
  grep -v '^\s*[\[{}"]\|^\s*[0-9.]*,\?$' "$R/last.txt" | head -30; echo "### rc=$rc in $(( SECONDS - t0 )) s"
}
for m in hsnet-hm vat-hm; do for a in --no-amp --amp; do
  step 40 $H bench train -m $m -b pascal --device cuda $a --iterations 10 --warmup 3 --results "$R" --json
done; done
for m in hsnet-hm vat-hm; do for k in 1 5; do
  step 30 $H bench model -m $m -k $k --device cuda --runs 10 --results "$R" --json
done; done
for m in hsnet vat asnet; do step 40 $H bench --model $m --device cuda --runs 30 --results "$R"; done
rm -f "$R/last.txt"
# learning: 8 runs at once on the one GPU (timings here mean nothing)
LEFT=$(( BUDGET - SECONDS - 10 )); echo "### [$SECONDS s] learning runs, $LEFT s each at most"
C="-b pascal -f 0 $D --no-pretrained --device cuda --workers 0 --no-progress"
CR="$C --img-size 49 --val-episodes 40 --bsz 2 --model-args mrm_gradient=canet;dropout=0"
MC="$C --img-size 64 --val-episodes 13 --bsz 8 --min-class-pixels 100"
for m in crcnet crcnet-hm; do
  timeout $LEFT $H train $m $CR --lr 1e-12 --epochs 1 --epoch-iterations 1 --out /tmp/runs/${m}_untrained > $L/${m}_untrained.log 2>&1 &
  timeout $LEFT $H train $m $CR --lr 0.01 --epochs 40 --out /tmp/runs/${m}_trained > $L/${m}_trained.log 2>&1 &
done
for m in mce mce-hm; do
  timeout $LEFT $H train $m $MC --lr 1e-12 --epochs 1 --epoch-iterations 1 --out /tmp/runs/${m}_untrained > $L/${m}_untrained.log 2>&1 &
  timeout $LEFT $H train $m $MC --lr 0.01 --epochs 40 --out /tmp/runs/${m}_trained > $L/${m}_trained.log 2>&1 &
done
wait
for f in $L/*.log; do echo "== $f"; grep -v "^images$\|^$" $f | tail -n 45; done
(cd "$OUTDIR" && tar czf results.tgz results && rm -rf results)
echo "### done in $SECONDS s"

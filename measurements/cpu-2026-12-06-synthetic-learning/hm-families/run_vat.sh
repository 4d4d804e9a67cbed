#!/bin/bash
# VAT learning runs on the synthetic FSS-like split, 64 px, batch 1 (the smallest faithful configuration on this CPU).
set -u
cd /work/learn
HM=/work/main/.venv/bin/hmrepro
SYN=/work/learn/syn
[ -f $SYN/.done ] || { $HM prepare synthetic --data-root $SYN && touch $SYN/.done; }
model=$1
common="-b fss --data-root $SYN --splits $SYN/splits --no-pretrained --img-size 64 --bsz 1 --val-bsz 1 --val-episodes 0 --workers 0 --seed 0 --device cpu"
export OMP_NUM_THREADS=1
# glibc: keep freed memory for reuse (VAT frees and re-allocates GBs per step; otherwise ~35 % of CPU is page faults)
export MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=2147483647
if [ ! -f runs/${model}_untrained/metrics.jsonl ]; then
  /usr/bin/time -v -o runs_${model}_untrained.time $HM train $model $common --checkpoint-every 0 --lr 1e-12 --epochs 1 --epoch-iterations 1 --out runs/${model}_untrained > ${model}_untrained.log 2>&1
fi
where="--out runs/$model"
[ -f runs/$model/last.pt ] && where="--resume runs/$model"
/usr/bin/time -v -o runs_${model}.time.$(date +%s) $HM train $model $common --checkpoint-every 10 --epochs 8 $where >> ${model}.log 2>&1

#!/bin/bash
# ASNet learning runs on the synthetic PASCAL-like split at scale 8 (a random backbone needs it to generalise), 400 px
# (ASNet's learner takes 393-512 px), batch 1, epochs of 100 training episodes, 60 validation episodes.
set -u
cd /work/learn
HM=/work/main/.venv/bin/hmrepro
SYN=/work/learn/syn8
[ -f $SYN/.done ] || { $HM prepare synthetic --data-root $SYN --scale 8 && touch $SYN/.done; }
model=$1
common="-b pascal -f 0 --data-root $SYN --splits $SYN/splits --no-pretrained --img-size 400 --bsz 1 --val-bsz 1 --val-episodes 60 --workers 0 --seed 0 --device cpu"
export OMP_NUM_THREADS=1
export MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=2147483647
if [ ! -f runs/${model}_untrained/metrics.jsonl ]; then
  /usr/bin/time -v -o runs_${model}_untrained.time $HM train $model $common --checkpoint-every 0 --lr 1e-12 --epochs 1 --epoch-iterations 1 --out runs/${model}_untrained > ${model}_untrained.log 2>&1
fi
where="--out runs/$model"
[ -f runs/$model/last.pt ] && where="--resume runs/$model"
/usr/bin/time -v -o runs_${model}.time.$(date +%s) $HM train $model $common --checkpoint-every 20 --epochs 6 --epoch-iterations 100 $where >> ${model}.log 2>&1

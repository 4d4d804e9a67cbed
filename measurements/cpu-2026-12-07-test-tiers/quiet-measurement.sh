#!/bin/bash
# quiet measurement: bench probe, clean-clone .ci/run, fast tier, bench probe
set -u
OUT=/tmp/m/q-$(cd /work/main && git rev-parse --short HEAD)
mkdir -p $OUT
probe(){ cd /work/main && OMP_NUM_THREADS=1 .venv/bin/python -m hmrepro bench model -m hsnet -k 1 --img-size 400 -b pascal --device cpu --runs 5 --warmup 1 --results $OUT/bench 2>&1 | grep -A1 "s/episode" > $OUT/probe-$1.txt; }
probe before
rm -rf /tmp/ci && mkdir -p /tmp/ci && git clone -q /work/main /tmp/ci/main && ln -s /work/shared /tmp/ci/shared
cd /tmp/ci/main
uptime > $OUT/uptime-start.txt
vmstat -t 10 > $OUT/vmstat.log 2>&1 &  # every 10 s; "st" = CPU time stolen by the hypervisor (other guests)
VMSTAT=$!
(CI=true /usr/bin/time -v bash .ci/run) > $OUT/ci-run.log 2>&1; echo "EXIT $?" >> $OUT/ci-run.log
(/usr/bin/time -v .venv/bin/python -m pytest -q -m "not slow" -p no:cacheprovider) > $OUT/fast-tier.log 2>&1; echo "EXIT $?" >> $OUT/fast-tier.log
kill $VMSTAT
probe after
date > $OUT/done

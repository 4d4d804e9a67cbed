# Sourced by the prepared device runs (gpu_side_by_side.sh, gpu_learning.sh) with PY, DEVICE and OUT set: on a
# device machine (no network) install hmrepro editable without dependencies and record the GPU; on any machine
# record the torch and CUDA versions. Files: $OUT/gpu.txt, $OUT/env.txt.
if [ "$DEVICE" != cpu ]; then
  $PY -m pip install -q --no-deps --no-build-isolation --no-index -e . \
    || { echo "editable install failed: using PYTHONPATH"; export PYTHONPATH=$PWD:${PYTHONPATH:-}; }
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
fi
$PY -c "import torch, hmrepro; print('torch', torch.__version__, 'cuda', torch.version.cuda)" | tee "$OUT/env.txt"

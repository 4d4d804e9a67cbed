"""Run the learning check of tests/learning_check.py once and print its curve (issue 23's measurements).

Usage (from the repository root): .venv/bin/python measurements/cpu-2026-12-06-synthetic-learning/learn.py MODEL
'JSON keyword arguments of learning_check' [--root SYNTHETIC_ROOT]. Prints the untrained and per-epoch validation
mIoU, the mean training loss per epoch and the process CPU seconds.
"""

import json
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "tests"))
from learning_check import learning_check  # noqa: E402

model, kwargs = sys.argv[1], json.loads(sys.argv[2])
root = Path(sys.argv[4] if len(sys.argv) > 4 and sys.argv[3] == "--root" else "~/.hmrepro/synthetic").expanduser()
start, losses = time.time(), []
untrained, curve = learning_check(model, root, training_losses=losses, **kwargs)
usage = resource.getrusage(resource.RUSAGE_SELF)
per_epoch = max(1, len(losses) // len(curve))
mean_losses = [round(sum(losses[i : i + per_epoch]) / per_epoch, 3) for i in range(0, len(losses), per_epoch)]
print(
    json.dumps(
        {
            "model": model,
            "kwargs": kwargs,
            "untrained_miou": round(untrained, 1),
            "val_miou_per_epoch": [round(c, 1) for c in curve],
            "best_minus_untrained": round(max(curve) - untrained, 1),
            "train_loss_per_epoch": mean_losses,
            "cpu_s": round(usage.ru_utime + usage.ru_stime),
            "wall_s": round(time.time() - start),
        }
    )
)

"""Shared pieces of the training/evaluation tests: a tiny training configuration and one cached trained run."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from helpers import REUSE_FREED_MEMORY_ENV

TINY = {
    "pretrained": False,
    "img_size": 64,
    "bsz": 8,
    "val_bsz": 8,
    "workers": 0,
    "checkpoint_every": 0,
    "device": "cpu",
}
# the FSS-like split of the synthetic benchmark: 80 training episodes (10 iterations of 8), 40 val episodes.
# Validation mIoU per epoch, 2026-12-06, OMP_NUM_THREADS=1 (=2): 0.0, 0.0, 0.0, 0.05 (0.03), 19.7 (20.4), 38.4 (38.0);
# the seventh and eighth epochs (44.9, 46.8) are more than the tests need: > 20 for the evaluation (50.0 after six
# epochs), the trivial predictors + 5 (17.9), the untrained model + 10 (11.3)
LEARN_EPOCHS = 6


def tiny_config(model: str, root: Path, out: Path, benchmark: str = "fss", **overrides) -> dict:
    from hmrepro.engine.training.train import build_config

    return build_config(
        model,
        benchmark,
        0,
        {**TINY, "data_root": str(root), "splits": str(root / "splits"), "out": str(out), **overrides},
    )


def train_tiny_hsnet(root: Path, out: Path) -> None:
    """hsnet trained for LEARN_EPOCHS on the synthetic FSS split into ``out`` (conftest's ``trained_hsnet_run``
    builds it once per test run)."""
    from hmrepro.engine.training.train import train

    train(tiny_config("hsnet", root, out, epochs=LEARN_EPOCHS), progress=False)


def cli_env() -> dict:
    """Environment of `python -m hmrepro` subprocesses: this interpreter's, with the same thread count."""
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", "2")
    # OpenMP threads that spin while waiting make a busy 2-core machine 20-50x slower; sleeping ones do not
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    env["PYTHONUNBUFFERED"] = "1"
    env.update(REUSE_FREED_MEMORY_ENV)  # freed memory reused, as around slow tests in this process (conftest.py)
    return env


def run_cli_importing_none_of(
    absent: Sequence[str], *args: str, env: dict | None = None
) -> subprocess.CompletedProcess:
    """``hmrepro ARGS`` in a fresh interpreter (through ``hmrepro.cli.app.run``) that then fails unless the command
    exited 0 and imported none of the modules ``absent`` (a start-up that stays light); ``env`` adds to
    :func:`cli_env`."""
    code = (
        f"import sys; from hmrepro.cli.app import run; code = run({list(args)!r}); assert code == 0, code; "
        f"imported = sorted(set({list(absent)!r}) & set(sys.modules)); assert not imported, imported"
    )
    command = [sys.executable, "-c", code]
    return subprocess.run(command, capture_output=True, text=True, env={**cli_env(), **(env or {})}, timeout=120)


def hmrepro_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "hmrepro", *args]


def synthetic_args(root: Path) -> list[str]:
    return ["--data-root", str(root), "--splits", str(root / "splits")]

"""``python never_reached_launcher.py ARGS`` = ``hmrepro ARGS``, with one learnable module that no forward pass reaches
attached to every model the training builds (as VAT's encoder transformers end in a norm whose output nothing reads).

test_ddp.py runs it under torchrun and in one process: the engine must find that module with its one-step probe and
freeze it before DDP wraps the model (DDP otherwise fails at the second iteration), and leave it at its initial value
(the authors' DataParallel never moved such parameters). Its weights come from their own seed, so the global RNG, and
with it everything else the run draws, is what it would be without it.
"""

from __future__ import annotations

import torch

from hmrepro.cli.app import main
from hmrepro.engine.training import train as training

NAME = "never_reached"
SEED = 1234


def never_reached_module() -> torch.nn.Module:
    """The attached module, the same weights on every call (drawn from ``SEED``, the global RNG untouched)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        return torch.nn.Linear(4, 4)


def _with_never_reached(build):
    def build_with_never_reached(*args, **kwargs):
        model = build(*args, **kwargs)
        model.add_module(NAME, never_reached_module())
        return model

    return build_with_never_reached


if __name__ == "__main__":
    training._build_model = _with_never_reached(training._build_model)
    main()

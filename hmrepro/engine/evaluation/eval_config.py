"""The typed, frozen configuration of an evaluation, as :class:`~.train_config.TrainConfig` is of a training run.

:func:`hmrepro.engine.evaluation.evaluate.evaluate` runs one :class:`EvalConfig`: what is evaluated (model,
benchmark, folds,
shots, weights) and how (the options of ``hmrepro eval``). Every option has the authors' default; ``None`` means
"what the model's card, recipe or checkpoint says" (image size, batch size, preprocessing, protocol).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ...data.image_cache import DEFAULT_IMAGE_CACHE_MIB

__all__ = ["EvalConfig"]


@dataclass(frozen=True)
class EvalConfig:
    """One evaluation of ``model`` on ``benchmark`` (see the module docstring)."""

    model: str
    benchmark: str
    fold: str | int
    """A fold number, or ``"all"``."""
    shot: int
    weights: str
    """A checkpoint file, a run folder (``{fold}`` in it for several folds), ``random`` or ``official``."""
    backbone: str = "resnet50"
    img_size: int | None = None
    """None: the size the checkpoint trained at, else the recipe's."""
    original_size: bool = False
    """Score each query at its original size (the authors' ``use_original_imgsize``; PASCAL and COCO only)."""
    preprocess: str | None = None
    """Image and mask preprocessing (:mod:`hmrepro.data.preprocessing`); None: the card's."""
    protocol: str | None = None
    """Episode protocol (:mod:`hmrepro.data.episodes`); None: the card's."""
    episodes: int | None = None
    """Keep only the first N episodes of each fold (quick checks); None: all."""
    episode_seed: int = 0
    """0: the protocol's own episodes; another seed draws another set (its records fill no table cell)."""
    inference: Mapping[str, Any] = field(default_factory=dict)
    """Test-time options (CRCNet: ``scales``, ``kshot``); empty: the model's defaults."""
    data_root: str | Path | None = None
    splits: str | Path | None = None
    results_dir: str | Path | None = "results"
    """Where the records are written; None: nowhere (they are still returned)."""
    device: str | None = None
    bsz: int | None = None
    """None: the recipe's ``eval_bsz``."""
    workers: int = 0
    pretrained: bool = True
    """ImageNet weights for the backbone of ``random`` weights (checkpoints bring their own)."""
    amp: bool = False
    """bf16 autocast (the authors evaluate in fp32)."""
    image_cache_mib: float = DEFAULT_IMAGE_CACHE_MIB
    """Each loading process's bound on its cache of decoded, resized images (0: off; same results)."""

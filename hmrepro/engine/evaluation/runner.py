"""The episode runner: the one piece of code that turns few-shot episodes into mIoU and FB-IoU.

``hmrepro eval``, ``hmrepro domain-shift``, ``viz episodes`` and the validation inside training all go through
:func:`run_loader`; :func:`run_episodes` is the evaluation's entry point (it seeds, builds the loader with the
model's :class:`~hmrepro.models.cards.EvalPlan` and runs it).

- The episodes are loaded by :class:`~hmrepro.data.dataset.EpisodeDataset` with the plan's preprocessing (there is
  no default: a model is always loaded as its authors load it).
- ``predict`` turns a batch into a 0/1 query mask and the raw outputs: :func:`kshot_vote` (the authors' K-shot
  vote, ``model.predict_nshot``; the evaluation) or :func:`one_shot_logits` (one forward pass of the first support
  and the argmax of its logits; the validation inside training, whose hook computes the loss from the logits).
- Metrics are accumulated by :class:`~hmrepro.engine.evaluation.metrics.FewShotMeter`.

The runner prints nothing; callers follow it through ``on_batch``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from ...data.benchmarks import Benchmark
from ...data.dataset import EpisodeDataset
from ...data.episodes import Episode
from ...models.cards import EvalPlan
from ...models.interface import Outputs, logits_of
from .metrics import FewShotMeter, intersection_union
from .per_episode import EpisodeTable, batch_rows, concat

__all__ = [
    "EpisodePrediction",
    "EpisodeResult",
    "EpisodeSource",
    "episode_loader",
    "kshot_vote",
    "one_shot_logits",
    "run_episodes",
    "run_loader",
    "to_device",
]

# predict(model, batch on the device, output_size or None) -> (0/1 query masks [B, H, W], the model's outputs)
Predict = Callable[[torch.nn.Module, dict, tuple | None], tuple[torch.Tensor, Any]]
# on_batch(batch on the device, the model's outputs, the meter after this batch)
BatchHook = Callable[[dict, Any, FewShotMeter], None]


@dataclass(frozen=True)
class EpisodePrediction:
    """One episode's predicted query mask [H, W] and its foreground IoU in % (nan when neither the prediction nor
    the ground truth has a foreground pixel)."""

    mask: torch.Tensor
    iou: float


@dataclass(frozen=True)
class EpisodeResult:
    """What a run of episodes measured; ``predictions`` only when asked for (``keep_predictions``).

    ``per_episode``: every episode's counts and object sizes (:mod:`hmrepro.engine.evaluation.per_episode`, always
    recorded;
    this process's episodes only when ``reduce`` combined several processes). ``image_cache``: the loading
    cache's counters (:meth:`~hmrepro.data.image_cache.ImageCache.stats`) when the episodes were loaded in this
    process (no workers), else None."""

    miou: float
    fb_iou: float
    episodes: int
    secs_per_episode: float
    predictions: list[EpisodePrediction] | None = None
    per_episode: EpisodeTable | None = None
    image_cache: dict | None = None

    def metrics(self) -> dict:
        """The record fields: ``miou``, ``fb_iou``, ``episodes``, ``secs_per_episode``."""
        return {
            "miou": self.miou,
            "fb_iou": self.fb_iou,
            "episodes": self.episodes,
            "secs_per_episode": self.secs_per_episode,
        }


def kshot_vote(model, batch: dict, output_size: tuple | None) -> tuple[torch.Tensor, torch.Tensor]:
    """The evaluation's prediction: the authors' K-shot vote (``model.predict_nshot``); outputs = the masks.

    A model with ``takes_episode_context`` (CRCNet's fine-tuning) also gets the supports' ignore maps and the
    episodes' indices in the evaluation (``episode_index``, when the loader gives it)."""
    extra = {}
    if model.takes_episode_context:
        extra = {"support_ignores": batch.get("support_ignores"), "episode_ids": batch.get("episode_index")}
    pred = model.predict_nshot(
        batch["query_img"], batch["support_imgs"], batch["support_masks"], output_size=output_size, **extra
    )
    return pred, pred


def one_shot_logits(model, batch: dict, output_size: tuple | None = None) -> tuple[torch.Tensor, Outputs]:
    """The validation's prediction: one forward pass with the first support and the argmax of its logits.

    Outputs: the model's outputs with the logits in fp32 (what ``model.compute_objective(outputs, batch)`` takes).
    """
    outputs = model(batch["query_img"], batch["support_imgs"][:, 0], batch["support_masks"][:, 0])
    logits = logits_of(outputs).float()
    outputs = logits if isinstance(outputs, torch.Tensor) else {**outputs, "logits": logits}
    return logits.argmax(dim=1), outputs


@dataclass(frozen=True)
class EpisodeSource:
    """Where and how a run's episodes are loaded: ``benchmark``'s images under ``data_root``, preprocessed by
    ``plan``, ``bsz`` episodes a batch (1 with ``plan.original_size``) from ``workers`` loading processes onto
    ``device``; ``image_cache_mib``: the bound of each loading process's image cache (0: off)."""

    benchmark: Benchmark
    data_root: Path
    plan: EvalPlan
    device: torch.device
    bsz: int = 1
    workers: int = 0
    image_cache_mib: float = 0


def episode_loader(
    source: EpisodeSource, episodes: Sequence[Episode], *, persistent_workers: bool = False
) -> DataLoader:
    """A loader over ``episodes`` in order, as ``source`` says, pinned memory on CUDA."""
    plan = source.plan
    dataset = EpisodeDataset(
        source.benchmark,
        source.data_root,
        episodes,
        img_size=plan.img_size,
        original_size=plan.original_size,
        preprocess=plan.preprocess,
        image_cache_mib=source.image_cache_mib,
    )
    return DataLoader(
        dataset,
        batch_size=1 if plan.original_size else source.bsz,
        shuffle=False,
        num_workers=source.workers,
        pin_memory=source.device.type == "cuda",
        persistent_workers=persistent_workers and source.workers > 0,
        generator=torch.Generator().manual_seed(0),  # never touch the global torch RNG
    )


def to_device(batch: dict, device: torch.device, channels_last: bool) -> dict:
    """The batch's tensors on ``device``; the query image channels-last when asked."""
    moved = {}
    for key, value in batch.items():
        if isinstance(value, torch.Tensor):
            value = value.to(device, non_blocking=True)
            if channels_last and key == "query_img":
                value = value.contiguous(memory_format=torch.channels_last)
        moved[key] = value
    return moved


def _autocast(device: torch.device, amp: bool):
    return torch.autocast(device.type, dtype=torch.bfloat16) if amp else torch.autocast(device.type, enabled=False)


def _episode_predictions(pred: torch.Tensor, inter: torch.Tensor, union: torch.Tensor) -> list[EpisodePrediction]:
    return [
        EpisodePrediction(mask, 100.0 * float(i) / float(u) if u else math.nan)
        for mask, i, u in zip(pred, inter[1].tolist(), union[1].tolist())
    ]


@torch.no_grad()
def run_loader(
    model,
    loader,
    meter: FewShotMeter,
    *,
    device: torch.device,
    amp: bool = False,
    predict: Predict = kshot_vote,
    on_batch: BatchHook | None = None,
    reduce: Callable[[FewShotMeter], None] | None = None,
    channels_last: bool = False,
    keep_predictions: bool = False,
) -> EpisodeResult:
    """Run ``model`` (in eval mode; its train/eval mode is restored) over every batch of ``loader``.

    Each batch goes to ``device`` (all its tensors; the masks are scored where the loader left them), ``predict``
    runs under bf16 autocast when ``amp``, the 0/1 masks update ``meter``, then ``on_batch(batch, outputs, meter)``
    is called. After the loop ``reduce(meter)`` may combine the counts of several processes before mIoU
    and FB-IoU are computed. The caller seeds (or not).
    """
    was_training = model.training
    model.eval()
    predictions: list[EpisodePrediction] | None = [] if keep_predictions else None
    rows, scored = [], 0  # per-episode rows of each batch, episodes scored so far
    original_size = bool(getattr(loader.dataset, "original_size", False))  # score at each query's own size
    start = time.perf_counter()
    for host_batch in loader:  # scored on the host, where the masks already are
        batch = to_device(host_batch, device, channels_last)
        gt = host_batch["query_mask"]
        with _autocast(device, amp):
            pred, outputs = predict(model, batch, tuple(gt.shape[-2:]) if original_size else None)
        pred = pred.cpu()
        inter, union = intersection_union(pred, gt, host_batch["query_ignore"])
        rows.append(batch_rows(scored, inter, union, host_batch))
        scored += inter.shape[1]
        meter.add_counts(inter, union, host_batch["class_id"])
        if predictions is not None:
            predictions.extend(_episode_predictions(pred, inter, union))
        if on_batch is not None:
            on_batch(batch, outputs, meter)
    seconds = time.perf_counter() - start
    model.train(was_training)
    if reduce is not None:
        reduce(meter)
    miou, fb_iou = meter.compute()
    return EpisodeResult(miou, fb_iou, meter.episodes, seconds / max(meter.episodes, 1), predictions, concat(rows))


def run_episodes(
    model,
    episodes: Sequence[Episode],
    source: EpisodeSource,
    *,
    nclass: int,
    class_ids: Sequence[int],
    amp: bool = False,
    on_batch: BatchHook | None = None,
    keep_predictions: bool = False,
    seed: int = 0,
    predict: Predict = kshot_vote,
) -> EpisodeResult:
    """The authors' evaluation of ``model`` on ``episodes`` loaded from ``source``: NumPy and torch seeded with
    ``seed`` (theirs: 0), the K-shot vote (or ``predict``), mIoU over ``class_ids`` (a class axis of ``nclass``) and
    FB-IoU. The results do not depend on ``source.image_cache_mib``."""
    np.random.seed(seed)
    torch.manual_seed(seed)
    loader = episode_loader(source, episodes)
    result = run_loader(
        model,
        loader,
        FewShotMeter(nclass, class_ids),
        device=source.device,
        amp=amp,
        predict=predict,
        on_batch=on_batch,
        keep_predictions=keep_predictions,
    )
    return replace(result, image_cache=loader.dataset.image_cache.stats()) if source.workers == 0 else result

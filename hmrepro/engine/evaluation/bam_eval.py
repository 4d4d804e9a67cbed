"""BAM's evaluation (``chunbolang/BAM`` ``test.py``), the default of MCE: one run of the runner per seed.

Each run is seeded with its seed (BAM's ``setup_seed``), loads its episodes with the ``bam`` preprocessing (aspect
kept, 473 canvas) and keeps each query label at its original size; the logits are upsampled to the square of the
label's longer side and cropped to the label (:func:`predict_on_label`), so the canvas padding is never scored and
255 is ignored. The fold's mIoU and FB-IoU are the means over the runs (BAM's ``Mean_mIoU``); every run's numbers
are kept in the record (``bam_runs``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import torch

from ...data.episodes import Episode
from .per_episode import concat
from .runner import EpisodeResult, EpisodeSource, run_episodes

__all__ = ["predict_on_label", "run_bam"]


def predict_on_label(model, batch: dict, output_size: tuple | None) -> tuple[torch.Tensor, torch.Tensor]:
    """BAM's ``ori_resize`` scoring: the K-shot prediction at the square of the label's longer side, cropped to the
    label's (H, W) — the top-left part of the canvas the image was put on."""
    height, width = (int(v) for v in output_size)
    side = max(height, width)
    pred = model.predict_nshot(
        batch["query_img"], batch["support_imgs"], batch["support_masks"], output_size=(side, side)
    )
    pred = pred[:, :height, :width]
    return pred, pred


def run_bam(
    model, runs: Sequence[tuple[int, Sequence[Episode]]], source: EpisodeSource, **scoring: Any
) -> tuple[EpisodeResult, list[dict]]:
    """The mean result over BAM's runs (``runs``: (seed, episodes)) and each run's ``seed``, ``miou``, ``fb_iou``.

    Each run is :func:`~.runner.run_episodes` of ``source`` one episode a batch, scored on the original label
    (:func:`predict_on_label`), with ``scoring`` (its other keyword arguments: nclass, class_ids, amp, on_batch),
    seeded with the run's seed."""
    source = replace(source, plan=replace(source.plan, original_size=True), bsz=1)
    results = [
        run_episodes(model, episodes, source, **scoring, seed=seed, predict=predict_on_label) for seed, episodes in runs
    ]
    total = sum(r.episodes for r in results)
    tables = [r.per_episode for r in results]
    combined = replace(
        results[0],
        miou=float(np.mean([r.miou for r in results])),
        fb_iou=float(np.mean([r.fb_iou for r in results])),
        episodes=total,
        secs_per_episode=sum(r.secs_per_episode * r.episodes for r in results) / max(total, 1),
        predictions=None,
        image_cache=None,
        per_episode=concat(tables) if all(t is not None for t in tables) else None,
    )
    per_run = [
        {"seed": int(seed), "miou": r.miou, "fb_iou": r.fb_iou, "episodes": r.episodes}
        for (seed, _), r in zip(runs, results)
    ]
    return combined, per_run


def bam_validation_logits(model, batch: dict, output_size: tuple | None) -> tuple[torch.Tensor, torch.Tensor]:
    """The validation forward of BAM's ``train.py`` (``validation = "bam"``): the model's logits at its input size
    given every support of the episode (a K-shot model validates on K-shot episodes), then upsampled to the square
    of the label's longer side and cropped to the label (:func:`~hmrepro.data.bam.bam_logits_to_label`): BAM's two
    steps, 60 → 473 in the model and 473 → label in the script. Returns the argmax and the cropped fp32 logits (what
    the validation loss reads; BAM's loss is on the same pixels: the rest of the square is 255)."""
    from ...data.bam import bam_logits_to_label
    from ...models.interface import logits_of

    supports, masks = batch["support_imgs"], batch["support_masks"]
    if supports.shape[1] == 1:  # a 1-shot model's forward takes [B, 3, H, W]
        supports, masks = supports[:, 0], masks[:, 0]
    logits = logits_of(model(batch["query_img"], supports, masks)).float()
    if output_size is not None:
        logits = bam_logits_to_label(logits, output_size)
    return logits.argmax(dim=1), logits

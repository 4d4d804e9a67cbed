"""The interface every few-shot segmentation model of hmrepro implements, and the objective they share.

The engine (training, evaluation, benchmarks) talks to a model only through :class:`FewShotModel`:

- ``model(query_img, support_img, support_mask)`` → outputs of a 1-shot forward: the logits [B, 2, H, W], or a
  dict holding them under ``"logits"`` next to auxiliary outputs (read the logits with :func:`logits_of`);
- ``model.predict_nshot(query_imgs, support_imgs, support_masks, output_size=None)`` → the 0/1 query mask
  [B, H, W] (int64) of a K-shot episode (supports [B, K, 3, H, W], masks [B, K, H, W]);
- ``model.compute_objective(outputs, batch)`` → the scalar training loss. The model owns it, so a model with
  auxiliary losses or ignore pixels needs no special case in the training loop. ``batch`` is the episode batch
  of :class:`hmrepro.data.dataset.EpisodeDataset` (``query_mask``, ``query_ignore``, ``support_masks``,
  ``support_ignores``, ``class_id``, ...) on the model's device;
- ``model.backbone`` (frozen; ``backbone.taps(images)`` gives the taps the model correlates) and
  ``model.masking`` (the :class:`~hmrepro.models.masking.MaskingMode` of its support masking);
- ``model.trains_kshot``: whether ``forward`` also takes K supports [B, K, 3, H, W] with masks [B, K, H, W], so
  that the engine trains on K-shot episodes when the recipe's ``shot`` > 1 (MCE's 5-shot model);
- ``model.takes_query_mask`` / ``model.takes_sample_keys``: whether the training forward also takes
  ``query_mask=`` / ``sample_keys=`` (CRCNet's support branch and its ``canet`` history maps);
- ``model.inference_options()`` → the test-time options and their values (``{}`` for a model without any;
  CRCNet: ``scales``, ``kshot``), and ``model.set_inference(**options)`` to choose them.

Every family derives from :class:`FewShotModule`, which gives the optional capabilities their defaults (no K-shot
training, no extra training inputs, no test-time options), so the engine reads them as plain attributes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol, Union, runtime_checkable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .masking import MaskingMode

__all__ = ["Backbone", "Batch", "FewShotModel", "FewShotModule", "Outputs", "logits_of", "pixel_cross_entropy"]

IGNORE_INDEX = 255  # the target value of ignored pixels (PASCAL's void label, the augmentation's padding)

Outputs = Union[Tensor, Mapping[str, Any]]  # noqa: UP007 - a runtime alias; X | Y needs Python 3.10's types here
"""What a model's forward returns: the logits, or a dict with the logits under ``"logits"``."""

Batch = Mapping[str, Any]
"""An episode batch (keys of :class:`hmrepro.data.dataset.EpisodeDataset`, collated)."""


@runtime_checkable
class Backbone(Protocol):
    """The frozen feature extractor of a model (:class:`hmrepro.models.backbone.FrozenBackbone`)."""

    def taps(self, images: Tensor) -> list[Tensor]: ...

    def calibration_pass(self, images: Tensor) -> None:
        """Run every layer the model runs on ``images`` (the BatchNorm re-estimation of a random backbone)."""
        ...


@runtime_checkable
class FewShotModel(Protocol):
    """What every model built by :func:`hmrepro.models.create_model` provides (see the module docstring)."""

    backbone: Backbone
    masking: MaskingMode
    trains_kshot: bool
    takes_query_mask: bool
    takes_sample_keys: bool

    def __call__(self, query_img: Tensor, support_img: Tensor, support_mask: Tensor) -> Outputs: ...

    def predict_nshot(
        self,
        query_imgs: Tensor,
        support_imgs: Tensor,
        support_masks: Tensor,
        output_size: Sequence[int] | None = None,
    ) -> Tensor: ...

    def compute_objective(self, outputs: Outputs, batch: Batch) -> Tensor: ...

    def inference_options(self) -> dict[str, Any]: ...

    def set_inference(self, **options: Any) -> None: ...


class FewShotModule(nn.Module):
    """The base class of hmrepro's models: the optional capabilities of :class:`FewShotModel` with their defaults.

    A family overrides what it has: ``trains_kshot = True`` (MCE), ``takes_query_mask`` / ``takes_sample_keys``
    (CRCNet), :meth:`inference_options` and :meth:`set_inference` (CRCNet's test-time options).
    """

    trains_kshot: bool = False
    """Whether ``forward`` also takes K supports, so that the model trains on K-shot episodes."""
    takes_query_mask: bool = False
    """Whether the training forward takes ``query_mask=`` (inside the DDP call, so its gradients are synchronised)."""
    takes_sample_keys: bool = False
    """Whether the training forward takes ``sample_keys=`` (query and support keys of each episode)."""
    takes_episode_context: bool = False
    """Whether ``predict_nshot`` also takes ``support_ignores=`` (the supports' ignore maps [B, K, H, W]) and
    ``episode_ids=`` (the episodes' indices in the evaluation): a model that learns at test time (CRCNet's K-shot
    fine-tuning) needs them."""

    @torch.no_grad()
    def predict_nshot(
        self,
        query_img: Tensor,
        support_imgs: Tensor,
        support_masks: Tensor,
        output_size: Sequence[int] | None = None,
        *,
        support_ignores: Tensor | None = None,
        episode_ids: Sequence[int] | Tensor | None = None,
    ) -> Tensor:
        """0/1 query mask [B, H, W] (int64) of a K-shot episode (supports [B, K, 3, H, W], masks [B, K, H, W]), at
        ``output_size`` (H, W) when given: the family's :meth:`kshot_mask`, without gradients (a model that learns at
        test time switches them on for that itself). ``support_ignores`` [B, K, H, W] and ``episode_ids`` go to a
        model with :attr:`takes_episode_context`; the others do not read them."""
        context = {"support_ignores": support_ignores, "episode_ids": episode_ids} if self.takes_episode_context else {}
        return self.kshot_mask(query_img, support_imgs, support_masks, output_size, **context)

    def kshot_mask(self, query_img: Tensor, support_imgs: Tensor, support_masks: Tensor, output_size) -> Tensor:
        """The family's K-shot prediction behind :meth:`predict_nshot` (same arguments, ``output_size`` possibly
        None)."""
        raise NotImplementedError

    def inference_options(self) -> dict[str, Any]:
        """The test-time options and their current values; none by default."""
        return {}

    def set_inference(self, **options: Any) -> None:
        """Choose test-time options; a model without any refuses every one."""
        if options:
            raise ValueError(f"{type(self).__name__} has no test-time options, not {', '.join(options)}")


def logits_of(outputs: Outputs) -> Tensor:
    """The logits [B, 2, H, W] of a model's outputs (the outputs themselves, or their ``"logits"`` entry)."""
    if isinstance(outputs, Tensor):
        return outputs
    return outputs["logits"]


def pixel_cross_entropy(logits: Tensor, query_mask: Tensor, ignore: Tensor | None = None) -> Tensor:
    """Cross-entropy of logits [B, 2, H, W] against the 0/1 mask [B, H, W], mean over the pixels that count.

    Without ``ignore`` (HSNet, VAT, ASNet): every pixel counts, so PASCAL's 255 (boundary) pixels are background,
    as the authors' loaders make them for training. With ``ignore`` (a 0/1 map like ``batch["query_ignore"]``;
    CRCNet, MCE: ``ignore_index=255`` in their lineage) the marked pixels (boundaries, the geometric
    augmentation's padding) are left out of the loss and of the mean.
    """
    bsz = logits.shape[0]
    target = query_mask.reshape(bsz, -1).long()
    if ignore is None:
        return F.cross_entropy(logits.reshape(bsz, 2, -1), target)
    target = target.masked_fill(ignore.reshape(bsz, -1) > 0, IGNORE_INDEX)
    if not bool((target != IGNORE_INDEX).any()):  # nothing counts: a zero loss that keeps the graph, not NaN
        return logits.sum() * 0.0
    return F.cross_entropy(logits.reshape(bsz, 2, -1), target, ignore_index=IGNORE_INDEX)

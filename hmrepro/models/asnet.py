"""ASNet (Kang & Cho, CVPR 2022; FS-S code) with the support masking modes of the HM paper.

Matches the authors' ``AttentiveSqueezeNetwork`` (dahyun-kang/ifsl ``fs-s/model/asnet.py``; ASNet-HM = the HM
repository's ``asnet.py``, the same file plus a hybrid-masking block) number for number:

- attributes ``backbone`` (torchvision ResNet, frozen, eval) and ``learner`` give the authors' ``state_dict``
  keys (``backbone.*``, ``learner.*``), so the weights of their Lightning checkpoints load as they are;
- backbone taps: every bottleneck of layer2..layer4, before the final ReLU; **support** taps of width ≥ 50 are
  average-pooled (3×3, stride 2, padding 1), query taps never;
- support masking by mode. ``none`` is ASNet: the support features are *not* masked, the mask only masks
  attention keys inside every attentive squeeze layer. ``hm`` is ASNet-HM: FM (pooled taps × the mask resized
  to each tap) where FM > 0, else IM (the pooled taps of the normalised support image × the mask); the learner
  still gets the mask for its attention. ``im``, ``hm-add`` and ``hm-reverse`` are the same building blocks
  combined as for HSNet (:mod:`.masking`); every mode loads every ASNet checkpoint of the same backbone;
- logits of the learner (100×100 at 400 px) are resized (bilinear, align_corners=True) to the **support** image
  size, or to ``output_size`` when one is given (the authors' ``use_original_imgsize`` evaluation);
- ``compute_objective(outputs, batch)``: cross-entropy over all pixels on ``batch["query_mask"]``, no ignore index;
- ``predict_nshot``: the authors' K-shot vote (:class:`.kshot.ShotVoteModel`). The authors call the 1-shot model
  once per shot; here the query taps are computed once and reused, which gives the same numbers (the per-shot
  support pass and learner run on the same batch as theirs).

Only square inputs of 393-512 px fit the learner's fixed strides (the authors train and test at 400).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from .attentive_squeeze import AttentiveSqueezeLearner
from .backbone import build_backbone
from .correlation import hypercorrelation_pyramid
from .interface import Batch, Outputs, logits_of, pixel_cross_entropy
from .kshot import ShotVoteModel
from .masking import get_masking_mode

__all__ = ["ASNet", "SUPPORT_POOL_WIDTH", "pool_support_taps"]

SUPPORT_POOL_WIDTH = 50
"""Support taps at least this wide are average-pooled before correlation (authors' ``pool_thr``)."""

BACKBONES = ("resnet50", "resnet101")


def pool_support_taps(taps: Sequence[Tensor], min_width: int = SUPPORT_POOL_WIDTH) -> list[Tensor]:
    """Average-pool (kernel 3, stride 2, padding 1) every tap whose width is at least ``min_width``."""
    return [F.avg_pool2d(tap, 3, stride=2, padding=1) if tap.shape[-1] >= min_width else tap for tap in taps]


class ASNet(ShotVoteModel):
    """ASNet on a frozen ``backbone`` (resnet50, resnet101) with support masking ``masking`` (``none`` = ASNet)."""

    def __init__(self, backbone: str = "resnet50", masking: str = "none", pretrained: bool = True) -> None:
        super().__init__()
        if backbone not in BACKBONES:
            raise ValueError(f"ASNet supports the backbones {BACKBONES}, not {backbone!r}")
        self.backbone_name = backbone
        self.masking = get_masking_mode(masking)
        self.backbone = build_backbone(backbone, pretrained=pretrained)
        # Channels-last conv weights make oneDNN / cuDNN run the backbone in NHWC (~15 % less CPU time at 400 px; same
        # values up to float rounding, as VAT's). Loading a state dict keeps this layout. On the CPU, training switches
        # to the authors' NCHW layout (see ``train``).
        self.backbone.to(memory_format=torch.channels_last)
        self.learner = AttentiveSqueezeLearner(self.backbone.stage_tap_counts)

    folds_backbone_batchnorm = True  # eval mode: BatchNorm folded into the backbone's convolutions (ShotVoteModel)
    batches_query_with_support = True  # eval mode: query and first support images in one backbone batch

    def train(self, mode: bool = True) -> ASNet:
        """Training mode for the learner (the backbone stays in eval mode). On the CPU, the frozen backbone runs in
        the authors' NCHW layout while training and channels-last otherwise (the faster inference path).

        Training-step parity: the NHWC backbone's taps differ from the authors' by ~1e-6 relative (other oneDNN
        kernels), and ASNet's learner amplifies that: on the asnet-hm training fixture, ~2e-4 relative in step-0
        gradient norms and 3.4e-3 in the logits after two steps. In NCHW hmrepro's training step gives the same
        numbers as the authors' code on the same machine (taps, correlations and gradients checked bit for bit).
        A CUDA backbone keeps whatever layout it was given (the engine picks channels-last there).
        """
        weight = self.backbone.conv1.weight
        layout = torch.contiguous_format if mode else torch.channels_last
        if weight.device.type == "cpu" and not weight.is_contiguous(memory_format=layout):
            self.backbone.to(memory_format=layout)
        super().train(mode)  # after the layout: eval mode folds the backbone's BatchNorm from these weights
        return self

    # -- features ---------------------------------------------------------------------------------------------

    # the query taps are ShotVoteModel's (never masked, never pooled); support taps are pooled, then masked

    def support_image_taps(self, images: Tensor) -> list[Tensor]:
        """Pooled backbone taps of support images (plain or input-masked), before the masking mode merges them."""
        return pool_support_taps(self.backbone_taps(images))

    # -- 1-shot -------------------------------------------------------------------------------------------------

    def logits_from_taps(
        self,
        query_taps: Sequence[Tensor],
        support_taps: Sequence[Tensor],
        support_mask: Tensor,
        output_size: Sequence[int] | None = None,
    ) -> Tensor:
        """Learner logits from (masked) taps; resized (bilinear, align_corners=True) to ``output_size`` if given."""
        with torch.no_grad():
            pyramid = hypercorrelation_pyramid(query_taps, support_taps, self.backbone.stage_tap_counts)
        logits = self.learner(pyramid, support_mask)
        if output_size is None:
            return logits
        return F.interpolate(logits, tuple(output_size), mode="bilinear", align_corners=True)

    def shot_logits(
        self, query_taps: Sequence[Tensor], support_img: Tensor, support_mask: Tensor, output_size: Sequence[int]
    ) -> Tensor:
        """1-shot logits from the query taps and one pooled, masked support, resized to ``output_size`` (the
        authors resize the learner's low-resolution logits straight to it; ``forward`` and the K-shot vote of
        :class:`~.kshot.ShotVoteModel` run it)."""
        support_taps = self.support_taps(support_img, support_mask)
        return self.logits_from_taps(query_taps, support_taps, support_mask, output_size)

    # -- training -----------------------------------------------------------------------------------------------

    def compute_objective(self, outputs: Outputs, batch: Batch) -> Tensor:
        """The authors' loss (as HSNet's): cross-entropy of the logits against ``batch["query_mask"]``, mean over all
        pixels, no ignore index (:func:`~hmrepro.models.interface.pixel_cross_entropy`)."""
        return pixel_cross_entropy(logits_of(outputs), batch["query_mask"])

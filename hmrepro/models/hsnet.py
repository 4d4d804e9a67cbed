"""HSNet (Min et al., ICCV 2021) with every support masking mode of the HM paper.

Matches the authors' ``HypercorrSqueezeNetwork`` (HSNet ``model/hsnet.py``; HSNet-HM = the HM repository's
``hsnet.py``) number for number:

- attributes ``backbone`` (the torchvision network, frozen, eval) and ``hpn_learner`` give the authors'
  ``state_dict`` keys, so their checkpoints load once the ``module.`` prefix is stripped;
- backbone taps and correlations are computed without gradients; only the learner trains;
- logits are resized (bilinear, align_corners=True) to the support image size, or straight from the learner's
  output to ``output_size`` when one is given (the authors' ``use_original_imgsize`` evaluation);
- ``compute_objective(outputs, batch)`` is their cross-entropy over all pixels on ``batch["query_mask"]``;
- ``predict_nshot`` is their K-shot vote (:class:`~.kshot.ShotVoteModel`). Unlike the authors, who call the 1-shot
  model once per shot and so recompute the query features K times, it computes the query taps once, then runs one
  shot at a time (support pass, correlation, learner) as the authors do: the same numbers bit for bit, less work,
  and the peak memory of one shot (batching all K shots through the correlation and the learner would hold K times
  the largest correlation, K × 4 × 2500² floats at 400 px, and is slower on a CPU).

The masking mode (``fm`` = HSNet, ``im``, ``hm`` = HSNet-HM, ``hm-add``, ``hm-reverse``) does not change the
parameters, so every mode loads every HSNet checkpoint of the same backbone.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from .backbone import build_backbone
from .correlation import hypercorrelation_pyramid
from .interface import Batch, Outputs, logits_of, pixel_cross_entropy
from .kshot import ShotVoteModel, kshot_vote
from .learner import HypercorrelationLearner
from .masking import get_masking_mode

__all__ = ["HSNet", "kshot_vote"]


class HSNet(ShotVoteModel):
    """HSNet on a frozen ``backbone`` (resnet50, resnet101, vgg16) with support masking ``masking``."""

    def __init__(self, backbone: str = "resnet50", masking: str = "fm", pretrained: bool = True) -> None:
        super().__init__()
        self.backbone_name = backbone
        self.masking = get_masking_mode(masking)
        self.backbone = build_backbone(backbone, pretrained=pretrained)
        # Channels-last conv weights make oneDNN / cuDNN run the backbone in NHWC (~15 % less CPU time at 400 px; same
        # values up to float rounding, as VAT's). Loading a state dict keeps this layout.
        self.backbone.to(memory_format=torch.channels_last)
        self.hpn_learner = HypercorrelationLearner(self.backbone.stage_tap_counts)

    # ASNet's BatchNorm folding and joint query + support backbone batch (ShotVoteModel) are off for HSNet: on a
    # quiet CPU they gained no measurable time here and the folded copy costs ~94 MiB resident
    # (measurements/cpu-2026-12-06-hm-profile).

    # features: ShotVoteModel's (backbone taps of the never-masked queries; masked support taps, plain and
    # input-masked images through the backbone in one batch)

    # -- 1-shot -------------------------------------------------------------------------------------------------

    def logits_from_taps(
        self, query_taps: Sequence[Tensor], support_taps: Sequence[Tensor], output_size: Sequence[int]
    ) -> Tensor:
        """Learner logits from (masked) taps, resized bilinearly (align_corners=True) to ``output_size``."""
        with torch.no_grad():
            pyramid = hypercorrelation_pyramid(query_taps, support_taps, self.backbone.stage_tap_counts)
        logits = self.hpn_learner(pyramid)
        return F.interpolate(logits, tuple(output_size), mode="bilinear", align_corners=True)

    # -- training -----------------------------------------------------------------------------------------------

    def compute_objective(self, outputs: Outputs, batch: Batch) -> Tensor:
        """The authors' loss: cross-entropy of the logits against ``batch["query_mask"]``, mean over all pixels
        (:func:`~hmrepro.models.interface.pixel_cross_entropy`)."""
        return pixel_cross_entropy(logits_of(outputs), batch["query_mask"])

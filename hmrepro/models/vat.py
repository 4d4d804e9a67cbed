"""VAT (Hong et al., ECCV 2022) with every support masking mode of the HM paper.

Matches the authors' ``VAT`` (VAT ``model/vat.py``) and the HM repository's VAT-HM (its ``vat.py``) number for
number (``../shared/specs/vat.md``):

- backbone taps one block earlier than HSNet (layer1's last bottleneck too), all pre-ReLU, under no_grad;
- every tap is resized (bilinear, align_corners=True) to a fixed grid per stage, whatever the image size:
  layer1 → 128², layer2 → 64², layer3 → 32², layer4 → 16² (:data:`STAGE_GRIDS`);
- the support mask enters the support taps by a masking mode of :mod:`hmrepro.models.masking` (one meaning per
  mode name); what differs between the authors' two models is only *where* the mode is applied:
  the VAT baseline (``fm``) masks the taps after the resize (``mask_at="resized"``), VAT-HM (``hm``) masks at
  native resolution before it (``mask_at="native"``). ``im``, ``hm-add`` and ``hm-reverse`` follow VAT-HM's
  placement by default; ``mask_at`` can be given explicitly. ``masking="none"`` is VAT with the config default
  ``TRAIN.MASK: False`` (no support masking; every released config sets it true);
- the learner (:class:`~hmrepro.models.vat_learner.VATLearner`) depends on the benchmark: PASCAL, COCO and FSS
  decoders have differently shaped parameters, so checkpoints of one benchmark do not load into another's model;
- logits [B, 2, 128, 128] are resized (bilinear, align_corners=True) to the support image size (or to
  ``output_size``);
- ``compute_objective(outputs, batch)`` and the K-shot vote (:class:`~hmrepro.models.kshot.ShotVoteModel`) are
  HSNet's. ``predict_nshot`` computes the query taps once and runs one support at a time (the authors recompute the
  query per shot); same result, less work and a bounded memory footprint (a VAT forward holds ~1 GB per sample).

Attributes ``backbone`` (torchvision ResNet, frozen, eval) and ``hpn_learner`` give the authors' ``state_dict``
keys (591 for ResNet-50, 897 for ResNet-101), including the persistent shifted-window ``attn_mask`` buffers.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from .backbone import build_backbone
from .correlation import hypercorrelation_pyramid
from .interface import Batch, Outputs, logits_of, pixel_cross_entropy
from .kshot import ShotVoteModel
from .masking import get_masking_mode, masked_support_taps
from .vat_learner import BENCHMARK_FEATURE_AFFINITY, VATLearner

__all__ = ["MASK_AT", "STAGE_GRIDS", "VAT"]

STAGE_GRIDS = (128, 64, 32, 16)
"""Side of the fixed grid the taps of layer1, layer2, layer3, layer4 are resized to."""

MASK_AT = ("resized", "native")


class VAT(ShotVoteModel):
    """VAT on a frozen ResNet ``backbone`` with the decoder of ``benchmark`` and support masking ``masking``."""

    def __init__(
        self,
        backbone: str = "resnet50",
        benchmark: str = "pascal",
        masking: str = "fm",
        pretrained: bool = True,
        mask_at: str | None = None,
    ) -> None:
        super().__init__()
        if benchmark not in BENCHMARK_FEATURE_AFFINITY:
            raise ValueError(
                f"unknown benchmark {benchmark!r}: VAT's decoder differs per benchmark, "
                f"choose one of {sorted(BENCHMARK_FEATURE_AFFINITY)}"
            )
        if backbone == "vgg16":
            raise ValueError("VAT needs a ResNet backbone (resnet50 or resnet101); its VGG-16 branch never worked")
        self.backbone_name = backbone
        self.benchmark = benchmark
        self.masking = get_masking_mode(masking)
        self.mask_at = mask_at if mask_at is not None else ("resized" if masking == "fm" else "native")
        if self.mask_at not in MASK_AT:
            raise ValueError(f"mask_at must be one of {MASK_AT}, got {self.mask_at!r}")
        self.backbone = build_backbone(backbone, pretrained=pretrained, tap_layer1=True)
        # Channels-last conv weights make oneDNN / cuDNN run the backbone in NHWC (~25 % faster on a CPU at VAT's
        # image sizes; same values up to float rounding). Loading a state dict keeps this layout.
        self.backbone.to(memory_format=torch.channels_last)
        self.hpn_learner = VATLearner(self.backbone.stage_tap_counts, benchmark)

    # -- features ---------------------------------------------------------------------------------------------

    @property
    def tap_grids(self) -> list[int]:
        """The fixed grid side of every tap, shallowest first (the layer1 tap, then layer2..layer4)."""
        n4, n3, n2 = self.backbone.stage_tap_counts
        g1, g2, g3, g4 = STAGE_GRIDS
        return [g1] * self.backbone.extra_shallow_taps + [g2] * n2 + [g3] * n3 + [g4] * n4

    @staticmethod
    def _resize(taps: Sequence[Tensor], grids: Sequence[int]) -> list[Tensor]:
        return [
            F.interpolate(tap, size=(g, g), mode="bilinear", align_corners=True)
            for tap, g in zip(taps, grids, strict=True)
        ]

    @torch.no_grad()
    def query_taps(self, query_img: Tensor) -> list[Tensor]:
        """All query taps (never masked) resized to their stage grids: the layer1 tap first, then layer2..4."""
        return self._resize(self.backbone.taps(query_img), self.tap_grids)

    @torch.no_grad()
    def support_taps(self, support_img: Tensor, support_mask: Tensor) -> list[Tensor]:
        """The correlated support taps (layer2..layer4), masked by the mode and resized to their stage grids.

        The layer1 support tap is dropped: the authors compute (and mask) it, but never use it.
        """
        mask = support_mask.to(support_img.dtype)
        skip = self.backbone.extra_shallow_taps
        grids = self.tap_grids[skip:]

        def extract(images: Tensor) -> list[Tensor]:
            taps = self.backbone.taps(images)[skip:]
            # the VAT baseline resizes first and masks on the fixed grids; VAT-HM masks at native resolution
            return self._resize(taps, grids) if self.mask_at == "resized" else taps

        support = masked_support_taps(self.masking, extract, support_img, mask)
        return support if self.mask_at == "resized" else self._resize(support, grids)

    @staticmethod
    def learner_query_feats(query_taps: Sequence[Tensor], stage_tap_counts: Sequence[int]) -> list[Tensor]:
        """The last layer3, layer2 and layer1 taps of the resized query taps (the decoder's query features)."""
        n4, n3, n2 = stage_tap_counts
        return [query_taps[n2 + n3], query_taps[n2], query_taps[0]]

    # -- 1-shot -------------------------------------------------------------------------------------------------

    def learner_logits(self, query_taps: Sequence[Tensor], support_taps: Sequence[Tensor]) -> Tensor:
        """The learner's logits [B, 2, 128, 128] from resized query taps (all) and support taps (correlated ones)."""
        skip = self.backbone.extra_shallow_taps
        counts = self.backbone.stage_tap_counts
        with torch.no_grad():
            pyramid = hypercorrelation_pyramid(query_taps[skip:], support_taps, counts)
        return self.hpn_learner(pyramid, self.learner_query_feats(query_taps, counts))

    def logits_from_taps(
        self, query_taps: Sequence[Tensor], support_taps: Sequence[Tensor], output_size: Sequence[int]
    ) -> Tensor:
        """Learner logits resized bilinearly (align_corners=True) to ``output_size``."""
        logits = self.learner_logits(query_taps, support_taps)
        return F.interpolate(logits, tuple(output_size), mode="bilinear", align_corners=True)

    # -- training -----------------------------------------------------------------------------------------------

    def compute_objective(self, outputs: Outputs, batch: Batch) -> Tensor:
        """The authors' loss (as HSNet's): cross-entropy of the logits against ``batch["query_mask"]``, mean over all
        pixels, no ignore index (:func:`~hmrepro.models.interface.pixel_cross_entropy`)."""
        return pixel_cross_entropy(logits_of(outputs), batch["query_mask"])

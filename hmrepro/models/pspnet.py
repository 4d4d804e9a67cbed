"""BAM's base learner: PSPNet on a fold's base classes, whose frozen encoder BAM's meta-learner (and MCE) runs.

Restated from BAM's ``model/PSPNet.py`` and ``model/PPM.py`` (chunbolang/BAM; read, not copied):

- encoder: the dilated deep-stem ResNet-50/101 (:class:`~.backbone.DeepStemResNet`: three 3×3 convs in the stem,
  layer3 dilation 2, layer4 dilation 4, output stride 8), trained with the head (BatchNorm in training mode);
- PPM: for each bin in (1, 2, 3, 6), adaptive average pooling → 1×1 conv 2048 → 512 (no bias) → BatchNorm → ReLU,
  upsampled (bilinear, align_corners=True) to the feature size and concatenated after the features (4096 channels);
- classifier: 3×3 conv 4096 → 512 (no bias) → BatchNorm → ReLU → Dropout2d(0.1) → 1×1 conv to ``classes``
  (background + the base classes: 16 on PASCAL-5i, 61 on COCO-20i);
- logits upsampled (bilinear, align_corners=True) to ``int((H − 1) / 8 · zoom_factor + 1)`` (zoom 8: the input size
  for BAM's 417/473 sizes); loss: cross-entropy ignoring 255.

State-dict keys: ``backbone.*`` (the encoder, the same names as MCE's frozen ``backbone.*``), ``ppm.features.<i>.{1,2}``
and ``cls.{0,1,4}`` (BAM's indices). :func:`from_bam_state_dict` turns BAM's published ``best.pth`` keys
(``layer0.<i>``, ``layer1``..``layer4``, the duplicate ``encoder.*``, ``module.``) into these.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import CorruptFileError, MissingDataError
from .backbone import DEEP_STEM_LAYERS, DeepStemResNet, load_deep_stem_imagenet, read_weights_file

__all__ = [
    "BINS",
    "PPM",
    "PSPNet",
    "base_learner_encoder_state",
    "from_bam_state_dict",
    "read_base_learner_state",
]

BINS = (1, 2, 3, 6)
IGNORE_LABEL = 255
BEST_FILE = "best_model.pt"  # hmrepro's run folder (hmrepro.engine.runs.BEST)

# BAM's layer0 = Sequential(conv1, bn1, relu1, conv2, bn2, relu2, conv3, bn3, relu3, maxpool)
_BAM_STEM = {"0": "conv1", "1": "bn1", "3": "conv2", "4": "bn2", "6": "conv3", "7": "bn3"}


class PPM(nn.Module):
    """BAM's pyramid pooling module: the input and, per bin, pool → 1×1 conv → BN → ReLU → upsample, concatenated."""

    def __init__(self, in_channels: int, reduction: int, bins: Sequence[int] = BINS) -> None:
        super().__init__()
        self.features = nn.ModuleList(
            nn.Sequential(
                nn.AdaptiveAvgPool2d(int(b)),
                nn.Conv2d(in_channels, reduction, 1, bias=False),
                nn.BatchNorm2d(reduction),
                nn.ReLU(inplace=True),
            )
            for b in bins
        )

    def forward(self, x: Tensor) -> Tensor:
        size = x.shape[-2:]
        pooled = [F.interpolate(f(x), size, mode="bilinear", align_corners=True) for f in self.features]
        return torch.cat([x, *pooled], dim=1)


class PSPNet(nn.Module):
    """BAM's base learner on ``backbone`` (resnet50 | resnet101) for ``classes`` labels (background included).

    ``pretrained`` loads the lineage's ImageNet deep-stem weights (``resnet50_v2.pth``,
    :func:`~.backbone.load_deep_stem_imagenet`); BAM always starts from them.
    """

    def __init__(
        self,
        backbone: str = "resnet50",
        pretrained: bool = True,
        *,
        classes: int = 16,
        zoom_factor: int = 8,
        bins: Sequence[int] = BINS,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        if backbone not in DEEP_STEM_LAYERS:
            raise ValueError(f"BAM's PSPNet base learner runs on resnet50 or resnet101 here, not {backbone!r}")
        if zoom_factor not in (1, 2, 4, 8):
            raise ValueError(f"zoom_factor must be 1, 2, 4 or 8 (BAM's assertion), not {zoom_factor}")
        self.backbone_name, self.classes, self.zoom_factor = backbone, int(classes), int(zoom_factor)
        self.backbone = DeepStemResNet(backbone, dilated=True)
        if pretrained:
            load_deep_stem_imagenet(self.backbone, backbone)
        channels = 2048
        self.ppm = PPM(channels, channels // len(bins), bins)
        self.cls = nn.Sequential(
            nn.Conv2d(2 * channels, 512, 3, padding=1, bias=False),
            nn.BatchNorm2d(512),
            nn.ReLU(inplace=True),
            nn.Dropout2d(p=dropout),
            nn.Conv2d(512, self.classes, 1),
        )

    def parameter_groups(self) -> list[list[nn.Parameter]]:
        """BAM's ``get_optim`` groups, in order: encoder, PPM, classifier (``index_split`` counts these)."""
        return [list(self.backbone.parameters()), list(self.ppm.parameters()), list(self.cls.parameters())]

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        return int((height - 1) / 8 * self.zoom_factor + 1), int((width - 1) / 8 * self.zoom_factor + 1)

    def forward(self, img: Tensor) -> Tensor:
        """Logits [B, classes, h, w]: the encoder, PPM and classifier, upsampled as BAM's ``forward`` does."""
        x = self.cls(self.ppm(self.backbone.features(img)))
        if self.zoom_factor != 1:
            x = F.interpolate(x, self.output_size(*img.shape[-2:]), mode="bilinear", align_corners=True)
        return x

    @staticmethod
    def compute_objective(logits: Tensor, label: Tensor) -> Tensor:
        """BAM's ``nn.CrossEntropyLoss(ignore_index=255)`` on labels [B, H, W] (0 background, 1.. base classes)."""
        return F.cross_entropy(logits.float(), label.long(), ignore_index=IGNORE_LABEL)


# ---------------------------------------------------------------------------------------------------------------
# Reading a base learner's weights (ours or BAM's published ``best.pth``)
# ---------------------------------------------------------------------------------------------------------------


def from_bam_state_dict(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """BAM's PSPNet state dict (``module.`` or not) in :class:`PSPNet`'s key names; the duplicate ``encoder.*``
    entries (BAM's ``encoder`` is a Sequential of the same layer0..layer4) are dropped."""
    out: dict[str, Tensor] = {}
    for key, value in state.items():
        key = key.removeprefix("module.")
        if key.startswith("encoder."):
            continue
        stem = re.match(r"layer0\.(\d+)\.(.+)$", key)
        if stem:
            if stem.group(1) not in _BAM_STEM:
                raise CorruptFileError(f"unexpected key {key!r} in BAM's PSPNet layer0")
            out[f"backbone.{_BAM_STEM[stem.group(1)]}.{stem.group(2)}"] = value
        elif re.match(r"layer[1-4]\.", key):
            out[f"backbone.{key}"] = value
        else:
            out[key] = value
    return out


def read_base_learner_state(source: str | Path) -> dict[str, Tensor]:
    """The PSPNet state dict (:class:`PSPNet` key names) of a base learner: an hmrepro run folder (its
    ``best_model.pt``), an hmrepro checkpoint file, or BAM's published ``best.pth`` (``{'state_dict': ...}``).
    Read with ``torch.load(weights_only=True)``."""
    path = Path(source).expanduser()
    if path.is_dir():
        path = path / BEST_FILE
    if not path.is_file():
        raise MissingDataError(
            f"base-learner weights {path} not found: give encoder_weights=<a `hmrepro train pspnet` run folder, or "
            "a PSPNet checkpoint file such as BAM's published best.pth>"
        )
    payload = read_weights_file(path, "base-learner weights")
    if not isinstance(payload, Mapping):
        raise CorruptFileError(f"{path} holds no state dict")
    if payload.get("format") == "hmrepro-checkpoint":
        if payload.get("model_name") not in (None, "pspnet"):
            raise CorruptFileError(f"{path} holds {payload.get('model_name')!r} weights, not a PSPNet base learner")
        state = dict(payload["model"])
    else:
        state = from_bam_state_dict(payload.get("state_dict", payload))
    if not any(k.startswith("backbone.") for k in state):
        raise CorruptFileError(f"{path} is not a PSPNet base learner (no encoder weights)")
    return state


def base_learner_encoder_state(source: str | Path) -> dict[str, Tensor]:
    """Only the encoder of the base learner at ``source``, keys without ``backbone.`` (the network's own)."""
    return {k[len("backbone.") :]: v for k, v in read_base_learner_state(source).items() if k.startswith("backbone.")}

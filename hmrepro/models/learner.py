"""HSNet's learner: squeeze the correlation pyramid with 4D convs, mix the stages, decode to 2-class logits.

Matches the authors' ``HPNLearner`` (HSNet ``model/learner.py``) layer for layer, with the same attribute
names so the ``state_dict`` keys are theirs (``encoder_layer4.0.conv1.weight``, ``encoder_layer4.1.weight``
(GroupNorm), ..., ``decoder2.2.bias``).

Where the spec's wording and the code disagree we follow the code: the authors' ``interpolate_support_dims``
resizes the *query* dims (Hq, Wq) of the coarser stage to the finer stage's query size, separately at every
(already squeezed) support position — see :func:`resize_query_dims`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from .conv4d import CenterPivotConv4d

__all__ = ["HypercorrelationLearner", "building_block", "resize_query_dims"]

SQUEEZE_CHANNELS = (16, 64, 128)


def building_block(
    in_channels: int, out_channels: Sequence[int], kernel_sizes: Sequence[int], support_strides: Sequence[int]
) -> nn.Sequential:
    """[center-pivot 4D conv, GroupNorm(4 groups), ReLU] per layer (GroupNorm spans C and all four dims)."""
    layers: list[nn.Module] = []
    for out_ch, kernel, stride in zip(out_channels, kernel_sizes, support_strides, strict=True):
        conv = CenterPivotConv4d(in_channels, out_ch, kernel, stride)
        layers += [conv, nn.GroupNorm(4, out_ch), nn.ReLU(inplace=True)]
        in_channels = out_ch
    return nn.Sequential(*layers)


def resize_query_dims(corr: Tensor, size: Sequence[int]) -> Tensor:
    """Bilinearly (align_corners=True) resize dims (Hq, Wq) of [B, C, Hq, Wq, Hs, Ws] to ``size``."""
    bsz, ch, hq, wq, hs, ws = corr.shape
    planes = corr.permute(0, 4, 5, 1, 2, 3).reshape(bsz * hs * ws, ch, hq, wq)
    planes = F.interpolate(planes, tuple(size), mode="bilinear", align_corners=True)
    return planes.view(bsz, hs, ws, ch, *planes.shape[-2:]).permute(0, 3, 4, 5, 1, 2)


class HypercorrelationLearner(nn.Module):
    """Squeeze blocks per stage, two mixing blocks, a 2D decoder; input channels = taps per stage, deepest first."""

    def __init__(self, stage_tap_counts: Sequence[int]) -> None:
        super().__init__()
        ch1, ch2, ch3 = SQUEEZE_CHANNELS
        n4, n3, n2 = stage_tap_counts
        self.encoder_layer4 = building_block(n4, [ch1, ch2, ch3], [3, 3, 3], [2, 2, 2])
        self.encoder_layer3 = building_block(n3, [ch1, ch2, ch3], [5, 3, 3], [4, 2, 2])
        self.encoder_layer2 = building_block(n2, [ch1, ch2, ch3], [5, 5, 3], [4, 4, 2])
        self.encoder_layer4to3 = building_block(ch3, [ch3, ch3, ch3], [3, 3, 3], [1, 1, 1])
        self.encoder_layer3to2 = building_block(ch3, [ch3, ch3, ch3], [3, 3, 3], [1, 1, 1])
        self.decoder1 = nn.Sequential(
            nn.Conv2d(ch3, ch3, 3, padding=1), nn.ReLU(), nn.Conv2d(ch3, ch2, 3, padding=1), nn.ReLU()
        )
        self.decoder2 = nn.Sequential(nn.Conv2d(ch2, ch2, 3, padding=1), nn.ReLU(), nn.Conv2d(ch2, 2, 3, padding=1))

    def forward(self, pyramid: Sequence[Tensor]) -> Tensor:
        """``[corr4, corr3, corr2]`` → logits [B, 2, 2·W2, 2·W2] (W2 = the query width of corr2)."""
        corr4, corr3, corr2 = pyramid
        sqz4 = self.encoder_layer4(corr4)
        sqz3 = self.encoder_layer3(corr3)
        sqz2 = self.encoder_layer2(corr2)

        mix43 = self.encoder_layer4to3(resize_query_dims(sqz4, sqz3.shape[2:4]) + sqz3)
        mix432 = self.encoder_layer3to2(resize_query_dims(mix43, sqz2.shape[2:4]) + sqz2)
        encoded = mix432.flatten(4).mean(dim=-1)  # average over the support dims → [B, 128, Hq, Wq]

        decoded = self.decoder1(encoded)
        # The authors upsample to twice the *width* on both sides (square output, as for their square inputs).
        width2 = decoded.shape[-1] * 2
        decoded = F.interpolate(decoded, (width2, width2), mode="bilinear", align_corners=True)
        return self.decoder2(decoded)

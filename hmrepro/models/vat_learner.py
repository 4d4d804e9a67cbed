"""VAT's learner: 4D conv encoders, 4D Swin aggregation coarse to fine, and a 2D Swin decoder fed with query features.

Matches the authors' ``VATLearner`` / ``OurModel`` (VAT ``model/learner.py``, ``model/ours.py``,
``model/base/our_conv4d.py``) layer for layer and under their attribute names, so the ``state_dict`` keys are
theirs (``ours.encoders.0.conv4d.0.0.query_conv.weight``, ``ours.transformer.2.transformer.layer.blocks.1.attn_mask``,
``ours.swin_decoder.1.0.transformer.layers.0.blocks.0.attn.qkv.weight``, ``ours.decoder.2.bias``,
``ours.proj_query_feat.2.0.weight`` ...). See ``../shared/specs/vat.md`` §4 for the description.

Correlation tensors are laid out [B, C, Hq, Wq, Hs, Ws]; strides are written (query h, query w, support h,
support w).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .conv4d import conv_over_support_dims
from .learner import resize_query_dims
from .swin import SwinTransformer2d, SwinTransformer4d, TransformerWrapper2d, TransformerWrapper4d

__all__ = [
    "BENCHMARK_FEATURE_AFFINITY",
    "Encoder4d",
    "SeparableConv4d",
    "conv_over_query_dims",
    "conv_over_support_dims",
    "VATLearner",
    "VolumetricAggregator",
    "decoder_benchmark",
    "decoder_dims",
    "feature_affinity",
    "max_pool_query_dims",
    "max_pool_support_dims",
]

BENCHMARK_FEATURE_AFFINITY: dict[str, tuple[bool, bool, bool]] = {
    "pascal": (False, True, True),
    "coco": (False, False, True),
    "fss": (True, True, True),
}
"""Which projected query features (layer3, layer2, layer1) each decoder stage concatenates, per benchmark."""

DECODER_DIMS = (128, 96, 48)
"""Channels coming out of the aggregator and the first two decoder stages (before the query features)."""
QUERY_PROJECTIONS = ((1024, 64), (512, 32), (256, 16))
"""1x1 projections of the last layer3, layer2 and layer1 query taps (ResNet channel counts)."""


def feature_affinity(benchmark: str) -> tuple[bool, bool, bool]:
    """The decoder variant of ``benchmark`` (``pascal``, ``coco``, ``fss``)."""
    try:
        return BENCHMARK_FEATURE_AFFINITY[benchmark]
    except KeyError:
        raise ValueError(
            f"unknown benchmark {benchmark!r} for VAT's decoder; choose one of {sorted(BENCHMARK_FEATURE_AFFINITY)}"
        ) from None


def decoder_dims(benchmark: str) -> tuple[int, int, int]:
    """Embedding dims of the three 2D Swin decoder stages of ``benchmark`` (pascal 128/128/64, coco 128/96/64,
    fss 192/128/64): the stage's own channels plus the concatenated query feature where the benchmark uses one."""
    affinity = feature_affinity(benchmark)
    return tuple(  # type: ignore[return-value]
        base + proj[1] if use else base for base, proj, use in zip(DECODER_DIMS, QUERY_PROJECTIONS, affinity)
    )


DECODER_NORM_KEY = "ours.swin_decoder.{stage}.0.transformer.norm.weight"
"""Key (under the learner) whose length is a decoder stage's embedding dim."""


def decoder_benchmark(state_dict: Mapping[str, Tensor], prefix: str = "hpn_learner.") -> str | None:
    """The benchmark whose decoder a VAT state dict holds (from its decoder shapes), or None if it is not VAT's."""
    dims = []
    for stage in range(3):
        tensor = state_dict.get(prefix + DECODER_NORM_KEY.format(stage=stage))
        if tensor is None:
            return None
        dims.append(int(tensor.shape[0]))
    return next((b for b in BENCHMARK_FEATURE_AFFINITY if decoder_dims(b) == tuple(dims)), None)


# ---------------------------------------------------------------------------------------------------------------
# 4D convolution
# ---------------------------------------------------------------------------------------------------------------


def _max_pool_axis(x: Tensor, axis: int, stride: int) -> Tensor:
    """Max-pool one axis with kernel = stride, padding 0 and ceil_mode (a partial last window pools what it has)."""
    if stride == 1:
        return x
    size = x.shape[axis]
    if size % stride:
        pad = [0, 0] * (x.dim() - 1 - axis) + [0, stride - size % stride]
        x = F.pad(x, pad, value=float("-inf"))
    shape = list(x.shape)
    shape[axis : axis + 1] = [shape[axis] // stride, stride]
    return x.reshape(shape).amax(dim=axis + 1)


def max_pool_support_dims(x: Tensor, stride: Sequence[int]) -> Tensor:
    """Max-pool dims (Hs, Ws) of [B, C, Hq, Wq, Hs, Ws] with kernel = stride (ceil mode) at every query position.

    Same values as a ``MaxPool2d(stride, stride, ceil_mode=True)`` over each support plane (the authors'), computed
    one axis at a time on the tensor as laid out, without permuting it.
    """
    return _max_pool_axis(_max_pool_axis(x, 5, stride[1]), 4, stride[0])


def max_pool_query_dims(x: Tensor, stride: Sequence[int]) -> Tensor:
    """Max-pool dims (Hq, Wq) of [B, C, Hq, Wq, Hs, Ws] with kernel = stride (ceil mode) at every support position."""
    return _max_pool_axis(_max_pool_axis(x, 3, stride[1]), 2, stride[0])


def conv_over_query_dims(conv: nn.Conv2d, x: Tensor) -> Tensor:
    """A 2D conv over dims (Hq, Wq) of [B, C, Hq, Wq, Hs, Ws] at every support position (a permuted view in training).

    Without a bias gradient to compute, a 3D conv with a (k, k, 1) kernel over [B, C, Hq, Wq, Hs·Ws], so the 6-D
    tensor is never permuted (:func:`_conv3d`). With one, the authors' layout, the planes [B·Hs·Ws, C, Hq, Wq] (a
    permuted copy of ``x``, as HSNet's :mod:`~hmrepro.models.conv4d`), so that the backward sums the bias gradient
    in their order: oneDNN, which PyTorch picks for these planes as for theirs, sums it sequentially in float32 over
    the gradient's flat order. On VAT's first layer on corr2 (2^20 positions per channel) the authors' gradient
    norm is 1.8e-4 relative from the exact sum, which the 3D conv's backward gives (PyTorch's slow_conv3d at batch
    1): beyond the training fixture's 1e-4 (tests/test_train_parity.py). The planes cost ~25 % more CPU time in the
    three encoders' forward at 473 px (a slower conv, a strided add), ~15 % in their forward + backward.
    """
    bsz, ch, hq, wq, hs, ws = x.shape
    if torch.is_grad_enabled() and conv.bias is not None and conv.bias.requires_grad:
        planes = x.permute(0, 4, 5, 1, 2, 3).reshape(bsz * hs * ws, ch, hq, wq)
        out = conv(planes)
        return out.view(bsz, hs, ws, *out.shape[-3:]).permute(0, 3, 4, 5, 1, 2)
    out = _conv3d(
        x.reshape(bsz, ch, hq, wq, hs * ws),
        conv.weight.unsqueeze(-1),
        conv.bias,
        stride=(*conv.stride, 1),
        padding=(*conv.padding, 0),
    )
    return out.view(*out.shape[:4], hs, ws)


def _conv3d(x: Tensor, weight: Tensor, bias: Tensor | None, stride: tuple, padding: tuple) -> Tensor:
    """``F.conv3d``, but always through oneDNN for float32 on a CPU.

    PyTorch picks its slow reference kernel (``slow_conv3d``) for a batch-1 input with few channels and a small
    query grid (B·C·Hq·Wq ≤ 20480: VAT's first layers on corr2 and corr4, ~0.5 s per forward on this CPU);
    oneDNN computes the same convolution 1.3-3x faster, with a different summation order (float rounding only).
    """
    onednn = torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled
    # not under CPU autocast: F.conv3d is on its bf16 list, the oneDNN op is not
    if onednn and x.device.type == "cpu" and x.dtype == torch.float32 and not torch.is_autocast_enabled("cpu"):
        return torch.mkldnn_convolution(x, weight, bias, padding, stride, (1, 1, 1), 1)
    return F.conv3d(x, weight, bias, stride=stride, padding=padding)


class SeparableConv4d(nn.Module):
    """VAT's ``Conv4d``: a 2D conv over the query dims plus a 2D conv over the support dims.

    - ``query_conv`` (query stride) runs on the input whose support dims were max-pooled by the support stride
      (when the support stride is > 1), so both branches end on the same grid;
    - ``supp_conv`` (support stride) runs on the input whose query dims were max-pooled by the query stride
      (when the query stride is > 1).

    Kernel 3 and padding 1 in every plane, with bias (all VAT uses).
    """

    def __init__(self, in_channels: int, out_channels: int, stride: Sequence[int], kernel_size: int = 3) -> None:
        super().__init__()
        if len(stride) != 4:
            raise ValueError(f"stride must be (query h, query w, support h, support w), got {tuple(stride)}")
        self.stride = tuple(int(s) for s in stride)
        padding = kernel_size // 2
        self.query_conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride=self.stride[:2], padding=padding)
        self.supp_conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride=self.stride[2:], padding=padding)

    def forward(self, x: Tensor) -> Tensor:
        # The authors test only the last support stride and the first query stride (theirs are always square).
        to_query = max_pool_support_dims(x, self.stride[2:]) if self.stride[3] > 1 else x
        to_support = max_pool_query_dims(x, self.stride[:2]) if self.stride[0] > 1 else x
        out = conv_over_support_dims(self.supp_conv, to_support)
        out += conv_over_query_dims(self.query_conv, to_query)  # in place: a fresh tensor (the query's may be a view)
        return out


class Encoder4d(nn.Module):
    """[SeparableConv4d, GroupNorm, ReLU] per layer, no residual (``conv4d.j.0`` conv, ``conv4d.j.1`` norm).

    GroupNorm works on the 6-D tensor: statistics per sample over a channel group and all four spatial dims.
    """

    def __init__(self, channels: Sequence[int], strides: Sequence[Sequence[int]], groups: Sequence[int]) -> None:
        super().__init__()
        self.conv4d = nn.ModuleList(
            # ReLU in place is safe here: GroupNorm's backward does not need its output.
            nn.Sequential(SeparableConv4d(c_in, c_out, stride), nn.GroupNorm(group, c_out), nn.ReLU(inplace=True))
            for c_in, c_out, stride, group in zip(channels[:-1], channels[1:], strides, groups, strict=True)
        )

    def forward(self, x: Tensor) -> Tensor:
        for layer in self.conv4d:
            x = layer(x)
        return x


# ---------------------------------------------------------------------------------------------------------------
# The learner
# ---------------------------------------------------------------------------------------------------------------


def _decoder_stage(dim: int, size: int, out_dim: int | None) -> nn.Sequential:
    """2D Swin stage (residual around its normed output), then a 1x1 conv to ``out_dim`` unless None."""
    layers: list[nn.Module] = [TransformerWrapper2d(SwinTransformer2d((size, size), dim))]
    if out_dim is not None:
        layers.append(nn.Conv2d(dim, out_dim, 1))
    return nn.Sequential(*layers)


class VolumetricAggregator(nn.Module):
    """The authors' ``OurModel``: correlation pyramid + query features → 2-class logits [B, 2, 128, 128].

    ``stage_tap_counts`` are the correlation channels per stage, deepest first (R50: 3, 6, 4);
    ``affinity`` says which projected query features the three decoder stages concatenate.
    """

    def __init__(self, stage_tap_counts: Sequence[int], affinity: Sequence[bool]) -> None:
        super().__init__()
        n4, n3, n2 = stage_tap_counts
        self.feature_affinity = tuple(bool(a) for a in affinity)
        self.encoders = nn.ModuleList(
            [
                Encoder4d((n4, 64, 128), ((2, 2, 1, 1), (1, 1, 2, 2)), (4, 8)),
                Encoder4d((n3, 64, 128), ((2, 2, 2, 2), (1, 1, 2, 2)), (4, 8)),
                Encoder4d((n2, 32, 64, 128), ((2, 2, 2, 2), (1, 1, 2, 2), (1, 1, 2, 2)), (2, 4, 8)),
            ]
        )
        self.transformer = nn.ModuleList(
            TransformerWrapper4d(SwinTransformer4d(size, dim=128, depth=depth, num_heads=4, window=4))
            for size, depth in (((8, 8, 8, 8), 4), ((16, 16, 8, 8), 2), ((32, 32, 8, 8), 2))
        )
        dims = [base + proj[1] if use else base for base, proj, use in zip(DECODER_DIMS, QUERY_PROJECTIONS, affinity)]
        self.swin_decoder = nn.ModuleList(
            [
                _decoder_stage(dims[0], 32, DECODER_DIMS[1]),
                _decoder_stage(dims[1], 64, DECODER_DIMS[2]),
                _decoder_stage(dims[2], 128, None),
            ]
        )
        self.decoder = nn.Sequential(nn.Conv2d(dims[2], 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 2, 3, padding=1))
        self.dropout2d = nn.Dropout2d(p=0.5)
        self.proj_query_feat = nn.ModuleList(
            nn.Sequential(nn.Conv2d(c_in, c_out, 1), nn.ReLU()) for c_in, c_out in QUERY_PROJECTIONS
        )

    def _dropout_pair(self, feat_a: Tensor, feat_b: Tensor) -> tuple[Tensor, Tensor]:
        """Channel dropout of two maps at once, the authors' way: nearest-resize both to the larger size,
        concatenate, Dropout2d, split, nearest-resize back (same draws as theirs; identity in eval mode)."""
        if not self.training:
            return feat_a, feat_b
        sizes = [feat_a.shape[-2:], feat_b.shape[-2:]]
        size = max(sizes)
        joint = torch.cat([F.interpolate(f, size=size, mode="nearest") for f in (feat_a, feat_b)], dim=1)
        part_a, part_b = self.dropout2d(joint).split([feat_a.shape[1], feat_b.shape[1]], dim=1)
        part_a = F.interpolate(part_a, size=sizes[0], mode="nearest")
        return part_a, F.interpolate(part_b, size=sizes[1], mode="nearest")

    def forward(self, pyramid: Sequence[Tensor], query_feats: Sequence[Tensor]) -> Tensor:
        """``pyramid`` = [corr4, corr3, corr2]; ``query_feats`` = the last (resized) query tap of layer3, layer2
        and layer1 ([B, 1024, 32, 32], [B, 512, 64, 64], [B, 256, 128, 128] for ResNets)."""
        feat3, feat2, feat1 = (proj(f) for proj, f in zip(self.proj_query_feat, query_feats, strict=True))
        feat3, feat2 = self._dropout_pair(feat3, feat2)

        corr4, corr3, corr2 = pyramid
        c5 = self.encoders[0](corr4)
        c4 = self.encoders[1](corr3)
        c3 = self.encoders[2](corr2)
        # The transformer blocks are residual already; the authors add the input once more.
        c5 = c5 + self.transformer[0](c5)
        c4 = c4 + resize_query_dims(c5, c4.shape[2:4])
        c4 = c4 + self.transformer[1](c4)
        c3 = c3 + resize_query_dims(c4, c3.shape[2:4])
        c3 = c3 + self.transformer[2](c3)
        x = c3.mean(dim=(-2, -1))  # average over the support dims → [B, 128, 32, 32]

        use3, use2, use1 = self.feature_affinity
        x = self.swin_decoder[0](torch.cat((x, feat3), dim=1) if use3 else x)
        x = F.interpolate(x, size=(64, 64), mode="bilinear", align_corners=True)
        x = self.swin_decoder[1](torch.cat((x, feat2), dim=1) if use2 else x)
        x = F.interpolate(x, size=(128, 128), mode="bilinear", align_corners=True)
        x = self.swin_decoder[2](torch.cat((x, feat1), dim=1) if use1 else x)
        return self.decoder(x)


class VATLearner(nn.Module):
    """The authors' ``VATLearner``: holds the aggregator as ``ours`` (hence the ``hpn_learner.ours.`` keys)."""

    def __init__(self, stage_tap_counts: Sequence[int], benchmark: str) -> None:
        super().__init__()
        self.benchmark = benchmark
        self.ours = VolumetricAggregator(stage_tap_counts, feature_affinity(benchmark))

    def forward(self, pyramid: Sequence[Tensor], query_feats: Sequence[Tensor]) -> Tensor:
        return self.ours(pyramid, query_feats)

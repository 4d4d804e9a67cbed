"""Attentive squeeze (AS) layers and ASNet's learner (Kang & Cho, CVPR 2022; FS-S code of dahyun-kang/ifsl).

An AS layer works on a 6-D correlation tensor ``[B, C, Hq, Wq, Hs, Ws]``. The query positions are flattened into
one "depth" axis ``T = Hq·Wq`` that no convolution touches: every convolution has a ``(1, k, k)`` kernel and
acts on the support dimensions only, so the support plane is squeezed while the query plane stays as it is.

One layer = attention block + feed-forward block, as in the authors' ``AttentiveSqueezeLayer``:

- attention: query / key / value embeddings by (1, k, k) convolutions (keys and values are 1×1×1 unless
  ``pool_kv``), 8 heads with the head index as the outermost channel split, dot-product scores **without**
  1/√d scaling, key masking (keys where the support mask, resized bilinearly with ``align_corners=True``
  straight from full resolution to the key grid, is exactly 0 get the score −1e9 — so a fully masked grid
  falls back to uniform attention), softmax over the keys, GN-ReLU-1×1 conv-GN-ReLU aggregation, a strided
  convolutional shortcut (identity only when the layer keeps the channel count and the support size), and a
  final GroupNorm;
- feed-forward: 1×1 conv (C → C/2) - GN - ReLU - 1×1 conv (C/2 → C), residual, GroupNorm.

Module and attribute names follow the authors' ``state_dict`` keys (``attn.short_cut.0``, ``attn.qhead``,
``attn.agg.2``, ``ff.ff.3``, ``ff.out_norm`` ...), so their checkpoints load as they are.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "ASNET_INPUT_SIZES",
    "AttentiveSqueezeBlock",
    "AttentiveSqueezeLayer",
    "AttentiveSqueezeLearner",
    "attention_key_mask",
    "interpolate_query_dims",
    "squeeze_attention",
    "squeeze_attention_reference",
]

HEADS = 8
GROUPS = 4
MASKED_SCORE = -1e9
ASNET_INPUT_SIZES = (393, 512)
"""Square input sizes (inclusive) the ASNet learner's fixed strides can squeeze to a 1×1 support plane."""


def attention_key_mask(support_mask: Tensor, key_size: Sequence[int]) -> Tensor:
    """Which keys are masked out: [B, kh·kw] booleans, True where the resized support mask is exactly 0.

    The [B, H, W] mask is resized bilinearly with ``align_corners=True`` from its full resolution straight to
    ``key_size``: a point sampling on a grid of spacing (H−1)/(kh−1), so a 2×2 grid reads the four corner pixels.
    """
    resized = F.interpolate(support_mask.unsqueeze(1).float(), tuple(key_size), mode="bilinear", align_corners=True)
    return resized.flatten(1) == 0


class _SqueezeAttention(nn.Module):
    """The attention block of an AS layer on 5-D input [B, C, T, H, W] (authors' ``Attention``)."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, padding: int, pool_kv: bool) -> None:
        super().__init__()
        hidden = cout // 2
        if hidden % HEADS:
            raise ValueError(f"half the output channels ({hidden}) must divide into {HEADS} heads")
        self.heads = HEADS
        size, step, pad = (1, kernel, kernel), (1, stride, stride), (0, padding, padding)
        # The shortcut is an identity only when channels and the support size are kept: with input size n the
        # output size is floor((n + 2p - k)/s) + 1, equal to n for every n only if floor((2p - k)/s) == -1 (and
        # s == 1, which the authors' test leaves implicit; it holds for the k = 1 layers where it is used).
        keeps_shape = cin == cout and math.floor((2 * padding - kernel) / stride) == -1
        if keeps_shape:
            self.short_cut = nn.Identity()
        else:
            self.short_cut = nn.Sequential(
                nn.Conv3d(cin, cout, size, stride=step, padding=pad, bias=False),
                nn.GroupNorm(GROUPS, cout),
                nn.ReLU(inplace=True),
            )
        kv_size, kv_step, kv_pad = (size, step, pad) if pool_kv else ((1, 1, 1), (1, 1, 1), (0, 0, 0))
        self.qhead = nn.Conv3d(cin, hidden, size, stride=step, padding=pad, bias=True)
        self.khead = nn.Conv3d(cin, hidden, kv_size, stride=kv_step, padding=kv_pad, bias=True)
        self.vhead = nn.Conv3d(cin, hidden, kv_size, stride=kv_step, padding=kv_pad, bias=True)
        self.agg = nn.Sequential(
            nn.GroupNorm(GROUPS, hidden),
            nn.ReLU(inplace=True),
            nn.Conv3d(hidden, cout, 1, bias=False),
            nn.GroupNorm(GROUPS, cout),
            nn.ReLU(inplace=True),
        )
        self.out_norm = nn.GroupNorm(GROUPS, cout)

    def forward(self, x: Tensor, support_mask: Tensor) -> Tensor:
        shortcut = self.short_cut(x)
        query, key, value = self.qhead(x), self.khead(x), self.vhead(x)
        bsz, hidden, depth, qh, qw = query.shape
        masked = attention_key_mask(support_mask, key.shape[-2:])
        out = squeeze_attention(query.flatten(3), key.flatten(3), value.flatten(3), masked, self.heads)
        return self.out_norm(self.agg(out.reshape(bsz, hidden, depth, qh, qw)) + shortcut)


def _heads_last(x: Tensor, heads: int) -> Tensor:
    """[B, g·d, T, n] → [B, g·T, n, d]: head index outermost in the channel axis, one attention per (g, t)."""
    bsz, channels, depth, n = x.shape
    per_head = x.reshape(bsz, heads, channels // heads, depth, n)
    return per_head.permute(0, 1, 3, 4, 2).reshape(bsz, heads * depth, n, channels // heads)


def squeeze_attention(query: Tensor, key: Tensor, value: Tensor, masked: Tensor, heads: int = HEADS) -> Tensor:
    """Multi-head attention over support positions, separately for every query position t.

    ``query`` [B, C, T, L], ``key`` / ``value`` [B, C, T, M] (C = heads · d), ``masked`` [B, M] (True: masked key).
    Returns [B, C, T, L]. Same numbers as the authors' explicit computation (:func:`squeeze_attention_reference`:
    scores without 1/√d scaling, masked scores *replaced* by −1e9, softmax over keys) up to float rounding, by
    PyTorch's fused attention, which never materialises the [B, g, T, L, M] scores: a masked key gets weight 0
    in both (exp(−1e9 − max) underflows to 0), and a sample whose keys are *all* masked gets the authors'
    uniform weights (every score −1e9) by zeroing its queries (every score 0) and letting it see every key.

    Gradients: where the authors' weights do not depend on the scores — every key masked (uniform weights), or
    all but one (weight exactly 1 on it) — their softmax backward gives the query and key heads exactly zero
    from that sample, while the fused kernel's backward leaves ~1e-9 of rounding (it forms the softmax gradient
    as ``P·(dP − rowsum(dO·O))``), which Adam turns into updates of a sizeable fraction of the learning rate.
    Such a sample's queries are zeroed here too: the same weights (uniform, or 1 on the one visible key), and
    exactly zero gradient to queries and keys.
    """
    if torch.is_grad_enabled() and (query.requires_grad or key.requires_grad):
        # training: the authors' explicit softmax, whose backward rounds as theirs does (training-step parity);
        # the fused kernel's backward differs by ~1e-4 relative on small q/k gradients, which Adam amplifies
        return squeeze_attention_reference(query, key, value, masked, heads)
    bsz, channels, depth, length = query.shape
    all_masked = masked.all(dim=1)
    fixed_weights = (~masked).sum(dim=1) <= 1  # the weights do not depend on the scores
    if bool(fixed_weights.any()):
        query = query * (~fixed_weights).view(bsz, 1, 1, 1).to(query.dtype)
        masked = masked & ~all_masked.view(bsz, 1)
    q, k, v = (_heads_last(t, heads) for t in (query, key, value))
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=~masked.view(bsz, 1, 1, -1), scale=1.0)
    d = channels // heads
    return out.reshape(bsz, heads, depth, length, d).permute(0, 1, 4, 2, 3).reshape(bsz, channels, depth, length)


def squeeze_attention_reference(
    query: Tensor, key: Tensor, value: Tensor, masked: Tensor, heads: int = HEADS
) -> Tensor:
    """:func:`squeeze_attention` computed as the authors write it (for tests): explicit scores, −1e9 replacement."""
    bsz, channels, depth, length = query.shape
    q, k, v = (t.reshape(bsz, heads, channels // heads, depth, -1) for t in (query, key, value))
    scores = torch.einsum("bgdtl,bgdtm->bgtlm", q, k)
    scores = scores.masked_fill(masked.view(bsz, 1, 1, 1, -1), max(MASKED_SCORE, torch.finfo(scores.dtype).min))
    out = torch.einsum("bgtlm,bgdtm->bgdtl", scores.softmax(dim=-1), v)
    return out.reshape(bsz, channels, depth, length)


class _SqueezeFeedForward(nn.Module):
    """The feed-forward block of an AS layer (authors' ``FeedForward``): residual 2-layer 1×1 MLP, GroupNorm."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        hidden = channels // 2
        self.ff = nn.Sequential(
            nn.Conv3d(channels, hidden, 1, bias=False),
            nn.GroupNorm(GROUPS, hidden),
            nn.ReLU(inplace=True),
            nn.Conv3d(hidden, channels, 1, bias=False),
        )
        self.out_norm = nn.GroupNorm(GROUPS, channels)

    def forward(self, x: Tensor) -> Tensor:
        return self.out_norm(self.ff(x) + x)


class AttentiveSqueezeLayer(nn.Module):
    """One AS layer: [B, cin, Hq, Wq, Hs, Ws] → [B, cout, Hq, Wq, Hs', Ws'] (support dims squeezed by ``stride``)."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, pool_kv: bool = False) -> None:
        super().__init__()
        padding = kernel // 2 if kernel > 2 else 0
        self.attn = _SqueezeAttention(cin, cout, kernel, stride, padding, pool_kv)
        self.ff = _SqueezeFeedForward(cout)

    def forward(self, x: Tensor, support_mask: Tensor) -> Tensor:
        bsz, channels, qh, qw, sh, sw = x.shape
        out = self.ff(self.attn(x.reshape(bsz, channels, qh * qw, sh, sw), support_mask))
        return out.reshape(bsz, out.shape[1], qh, qw, *out.shape[-2:])


class AttentiveSqueezeBlock(nn.ModuleList):
    """AS layers applied in sequence, every one with the same support mask (authors' building block)."""

    def __init__(self, cin: int, layers: Sequence[tuple[int, int, int]], pool_kv: bool = False) -> None:
        modules, channels = [], cin
        for cout, kernel, stride in layers:
            modules.append(AttentiveSqueezeLayer(channels, cout, kernel, stride, pool_kv=pool_kv))
            channels = cout
        super().__init__(modules)

    def forward(self, x: Tensor, support_mask: Tensor) -> Tensor:  # type: ignore[override]
        for layer in self:
            x = layer(x, support_mask)
        return x


def interpolate_query_dims(x: Tensor, size: Sequence[int]) -> Tensor:
    """Resize the query dims of [B, C, Hq, Wq, Hs, Ws] to ``size`` (bilinear, align_corners=True), per support pixel."""
    bsz, channels, _, _, sh, sw = x.shape
    planes = x.permute(0, 4, 5, 1, 2, 3).reshape(bsz * sh * sw, channels, *x.shape[2:4])
    planes = F.interpolate(planes, tuple(size), mode="bilinear", align_corners=True)
    return planes.reshape(bsz, sh, sw, channels, *planes.shape[-2:]).permute(0, 3, 4, 5, 1, 2)


def _check_support_dims(x: Tensor, expected: Sequence[int], where: str) -> None:
    if tuple(x.shape[-2:]) != tuple(expected):
        lo, hi = ASNET_INPUT_SIZES
        raise ValueError(
            f"ASNet {where}: support dims squeezed to {tuple(x.shape[-2:])}, expected {tuple(expected)}. The "
            f"learner's fixed strides only fit square inputs of {lo}-{hi} px (the authors use 400)."
        )


class AttentiveSqueezeLearner(nn.Module):
    """ASNet's learner (authors' ``AttentionLearner``): three AS encoders, two AS fusions and a 2-D decoder.

    ``stage_tap_counts`` are the correlation channels per stage, deepest first (R50: 3, 6, 4; R101: 3, 23, 4).
    The input is ``[corr4, corr3, corr2]`` and the [B, H, W] support mask; the output the low-resolution logits
    [B, 2, 2·Wq2, 2·Wq2] (Wq2 = width of the layer2 query taps; the width sets both sides).
    """

    def __init__(self, stage_tap_counts: Sequence[int]) -> None:
        super().__init__()
        in4, in3, in2 = stage_tap_counts
        self.encoder_layer4 = AttentiveSqueezeBlock(in4, [(32, 5, 4), (128, 3, 2)])
        self.encoder_layer3 = AttentiveSqueezeBlock(in3, [(32, 5, 4), (128, 5, 4)], pool_kv=True)
        self.encoder_layer2 = AttentiveSqueezeBlock(in2, [(32, 5, 4), (128, 5, 4)], pool_kv=True)
        self.encoder_layer4to3 = AttentiveSqueezeBlock(128, [(128, 1, 1), (128, 2, 1)])
        self.encoder_layer3to2 = AttentiveSqueezeBlock(128, [(128, 1, 1), (128, 2, 1)])
        self.decoder1 = nn.Sequential(
            nn.Conv2d(128, 128, 3, padding=1, bias=True),
            nn.ReLU(),
            nn.Conv2d(128, 64, 3, padding=1, bias=True),
            nn.ReLU(),
        )
        self.decoder2 = nn.Sequential(
            nn.Conv2d(64, 64, 3, padding=1, bias=True),
            nn.ReLU(),
            nn.Conv2d(64, 2, 3, padding=1, bias=True),
        )

    def forward(self, pyramid: Sequence[Tensor], support_mask: Tensor) -> Tensor:
        corr4, corr3, corr2 = pyramid
        sqz4 = self.encoder_layer4(corr4, support_mask)
        sqz3 = self.encoder_layer3(corr3, support_mask)
        sqz2 = self.encoder_layer2(corr2, support_mask)
        _check_support_dims(sqz2, sqz3.shape[-2:], "encoders")

        sqz4 = interpolate_query_dims(sqz4.mean(dim=(-2, -1), keepdim=True), sqz3.shape[2:4])
        mix43 = self.encoder_layer4to3(sqz4 + sqz3, support_mask)
        _check_support_dims(mix43, (1, 1), "fusion 4to3")
        mix43 = interpolate_query_dims(mix43, sqz2.shape[2:4])
        mix432 = self.encoder_layer3to2(mix43 + sqz2, support_mask)
        _check_support_dims(mix432, (1, 1), "fusion 3to2")

        decoded = self.decoder1(mix432[..., 0, 0])  # drop the 1×1 support dims
        width = decoded.shape[-1]
        decoded = F.interpolate(decoded, (2 * width, 2 * width), mode="bilinear", align_corners=True)
        return self.decoder2(decoded)

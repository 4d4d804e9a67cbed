"""Multi-layer cosine correlation ("hypercorrelation") between query and support taps.

Matches the authors' ``Correlation.multilayer_correlation``: each position's channel vector is divided by
(its L2 norm + 1e-5), all query × support positions are dot-multiplied, negatives are clamped to 0, and the
correlations of each stage are stacked on a channel axis, deepest stage first.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["PROFILER_LABEL", "cosine_correlation", "hypercorrelation_pyramid", "stage_correlation"]

EPS = 1e-5
PROFILER_LABEL = "hmrepro::correlation"
"""The ``torch.profiler`` range of the correlations of :func:`hypercorrelation_pyramid`."""


def _normalise_positions(feat: Tensor) -> Tensor:
    """[B, C, H, W] → [B, C, H·W], each position divided by (its channel L2 norm + 1e-5)."""
    flat = feat.flatten(2)
    return flat / (flat.norm(p=2, dim=1, keepdim=True) + EPS)


def cosine_correlation(query_feat: Tensor, support_feat: Tensor) -> Tensor:
    """Clamped cosine similarity of every query position with every support position: [B, Hq, Wq, Hs, Ws]."""
    q = _normalise_positions(query_feat)
    s = _normalise_positions(support_feat)
    corr = torch.bmm(q.transpose(1, 2), s)
    return corr.view(query_feat.shape[0], *query_feat.shape[-2:], *support_feat.shape[-2:]).clamp_(min=0)


def stage_correlation(query_taps: Sequence[Tensor], support_taps: Sequence[Tensor]) -> Tensor:
    """The clamped cosine correlations of a stage's tap pairs stacked on dim 1: [B, n, Hq, Wq, Hs, Ws].

    Taps of one shape (a stage's, always) are correlated in one batched product straight into the stacked layout
    and clamped in place: the same values as stacking :func:`cosine_correlation` of each pair up to float rounding,
    without a second copy of the stage's correlation (for VAT's layer2 stage, 4 × 64⁴ floats per sample).
    """
    same_shape = len({tuple(t.shape) for t in query_taps}) == 1 and len({tuple(t.shape) for t in support_taps}) == 1
    if not same_shape:
        return torch.stack([cosine_correlation(q, s) for q, s in zip(query_taps, support_taps, strict=True)], dim=1)
    q = torch.stack([_normalise_positions(t) for t in query_taps], dim=1)  # [B, n, C, HWq]
    s = torch.stack([_normalise_positions(t) for t in support_taps], dim=1)  # [B, n, C, HWs]
    corr = torch.matmul(q.transpose(-1, -2), s).clamp_(min=0)  # [B, n, HWq, HWs]
    return corr.view(*corr.shape[:2], *query_taps[0].shape[-2:], *support_taps[0].shape[-2:])


def hypercorrelation_pyramid(
    query_taps: Sequence[Tensor], support_taps: Sequence[Tensor], stage_tap_counts: Sequence[int]
) -> list[Tensor]:
    """Per-stage stacks of correlations, deepest first: ``[corr4 [B,n4,...], corr3 [B,n3,...], corr2 [B,n2,...]]``.

    ``stage_tap_counts`` are the numbers of taps per stage, deepest first (R50: 3, 6, 4); the taps are ordered
    shallowest first, so the deepest stage is the *last* ``stage_tap_counts[0]`` taps.
    """
    if len(query_taps) != len(support_taps):
        raise ValueError(f"{len(query_taps)} query taps but {len(support_taps)} support taps")
    if sum(stage_tap_counts) != len(query_taps):
        raise ValueError(f"stage tap counts {tuple(stage_tap_counts)} do not add up to {len(query_taps)} taps")
    pyramid, end = [], len(query_taps)
    with torch.profiler.record_function(PROFILER_LABEL):  # a label for `hmrepro bench model`'s breakdown
        for count in stage_tap_counts:
            pyramid.append(stage_correlation(query_taps[end - count : end], support_taps[end - count : end]))
            end -= count
    return pyramid

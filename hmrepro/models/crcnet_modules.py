"""The learned parts of CRCNet (Liu et al., IJCV 2022), reconstructed from the paper (``../shared/specs/crcnet.md``).

No code of CRCNet or CRNet is public, so every block here is the spec's reading of the paper; the spec's open
choices ([G#]) are constructor arguments with the spec's default. All module convs are 3×3 with 256 channels and
a ReLU unless the spec says otherwise, with bias and no BatchNorm (the paper names none).

- :class:`Embedding` (§2): Conv3×3(C→256, dilation 2) + ReLU on the concatenated backbone levels.
- :class:`CrossReference` (§3): a channel gate from both images' pooled features, ``w = a_q ⊙ a_s`` [G7],
  with activation ``sigmoid`` | ``relu`` | ``softmax`` (Table 6).
- :class:`CoOccurrenceHead` (§3.5): 2×Conv3×3 + CaNet's ASPP + Conv1×1→2, the training-only sub-prediction [G8].
- :class:`GlobalConditional` (§4, CaNet's dense comparison): masked average pooling, tiling, a fusion conv and one
  residual block [G9].
- :class:`LocalConditional` (§4, Eqs. 1–3): attention of target positions over the conditioning image's positions,
  the similarity multiplied by the conditioning mask before the softmax [G11] (``mask_mode``: ``multiply`` (the
  paper's formula), ``fill`` (−∞ outside the mask), ``none`` (Table 7 "w/o mask")).
- :class:`MaskRefinement` (§5): a two-level encoder–decoder of combined blocks and global convolution blocks,
  run ``steps`` times with the probability map of the previous step as its cache [G12, G13].
- :class:`HistoryMaps` ([G13] option ``canet``): CaNet's training-time cache, the last probability map predicted for
  each training sample, handed back as the next cache of that sample.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "ASPP",
    "CoOccurrenceHead",
    "CombinedBlock",
    "CrossReference",
    "Embedding",
    "GlobalConditional",
    "GlobalConvBlock",
    "HistoryMaps",
    "LocalConditional",
    "MaskRefinement",
    "GATES",
    "LOCAL_MASK_MODES",
    "MRM_GRADIENTS",
    "masked_average_pool",
    "resize_mask",
]

WIDTH = 256
GATES = ("sigmoid", "relu", "softmax")
LOCAL_MASK_MODES = ("multiply", "fill", "none")
MRM_GRADIENTS = ("truncated", "bptt", "canet")


def conv3x3(cin: int, cout: int, dilation: int = 1, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=dilation, dilation=dilation)


def resize_mask(mask: Tensor, size) -> Tensor:
    """A [B, H, W] mask as [B, 1, h, w] floats, resized bilinearly with ``align_corners=True`` (CaNet's MAP)."""
    return F.interpolate(mask.unsqueeze(1).float(), tuple(size), mode="bilinear", align_corners=True)


def masked_average_pool(features: Tensor, mask: Tensor, eps: float = 5e-4) -> Tensor:
    """Σ features ⊙ mask / (Σ mask + eps) over the positions: [B, C, h, w], [B, 1, h, w] → [B, C, 1, 1]."""
    return (features * mask).sum((2, 3), keepdim=True) / (mask.sum((2, 3), keepdim=True) + eps)


class Embedding(nn.Module):
    """E = ReLU(Conv3×3(C→256, dilation 2)(X)) of the concatenated backbone levels (CaNet ``layer5``). Dropout is
    applied by the caller, so that frozen-embedding fine-tuning can cache E and still drop out per step."""

    def __init__(self, in_channels: int, width: int = WIDTH) -> None:
        super().__init__()
        self.conv = conv3x3(in_channels, width, dilation=2)

    def forward(self, levels: list[Tensor]) -> Tensor:
        return F.relu(self.conv(torch.cat(levels, dim=1)))


class CrossReference(nn.Module):
    """Co-occurrence gate: FC–ReLU–FC–activation on each image's pooled features (weights shared), w = a_q ⊙ a_s,
    both feature maps re-weighted by w (no residual)."""

    def __init__(self, width: int = WIDTH, hidden: int = WIDTH, gate: str = "sigmoid") -> None:
        super().__init__()
        if gate not in GATES:
            raise ValueError(f"gate must be one of {GATES}, not {gate!r}")
        self.gate = gate
        self.fc1 = nn.Linear(width, hidden)
        self.fc2 = nn.Linear(hidden, width)

    def importance(self, features: Tensor) -> Tensor:
        z = self.fc2(F.relu(self.fc1(features.mean((2, 3)))))
        if self.gate == "sigmoid":
            return torch.sigmoid(z)
        if self.gate == "relu":
            return F.relu(z)
        return torch.softmax(z, dim=1)

    def forward(self, query: Tensor, support: Tensor) -> tuple[Tensor, Tensor]:
        w = (self.importance(query) * self.importance(support))[..., None, None]
        return query * w, support * w


class ASPP(nn.Module):
    """CaNet's ASPP: image pooling + 1×1 + 3×3 at dilations 6, 12, 18 (256 ch, ReLU each), fused by 1×1 + ReLU."""

    def __init__(self, width: int = WIDTH, dilations: tuple[int, ...] = (6, 12, 18)) -> None:
        super().__init__()
        self.pool = nn.Conv2d(width, width, 1)
        self.point = nn.Conv2d(width, width, 1)
        self.atrous = nn.ModuleList(conv3x3(width, width, dilation=d) for d in dilations)
        self.fuse = nn.Conv2d(width * (2 + len(dilations)), width, 1)

    def forward(self, x: Tensor) -> Tensor:
        pooled = F.relu(self.pool(x.mean((2, 3), keepdim=True))).expand(-1, -1, *x.shape[-2:])
        branches = [pooled, F.relu(self.point(x))] + [F.relu(conv(x)) for conv in self.atrous]
        return F.relu(self.fuse(torch.cat(branches, dim=1)))


class CoOccurrenceHead(nn.Module):
    """The CR sub-head (training only): 2 × (Conv3×3 + ReLU), ASPP, Conv1×1 → 2 logits."""

    def __init__(self, width: int = WIDTH) -> None:
        super().__init__()
        self.conv1 = conv3x3(width, width)
        self.conv2 = conv3x3(width, width)
        self.aspp = ASPP(width)
        self.classifier = nn.Conv2d(width, 2, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.aspp(F.relu(self.conv2(F.relu(self.conv1(x))))))


class ResidualBlock(nn.Module):
    """x + Conv3×3(ReLU(Conv3×3(ReLU(x)))) (CaNet's ``residule`` form)."""

    def __init__(self, width: int = WIDTH) -> None:
        super().__init__()
        self.conv1 = conv3x3(width, width)
        self.conv2 = conv3x3(width, width)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv2(F.relu(self.conv1(F.relu(x))))


class GlobalConditional(nn.Module):
    """C^g = Residual(Dropout(ReLU(Conv3×3 d2 (512→256)([E_t ‖ tile(MAP(E_c, m_c))])))) (CaNet dense comparison)."""

    def __init__(self, width: int = WIDTH, dropout: float = 0.5, eps: float = 5e-4) -> None:
        super().__init__()
        self.fuse = conv3x3(2 * width, width, dilation=2)
        self.dropout = nn.Dropout2d(dropout)
        self.residual = ResidualBlock(width)
        self.eps = eps

    def forward(self, target: Tensor, conditioning: Tensor, mask: Tensor) -> Tensor:
        prototype = masked_average_pool(conditioning, mask, self.eps).expand_as(target)
        fused = self.dropout(F.relu(self.fuse(torch.cat([target, prototype], dim=1))))
        return self.residual(fused)


class LocalConditional(nn.Module):
    """C^l: softmax over conditioning positions of θ(E_t)ᵀδ(E_c) (masked by ``mask_mode``), applied to E_c.

    No 1/√d scaling (the paper's Eq. 2). ``multiply`` (default, literal): background similarities become 0, not
    −∞; an empty mask gives uniform attention. ``fill``: background gets −1e9 (an empty mask → uniform as well).
    ``none``: the mask is not used (Table 7, "w/o mask").
    """

    def __init__(self, width: int = WIDTH, mask_mode: str = "multiply") -> None:
        super().__init__()
        if mask_mode not in LOCAL_MASK_MODES:
            raise ValueError(f"local mask mode must be one of {LOCAL_MASK_MODES}, not {mask_mode!r}")
        self.theta = nn.Conv2d(width, width, 1)
        self.delta = nn.Conv2d(width, width, 1)
        self.mask_mode = mask_mode

    def forward(self, target: Tensor, conditioning: Tensor, mask: Tensor) -> Tensor:
        b, c, h, w = target.shape
        keys = F.relu(self.delta(conditioning)).flatten(2)  # [B, C, Ns]
        queries = F.relu(self.theta(target)).flatten(2)  # [B, C, Nt]
        similarity = queries.transpose(1, 2) @ keys  # [B, Nt, Ns]
        flat_mask = mask.flatten(2)  # [B, 1, Ns]
        if self.mask_mode == "multiply":
            similarity = similarity * flat_mask
        elif self.mask_mode == "fill":
            similarity = similarity.masked_fill(flat_mask <= 0, -1e9)
        attention = torch.softmax(similarity, dim=-1)
        return (conditioning.flatten(2) @ attention.transpose(1, 2)).reshape(b, c, h, w)


class GlobalConvBlock(nn.Module):
    """GCB ("Large kernel matters"): Conv1×k(Convk×1(x)) + Convk×1(Conv1×k(x)), no nonlinearity inside."""

    def __init__(self, width: int = WIDTH, k: int = 7) -> None:
        super().__init__()
        p = k // 2
        self.left_a = nn.Conv2d(width, width, (k, 1), padding=(p, 0))
        self.left_b = nn.Conv2d(width, width, (1, k), padding=(0, p))
        self.right_a = nn.Conv2d(width, width, (1, k), padding=(0, p))
        self.right_b = nn.Conv2d(width, width, (k, 1), padding=(p, 0))

    def forward(self, x: Tensor) -> Tensor:
        return self.left_b(self.left_a(x)) + self.right_b(self.right_a(x))


class CombinedBlock(nn.Module):
    """Fuses the feature branch with the cache: f + Conv3×3(ReLU(Conv3×3([f ‖ P]))) (CaNet's ``residule1``)."""

    def __init__(self, width: int = WIDTH, cache_channels: int = 2) -> None:
        super().__init__()
        self.conv1 = conv3x3(width + cache_channels, width)
        self.conv2 = conv3x3(width, width)

    def forward(self, features: Tensor, cache: Tensor) -> Tensor:
        return features + self.conv2(F.relu(self.conv1(F.relu(torch.cat([features, cache], dim=1)))))


class MaskRefinement(nn.Module):
    """The mask refinement module [G12]: input projection once, then per step

    e1 = combined(f, P); e2 = ReLU(GCB(ReLU(Conv3×3 s2(e1)))); d = e1 + up(e2); d = ReLU(GCB'(combined'(d, P)));
    logits = Conv1×1(d); P ← softmax(logits).

    ``steps`` = T (10); ``use_cache=False`` is the "w/o Mask Refine" ablation (Table 2): one step on a zero cache.
    ``gradient`` [G13]: ``truncated`` (default; the cache is a detached stored map, so steps 1..T−1 run without
    gradient and the loss is on the last step: the same gradient as a detached cache), ``bptt`` (gradient through
    every step and the cache), ``canet`` (CaNet's training: in training mode one step on the ``cache`` given to
    :meth:`forward`, the sample's history from :class:`HistoryMaps`; zeros when none is given). In eval mode every
    option runs the T steps from a zero cache.
    """

    def __init__(
        self, in_channels: int, width: int = WIDTH, steps: int = 10, use_cache: bool = True, gradient: str = "truncated"
    ) -> None:
        super().__init__()
        if gradient not in MRM_GRADIENTS:
            raise ValueError(f"mrm gradient must be one of {MRM_GRADIENTS}, not {gradient!r}")
        if steps < 1:
            raise ValueError(f"the mask refinement needs at least one step, not {steps}")
        self.steps, self.use_cache, self.gradient = steps, use_cache, gradient
        self.project = conv3x3(in_channels, width)
        self.combine1 = CombinedBlock(width)
        self.down = conv3x3(width, width, stride=2)
        self.gcb_low = GlobalConvBlock(width)
        self.combine2 = CombinedBlock(width)
        self.gcb_high = GlobalConvBlock(width)
        self.classifier = nn.Conv2d(width, 2, 1)

    def step(self, features: Tensor, cache: Tensor) -> Tensor:
        e1 = self.combine1(features, cache)
        e2 = F.relu(self.gcb_low(F.relu(self.down(e1))))
        d = e1 + F.interpolate(e2, e1.shape[-2:], mode="bilinear", align_corners=True)
        d = F.relu(self.gcb_high(self.combine2(d, cache)))
        return self.classifier(d)

    def forward(self, x: Tensor, cache: Tensor | None = None) -> Tensor:
        """Logits [B, 2, h, w] of the features ``x``; ``cache`` [B, 2, h, w] is read only by ``canet`` training."""
        features = F.relu(self.project(x))
        zeros = features.new_zeros(features.shape[0], 2, *features.shape[-2:])
        if self.training and self.gradient == "canet":
            return self.step(features, zeros if cache is None or not self.use_cache else cache.to(features.dtype))
        cache = zeros
        steps = self.steps if self.use_cache else 1
        logits = features
        for t in range(steps):
            last = t == steps - 1
            with torch.set_grad_enabled(torch.is_grad_enabled() and (last or self.gradient == "bptt")):
                logits = self.step(features, cache)
            if not last:
                probs = torch.softmax(logits, dim=1)
                cache = probs if self.gradient == "bptt" else probs.detach()
        return logits


class HistoryMaps:
    """CaNet's history masks (its ``train.py`` / ``dataset_mask_train.py``), the training cache of the ``canet`` option.

    For each training sample (a hashable key: CRCNet uses (image name, class)) the last probability map predicted
    for it, kept as its foreground probability in float16 on the CPU (the background is 1 − foreground).
    :meth:`caches` gives each sample of a batch its stored map with probability 1 − ``zero_prob`` (CaNet: 0.7 of the
    time zeros), and zeros for a sample not seen yet or of another size; :meth:`store` keeps the new prediction.
    The draws come from torch's global generator. Not part of the ``state_dict``: a resumed run starts empty.
    """

    def __init__(self, zero_prob: float = 0.7) -> None:
        if not 0.0 <= zero_prob <= 1.0:
            raise ValueError(f"the history's zero probability must be in [0, 1], not {zero_prob}")
        self.zero_prob = zero_prob
        self.maps: dict[Hashable, Tensor] = {}

    def __len__(self) -> int:
        return len(self.maps)

    def caches(self, keys: Sequence[Hashable], like: Tensor) -> Tensor:
        """Caches [B, 2, h, w] (dtype and device of ``like`` [B, C, h, w]) for the samples ``keys``."""
        cache = like.new_zeros(like.shape[0], 2, *like.shape[-2:])
        use = torch.rand(len(keys)) >= self.zero_prob
        for i, key in enumerate(keys):
            foreground = self.maps.get(key)
            if bool(use[i]) and foreground is not None and foreground.shape == like.shape[-2:]:
                foreground = foreground.to(like)
                cache[i, 0], cache[i, 1] = 1 - foreground, foreground
        return cache

    def store(self, keys: Sequence[Hashable], logits: Tensor) -> None:
        """Keep softmax(``logits`` [B, 2, h, w]) of each sample (detached)."""
        foreground = torch.softmax(logits.detach().float(), dim=1)[:, 1].to("cpu", torch.float16)
        for key, fg in zip(keys, foreground):
            self.maps[key] = fg.clone()

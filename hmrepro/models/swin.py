"""Shifted-window (Swin) transformer blocks over any number of spatial dims: 2D for VAT's decoder, 4D for its
correlation aggregator.

Follows Swin (Liu et al., 2021) as VAT's ``model/base/swin.py`` (2D) and ``model/base/swin4d.py`` (4D) use it:

- tokens are channels-last tensors ``[B, *spatial, C]``; a window is a cube of ``window ** ndim`` tokens, ordered
  row-major inside the window, and windows are ordered (batch, block index along dim 0, dim 1, ...) row-major;
- pre-norm blocks ``x + attn(LN(x))`` then ``x + mlp(LN(x))`` (exact GELU, MLP ratio 4, LayerNorm eps 1e-5, no
  dropout or drop-path: all rates are 0 in VAT);
- attention: ``q · k · head_dim ** -0.5``, plus a learnt relative position bias (table of
  ``(2·window − 1) ** ndim`` rows × heads, indexed by the row-major mixed-radix code of the coordinate offsets
  row − column), plus for shifted blocks the region mask, then softmax;
- odd blocks of a stage are shifted: cyclic roll by ``−window // 2`` along every spatial dim before attention and
  back afterwards; tokens that come from different regions of the rolled grid (3 regions per dim: the last
  ``window`` positions split at ``shift``, and the rest) get −100 added to their score. The mask is the persistent
  float buffer ``attn_mask`` of the block ([windows, N, N], 0 or −100), as in the authors' checkpoints;
- a stage whose smallest side is not larger than the window uses one window of that side and no shift (Swin's
  rule; VAT's sizes never trigger it).

Module and buffer names are the authors' (``norm1``, ``attn.qkv``, ``attn.proj``,
``attn.relative_position_bias_table``, ``attn.relative_position_index``, ``norm2``, ``mlp.fc1``, ``mlp.fc2``,
``attn_mask``; a stage holds ``blocks``), so their ``state_dict`` keys come out unchanged.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "Mlp",
    "SwinBlock",
    "SwinStage",
    "SwinTransformer2d",
    "SwinTransformer4d",
    "TransformerWrapper2d",
    "TransformerWrapper4d",
    "WindowAttention",
    "init_swin_weights",
    "relative_position_index",
    "shifted_window_mask",
    "window_merge",
    "window_partition",
    "window_token_order",
]

MASK_VALUE = -100.0
"""What Swin adds to the attention score of a token pair from different regions of the rolled grid."""


# ---------------------------------------------------------------------------------------------------------------
# Windows
# ---------------------------------------------------------------------------------------------------------------


def window_partition(x: Tensor, window: int) -> Tensor:
    """``[B, *spatial, C]`` → ``[B · windows, window ** ndim, C]`` (windows and their tokens row-major)."""
    bsz, *spatial, ch = x.shape
    ndim = len(spatial)
    split = [bsz]
    for side in spatial:
        split += [side // window, window]
    x = x.reshape(*split, ch)
    block_dims = [1 + 2 * i for i in range(ndim)]
    inner_dims = [2 + 2 * i for i in range(ndim)]
    x = x.permute(0, *block_dims, *inner_dims, 2 * ndim + 1)
    return x.reshape(-1, window**ndim, ch)


def window_merge(windows: Tensor, window: int, spatial: Sequence[int]) -> Tensor:
    """Inverse of :func:`window_partition`: ``[B · windows, window ** ndim, C]`` → ``[B, *spatial, C]``."""
    ndim = len(spatial)
    ch = windows.shape[-1]
    blocks = [side // window for side in spatial]
    x = windows.reshape(-1, *blocks, *([window] * ndim), ch)
    order = [0]
    for i in range(ndim):
        order += [1 + i, 1 + ndim + i]
    x = x.permute(*order, 2 * ndim + 1)
    return x.reshape(x.shape[0], *spatial, ch)


def relative_position_index(window: int, ndim: int) -> Tensor:
    """[N, N] int64 (N = window ** ndim): the bias-table row of every (row token, column token) pair.

    Offsets ``d = coord(row) − coord(col)`` are shifted to ``0 .. 2·window − 2`` and combined row-major, e.g. 4D
    with window 4: ``(d0+3)·343 + (d1+3)·49 + (d2+3)·7 + (d3+3)``.
    """
    # a copy on the default device (a `with torch.device(...)` block's); the cached index stays on the CPU
    return _relative_position_index(window, ndim).to(torch.get_default_device(), copy=True)


@functools.cache
def _relative_position_index(window: int, ndim: int) -> Tensor:
    axes = [torch.arange(window, device="cpu")] * ndim
    coords = torch.stack(torch.meshgrid(*axes, indexing="ij")).flatten(1)  # [ndim, N]
    offsets = coords[:, :, None] - coords[:, None, :] + (window - 1)  # [ndim, N, N]
    radix = 2 * window - 1
    index = torch.zeros(offsets.shape[1:], dtype=torch.int64, device="cpu")
    for dim in range(ndim):
        index = index * radix + offsets[dim]
    return index


def shifted_window_mask(spatial: Sequence[int], window: int, shift: int) -> Tensor:
    """[windows, N, N] float: 0 where two tokens of a window come from the same region of the rolled grid, −100
    elsewhere (3 regions per dim: ``[0, S−window)``, ``[S−window, S−shift)``, ``[S−shift, S)``)."""
    ndim = len(spatial)
    labels = torch.zeros(1, *spatial, 1)
    for dim, side in enumerate(spatial):
        along = torch.zeros(side)
        along[side - window : side - shift] = 1
        along[side - shift :] = 2
        shape = [1] * (ndim + 2)
        shape[dim + 1] = side
        labels = labels * 3 + along.view(shape)
    windows = window_partition(labels, window).squeeze(-1)  # [windows, N]
    diff = windows.unsqueeze(1) - windows.unsqueeze(2)
    return torch.where(diff != 0, torch.tensor(MASK_VALUE), torch.tensor(0.0))


def window_token_order(spatial: Sequence[int], window: int, shift: int) -> Tensor:
    """[L] int64: the row-major grid index of the token at each position of the rolled (by −``shift`` along every
    dim) and window-partitioned sequence, so ``tokens[:, order]`` = roll + :func:`window_partition` in one gather."""
    grid = torch.arange(math.prod(spatial)).view(1, *spatial, 1)
    if shift:
        grid = torch.roll(grid, shifts=(-shift,) * len(spatial), dims=tuple(range(1, len(spatial) + 1)))
    return window_partition(grid, window).flatten()


# ---------------------------------------------------------------------------------------------------------------
# Blocks
# ---------------------------------------------------------------------------------------------------------------


class WindowAttention(nn.Module):
    """Multi-head self-attention inside windows, with a relative position bias (and an optional region mask)."""

    def __init__(self, dim: int, window: int, ndim: int, num_heads: int) -> None:
        super().__init__()
        self.dim, self.window, self.ndim, self.num_heads = dim, window, ndim, num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window - 1) ** ndim, num_heads))
        self.register_buffer("relative_position_index", relative_position_index(window, ndim))
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)
        self._masked_bias_cache: tuple[tuple, Tensor] | None = None

    def position_bias(self) -> Tensor:
        """[heads, N, N] relative position bias."""
        tokens = self.relative_position_index.shape[0]
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)]
        return bias.view(tokens, tokens, self.num_heads).permute(2, 0, 1)

    def masked_bias(self, mask: Tensor, dtype: torch.dtype) -> Tensor:
        """[windows, heads, N, N]: the position bias plus the region ``mask``, in ``dtype``.

        Without autograd (evaluation) the sum is kept and reused while the bias table, its index and the mask are
        the same tensors, unmodified (their in-place version counters; an optimizer step or ``load_state_dict``
        bumps them), with the same shape, device and dtype: the same values, built once instead of on every call
        (the finest 4D stage's is [256, 4, 256, 256], 256 MiB, ~5 % of a VAT forward on a CPU). With autograd it
        is built fresh and nothing is kept.
        """
        sources = (self.relative_position_bias_table, self.relative_position_index, mask)
        if torch.is_grad_enabled() or any(t.is_inference() for t in sources):  # inference tensors have no version
            self._masked_bias_cache = None
            return self._build_masked_bias(mask, dtype)
        key = (tuple(t._version for t in sources), tuple(mask.shape), mask.device, dtype)
        cached = self._masked_bias_cache
        if cached is not None and cached[0][0] == key and all(a is b for a, b in zip(cached[0][1], sources)):
            return cached[1]
        bias = self._build_masked_bias(mask, dtype)
        self._masked_bias_cache = ((key, sources), bias)
        return bias

    def _build_masked_bias(self, mask: Tensor, dtype: torch.dtype) -> Tensor:
        bias = self.position_bias().contiguous().unsqueeze(0)  # contiguous: the sum comes out contiguous too
        return (bias + mask.unsqueeze(1)).to(dtype)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """``x`` [B · windows, N, C]; ``mask`` [windows, N, N] or None (windows vary fastest within a sample)."""
        batch_windows, tokens, ch = x.shape
        qkv = self.qkv(x).view(batch_windows, tokens, 3, self.num_heads, ch // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each [B·windows, heads, N, head_dim]
        # softmax(q·k·scale + bias [+ mask]) · v with torch's fused attention: the same function as the authors'
        # explicit (q·scale)·k, up to float rounding (~1e-6), without materialising the [B·windows, heads, N, N]
        # scores (1/2 GB per sample for the finest 4D stage).
        if mask is None:
            bias = self.position_bias().unsqueeze(0)  # [1, heads, N, N]
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.to(q.dtype), scale=self.scale)
        else:
            windows = mask.shape[0]
            bias = self.masked_bias(mask, q.dtype)  # [windows, heads, N, N]
            out = torch.cat(
                [
                    F.scaled_dot_product_attention(qs, ks, vs, attn_mask=bias, scale=self.scale)
                    for qs, ks, vs in zip(q.split(windows), k.split(windows), v.split(windows), strict=True)
                ]
            )  # one sample at a time: broadcasting the mask over the batch would copy it
        return self.proj(out.transpose(1, 2).reshape(batch_windows, tokens, ch))


class Mlp(nn.Module):
    """``fc1`` → exact GELU → ``fc2``."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class SwinBlock(nn.Module):
    """One (shifted-)window transformer block on channels-last tokens ``[B, *spatial, C]``."""

    attn_mask: Tensor | None

    def __init__(
        self, dim: int, spatial: Sequence[int], num_heads: int, window: int, shift: int, mlp_ratio: float = 4.0
    ) -> None:
        super().__init__()
        self.spatial = tuple(spatial)
        if min(self.spatial) <= window:  # Swin's rule: one window over the whole (small) grid, no shift
            window, shift = min(self.spatial), 0
        if any(side % window for side in self.spatial):
            raise ValueError(f"grid {self.spatial} is not a multiple of the window {window}")
        self.window, self.shift = window, shift
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, window, len(self.spatial), num_heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        # Persistent like the authors' (their checkpoints hold it); registered as None when not shifted, which
        # keeps it out of the state_dict exactly as in theirs.
        self.register_buffer("attn_mask", shifted_window_mask(self.spatial, window, shift) if shift else None)
        order = window_token_order(self.spatial, window, shift)
        self.register_buffer("token_order", order, persistent=False)
        restore = torch.empty_like(order).scatter_(0, order, torch.arange(order.numel()))  # inverse permutation
        self.register_buffer("token_restore", restore, persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        if tuple(x.shape[1:-1]) != self.spatial:
            raise ValueError(f"expected a {self.spatial} grid of tokens, got {tuple(x.shape[1:-1])}")
        bsz, ch = x.shape[0], x.shape[-1]
        tokens = x.reshape(bsz, -1, ch)
        # roll + window partition (and back) as one gather each way: same values, 2 copies instead of ~10.
        windows = self.norm1(tokens).index_select(1, self.token_order)
        attended = self.attn(windows.view(-1, self.window ** len(self.spatial), ch), self.attn_mask)
        tokens = tokens + attended.view(bsz, -1, ch).index_select(1, self.token_restore)
        tokens = tokens + self.mlp(self.norm2(tokens))
        return tokens.view(x.shape)


class SwinStage(nn.Module):
    """``depth`` blocks, every odd one shifted by ``window // 2`` (the authors' ``BasicLayer``)."""

    def __init__(self, dim: int, spatial: Sequence[int], depth: int, num_heads: int, window: int) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            SwinBlock(dim, spatial, num_heads, window, shift=0 if i % 2 == 0 else window // 2) for i in range(depth)
        )

    def forward(self, x: Tensor) -> Tensor:
        for block in self.blocks:
            x = block(x)
        return x


def init_swin_weights(module: nn.Module) -> None:
    """Swin's initialisation: linear weights truncated normal (std 0.02) with zero bias, LayerNorms 1 / 0."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


# ---------------------------------------------------------------------------------------------------------------
# VAT's two transformer wrappers
# ---------------------------------------------------------------------------------------------------------------


class SwinTransformer4d(nn.Module):
    """VAT's 4D Swin on a correlation grid (Hq, Wq, Hs, Ws): one stage (``layer``) and a final ``norm``.

    The authors' forward returns the stage output *without* the final LayerNorm: ``norm`` only exists so their
    checkpoints (which hold it) load.
    """

    def __init__(self, spatial: Sequence[int], dim: int = 128, depth: int = 2, num_heads: int = 4, window: int = 4):
        super().__init__()
        self.layer = SwinStage(dim, spatial, depth, num_heads, window)
        self.norm = nn.LayerNorm(dim)  # unused, as in the authors' code
        init_swin_weights(self)

    def forward(self, tokens: Tensor) -> Tensor:
        return self.layer(tokens)


class _TokenWrapper(nn.Module):
    """Holds ``transformer``, which a subclass's ``forward`` runs on the channels-last tokens of its input."""

    def __init__(self, transformer: nn.Module) -> None:
        super().__init__()
        self.transformer = transformer


class TransformerWrapper4d(_TokenWrapper):
    """[B, C, Hq, Wq, Hs, Ws] → channels-last tokens → ``transformer`` (a :class:`SwinTransformer4d`) → back (no
    residual here)."""

    def forward(self, x: Tensor) -> Tensor:
        return self.transformer(x.permute(0, 2, 3, 4, 5, 1).contiguous()).permute(0, 5, 1, 2, 3, 4)


class SwinTransformer2d(nn.Module):
    """VAT's 2D Swin of the decoder: one stage of 2 blocks (``layers.0``, window 8, 4 heads) + final ``norm``."""

    def __init__(self, spatial: Sequence[int], dim: int, depth: int = 2, num_heads: int = 4, window: int = 8):
        super().__init__()
        self.layers = nn.ModuleList([SwinStage(dim, spatial, depth, num_heads, window)])
        self.norm = nn.LayerNorm(dim)
        init_swin_weights(self)

    def forward(self, tokens: Tensor) -> Tensor:
        for layer in self.layers:
            tokens = layer(tokens)
        return self.norm(tokens)


class TransformerWrapper2d(_TokenWrapper):
    """[B, C, H, W] → channels-last tokens ``x`` → ``x + transformer(x)`` (a :class:`SwinTransformer2d`) →
    [B, C, H, W]."""

    def forward(self, x: Tensor) -> Tensor:
        tokens = x.permute(0, 2, 3, 1).contiguous()
        return (tokens + self.transformer(tokens)).permute(0, 3, 1, 2)

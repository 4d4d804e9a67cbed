"""Support masking modes: how the support mask enters the support features before correlation.

Two ways to mask, and three ways to merge them (HM paper, Alg. 1 and Table 6):

- **FM** (feature masking, HSNet's baseline): each support tap × the support mask resized to the tap's size with
  bilinear interpolation, ``align_corners=True`` (border values stay fractional).
- **IM** (input masking): the taps of the *normalised* support image × the 0/1 mask, so the background becomes
  the ImageNet mean colour (0 after normalisation), not black. No feature masking afterwards.
- **HM** (hybrid, the HM repository's ``hsnet.py``): per element keep FM where FM > 0, else IM. Taps are
  pre-ReLU, so negative activations *inside* the object are replaced by IM values too, not only the zeroed
  background.
- **HM (Simple Add.)**: FM + IM. **HM (Reverse)**: per element keep IM where IM > 0, else FM. These two are the
  paper's Table 6 ablations; the HM repository ships no code for them.

Outside the paper's modes, ``none`` (:data:`NO_MASKING`) leaves the support taps as they are: the baseline of a
model whose mask acts elsewhere (ASNet only masks attention keys inside its learner).

Every mode is a pure function ``mode(image_taps, masked_image_taps, mask) -> taps`` where ``image_taps`` are the
taps of the support image, ``masked_image_taps`` those of :func:`mask_image` of it, and ``mask`` the [B, H, W]
support mask. A mode that does not need one of the tap lists accepts ``None`` for it;
:class:`MaskingMode` says which it needs so the model runs the backbone only on what is used.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "MASKING_MODES",
    "NO_MASKING",
    "MaskingMode",
    "apply_masking",
    "get_masking_mode",
    "hybrid_add",
    "hybrid_replace",
    "hybrid_reverse",
    "mask_features",
    "mask_image",
    "masked_support_taps",
    "support_images",
]

Taps = list[Tensor]


# ---------------------------------------------------------------------------------------------------------------
# Building blocks
# ---------------------------------------------------------------------------------------------------------------


def mask_features(taps: Sequence[Tensor], mask: Tensor) -> Taps:
    """FM: each tap [B, C, h, w] × ``mask`` [B, H, W] resized bilinearly (align_corners=True) to h × w.

    The mask is resized once per tap size and dtype (a stage's taps share theirs), not once per tap."""
    resized: dict[tuple, Tensor] = {}
    masked = []
    for tap in taps:
        key = (*tap.shape[-2:], tap.dtype)
        if key not in resized:
            plane = mask.unsqueeze(1).to(tap.dtype)
            resized[key] = F.interpolate(plane, tap.shape[-2:], mode="bilinear", align_corners=True)
        masked.append(tap * resized[key])
    return masked


def mask_image(image: Tensor, mask: Tensor) -> Tensor:
    """IM input: a normalised image [B, 3, H, W] × its 0/1 mask [B, H, W] on every channel."""
    return image * mask.unsqueeze(1).to(image.dtype)


def hybrid_replace(fm_taps: Sequence[Tensor], im_taps: Sequence[Tensor]) -> Taps:
    """HM: where the FM feature is > 0 keep it, else take the IM feature (elementwise, every tap)."""
    return [torch.where(fm > 0, fm, im) for fm, im in zip(fm_taps, im_taps, strict=True)]


def hybrid_add(fm_taps: Sequence[Tensor], im_taps: Sequence[Tensor]) -> Taps:
    """HM (Simple Add.): FM + IM, elementwise, every tap."""
    return [fm + im for fm, im in zip(fm_taps, im_taps, strict=True)]


def hybrid_reverse(fm_taps: Sequence[Tensor], im_taps: Sequence[Tensor]) -> Taps:
    """HM (Reverse): where the IM feature is > 0 keep it, else take the FM feature."""
    return [torch.where(im > 0, im, fm) for fm, im in zip(fm_taps, im_taps, strict=True)]


# ---------------------------------------------------------------------------------------------------------------
# The modes
# ---------------------------------------------------------------------------------------------------------------


def fm(image_taps: Sequence[Tensor] | None, masked_image_taps: Sequence[Tensor] | None, mask: Tensor) -> Taps:
    """Feature masking (HSNet)."""
    return mask_features(image_taps, mask)


def im(image_taps: Sequence[Tensor] | None, masked_image_taps: Sequence[Tensor] | None, mask: Tensor) -> Taps:
    """Input masking: the taps of the masked image, as they are."""
    return list(masked_image_taps)


def hm(image_taps: Sequence[Tensor] | None, masked_image_taps: Sequence[Tensor] | None, mask: Tensor) -> Taps:
    """Hybrid masking (HM): FM where FM > 0, else IM."""
    return hybrid_replace(mask_features(image_taps, mask), masked_image_taps)


def hm_add(image_taps: Sequence[Tensor] | None, masked_image_taps: Sequence[Tensor] | None, mask: Tensor) -> Taps:
    """HM (Simple Add.): FM + IM."""
    return hybrid_add(mask_features(image_taps, mask), masked_image_taps)


def hm_reverse(image_taps: Sequence[Tensor] | None, masked_image_taps: Sequence[Tensor] | None, mask: Tensor) -> Taps:
    """HM (Reverse): IM where IM > 0, else FM."""
    return hybrid_reverse(mask_features(image_taps, mask), masked_image_taps)


def none(image_taps: Sequence[Tensor] | None, masked_image_taps: Sequence[Tensor] | None, mask: Tensor) -> Taps:
    """No support feature masking (the ASNet baseline: its mask only masks attention keys inside the learner)."""
    return list(image_taps)


@dataclass(frozen=True)
class MaskingMode:
    """A masking mode and which backbone passes it needs."""

    name: str
    apply: Callable[[Sequence[Tensor] | None, Sequence[Tensor] | None, Tensor], Taps]
    needs_image_taps: bool
    """Needs the taps of the plain support image (for FM)."""
    needs_masked_image_taps: bool
    """Needs the taps of the input-masked support image (for IM)."""


MASKING_MODES: dict[str, MaskingMode] = {
    "fm": MaskingMode("fm", fm, needs_image_taps=True, needs_masked_image_taps=False),
    "im": MaskingMode("im", im, needs_image_taps=False, needs_masked_image_taps=True),
    "hm": MaskingMode("hm", hm, needs_image_taps=True, needs_masked_image_taps=True),
    "hm-add": MaskingMode("hm-add", hm_add, needs_image_taps=True, needs_masked_image_taps=True),
    "hm-reverse": MaskingMode("hm-reverse", hm_reverse, needs_image_taps=True, needs_masked_image_taps=True),
}


NO_MASKING = MaskingMode("none", none, needs_image_taps=True, needs_masked_image_taps=False)
"""Mode ``none``: the support taps as they are. Not one of the HM paper's masking modes (so not in
:data:`MASKING_MODES`): it is the baseline of a model that puts the mask elsewhere (ASNet masks attention keys)."""


def get_masking_mode(name: str) -> MaskingMode:
    """The :class:`MaskingMode` called ``name`` (``fm``, ``im``, ``hm``, ``hm-add``, ``hm-reverse``, or ``none``)."""
    if name == NO_MASKING.name:
        return NO_MASKING
    try:
        return MASKING_MODES[name]
    except KeyError:
        raise ValueError(
            f"unknown masking mode {name!r}; choose one of {sorted(MASKING_MODES) + [NO_MASKING.name]}"
        ) from None


def support_images(mode: MaskingMode, support_img: Tensor, mask: Tensor) -> Tensor:
    """The image batch whose taps ``mode`` merges: the plain support images and/or the input-masked ones (in this
    order, concatenated on the batch axis). ``mask`` is [B, H, W] in the image's dtype."""
    images = []
    if mode.needs_image_taps:
        images.append(support_img)
    if mode.needs_masked_image_taps:
        images.append(mask_image(support_img, mask))
    return torch.cat(images) if len(images) > 1 else images[0]


def masked_support_taps(
    mode: MaskingMode, extract: Callable[[Tensor], Sequence[Tensor]], support_img: Tensor, mask: Tensor
) -> Taps:
    """Support taps masked by ``mode``: the images it needs (plain and/or input-masked) go through ``extract``
    (image batch → taps) in one batch, then the mode merges them. ``mask`` is [B, H, W] in the image's dtype."""
    taps = extract(support_images(mode, support_img, mask))
    if mode.needs_image_taps and mode.needs_masked_image_taps:
        image_taps, masked_taps = zip(*(tap.chunk(2) for tap in taps))
    elif mode.needs_image_taps:
        image_taps, masked_taps = taps, None
    else:
        image_taps, masked_taps = None, taps
    return mode.apply(image_taps, masked_taps, mask)


def apply_masking(
    name: str,
    image_taps: Sequence[Tensor] | None,
    masked_image_taps: Sequence[Tensor] | None,
    mask: Tensor,
) -> Taps:
    """Masked support taps by mode ``name``."""
    return get_masking_mode(name).apply(image_taps, masked_image_taps, mask)

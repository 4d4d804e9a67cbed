"""Which preprocessing a model family evaluates (and trains) with: a name → (image transform, mask resize).

- ``hsnet`` (HSNet, ASNet and their masking variants): torchvision ``Resize`` on the PIL image (bilinear with
  antialiasing), ``ToTensor``, ImageNet normalisation; masks by torch nearest. The query mask may stay at its
  original size (``--original-size``).
- ``vat`` (VAT and its masking variants, ../shared/specs/vat.md §5-§6): Albumentations 1.1.0 on the uint8 RGB
  array — ``cv2.resize`` INTER_LINEAR without antialiasing, float32 ``(x - 255 mean) / (255 std)``; masks by
  ``cv2`` INTER_NEAREST, jointly with the image, so evaluation is always at the network resolution
  (``original_size`` is refused).

The recipe key ``preprocess`` (``[recipe]`` table of ``recipes/<family>.toml``, default ``hsnet``) names it;
:func:`preprocess_of` reads it from a resolved configuration.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch

from .bam import bam_image_transform, bam_resize_mask
from .transforms import image_transform, resize_mask, resize_mask_cv2, vat_image_transform

__all__ = ["PREPROCESSINGS", "Preprocessing", "get_preprocessing", "preprocess_of", "train_transform"]


@dataclass(frozen=True)
class Preprocessing:
    """One preprocessing protocol."""

    name: str
    image_transform: Callable[[int], Callable]  # img_size → (PIL image → [3, S, S] tensor)
    resize_mask: Callable[[torch.Tensor, tuple[int, int]], torch.Tensor]  # raw [H, W] mask → float [h, w]
    original_size: bool  # whether the query mask can be kept at its original size (original-size evaluation)
    description: str = ""


PREPROCESSINGS: dict[str, Preprocessing] = {
    "hsnet": Preprocessing(
        "hsnet",
        image_transform,
        resize_mask,
        True,
        "torchvision Resize on PIL (bilinear, antialiased), ToTensor, ImageNet normalisation; torch nearest masks",
    ),
    "vat": Preprocessing(
        "vat",
        vat_image_transform,
        resize_mask_cv2,
        False,
        "cv2.resize INTER_LINEAR on uint8 (no antialiasing), Albumentations Normalize; cv2 INTER_NEAREST masks",
    ),
    "bam": Preprocessing(
        "bam",
        bam_image_transform,
        bam_resize_mask,
        True,
        "BAM/PFENet: aspect kept, longer side to S (sides floored to x8), top-left on an S x S canvas (zeros; masks "
        "255), cv2 INTER_LINEAR / INTER_NEAREST; scored at the original label by the bam protocol",
    ),
}


def get_preprocessing(name: str) -> Preprocessing:
    """The preprocessing called ``name`` ('hsnet' or 'vat')."""
    try:
        return PREPROCESSINGS[name]
    except KeyError:
        raise ValueError(f"unknown preprocessing {name!r}; choose one of {', '.join(PREPROCESSINGS)}") from None


def preprocess_of(config: Mapping) -> str:
    """The preprocessing of a resolved recipe/run configuration (runs saved before the key existed: 'hsnet')."""
    name = config.get("preprocess") or "hsnet"
    get_preprocessing(name)
    return name


def train_transform(augment: str, preprocess: str, img_size: int, geometric=None):
    """The training image transform: the recipe's augmentation followed by ``preprocess``'s resize + normalisation.

    ``augment='geometric'`` (:mod:`hmrepro.data.geometric`, parameters ``geometric``) transforms image and masks
    together and ends with its own crop and normalisation (the PFENet/BAM pipeline), whatever ``preprocess``."""
    from .augment import build_train_transform

    transform = build_train_transform(augment, img_size, geometric)
    if preprocess == "hsnet" or hasattr(transform, "pair"):
        return transform
    base = get_preprocessing(preprocess).image_transform(img_size)
    if hasattr(transform, "base"):  # CatsAugment: augmentation on the PIL image, then the base transform
        transform.base = base
        return transform
    return base

"""Preprocessing as the authors do it.

Images: PIL image → torchvision ``Resize((S, S))`` (bilinear with PIL's antialiasing, what ``Resize`` applies
to a PIL image) → ``ToTensor`` → ImageNet mean/std. Masks: torch nearest interpolation of the raw mask to
S × S (the query mask only when not evaluating at the original size; support masks always), then the
benchmark turns the raw values into the 0/1 mask of the episode's class (and PASCAL's ignore map).

VAT's preprocessing (OpenCV resize without antialiasing, cv2 nearest masks) is :class:`VatImageTransform` and
:func:`resize_mask_cv2` below; :mod:`hmrepro.data.preprocessing` maps a preprocessing name to the pair.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision import transforms as T

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def image_transform(img_size: int) -> T.Compose:
    """PIL RGB image → normalised float tensor [3, img_size, img_size]."""
    return T.Compose(
        [
            T.Resize((img_size, img_size), interpolation=T.InterpolationMode.BILINEAR),
            T.ToTensor(),
            T.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )


def resize_mask(mask: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Nearest-neighbour resize of a raw [H, W] mask to ``size``, as float (the authors' call)."""
    return F.interpolate(mask[None, None].float(), size=size, mode="nearest")[0, 0]


def denormalize(img: torch.Tensor) -> torch.Tensor:
    """Undo the ImageNet normalisation (for figures)."""
    mean = torch.tensor(IMAGENET_MEAN, device=img.device).view(-1, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=img.device).view(-1, 1, 1)
    return img * std + mean


# ---------------------------------------------------------------------------------------------------------------
# VAT's preprocessing (../shared/specs/vat.md §6): Albumentations 1.1.0 on the uint8 RGB array —
# Resize(S, S) with cv2 INTER_LINEAR (no antialiasing), Normalize, ToTensorV2; masks resized jointly with
# cv2 INTER_NEAREST. OpenCV's 8-bit INTER_LINEAR is fixed-point (a float bilinear resize differs by ±1 grey level
# in about 13 % of the pixels) and torch's nearest differs from cv2's at some sizes, so both use OpenCV itself,
# imported lazily (only VAT's preprocessing needs it).
# ---------------------------------------------------------------------------------------------------------------


def _cv2():
    try:
        import cv2
    except ImportError:  # pragma: no cover - depends on the environment
        from ..errors import HmreproError

        raise HmreproError(
            "VAT's preprocessing needs OpenCV: pip install opencv-python-headless (a dependency of hmrepro)"
        ) from None
    return cv2


def albumentations_normalize(arr: np.ndarray, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> np.ndarray:
    """Albumentations 1.1.0's ``normalize``: float32 ``(x - 255 * mean) * reciprocal(255 * std)``."""
    mean32 = np.array(mean, dtype=np.float32) * np.float32(255.0)
    denominator = np.reciprocal(np.array(std, dtype=np.float32) * np.float32(255.0), dtype=np.float32)
    out = arr.astype(np.float32)
    out -= mean32
    out *= denominator
    return out


class VatImageTransform:
    """PIL RGB image (or uint8 [H, W, 3] array) → [3, S, S] float tensor exactly as VAT preprocesses it.

    ``cv2.resize(arr, (S, S), interpolation=cv2.INTER_LINEAR)`` on the uint8 array, then Albumentations'
    Normalize (ImageNet mean/std) and ToTensorV2 (HWC → CHW). A class, not a closure, so that DataLoader workers
    can pickle it.
    """

    def __init__(self, img_size: int):
        self.img_size = int(img_size)

    def __call__(self, img) -> torch.Tensor:
        cv2 = _cv2()
        arr = np.ascontiguousarray(
            np.asarray(img.convert("RGB") if isinstance(img, Image.Image) else img, dtype=np.uint8)
        )
        resized = cv2.resize(arr, (self.img_size, self.img_size), interpolation=cv2.INTER_LINEAR)
        return torch.from_numpy(np.ascontiguousarray(albumentations_normalize(resized).transpose(2, 0, 1)))

    def __repr__(self) -> str:
        return f"VatImageTransform(img_size={self.img_size})"


def vat_image_transform(img_size: int) -> VatImageTransform:
    """VAT's image preprocessing at side ``img_size`` (473 for PASCAL/FSS, 417 for COCO in VAT's configs)."""
    return VatImageTransform(img_size)


def resize_mask_cv2(mask: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``cv2.resize(mask, (W, H), interpolation=cv2.INTER_NEAREST)`` of a raw [H, W] mask, as float (like
    :func:`resize_mask`). VAT resizes the masks so, together with the image."""
    cv2 = _cv2()
    arr = mask.cpu().numpy()
    if arr.dtype not in (np.uint8, np.uint16, np.int16, np.float32, np.float64):
        arr = arr.astype(np.float32)
    out = cv2.resize(np.ascontiguousarray(arr), (int(size[1]), int(size[0])), interpolation=cv2.INTER_NEAREST)
    return torch.from_numpy(np.ascontiguousarray(out)).float()

"""Training augmentation: the image-only colour transforms the HM paper applies to HSNet-HM on PASCAL-5i.

The paper (§4.1) augments "following [2, 4, 9]" — Albumentations, CATs and VAT. VAT's training (its
``CATS_AUGMENTATIONS``, on in every released config; ../shared/specs/vat.md §6.5) applies, to the query and to
each support image independently, before resizing and to the image only (masks untouched), seven transforms in
this order, each with probability 0.2 and Albumentations' default parameters:

1. ToGray (RGB → luma → RGB)
2. Posterize (keep the 4 high bits)
3. Equalize (histogram equalisation, per channel)
4. Sharpen (alpha in [0.2, 0.5], lightness in [0.5, 1.0], 3 × 3 kernel, reflect-101 border)
5. RandomBrightnessContrast (contrast factor 1 ± 0.2, brightness ± 0.2 × 255)
6. Solarize (invert pixels ≥ 128)
7. ColorJitter (brightness, contrast, saturation, hue 0.2 each, in random order)

This is our own NumPy/PIL implementation written from that description; it does not need Albumentations or
OpenCV. Pixel values can differ from Albumentations' in rounding (e.g. PIL vs OpenCV luma rounding, the
equalisation look-up table), which does not matter for an augmentation.

Randomness: the authors draw from Python's ``random`` in worker processes, which is not reproducible. Here
every draw comes from a NumPy ``Generator`` that the training dataset reseeds per episode from
(seed, epoch, episode index) with :meth:`CatsAugment.reseed`, so a run is reproducible and independent of the
number of DataLoader workers and processes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from PIL import Image
from torchvision.transforms import functional as TF

from .transforms import image_transform

__all__ = ["AUGMENTATIONS", "CatsAugment", "build_train_transform", "cats_augment"]

PROBABILITY = 0.2


# ---------------------------------------------------------------------------------------------------------------
# The seven transforms on uint8 RGB arrays [H, W, 3]
# ---------------------------------------------------------------------------------------------------------------


def to_gray(arr: np.ndarray) -> np.ndarray:
    gray = np.asarray(Image.fromarray(arr).convert("L"))
    return np.repeat(gray[..., None], 3, axis=2)


def posterize(arr: np.ndarray, bits: int = 4) -> np.ndarray:
    mask = np.uint8((0xFF << (8 - bits)) & 0xFF)
    return arr & mask


def equalize(arr: np.ndarray) -> np.ndarray:
    out = np.empty_like(arr)
    for c in range(arr.shape[2]):
        channel = arr[..., c]
        hist = np.bincount(channel.ravel(), minlength=256)
        cdf = np.cumsum(hist)
        cdf_min = cdf[np.nonzero(hist)[0][0]]
        total = channel.size
        if total == cdf_min:  # a constant channel stays as it is
            out[..., c] = channel
            continue
        lut = np.clip(np.round((cdf - cdf_min) * 255.0 / (total - cdf_min)), 0, 255).astype(np.uint8)
        out[..., c] = lut[channel]
    return out


def sharpen(arr: np.ndarray, alpha: float, lightness: float) -> np.ndarray:
    effect = -np.ones((3, 3))
    effect[1, 1] = 8 + lightness
    identity = np.zeros((3, 3))
    identity[1, 1] = 1
    kernel = (1 - alpha) * identity + alpha * effect
    padded = np.pad(arr.astype(np.float32), ((1, 1), (1, 1), (0, 0)), mode="reflect")  # reflect-101
    h, w = arr.shape[:2]
    out = np.zeros((h, w, arr.shape[2]), dtype=np.float32)
    for dy in range(3):
        for dx in range(3):
            out += np.float32(kernel[dy, dx]) * padded[dy : dy + h, dx : dx + w]
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def brightness_contrast(arr: np.ndarray, contrast: float, brightness: float) -> np.ndarray:
    out = arr.astype(np.float32) * contrast + brightness * 255.0
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def solarize(arr: np.ndarray, threshold: int = 128) -> np.ndarray:
    return np.where(arr >= threshold, 255 - arr, arr).astype(np.uint8)


def color_jitter(img: Image.Image, rng: np.random.Generator, strength: float = 0.2) -> Image.Image:
    factors = {
        "brightness": rng.uniform(1 - strength, 1 + strength),
        "contrast": rng.uniform(1 - strength, 1 + strength),
        "saturation": rng.uniform(1 - strength, 1 + strength),
        "hue": rng.uniform(-strength, strength),
    }
    ops: dict[str, Callable[[Image.Image, float], Image.Image]] = {
        "brightness": TF.adjust_brightness,
        "contrast": TF.adjust_contrast,
        "saturation": TF.adjust_saturation,
        "hue": TF.adjust_hue,
    }
    for i in rng.permutation(4):
        name = ("brightness", "contrast", "saturation", "hue")[int(i)]
        img = ops[name](img, float(factors[name]))
    return img


def cats_augment(img: Image.Image, rng: np.random.Generator, p: float = PROBABILITY) -> Image.Image:
    """Apply the seven transforms, each with probability ``p``, drawing from ``rng`` in a fixed order."""
    arr = np.asarray(img.convert("RGB"), dtype=np.uint8).copy()
    if rng.random() < p:
        arr = to_gray(arr)
    if rng.random() < p:
        arr = posterize(arr)
    if rng.random() < p:
        arr = equalize(arr)
    if rng.random() < p:
        arr = sharpen(arr, rng.uniform(0.2, 0.5), rng.uniform(0.5, 1.0))
    if rng.random() < p:
        arr = brightness_contrast(arr, 1 + rng.uniform(-0.2, 0.2), rng.uniform(-0.2, 0.2))
    if rng.random() < p:
        arr = solarize(arr)
    out = Image.fromarray(arr)
    if rng.random() < p:
        out = color_jitter(out, rng)
    return out


AUGMENTATIONS = ("none", "cats", "geometric")


class CatsAugment:
    """PIL image → augmented, resized, normalised tensor; reseed per episode with :meth:`reseed`."""

    def __init__(self, img_size: int, p: float = PROBABILITY):
        self.base = image_transform(img_size)
        self.p = p
        self.rng = np.random.default_rng(0)

    def reseed(self, key: Sequence[int]) -> None:
        """Restart the random stream from ``key`` (e.g. (seed, epoch, episode index))."""
        self.rng = np.random.default_rng([int(k) for k in key])

    def __call__(self, img: Image.Image) -> torch.Tensor:
        return self.base(cats_augment(img, self.rng, self.p))


def build_train_transform(augment: str, img_size: int, geometric=None):
    """The training transform of recipe value ``augment``: 'none' or 'cats' (image only), or 'geometric' (image
    and masks, :class:`hmrepro.data.geometric.GeometricAugment` with ``geometric`` parameters)."""
    if augment == "none":
        return image_transform(img_size)
    if augment == "cats":
        return CatsAugment(img_size)
    if augment == "geometric":
        from .geometric import GeometricAugment

        return GeometricAugment(img_size, geometric)
    raise ValueError(f"unknown augmentation {augment!r}; choose one of {', '.join(AUGMENTATIONS)}")

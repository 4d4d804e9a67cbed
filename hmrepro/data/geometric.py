"""Geometric training augmentation of an image *and* its mask (recipe ``augment = "geometric"``): CRCNet and MCE.

The PFENet/BAM training pipeline (``util/transform.py`` of dvlab-research/PFENet and chunbolang/BAM, read, not
copied), applied independently to the query and to each support, in this order, each step switchable:

1. **scale** by s ~ U(``scale_range``): ``scale_mode = "image"`` multiplies the image's own size by s (PFENet's
   ``RandScale``: bilinear image, nearest label); ``"square"`` resizes to a (s·S) × (s·S) square (CaNet's
   support augmentation, the CRCNet spec's [G19]). ``scale_range = [1, 1]`` with ``"image"`` leaves the size.
2. **rotate** by an angle ~ U(``rotate_range``) degrees with probability ``rotate_p`` about the centre, same
   canvas (bilinear image padded with the ImageNet mean colour, nearest label padded with ``pad_label``).
3. **blur**: Gaussian blur with a ``blur_kernel`` × ``blur_kernel`` kernel (σ from the size) with probability
   ``blur_p``, image only.
4. **flip** horizontally with probability ``flip_p``.
5. **crop** a random S × S window, S the training ``img_size``. A smaller image is first padded (mean colour /
   ``pad_label``, half on each side). While the window keeps less than ``crop_keep`` of the foreground pixels,
   it is re-drawn, at most 31 times (the lineage's ``while ... crop_cnt <= 30``; ``crop_keep = 0``: never).
6. ToTensor and ImageNet normalisation (``(x − 255·mean) / (255·std)`` on the float image, as the lineage).

The label map has the values 0 (background), 1 (the episode's class) and 255 (ignore: PASCAL's boundary
pixels, and the padding when ``pad_label = 255``); the dataset turns it back into the ``*_mask`` and
``*_ignore`` tensors, so a model whose loss honours ``*_ignore`` never learns from padding.

Images are float32 RGB arrays handled with OpenCV, as in the lineage. Randomness: a NumPy ``Generator``
reseeded per episode from (seed, epoch, episode index) by :meth:`GeometricAugment.reseed`, like
:class:`~hmrepro.data.augment.CatsAugment`, so runs are reproducible and independent of workers and processes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import torch
from PIL import Image

from .transforms import IMAGENET_MEAN, IMAGENET_STD, _cv2

__all__ = ["IGNORE_LABEL", "SCALE_MODES", "GeometricAugment", "GeometricParams", "label_map", "split_label"]

IGNORE_LABEL = 255
SCALE_MODES = ("image", "square")
CROP_REDRAWS = 31  # the lineage's `while pos < 0.85 * raw_pos and crop_cnt <= 30`
MEAN_255 = tuple(255.0 * m for m in IMAGENET_MEAN)


@dataclass(frozen=True)
class GeometricParams:
    """The switches of the pipeline; the defaults are PFENet/BAM's PASCAL values (MCE's spec, section 7)."""

    scale_range: tuple = (0.9, 1.1)
    scale_mode: str = "image"
    rotate_range: tuple = (-10.0, 10.0)
    rotate_p: float = 0.5
    blur_p: float = 0.5
    blur_kernel: int = 5
    flip_p: float = 0.5
    crop_keep: float = 0.85
    pad_label: int = IGNORE_LABEL

    def __post_init__(self) -> None:
        for key in ("scale_range", "rotate_range"):
            value = getattr(self, key)
            if len(value) != 2 or float(value[0]) > float(value[1]):
                raise ValueError(f"{key} must be [low, high] with low <= high (got {list(value)})")
            object.__setattr__(self, key, (float(value[0]), float(value[1])))
        if self.scale_range[0] <= 0:
            raise ValueError(f"scale_range must be positive (got {list(self.scale_range)})")
        if self.scale_mode not in SCALE_MODES:
            raise ValueError(f"scale_mode {self.scale_mode!r} is not one of {', '.join(SCALE_MODES)}")
        for key in ("rotate_p", "blur_p", "flip_p", "crop_keep"):
            if not 0.0 <= float(getattr(self, key)) <= 1.0:
                raise ValueError(f"{key} must be between 0 and 1 (got {getattr(self, key)})")
        if self.blur_kernel < 1 or self.blur_kernel % 2 == 0:
            raise ValueError(f"blur_kernel must be a positive odd number (got {self.blur_kernel})")
        if self.pad_label not in (0, IGNORE_LABEL):
            raise ValueError(f"pad_label must be 255 (ignored) or 0 (background) (got {self.pad_label})")

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> GeometricParams:
        """The parameters named in ``config`` (a recipe or a TrainConfig as dict); the others keep their defaults."""
        return cls(**{f.name: config[f.name] for f in fields(cls) if config.get(f.name) is not None})


def label_map(mask: torch.Tensor, ignore: torch.Tensor | None) -> np.ndarray:
    """uint8 [H, W]: 1 on the episode's class, 255 where ``ignore`` is set, 0 elsewhere."""
    label = mask.numpy().astype(np.uint8)
    if ignore is not None:
        label[ignore.numpy() > 0] = IGNORE_LABEL
    return label


def split_label(label: torch.Tensor | np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """The 0/1 float mask and the 0/1 float ignore map of a label map."""
    label = torch.as_tensor(np.asarray(label))
    return (label == 1).float(), (label == IGNORE_LABEL).float()


class GeometricAugment:
    """(PIL image, label map) → (normalised [3, S, S] tensor, uint8 [S, S] label map); reseed per episode.

    The dataset recognises it by its :meth:`pair` method and hands it the mask too (``EpisodeDataset``).
    """

    def __init__(self, img_size: int, params: GeometricParams | None = None):
        self.img_size = int(img_size)
        self.params = params or GeometricParams()
        self.rng = np.random.default_rng(0)

    def reseed(self, key: Sequence[int]) -> None:
        """Restart the random stream from ``key`` (e.g. (seed, epoch, episode index))."""
        self.rng = np.random.default_rng([int(k) for k in key])

    def __repr__(self) -> str:
        return f"GeometricAugment(img_size={self.img_size}, {self.params})"

    def pair(self, image: Image.Image, label: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        arr = np.asarray(image.convert("RGB"), dtype=np.float32)
        if arr.shape[:2] != label.shape:
            raise ValueError(f"image {arr.shape[:2]} and mask {label.shape} differ in size")
        arr, label = self.scale(arr, label)
        arr, label = self.rotate(arr, label)
        arr = self.blur(arr)
        arr, label = self.flip(arr, label)
        arr, label = self.crop(arr, label)
        return to_normalised_tensor(arr), torch.from_numpy(np.ascontiguousarray(label))

    # -- the steps, each drawing from self.rng in a fixed order ----------------------------------------------
    def scale(self, arr: np.ndarray, label: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        cv2, p = _cv2(), self.params
        s = float(self.rng.uniform(*p.scale_range))
        if p.scale_mode == "square":
            side = max(1, int(round(s * self.img_size)))
            size = (side, side)
        else:
            size = (max(1, int(round(arr.shape[1] * s))), max(1, int(round(arr.shape[0] * s))))
        if size == (arr.shape[1], arr.shape[0]):
            return arr, label
        return (
            cv2.resize(arr, size, interpolation=cv2.INTER_LINEAR),
            cv2.resize(label, size, interpolation=cv2.INTER_NEAREST),
        )

    def rotate(self, arr: np.ndarray, label: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        cv2, p = _cv2(), self.params
        if not self.rng.random() < p.rotate_p:
            return arr, label
        angle = float(self.rng.uniform(*p.rotate_range))
        h, w = label.shape
        matrix = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1)
        arr = cv2.warpAffine(
            arr, matrix, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=MEAN_255
        )
        label = cv2.warpAffine(
            label, matrix, (w, h), flags=cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT, borderValue=p.pad_label
        )
        return arr, label

    def blur(self, arr: np.ndarray) -> np.ndarray:
        k = self.params.blur_kernel
        if self.rng.random() < self.params.blur_p:
            return _cv2().GaussianBlur(arr, (k, k), 0)
        return arr

    def flip(self, arr: np.ndarray, label: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self.rng.random() < self.params.flip_p:
            return arr[:, ::-1], label[:, ::-1]
        return arr, label

    def crop(self, arr: np.ndarray, label: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        arr, label = pad_to(arr, label, self.img_size, self.params.pad_label)
        h, w = label.shape
        s = self.img_size
        foreground = int((label == 1).sum())
        for _ in range(1 + CROP_REDRAWS):
            top, left = int(self.rng.integers(0, h - s + 1)), int(self.rng.integers(0, w - s + 1))
            window = label[top : top + s, left : left + s]
            if not foreground or (window == 1).sum() >= self.params.crop_keep * foreground:
                break
        return arr[top : top + s, left : left + s], window


def pad_to(arr: np.ndarray, label: np.ndarray, size: int, pad_label: int) -> tuple[np.ndarray, np.ndarray]:
    """Pad to at least ``size`` × ``size``: half above/left, the rest below/right; mean colour and ``pad_label``."""
    h, w = label.shape
    pad_h, pad_w = max(size - h, 0), max(size - w, 0)
    if not pad_h and not pad_w:
        return arr, label
    spec = ((pad_h // 2, pad_h - pad_h // 2), (pad_w // 2, pad_w - pad_w // 2))
    padded = np.empty((h + pad_h, w + pad_w, 3), dtype=arr.dtype)
    padded[...] = np.asarray(MEAN_255, dtype=arr.dtype)
    padded[spec[0][0] : spec[0][0] + h, spec[1][0] : spec[1][0] + w] = arr
    return padded, np.pad(label, spec, mode="constant", constant_values=pad_label)


def to_normalised_tensor(arr: np.ndarray) -> torch.Tensor:
    """float RGB [H, W, 3] in 0..255 → [3, H, W] tensor normalised as the lineage does it."""
    mean = np.asarray(MEAN_255, dtype=np.float32)
    std = np.asarray([255.0 * s for s in IMAGENET_STD], dtype=np.float32)
    out = (np.ascontiguousarray(arr, dtype=np.float32) - mean) / std
    return torch.from_numpy(np.ascontiguousarray(out.transpose(2, 0, 1)))

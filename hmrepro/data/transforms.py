"""Preprocessing as the authors do it.

Images: PIL image → torchvision ``Resize((S, S))`` (bilinear with PIL's antialiasing, what ``Resize`` applies
to a PIL image) → ``ToTensor`` → ImageNet mean/std. Masks: torch nearest interpolation of the raw mask to
S × S (the query mask only when not evaluating at the original size; support masks always), then the
benchmark turns the raw values into the 0/1 mask of the episode's class (and PASCAL's ignore map).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
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

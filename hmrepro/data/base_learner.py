"""The data of BAM's base learner (``hmrepro train pspnet``): whole images labelled with a fold's base classes.

Restated from BAM's ``util/dataset.py`` ``BaseData`` (chunbolang/BAM; read, not copied): every image of the training
(validation) list is used — images showing novel classes too — and its label keeps the base classes, renumbered
1..N in the fold's order, while the novel classes' pixels become background 0; 255 (PASCAL's boundaries) stays
ignored. BAM's lists are all VOC2012+SBD training / VOC2012 validation images (COCO: train2014 / val2014); hmrepro
takes the images its split lists name, all four folds' lists together (every image that shows a class), which is
that set.

Training items go through the PFENet/BAM geometric pipeline (:class:`~.geometric.GeometricAugment`, reseeded per
(seed, epoch, position)); validation items through BAM's ``Resize`` (aspect kept, longer side to ``val_size``,
top-left on a ``val_size`` canvas; the label's canvas is 255): :class:`~.bam.BamImageTransform` and
:func:`~.bam.bam_resize_mask`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from ..errors import InvalidInputError
from .bam import bam_image_transform, bam_resize_mask
from .benchmarks import Benchmark
from .geometric import IGNORE_LABEL, GeometricAugment
from .splits import SplitFolder

__all__ = ["BASE_LEARNER_BENCHMARKS", "BaseLearnerData", "base_classes", "base_image_names", "base_label_table"]

BASE_LEARNER_BENCHMARKS = ("pascal", "coco")  # BAM's (it has no FSS-1000 base learner)


def _check(bench: Benchmark) -> None:
    if bench.name not in BASE_LEARNER_BENCHMARKS:
        raise InvalidInputError(
            f"BAM's base learner is trained on {' or '.join(BASE_LEARNER_BENCHMARKS)}, not {bench.name} "
            "(FSS-1000 has no base/novel split of whole images)"
        )


def base_classes(bench: Benchmark, fold: int) -> list[int]:
    """The fold's base classes (0-based class indices), in BAM's ``sub_list`` order: label ``i + 1`` is entry ``i``."""
    _check(bench)
    return list(bench.class_ids(fold, "trn"))


def base_image_names(bench: Benchmark, splits: SplitFolder, split: str) -> list[str]:
    """Every image the split lists of ``split`` ('trn' or 'val') name, over all folds, each once (first-seen order)."""
    _check(bench)
    seen: dict[str, None] = {}
    for fold in range(bench.nfolds):
        if bench.name == "pascal":
            names = [name for name, _ in splits.pascal(split, fold)]
        else:
            names = [name for members in splits.coco(split, fold).values() for name in members]
        seen.update(dict.fromkeys(names))
    return list(seen)


def base_label_table(bench: Benchmark, fold: int) -> np.ndarray:
    """uint8[256]: stored mask value → base-learner label (base class → 1..N, novel class and 0 → 0, 255 → 255)."""
    table = np.zeros(256, dtype=np.uint8)
    for label, class_id in enumerate(base_classes(bench, fold), start=1):
        table[class_id + 1] = label  # stored values are 1 + the class index on PASCAL and COCO
    table[IGNORE_LABEL] = IGNORE_LABEL
    return table


class BaseLearnerData(Dataset):
    """Images and base-class labels. Training (``augment`` given): an item is named by a key (epoch, position,
    image index) and comes out augmented to ``img_size``; validation (no ``augment``): by an image index, resized
    to ``val_size`` as BAM's validation does. Items are ``(image [3, S, S], label [S, S] int64)``."""

    def __init__(
        self,
        bench: Benchmark,
        data_root: Path,
        names: Sequence[str],
        table: np.ndarray,
        *,
        augment: GeometricAugment | None = None,
        seed: int = 0,
        val_size: int = 417,
    ) -> None:
        self.bench, self.data_root, self.names, self.table = bench, Path(data_root), list(names), table
        self.augment, self.seed, self.val_size = augment, int(seed), int(val_size)
        self.image_transform = bam_image_transform(self.val_size)

    def __len__(self) -> int:
        return len(self.names)

    def label(self, name: str):
        """The PIL image and its base-learner label map (uint8 [H, W])."""
        image, raw = self.bench.load_pair(self.data_root, name)
        return image, self.table[raw.numpy()]

    def __getitem__(self, key):
        if self.augment is not None:
            epoch, position, index = key
            image, label = self.label(self.names[index])
            self.augment.reseed((self.seed, epoch, position))
            img, out = self.augment.pair(image, label)
            return img, out.long()
        image, label = self.label(self.names[key])
        size = (self.val_size, self.val_size)
        return self.image_transform(image), bam_resize_mask(torch.from_numpy(label), size).long()

"""BAM's rule for the training images of a fold (recipe keys ``exclude_novel_images`` and ``min_class_pixels``).

BAM (chunbolang/BAM ``util/dataset.py``, ``make_dataset(..., filter_intersection=True)``; read, not copied)
builds its meta-training list so that no image shows a test class during training:

- ``exclude_novel_images``: an image is dropped if its mask has any pixel of a class that is not a training
  class of the fold (background 0 and the ignore label 255 do not count). In hmrepro's folds the classes
  that are not training classes are exactly the fold's novel (test) classes.
- ``min_class_pixels``: an (image, class) pair is used only if the class covers at least this many pixels
  of the mask at its stored size (BAM: ``2 * 32 * 32``, Shaban et al.'s small-object rule; 0 keeps all).

Both rules read every training mask once, at the start of a run (a few thousand PNGs on PASCAL-5i). They
apply to queries and support candidates alike, so a support is never drawn from a dropped image.

What the data layout can tell: PASCAL-5i and COCO-20i masks hold class indices, so both rules work there.
FSS-1000 masks hold one binary foreground and its split has no class shared between training and test, so
``exclude_novel_images`` cannot be evaluated (and would be vacuous); it is refused with an error, while
``min_class_pixels`` works. hmrepro's training lists are HSNet's (one line per (image, class)), not BAM's
pre-generated lists, so the filtered lists are BAM's rule applied to HSNet's lists.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import replace
from pathlib import Path

import numpy as np

from ..errors import HmreproError
from .benchmarks import Benchmark
from .episodes import EpisodePool

__all__ = ["BAM_MIN_CLASS_PIXELS", "class_pixel_counts", "filter_training_pool"]

BAM_MIN_CLASS_PIXELS = 2 * 32 * 32
CLASS_INDEX_BENCHMARKS = ("pascal", "coco")  # masks store 1 + class index


def class_pixel_counts(benchmark: Benchmark, data_root: Path, name: str) -> dict[int, int]:
    """Pixels per class index (0-based) in the stored mask of ``name``; background and 255 left out."""
    raw = benchmark.read_mask(data_root, name).numpy()
    counts = np.bincount(raw.ravel(), minlength=256)
    return {value - 1: int(counts[value]) for value in range(1, benchmark.nclass + 1) if counts[value]}


def filter_training_pool(
    pool: EpisodePool,
    benchmark: Benchmark,
    data_root: Path,
    training_classes: Iterable[int],
    *,
    exclude_novel_images: bool,
    min_class_pixels: int = 0,
    on_image: Callable[[], None] | None = None,
    classes_present: dict[str, tuple[int, ...]] | None = None,
) -> EpisodePool:
    """``pool`` without the images and (image, class) pairs that BAM's rule drops (see the module docstring).

    ``training_classes``: the fold's training class ids (every other class counts as novel). ``on_image`` is
    called after each mask read (a progress callback). The order of what is kept does not change, so the
    episode lists stay a pure function of (seed, epoch). ``classes_present``, when given, receives for every image
    read the training classes its mask holds (any pixel count, ascending): the classes BAM's ``__getitem__`` draws
    a query's class among (:func:`hmrepro.data.bam.bam_training_pool`).
    """
    if not exclude_novel_images and min_class_pixels <= 0:
        return pool
    if exclude_novel_images and benchmark.name not in CLASS_INDEX_BENCHMARKS:
        raise HmreproError(
            f"exclude_novel_images needs masks of class indices (PASCAL-5i, COCO-20i); {benchmark.name} masks hold one "
            "binary foreground, so a novel class in an image cannot be seen. Set exclude_novel_images = false."
        )
    allowed = set(int(c) for c in training_classes)
    owners = dict(pool.queries)  # FSS-1000: the class of each image (its folder)
    usable: dict[str, set[int]] = {}
    for name in sorted(set(pool.all_names())):
        counts = _class_counts(benchmark, data_root, name, owners)
        usable[name] = _usable(counts, allowed, exclude_novel_images, min_class_pixels)
        if classes_present is not None:
            classes_present[name] = tuple(sorted(c for c in counts if c in allowed))
        if on_image is not None:
            on_image()
    classwise = {c: [n for n in names if c in usable.get(n, ())] for c, names in pool.classwise.items()}
    if pool.kind == "class_uniform":  # the query list is the distinct images of the kept pairs
        kept = {n for names in classwise.values() for n in names}
        queries = [(n, c) for n, c in pool.queries if n in kept]
    else:
        queries = [(n, c) for n, c in pool.queries if c in usable.get(n, ())]
    rule = (
        f"BAM's training-image rule (exclude_novel_images={exclude_novel_images}, min_class_pixels={min_class_pixels})"
    )
    if not queries:
        raise HmreproError(f"{benchmark.name}: {rule} left no training image; relax it in the recipe")
    drawn = pool.class_ids if pool.kind == "class_uniform" else sorted({c for _, c in queries})
    starved = [c for c in drawn if len(classwise.get(c, [])) < 2]
    if starved:
        raise HmreproError(
            f"{benchmark.name}: {rule} leaves fewer than 2 images (a query and a support) for class(es) "
            f"{', '.join(map(str, starved))}; relax it in the recipe"
        )
    return replace(pool, queries=queries, classwise=classwise)


def _class_counts(benchmark: Benchmark, data_root: Path, name: str, owners: dict[str, int]) -> dict[int, int]:
    if benchmark.name in CLASS_INDEX_BENCHMARKS:
        return class_pixel_counts(benchmark, data_root, name)
    # FSS-1000: one class per image (its folder's), foreground where the binarised mask is 1
    mask, _ = benchmark.binarize(benchmark.read_mask(data_root, name), owners[name])
    return {owners[name]: int(mask.sum())}


def _usable(counts: dict[int, int], allowed: set[int], exclude_novel: bool, min_pixels: int) -> set[int]:
    """The classes for which (image, class) survives the rule (empty: the image is dropped)."""
    if exclude_novel and not set(counts) <= allowed:
        return set()
    return {c for c, n in counts.items() if c in allowed and n >= min_pixels}

"""BAM's evaluation protocol (Lang et al., CVPR 2022, ``chunbolang/BAM`` ``test.py``), which MCE's numbers follow.

Episodes. BAM's test script seeds NumPy with 123 and draws five evaluation seeds (``np.random.randint(0, 1000,
5)``); for each seed it calls ``setup_seed(seed)`` (Python ``random``, NumPy and torch seeded) and runs 1000
episodes: the query list is walked in order (``shuffle=False``, batch 1), as many passes as needed, and each query's
``__getitem__`` draws with Python's ``random``: the class among the fold's classes present in the query (ascending),
then ``shot`` supports among that class's images, never the query, never twice the same (the first draw of each
support is always redrawn, as the authors' ``while`` loop does). The DataLoader's 8 workers (BAM's ``workers: 8``)
each reseed ``random`` with ``base_seed + worker_id``, where ``base_seed`` is drawn from torch's generator when
each pass starts; worker ``w`` loads the queries ``w, w + 8, ...`` of a pass. :func:`bam_episodes` replays exactly
that, so the episodes depend only on the query list, the seed and the worker count.

The query list here is the benchmark's test pool of hmrepro's split lists (queries in order, each image once with
the fold classes it is listed with; supports among the images listed with the class). BAM's own lists are not in its
repository; by its ``make_dataset(..., filter_intersection=False)`` they hold the ``val.txt`` images in which some fold
class covers >= 2·32·32 pixels, the query's class is drawn among all fold classes in its mask, and a class's support
candidates are the images where it covers >= 2048 pixels. Computing them needs the masks, so they are not shipped:
the images differ from BAM's while the sampling is BAM's (the README's MCE section lists the differences).

Images (:func:`bam_resize`): aspect kept, the longer side to ``size`` (both sides floored to a multiple of 8), put
in the top-left corner of a ``size``×``size`` canvas of zeros (before normalisation); masks by nearest with 255 on
the canvas. Scoring: logits upsampled (bilinear, align_corners=True) to the square of the original label's longer
side and compared with the original label (the padding is ignored), i.e. the top-left crop at the label's size.

Training (BAM's ``train.py`` with ``SemData(mode='train')``; :func:`bam_training_episodes`, the ``bam`` training
sampler of MCE's recipe). Before each epoch BAM calls ``setup_seed(manual_seed + epoch)`` (``manual_seed: 321``).
The training loader (``shuffle=True``, ``drop_last=True``, ``workers: 8``) then draws two numbers from torch's
generator: the workers' base seed when its iterator is made, then the seed of the ``RandomSampler``'s own generator,
whose ``randperm`` orders the image list. Batch ``j`` (``bsz`` images; the last incomplete batch is dropped) is loaded
by worker ``j % 8``, whose Python ``random`` (seeded ``base_seed + worker``) draws each image's episode as in
testing: the class among the fold's training classes in the image's mask (ascending, any pixel count), then
``shot`` distinct supports among that class's images, never the query. The image list is BAM's ``data_list``: the
training images kept by BAM's rule (:mod:`.training_filter`), each once; a class's support candidates are the
images in which it covers at least ``min_class_pixels`` (``sub_class_file_list``). Not replayed: BAM's
augmentation draws from the same Python ``random`` stream between two episodes (its draws depend on the pixels:
the crop is redrawn until it keeps enough of the object), so BAM's episode ``i`` of a worker follows its
augmentation of episode ``i - 1``; hmrepro's augmentation has its own per-episode generator, so the order of the
epoch and the worker streams are BAM's, the draws after a worker's first episode are not (docs/faithfulness.md).
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING

import numpy as np

from ..errors import InvalidInputError
from .episodes import Episode, EpisodePool

if TYPE_CHECKING:
    import torch

__all__ = [
    "BAM_EPISODES",
    "BAM_MANUAL_SEED",
    "BAM_SEED",
    "BAM_SEEDS",
    "BAM_WORKERS",
    "BamImageTransform",
    "BamPool",
    "bam_episodes",
    "bam_image_transform",
    "bam_logits_to_label",
    "bam_resize_mask",
    "bam_new_size",
    "bam_seeds",
    "bam_test_episodes",
    "bam_training_episodes",
    "bam_training_pool",
    "check_bam_supports",
]

BAM_SEED = 123
"""``val_manual_seed`` of BAM's ``test.py``: the NumPy seed that draws the evaluation seeds."""
BAM_SEEDS = 5
"""``val_num``: evaluation runs, one per drawn seed."""
BAM_EPISODES = 1000
"""``test_num``: episodes per run (PASCAL-5i and COCO-20i)."""
BAM_WORKERS = 8
"""``workers`` of BAM's configs: DataLoader worker processes, each with its own Python ``random`` stream."""
BAM_MANUAL_SEED = 321
"""``manual_seed`` of BAM's configs: ``train.py`` seeds epoch ``e`` with ``manual_seed + e`` and every validation
with ``manual_seed`` (``fix_random_seed_val: True``)."""


def bam_seeds(count: int = BAM_SEEDS, seed: int = BAM_SEED) -> list[int]:
    """The evaluation seeds of BAM's ``test.py``: ``np.random.seed(123); np.random.randint(0, 1000, 5)``."""
    return [int(s) for s in np.random.RandomState(seed).randint(0, 1000, count)]


@dataclass(frozen=True)
class BamPool:
    """BAM's view of a test split: the queries in order, the fold classes of each, the images of each class."""

    queries: tuple[str, ...]
    query_classes: dict[str, tuple[int, ...]]
    classwise: dict[int, tuple[str, ...]]

    @classmethod
    def from_pool(cls, pool: EpisodePool) -> BamPool:
        """From an :class:`EpisodePool` of a test split: each image once, in list order, with its listed classes."""
        classes: dict[str, list[int]] = {}
        if pool.kind == "indexed":
            for name, class_id in pool.queries:
                classes.setdefault(name, []).append(class_id)
        else:  # class_uniform (COCO): the images of the fold classes, in sorted order
            for class_id in pool.class_ids:
                for name in pool.classwise.get(class_id, []):
                    classes.setdefault(name, []).append(class_id)
            classes = dict(sorted(classes.items()))
        classwise = {c: tuple(names) for c, names in pool.classwise.items() if c in pool.class_ids}
        return cls(tuple(classes), {n: tuple(sorted(set(c))) for n, c in classes.items()}, classwise)

    @cached_property
    def _members(self) -> dict[int, frozenset[str]]:
        """The support candidates of each class as a set (the draw's feasibility check in O(1))."""
        return {c: frozenset(names) for c, names in self.classwise.items()}

    def draw(self, rng: random.Random, index: int, shot: int) -> Episode:
        """Query ``index``'s episode, consuming ``rng`` as BAM's ``SemData.__getitem__`` does."""
        query = self.queries[index]
        present = self.query_classes[query]
        if not present:
            raise ValueError(f"the query {query!r} has no class to draw (BAM asserts at least one)")
        class_id = present[rng.randint(1, len(present)) - 1]
        candidates = self.classwise.get(class_id, ())
        members = self._members.get(class_id, frozenset())
        if len(members) - (query in members) < shot:
            raise ValueError(f"class {class_id} has fewer than {shot} images besides the query {query!r}")
        chosen: list[int] = []
        for _ in range(shot):
            index_ = rng.randint(1, len(candidates)) - 1  # drawn and always redrawn: the authors' loop
            support = query
            while support == query or index_ in chosen:
                index_ = rng.randint(1, len(candidates)) - 1
                support = candidates[index_]
            chosen.append(index_)
        return Episode(query, tuple(candidates[i] for i in chosen), int(class_id))


def bam_episodes(
    pool: BamPool, shot: int, seed: int, episodes: int = BAM_EPISODES, workers: int = BAM_WORKERS
) -> list[Episode]:
    """The ``episodes`` episodes of one BAM evaluation run with ``seed`` (see the module docstring)."""
    import torch  # only for its generator: BAM's per-pass worker seeds come from torch's default generator

    count = len(pool.queries)
    if count < 2:
        raise ValueError("the bam protocol needs at least two query images")
    generator = torch.Generator().manual_seed(int(seed))
    main_rng = random.Random(int(seed))  # setup_seed(seed): the main process's stream (workers=0)
    passes = math.ceil(episodes / (count - 1))  # BAM's db_epoch
    drawn: list[Episode] = []
    for _ in range(passes):
        base_seed = int(torch.empty((), dtype=torch.int64).random_(generator=generator).item())
        rngs = [random.Random(base_seed + w) for w in range(workers)] if workers else [main_rng]
        for index in range(count):
            if len(drawn) == episodes:
                return drawn
            drawn.append(pool.draw(rngs[index % len(rngs)], index, shot))
    return drawn


def bam_training_pool(
    pool: EpisodePool, filtered: EpisodePool, classes_present: Mapping[str, Sequence[int]] | None = None
) -> BamPool:
    """BAM's training dataset (``SemData(mode='train')``) over hmrepro's training lists.

    ``pool``: the fold's training pool as listed; ``filtered``: the same after BAM's training-image rule
    (:func:`~.training_filter.filter_training_pool`). The image list is ``filtered``'s images, each once, in list
    order (BAM's ``data_list``); an image's classes are the fold's training classes its mask holds
    (``classes_present``, filled by ``filter_training_pool``; else those the list names it with), among which
    ``__getitem__`` draws with no pixel threshold; a class's support candidates are ``filtered``'s images of the
    class (``sub_class_file_list``: those where it covers at least ``min_class_pixels``)."""
    kept = BamPool.from_pool(filtered)
    listed = BamPool.from_pool(pool).query_classes
    training = set(filtered.class_ids)
    classes: dict[str, tuple[int, ...]] = {}
    for name in kept.queries:
        present = classes_present.get(name) if classes_present is not None else None
        source = listed.get(name, ()) if present is None else present
        classes[name] = tuple(sorted({int(c) for c in source if c in training}))
    return BamPool(kept.queries, classes, kept.classwise)


def check_bam_supports(pool: BamPool, shot: int) -> None:
    """Refuse a training pool on which BAM's loop cannot draw every episode: an image holding a class with fewer than
    ``shot`` support candidates besides the image (BAM's ``while`` would never end; ``randint`` would fail)."""
    short: dict[int, str] = {}
    for name in pool.queries:
        if not pool.query_classes.get(name):
            raise InvalidInputError(f"the training image {name!r} holds no training class")
        for c in pool.query_classes[name]:
            members = pool._members.get(c, frozenset())
            if len(members) - (name in members) < shot:
                short.setdefault(c, name)
    if short:
        listed = ", ".join(f"{c} (in {name})" for c, name in sorted(short.items()))
        raise InvalidInputError(
            f"BAM's training sampler: class(es) {listed} have fewer than {shot} support image(s) besides a query that "
            "holds them (the candidates are what BAM's training-image rule keeps: exclude_novel_images, "
            "min_class_pixels); relax the rule, train fewer shots, or use train_sampler = 'hsnet'"
        )


def _torch_draw(generator) -> int:
    """One ``torch.empty((), dtype=torch.int64).random_()`` from ``generator`` (a loader's or a sampler's seed)."""
    import torch

    return int(torch.empty((), dtype=torch.int64).random_(generator=generator).item())


def bam_training_episodes(
    pool: BamPool, shot: int, seed: int, epoch: int, bsz: int, workers: int = BAM_WORKERS
) -> list[Episode]:
    """The episodes of BAM's training epoch ``epoch`` with ``manual_seed`` ``seed``, in the order its loader yields
    them: ``len(pool.queries) // bsz`` batches of ``bsz`` (see the module docstring; no global generator is touched).
    """
    import torch

    count = len(pool.queries)
    if count < bsz:
        raise InvalidInputError(
            f"BAM's training loader drops the last incomplete batch: {count} training images make no batch of {bsz}"
        )
    generator = torch.Generator().manual_seed(int(seed) + int(epoch))  # setup_seed(manual_seed + epoch)
    base_seed = _torch_draw(generator)  # the loader's iterator: the workers' base seed
    order_seed = _torch_draw(generator)  # RandomSampler: the seed of its own generator
    order = torch.randperm(count, generator=torch.Generator().manual_seed(order_seed)).tolist()
    rngs = (
        [random.Random(base_seed + w) for w in range(workers)] if workers else [random.Random(int(seed) + int(epoch))]
    )
    drawn: list[Episode] = []
    for batch in range(count // bsz):
        rng = rngs[batch % len(rngs)]  # batch j is loaded by worker j % workers, its items in order
        drawn.extend(pool.draw(rng, index, shot) for index in order[batch * bsz : (batch + 1) * bsz])
    return drawn


def bam_new_size(height: int, width: int, size: int) -> tuple[int, int]:
    """BAM's ``find_new_hw``: the longer side to ``size``, the other scaled (truncated).

    Each side is floored to a multiple of 8."""
    if height >= width:
        new_h, new_w = size, int(width * (size / height))
    else:
        new_h, new_w = int(height * (size / width)), size
    return (new_h // 8) * 8, (new_w // 8) * 8


def seed_episode_lists(
    pool: BamPool, shot: int, seeds: Sequence[int], episodes: int = BAM_EPISODES, workers: int = BAM_WORKERS
) -> list[tuple[int, list[Episode]]]:
    """(seed, episodes) of every run."""
    return [(int(s), bam_episodes(pool, shot, s, episodes, workers)) for s in seeds]


class BamImageTransform:
    """PIL RGB image → [3, S, S] float tensor as BAM's ``Resize`` + ``ToTensor`` + ``Normalize`` make it: float32
    RGB, ``cv2.resize`` INTER_LINEAR to :func:`bam_new_size`, top-left on a canvas of zeros, ``(x - 255·mean) /
    (255·std)`` (so the canvas is the normalised black, not the mean colour). A class so that workers can pickle it."""

    def __init__(self, img_size: int):
        self.img_size = int(img_size)

    def __call__(self, img) -> torch.Tensor:
        import cv2
        import torch
        from PIL import Image

        from .transforms import IMAGENET_MEAN, IMAGENET_STD

        arr = np.asarray(img.convert("RGB") if isinstance(img, Image.Image) else img, dtype=np.float32)
        new_h, new_w = bam_new_size(arr.shape[0], arr.shape[1], self.img_size)
        canvas = np.zeros((self.img_size, self.img_size, 3), dtype=np.float32)
        canvas[:new_h, :new_w] = cv2.resize(arr, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
        canvas = (canvas - 255.0 * np.array(IMAGENET_MEAN, np.float32)) / (255.0 * np.array(IMAGENET_STD, np.float32))
        return torch.from_numpy(np.ascontiguousarray(canvas.transpose(2, 0, 1)))

    def __repr__(self) -> str:
        return f"BamImageTransform(img_size={self.img_size})"


def bam_image_transform(img_size: int) -> BamImageTransform:
    """BAM's image preprocessing at side ``img_size`` (473)."""
    return BamImageTransform(img_size)


def bam_resize_mask(mask: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """BAM's mask resize: cv2 INTER_NEAREST to :func:`bam_new_size`, top-left on a canvas of 255 (ignored)."""
    import cv2
    import torch

    arr = mask.cpu().numpy().astype(np.float32)
    new_h, new_w = bam_new_size(arr.shape[0], arr.shape[1], int(size[0]))
    canvas = np.full((int(size[0]), int(size[1])), 255.0, dtype=np.float32)
    canvas[:new_h, :new_w] = cv2.resize(arr, (new_w, new_h), interpolation=cv2.INTER_NEAREST)
    return torch.from_numpy(canvas)


def bam_logits_to_label(logits: torch.Tensor, label_size: Sequence[int]) -> torch.Tensor:
    """BAM's ``ori_resize`` scoring: logits [B, 2, S, S] upsampled (bilinear, align_corners=True) to the square of
    the label's longer side, then the top-left ``label_size`` (H, W) crop — the part not padded with 255."""
    import torch.nn.functional as F

    height, width = int(label_size[0]), int(label_size[1])
    side = max(height, width)
    return F.interpolate(logits, (side, side), mode="bilinear", align_corners=True)[..., :height, :width]


def bam_test_episodes(
    benchmark: str,
    fold: int,
    shot: int,
    splits=None,
    seeds: Sequence[int] | None = None,
    episodes: int = BAM_EPISODES,
    workers: int = BAM_WORKERS,
) -> list[tuple[int, list[Episode]]]:
    """(seed, episodes) of each of BAM's evaluation runs on ``benchmark``/``fold`` (no image is read)."""
    from .benchmarks import get_benchmark
    from .splits import SplitFolder

    if benchmark not in ("pascal", "coco"):
        raise ValueError(f"the bam protocol covers pascal and coco (BAM's benchmarks), not {benchmark!r}")
    pool = BamPool.from_pool(get_benchmark(benchmark).pool(splits or SplitFolder(), "test", fold))
    return seed_episode_lists(pool, shot, bam_seeds() if seeds is None else seeds, episodes, workers)

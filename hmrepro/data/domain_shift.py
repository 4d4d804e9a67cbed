"""COCO-20i → PASCAL-5i domain shift (HM Table 4): the test classes, the episode pool and the episodes.

The evaluation is the common one of ``hmrepro eval`` (``evaluate_domain_shift``, next to ``evaluate``); this
module is only its source of episodes, with no model and no tensor in sight.

A model trained on COCO-20i fold f is tested on PASCAL VOC on the PASCAL classes that are *not* among COCO fold
f's 60 training classes (the folds of RePRI and HSNet; ``shared/specs/sources.md`` C.1). The class lists are those
of RePRI's figure (standard VOC ids; RePRI's code swaps car and cat, we do not):

====  ==========================================================
fold  PASCAL test classes (VOC ids 1..20)
====  ==========================================================
0     aeroplane 1, boat 4, chair 9, diningtable 11, dog 12, person 15
1     bicycle 2, bus 6, horse 13, sofa 18
2     bird 3, car 7, pottedplant 16, sheep 17, train 19, tvmonitor 20
3     bottle 5, cat 8, cow 10, motorbike 14
====  ==========================================================

Neither the HM paper nor any of the authors' repositories give the episode lists or the image size of Table 4.
hmrepro's choice (written into every record):

- queries: the (image, class) entries of the PASCAL val lists of all four PASCAL-5i folds (the packaged lists, in
  fold order, then file order), kept when the class is a test class of the fold — 817 / 292 / 438 / 321 entries
  for folds 0–3 with the authors' lists;
- supports: drawn from the same entries of the query's class (rejecting the query), as for PASCAL-5i;
- 1000 episodes per fold drawn with the model's evaluation protocol (``hsnet``: NumPy seeded once with 0);
- images at the size the COCO model was trained at (the recipe's COCO size, 400 for HSNet), loaded with the
  model's own preprocessing (VAT's OpenCV resize for ``vat*``), PASCAL's 255 ignored; mIoU over the fold's test
  classes (class axis of 20), FB-IoU.
"""

from __future__ import annotations

from ..errors import InvalidInputError
from .episodes import Episode, EpisodePool, evaluation_episodes
from .splits import SplitFolder

__all__ = [
    "DOMAIN_SHIFT_BENCHMARK",
    "DOMAIN_SHIFT_CLASSES",
    "EPISODES_PER_FOLD",
    "EPISODE_SOURCE",
    "VOC_CLASSES",
    "domain_shift_class_ids",
    "domain_shift_episodes",
    "domain_shift_pool",
]

VOC_CLASSES = (
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
)

# PASCAL test classes of each COCO-20i fold, as VOC ids (1..20): sources.md C.1 / RePRI's figure
DOMAIN_SHIFT_CLASSES: dict[int, tuple[int, ...]] = {
    0: (1, 4, 9, 11, 12, 15),
    1: (2, 6, 13, 18),
    2: (3, 7, 16, 17, 19, 20),
    3: (5, 8, 10, 14),
}
EPISODES_PER_FOLD = 1000
DOMAIN_SHIFT_BENCHMARK = "coco2pascal"  # the record's benchmark: trained on COCO-20i, tested on PASCAL
EPISODE_SOURCE = (
    "queries: the PASCAL-5i val lists of all four folds (fold order, then file order) filtered to the fold's "
    "PASCAL test classes (VOC classes not among COCO-20i fold f's training classes, RePRI/HSNet folds); supports "
    "drawn from the same entries of the query's class"
)


def domain_shift_class_ids(fold: int) -> list[int]:
    """The PASCAL test classes of COCO-20i fold ``fold`` as class ids 0..19 (VOC id - 1)."""
    if fold not in DOMAIN_SHIFT_CLASSES:
        raise InvalidInputError(f"unknown fold {fold!r}; choose 0, 1, 2 or 3")
    return [c - 1 for c in DOMAIN_SHIFT_CLASSES[fold]]


def domain_shift_pool(fold: int, splits: SplitFolder | None = None) -> EpisodePool:
    """Queries and support candidates of the domain-shift test of COCO-20i fold ``fold`` (see the module doc)."""
    splits = splits or SplitFolder()
    classes = domain_shift_class_ids(fold)
    wanted = set(classes)
    queries = [(name, c) for f in range(4) for name, c in splits.pascal("val", f) if c in wanted]
    return EpisodePool.from_queries("pascal", queries, classes, shuffle=False)


def domain_shift_episodes(
    fold: int,
    shot: int,
    splits: SplitFolder | None = None,
    *,
    protocol: str = "hsnet",
    num_episodes: int = EPISODES_PER_FOLD,
    seed: int = 0,
) -> list[Episode]:
    """The fixed domain-shift test episodes of fold ``fold`` (PASCAL image names, class ids 0..19)."""
    return evaluation_episodes(domain_shift_pool(fold, splits), shot, num_episodes, protocol=protocol, seed=seed)

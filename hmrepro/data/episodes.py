"""Episodes: which query, which supports, which class — drawn exactly as the authors draw them.

An episode list depends only on the split lists, the fold, the shot and the seed, never on pixels, so it
can be listed before any download. All draws use NumPy's legacy ``RandomState`` and ``choice(n, 1,
replace=False)`` (a full permutation per draw), because that is what the authors' ``np.random.choice`` calls
consume; any other call would give other episodes.

Protocols (how the random stream is seeded for evaluation):

- ``hsnet`` (HSNet, HSNet-HM, VAT): NumPy seeded once with 0, episodes drawn in order.
- ``asnet`` (ASNet, ASNet-HM): NumPy reseeded with the episode index before each episode.

Draw rules per benchmark (the pool's ``kind``):

- ``indexed`` (PASCAL): query = entry ``idx % len`` of the (image, class) list; supports drawn at random from
  the images of that class, rejecting the query; duplicates across shots are allowed.
- ``class_uniform`` (COCO): class drawn at random from the split's classes, then the query from that class's
  list, then the supports (rejecting the query).
- ``fss`` (FSS-1000): query = image ``idx`` of the sorted class folders; supports ``<k>.jpg`` with k drawn from
  1..10, rejecting the query.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from ..errors import InvalidInputError

PROTOCOLS = ("hsnet", "asnet")


class Episode(NamedTuple):
    query: str
    supports: tuple[str, ...]
    class_id: int

    def to_json(self) -> list:
        return [self.query, list(self.supports), int(self.class_id)]


def _pick(rng: np.random.RandomState, items: Sequence):
    """``np.random.choice(items, 1, replace=False)[0]`` with the same draws: the legacy ``choice`` without
    replacement is the first entry of ``permutation(len(items))``, which is called directly (the same stream, a third
    of the time for a short list: ``choice``'s own argument handling costs more than a small permutation)."""
    return items[int(rng.permutation(len(items))[0])]


@dataclass
class EpisodePool:
    """The queries and support candidates of one split of one fold."""

    benchmark: str
    kind: str  # 'indexed' | 'class_uniform' | 'fss'
    queries: list[tuple[str, int]]  # (image, class) in the authors' order
    classwise: dict[int, list[str]]  # support candidates per class
    class_ids: list[int]  # classes this split uses, in the authors' order
    images_per_class: int = 0  # fss only
    shuffle: bool = True  # training: shuffle the queries each epoch (PASCAL, FSS)

    # -- construction ----------------------------------------------------------------------------
    @classmethod
    def from_queries(cls, benchmark: str, queries: list[tuple[str, int]], class_ids: list[int], shuffle=True):
        classwise: dict[int, list[str]] = {}
        for name, c in queries:
            classwise.setdefault(c, []).append(name)
        return cls(benchmark, "indexed", queries, classwise, class_ids, shuffle=shuffle)

    @classmethod
    def class_uniform(cls, benchmark: str, classwise: dict[int, list[str]], class_ids: list[int]):
        # one training epoch has as many episodes as there are distinct images (the authors' __len__)
        images = sorted({name for c in class_ids for name in classwise.get(c, [])})
        queries = [(name, -1) for name in images]
        return cls(benchmark, "class_uniform", queries, classwise, class_ids, shuffle=False)

    @classmethod
    def fss(cls, benchmark: str, queries: list[tuple[str, int]], class_ids: list[int], images_per_class: int):
        return cls(benchmark, "fss", queries, {}, class_ids, images_per_class=images_per_class)

    # -- queries ---------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.queries)

    def all_names(self) -> Iterable[str]:
        """Every image this pool can use as query or support."""
        if self.kind == "fss":
            for name, _ in self.queries:
                yield name
        else:
            for c in self.class_ids:
                yield from self.classwise.get(c, [])

    # -- drawing ---------------------------------------------------------------------------------
    def draw(self, rng: np.random.RandomState, idx: int, shot: int) -> Episode:
        """Episode ``idx``, consuming ``rng`` exactly as the authors' ``__getitem__`` does."""
        if self.kind == "class_uniform":
            class_id = int(_pick(rng, self.class_ids))
            candidates = self.classwise.get(class_id) or []
            if not candidates:
                raise InvalidInputError(f"{self.benchmark}: class {class_id} has no images in the split list")
            query = _pick(rng, candidates)
        else:
            if not self.queries:
                raise InvalidInputError(f"{self.benchmark}: the split lists name no query image for these classes")
            query, class_id = self.queries[idx % len(self.queries)]
        return Episode(query, self._supports(rng, query, class_id, shot), class_id)

    def _supports(self, rng: np.random.RandomState, query: str, class_id: int, shot: int) -> tuple[str, ...]:
        if self.kind == "fss":
            folder = query.rsplit("/", 1)[0]
            candidates = [f"{folder}/{k}.jpg" for k in range(1, self.images_per_class + 1)]
        else:
            candidates = self.classwise[class_id]
        if all(c == query for c in candidates):
            raise InvalidInputError(
                f"{self.benchmark}: class {class_id} has no image besides the query {query!r} to use as support"
            )
        supports: list[str] = []
        while len(supports) < shot:  # the authors re-draw until the support is not the query
            candidate = _pick(rng, candidates)
            if candidate != query:
                supports.append(candidate)
        return tuple(supports)


def _rngs(protocol: str, n: int, seed: int) -> Iterable[np.random.RandomState]:
    if protocol == "hsnet":
        rng = np.random.RandomState(seed)
        return (rng for _ in range(n))
    if protocol == "asnet":
        # ASNet reseeds with the episode index (the authors' code ignores the seed); another seed (another draw of
        # the same protocol, ``hmrepro eval --episode-seed``) reseeds with (seed, index)
        return (np.random.RandomState(idx if not seed else [seed, idx]) for idx in range(n))
    raise InvalidInputError(f"unknown protocol {protocol!r}; choose one of {', '.join(PROTOCOLS)}")


def evaluation_episodes(
    pool: EpisodePool,
    shot: int,
    num_episodes: int | None,
    protocol: str = "hsnet",
    seed: int = 0,
) -> list[Episode]:
    """The fixed evaluation episodes: ``num_episodes`` (None: one per query, as for FSS-1000)."""
    n = len(pool) if num_episodes is None else num_episodes
    return [pool.draw(rng, idx, shot) for idx, rng in enumerate(_rngs(protocol, n, seed))]


def training_episodes(pool: EpisodePool, shot: int, seed: int, epoch: int) -> list[Episode]:
    """The episodes of one training epoch, reproducible from (seed, epoch) and independent of workers.

    PASCAL/FSS: each (image, class) entry is the query once, in shuffled order. COCO: as many episodes as
    distinct images, each drawing its class uniformly (the authors' class-uniform sampling).
    """
    rng = np.random.RandomState([seed, epoch])
    order = rng.permutation(len(pool)) if pool.shuffle else np.arange(len(pool))
    return [pool.draw(rng, int(idx), shot) for idx in order]

"""A bounded cache of decoded and preprocessed images and masks (the evaluation's data side).

The 1000 episodes of a fold reuse their queries and supports, so decoding the JPEG/PNG and resizing it again each
time is wasted work. :class:`ImageCache` keeps the preprocessed tensors of recently loaded images, least recently
used first out, bounded by the bytes of the tensors it holds (``max_bytes=0``: nothing is kept). It lives in the
process that loads (each DataLoader worker has its own copy). The tensors it holds are never handed out to be
written into: :class:`~hmrepro.data.dataset.EpisodeDataset` returns fresh tensors built from them (stacked
supports, binarized masks, a cloned query image), so results are identical with and without the cache.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable

__all__ = ["DEFAULT_IMAGE_CACHE_MIB", "ImageCache"]

DEFAULT_IMAGE_CACHE_MIB = 512  # per loading process; 400 px images + masks: about 2 MiB each, ~250 images


def _nbytes(value) -> int:
    """Bytes of the tensors in ``value`` (no torch import here: the CLI reads the default without loading torch)."""
    if hasattr(value, "element_size"):
        return value.element_size() * value.numel()
    if isinstance(value, (tuple, list)):
        return sum(_nbytes(v) for v in value)
    return 0


class ImageCache:
    """Least-recently-used map of a key to a tuple of tensors (and small values), at most ``max_bytes`` of tensors.

    An entry larger than the whole bound is loaded and returned but not kept. ``hits``/``misses``/``evictions``
    count since construction."""

    def __init__(self, max_bytes: int):
        if max_bytes < 0:
            raise ValueError(f"the image cache size must be 0 (off) or positive, not {max_bytes}")
        self.max_bytes = int(max_bytes)
        self.bytes = 0
        self.hits = self.misses = self.evictions = 0
        self._entries: OrderedDict[Hashable, tuple] = OrderedDict()

    @classmethod
    def of_mib(cls, mib: int | float) -> ImageCache:
        return cls(int(mib * 2**20))

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._entries

    def get(self, key: Hashable, load: Callable[[], tuple]) -> tuple:
        """The entry of ``key``; on a miss ``load()`` makes it and it is kept when it fits."""
        entry = self._entries.get(key)
        if entry is not None:
            self._entries.move_to_end(key)
            self.hits += 1
            return entry
        self.misses += 1
        entry = load()
        size = _nbytes(entry)
        if 0 < self.max_bytes and size <= self.max_bytes:
            while self.bytes + size > self.max_bytes:
                _, old = self._entries.popitem(last=False)
                self.bytes -= _nbytes(old)
                self.evictions += 1
            self._entries[key] = entry
            self.bytes += size
        return entry

    def stats(self) -> dict:
        """The counters, the hit rate (None before any look-up), the bytes held and the bound."""
        lookups = self.hits + self.misses
        return {
            "hits": self.hits,
            "misses": self.misses,
            "evictions": self.evictions,
            "hit_rate": self.hits / lookups if lookups else None,
            "bytes": self.bytes,
            "max_bytes": self.max_bytes,
            "entries": len(self._entries),
        }

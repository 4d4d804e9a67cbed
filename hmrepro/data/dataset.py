"""A torch ``Dataset`` over a list of episodes: reads and preprocesses the images and masks of each one.

Drawing the episodes (``hmrepro.data.episodes``) is kept apart from loading them, so the episode list of a
training epoch or an evaluation is fixed in the main process and does not depend on worker processes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch.utils.data import Dataset

from .benchmarks import Benchmark, get_benchmark
from .episodes import Episode
from .image_cache import ImageCache
from .preprocessing import get_preprocessing


class EpisodeDataset(Dataset):
    """Item ``i`` is episode ``i`` as tensors, in the authors' batch layout.

    Keys: ``query_img`` [3,S,S], ``query_mask`` [S,S] (or the original size with ``original_size=True``),
    ``query_ignore`` (same shape; zeros where the benchmark has no ignore label), ``support_imgs`` [K,3,S,S],
    ``support_masks`` [K,S,S], ``support_ignores`` [K,S,S], ``class_id``, ``query_name``, ``support_names``,
    ``org_query_imsize`` (W, H).

    ``preprocess`` is the model's preprocessing ('hsnet' or 'vat', see :mod:`hmrepro.data.preprocessing`) and has
    no default: it chooses how images and masks are resized, and a model loaded with another family's
    preprocessing gives wrong numbers, not an error. ``transform`` may replace its image transform (e.g. a
    training augmentation that takes and returns a PIL image and mask); by default it is the resize +
    normalisation of ``preprocess``. VAT's preprocessing resizes every mask and refuses ``original_size``.

    A ``transform`` with a ``pair(image, label)`` method (the geometric training augmentation,
    :class:`hmrepro.data.geometric.GeometricAugment`) gets each image with its label map at the original size
    (0 background, 1 the class, 255 ignore) and returns the image tensor and the label map at the training size;
    its 255 pixels (PASCAL boundaries, padding) become ``*_ignore``. Training only: it refuses ``original_size``.

    ``image_cache_mib`` (default 0: off) keeps the decoded and preprocessed images and resized raw masks of the
    last images loaded, up to that many MiB (:class:`~hmrepro.data.image_cache.ImageCache`, one per process: each
    DataLoader worker has its own); only with the default transform (an augmentation is random). Every returned
    tensor is new, so the items are identical with and without it.
    """

    def __init__(
        self,
        benchmark: str | Benchmark,
        data_root: str | Path,
        episodes: Sequence[Episode],
        img_size: int = 400,
        original_size: bool = False,
        transform: Callable | None = None,
        *,
        preprocess: str,
        image_cache_mib: float = 0,
    ):
        self.benchmark = get_benchmark(benchmark) if isinstance(benchmark, str) else benchmark
        self.data_root = self.benchmark.require(data_root)
        self.episodes = list(episodes)
        self.img_size = img_size
        self.original_size = original_size
        pre = get_preprocessing(preprocess)
        if original_size and not pre.original_size:
            raise ValueError(
                f"the {pre.name} preprocessing resizes every mask: original-size evaluation is not possible"
            )
        self.preprocess = pre.name
        self.resize_mask = pre.resize_mask
        self.transform = transform or pre.image_transform(img_size)
        self.pairs = hasattr(self.transform, "pair")
        if original_size and self.pairs:
            raise ValueError(
                "a transform of image and mask (geometric augmentation) is for training, not original-size evaluation"
            )
        self.image_cache = ImageCache.of_mib(image_cache_mib if transform is None else 0)

    def __len__(self) -> int:
        return len(self.episodes)

    def _prepared(self, name: str, resize: bool) -> tuple[torch.Tensor, torch.Tensor, tuple[int, int]]:
        """The transformed image, the raw mask (resized when ``resize``) and the original (W, H) of ``name``."""
        image, raw = self.benchmark.load_pair(self.data_root, name)  # validated: values, kind, size
        if resize:
            raw = self.resize_mask(raw, (self.img_size, self.img_size))
        return self.transform(image), raw, (image.width, image.height)

    def _load(self, name: str, class_id: int, resize: bool):
        """Image tensor (the cache's: not to be written into), 0/1 mask, ignore map (new tensors), original (W, H)."""
        key = (self.benchmark.name, str(self.data_root), name, self.preprocess, self.img_size, resize)
        img, raw, size = self.image_cache.get(key, lambda: self._prepared(name, resize))
        mask, ignore = self.benchmark.binarize(raw, class_id)
        if ignore is None:
            ignore = torch.zeros_like(mask)
        return img, mask, ignore, size

    def _load_pair(self, name: str, class_id: int):
        """Image and mask transformed together (``transform.pair``): image tensor, mask, ignore, original (W, H)."""
        from .geometric import label_map, split_label

        image, raw = self.benchmark.load_pair(self.data_root, name)
        img, label = self.transform.pair(image, label_map(*self.benchmark.binarize(raw, class_id)))
        return (img, *split_label(label), (image.width, image.height))

    def _paired_item(self, episode: Episode) -> dict:
        q_img, q_mask, q_ignore, q_size = self._load_pair(episode.query, episode.class_id)
        supports = [self._load_pair(name, episode.class_id) for name in episode.supports]
        return {
            "query_img": q_img,
            "query_mask": q_mask,
            "query_ignore": q_ignore,
            "support_imgs": torch.stack([s[0] for s in supports]),
            "support_masks": torch.stack([s[1] for s in supports]),
            "support_ignores": torch.stack([s[2] for s in supports]),
            "class_id": torch.tensor(episode.class_id),
            "query_name": episode.query,
            "support_names": list(episode.supports),
            "org_query_imsize": torch.tensor(q_size),
        }

    def __getitem__(self, idx: int) -> dict:
        """Episode ``idx``'s tensors; ``episode_index`` is ``idx`` (the episode's place in the list: what seeds
        a model's test-time randomness, CRCNet's fine-tuning, whatever came before it)."""
        episode = self.episodes[idx]
        item = self._paired_item(episode) if self.pairs else self._item(episode)
        return {**item, "episode_index": torch.tensor(idx)}

    def _item(self, episode: Episode) -> dict:
        q_img, q_mask, q_ignore, q_size = self._load(episode.query, episode.class_id, resize=not self.original_size)
        s_imgs, s_masks, s_ignores = [], [], []
        for name in episode.supports:
            img, mask, ignore, _ = self._load(name, episode.class_id, resize=True)
            s_imgs.append(img)
            s_masks.append(mask)
            s_ignores.append(ignore)
        return {
            "query_img": q_img.clone(),  # the cached tensor stays the cache's
            "query_mask": q_mask,
            "query_ignore": q_ignore,
            "support_imgs": torch.stack(s_imgs),
            "support_masks": torch.stack(s_masks),
            "support_ignores": torch.stack(s_ignores),
            "class_id": torch.tensor(episode.class_id),
            "query_name": episode.query,
            "support_names": list(episode.supports),
            "org_query_imsize": torch.tensor(q_size),
        }

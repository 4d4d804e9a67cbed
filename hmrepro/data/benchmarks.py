"""The three benchmarks as the authors' HSNet code reads them from disk.

A benchmark knows its class structure (classes per fold), where an image and its mask live below the
data root, how a raw mask becomes the 0/1 mask of one class (and PASCAL's ignore map), and how to build the
episode pool of a split from the split lists. Nothing here reads pixels except :meth:`Benchmark.read_mask`.

Layout below the data root (identical to the authors'):

- PASCAL-5i: ``VOC2012/JPEGImages/<id>.jpg``, ``VOC2012/SegmentationClassAug/<id>.png`` (values = VOC class 1..20,
  0 background, 255 boundary/void)
- COCO-20i: ``COCO2014/{train2014,val2014}/<name>.jpg``, ``COCO2014/annotations/{train2014,val2014}/<name>.png``
  (values = 1 + contiguous class index 0..79)
- FSS-1000: ``FSS-1000/<class>/<n>.jpg`` and ``<n>.png`` (grey masks, >= 128 is foreground), n = 1..10
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Iterator

import numpy as np
import torch
from PIL import Image

from ..errors import CorruptFileError, InvalidInputError, MissingDataError
from .episodes import Episode, EpisodePool, evaluation_episodes
from .splits import SplitFolder

SPLITS = ("trn", "val", "test")
_FETCH_HINT = {
    "pascal": "hmrepro download pascal && hmrepro prepare pascal",
    "coco": "hmrepro download coco && hmrepro prepare coco",
    "fss": "hmrepro download fss && hmrepro prepare fss",
}


def _open(path: Path, benchmark: str) -> Image.Image:
    if not path.is_file():
        raise MissingDataError(
            f"{path} does not exist. Is --data-root right? Fetch the {benchmark} data with "
            f"`{_FETCH_HINT[benchmark]}`, or make the synthetic benchmark with `hmrepro prepare synthetic`."
        )
    try:
        img = Image.open(path)
        img.load()
        return img
    except Exception as err:  # PIL raises many types for truncated or foreign files
        raise CorruptFileError(f"cannot read image {path}: {err}. Delete it and fetch it again.") from err


def load_image(path: Path, benchmark: str) -> Image.Image:
    """The RGB image at ``path`` (errors name the file and the command that fetches it)."""
    return _open(path, benchmark).convert("RGB")


@dataclass(frozen=True)
class Benchmark:
    """Class structure, file layout and mask semantics of one benchmark."""

    name: str
    nclass: int
    nfolds: int
    test_episodes: int | None  # episodes per evaluation; None: one per query image

    # -- class structure -------------------------------------------------------------------------
    def num_classes(self, splits: SplitFolder | None = None) -> int:
        """Size of the class axis of the metric (20, 80, 1000)."""
        return self.nclass

    def class_ids(self, fold: int, split: str, splits: SplitFolder | None = None) -> list[int]:
        """The classes ``split`` of ``fold`` uses (the evaluation classes for 'val'/'test')."""
        raise NotImplementedError

    def pool(self, splits: SplitFolder, split: str, fold: int) -> EpisodePool:
        """Queries and support candidates of ``split`` ('trn', 'val' or 'test') for ``fold``."""
        raise NotImplementedError

    # -- files ---------------------------------------------------------------------------------
    top_folder: ClassVar[str] = ""  # the folder below the data root that holds this benchmark

    def require(self, data_root: str | Path) -> Path:
        """``data_root`` if it holds this benchmark's folder, else an error naming it and the fix."""
        root = Path(data_root).expanduser()
        if not root.is_dir():
            raise MissingDataError(
                f"data root {root} does not exist. Pass --data-root (or set HMREPRO_DATA) to the folder holding "
                f"{self.top_folder}/, or fetch it with `{_FETCH_HINT[self.name]} --data-root {root}`; "
                f"for a no-download try-out: `hmrepro prepare synthetic`."
            )
        if not (root / self.top_folder).is_dir():
            raise MissingDataError(
                f"{root / self.top_folder} does not exist: the data root {root} has no {self.name} data. "
                f"Fetch it with `{_FETCH_HINT[self.name]} --data-root {root}`."
            )
        return root

    def image_path(self, data_root: Path, name: str) -> Path:
        raise NotImplementedError

    def mask_path(self, data_root: Path, name: str) -> Path:
        raise NotImplementedError

    def referenced_files(self, splits: SplitFolder) -> Iterator[tuple[Path, Path]]:
        """Every (image, mask) path, relative to the data root, that the split lists name (each once)."""
        seen = set()
        for split in self.split_names:
            for fold in range(self.nfolds):
                pool = self.pool(splits, split, fold)
                for name in pool.all_names():
                    if name not in seen:
                        seen.add(name)
                        yield self.image_path(Path("."), name), self.mask_path(Path("."), name)

    @property
    def split_names(self) -> tuple[str, ...]:
        return ("trn", "val")

    # -- masks ---------------------------------------------------------------------------------
    def read_mask(self, data_root: Path, name: str) -> torch.Tensor:
        """The raw mask as stored (uint8 tensor [H, W])."""
        img = _open(self.mask_path(data_root, name), self.name)
        return torch.from_numpy(np.array(img, dtype=np.uint8))

    def binarize(self, raw: torch.Tensor, class_id: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """0/1 float mask of ``class_id`` and the ignore map (or None) from a (resized) raw mask."""
        mask = (raw == class_id + 1).float()
        return mask, None

    def validate(self, fold: int, split: str) -> None:
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
        if not 0 <= fold < 4:
            raise ValueError(f"unknown fold {fold!r} for {self.name}; choose 0, 1, 2 or 3")


class Pascal(Benchmark):
    top_folder = "VOC2012"

    def class_ids(self, fold: int, split: str, splits: SplitFolder | None = None) -> list[int]:
        per_fold = self.nclass // self.nfolds
        val = [fold * per_fold + i for i in range(per_fold)]
        return [c for c in range(self.nclass) if c not in val] if split == "trn" else val

    def pool(self, splits: SplitFolder, split: str, fold: int) -> EpisodePool:
        self.validate(fold, split)
        if split == "trn":  # training reads the lists of the three other folds, in fold order
            queries = [q for f in range(self.nfolds) if f != fold for q in splits.pascal("trn", f)]
        else:  # 'val' and 'test' are the same list for PASCAL (the authors validate on the test episodes)
            queries = splits.pascal("val", fold)
        return EpisodePool.from_queries(self.name, queries, self.class_ids(fold, split), shuffle=True)

    def image_path(self, data_root: Path, name: str) -> Path:
        return Path(data_root) / "VOC2012" / "JPEGImages" / f"{name}.jpg"

    def mask_path(self, data_root: Path, name: str) -> Path:
        return Path(data_root) / "VOC2012" / "SegmentationClassAug" / f"{name}.png"

    def binarize(self, raw: torch.Tensor, class_id: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        # the authors: ignore = floor(mask / 255) on the resized mask; 255 is background for the loss
        ignore = (raw.float() / 255).floor()
        return (raw == class_id + 1).float(), ignore


class Coco(Benchmark):
    top_folder = "COCO2014"

    def class_ids(self, fold: int, split: str, splits: SplitFolder | None = None) -> list[int]:
        per_fold = self.nclass // self.nfolds
        val = [fold + self.nfolds * v for v in range(per_fold)]
        return [c for c in range(self.nclass) if c not in val] if split == "trn" else val

    def pool(self, splits: SplitFolder, split: str, fold: int) -> EpisodePool:
        self.validate(fold, split)
        classwise = splits.coco("trn" if split == "trn" else "val", fold)
        return EpisodePool.class_uniform(self.name, classwise, self.class_ids(fold, split))

    def image_path(self, data_root: Path, name: str) -> Path:
        return Path(data_root) / "COCO2014" / name

    def mask_path(self, data_root: Path, name: str) -> Path:
        return Path(data_root) / "COCO2014" / "annotations" / (name[: -len(".jpg")] + ".png")


class Fss(Benchmark):
    IMAGES_PER_CLASS = 10
    top_folder = "FSS-1000"

    @property
    def split_names(self) -> tuple[str, ...]:
        return SPLITS

    def class_offsets(self, splits: SplitFolder) -> dict[str, int]:
        """First class id of each split: trn 0, val 520, test 760 for the real lists."""
        n_trn, n_val = len(splits.fss("trn")), len(splits.fss("val"))
        return {"trn": 0, "val": n_trn, "test": n_trn + n_val}

    def num_classes(self, splits: SplitFolder | None = None) -> int:
        splits = splits or SplitFolder()
        return sum(len(splits.fss(s)) for s in SPLITS)

    def class_ids(self, fold: int, split: str, splits: SplitFolder | None = None) -> list[int]:
        splits = splits or SplitFolder()
        start = self.class_offsets(splits)[split]
        return list(range(start, start + len(splits.fss(split))))

    def pool(self, splits: SplitFolder, split: str, fold: int = 0) -> EpisodePool:
        # FSS-1000 has one split; the authors' loader ignores the fold, and so do we.
        self.validate(fold, split)
        offset = self.class_offsets(splits)[split]
        queries = []
        for i, cls in enumerate(splits.fss(split)):
            # the authors list sorted(glob("<class>/*")) and keep the .jpg: 1, 10, 2, 3, ..., 9
            for n in sorted(f"{n}.jpg" for n in range(1, self.IMAGES_PER_CLASS + 1)):
                queries.append((f"{cls}/{n}", offset + i))
        return EpisodePool.fss(self.name, queries, self.class_ids(fold, split, splits), self.IMAGES_PER_CLASS)

    def image_path(self, data_root: Path, name: str) -> Path:
        return Path(data_root) / "FSS-1000" / name

    def mask_path(self, data_root: Path, name: str) -> Path:
        return Path(data_root) / "FSS-1000" / (name[: -len(".jpg")] + ".png")

    def read_mask(self, data_root: Path, name: str) -> torch.Tensor:
        img = _open(self.mask_path(data_root, name), self.name).convert("L")
        return torch.from_numpy(np.array(img, dtype=np.uint8))

    def binarize(self, raw: torch.Tensor, class_id: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        return (raw >= 128).float(), None


BENCHMARKS: dict[str, Benchmark] = {
    "pascal": Pascal("pascal", nclass=20, nfolds=4, test_episodes=1000),
    "coco": Coco("coco", nclass=80, nfolds=4, test_episodes=1000),
    "fss": Fss("fss", nclass=1000, nfolds=1, test_episodes=None),
}


def get_benchmark(name: str) -> Benchmark:
    try:
        return BENCHMARKS[name]
    except KeyError:
        raise ValueError(f"unknown benchmark {name!r}; choose one of {', '.join(BENCHMARKS)}") from None


def test_episodes(
    benchmark: str,
    fold: int,
    shot: int,
    *,
    protocol: str = "hsnet",
    split: str = "test",
    splits: SplitFolder | None = None,
    seed: int = 0,
) -> list[Episode]:
    """The authors' fixed evaluation episodes of ``benchmark``/``fold`` with ``shot`` supports.

    ``split='val'`` gives the validation episodes used during training (the same as 'test' for PASCAL and
    COCO, the val classes for FSS-1000).
    """
    bench = get_benchmark(benchmark)
    if protocol == "asnet" and benchmark == "fss":
        raise InvalidInputError("the asnet protocol has no FSS-1000 episodes (the authors' ASNet code has no FSS loader)")
    pool = bench.pool(splits or SplitFolder(), split, fold)
    return evaluation_episodes(pool, shot, bench.test_episodes, protocol=protocol, seed=seed)


test_episodes.__test__ = False  # a library function, not a pytest test, wherever it is imported

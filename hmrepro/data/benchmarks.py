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

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from PIL import Image

from ..errors import CorruptFileError, HmreproError, InvalidInputError, MissingDataError
from .episodes import Episode, EpisodePool, evaluation_episodes
from .splits import SplitFolder

SPLITS = ("trn", "val", "test")
_FETCH_HINT = {
    "pascal": "hmrepro download pascal && hmrepro prepare pascal",
    "coco": "hmrepro download coco && hmrepro prepare coco",
    "fss": "hmrepro download fss && hmrepro prepare fss",
}


def _check_hint(benchmark: str, data_root: Path | None) -> str:
    root = f" --data-root {data_root}" if data_root is not None else ""
    return f"`hmrepro prepare --check {benchmark}{root}`"


def open_image(path: Path, benchmark: str) -> Image.Image:
    """The decoded image file at ``path``; every failure is one :class:`HmreproError` naming the file."""
    if not path.exists():
        raise MissingDataError(
            f"{path} does not exist. Is --data-root right? Fetch the {benchmark} data with "
            f"`{_FETCH_HINT[benchmark]}`, or make the synthetic benchmark with `hmrepro prepare synthetic`."
        )
    if not path.is_file():
        raise CorruptFileError(
            f"{path} is a folder (or another non-file), not an image; remove it and run "
            f"`{_FETCH_HINT[benchmark]}` to put the file back"
        )
    try:
        img = Image.open(path)
        img.load()
        return img
    except PermissionError:
        raise HmreproError(f"cannot read {path}: permission denied; make it readable (chmod a+r {path})") from None
    except Exception as err:  # PIL raises many types for truncated or foreign files
        raise CorruptFileError(f"cannot read image {path}: {err}. Delete it and fetch it again.") from err


# -- mask validation ---------------------------------------------------------------------------------

_SINGLE_CHANNEL = ("L", "P")  # 8-bit class indices (PASCAL's SegmentationClassAug is 'P', COCO's are 'L')
_WIDE = ("I;16", "I;16L", "I;16B", "I")  # 16/32-bit integers: accepted only if every value is a class


def _mask_array(img: Image.Image, path: Path, benchmark: str, valid: str, data_root: Path | None) -> np.ndarray:
    """The class indices of a PASCAL/COCO mask as an integer array (no value wrapped); a wrong kind is refused."""
    if img.mode in _SINGLE_CHANNEL:
        return np.asarray(img, dtype=np.uint8)
    if img.mode in _WIDE:
        return np.asarray(img).astype(np.int64)  # checked against the classes before it becomes uint8
    raise CorruptFileError(
        f"mask {path} is not a single-channel 8-bit image (mode {img.mode}, {len(img.getbands())} channel(s)); "
        f"{benchmark} masks are single-channel "
        f"8-bit PNGs of class indices ({valid}). Replace it with the dataset's mask and check with "
        f"{_check_hint(benchmark, data_root)}"
    )


def _check_values(
    arr: np.ndarray, allowed: np.ndarray, path: Path, benchmark: str, valid: str, data_root: Path | None
) -> None:
    """Refuse a mask with a value that is no class of ``benchmark`` (``allowed``: a 256-entry lookup table)."""
    if arr.size == 0:
        raise CorruptFileError(
            f"mask {path} has no pixels; replace it and check with {_check_hint(benchmark, data_root)}"
        )
    if arr.dtype == np.uint8 and allowed[arr].all():
        return
    low, high = int(arr.min()), int(arr.max())
    if low >= 0 and high < 256 and allowed[arr.astype(np.uint8)].all():
        return
    bad = np.unique(arr[(arr < 0) | (arr > 255)]) if (low < 0 or high > 255) else np.unique(arr[~allowed[arr]])
    shown = ", ".join(str(int(v)) for v in bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
    raise CorruptFileError(
        f"mask {path} has the value(s) {shown}, which are no {benchmark} class (valid: {valid}); replace it with "
        f"the dataset's mask and check the data with {_check_hint(benchmark, data_root)}"
    )


def _allowed(values) -> np.ndarray:
    table = np.zeros(256, dtype=bool)
    table[list(values)] = True
    return table


def check_mask_size(
    mask_path: Path, mask_shape: tuple[int, ...], image: Image.Image, benchmark: str, data_root: Path | None = None
) -> None:
    """Refuse a mask whose size is not its image's (errors name the mask and both sizes)."""
    if tuple(mask_shape) != (image.height, image.width):
        raise CorruptFileError(
            f"mask {mask_path} is {mask_shape[1]}x{mask_shape[0]} (width x height) but its image is "
            f"{image.width}x{image.height}: the layout is broken; replace the mask and check the data with "
            f"{_check_hint(benchmark, data_root)}"
        )


def load_image(path: Path, benchmark: str) -> Image.Image:
    """The RGB image at ``path`` (errors name the file and the command that fetches it)."""
    return open_image(path, benchmark).convert("RGB")


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
        if root.exists() and not root.is_dir():
            raise InvalidInputError(
                f"data root {root} is a file, not a folder; pass --data-root (or set HMREPRO_DATA) "
                f"to the folder holding {self.top_folder}/"
            )
        if not root.is_dir():
            raise MissingDataError(
                f"data root {root} does not exist. Pass --data-root (or set HMREPRO_DATA) to the folder holding "
                f"{self.top_folder}/, or fetch it with `{_FETCH_HINT[self.name]} --data-root {root}`; "
                f"for a no-download try-out: `hmrepro prepare synthetic`."
            )
        if (root / self.top_folder).exists() and not (root / self.top_folder).is_dir():
            raise CorruptFileError(
                f"{root / self.top_folder} is a file, not the {self.name} folder; move it away and "
                f"run `{_FETCH_HINT[self.name]} --data-root {root}`"
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
    valid_values: ClassVar[str] = ""  # the mask values that are classes, in words (for messages)

    def allowed_values(self) -> np.ndarray:
        """A 256-entry lookup table: True for a mask value that is a class (or the ignore label)."""
        raise NotImplementedError

    def read_mask(self, data_root: Path, name: str) -> torch.Tensor:
        """The raw mask as stored (uint8 tensor [H, W]); a mask of another kind or with values that are no
        class of the benchmark raises :class:`CorruptFileError` naming the file, the value and the fix."""
        path = self.mask_path(data_root, name)
        return torch.from_numpy(self.decode_mask(open_image(path, self.name), path, data_root))

    def decode_mask(self, img: Image.Image, path: Path, data_root: Path | None = None) -> np.ndarray:
        """The validated uint8 array [H, W] of the mask image ``img`` read from ``path``."""
        arr = _mask_array(img, path, self.name, self.valid_values, data_root)
        _check_values(arr, self.allowed_values(), path, self.name, self.valid_values, data_root)
        return np.array(arr, dtype=np.uint8)  # a writable copy

    def load_pair(self, data_root: Path, name: str) -> tuple[Image.Image, torch.Tensor]:
        """The RGB image and the validated raw mask of ``name``; a mask whose size is not its image's is refused."""
        image = load_image(self.image_path(data_root, name), self.name)
        raw = self.read_mask(data_root, name)
        check_mask_size(self.mask_path(data_root, name), tuple(raw.shape), image, self.name, data_root)
        return image, raw

    def binarize(self, raw: torch.Tensor, class_id: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """0/1 float mask of ``class_id`` and the ignore map (or None) from a (resized) raw mask."""
        mask = (raw == class_id + 1).float()
        return mask, None

    def validate(self, fold: int, split: str) -> None:
        if split not in SPLITS:
            raise InvalidInputError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
        if not 0 <= fold < 4:
            raise InvalidInputError(f"unknown fold {fold!r} for {self.name}; choose 0, 1, 2 or 3")


class Pascal(Benchmark):
    top_folder = "VOC2012"
    valid_values = "0 background, 1..20 the VOC classes, 255 boundary"

    def allowed_values(self) -> np.ndarray:
        return _allowed([*range(self.nclass + 1), 255])

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
    valid_values = "0 background, 1..80 = 1 + the class index"

    def allowed_values(self) -> np.ndarray:
        return _allowed(range(self.nclass + 1))

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

    valid_values = "grey levels 0..255, >= 128 is foreground"

    def decode_mask(self, img: Image.Image, path: Path, data_root: Path | None = None) -> np.ndarray:
        # the authors: Image.open(mask).convert('L'), then >= 128 is foreground; any 8-bit image mode converts.
        # A 16/32-bit or float mask has no such grey level: converting would clip it, so it is refused.
        if img.mode in (*_WIDE, "F"):
            raise CorruptFileError(
                f"mask {path} is a 16/32-bit image (mode {img.mode}); FSS-1000 masks are 8-bit (grey levels, >= 128 is "
                f"foreground). Replace it with the dataset's mask and check with {_check_hint(self.name, data_root)}"
            )
        return np.array(img.convert("L"), dtype=np.uint8)

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
        raise InvalidInputError(f"unknown benchmark {name!r}; choose one of {', '.join(BENCHMARKS)}") from None


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
    COCO, the val classes for FSS-1000). ``protocol='bam'`` gives one of BAM's runs (all five:
    :func:`hmrepro.data.bam.bam_test_episodes`).
    """
    if protocol == "bam":  # one run of BAM's protocol (its first seed, or ``seed``): what validation in training uses
        from .bam import bam_seeds, bam_test_episodes

        return bam_test_episodes(benchmark, fold, shot, splits, seeds=[seed or bam_seeds()[0]])[0][1]
    bench = get_benchmark(benchmark)
    if protocol == "asnet" and benchmark == "fss":
        raise InvalidInputError(
            "the asnet protocol has no FSS-1000 episodes (the authors' ASNet code has no FSS loader)"
        )
    pool = bench.pool(splits or SplitFolder(), split, fold)
    return evaluation_episodes(pool, shot, bench.test_episodes, protocol=protocol, seed=seed)


test_episodes.__test__ = False  # a library function, not a pytest test, wherever it is imported

"""The benchmark split lists (PASCAL-5i, COCO-20i, FSS-1000) as the authors ship them.

A splits folder holds ``pascal/{trn,val}_fold{0..3}.txt``, ``coco/{trn,val}_fold{0..3}.json`` and
``fss/{trn,val,test}.txt`` (see ``../shared/splits/README.md``), and a ``SHA256SUMS`` file. The lists the
authors use ship inside the package; ``hmrepro prepare synthetic`` writes a folder of the same form for the
synthetic benchmark. Every file is checked against ``SHA256SUMS`` the first time it is read.
"""

from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path

from ..errors import CorruptFileError, MissingDataError

PACKAGED_SPLITS = Path(__file__).resolve().parent / "splits"
CHECKSUM_FILE = "SHA256SUMS"


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def write_checksums(root: Path) -> Path:
    """Write ``root/SHA256SUMS`` for every split file below ``root`` (used by the synthetic benchmark)."""
    root = Path(root)
    lines = []
    for path in sorted(p for p in root.rglob("*") if p.is_file() and p.name != CHECKSUM_FILE):
        lines.append(f"{sha256_file(path)}  ./{path.relative_to(root).as_posix()}")
    out = root / CHECKSUM_FILE
    out.write_text("\n".join(lines) + "\n")
    return out


def _stamp(path: Path) -> tuple[int, int] | None:
    """(mtime_ns, size) of ``path``: the caches below are keyed on it, so a rewritten file is checked again."""
    try:
        st = path.stat()
        return st.st_mtime_ns, st.st_size
    except OSError:
        return None


def _expected_sums(root: Path) -> dict[str, str]:
    return _read_sums(root, _stamp(root / CHECKSUM_FILE))


@functools.lru_cache(maxsize=64)
def _read_sums(root: Path, stamp) -> dict[str, str]:
    sums_file = root / CHECKSUM_FILE
    if stamp is None:
        raise MissingDataError(
            f"split folder {root} has no {CHECKSUM_FILE}; a splits folder must list the sha256 of every file "
            f"(`hmrepro prepare synthetic` writes one, the packaged lists have one)"
        )
    sums = {}
    for line in sums_file.read_text().splitlines():
        if line.strip():
            digest, name = line.split(maxsplit=1)
            sums[name.strip().removeprefix("./")] = digest
    return sums


def _verified(path: Path, root: Path) -> Path:
    return _verify(path, root, _stamp(path), _stamp(root / CHECKSUM_FILE))


@functools.lru_cache(maxsize=1024)
def _verify(path: Path, root: Path, stamp, sums_stamp) -> Path:
    rel = path.relative_to(root).as_posix()
    if stamp is None or not path.is_file():
        raise MissingDataError(f"split list {path} does not exist (expected inside the splits folder {root})")
    expected = _expected_sums(root).get(rel)
    if expected is None:
        raise CorruptFileError(f"split list {path} is not listed in {root / CHECKSUM_FILE}")
    actual = sha256_file(path)
    if actual != expected:
        raise CorruptFileError(
            f"split list {path} has sha256 {actual}, but {root / CHECKSUM_FILE} expects {expected}: "
            "the file was modified; restore it (reinstall hmrepro, or rerun `hmrepro prepare synthetic`)"
        )
    return path


class SplitFolder:
    """Reads (and verifies) the split lists below one folder."""

    def __init__(self, root: str | Path | None = None):
        self.root = Path(root).expanduser().resolve() if root else PACKAGED_SPLITS
        if not self.root.is_dir():
            raise MissingDataError(f"splits folder {self.root} does not exist (pass --splits DIR with the split lists)")

    def path(self, rel: str) -> Path:
        return _verified(self.root / rel, self.root)

    def pascal(self, split: str, fold: int) -> list[tuple[str, int]]:
        """``[(image_id, class_id 0..19), ...]`` in file order."""
        lines = self.path(f"pascal/{split}_fold{fold}.txt").read_text().splitlines()
        out = []
        for line in lines:
            if line:
                img, cls = line.split("__")
                out.append((img, int(cls) - 1))
        return out

    def coco(self, split: str, fold: int) -> dict[int, list[str]]:
        """``{class_id 0..79: ["train2014/COCO_train2014_000000xxxxxx.jpg", ...]}`` in file order."""
        data = json.loads(self.path(f"coco/{split}_fold{fold}.json").read_text())
        image_dir = data["image_dir"]
        return {
            int(c): [f"{image_dir}/COCO_{image_dir}_{int(i):012d}.jpg" for i in ids]
            for c, ids in data["classes"].items()
        }

    def fss(self, split: str) -> list[str]:
        """FSS-1000 class folder names of ``split`` (trn/val/test), sorted as the authors sort them."""
        text = self.path(f"fss/{split}.txt").read_text()
        return sorted(line.strip("\r") for line in text.splitlines() if line.strip("\r"))

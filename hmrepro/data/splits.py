"""The benchmark split lists (PASCAL-5i, COCO-20i, FSS-1000) as the authors ship them.

A splits folder holds ``pascal/{trn,val}_fold{0..3}.txt``, ``coco/{trn,val}_fold{0..3}.json`` and
``fss/{trn,val,test}.txt`` (see ``../shared/splits/README.md``), and a ``SHA256SUMS`` file. The lists the
authors use ship inside the package; ``hmrepro prepare synthetic`` writes a folder of the same form for the
synthetic benchmark. Every file is checked against ``SHA256SUMS`` the first time it is read.
"""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path

from ..atomic import atomic_write_text, sha256_file
from ..errors import CorruptFileError, HmreproError, InvalidInputError, MissingDataError
from ..saferead import is_plain_name
from ..textfile import read_text

PACKAGED_SPLITS = Path(__file__).resolve().parent / "splits"
CHECKSUM_FILE = "SHA256SUMS"
_SHA256 = re.compile(r"[0-9a-fA-F]{64}")


_RESTORE = "restore it (reinstall hmrepro, or rerun `hmrepro prepare synthetic` for the synthetic lists)"


def _read_text(path: Path, what: str) -> str:
    """The text of a split list or checksum file; a missing one is :class:`MissingDataError`, a broken one
    :class:`CorruptFileError`, each naming it."""
    return read_text(path, what, _RESTORE, error=CorruptFileError, missing=MissingDataError)


def write_checksums(root: Path) -> Path:
    """Write ``root/SHA256SUMS`` for every split file below ``root`` (used by the synthetic benchmark)."""
    root = Path(root)
    lines = []
    for path in sorted(p for p in root.rglob("*") if p.is_file() and p.name != CHECKSUM_FILE):
        lines.append(f"{sha256_file(path)}  ./{path.relative_to(root).as_posix()}")
    out = root / CHECKSUM_FILE
    atomic_write_text(out, "\n".join(lines) + "\n", what="checksum file")
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
    for number, line in enumerate(_read_text(sums_file, "checksum file").splitlines(), start=1):
        if line.strip():
            parts = line.split(maxsplit=1)
            if len(parts) != 2 or not _SHA256.fullmatch(parts[0]):
                raise CorruptFileError(
                    f"{sums_file} line {number} is not '<sha256>  <file>' (found {line[:60]!r}); {_RESTORE}"
                )
            sums[parts[1].strip().removeprefix("./")] = parts[0].lower()
    return sums


def _verified(path: Path, root: Path) -> Path:
    return _verify(path, root, _stamp(path), _stamp(root / CHECKSUM_FILE))


@functools.lru_cache(maxsize=1024)
def _verify(path: Path, root: Path, stamp, sums_stamp) -> Path:
    rel = path.relative_to(root).as_posix()
    if path.is_dir():
        raise CorruptFileError(f"split list {path} is a folder, not a file; {_RESTORE}")
    if stamp is None or not path.is_file():
        raise MissingDataError(f"split list {path} does not exist (expected inside the splits folder {root})")
    expected = _expected_sums(root).get(rel)
    if expected is None:
        raise CorruptFileError(f"split list {path} is not listed in {root / CHECKSUM_FILE}")
    try:
        actual = sha256_file(path)
    except PermissionError:
        raise HmreproError(
            f"cannot read split list {path}: permission denied; make it readable (chmod a+r {path})"
        ) from None
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
        if self.root.exists() and not self.root.is_dir():
            raise InvalidInputError(
                f"--splits {self.root} is a file, not a folder (pass --splits DIR with the split lists)"
            )
        if not self.root.is_dir():
            raise MissingDataError(f"splits folder {self.root} does not exist (pass --splits DIR with the split lists)")

    def path(self, rel: str) -> Path:
        return _verified(self.root / rel, self.root)

    def pascal(self, split: str, fold: int) -> list[tuple[str, int]]:
        """``[(image_id, class_id 0..19), ...]`` in file order."""
        path = self.path(f"pascal/{split}_fold{fold}.txt")
        out = []
        for number, line in enumerate(_read_text(path, "split list").splitlines(), start=1):
            if line:
                out.append(_pascal_line(line, path, number))
        return _not_empty(out, path)

    def coco(self, split: str, fold: int) -> dict[int, list[str]]:
        """``{class_id 0..79: ["train2014/COCO_train2014_000000xxxxxx.jpg", ...]}`` in file order."""
        path = self.path(f"coco/{split}_fold{fold}.json")
        try:
            data = json.loads(_read_text(path, "split list"))
            image_dir = data["image_dir"]
            classes = {
                int(c): [f"{image_dir}/COCO_{image_dir}_{int(i):012d}.jpg" for i in ids]
                for c, ids in data["classes"].items()
            }
        except json.JSONDecodeError as err:
            raise CorruptFileError(
                f"split list {path} is not valid JSON (line {err.lineno}: {err.msg}); {_RESTORE}"
            ) from None
        except (KeyError, TypeError, ValueError, AttributeError):
            raise CorruptFileError(
                f"split list {path} is not a COCO split list ({{'image_dir': ..., 'classes': {{class: [ids]}}}}); "
                f"{_RESTORE}"
            ) from None
        _check_plain_name(image_dir, path, "field 'image_dir'")
        return _not_empty(classes, path)

    def fss(self, split: str) -> list[str]:
        """FSS-1000 class folder names of ``split`` (trn/val/test), sorted as the authors sort them."""
        path = self.path(f"fss/{split}.txt")
        text = _read_text(path, "split list")
        names = []
        for number, line in enumerate(text.splitlines(), start=1):
            if line.strip("\r"):
                _check_plain_name(line.strip("\r"), path, f"line {number}")
                names.append(line.strip("\r"))
        return _not_empty(sorted(names), path)


def _pascal_line(line: str, path: Path, number: int) -> tuple[str, int]:
    """``<image id>__<class 1..20>`` as (image id, class 0..19); anything else names the file and line."""
    img, sep, cls = line.strip("\r").rpartition("__")
    if not sep or not img or not cls.isdigit():
        raise CorruptFileError(
            f"split list {path} line {number} is not '<image id>__<class>' (found {line[:60]!r}); {_RESTORE}"
        )
    _check_plain_name(img, path, f"line {number}")
    return img, int(cls) - 1


def _check_plain_name(name: str, path: Path, where: str) -> None:
    """Refuse an image or folder name that would lead out of the data root (a folder part, ``..``, an absolute
    path): split lists name files inside it only."""
    if not is_plain_name(name):
        raise CorruptFileError(
            f"split list {path} {where}: {str(name)[:60]!r} is not a plain image name (no '/', '\\' or '..'); "
            f"it would be read from outside the data root; {_RESTORE}"
        )


def _not_empty(items, path: Path):
    if not items:
        raise CorruptFileError(f"split list {path} is empty: it names no image or class; {_RESTORE}")
    return items

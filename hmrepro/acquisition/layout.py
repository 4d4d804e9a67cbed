"""Find the interesting folder inside an extracted archive and move it into the data-root layout.

The internal folder names of several archives are not published (SegmentationClassAug.zip, FSS-1000.zip,
the COCO mask zips), so folders are found by their content, not by a fixed path. Moves are renames
inside the data root (same file system: no copy); into an existing folder, entries are merged.
"""

from __future__ import annotations

import fnmatch
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

from ..atomic import atomic_write_text
from ..errors import MissingDataError

STAGING = ".staging"
IGNORED_DIRS = ("__MACOSX",)


def staging_dir(data_root: Path, name: str) -> Path:
    return Path(data_root) / STAGING / name


def find_dir(root: Path, score: Callable[[Path, list[str], list[str]], int], what: str) -> Path:
    """The folder below ``root`` (inclusive) with the highest positive ``score(dir, subdirs, files)``."""
    best, best_score = None, 0
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in IGNORED_DIRS and not d.startswith("._"))
        s = score(Path(dirpath), dirnames, filenames)
        if s > best_score:
            best, best_score = Path(dirpath), s
    if best is None:
        raise MissingDataError(f"no {what} found in {root}: the archive does not hold what was expected")
    return best


def count_matching(pattern: str) -> Callable[[Path, list[str], list[str]], int]:
    """Score: number of files in the folder matching ``pattern``."""
    return lambda d, dirs, files: sum(1 for f in files if fnmatch.fnmatch(f, pattern))


def named_dir_with(name: str, child: str) -> Callable[[Path, list[str], list[str]], int]:
    """Score: 1 for a folder called ``name`` that has a sub-folder ``child``."""
    return lambda d, dirs, files: int(d.name == name and child in dirs)


def merge_move(src: Path, dest: Path) -> None:
    """Move ``src`` to ``dest``; if ``dest`` exists, move every entry that ``dest`` lacks (recursively)."""
    src, dest = Path(src), Path(dest)
    if not dest.exists():
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(src, dest)
        return
    if src.is_dir() and dest.is_dir():
        for child in sorted(src.iterdir()):
            merge_move(child, dest / child.name)
        shutil.rmtree(src, ignore_errors=True)
    else:
        src.unlink() if src.is_file() or src.is_symlink() else shutil.rmtree(src, ignore_errors=True)


def remove_staging(data_root: Path, name: str) -> None:
    path = staging_dir(data_root, name)
    if path.exists():
        shutil.rmtree(path, ignore_errors=True)
    parent = path.parent
    if parent.is_dir() and not any(parent.iterdir()):
        parent.rmdir()


# -- what has been placed -------------------------------------------------------------------------------
PREPARED = ".hmrepro-prepared.json"


def _prepared(data_root: Path) -> dict:
    path = Path(data_root) / PREPARED
    try:
        return json.loads(path.read_text()) if path.is_file() else {}
    except ValueError:
        return {}


def is_placed(data_root: Path, key: str) -> bool:
    return key in _prepared(data_root)


def mark_placed(data_root: Path, key: str, info: dict) -> None:
    data = _prepared(data_root)
    data[key] = info
    path = Path(data_root) / PREPARED
    atomic_write_text(path, json.dumps(data, indent=1, sort_keys=True) + "\n", what="placement record")


def non_empty_dir(path: Path) -> bool:
    return path.is_dir() and any(path.iterdir())

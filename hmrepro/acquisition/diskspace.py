"""Free-space check before big downloads and extractions."""

from __future__ import annotations

import shutil
from pathlib import Path

from .download_errors import InsufficientSpaceError

MARGIN = 64 << 20  # keep 64 MiB spare


def human(nbytes: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(nbytes) < 1024 or unit == "TiB":
            return f"{nbytes:.1f} {unit}" if unit != "B" else f"{int(nbytes)} B"
        nbytes /= 1024
    return f"{nbytes:.1f} TiB"


def _existing(path: Path) -> Path:
    path = Path(path).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def ensure_free_space(folder: Path, needed: int, what: str) -> None:
    """Raise :class:`InsufficientSpaceError` unless ``folder``'s disk has ``needed`` bytes (+ margin) free."""
    if needed <= 0:
        return
    free = shutil.disk_usage(_existing(folder)).free
    if free < needed + MARGIN:
        raise InsufficientSpaceError(
            f"{what} needs {human(needed)} free in {folder}, but only {human(free)} is available. "
            "Free some space, or pass --data-root on a bigger disk (for --from DIR archives nothing is copied)."
        )

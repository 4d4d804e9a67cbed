"""``hmrepro prepare fss``: ``FSS-1000/<class>/{1..10}.{jpg,png}`` under the data root."""

from __future__ import annotations

from pathlib import Path

from .registry import Registry
from .steps import PrepareContext, place


def _class_folders(d: Path, dirs: list[str], files: list[str]) -> int:
    """Score: how many sub-folders look like FSS-1000 classes (hold 1.jpg and 1.png)."""
    return sum(1 for c in dirs if (d / c / "1.jpg").is_file() and (d / c / "1.png").is_file())


def prepare_fss(ctx: PrepareContext, registry: Registry) -> list[str]:
    """Extract FSS-1000 and move the folder of class folders to ``FSS-1000/``."""
    target = Path(ctx.data_root) / "FSS-1000"
    return [place(ctx, registry["fss1000"], target, _class_folders, "folder of FSS-1000 class folders")]

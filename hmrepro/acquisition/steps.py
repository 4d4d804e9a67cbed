"""One preparation step: verified archive -> safe extraction into staging -> folder moved into the layout."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import MissingDataError
from .extract import extract
from .fetch import require_verified
from .layout import (
    IGNORED_DIRS,
    find_dir,
    is_placed,
    mark_placed,
    merge_move,
    non_empty_dir,
    remove_staging,
    staging_dir,
)
from .lock import LockFile
from .registry import Source


@dataclass
class PrepareContext:
    """Shared settings of one ``hmrepro prepare`` run."""

    data_root: Path
    lock: LockFile
    fetch_command: str
    force: bool = False
    progress: bool = True
    workers: int = 1
    console: object = None
    log: Callable[[str], None] = field(default=lambda msg: None)


def extracted(ctx: PrepareContext, source: Source) -> Path:
    """The staging folder holding ``source``'s archive extracted (resumes an interrupted extraction)."""
    archive = require_verified(source, ctx.data_root, ctx.lock, ctx.fetch_command)
    stage = staging_dir(ctx.data_root, source.name)
    extract(archive, stage / "content", marker=stage / "extracted.json", progress=ctx.progress, console=ctx.console)
    return stage / "content"


def place(ctx: PrepareContext, source: Source, target: Path, locate, what: str) -> str:
    """Put the folder ``locate`` finds in ``source``'s archive at ``target``; a one-line summary.

    Skipped when already placed (unless ``force``). When the archive is missing but ``target`` already
    holds files (put there by hand), they are left as they are.
    """
    if not ctx.force and is_placed(ctx.data_root, source.name) and target.exists():
        return f"{target}: in place (from {source.filename})"
    try:
        content = extracted(ctx, source)
    except MissingDataError:
        if non_empty_dir(target):
            ctx.log(f"{source.filename} is not downloaded, but {target} already has files: leaving them as they are")
            return f"{target}: kept as found (not from an archive)"
        raise
    found = find_dir(content, locate, what)
    for junk in IGNORED_DIRS:  # e.g. __MACOSX next to the files of a zip made on a Mac
        shutil.rmtree(found / junk, ignore_errors=True)
    merge_move(found, target)
    remove_staging(ctx.data_root, source.name)
    mark_placed(ctx.data_root, source.name, {"archive": source.filename, "target": str(target)})
    return f"{target}: placed from {source.filename}"

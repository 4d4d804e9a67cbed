"""Rich progress bars: one per downloaded file, one per long loop (extraction, mask generation)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

_stderr = Console(stderr=True)


@contextlib.contextmanager
def byte_bar(
    description: str, total: int | None, *, enabled: bool = True, console: Console | None = None, completed: int = 0
) -> Iterator[Callable[[int], None]]:
    """A bytes progress bar; yields ``advance(nbytes)``. Disabled: a no-op."""
    if not enabled:
        yield lambda n: None
        return
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console or _stderr, transient=False) as bar:
        task = bar.add_task(description, total=total, completed=completed)
        yield lambda n: bar.advance(task, n)


@contextlib.contextmanager
def count_bar(
    description: str, total: int | None, *, enabled: bool = True, console: Console | None = None
) -> Iterator[Callable[[int], None]]:
    """An item-count progress bar; yields ``advance(n)``. Disabled: a no-op."""
    if not enabled:
        yield lambda n=1: None
        return
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console or _stderr, transient=False) as bar:
        task = bar.add_task(description, total=total)
        yield lambda n=1: bar.advance(task, n)

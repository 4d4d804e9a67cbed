"""Run one function over many independent tasks, in worker processes, with a progress bar."""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Iterator

from .transfer_bars import count_bar


def default_workers() -> int:
    return max(1, min(8, (os.cpu_count() or 1)))


def run_tasks(
    fn: Callable,
    tasks: list,
    *,
    workers: int = 1,
    description: str = "working",
    progress: bool = True,
    console=None,
    chunksize: int = 16,
) -> Iterator:
    """Yield ``fn(task)`` for every task (in any order). ``workers <= 1`` runs in this process.

    ``fn`` must be picklable (a module-level function or a functools.partial of one) when ``workers > 1``.
    """
    with count_bar(description, len(tasks), enabled=progress, console=console) as advance:
        if workers <= 1 or len(tasks) < 2:
            for t in tasks:
                yield fn(t)
                advance(1)
            return
        with multiprocessing.get_context().Pool(workers) as pool:
            for result in pool.imap_unordered(fn, tasks, chunksize=chunksize):
                yield result
                advance(1)

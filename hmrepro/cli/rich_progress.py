"""Rich progress bars and log lines for the engine's :class:`~hmrepro.progress.Progress` protocol."""

from __future__ import annotations

from typing import Any

from .common import console, say

__all__ = ["RichProgress"]


class RichProgress:
    """Draws one bar per engine task on stderr; ``enabled=False`` keeps only the log lines."""

    def __init__(self, enabled: bool = True, log_prefix: str = "") -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.log_prefix = log_prefix
        self._bars = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=console,
            disable=not enabled,
        )

    def __enter__(self) -> RichProgress:
        self._bars.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._bars.__exit__(*exc)

    def start(self, description: str, total: int, completed: int = 0) -> Any:
        return self._bars.add_task(description, total=total, completed=completed, info="")

    def advance(self, task: Any, n: int = 1, info: str = "") -> None:
        self._bars.update(task, advance=n, info=info)

    def finish(self, task: Any) -> None:
        self._bars.remove_task(task)

    def log(self, message: str) -> None:
        say(f"{self.log_prefix}{message}")

"""How long work (training, evaluation, checking a dataset) reports progress without printing: a small protocol
the CLI implements with rich. It lives on the ground floor, so every layer can take one.

The engine calls ``start`` for each piece of long work (an epoch, a validation, a fold's episodes), ``advance``
as it goes and ``finish`` at the end, and ``log`` for the lines a user should read. :class:`Silent` does nothing
(library use, tests, non-main DDP ranks); ``hmrepro.cli.rich_progress.RichProgress`` draws bars on the terminal.
"""

from __future__ import annotations

from typing import Any, Protocol

__all__ = ["Progress", "Silent"]


class Progress(Protocol):
    def start(self, description: str, total: int, completed: int = 0) -> Any:
        """Begin a task of ``total`` units (``completed`` of them already done); returns its handle."""

    def advance(self, task: Any, n: int = 1, info: str = "") -> None:
        """``n`` more units of ``task`` are done; ``info`` is a short status (loss, mIoU, speed)."""

    def finish(self, task: Any) -> None:
        """``task`` is over (its bar may go)."""

    def log(self, message: str) -> None:
        """A line for the user."""


class Silent:
    """A :class:`Progress` that reports nothing."""

    def start(self, description: str, total: int, completed: int = 0) -> None:
        return None

    def advance(self, task: Any, n: int = 1, info: str = "") -> None:
        pass

    def finish(self, task: Any) -> None:
        pass

    def log(self, message: str) -> None:
        pass

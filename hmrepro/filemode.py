"""Permissions of files written through ``tempfile.mkstemp`` (which creates them 0600).

An atomic write (temporary file + rename) must leave the file with the mode ``open()`` would have given it,
``0o666 & ~umask``, or records and checkpoints become unreadable to the user's group whatever the umask says.
"""

from __future__ import annotations

import os

__all__ = ["as_if_opened", "current_umask"]


def current_umask() -> int:
    """The process umask, read without changing it (``/proc/self/status``; ``os.umask`` round trip elsewhere)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    old = os.umask(0o022)  # not thread-safe, hence only the fallback
    os.umask(old)
    return old


def as_if_opened(fd: int) -> None:
    """Give the file behind ``fd`` the mode a plain ``open()`` would have created: ``0o666 & ~umask``."""
    os.fchmod(fd, 0o666 & ~current_umask())

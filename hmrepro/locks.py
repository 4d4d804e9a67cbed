"""Exclusive advisory locks on ``<something>.lock`` files (``fcntl.flock``; POSIX, hmrepro runs on Linux).

One process at a time holds the lock of a download target, of the sha256 pin file or of a run folder. The
holder writes its PID, host, start time and what it is doing into the lock file, so a refused second process
can say who holds it. The lock file is never deleted (deleting it would let a third process lock a new file
while the second still waits on the old one); the kernel drops the lock when the holder exits or dies, so a
killed process never leaves a stale lock behind.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import HmreproError

__all__ = ["LockedError", "exclusive_lock", "lock_path_for"]


class LockedError(HmreproError):
    """Another process holds the lock (``pid`` is its PID, or None when it could not be read)."""

    def __init__(self, message: str, pid: int | None = None):
        super().__init__(message)
        self.pid = pid


def lock_path_for(target: str | os.PathLike) -> Path:
    """``<target>.lock``: the lock file that guards ``target``."""
    target = Path(target)
    return target.with_name(target.name + ".lock")


def _open_lock_file(path: Path) -> int:
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
    except OSError as err:
        why = err.strerror or type(err).__name__
        if err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            fix = f"make {path.parent} writable for this user"
        elif err.errno in (errno.ENOENT, errno.ENOTDIR):
            fix = f"{path.parent} is not a folder that exists; create it or choose another location"
        else:
            fix = f"check {path.parent}"
        raise HmreproError(f"cannot create the lock file {path}: {why}; {fix}") from None


def _holder(fd: int) -> dict:
    """What the holder wrote into the lock file ({} if nothing readable yet)."""
    try:
        raw = os.pread(fd, 4096, 0).decode("utf-8", "replace")
        data = json.loads(raw) if raw.strip() else {}
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _describe(holder: dict) -> str:
    pid = holder.get("pid")
    who = f"PID {pid}" if pid else "another process"
    if holder.get("host") and holder.get("host") != socket.gethostname():
        who += f" on {holder['host']}"
    details = [d for d in (holder.get("info"), f"since {holder['since']}" if holder.get("since") else "") if d]
    return who + (f" ({', '.join(details)})" if details else "")


def _write_holder(fd: int, holder_info: str) -> None:
    data = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "since": time.strftime("%Y-%m-%d %H:%M:%S"),
        "info": holder_info,
    }
    payload = (json.dumps(data) + "\n").encode()
    os.ftruncate(fd, 0)
    os.pwrite(fd, payload, 0)


@contextmanager
def exclusive_lock(
    path: str | os.PathLike,
    *,
    wait: bool,
    holder_info: str,
    subject: str | None = None,
    on_wait: Callable[[str], None] | None = None,
) -> Iterator[Path]:
    """Hold the exclusive lock on the file ``path`` (created if needed) for the ``with`` block.

    ``holder_info`` says what this process does (written into the lock file with its PID, for whoever is
    refused). ``wait=False``: if another process holds it, raise :class:`LockedError` naming its PID;
    ``wait=True``: block until it is free, calling ``on_wait`` once with a line saying whom we wait for.
    ``subject`` names the locked thing in messages (default: ``path`` without its ``.lock`` suffix).
    Threads of one process exclude each other too (each ``with`` opens its own file description).
    """
    path = Path(path)
    subject = subject or str(path.with_name(path.name.removesuffix(".lock")))
    fd = _open_lock_file(path)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            if not wait:
                pid = holder.get("pid") if isinstance(holder.get("pid"), int) else None
                raise LockedError(
                    f"{subject} is in use by {_describe(holder)}; wait until it finishes"
                    + (f" (or stop it: kill {pid})" if pid else "")
                    + f" and try again (lock file {path})",
                    pid,
                ) from None
            if on_wait is not None:
                on_wait(f"{subject} is in use by {_describe(holder)}; waiting for it to finish")
            fcntl.flock(fd, fcntl.LOCK_EX)
        _write_holder(fd, holder_info)
        try:
            yield path
        finally:
            os.ftruncate(fd, 0)  # no stale PID for the next reader; the file itself stays (see the module doc)
    finally:
        os.close(fd)  # releases the flock

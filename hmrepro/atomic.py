"""Writing files so that nobody ever reads half of one, and hashing files: the ground floor every layer uses.

A write goes to a temporary file beside its target (same folder, hence same file system; named
``.<name>.<random>.tmp``), is flushed to the disk, and replaces the target with one rename: a reader sees the old
file or the new one, never a part of either, and never a zero-byte file. A write that fails (a full disk, a quota,
exhausted memory, a crash of the serializer) leaves the old file as it was and no temporary file behind, and is
raised as :class:`WriteFailed`: an ``HmreproError`` (the CLI prints its one line) that is also an ``OSError`` (code
that catches write errors keeps working), naming the file, what went wrong and what to do.

- :func:`atomic_write_text` / :func:`atomic_write_bytes`: a whole file from a string or bytes;
- :func:`atomic_open`: a file handle for writers that stream (``torch.save``, ``np.savez``, ``fig.savefig``);
- :func:`sha256_file` / :func:`sha256_bytes`: hex digests.
"""

from __future__ import annotations

import errno
import hashlib
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from .errors import HmreproError
from .filemode import as_if_opened

__all__ = [
    "WriteFailed",
    "atomic_open",
    "atomic_write_bytes",
    "atomic_write_text",
    "is_temporary",
    "sha256_bytes",
    "sha256_file",
    "write_failure",
]

TEMP_SUFFIX = ".tmp"
HASH_CHUNK = 1 << 20

_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
_DENIED = (errno.EACCES, errno.EPERM, errno.EROFS)
# what torch says when its C++ writer (a path given to torch.save) hits a full disk
_TORCH_WRITE_FAILED = ("PytorchStreamWriter", "inline_container", "file write failed")


class WriteFailed(HmreproError, OSError):
    """A file could not be written; the message names it, says why and what to do. The old file, if any, is
    unchanged. ``errno`` is the operating system's code where there was one."""


def is_temporary(path: Path) -> bool:
    """Whether ``path`` is a temporary file an interrupted atomic write may have left (``.<name>.<random>.tmp``)."""
    name = Path(path).name
    return name.startswith(".") and name.endswith(TEMP_SUFFIX)


def write_failure(err: BaseException, path: Path, what: str = "file") -> WriteFailed | None:
    """The :class:`WriteFailed` that says in one line why writing ``what`` ``path`` failed with ``err``, or None
    when ``err`` is not a failure of the write itself (a bug, an interrupt)."""
    if isinstance(err, WriteFailed):
        return err
    folder = Path(path).parent
    code = err.errno if isinstance(err, OSError) else None
    if isinstance(err, MemoryError):
        reason, fix = "out of memory", "close other programs or use a machine with more memory, then run again"
    elif code in _FULL or _is_torch_write_failure(err):
        reason = "no space left on the device" if code != errno.EDQUOT else "disk quota exceeded"
        fix = f"free some space there (`df -h {folder}`) or write to a folder on another disk, then run again"
        code = code or errno.ENOSPC
    elif code in _DENIED:
        reason = "permission denied" if code != errno.EROFS else "read-only file system"
        fix = f"make {folder} writable or write somewhere else"
    elif isinstance(err, OSError) and err.filename is not None:
        return None  # names its file already: the CLI says what it means (describe_os_error)
    elif isinstance(err, OSError):
        reason = err.strerror or str(err) or type(err).__name__
        fix = "check the folder and the disk, then run again"
    else:
        return None
    failure = WriteFailed(f"could not write {what} {path}: {reason}; {fix} (an existing {what} there is unchanged)")
    failure.errno = code
    return failure


def _is_torch_write_failure(err: BaseException) -> bool:
    return isinstance(err, RuntimeError) and any(word in str(err) for word in _TORCH_WRITE_FAILED)


@contextmanager
def atomic_open(path: Path, mode: str = "wb", *, what: str = "file", sync: bool = True) -> Iterator[IO]:
    """A handle on a temporary file that replaces ``path`` when the ``with`` block ends without an error.

    ``mode`` is ``"wb"`` or ``"w"`` (UTF-8, ``\\n`` line ends). The new file gets the mode ``open()`` would have
    given it; ``sync=False`` skips the ``fsync`` (bulk files that are made again if lost in a power cut, such as
    extracted archive members: thousands of fsyncs would cost minutes). Any error in the block or in the write
    removes the temporary file and leaves ``path`` as it was; write errors (full disk, memory, permissions) are
    raised as :class:`WriteFailed`.
    """
    if mode not in ("wb", "w"):
        raise ValueError(f"atomic_open: mode {mode!r} is not 'wb' or 'w'")
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TEMP_SUFFIX)
        text = {"encoding": "utf-8", "newline": "\n"} if mode == "w" else {}
        with os.fdopen(fd, mode, **text) as handle:
            as_if_opened(handle.fileno())  # mkstemp creates 0600
            yield handle
            handle.flush()
            if sync:
                os.fsync(handle.fileno())
        os.replace(tmp, path)
        tmp = None
    except BaseException as err:
        failure = write_failure(err, path, what)
        if failure is None:
            raise
        raise failure from err
    finally:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)


def atomic_write_bytes(path: Path, data: bytes, *, what: str = "file") -> None:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_open`)."""
    with atomic_open(path, "wb", what=what) as handle:
        handle.write(data)


def atomic_write_text(path: Path, text: str, *, what: str = "file") -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically (see :func:`atomic_open`)."""
    with atomic_open(path, "w", what=what) as handle:
        handle.write(text)


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path, chunk: int = HASH_CHUNK) -> str:
    """Hex sha256 of the file at ``path``, read in chunks (checkpoints can be hundreds of MB)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()

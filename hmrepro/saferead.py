"""Reading a file that someone else may have written or edited (result records, their per-episode files, state
files) without hanging, exhausting memory or leaving its folder.

:func:`read_bounded` opens only a regular file (never a FIFO, a device such as ``/dev/zero``, a socket or a folder),
never follows a symbolic link out of the folder it is read from, and reads at most ``max_bytes``.
:func:`parse_json` parses with a nesting-depth limit and refuses integers of more than a few dozen digits (a
5000-digit number is refused, never an internal error); ``NaN`` and ``Infinity`` parse as floats for the schema
that reads the values to judge. Every failure raises :class:`UntrustedFileError`, whose message says what is wrong
in words (the caller adds the file's name).

This module imports nothing of hmrepro but :mod:`hmrepro.errors`: every layer may use it.
"""

from __future__ import annotations

import json
import os
import re
import stat
from pathlib import Path

from .errors import HmreproError

__all__ = ["MAX_INT_DIGITS", "MAX_JSON_DEPTH", "UntrustedFileError", "is_plain_name", "parse_json", "read_bounded"]

MAX_JSON_DEPTH = 32  # a record nests 3 levels; a deeper file is no record
MAX_INT_DIGITS = 30  # any count or seed hmrepro writes fits; a longer integer is refused


class UntrustedFileError(HmreproError):
    """A file that cannot be used: the message says why, without the file's name."""


def is_plain_name(name: object) -> bool:
    """Whether ``name`` is a bare file name: no folder part, no ``..``, no absolute path, no control character."""
    if not isinstance(name, str) or name in ("", ".", "..") or len(name) > 255:
        return False
    return not any(ch in name for ch in "/\\\x00") and name.isprintable()


def read_bounded(path: Path, *, inside: Path, max_bytes: int) -> bytes:
    """The bytes of the regular file ``path``, which must lie inside the folder ``inside`` (after resolving links)
    and hold at most ``max_bytes``; :class:`UntrustedFileError` otherwise. Opening never blocks (a FIFO is refused,
    not waited on)."""
    path = Path(path)
    target = _inside(path, Path(inside))
    try:
        fd = os.open(target, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0))
    except PermissionError:
        raise UntrustedFileError("permission denied (make it readable)") from None
    except IsADirectoryError:
        raise UntrustedFileError("is a folder, not a file") from None
    except FileNotFoundError:
        raise UntrustedFileError("does not exist") from None
    except OSError as err:
        raise UntrustedFileError(f"cannot be read ({err.strerror or err})") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise UntrustedFileError(f"is {_kind(info.st_mode)}, not a regular file; only regular files are read")
        if info.st_size > max_bytes:
            raise UntrustedFileError(f"holds {info.st_size} bytes, more than the {max_bytes} allowed")
        os.set_blocking(fd, True)
        with os.fdopen(fd, "rb", closefd=False) as f:
            data = f.read(max_bytes + 1)
    except OSError as err:
        raise UntrustedFileError(f"cannot be read ({err.strerror or err})") from None
    finally:
        os.close(fd)
    if len(data) > max_bytes:
        raise UntrustedFileError(f"holds more than the {max_bytes} bytes allowed")
    return data


def parse_json(data: bytes | str, *, max_depth: int = MAX_JSON_DEPTH):
    """The JSON value of ``data``; :class:`UntrustedFileError` for text that is not UTF-8 JSON, nests deeper than
    ``max_depth`` or holds an integer longer than :data:`MAX_INT_DIGITS` digits."""
    try:
        text = data.decode("utf-8") if isinstance(data, bytes) else data
    except UnicodeDecodeError:
        raise UntrustedFileError("is not UTF-8 text") from None
    if _nests_deeper(text, max_depth):
        raise UntrustedFileError(f"nests arrays or objects more than {max_depth} levels deep")
    try:
        return json.loads(text, parse_int=_bounded_int)
    except _LongNumber as err:
        raise UntrustedFileError(f"holds a {err.args[0]}-digit number, longer than {MAX_INT_DIGITS} digits") from None
    except json.JSONDecodeError as err:
        raise UntrustedFileError(f"is not valid JSON (line {err.lineno}: {err.msg})") from None
    except (ValueError, RecursionError) as err:
        raise UntrustedFileError(f"is not valid JSON ({err})") from None


class _LongNumber(Exception):
    pass


def _bounded_int(text: str) -> int:
    digits = len(text.lstrip("-"))
    if digits > MAX_INT_DIGITS:
        raise _LongNumber(digits)
    return int(text)


_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)
_BRACKETS = re.compile(r"[\[\]{}]")


def _nests_deeper(text: str, max_depth: int) -> bool:
    """Whether JSON ``text`` nests arrays and objects deeper than ``max_depth`` (strings left out; stops at the first
    bracket too deep). Malformed text may give either answer; the parser then says what is wrong."""
    if text.count("[") + text.count("{") <= max_depth:
        return False
    depth = 0
    for match in _BRACKETS.finditer(_STRINGS.sub('""', text)):
        depth += 1 if match.group() in "[{" else -1
        if depth > max_depth:
            return True
    return False


def _inside(path: Path, folder: Path) -> Path:
    """``path`` resolved, refused when it (or the link it is) leads out of ``folder``."""
    try:
        root = folder.resolve()
        target = path.resolve()
    except (OSError, RuntimeError) as err:  # a link loop
        raise UntrustedFileError(f"cannot be resolved ({err})") from None
    if target != root and root not in target.parents:
        raise UntrustedFileError(f"leads out of {folder} (to {target}); only files inside it are read")
    return target


def _kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISDIR, "a folder"),
    ):
        if test(mode):
            return name
    return "a special file"

"""The CLI's one error boundary: every expected failure becomes one line on stderr and an exit status.

=====================================  ======  =====================================================
failure                                status  line
=====================================  ======  =====================================================
bad option or argument (usage)         2       ``error: hmrepro eval: Invalid value for '--backbone' …``
:class:`~hmrepro.errors.HmreproError`  1       its message (it names the file or value and the fix)
``OSError`` (permission, full disk …)  1       the path, what went wrong in words, the fix
``MemoryError``, CUDA out of memory    1       ``out of memory on the machine …``: settings to lower
Ctrl-C (``KeyboardInterrupt``)         130     ``interrupted``
SIGTERM                                143     ``terminated``
anything else (a bug)                  1       its type and message, and how to get the traceback
=====================================  ======  =====================================================

An error raised inside a DataLoader worker comes back from torch as the same type with the worker's
traceback as its message; it is unwrapped and reported as with ``--workers 0``. Tracebacks are printed only
with ``hmrepro --debug`` or ``HMREPRO_DEBUG=1``.

This module imports only the standard library at load time, so that the boundary stands before typer, rich
or torch are imported and a Ctrl-C in the first instants of a command is reported like any other.
"""

from __future__ import annotations

import errno
import io
import os
import re
import signal
import sys
import traceback
from collections.abc import Callable, Sequence

__all__ = ["Terminated", "describe_os_error", "enable_debug", "run", "unwrap_worker_error"]

_debug = False


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the main process is; a ``KeyboardInterrupt`` so that code that cleans up after a
    Ctrl-C (DataLoader workers, progress bars, ``finally`` blocks) cleans up after a SIGTERM too."""


def enable_debug() -> None:
    """Show tracebacks (``hmrepro --debug``)."""
    global _debug
    _debug = True


def debug_enabled() -> bool:
    return _debug or os.environ.get("HMREPRO_DEBUG", "").strip().lower() not in ("", "0", "false", "no", "off")


def _raise_terminated(signum, frame) -> None:
    raise Terminated()


def install_signal_handlers() -> None:
    """SIGTERM raises :class:`Terminated` (exit 143); SIGINT keeps Python's ``KeyboardInterrupt`` (exit 130).

    ``hmrepro train`` installs its own handlers while it trains (it checkpoints, then exits 128 + signal) and
    puts these back afterwards."""
    try:
        signal.signal(signal.SIGTERM, _raise_terminated)
    except ValueError:  # not the main thread (an embedding application): leave its signals alone
        pass


# --- DataLoader workers -----------------------------------------------------------------------------------

_WORKER = re.compile(
    r"^Caught (\w+) in DataLoader worker process \d+\.\nOriginal Traceback \(most recent call last\):\n"
)


def unwrap_worker_error(err: BaseException) -> str | None:
    """The original message of an exception torch re-raised from a DataLoader worker, else ``None``.

    torch re-raises ``X`` as ``X("Caught X in DataLoader worker process N.\\nOriginal Traceback …")``. After
    the frames of the last traceback (a chained exception prints its cause's traceback first) comes
    ``module.X: message`` (the message may span several lines)."""
    text = str(err.args[0]) if err.args and isinstance(err.args[0], str) else ""
    match = _WORKER.match(text)
    if not match:
        return None
    last = text[match.end() :].rsplit("\nTraceback (most recent call last):\n", 1)[-1]
    lines = last.rstrip("\n").split("\n")
    first = next((i for i, line in enumerate(lines) if line and not line.startswith(" ")), len(lines) - 1)
    head, _, message = "\n".join(lines[first:]).partition(": ")
    return message.strip() if message.strip() else head.strip()


# --- operating-system errors ------------------------------------------------------------------------------

_OS_WORDS = {
    errno.EACCES: ("permission denied", "choose a location you may write to (or read from), or change its permissions"),
    errno.EPERM: ("operation not permitted", "choose another location, or change its permissions"),
    errno.ENOENT: (
        "does not exist (or cannot be created there)",
        "check the path, or choose a folder you can write to",
    ),
    errno.EISDIR: ("is a folder where a file is needed", "give a file name (e.g. inside that folder)"),
    errno.ENOTDIR: (
        "has a file where a folder is needed (a part of the path is a regular file)",
        "choose another path, or move that file away",
    ),
    errno.EEXIST: ("exists already", "choose another name, or remove it first"),
    errno.ENOSPC: ("no space left on the device", "free some space, or choose a folder on another disk"),
    errno.EROFS: ("is on a read-only file system", "choose a folder on a writable disk"),
    errno.ENAMETOOLONG: ("name too long", "choose a shorter path"),
    errno.EDQUOT: ("disk quota exceeded", "free some space, or choose a folder on another disk"),
    errno.EMFILE: ("too many open files", "raise the limit (`ulimit -n`) or use fewer --workers"),
}


def describe_os_error(err: OSError) -> str:
    """One line: the path, what went wrong in words, the fix; e.g.
    ``/data/out.json: is a folder where a file is needed; give a file name (e.g. inside that folder)``."""
    code = err.errno or -1
    path = err.filename
    if code == errno.EEXIST and path is not None and os.path.exists(path) and not os.path.isdir(path):
        code = errno.ENOTDIR  # mkdir(parents=True) of a folder where a regular file is
    words = _OS_WORDS.get(code)
    where = f"{os.fsdecode(path)}" if path is not None else ""
    if err.filename2 is not None:
        where += f" → {os.fsdecode(err.filename2)}"
    if words is None:
        what = err.strerror or str(err)
        return f"{where}: {what}" if where else what
    what, fix = words
    blocker = _file_in_the_way(path) if code == errno.ENOTDIR and path is not None else None
    if blocker is not None:
        itself = blocker == os.path.abspath(os.fsdecode(path))
        what = f"{'' if itself else blocker + ' '}is a regular file, not a folder"
    return f"{where}: {what}; {fix}" if where else f"{what} ({err.strerror or err}); {fix}"


def _file_in_the_way(path) -> str | None:
    """The first part of ``path`` that is a regular file where a folder is needed, if any."""
    parts = os.path.abspath(os.fsdecode(path)).split(os.sep)
    for n in range(2, len(parts) + 1):
        prefix = os.sep.join(parts[:n])
        if os.path.isfile(prefix):
            return prefix
    return None


# --- the boundary -----------------------------------------------------------------------------------------


def _click_class(name: str) -> type:
    """click's exception class ``name`` (typer vendors click in recent versions, uses the package in older)."""
    import typer

    return next(cls for cls in typer.BadParameter.__mro__ if cls.__name__ == name)


def _usage_line(err) -> str:
    ctx = getattr(err, "ctx", None)
    where = f"{ctx.command_path}: " if ctx is not None else ""
    hint = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
    return f"{where}{err.format_message()}{hint}"


def _print_error(message: str, label: str = "error") -> None:
    """``error: message`` on one line (click, for one, lists choices on lines of their own)."""
    from ..safetext import safe_markup
    from .common import console

    message = " ".join(message.split())
    console.print(
        f"[bold red]{label}:[/] {safe_markup(message)}", highlight=False, soft_wrap=True, markup=True, emoji=False
    )


def _print_line(message: str) -> None:
    from ..safetext import safe_text
    from .common import console

    console.print(safe_text(message), highlight=False, soft_wrap=True, markup=False, emoji=False)


def _interrupted(err: KeyboardInterrupt) -> int:
    if isinstance(err, Terminated):
        _print_line("terminated (SIGTERM)")
        return 128 + signal.SIGTERM
    _print_line("interrupted")
    return 128 + signal.SIGINT


def _failure(err: BaseException) -> tuple[int, str]:
    """Exit status and line of an exception that reached the boundary."""
    from ..errors import HmreproError

    original = unwrap_worker_error(err)
    if isinstance(err, HmreproError):
        return 1, original if original is not None else str(err)
    if isinstance(err, StdoutFailed):
        return 1, err.strerror
    if isinstance(err, OSError):
        if original is not None:  # from a worker: only the text survives
            return 1, f"{original}; check the path and its permissions"
        return 1, describe_os_error(err)
    message = original if original is not None else str(err)
    if isinstance(err, MemoryError) or type(err).__name__ == "OutOfMemoryError":  # torch.cuda.OutOfMemoryError
        return 1, _out_of_memory(err, message)
    return 1, (
        f"internal error: {type(err).__name__}: {message} — a bug in hmrepro; "
        "run again with `hmrepro --debug …` and report the traceback"
    )


def _out_of_memory(err: BaseException, message: str) -> str:
    where = "the GPU" if type(err).__name__ == "OutOfMemoryError" else "the machine"
    first = message.strip().splitlines()[0][:200] if message.strip() else ""
    return (
        f"out of memory on {where}{f' ({first})' if first else ''}; use smaller settings (--batch-size, --workers, "
        "--resamples, --img-size), close other programs, or run on a machine with more memory"
    )


# --- the standard streams ----------------------------------------------------------------------------------

_CLOSED_STDOUT = (
    "standard output is closed, so nothing can be printed; run the command with its output going to a terminal, "
    "a file or a pipe (or write to a file with --output where the command has it)"
)


class StdoutFailed(OSError):
    """Standard output cannot be written: closed when hmrepro started (``hmrepro table 1 >&-``) or full
    (``> /dev/full``); ``strerror`` is the line to show."""


class _ClosedStdout(io.TextIOBase):
    """``sys.stdout`` when the process started without one: the first write fails, so a command whose output
    is lost says so and exits 1 instead of exiting 0 having printed nothing."""

    encoding = "utf-8"
    errors = "strict"

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        raise StdoutFailed(errno.EBADF, _CLOSED_STDOUT)

    def isatty(self) -> bool:
        return False


def prepare_streams() -> None:
    """Standard streams every command can write to: a character the output encoding lacks
    (``PYTHONIOENCODING=ascii``, a C locale) is written as an escape instead of failing, and a closed standard
    output fails the first write with one line (:class:`StdoutFailed`)."""
    if sys.stdout is None:
        sys.stdout = _ClosedStdout()
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None and getattr(stream, "errors", "") == "strict":
            try:
                reconfigure(errors="backslashreplace")
            except (ValueError, OSError):
                pass


def _flush_stdout() -> None:
    """Write out what is buffered for stdout now, inside the boundary (a full disk or a closed pipe at exit would
    otherwise be Python's "Exception ignored" and status 120)."""
    if sys.stdout is None or isinstance(sys.stdout, _ClosedStdout):
        return
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        raise
    except OSError as err:
        raise StdoutFailed(
            err.errno, f"cannot write to standard output ({err.strerror or err}); send it where there is room"
        ) from None


def run(args: Sequence[str] | None = None, app_factory: Callable | None = None, prog_name: str = "hmrepro") -> int:
    """Run the CLI on ``args`` (default ``sys.argv[1:]``) and return its exit status; nothing escapes but
    ``SystemExit`` from code that calls ``sys.exit`` itself."""
    global _debug
    _debug = False  # set again by --debug while the arguments are parsed
    if args is None:
        args = sys.argv[1:]
    try:
        if app_factory is None:
            from .app import build_app as app_factory
        import typer.main

        command = typer.main.get_command(app_factory())
        with command.make_context(prog_name, list(args)) as ctx:
            command.invoke(ctx)
        _flush_stdout()
        return 0
    except KeyboardInterrupt as err:
        _maybe_traceback(err)
        return _interrupted(err)
    except BrokenPipeError:  # `hmrepro episodes --json | head`: the reader left; nothing to say
        _silence_stdout()
        return 1
    except Exception as err:
        return _report(err)


def _report(err: Exception) -> int:
    if type(err).__name__ == "NoArgsIsHelpError":  # `hmrepro` or `hmrepro prepare` alone: the help was printed
        return 2
    if isinstance(err, _click_class("ClickException")):
        if isinstance(err, _click_class("UsageError")):
            _print_error(_usage_line(err))
        else:
            _print_error(err.format_message())
        return err.exit_code
    import typer

    if isinstance(err, typer.Exit):
        return err.exit_code
    if isinstance(err, typer.Abort):
        _print_line("aborted")
        return 1
    _maybe_traceback(err)
    code, line = _failure(err)
    _print_error(line)
    return code


def _maybe_traceback(err: BaseException) -> None:
    if debug_enabled():
        traceback.print_exception(type(err), err, err.__traceback__, file=sys.stderr)


def _silence_stdout() -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass

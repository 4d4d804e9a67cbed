"""Reading a small text file a user or a tool wrote (split lists, run files, registries), with one-line errors.

Every way the read can fail says which file, what is wrong with it in words, and the fix: a folder in its
place, a missing file, no permission, binary content, any other operating-system error.
"""

from __future__ import annotations

from pathlib import Path

from .errors import HmreproError

__all__ = ["read_text"]


def read_text(
    path: Path,
    what: str,
    fix: str,
    *,
    error: type[HmreproError] = HmreproError,
    missing: type[HmreproError] | None = None,
) -> str:
    """The UTF-8 text of ``path`` (a ``what``, e.g. "split list"); failures raise ``error`` (``missing`` for a
    file that does not exist) with ``fix`` said at the end, or a plain permission message."""
    path = Path(path)
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise (missing or error)(f"{what} {path} does not exist; {fix}") from None
    except IsADirectoryError:
        raise error(f"{what} {path} is a folder, not a file; {fix}") from None
    except PermissionError:
        raise error(f"cannot read {what} {path}: permission denied; make it readable (chmod a+r {path})") from None
    except UnicodeDecodeError:
        raise error(f"{what} {path} is not a text file; {fix}") from None
    except OSError as err:
        raise error(f"cannot read {what} {path}: {err.strerror or err}") from None

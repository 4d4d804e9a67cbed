"""HTTP(S) download of one file: resume with Range requests, retries with backoff, progress bar.

The file grows under ``<dest>.part``; an interrupted transfer is continued with ``Range: bytes=N-``
(a server that ignores Range and answers 200 is followed from the start, truncating the part file).
:func:`fetch_url` then verifies the size and checksums and renames the part file atomically.
"""

from __future__ import annotations

import http.client
import re
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .. import __version__
from .diskspace import ensure_free_space
from .download_errors import ChecksumError, DownloadError, PermanentHTTPError
from .retry import RetryPolicy
from .transfer_bars import byte_bar
from .verify import Expected, fetch_verified

USER_AGENT = f"hmrepro/{__version__} (+https://github.com; python-urllib)"
CHUNK = 1 << 20
_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)")


class TransientError(Exception):
    """A failure that a later attempt may not see (connection drop, 5xx, short body)."""


@dataclass(frozen=True)
class HttpOptions:
    """How a file is transferred: attempts and their backoff, seconds without data before a connection counts as
    broken, the progress bar (on ``console``; None: rich's own) and where a retry is told (``log``)."""

    retry: RetryPolicy = RetryPolicy()
    timeout: float = 60.0
    progress: bool = True
    console: object = None
    log: Callable[[str], None] | None = None


def part_path(dest: Path) -> Path:
    return dest.with_name(dest.name + ".part")


def _open(url: str, offset: int, timeout: float):
    headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    return urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)


def _total_from(resp, offset: int) -> int | None:
    """Full size of the remote file from Content-Range (206) or Content-Length (200)."""
    if resp.status == 206:
        m = _CONTENT_RANGE.match(resp.headers.get("Content-Range", ""))
        if m and m.group(3) != "*":
            return int(m.group(3))
    length = resp.headers.get("Content-Length")
    return offset + int(length) if length and length.isdigit() else None


def transfer_once(
    url: str, part: Path, options: HttpOptions = HttpOptions(), *, size: int | None = None, label: str | None = None
) -> None:
    """One HTTP request that appends to (or restarts) ``part``. Raises :class:`TransientError` on a short body."""
    offset = part.stat().st_size if part.exists() else 0
    if size is not None and offset > size:  # longer than the file: cannot be a prefix of it
        part.unlink()
        offset = 0
    if size is not None and offset == size:
        return  # complete already; verification decides
    try:
        resp = _open(url, offset, options.timeout)
    except urllib.error.HTTPError as err:
        if err.code == 416 and offset:  # nothing left to send: the part file is complete (or wrong; verify)
            return
        if err.code in (408, 425, 429) or err.code >= 500:
            raise TransientError(f"HTTP {err.code} {err.reason}") from None
        raise PermanentHTTPError(f"{url}: HTTP {err.code} {err.reason}") from None
    with resp:
        if resp.status == 206 and offset:
            m = _CONTENT_RANGE.match(resp.headers.get("Content-Range", ""))
            if not m or int(m.group(1)) != offset:
                part.unlink(missing_ok=True)  # a range we did not ask for: start over next time
                raise TransientError(f"server answered Range {offset}- with {resp.headers.get('Content-Range')!r}")
            mode = "ab"
        elif resp.status in (200, 206):
            offset, mode = 0, "wb"  # a server that ignores Range sends the whole file: restart
        else:
            raise TransientError(f"unexpected HTTP status {resp.status}")
        total = _total_from(resp, offset)
        if size is not None and total is not None and total != size:
            raise ChecksumError(f"{url} has {total} bytes, but {size} are expected: a different file")
        if total is not None:
            ensure_free_space(part.parent, total - offset, f"downloading {part.name[: -len('.part')]}")
        length = resp.headers.get("Content-Length")
        remaining = int(length) if length and length.isdigit() else None
        received = 0
        with (
            open(part, mode) as f,
            byte_bar(
                label or part.name[: -len(".part")],
                total,
                enabled=options.progress,
                console=options.console,
                completed=offset,
            ) as advance,
        ):
            while True:
                try:
                    # read1: what has arrived (up to CHUNK), so a stall loses no byte already received; every
                    # block is in the .part file before the next read, and a resume continues after it
                    block = resp.read1(CHUNK)
                except (TimeoutError, http.client.IncompleteRead, ConnectionError) as err:
                    partial = getattr(err, "partial", b"")
                    if partial:
                        f.write(partial)
                        received += len(partial)
                    raise TransientError(f"connection dropped after {offset + received} bytes ({err})") from None
                if not block:
                    break
                f.write(block)
                received += len(block)
                advance(len(block))
        if remaining is not None and received < remaining:
            raise TransientError(f"connection closed after {offset + received} of {offset + remaining} bytes")


def transfer(
    url: str, part: Path, options: HttpOptions = HttpOptions(), *, size: int | None = None, label: str | None = None
) -> None:
    """Bring ``part`` to the full remote file, resuming after every failure, ``options.retry.attempts`` times."""
    retry, log = options.retry, options.log
    part.parent.mkdir(parents=True, exist_ok=True)
    last = None
    for attempt in range(retry.attempts):
        try:
            transfer_once(url, part, options, size=size, label=label)
            return
        except (TimeoutError, TransientError, urllib.error.URLError, http.client.HTTPException, ConnectionError) as err:
            last = err
            if attempt + 1 < retry.attempts:
                if log:
                    log(
                        f"{url}: {err}; retrying in {retry.delay(attempt):.1f} s "
                        f"(attempt {attempt + 2} of {retry.attempts}, resuming)"
                    )
                retry.wait(attempt)
    raise DownloadError(f"{url}: gave up after {retry.attempts} attempts: {last}")


def fetch_url(
    url: str, dest: Path, expected: Expected = Expected(), options: HttpOptions = HttpOptions(), *, refetches: int = 1
) -> dict[str, str]:
    """Download ``url`` to ``dest`` (via ``dest.part``), verify it against ``expected``, rename atomically.

    A corrupt transfer (checksum mismatch) is deleted and fetched again ``refetches`` times before
    :class:`ChecksumError` is raised. Returns the digests of the file.
    """
    dest = Path(dest)

    def _transfer(part: Path) -> None:
        transfer(url, part, options, size=expected.size, label=dest.name)

    return fetch_verified(_transfer, part_path(dest), dest, expected, refetches=refetches, on_corrupt=options.log)

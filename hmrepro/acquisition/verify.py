"""Checksums and sizes: compute them in one pass, compare them with what is expected."""

from __future__ import annotations

import fnmatch
import hashlib
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

from ..errors import HmreproError
from .download_errors import ChecksumError

CHUNK = 1 << 20


@dataclass(frozen=True)
class Expected:
    """What a file must be. Every field is optional; an empty Expected accepts any file."""

    size: int | None = None
    md5: str | None = None
    sha256: str | None = None
    sha256_prefix: str | None = None
    expect_member: str | None = None
    zip: bool = False  # the file must be a zip archive

    def algorithms(self) -> tuple[str, ...]:
        algos = ["sha256"]  # always: it is what the lock records
        if self.md5:
            algos.append("md5")
        return tuple(algos)


def file_digests(path: Path, algorithms=("sha256",), progress=None) -> dict[str, str]:
    """Hex digests of ``path`` for each algorithm, in one read. ``progress(nbytes)`` is called per chunk."""
    hashers = {a: hashlib.new(a) for a in algorithms}
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            for h in hashers.values():
                h.update(block)
            if progress is not None:
                progress(len(block))
    return {a: h.hexdigest() for a, h in hashers.items()}


def size_problem(path: Path, expected: Expected) -> str | None:
    """A sentence saying how the size is wrong, or None."""
    if expected.size is None:
        return None
    actual = path.stat().st_size
    if actual == expected.size:
        return None
    state = "truncated" if actual < expected.size else "too long"
    return f"{path} is {state}: {actual} bytes, expected {expected.size}"


def digest_problems(digests: dict[str, str], expected: Expected, path: Path) -> list[str]:
    problems = []
    if expected.md5 and digests.get("md5") != expected.md5.lower():
        problems.append(f"{path} has md5 {digests.get('md5')}, expected {expected.md5}")
    sha = digests.get("sha256", "")
    if expected.sha256 and sha != expected.sha256.lower():
        problems.append(f"{path} has sha256 {sha}, expected {expected.sha256}")
    if expected.sha256_prefix and not sha.startswith(expected.sha256_prefix.lower()):
        problems.append(f"{path} has sha256 {sha}, expected one starting with {expected.sha256_prefix}")
    return problems


def member_problem(path: Path, pattern: str | None) -> str | None:
    """For a zip archive: None if some member matches ``pattern``. Other files are not inspected here."""
    if not pattern or not zipfile.is_zipfile(path):
        return None
    with zipfile.ZipFile(path) as zf:
        if any(fnmatch.fnmatch(n, pattern) for n in zf.namelist()):
            return None
    return f"{path} is a zip archive without any entry matching {pattern!r}: not the expected archive"


def zip_problem(path: Path, expected: Expected) -> str | None:
    """A problem if a zip is expected but the content is none (e.g. an HTML quota page from Google Drive)."""
    if not expected.zip or zipfile.is_zipfile(path):
        return None
    with open(path, "rb") as f:
        head = f.read(512).lower()
    hint = (
        " (it looks like an HTML page: the host refused the download)"
        if b"<html" in head or b"<!doctype" in head
        else ""
    )
    return f"{path} is not a zip archive{hint}"


def require_readable_file(path: Path) -> None:
    """A folder in place of the file, or a file this user cannot read, is no checksum problem: say what it is."""
    if path.is_dir():
        raise HmreproError(f"{path} is a folder, not a file; move it away (hmrepro puts the downloaded file there)")
    if path.exists() and not os.access(path, os.R_OK):
        raise HmreproError(
            f"cannot read {path}: permission denied; make it readable (chmod u+r {path}); the file itself may be fine"
        )


def verify_file(path: Path, expected: Expected, progress=None) -> dict[str, str]:
    """Check ``path`` against ``expected``; return its digests. Raises :class:`ChecksumError` naming the mismatch.

    The cheap checks (size, zip structure, expected member) run before the file is hashed.
    """
    path = Path(path)
    require_readable_file(path)
    for check in (
        size_problem(path, expected),
        zip_problem(path, expected),
        member_problem(path, expected.expect_member),
    ):
        if check:
            raise ChecksumError(check)
    digests = file_digests(path, expected.algorithms(), progress=progress)
    problems = digest_problems(digests, expected, path)
    if problems:
        raise ChecksumError("; ".join(problems))
    return digests


def deliver(tmp: Path, dest: Path, expected: Expected, progress=None) -> dict[str, str]:
    """Verify the finished temporary file ``tmp`` and atomically rename it to ``dest``; return its digests.

    On a mismatch ``tmp`` is deleted (a corrupt file is never kept, so it can never be extracted) and
    :class:`ChecksumError` is raised.
    """
    try:
        digests = verify_file(tmp, expected, progress=progress)
    except ChecksumError:
        Path(tmp).unlink(missing_ok=True)
        raise
    Path(tmp).replace(dest)
    return digests


def fetch_verified(
    transfer, tmp: Path, dest: Path, expected: Expected, *, refetches: int = 1, on_corrupt=None
) -> dict[str, str]:
    """Run ``transfer(tmp)`` until ``tmp`` verifies (at most ``1 + refetches`` complete transfers), then deliver it.

    ``on_corrupt(message)`` is told about every corrupt transfer that is fetched again.
    """
    for attempt in range(refetches + 1):
        transfer(tmp)
        try:
            return deliver(tmp, dest, expected)
        except ChecksumError as err:
            if attempt == refetches:
                raise
            if on_corrupt is not None:
                on_corrupt(f"{err}; fetching it again")
    raise AssertionError("unreachable")

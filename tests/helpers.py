"""Small helpers shared by the tests."""

import contextlib
import ctypes
import ctypes.util
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("HMREPRO_SHARED") or REPO.parent / "shared")
"""The authors' reference material (fixtures, split lists, papers); HMREPRO_SHARED points elsewhere."""
FIXTURES = Path(os.environ.get("HMREPRO_FIXTURES") or SHARED / "fixtures")
"""The authors' reference outputs that the parity tests compare with; HMREPRO_FIXTURES points elsewhere."""
REQUIRE_FIXTURES_ENV = "HMREPRO_REQUIRE_FIXTURES"
MISSING_REFERENCE = "reference material absent:"
"""How a skip for missing reference material starts; conftest.py counts these skips in the run's summary."""


def reference_path(path: Path) -> Path:
    """``path`` (a file or folder of the reference material) when it exists; otherwise the test fails when
    HMREPRO_REQUIRE_FIXTURES=1 (CI) and is skipped (and counted in the run's summary) when not."""
    if path.exists():
        return path
    path = _outermost_absent(path)
    if os.environ.get(REQUIRE_FIXTURES_ENV) == "1":
        pytest.fail(
            f"{path} not found and {REQUIRE_FIXTURES_ENV}=1: put the authors' reference material there "
            "(or point HMREPRO_SHARED / HMREPRO_FIXTURES at it)",
            pytrace=False,
        )
    pytest.skip(f"{MISSING_REFERENCE} {path}")


def _outermost_absent(path: Path) -> Path:
    """The first folder on the way to ``path`` that is absent (``path`` itself when only it is missing)."""
    return next(p for p in [*reversed(path.parents), path] if not p.exists())


def fixture_path(name: str) -> Path:
    """Path of a file in the fixtures folder (see reference_path for a missing one)."""
    return reference_path(FIXTURES / name)


def fixture_files(pattern: str) -> list[Path]:
    """The fixture files matching ``pattern``, sorted, for a parametrization; when none is there, one
    placeholder path (named by the pattern) so that the test runs and reference_path fails or skips it."""
    found = sorted(FIXTURES.glob(pattern)) if FIXTURES.is_dir() else []
    return found or [FIXTURES / pattern]


def fixture_id(path: Path) -> str:
    """A parametrization id: the fixture's stem, or ``fixtures-missing`` for fixture_files' placeholder."""
    return path.stem if path.exists() else "fixtures-missing"


# glibc's malloc settings that let a process reuse the memory it freed (see reuse_freed_memory)
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4
_NO_TRIM = 2**31 - 1
REUSE_FREED_MEMORY_ENV = {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": str(_NO_TRIM)}
"""The same settings for a subprocess (glibc reads them from the environment at start); no effect off glibc."""


@contextlib.contextmanager
def reuse_freed_memory(hand_back: bool = True):
    """Let glibc keep freed memory for reuse inside the block (its defaults restored afterwards).

    A VAT pass allocates and frees ~25 GB in blocks of up to 0.5 GB; by default glibc maps each block fresh and
    unmaps it when freed, so the kernel zero-fills every page again: ~25 % of the run in page faults. Serving
    them from the heap (no mmap) and not trimming it makes the memory reusable. Values are unchanged; only the
    allocator's bookkeeping differs. No effect off glibc. With ``hand_back=False`` the settings stay and nothing is
    trimmed when the block ends (for a next block that reuses the same pages).
    """
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt, malloc_trim = libc.mallopt, libc.malloc_trim
    except (OSError, AttributeError):
        yield
        return
    mallopt(_M_MMAP_MAX, 0)
    mallopt(_M_TRIM_THRESHOLD, _NO_TRIM)
    try:
        yield
    finally:
        if hand_back:
            mallopt(_M_MMAP_MAX, 65536)  # glibc's defaults
            mallopt(_M_TRIM_THRESHOLD, 128 * 1024)
            malloc_trim(0)

"""Small helpers shared by the tests."""

import contextlib
import ctypes
import ctypes.util
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
FIXTURES = SHARED / "fixtures"


def fixture_path(name: str) -> Path:
    """Path of a file in ../shared/fixtures; skips the test when the folder is absent."""
    path = FIXTURES / name
    if not path.exists():
        pytest.skip(f"{path} not available")
    return path


# glibc's malloc settings that let a process reuse the memory it freed (see reuse_freed_memory)
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4
_NO_TRIM = 2**31 - 1
REUSE_FREED_MEMORY_ENV = {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": str(_NO_TRIM)}
"""The same settings for a subprocess (glibc reads them from the environment at start); no effect off glibc."""


@contextlib.contextmanager
def reuse_freed_memory():
    """Let glibc keep freed memory for reuse inside the block (its defaults restored afterwards).

    A VAT pass allocates and frees ~25 GB in blocks of up to 0.5 GB; by default glibc maps each block fresh and
    unmaps it when freed, so the kernel zero-fills every page again: ~25 % of the run in page faults. Serving
    them from the heap (no mmap) and not trimming it makes the memory reusable. Values are unchanged; only the
    allocator's bookkeeping differs. No effect off glibc.
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
        mallopt(_M_MMAP_MAX, 65536)  # glibc's defaults
        mallopt(_M_TRIM_THRESHOLD, 128 * 1024)
        malloc_trim(0)

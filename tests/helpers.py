"""Small helpers shared by the tests."""

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

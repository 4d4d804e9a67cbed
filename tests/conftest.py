"""Fixtures shared by the test modules."""

from __future__ import annotations

import os

# OpenMP threads that spin while waiting make torch on a busy 2-core machine many times slower; let them sleep.
# Set before torch is first imported (test modules import it after this file).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The synthetic benchmark (seed 0), generated once per test session; treat it as read-only."""
    from hmrepro.data.synthetic import make_synthetic

    root = tmp_path_factory.mktemp("synthetic")
    make_synthetic(root, seed=0)
    return root

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


def _missing_reference(report: pytest.TestReport) -> str | None:
    """The absent path of a test skipped by helpers.reference_path, or None for any other skip."""
    from helpers import MISSING_REFERENCE

    longrepr = report.longrepr
    reason = longrepr[2] if isinstance(longrepr, tuple) and len(longrepr) == 3 else ""
    _, found, path = str(reason).partition(MISSING_REFERENCE)
    return path.strip() if found else None


@pytest.hookimpl(trylast=True)  # after the durations list, next to the final counts
def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """One line when parity tests were skipped for want of the reference material: how many, and where it was
    looked for."""
    from helpers import REQUIRE_FIXTURES_ENV

    missing = [_missing_reference(r) for r in terminalreporter.stats.get("skipped", [])]
    paths = sorted({p for p in missing if p})
    if paths:
        count = sum(p is not None for p in missing)
        terminalreporter.write_line(
            f"{count} parity tests skipped: {', '.join(paths)} not found "
            f"(set HMREPRO_SHARED / HMREPRO_FIXTURES; {REQUIRE_FIXTURES_ENV}=1 turns this into a failure)",
            yellow=True,
            bold=True,
        )

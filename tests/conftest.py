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


@pytest.fixture(scope="session", autouse=True)
def _cli_command_tree_built_once():
    """typer's ``CliRunner.invoke(app, ...)`` rebuilds the app's whole click command tree on every call (~0.05 s
    for hmrepro's, up to half of a short invoke); build it once per app, as a real process does. Each invoke still
    parses its arguments and runs its command in a fresh click context. ``hmrepro.cli.app.run`` (the entry point
    test_cli_errors.py calls) is untouched: it builds its app and tree on every call."""
    import typer.testing

    built: dict[int, tuple] = {}
    original = typer.testing._get_command

    def get_command_once(app):
        if id(app) not in built:
            built[id(app)] = (app, original(app))  # the app kept alive: its id is not reused
        return built[id(app)][1]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(typer.testing, "_get_command", get_command_once)
        yield


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

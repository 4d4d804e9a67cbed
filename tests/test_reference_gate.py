"""The gate on the authors' reference material (helpers.reference_path and conftest's summary line): a missing
fixtures folder fails the run under HMREPRO_REQUIRE_FIXTURES=1 (CI) and is a counted, explained skip otherwise.

Each case runs pytest in a subprocess on a one-test file that reads a fixture, with HMREPRO_FIXTURES pointing at
an absent folder and this suite's conftest.py loaded as a plugin (no torch import: a second or two each).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent

READS_A_FIXTURE = """
from helpers import fixture_files, fixture_id, fixture_path, reference_path
import pytest


def test_reads_a_fixture():
    assert fixture_path("metric_cases.pt").is_file()


@pytest.mark.parametrize("path", fixture_files("model_*_*.pt"), ids=fixture_id)
def test_reads_every_model_fixture(path):
    assert reference_path(path).is_file()
"""


def _run_against_missing_fixtures(
    tmp_path: Path, require: bool, *options: str
) -> tuple[subprocess.CompletedProcess, Path]:
    missing = tmp_path / "no-such-fixtures"
    (tmp_path / "test_reads_a_fixture.py").write_text(READS_A_FIXTURE)
    env = {k: v for k, v in os.environ.items() if k not in {"HMREPRO_REQUIRE_FIXTURES", "PYTEST_ADDOPTS"}}
    env |= {"HMREPRO_FIXTURES": str(missing), "PYTHONPATH": str(TESTS)}
    if require:
        env["HMREPRO_REQUIRE_FIXTURES"] = "1"
    command = [
        sys.executable,
        "-m",
        "pytest",
        "-p",
        "conftest",
        "-p",
        "no:cacheprovider",
        "-rfs",
        *options,
        str(tmp_path),
    ]
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    return result, missing


def test_missing_fixtures_fail_naming_the_folder_when_required(tmp_path):
    result, missing = _run_against_missing_fixtures(tmp_path, require=True)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "2 failed" in result.stdout, result.stdout
    assert f"{missing} not found and HMREPRO_REQUIRE_FIXTURES=1" in result.stdout, result.stdout
    assert "parity tests skipped" not in result.stdout


def test_missing_fixtures_skip_with_one_summary_line_otherwise(tmp_path):
    result, missing = _run_against_missing_fixtures(tmp_path, require=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 skipped" in result.stdout, result.stdout
    summary = [line for line in result.stdout.splitlines() if "parity tests skipped" in line]
    assert summary == [
        f"2 parity tests skipped: {missing} not found "
        "(set HMREPRO_SHARED / HMREPRO_FIXTURES; HMREPRO_REQUIRE_FIXTURES=1 turns this into a failure)"
    ], result.stdout


def test_the_summary_line_is_written_once_by_the_controller_under_xdist(tmp_path):
    result, missing = _run_against_missing_fixtures(tmp_path, False, "-n", "2")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 skipped" in result.stdout and "2 workers" in result.stdout, result.stdout
    summary = [line for line in result.stdout.splitlines() if "parity tests skipped" in line]
    assert summary == [
        f"2 parity tests skipped: {missing} not found "
        "(set HMREPRO_SHARED / HMREPRO_FIXTURES; HMREPRO_REQUIRE_FIXTURES=1 turns this into a failure)"
    ], result.stdout


@pytest.mark.parametrize("require", [False, True], ids=["optional", "required"])
def test_present_fixtures_neither_skip_nor_fail(tmp_path, require):
    fixtures = tmp_path / "fixtures"
    fixtures.mkdir()
    (fixtures / "metric_cases.pt").write_bytes(b"")
    (fixtures / "model_hsnet_resnet50.pt").write_bytes(b"")
    (tmp_path / "test_reads_a_fixture.py").write_text(READS_A_FIXTURE)
    env = {k: v for k, v in os.environ.items() if k != "PYTEST_ADDOPTS"}
    env |= {"HMREPRO_FIXTURES": str(fixtures), "PYTHONPATH": str(TESTS), "HMREPRO_REQUIRE_FIXTURES": str(int(require))}
    command = [sys.executable, "-m", "pytest", "-p", "conftest", "-p", "no:cacheprovider", str(tmp_path)]
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "2 passed" in result.stdout, result.stdout + result.stderr

import json
import subprocess
import sys

import pytest
from helpers import fixture_path
from typer.testing import CliRunner

from hmrepro.cli.app import app

runner = CliRunner()


def test_episodes_json_equals_fixture():
    expected = json.loads(fixture_path("episodes_hsnet_pascal_fold0_5shot.json").read_text())
    result = runner.invoke(app, ["episodes", "--benchmark", "pascal", "--fold", "0", "--shot", "5", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == expected


def test_episodes_asnet_protocol_json_equals_fixture():
    expected = json.loads(fixture_path("episodes_asnet_coco_fold0_1shot.json").read_text())
    result = runner.invoke(app, ["episodes", "-b", "coco", "--protocol", "asnet", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == expected


def test_episodes_table_view():
    result = runner.invoke(app, ["episodes", "-b", "fss", "-n", "2"])
    assert result.exit_code == 0, result.output
    assert "2400 episodes" in result.output and "abe's_flyingfish/1.jpg" in result.output


@pytest.mark.parametrize(
    "args,allowed",
    [
        (["--benchmark", "voc"], "pascal"),
        (["--benchmark", "pascal", "--fold", "4"], "3"),
        (["--benchmark", "pascal", "--shot", "0"], "1"),
        (["--benchmark", "pascal", "--protocol", "pfenet"], "hsnet"),
    ],
)
def test_bad_values_are_refused_with_allowed_values_and_exit_2(args, allowed):
    result = runner.invoke(app, ["episodes", *args])
    assert result.exit_code == 2
    assert allowed in result.output
    assert "Traceback" not in result.output


def test_asnet_fss_is_refused_with_exit_2():
    result = runner.invoke(app, ["episodes", "-b", "fss", "--protocol", "asnet"])
    assert result.exit_code == 2 and "FSS" in result.output


# a `python -m hmrepro` process: the fast tier runs the same case in-process (test_cli_errors.py) and
# `python -m hmrepro` itself in test_bounds_and_streams.py; every help screen's example: test_cli_errors.py
@pytest.mark.slow
def test_missing_splits_folder_is_an_error_not_a_traceback(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "hmrepro", "episodes", "-b", "pascal", "--splits", str(tmp_path / "none")],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 1
    assert "none" in proc.stderr and "Traceback" not in proc.stderr

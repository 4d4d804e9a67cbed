"""Issue 24, class 8 (bounds and environment): option values with a maximum, finite and ordered edges, override
keys checked when the sweep is planned, a recipe folder named by HMREPRO_RECIPES that must exist, and output to an
ASCII terminal, a closed stdout or a 20-column terminal handled."""

from __future__ import annotations

import io
import subprocess
import sys

import pytest
from engine_helpers import cli_env, hmrepro_cmd, run_cli_importing_none_of
from test_stats import episodes, improved, record

from hmrepro.cli import error_boundary as errors
from hmrepro.cli.app import run


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """Two paired records (A, B) with per-episode results."""
    tmp = tmp_path_factory.mktemp("pair")
    base = episodes(n=120)
    return record(tmp / "fm", "hsnet", base), record(tmp / "hm", "hsnet-hm", improved(base))


BAD_OPTIONS = {  # name: (arguments after the pair or alone, words the one error line holds)
    "resamples over the maximum": (["compare", "{a}", "{b}", "--resamples", str(10**9)], "1000000"),
    "analyze resamples over the maximum": (["analyze", "sizes", "{a}", "{b}", "--resamples", str(10**7)], "1000000"),
    "NaN edge": (["analyze", "sizes", "{a}", "{b}", "--edges", "nan,1"], "strictly increasing"),
    "infinite edge": (["analyze", "sizes", "{a}", "{b}", "--edges", "0,inf"], "strictly increasing"),
    "decreasing edges": (["analyze", "sizes", "{a}", "{b}", "--edges", "0.5,0.2,1"], "strictly increasing"),
    "repeated edge": (["analyze", "sizes", "{a}", "{b}", "--edges", "0,0.2,0.2,1"], "strictly increasing"),
}


@pytest.mark.parametrize("name", BAD_OPTIONS)
def test_bounds(name, pair, capsys):
    """Class 8: a value out of bounds is a usage error (status 2) naming the option, before any work."""
    args, words = BAD_OPTIONS[name]
    a, b = pair
    assert run([arg.format(a=a, b=b) for arg in args]) == 2
    err = capsys.readouterr().err
    assert words in err and "internal error" not in err


@pytest.mark.parametrize(
    "option, value, command",
    [("--train-override", "bogus=1", "train"), ("--eval-override", "nope=1", "eval")],
)
def test_bounds_override_keys_checked_at_plan_time(option, value, command, tmp_path, capsys):
    """Class 8: an override key the job's command does not take is refused by ``sweep plan``."""
    args = ["sweep", "plan", "table", "2", "--results", str(tmp_path), "--sweep-dir", str(tmp_path / "sweep")]
    assert run([*args, option, value]) == 2
    err = capsys.readouterr().err
    assert f"`hmrepro {command}` has no option '{value.split('=')[0]}'" in err and option in err


@pytest.mark.parametrize("folder", ["missing", "empty", "a file"])
def test_bounds_recipe_folder_named_must_hold_recipes(folder, tmp_path, monkeypatch, capsys):
    """Class 8: HMREPRO_RECIPES naming a missing, empty or non-folder path is an error, not the packaged recipes."""
    path = tmp_path / "recipes"
    if folder == "empty":
        path.mkdir()
    elif folder == "a file":
        path.write_text("x")
    monkeypatch.setenv("HMREPRO_RECIPES", str(path))
    assert run(["sweep", "plan", "table", "2", "--results", str(tmp_path), "--sweep-dir", str(tmp_path / "s")]) == 1
    err = capsys.readouterr().err
    assert f"HMREPRO_RECIPES={path}" in err and "internal error" not in err


def _hmrepro(*args, **env) -> subprocess.CompletedProcess:
    return subprocess.run(
        hmrepro_cmd(*args), capture_output=True, text=True, env={**cli_env(), **env}, timeout=120, errors="replace"
    )


@pytest.mark.slow
def test_streams_ascii_terminal_and_20_columns(pair):
    """Class 8 (end to end, real processes): an ASCII-only output encoding and a 20-column terminal still show
    every number of ``compare``."""
    a, b = pair
    ascii_out = _hmrepro("compare", a, b, "--resamples", "200", PYTHONIOENCODING="ascii", COLUMNS="200")
    assert ascii_out.returncode == 0, ascii_out.stderr
    narrow = _hmrepro("compare", a, b, "--resamples", "200", COLUMNS="20")
    assert narrow.returncode == 0, narrow.stderr
    for out in (ascii_out.stdout, narrow.stdout):
        assert "mIoU" in out and "FB-IoU" in out and "…" not in out
        assert sum(ch.isdigit() for ch in out) > 30  # the means, the difference, the interval and p
    assert "internal error" not in ascii_out.stderr + narrow.stderr


@pytest.mark.slow
def test_compare_reads_records_without_importing_torch(pair):
    """``compare`` needs the records' per-episode tables (NumPy) only: a process that never imports torch starts about
    2 s sooner."""
    a, b = pair
    result = run_cli_importing_none_of(["torch"], "compare", str(a), str(b), "--resamples", "200")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "mIoU" in result.stdout


@pytest.mark.slow
def test_streams_closed_stdout():
    """Class 8 (end to end, real processes): ``table`` with a closed stdout says so in one line and exits
    non-zero (it printed nothing)."""
    out = subprocess.run(hmrepro_cmd("table", "1"), stdout=subprocess.DEVNULL, env=cli_env(), timeout=120)
    assert out.returncode == 0  # the control: a stdout that takes the table
    closed = subprocess.run(
        ["bash", "-c", 'exec "$@" >&-', "bash", *hmrepro_cmd("table", "1")],
        stderr=subprocess.PIPE,
        text=True,
        env=cli_env(),
        timeout=120,
    )
    assert closed.returncode == 1
    assert "standard output is closed" in closed.stderr and "internal error" not in closed.stderr
    assert len(closed.stderr.strip().splitlines()) == 1


def _compare_output(pair, monkeypatch, stdout) -> str:
    a, b = pair
    monkeypatch.setattr(sys, "stdout", stdout)
    errors.prepare_streams()
    assert run(["compare", a, b, "--resamples", "200"]) == 0
    stdout.flush()
    return stdout.buffer.getvalue().decode(stdout.encoding)


def test_streams_in_process(pair, monkeypatch, capsys):
    """Class 8: an ASCII stdout (PYTHONIOENCODING=ascii) and a 20-column terminal show every number; a closed
    stdout is one line and status 1."""
    monkeypatch.setenv("COLUMNS", "200")
    ascii_text = _compare_output(pair, monkeypatch, io.TextIOWrapper(io.BytesIO(), encoding="ascii"))
    monkeypatch.setenv("COLUMNS", "20")
    narrow = _compare_output(pair, monkeypatch, io.TextIOWrapper(io.BytesIO(), encoding="utf-8"))
    for out in (ascii_text, narrow):
        assert "mIoU" in out and "FB-IoU" in out and "…" not in out
        assert sum(ch.isdigit() for ch in out) > 30
    monkeypatch.setattr(sys, "stdout", None)
    errors.prepare_streams()
    assert run(["table", "1", "--format", "markdown"]) == 1
    err = capsys.readouterr().err
    assert "standard output is closed" in err and len(err.strip().splitlines()) == 1

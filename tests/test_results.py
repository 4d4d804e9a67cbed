"""``hmrepro.results.load`` and ``hmrepro results``: every result record as one table."""

from __future__ import annotations

import io
import json

import pandas as pd
import pytest
from typer.testing import CliRunner

from hmrepro.cli.app import app
from hmrepro.engine.records import write_record
from hmrepro.results import COLUMNS, load

runner = CliRunner()


def record(**fields) -> dict:
    """A full-protocol PASCAL-5i record of HSNet-HM (ResNet-50, 1-shot) unless ``fields`` say otherwise."""
    base = dict(
        model="hsnet-hm",
        masking="hm",
        backbone="resnet50",
        benchmark="pascal",
        fold=0,
        shot=1,
        miou=64.0,
        fb_iou=77.0,
        episodes=1000,
        full_episode_set=True,
        total_episodes=1000,
        protocol="hsnet",
        img_size=400,
        original_size=False,
        checkpoint_sha256="ab" * 32,
        origin="own",
        git_commit="deadbeef",
        versions={"hmrepro": "0.1.0", "torch": "2.5.0"},
        device="cpu",
        device_name="x86_64",
        date="2024-01-01T00:00:00+00:00",
        secs_per_episode=0.1,
    )
    return base | fields


@pytest.fixture
def results_dir(tmp_path):
    folder = tmp_path / "results"
    write_record(record(), folder)
    write_record(record(fold=1, miou=70.0), folder)
    write_record(record(episodes=50, full_episode_set=False, miou=10.0), folder)  # a quick check: no cell
    write_record(record(model="hsnet", masking="fm", origin="external"), folder)
    return folder


def test_load_gives_one_row_per_record_with_every_column(results_dir):
    frame = load(results_dir)
    assert list(frame.columns) == list(COLUMNS) and len(frame) == 4
    own = frame[(frame["model"] == "hsnet-hm") & (frame["episodes"] == 1000)].sort_values("fold")
    assert own["fold"].tolist() == [0, 1] and own["miou"].tolist() == [64.0, 70.0]
    assert own["fills_cell"].all() and own["cells"].tolist() == ["Table 1 reproduced fold0", "Table 1 reproduced fold1"]
    quick = frame[frame["episodes"] == 50].iloc[0]
    assert not quick["fills_cell"] and "50 of 1000 episodes" in quick["why_not"]
    assert frame["hmrepro_version"].unique().tolist() == ["0.1.0"] and frame["precision"].unique().tolist() == ["fp32"]


def test_a_broken_record_is_named_not_loaded(results_dir):
    (results_dir / "broken.json").write_text('{"model": "hsnet-hm", "benchmark": ')
    frame = load(results_dir)
    assert len(frame) == 4 and any("broken.json" in line for line in frame.attrs["skipped_records"])


def test_cli_csv_filters_with_where(results_dir):
    result = runner.invoke(app, ["results", "--results", str(results_dir), "--format", "csv", "--where", "fills_cell"])
    assert result.exit_code == 0, result.output
    frame = pd.read_csv(io.StringIO(result.stdout))
    assert list(frame.columns) == list(COLUMNS) and len(frame) == 2
    result = runner.invoke(
        app, ["results", "--results", str(results_dir), "--format", "json", "--where", 'model == "hsnet"']
    )
    assert result.exit_code == 0, result.output
    assert [r["origin"] for r in json.loads(result.stdout)] == ["external"]


def test_nothing_to_show_is_one_line_not_an_empty_table(results_dir, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    result = runner.invoke(app, ["results", "--results", str(empty)])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == (
        f"no result records under {empty} (hmrepro eval writes them to --results, ./results by default)"
    )
    result = runner.invoke(app, ["results", "--results", str(results_dir), "--where", 'model == "none"'])
    assert result.exit_code == 0, result.output
    assert result.output.strip().endswith("satisfies --where 'model == \"none\"'")
    result = runner.invoke(app, ["results", "--results", str(empty), "--format", "csv"])
    assert result.stdout.splitlines() == [",".join(COLUMNS)]  # a file format stays a file: the header alone


def test_a_bad_where_is_one_line_not_a_traceback(results_dir):
    result = runner.invoke(app, ["results", "--results", str(results_dir), "--where", "model === ("])
    assert result.exit_code == 1
    assert "Traceback" not in result.output and "--where" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_parquet_round_trips(results_dir, tmp_path):
    pytest.importorskip("pyarrow", reason="pyarrow is not installed (pip install 'hmrepro[parquet]')")
    out = tmp_path / "records.parquet"
    result = runner.invoke(app, ["results", "--results", str(results_dir), "--format", "parquet", "-o", str(out)])
    assert result.exit_code == 0, result.output
    back = pd.read_parquet(out)
    pd.testing.assert_frame_equal(back, load(results_dir), check_dtype=False)


def test_parquet_needs_an_output_file(results_dir):
    result = runner.invoke(app, ["results", "--results", str(results_dir), "--format", "parquet"])
    assert result.exit_code == 1 and "-o" in result.output

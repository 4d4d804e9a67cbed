"""Table 7 runtime: `hmrepro bench` times FM and HM variants and writes bench records that Table 7 shows."""

from __future__ import annotations

import io
import json

import pandas as pd
import pytest
from typer.testing import CliRunner

from hmrepro.cli.app import app
from hmrepro.engine.records import RECORD_FIELDS

runner = CliRunner()


def test_bench_records_land_in_table_7(tmp_path):
    results = tmp_path / "results"
    args = ["bench", "--device", "cpu", "--img-size", "64", "--runs", "2", "--warmup", "1", "--results", str(results)]
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    records = json.loads(result.stdout)
    assert [r["model"] for r in records] == ["hsnet", "hsnet-hm"]
    assert [r["masking"] for r in records] == ["fm", "hm"]
    for r in records:
        assert set(RECORD_FIELDS) <= set(r)
        assert r["kind"] == "bench" and r["benchmark"] == "coco" and r["shot"] == 1 and r["img_size"] == 64
        assert r["secs_per_image"] > 0 and len(r["secs_runs"]) == 2 and r["device"] == "cpu"
    assert "HM overhead" in result.output
    assert len(list(results.glob("*.json"))) == 2

    table = runner.invoke(app, ["table", "7", "--format", "csv", "--results", str(results)])
    assert table.exit_code == 0, table.output
    frame = pd.read_csv(io.StringIO(table.stdout))
    measured = list(frame["measured_secs_per_image"])
    assert measured == pytest.approx([r["secs_per_image"] for r in records], abs=1e-4)  # the CSV keeps 4 decimals


def test_bad_choices_exit_2():
    for bad in (["--model", "pspnet"], ["--device", "tpu"], ["--runs", "0"], ["--img-size", "8"]):
        result = runner.invoke(app, ["bench", *bad])
        assert result.exit_code == 2, bad
        assert "Traceback" not in result.output

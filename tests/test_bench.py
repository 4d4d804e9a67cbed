"""Table 7 runtime: `hmrepro bench` times FM and HM variants and writes bench records that Table 7 shows."""

from __future__ import annotations

import io
import json
from pathlib import Path

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


# --- bench model / eval / train ----------------------------------------------------------------------------


def _json_record(args: list[str]) -> dict:
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    record = json.loads(Path(json.loads(result.stdout)["path"]).read_text())  # the record as written
    assert set(RECORD_FIELDS) <= set(record) and record["origin"] == "random" and record["device"] == "cpu"
    assert record["peak_memory_mib"] > 0 and record["peak_memory_method"]
    return record


@pytest.mark.slow  # times models through the CLI
def test_bench_model_times_any_model_and_breaks_the_episode_down(tmp_path):
    args = [
        "bench",
        "model",
        "-m",
        "hsnet-hm",
        "--shot",
        "2",
        "--img-size",
        "64",
        "--runs",
        "2",
        "--warmup",
        "0",
        "--device",
        "cpu",
        "--results",
        str(tmp_path),
    ]
    record = _json_record(args)
    assert record["kind"] == "bench-model" and record["shot"] == 2 and record["img_size"] == 64
    assert record["family"] == "hsnet" and record["masking"] == "hm" and len(record["secs_runs"]) == 2
    breakdown = record["breakdown"]
    stages = breakdown["stages"]
    assert set(stages) == {"query backbone", "support backbone", "correlation", "learner", "other"}
    # every piece of an HSNet episode was seen, and the pieces add up to the profiled episode
    assert all(stages[s] > 0 for s in ("query backbone", "support backbone", "correlation", "learner"))
    assert sum(stages.values()) == pytest.approx(breakdown["profiled_secs"], rel=0.02, abs=2e-3)
    assert breakdown["top_ops"] and all(op["op"].startswith("aten::") for op in breakdown["top_ops"])
    # the backbone's method is the model's own again after the profiled episode
    from hmrepro import create_model
    from hmrepro.engine.benchmarking.bench_model import _labelled_pieces

    model = create_model("hsnet", pretrained=False)
    with _labelled_pieces(model):
        assert "taps" in vars(model.backbone)
    assert "taps" not in vars(model.backbone) and not model.hpn_learner._forward_hooks


@pytest.mark.slow  # end-to-end: bench train and bench eval through the CLI
def test_bench_train_and_eval_write_their_records(tmp_path, synthetic_root):
    from engine_helpers import synthetic_args

    train = _json_record(
        [
            "bench",
            "train",
            "-m",
            "hsnet",
            "-b",
            "fss",
            "--bsz",
            "2",
            "--img-size",
            "64",
            "--iterations",
            "1",
            "--warmup",
            "0",
            "--device",
            "cpu",
            "--results",
            str(tmp_path),
        ]
    )
    assert train["kind"] == "bench-train" and train["bsz"] == 2 and train["recipe_bsz"] > 0 and train["optimizer"]
    assert train["iterations_per_sec"] == pytest.approx(1 / train["secs_per_iteration"])
    assert train["peak_memory_per_sample_mib"] == pytest.approx(train["peak_memory_increase_mib"] / 2, abs=0.1)

    evaluation = _json_record(
        [
            "bench",
            "eval",
            "-m",
            "hsnet",
            "-b",
            "fss",
            *synthetic_args(synthetic_root),
            "--episodes",
            "2",
            "--img-size",
            "64",
            "--device",
            "cpu",
            "--results",
            str(tmp_path),
        ]
    )
    assert evaluation["kind"] == "bench-eval" and evaluation["episodes"] == 2 and evaluation["miou"] is None
    assert evaluation["episodes_per_sec"] == pytest.approx(1 / evaluation["secs_per_episode"])
    assert evaluation["wall_secs"] >= 2 * evaluation["secs_per_episode"]
    # the whole call's peak is the larger of its two phases: building + the first batch, the batches after it
    phases = (evaluation["peak_memory_first_batch_mib"], evaluation["peak_memory_after_first_batch_mib"])
    assert evaluation["peak_memory_mib"] == pytest.approx(max(phases), abs=0.1)


def test_peak_memory_phases_are_apart():
    """A phase that touches 256 MiB and frees it, then one that touches 16 MiB: each phase has its own peak (the
    counter reset between them), the block's peak is the first's."""
    import sys

    import torch

    from hmrepro.engine.training.memory import PeakMemory

    if not sys.platform.startswith("linux"):
        pytest.skip("the resettable peak resident set is Linux's")
    with PeakMemory("cpu") as mem:
        big = torch.ones(64 * 2**20)  # 256 MiB, every page touched
        del big
        mem.next_phase()
        small = torch.ones(4 * 2**20)
        del small
    assert mem.method.startswith("peak resident")
    first, second = mem.phase_peaks_mib
    assert first - mem.base_mib > 200 and second - mem.base_mib < 100, (mem.base_mib, first, second)
    assert mem.peak_mib == first


def test_bench_subcommands_refuse_bad_values():
    for bad in (
        ["model", "-m", "pspnet"],
        ["model", "-m", "hsnet", "--shot", "0"],
        ["train", "-m", "hsnet", "--bsz", "0"],
        ["eval", "-m", "hsnet", "-b", "voc"],
    ):
        result = runner.invoke(app, ["bench", *bad])
        assert result.exit_code == 2, (bad, result.output)
        assert "Traceback" not in result.output

"""Evaluation: records with every field, written atomically and never overwritten; weights resolution; errors."""

from __future__ import annotations

import json
import subprocess

import pytest
from engine_helpers import cli_env, hmrepro_cmd, synthetic_args
from typer.testing import CliRunner

from hmrepro.cli.app import app
from hmrepro.data.splits import sha256_file
from hmrepro.engine.evaluation.evaluate import EvalConfig, evaluate
from hmrepro.engine.records import RECORD_FIELDS, read_records
from hmrepro.engine.runs import read_metrics
from hmrepro.errors import HmreproError

runner = CliRunner()


@pytest.fixture(scope="module")
def run(trained_hsnet_run):
    return trained_hsnet_run


@pytest.mark.slow  # the session's trained hsnet run (6 epochs)
def test_eval_cli_writes_one_complete_record_per_fold(run, synthetic_root, tmp_path):
    results = tmp_path / "results"
    args = ["eval", "hsnet", "-b", "fss", "--fold", "all", "--weights", str(run), *synthetic_args(synthetic_root)]
    result = runner.invoke(app, [*args, "--results", str(results), "--no-progress", "--json"])
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout)
    files = sorted(results.glob("*.json"))
    assert len(files) == 1 == len(printed)  # FSS-1000 has one fold
    record = json.loads(files[0].read_text())
    assert set(RECORD_FIELDS) <= set(record)
    assert record["origin"] == "own" and record["masking"] == "fm" and record["model"] == "hsnet"
    # the run the number belongs to (the tables' cells): constructor arguments and the run's training configuration
    assert record["model_arguments"] == {} and record["train_config"]["model"] == "hsnet"
    assert record["train_config"]["augment"] == json.loads((run / "config.json").read_text())["augment"]
    assert record["checkpoint_sha256"] == sha256_file(run / "best_model.pt")
    assert record["episodes"] == 40 and record["shot"] == 1 and record["protocol"] == "hsnet"
    assert record["img_size"] == 64  # the size the run trained at
    assert record["secs_per_episode"] > 0 and record["device"] == "cpu" and record["original_size"] is False
    assert record["miou"] == pytest.approx(printed[0]["miou"])
    assert not list(results.glob(".*"))  # no temporary files left behind

    # the same evaluation again: a second record, the first one untouched
    before = files[0].read_bytes()
    assert runner.invoke(app, [*args, "--results", str(results), "--no-progress"]).exit_code == 0
    assert len(list(results.glob("*.json"))) == 2 and files[0].read_bytes() == before
    assert len(list(read_records(results))) == 2


@pytest.mark.slow  # the session's trained hsnet run (6 epochs)
def test_trained_model_beats_random_weights_and_5_shot_runs(run, synthetic_root):
    common = dict(data_root=synthetic_root, splits=synthetic_root / "splits", results_dir=None, device="cpu")
    trained = evaluate(EvalConfig("hsnet", "fss", 0, 1, weights=str(run), **common))[0]
    best_val = max(r["val_miou"] for r in read_metrics(run))
    assert trained["miou"] > 20 and best_val > 20
    rand = evaluate(
        EvalConfig("hsnet", "fss", 0, 1, weights="random", pretrained=False, img_size=64, episodes=8, **common)
    )[0]
    assert rand["origin"] == "random" and rand["checkpoint_sha256"] is None and rand["episodes"] == 8
    five = evaluate(EvalConfig("hsnet", "fss", 0, 5, weights=str(run / "best_model.pt"), episodes=8, **common))[0]
    assert five["shot"] == 5 and five["episodes"] == 8 and five["origin"] == "own"


@pytest.mark.slow  # the session's trained hsnet run (6 epochs)
def test_original_size_evaluation_scores_unresized_masks(run, synthetic_root):
    common = dict(data_root=synthetic_root, splits=synthetic_root / "splits", results_dir=None)
    record = evaluate(
        EvalConfig(
            "hsnet", "pascal", 0, 1, weights=str(run), device="cpu", episodes=6, original_size=True, bsz=4, **common
        )
    )[0]  # original size on PASCAL/COCO only, as the authors
    assert record["original_size"] is True and record["bsz"] == 1 and record["episodes"] == 6
    with pytest.raises(HmreproError, match="original-size is not possible on fss"):
        evaluate(EvalConfig("hsnet", "fss", 0, 1, weights=str(run), original_size=True, **common))


@pytest.mark.slow  # the session's trained hsnet run (6 epochs)
def test_weights_errors_are_clear(run, synthetic_root, tmp_path):
    common = dict(data_root=synthetic_root, splits=synthetic_root / "splits", results_dir=None)
    with pytest.raises(HmreproError, match="neither"):
        evaluate(EvalConfig("hsnet", "fss", 0, 1, weights=str(tmp_path / "nothing.pt"), **common))
    with pytest.raises(HmreproError, match="{fold}"):
        evaluate(EvalConfig("hsnet", "pascal", "all", 1, weights=str(run), **common))
    # official weights that were never fetched: an error naming what to do (from hmrepro.acquisition)
    with pytest.raises(HmreproError):
        evaluate(EvalConfig("hsnet", "fss", 0, 1, weights="official", **{**common, "data_root": tmp_path}))


@pytest.mark.slow  # the session's trained hsnet run (6 epochs)
def test_run_of_another_fold_is_refused(run, synthetic_root, tmp_path):
    config = json.loads((run / "config.json").read_text())
    other = tmp_path / "pascal_fold1"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({**config, "benchmark": "pascal", "fold": 1}))
    (other / "best_model.pt").symlink_to(run / "best_model.pt")
    with pytest.raises(HmreproError, match="fold 1"):
        evaluate(
            EvalConfig(
                "hsnet",
                "pascal",
                0,
                1,
                weights=str(other),
                data_root=synthetic_root,
                splits=synthetic_root / "splits",
                results_dir=None,
            )
        )


@pytest.mark.parametrize(
    "args",
    [
        ["--benchmark", "voc"],
        ["--benchmark", "pascal", "--fold", "5"],
        ["--benchmark", "pascal", "--shot", "0"],
        ["--benchmark", "pascal", "--weights", "random", "--bsz", "0"],
        ["no-such-model", "--benchmark", "pascal"],
    ],
)
def test_bad_eval_choices_exit_2(args):
    full = ["eval", *(args if args[0] == "no-such-model" else ["hsnet-hm", *args])]
    if "--weights" not in args:
        full += ["--weights", "random"]
    result = runner.invoke(app, full)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output


@pytest.mark.slow  # end-to-end: several hmrepro eval subprocesses
def test_user_errors_are_one_line_not_a_traceback():
    proc = subprocess.run(
        hmrepro_cmd("eval", "hsnet-hm", "-b", "pascal", "--fold", "all", "--weights", "nowhere"),
        capture_output=True,
        text=True,
        env=cli_env(),
        timeout=300,
    )
    assert proc.returncode == 1 and "{fold}" in proc.stderr and "Traceback" not in proc.stderr


def test_fold_plan_takes_the_checkpoints_training_size_and_says_so(tmp_path):
    """A fold runs at --img-size when given, else at the size its checkpoint trained at (logged with both sizes and
    the checkpoint), else at the recipe's."""
    from pathlib import Path

    from hmrepro.engine.evaluation.evaluate import WeightsSource, fold_plan
    from hmrepro.models.cards import EvalPlan

    plan = EvalPlan(protocol="hsnet", preprocess="hsnet", img_size=400)
    checkpoint = WeightsSource(path=Path(tmp_path, "best_model.pt"), origin="own", trained_img_size=96)
    lines: list[str] = []
    assert fold_plan(plan, checkpoint, None, lines.append).img_size == 96
    assert lines == [f"image size 96, the checkpoint's training size (the recipe's is 400): {checkpoint.path}"]
    lines.clear()
    assert fold_plan(plan, checkpoint, 200, lines.append).img_size == 200  # asked for: no note
    assert fold_plan(plan, WeightsSource(path=None, origin="random"), None, lines.append).img_size == 400
    assert lines == []

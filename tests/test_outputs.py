"""Output locations are checked before the work starts, and computed numbers are never lost to a failed save."""

from __future__ import annotations

import errno
import json

import pytest
from engine_helpers import synthetic_args

from hmrepro.cli.app import run
from hmrepro.engine import records


def _hmrepro(args: list[str], capsys) -> tuple[int, str]:
    """``hmrepro ARGS`` in this process, through the CLI's error boundary: exit status and everything printed."""
    code = run(args)
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def _eval_args(root, results) -> list[str]:
    return [
        "eval",
        "hsnet",
        "-b",
        "fss",
        "--weights",
        "random",
        "--no-pretrained",
        "--img-size",
        "64",
        "--episodes",
        "2",
        "--device",
        "cpu",
        "--no-progress",
        *synthetic_args(root),
        "--results",
        str(results),
    ]


def test_eval_into_a_results_path_under_a_file_fails_before_evaluating(synthetic_root, tmp_path, monkeypatch, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    started = []
    monkeypatch.setattr("hmrepro.engine.evaluation.evaluate.load_model", lambda *a, **k: started.append(1))
    code, output = _hmrepro(_eval_args(synthetic_root, blocker / "results"), capsys)
    assert code == 1, output
    assert not started, "no model was loaded: the check comes first"
    assert "--results" in output and "a-file" in output
    assert "Traceback" not in output


def test_eval_whose_results_folder_breaks_during_the_run_still_prints_its_numbers(
    synthetic_root, tmp_path, monkeypatch, capsys
):
    def refuse(record, results_dir):
        raise PermissionError(errno.EACCES, "Permission denied", str(results_dir))

    monkeypatch.setattr(records, "write_record", refuse)
    code, output = _hmrepro(_eval_args(synthetic_root, tmp_path / "results"), capsys)
    assert code == 1, output
    numbers, error = output.split("could not write a record")
    assert "mIoU" in numbers  # the table of numbers came first
    assert "were not saved" in error and "Traceback" not in output


def test_bench_into_an_unwritable_results_path_fails_before_timing(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    code, output = _hmrepro(
        ["bench", "--device", "cpu", "--img-size", "64", "--runs", "1", "--results", str(blocker)], capsys
    )
    assert code == 1, output
    assert "a file stands where the folder should be" in output


@pytest.mark.parametrize("make", ["file", "under-file"])
def test_ensure_writable_dir_names_the_path_and_the_fix(tmp_path, make):
    from hmrepro.errors import HmreproError

    blocker = tmp_path / "x"
    blocker.write_text("")
    target = blocker if make == "file" else blocker / "sub"
    with pytest.raises(HmreproError, match="--results"):
        records.ensure_writable_dir(target)
    assert records.ensure_writable_dir(tmp_path / "new" / "deep").is_dir()


def test_viz_episodes_weights_without_a_model_is_a_usage_error(tmp_path, capsys):
    code, output = _hmrepro(["viz", "episodes", "-b", "fss", "--weights", str(tmp_path / "w.pt")], capsys)
    assert code == 2 and "--weights needs --model" in output and "Traceback" not in output


def test_plot_training_profile_warns_about_a_torn_last_metrics_line(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    rows = [{"epoch": e, "val_miou": 10.0 + e, "train_loss": 1.0 - 0.1 * e} for e in range(3)]
    text = "".join(json.dumps(r) + "\n" for r in rows)
    (run / "metrics.jsonl").write_text(text + '{"epoch": 3, "val_mi')  # killed while writing
    code, output = _hmrepro(["plot", "training-profile", str(run), "-o", str(tmp_path / "curve.png")], capsys)
    assert code == 0, output
    assert "warning" in output and "metrics.jsonl" in output and (tmp_path / "curve.png").is_file()

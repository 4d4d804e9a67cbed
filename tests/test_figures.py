"""`hmrepro plot training-profile`: a PNG of val mIoU per epoch with the best epoch marked."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from hmrepro.cli.app import app
from hmrepro.reporting.figures import read_training_profile

runner = CliRunner()


def _run(folder, model, curve):
    folder.mkdir()
    (folder / "config.json").write_text(
        json.dumps({"model": model, "backbone": "resnet50", "benchmark": "coco", "fold": 0})
    )
    rows = [{"epoch": e, "val_miou": v, "val_fb_iou": v + 20, "train_loss": 1.0 / (e + 1)} for e, v in enumerate(curve)]
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


def test_training_profile_png(tmp_path):
    a = _run(tmp_path / "a", "hsnet", [10.0, 20.0, 31.0, 30.0, 31.0])
    b = _run(tmp_path / "b", "hsnet-hm", [12.0, 25.0, 33.0, 35.0, 34.0])
    profile = read_training_profile(a)
    assert profile.best_epoch == 2 and profile.best_value == 31.0  # the first epoch reaching the best
    assert profile.label == "hsnet resnet50 coco fold 0"
    out = tmp_path / "fig" / "profile.png"
    result = runner.invoke(app, ["plot", "training-profile", str(a), str(b), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 10_000


def test_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    result = runner.invoke(app, ["plot", "training-profile", str(tmp_path / "empty")])
    assert result.exit_code == 1 and "metrics.jsonl" in str(result.exception)
    result = runner.invoke(app, ["plot", "training-profile", str(tmp_path), "--metric", "accuracy"])
    assert result.exit_code == 2


def test_episodes_png_with_a_prediction(synthetic_root, tmp_path):
    out = tmp_path / "episodes.png"
    args = [
        "viz",
        "episodes",
        "-b",
        "pascal",
        "--fold",
        "1",
        "--shot",
        "2",
        "-n",
        "2",
        "--model",
        "hsnet-hm",
        "--no-pretrained",
        "--img-size",
        "48",
        "--data-root",
        str(synthetic_root),
        "--splits",
        str(synthetic_root / "splits"),
        "-o",
        str(out),
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert runner.invoke(app, ["viz", "episodes", "-b", "pascal", "--model", "nonet"]).exit_code == 2

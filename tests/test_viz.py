"""`hmrepro viz`: FM/IM/HM support features of one backbone tap (HM Fig. 5).

And `viz episodes`, the one episodes figure command."""

from __future__ import annotations

from PIL import Image
from typer.testing import CliRunner

from hmrepro.cli.app import app
from hmrepro.errors import HmreproError

runner = CliRunner()


def _args(root, out, layer):
    return [
        "viz",
        "features",
        "-b",
        "pascal",
        "--layer",
        str(layer),
        "--no-pretrained",
        "--img-size",
        "64",
        "--data-root",
        str(root),
        "--splits",
        str(root / "splits"),
        "-o",
        str(out),
    ]


def test_features_png(synthetic_root, tmp_path):
    out = tmp_path / "fig" / "features.png"
    result = runner.invoke(app, _args(synthetic_root, out, 0))
    assert result.exit_code == 0, result.output
    with Image.open(out) as img:
        assert img.format == "PNG"
        width, height = img.size
    assert 600 <= width <= 3000 and 150 <= height <= 1000 and width > 2 * height  # four panels side by side


def test_bad_layer_names_the_range(synthetic_root, tmp_path):
    result = runner.invoke(app, _args(synthetic_root, tmp_path / "x.png", 13))  # resnet50 has taps 0..12
    assert result.exit_code == 1 and isinstance(result.exception, HmreproError)
    assert "0..12" in str(result.exception)
    assert not (tmp_path / "x.png").exists()
    assert runner.invoke(app, _args(synthetic_root, tmp_path / "x.png", -1)).exit_code == 2  # usage error


def test_viz_episodes_is_plot_episodes():
    result = runner.invoke(app, ["viz", "episodes", "--help"])
    assert result.exit_code == 0 and "Example" in result.output and "--model" in result.output
    result = runner.invoke(app, ["viz", "features", "--help"])
    assert result.exit_code == 0 and "Example" in result.output and "--layer" in result.output

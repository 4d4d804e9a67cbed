"""What the CLI prints from paths, engine log lines and files is shown as text: a ``[`` in a folder name is a ``[``,
never rich markup (``[/x]`` once ended the quickstart in "internal error: MarkupError"), and a long line is not
broken in a log file or a pipe."""

from __future__ import annotations

import shlex

import pytest
from typer.testing import CliRunner

from hmrepro.cli.app import app

MARKUP_LIKE = "runs [/x] [bold]y [link=https://example.org]z[/link] :fire:"
"""A folder name that is valid on disk and that rich would parse: a closing tag with no opening one (an error), a
style, a link, an emoji code."""


def _printed(capsys) -> str:
    captured = capsys.readouterr()
    return captured.out + captured.err


def test_say_and_the_progress_log_print_plain_text_on_one_line(capsys):
    from hmrepro.cli.common import say
    from hmrepro.cli.rich_progress import RichProgress

    long_path = "/data/" + "/".join(["folder"] * 30) + f"/{MARKUP_LIKE}/best_model.pt"
    say(f"wrote {long_path}")
    with RichProgress(enabled=False, log_prefix="    ") as progress:
        progress.log(f"image size 64: {long_path}\x1b[2J")
    lines = _printed(capsys).splitlines()
    assert lines == [f"wrote {long_path}", f"    image size 64: {long_path}\\x1b[2J"]


def test_records_saved_under_a_markup_like_folder_are_named_as_they_are(capsys):
    import typer

    from hmrepro.cli.common import report_saved

    path = f"/results/{MARKUP_LIKE}/eval.json"
    report_saved([{"path": path}], no_record=False)
    assert _printed(capsys).strip() == f"records: {path}"
    with pytest.raises(typer.Exit):
        report_saved([{"save_error": f"cannot write {path}: disk full"}], no_record=False)
    assert f"cannot write {path}: disk full; the numbers above were not saved" in _printed(capsys)


def test_prepare_synthetic_into_a_markup_like_folder(tmp_path):
    root = tmp_path / MARKUP_LIKE
    result = CliRunner().invoke(app, ["prepare", "synthetic", "--data-root", str(root)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert f"synthetic benchmark ready in {root}" in result.output
    assert f"--splits {shlex.quote(str(root / 'splits'))}" in result.output  # a command that pastes as printed
    assert (root / "splits").is_dir()


def test_train_names_a_markup_like_run_folder_and_suggests_a_command_that_pastes(synthetic_root, tmp_path):
    out = tmp_path / MARKUP_LIKE / "run"
    args = ["train", "hsnet", "--benchmark", "fss", "--no-pretrained", "--img-size", "32", "--epochs", "1"]
    args += ["--bsz", "2", "--epoch-iterations", "1", "--device", "cpu", "--no-progress", "--out", str(out)]
    args += ["--data-root", str(synthetic_root), "--splits", str(synthetic_root / "splits")]
    result = CliRunner().invoke(app, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert f"done: run folder {out}" in result.output
    assert f"evaluate: hmrepro eval hsnet -b fss --fold 0 --weights {shlex.quote(str(out))}" in result.output

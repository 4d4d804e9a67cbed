"""The CLI's error boundary: every bad input, file-system failure and interruption is one line and an exit status.

The cases run the real entry point in this process (:func:`hmrepro.cli.app.run`, what ``main()`` runs) and read
stderr; the signal cases run ``python -m hmrepro`` in a subprocess. Each case is named after what it proves.
"""

from __future__ import annotations

import errno
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from hmrepro.cli.app import build_app, run
from hmrepro.cli.error_boundary import Terminated, unwrap_worker_error
from hmrepro.errors import CorruptFileError, HmreproError

NOWHERE = "/nonexistent/hmrepro-test"


def one_error_line(capsys, code: int, expected_code: int, *fragments: str, only_line: bool = True) -> str:
    """Assert the exit status, exactly one ``error:`` line (and with ``only_line`` nothing else on stderr), no
    traceback, and that the line names every fragment; return the line."""
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    assert code == expected_code, err
    lines = [line for line in err.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1, err
    if only_line:
        assert lines == errors, err
    for fragment in fragments:
        assert fragment in errors[0], errors[0]
    return errors[0]


@pytest.fixture
def a_file(tmp_path: Path) -> Path:
    """A regular file: a path under it can be neither a folder nor a file (NotADirectoryError, even for root)."""
    path = tmp_path / "a-file"
    path.write_text("x")
    return path


# --- usage errors: exit 2, the allowed values listed ---------------------------------------------------------

EVAL = ["eval", "hsnet", "-b", "pascal", "-w", "random"]
USAGE_CASES = {
    "eval_refuses_an_unknown_backbone": ([*EVAL, "--backbone", "foo"], ["'foo'", "resnet50", "vgg16"]),
    "eval_refuses_an_unknown_device": ([*EVAL, "--device", "foo"], ["'foo'", "cpu", "cuda:N"]),
    "eval_refuses_an_unknown_benchmark": (["eval", "hsnet", "-b", "voc", "-w", "random"], ["'voc'", "pascal"]),
    "eval_refuses_fold_7": ([*EVAL, "--fold", "7"], ["'7'", "all"]),
    "eval_refuses_shot_0": ([*EVAL, "--shot", "0"], ["--shot"]),
    "eval_refuses_an_unknown_model": (["eval", "pspnet", "-b", "pascal", "-w", "random"], ["'pspnet'", "hsnet-hm"]),
    "train_refuses_an_unknown_backbone": (["train", "hsnet", "-b", "pascal", "--backbone", "foo"], ["resnet101"]),
    "train_refuses_an_unknown_device": (["train", "hsnet", "-b", "pascal", "--device", "gpu"], ["'gpu'", "cuda"]),
    "train_refuses_a_negative_fold": (["train", "hsnet", "-b", "pascal", "--fold", "-1"], ["--fold"]),
    "bench_refuses_an_unknown_backbone": (["bench", "--backbone", "resnet18"], ["'resnet18'", "resnet50"]),
    "bench_refuses_an_unknown_device": (["bench", "--device", "tpu"], ["'tpu'", "cpu"]),
    "bench_refuses_an_unknown_model": (["bench", "--model", "unet"], ["'unet'", "hsnet"]),
    "domain_shift_refuses_an_unknown_backbone": (
        ["domain-shift", "hsnet", "-w", "random", "--backbone", "x"],
        ["vgg16"],
    ),
    "domain_shift_refuses_an_unknown_device": (["domain-shift", "hsnet", "-w", "random", "--device", "x"], ["cuda:N"]),
    "viz_episodes_refuses_an_unknown_backbone": (["viz", "episodes", "-b", "pascal", "--backbone", "x"], ["resnet50"]),
    "viz_episodes_refuses_an_unknown_device": (["viz", "episodes", "-b", "pascal", "--device", "x"], ["cpu"]),
    "viz_episodes_refuses_an_unsupported_figure_format": (
        ["viz", "episodes", "-b", "pascal", "-o", "x.xyz"],
        [".xyz", ".png", ".svg"],
    ),
    "viz_features_refuses_an_unsupported_figure_format": (
        ["viz", "features", "-b", "pascal", "-o", "x.jpg"],
        [".jpg", ".pdf"],
    ),
    "viz_features_refuses_an_unknown_backbone": (["viz", "features", "-b", "pascal", "--backbone", "x"], ["resnet50"]),
    "plot_training_profile_refuses_an_unsupported_figure_format": (
        ["plot", "training-profile", "r", "-o", "f"],
        ["no suffix", ".png"],
    ),
    "plot_episodes_is_gone_viz_episodes_is_the_one": (["plot", "episodes", "-b", "pascal"], ["'episodes'"]),
    "episodes_refuses_fold_4": (["episodes", "-b", "pascal", "--fold", "4"], ["--fold"]),
    "episodes_refuses_shot_11": (["episodes", "-b", "pascal", "--shot", "11"], ["--shot"]),
    "episodes_needs_a_benchmark": (["episodes"], ["--benchmark"]),
    "table_refuses_table_9": (["table", "9"], ["no table 9", "1, 2, 3"]),
    "table_refuses_an_unknown_format": (["table", "1", "--format", "html"], ["'html'", "markdown"]),
    "quickstart_refuses_zero_epochs": (["quickstart", "--epochs", "0"], ["--epochs"]),
    "an_unknown_command_is_named": (["evaluate"], ["'evaluate'"]),
    "an_unknown_option_is_named": (["episodes", "-b", "pascal", "--folds", "1"], ["--folds"]),
    "prepare_refuses_an_unknown_benchmark": (["prepare", "voc"], ["'voc'"]),
    "download_refuses_an_unknown_benchmark": (["download", "voc"], ["'voc'"]),
}


@pytest.mark.parametrize("args, fragments", list(USAGE_CASES.values()), ids=list(USAGE_CASES))
def test_usage_error_is_one_line_with_exit_2(args, fragments, capsys):
    line = one_error_line(capsys, run(args), 2, *fragments)
    assert "--help" in line  # where to look for the allowed values


def test_bad_values_are_refused_without_importing_torch():
    """Argument errors answer at once: the parse never imports torch (nor pandas, matplotlib)."""
    code = (
        "import sys; from hmrepro.cli.app import run; "
        "codes = [run(a) for a in (['eval', 'hsnet', '-b', 'pascal', '-w', 'random', '--backbone', 'x'], "
        "['table', '9'], ['viz', 'features', '-b', 'pascal', '-o', 'x.xyz'], ['--version'], ['--help'])]; "
        "assert codes == [2, 2, 2, 0, 0], codes; "
        "heavy = [m for m in ('torch', 'torchvision', 'numpy', 'pandas', 'matplotlib', 'cv2', 'PIL') if m in "
        "sys.modules]; "
        "assert not heavy, heavy"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


def test_importing_the_cli_and_building_every_command_imports_no_heavy_library():
    code = (
        "import sys; import hmrepro, hmrepro.cli.app as a; assert 'typer' not in sys.modules; a.build_app(); "
        "heavy = [m for m in ('torch', 'torchvision', 'numpy', 'pandas', 'matplotlib', 'cv2', 'PIL') if m in "
        "sys.modules]; "
        "assert not heavy, heavy"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


# --- files and folders: exit 1, the path named -----------------------------------------------------------


def test_episodes_with_a_missing_splits_folder_names_it(capsys):
    one_error_line(capsys, run(["episodes", "-b", "pascal", "--splits", NOWHERE]), 1, NOWHERE)


def test_eval_on_a_backbone_the_family_lacks_names_it_and_the_choices(capsys):
    args = ["eval", "asnet", "-b", "pascal", "-w", "random", "--backbone", "vgg16", "--no-pretrained", "--no-record"]
    line = one_error_line(capsys, run(args), 1, "asnet", "'vgg16'", "resnet50, resnet101", only_line=False)
    assert "bug" not in line


def test_table_output_under_a_regular_file_names_the_file(a_file, capsys):
    code = run(["table", "1", "--format", "csv", "-o", str(a_file / "t.csv")])
    one_error_line(capsys, code, 1, f"{a_file}: is a regular file, not a folder")


def test_a_path_under_a_regular_file_names_that_file(a_file, capsys):
    code = run(["table", "1", "--format", "csv", "-o", str(a_file / "sub" / "t.csv")])
    one_error_line(capsys, code, 1, f"{a_file / 'sub'}: {a_file} is a regular file, not a folder")


def test_table_output_that_is_a_folder_says_a_file_is_needed(tmp_path, capsys):
    code = run(["table", "1", "--format", "csv", "-o", str(tmp_path)])
    one_error_line(capsys, code, 1, str(tmp_path), "is a folder")


def test_table_results_that_is_a_file_is_refused(a_file, capsys):
    one_error_line(capsys, run(["table", "1", "--results", str(a_file)]), 1, str(a_file))


def test_prepare_synthetic_under_a_regular_file_names_the_file(a_file, capsys):
    code = run(["prepare", "synthetic", "--data-root", str(a_file / "data")])
    one_error_line(capsys, code, 1, str(a_file / "data"), only_line=False)


def test_quickstart_workdir_under_a_regular_file_names_it(a_file, capsys):
    code = run(["quickstart", "--fast", "--no-progress", "--workdir", str(a_file / "w")])
    one_error_line(capsys, code, 1, str(a_file / "w"), only_line=False)


def test_plot_of_a_missing_run_folder_names_it(tmp_path, capsys):
    code = run(["plot", "training-profile", NOWHERE, "-o", str(tmp_path / "f.png")])
    one_error_line(capsys, code, 1, NOWHERE)


def test_eval_with_a_missing_data_root_names_it_and_the_fix(synthetic_root, capsys):
    args = [
        "eval",
        "hsnet",
        "-b",
        "fss",
        "-w",
        "random",
        "--no-pretrained",
        "--device",
        "cpu",
        "--episodes",
        "1",
        "--no-progress",
        "--no-record",
        "--data-root",
        NOWHERE,
        "--splits",
        str(synthetic_root / "splits"),
    ]
    one_error_line(capsys, run(args), 1, NOWHERE, "--data-root", only_line=False)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_table_output_in_a_read_only_folder_says_permission_denied(tmp_path, capsys):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        code = run(["table", "1", "--format", "csv", "-o", str(folder / "t.csv")])
    finally:
        folder.chmod(0o755)
    one_error_line(capsys, code, 1, str(folder / "t.csv"), "permission denied")


# --- failures raised inside a command: patched into the first function it calls ----------------------------


def _raise_from_episodes(monkeypatch, error: BaseException) -> None:
    import hmrepro.data.benchmarks as benchmarks

    def fail(*args, **kwargs):
        raise error

    monkeypatch.setattr(benchmarks, "test_episodes", fail)


def test_ctrl_c_is_one_interrupted_line_and_exit_130(monkeypatch, capsys):
    _raise_from_episodes(monkeypatch, KeyboardInterrupt())
    assert run(["episodes", "-b", "pascal"]) == 130
    err = capsys.readouterr().err
    assert err.strip() == "interrupted" and "Traceback" not in err


def test_sigterm_is_one_terminated_line_and_exit_143(monkeypatch, capsys):
    _raise_from_episodes(monkeypatch, Terminated())
    assert run(["episodes", "-b", "pascal"]) == 143
    assert capsys.readouterr().err.strip() == "terminated (SIGTERM)"


@pytest.mark.parametrize(
    "error, fragments",
    [
        (PermissionError(errno.EACCES, "Permission denied", "/data/out.json"), ["/data/out.json", "permission denied"]),
        (OSError(errno.ENOSPC, "No space left on device", "/data/out.json"), ["/data/out.json", "no space left"]),
        (OSError(errno.EROFS, "Read-only file system", "/mnt/ro/x"), ["/mnt/ro/x", "read-only file system"]),
        (IsADirectoryError(errno.EISDIR, "Is a directory", "/data"), ["/data", "is a folder"]),
        (FileNotFoundError(errno.ENOENT, "No such file or directory", "/data/x"), ["/data/x", "does not exist"]),
    ],
    ids=["permission_denied", "disk_full", "read_only_file_system", "folder_for_a_file", "missing_file"],
)
def test_os_error_is_one_line_with_path_words_and_fix(monkeypatch, capsys, error, fragments):
    _raise_from_episodes(monkeypatch, error)
    line = one_error_line(capsys, run(["episodes", "-b", "pascal"]), 1, *fragments)
    assert "; " in line  # the fix follows


WORKER_TEXT = (
    "Caught CorruptFileError in DataLoader worker process 0.\nOriginal Traceback (most recent call last):\n"
    '  File "/x/PIL/Image.py", line 3, in open\n    raise UnidentifiedImageError(msg)\n'
    "PIL.UnidentifiedImageError: cannot identify image file 'm.png'\n\n"
    "The above exception was the direct cause of the following exception:\n\n"
    "Traceback (most recent call last):\n"
    '  File "/x/hmrepro/data/benchmarks.py", line 60, in open_image\n    raise CorruptFileError(...)\n'
    "hmrepro.errors.CorruptFileError: cannot read image m.png: broken.\nDelete it and fetch it again.\n"
)


def test_worker_error_text_is_unwrapped_to_its_last_exception():
    assert (
        unwrap_worker_error(CorruptFileError(WORKER_TEXT))
        == "cannot read image m.png: broken.\nDelete it and fetch it again."
    )
    assert unwrap_worker_error(CorruptFileError("cannot read image m.png")) is None


def test_worker_hmrepro_error_is_the_same_line_as_without_workers(monkeypatch, capsys):
    _raise_from_episodes(monkeypatch, CorruptFileError(WORKER_TEXT))
    line = one_error_line(capsys, run(["episodes", "-b", "pascal"]), 1, "cannot read image m.png: broken. Delete it")
    assert "DataLoader" not in line and "PIL" not in line


def test_real_dataloader_worker_error_is_one_line(synthetic_root, tmp_path, capsys):
    """A corrupt mask read by a DataLoader worker process (--workers 1) gives the --workers 0 line."""
    root = tmp_path / "data"
    shutil.copytree(synthetic_root / "FSS-1000", root / "FSS-1000")
    for mask in (root / "FSS-1000").rglob("*.png"):
        mask.write_text("not a png")
    args = [
        "eval",
        "hsnet",
        "-b",
        "fss",
        "-w",
        "random",
        "--no-pretrained",
        "--device",
        "cpu",
        "--img-size",
        "32",
        "--episodes",
        "1",
        "--no-progress",
        "--no-record",
        "--data-root",
        str(root),
        "--splits",
        str(synthetic_root / "splits"),
    ]
    lines = [one_error_line(capsys, run([*args, "--workers", str(n)]), 1, ".png", only_line=False) for n in (0, 1)]
    assert lines[0] == lines[1]


def test_unexpected_error_is_one_line_that_says_how_to_get_the_traceback(monkeypatch, capsys):
    _raise_from_episodes(monkeypatch, ZeroDivisionError("division by zero"))
    one_error_line(capsys, run(["episodes", "-b", "pascal"]), 1, "internal error", "ZeroDivisionError", "--debug")


@pytest.mark.parametrize("how", ["option", "environment"])
def test_debug_shows_the_traceback(monkeypatch, capsys, how):
    _raise_from_episodes(monkeypatch, HmreproError("bad split list"))
    if how == "environment":
        monkeypatch.setenv("HMREPRO_DEBUG", "1")
    assert run([*(["--debug"] if how == "option" else []), "episodes", "-b", "pascal"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and err.rstrip().endswith("error: bad split list")


def test_debug_of_one_run_does_not_leak_into_the_next(monkeypatch, capsys):
    _raise_from_episodes(monkeypatch, HmreproError("bad split list"))
    run(["--debug", "episodes", "-b", "pascal"])
    capsys.readouterr()
    one_error_line(capsys, run(["episodes", "-b", "pascal"]), 1, "bad split list")


# --- signals in a real process -----------------------------------------------------------------------------

# `hmrepro table 1` whose first step blocks (it says "ready" first), run through the console-script entry point
BLOCKING_TABLE = (
    "import sys, time; import hmrepro.cli.table as t\n"
    "def block(results):\n    print('ready', flush=True); time.sleep(60)\n"
    "t._results_dir = block; sys.argv = ['hmrepro', 'table', '1']\n"
    "from hmrepro.cli.app import main; main()\n"
)


def _as_from_a_terminal() -> None:
    """The child's signals as a shell's foreground command has them: a test run started in the background (``&``
    in a script, as CI may be) ignores SIGINT, and an ignored SIGINT stays ignored across exec, so Python would not
    install its KeyboardInterrupt handler and Ctrl-C would never reach the command."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.parametrize(
    "sig, status, line",
    [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated (SIGTERM)")],
    ids=["ctrl_c_exits_130", "sigterm_exits_143"],
)
def test_signal_in_a_running_command_is_one_line(sig, status, line):
    proc = subprocess.Popen(
        [sys.executable, "-c", BLOCKING_TABLE],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_as_from_a_terminal,
    )
    try:
        assert proc.stdout.readline().strip() == "ready"
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == status, err
    assert err.strip() == line


# --- help ------------------------------------------------------------------------------------------------


def _screens():
    from typer.main import get_command

    def walk(command, path):
        yield path, command
        for name, sub in getattr(command, "commands", {}).items():
            yield from walk(sub, [*path, name])

    return list(walk(get_command(build_app()), []))


@pytest.mark.parametrize("path, command", _screens(), ids=lambda v: " ".join(v) if isinstance(v, list) else "")
def test_every_help_screen_shows_its_defaults_and_an_example(path, command, capsys, monkeypatch):
    monkeypatch.setenv("TERMINAL_WIDTH", "250")
    assert run([*path, "--help"]) == 0
    out = capsys.readouterr().out
    assert "Example" in out, f"`hmrepro {' '.join(path)} --help` shows no example"
    written = sum((param.help or "").count("[default:") for param in command.params)
    assert out.count("[default:") >= written, out
    eaten = [line for line in out.splitlines() if line.rstrip(" │").endswith(" .")]
    assert not eaten, eaten

"""Issue 24, class 6 (disk full): every output goes through one atomic writer (:mod:`hmrepro.atomic`); a write
that fails leaves the old file whole, no temporary and no zero-byte file, and says in one line which file and what
to do; a training run that dies says ``failed`` and why in run.json."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path
from types import SimpleNamespace

import pytest

from hmrepro import atomic
from hmrepro.atomic import WriteFailed, atomic_write_text, is_temporary, sha256_bytes, sha256_file
from hmrepro.errors import HmreproError

OLD = "the old, complete content\n"


class _FullDiskHandle:
    """A file handle that takes ``room`` bytes and then fails as a full disk does."""

    def __init__(self, handle, room: int) -> None:
        self._handle, self._room = handle, room

    def write(self, data):
        if len(data) > self._room:
            self._handle.write(data[: self._room])
            self._room = 0
            raise OSError(errno.ENOSPC, "No space left on device")
        self._room -= len(data)
        return self._handle.write(data)

    def __getattr__(self, name):
        return getattr(self._handle, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._handle.close()


@pytest.fixture
def full_disk(monkeypatch):
    """Every atomic write fails after 10 bytes with ENOSPC."""
    real_fdopen = os.fdopen

    def fdopen(fd, *args, **kwargs):
        return _FullDiskHandle(real_fdopen(fd, *args, **kwargs), room=10)

    monkeypatch.setattr(atomic.os, "fdopen", fdopen)


def _write_table(path: Path) -> None:
    from hmrepro.cli.table import TableFormat, _write

    _write("| a | b |\n|---|---|\n| 1 | 2 |\n" * 50, 1, TableFormat.markdown, path)


def _write_figure(path: Path) -> None:
    from hmrepro.reporting.figures import _pyplot, _save

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(1, 1))
    ax.plot([0, 1], [1, 0])
    _save(plt, fig, path, dpi=20)


def _write_checkpoint(path: Path) -> None:
    import torch

    from hmrepro.engine.checkpoint_io import save_checkpoint

    save_checkpoint(path, {"w": torch.zeros(64)}, model_name="hsnet", backbone="resnet50")


def _write_run_status(path: Path) -> None:
    from hmrepro.engine import runs

    info = {"sessions": [{"started": "2026-01-01T00:00:00+00:00"}], "status": "running"}
    runs.update_session(path.parent, info, 1.0, status="finished")


def _write_sweep_attempt(path: Path) -> None:
    from hmrepro.sweep.folder import SweepFolder

    SweepFolder(path.parent.parent).start_attempt(path.stem, 1234, ["hmrepro", "train"], None)


def _write_lock_file(path: Path) -> None:
    from hmrepro.acquisition.lock import LockFile

    lock = LockFile.__new__(LockFile)
    lock.path, lock.data = path, {"files": {"x": {"sha256": "0" * 64}}}
    lock._write()


WRITERS = {  # name: (file name inside tmp_path, the write)
    "text": ("out.txt", lambda p: atomic_write_text(p, "x" * 1000)),
    "table -o": ("table.md", _write_table),
    "figure": ("sizes.png", _write_figure),
    "checkpoint": ("last.pt", _write_checkpoint),
    "run.json": ("run.json", _write_run_status),
    "sweep state": ("local/job-1.json", _write_sweep_attempt),
    "lock file": ("hmrepro.lock.json", _write_lock_file),
}


def _leftovers(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if is_temporary(p) or (p.is_file() and p.stat().st_size == 0)]


@pytest.mark.parametrize("name", WRITERS)
def test_disk_full(name, tmp_path, full_disk):
    """Class 6: a write on a full disk keeps the old file whole, leaves nothing half-written, and says so in one
    line naming the file (an HmreproError, so the CLI prints it; also an OSError for callers that catch those)."""
    relative, write = WRITERS[name]
    path = tmp_path / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(OLD)
    with pytest.raises(WriteFailed) as caught:
        write(path)
    message = str(caught.value)
    assert isinstance(caught.value, HmreproError) and isinstance(caught.value, OSError)
    assert str(path) in message and "no space left" in message and "\n" not in message
    assert caught.value.errno == errno.ENOSPC
    assert path.read_text() == OLD
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize("name", WRITERS)
def test_writes_whole_files_with_open_mode(name, tmp_path):
    relative, write = WRITERS[name]
    path = tmp_path / relative
    write(path)
    assert path.stat().st_size > 0 and _leftovers(tmp_path) == []
    assert path.stat().st_mode & 0o777 == 0o666 & ~_umask()


def _umask() -> int:
    from hmrepro.filemode import current_umask

    return current_umask()


@pytest.mark.parametrize(
    "raised, words",
    [
        (MemoryError(), "out of memory"),
        (OSError(errno.EDQUOT, "Disk quota exceeded"), "quota"),
        (OSError(errno.EROFS, "Read-only file system"), "read-only"),
        (RuntimeError("[enforce fail at inline_container.cc:595] . PytorchStreamWriter failed writing file"), "space"),
    ],
)
def test_write_failures_named(raised, words, tmp_path):
    """Class 6: exhausted memory, a quota, a read-only disk and torch's own writer error are one line each."""
    path = tmp_path / "x.bin"
    path.write_text(OLD)
    with pytest.raises(WriteFailed) as caught:
        with atomic.atomic_open(path, what="checkpoint") as handle:
            handle.write(b"partial")
            raise raised
    assert words in str(caught.value) and str(path) in str(caught.value)
    assert path.read_text() == OLD and _leftovers(tmp_path) == []


def test_a_bug_in_the_writer_is_not_disguised(tmp_path):
    with pytest.raises(ZeroDivisionError):
        with atomic.atomic_open(tmp_path / "x.bin"):
            raise ZeroDivisionError
    assert list(tmp_path.iterdir()) == []


def test_record_write_on_full_disk_leaves_no_empty_record(tmp_path, full_disk):
    from hmrepro.engine.records import RECORD_FIELDS, save_records

    record = {field: 1 for field in RECORD_FIELDS} | {
        "model": "hsnet",
        "backbone": "resnet50",
        "benchmark": "pascal",
        "origin": "own",
        "date": "2026-01-01T00:00:00+00:00",
    }
    saved = save_records([record], tmp_path)
    assert "no space left" in saved[0]["save_error"]
    assert list(tmp_path.iterdir()) == []


def test_hashes():
    assert sha256_bytes(b"abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


def test_sha256_file(tmp_path):
    (tmp_path / "f").write_bytes(b"abc" * 1000)
    assert sha256_file(tmp_path / "f", chunk=7) == sha256_bytes(b"abc" * 1000)


def test_run_json_says_failed_with_the_reason(tmp_path, monkeypatch):
    """Class 6: a run that dies (here: its checkpoint on a full disk) is ``failed`` in run.json, with why."""
    import torch

    from hmrepro.engine.training import train

    def full_disk_checkpoint(*args, **kwargs):
        raise WriteFailed(f"could not write checkpoint {tmp_path / 'last.pt'}: no space left on the device")

    monkeypatch.setattr(train, "train_epoch", full_disk_checkpoint)
    run = SimpleNamespace(
        main=True,
        run_dir=tmp_path,
        d=SimpleNamespace(device=torch.device("cpu"), world_size=1),
        state=SimpleNamespace(epoch=0, done=False, early_stopped=False),
        config=SimpleNamespace(epochs=2),
        model=torch.nn.Linear(1, 1),
    )
    with pytest.raises(WriteFailed):
        train._train_loop(run, train.Silent(), resumed=False)
    info = json.loads((tmp_path / "run.json").read_text())
    assert info["status"] == "failed"
    assert "no space left" in info["failure"] and "ended" in info["sessions"][-1]


def test_out_of_memory_is_one_line_not_a_bug():
    from hmrepro.cli.error_boundary import _failure

    code, line = _failure(MemoryError())
    assert code == 1 and line.startswith("out of memory") and "internal error" not in line

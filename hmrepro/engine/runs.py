"""Run folders: what a training run leaves on disk, and how to read it back.

A run folder holds::

    config.json      the effective configuration (recipe + flags), written when the run starts
    run.json         device, torch/CUDA versions, world size, sessions (start, end, wall time), status
    metrics.jsonl    one JSON line per finished epoch (losses, mIoU/FB-IoU, throughput): the training curve
    last.pt          the resume checkpoint (weights, optimizer, epoch, iteration, best score, RNG states,
                     per-epoch history), rewritten atomically at every epoch end and every N iterations
    best_model.pt    the weights with the best validation mIoU so far (what `hmrepro eval --weights RUN_DIR` uses)
    events/          TensorBoard event files (only when the ``tensorboard`` package is importable)

Every file is written atomically (temporary file + rename); ``metrics.jsonl`` is rewritten from the history
stored in ``last.pt``, so the two never disagree after a crash.
"""

from __future__ import annotations

import json
import platform
import socket
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..atomic import atomic_write_text
from ..errors import HmreproError
from ..paths import hmrepro_home
from ..textfile import read_text
from .records import git_commit, now_iso, versions

CONFIG = "config.json"
RUN_INFO = "run.json"
METRICS = "metrics.jsonl"
LAST = "last.pt"
BEST = "best_model.pt"
EVENTS = "events"

__all__ = [
    "BEST",
    "CONFIG",
    "LAST",
    "METRICS",
    "RUN_INFO",
    "RunError",
    "best_weights",
    "default_run_dir",
    "device_description",
    "is_run_dir",
    "read_config",
    "read_metrics",
    "write_config",
    "write_metrics",
]


class RunError(HmreproError):
    """A run folder is missing, incomplete or cannot be used as asked."""


def default_run_dir(model: str, backbone: str, benchmark: str, fold: int) -> Path:
    stamp = now_iso().replace(":", "").replace("+0000", "Z")
    return hmrepro_home() / "runs" / f"{model}_{backbone}_{benchmark}_fold{fold}_{stamp}"


def is_run_dir(path: Path) -> bool:
    return Path(path).is_dir() and (Path(path) / CONFIG).is_file()


def _jsonable(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def write_config(run_dir: Path, config: dict) -> None:
    atomic_write_text(Path(run_dir) / CONFIG, json.dumps(_jsonable(config), indent=2, sort_keys=True) + "\n")


def read_config(run_dir: Path) -> dict:
    path = Path(run_dir) / CONFIG
    if not path.exists():
        raise RunError(f"{run_dir} is not a run folder: it has no {CONFIG} (pass the folder `hmrepro train` wrote)")
    try:
        config = json.loads(_read_run_file(path))
    except json.JSONDecodeError as err:
        raise RunError(f"{path} is not valid JSON ({err})") from None
    if not isinstance(config, dict):
        raise RunError(f"{path} is not a run configuration (a JSON object)")
    return config


def write_metrics(run_dir: Path, history: Iterable[dict]) -> None:
    text = "".join(json.dumps(_jsonable(row), sort_keys=True) + "\n" for row in history)
    atomic_write_text(Path(run_dir) / METRICS, text)


def read_metrics(run_dir: Path, problems: list[str] | None = None) -> list[dict]:
    """The per-epoch rows of a run (the training curve), oldest first.

    A torn last line (a run killed while the file was written by an older hmrepro, or a file cut short) is
    dropped, with one line saying so appended to ``problems``; a bad line before the last is a :class:`RunError`
    naming the file and the line (``last.pt`` holds the history: `hmrepro train --resume` rewrites the file).
    """
    path = Path(run_dir) / METRICS
    if not path.exists():
        return []
    lines = _read_run_file(path).splitlines()
    rows = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        row = _metrics_row(line)
        if row is not None:
            rows.append(row)
        elif all(not rest.strip() for rest in lines[number:]):
            if problems is not None:
                problems.append(f"{path} line {number} is cut short (a torn last line); ignored it")
        else:
            raise RunError(
                f"{path} line {number} is not a JSON object of epoch metrics; it is rewritten from last.pt by "
                f"`hmrepro train --resume {run_dir}`, or delete the line"
            )
    return rows


def _metrics_row(line: str) -> dict | None:
    try:
        row = json.loads(line)
    except json.JSONDecodeError:
        return None
    return row if isinstance(row, dict) else None


def _read_run_file(path: Path) -> str:
    """The text of a run file; a folder in its place or an unreadable file is one :class:`RunError` naming it."""
    return read_text(path, "run file", "move it away, or pass the folder `hmrepro train` wrote", error=RunError)


def best_weights(run_dir: Path) -> Path:
    """The best-mIoU checkpoint of a run folder."""
    run_dir = Path(run_dir)
    path = run_dir / BEST
    if not path.is_file():
        if is_run_dir(run_dir):
            raise RunError(
                f"run {run_dir} has no {BEST} yet (no epoch finished); resume it with `hmrepro train --resume "
                f"{run_dir}`"
            )
        raise RunError(f"{run_dir} is not a run folder (no {CONFIG}) and holds no {BEST}")
    return path


def device_description(device) -> dict:
    """What a run or evaluation ran on, for run.json and result records."""
    import torch

    dev = torch.device(device)
    info = {
        "device": str(dev),
        "device_name": platform.processor() or platform.machine(),
        "cpu_count": __import__("os").cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "hostname": socket.gethostname(),
        "platform": platform.platform(),
    }
    if dev.type == "cuda":
        info["device_name"] = torch.cuda.get_device_name(dev)
    return info


def start_session(run_dir: Path, device, world_size: int, resumed: bool) -> dict:
    """Add a session (start time, device, versions) to run.json and return the whole record."""
    path = Path(run_dir) / RUN_INFO
    info = _read_run_info(path)
    info.update(device_description(device))
    info["versions"] = versions()
    info["git_commit"] = git_commit()
    info["world_size"] = world_size
    info["status"] = "running"
    info["sessions"].append(
        {"started": now_iso(), "resumed": resumed, "device": str(device), "world_size": world_size, "wall_seconds": 0.0}
    )
    atomic_write_text(path, json.dumps(info, indent=2, sort_keys=True) + "\n")
    return info


def _read_run_info(path: Path) -> dict:
    if not path.exists():
        return {"sessions": []}
    try:
        info = json.loads(_read_run_file(path))
    except json.JSONDecodeError as err:
        raise RunError(f"{path} is not valid JSON ({err}); move it away to start a fresh session record") from None
    if not isinstance(info, dict) or not isinstance(info.setdefault("sessions", []), list):
        raise RunError(f"{path} is not a run record; move it away to start a fresh session record")
    return info


def update_session(run_dir: Path, info: dict, wall_seconds: float, status: str | None = None) -> None:
    """Record the current session's wall time (and the run status) in run.json."""
    session = info["sessions"][-1]
    session["wall_seconds"] = round(wall_seconds, 3)
    session["updated"] = now_iso()
    if status is not None:
        info["status"] = status
        if status != "failed":
            info.pop("failure", None)  # a resumed run that goes on is no longer the failed one
        if status != "running":
            session["ended"] = now_iso()
    info["wall_seconds"] = round(sum(s.get("wall_seconds", 0.0) for s in info["sessions"]), 3)
    atomic_write_text(Path(run_dir) / RUN_INFO, json.dumps(info, indent=2, sort_keys=True) + "\n")


def fail_session(run_dir: Path, info: dict, wall_seconds: float, err: BaseException) -> None:
    """Mark the run ``failed`` in run.json, with ``failure``: why, in one line. When run.json cannot be written
    either (the disk that stopped the run is full) it is left as it was: the error that stopped the run is the one
    the user sees."""
    info["failure"] = failure_reason(err)
    try:
        update_session(run_dir, info, wall_seconds, status="failed")
    except (OSError, MemoryError):
        pass


def failure_reason(err: BaseException) -> str:
    """One line saying why a run stopped: the message of an ``HmreproError``, else the type and message."""
    if isinstance(err, MemoryError):
        return "out of memory"
    message = " ".join(str(err).split())
    text = message if isinstance(err, HmreproError) and message else f"{type(err).__name__}: {message}"
    return text[:500]

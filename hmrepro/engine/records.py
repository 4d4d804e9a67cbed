"""Result records: one JSON file per evaluated (model, benchmark, fold, shot), written atomically, never
overwriting another record. Tables read them all.

Fields (``RECORD_FIELDS``): model, masking, backbone, benchmark, fold, shot, miou, fb_iou, episodes, protocol,
img_size, original_size, checkpoint_sha256, origin ('official' = the authors' checkpoint, 'own' = our own run,
'random' = untrained weights), git_commit, versions, device, date, secs_per_episode; optional extras (preprocess, kind:
'eval' | 'bench' | 'domain-shift', run_dir, ...).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

RECORD_FIELDS = (
    "model",
    "masking",
    "backbone",
    "benchmark",
    "fold",
    "shot",
    "miou",
    "fb_iou",
    "episodes",
    "protocol",
    "img_size",
    "original_size",
    "checkpoint_sha256",
    "origin",
    "git_commit",
    "versions",
    "device",
    "date",
    "secs_per_episode",
)
ORIGINS = ("official", "own", "random")


def git_commit(cwd: Path | None = None) -> str | None:
    """The commit of the hmrepro checkout (None when not installed from git)."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=cwd or Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
        )
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def versions() -> dict[str, str | None]:
    import torch
    import torchvision

    from .. import __version__

    return {
        "hmrepro": __version__,
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "cuda": torch.version.cuda,
        "cudnn": str(torch.backends.cudnn.version()) if torch.backends.cudnn.is_available() else None,
    }


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _slug(value) -> str:
    return re.sub(r"[^A-Za-z0-9.+-]+", "-", str(value)).strip("-")


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same folder and an atomic rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_record(record: dict, results_dir: Path) -> Path:
    """Write ``record`` as a new file in ``results_dir`` and return its path; never overwrites a record.

    Missing required fields raise ``ValueError``. The file name says what it holds:
    ``<model>_<backbone>_<benchmark>_fold<f>_<k>shot_<origin>_<date>[_<n>].json``.
    """
    missing = [f for f in RECORD_FIELDS if f not in record]
    if missing:
        raise ValueError(f"result record lacks fields: {', '.join(missing)}")
    if record["origin"] not in ORIGINS:
        raise ValueError(f"origin {record['origin']!r} is not one of {', '.join(ORIGINS)}")
    results_dir = Path(results_dir)
    results_dir.mkdir(parents=True, exist_ok=True)
    stem = "_".join(
        _slug(x)
        for x in (
            record.get("kind", "eval"),
            record["model"],
            record["backbone"],
            record["benchmark"],
            f"fold{record['fold']}",
            f"{record['shot']}shot",
            record["origin"],
            record["date"].replace(":", ""),
        )
    )
    text = json.dumps(record, indent=2, sort_keys=True) + "\n"
    for n in range(10_000):
        path = results_dir / (f"{stem}.json" if n == 0 else f"{stem}_{n}.json")
        try:
            # O_EXCL claims the name atomically: two writers never share a file
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            continue
        os.close(fd)
        atomic_write_text(path, text)
        return path
    raise RuntimeError(f"could not find a free record name for {stem} in {results_dir}")


def read_records(results_dir: Path) -> Iterator[dict]:
    """Every record below ``results_dir`` (files that are not valid records are skipped)."""
    for path in sorted(Path(results_dir).rglob("*.json")):
        try:
            record = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if isinstance(record, dict) and all(f in record for f in ("model", "benchmark", "miou")):
            record.setdefault("path", str(path))
            yield record

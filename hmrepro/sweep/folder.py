"""The sweep folder: training runs, one log per job, and what the launchers started or submitted.

::

    SWEEP/runs/<model>_<backbone>_<benchmark>_fold<f>_seed<s>/   the training run folders
    SWEEP/logs/<job id>.log          the local launcher: the job's output, every attempt appended
    SWEEP/local/<job id>.json        the local launcher: pid, host, command, start, end, exit status of the last attempt
    SWEEP/slurm/<slurm id>/          submitit's folder per SLURM job: sbatch script, pickles, stdout/stderr logs
    SWEEP/slurm/submitted.json       job id → its SLURM submissions (newest last)

Every file is written atomically; a killed launcher leaves every file whole.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

from ..atomic import atomic_write_text
from ..engine.records import now_iso

__all__ = ["SweepFolder", "log_tail", "process_alive"]

SUBMITTED = "submitted.json"


def log_tail(path: Path, lines: int = 5) -> list[str]:
    """The last ``lines`` non-empty lines of a log (none when it is missing); progress-bar carriage returns
    count as line ends."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 16384))
            text = f.read().decode("utf-8", errors="replace")
    except OSError:
        return []
    kept = [line.rstrip() for line in text.replace("\r", "\n").splitlines() if line.strip()]
    return kept[-lines:]


def process_alive(pid: int) -> bool:
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class SweepFolder:
    """Paths and bookkeeping files of one sweep folder."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.runs = self.root / "runs"
        self.logs = self.root / "logs"
        self.local = self.root / "local"
        self.slurm = self.root / "slurm"

    def log_path(self, job_id: str) -> Path:
        return self.logs / f"{job_id}.log"

    # --- the local launcher --------------------------------------------------------------------------------

    def _attempt_path(self, job_id: str) -> Path:
        return self.local / f"{job_id}.json"

    def start_attempt(self, job_id: str, pid: int, command: list[str], slot: str | None) -> None:
        info = {"pid": pid, "host": socket.gethostname(), "command": command, "started": now_iso(), "gpu": slot}
        atomic_write_text(self._attempt_path(job_id), json.dumps(info, indent=2) + "\n")

    def end_attempt(self, job_id: str, returncode: int) -> None:
        info = self.attempt(job_id) or {}
        info.update(ended=now_iso(), returncode=int(returncode))
        atomic_write_text(self._attempt_path(job_id), json.dumps(info, indent=2) + "\n")

    def attempt(self, job_id: str) -> dict | None:
        """The last local attempt of ``job_id`` (None when it never ran here)."""
        try:
            return json.loads(self._attempt_path(job_id).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None

    # --- the SLURM launcher --------------------------------------------------------------------------------

    def submissions(self) -> dict[str, list[dict]]:
        """Job id → its SLURM submissions, oldest first (``slurm_id``, ``submitted``, ``command``)."""
        try:
            data = json.loads((self.slurm / SUBMITTED).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def latest_submission(self, job_id: str) -> dict | None:
        entries = self.submissions().get(job_id) or []
        return entries[-1] if entries else None

    def add_submissions(self, entries: dict[str, dict]) -> None:
        """Append one submission per job id (``{job_id: {"slurm_id": ..., ...}}``)."""
        data = self.submissions()
        for job_id, entry in entries.items():
            data.setdefault(job_id, []).append({**entry, "submitted": now_iso()})
        atomic_write_text(self.slurm / SUBMITTED, json.dumps(data, indent=2, sort_keys=True) + "\n")

"""The sweep folder: training runs, one log per job, and what the launchers started or submitted.

::

    SWEEP/runs/<model>_<backbone>_<benchmark>_fold<f>_seed<s>/   the training run folders
    SWEEP/logs/<job id>.log          the local launcher: the job's output, every attempt appended
    SWEEP/local/<job id>.json        the local launcher: pid, host, command, start, end, exit status of the last attempt
    SWEEP/slurm/<slurm id>/          submitit's folder per SLURM job: sbatch script, pickles, stdout/stderr logs
    SWEEP/slurm/submitted.json       job id → its SLURM submissions (newest last)

Every file is written atomically; a killed launcher leaves every file whole. Every file is read as input from
outside (copied, merged, edited; it survives reboots): a state file that is not what hmrepro writes is reported in
one line naming it and the field (:attr:`SweepFolder.problems`) and never trusted; a corrupt ``submitted.json``
stops a SLURM ``sweep run`` before it submits anything (:meth:`SweepFolder.check_submissions`), for it could not
tell which jobs are queued already.

A local attempt records the process's pid, its start time (field 22 of ``/proc/<pid>/stat``, clock ticks since
boot) and the boot id: a job is running only while a process with that pid, that start time and that boot exists,
so a pid reused after a reboot, or by another program, never keeps a dead job "running".
"""

from __future__ import annotations

import json
import os
import re
import socket
import stat
from datetime import datetime, timezone
from pathlib import Path

from ..atomic import atomic_write_text
from ..engine.records import now_iso
from ..errors import HmreproError

__all__ = ["SweepFolder", "SweepStateError", "log_tail", "process_alive", "process_identity"]

SUBMITTED = "submitted.json"
PID_MAX = 1 << 22  # Linux's largest pid_max
MAX_STATE_BYTES = 1 << 20  # an attempt file is a few hundred bytes
MAX_SUBMITTED_BYTES = 64 << 20  # submitted.json: every submission of a sweep
SLURM_ID = re.compile(r"^[0-9]{1,12}(_[0-9]{1,9})?$")  # "1234" or an array task "1234_5"
_BOOT_ID = Path("/proc/sys/kernel/random/boot_id")


class SweepStateError(HmreproError):
    """A sweep state file that cannot be trusted where being wrong would cost (submitting jobs twice)."""


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


def valid_pid(pid) -> bool:
    """An integer pid a launched job can have: not pid 1 (init), not 0 or negative (process groups), not huge."""
    return isinstance(pid, int) and not isinstance(pid, bool) and 1 < pid <= PID_MAX


def boot_id() -> str | None:
    """This boot's id (Linux; None elsewhere): a pid recorded under another boot is no longer that process."""
    try:
        return _BOOT_ID.read_text(encoding="ascii").strip() or None
    except (OSError, UnicodeDecodeError):
        return None


def process_start_ticks(pid: int) -> int | None:
    """When process ``pid`` started, in clock ticks since boot (field 22 of ``/proc/<pid>/stat``); None when it
    does not exist or this is not Linux."""
    try:
        text = Path(f"/proc/{int(pid)}/stat").read_text(encoding="utf-8", errors="replace")
        return int(text.rsplit(")", 1)[1].split()[19])  # after "pid (comm)": field 3 is the first
    except (OSError, IndexError, ValueError):
        return None


def process_identity(pid: int) -> dict:
    """What tells process ``pid`` from a later one with the same pid: ``start_ticks`` and ``boot_id``."""
    return {"start_ticks": process_start_ticks(pid), "boot_id": boot_id()}


def process_alive(pid, start_ticks: int | None = None, boot: str | None = None) -> bool:
    """Whether the process ``pid`` launched under boot ``boot`` at ``start_ticks`` still runs. A pid that is not
    valid (missing, 1, -1, not an integer, huge) is not running; without a recorded start time or boot id (files
    of older versions) the pid alone decides."""
    if not valid_pid(pid):
        return False
    if boot is not None and boot_id() not in (None, boot):
        return False  # the machine rebooted since: every pid was reused
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by someone else
    except OSError:
        return False
    if start_ticks is not None:
        now = process_start_ticks(pid)
        return now is None or now == start_ticks  # another process that got the same pid is not our job
    return True


def read_state_file(path: Path, limit: int) -> tuple[object | None, str | None]:
    """(the JSON in ``path``, None) or (None, why not): a regular file under ``limit`` bytes, UTF-8, plain JSON
    (no NaN, no numbers thousands of digits long, no nesting deep enough to break the parser); ``(None, None)``
    when it does not exist."""
    try:
        info = path.stat()
        if not stat.S_ISREG(info.st_mode):
            return None, "is not a regular file"
        if info.st_size > limit:
            return None, f"is {info.st_size} bytes, more than a sweep state file can be ({limit})"
        with open(path, "rb") as f:
            text = f.read(limit + 1).decode("utf-8")
        return json.loads(text, parse_constant=_no_constant), None
    except FileNotFoundError:
        return None, None
    except OSError as err:
        return None, f"cannot be read ({err.strerror or err})"
    except UnicodeDecodeError:
        return None, "is not UTF-8 text"
    except RecursionError:
        return None, "is nested too deeply"
    except ValueError as err:  # JSONDecodeError, NaN, an integer too long to convert
        return None, f"is not valid JSON ({str(err)[:120]})"


def _no_constant(name: str):
    raise ValueError(f"{name} is not a number a state file holds")


def _attempt_problem(info) -> str | None:
    """Why ``info`` is not a local attempt record hmrepro writes, or None."""
    if not isinstance(info, dict):
        return f"holds a JSON {type(info).__name__}, not an object"
    pid = info.get("pid")
    if pid is not None and (not isinstance(pid, int) or isinstance(pid, bool) or abs(pid) > PID_MAX):
        return f"its pid {_shown(pid)} is not a process id (an integer up to {PID_MAX})"
    for key in ("host", "started"):
        if not _short_text(info.get(key)):
            return f"its {key} {_shown(info.get(key))} is not a short line of text"
    if "ended" in info and not (isinstance(info.get("returncode"), int) and not isinstance(info["returncode"], bool)):
        return f"its returncode {_shown(info.get('returncode'))} is not an integer"
    if info.get("start_ticks") is not None and not (
        isinstance(info["start_ticks"], int) and not isinstance(info["start_ticks"], bool) and info["start_ticks"] >= 0
    ):
        return f"its start_ticks {_shown(info['start_ticks'])} is not a non-negative integer"
    if info.get("boot_id") is not None and not _short_text(info["boot_id"]):
        return f"its boot_id {_shown(info['boot_id'])} is not a short line of text"
    return None


def _submission_problem(job_id, entries) -> str | None:
    if not _short_text(job_id):
        return f"job id {_shown(job_id)} is not a short line of text"
    if not isinstance(entries, list):
        return f"job {job_id}: its submissions are a JSON {type(entries).__name__}, not a list"
    for n, entry in enumerate(entries, 1):
        if not isinstance(entry, dict):
            return f"job {job_id}: submission {n} is a JSON {type(entry).__name__}, not an object"
        slurm_id = entry.get("slurm_id")
        if slurm_id is None:
            return f"job {job_id}: submission {n} has no slurm_id"
        if isinstance(slurm_id, bool) or not SLURM_ID.match(str(slurm_id)):
            return f"job {job_id}: submission {n} has slurm_id {_shown(slurm_id)}, not a SLURM job id"
        if "submitted" in entry and not _short_text(entry["submitted"]):
            return f"job {job_id}: submission {n} has submitted {_shown(entry['submitted'])}, not a date"
    return None


def _short_text(value) -> bool:
    return isinstance(value, str) and 0 < len(value) <= 256 and value.isprintable()


def _shown(value) -> str:
    """``value`` as a short, printable token for a message."""
    text = ascii(value)
    return text if len(text) <= 40 else text[:37] + "..."


def started_before_boot(started: str) -> bool:
    """Whether an attempt that started at ``started`` (ISO date) did so before this machine last booted."""
    try:
        with open("/proc/stat", encoding="ascii") as f:
            btime = next(int(line.split()[1]) for line in f if line.startswith("btime "))
        when = datetime.fromisoformat(started)
    except (OSError, StopIteration, ValueError, IndexError, TypeError):
        return False
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return when.timestamp() < btime


class SweepFolder:
    """Paths and bookkeeping files of one sweep folder."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.runs = self.root / "runs"
        self.logs = self.root / "logs"
        self.local = self.root / "local"
        self.slurm = self.root / "slurm"
        self.problems: list[str] = []  # one line per state file that could not be trusted (shown as warnings)

    def _problem(self, line: str) -> None:
        if line not in self.problems:
            self.problems.append(line)

    def log_path(self, job_id: str) -> Path:
        return self.logs / f"{job_id}.log"

    # --- the local launcher --------------------------------------------------------------------------------

    def _attempt_path(self, job_id: str) -> Path:
        return self.local / f"{job_id}.json"

    def start_attempt(self, job_id: str, pid: int, command: list[str], slot: str | None) -> None:
        info = {"pid": pid, "host": socket.gethostname(), "command": command, "started": now_iso(), "gpu": slot}
        info.update(process_identity(pid))  # pid + start time + boot: a reused pid is not this job
        atomic_write_text(self._attempt_path(job_id), json.dumps(info, indent=2) + "\n")

    def end_attempt(self, job_id: str, returncode: int) -> None:
        info = self.attempt(job_id) or {}
        info.update(ended=now_iso(), returncode=int(returncode))
        atomic_write_text(self._attempt_path(job_id), json.dumps(info, indent=2) + "\n")

    def attempt(self, job_id: str) -> dict | None:
        """The last local attempt of ``job_id`` (None when it never ran here, or its file cannot be trusted: then
        :attr:`problems` says so and the job counts as never started)."""
        path = self._attempt_path(job_id)
        info, problem = read_state_file(path, MAX_STATE_BYTES)
        problem = problem or (_attempt_problem(info) if info is not None else None)
        if problem:
            self._problem(f"{path} {problem}; ignored (the job counts as not started): delete the file")
            return None
        return info

    def attempt_running(self, attempt: dict) -> bool:
        """Whether the process of ``attempt`` (from :meth:`attempt`, on this host) still runs: the same pid, start
        time and boot; an attempt of an older version without them: its pid, and started since the last boot. No
        pid, pid 1 (init) or a negative one: not running."""
        if attempt.get("start_ticks") is None and started_before_boot(attempt["started"]):
            return False
        return process_alive(attempt.get("pid"), attempt.get("start_ticks"), attempt.get("boot_id"))

    # --- the SLURM launcher --------------------------------------------------------------------------------

    def submissions(self) -> dict[str, list[dict]]:
        """Job id → its SLURM submissions, oldest first (``slurm_id``, ``submitted``, ``command``). What cannot be
        trusted is left out and said in :attr:`problems` (:meth:`check_submissions` makes that an error)."""
        data, problem = self._submissions()
        if problem:
            self._problem(f"{self.slurm / SUBMITTED} {problem}; its jobs are shown as not submitted")
        return data

    def _submissions(self) -> tuple[dict[str, list[dict]], str | None]:
        """(the trusted submissions, what is wrong with the file or None)."""
        data, problem = read_state_file(self.slurm / SUBMITTED, MAX_SUBMITTED_BYTES)
        if problem:
            return {}, problem
        if data is None:
            return {}, None
        if not isinstance(data, dict):
            return {}, f"holds a JSON {type(data).__name__}, not an object (job id → submissions)"
        kept, problems = {}, []
        for job_id, entries in data.items():
            why = _submission_problem(job_id, entries)
            if why:
                problems.append(why)
            else:
                kept[job_id] = entries
        if not problems:
            return kept, None
        return kept, problems[0] + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else "")

    def check_submissions(self) -> None:
        """Raise :class:`SweepStateError` when ``submitted.json`` cannot be trusted: a SLURM ``sweep run`` would
        submit again jobs that are queued or running already."""
        _, problem = self._submissions()
        if problem:
            path = self.slurm / SUBMITTED
            raise SweepStateError(
                f"{path} {problem}; nothing was submitted, since hmrepro cannot tell which jobs are queued already: "
                f"fix the file, or move it away once `squeue -u $USER` shows no job of this sweep"
            )

    def latest_submission(self, job_id: str) -> dict | None:
        entries = self.submissions().get(job_id) or []
        return entries[-1] if entries else None

    def add_submissions(self, entries: dict[str, dict]) -> None:
        """Append one submission per job id (``{job_id: {"slurm_id": ..., ...}}``); a file that cannot be trusted
        is an error (:meth:`check_submissions`), never overwritten."""
        self.check_submissions()
        data = self.submissions()
        for job_id, entry in entries.items():
            data.setdefault(job_id, []).append({**entry, "submitted": now_iso()})
        atomic_write_text(self.slurm / SUBMITTED, json.dumps(data, indent=2, sort_keys=True) + "\n")

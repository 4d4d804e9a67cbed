"""Where each job of a plan stands: read from the records and run folders (the plan), the local launcher's attempt
files and submitit's SLURM jobs.

States: ``done`` (its record exists / its run finished), ``running``, ``queued`` (submitted to SLURM, waiting),
``failed`` (with the last lines of its log), ``blocked`` (a job it needs failed) and ``pending`` (never started,
or stopped and to be continued by the next ``hmrepro sweep run``).
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from .folder import SweepFolder, log_tail
from .plan import DONE, PENDING, Job

__all__ = ["STATES", "JobStatus", "job_statuses"]

STATES = ("done", "running", "queued", "failed", "blocked", "pending")
SLURM_RUNNING = {"RUNNING", "COMPLETING"}
SLURM_WAITING = {
    "PENDING",
    "REQUEUED",
    "CONFIGURING",
    "RESIZING",
    "SUSPENDED",
    "REQUEUE_HOLD",
    "REQUEUE_FED",
    "UNKNOWN",
}
TAIL_LINES = 5


@dataclass(frozen=True)
class JobStatus:
    job: Job
    state: str
    where: str = ""  # "pid 1234 on host", "slurm 5678 (PENDING)"
    log: str = ""  # the log file of its last attempt
    tail: tuple[str, ...] = ()  # last lines of that log, for failed jobs

    def as_dict(self) -> dict:
        return {
            **self.job.as_dict(),
            "state": self.state,
            "where": self.where,
            "log": self.log,
            "log_tail": list(self.tail),
        }


def job_statuses(
    jobs: Sequence[Job], folder: SweepFolder, *, slurm_state_of: Callable[[str], str] | None = None
) -> list[JobStatus]:
    """The status of every job of ``jobs`` (plan order). ``slurm_state_of`` maps a SLURM id to its state; it is
    asked only for jobs submitted to SLURM (default: :func:`hmrepro.sweep.slurm.latest_states`)."""
    if slurm_state_of is None and folder.submissions():
        from .slurm import latest_states

        slurm_state_of = latest_states(folder)
    statuses: dict[str, JobStatus] = {}
    for job in jobs:
        statuses[job.id] = _status(job, folder, slurm_state_of)
    for job in jobs:  # a pending job waits for ever on a failed one
        status = statuses[job.id]
        if status.state == PENDING and any(
            statuses[d].state in ("failed", "blocked") for d in job.depends_on if d in statuses
        ):
            statuses[job.id] = JobStatus(job, "blocked", where="a job it needs failed")
    return [statuses[job.id] for job in jobs]


def _status(job: Job, folder: SweepFolder, slurm_state_of) -> JobStatus:
    if job.state == DONE:
        return JobStatus(job, DONE)
    attempt = folder.attempt(job.id)
    submission = folder.latest_submission(job.id)
    if submission and (not attempt or str(submission.get("submitted", "")) >= str(attempt.get("started", ""))):
        return _slurm_status(job, folder, submission["slurm_id"], slurm_state_of)
    if attempt:
        return _local_status(job, folder, attempt)
    return JobStatus(job, PENDING)


def _local_status(job: Job, folder: SweepFolder, attempt: dict) -> JobStatus:
    log = folder.log_path(job.id)
    where = f"pid {attempt.get('pid')} on {attempt.get('host')}"
    if "ended" not in attempt:
        if attempt["host"] != socket.gethostname() or folder.attempt_running(attempt):
            return JobStatus(job, "running", where, str(log))
        return JobStatus(
            job, "failed", where + ", gone without an exit status (killed)", str(log), tuple(log_tail(log, TAIL_LINES))
        )
    returncode = attempt.get("returncode")
    if job.kind == "train" and returncode in (130, 143):
        return JobStatus(job, PENDING, f"stopped (exit {returncode}); `hmrepro sweep run` resumes it", str(log))
    why = f"exit {returncode}" if returncode else "exit 0 but no record fills its cell"
    return JobStatus(job, "failed", f"{where}, {why}", str(log), tuple(log_tail(log, TAIL_LINES)))


def _slurm_status(job: Job, folder: SweepFolder, slurm_id: str, slurm_state_of) -> JobStatus:
    state = slurm_state_of(str(slurm_id))
    where = f"slurm {slurm_id} ({state})"
    log = slurm_log(folder, str(slurm_id))
    if state in SLURM_RUNNING:
        return JobStatus(job, "running", where, str(log))
    if state in SLURM_WAITING:
        return JobStatus(job, "queued", where, str(log))
    if state == "COMPLETED":
        where += ", but no record fills its cell"
    return JobStatus(job, "failed", where, str(log), tuple(log_tail(log, TAIL_LINES)))


def slurm_log(folder: SweepFolder, slurm_id: str) -> Path:
    """Where submitit's job ``slurm_id`` writes its output (stdout and stderr together, task 0)."""
    from submitit.core.utils import JobPaths

    return JobPaths(folder.slurm / "%j", job_id=slurm_id, task_id=0).stdout

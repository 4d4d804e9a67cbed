"""The local launcher: a plan's jobs on this machine, in dependency order, one at a time or one per visible GPU.

Each job runs as ``python -m hmrepro …`` (the plan's command; a training whose folder holds a run resumes it) in
its own process group, its output appended to ``SWEEP/logs/<job id>.log``. A job that fails blocks only the jobs
that depend on it. Interrupted (Ctrl-C, SIGTERM), the launcher passes SIGTERM on to its jobs and waits for them:
a training saves ``last.pt`` at its next iteration and the next ``hmrepro sweep run`` continues it.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from .folder import SweepFolder
from .plan import DONE, Job, current_command, process_argv

__all__ = ["LocalEvent", "run_local", "visible_gpus"]

STOP_GRACE_S = 120.0  # how long a stopped job gets to save its checkpoint before it is killed


@dataclass(frozen=True)
class LocalEvent:
    """What happened to a job: ``start``, ``end`` (``returncode``, ``seconds``), ``blocked`` (a dependency failed) or
    ``stopped`` (the launcher was interrupted; the job got SIGTERM and ended with ``returncode``)."""

    what: str
    job: Job
    returncode: int | None = None
    seconds: float = 0.0
    gpu: str | None = None
    unfilled: bool = False  # exit 0, but no record fills the job's cell (e.g. a non-default --img-size)


def visible_gpus() -> list[str]:
    """The GPUs this machine shows: ``CUDA_VISIBLE_DEVICES`` when set, else ``nvidia-smi -L`` (none without it)."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [g.strip() for g in env.split(",") if g.strip() and g.strip() != "-1"]
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [str(i) for i, line in enumerate(out.splitlines()) if line.startswith("GPU ")]


@dataclass
class _Running:
    job: Job
    process: subprocess.Popen
    gpu: str | None
    start: float
    log: object


def run_local(
    jobs: Sequence[Job],
    folder: SweepFolder,
    *,
    gpus: Sequence[str | None] = (None,),
    on_event: Callable[[LocalEvent], None] | None = None,
    fills: Callable[[Job], bool] | None = None,
    poll_s: float = 0.2,
) -> dict[str, str]:
    """Run every job of ``jobs`` that is not done; returns job id → ``done`` / ``failed`` / ``blocked`` for them.

    ``gpus``: one slot per entry; a job started in slot ``g`` sees only GPU ``g`` (``CUDA_VISIBLE_DEVICES``), a
    ``None`` slot leaves the environment as it is. ``fills(job)`` says whether a job that exited 0 has filled its
    cells (re-read from the records); one that has not counts as failed.
    """
    emit = on_event or (lambda event: None)
    outcome: dict[str, str] = {job.id: DONE for job in jobs if job.state == DONE}
    todo = [job for job in jobs if job.state != DONE]
    free = list(gpus)
    running: dict[str, _Running] = {}
    try:
        while todo or running:
            for job in list(todo):
                deps = [outcome.get(d) for d in job.depends_on]
                if any(state in ("failed", "blocked") for state in deps):
                    todo.remove(job)
                    outcome[job.id] = "blocked"
                    emit(LocalEvent("blocked", job))
                elif free and all(state == DONE for state in deps):
                    todo.remove(job)
                    running[job.id] = _start(job, folder, free.pop(0))
                    emit(LocalEvent("start", job, gpu=running[job.id].gpu))
            for job_id, run in list(running.items()):
                returncode = run.process.poll()
                if returncode is None:
                    continue
                _close(run, folder, returncode)
                del running[job_id]
                free.append(run.gpu)
                unfilled = returncode == 0 and fills is not None and not fills(run.job)
                outcome[job_id] = DONE if returncode == 0 and not unfilled else "failed"
                emit(LocalEvent("end", run.job, returncode, time.monotonic() - run.start, run.gpu, unfilled))
            if running or todo:
                time.sleep(poll_s)
    except BaseException:
        for run in _stop_all(running, folder):
            emit(LocalEvent("stopped", run.job, run.process.returncode, time.monotonic() - run.start, run.gpu))
        raise
    return {job.id: outcome[job.id] for job in jobs if job.state != DONE}


def _start(job: Job, folder: SweepFolder, gpu: str | None) -> _Running:
    argv = process_argv(current_command(job), gpus=1, python=sys.executable)
    env = dict(os.environ)
    if gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = str(gpu)
    folder.logs.mkdir(parents=True, exist_ok=True)
    log = open(folder.log_path(job.id), "ab")
    log.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(argv)}\n".encode())
    log.flush()
    process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    folder.start_attempt(job.id, process.pid, argv, gpu)
    return _Running(job, process, gpu, time.monotonic(), log)


def _close(run: _Running, folder: SweepFolder, returncode: int) -> None:
    run.log.write(f"=== exit status {returncode}\n".encode())
    run.log.close()
    folder.end_attempt(run.job.id, returncode)


def _stop_all(running: dict[str, _Running], folder: SweepFolder) -> list[_Running]:
    """SIGTERM to every running job, then wait (a training checkpoints first); kill what outlives the grace.
    Returns the stopped jobs."""
    for run in running.values():  # the job's main process only: its DataLoader workers end with it
        if run.process.poll() is None:
            run.process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE_S
    for run in running.values():
        try:
            run.process.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            try:
                os.killpg(run.process.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            run.process.wait()
        _close(run, folder, run.process.returncode)
    return list(running.values())

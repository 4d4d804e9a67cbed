"""The SLURM launcher: a plan's jobs submitted through submitit, with dependencies, arrays and requeue.

- Each training is one SLURM job on one node with ``gpus_per_job`` GPUs, running the plan's command under
  torchrun (one DDP process per GPU; :func:`~hmrepro.sweep.plan.process_argv`). It is a submitit
  ``Checkpointable``: when SLURM warns of the time limit or a preemption (submitit's ``--signal=USR2@…``),
  :meth:`TrainingJob.checkpoint` sends SIGTERM to the trainer, which saves ``last.pt`` at its next iteration
  and exits, and submitit requeues the same job; started again, it finds the run folder and continues it with
  ``--resume`` (:func:`~hmrepro.sweep.plan.current_command`). ``max_requeues`` bounds the time-outs
  (a week of training on a 24 h limit needs 7).
- Evaluations (and downloads) that wait for the same jobs are one job array, with ``--dependency=afterok:…``
  on those jobs' SLURM ids.
- A job already queued or running (its SLURM state from submitit, i.e. ``sacct``) is not submitted again;
  one whose dependency is submitted anew is cancelled and submitted again with the new dependency.

Everything submitit writes (sbatch scripts, pickles, logs) is under ``SWEEP/slurm/<slurm id>/``; which job went
to which SLURM id is in ``SWEEP/slurm/submitted.json``.
"""

from __future__ import annotations

import shlex
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import submitit

from ..errors import HmreproError
from .folder import SweepFolder
from .plan import DONE, Job, current_command, process_argv

__all__ = ["CommandJob", "SlurmEvent", "SlurmOptions", "TrainingJob", "latest_states", "slurm_states", "submit_plan"]

IN_FLIGHT = {
    "PENDING",
    "RUNNING",
    "REQUEUED",
    "CONFIGURING",
    "COMPLETING",
    "RESIZING",
    "SUSPENDED",
    "REQUEUE_HOLD",
    "REQUEUE_FED",
    "SUBMITTED",
}
STOP_GRACE_S = 80  # submitit signals 90 s before the limit (signal_delay_s): the trainer checkpoints within it


@dataclass(frozen=True)
class SlurmOptions:
    """Resources and scheduler settings of the submitted jobs."""

    gpus_per_job: int = 1  # training jobs (one node); evaluations and bench take one GPU, downloads none
    cpus_per_gpu: int = 8
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    mem: str | None = None  # e.g. 64G
    train_time_min: int = 24 * 60
    eval_time_min: int = 4 * 60
    max_requeues: int = 20  # time-outs a training may requeue after (preemptions do not count)
    setup: tuple[str, ...] = ()  # shell lines run before the job (module load ..., source venv/bin/activate)
    extra: tuple[tuple[str, str], ...] = ()  # --slurm-arg KEY=VALUE: any other sbatch option
    python: str | None = None  # the interpreter on the nodes [default: this one]


@dataclass(frozen=True)
class SlurmEvent:
    """``submitted`` (``slurm_id``), ``in-flight`` (already queued or running: ``slurm_id``, ``state``),
    ``cancelled`` (resubmitted after its dependency) or ``blocked``."""

    what: str
    job: Job
    slurm_id: str = ""
    state: str = ""


class CommandJob:
    """An evaluation, download or bench on a node: the plan's command, failing the SLURM job on a non-zero exit."""

    def __init__(self, job_id: str, command: Sequence[str]) -> None:
        self.job_id = job_id
        self.command = tuple(command)

    def argv(self, python: str | None = None) -> list[str]:
        return process_argv(self.command, gpus=1, python=python or sys.executable)

    def __call__(self) -> int:
        argv = self.argv()
        print(f"hmrepro sweep: {self.job_id}: {shlex.join(argv)}", flush=True)
        returncode = subprocess.call(argv)
        if returncode != 0:
            raise RuntimeError(f"{self.job_id}: `{shlex.join(argv)}` exited with status {returncode}")
        return returncode


class TrainingJob(submitit.helpers.Checkpointable):
    """A training run on ``gpus`` GPUs that survives time limits and preemption (see the module docstring)."""

    def __init__(self, job_id: str, command: Sequence[str], run_dir: str, gpus: int, python: str | None = None) -> None:
        self.job_id = job_id
        self.command = tuple(command)
        self.run_dir = run_dir
        self.gpus = int(gpus)
        self.python = python  # the interpreter on the node [default: the one running the job]
        self._process: subprocess.Popen | None = None

    def argv(self, python: str | None = None) -> list[str]:
        """The process to start now: the run is resumed when its folder holds one."""
        job = Job(id=self.job_id, kind="train", command=self.command, run_dir=self.run_dir)
        return process_argv(current_command(job), gpus=self.gpus, python=python or self.python or sys.executable)

    def __call__(self) -> int:
        argv = self.argv()
        print(f"hmrepro sweep: {self.job_id}: {shlex.join(argv)}", flush=True)
        self._process = subprocess.Popen(argv)
        returncode = self._process.wait()
        self._process = None
        if returncode != 0:
            raise RuntimeError(
                f"{self.job_id}: `{shlex.join(argv)}` exited with status {returncode}"
                + (
                    " (stopped by a signal; last.pt is saved and `hmrepro sweep run` resumes it)"
                    if returncode in (130, 143)
                    else ""
                )
            )
        return returncode

    def checkpoint(self, *args, **kwargs) -> submitit.helpers.DelayedSubmission:
        """submitit calls this on time-out or preemption: stop the trainer (it saves ``last.pt``) and requeue."""
        process = self._process
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        return super().checkpoint(*args, **kwargs)

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_process"] = None  # a process is no part of what is requeued
        return state


def slurm_states(folder: SweepFolder, slurm_ids) -> dict[str, str]:
    """SLURM id → state as submitit reads it (one ``sacct`` call for all of them); ``UNKNOWN`` when it cannot tell."""
    jobs = {str(i): submitit.SlurmJob(folder=folder.slurm / "%j", job_id=str(i)) for i in set(slurm_ids)}
    return {i: (str(job.state).split() or ["UNKNOWN"])[0].upper() for i, job in jobs.items()}  # registered first


def latest_states(folder: SweepFolder) -> Callable[[str], str]:
    """The states of every job's latest submission of ``folder``, read once, as a lookup function."""
    states = slurm_states(folder, [entries[-1]["slurm_id"] for entries in folder.submissions().values() if entries])
    return lambda slurm_id: states.get(str(slurm_id), "UNKNOWN")


def _check_cluster() -> None:
    missing = [tool for tool in ("sbatch", "srun") if shutil.which(tool) is None]
    if missing:
        raise HmreproError(
            f"--launcher slurm needs SLURM's {' and '.join(missing)} on PATH: run it on the cluster's login node "
            "(or --launcher local on this machine)"
        )


def _parameters(options: SlurmOptions, kind: str, name: str, dependencies: Sequence[str]) -> dict:
    train = kind == "train"
    gpus = options.gpus_per_job if train else (0 if kind == "download" else 1)
    params: dict = {
        "job_name": name,
        "nodes": 1,
        "ntasks_per_node": 1,  # one task: torchrun starts the per-GPU processes itself
        "cpus_per_task": max(1, gpus) * options.cpus_per_gpu if kind != "download" else 2,
        "time": options.train_time_min if train else options.eval_time_min,
        "signal_delay_s": 90,
        "stderr_to_stdout": True,
    }
    if gpus:
        params["gpus_per_node"] = gpus
    for key in ("partition", "account", "qos", "constraint"):
        if getattr(options, key):
            params[key] = getattr(options, key)
    if options.setup:
        params["setup"] = list(options.setup)
    additional: dict = {}
    if options.mem:
        additional["mem"] = options.mem
    if train:
        additional["requeue"] = True  # preempted or timed-out trainings go back to the queue
    if dependencies:
        additional["dependency"] = "afterok:" + ":".join(dependencies)
    additional.update({key.replace("_", "-"): value for key, value in options.extra})
    params["additional_parameters"] = additional
    return params


def _executor(folder: SweepFolder, options: SlurmOptions, params: dict) -> submitit.SlurmExecutor:
    executor = submitit.SlurmExecutor(
        folder=folder.slurm / "%j", max_num_timeout=options.max_requeues, python=options.python
    )
    executor.update_parameters(**params)
    return executor


def submit_plan(
    jobs: Sequence[Job],
    folder: SweepFolder,
    options: SlurmOptions,
    *,
    on_event: Callable[[SlurmEvent], None] | None = None,
    state_of: Callable[[str], str] | None = None,
) -> dict[str, str]:
    """Submit every job of ``jobs`` that is neither done nor in flight; returns job id → SLURM id for every job
    that is now queued or running. ``state_of`` maps a SLURM id to its state (default: :func:`latest_states`)."""
    folder.check_submissions()  # a corrupt submitted.json: stop before submitting anything again
    _check_cluster()
    emit = on_event or (lambda event: None)
    state_of = state_of or latest_states(folder)
    done = {job.id for job in jobs if job.state == DONE}
    slurm_ids: dict[str, str] = {}
    renewed: set[str] = set()
    remaining = [job for job in jobs if job.state != DONE]
    while remaining:  # waves: the jobs whose dependencies are done or have a SLURM id
        wave = [job for job in remaining if all(d in done or d in slurm_ids for d in job.depends_on)]
        if not wave:
            for job in remaining:
                emit(SlurmEvent("blocked", job))
            break
        groups: dict[tuple, list[Job]] = {}
        for job in wave:
            deps = [d for d in job.depends_on if d not in done]
            if _still_in_flight(job, deps, folder, state_of, renewed, slurm_ids, emit):
                continue
            dep_ids = tuple(slurm_ids[d] for d in deps)
            if job.kind == "train":
                slurm_ids[job.id] = _submit_training(job, folder, options, dep_ids)
                renewed.add(job.id)
                emit(SlurmEvent("submitted", job, slurm_ids[job.id]))
            else:  # one array per kind and dependencies: e.g. a training's 1- and 5-shot evaluations
                groups.setdefault((job.kind, dep_ids), []).append(job)
        for (kind, dep_ids), members in groups.items():
            for member, slurm_id in zip(members, _submit_array(kind, members, folder, options, dep_ids)):
                slurm_ids[member.id] = slurm_id
                renewed.add(member.id)
                emit(SlurmEvent("submitted", member, slurm_id))
        remaining = [job for job in remaining if job not in wave]
    return slurm_ids


def _still_in_flight(job: Job, deps, folder: SweepFolder, state_of, renewed: set, slurm_ids: dict, emit) -> bool:
    """Whether ``job``'s last submission is queued or running and can stay (then its id goes into ``slurm_ids``);
    one that waits for a dependency submitted anew is cancelled (it would wait for the old one for ever)."""
    previous = folder.latest_submission(job.id)
    if previous is None:
        return False
    state = state_of(previous["slurm_id"])
    if state not in IN_FLIGHT:
        return False
    if not any(d in renewed for d in deps):
        slurm_ids[job.id] = previous["slurm_id"]
        emit(SlurmEvent("in-flight", job, previous["slurm_id"], state))
        return True
    subprocess.run(["scancel", str(previous["slurm_id"])], check=False)
    emit(SlurmEvent("cancelled", job, previous["slurm_id"], state))
    return False


def _submit_training(job: Job, folder: SweepFolder, options: SlurmOptions, dep_ids: Sequence[str]) -> str:
    executor = _executor(folder, options, _parameters(options, "train", job.id, dep_ids))
    submitted = executor.submit(TrainingJob(job.id, job.command, job.run_dir or "", options.gpus_per_job))
    folder.add_submissions({job.id: {"slurm_id": str(submitted.job_id), "command": list(job.command)}})
    return str(submitted.job_id)


def _submit_array(kind: str, members: list[Job], folder: SweepFolder, options: SlurmOptions, dep_ids) -> list[str]:
    name = members[0].id if len(members) == 1 else f"{kind}-{len(members)}"
    executor = _executor(folder, options, _parameters(options, kind, name, dep_ids))
    with executor.batch():
        submitted = [executor.submit(CommandJob(job.id, job.command)) for job in members]
    ids = [str(s.job_id) for s in submitted]
    folder.add_submissions({job.id: {"slurm_id": i, "command": list(job.command)} for job, i in zip(members, ids)})
    return ids

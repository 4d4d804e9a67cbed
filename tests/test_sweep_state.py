"""Issue 24, class 7 (sweep state is trusted): attempt files and ``submitted.json`` are validated; liveness is pid
and process start time and boot; a corrupt ``submitted.json`` stops a SLURM ``sweep run`` before it submits."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from hmrepro.sweep import folder as folder_module
from hmrepro.sweep.folder import SUBMITTED, SweepFolder, SweepStateError, process_alive, process_identity
from hmrepro.sweep.plan import Job
from hmrepro.sweep.status import job_statuses

JOB = Job(id="train_hsnet_resnet50_fss_fold0_seed0", kind="train", command=("hmrepro", "train"))
HOST = __import__("socket").gethostname()
GOOD_ATTEMPT = {"pid": os.getpid(), "host": HOST, "started": "2026-01-01T00:00:00+00:00", "command": ["x"]}

BAD_ATTEMPTS = {  # name: the attempt file's text
    "a list": "[1, 2, 3]",
    "a string pid": json.dumps({**GOOD_ATTEMPT, "pid": "1234"}),
    "a float pid": json.dumps({**GOOD_ATTEMPT, "pid": 12.5}),
    "a huge pid": json.dumps({**GOOD_ATTEMPT, "pid": 10**30}),
    "a boolean pid": json.dumps({**GOOD_ATTEMPT, "pid": True}),
    "a 5000-digit pid": '{"pid": ' + "9" * 5000 + ', "host": "h", "started": "s"}',
    "NaN pid": '{"pid": NaN, "host": "h", "started": "s"}',
    "deep nesting": "[" * 100_000 + "]" * 100_000,
    "no host": json.dumps({"pid": 5, "started": "s"}),
    "control characters in host": json.dumps({**GOOD_ATTEMPT, "host": "\x1b]0;owned\x07"}),
    "a string returncode": json.dumps({**GOOD_ATTEMPT, "ended": "x", "returncode": "0"}),
    "negative start time": json.dumps({**GOOD_ATTEMPT, "start_ticks": -3}),
    "not UTF-8": b"\xff\xfe{}",
    "not JSON": "{pid: 12",
}

NOT_RUNNING = {  # name: attempt fields (over GOOD_ATTEMPT) whose process is not running
    "no pid": {"pid": None},
    "pid 1": {"pid": 1},
    "pid -1": {"pid": -1},
    "pid 0": {"pid": 0},
    "pid reused (another start time)": {"start_ticks": 1},
    "another boot": {"boot_id": "00000000-0000-0000-0000-000000000000"},
}

BAD_SUBMISSIONS = {  # name: submitted.json's text
    "a list": "[]",
    "an entry without slurm_id": json.dumps({JOB.id: [{"submitted": "2026-01-01T00:00:00+00:00"}]}),
    "entries not a list": json.dumps({JOB.id: {"slurm_id": "12"}}),
    "an entry not an object": json.dumps({JOB.id: ["12"]}),
    "a slurm_id that is no SLURM id": json.dumps({JOB.id: [{"slurm_id": "12; rm -rf ~"}]}),
    "not JSON": '{"train": [',
    "truncated": json.dumps({JOB.id: [{"slurm_id": "12"}]})[:-3],
}


def _write(path, content) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content if isinstance(content, bytes) else content.encode())


@pytest.mark.parametrize("name", BAD_ATTEMPTS)
def test_sweep_state_is_trusted(name, tmp_path):
    """Class 7: an attempt file that is not what hmrepro writes is one warning naming the file, and the job
    counts as not started (status reads on); never an internal error."""
    folder = SweepFolder(tmp_path)
    _write(folder.local / f"{JOB.id}.json", BAD_ATTEMPTS[name])
    (status,) = job_statuses([JOB], folder, slurm_state_of=lambda i: "UNKNOWN")
    assert status.state == "pending"
    assert len(folder.problems) == 1 and str(folder.local / f"{JOB.id}.json") in folder.problems[0]
    assert "\n" not in folder.problems[0] and "\x1b" not in folder.problems[0]


@pytest.mark.parametrize("name", NOT_RUNNING)
def test_sweep_state_liveness(name, tmp_path):
    """Class 7: liveness is pid and start time and boot: a job whose process is gone is not "running" for ever."""
    folder = SweepFolder(tmp_path)
    attempt = {**GOOD_ATTEMPT, **process_identity(os.getpid()), **NOT_RUNNING[name]}
    _write(folder.local / f"{JOB.id}.json", json.dumps(attempt))
    (status,) = job_statuses([JOB], folder, slurm_state_of=lambda i: "UNKNOWN")
    assert status.state == "failed" and "killed" in status.where
    assert folder.problems == []


def test_a_running_attempt_with_its_start_time_is_running(tmp_path):
    folder = SweepFolder(tmp_path)
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        folder.start_attempt(JOB.id, child.pid, ["python"], None)
        attempt = folder.attempt(JOB.id)
        if sys.platform.startswith("linux"):
            assert attempt["start_ticks"] is not None and attempt["boot_id"]
        (status,) = job_statuses([JOB], folder, slurm_state_of=lambda i: "UNKNOWN")
        assert status.state == "running"
    finally:
        child.kill()
        child.wait()
    (status,) = job_statuses([JOB], folder, slurm_state_of=lambda i: "UNKNOWN")
    assert status.state == "failed"


def test_an_old_attempt_without_start_time_that_began_before_the_boot_is_not_running(tmp_path):
    if not os.path.exists("/proc/stat"):
        pytest.skip("needs /proc/stat (Linux)")
    folder = SweepFolder(tmp_path)
    _write(folder.local / f"{JOB.id}.json", json.dumps({**GOOD_ATTEMPT, "started": "1999-01-01T00:00:00+00:00"}))
    (status,) = job_statuses([JOB], folder, slurm_state_of=lambda i: "UNKNOWN")
    assert status.state == "failed"


def test_process_alive_refuses_pids_that_are_no_job():
    for pid in (None, 0, 1, -1, 10**30, "12", True, 2.0):
        assert process_alive(pid) is False
    assert process_alive(os.getpid(), **{"start_ticks": folder_module.process_start_ticks(os.getpid())})


@pytest.mark.parametrize("name", BAD_SUBMISSIONS)
def test_sweep_state_submissions(name, tmp_path):
    """Class 7: a corrupt submitted.json is a warning for ``sweep status`` and an error that stops a SLURM
    ``sweep run`` before anything is submitted (and the file is never overwritten)."""
    from hmrepro.sweep.slurm import SlurmOptions, submit_plan

    folder = SweepFolder(tmp_path)
    path = folder.slurm / SUBMITTED
    _write(path, BAD_SUBMISSIONS[name])
    job_statuses([JOB], folder, slurm_state_of=lambda i: "UNKNOWN")
    assert len(folder.problems) == 1 and str(path) in folder.problems[0]
    with pytest.raises(SweepStateError) as caught:
        submit_plan([JOB], folder, SlurmOptions(), state_of=lambda i: "UNKNOWN")
    assert str(path) in str(caught.value) and "nothing was submitted" in str(caught.value)
    with pytest.raises(SweepStateError):
        folder.add_submissions({JOB.id: {"slurm_id": "99"}})
    assert path.read_bytes() == BAD_SUBMISSIONS[name].encode()


def test_valid_submissions_are_read(tmp_path):
    folder = SweepFolder(tmp_path)
    folder.add_submissions({JOB.id: {"slurm_id": "1234_5", "command": ["hmrepro"]}})
    assert folder.latest_submission(JOB.id)["slurm_id"] == "1234_5"
    folder.check_submissions()
    assert folder.problems == []


def test_a_fifo_state_file_does_not_hang(tmp_path):
    folder = SweepFolder(tmp_path)
    folder.local.mkdir(parents=True)
    os.mkfifo(folder.local / f"{JOB.id}.json")
    assert folder.attempt(JOB.id) is None
    assert "not a regular file" in folder.problems[0]


@pytest.mark.parametrize("content", ["[1]", '{"status": ["finished"]}', "[" * 100_000, "fifo"])
def test_sweep_state_run_status(content, tmp_path):
    """Class 7: a run folder's run.json that is a list, a FIFO or too deep gives no status (and no hang)."""
    from hmrepro.sweep.plan import _run_status

    if content == "fifo":
        os.mkfifo(tmp_path / "run.json")
    else:
        (tmp_path / "run.json").write_text(content)
    assert _run_status(tmp_path) == (None, False)

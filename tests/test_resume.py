"""Nothing is lost when a run dies: SIGKILL mid-epoch, resume, and end with the very weights of an uninterrupted run."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
from engine_helpers import cli_env, hmrepro_cmd, synthetic_args

from hmrepro.engine.checkpoint_io import read_checkpoint

pytestmark = pytest.mark.slow  # resume after kill: CLI trainings killed and resumed

TIMING_KEYS = {"train_secs", "val_secs", "train_episodes_per_s", "val_episodes_per_s"}


def _train_args(root: Path, out: Path) -> list[str]:
    # FSS-like split, epochs cut to 6 iterations of 2 episodes (what is checked is the resumption, not the learning:
    # a batch of 8 only made each iteration 4x dearer); a checkpoint every 2 iterations lands mid-epoch
    return hmrepro_cmd(
        "train",
        "hsnet",
        "-b",
        "fss",
        *synthetic_args(root),
        "--no-pretrained",
        "--img-size",
        "64",
        "--epochs",
        "2",
        "--bsz",
        "2",
        "--epoch-iterations",
        "6",
        "--val-episodes",
        "4",
        "--workers",
        "0",
        "--deterministic",
        "--checkpoint-every",
        "2",
        "--device",
        "cpu",
        "--no-progress",
        "--out",
        str(out),
    )


def _resume_args(out: Path) -> list[str]:
    return hmrepro_cmd("train", "--resume", str(out), "--no-progress")


def _wait_for(predicate, proc: subprocess.Popen, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if proc.poll() is not None:
            raise AssertionError(
                f"training ended (rc {proc.returncode}) before the checkpoint appeared: {proc.stderr.read()}"
            )
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError("no checkpoint appeared in time")
        time.sleep(0.01)


def _run(args: list[str]) -> subprocess.CompletedProcess:
    proc = subprocess.run(args, env=cli_env(), capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def _weights(run: Path) -> dict:
    return read_checkpoint(run / "last.pt").state_dict


def _curve(run: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in row.items() if k not in TIMING_KEYS} for row in rows]


def test_sigkill_mid_epoch_then_resume_gives_identical_weights(synthetic_root, tmp_path, request):
    # the uninterrupted reference trains alongside the interrupted run (its own folder; --deterministic)
    reference, reference_log = tmp_path / "uninterrupted", tmp_path / "uninterrupted.log"
    with reference_log.open("w") as log:
        reference_proc = subprocess.Popen(_train_args(synthetic_root, reference), env=cli_env(), stdout=log, stderr=log)
    request.addfinalizer(reference_proc.kill)  # if the test fails before it ends

    run = tmp_path / "killed"
    last = run / "last.pt"
    proc = subprocess.Popen(_train_args(synthetic_root, run), env=cli_env(), stderr=subprocess.PIPE, text=True)
    _wait_for(last.is_file, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = read_checkpoint(last).extra
    assert killed_at["step"] > 0, "the first checkpoint is a mid-epoch one"

    # resume; stop it politely (SIGTERM) at a later iteration: it must checkpoint and exit with 143 (128 + SIGTERM)
    before = last.stat().st_mtime_ns
    proc = subprocess.Popen(_resume_args(run), env=cli_env(), stderr=subprocess.PIPE, text=True)
    _wait_for(lambda: last.stat().st_mtime_ns != before, proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=600)
    if proc.returncode == 143:  # stopped before the end: the checkpoint is at the iteration it stopped at
        assert "--resume" in err
        assert json.loads((run / "run.json").read_text())["status"] == "interrupted"
        _run(_resume_args(run))
    else:  # it had already finished
        assert proc.returncode == 0, err[-3000:]
    assert reference_proc.wait(timeout=900) == 0, reference_log.read_text()[-3000:]

    expected, got = _weights(reference), _weights(run)
    assert expected.keys() == got.keys()
    assert all(torch.equal(expected[k], got[k]) for k in expected)
    assert torch.equal(
        read_checkpoint(reference / "best_model.pt").state_dict["hpn_learner.decoder2.2.weight"],
        read_checkpoint(run / "best_model.pt").state_dict["hpn_learner.decoder2.2.weight"],
    )
    assert _curve(reference) == _curve(run)  # the training curve too, losses and mIoUs included
    info = json.loads((run / "run.json").read_text())
    assert info["status"] == "finished" and len(info["sessions"]) >= 3
    assert not list(run.glob(".*.tmp"))


def test_a_second_resume_of_a_live_run_is_refused_naming_the_holders_pid(synthetic_root, tmp_path):
    import os

    from engine_helpers import tiny_config

    from hmrepro.engine import runs
    from hmrepro.locks import exclusive_lock

    run = tmp_path / "live"
    run.mkdir()
    runs.write_config(run, tiny_config("hsnet", synthetic_root, run).as_dict())
    with exclusive_lock(run / "run.lock", wait=False, holder_info=f"hmrepro train --resume {run}"):
        proc = subprocess.run(_resume_args(run), env=cli_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert f"PID {os.getpid()}" in proc.stderr and "Traceback" not in proc.stderr
    assert not (run / "last.pt").exists()  # the refused process trained nothing

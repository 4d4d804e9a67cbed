"""DistributedDataParallel: two CPU processes (gloo) launched by torchrun stay in sync and match one process."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from engine_helpers import cli_env, synthetic_args
from never_reached_launcher import NAME, never_reached_module

from hmrepro import create_model
from hmrepro.engine.checkpoint_io import read_checkpoint

pytestmark = pytest.mark.slow  # DDP: torchrun subprocesses training on the synthetic benchmark

LAUNCHER = Path(__file__).with_name("never_reached_launcher.py")


def _args(root: Path, out: Path) -> list[str]:
    return [
        "train",
        "hsnet",
        "-b",
        "fss",
        *synthetic_args(root),
        "--no-pretrained",
        "--img-size",
        "64",
        "--epochs",
        "1",
        "--bsz",
        "8",
        "--val-episodes",
        "16",
        "--workers",
        "0",
        "--deterministic",
        "--checkpoint-every",
        "4",
        "--device",
        "cpu",
        "--no-progress",
        "--out",
        str(out),
    ]


def test_two_processes_stay_in_sync_match_one_process_and_leave_unreached_parameters_alone(
    synthetic_root, tmp_path, request
):
    """hsnet with a learnable module that no forward pass reaches attached (never_reached_launcher.py; VAT's encoder
    norms are such parameters, which made DDP fail at the second iteration): two processes trained with DDP and one
    process given the same global batches end with the same weights, and the module is frozen and untouched in both."""
    env = cli_env()
    env["OMP_NUM_THREADS"] = "1"
    ddp, single = tmp_path / "ddp", tmp_path / "single"
    # the same global batches in one process, run alongside (its own folder; --deterministic)
    single_log = (tmp_path / "single.log").open("w")
    single_proc = subprocess.Popen(
        [sys.executable, str(LAUNCHER), *_args(synthetic_root, single)],
        env=env,
        stdout=single_log,
        stderr=subprocess.STDOUT,
    )
    request.addfinalizer(single_log.close)
    request.addfinalizer(single_proc.kill)  # if the test fails before it ends
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(LAUNCHER)]
    proc = subprocess.run(
        [*torchrun, *_args(synthetic_root, ddp)], env=env, capture_output=True, text=True, timeout=900
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "2 parameter tensors never receive a gradient (never_reached.weight, never_reached.bias)" in " ".join(
        proc.stderr.split()
    )

    info = json.loads((ddp / "run.json").read_text())
    assert info["world_size"] == 2 and info["status"] == "finished"
    rows = [json.loads(line) for line in (ddp / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 1
    # rank 1's parameters were compared with rank 0's after the epoch (10 optimizer steps): identical
    assert rows[0]["replica_max_abs_diff"] == 0.0
    assert rows[0]["val_episodes"] == 16  # the validation shards add up to the whole set
    assert rows[0]["iterations"] == 10  # global batches: 80 episodes / 8
    assert sorted(p.name for p in ddp.iterdir() if p.is_file() and p.name != "run.lock") == [
        "best_model.pt",
        "config.json",
        "last.pt",
        "metrics.jsonl",
        "run.json",
    ]  # (rank 1 wrote nothing of its own)

    # the same global batches in one process: the same weights up to float summation order
    assert single_proc.wait(timeout=900) == 0, (tmp_path / "single.log").read_text()[-4000:]
    a, b = read_checkpoint(ddp / "last.pt").state_dict, read_checkpoint(single / "last.pt").state_dict
    assert a.keys() == b.keys()
    worst = max((a[k].float() - b[k].float()).abs().max().item() for k in a)
    assert worst < 1e-3, worst

    # the module no forward reaches kept its initial values, as under the authors' DataParallel; the learner moved
    initial = never_reached_module().state_dict()
    for weights in (a, b):
        assert all(torch.equal(weights[f"{NAME}.{k}"], v) for k, v in initial.items())
    torch.manual_seed(0)  # the run's seed: the learner as it was built
    untrained = create_model("hsnet", pretrained=False).state_dict()
    assert any(not torch.equal(a[k], untrained[k]) for k in a if k.startswith("hpn_learner."))

"""DistributedDataParallel: two CPU processes (gloo) launched by torchrun stay in sync and match one process."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from engine_helpers import cli_env, synthetic_args

from hmrepro.engine.checkpoint_io import read_checkpoint

pytestmark = pytest.mark.slow  # DDP: torchrun subprocesses training on the synthetic benchmark


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


def test_two_processes_stay_in_sync_and_match_a_single_process(synthetic_root, tmp_path, request):
    env = cli_env()
    env["OMP_NUM_THREADS"] = "1"
    ddp, single = tmp_path / "ddp", tmp_path / "single"
    # the same global batches in one process, run alongside (its own folder; --deterministic)
    single_log = (tmp_path / "single.log").open("w")
    single_proc = subprocess.Popen(
        [sys.executable, "-m", "hmrepro", *_args(synthetic_root, single)],
        env=env,
        stdout=single_log,
        stderr=subprocess.STDOUT,
    )
    request.addfinalizer(single_log.close)
    request.addfinalizer(single_proc.kill)  # if the test fails before it ends
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "hmrepro"]
    proc = subprocess.run(
        [*torchrun, *_args(synthetic_root, ddp)], env=env, capture_output=True, text=True, timeout=900
    )
    assert proc.returncode == 0, proc.stderr[-4000:]

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


def _family_args(model: str, benchmark: str, img_size: int, root: Path, out: Path) -> list[str]:
    # two global batches of 2 (one episode per process): DDP used to fail at the second iteration for VAT
    return [
        "train",
        model,
        "-b",
        benchmark,
        *synthetic_args(root),
        "--no-pretrained",
        "--no-calibrate-bn",
        "--img-size",
        str(img_size),
        "--epochs",
        "1",
        "--bsz",
        "2",
        "--epoch-iterations",
        "2",
        "--val-episodes",
        "2",
        "--val-bsz",
        "1",
        "--workers",
        "0",
        "--device",
        "cpu",
        "--no-progress",
        "--out",
        str(out),
    ]


@pytest.mark.parametrize(
    ("model", "benchmark", "img_size"),
    [("vat-hm", "fss", 64), ("asnet-hm", "pascal", 400)],  # hsnet: the test above; ASNet fits 393-512 px only
)
def test_every_family_trains_under_ddp_and_unused_parameters_keep_their_initial_values(
    model, benchmark, img_size, synthetic_root, tmp_path
):
    from hmrepro import create_model

    env = {**cli_env(), "OMP_NUM_THREADS": "1"}
    out = tmp_path / model
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "hmrepro"]
    proc = subprocess.run(
        [*torchrun, *_family_args(model, benchmark, img_size, synthetic_root, out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert rows[0]["iterations"] == 2 and rows[0]["replica_max_abs_diff"] == 0.0

    # the parameters the loss never reaches are where the seed put them (the authors' DataParallel never moved them)
    torch.manual_seed(0)
    initial = create_model(model, pretrained=False, benchmark=benchmark).state_dict()
    trained = read_checkpoint(out / "last.pt").state_dict
    # VAT's encoder transformers end in a norm layer whose output nothing reads (their swin decoders' norms are used)
    unused = [k for k in trained if re.search(r"\.ours\.transformer\.\d+\.transformer\.norm\.", k)]
    assert all(torch.equal(trained[k], initial[k]) for k in unused)
    moved = [k for k in trained if not k.startswith("backbone.") and not torch.equal(trained[k], initial[k])]
    assert moved, "the learner trained"
    if model.startswith("vat"):
        assert unused and "never receive a gradient" in proc.stderr

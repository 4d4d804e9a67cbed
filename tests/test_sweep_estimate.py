"""``hmrepro sweep plan --estimate``: GPU-hours from the user's bench records before the reference speeds, a job
without a measurement left out of the total, hours that scale with the epochs; the reference file agrees with the
records it was derived from."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from hmrepro.cli.app import run
from hmrepro.cli.sweep import _job_json
from hmrepro.engine.recipes import recipe_dir
from hmrepro.sweep.estimate import REFERENCE_FILE, Speed, estimate_job, estimate_plan, own_speeds, reference_speeds
from hmrepro.sweep.plan import Job

REPO = Path(__file__).resolve().parents[1]
HOUR = 3600.0


def _speed(kind: str, per_second: float, **fields) -> Speed:
    values = dict(
        kind=kind,
        model="hsnet-hm",
        backbone="resnet50",
        benchmark="pascal",
        shot=1,
        img_size=400,
        bsz=20 if kind == "bench-train" else 1,
        precision="fp32",
        device_name="Reference GPU",
        per_second=per_second,
        date="2026-11-26",
        where="measurements/ref/record.json",
    )
    values.update(fields)
    return Speed(**values)


REFERENCE = [_speed("bench-train", 5.0), _speed("bench-eval", 10.0)]


def _training(epochs: int, model: str = "hsnet-hm") -> Job:
    """A tiny training: 7 iterations per epoch (--epoch-iterations), 10 validation episodes, batch 20, 400 px."""
    command = f"hmrepro train {model} --benchmark pascal --fold 0 --backbone resnet50 --seed 0 --epochs {epochs}"
    command += " --bsz 20 --epoch-iterations 7 --val-episodes 10 --no-progress --out /tmp/run"
    return Job(id=f"train_{model}_{epochs}", kind="train", command=tuple(command.split()))


def test_training_hours_are_hand_computed_and_scale_with_the_epochs():
    three = estimate_job(_training(3), REFERENCE)
    six = estimate_job(_training(6), REFERENCE)
    # 3 epochs × (7 iterations / 5 it/s + 10 validation episodes / 10 episodes/s) = 3 × 2.4 s = 7.2 s
    assert three.hours == pytest.approx(7.2 / HOUR)
    assert six.hours == pytest.approx(2 * three.hours)
    assert "3 epochs" in three.detail and "7 it at 5 it/s" in three.detail
    assert "10 val episodes at 10/s (timed at batch 1)" in three.detail  # validation runs at batch 20


def test_an_evaluation_costs_the_protocols_episodes_at_the_measured_speed():
    evaluation = Job(id="e", kind="eval", command=tuple("hmrepro eval hsnet-hm --benchmark coco --fold 2".split()))
    shifted = Job(id="d", kind="domain-shift", command=tuple("hmrepro domain-shift hsnet-hm --fold 1".split()))
    for job in (evaluation, shifted):  # 1000 episodes per fold (COCO-20i; COCO-20i → PASCAL) at 10 episodes/s
        assert estimate_job(job, REFERENCE).hours == pytest.approx(100.0 / HOUR)
    assert estimate_job(shifted, REFERENCE).detail == "1000 episodes at 10/s"  # timed on PASCAL, as it runs


def test_the_users_own_bench_records_take_precedence_over_the_reference():
    own = [
        {"kind": "bench-train", "model": "hsnet-hm", "backbone": "resnet50", "benchmark": "coco", "shot": 1,
         "img_size": 400, "bsz": 20, "precision": "fp32", "device_name": "My GPU", "iterations_per_sec": 2.5,
         "date": "2026-12-01T00:00:00+00:00", "path": "results/bench-train.json"},
        {"kind": "bench-eval", "model": "hsnet-hm", "backbone": "resnet50", "benchmark": "pascal", "shot": 1,
         "img_size": 400, "bsz": 1, "precision": "fp32", "device_name": "My GPU", "episodes_per_sec": 20.0,
         "date": "2026-12-01T00:00:00+00:00", "path": "results/bench-eval.json"},
        {"kind": "eval", "model": "hsnet-hm", "miou": 40.0},  # not a bench record: no speed
    ]  # fmt: skip
    assert len(own_speeds(own)) == 2
    estimate = estimate_plan([_training(3)], own, reference=REFERENCE)
    (job,) = estimate.jobs
    assert job.hours == pytest.approx(3 * (7 / 2.5 + 10 / 20.0) / HOUR)
    assert {s.device_name for s in job.speeds} == {"My GPU"}
    assert list(estimate.sources) == ["My GPU, your bench records"]
    assert "on coco" in job.detail  # the benchmark it was timed on, where it is not the job's


def test_a_job_without_a_measurement_says_so_and_stays_out_of_the_total():
    evaluation = Job(
        id="eval_asnet",
        kind="eval",
        command=tuple("hmrepro eval asnet --benchmark coco --fold 1 --shot 5 --backbone resnet101".split()),
    )
    download = Job(id="download_x", kind="download", command=("hmrepro", "download", "checkpoints"))
    estimate = estimate_plan([_training(3), evaluation, download], [], reference=REFERENCE)
    missing = estimate.of("eval_asnet")
    assert missing.hours is None
    assert missing.detail.startswith("no measurement: bench eval of asnet resnet101 5-shot")
    assert [e.job_id for e in estimate.unmeasured] == ["eval_asnet"]  # a download needs no GPU
    assert estimate.pending_gpu_jobs == 2
    assert estimate.total_hours == pytest.approx(7.2 / HOUR)
    as_json = _job_json(evaluation, estimate)["estimate"]  # `sweep plan --json --estimate`
    assert as_json["gpu_hours"] is None and as_json["detail"] == missing.detail and as_json["speeds"] == []
    assert _job_json(_training(3), estimate)["estimate"]["speeds"][0]["record"] == "measurements/ref/record.json"
    other_precision = estimate_job(_training(3), [_speed("bench-train", 5.0, precision="bf16"), REFERENCE[1]])
    assert other_precision.hours is None and "fp32" in other_precision.detail


def test_reference_speeds_agree_with_the_records_they_come_from():
    with open(recipe_dir() / REFERENCE_FILE, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    speeds = reference_speeds()
    assert len(speeds) == len(rows) > 0
    for speed in speeds:
        record = json.loads((REPO / speed.where).read_text(encoding="utf-8"))
        rate = record["iterations_per_sec" if speed.kind == "bench-train" else "episodes_per_sec"]
        assert speed.per_second == pytest.approx(rate, rel=1e-4)
        for key in ("kind", "model", "backbone", "benchmark", "shot", "img_size", "bsz", "precision", "device_name"):
            assert getattr(speed, key) == record[key], (speed.where, key)
        assert record["date"].startswith(speed.date)


def test_sweep_plan_estimate_prints_a_total_and_where_its_speeds_come_from(tmp_path, capsys):
    results = tmp_path / "results"
    results.mkdir()
    source = REPO / reference_speeds()[0].where  # an H200 bench-train record, as if measured on the user's device
    record = json.loads(source.read_text(encoding="utf-8"))
    record["device_name"] = "My Own GPU"
    (results / source.name).write_text(json.dumps(record), encoding="utf-8")
    argv = ["sweep", "plan", "table", "2", "--model", "hsnet-hm", "--backbone", "resnet50", "--cells", "reproduced"]
    argv += ["--sweep-dir", str(tmp_path / "sweep"), "--results", str(results), "--estimate"]
    assert run(argv) == 0
    out = " ".join(capsys.readouterr().err.split())  # whatever the console's width wrapped
    assert "skipped" not in out  # a bench record (no mIoU) is a valid record
    assert "GPU-hours for" in out and "with no measurement, not in the total" in out
    assert "speeds: My Own GPU, your bench records" in out
    assert "speeds: NVIDIA H200 measured 2026-11-26 (measurements/h200-2026-11-26/), not your device" in out

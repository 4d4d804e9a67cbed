"""A claimed row's overrides reach the right command: model arguments as --model-args on the training, test-time
options as the evaluation's flags, training keys as --key value; rows that differ only at test time share a run."""

from __future__ import annotations

import pytest

from hmrepro.errors import HmreproError
from hmrepro.sweep.plan import SweepSpec, build_plan, row_argv


def test_each_kind_of_override_goes_to_its_command():
    pairs = (("augment", "cats"), ("mask_refine", "false"), ("feature_layers", "layer3"), ("kshot", "fusion"))
    train, evaluation = row_argv(pairs, "row")
    assert train == ["--augment", "cats", "--model-args", "mask_refine=false;feature_layers=layer3"]
    assert evaluation == ["--kshot", "fusion"]


@pytest.mark.parametrize(("value", "flag"), [("0.75,1,1.25", "--multi-scale"), ("1", "--single-scale")])
def test_scales_become_the_evaluation_scale_flag(value, flag):
    assert row_argv((("scales", value),), "row") == ([], [flag])


def test_scales_hmrepro_cannot_run_are_refused_naming_the_row():
    with pytest.raises(HmreproError, match="row: scales=0.5,1 is not a test-time setting"):
        row_argv((("scales", "0.5,1"),), "row")


def _jobs(tmp_path, table: int):
    spec = SweepSpec(table=table, sweep_dir=tmp_path / "sweep", results=tmp_path / "results", paper="crcnet")
    return build_plan(spec)


def test_crcnet_kshot_rows_share_one_training_and_pass_their_kshot_mode_to_eval(tmp_path):
    jobs = _jobs(tmp_path, 4)
    trainings = [job for job in jobs if job.kind == "train"]
    assert len(trainings) == 4  # one per fold: Fusion, Finetune and Finetune + Fusion differ only at test time
    assert all("--model-args" in job.command and "--kshot" not in job.command for job in trainings)
    modes = {job.command[job.command.index("--kshot") + 1] for job in jobs if "--kshot" in job.command}
    assert modes == {"fusion", "finetune", "finetune-fusion"}
    assert not any("--mask-refine" in job.command for job in jobs)


def test_the_multi_scale_headline_row_is_evaluated_multi_scale(tmp_path):
    evaluations = [job for job in _jobs(tmp_path, 8) if job.kind == "eval"]
    assert evaluations and all("--multi-scale" in job.command for job in evaluations)
    assert not any("--scales" in job.command for job in evaluations)

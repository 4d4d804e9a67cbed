"""The episode runner, and every evaluation path loading a model's episodes with that model's preprocessing."""

from __future__ import annotations

import json

import pytest
import torch
from engine_helpers import synthetic_args
from typer.testing import CliRunner

from hmrepro import create_model
from hmrepro.cli.app import app
from hmrepro.data.benchmarks import get_benchmark, test_episodes
from hmrepro.data.dataset import EpisodeDataset
from hmrepro.data.splits import SplitFolder
from hmrepro.engine.evaluation.metrics import FewShotMeter
from hmrepro.engine.evaluation.runner import EpisodeSource, episode_loader, one_shot_logits, run_episodes, run_loader
from hmrepro.models.cards import EvalPlan

runner = CliRunner()
RANDOM_VAT = ["--weights", "random", "--no-pretrained", "--img-size", "64", "--device", "cpu"]


def _stand_in_learner(self, query_taps, support_taps):
    """[B, 2, 128, 128] logits of the query in milliseconds: these tests check what loads the episodes, not VAT's
    learner, whose fixed-size 4D correlation pass costs seconds on a CPU at any image size."""
    score = query_taps[-1][:, :1] - query_taps[-1][:, :1].mean() + support_taps[-1].mean()
    score = torch.nn.functional.interpolate(score, (128, 128), mode="bilinear", align_corners=True)
    return torch.cat([score, -score], dim=1)


@pytest.fixture
def stand_in_vat_learner(monkeypatch) -> None:
    from hmrepro.models.vat import VAT

    monkeypatch.setattr(VAT, "learner_logits", _stand_in_learner)


@pytest.fixture
def preprocessings(monkeypatch) -> list[str]:
    """The ``preprocess`` of every EpisodeDataset built while the test runs."""
    seen: list[str] = []
    build = EpisodeDataset.__init__

    def spy(self, *args, **kwargs):
        seen.append(kwargs.get("preprocess"))
        build(self, *args, **kwargs)

    monkeypatch.setattr(EpisodeDataset, "__init__", spy)
    return seen


def test_episode_dataset_has_no_default_preprocessing(synthetic_root):
    with pytest.raises(TypeError, match="preprocess"):
        EpisodeDataset("fss", synthetic_root, [], img_size=64)


@pytest.mark.parametrize(
    "command",
    [
        ["eval", "vat-hm", "-b", "pascal", "--episodes", "1", "--no-record", "--no-progress"],
        ["domain-shift", "vat", "--episodes", "1", "--no-record", "--no-progress"],
        ["viz", "episodes", "-b", "pascal", "-n", "1", "--model", "vat-hm"],
        ["viz", "episodes", "-b", "fss", "-n", "1", "--model", "vat"],
    ],
    ids=["eval", "domain-shift", "viz-episodes-pascal", "viz-episodes-fss"],
)
def test_every_evaluation_path_loads_vat_episodes_with_vat_preprocessing(
    command, preprocessings, stand_in_vat_learner, synthetic_root, tmp_path
):
    output = ["-o", str(tmp_path / "episodes.png")] if command[1] == "episodes" else []
    result = runner.invoke(app, [*command, *RANDOM_VAT, *synthetic_args(synthetic_root), *output])
    assert result.exit_code == 0, result.output
    assert preprocessings and set(preprocessings) == {"vat"}


def test_vat_domain_shift_records_say_vat(synthetic_root, stand_in_vat_learner, tmp_path):
    results = tmp_path / "results"
    args = ["domain-shift", "vat-hm", "--episodes", "1", "--no-progress", "--results", str(results), "--json"]
    result = runner.invoke(app, [*args, *RANDOM_VAT, *synthetic_args(synthetic_root)])
    assert result.exit_code == 0, result.output
    (printed,) = json.loads(result.stdout)
    (written,) = [json.loads(p.read_text()) for p in results.glob("*.json")]
    for record in (printed, written):
        assert record["preprocess"] == "vat" and record["kind"] == "domain-shift"
        assert record["benchmark"] == "coco2pascal" and record["img_size"] == 64 and record["episodes"] == 1


@pytest.fixture(scope="module")
def fss_episodes(synthetic_root):
    splits = SplitFolder(synthetic_root / "splits")
    bench = get_benchmark("fss")
    eps = test_episodes("fss", 0, 1, splits=splits)[:4]
    return bench, eps, bench.num_classes(splits), bench.class_ids(0, "test", splits)


def test_validation_prediction_matches_the_evaluation_at_one_shot(synthetic_root, fss_episodes):
    bench, eps, nclass, classes = fss_episodes
    torch.manual_seed(0)
    model = create_model("hsnet-hm", pretrained=False)
    plan = EvalPlan("hsnet", "hsnet", 64)
    cpu = torch.device("cpu")
    source = EpisodeSource(bench, synthetic_root, plan, cpu, bsz=2)
    evaluated = run_episodes(model, eps, source, nclass=nclass, class_ids=classes, keep_predictions=True)

    losses, reduced = [], []
    model.train()
    loader = episode_loader(source, eps)
    validated = run_loader(
        model,
        loader,
        FewShotMeter(nclass, classes),
        device=cpu,
        predict=one_shot_logits,
        on_batch=lambda batch, outputs, meter: losses.append(model.compute_objective(outputs, batch).item()),
        reduce=reduced.append,
    )
    assert model.training  # restored
    assert len(losses) == 2 and all(loss > 0 for loss in losses) and len(reduced) == 1
    assert (validated.miou, validated.fb_iou, validated.episodes) == (evaluated.miou, evaluated.fb_iou, 4)
    assert len(evaluated.predictions) == 4 and validated.predictions is None
    for prediction in evaluated.predictions:
        assert prediction.mask.shape == (64, 64) and (prediction.iou != prediction.iou or 0 <= prediction.iou <= 100)

"""Training on the synthetic benchmark.

The loss falls, validation beats trivial predictors, the run folder is complete."""

from __future__ import annotations

import json

import pytest
import torch
from engine_helpers import LEARN_EPOCHS, tiny_config

from hmrepro.data.benchmarks import get_benchmark, test_episodes
from hmrepro.data.dataset import EpisodeDataset
from hmrepro.data.splits import SplitFolder
from hmrepro.engine.checkpoint_io import read_checkpoint
from hmrepro.engine.runs import read_metrics
from hmrepro.engine.training import distributed
from hmrepro.engine.training.train import global_batches
from hmrepro.errors import HmreproError
from hmrepro.metrics import FewShotMeter


@pytest.fixture(scope="module")
def run(trained_hsnet_run):
    return trained_hsnet_run


def _trivial_mious(root, img_size: int) -> dict[str, float]:
    """mIoU of predictors that look at no query pixel, on the validation episodes the run used."""
    splits = SplitFolder(root / "splits")
    bench = get_benchmark("fss")
    episodes = test_episodes("fss", 0, 1, split="val", splits=splits)
    data = EpisodeDataset(bench, root, episodes, img_size=img_size, preprocess="hsnet")
    meters = {
        name: FewShotMeter(bench.num_classes(splits), bench.class_ids(0, "val", splits))
        for name in ("bg", "fg", "support")
    }
    for i in range(len(data)):
        item = data[i]
        gt, cls, ignore = item["query_mask"], item["class_id"][None], item["query_ignore"]
        meters["bg"].update(torch.zeros_like(gt), gt, cls, ignore)
        meters["fg"].update(torch.ones_like(gt), gt, cls, ignore)
        meters["support"].update(item["support_masks"][0], gt, cls, ignore)  # copy the support mask
    return {name: meter.compute()[0] for name, meter in meters.items()}


@pytest.mark.slow  # the session's trained hsnet run (6 epochs)
def test_training_loss_falls_and_validation_beats_trivial_predictors(run, synthetic_root):
    rows = read_metrics(run)
    assert [r["epoch"] for r in rows] == list(range(LEARN_EPOCHS))
    assert rows[-1]["train_loss"] < 0.8 * rows[0]["train_loss"]
    best = max(r["val_miou"] for r in rows)
    trivial = _trivial_mious(synthetic_root, 64)
    assert trivial["bg"] == 0.0
    # all-foreground and support-mask copying are the predictors that know the episode but not the query
    assert best > trivial["fg"] + 5 and best > trivial["support"] + 5, (best, trivial)


@pytest.mark.slow  # the session's trained hsnet run (6 epochs)
def test_run_folder_holds_config_metrics_checkpoints_and_run_info(run):
    config = json.loads((run / "config.json").read_text())
    assert config["model"] == "hsnet" and config["benchmark"] == "fss" and config["img_size"] == 64
    assert config["lr"] == 1e-3 and config["optimizer"] == "adam"  # from the recipe
    assert (
        config["precision"] == "fp32"
        and config["tf32"] is False
        and config["device"] == "cpu"
        and config["calibrate_bn"] is True
    )
    info = json.loads((run / "run.json").read_text())
    assert info["status"] == "finished" and info["world_size"] == 1 and info["wall_seconds"] > 0
    assert info["versions"]["torch"] == torch.__version__ and "device" in info
    rows = read_metrics(run)
    best_row = max(rows, key=lambda r: r["val_miou"])
    for key in ("train_loss", "train_miou", "val_miou", "val_fb_iou", "train_episodes_per_s", "val_episodes"):
        assert key in rows[0]
    best = read_checkpoint(run / "best_model.pt")
    assert best.source_format == "hmrepro" and best.model_name == "hsnet"
    assert best.metadata["epoch"] == best_row["epoch"]
    assert best.metadata["val_miou"] == pytest.approx(best_row["val_miou"])
    assert any(k.startswith("backbone.") for k in best.state_dict)  # standalone: the whole model
    last = read_checkpoint(run / "last.pt")
    # resume state: the learnable part, and of the frozen backbone only the BatchNorm statistics calibrated for this
    # random backbone (its weights are rebuilt from the seed)
    frozen = [k for k in last.state_dict if k.startswith("backbone.")]
    assert frozen and all(
        k.rsplit(".", 1)[-1] in ("running_mean", "running_var", "num_batches_tracked") for k in frozen
    )
    assert any(not k.startswith("backbone.") for k in last.state_dict)
    assert last.extra["epoch"] == LEARN_EPOCHS and last.extra["step"] == 0 and last.extra["done"]
    assert {"optimizer", "rng", "history", "best_miou"} <= set(last.extra)
    assert not list(run.glob(".*.tmp"))


@pytest.mark.slow  # the session's trained hsnet run (6 epochs)
def test_existing_run_folder_is_not_overwritten(run, synthetic_root):
    from hmrepro.engine.training.train import train

    with pytest.raises(HmreproError, match="--resume"):
        train(tiny_config("hsnet", synthetic_root, run, epochs=1), progress=False)


@pytest.mark.slow  # the session's trained hsnet run (6 epochs)
def test_resuming_a_finished_run_does_nothing_unless_epochs_grow(run, synthetic_root):
    from hmrepro.engine.training.train import resume_config, train

    before = (run / "last.pt").read_bytes()
    train(resume_config(run), resume=True, progress=False)
    assert (run / "last.pt").read_bytes() == before


def test_global_batches_are_sharded_disjointly_and_completely():
    for n, bsz, world in [(80, 8, 2), (81, 8, 2), (83, 20, 4), (7, 3, 3)]:
        batches = global_batches(n, bsz, world)
        seen = []
        for b in batches:
            parts = [distributed.shard(list(b), r, world) for r in range(world)]
            assert all(parts), "every rank gets at least one episode"
            assert sorted(sum(parts, [])) == list(b)
            seen += list(b)
            assert sum(distributed.loss_scale(len(p), len(b), world) for p in parts) == pytest.approx(world)
        assert seen == list(range(len(seen))) and n - len(seen) < world
    with pytest.raises(HmreproError, match="batch size"):
        global_batches(10, 2, 3)


def test_augmentation_is_reproducible_per_episode():
    import numpy as np
    from PIL import Image

    from hmrepro.data.augment import CatsAugment, cats_augment

    img = Image.fromarray((np.arange(48 * 40 * 3) % 251).astype(np.uint8).reshape(48, 40, 3))
    aug = CatsAugment(32)
    aug.reseed((0, 1, 2))
    a = aug(img)
    aug.reseed((0, 1, 2))
    assert torch.equal(a, aug(img)) and a.shape == (3, 32, 32)
    outs = set()
    for k in range(40):
        out = np.asarray(cats_augment(img, np.random.default_rng(k), p=1.0 if k % 2 else 0.2))
        assert out.shape == (48, 40, 3) and out.dtype == np.uint8
        outs.add(out.tobytes())
    assert len(outs) > 20  # the draws differ between episodes


def test_channels_last_backbone_gives_the_same_logits():
    import hmrepro

    torch.manual_seed(0)
    model = hmrepro.create_model("hsnet-hm", pretrained=False).eval()
    q, s = torch.randn(2, 3, 64, 64), torch.randn(2, 3, 64, 64)
    m = (torch.rand(2, 64, 64) > 0.5).float()
    with torch.no_grad():
        ref = model(q, s, m)
        model.backbone.to(memory_format=torch.channels_last)
        out = model(q.contiguous(memory_format=torch.channels_last), s, m)
    assert torch.allclose(ref, out, atol=1e-4)


def test_parameters_without_gradient_are_frozen_and_the_rng_is_untouched():
    from hmrepro.engine.training.train import freeze_gradientless
    from hmrepro.models.interface import FewShotModule

    class TwoHeads(FewShotModule):
        def __init__(self):
            super().__init__()
            self.used = torch.nn.Conv2d(3, 2, 1)
            self.unused = torch.nn.Linear(2, 2)
            self.dropout = torch.nn.Dropout(0.5)
            self.norm = torch.nn.BatchNorm2d(2)

        def forward(self, query_img, support_img, support_mask):
            return self.norm(self.dropout(self.used(query_img)))

        def compute_objective(self, outputs, batch):
            return torch.nn.functional.cross_entropy(outputs, batch["query_mask"])

    model = TwoHeads().train()
    batch = {
        "query_img": torch.randn(2, 3, 4, 4),
        "support_imgs": torch.randn(2, 1, 3, 4, 4),
        "support_masks": torch.ones(2, 1, 4, 4),
        "query_mask": torch.ones(2, 4, 4, dtype=torch.long),
    }
    stats = model.norm.running_mean.clone()
    rng = torch.get_rng_state()
    assert freeze_gradientless(model, batch) == ["unused.weight", "unused.bias"]
    assert not model.unused.weight.requires_grad and model.used.weight.requires_grad
    assert all(p.grad is None for p in model.parameters())
    assert torch.equal(torch.get_rng_state(), rng)  # the probe's dropout drew from a copy of the RNG
    assert torch.equal(model.norm.running_mean, stats)  # and its BatchNorm update was undone

"""The training pieces of the SGD families (CRCNet, MCE): SGD + poly schedule, geometric augmentation of image and
masks with ignore padding, BAM's training-image rule, and the loss's ignore map. Cheap: a 2-layer stand-in model
drives the real training loop at 32 px."""

from __future__ import annotations

import json
import os
import signal

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from hmrepro.data.benchmarks import get_benchmark
from hmrepro.data.dataset import EpisodeDataset
from hmrepro.data.episodes import Episode
from hmrepro.data.geometric import IGNORE_LABEL, GeometricAugment, GeometricParams
from hmrepro.data.splits import SplitFolder
from hmrepro.data.training_filter import class_pixel_counts, filter_training_pool
from hmrepro.engine.checkpoint_io import read_checkpoint
from hmrepro.engine.recipes import RecipeError, resolve
from hmrepro.engine.training import schedules
from hmrepro.engine.training.train import TrainingInterrupted, build_optimizer, resume_config, train
from hmrepro.errors import HmreproError
from hmrepro.models.interface import FewShotModule, pixel_cross_entropy
from hmrepro.progress import Silent

# ---------------------------------------------------------------------------------------------------------------
# Schedule and optimizer
# ---------------------------------------------------------------------------------------------------------------


def test_poly_factor_is_pfenets_formula_and_constant_is_one():
    assert schedules.lr_factor("poly", 1, 10) == pytest.approx(0.9**0.9)
    assert schedules.lr_factor("poly", 5, 10, power=2.0) == pytest.approx(0.25)
    assert schedules.lr_factor("poly", 10, 10) == 0.0
    assert schedules.lr_factor("constant", 7, 10) == 1.0
    with pytest.raises(HmreproError, match="lr_schedule 'step'"):
        schedules.lr_factor("step", 1, 10)


def test_sgd_keeps_momentum_weight_decay_and_base_lr_through_a_state_dict_round_trip():
    params = [nn.Parameter(torch.ones(3))]
    opt = build_optimizer("sgd", params, lr=0.01, weight_decay=1e-4, momentum=0.8)
    assert isinstance(opt, torch.optim.SGD) and opt.param_groups[0]["momentum"] == 0.8
    assert opt.param_groups[0]["weight_decay"] == 1e-4
    schedules.apply_schedule(opt, 0.5)
    again = build_optimizer("sgd", [nn.Parameter(torch.ones(3))], lr=0.02, weight_decay=1e-4, momentum=0.8)
    again.load_state_dict(opt.state_dict())
    assert schedules.apply_schedule(again, 0.25) == pytest.approx(0.0025)  # the saved run's base, not 0.02


# ---------------------------------------------------------------------------------------------------------------
# The training loop with SGD + poly + geometric augmentation, interrupted and resumed
# ---------------------------------------------------------------------------------------------------------------


class _TinyBackbone(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.requires_grad_(False)

    def taps(self, images: torch.Tensor) -> list[torch.Tensor]:
        return [torch.relu(self.conv(images))]


class _TinyModel(FewShotModule):
    """Masked-average prototype + cosine similarity + one conv; its loss honours ``query_ignore``."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = _TinyBackbone()
        self.head = nn.Conv2d(5, 2, 3, padding=1)

    def forward(self, query, support, mask):
        fq, fs = self.backbone.taps(query)[0], self.backbone.taps(support)[0]
        m = mask[:, None]
        proto = (fs * m).sum((2, 3), keepdim=True) / (m.sum((2, 3), keepdim=True) + 1e-5)
        return self.head(torch.cat([fq, torch.cosine_similarity(fq, proto, dim=1)[:, None]], dim=1))

    def compute_objective(self, outputs, batch):
        return pixel_cross_entropy(outputs, batch["query_mask"], batch["query_ignore"])


class _StopDuring(Silent):
    """Sends this process SIGTERM at the first iteration of ``task``: the loop checkpoints and stops there."""

    def __init__(self, task: str) -> None:
        self.task, self.sent = task, False

    def start(self, description: str, total: int, completed: int = 0):
        return description

    def advance(self, task, n: int = 1, info: str = "") -> None:
        if task == self.task and not self.sent:
            self.sent = True
            os.kill(os.getpid(), signal.SIGTERM)


@pytest.fixture
def tiny_model(monkeypatch):
    import hmrepro

    monkeypatch.setattr(hmrepro, "create_model", lambda *a, **k: (torch.manual_seed(0), _TinyModel())[1])


def _config(root, out, **extra):
    from hmrepro.engine.training.train import build_config

    values = dict(
        pretrained=False,
        calibrate_bn=False,
        img_size=32,
        bsz=4,
        val_bsz=4,
        val_episodes=4,
        workers=0,
        checkpoint_every=0,
        device="cpu",
        deterministic=True,
        epochs=2,
        epoch_iterations=3,
        optimizer="sgd",
        lr=0.05,
        weight_decay=1e-4,
        lr_schedule="poly",
        augment="geometric",
        data_root=str(root),
        splits=str(root / "splits"),
        out=str(out),
    )
    return build_config("hsnet", "fss", 0, {**values, **extra})


def _lrs(run) -> list[float]:
    return [json.loads(line)["lr"] for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow  # two trainings and a resume
def test_sgd_poly_run_resumes_on_the_same_curve_with_the_same_weights(synthetic_root, tmp_path, tiny_model):
    reference = train(_config(synthetic_root, tmp_path / "a"))
    assert _lrs(reference) == pytest.approx([0.05 * 0.5**0.9, 0.0])  # end of epoch 0 (3 of 6 iterations), end of run
    saved = json.loads((reference / "config.json").read_text())
    assert (saved["optimizer"], saved["lr_schedule"], saved["poly_power"], saved["momentum"]) == (
        "sgd",
        "poly",
        0.9,
        0.9,
    )
    assert saved["augment"] == "geometric" and saved["scale_range"] == [0.9, 1.1]

    run = tmp_path / "b"
    with pytest.raises(TrainingInterrupted):
        train(_config(synthetic_root, run), progress=_StopDuring("epoch 1"))
    assert read_checkpoint(run / "last.pt").extra["step"] == 1
    with pytest.raises(HmreproError, match="poly learning-rate schedule"):
        resume_config(run, {"epochs": 3})
    train(resume_config(run), resume=True)

    expected, got = read_checkpoint(reference / "last.pt").state_dict, read_checkpoint(run / "last.pt").state_dict
    assert all(torch.equal(expected[k], got[k]) for k in expected)
    assert _lrs(run) == _lrs(reference)


class _KShotModel(_TinyModel):
    """Trains on K-shot episodes: ``forward`` takes [B, K, 3, H, W] supports and averages the shots' logits."""

    trains_kshot = True
    shots_seen: list = []

    def forward(self, query, support, mask):
        if support.dim() == 4:
            return super().forward(query, support, mask)
        _KShotModel.shots_seen.append(support.shape[1])
        return torch.stack(
            [super(_KShotModel, self).forward(query, support[:, k], mask[:, k]) for k in range(support.shape[1])]
        ).mean(0)


@pytest.mark.slow  # a training
def test_kshot_training_gives_every_support_to_a_family_that_trains_so(synthetic_root, tmp_path, monkeypatch):
    import hmrepro
    from hmrepro.engine.training.train import check_training_shot

    monkeypatch.setattr(hmrepro, "create_model", lambda *a, **k: _KShotModel())
    train(_config(synthetic_root, tmp_path / "k", shot=3, epochs=1, epoch_iterations=1, lr_schedule="constant"))
    assert _KShotModel.shots_seen == [3]  # the training step; validation stays 1-shot
    with pytest.raises(HmreproError, match="trains on 1-shot episodes only"):
        check_training_shot(_TinyModel(), 5, "hsnet")
    check_training_shot(_TinyModel(), 1, "hsnet")


class _ShotRecorder(_KShotModel):
    """Records (training?, shots) of every forward call."""

    calls: list = []

    def forward(self, query, support, mask):
        _ShotRecorder.calls.append((self.training, support.shape[1] if support.dim() == 5 else 1))
        return super().forward(query, support, mask)


@pytest.mark.slow  # an MCE training
def test_mce_recipe_trains_on_bams_episodes_and_validates_kshot_as_bam(synthetic_root, tmp_path, monkeypatch):
    """MCE's recipe: BAM's training loader (manual_seed 321 + the run's seed) and BAM's validation (seed 321, the
    model's shot, each query scored at its original label size)."""
    import shutil

    import hmrepro
    from hmrepro.data.bam import bam_training_episodes, bam_training_pool
    from hmrepro.data.benchmarks import test_episodes
    from hmrepro.data.splits import write_checksums
    from hmrepro.engine.training import train as engine
    from hmrepro.engine.training.train import build_config

    splits = tmp_path / "splits"  # the fold's val images gain the training images of its classes: 2-shot episodes
    shutil.copytree(synthetic_root / "splits", splits)
    extra = (splits / "pascal" / "trn_fold0.txt").read_text()
    (splits / "pascal" / "val_fold0.txt").write_text((splits / "pascal" / "val_fold0.txt").read_text() + extra)
    write_checksums(splits)
    monkeypatch.setattr(hmrepro, "create_model", lambda *a, **k: (torch.manual_seed(0), _ShotRecorder())[1])
    trained, validated = [], []

    def step(model, batch, *args, **kwargs):
        names = batch["support_names"]
        trained.extend(
            (q, tuple(s[i] for s in names), int(c))
            for i, (q, c) in enumerate(zip(batch["query_name"], batch["class_id"]))
        )
        return real_step(model, batch, *args, **kwargs)

    def validate(model, batch, size):
        validated.append((batch["query_name"][0], size == tuple(batch["query_mask"].shape[-2:])))
        return real_validate(model, batch, size)

    real_step, real_validate = engine.train_step, engine.bam_validation_logits
    monkeypatch.setattr(engine, "train_step", step)
    monkeypatch.setattr(engine, "bam_validation_logits", validate)
    overrides = dict(
        pretrained=False, calibrate_bn=False, img_size=32, bsz=4, val_episodes=3, workers=0, checkpoint_every=0,
        device="cpu", epochs=1, epoch_iterations=2, shot=2, min_class_pixels=1, exclude_novel_images=False,
        data_root=str(synthetic_root),
        splits=str(splits), out=str(tmp_path / "run"),
    )  # fmt: skip
    cfg = build_config("mce", "pascal", 0, overrides)
    assert (cfg.train_sampler, cfg.validation) == ("bam", "bam")
    _ShotRecorder.calls = []
    train(cfg)

    bench = get_benchmark("pascal")
    listed, present = bench.pool(SplitFolder(splits), "trn", 0), {}
    training_classes = bench.class_ids(0, "trn", SplitFolder(splits))
    kept = filter_training_pool(
        listed,
        bench,
        synthetic_root,
        training_classes,
        exclude_novel_images=False,
        min_class_pixels=1,
        classes_present=present,
    )
    expected = bam_training_episodes(bam_training_pool(listed, kept, present), 2, 321, 0, 4)[:8]
    assert trained == [tuple(e) for e in expected]
    val = test_episodes("pascal", 0, 2, protocol="bam", split="val", splits=SplitFolder(splits), seed=321)[:3]
    assert validated == [(e.query, True) for e in val]
    assert [shots for training, shots in _ShotRecorder.calls if not training] == [2, 2, 2]
    assert build_config("hsnet", "pascal", 0).validation == "one-shot"  # the others keep their authors' validation


# ---------------------------------------------------------------------------------------------------------------
# Geometric augmentation
# ---------------------------------------------------------------------------------------------------------------


def _scene(h: int = 20, w: int = 30) -> tuple[Image.Image, np.ndarray]:
    rng = np.random.default_rng(1)
    image = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
    label = np.zeros((h, w), dtype=np.uint8)
    label[5:12, 8:20] = 1
    label[0, :] = IGNORE_LABEL
    return image, label


OFF = dict(scale_range=(1, 1), rotate_p=0.0, blur_p=0.0, flip_p=0.0, crop_keep=0.0)


def test_geometric_is_reproducible_per_reseed_and_differs_across_keys():
    aug = GeometricAugment(16)
    image, label = _scene()
    outs = []
    for key in [(0, 0, 1), (0, 0, 1), (0, 0, 2)]:
        aug.reseed(key)
        outs.append(aug.pair(image, label))
    assert torch.equal(outs[0][0], outs[1][0]) and torch.equal(outs[0][1], outs[1][1])
    assert not torch.equal(outs[0][0], outs[2][0])
    assert set(np.unique(outs[0][1].numpy())) <= {0, 1, IGNORE_LABEL}


def test_padding_is_mean_colour_in_the_image_and_pad_label_in_the_mask():
    image, label = _scene(10, 12)
    img, lab = GeometricAugment(16, GeometricParams(**OFF)).pair(image, label)
    assert img.shape == (3, 16, 16) and lab.shape == (16, 16)
    assert torch.allclose(img[:, 0, 0], torch.zeros(3), atol=1e-6)  # the mean colour normalises to 0
    assert lab[0, 0] == IGNORE_LABEL and lab[15, 15] == IGNORE_LABEL  # 3 rows above, 3 below; 2 columns each side
    assert torch.equal(lab[3:13, 2:14], torch.from_numpy(label))
    _, lab0 = GeometricAugment(16, GeometricParams(**{**OFF, "pad_label": 0})).pair(image, label)
    assert lab0[15, 15] == 0 and lab0[3, 5] == IGNORE_LABEL  # the mask's own ignore pixels stay


def test_flip_scale_square_and_rotation_move_image_and_mask_together():
    image, label = _scene()
    flip = GeometricAugment(20, GeometricParams(**{**OFF, "flip_p": 1.0}))
    img, lab = flip.pair(image, label)
    expected = label[:, ::-1]
    window = lab.numpy()  # 20 x 30 → a 20 x 20 crop of the flipped mask
    assert any(np.array_equal(window, expected[:, x : x + 20]) for x in range(11))
    square = GeometricAugment(20, GeometricParams(**{**OFF, "scale_range": (1.5, 1.5), "scale_mode": "square"}))
    assert square.pair(image, label)[1].shape == (20, 20)
    rotated = GeometricAugment(30, GeometricParams(**{**OFF, "rotate_p": 1.0, "rotate_range": (45, 45)}))
    _, lab = rotated.pair(image, label)
    assert lab[5, 0] == IGNORE_LABEL  # a corner uncovered by the 45° turn is padding (ignored), not background


def test_crop_redraws_until_it_keeps_most_of_the_object():
    image = Image.new("RGB", (40, 20))
    label = np.zeros((20, 40), dtype=np.uint8)
    label[:, 30:] = 1  # an object at the right edge: 2 of the 21 windows of 20 px keep 85 % of it

    def kept(crop_keep: float) -> int:
        aug = GeometricAugment(20, GeometricParams(**{**OFF, "crop_keep": crop_keep}))
        hits = 0
        for i in range(20):
            aug.reseed((i,))
            hits += int((aug.pair(image, label)[1] == 1).sum()) >= 0.85 * 200
        return hits

    assert kept(0.85) >= 15 and kept(0.0) <= 6


def test_geometric_dataset_carries_padding_as_ignore_and_the_loss_skips_it(synthetic_root):
    bench = get_benchmark("pascal")
    pool = bench.pool(SplitFolder(synthetic_root / "splits"), "trn", 0)
    name, class_id = pool.queries[0]
    support = next(n for n in pool.classwise[class_id] if n != name)
    params = GeometricParams(**{**OFF, "scale_range": (0.5, 0.5)})
    size = max(Image.open(bench.image_path(synthetic_root, name)).size)  # half of it cannot fill the crop
    dataset = EpisodeDataset(
        bench,
        synthetic_root,
        [Episode(name, (support,), class_id)],
        img_size=size,
        transform=GeometricAugment(size, params),
        preprocess="hsnet",
    )
    item = dataset[0]
    assert item["query_img"].shape == (3, size, size) and item["support_masks"].shape == (1, size, size)
    assert item["query_ignore"][0, 0] == 1 and item["support_ignores"][0, 0, 0] == 1 and item["query_mask"][0, 0] == 0
    assert item["query_mask"].sum() > 0
    logits = torch.randn(1, 2, size, size)
    wild = logits.clone()
    wild[:, :, item["query_ignore"] > 0] = 1e3 * torch.tensor([-1.0, 1.0])[:, None]  # confidently "foreground"
    batch = (item["query_mask"][None], item["query_ignore"][None])
    assert pixel_cross_entropy(wild, *batch) == pytest.approx(pixel_cross_entropy(logits, *batch).item())
    assert pixel_cross_entropy(wild, batch[0]) > 10 * pixel_cross_entropy(logits, batch[0])  # without: counted
    with pytest.raises(ValueError, match="original-size"):
        EpisodeDataset(
            bench, synthetic_root, [], transform=GeometricAugment(size), original_size=True, preprocess="hsnet"
        )


def test_geometric_recipe_values_are_checked():
    assert GeometricParams.from_config({"flip_p": 0.25, "lr": 1.0}) == GeometricParams(flip_p=0.25)
    with pytest.raises(RecipeError, match="rotate_range"):
        resolve("hsnet", "pascal", {"augment": "geometric", "rotate_range": [10, -10]})
    with pytest.raises(RecipeError, match="lr_schedule"):
        resolve("hsnet", "pascal", {"lr_schedule": "cosine"})
    with pytest.raises(RecipeError, match="pad_label"):
        resolve("hsnet", "pascal", {"pad_label": 7})


# ---------------------------------------------------------------------------------------------------------------
# BAM's training-image rule
# ---------------------------------------------------------------------------------------------------------------


def test_bam_rule_drops_images_with_novel_pixels_and_small_classes(synthetic_root):
    bench, splits = get_benchmark("pascal"), SplitFolder(synthetic_root / "splits")
    pool = bench.pool(splits, "trn", 0)
    training, novel = set(bench.class_ids(0, "trn")), set(bench.class_ids(0, "val"))
    counts = {n: class_pixel_counts(bench, synthetic_root, n) for n in set(pool.all_names())}
    with_novel = {n for n, c in counts.items() if set(c) & novel}
    assert with_novel, "the synthetic benchmark has training images that also show a novel class"

    kept = filter_training_pool(pool, bench, synthetic_root, training, exclude_novel_images=True)
    names = {n for n, _ in kept.queries} | set(kept.all_names())
    assert names and not names & with_novel
    assert [q for q in pool.queries if q[0] not in with_novel] == kept.queries  # order kept, nothing else dropped

    threshold = min(counts[n][c] for n, c in pool.queries) + 1  # drops the smallest object's pair(s)
    small = filter_training_pool(
        pool, bench, synthetic_root, training, exclude_novel_images=False, min_class_pixels=threshold
    )
    assert small.queries and all(counts[n][c] >= threshold for n, c in small.queries)
    assert all(counts[n][c] >= threshold for c, ns in small.classwise.items() for n in ns)
    assert len(small.queries) < len(pool.queries)
    with pytest.raises(HmreproError, match="relax it in the recipe"):
        filter_training_pool(pool, bench, synthetic_root, training, exclude_novel_images=False, min_class_pixels=10**9)

    with pytest.raises(HmreproError, match="exclude_novel_images"):
        filter_training_pool(
            get_benchmark("fss").pool(splits, "trn", 0),
            get_benchmark("fss"),
            synthetic_root,
            [0],
            exclude_novel_images=True,
        )

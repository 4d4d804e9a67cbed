"""BAM's base learner (deep-stem ResNet + PSPNet, ``hmrepro train pspnet``) and MCE's frozen base-learner encoder."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import hmrepro
from hmrepro.cli.app import app
from hmrepro.data.base_learner import base_image_names, base_label_table
from hmrepro.data.benchmarks import get_benchmark
from hmrepro.engine.checkpoint_io import save_checkpoint
from hmrepro.engine.training.train_base import ConfusionCounts, build_base_config, build_base_optimizer, epoch_batches
from hmrepro.errors import MissingDataError
from hmrepro.models.backbone import DEEP_STEM_LAYERS, DeepStemResNet, FrozenStagedDeepResNet
from hmrepro.models.pspnet import PSPNet, from_bam_state_dict

runner = CliRunner()

# BAM's PSPNet layer0 = Sequential(conv1, bn1, relu1, conv2, bn2, relu2, conv3, bn3, relu3, maxpool)
BAM_LAYER0 = {"conv1": 0, "bn1": 1, "conv2": 3, "bn2": 4, "conv3": 6, "bn3": 7}


@pytest.fixture(scope="module")
def pspnet() -> PSPNet:
    torch.manual_seed(0)
    return PSPNet("resnet50", pretrained=False, classes=16).eval()


def _bam_keys(state: dict) -> dict:
    """Our PSPNet state dict as BAM's ``best.pth`` holds it: DDP's ``module.``, ``layer0.<i>`` for the stem, and
    the encoder twice (``layer<k>.*`` and ``encoder.<k>.*``: BAM's ``encoder`` is a Sequential of the same layers)."""
    out = {}
    for key, value in state.items():
        if key.startswith("backbone.fc."):
            continue  # BAM's PSPNet keeps no ImageNet classifier
        if key.startswith("backbone."):
            name, rest = key[len("backbone.") :].split(".", 1)
            layer = f"layer0.{BAM_LAYER0[name]}" if name in BAM_LAYER0 else name
            out[f"module.{layer}.{rest}"] = value
            out[f"module.encoder.{int(layer[5])}.{(layer + '.' + rest).split('.', 1)[1]}"] = value
        else:
            out[f"module.{key}"] = value
    return out


def test_the_deep_stem_is_three_3x3_convs_and_the_network_keeps_output_stride_8():
    net = DeepStemResNet("resnet50")
    stem = [(c.in_channels, c.out_channels, c.kernel_size, c.stride) for c in (net.conv1, net.conv2, net.conv3)]
    assert stem == [(3, 64, (3, 3), (2, 2)), (64, 64, (3, 3), (1, 1)), (64, 128, (3, 3), (1, 1))]
    assert net.layer1[0].conv1.in_channels == 128 and net.layer1[0].downsample[0].in_channels == 128
    assert {b.conv2.dilation for b in net.layer3} == {(2, 2)} and {b.conv2.dilation for b in net.layer4} == {(4, 4)}
    assert net.features(torch.randn(1, 3, 65, 65)).shape == (1, 2048, 9, 9)  # BAM: (473 - 1) / 8 + 1 = 60
    assert DEEP_STEM_LAYERS == {"resnet50": (3, 4, 6, 3), "resnet101": (3, 4, 23, 3)}


def test_pspnet_is_bams_base_learner(pspnet):
    assert [len(f) for f in pspnet.ppm.features] == [4, 4, 4, 4]
    assert [f[0].output_size for f in pspnet.ppm.features] == [1, 2, 3, 6]
    assert pspnet.cls[0].in_channels == 4096 and pspnet.cls[4].out_channels == 16
    assert isinstance(pspnet.cls[3], torch.nn.Dropout2d) and pspnet.cls[3].p == 0.1
    with torch.no_grad():
        assert pspnet(torch.randn(1, 3, 33, 33)).shape == (1, 16, 33, 33)  # zoom 8: int((33 - 1) / 8 * 8 + 1)
    label = torch.full((1, 33, 33), 255)
    label[0, 0, 0] = 3
    logits = torch.zeros(1, 16, 33, 33)
    assert torch.isclose(pspnet.compute_objective(logits, label), torch.tensor(np.log(16.0), dtype=torch.float32))


def test_bams_published_keys_load_into_our_pspnet(pspnet):
    ours = pspnet.state_dict()
    converted = from_bam_state_dict(_bam_keys(ours))
    assert set(converted) == {k for k in ours if not k.startswith("backbone.fc.")}
    assert all(torch.equal(converted[k], ours[k]) for k in converted)


def test_bams_optimizer_groups_and_learning_rates(pspnet):
    pascal, coco = build_base_config("pascal", 0), build_base_config("coco", 0)
    assert [g["lr"] for g in build_base_optimizer(pspnet, pascal).param_groups] == [2.5e-4, 2.5e-3, 2.5e-3]
    assert [g["lr"] for g in build_base_optimizer(pspnet, coco).param_groups] == [2.5e-3] * 3
    groups = build_base_optimizer(pspnet, pascal).param_groups
    assert (groups[0]["momentum"], groups[0]["weight_decay"]) == (0.9, 1e-4)


def test_the_recipe_is_bams_base_yaml():
    c = build_base_config("pascal", 1)
    assert (c.lr, c.bsz, c.img_size, c.val_size, c.epochs, c.patience, c.val_bsz) == (2.5e-4, 12, 417, 417, 100, 75, 6)
    assert (c.scale_range, c.rotate_range, c.lr_schedule, c.poly_power) == ((0.5, 2.0), (-10.0, 10.0), "poly", 0.9)
    c = build_base_config("coco", 0, {"bsz": 4})
    assert (c.epochs, c.val_bsz, c.index_split, c.bsz) == (20, 4, -1, 4)
    with pytest.raises(hmrepro.errors.HmreproError, match="fss"):
        build_base_config("fss", 0)


def test_labels_keep_the_folds_base_classes_and_drop_the_novel_ones():
    pascal = base_label_table(get_benchmark("pascal"), 0)  # stored value = VOC class 1..20; fold 0's novel: 1..5
    assert pascal[[0, 1, 5, 6, 7, 20, 255]].tolist() == [0, 0, 0, 1, 2, 15, 255]
    coco = base_label_table(get_benchmark("coco"), 0)  # BAM's FWB split: fold 0's novel classes are 1, 5, 9, ...
    assert coco[[1, 2, 3, 4, 5, 6, 80]].tolist() == [0, 1, 2, 3, 0, 4, 60]


def test_epoch_batches_drop_the_last_partial_batch_and_depend_on_seed_and_epoch():
    batches = epoch_batches(7, 3, seed=0, epoch=1)
    assert [len(b) for b in batches] == [3, 3]
    drawn = [i for b in batches for _, _, i in b]
    assert len(set(drawn)) == 6 and set(drawn) <= set(range(7))
    assert [position for b in batches for _, position, _ in b] == list(range(6))
    assert batches == epoch_batches(7, 3, seed=0, epoch=1) and batches != epoch_batches(7, 3, seed=0, epoch=2)
    assert len(epoch_batches(7, 3, 0, 0, cap=1)) == 1


def test_confusion_counts_are_bams_intersection_and_union():
    counts = ConfusionCounts(3)
    counts.update(torch.tensor([0, 1, 1, 2, 2]), torch.tensor([0, 1, 2, 255, 2]))
    assert counts.intersection.tolist() == [1, 1, 1] and counts.union.tolist() == [1, 2, 2]
    assert counts.base_miou() == pytest.approx(50.0) and counts.miou() == pytest.approx(200 / 3)


def test_mce_freezes_the_base_learners_encoder(pspnet, tmp_path):
    """An MCE built from a base-learner run folder (and from BAM's ``best.pth``) freezes exactly its encoder."""
    run = tmp_path / "run"
    run.mkdir()
    save_checkpoint(run / "best_model.pt", pspnet, model_name="pspnet", backbone="resnet50")
    torch.save({"epoch": 3, "state_dict": _bam_keys(pspnet.state_dict())}, tmp_path / "best.pth")
    encoder = {k: v for k, v in pspnet.state_dict().items() if k.startswith("backbone.") and ".fc." not in k}
    for source in (run, tmp_path / "best.pth"):
        mce = hmrepro.create_model("mce", backbone="resnet50", pretrained=True, encoder_weights=str(source))
        assert isinstance(mce.backbone, FrozenStagedDeepResNet)
        frozen = {k: v for k, v in mce.state_dict().items() if k.startswith("backbone.") and ".fc." not in k}
        assert frozen.keys() == encoder.keys()
        assert all(torch.equal(frozen[k], encoder[k]) for k in encoder)
        mce.train()
        assert not mce.backbone.training and not any(p.requires_grad for p in mce.backbone.parameters())


def test_mce_defaults_to_the_base_learner_and_says_what_it_needs():
    with pytest.raises(MissingDataError, match="encoder_weights"):
        hmrepro.create_model("mce", backbone="resnet50", pretrained=True)
    with torch.device("meta"):  # attributes and layer shapes only: no weights allocated nor initialised
        random = hmrepro.create_model("mce", backbone="resnet50", pretrained=False)
        imagenet = hmrepro.create_model("mce", backbone="resnet50", pretrained=False, encoder="imagenet")
    assert random.encoder == "pspnet" and random.backbone.conv1.kernel_size == (3, 3)
    assert imagenet.backbone.conv1.kernel_size == (7, 7) and not hasattr(imagenet.backbone, "conv3")


@pytest.mark.slow
def test_train_pspnet_runs_on_the_synthetic_benchmark_and_mce_freezes_its_encoder(synthetic_root, tmp_path):
    out = tmp_path / "run"
    args = ["train", "pspnet", "-b", "pascal", "-f", "0", "--no-pretrained", "--data-root", str(synthetic_root)]
    args += ["--splits", str(synthetic_root / "splits"), "--img-size", "33", "--bsz", "2", "--epochs", "1"]
    args += ["--epoch-iterations", "1", "--val-episodes", "2", "--device", "cpu", "--out", str(out), "--no-progress"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert {"config.json", "metrics.jsonl", "run.json", "best_model.pt"} <= {p.name for p in out.iterdir()}
    names = base_image_names(get_benchmark("pascal"), hmrepro.data.splits.SplitFolder(synthetic_root / "splits"), "trn")
    assert len(names) == len(set(names)) > 2
    state = torch.load(out / "best_model.pt", weights_only=True)["model"]
    mce = hmrepro.create_model("mce", backbone="resnet50", pretrained=True, encoder_weights=str(out))
    frozen = mce.state_dict()
    encoder = {k: v for k, v in state.items() if k.startswith("backbone.") and ".fc." not in k}
    assert encoder and all(torch.equal(frozen[k], v) for k, v in encoder.items())


def test_bams_published_base_learners_are_registered_pinned_and_become_mces_encoder(pspnet, tmp_path, monkeypatch):
    """BAM's OneDrive archive (browser only) taken with --from: indexed per fold from BAM's layout, sha256 pinned in
    the lock, and `train mce` without encoder_weights (or with `official`) freezes the fold's published encoder."""
    from dataclasses import replace

    from hmrepro.acquisition.lock import LockFile
    from hmrepro.acquisition.published_weights import resolve_official_weights
    from hmrepro.acquisition.registry import load_registry
    from hmrepro.cli.train import base_learner_encoder
    from hmrepro.engine.training.train_config import build_config

    monkeypatch.delenv("HMREPRO_SOURCES", raising=False)
    source = load_registry()["bam_pspnet"]
    assert (source.kind, source.models, source.group) == ("manual", ("pspnet",), "checkpoints")
    assert load_registry()["resnet50_v2_deep_stem"].filename == "resnet50_v2.pth"
    unpacked = tmp_path / "BAM_initmodel"
    best = unpacked / "PSPNet" / "pascal" / "split2" / "resnet50" / "best.pth"
    best.parent.mkdir(parents=True)
    torch.save({"epoch": 9, "state_dict": _bam_keys(pspnet.state_dict())}, best)
    root = tmp_path / "data"
    args = ["download", "checkpoints", "--model", "pspnet", "--from", str(unpacked), "--data-root", str(root)]
    result = runner.invoke(app, [*args, "--quiet"])
    assert result.exit_code == 0, result.output
    path = resolve_official_weights("pspnet", "resnet50", "pascal", 2, data_root=root)
    key = "checkpoints/" + path.relative_to(root / "checkpoints").as_posix()
    assert len(LockFile.for_data_root(root).entry(key)["sha256"]) == 64  # pinned on first use
    with pytest.raises(MissingDataError, match="hmrepro train pspnet -b pascal -f 1"):
        base_learner_encoder(build_config("mce", "pascal", 1, {"data_root": str(root)}))
    for given in ("", "encoder_weights=official;branches=both"):
        config = base_learner_encoder(build_config("mce", "pascal", 2, {"data_root": str(root), "model_args": given}))
        assert config.model_args.endswith(f"encoder_weights={path}")
    unchanged = build_config("mce", "pascal", 2, {"model_args": "encoder=imagenet"})
    assert base_learner_encoder(unchanged) == unchanged
    assert base_learner_encoder(replace(unchanged, model_args="", pretrained=False)).model_args == ""
    mce = hmrepro.create_model("mce", backbone="resnet50", pretrained=True, encoder_weights=str(path))
    encoder = {k: v for k, v in pspnet.state_dict().items() if k.startswith("backbone.") and ".fc." not in k}
    assert all(torch.equal(mce.state_dict()[k], v) for k, v in encoder.items())


def test_an_mce_checkpoint_from_before_the_encoder_argument_is_evaluated_on_imagenets_encoder(tmp_path):
    """Its run named no `encoder` and froze torchvision's 7x7-stem ResNet: eval builds that network and records it."""
    from hmrepro.engine.evaluation.evaluate import resolve_weights, with_checkpoint_encoder

    old = {"backbone.conv1.weight": torch.zeros(64, 3, 7, 7)}
    deep = {"backbone.conv1.weight": torch.zeros(64, 3, 3, 3)}
    assert with_checkpoint_encoder("mce-hm", "branches=query", old) == "branches=query;encoder=imagenet"
    assert with_checkpoint_encoder("mce", "", deep) == ""
    assert with_checkpoint_encoder("mce", "encoder=pspnet", old) == "encoder=pspnet"
    assert with_checkpoint_encoder("hsnet", "", old) == ""
    config = {"model": "mce", "model_args": "", "benchmark": "pascal", "fold": 0, "seed": 0, "img_size": 49}
    save_checkpoint(tmp_path / "best_model.pt", old, model_name="mce", backbone="resnet50", metadata={"config": config})
    source = resolve_weights(str(tmp_path / "best_model.pt"), "mce", "resnet50", "pascal", 0, False, data_root=tmp_path)
    assert source.origin == "own" and source.trained_model_args == "encoder=imagenet"

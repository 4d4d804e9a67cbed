"""Official checkpoints: fetched (Drive folder through an injected gdown), recorded per (model, backbone, benchmark,
fold), resolved for ``--weights official``, verified, with the older per-model links as fallbacks."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest
import torch
from test_acquisition_prepare import run

from hmrepro.acquisition.fetch import FetchOptions
from hmrepro.acquisition.gdrive import GDrive
from hmrepro.acquisition.published_weights import download_checkpoints, index_path, infer, resolve_official_weights
from hmrepro.acquisition.registry import load_registry
from hmrepro.acquisition.retry import RetryPolicy
from hmrepro.errors import CorruptFileError, MissingDataError

FAST = RetryPolicy(attempts=2, base_delay=0.0)


def _weights(path: Path, value: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"module.layer.weight": torch.full((2,), value)}, path)


class FakeDrive:
    """Stands in for gdown: folder ids map to trees of files, file ids to bytes."""

    def __init__(self, folders=None, files=None):
        self.folders = folders or {}
        self.files = files or {}
        self.calls = []

    def download_folder(self, url=None, id=None, output=None, quiet=False, resume=False):
        self.calls.append(("folder", id))
        if id not in self.folders:
            raise RuntimeError(f"FileURLRetrievalError-like failure for {id}")
        written = []
        for rel, value in self.folders[id].items():
            target = Path(output) / rel
            if resume and target.exists():
                continue
            _weights(target, value)
            written.append(str(target))
        return written

    def download(self, url=None, id=None, output=None, quiet=False, resume=False):
        self.calls.append(("file", id))
        if id not in self.files:
            raise RuntimeError(f"no file {id}")
        name, data = self.files[id]
        target = Path(output) / name if str(output).endswith("/") else Path(output)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        return str(target)


def _opts(fake: FakeDrive) -> FetchOptions:
    return FetchOptions(
        retry=FAST, progress=False, gdrive=GDrive(download=fake.download, download_folder=fake.download_folder)
    )


HSNET_PASCAL = "1z4KgjgOu--k6YuIj3qWrGg264GRcMis2"  # the current id in sources.toml
HM = "1g8UJPSZDUeDlUFgaP_dlL0UFnWKq82uz"


def _hsnet_tree():
    return {
        f"{bb}_pas/{bb}_pas_fold{f}/best_model.pt": 10 * i + f
        for i, bb in enumerate(("vgg16", "res50", "res101"))
        for f in range(4)
    }


def test_hsnet_folder_is_fetched_recorded_and_resolved(tmp_path):
    fake = FakeDrive(folders={HSNET_PASCAL: {**_hsnet_tree(), "res101_pas/res101_pas_fold1/events.out.tfevents": 0}})
    entries = download_checkpoints("hsnet", benchmark="pascal", data_root=tmp_path, opts=_opts(fake))
    assert len(entries) == 12
    path = resolve_official_weights("hsnet", "resnet101", "pascal", 2, data_root=tmp_path)
    assert path == tmp_path / "checkpoints/hsnet_pascal/res101_pas/res101_pas_fold2/best_model.pt"
    assert torch.load(path, weights_only=True)["module.layer.weight"][0] == 22
    record = json.loads(index_path(tmp_path / "checkpoints").read_text())
    assert {(e["model"], e["backbone"], e["fold"]) for e in record["entries"]} >= {
        ("hsnet", "vgg16", 0),
        ("hsnet", "resnet50", 3),
    }

    # complete and verified: not fetched again
    download_checkpoints("hsnet", benchmark="pascal", data_root=tmp_path, opts=_opts(fake))
    assert fake.calls == [("folder", HSNET_PASCAL)]

    # a damaged file is refused by the resolver and fetched again by the download
    path.write_bytes(b"garbage")
    with pytest.raises(CorruptFileError, match="sha256"):
        resolve_official_weights("hsnet", "resnet101", "pascal", 2, data_root=tmp_path)
    download_checkpoints("hsnet", benchmark="pascal", data_root=tmp_path, opts=_opts(fake))
    assert len(fake.calls) == 2
    assert (
        torch.load(resolve_official_weights("hsnet", "resnet101", "pascal", 2, data_root=tmp_path), weights_only=True)[
            "module.layer.weight"
        ][0]
        == 22
    )


def test_hm_folder_holds_several_models(tmp_path):
    tree = {
        "HSNet-HM/pascal/resnet50/fold0/best_model.pt": 1,
        "HSNet-HM/fss/resnet101/best_model.pt": 2,
        "VAT_HM/coco_resnet50/coco_resnet50_fold3/best_model.pt": 3,
        "VAT_HM/coco_resnet50/coco_resnet50_fold3/config.yaml": 0,
        "ASNet-HM/logs/coco/fold1/resnet101/asnethm/best_model-v2.ckpt": 4,
        "ASNet-HM/logs/coco/fold1/resnet101/asnethm/best_model.ckpt": 5,
        "notes/mystery.pth": 6,
    }
    fake = FakeDrive(folders={HM: tree})
    download_checkpoints("hsnet-hm", data_root=tmp_path, opts=_opts(fake))
    assert resolve_official_weights("hsnet-hm", "resnet50", "pascal", 0, data_root=tmp_path).name == "best_model.pt"
    assert resolve_official_weights("hsnet-hm", "resnet101", "fss", 3, data_root=tmp_path).parts[-2] == "resnet101"
    assert "coco_resnet50_fold3" in str(resolve_official_weights("vat-hm", "resnet50", "coco", 3, data_root=tmp_path))
    assert resolve_official_weights("asnet-hm", "resnet101", "coco", 1, data_root=tmp_path).name == "best_model-v2.ckpt"
    record = json.loads(index_path(tmp_path / "checkpoints").read_text())
    assert "hm/notes/mystery.pth" in record["unassigned"]


def test_old_per_model_links_are_the_fallback(tmp_path):
    archive = tmp_path / "hm_coco.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for f in range(4):
            w = tmp_path / f"w{f}.pt"
            _weights(w, f)
            zf.write(w, f"hsnet_hm_coco_res50/fold{f}/best_model.pt")
    fake = FakeDrive(files={"1n6sNZhnDY-plL7cI4DcdXcTzwNYbSJmQ": ("hm_coco.zip", archive.read_bytes())})
    entries = download_checkpoints("hsnet-hm", benchmark="coco", data_root=tmp_path / "root", opts=_opts(fake))
    assert {(e.backbone, e.fold) for e in entries} == {("resnet50", f) for f in range(4)}
    assert ("folder", HM) in fake.calls  # the consolidated folder was tried first
    path = resolve_official_weights("hsnet-hm", "resnet50", "coco", 3, data_root=tmp_path / "root")
    assert torch.load(path, weights_only=True)["module.layer.weight"][0] == 3


def test_resolver_errors_say_what_to_do(tmp_path):
    with pytest.raises(MissingDataError, match="hmrepro download checkpoints --model hsnet-hm --benchmark coco"):
        resolve_official_weights("hsnet-hm", "resnet50", "coco", 0, data_root=tmp_path)
    with pytest.raises(MissingDataError, match="published no hsnet-hm weights for vgg16"):
        resolve_official_weights("hsnet-hm", "vgg16", "pascal", 0, data_root=tmp_path)
    with pytest.raises(MissingDataError, match="published no weights for 'hsnet-im'"):
        resolve_official_weights(model="hsnet-im", backbone="resnet50", benchmark="pascal", fold=0, data_root=tmp_path)


def test_manual_source_via_cli_from_folder(tmp_path, monkeypatch):
    monkeypatch.delenv("HMREPRO_SOURCES", raising=False)
    mine = tmp_path / "asnet_logs"
    for f in range(2):
        _weights(mine / "logs" / "pascal" / f"fold{f}" / "resnet50" / "asnet" / "best_model.ckpt", f)
    root = tmp_path / "root"
    result, out = run("download", "checkpoints", "--model", "asnet", "--from", mine, "--data-root", root, "--quiet")
    assert result.exit_code == 0, out
    assert "asnet" in out and "resnet50" in out
    path = resolve_official_weights("asnet", "resnet50", "pascal", 1, data_root=root)
    assert torch.load(path, weights_only=True)["module.layer.weight"][0] == 1


def test_path_reading():
    assert infer("res101_pas/res101_pas_fold0/best_model.pt", ("hsnet",), ("pascal",)) == (
        "hsnet",
        "resnet101",
        "pascal",
        0,
    )
    assert infer("pascal_resnet50/pascal_resnet50_fold2/best_model.pt", ("vat",)) == ("vat", "resnet50", "pascal", 2)
    assert infer("fss_resnet101/best_model.pt", ("vat",)) == ("vat", "resnet101", "fss", 0)
    assert infer("coco/resnet50/best_model.pt", ("hsnet",)) is None  # no fold: not guessed


def test_registry_has_every_source_the_issue_names():
    reg = load_registry()
    names = set(reg.sources)
    assert {
        "voc2012_trainval",
        "voc_segclassaug",
        "sbd_benchmark",
        "coco_train2014",
        "coco_val2014",
        "coco_annotations2014",
        "coco_masks_train2014",
        "coco_masks_val2014",
        "fss1000",
        "resnet50_imagenet1k_v1",
        "resnet101_imagenet1k_v1",
        "vgg16_imagenet1k_v1",
        "hsnet_pascal",
        "hsnet_coco",
        "hsnet_fss",
        "hm",
        "vat",
        "asnet",
    } <= names
    for s in reg.group("backbones", include_optional=True):
        assert s.dest == "torch_hub"
        if s.kind == "manual":  # BAM's deep-stem ImageNet files (OneDrive): nothing published, pinned on first use
            assert not s.published and s.filename.endswith("_v2.pth") and s.optional
        else:
            assert s.sha256_prefix and s.sha256_prefix in s.filename
    assert reg["voc2012_trainval"].md5 == "6cd6e144f989b92b3379bac3b3de84fd"

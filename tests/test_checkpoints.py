"""Checkpoint reading, strict loading and atomic writing."""

from __future__ import annotations

import pytest
import torch
from model_weights import fill_params
from torch import nn

from hmrepro.engine import checkpoint_io as checkpoints
from hmrepro.engine.checkpoint_io import (
    CheckpointMismatchError,
    describe_state_dict,
    load_checkpoint,
    read_checkpoint,
    save_checkpoint,
)
from hmrepro.errors import CorruptFileError, HmreproError, MissingDataError
from hmrepro.models.hsnet import HSNet


@pytest.fixture(scope="module")
def filled_r50():
    return fill_params(HSNet("resnet50", "hm", pretrained=False))


def _fresh_r50():
    return HSNet("resnet50", "fm", pretrained=False)


def _assert_same_weights(a: nn.Module, b: nn.Module):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_round_trip_ours(tmp_path, filled_r50):
    path = save_checkpoint(
        tmp_path / "run" / "best_model.pt",
        filled_r50,
        model_name="hsnet-hm",
        backbone="resnet50",
        metadata={"fold": 0, "miou": 64.1},
        extra={"epoch": 7},
    )
    assert sorted(p.name for p in path.parent.iterdir()) == ["best_model.pt"]  # no temp files left behind
    model = _fresh_r50()
    ckpt = load_checkpoint(path, model)
    _assert_same_weights(model, filled_r50)
    assert (ckpt.source_format, ckpt.model_name, ckpt.backbone) == ("hmrepro", "hsnet-hm", "resnet50")
    assert ckpt.metadata == {"fold": 0, "miou": 64.1} and ckpt.extra == {"epoch": 7}
    raw = torch.load(path, weights_only=True)
    assert raw["format"] == checkpoints.FORMAT and not any(k.startswith("module.") for k in raw["model"])


def test_authors_dataparallel_state_dict(tmp_path, filled_r50):
    path = tmp_path / "best_model.pt"
    torch.save({f"module.{k}": v for k, v in filled_r50.state_dict().items()}, path)
    model = _fresh_r50()
    ckpt = load_checkpoint(path, model)
    assert ckpt.source_format == "dataparallel"
    _assert_same_weights(model, filled_r50)
    wrapped = nn.DataParallel(_fresh_r50())  # loading into a wrapped model works as well
    load_checkpoint(path, wrapped)
    _assert_same_weights(wrapped.module, filled_r50)


def test_bare_and_wrapped_state_dicts(tmp_path, filled_r50):
    bare, wrapped = tmp_path / "bare.pt", tmp_path / "wrapped.pt"
    torch.save(filled_r50.state_dict(), bare)
    torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in filled_r50.state_dict().items()}}, wrapped)
    assert read_checkpoint(bare).source_format == "bare"
    ckpt = read_checkpoint(wrapped)
    assert ckpt.source_format == "wrapped" and ckpt.extra == {"epoch": 3}
    model = _fresh_r50()
    load_checkpoint(wrapped, model)
    _assert_same_weights(model, filled_r50)


def test_save_accepts_a_prefixed_state_dict(tmp_path, filled_r50):
    path = save_checkpoint(tmp_path / "m.pt", {f"module.{k}": v for k, v in filled_r50.state_dict().items()})
    assert read_checkpoint(path).state_dict.keys() == filled_r50.state_dict().keys()


def test_strict_mismatch_names_the_model_the_file_belongs_to(tmp_path, filled_r50):
    path = tmp_path / "r50.pt"
    torch.save({f"module.{k}": v for k, v in filled_r50.state_dict().items()}, path)
    r101 = HSNet("resnet101", "fm", pretrained=False)
    before = {k: v.clone() for k, v in r101.hpn_learner.state_dict().items()}
    with pytest.raises(CheckpointMismatchError) as info:
        load_checkpoint(path, r101)
    message = str(info.value)
    assert isinstance(info.value, HmreproError)
    assert "HSNet" in message and "resnet50 backbone" in message and "resnet101 backbone" in message
    assert "Missing keys (" in message and "backbone.layer3.6.conv1.weight" in message
    assert "Shape mismatches" in message and "hpn_learner.encoder_layer3.0.conv1.weight" in message
    assert all(torch.equal(v, before[k]) for k, v in r101.hpn_learner.state_dict().items())  # nothing loaded


def test_unexpected_keys_are_listed(tmp_path, filled_r50):
    state = dict(filled_r50.state_dict())
    state["hpn_learner.extra.weight"] = torch.zeros(1)
    del state["hpn_learner.decoder2.2.bias"]
    path = tmp_path / "odd.pt"
    torch.save(state, path)
    with pytest.raises(CheckpointMismatchError, match=r"Unexpected keys \(1\): hpn_learner.extra.weight") as info:
        load_checkpoint(path, _fresh_r50())
    assert "Missing keys (1): hpn_learner.decoder2.2.bias" in str(info.value)


@pytest.mark.parametrize(
    "keys, expected",
    [
        (["backbone.features.0.weight", "hpn_learner.encoder_layer4.0.conv1.weight"], "HSNet / HSNet-HM (hsnet"),
        (["backbone.features.0.weight", "hpn_learner.encoder_layer4.0.conv1.weight"], "vgg16 backbone"),
        ([f"backbone.layer3.{i}.conv1.weight" for i in range(23)] + ["hpn_learner.ours.decoder.0.weight"], "VAT"),
        ([f"backbone.layer3.{i}.conv1.weight" for i in range(23)] + ["hpn_learner.ours.decoder.0.weight"], "resnet101"),
        ([f"backbone.layer3.{i}.conv1.weight" for i in range(6)] + ["learner.layer4.0.attn.qhead.weight"], "ASNet"),
        (["encoder.weight"], "unknown model"),
    ],
)
def test_describe_state_dict(keys, expected):
    assert expected in describe_state_dict({k: torch.zeros(1) for k in keys})


def test_missing_and_unreadable_files(tmp_path):
    with pytest.raises(MissingDataError, match="not-there.pt"):
        read_checkpoint(tmp_path / "not-there.pt")
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(CorruptFileError, match="garbage.pt"):
        read_checkpoint(garbage)


class _Arbitrary:
    """Not loadable with weights_only=True."""


def test_refuses_arbitrary_pickles(tmp_path):
    path = tmp_path / "pickle.pt"
    torch.save({"state_dict": {"a": torch.zeros(1)}, "obj": _Arbitrary()}, path)
    with pytest.raises(CorruptFileError, match="asks to run code when loaded") as info:
        read_checkpoint(path)
    assert "weights_only=False" not in str(info.value) and "\n" not in str(info.value)


def test_failed_save_keeps_the_old_file(tmp_path, monkeypatch):
    path = save_checkpoint(tmp_path / "m.pt", {"w": torch.ones(2)})
    original = path.read_bytes()

    def broken_save(obj, f):
        f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(checkpoints.torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, {"w": torch.zeros(2)})
    assert path.read_bytes() == original
    assert [p.name for p in tmp_path.iterdir()] == ["m.pt"]

"""Recipes: the authors' values, and the precedence defaults < benchmark < model < model+benchmark < flags."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from hmrepro.cli.app import app
from hmrepro.engine import recipes
from hmrepro.engine.recipes import RecipeError, resolve
from hmrepro.engine.training.train import build_config, resume_config
from hmrepro.errors import HmreproError
from hmrepro.models.registry import list_models

runner = CliRunner()


def test_every_recipe_file_parses_and_every_hsnet_model_has_one():
    files = sorted(recipes.recipe_dir().glob("*.toml"))
    assert {f.name for f in files} >= {"hsnet.toml", "vat.toml"}
    for f in files:
        recipes.load_recipe_file(f)
    for model in list_models():
        if model.startswith("hsnet"):
            assert resolve(model, "pascal")["protocol"] == "hsnet"


@pytest.mark.parametrize("model", ["hsnet-hm", "hsnet-im", "hsnet-hm-add", "hsnet-hm-reverse"])
def test_hsnet_hm_recipe_is_the_papers(model):
    for bench in ("pascal", "coco", "fss"):
        c = resolve(model, bench)
        assert (c["optimizer"], c["lr"], c["bsz"], c["img_size"], c["weight_decay"]) == ("adam", 1e-3, 20, 400, 0.0)
        assert c["augment"] == ("cats" if bench == "pascal" else "none")  # §4.1: augmentation on PASCAL only
        assert c["shot"] == 1


def test_hsnet_baseline_recipe_is_the_hsnet_authors():
    assert resolve("hsnet", "coco")["bsz"] == 40  # HSNet README
    assert resolve("hsnet", "pascal")["bsz"] == 20
    assert resolve("hsnet", "pascal")["augment"] == "none"


def test_vat_hm_batch_sizes_are_the_papers():
    assert {b: resolve("vat-hm", b)["bsz"] for b in ("coco", "pascal", "fss")} == {"coco": 8, "pascal": 4, "fss": 4}
    assert resolve("vat-hm", "coco")["img_size"] == 417 and resolve("vat-hm", "pascal")["img_size"] == 473


def test_flags_override_the_recipe_and_none_does_not():
    c = build_config("hsnet-hm", "pascal", 2, {"lr": 5e-4, "bsz": None, "augment": "none", "seed": 7})
    assert (c.lr, c.bsz, c.augment, c.seed, c.fold) == (5e-4, 20, "none", 7, 2)
    assert c.model == "hsnet-hm" and c.benchmark == "pascal" and c.recipe.endswith("hsnet.toml")


def test_layer_precedence(tmp_path, monkeypatch):
    (tmp_path / "hsnet.toml").write_text(  # the HSNet card's recipe file
        """
[defaults]
optimizer = "adam"
lr = 1.0
bsz = 1
img_size = 1
epochs = 1
[benchmark.coco]
lr = 2.0
bsz = 2
img_size = 2
[model.hsnet]
lr = 3.0
bsz = 3
[model.hsnet.benchmark.coco]
lr = 4.0
"""
    )
    monkeypatch.setenv("HMREPRO_RECIPES", str(tmp_path))
    c = resolve("hsnet", "coco", {"epochs": 9})
    assert (c["lr"], c["bsz"], c["img_size"], c["epochs"]) == (4.0, 3, 2, 9)
    c = resolve("hsnet", "pascal")
    assert (c["lr"], c["bsz"], c["img_size"]) == (3.0, 3, 1)


@pytest.mark.parametrize(
    "text,match",
    [
        ("[defaults]\nlearning_rate=1\n", "unknown key"),
        ("[defaults]\nlr='fast'\n", "wrong type"),
        ("[recipe]\nmodels=['hsnet']\n", "models.*model card"),  # the card lists the models
        ("[model.vat]\nlr=1\n", r"\[model.vat\] is not a model of the hsnet family"),
        ("[recipe\n", "cannot read"),
    ],
)
def test_malformed_recipes_are_errors(tmp_path, monkeypatch, text, match):
    (tmp_path / "hsnet.toml").write_text(text)
    monkeypatch.setenv("HMREPRO_RECIPES", str(tmp_path))
    with pytest.raises(RecipeError, match=match):
        resolve("hsnet", "pascal")


def test_unknown_model_and_missing_recipe_file_are_errors(tmp_path, monkeypatch):
    with pytest.raises(HmreproError, match="unknown model 'no-such-model'"):
        resolve("no-such-model", "pascal")
    (tmp_path / "vat.toml").write_text("[defaults]\nlr=1\n")
    monkeypatch.setenv("HMREPRO_RECIPES", str(tmp_path))
    with pytest.raises(RecipeError, match="no recipe for hsnet-hm: .*hsnet.toml does not exist"):
        resolve("hsnet-hm", "pascal")


def test_train_cli_passes_flags_over_the_recipe(monkeypatch, tmp_path):
    seen = {}

    def fake_train(config, **kwargs):
        seen.update(config.as_dict())
        return tmp_path

    monkeypatch.setattr("hmrepro.engine.training.train.train", fake_train)
    result = runner.invoke(
        app,
        [
            "train",
            "hsnet-hm",
            "-b",
            "coco",
            "--fold",
            "3",
            "--lr",
            "0.01",
            "--epochs",
            "5",
            "--amp",
            "bf16",
            "--no-pretrained",
        ],
    )
    assert result.exit_code == 0, result.output
    assert (seen["lr"], seen["epochs"], seen["bsz"], seen["fold"], seen["precision"], seen["pretrained"]) == (
        0.01,
        5,
        20,
        3,
        "bf16",
        False,
    )
    assert seen["augment"] == "none" and seen["img_size"] == 400


def test_resume_may_extend_epochs_but_not_change_the_recipe(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(build_config("hsnet", "fss", 0, {"out": str(tmp_path)}).as_dict()))
    assert resume_config(tmp_path, {"epochs": 999, "workers": 3}).epochs == 999
    with pytest.raises(HmreproError, match="lr"):
        resume_config(tmp_path, {"lr": 0.5})


@pytest.mark.parametrize(
    "args",
    [
        ["train", "hsnet-hm", "-b", "voc"],
        ["train", "hsnet-hm", "-b", "pascal", "--fold", "4"],
        ["train", "no-such-model", "-b", "pascal"],
        ["train", "hsnet-hm"],
    ],
)
def test_bad_train_arguments_exit_2_without_traceback(args):
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output


def test_runs_saved_before_precision_existed_resume_with_their_amp_setting(tmp_path):
    old = build_config("hsnet", "fss", 0, {"out": str(tmp_path)}).as_dict()
    del old["precision"], old["tf32"]
    (tmp_path / "config.json").write_text(json.dumps({**old, "amp": True, "world_size": 1}))
    assert resume_config(tmp_path).precision == "bf16"


# ---------------------------------------------------------------------------------------------------------------
# Faithful defaults and --print-config
# ---------------------------------------------------------------------------------------------------------------


def _printed_config(*args: str) -> dict:
    result = runner.invoke(app, ["train", *args, "--print-config"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


@pytest.mark.parametrize("model", ["hsnet", "hsnet-hm", "asnet", "asnet-hm"])
def test_print_config_shows_the_authors_2000_epochs_and_fp32(model):
    config = _printed_config(model, "--benchmark", "pascal", "--fold", "0")
    assert (config["epochs"], config["precision"], config["tf32"], config["patience"]) == (2000, "fp32", False, 0)
    assert config["model"] == model and config["img_size"] == 400 and config["world_size"] == 1
    assert config["workers"] is not None and config["calibrate_bn"] is False  # derived values are filled in


def test_print_config_shows_bf16_when_asked_and_vats_released_epochs():
    assert _printed_config("hsnet", "-b", "pascal", "--amp", "bf16")["precision"] == "bf16"
    assert _printed_config("vat-hm", "-b", "coco", "--tf32")["tf32"] is True
    assert (
        _printed_config("vat", "-b", "coco")["epochs"] == 400 and _printed_config("vat", "-b", "fss")["epochs"] == 300
    )


def test_print_config_touches_no_data(tmp_path):
    missing = tmp_path / "nowhere"
    config = _printed_config("hsnet", "-b", "coco", "--data-root", str(missing), "--out", str(tmp_path / "run"))
    assert config["data_root"] == str(missing) and not missing.exists() and not (tmp_path / "run").exists()


def test_resume_and_out_together_are_refused(tmp_path):
    result = runner.invoke(app, ["train", "--resume", str(tmp_path), "--out", str(tmp_path / "x")])
    assert result.exit_code == 2 and "--out" in result.output


def test_mce_recipe_trains_and_validates_as_bam_and_the_flags_opt_out():
    config = _printed_config("mce", "--benchmark", "pascal")
    assert (config["train_sampler"], config["validation"], config["patience"]) == ("bam", "bam", 75)
    config = _printed_config("mce", "-b", "coco", "--train-sampler", "hsnet", "--validation", "one-shot")
    assert (config["train_sampler"], config["validation"]) == ("hsnet", "one-shot")
    config = _printed_config("hsnet", "--benchmark", "pascal")
    assert (config["train_sampler"], config["validation"]) == ("hsnet", "one-shot")
    with pytest.raises(RecipeError, match="train_sampler 'pfenet'"):
        resolve("mce", "pascal", {"train_sampler": "pfenet"})

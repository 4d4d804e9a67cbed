"""Model cards: every model has one, evaluation plans are the authors', published weights are evaluable."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

import hmrepro
from hmrepro.acquisition.published_weights import MODELS as INDEXED_MODELS
from hmrepro.acquisition.registry import load_registry
from hmrepro.engine.checkpoint_io import describe_state_dict, family_card
from hmrepro.engine.recipes import find_recipe, recipe_dir
from hmrepro.errors import HmreproError
from hmrepro.models.cards import (
    BENCHMARKS,
    EvalPlan,
    card_of,
    eval_plan,
    list_cards,
    model_names,
    published_checkpoints,
)
from hmrepro.models.interface import FewShotModel, logits_of
from hmrepro.models.masking import get_masking_mode

CHECKPOINT_FORMATS = {"hmrepro", "dataparallel", "bare", "wrapped", "lightning"}  # engine.checkpoints


def test_every_registered_model_has_a_card_and_every_card_model_is_registered():
    assert set(hmrepro.list_models()) == set(model_names())
    for name in hmrepro.list_models():
        card = card_of(name)
        assert name == card.family or name.startswith(card.family + "-")
        get_masking_mode(card.variants[name])  # a known masking mode


def test_cards_are_consistent():
    families = [card.family for card in list_cards()]
    assert len(families) == len(set(families))
    for card in list_cards():
        assert card.variants[card.family] == card.baseline_masking
        assert set(card.benchmarks) <= set(BENCHMARKS) and card.benchmarks
        assert set(card.checkpoint_formats) <= CHECKPOINT_FORMATS
        assert card.key_signature and card.description
    signatures = [prefix for card in list_cards() for prefix in card.key_signature]
    assert not any(a != b and a.startswith(b) for a in signatures for b in signatures)  # one family per key


def test_every_model_is_trained_by_its_cards_recipe_file():
    for card in list_cards():
        for name in card.variants:
            assert find_recipe(name)["_path"] == str(recipe_dir() / f"{card.recipe}.toml")


def test_vat_plan_is_its_authors():
    for name in card_of("vat").variants:
        pascal, coco, fss = (eval_plan(name, b) for b in ("pascal", "coco", "fss"))
        assert (pascal.preprocess, pascal.img_size, coco.img_size, fss.img_size) == ("vat", 473, 417, 473)
        assert pascal.protocol == "hsnet"  # VAT evaluates on HSNet's episodes
        assert not any(card_of(name).allows_original_size(b) for b in ("pascal", "coco", "fss"))


def test_hsnet_allows_original_size_on_pascal_and_coco_only():
    for name in ("hsnet", "hsnet-hm", "hsnet-nofm"):
        plans = {b: eval_plan(name, b) for b in BENCHMARKS}
        allowed = {b: card_of(name).allows_original_size(b) for b in BENCHMARKS}
        assert allowed == {"pascal": True, "coco": True, "fss": False}
        assert {p.img_size for p in plans.values()} == {400} and {p.preprocess for p in plans.values()} == {"hsnet"}
    assert eval_plan("hsnet", "pascal") == EvalPlan("hsnet", "hsnet", 400, original_size=False)


def test_asnet_has_its_own_protocol_and_no_fss():
    assert eval_plan("asnet-hm", "coco").protocol == "asnet"
    with pytest.raises(HmreproError, match="asnet.*'fss'.*pascal, coco"):
        eval_plan("asnet", "fss")


def test_unknown_model_is_an_error_naming_it_and_the_choices():
    with pytest.raises(HmreproError, match="unknown model 'pspnet'; choose one of .*hsnet-nofm"):
        card_of("pspnet")
    with pytest.raises(HmreproError, match="pspnet"):
        eval_plan("pspnet", "pascal")
    with pytest.raises(HmreproError, match="unknown model 'pspnet'"):
        hmrepro.create_model("pspnet", pretrained=False)


def test_cards_import_no_torch():
    code = "import sys, hmrepro.models.cards, hmrepro.models.registry; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize("name", hmrepro.list_models())
def test_constructor_defaults_read_from_the_source_are_the_classes(name):
    """The tables read a model's constructor defaults from its module's source (no torch); they must be what the
    imported class declares, for every registered model."""
    import inspect

    from hmrepro.models.model_args import _literal_defaults, _parameters

    card = card_of(name)
    imported = {n: p.default for n, p in _parameters(name).items() if p.default is not inspect.Parameter.empty}
    assert _literal_defaults(card.module, card.class_name) == imported


def test_constructor_defaults_import_no_torch():
    code = (
        "import sys; from hmrepro.models.model_args import constructor_defaults; "
        "d = constructor_defaults('crcnet'); assert d['feature_layers'] == ('layer2', 'layer3'), d; "
        "print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_hsnet_nofm_is_hsnet_without_feature_masking():
    with torch.device("meta"):  # class and masking mode only
        model = hmrepro.create_model("hsnet-nofm", backbone="resnet101", pretrained=False)
    assert type(model).__name__ == "HSNet" and model.masking.name == "none"
    assert "hsnet-nofm" in INDEXED_MODELS


def test_published_checkpoints_name_their_source():
    registry = load_registry()
    for p in published_checkpoints():
        source = registry[p.source]
        assert source.group == "checkpoints" and p.model in source.models
        assert p.benchmark in source.benchmarks and p.backbone in source.backbones
        assert p.benchmark in card_of(p.model).benchmarks and p.backbone in card_of(p.model).backbones
    assert set(INDEXED_MODELS) == {p.model for p in published_checkpoints()} | {"pspnet"}  # + BAM's base learners


def test_a_published_source_takes_what_it_serves_from_the_cards(tmp_path):
    registry = load_registry()
    assert registry["hm"].models == ("hsnet-hm", "vat-hm", "asnet-hm")
    assert registry["asnet"].backbones == ("resnet50", "resnet101") and registry["asnet"].benchmarks == (
        "pascal",
        "coco",
    )
    repeated = tmp_path / "sources.toml"
    repeated.write_text(
        '[sources.hsnet_pascal]\ngroup = "checkpoints"\nfilename = "x"\ngdrive_ids = ["id"]\nmodels = ["hsnet"]\n'
    )
    with pytest.raises(HmreproError, match="'hsnet_pascal' sets models, which the model cards' published"):
        load_registry(repeated)


def _published_runs():
    """Each (model, backbone, benchmark) a published checkpoint serves; benchmark only where the model needs it."""
    runs = {
        (p.model, p.backbone, p.benchmark if card_of(p.model).needs_benchmark else None)
        for p in published_checkpoints()
    }
    return sorted(runs, key=str)


@pytest.mark.parametrize("model_name, backbone, benchmark", _published_runs())
def test_every_published_checkpoint_is_an_evaluable_model(model_name, backbone, benchmark):
    card = card_of(model_name)
    with torch.device("meta"):  # structure and state_dict keys only: no weights allocated nor initialised
        model = hmrepro.create_model(model_name, backbone=backbone, pretrained=False, benchmark=benchmark or "pascal")
    assert isinstance(model, FewShotModel) and hasattr(model.backbone, "taps")
    assert model.masking.name == card.variants[model_name]
    assert family_card(model.state_dict()) is card  # its weights read as the card's family
    for bench in [benchmark] if benchmark else card.benchmarks:
        eval_plan(model_name, bench)


def test_describe_names_the_card_family():
    assert describe_state_dict({"hpn_learner.encoder_layer4.0.weight": torch.zeros(1)}).startswith(
        "HSNet / HSNet-HM (hsnet, hsnet-nofm, hsnet-im"
    )


def test_logits_of_reads_tensors_and_dicts():
    logits = torch.zeros(1, 2, 4, 4)
    assert logits_of(logits) is logits and logits_of({"logits": logits, "aux": 1}) is logits


def test_compute_objective_is_owned_by_every_family():
    torch.manual_seed(0)
    logits, mask = torch.randn(2, 2, 8, 8), (torch.rand(2, 8, 8) > 0.5).long()
    expected = torch.nn.functional.cross_entropy(logits, mask)  # all pixels, no ignore index
    for card in list_cards():
        cls = getattr(__import__(f"hmrepro.models.{card.module}", fromlist=[card.class_name]), card.class_name)
        assert "compute_objective" in vars(cls)
        batch = {"query_mask": mask, "query_ignore": torch.zeros_like(mask)}
        loss = cls.compute_objective(None, {"logits": logits}, batch)
        torch.testing.assert_close(loss, expected, rtol=0, atol=0)


def test_original_size_evaluation_is_refused_on_fss():
    from hmrepro.engine.evaluation.evaluate import evaluation_plan

    with pytest.raises(HmreproError, match="--original-size is not possible on fss"):
        evaluation_plan("hsnet", "fss", original_size=True)
    assert evaluation_plan("hsnet", "coco", original_size=True) == EvalPlan("hsnet", "hsnet", 400, original_size=True)

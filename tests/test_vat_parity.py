"""VAT / VAT-HM against the authors' outputs (``../shared/fixtures/model_vat*_<backbone>.pt``).

One fixture per (model, decoder): ``vat`` / ``vat-hm`` (PASCAL decoder, 473²), ``vat-coco`` / ``vat-hm-coco``
(COCO decoder, 417²), ``vat-fss`` / ``vat-hm-fss`` (FSS decoder, 473²); each file's ``meta`` names the registry
model, the benchmark whose decoder it uses and the inputs file. Every ``model_vat*`` file found is checked, so
held-out backbones (e.g. resnet101) are covered too.

Weights come from ``fill_params`` (fixtures/README.md); tolerances are the README's and must never be loosened.
A VAT forward is heavy on a CPU (a fixed 128² decoder and 64⁴ correlations whatever the image size): each
fixture runs one 5-shot prediction, once, whose first shot is the 1-shot forward, and the tests compare the pieces.

Two fixtures that differ only in the decoder (``vat`` / ``vat-fss``, ``vat-hm`` / ``vat-hm-fss``: same masking, same
inputs) share everything before it: ``fill_params`` gives the same backbone, encoder and 4D-transformer weights
(the same key names and shapes), so the backbone passes, correlations, encoders and 4D transformers (~85 % of a
pass) would compute the very same tensors twice. They are computed for the first fixture of such a pair (the two
run one after the other) and replayed into the second one's model, after checking that both models' shared part
has the same structure and the same weights; the second fixture's decoder, logits, loss and vote are its own.
"""

from __future__ import annotations

import contextlib
import re
from pathlib import Path

import pytest
import torch
from helpers import FIXTURES, fixture_files, fixture_id, reference_path
from model_weights import fill_params, load_fixture

from hmrepro import create_model
from hmrepro.models import vat as vat_module

pytestmark = pytest.mark.slow

SHARED_STAGES = tuple(f"hpn_learner.ours.{part}.{i}" for part in ("encoders", "transformer") for i in range(3))
"""The learner's modules before the decoder, whose outputs a pair of fixtures shares (see the module docstring)."""


def _pair_order(path: Path) -> tuple[str, int, str]:
    """Sort key that puts the fixtures sharing all but the decoder next to each other (vat-fss, then vat)."""
    name = path.name.removeprefix("model_")
    stem = re.sub(r"-(coco|fss)(?=_)", "", name)
    return stem, (0 if "-coco_" in name else 1 if "-fss_" in name else 2), name


FIXTURE_FILES = sorted(fixture_files("model_vat*_*.pt"), key=_pair_order)
_LAST_RUN: dict = {}
"""What the last fixture computed before its decoder (see _shared_part), for the next fixture when it shares it."""


@pytest.fixture(scope="module", autouse=True)
def _forget_shared_parts():
    yield
    _LAST_RUN.clear()  # a pair's shared tensors (~0.5 GB) go with the module


def _model_config(path: Path, meta: dict) -> tuple[str, str, str]:
    """(registry model, backbone, benchmark) of a fixture file."""
    name, backbone = re.fullmatch(r"model_(.+)_([a-z0-9]+)\.pt", path.name).groups()
    benchmark = meta.get("benchmark") or meta.get("cfg", {}).get("BENCHMARK")
    if benchmark is None:  # fall back on the file name: vat-coco, vat-hm-fss ...
        benchmark = next((b for b in ("coco", "fss") if name.endswith(f"-{b}")), "pascal")
    model = meta.get("model") or re.sub(r"-(coco|fss)$", "", name)
    return model, meta.get("backbone", backbone), benchmark


def _shared_part(model, inputs_name: str) -> dict:
    """What must be equal for two fixtures' models to compute the same tensors up to the decoder: the configuration
    (masking, its placement, the inputs), the structure and the weights of the backbone and the shared stages."""
    modules = {"backbone": model.backbone, **{name: model.get_submodule(name) for name in SHARED_STAGES}}
    return {
        "config": (type(model), model.backbone_name, model.masking.name, model.mask_at, inputs_name),
        "structure": {name: repr(module) for name, module in modules.items()},
        "state": {
            f"{name}.{key}": value for name, module in modules.items() for key, value in module.state_dict().items()
        },
    }


def _same_shared_part(a: dict, b: dict) -> bool:
    return (
        a["config"] == b["config"]
        and a["structure"] == b["structure"]
        and a["state"].keys() == b["state"].keys()
        and all(torch.equal(value, b["state"][key]) for key, value in a["state"].items())
    )


@contextlib.contextmanager
def _record_shared(model, record: dict):
    """Record the resized query taps and every call's output of the shared stages."""
    query_taps = model.query_taps

    def spy_query_taps(images):
        record["query_taps"] = query_taps(images)
        return record["query_taps"]

    model.query_taps = spy_query_taps
    hooks = [
        model.get_submodule(name).register_forward_hook(
            lambda module, args, out, calls=record.setdefault(name, []): calls.append(out)
        )
        for name in SHARED_STAGES
    ]
    try:
        yield
    finally:
        for hook in hooks:
            hook.remove()
        del model.query_taps


@contextlib.contextmanager
def _replay_shared(model, record: dict):
    """Serve the query taps and the shared stages' outputs from ``record`` (no backbone pass, no correlation)."""
    model.query_taps = lambda images: record["query_taps"]
    model.support_taps = lambda images, masks: None  # read by the correlations only, which are replayed
    modules = [model.get_submodule(name) for name in SHARED_STAGES]
    for name, module in zip(SHARED_STAGES, modules, strict=True):
        module.forward = lambda *args, calls=iter(record[name]): next(calls)
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(vat_module, "hypercorrelation_pyramid", lambda *args: [None] * 3)
            yield
    finally:
        for module in modules:
            del module.forward
        del model.query_taps, model.support_taps


@pytest.fixture(scope="module", params=FIXTURE_FILES, ids=fixture_id)
def parity_run(request):
    """Run the model of one fixture file on its inputs once; the tests below compare the pieces."""
    path = reference_path(request.param)
    expected = load_fixture(path)
    meta = expected["meta"]
    model_name, backbone, benchmark = _model_config(path, meta)
    inputs_name = meta.get("inputs", "inputs_473.pt")
    inputs = load_fixture(FIXTURES / inputs_name)

    model = create_model(model_name, backbone=backbone, benchmark=benchmark, pretrained=False)
    model = fill_params(model).eval()
    query, supports = inputs["query_img"], inputs["support_imgs"]
    masks = inputs["support_masks"].float()
    shared = _shared_part(model, inputs_name)
    replay = dict(_LAST_RUN) if _LAST_RUN and _same_shared_part(_LAST_RUN["shared"], shared) else None
    _LAST_RUN.clear()  # each run is replayed once at most: its memory goes as soon as it cannot be
    record = {}

    # One 5-shot prediction gives every piece: its first shot is the 1-shot forward (model(q, s0, m0) computes
    # logits_from_taps(query_taps(q), support_taps(s0, m0)), the very calls predict_nshot makes for shot 0;
    # tests/test_vat.py checks that identity), so no separate 1-shot forward is run (a sixth VAT pass).
    learner_out, query_taps, shot_logits = [], [], []
    hook = model.hpn_learner.register_forward_hook(lambda module, args, out: learner_out.append(out))
    backbone_taps, logits_from_taps = model.backbone.taps, model.logits_from_taps

    def spy_taps(images):  # keeps the native-resolution query taps (no extra backbone pass)
        taps = backbone_taps(images)
        if images is query:
            query_taps.append(taps)
        return taps

    def spy_logits(*args, **kwargs):
        shot_logits.append(logits_from_taps(*args, **kwargs))
        return shot_logits[-1]

    model.backbone.taps, model.logits_from_taps = spy_taps, spy_logits
    with _replay_shared(model, replay) if replay else _record_shared(model, record), torch.no_grad():
        votes = model.predict_nshot(query, supports, masks)
    hook.remove()
    del model.backbone.taps, model.logits_from_taps  # back to the class methods
    assert len(shot_logits) == len(learner_out) == supports.shape[1]
    if replay:
        assert all(len(replay[name]) == supports.shape[1] for name in SHARED_STAGES)
        tap_norms = replay["tap_norms"]
    else:
        assert len(query_taps) == 1
        tap_norms = torch.stack([tap.norm() for tap in query_taps[0]])
        _LAST_RUN.update(record, shared=shared, tap_norms=tap_norms)
    logits = shot_logits[0]
    with torch.no_grad():
        loss = model.compute_objective(logits, inputs)
    return {
        "expected": expected,
        "logits": logits,
        "learner_logits": learner_out[0],
        "loss": loss,
        "votes": votes,
        "tap_norms": tap_norms,
    }


def test_query_tap_norms(parity_run):
    expected = parity_run["expected"]
    if "query_feat_norms" not in expected:
        pytest.skip("fixture has no query_feat_norms")
    torch.testing.assert_close(parity_run["tap_norms"], expected["query_feat_norms"], rtol=1e-4, atol=1e-4)


def test_learner_logits(parity_run):
    expected = parity_run["expected"]
    if "logit_mask_lowres" not in expected:
        pytest.skip("fixture has no logit_mask_lowres")
    torch.testing.assert_close(parity_run["learner_logits"], expected["logit_mask_lowres"], rtol=1e-3, atol=1e-3)


def test_logits(parity_run):
    torch.testing.assert_close(parity_run["logits"], parity_run["expected"]["logit_mask"], rtol=1e-3, atol=1e-3)


def test_loss(parity_run):
    expected = parity_run["expected"]["loss"]
    assert abs(parity_run["loss"].item() - expected.item()) <= 1e-4 * abs(expected.item())


def test_nshot_vote(parity_run):
    expected = parity_run["expected"]["pred_mask_nshot"].long()
    agreement = (parity_run["votes"] == expected).float().mean().item()
    assert agreement > 0.999, f"5-shot vote agrees on {agreement:.5%} of pixels"

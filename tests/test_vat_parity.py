"""VAT / VAT-HM against the authors' outputs (``../shared/fixtures/model_vat*_<backbone>.pt``).

One fixture per (model, decoder): ``vat`` / ``vat-hm`` (PASCAL decoder, 473²), ``vat-coco`` / ``vat-hm-coco``
(COCO decoder, 417²), ``vat-fss`` / ``vat-hm-fss`` (FSS decoder, 473²); each file's ``meta`` names the registry
model, the benchmark whose decoder it uses and the inputs file. Every ``model_vat*`` file found is checked, so
held-out backbones (e.g. resnet101) are covered too.

Weights come from ``fill_params`` (fixtures/README.md); tolerances are the README's and must never be loosened.
A VAT forward is heavy on a CPU (a fixed 128² decoder and 64⁴ correlations whatever the image size): each
fixture runs one 5-shot prediction, once, whose first shot is the 1-shot forward, and the tests compare the pieces.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from helpers import FIXTURES, fixture_files, fixture_id, reference_path, reuse_freed_memory
from model_weights import fill_params, load_fixture

from hmrepro import create_model

pytestmark = pytest.mark.slow

FIXTURE_FILES = fixture_files("model_vat*_*.pt")


@pytest.fixture(scope="module", autouse=True)
def _reuse_freed_memory():
    """glibc keeps freed memory for reuse while these tests run (~25 % of a VAT pass is page faults otherwise)."""
    with reuse_freed_memory():
        yield


def _model_config(path: Path, meta: dict) -> tuple[str, str, str]:
    """(registry model, backbone, benchmark) of a fixture file."""
    name, backbone = re.fullmatch(r"model_(.+)_([a-z0-9]+)\.pt", path.name).groups()
    benchmark = meta.get("benchmark") or meta.get("cfg", {}).get("BENCHMARK")
    if benchmark is None:  # fall back on the file name: vat-coco, vat-hm-fss ...
        benchmark = next((b for b in ("coco", "fss") if name.endswith(f"-{b}")), "pascal")
    model = meta.get("model") or re.sub(r"-(coco|fss)$", "", name)
    return model, meta.get("backbone", backbone), benchmark


@pytest.fixture(scope="module", params=FIXTURE_FILES, ids=fixture_id)
def parity_run(request):
    """Run the model of one fixture file on its inputs once; the tests below compare the pieces."""
    path = reference_path(request.param)
    expected = load_fixture(path)
    meta = expected["meta"]
    model_name, backbone, benchmark = _model_config(path, meta)
    inputs = load_fixture(FIXTURES / meta.get("inputs", "inputs_473.pt"))

    model = create_model(model_name, backbone=backbone, benchmark=benchmark, pretrained=False)
    model = fill_params(model).eval()
    query, supports = inputs["query_img"], inputs["support_imgs"]
    masks = inputs["support_masks"].float()

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
    with torch.no_grad():
        votes = model.predict_nshot(query, supports, masks)
    hook.remove()
    del model.backbone.taps, model.logits_from_taps  # back to the class methods
    assert len(shot_logits) == len(learner_out) == supports.shape[1] and len(query_taps) == 1
    logits = shot_logits[0]
    with torch.no_grad():
        loss = model.compute_objective(logits, inputs)
        tap_norms = torch.stack([tap.norm() for tap in query_taps[0]])
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

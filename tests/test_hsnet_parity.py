"""HSNet / HSNet-HM against the authors' outputs (``../shared/fixtures/model_hsnet*_<backbone>.pt``).

Weights come from ``fill_params`` (fixtures/README.md); tolerances are the README's and must never be loosened.
Every ``model_hsnet*`` fixture found is checked, so held-out backbones (e.g. resnet101) are covered too.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from helpers import FIXTURES, fixture_files, fixture_id, reference_path
from model_weights import fill_params, load_fixture

from hmrepro import create_model

pytestmark = pytest.mark.slow  # parity at full size (200 px, ResNet-50)

FIXTURE_FILES = fixture_files("model_hsnet*_*.pt")


def _model_and_backbone(path: Path, meta: dict) -> tuple[str, str]:
    name, backbone = re.fullmatch(r"model_(.+)_([a-z0-9]+)\.pt", path.name).groups()
    return meta.get("model", name), meta.get("backbone", backbone)


@pytest.fixture(scope="module", params=FIXTURE_FILES, ids=fixture_id)
def parity_run(request):
    """Run the model of one fixture file on its inputs once; the tests below compare the pieces."""
    path = reference_path(request.param)
    expected = load_fixture(path)
    model_name, backbone = _model_and_backbone(path, expected["meta"])
    inputs = load_fixture(FIXTURES / expected["meta"].get("inputs", "inputs_200.pt"))

    model = fill_params(create_model(model_name, backbone=backbone, pretrained=False)).eval()
    query, supports = inputs["query_img"], inputs["support_imgs"]
    masks = inputs["support_masks"].float()
    with torch.no_grad():
        logits = model(query, supports[:, 0], masks[:, 0])
        loss = model.compute_objective(logits, inputs)
        votes = model.predict_nshot(query, supports, masks)
        tap_norms = torch.stack([tap.norm() for tap in model.query_taps(query)])
    return {
        "expected": expected,
        "logits": logits,
        "loss": loss,
        "votes": votes,
        "tap_norms": tap_norms,
    }


def test_query_tap_norms(parity_run):
    expected = parity_run["expected"]
    if "query_feat_norms" not in expected:
        pytest.skip("fixture has no query_feat_norms")
    torch.testing.assert_close(parity_run["tap_norms"], expected["query_feat_norms"], rtol=1e-4, atol=1e-4)


def test_logits(parity_run):
    torch.testing.assert_close(parity_run["logits"], parity_run["expected"]["logit_mask"], rtol=1e-3, atol=1e-3)


def test_loss(parity_run):
    expected = parity_run["expected"]["loss"]
    assert abs(parity_run["loss"].item() - expected.item()) <= 1e-4 * abs(expected.item())


def test_nshot_vote(parity_run):
    expected = parity_run["expected"]["pred_mask_nshot"].long()
    agreement = (parity_run["votes"] == expected).float().mean().item()
    assert agreement > 0.999, f"5-shot vote agrees on {agreement:.5%} of pixels"

"""ASNet / ASNet-HM against the authors' outputs (``../shared/fixtures/model_asnet*_<backbone>.pt``).

Weights come from ``fill_params`` (fixtures/README.md); the logits / loss / vote tolerances are the README's and
must never be loosened. Every ``model_asnet*`` fixture found is checked, so held-out backbones (resnet101) are
covered too. The fixtures' extras (norms of the taps, correlations and learner stages, the low-resolution logits)
are compared as well, to say where a divergence starts; they are recorded by spies on the very forward pass
whose logits are checked (the first shot of the 5-shot prediction), so they cost nothing extra.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path

import pytest
import torch
from helpers import FIXTURES, fixture_files, fixture_id, reference_path
from model_weights import fill_params, load_fixture

from hmrepro import create_model

pytestmark = pytest.mark.slow  # parity at full size (400 px, ResNet-50)

FIXTURE_FILES = fixture_files("model_asnet*_*.pt")
NORM_RTOL = 1e-4  # diagnostics only: Frobenius norms of intermediate tensors


def _model_and_backbone(path: Path, meta: dict) -> tuple[str, str]:
    name, backbone = re.fullmatch(r"model_(.+)_([a-z0-9]+)\.pt", path.name).groups()
    return meta.get("model", name), meta.get("backbone", backbone)


def _spy(model, method: str, record: list) -> None:
    """Replace ``model.<method>`` (on the instance) by a wrapper that appends its results to ``record``."""
    original = getattr(model, method)

    def wrapper(*args, **kwargs):
        out = original(*args, **kwargs)
        record.append(out)
        return out

    setattr(model, method, wrapper)


def _keep_first(record: dict, name: str, module, args, out) -> None:
    """Forward hook keeping a module's first output (shot 0's); it returns None, so every output is left as is."""
    record.setdefault(name, out)


@pytest.fixture(scope="module", params=FIXTURE_FILES, ids=fixture_id)
def parity_run(request):
    """Run the model of one fixture file on its inputs once; the tests below compare the pieces."""
    path = reference_path(request.param)
    expected = load_fixture(path)
    meta = expected["meta"]
    model_name, backbone = _model_and_backbone(path, meta)
    inputs = load_fixture(FIXTURES / meta.get("inputs", "inputs_400.pt"))

    model = fill_params(create_model(model_name, backbone=backbone, pretrained=False)).eval()
    query, supports = inputs["query_img"], inputs["support_imgs"]
    masks = inputs["support_masks"].float()

    # One 5-shot prediction gives every piece: its first shot is the 1-shot forward (model(q, s0, m0) is
    # shot_logits(query_taps(q), s0, m0, size), the very calls predict_nshot makes for shot 0; tests/test_asnet.py
    # checks that identity), so no separate 1-shot forward is run (a sixth ASNet pass). The spies keep shot 0's.
    query_taps, support_taps, shot_logits, stage_out, learner_in = [], [], [], {}, []
    _spy(model, "query_taps", query_taps)
    _spy(model, "support_taps", support_taps)
    _spy(model, "shot_logits", shot_logits)
    stage_names = meta.get("stage_names", [])
    hooks = [model.learner.register_forward_pre_hook(lambda mod, args: learner_in.append(args[0]))]
    for name in stage_names:
        module = model.get_submodule(name)
        hooks.append(module.register_forward_hook(functools.partial(_keep_first, stage_out, name)))
    with torch.no_grad():
        votes = model.predict_nshot(query, supports, masks)
    for hook in hooks:
        hook.remove()
    del model.query_taps, model.support_taps, model.shot_logits  # back to the class methods
    assert len(query_taps) == 1 and len(support_taps) == len(shot_logits) == len(learner_in) == supports.shape[1]
    logits = shot_logits[0]
    with torch.no_grad():
        loss = model.compute_objective(logits, inputs)
    return {
        "expected": expected,
        "logits": logits,
        "loss": loss,
        "votes": votes,
        "query_feat_norms": torch.stack([t.norm() for t in query_taps[0]]),
        "support_feat_norms": torch.stack([t.norm() for t in support_taps[0]]),
        "corr_norms": torch.stack([c.norm() for c in learner_in[0]]),
        "stage_norms": torch.stack([stage_out[name].norm() for name in stage_names]) if stage_names else None,
        "logit_mask_lowres": stage_out.get("learner"),
    }


# -- the contract (README tolerances) ---------------------------------------------------------------------------


def test_logits(parity_run):
    torch.testing.assert_close(parity_run["logits"], parity_run["expected"]["logit_mask"], rtol=1e-3, atol=1e-3)


def test_loss(parity_run):
    expected = parity_run["expected"]["loss"]
    assert abs(parity_run["loss"].item() - expected.item()) <= 1e-4 * abs(expected.item())


def test_nshot_vote(parity_run):
    expected = parity_run["expected"]["pred_mask_nshot"].long()
    agreement = (parity_run["votes"] == expected).float().mean().item()
    assert agreement > 0.999, f"5-shot vote agrees on {agreement:.5%} of pixels"


# -- where a divergence starts (the fixtures' extras) ------------------------------------------------------------


@pytest.mark.parametrize("extra", ["query_feat_norms", "support_feat_norms", "corr_norms", "stage_norms"])
def test_intermediate_norms(parity_run, extra):
    expected = parity_run["expected"]
    if extra not in expected:
        pytest.skip(f"fixture has no {extra}")
    torch.testing.assert_close(parity_run[extra], expected[extra].float(), rtol=NORM_RTOL, atol=0.0)


def test_lowres_logits(parity_run):
    expected = parity_run["expected"]
    if "logit_mask_lowres" not in expected:
        pytest.skip("fixture has no logit_mask_lowres")
    torch.testing.assert_close(parity_run["logit_mask_lowres"], expected["logit_mask_lowres"], rtol=1e-3, atol=1e-3)

"""The CUDA forward pass against the authors' CPU outputs (``../shared/fixtures``), fp32 with TF32 off.

Runs only where CUDA is available (CI has none; it ran on an NVIDIA H200, see README's GPU section). Same weights
(``fill_params``) and tolerances as the CPU parity tests: logits within 1e-3, 5-shot vote on > 99.9 % of pixels.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from helpers import FIXTURES, fixture_files, fixture_id, reference_path
from model_weights import fill_params, load_fixture

from hmrepro import create_model
from hmrepro.engine.evaluation.evaluate import set_eval_numerics

FIXTURE_FILES = fixture_files("model_*_*.pt")

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def _build(path: Path, meta: dict):
    name, backbone = re.fullmatch(r"model_(.+)_([a-z0-9]+)\.pt", path.name).groups()
    benchmark = meta.get("benchmark") or next((b for b in ("coco", "fss") if name.endswith(f"-{b}")), "pascal")
    model_name = meta.get("model") or re.sub(r"-(coco|fss)$", "", name)
    kwargs = {"benchmark": benchmark} if model_name.startswith("vat") else {}
    model = create_model(model_name, backbone=meta.get("backbone", backbone), pretrained=False, **kwargs)
    return fill_params(model).eval()  # filled on the CPU: the rule's generator is a CPU one


@pytest.mark.parametrize("path", FIXTURE_FILES, ids=fixture_id)
def test_cuda_fp32_matches_the_authors_cpu_outputs(path):
    reference_path(path)
    device = torch.device("cuda")
    set_eval_numerics(device)
    expected = load_fixture(path)
    model = _build(path, expected["meta"]).to(device)
    inputs = load_fixture(FIXTURES / expected["meta"].get("inputs", "inputs_200.pt"))
    query, supports = inputs["query_img"].to(device), inputs["support_imgs"].to(device)
    masks = inputs["support_masks"].float().to(device)
    with torch.inference_mode():
        logits = model(query, supports[:, 0], masks[:, 0]).cpu()
        votes = model.predict_nshot(query, supports, masks).cpu()
    torch.testing.assert_close(logits, expected["logit_mask"], rtol=1e-3, atol=1e-3)
    agreement = (votes == expected["pred_mask_nshot"].long()).float().mean().item()
    assert agreement > 0.999, f"5-shot vote agrees on {agreement:.5%} of pixels"

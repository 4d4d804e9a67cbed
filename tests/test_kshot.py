"""K-shot prediction runs one shot at a time: the learner never sees more than the episode batch (peak memory of one
shot whatever K), and every shot's logits and the vote are bit for bit those of the 1-shot forward on that shot.

On the parity fixtures' inputs and deterministic weights (``../shared/fixtures``): HSNet-HM at 200 px, 2 queries ×
3 shots (HSNet runs the same code with another masking mode). VAT and ASNet loop over the shots the same way; a
VAT forward costs seconds even at 64 px (its grids are fixed), so their K-shot votes are checked by the parity tests
only (agreement with the authors').
"""

from __future__ import annotations

import pytest
import torch
from helpers import fixture_path
from model_weights import fill_params, load_fixture

from hmrepro import create_model
from hmrepro.models.hsnet import kshot_vote


def _learner(model) -> torch.nn.Module:
    return model.hpn_learner if hasattr(model, "hpn_learner") else model.learner


def _learner_outputs(model, call) -> tuple[object, list[torch.Tensor]]:
    """``call()``'s result and the learner's outputs during it, in call order."""
    seen: list[torch.Tensor] = []
    hook = _learner(model).register_forward_hook(lambda module, args, out: seen.append(out.clone()))
    try:
        with torch.no_grad():
            result = call()
    finally:
        hook.remove()
    return result, seen


def _assert_shot_by_shot(model, query, supports, masks) -> None:
    shots = supports.shape[1]
    votes, chunked = _learner_outputs(model, lambda: model.predict_nshot(query, supports, masks))
    per_shot_logits = []
    reference = []
    for k in range(shots):
        logits, seen = _learner_outputs(model, lambda k=k: model(query, supports[:, k], masks[:, k]))
        per_shot_logits.append(logits)
        reference += seen
    # one learner call per shot, each on the episode batch only (never B·K samples), bit-identical to the 1-shot one
    assert len(chunked) == shots
    for got, want in zip(chunked, reference, strict=True):
        assert got.shape[0] == query.shape[0]
        assert torch.equal(got, want)
    expected_votes = kshot_vote(torch.stack([logits.argmax(dim=1) for logits in per_shot_logits], dim=1))
    assert torch.equal(votes, expected_votes)


@pytest.mark.slow  # fixture inputs at full size (200 px, 3 shots)
def test_hsnet_hm_kshot_is_the_per_shot_computation_on_fixtures():
    inputs = load_fixture(fixture_path("inputs_200.pt"))
    model = fill_params(create_model("hsnet-hm", backbone="resnet50", pretrained=False)).eval()
    supports, masks = inputs["support_imgs"][:, :3], inputs["support_masks"][:, :3].float()
    _assert_shot_by_shot(model, inputs["query_img"], supports, masks)

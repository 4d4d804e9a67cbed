"""The model interface (:class:`hmrepro.models.interface.FewShotModel`), checked for every registered model.

Every name :func:`hmrepro.list_models` returns is built on a random ResNet-50 at a tiny size and checked: it is a
``FewShotModel``; ``forward`` and ``predict_nshot`` give the documented shapes; in a training step the gradients
reach only learnable parameters (the frozen backbone gets none) and ``compute_objective`` is finite; and every
masking mode of a family has the same state_dict keys (built on the meta device: no memory, no time).

A forward check costs a second or more per model on a CPU (VAT's learner runs on fixed 128² grids, ASNet's needs
393-512 px inputs, CRCNet fine-tunes per K-shot episode), so the fast tier runs them on one model per cheap family
(its baseline) and the ``slow`` tier on every other model of the cheap families. VAT and ASNet are not checked
here: their parity tests run the forward, the K-shot vote and the training step of their FM and HM models against
the authors' outputs (the fixtures are required in CI). Their training-step replay asserts more than the check
below: the parameters that receive a gradient are exactly the authors' (the frozen backbone and VAT's encoder norms,
whose output nothing reads, get none), the gradient is exactly 0 where the authors' is (VAT's PASCAL decoder ignores
layer3's query feature) and every parameter's gradient norm is the authors' to 1e-4. Their learner tests train
VAT-HM at 64 px and ASNet-HM at 400 px. The other masking modes of VAT and ASNet differ from these only in the
shared masking module, which every mode of the cheap families runs through. Each model is built once for both
checks; the structural checks above cover every name.
"""

from __future__ import annotations

import pytest
import torch

import hmrepro
from hmrepro.engine.training.train import forward_train
from hmrepro.models.cards import card_of, list_cards
from hmrepro.models.interface import Backbone, FewShotModel, logits_of

MODELS = hmrepro.list_models()
IMAGE_SIDE = {"hsnet": 64, "crcnet": 41, "mce": 49}
"""A cheap square input side per checked family."""
BATCH = 2
FAST_MODELS = ("hsnet", "crcnet", "mce")
COSTLY_FAMILIES = {"vat", "asnet"}  # checked by their parity and learner tests (see the docstring)
FORWARD_MODELS = [name for name in MODELS if card_of(name).family not in COSTLY_FAMILIES]
TINY_OPTIONS = {"crcnet": {"refine_steps": 2, "finetune_steps": 2}}
"""Options that only shorten a family's loops (CRCNet: T refinement steps, the K-shot fine-tuning steps)."""


def _param(name: str):
    return pytest.param(name, id=name) if name in FAST_MODELS else pytest.param(name, marks=pytest.mark.slow, id=name)


def build(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    family = card_of(name).family
    options = TINY_OPTIONS.get(family, {})
    return hmrepro.create_model(name, backbone="resnet50", pretrained=False, benchmark="pascal", **options)


def episode(name: str, shots: int = 1) -> dict:
    """A random episode batch at the family's tiny size, with the keys the trainer's batches have."""
    side, bsz = IMAGE_SIDE[card_of(name).family], BATCH
    g = torch.Generator().manual_seed(0)
    masks = torch.zeros(bsz, shots + 1, side, side)
    masks[..., side // 4 : 3 * side // 4, side // 5 : 3 * side // 5] = 1
    return {
        "query_img": torch.randn(bsz, 3, side, side, generator=g),
        "support_imgs": torch.randn(bsz, shots, 3, side, side, generator=g),
        "query_mask": masks[:, 0].long(),
        "support_masks": masks[:, 1:],
        "query_ignore": torch.zeros(bsz, side, side),
        "support_ignores": torch.zeros(bsz, shots, side, side),
        "class_id": torch.arange(bsz),
        "query_name": [f"q{i}" for i in range(bsz)],
        "support_names": [[f"s{i}" for i in range(bsz)] for _ in range(shots)],
    }


def test_the_contract_covers_every_registered_model():
    assert MODELS and set(MODELS) == {name for card in list_cards() for name in card.variants}


@pytest.mark.parametrize("name", MODELS)
def test_every_model_is_a_few_shot_model(name):
    with torch.device("meta"):
        model = build(name)
    assert isinstance(model, FewShotModel) and isinstance(model.backbone, Backbone)
    assert model.masking.name == card_of(name).variants[name]
    capabilities = (model.trains_kshot, model.takes_query_mask, model.takes_sample_keys)
    assert all(isinstance(flag, bool) for flag in capabilities)
    assert isinstance(model.inference_options(), dict)


@pytest.mark.parametrize("card", list_cards(), ids=lambda card: card.family)
def test_every_masking_mode_of_a_family_has_the_same_state_dict_keys(card):
    shapes = {}
    for name in card.variants:
        with torch.device("meta"):
            state = build(name).state_dict()
        shapes[name] = {key: tuple(value.shape) for key, value in state.items()}
    baseline = shapes[card.family]
    assert all(keys == baseline for keys in shapes.values()), [n for n, k in shapes.items() if k != baseline]


@pytest.fixture(scope="module")
def built(request) -> tuple[str, torch.nn.Module]:
    """(name, model) of the model a check is parametrized with, built once for both checks (pytest groups the
    tests by model)."""
    return request.param, build(request.param)


@pytest.mark.parametrize("built", [_param(name) for name in FORWARD_MODELS], indirect=True)
def test_forward_and_predict_nshot_shapes(built):
    name, model = built
    model.eval()
    batch = episode(name, shots=2)
    bsz, side = batch["query_img"].shape[0], batch["query_img"].shape[-1]
    with torch.no_grad():
        logits = logits_of(model(batch["query_img"], batch["support_imgs"][:, 0], batch["support_masks"][:, 0]))
        prediction = model.predict_nshot(batch["query_img"], batch["support_imgs"], batch["support_masks"])
    assert logits.shape == (bsz, 2, side, side) and torch.isfinite(logits).all()
    assert prediction.shape == (bsz, side, side) and prediction.dtype == torch.int64
    assert set(prediction.unique().tolist()) <= {0, 1}


@pytest.mark.parametrize("built", [_param(name) for name in FORWARD_MODELS], indirect=True)
def test_a_training_step_reaches_only_learnable_parameters(built):
    name, model = built
    model.train()
    model.zero_grad(set_to_none=True)
    shots = 2 if model.trains_kshot else 1
    batch = episode(name, shots=shots)
    outputs = forward_train(model, batch, shots)
    loss = model.compute_objective(outputs, batch)
    assert loss.dim() == 0 and torch.isfinite(loss)
    loss.backward()
    learnable = {n for n, p in model.named_parameters() if p.requires_grad}
    with_grad = {n for n, p in model.named_parameters() if p.grad is not None}
    backbone = {f"backbone.{n}" for n, _ in model.backbone.named_parameters()}
    assert backbone and not backbone & learnable, "the backbone must be frozen"
    assert with_grad and with_grad <= learnable
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)

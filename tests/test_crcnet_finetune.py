"""CRCNet's K-shot fine-tuning at test time: each episode on its own random stream, boundary pixels ignored.

Tiny sizes (33 px, random ResNet-50, T = 2, 3 fine-tuning steps) with dropout and CaNet's history on, so every
random draw of the fine-tuning is exercised.
"""

from __future__ import annotations

import pytest
import torch

import hmrepro
from hmrepro.engine.evaluation.runner import kshot_vote
from hmrepro.models.crcnet import episode_seeds
from hmrepro.models.interface import FewShotModule

SIZE = 33
SHOTS = 3


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    net = hmrepro.create_model(
        "crcnet", backbone="resnet50", pretrained=False, refine_steps=2, mrm_gradient="canet", finetune_steps=3
    )
    return net.eval()


def _episode(seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    query = torch.randn(1, 3, SIZE, SIZE, generator=g)
    supports = torch.randn(1, SHOTS, 3, SIZE, SIZE, generator=g)
    masks = (torch.rand(1, SHOTS, SIZE, SIZE, generator=g) > 0.5).float()
    return query, supports, masks


def _tuned_logits(model, query, supports, masks, episode: int, ignores=None) -> torch.Tensor:
    tuned = model.finetuned(supports[0], masks[0], None if ignores is None else ignores[0], episode=episode)
    with torch.no_grad():
        return tuned(query, supports[:, 0], masks[:, 0])


def test_an_episode_gives_the_same_logits_whether_or_not_another_was_fine_tuned_before(model):
    first, second = _episode(1), _episode(2)
    torch.manual_seed(0)
    alone = _tuned_logits(model, *second, episode=2)
    torch.manual_seed(0)
    _tuned_logits(model, *first, episode=1)  # draws dropout masks and history coins
    after_another = _tuned_logits(model, *second, episode=2)
    torch.testing.assert_close(after_another, alone, rtol=0, atol=0)
    # the fine-tuning is random (dropout, history, pairs): another episode index gives other logits
    assert not torch.equal(_tuned_logits(model, *second, episode=3), alone)


def test_the_vote_of_an_episode_does_not_depend_on_its_batch_or_the_callers_stream(model):
    first, second = _episode(1), _episode(2)
    both = [torch.cat([a, b]) for a, b in zip(first, second)]
    torch.manual_seed(0)
    state = torch.random.get_rng_state()
    together = model.predict_nshot(*both, episode_ids=[1, 2])
    assert torch.equal(torch.random.get_rng_state(), state)  # the caller's stream is left as it was
    torch.manual_seed(123)
    alone = model.predict_nshot(*second, episode_ids=torch.tensor([2]))
    torch.testing.assert_close(together[1:], alone, rtol=0, atol=0)


def test_episode_seeds_are_a_pure_function_of_seed_and_episode():
    assert episode_seeds(0, 2) == episode_seeds(0, 2)
    assert len({episode_seeds(0, 1), episode_seeds(0, 2), episode_seeds(1, 2)}) == 3
    assert all(0 <= s < 2**63 for s in episode_seeds(7, 10**6))


def test_finetuning_loss_leaves_the_supports_ignore_pixels_out_unless_told(model, monkeypatch):
    """Every fine-tuning step's loss gets the ignore maps of its pair (a predicted from b: ``query_ignore`` = a's,
    ``support_ignores`` = b's), so :meth:`CRCNet.compute_objective` leaves them out as in training (its own test:
    test_crcnet.py); ``finetune_ignore=false`` drops them (255 counts as background)."""
    from hmrepro.models.crcnet import CRCNet

    query, supports, masks = _episode(5)
    ignores = torch.zeros_like(masks)
    for k in range(SHOTS):
        ignores[0, k, k : k + 2] = 1.0  # a different band per support
    pairs = []
    original = CRCNet.compute_objective

    def recording(self, outputs, batch):
        pairs.append(batch)
        return original(self, outputs, batch)

    monkeypatch.setattr(CRCNet, "compute_objective", recording)
    _tuned_logits(model, query, supports, masks, 4, ignores)
    assert len(pairs) == model.finetune["steps"]
    for pair in pairs:
        a = [k for k in range(SHOTS) if torch.equal(masks[0, k : k + 1], pair["query_mask"])]
        b = [k for k in range(SHOTS) if torch.equal(masks[0, k : k + 1, None], pair["support_masks"])]
        assert len(a) == len(b) == 1 and a != b
        assert torch.equal(pair["query_ignore"], ignores[0, a[0] : a[0] + 1])
        assert torch.equal(pair["support_ignores"], ignores[0, b[0] : b[0] + 1, None])
    pairs.clear()
    monkeypatch.setitem(model.finetune, "ignore", False)
    _tuned_logits(model, query, supports, masks, 4, ignores)
    assert pairs and not any({"query_ignore", "support_ignores"} & set(pair) for pair in pairs)


def test_finetune_ignore_is_a_declared_constructor_argument_defaulting_to_the_faithful_choice():
    from hmrepro.models.model_args import constructor_defaults

    assert constructor_defaults("crcnet")["finetune_ignore"] is True


def test_the_evaluation_passes_ignores_and_episode_indices_to_a_model_that_takes_them():
    seen = {}

    class Recorder(FewShotModule):
        takes_episode_context = True

        def predict_nshot(self, query, supports, masks, output_size=None, **context):
            seen.update(context)
            return torch.zeros(query.shape[0], *query.shape[-2:], dtype=torch.long)

    batch = {
        "query_img": torch.zeros(2, 3, 4, 4),
        "support_imgs": torch.zeros(2, 1, 3, 4, 4),
        "support_masks": torch.zeros(2, 1, 4, 4),
        "support_ignores": torch.ones(2, 1, 4, 4),
        "episode_index": torch.tensor([7, 8]),
    }
    kshot_vote(Recorder(), batch, None)
    assert seen["episode_ids"].tolist() == [7, 8] and seen["support_ignores"] is batch["support_ignores"]
    seen.clear()

    class Plain(Recorder):
        takes_episode_context = False

    kshot_vote(Plain(), batch, None)
    assert seen == {}

"""ASNet's inference shortcuts: the frozen ResNet with BatchNorm folded into its convolutions, and the query run with
the first shot's support images in one backbone batch. Both must give the plain path's numbers up to float
rounding, follow weight changes and leave the state dict and training alone."""

from __future__ import annotations

import pytest
import torch

from hmrepro import create_model
from hmrepro.models.backbone import build_backbone
from hmrepro.models.interface import logits_of

SIZE = 64


def _randomised_backbone(seed: int = 0):
    """A random ResNet-50 whose BatchNorm layers carry non-trivial statistics and affine terms (so that a wrong fold
    shows)."""
    torch.manual_seed(seed)
    net = build_backbone("resnet50", pretrained=False)
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.normal_(0, 0.1)
                module.running_var.uniform_(0.5, 2.0)
                module.weight.uniform_(0.5, 1.5)
                module.bias.normal_(0, 0.1)
    return net.eval()


def _assert_taps_close(folded, plain):
    assert len(folded) == len(plain)
    for a, b in zip(folded, plain):
        assert a.shape == b.shape
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4 * b.abs().max().item())


def test_folded_taps_equal_the_plain_ones_and_follow_new_weights():
    net = _randomised_backbone(0)
    img = torch.randn(2, 3, SIZE, SIZE)
    with torch.no_grad():
        plain = net.taps(img)
        net.set_batchnorm_folding(True)
        _assert_taps_close(net.taps(img), plain)

        other = _randomised_backbone(1)
        net.load_state_dict(other.state_dict())  # in-place copies: the folded weights must be rebuilt
        _assert_taps_close(net.taps(img), other.taps(img))
        assert not torch.allclose(net.taps(img)[-1], plain[-1])


def test_folding_keeps_the_state_dict_and_never_runs_in_training_mode():
    net = _randomised_backbone(0)
    keys = set(net.state_dict())
    net.set_batchnorm_folding(True)
    assert set(net.state_dict()) == keys
    img = torch.randn(1, 3, SIZE, SIZE)
    for module in net.modules():  # BatchNorm in training mode (a random backbone's re-estimation of its statistics)
        if isinstance(module, torch.nn.BatchNorm2d):
            module.train()
    before = net.bn1.num_batches_tracked.clone()
    with torch.no_grad():
        net.taps(img)
    assert net.bn1.num_batches_tracked == before + 1  # the torchvision layers ran, not the folded copy


@pytest.mark.slow  # a 2-shot ASNet-HM prediction at 400 px each way (four learner passes)
def test_asnet_eval_shortcuts_give_the_plain_paths_logits_and_votes():
    """The first shot's logits of the K-shot vote are ``forward``'s on that shot, bit for bit (the same
    ``first_shot_prefetched`` and ``shot_logits`` calls; ShotVoteModel.kshot_mask), so one 2-shot prediction each
    way gives both the 1-shot logits and the vote."""
    torch.manual_seed(0)
    model = create_model("asnet-hm", pretrained=False).eval()
    assert model.folds_backbone_batchnorm and model.batches_query_with_support and model.backbone.fold_batchnorm
    size = 400  # ASNet's learner takes 393-512 px only
    query, supports = torch.randn(1, 3, size, size), torch.randn(1, 2, 3, size, size)
    masks = torch.zeros(1, 2, size, size)
    masks[:, 0, 100:300, 120:280] = 1
    masks[:, 1, 50:200, 200:380] = 1

    def run():
        shot_logits = []
        plain_shot_logits = model.shot_logits

        def spy(*args, **kwargs):
            shot_logits.append(plain_shot_logits(*args, **kwargs))
            return shot_logits[-1]

        model.shot_logits = spy
        try:
            with torch.no_grad():
                vote = model.predict_nshot(query, supports, masks)
        finally:
            del model.shot_logits  # back to the class method
        assert len(shot_logits) == 2
        return logits_of(shot_logits[0]), vote

    fast_logits, fast_vote = run()
    model.batches_query_with_support = False
    model.backbone.set_batchnorm_folding(False)
    plain_logits, plain_vote = run()
    torch.testing.assert_close(fast_logits, plain_logits, rtol=1e-3, atol=1e-3)
    assert (fast_vote == plain_vote).float().mean() > 0.999

"""A random backbone's calibrated BatchNorm statistics travel in last.pt: a resume never re-estimates them.

Re-estimating them gives other bits with another number of CPU threads (the convolutions' sums are split
differently), which made a ``--no-pretrained`` run without ``--deterministic`` refuse to resume.
"""

from __future__ import annotations

import pytest
import torch

from hmrepro import create_model
from hmrepro.engine.checkpoint_io import save_checkpoint
from hmrepro.engine.training.train import _load_last, backbone_fingerprint, calibrate_batchnorm, resume_state

pytestmark = pytest.mark.slow  # resume after kill of a calibrated training


def _calibrated(images: torch.Tensor, threads: int):
    torch.manual_seed(0)
    model = create_model("hsnet", backbone="resnet50", pretrained=False)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        calibrate_batchnorm(model.backbone, images)
    finally:
        torch.set_num_threads(before)
    return model


def _norm_statistics(model) -> dict:
    return {k: v for k, v in model.state_dict().items() if k.startswith("backbone.") and "running_" in k}


def test_resume_restores_the_saved_statistics_whatever_the_thread_count(tmp_path):
    images = torch.randn(8, 3, 48, 48, generator=torch.Generator().manual_seed(1))
    trained = _calibrated(images, threads=2)
    fingerprint = backbone_fingerprint(trained, skip_norm_statistics=True)
    with torch.no_grad():
        trained.hpn_learner.decoder2[2].weight.add_(1.0)  # a learnt weight, so the learnable state is restored too
    path = tmp_path / "last.pt"
    optimizer = torch.optim.SGD([p for p in trained.parameters() if p.requires_grad], lr=0.1)
    save_checkpoint(
        path,
        resume_state(trained, calibrated=True),
        model_name="hsnet",
        backbone="resnet50",
        metadata={"backbone_sha256": fingerprint},
        extra={"optimizer": optimizer.state_dict()},
    )

    resumed = _calibrated(images[:4], threads=1)  # other images and threads: other statistics before the restore
    assert backbone_fingerprint(resumed, skip_norm_statistics=True) == fingerprint  # the weights come from the seed
    optimizer = torch.optim.SGD([p for p in resumed.parameters() if p.requires_grad], lr=0.1)
    _load_last(path, resumed, optimizer, fingerprint)

    saved, restored = _norm_statistics(trained), _norm_statistics(resumed)
    assert saved and saved.keys() == restored.keys()
    assert all(torch.equal(saved[k], restored[k]) for k in saved)
    assert torch.equal(trained.hpn_learner.decoder2[2].weight, resumed.hpn_learner.decoder2[2].weight)


def test_a_pretrained_run_keeps_only_the_learnable_state():
    torch.manual_seed(0)
    model = create_model("hsnet", backbone="resnet50", pretrained=False)
    assert not any(k.startswith("backbone.") for k in resume_state(model, calibrated=False))

"""Batched evaluation (``--bsz B``): B episodes go through the model at once, as a speed choice only.

Every episode must get the prediction it gets alone, so the record (mIoU, FB-IoU) and every per-episode count of the
sidecar must equal those of batch 1, for 1-shot and 2-shot (the vote is per episode), with an uneven last batch.

On a CPU, PyTorch picks convolution kernels by tensor size: at test sizes some run its own kernel for one episode
and oneDNN's for several, and the two round differently (~1e-7), which can flip an argmax at a near-tie (README,
"Batched evaluation"). These tests therefore run with oneDNN off, where each convolution computes every episode on its
own: what they check is hmrepro's batching (episodes kept apart through the model, the vote, the meter and the
per-episode table), not PyTorch's kernels. The weights follow the parity fixtures' rule (non-trivial predictions).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from model_weights import fill_params

from hmrepro import create_model
from hmrepro.engine.checkpoint_io import save_checkpoint
from hmrepro.engine.evaluation.evaluate import EvalConfig, evaluate
from hmrepro.engine.evaluation.per_episode import COUNT_COLUMNS
from hmrepro.engine.records import read_episode_table

SIZE = 48


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """hsnet-hm with the fixtures' deterministic weights, saved as our own PASCAL-5i fold-0 checkpoint at 48 px."""
    path = tmp_path_factory.mktemp("ckpt") / "hsnet-hm_pascal_fold0.pt"
    model = fill_params(create_model("hsnet-hm", pretrained=False))
    config = {"benchmark": "pascal", "fold": 0, "img_size": SIZE}
    save_checkpoint(path, model, model_name="hsnet-hm", backbone="resnet50", metadata={"config": config})
    return str(path)


def _evaluate(checkpoint, root, results, shot: int, bsz: int):
    with torch.backends.mkldnn.flags(enabled=False):
        (record,) = evaluate(
            EvalConfig(
                "hsnet-hm",
                "pascal",
                0,
                shot,
                weights=checkpoint,
                data_root=root,
                splits=root / "splits",
                results_dir=results,
                device="cpu",
                episodes=4,
                bsz=bsz,
                image_cache_mib=16,
            )
        )
    return record, read_episode_table(record["path"])[1]


@pytest.mark.filterwarnings("ignore:TF32 acceleration on top of oneDNN")  # torch's note when oneDNN is switched off
@pytest.mark.parametrize("shot", [1, 2])
@pytest.mark.slow  # an evaluation on the synthetic benchmark at every batch size
def test_batched_evaluation_gives_the_records_and_episodes_of_batch_1(checkpoint, synthetic_root, tmp_path, shot):
    one, one_table = _evaluate(checkpoint, synthetic_root, tmp_path / "b1", shot, bsz=1)
    batched, table = _evaluate(checkpoint, synthetic_root, tmp_path / "b2", shot, bsz=3)  # batches of 3 and 1
    assert (one["bsz"], batched["bsz"]) == (1, 3) and batched["episodes"] == one["episodes"] == 4
    assert one_table["fg_inter"].sum() > 0 and (one_table["fg_union"] > one_table["fg_inter"]).any()  # not trivial
    assert (batched["miou"], batched["fb_iou"]) == (one["miou"], one["fb_iou"])
    for column in COUNT_COLUMNS:
        assert np.array_equal(table[column], one_table[column]), column

import pytest
import torch
from helpers import fixture_path

from hmrepro.metrics import FewShotMeter

NCLASS = {"pascal": 20, "coco": 80, "fss": 1000}


@pytest.mark.parametrize("bench", ["pascal", "coco", "fss"])
def test_matches_authors_evaluator(bench):
    d = torch.load(fixture_path("metric_cases.pt"), weights_only=True)
    meter = FewShotMeter(NCLASS[bench], d[f"{bench}/class_ids_eval"].tolist())
    ignore = d[f"{bench}/ignore"]
    for it in range(d[f"{bench}/pred"].shape[0]):
        meter.update(
            d[f"{bench}/pred"][it],
            d[f"{bench}/gt"][it],
            d[f"{bench}/class_id"][it],
            ignore[it] if ignore.numel() else None,
        )
    miou, fb_iou = meter.compute()
    assert miou == pytest.approx(d[f"{bench}/miou"].item(), abs=1e-4)
    assert fb_iou == pytest.approx(d[f"{bench}/fb_iou"].item(), abs=1e-4)


def test_hand_computed_case_with_ignore_and_untouched_class():
    # one 2x3 episode of class 1: pred fg on 3 pixels, gt fg on 2, one ignored pixel
    pred = torch.tensor([[[1, 1, 0], [1, 0, 0]]])
    gt = torch.tensor([[[1, 0, 0], [1, 0, 0]]], dtype=torch.float32)
    ignore = torch.tensor([[[0, 0, 1], [0, 0, 0]]])
    meter = FewShotMeter(4, [1, 2])
    meter.update(pred, gt, torch.tensor([1]), ignore)
    # valid pixels: 5. fg: inter 2, union 3. bg: pred bg {(1,1),(1,2)}, gt bg {(0,1),(1,1),(1,2)} -> inter 2, union 3
    miou, fb = meter.compute()
    assert miou == pytest.approx((2 / 3 + 0.0) / 2 * 100)  # class 2 untouched counts as IoU 0
    assert fb == pytest.approx((2 / 3 + 2 / 3) / 2 * 100)


def test_accumulates_over_episodes_not_averaging_them():
    meter = FewShotMeter(2, [0])
    meter.update(torch.ones(1, 2, 2), torch.ones(1, 2, 2), [0])  # fg 4/4
    meter.update(torch.zeros(1, 4, 4), torch.ones(1, 4, 4), [0])  # fg 0/16
    assert meter.compute()[0] == pytest.approx(4 / 20 * 100)


def test_rejects_bad_input():
    with pytest.raises(ValueError):
        FewShotMeter(5, [7])
    meter = FewShotMeter(5, [1])
    with pytest.raises(ValueError, match="shape"):
        meter.update(torch.zeros(1, 2, 2), torch.zeros(1, 3, 3), [1])
    with pytest.raises(ValueError, match="class ids"):
        meter.update(torch.zeros(2, 2, 2), torch.zeros(2, 2, 2), [1])

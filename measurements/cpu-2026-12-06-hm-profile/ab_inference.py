"""Interleaved A/B of hmrepro's inference switches on one model in one process (CPU, fixtures' inputs, 400 px).

Variants (each a setting of the same model, switched between calls): ``unfolded`` = the backbone's torchvision
BatchNorm layers, ``folded`` = BatchNorm folded into the convolutions (FrozenResNet.set_batchnorm_folding), and,
when the model has the switch, ``folded+joint`` = also the query and the first shot's support images through the
backbone in one batch (ShotVoteModel.batches_query_with_support). Order alternates every repeat (A B, B A, ...).

Usage: python ab_inference.py MODEL SHOTS REPEATS [VARIANT,...]; prints per variant the median wall and process CPU
seconds of one ``predict_nshot`` episode and whether every variant's mask equals the first's.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(REPO), str(REPO / "tests")]
from model_weights import fill_params  # noqa: E402

import hmrepro  # noqa: E402


def set_variant(model, variant: str) -> None:
    model.backbone.set_batchnorm_folding(variant != "unfolded")
    if hasattr(type(model), "batches_query_with_support"):
        model.batches_query_with_support = variant.endswith("joint")


def main() -> int:
    name, shots, repeats = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    variants = sys.argv[4].split(",") if len(sys.argv) > 4 else ["unfolded", "folded"]
    torch.set_num_threads(2)
    model = fill_params(hmrepro.create_model(name, pretrained=False)).eval()
    data = torch.load(REPO.parent / "shared" / "fixtures" / "inputs_400.pt", weights_only=True)
    q, s, m = data["query_img"][:1], data["support_imgs"][:1, :shots], data["support_masks"][:1, :shots].float()
    times = {v: [] for v in variants}
    masks = {}
    load0 = os.getloadavg()
    with torch.no_grad():
        for v in variants:  # warm-up, and the masks
            set_variant(model, v)
            masks[v] = model.predict_nshot(q, s, m)
        for r in range(repeats):
            for v in variants if r % 2 == 0 else variants[::-1]:
                set_variant(model, v)
                w0, c0 = time.perf_counter(), time.process_time()
                model.predict_nshot(q, s, m)
                times[v].append((time.perf_counter() - w0, time.process_time() - c0))
    print(f"{name} {shots}-shot, {repeats} interleaved repeats, load {load0} -> {os.getloadavg()}")
    base = statistics.median(t[1] for t in times[variants[0]])
    for v in variants:
        wall, cpu = (statistics.median(t[i] for t in times[v]) for i in (0, 1))
        same = torch.equal(masks[v], masks[variants[0]])
        walls = " ".join(f"{t[0]:.2f}" for t in times[v])
        cpus = " ".join(f"{t[1]:.2f}" for t in times[v])
        print(
            f"  {v:14s} wall {wall:6.3f} [{walls}]  CPU {cpu:6.3f} [{cpus}]  CPU vs first {base / cpu:.3f}x",
            f"mask equal {same}",
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Inference time per image (HM Table 7): a model's FM variant against its HM variant.

What is timed is what ``hmrepro.reporting.tables`` calls ``secs_per_image``: one 1-shot episode of one query at
batch size 1 — support masking, feature extraction of query and support, the forward pass, upsampling and argmax
(``predict_nshot``) — with the device synchronised before each clock reading; data loading excluded. Inputs are
random images and a centred square support mask at the benchmark's image size; weights are random (timing does
not depend on them). After ``warmup`` untimed calls of each model, the two models are timed alternately
(FM, HM, FM, HM, ...) so that drifting clocks or thermal throttling affect both alike; each gets the median of
its ``runs`` timings.

Records (``kind='bench'``, benchmark ``coco`` as Table 7, fold 0, shot 1, ``miou``/``fb_iou`` None) carry
``secs_per_image`` and every timing; their origin is ``'random'`` (untrained weights: timing does not depend on
them), and Table 7 reads bench records of every origin.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

from ...models.cards import eval_plan, list_cards
from .bench_model import episode_inputs, random_weights_fields, timed_model_fields

__all__ = ["BENCH_FAMILIES", "bench", "time_model"]

# family → (baseline, HM variant) of every card; ASNet's baseline masks no support features (its card: "none")
BENCH_FAMILIES: dict[str, tuple[str, str]] = {card.family: (card.family, f"{card.family}-hm") for card in list_cards()}
BENCH_BENCHMARK = "coco"  # Table 7 is measured on COCO-20i


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def time_model(model, inputs, device: torch.device) -> float:
    """Seconds of one ``predict_nshot`` call on ``inputs``, the device synchronised before each clock reading."""
    _sync(device)
    start = time.perf_counter()
    model.predict_nshot(*inputs)
    _sync(device)
    return time.perf_counter() - start


def bench(
    family: str = "hsnet",
    *,
    backbone: str = "resnet50",
    device: str | None = None,
    img_size: int | None = None,
    runs: int = 20,
    warmup: int = 3,
    results_dir: str | Path | None = "results",
    log: Callable[[str], None] | None = None,
) -> list[dict]:
    """Time the FM and HM variants of ``family``; returns (and writes) one bench record per model.

    ``img_size`` defaults to the family's COCO-20i size (its card: 400, VAT 417)."""
    from ... import create_model
    from ...errors import HmreproError
    from ..evaluation.evaluate import set_eval_numerics
    from ..records import ensure_writable_dir, machine_fields, save_records
    from ..training.distributed import resolve_device

    log = log or (lambda msg: None)
    if family not in BENCH_FAMILIES:
        raise HmreproError(f"unknown model family {family!r}; choose one of {', '.join(BENCH_FAMILIES)}")
    if runs < 1 or warmup < 0:
        raise HmreproError("--runs must be at least 1 and --warmup at least 0")
    dev = resolve_device(device)
    set_eval_numerics(dev)  # the evaluation's CUDA settings: cuDNN autotuning, TF32 off (fp32 means fp32)
    if results_dir is not None:
        ensure_writable_dir(Path(results_dir))
    names = BENCH_FAMILIES[family]
    img_size = img_size or eval_plan(family, BENCH_BENCHMARK).img_size
    models = []
    for name in names:
        torch.manual_seed(0)
        try:
            model = create_model(name, backbone=backbone, pretrained=False, benchmark=BENCH_BENCHMARK)
        except ValueError as err:
            raise HmreproError(f"{name} on {backbone}: {err}") from None
        models.append(model.to(dev).eval())
    inputs = episode_inputs(img_size, 1, 1, dev)  # the query, one support and its centred square mask
    try:
        for model in models:
            for _ in range(warmup):
                time_model(model, inputs, dev)
        timings: list[list[float]] = [[] for _ in models]
        for _ in range(runs):
            for i, model in enumerate(models):
                timings[i].append(time_model(model, inputs, dev))
    except RuntimeError as err:  # e.g. an image size the model cannot take, or out of memory
        raise HmreproError(f"timing {family} at {img_size} px failed: {err}") from None
    machine = machine_fields(dev)
    records = []
    for name, model, secs in zip(names, models, timings):
        median = statistics.median(secs)
        record = {
            **timed_model_fields("bench", name, model, backbone, BENCH_BENCHMARK, shot=1),
            "episodes": runs,
            "secs_per_image": median,
            "secs_per_episode": median,
            "secs_runs": secs,
            "secs_min": min(secs),
            "runs": runs,
            "warmup": warmup,
            "inputs": "random images, centred square support mask, batch 1, 1-shot, fp32",
            **random_weights_fields(img_size),
            **machine,
        }
        records.append(record)
    save_records(records, None if results_dir is None else Path(results_dir))
    fm, hm = (r["secs_per_image"] for r in records)
    log(f"{names[0]}: {fm:.4f} s/image, {names[1]}: {hm:.4f} s/image, HM overhead {(hm / fm - 1) * 100:+.1f}%")
    return records


def overhead_pct(records: list[dict]) -> float:
    """The HM variant's extra time over the FM variant, in percent."""
    fm, hm = (r["secs_per_image"] for r in records)
    return (hm / fm - 1.0) * 100.0

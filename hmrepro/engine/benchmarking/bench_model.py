"""``hmrepro bench model``: one K-shot episode of one model — seconds, where they go, and peak memory.

Any model of any card works: the model is built with :func:`hmrepro.create_model` (random weights, ``torch.manual_seed
(0)``: timing does not depend on the weights), and timed through the model interface only (``predict_nshot`` on a
query [B, 3, S, S], supports [B, K, 3, S, S] and centred square masks; random images, seed 0).

- **Time**: after ``warmup`` untimed episodes, the median (and min) of ``runs`` episodes, the device synchronised
  around each; also the process CPU time per episode (all threads), steadier than wall time on a shared CPU.
- **Peak memory** of the timed episodes (:class:`~hmrepro.engine.training.memory.PeakMemory`: the peak resident set
on a CPU,
  ``max_memory_allocated`` on CUDA), absolute and above what was in use before them.
- **Breakdown** of one more episode under ``torch.profiler``: the backbone (``model.backbone.taps``; its first call of
  the episode is the query's, the others the supports'), the correlation (the ``hmrepro::correlation`` range of
  :func:`~hmrepro.models.correlation.hypercorrelation_pyramid`), the learner (every child module of the model other
  than the backbone: ``hpn_learner``, ``learner``, ...) and the rest (masking, resizing, the vote), plus the ops that
  took most time. A model that does not go through these pieces shows its time under "other". The profiled episode
  is slower than the timed ones (the profiler's overhead): the shares are what it is for.

Opt-in options that change numbers (bf16 autocast, channels-last inputs) are recorded in the record.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import torch
from torch import nn

from ...models.correlation import PROFILER_LABEL as CORRELATION_LABEL
from ..training.memory import PeakMemory

__all__ = ["STAGES", "bench_model", "episode_inputs", "stage_breakdown"]

QUERY_BACKBONE, SUPPORT_BACKBONE, CORRELATION, LEARNER, OTHER = (
    "query backbone",
    "support backbone",
    "correlation",
    "learner",
    "other",
)
STAGES = (QUERY_BACKBONE, SUPPORT_BACKBONE, CORRELATION, LEARNER, OTHER)
EPISODE_LABEL = "hmrepro::episode"
LABELS = {
    f"hmrepro::{QUERY_BACKBONE}": QUERY_BACKBONE,
    f"hmrepro::{SUPPORT_BACKBONE}": SUPPORT_BACKBONE,
    CORRELATION_LABEL: CORRELATION,
    f"hmrepro::{LEARNER}": LEARNER,
}
TOP_OPS = 8


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def episode_inputs(img_size: int, shot: int, bsz: int, device: torch.device, seed: int = 0):
    """Random normalised images and a centred square mask (half the side): query, supports, support masks."""
    gen = torch.Generator().manual_seed(seed)
    query = torch.randn(bsz, 3, img_size, img_size, generator=gen)
    supports = torch.randn(bsz, shot, 3, img_size, img_size, generator=gen)
    masks = torch.zeros(bsz, shot, img_size, img_size)
    lo, hi = img_size // 4, img_size - img_size // 4
    masks[..., lo:hi, lo:hi] = 1.0
    return query.to(device), supports.to(device), masks.to(device)


def timed_model_fields(kind: str, name: str, model: nn.Module, backbone: str, benchmark: str, shot: int) -> dict:
    """The first fields of a bench record: what was timed (it scores nothing: no mIoU, no FB-IoU)."""
    return {
        "kind": kind,
        "model": name,
        "masking": model.masking.name,
        "backbone": backbone,
        "benchmark": benchmark,
        "fold": 0,
        "shot": shot,
        "miou": None,
        "fb_iou": None,
    }


def random_weights_fields(img_size: int) -> dict:
    """The fields of a bench record timed on random weights and inputs: no checkpoint, and none of the paper's
    protocols, so it fills no accuracy cell."""
    return {
        "protocol": "bench",
        "img_size": img_size,
        "original_size": False,
        "checkpoint_sha256": None,
        "origin": "random",
        "weights": "random",
    }


@contextmanager
def _labelled_pieces(model: nn.Module) -> Iterator[None]:
    """Profiler ranges around the backbone's ``taps`` calls and the learner modules' forwards, for one episode."""
    backbone = model.backbone
    taps = backbone.taps
    calls = {"n": 0}
    handles = []
    with ExitStack() as stack:

        def labelled_taps(*args, **kwargs):
            label = QUERY_BACKBONE if calls["n"] == 0 else SUPPORT_BACKBONE
            calls["n"] += 1
            with torch.profiler.record_function(f"hmrepro::{label}"):
                return taps(*args, **kwargs)

        backbone.taps = labelled_taps  # an instance attribute shadows the method; removed below
        stack.callback(lambda: backbone.__dict__.pop("taps", None))
        for _name, child in model.named_children():
            if child is backbone:
                continue
            ranges: list = []

            def enter(module, args, ranges=ranges):
                ranges.append(torch.profiler.record_function(f"hmrepro::{LEARNER}").__enter__())

            def leave(module, args, output, ranges=ranges):
                ranges.pop().__exit__(None, None, None)

            handles += [child.register_forward_pre_hook(enter), child.register_forward_hook(leave)]
        stack.callback(lambda: [h.remove() for h in handles])
        yield


def stage_breakdown(model: nn.Module, episode: Callable[[], object], device: torch.device) -> dict:
    """Seconds per stage (:data:`STAGES`) of one profiled ``episode()``, its profiled total and the top ops."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with _labelled_pieces(model), profile(activities=activities) as prof:
        with torch.profiler.record_function(EPISODE_LABEL):
            episode()
        sync(device)
    events = prof.key_averages()
    attr = "device_time_total" if device.type == "cuda" else "cpu_time_total"
    self_attr = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    totals = {event.key: getattr(event, attr, 0.0) / 1e6 for event in events}  # µs → s
    total = totals.get(EPISODE_LABEL, 0.0)
    stages = {stage: 0.0 for stage in STAGES}
    for label, stage in LABELS.items():
        stages[stage] += totals.get(label, 0.0)
    stages[OTHER] = max(total - sum(stages.values()), 0.0)
    ops = sorted((e for e in events if not e.key.startswith("hmrepro::")), key=lambda e: -getattr(e, self_attr, 0.0))
    top = [{"op": e.key, "secs": round(getattr(e, self_attr, 0.0) / 1e6, 4), "calls": e.count} for e in ops[:TOP_OPS]]
    return {"profiled_secs": round(total, 4), "stages": {k: round(v, 4) for k, v in stages.items()}, "top_ops": top}


def _time_runs(episode: Callable[[], object], device: torch.device, runs: int) -> tuple[list[float], list[float]]:
    """Wall seconds and process CPU seconds (all threads) of each of ``runs`` episodes."""
    secs, cpu_secs = [], []
    for _ in range(runs):
        sync(device)
        start, cpu_start = time.perf_counter(), time.process_time()
        episode()
        sync(device)
        secs.append(time.perf_counter() - start)
        cpu_secs.append(time.process_time() - cpu_start)
    return secs, cpu_secs


def bench_model(
    model_name: str,
    *,
    shot: int = 1,
    backbone: str = "resnet50",
    benchmark: str = "coco",
    img_size: int | None = None,
    bsz: int = 1,
    device: str | None = None,
    runs: int = 3,
    warmup: int = 1,
    bf16: bool = False,
    channels_last: bool = False,
    profile: bool = True,
    results_dir: str | Path | None = "results",
    inference: dict | None = None,
    model_args: str = "",
) -> dict:
    """Time, peak memory and breakdown of ``model_name``'s K-shot episode; returns (and writes) one record
    (``kind='bench-model'``). ``img_size`` defaults to the model's size for ``benchmark`` (its card)."""
    from ... import create_model
    from ...errors import HmreproError
    from ...models.cards import card_of, eval_plan
    from ...models.model_args import model_arguments
    from ..evaluation.evaluate import set_eval_numerics
    from ..evaluation.inference import apply_inference, inference_fields
    from ..records import ensure_writable_dir, machine_fields, save_records
    from ..training.distributed import resolve_device

    if shot < 1 or bsz < 1 or runs < 1 or warmup < 0:
        raise HmreproError("--shot, --bsz and --runs must be at least 1, --warmup at least 0")
    dev = resolve_device(device)
    set_eval_numerics(dev)  # the evaluation's CUDA settings: cuDNN autotuning, TF32 off (fp32 means fp32)
    if results_dir is not None:
        ensure_writable_dir(Path(results_dir))
    card = card_of(model_name)
    img_size = img_size or eval_plan(model_name, benchmark).img_size
    torch.manual_seed(0)
    try:
        model = create_model(
            model_name,
            backbone=backbone,
            pretrained=False,
            benchmark=benchmark,
            **model_arguments(model_name, model_args),
        )
    except ValueError as err:
        raise HmreproError(f"{model_name} on {backbone}: {err}") from None
    apply_inference(model, inference, model_name)  # test-time options (CRCNet: --multi-scale, --kshot)
    model = model.to(dev).eval()
    query, supports, masks = episode_inputs(img_size, shot, bsz, dev)
    if channels_last:
        query = query.contiguous(memory_format=torch.channels_last)
    autocast = torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bf16)

    def episode():  # no_grad, not inference_mode: a model may fine-tune on the supports inside (CRCNet)
        with torch.no_grad(), autocast:
            return model.predict_nshot(query, supports, masks)

    try:
        for _ in range(warmup):
            episode()
        with PeakMemory(dev) as memory:  # the peak of the timed episodes: one after the other, the peak of one
            secs, cpu_secs = _time_runs(episode, dev, runs)
        breakdown = stage_breakdown(model, episode, dev) if profile else None
    except RuntimeError as err:  # a size the model cannot take, out of memory ...
        raise HmreproError(f"{model_name}, {shot}-shot at {img_size} px failed: {err}") from None
    median = statistics.median(secs)
    record = {
        "kind": "bench-model",
        "model": model_name,
        "family": card.family,
        "masking": model.masking.name,
        **inference_fields(model),
        **({"model_args": model_args} if model_args else {}),
        "backbone": backbone,
        "benchmark": benchmark,
        "fold": 0,
        "shot": shot,
        "bsz": bsz,
        "miou": None,
        "fb_iou": None,
        "episodes": runs,
        "secs_per_episode": median,
        "secs_min": min(secs),
        "secs_runs": secs,
        # process CPU time (all threads): on a CPU shared with other work it moves less than the wall time
        "cpu_secs_per_episode": statistics.median(cpu_secs),
        "cpu_secs_runs": cpu_secs,
        "warmup": warmup,
        "precision": "bf16" if bf16 else "fp32",
        "channels_last_inputs": channels_last,
        **memory.as_dict(),
        "breakdown": breakdown,
        "inputs": f"random images, centred square support masks, batch {bsz}, {shot}-shot",
        **random_weights_fields(img_size),
        **machine_fields(dev),
    }
    save_records([record], None if results_dir is None else Path(results_dir))
    return record

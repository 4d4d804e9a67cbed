"""``hmrepro bench eval`` and ``hmrepro bench train``: end-to-end evaluation and training throughput, with records.

- :func:`bench_eval` runs the real evaluation (:func:`hmrepro.engine.evaluation.evaluate.evaluate`: the fold's
fixed episodes
  read from a benchmark folder, decoded and preprocessed by the DataLoader, the K-shot vote, the metric) on the
  first ``episodes`` episodes, and reports episodes per second as the runner measures them (data loading
  included, model building excluded), the wall time of the whole call, and the peak memory: of the whole call
  (model building and the first batch included) and of the episodes after the first batch. They differ on CUDA:
  cuDNN's autotuning (on in evaluation, fp32) tries the candidate algorithms of each convolution on the first batch
  with a workspace as large as the most demanding candidate needs, taken from PyTorch's caching allocator (GiBs for
  fp32's FFT algorithms at 400 px); the later batches run the chosen algorithms only.
- :func:`bench_train` times training iterations of a model at its recipe's batch and image size (both can be
  overridden) on random episodes already in memory (data loading excluded: ``bench eval`` measures that side):
  the recipe's optimizer, the model's own objective, forward, backward and step, bf16 autocast when asked. The
  backbone is random and frozen as in training; timing does not depend on the weights.

Every record (``kind`` 'bench-eval' / 'bench-train') names the device, precision, batch, image size, workers and the
peak-memory method (:class:`~hmrepro.engine.training.memory.PeakMemory`); these records never fill a table cell.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import replace
from pathlib import Path

import torch

from ..evaluation.eval_config import EvalConfig
from ..training.memory import PeakMemory
from .bench_model import random_weights_fields, timed_model_fields

__all__ = ["bench_eval", "bench_train", "random_training_batch"]


def bench_eval(config: EvalConfig, progress=None) -> dict:
    """Episodes per second of the evaluation ``config`` (its records go nowhere: the bench record goes to its
    ``results_dir``; the backbone of ``random`` weights is random); ``image_cache_mib`` is recorded with the cache's
    counters (``image_cache``: hits, misses, hit rate; None when the workers counted them)."""
    from ..evaluation.evaluate import evaluate
    from ..records import PROTOCOL_FIELDS, SETTING_FIELDS, ensure_writable_dir, machine_fields, save_records
    from ..training.distributed import resolve_device

    dev = resolve_device(config.device)
    results_dir = config.results_dir
    if results_dir is not None:
        ensure_writable_dir(Path(results_dir))
    start = time.perf_counter()
    with PeakMemory(dev) as memory:
        marker = _FirstBatchMark(progress, memory)
        timed = replace(config, results_dir=None, device=str(dev), pretrained=False)
        (evaluation,) = evaluate(timed, progress=marker, log=lambda msg: None)
    wall = time.perf_counter() - start
    first, *rest = memory.phase_peaks_mib
    secs = float(evaluation["secs_per_episode"])
    record = {
        **{k: evaluation.get(k) for k in (*SETTING_FIELDS, *PROTOCOL_FIELDS, "precision")},
        "kind": "bench-eval",
        "miou": None,  # a few episodes: the throughput is the point, not the score
        "fb_iou": None,
        "episodes": evaluation["episodes"],
        "secs_per_episode": secs,
        "episodes_per_sec": 1.0 / secs if secs > 0 else None,
        "wall_secs": wall,
        "bsz": evaluation.get("bsz", config.bsz),
        "workers": config.workers,
        "image_cache_mib": evaluation["image_cache_mib"],
        "image_cache": evaluation["image_cache"],
        "weights": config.weights,
        **memory.as_dict(),
        # the whole call's peak is the larger of these: model building + the first batch (on CUDA: autotuning), and
        # the episodes after it (None when there were none)
        "peak_memory_first_batch_mib": round(first, 1),
        "peak_memory_after_first_batch_mib": round(max(rest), 1) if rest and marker.batches > 1 else None,
        **machine_fields(dev),
    }
    save_records([record], None if results_dir is None else Path(results_dir))
    return record


class _FirstBatchMark:
    """The evaluation's progress reporter, passed through; when the first batch of episodes is done (its first
    ``advance``), the peak memory so far is closed as a phase (:meth:`PeakMemory.next_phase`)."""

    def __init__(self, progress, memory: PeakMemory) -> None:
        from ...progress import Silent

        self._inner = progress if progress is not None and not isinstance(progress, bool) else Silent()
        self._memory = memory
        self.batches = 0

    def start(self, description: str, total: int, completed: int = 0):
        return self._inner.start(description, total, completed)

    def advance(self, task, n: int = 1, info: str = "") -> None:
        self.batches += 1
        if self.batches == 1:
            self._memory.next_phase()
        self._inner.advance(task, n, info)

    def finish(self, task) -> None:
        self._inner.finish(task)

    def log(self, message: str) -> None:
        self._inner.log(message)


def random_training_batch(bsz: int, shot: int, img_size: int, device: torch.device, seed: int = 0) -> dict:
    """An episode batch with the keys of :class:`hmrepro.data.dataset.EpisodeDataset`: random normalised images,
    random 0/1 query masks and centred square support masks, no ignore pixels."""
    gen = torch.Generator().manual_seed(seed)
    size = (img_size, img_size)
    support_masks = torch.zeros(bsz, shot, *size)
    lo, hi = img_size // 4, img_size - img_size // 4
    support_masks[..., lo:hi, lo:hi] = 1.0
    batch = {
        "query_img": torch.randn(bsz, 3, *size, generator=gen),
        "query_mask": (torch.rand(bsz, *size, generator=gen) > 0.5).long(),
        "query_ignore": torch.zeros(bsz, *size, dtype=torch.long),
        "support_imgs": torch.randn(bsz, shot, 3, *size, generator=gen),
        "support_masks": support_masks,
        "support_ignores": torch.zeros(bsz, shot, *size),
        "class_id": torch.zeros(bsz, dtype=torch.long),
    }
    return {k: v.to(device) for k, v in batch.items()}


def bench_train(
    model_name: str,
    benchmark: str,
    *,
    iterations: int = 3,
    warmup: int = 1,
    bsz: int | None = None,
    img_size: int | None = None,
    backbone: str = "resnet50",
    device: str | None = None,
    bf16: bool = False,
    results_dir: str | Path | None = "results",
) -> dict:
    """Seconds per training iteration (and iterations/s) of ``model_name`` at its recipe's batch and image size."""
    from ... import create_model
    from ...errors import HmreproError
    from ..records import ensure_writable_dir, machine_fields, save_records
    from ..training.distributed import resolve_device
    from ..training.train import build_optimizer, set_numerics, train_step
    from ..training.train_config import build_config

    if iterations < 1 or warmup < 0:
        raise HmreproError("--iterations must be at least 1 and --warmup at least 0")
    cfg = build_config(model_name, benchmark, 0, {"backbone": backbone})
    bsz, img_size = bsz or cfg.bsz, img_size or cfg.img_size
    dev = resolve_device(device)
    set_numerics(deterministic=False, tf32=False, device=dev)  # `hmrepro train`'s defaults: autotuning, no TF32
    if results_dir is not None:
        ensure_writable_dir(Path(results_dir))
    torch.manual_seed(0)
    model = create_model(model_name, backbone=backbone, pretrained=False, benchmark=benchmark).to(dev).train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = build_optimizer(cfg.optimizer, params, cfg.lr, cfg.weight_decay, cfg.momentum)
    batch = random_training_batch(bsz, cfg.shot, img_size, dev)

    def step() -> float:
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        start = time.perf_counter()
        train_step(model, batch, optimizer, shot=cfg.shot, bf16=bf16)  # the iteration `hmrepro train` runs
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        return time.perf_counter() - start

    try:
        for _ in range(warmup):
            step()
        with PeakMemory(dev) as memory:
            secs = [step() for _ in range(iterations)]
    except RuntimeError as err:  # out of memory, a size the model cannot take ...
        raise HmreproError(f"training {model_name} at batch {bsz}, {img_size} px failed: {err}") from None
    median = statistics.median(secs)
    record = {
        **timed_model_fields("bench-train", model_name, model, backbone, benchmark, cfg.shot),
        "episodes": iterations * bsz,
        **random_weights_fields(img_size),
        "precision": "bf16" if bf16 else "fp32",
        "bsz": bsz,
        "recipe_bsz": cfg.bsz,
        "recipe_img_size": cfg.img_size,
        "optimizer": cfg.optimizer,
        "iterations": iterations,
        "warmup": warmup,
        "secs_per_iteration": median,
        "secs_runs": secs,
        "iterations_per_sec": 1.0 / median,
        "secs_per_episode": median / bsz,
        **memory.as_dict(),
        "peak_memory_per_sample_mib": round(memory.increase_mib / bsz, 1),  # above the start, shared by the batch
        "inputs": "random episodes in memory (data loading excluded), random frozen backbone",
        **machine_fields(dev),
    }
    save_records([record], None if results_dir is None else Path(results_dir))
    return record

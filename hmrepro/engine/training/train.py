"""Episodic training with a frozen backbone, as the authors train HSNet, VAT, ASNet and their HM variants — resumable.

One epoch is the episode list ``training_episodes(pool, shot, seed, epoch)``, a pure function of (seed,
epoch). Global batch ``i`` is episodes ``[i·bsz, (i+1)·bsz)``; under ``torchrun`` each process takes its share
(:mod:`hmrepro.engine.training.distributed`). After every epoch the model is validated on the fold's fixed validation
episodes (``test_episodes(..., split='val')``, seed 0; the authors' protocol) and the best-mIoU weights are kept.
MCE's recipe draws and validates as BAM's ``train.py`` instead (``train_sampler = "bam"``: the episodes of BAM's
training loader, :func:`~hmrepro.data.bam.bam_training_episodes`; ``validation = "bam"``: BAM's seed-321 episodes at
the model's shot, scored on the original label): :func:`epoch_episodes`, :func:`validation_episodes`.

The loop is four small steps driven by a frozen :class:`~hmrepro.engine.training.train_config.TrainConfig`:
:func:`setup_run` (data, model, optimizer, resumed state), :func:`train_epoch`, :func:`validate_epoch` and
:func:`finish_epoch` (best checkpoint, ``last.pt``, ``metrics.jsonl``). The model owns its loss
(``model.compute_objective(outputs, batch)``), so a family with auxiliary losses needs nothing here. The engine
prints nothing: it reports through a :class:`~hmrepro.progress.Progress`.

Nothing is lost when a run dies: ``last.pt`` (weights, optimizer, epoch, iteration within the epoch, best score,
RNG states, per-epoch history, the effective configuration) is written atomically at the end of every epoch and
every ``checkpoint_every`` iterations. Resuming rebuilds the epoch's episode list and skips the batches already
done. Because the augmentation is reseeded per episode and the DataLoaders use their own generators, a resumed
run on the CPU with ``deterministic`` ends with exactly the weights of an uninterrupted one.

Parameters that the loss never reaches (VAT's unused transformer norms, ``proj_query_feat`` on COCO-20i) are found
once by a probe step and frozen: the authors' ``DataParallel`` left them at their initial values (no gradient,
so Adam skips them), and DDP refuses parameters without a gradient.
"""

from __future__ import annotations

import hashlib
import os
import random
import signal
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, nullcontext
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, default_collate

from ...data.bam import BAM_MANUAL_SEED, BamPool, bam_training_episodes, bam_training_pool, check_bam_supports
from ...data.benchmarks import get_benchmark, test_episodes
from ...data.dataset import EpisodeDataset
from ...data.episodes import Episode, training_episodes
from ...data.geometric import GeometricParams
from ...data.preprocessing import train_transform
from ...data.splits import SplitFolder
from ...data.training_filter import filter_training_pool
from ...errors import HmreproError
from ...locks import exclusive_lock
from ...models.cards import EvalPlan
from ...models.interface import logits_of
from ...models.model_args import model_arguments
from ...paths import resolve_data_root
from ...progress import Progress, Silent
from .. import runs
from ..checkpoint_io import read_checkpoint, save_checkpoint
from ..evaluation.bam_eval import bam_validation_logits
from ..evaluation.metrics import FewShotMeter
from ..evaluation.runner import EpisodeSource, episode_loader, one_shot_logits, run_loader, to_device
from . import distributed, schedules
from .memory import PeakMemory, check_batch_fits, free_memory_mib
from .train_config import TrainConfig, build_config, resume_config

__all__ = ["TrainingInterrupted", "build_config", "resume_config", "train", "train_step"]

FROZEN_PREFIX = "backbone."  # state-dict prefix of the frozen backbone (the authors' key names)
CALIBRATION_IMAGES = 64  # images whose statistics replace a random backbone's BatchNorm running statistics


class TrainingInterrupted(HmreproError):
    """The run was stopped by a signal after saving a checkpoint; resume it with ``--resume``.

    ``exit_code`` follows the shell's convention, 128 + the signal (130 for Ctrl-C, 143 for SIGTERM)."""

    def __init__(self, message: str, signum: int = signal.SIGINT) -> None:
        super().__init__(message)
        self.exit_code = 128 + int(signum)


# ---------------------------------------------------------------------------------------------------------------
# Small pieces
# ---------------------------------------------------------------------------------------------------------------


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def set_numerics(deterministic: bool, tf32: bool, device: torch.device) -> None:
    """Deterministic kernels (CPU runs are then bit-reproducible) or cuDNN autotuning; TF32 only when asked."""
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        # warn_only: a few CUDA backward kernels (bilinear upsampling) have no deterministic version
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
    elif device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = tf32
        torch.backends.cudnn.allow_tf32 = tf32


def rng_state() -> dict:
    """Python, NumPy and torch RNG states as tensors/primitives (loadable with ``weights_only=True``)."""
    version, internal, gauss = random.getstate()
    np_state = np.random.get_state()
    state = {
        "python": [version, list(internal), gauss],
        "numpy": {
            "keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    n = state["numpy"]
    np.random.set_state(
        ("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"])
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def iteration_seed(seed: int, rank: int, iteration: int) -> int:
    """The torch seed of one training iteration of one process."""
    return int(np.random.SeedSequence([seed, rank, iteration]).generate_state(1, np.uint64)[0] >> 1)


def build_optimizer(
    name: str, params: Sequence[torch.nn.Parameter], lr: float, weight_decay: float, momentum: float = 0.9
):
    """Adam/AdamW (the HM families) or SGD with momentum (CRCNet, MCE: PFENet/BAM's ``torch.optim.SGD``)."""
    if name == "adam":
        optimizer = torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    elif name == "adamw":
        optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    elif name == "sgd":
        optimizer = torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    else:
        raise HmreproError(f"unknown optimizer {name!r}; choose adam, adamw or sgd")
    schedules.set_base_lr(optimizer, lr)
    return optimizer


def autocast(device: torch.device, bf16: bool):
    """bf16 autocast (no loss scaling needed) or nothing (fp32, the authors')."""
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16) if bf16 else nullcontext()


def fp32(outputs: Any) -> Any:
    """Model outputs in float32 (a tensor, or a dict of tensors), for the loss and the metric."""
    if isinstance(outputs, torch.Tensor):
        return outputs.float()
    if isinstance(outputs, dict):
        return {
            k: v.float() if isinstance(v, torch.Tensor) and v.is_floating_point() else v for k, v in outputs.items()
        }
    return outputs


@torch.no_grad()
def calibrate_batchnorm(backbone: torch.nn.Module, images: torch.Tensor, chunk: int = 16) -> int:
    """Replace the backbone's BatchNorm running statistics by those of ``images``; returns the layers touched.

    A randomly initialised ResNet with BatchNorm in eval mode (running mean 0, variance 1) is an unnormalised
    deep network whose taps are nearly parallel at every position (mean cosine similarity ≈ 0.85 on the synthetic
    benchmark), so the hypercorrelation carries no information and a learner cannot get past predicting
    background. Re-estimating the running statistics on a few images (cumulative average over ``chunk``-sized
    batches; the classic BatchNorm recalibration) spreads them out (mean cosine 0.1-0.4). Used for random
    backbones only (``--no-pretrained``, e.g. quickstart and tests); ImageNet backbones are never touched.
    """
    norms = [m for m in backbone.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average
        m.training = True  # only the norms: the backbone's own train() is pinned to eval
    try:
        for part in images.split(chunk):
            backbone.calibration_pass(part)  # taps, and any layer the model runs outside them (MCE's layer4)
    finally:
        for m, momentum in zip(norms, momenta):
            m.training = False
            m.momentum = momentum
    return len(norms)


def calibration_images(
    bench, data_root, pool, shot: int, seed: int, img_size: int, preprocess: str, n: int = CALIBRATION_IMAGES
):
    """The query images of the first ``n`` episodes of epoch 0 (a pure function of the run's seed)."""
    episodes = training_episodes(pool, shot, seed, 0)[:n]
    dataset = EpisodeDataset(bench, data_root, episodes, img_size=img_size, preprocess=preprocess)
    return torch.stack([dataset[i]["query_img"] for i in range(len(dataset))])


class TrainEpisodes(EpisodeDataset):
    """Loads the episode named by a key ``(epoch, index, episode)``; reseeds the augmentation per episode.

    The keys come from the batch sampler in the main process, so the episode lists never travel to the workers
    and persistent workers keep working across epochs.
    """

    def __init__(self, benchmark, data_root, img_size: int, transform, seed: int, preprocess: str):
        super().__init__(benchmark, data_root, [], img_size=img_size, transform=transform, preprocess=preprocess)
        self.seed = seed

    def __getitem__(self, key):  # type: ignore[override]
        epoch, index, episode = key
        if hasattr(self.transform, "reseed"):
            self.transform.reseed((self.seed, epoch, index))
        self.episodes = {index: episode}
        return super().__getitem__(index)


class EpochBatches:
    """A batch sampler whose batches are replaced every epoch (the DataLoader and its workers persist)."""

    def __init__(self) -> None:
        self.batches: list[list] = []

    def __iter__(self) -> Iterator[list]:
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


def global_batches(num_episodes: int, bsz: int, world_size: int) -> list[range]:
    """Index ranges of an epoch's global batches; a last batch smaller than the world size is dropped."""
    if bsz < world_size:
        raise HmreproError(f"the batch size ({bsz}) must be at least the number of processes ({world_size})")
    batches = [range(i, min(i + bsz, num_episodes)) for i in range(0, num_episodes, bsz)]
    if batches and len(batches[-1]) < world_size:
        batches.pop()
    return batches


def _loader(dataset, d: distributed.Dist, workers: int, **kwargs) -> DataLoader:
    return DataLoader(
        dataset,
        num_workers=workers,
        pin_memory=d.device.type == "cuda",
        persistent_workers=workers > 0,
        generator=torch.Generator().manual_seed(0),  # never touch the global torch RNG
        **kwargs,
    )


def forward_1shot(model, batch: dict):
    """The 1-shot training/validation forward pass of any family: query, first support and its mask.

    A model whose ``takes_query_mask`` is true (CRCNet: its support branch is conditioned on the query's mask)
    also gets ``query_mask=`` while it trains, inside the (DDP) forward so that every gradient is synchronised, and
    one whose ``takes_sample_keys`` is true (CRCNet's ``mrm_gradient="canet"``) the :func:`sample_keys`."""
    inner = unwrap_ddp(model)
    if inner.takes_query_mask and inner.training:
        extra = {"sample_keys": sample_keys(batch)} if inner.takes_sample_keys else {}
        return model(
            batch["query_img"],
            batch["support_imgs"][:, 0],
            batch["support_masks"][:, 0],
            query_mask=batch["query_mask"],
            **extra,
        )
    return model(batch["query_img"], batch["support_imgs"][:, 0], batch["support_masks"][:, 0])


def unwrap_ddp(model):
    """The model a DistributedDataParallel wrapper holds (``model`` itself when it is not wrapped)."""
    return model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model


def sample_keys(batch: dict) -> tuple[list, list]:
    """(image name, class id) of each episode's query and of its first support: the identity of a training sample
    (CaNet keeps its history masks per such item)."""
    classes = [int(c) for c in batch["class_id"].reshape(-1).tolist()]
    return list(zip(batch["query_name"], classes)), list(zip(batch["support_names"][0], classes))


def forward_train(model, batch: dict, shot: int):
    """The training forward pass: 1-shot (:func:`forward_1shot`), or with ``shot`` > 1 (a family that trains on K-shot
    episodes, ``trains_kshot = True``: MCE's 5-shot model) every support, [B, K, 3, H, W] with masks [B, K, H, W],
    through the model's own ``forward`` (so that DDP sees the call)."""
    if shot == 1:
        return forward_1shot(model, batch)
    return model(batch["query_img"], batch["support_imgs"], batch["support_masks"])


def train_step(
    model,
    batch: dict,
    optimizer: torch.optim.Optimizer,
    *,
    shot: int = 1,
    bf16: bool = False,
    loss_scale: float = 1.0,
    forward_model=None,
) -> tuple[torch.Tensor, Any]:
    """One training iteration, as the authors' loops run it; returns the loss (before the update) and the outputs.

    ``model.train()`` (the learner in training mode; the frozen backbone stays in eval mode, the authors'
    ``train_mode()``), the training forward (:func:`forward_train`, under bf16 autocast if asked), the model's own
    objective on float32 outputs, ``zero_grad``, ``backward`` and ``optimizer.step()``. ``forward_model`` is what
    the forward runs through (the DDP wrapper of ``model``; default ``model``); ``loss_scale`` multiplies the loss
    before ``backward`` only (:func:`distributed.loss_scale`: uneven shards). Seeding and the learning-rate
    schedule are the caller's (they touch neither the forward nor the gradient).
    """
    runner = forward_model if forward_model is not None else model
    runner.train()  # a DDP wrapper passes it on to ``model``
    with autocast(batch["query_img"].device, bf16):
        outputs = forward_train(runner, batch, shot)
    outputs = fp32(outputs)
    loss = model.compute_objective(outputs, batch)
    optimizer.zero_grad(set_to_none=True)
    (loss * loss_scale if loss_scale != 1.0 else loss).backward()
    optimizer.step()
    return loss, outputs


def check_training_shot(model, shot: int, name: str) -> None:
    """Refuse K-shot training for a family whose ``forward`` takes one support (HSNet, VAT, ASNet: trained 1-shot)."""
    if shot > 1 and not model.trains_kshot:
        raise HmreproError(
            f"{name} trains on 1-shot episodes only (its forward takes one support); set shot = 1 in its recipe"
        )


class _StopFlag:
    """Set by SIGTERM/SIGINT; the loop saves a checkpoint at the next iteration boundary and stops."""

    def __init__(self) -> None:
        self.requested = False
        self.signum = signal.SIGINT
        self._previous: dict = {}

    def __enter__(self):
        def handler(signum, frame):
            self.requested, self.signum = True, signum

        try:
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._previous[sig] = signal.signal(sig, handler)
        except ValueError:  # not the main thread
            pass
        return self

    def __exit__(self, *exc):
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)


def freeze_gradientless(model, batch: dict) -> list[str]:
    """Freeze the learnable parameters that one training step leaves without a gradient; returns their names.

    They are parts of the authors' modules that the forward pass never uses (VAT's transformer ``norm`` layers,
    ``proj_query_feat`` on COCO-20i). Under the authors' ``DataParallel`` they kept their initial values (Adam
    skips a parameter without gradient); DDP instead fails at the second iteration. The probe runs on a copy of
    the RNG state, so the run draws exactly what it would without it.
    """
    devices = [batch["query_img"].device] if batch["query_img"].is_cuda else []
    buffers = [(b, b.clone()) for name, b in model.named_buffers() if not name.startswith(FROZEN_PREFIX)]
    with torch.random.fork_rng(devices=devices):
        loss = model.compute_objective(fp32(forward_1shot(model, batch)), batch)
        loss.backward()
    with torch.no_grad():
        for live, saved in buffers:  # e.g. normalisation statistics a training-mode forward pass updated
            live.copy_(saved)
    names = [name for name, p in model.named_parameters() if p.requires_grad and p.grad is None]
    for name, p in model.named_parameters():
        if name in names:
            p.requires_grad_(False)
    model.zero_grad(set_to_none=True)
    return names


def learnable_state(model) -> dict:
    """The state dict without the frozen backbone (which the run rebuilds from its seed or ImageNet weights)."""
    return {k: v for k, v in model.state_dict().items() if not k.startswith(FROZEN_PREFIX)}


NORM_STATISTICS = ("running_mean", "running_var", "num_batches_tracked")


def _is_norm_statistic(key: str) -> bool:
    return key.rsplit(".", 1)[-1] in NORM_STATISTICS


def resume_state(model, calibrated: bool) -> dict:
    """What ``last.pt`` keeps: the learnable state, plus a random backbone's calibrated BatchNorm statistics.

    Re-estimating those statistics on resume would not give the same bits (the CPU convolutions' sums depend on
    the number of threads), so they are saved; the backbone's weights are rebuilt from the seed.
    """
    state = learnable_state(model)
    if calibrated:
        state.update(
            {k: v for k, v in model.state_dict().items() if k.startswith(FROZEN_PREFIX) and _is_norm_statistic(k)}
        )
    return state


def backbone_fingerprint(model, *, skip_norm_statistics: bool = False) -> str:
    """sha256 of the frozen backbone's tensors: a resumed run checks it rebuilt the very same backbone.

    ``skip_norm_statistics``: leave out the BatchNorm statistics (a calibrated random backbone's, which
    ``last.pt`` restores itself: :func:`resume_state`).
    """
    h = hashlib.sha256()
    for key, value in model.state_dict().items():
        if key.startswith(FROZEN_PREFIX) and not (skip_norm_statistics and _is_norm_statistic(key)):
            h.update(key.encode())
            h.update(value.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------------------------
# Epoch statistics
# ---------------------------------------------------------------------------------------------------------------


class EpochStats:
    """Running training loss and mIoU of the current epoch (summable over processes, saved in checkpoints)."""

    def __init__(self, meter: FewShotMeter):
        self.meter = meter
        self.loss_sum = 0.0
        self.count = 0

    def add(self, loss: float, logits: torch.Tensor, batch: dict) -> None:
        n = logits.shape[0]
        self.loss_sum += loss * n
        self.count += n
        self.meter.update(logits.detach().argmax(dim=1), batch["query_mask"], batch["class_id"], batch["query_ignore"])

    @property
    def mean_loss(self) -> float:
        return self.loss_sum / max(self.count, 1)

    def reduced(self, d: distributed.Dist) -> dict:
        """The counts of every process together, as a checkpointable dict (this process's stay as they are)."""
        meter = self.meter.copy()
        meter.all_reduce(lambda t: distributed.all_reduce_sum(t.to(d.device), d).cpu())
        totals = torch.tensor([float(self.count), self.loss_sum], dtype=torch.float64)
        totals = distributed.all_reduce_sum(totals.to(d.device), d).cpu()
        return {**meter.state_dict(), "count": int(totals[0]), "loss_sum": float(totals[1])}

    def load(self, state: dict) -> None:
        self.meter.load_state_dict(state)
        self.count = int(state["count"])
        self.loss_sum = float(state["loss_sum"])

    def summary(self, state: dict) -> dict:
        meter = self.meter.copy()
        meter.load_state_dict(state)
        miou, fb = meter.compute()
        return {"train_loss": state["loss_sum"] / max(state["count"], 1), "train_miou": miou, "train_fb_iou": fb}


# ---------------------------------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class RunState:
    """What a resumed run must get back (saved in ``last.pt``)."""

    epoch: int = 0
    step: int = 0  # iterations done within the epoch
    global_iter: int = 0
    best_miou: float = -1.0
    best_epoch: int = -1
    history: list = field(default_factory=list)
    epoch_stats: dict | None = None
    done: bool = False
    early_stopped: bool = False

    def as_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class TrainData:
    """The episodes and loaders of a run: the training pool and its loader, this process's validation shard."""

    bench: Any
    splits: SplitFolder
    data_root: Path
    pool: Any
    train_loader: DataLoader
    sampler: EpochBatches
    val_loader: DataLoader
    val_total: int  # validation episodes of all processes together
    probe: dict  # one validation episode on the device (finds the gradient-less parameters)
    bam_pool: BamPool | None = None  # BAM's training dataset (train_sampler = "bam")


BAM_BENCHMARKS = ("pascal", "coco")  # what BAM's sampler and validation cover (BAM's benchmarks)


def validation_episodes(cfg: TrainConfig, splits: SplitFolder) -> list[Episode]:
    """The fixed validation episodes. ``validation = "one-shot"``: the protocol's 1-shot episodes of the 'val' split
    (the HM families' authors validate 1-shot); ``"bam"``: BAM's ``validate()``: ``setup_seed(manual_seed)`` (321,
    whatever the run's seed), the model's shot, 1000 episodes of BAM's test loop over the validation images."""
    if cfg.validation == "bam":
        return test_episodes(
            cfg.benchmark, cfg.fold, cfg.shot, protocol="bam", split="val", splits=splits, seed=BAM_MANUAL_SEED
        )
    return test_episodes(cfg.benchmark, cfg.fold, 1, protocol=cfg.protocol, split="val", splits=splits)


def epoch_episodes(cfg: TrainConfig, data: TrainData, epoch: int) -> list[Episode]:
    """The training episodes of ``epoch``: HSNet's draw (:func:`~hmrepro.data.episodes.training_episodes`) or, with
    ``train_sampler = "bam"``, BAM's loader (:func:`~hmrepro.data.bam.bam_training_episodes`, ``manual_seed`` 321 +
    the run's seed, ``bsz`` per batch, BAM's 8 worker streams whatever ``workers`` is)."""
    if cfg.train_sampler == "bam":
        return bam_training_episodes(data.bam_pool, cfg.shot, BAM_MANUAL_SEED + cfg.seed, epoch, cfg.bsz)
    return training_episodes(data.pool, cfg.shot, cfg.seed, epoch)


def build_data(cfg: TrainConfig, d: distributed.Dist) -> TrainData:
    """Training pool and loader, validation loader over this process's shard; fails early when data is missing."""
    bench = get_benchmark(cfg.benchmark)
    splits = SplitFolder(cfg.splits)
    data_root = resolve_data_root(cfg.data_root)
    for key in ("train_sampler", "validation"):
        if getattr(cfg, key) == "bam" and cfg.benchmark not in BAM_BENCHMARKS:
            raise HmreproError(
                f"{key} = 'bam' covers {' and '.join(BAM_BENCHMARKS)} (BAM's benchmarks), not {cfg.benchmark}"
            )
    val_episodes = validation_episodes(cfg, splits)
    if cfg.val_episodes > 0:
        val_episodes = val_episodes[: cfg.val_episodes]
    train_tf = train_transform(cfg.augment, cfg.preprocess, cfg.img_size, GeometricParams.from_config(cfg.as_dict()))
    train_set = TrainEpisodes(bench, data_root, cfg.img_size, train_tf, cfg.seed, preprocess=cfg.preprocess)
    sampler = EpochBatches()
    val_plan = EvalPlan(cfg.protocol, cfg.preprocess, cfg.img_size, original_size=cfg.validation == "bam")
    val_loader = episode_loader(
        EpisodeSource(bench, data_root, val_plan, d.device, bsz=cfg.val_bsz, workers=cfg.workers),
        distributed.shard(val_episodes, d.rank, d.world_size),
        persistent_workers=True,
    )
    probe_set = val_loader.dataset
    if cfg.validation == "bam":  # its masks keep their original size; the probe's must match the logits
        probe_set = EpisodeDataset(bench, data_root, val_episodes[:1], img_size=cfg.img_size, preprocess=cfg.preprocess)
    probe = to_device(default_collate([probe_set[0]]), d.device, False)
    listed = bench.pool(splits, "trn", cfg.fold)
    present: dict[str, tuple[int, ...]] = {}
    pool = filter_training_pool(
        listed,
        bench,
        data_root,
        bench.class_ids(cfg.fold, "trn", splits),
        exclude_novel_images=cfg.exclude_novel_images,
        min_class_pixels=cfg.min_class_pixels,
        classes_present=present if cfg.train_sampler == "bam" else None,
    )
    bam_pool = None
    if cfg.train_sampler == "bam":  # the classes in each mask when the rule read them, else the listed ones
        bam_pool = bam_training_pool(listed, pool, present or None)
        check_bam_supports(bam_pool, cfg.shot)
    return TrainData(
        bench,
        splits,
        data_root,
        pool,
        _loader(train_set, d, cfg.workers, batch_sampler=sampler),
        sampler,
        val_loader,
        len(val_episodes),
        probe,
        bam_pool,
    )


@dataclass
class Run:
    """A training run set up and ready to step: configuration, data, model, optimizer, state."""

    config: TrainConfig
    d: distributed.Dist
    run_dir: Path
    data: TrainData
    model: torch.nn.Module
    ddp_model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    fingerprint: str
    state: RunState
    channels_last: bool

    @property
    def main(self) -> bool:
        return self.d.is_main

    def meter(self, split: str) -> FewShotMeter:
        """An empty meter over the fold's ``split`` ('trn' or 'val') classes."""
        bench, splits = self.data.bench, self.data.splits
        return FewShotMeter(bench.num_classes(splits), bench.class_ids(self.config.fold, split, splits))

    def save_last(self, epoch_stats: dict | None) -> None:
        cfg = self.config
        save_checkpoint(
            self.run_dir / runs.LAST,
            resume_state(self.model, cfg.calibrate_bn),
            model_name=cfg.model,
            backbone=cfg.backbone,
            metadata={"config": self.saved_config(), "kind": "resume", "backbone_sha256": self.fingerprint},
            extra={
                "optimizer": self.optimizer.state_dict(),
                "rng": rng_state(),
                **self.state.as_dict(),
                "epoch_stats": epoch_stats,
            },
        )

    def saved_config(self) -> dict:
        return {**self.config.as_dict(), "world_size": self.d.world_size}


RUN_LOCK = "run.lock"  # in the run folder: held by the process that trains into it


def _leftover_of_a_killed_start(path: Path) -> bool:
    """What a run killed before it wrote its configuration leaves: its lock file, partial writes."""
    return path.name == RUN_LOCK or (path.name.startswith(".") and path.name.endswith(".tmp"))


def _run_folder(cfg: TrainConfig, d: distributed.Dist, resume: bool, hold: ExitStack) -> Path:
    """The run folder, created and locked for this run (rank 0 holds the lock until ``hold`` closes)."""
    run_dir = Path(cfg.out) if cfg.out else runs.default_run_dir(cfg.model, cfg.backbone, cfg.benchmark, cfg.fold)
    run_dir = Path(distributed.broadcast_object(str(run_dir), d))
    if d.is_main:
        if not resume and run_dir.exists() and any(not _leftover_of_a_killed_start(p) for p in run_dir.iterdir()):
            raise HmreproError(
                f"run folder {run_dir} already exists and is not empty; continue it with "
                f"`hmrepro train --resume {run_dir}` or choose another --out"
            )
        run_dir.mkdir(parents=True, exist_ok=True)
        hold.enter_context(
            exclusive_lock(
                run_dir / RUN_LOCK,
                wait=False,
                subject=f"run folder {run_dir}",
                holder_info=f"hmrepro train {'--resume ' if resume else ''}{run_dir}",
            )
        )
        for stale in run_dir.glob(".*.tmp"):  # partial writes of a killed run
            stale.unlink(missing_ok=True)
    return run_dir


def _load_last(path: Path, model, optimizer, fingerprint: str):
    ckpt = read_checkpoint(path, map_location="cpu")
    if ckpt.metadata.get("backbone_sha256") != fingerprint:
        raise HmreproError(
            f"{path}: the rebuilt backbone differs from the one the run trained with (other torch/torchvision "
            "version, or other ImageNet weights file?); the run cannot be resumed exactly"
        )
    missing, unexpected = model.load_state_dict(ckpt.state_dict, strict=False)
    missing = [k for k in missing if not k.startswith(FROZEN_PREFIX)]
    if missing or unexpected:
        raise HmreproError(f"{path} does not fit the model: missing {missing[:5]}, unexpected {unexpected[:5]}")
    optimizer.load_state_dict(ckpt.extra["optimizer"])
    return ckpt


def _build_model(cfg: TrainConfig, bench, data_root: Path, pool, progress: Progress):
    from ... import create_model

    torch.manual_seed(cfg.seed)  # random-init backbones/learners depend on the seed only
    model = create_model(
        cfg.model,
        backbone=cfg.backbone,
        pretrained=cfg.pretrained,
        benchmark=cfg.benchmark,
        **model_arguments(cfg.model, cfg.model_args),
    )
    if cfg.calibrate_bn:
        images = calibration_images(bench, data_root, pool, cfg.shot, cfg.seed, cfg.img_size, cfg.preprocess)
        touched = calibrate_batchnorm(model.backbone, images)
        progress.log(
            f"random backbone: BatchNorm statistics of {touched} layers estimated on {len(images)} training images"
        )
    return model


def _check_memory(cfg: TrainConfig, d: distributed.Dist, per_sample_mib: float, progress: Progress) -> None:
    """Stop before the first iteration when the batch cannot fit
    (:func:`~hmrepro.engine.training.memory.check_batch_fits`)."""
    how = "measured on one 1-shot training step" + (f"; {cfg.shot}-shot needs more" if cfg.shot > 1 else "")
    warning = check_batch_fits(
        per_sample_mib,
        free_memory_mib(d.device),
        bsz=cfg.bsz,
        world_size=d.world_size,
        device_type=d.device.type,
        img_size=cfg.img_size,
        how=how,
    )
    if warning:
        progress.log(f"warning: {warning}")


def setup_run(
    config: TrainConfig,
    d: distributed.Dist,
    *,
    resume: bool,
    progress: Progress,
    hold: ExitStack,
    memory_check: bool = True,
) -> Run:
    """Everything before the first step: data, run folder (locked while ``hold`` is open), model, optimizer, and the
    resumed state. With ``memory_check`` a batch that cannot fit the free memory stops here (``BatchTooLarge``)."""
    cfg = config.derived(d.device.type)
    set_numerics(cfg.deterministic, cfg.tf32, d.device)
    seed_everything(cfg.seed)
    data = build_data(cfg, d)
    run_dir = _run_folder(cfg, d, resume, hold)
    cfg = replace(cfg, out=str(run_dir))

    channels_last = d.device.type == "cuda"
    model = _build_model(cfg, data.bench, data.data_root, data.pool, progress).to(d.device)
    check_training_shot(model, cfg.shot, cfg.model)
    if channels_last:
        model.backbone.to(memory_format=torch.channels_last)
    model.train()
    with PeakMemory(d.device) as probe_memory:  # one training step of one 1-shot sample: the memory per sample
        frozen = freeze_gradientless(model, data.probe)
    if memory_check:
        _check_memory(cfg, d, probe_memory.increase_mib, progress)
    if frozen:
        progress.log(
            f"{len(frozen)} parameter tensors never receive a gradient "
            f"({', '.join(frozen[:3])}{', ...' if len(frozen) > 3 else ''}): "
            "kept at their initial values, as under the authors' DataParallel"
        )
    fingerprint = backbone_fingerprint(model, skip_norm_statistics=cfg.calibrate_bn)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = build_optimizer(cfg.optimizer, params, float(cfg.lr), float(cfg.weight_decay), float(cfg.momentum))
    state = _restore(run_dir, model, optimizer, fingerprint, progress) if resume else RunState()
    if state.done and cfg.epochs > state.epoch and not state.early_stopped:
        state.done = False

    ddp_model = model
    if d.enabled:
        ddp_model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[d.device.index] if d.device.type == "cuda" else None, broadcast_buffers=False
        )
    run = Run(cfg, d, run_dir, data, model, ddp_model, optimizer, fingerprint, state, channels_last)
    if d.is_main:
        runs.write_config(run_dir, run.saved_config())
    distributed.barrier(d)
    return run


def _restore(run_dir: Path, model, optimizer, fingerprint: str, progress: Progress) -> RunState:
    """The state of ``last.pt`` (weights, optimizer and RNG restored too), or a fresh one if there is none yet."""
    last = run_dir / runs.LAST
    if not last.is_file():
        progress.log(f"{run_dir} has no checkpoint yet: starting from the beginning")
        return RunState()
    ckpt = _load_last(last, model, optimizer, fingerprint)
    state = RunState(**{k: ckpt.extra[k] for k in RunState.__dataclass_fields__ if k in ckpt.extra})
    set_rng_state(ckpt.extra["rng"])
    progress.log(f"resuming {run_dir} at epoch {state.epoch}, iteration {state.step} of the epoch")
    return state


class _Session:
    """The wall-clock bookkeeping of ``run.json`` (rank 0 only)."""

    def __init__(self, run: Run, resumed: bool) -> None:
        self.run = run
        self.start = time.perf_counter()
        self.info = (
            runs.start_session(run.run_dir, run.d.device, run.d.world_size, resumed=resumed) if run.main else None
        )

    def update(self, status: str | None = None) -> None:
        if self.run.main:
            runs.update_session(self.run.run_dir, self.info, time.perf_counter() - self.start, status=status)

    def fail(self, err: BaseException) -> None:
        """run.json: ``failed``, and why (an interrupt has said ``interrupted`` already)."""
        if self.run.main and not isinstance(err, (TrainingInterrupted, KeyboardInterrupt)):
            runs.fail_session(self.run.run_dir, self.info, time.perf_counter() - self.start, err)


def _stop_requested(stop: _StopFlag, d: distributed.Dist) -> bool:
    """Whether any process got a stop signal (every process stops at the same iteration)."""
    flag = torch.tensor([float(stop.requested)], device=d.device)
    return bool(distributed.all_reduce_sum(flag, d).item() > 0)


def train_epoch(run: Run, stop: _StopFlag, session: _Session, progress: Progress) -> tuple[EpochStats, float, int]:
    """The rest of the current epoch; returns its statistics, seconds and episodes seen (all processes)."""
    cfg, d, state = run.config, run.d, run.state
    epoch = state.epoch
    episodes = epoch_episodes(cfg, run.data, epoch)
    batches = global_batches(len(episodes), cfg.bsz, d.world_size)
    if cfg.epoch_iterations > 0:
        batches = batches[: cfg.epoch_iterations]
    if not batches:
        raise HmreproError(f"the training split has {len(episodes)} episodes: fewer than the {d.world_size} processes")
    start_step = state.step
    run.data.sampler.batches = [
        [(epoch, i, episodes[i]) for i in distributed.shard(list(b), d.rank, d.world_size)]
        for b in batches[start_step:]
    ]
    stats = EpochStats(run.meter("trn"))
    if state.epoch_stats is not None and start_step > 0 and run.main:
        stats.load(state.epoch_stats)  # the summed counts live on rank 0 only, so the next sum is right
    task = progress.start(f"epoch {epoch}", total=batches[-1].stop, completed=batches[start_step].start)
    every = cfg.checkpoint_every
    t0, seen = time.perf_counter(), 0
    for step, batch in enumerate(run.data.train_loader, start=start_step):
        # randomness inside the model (VAT's dropout) is a pure function of (seed, rank, iteration), so a resumed
        # run draws what an uninterrupted one does, whatever the number of processes
        torch.manual_seed(iteration_seed(cfg.seed, d.rank, state.global_iter))
        b = to_device(batch, d.device, run.channels_last)
        n_local, n_global = b["query_img"].shape[0], len(batches[step])
        factor = schedules.lr_factor(cfg.lr_schedule, state.global_iter + 1, cfg.epochs * len(batches), cfg.poly_power)
        schedules.apply_schedule(run.optimizer, factor)
        loss, outputs = train_step(
            run.model,
            b,
            run.optimizer,
            shot=cfg.shot,
            bf16=cfg.bf16,
            loss_scale=distributed.loss_scale(n_local, n_global, d.world_size),
            forward_model=run.ddp_model,
        )

        stats.add(loss.item(), logits_of(outputs), b)
        state.step, state.global_iter = step + 1, state.global_iter + 1
        seen += n_global
        speed = seen / max(time.perf_counter() - t0, 1e-9)
        progress.advance(
            task, n_global, info=f"loss {stats.mean_loss:.4f} mIoU {stats.meter.compute()[0]:5.1f} {speed:.1f} ep/s"
        )

        stop_now = _stop_requested(stop, d)
        mid_epoch = state.step < len(batches)
        if mid_epoch and (stop_now or (every > 0 and state.global_iter % every == 0)):
            snapshot = stats.reduced(d)
            if run.main:
                run.save_last(snapshot)
                session.update()
        if stop_now:
            session.update(status="interrupted")
            raise TrainingInterrupted(
                f"stopped at epoch {epoch}, iteration {state.step}; checkpoint saved. "
                f"Continue with `hmrepro train --resume {run.run_dir}`",
                signum=stop.signum,
            )
    progress.finish(task)
    return stats, time.perf_counter() - t0, seen


def validate_epoch(run: Run, progress: Progress) -> dict:
    """Forward + argmax on this process's validation episodes (the episode runner); counts and loss summed over
    processes. ``validation = "one-shot"``: the first support, at the input size; ``"bam"``: every support, scored on
    the original label after BAM's two-step upsampling
    (:func:`~hmrepro.engine.evaluation.bam_eval.bam_validation_logits`)."""
    model, d = run.model, run.d
    meter = run.meter("val")
    task = progress.start(f"validate {run.state.epoch}", total=run.data.val_total)
    loss_sum = torch.zeros(1, dtype=torch.float64)

    def add_loss(batch: dict, outputs, _meter) -> None:
        n = logits_of(outputs).shape[0]
        loss_sum.add_(model.compute_objective(outputs, batch).item() * n)
        progress.advance(task, n * d.world_size)

    def sum_over_processes(tensor: torch.Tensor) -> torch.Tensor:
        return distributed.all_reduce_sum(tensor.to(d.device), d).cpu()

    start = time.perf_counter()
    result = run_loader(
        model,
        run.data.val_loader,
        meter,
        device=d.device,
        amp=run.config.bf16,
        predict=bam_validation_logits if run.config.validation == "bam" else one_shot_logits,
        on_batch=add_loss,
        reduce=lambda m: m.all_reduce(sum_over_processes),
        channels_last=run.channels_last,
    )
    total_loss = sum_over_processes(loss_sum)
    seconds = time.perf_counter() - start
    progress.finish(task)
    return {
        "val_loss": float(total_loss.item() / max(result.episodes, 1)),
        "val_miou": result.miou,
        "val_fb_iou": result.fb_iou,
        "val_episodes": result.episodes,
        "val_secs": seconds,
        "val_episodes_per_s": result.episodes / max(seconds, 1e-9),
    }


def finish_epoch(run: Run, row: dict, session: _Session, progress: Progress) -> None:
    """Keep the best weights, checkpoint, write the training curve; decide whether to stop."""
    cfg, state = run.config, run.state
    epoch = state.epoch
    improved = row["val_miou"] > state.best_miou
    if improved:
        state.best_miou, state.best_epoch = row["val_miou"], epoch
    row.update(best_val_miou=state.best_miou, best_epoch=state.best_epoch, is_best=improved)
    state.history.append(row)
    state.epoch, state.step = epoch + 1, 0
    if cfg.patience and epoch - state.best_epoch >= cfg.patience:
        state.done, state.early_stopped = True, True
    if state.epoch >= cfg.epochs:
        state.done = True
    if run.main:
        if improved:
            save_checkpoint(
                run.run_dir / runs.BEST,
                run.model,
                model_name=cfg.model,
                backbone=cfg.backbone,
                metadata={
                    "config": run.saved_config(),
                    "epoch": epoch,
                    "val_miou": row["val_miou"],
                    "val_fb_iou": row["val_fb_iou"],
                    "kind": "best",
                },
            )
        run.save_last(None)
        runs.write_metrics(run.run_dir, state.history)
        session.update()
        progress.log(
            f"epoch {epoch}: loss {row['train_loss']:.4f}, train mIoU {row['train_miou']:.1f}, "
            f"val mIoU {row['val_miou']:.1f} (FB-IoU {row['val_fb_iou']:.1f}), best {state.best_miou:.1f} "
            f"@ {state.best_epoch}, {row['train_episodes_per_s']:.1f} train ep/s"
        )
    distributed.barrier(run.d)


def train(
    config: TrainConfig, *, resume: bool = False, progress: Progress | None = None, memory_check: bool = True
) -> Path:
    """Train as ``config`` says (see :func:`~hmrepro.engine.training.train_config.build_config`); returns the run
    folder.

    With ``resume`` the run continues from ``config.out/last.pt`` (from scratch if no checkpoint was written).
    With ``memory_check`` a batch that cannot fit the free memory stops before the first iteration.
    Under ``torchrun`` every process calls this; only rank 0 writes files and reports progress.
    """
    d = distributed.setup(config.device)
    try:
        reporter = (progress or Silent()) if d.is_main else Silent()
        with ExitStack() as hold:
            run = setup_run(config, d, resume=resume, progress=reporter, hold=hold, memory_check=memory_check)
            _train_loop(run, reporter, resumed=resume)
        return run.run_dir
    finally:
        distributed.teardown()


def _train_loop(run: Run, progress: Progress, resumed: bool) -> None:
    state, cfg = run.state, run.config
    session = _Session(run, resumed)
    run.model.train()
    epochs_task = progress.start("epochs", total=cfg.epochs, completed=state.epoch)
    try:
        with _StopFlag() as stop:
            while state.epoch < cfg.epochs and not state.done:
                stats, train_secs, seen = train_epoch(run, stop, session, progress)
                row = {"epoch": state.epoch, "iterations": state.global_iter, "lr": run.optimizer.param_groups[0]["lr"]}
                row.update(stats.summary(stats.reduced(run.d)))
                row.update(train_secs=train_secs, train_episodes_per_s=seen / max(train_secs, 1e-9))
                row.update(validate_epoch(run, progress))
                row["replica_max_abs_diff"] = distributed.max_replica_difference(run.model, run.d)
                finish_epoch(run, row, session, progress)
                progress.advance(epochs_task, 1)
    except BaseException as err:  # a full disk, exhausted memory, a bug: run.json must not say "running" for ever
        session.fail(err)
        raise
    session.update(status="early-stopped" if state.early_stopped else "finished")

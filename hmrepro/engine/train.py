"""Episodic training with a frozen backbone, as the authors train HSNet and HSNet-HM — and resumable.

One epoch is the episode list ``training_episodes(pool, shot, seed, epoch)``, a pure function of (seed,
epoch). Global batch ``i`` is episodes ``[i·bsz, (i+1)·bsz)``; under ``torchrun`` each process takes its share
(:mod:`hmrepro.engine.distributed`). After every epoch the model is validated on the fold's fixed validation
episodes (``test_episodes(..., split='val')``, seed 0; the authors' protocol) and the best-mIoU weights are kept.

Nothing is lost when a run dies: ``last.pt`` (weights, optimizer, epoch, iteration within the epoch, best score,
RNG states, per-epoch history, the effective configuration) is written atomically at the end of every epoch and
every ``checkpoint_every`` iterations. Resuming rebuilds the epoch's episode list and skips the batches already
done. Because the augmentation is reseeded per episode and the DataLoaders use their own generators, a resumed
run on the CPU with ``deterministic`` ends with exactly the weights of an uninterrupted one.

Entry point: :func:`train` with a configuration from :func:`build_config`.
"""

from __future__ import annotations

import hashlib
import os
import random
import signal
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader

from ..data.benchmarks import get_benchmark, test_episodes
from ..data.dataset import EpisodeDataset
from ..data.episodes import training_episodes
from ..data.preprocessing import preprocess_of, train_transform
from ..data.splits import SplitFolder
from ..errors import HmreproError
from ..paths import resolve_data_root
from . import distributed, runs
from .checkpoints import read_checkpoint, save_checkpoint
from .metrics import FewShotMeter
from .recipes import resolve as resolve_recipe

__all__ = ["TrainingInterrupted", "build_config", "resume_config", "train"]

# configuration keys that are not recipe values, with their defaults
RUN_DEFAULTS: dict[str, Any] = {
    "backbone": "resnet50",
    "pretrained": True,
    "calibrate_bn": None,  # None: on for random (not pretrained) backbones; see calibrate_batchnorm
    "workers": None,  # None: min(4, CPU cores - 1)
    "seed": 0,
    "deterministic": False,
    "amp": None,  # None: on for CUDA, off for the CPU
    "checkpoint_every": 500,
    "device": None,  # None: CUDA if available
    "data_root": None,
    "splits": None,
    "out": None,
}
# what --resume may change; anything else must match the saved configuration
FROZEN_PREFIX = "backbone."  # state-dict prefix of the frozen backbone (the authors' key names)
CALIBRATION_IMAGES = 64  # images whose statistics replace a random backbone's BatchNorm running statistics
RESUMABLE_CHANGES = ("epochs", "patience", "workers", "device", "checkpoint_every", "amp", "data_root", "splits")


class TrainingInterrupted(HmreproError):
    """The run was stopped by a signal after saving a checkpoint; resume it with ``--resume``."""


# ---------------------------------------------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------------------------------------------


def build_config(model: str, benchmark: str, fold: int, overrides: dict | None = None) -> dict:
    """Recipe values for (model, benchmark) overridden by ``overrides`` (``None`` values ignored), plus run keys."""
    from ..models.registry import list_models

    if model not in list_models():
        raise HmreproError(f"unknown model {model!r}; choose one of {', '.join(list_models())}")
    get_benchmark(benchmark)
    base = {**RUN_DEFAULTS, "model": model, "benchmark": benchmark, "fold": fold}
    config = resolve_recipe(model, benchmark, {**base, **{k: v for k, v in (overrides or {}).items() if v is not None}})
    if benchmark == "fss" and fold != 0:
        raise HmreproError("FSS-1000 has a single split: use --fold 0")
    if benchmark == "fss" and config["protocol"] == "asnet":
        raise HmreproError(f"{model} cannot train on FSS-1000: the authors' ASNet code has no FSS-1000 episodes")
    return config


def resume_config(run_dir: Path, overrides: dict | None = None) -> dict:
    """The saved configuration of ``run_dir`` with the allowed ``overrides`` applied; others must match."""
    saved = runs.read_config(run_dir)
    config = dict(saved)
    for key, value in (overrides or {}).items():
        if value is None:
            continue
        if key in RESUMABLE_CHANGES:
            config[key] = value
        elif str(saved.get(key)) != str(value):
            raise HmreproError(
                f"--resume {run_dir}: the run was started with {key}={saved.get(key)!r}; it cannot continue with "
                f"{key}={value!r} (only {', '.join(RESUMABLE_CHANGES)} may change). Start a new run instead."
            )
    config["out"] = str(Path(run_dir))
    return config


# ---------------------------------------------------------------------------------------------------------------
# Small pieces
# ---------------------------------------------------------------------------------------------------------------


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def set_deterministic(enabled: bool, device: torch.device) -> None:
    """Deterministic kernels (CPU runs are then bit-reproducible); cuDNN autotuning otherwise."""
    if enabled:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        # warn_only: a few CUDA backward kernels (bilinear upsampling) have no deterministic version
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
    elif device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True


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
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def iteration_seed(seed: int, rank: int, iteration: int) -> int:
    """The torch seed of one training iteration of one process."""
    return int(np.random.SeedSequence([seed, rank, iteration]).generate_state(1, np.uint64)[0] >> 1)


def default_workers() -> int:
    return max(0, min(4, (os.cpu_count() or 1) - 1))


def build_optimizer(name: str, params: Sequence[torch.nn.Parameter], lr: float, weight_decay: float):
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    raise HmreproError(f"unknown optimizer {name!r}")


def autocast(device: torch.device, enabled: bool):
    """bf16 autocast (no loss scaling needed) or nothing."""
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16) if enabled else nullcontext()


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
            backbone.taps(part)
    finally:
        for m, momentum in zip(norms, momenta):
            m.training = False
            m.momentum = momentum
    return len(norms)


def calibration_images(
    bench, data_root, pool, shot: int, seed: int, img_size: int, n: int = CALIBRATION_IMAGES, preprocess: str = "hsnet"
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

    def __init__(self, benchmark, data_root, img_size: int, transform, seed: int, preprocess: str = "hsnet"):
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


def _to(batch: dict, device: torch.device, channels_last: bool) -> dict:
    out = {}
    for key, value in batch.items():
        if isinstance(value, torch.Tensor):
            value = value.to(device, non_blocking=True)
            if channels_last and value.dim() == 4 and key in ("query_img",):
                value = value.contiguous(memory_format=torch.channels_last)
        out[key] = value
    return out


class _StopFlag:
    """Set by SIGTERM/SIGINT; the loop saves a checkpoint at the next iteration boundary and stops."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: dict = {}

    def __enter__(self):
        def handler(signum, frame):
            self.requested = True

        try:
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._previous[sig] = signal.signal(sig, handler)
        except ValueError:  # not the main thread
            pass
        return self

    def __exit__(self, *exc):
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)


# ---------------------------------------------------------------------------------------------------------------
# Progress display
# ---------------------------------------------------------------------------------------------------------------


def _progress(enabled: bool):
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from ..cli.common import console

    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        TextColumn("{task.fields[speed]}"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=console,
        disable=not enabled,
        transient=False,
    )


# ---------------------------------------------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------------------------------------------


@torch.no_grad()
def validate(model, loader, meter: FewShotMeter, d, amp: bool, channels_last: bool, on_batch=None) -> dict:
    """1-shot forward + argmax on this process's validation episodes; counts summed over processes."""
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros(1, dtype=torch.float64)
    start = time.perf_counter()
    for batch in loader:
        b = _to(batch, d.device, channels_last)
        with autocast(d.device, amp):
            logits = model(b["query_img"], b["support_imgs"][:, 0], b["support_masks"][:, 0])
        logits = logits.float()
        loss = model.compute_objective(logits, b["query_mask"])
        loss_sum += loss.item() * logits.shape[0]
        meter.update(logits.argmax(dim=1), b["query_mask"], b["class_id"], b["query_ignore"])
        if on_batch is not None:
            on_batch(logits.shape[0])
    counts = torch.cat([meter.intersection.flatten(), meter.union.flatten(), torch.tensor([meter.episodes])]).to(d.device)
    counts = distributed.all_reduce_sum(counts, d).cpu()
    n = meter.intersection.numel()
    meter.intersection.copy_(counts[:n].view_as(meter.intersection))
    meter.union.copy_(counts[n : 2 * n].view_as(meter.union))
    meter.episodes = int(counts[-1])
    loss_sum = distributed.all_reduce_sum(loss_sum.to(d.device), d).cpu()
    miou, fb_iou = meter.compute()
    model.train(was_training)
    seconds = time.perf_counter() - start
    return {
        "val_loss": float(loss_sum.item() / max(meter.episodes, 1)),
        "val_miou": miou,
        "val_fb_iou": fb_iou,
        "val_episodes": meter.episodes,
        "val_secs": seconds,
    }


# ---------------------------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------------------------


class _EpochStats:
    """Running training loss and mIoU of the current epoch (summable over processes, saved in checkpoints)."""

    def __init__(self, nclass: int, class_ids: Sequence[int]):
        self.meter = FewShotMeter(nclass, class_ids)
        self.loss_sum = 0.0
        self.count = 0

    def reduced(self, d) -> dict:
        m = self.meter
        flat = torch.cat(
            [m.intersection.flatten(), m.union.flatten(), torch.tensor([m.episodes, self.count])]
        ).to(d.device)
        flat = distributed.all_reduce_sum(flat, d).cpu()
        loss = distributed.all_reduce_sum(torch.tensor([self.loss_sum], dtype=torch.float64, device=d.device), d).cpu()
        n = m.intersection.numel()
        return {
            "intersection": flat[:n].view_as(m.intersection).clone(),
            "union": flat[n : 2 * n].view_as(m.union).clone(),
            "episodes": int(flat[-2]),
            "count": int(flat[-1]),
            "loss_sum": float(loss.item()),
        }

    def load(self, state: dict) -> None:
        self.meter.intersection.copy_(state["intersection"])
        self.meter.union.copy_(state["union"])
        self.meter.episodes = int(state["episodes"])
        self.count = int(state["count"])
        self.loss_sum = float(state["loss_sum"])

    @staticmethod
    def summary(state: dict, meter_template: FewShotMeter) -> dict:
        meter = FewShotMeter(meter_template.nclass, meter_template.eval_class_ids.tolist())
        meter.intersection.copy_(state["intersection"])
        meter.union.copy_(state["union"])
        miou, fb = meter.compute()
        return {"train_loss": state["loss_sum"] / max(state["count"], 1), "train_miou": miou, "train_fb_iou": fb}


def _tensorboard(run_dir: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except Exception:  # tensorboard is optional
        return None
    return SummaryWriter(str(run_dir / runs.EVENTS))


def learnable_state(model) -> dict:
    """The state dict without the frozen backbone (which the run rebuilds from its seed or ImageNet weights)."""
    return {k: v for k, v in model.state_dict().items() if not k.startswith(FROZEN_PREFIX)}


def backbone_fingerprint(model) -> str:
    """sha256 of the frozen backbone's tensors: a resumed run checks it rebuilt the very same backbone."""
    h = hashlib.sha256()
    for key, value in model.state_dict().items():
        if key.startswith(FROZEN_PREFIX):
            h.update(key.encode())
            h.update(value.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def _save_last(run_dir: Path, model, optimizer, config: dict, progress_state: dict, fingerprint: str) -> None:
    save_checkpoint(
        run_dir / runs.LAST,
        learnable_state(model),
        model_name=config["model"],
        backbone=config["backbone"],
        metadata={"config": runs._jsonable(config), "kind": "resume", "backbone_sha256": fingerprint},
        extra={"optimizer": optimizer.state_dict(), "rng": rng_state(), **progress_state},
    )


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


def train(
    config: dict,
    *,
    resume: bool = False,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> Path:
    """Train as ``config`` says (see :func:`build_config`); returns the run folder.

    With ``resume`` the run continues from ``config['out']/last.pt`` (from scratch if no checkpoint was written).
    Under ``torchrun`` every process calls this; only rank 0 writes files and shows progress.
    """
    from .. import create_model

    d = distributed.setup(config.get("device"))
    try:
        return _train(config, d, resume=resume, progress=progress, log=log, create_model=create_model)
    finally:
        distributed.teardown()


def _train(config: dict, d, *, resume: bool, progress: bool, log, create_model) -> Path:
    config = dict(config)
    main = d.is_main
    log = log if (log is not None and main) else (lambda msg: None)
    amp = bool(config["amp"]) if config.get("amp") is not None else d.device.type == "cuda"
    workers = int(config["workers"]) if config.get("workers") is not None else default_workers()
    config.update(amp=amp, workers=workers, device=d.device.type, world_size=d.world_size)
    if config.get("calibrate_bn") is None:
        config["calibrate_bn"] = not bool(config["pretrained"])
    channels_last = d.device.type == "cuda"

    set_deterministic(bool(config["deterministic"]), d.device)
    seed = int(config["seed"])
    seed_everything(seed)

    # -- data -------------------------------------------------------------------------------------------------
    bench = get_benchmark(config["benchmark"])
    splits = SplitFolder(config.get("splits"))
    data_root = resolve_data_root(config.get("data_root"))
    fold, shot, bsz = int(config["fold"]), int(config["shot"]), int(config["bsz"])
    pool = bench.pool(splits, "trn", fold)
    nclass = bench.num_classes(splits)
    trn_classes = bench.class_ids(fold, "trn", splits)
    val_episodes = test_episodes(config["benchmark"], fold, 1, protocol=config["protocol"], split="val", splits=splits)
    if int(config.get("val_episodes") or 0) > 0:
        val_episodes = val_episodes[: int(config["val_episodes"])]
    img_size = int(config["img_size"])
    preprocess = preprocess_of(config)  # runs saved before the key existed: 'hsnet'
    train_tf = train_transform(config["augment"], preprocess, img_size)
    train_set = TrainEpisodes(bench, data_root, img_size, train_tf, seed, preprocess=preprocess)
    sampler = EpochBatches()
    train_loader = _loader(train_set, d, workers, batch_sampler=sampler)
    val_set = EpisodeDataset(bench, data_root, distributed.shard(val_episodes, d.rank, d.world_size), img_size, preprocess=preprocess)
    val_loader = _loader(val_set, d, workers, batch_size=int(config["val_bsz"]), shuffle=False)
    # fail early (and only once) when the data is not there
    if main:
        EpisodeDataset(bench, data_root, val_episodes[:1], img_size, preprocess=preprocess)[0]

    run_dir = Path(config["out"]) if config.get("out") else runs.default_run_dir(
        config["model"], config["backbone"], config["benchmark"], config["fold"]
    )
    run_dir = Path(distributed.broadcast_object(str(run_dir), d))
    config["out"] = str(run_dir)
    if main:
        if not resume and run_dir.exists() and any(run_dir.iterdir()):
            raise HmreproError(
                f"run folder {run_dir} already exists and is not empty; continue it with "
                f"`hmrepro train --resume {run_dir}` or choose another --out"
            )
        run_dir.mkdir(parents=True, exist_ok=True)
        for stale in run_dir.glob(".*.tmp"):  # partial writes of a killed run
            stale.unlink(missing_ok=True)
        runs.write_config(run_dir, config)
    distributed.barrier(d)

    # -- model and optimizer ----------------------------------------------------------------------------------
    torch.manual_seed(seed)  # random-init backbones/learners depend on the seed only
    model = create_model(
        config["model"], backbone=config["backbone"], pretrained=bool(config["pretrained"]), benchmark=config["benchmark"]
    )
    if config["calibrate_bn"]:
        images = calibration_images(bench, data_root, pool, shot, seed, img_size, preprocess=preprocess)
        touched = calibrate_batchnorm(model.backbone, images)
        log(f"random backbone: BatchNorm statistics of {touched} layers estimated on {len(images)} training images")
    model.to(d.device)
    if channels_last:
        model.backbone.to(memory_format=torch.channels_last)
    fingerprint = backbone_fingerprint(model)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = build_optimizer(config["optimizer"], params, float(config["lr"]), float(config["weight_decay"]))

    state = {
        "epoch": 0, "step": 0, "global_iter": 0, "best_miou": -1.0, "best_epoch": -1,
        "history": [], "epoch_stats": None, "done": False, "early_stopped": False,
    }  # fmt: skip
    last = run_dir / runs.LAST
    if resume and last.is_file():
        ckpt = _load_last(last, model, optimizer, fingerprint)
        for key in state:
            if key in ckpt.extra:
                state[key] = ckpt.extra[key]
        set_rng_state(ckpt.extra["rng"])
        log(f"resuming {run_dir} at epoch {state['epoch']}, iteration {state['step']} of the epoch")
    elif resume:
        log(f"{run_dir} has no checkpoint yet: starting from the beginning")
    if state["done"] and int(config["epochs"]) > state["epoch"] and not state.get("early_stopped"):
        state["done"] = False

    ddp_model = model
    if d.enabled:
        ddp_model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[d.device.index] if d.device.type == "cuda" else None, broadcast_buffers=False
        )

    info = runs.start_session(run_dir, d.device, d.world_size, resumed=resume) if main else None
    session_start = time.perf_counter()
    writer = _tensorboard(run_dir) if main else None
    epochs = int(config["epochs"])
    patience = int(config.get("patience") or 0)
    every = int(config.get("checkpoint_every") or 0)
    status = "finished"

    def progress_state(stats: _EpochStats | None) -> dict:
        return {**state, "epoch_stats": stats.reduced(d) if stats is not None else None}

    model.train()
    with _StopFlag() as stop, _progress(progress and main) as bar:
        epoch_task = bar.add_task("epochs", total=epochs, completed=state["epoch"], info="", speed="")
        while state["epoch"] < epochs and not state["done"]:
            epoch = state["epoch"]
            episodes = training_episodes(pool, shot, seed, epoch)
            batches = global_batches(len(episodes), bsz, d.world_size)
            if not batches:
                raise HmreproError(f"the training split has {len(episodes)} episodes: fewer than the {d.world_size} processes")
            start_step = int(state["step"])
            sampler.batches = [
                [(epoch, i, episodes[i]) for i in distributed.shard(list(b), d.rank, d.world_size)] for b in batches[start_step:]
            ]
            stats = _EpochStats(nclass, trn_classes)
            if state["epoch_stats"] is not None and start_step > 0 and main:
                stats.load(state["epoch_stats"])
            task = bar.add_task(
                f"epoch {epoch}", total=batches[-1].stop, completed=batches[start_step].start, info="", speed=""
            )
            t0, seen = time.perf_counter(), 0
            for step, batch in enumerate(train_loader, start=start_step):
                # randomness inside the model (VAT's dropout) is a pure function of (seed, rank, iteration), so a
                # resumed run draws what an uninterrupted one does, whatever the number of processes
                torch.manual_seed(iteration_seed(seed, d.rank, state["global_iter"]))
                b = _to(batch, d.device, channels_last)
                n_local, n_global = b["query_img"].shape[0], len(batches[step])
                with autocast(d.device, amp):
                    logits = ddp_model(b["query_img"], b["support_imgs"][:, 0], b["support_masks"][:, 0])
                logits = logits.float()
                loss = model.compute_objective(logits, b["query_mask"])
                scale = distributed.loss_scale(n_local, n_global, d.world_size)
                optimizer.zero_grad(set_to_none=True)
                (loss * scale if scale != 1.0 else loss).backward()
                optimizer.step()

                stats.loss_sum += loss.item() * n_local
                stats.count += n_local
                stats.meter.update(logits.detach().argmax(dim=1), b["query_mask"], b["class_id"], b["query_ignore"])
                state["step"] = step + 1
                state["global_iter"] += 1
                seen += n_global
                if main:
                    elapsed = time.perf_counter() - t0
                    miou = stats.meter.compute()[0]
                    bar.update(
                        task, advance=n_global,
                        info=f"loss {stats.loss_sum / max(stats.count, 1):.4f} mIoU {miou:5.1f}",
                        speed=f"{seen / max(elapsed, 1e-9):.1f} ep/s",
                    )  # fmt: skip

                stop_now = stop.requested
                if d.enabled:
                    flag = distributed.all_reduce_sum(torch.tensor([float(stop_now)], device=d.device), d)
                    stop_now = bool(flag.item() > 0)
                mid_epoch = state["step"] < len(batches)
                if mid_epoch and (stop_now or (every > 0 and state["global_iter"] % every == 0)):
                    snapshot = progress_state(stats)
                    if main:
                        _save_last(run_dir, model, optimizer, config, snapshot, fingerprint)
                        runs.update_session(run_dir, info, time.perf_counter() - session_start)
                if stop_now:
                    if main:
                        runs.update_session(run_dir, info, time.perf_counter() - session_start, status="interrupted")
                    raise TrainingInterrupted(
                        f"stopped at epoch {epoch}, iteration {state['step']}; checkpoint saved. "
                        f"Continue with `hmrepro train --resume {run_dir}`"
                    )
            train_secs = time.perf_counter() - t0
            bar.remove_task(task)

            # -- end of epoch: validate, keep the best, checkpoint ------------------------------------------------
            reduced = stats.reduced(d)
            row = {"epoch": epoch, "iterations": state["global_iter"], "lr": optimizer.param_groups[0]["lr"]}
            row.update(_EpochStats.summary(reduced, stats.meter))
            row.update(train_secs=train_secs, train_episodes_per_s=seen / max(train_secs, 1e-9))
            val_task = bar.add_task(f"validate {epoch}", total=len(val_episodes), info="", speed="")
            row.update(
                validate(
                    model, val_loader, FewShotMeter(nclass, bench.class_ids(fold, "val", splits)), d, amp, channels_last,
                    on_batch=lambda n: bar.update(val_task, advance=n * d.world_size),
                )
            )  # fmt: skip
            bar.remove_task(val_task)
            row["val_episodes_per_s"] = row["val_episodes"] / max(row["val_secs"], 1e-9)
            row["replica_max_abs_diff"] = distributed.max_replica_difference(model, d)
            improved = row["val_miou"] > state["best_miou"]
            if improved:
                state["best_miou"], state["best_epoch"] = row["val_miou"], epoch
            row.update(best_val_miou=state["best_miou"], best_epoch=state["best_epoch"], is_best=improved)
            state["history"].append(row)
            state["epoch"], state["step"] = epoch + 1, 0
            if patience and epoch - state["best_epoch"] >= patience:
                state["done"], state["early_stopped"], status = True, True, "early-stopped"
            if state["epoch"] >= epochs:
                state["done"] = True
            if main:
                if improved:
                    save_checkpoint(
                        run_dir / runs.BEST, model, model_name=config["model"], backbone=config["backbone"],
                        metadata={"config": runs._jsonable(config), "epoch": epoch, "val_miou": row["val_miou"],
                                  "val_fb_iou": row["val_fb_iou"], "kind": "best"},
                    )  # fmt: skip
                _save_last(run_dir, model, optimizer, config, progress_state(None), fingerprint)
                runs.write_metrics(run_dir, state["history"])
                runs.update_session(run_dir, info, time.perf_counter() - session_start)
                if writer is not None:
                    for key in ("train_loss", "train_miou", "val_loss", "val_miou", "val_fb_iou", "train_episodes_per_s"):
                        writer.add_scalar(key, row[key], epoch)
                    writer.flush()
                log(
                    f"epoch {epoch}: loss {row['train_loss']:.4f}, train mIoU {row['train_miou']:.1f}, "
                    f"val mIoU {row['val_miou']:.1f} (FB-IoU {row['val_fb_iou']:.1f}), best {state['best_miou']:.1f} "
                    f"@ {state['best_epoch']}, {row['train_episodes_per_s']:.1f} train ep/s"
                )
            bar.update(epoch_task, completed=state["epoch"])
            distributed.barrier(d)

    if main:
        if writer is not None:
            writer.close()
        runs.update_session(run_dir, info, time.perf_counter() - session_start, status=status)
    return run_dir

"""Training BAM's base learner (``hmrepro train pspnet``): PSPNet on a fold's base classes, not episodic.

BAM trains, per benchmark and fold, a PSPNet on whole images labelled with the fold's base classes + background
(``train_base.py``; :mod:`hmrepro.data.base_learner`, :class:`hmrepro.models.pspnet.PSPNet`); its meta-learner, and
so MCE, then freezes that network's encoder. This loop restates ``train_base.py`` with the engine's pieces (the
recipe reader, the poly schedule, checkpoints, the run folder, progress):

- every epoch the training images are shuffled (a permutation seeded by (seed, epoch)) and cut into batches of
  ``bsz``, the last partial batch dropped (BAM's ``drop_last=True``); ``epoch_iterations`` caps the batches;
- one SGD step per batch on BAM's three parameter groups (encoder, PPM, classifier): groups with index <=
  ``index_split`` at the poly-scheduled ``lr``, the others at ``scale_lr`` × it (BAM's ``poly_learning_rate``:
  PASCAL 1× encoder / 10× head, COCO 10× everything), iteration counted from 1 over ``epochs`` × batches;
- the whole network trains, BatchNorm in training mode over the global batch (BAM: SyncBatchNorm over 4 GPUs × 3);
- after every epoch: validation on every validation image resized to ``val_size`` (BAM's ``resized_val``), logits at
  the label's size, intersection and union summed over the set; the score is BAM's ``class_miou``, the mean IoU of
  the base classes (background left out), in percent; the best weights go to ``best_model.pt`` (the first epoch's
  too, where BAM's ``mIoU > 0`` test would write none), and the run stops after ``patience`` epochs without a
  better score (BAM's ``stop_interval``).

The run folder holds ``config.json``, ``metrics.jsonl``, ``run.json`` and ``best_model.pt`` (an hmrepro checkpoint,
``model_name = "pspnet"``); ``train mce --model-args 'encoder_weights=RUN'`` reads its encoder. Single process; no
``--resume`` (a stopped run is started again). Nothing here prints: progress goes through a
:class:`~hmrepro.progress.Progress`.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from ...data.base_learner import BaseLearnerData, base_classes, base_image_names, base_label_table
from ...data.benchmarks import get_benchmark
from ...data.geometric import GeometricAugment, GeometricParams
from ...data.splits import SplitFolder
from ...errors import HmreproError
from ...paths import resolve_data_root
from ...progress import Progress, Silent
from .. import runs
from ..checkpoint_io import save_checkpoint
from ..recipes import RecipeError, _check_training_extras, check_section, load_recipe_file, merge, recipe_dir
from . import schedules

__all__ = ["BASE_LEARNER", "BaseTrainConfig", "build_base_config", "train_base"]

BASE_LEARNER = "pspnet"
RECIPE = "pspnet.toml"
LOOP_KEYS = {"val_size": int, "index_split": int, "scale_lr": (int, float)}  # the [base_learner] table


@dataclass(frozen=True, kw_only=True)
class BaseTrainConfig(GeometricParams):
    """Everything a base-learner run depends on (saved as ``config.json``): the augmentation's switches are the
    :class:`~hmrepro.data.geometric.GeometricParams` fields (checked by it), with BAM's base-learner scale range."""

    benchmark: str
    fold: int
    lr: float
    momentum: float
    weight_decay: float
    bsz: int
    epochs: int
    img_size: int
    val_size: int
    val_bsz: int
    index_split: int
    scale_lr: float
    patience: int
    optimizer: str = "sgd"
    lr_schedule: str = "poly"
    poly_power: float = 0.9
    augment: str = "geometric"
    scale_range: tuple = (0.5, 2.0)  # BAM's scale_min, scale_max
    model: str = BASE_LEARNER
    backbone: str = "resnet50"
    pretrained: bool = True
    seed: int = 0
    deterministic: bool = False
    epoch_iterations: int = 0  # cap on the batches of an epoch (0: every training image, BAM's)
    val_images: int = 0  # validate on the first N validation images (0: all, BAM's)
    workers: int = 0
    device: str | None = None
    data_root: str | None = None
    splits: str | None = None
    out: str | None = None
    recipe: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


FIELDS = tuple(f.name for f in fields(BaseTrainConfig))


def build_base_config(
    benchmark: str, fold: int, overrides: Mapping[str, Any] | None = None, directory: Path | None = None
) -> BaseTrainConfig:
    """``recipes/pspnet.toml`` for ``benchmark`` (``[defaults]`` < ``[benchmark.<b>]``, ``[base_learner]`` <
    ``[base_learner.benchmark.<b>]``) overridden by ``overrides`` (``None`` values ignored)."""
    get_benchmark(benchmark)
    if benchmark not in ("pascal", "coco"):
        raise HmreproError(f"BAM's base learner is trained on pascal or coco, not {benchmark}")
    if not 0 <= int(fold) < 4:
        raise HmreproError(f"fold must be 0..3, not {fold}")
    path = (Path(directory) if directory else recipe_dir()) / RECIPE
    if not path.is_file():
        raise RecipeError(f"no recipe for {BASE_LEARNER}: {path} does not exist")
    recipe = load_recipe_file(path)
    loop = recipe.get("base_learner", {})
    values = merge(
        check_section(recipe.get("defaults", {}), f"{path} [defaults]"),
        check_section(recipe.get("benchmark", {}).get(benchmark, {}), f"{path} [benchmark.{benchmark}]"),
        check_section(loop, f"{path} [base_learner]", LOOP_KEYS),
        check_section(
            loop.get("benchmark", {}).get(benchmark, {}), f"{path} [base_learner.benchmark.{benchmark}]", LOOP_KEYS
        ),
        {k: v for k, v in (overrides or {}).items() if v is not None},
        {"benchmark": benchmark, "fold": int(fold), "recipe": str(path)},
    )
    unknown = sorted(set(values) - set(FIELDS) - {"_path"})
    if unknown:
        raise HmreproError(f"{BASE_LEARNER} has no setting {', '.join(unknown)}; its settings are {', '.join(FIELDS)}")
    if values.get("optimizer", "sgd") != "sgd" or values.get("augment", "geometric") != "geometric":
        raise RecipeError(f"{path}: BAM's base learner trains with SGD and the geometric augmentation")
    if values.get("backbone", "resnet50") not in ("resnet50", "resnet101"):
        raise HmreproError(f"the PSPNet base learner runs on resnet50 or resnet101, not {values['backbone']}")
    for key in ("bsz", "epochs", "img_size", "val_size", "val_bsz"):
        if key in values and int(values[key]) < 1:
            raise HmreproError(f"{key} must be at least 1 (got {values[key]})")
    _check_training_extras(values, str(path))
    return BaseTrainConfig(**{k: v for k, v in values.items() if k in FIELDS})


# ---------------------------------------------------------------------------------------------------------------
# Pieces
# ---------------------------------------------------------------------------------------------------------------


def build_base_optimizer(model, cfg: BaseTrainConfig) -> torch.optim.Optimizer:
    """SGD on BAM's three groups; group ``i`` has base learning rate ``lr`` if ``i <= index_split`` else
    ``scale_lr × lr`` (the poly factor multiplies both, :func:`~hmrepro.engine.training.schedules.apply_schedule`)."""
    groups = []
    for index, params in enumerate(model.parameter_groups()):
        lr = float(cfg.lr) * (1.0 if index <= cfg.index_split else float(cfg.scale_lr))
        groups.append({"params": params, "lr": lr, "base_lr": lr})
    return torch.optim.SGD(groups, lr=float(cfg.lr), momentum=float(cfg.momentum), weight_decay=float(cfg.weight_decay))


def epoch_batches(count: int, bsz: int, seed: int, epoch: int, cap: int = 0) -> list[list[tuple[int, int, int]]]:
    """The keys (epoch, position, image index) of one epoch's batches: a permutation seeded by (seed, epoch), cut
    into ``bsz``, the last partial batch dropped; at most ``cap`` batches when ``cap`` > 0."""
    order = np.random.default_rng([int(seed), int(epoch)]).permutation(count)
    batches = [
        [(epoch, position, int(order[position])) for position in range(start, start + bsz)]
        for start in range(0, count - bsz + 1, bsz)
    ]
    return batches[:cap] if cap > 0 else batches


class ConfusionCounts:
    """Intersection, union and target pixel counts per class (BAM's ``intersectionAndUnionGPU``), 255 ignored."""

    def __init__(self, classes: int) -> None:
        self.classes = classes
        self.intersection = torch.zeros(classes, dtype=torch.float64)
        self.union = torch.zeros(classes, dtype=torch.float64)

    def update(self, prediction: torch.Tensor, target: torch.Tensor) -> None:
        keep = target != 255
        pred, gold = prediction[keep].long().cpu(), target[keep].long().cpu()
        k = self.classes
        inter = torch.bincount(pred[pred == gold], minlength=k)[:k].double()
        area_pred = torch.bincount(pred, minlength=k)[:k].double()
        area_gold = torch.bincount(gold, minlength=k)[:k].double()
        self.intersection += inter
        self.union += area_pred + area_gold - inter

    def iou(self) -> torch.Tensor:
        return self.intersection / (self.union + 1e-10)

    def base_miou(self) -> float:
        """BAM's ``class_miou``: mean IoU of classes 1.. (background left out), in percent."""
        return float(self.iou()[1:].mean()) * 100.0

    def miou(self) -> float:
        """Mean IoU of every class, background included, in percent (BAM's logged ``mIoU``)."""
        return float(self.iou().mean()) * 100.0


def _loader(dataset, batch_sampler, workers: int) -> DataLoader:
    return DataLoader(dataset, batch_sampler=batch_sampler, num_workers=workers)


@torch.no_grad()
def validate_base(model, loader: DataLoader, classes: int, device: torch.device) -> dict:
    """Loss, base-class mIoU (BAM's score) and all-class mIoU of ``model`` on the validation ``loader``."""
    model.eval()
    counts = ConfusionCounts(classes)
    loss_sum, count = 0.0, 0
    for img, label in loader:
        img, label = img.to(device), label.to(device)
        logits = model(img)
        logits = torch.nn.functional.interpolate(logits, label.shape[-2:], mode="bilinear", align_corners=True)
        loss_sum += float(model.compute_objective(logits, label)) * img.shape[0]
        count += img.shape[0]
        counts.update(logits.argmax(dim=1), label)
    return {"val_loss": loss_sum / max(count, 1), "val_miou": counts.base_miou(), "val_miou_all": counts.miou()}


# ---------------------------------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------------------------------


def _run_folder(cfg: BaseTrainConfig) -> Path:
    run_dir = (
        Path(cfg.out).expanduser()
        if cfg.out
        else runs.default_run_dir(BASE_LEARNER, cfg.backbone, cfg.benchmark, cfg.fold)
    )
    if run_dir.exists() and (not run_dir.is_dir() or any(run_dir.iterdir())):
        raise HmreproError(f"{run_dir} exists and is not empty; choose another --out (pspnet runs cannot resume)")
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir


def train_base(config: BaseTrainConfig, *, progress: Progress | None = None) -> Path:
    """Train BAM's base learner as ``config`` says; returns the run folder (see the module docstring)."""
    from ...models.pspnet import PSPNet
    from .distributed import resolve_device
    from .train import iteration_seed, seed_everything, set_numerics

    progress = progress or Silent()
    device = resolve_device(config.device)
    cfg = config
    set_numerics(cfg.deterministic, False, device)
    seed_everything(cfg.seed)
    bench = get_benchmark(cfg.benchmark)
    splits = SplitFolder(cfg.splits)
    data_root = bench.require(resolve_data_root(cfg.data_root))
    classes = base_classes(bench, cfg.fold)
    table = base_label_table(bench, cfg.fold)
    train_names = base_image_names(bench, splits, "trn")
    val_names = base_image_names(bench, splits, "val")
    if cfg.val_images > 0:
        val_names = val_names[: cfg.val_images]
    if len(train_names) < cfg.bsz:
        raise HmreproError(f"{len(train_names)} training images are fewer than one batch of {cfg.bsz}")
    augment = GeometricAugment(cfg.img_size, GeometricParams.from_config(cfg.as_dict()))
    train_data = BaseLearnerData(bench, data_root, train_names, table, augment=augment, seed=cfg.seed)
    val_data = BaseLearnerData(bench, data_root, val_names, table, val_size=cfg.val_size)
    val_batches = [list(range(i, min(i + cfg.val_bsz, len(val_names)))) for i in range(0, len(val_names), cfg.val_bsz)]

    run_dir = _run_folder(cfg)
    saved = {**cfg.as_dict(), "out": str(run_dir), "device": str(device), "base_classes": classes}
    runs.write_config(run_dir, saved)
    info = runs.start_session(run_dir, device, 1, resumed=False)
    start = time.perf_counter()
    try:
        torch.manual_seed(cfg.seed)  # the head's (and a random encoder's) initialisation depends on the seed only
        model = PSPNet(cfg.backbone, pretrained=cfg.pretrained, classes=len(classes) + 1).to(device)
        optimizer = build_base_optimizer(model, cfg)
        per_epoch = len(epoch_batches(len(train_names), cfg.bsz, cfg.seed, 0, cfg.epoch_iterations))
        max_iter = cfg.epochs * per_epoch
        history: list[dict] = []
        best, best_epoch, global_iter = -1.0, -1, 0
        epochs_task = progress.start("epochs", total=cfg.epochs)
        for epoch in range(cfg.epochs):
            batches = epoch_batches(len(train_names), cfg.bsz, cfg.seed, epoch, cfg.epoch_iterations)
            model.train()
            counts = ConfusionCounts(len(classes) + 1)
            loss_sum, seen, t0 = 0.0, 0, time.perf_counter()
            task = progress.start(f"epoch {epoch}", total=len(batches) * cfg.bsz)
            for img, label in _loader(train_data, batches, cfg.workers):
                torch.manual_seed(iteration_seed(cfg.seed, 0, global_iter))  # dropout: a function of the iteration
                global_iter += 1
                schedules.apply_schedule(
                    optimizer, schedules.lr_factor(cfg.lr_schedule, global_iter, max_iter, cfg.poly_power)
                )
                img, label = img.to(device), label.to(device)
                logits = model(img)
                loss = model.compute_objective(logits, label)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                counts.update(logits.detach().argmax(dim=1), label)
                loss_sum += loss.item() * img.shape[0]
                seen += img.shape[0]
                progress.advance(task, img.shape[0], info=f"loss {loss_sum / seen:.4f}")
            progress.finish(task)
            train_secs = time.perf_counter() - t0
            row = {
                "epoch": epoch,
                "iterations": global_iter,
                "lr": optimizer.param_groups[0]["lr"],
                "train_loss": loss_sum / max(seen, 1),
                "train_miou": counts.base_miou(),
                "train_secs": train_secs,
                "train_images_per_s": seen / max(train_secs, 1e-9),
            }
            row.update(validate_base(model, _loader(val_data, val_batches, cfg.workers), len(classes) + 1, device))
            improved = row["val_miou"] > best
            if improved:
                best, best_epoch = row["val_miou"], epoch
                save_checkpoint(
                    run_dir / runs.BEST,
                    model,
                    model_name=BASE_LEARNER,
                    backbone=cfg.backbone,
                    metadata={"config": saved, "epoch": epoch, "val_miou": row["val_miou"], "kind": "best"},
                )
            row.update(best_val_miou=best, best_epoch=best_epoch, is_best=improved)
            history.append(row)
            runs.write_metrics(run_dir, history)
            runs.update_session(run_dir, info, time.perf_counter() - start)
            progress.log(
                f"epoch {epoch}: loss {row['train_loss']:.4f}, val base-class mIoU {row['val_miou']:.1f} "
                f"(all classes {row['val_miou_all']:.1f}), best {best:.1f} @ {best_epoch}"
            )
            progress.advance(epochs_task, 1)
            if cfg.patience and epoch - best_epoch >= cfg.patience:
                break
    except BaseException as err:
        runs.fail_session(run_dir, info, time.perf_counter() - start, err)
        raise
    runs.update_session(run_dir, info, time.perf_counter() - start, status="finished")
    return run_dir

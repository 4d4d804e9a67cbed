"""The authors' evaluation: fixed episodes, K-shot vote, mIoU and FB-IoU, one result record per fold.

For each fold: the fixed test episodes of the model's protocol (``hsnet`` for the HSNet family: NumPy seeded
with 0 once, 1000 episodes on PASCAL/COCO, every test image on FSS-1000), NumPy/torch seeded with 0 before the
loop, images at the recipe's size (400), the query mask resized with nearest neighbours — or, with
``original_size``, logits upsampled to the query's original size and scored against the unresized mask (batch 1,
as the authors). The recipe's ``preprocess`` picks how images and masks are resized (``hsnet``: torchvision on
PIL; ``vat``: OpenCV at 473/417 px, always at the network resolution: ``original_size`` is refused). K-shot
predictions are the model's ``predict_nshot`` vote. Metrics: :class:`~hmrepro.engine.metrics.FewShotMeter`.

Weights (``weights`` argument): a checkpoint file, a run folder (its ``best_model.pt``), either with ``{fold}``
in the path to evaluate several folds, ``random`` (untrained learner, seed 0) or ``official`` (the authors'
checkpoint, resolved by ``hmrepro.acquisition.checkpoints.resolve_official_weights`` when it exists).
"""

from __future__ import annotations

import importlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader

from ..data.benchmarks import get_benchmark, test_episodes
from ..data.dataset import EpisodeDataset
from ..data.preprocessing import get_preprocessing, preprocess_of
from ..data.splits import PACKAGED_SPLITS, SplitFolder, sha256_file
from ..errors import HmreproError
from ..models.cards import ORIGINAL_SIZE_BENCHMARKS
from ..paths import resolve_data_root
from . import runs
from .checkpoints import load_checkpoint
from .distributed import resolve_device
from .metrics import FewShotMeter
from .records import git_commit, now_iso, record_protocol_fields, versions, write_record
from .recipes import resolve as resolve_recipe

__all__ = ["WeightsSource", "eval_settings", "evaluate", "folds_of", "resolve_weights"]


@dataclass(frozen=True)
class WeightsSource:
    """Where the weights of one fold come from."""

    path: Optional[Path]  # None for random weights
    origin: str  # 'own' | 'official' | 'random'
    run_dir: Optional[Path] = None
    sha256: Optional[str] = None
    trained_img_size: Optional[int] = None  # our own runs: the image size they trained at
    trained_benchmark: Optional[str] = None  # our own runs: the benchmark they trained on (VAT's decoder differs)


def folds_of(benchmark: str, fold: str | int) -> list[int]:
    """``'all'`` → every fold of the benchmark (FSS-1000: just 0); else the one fold."""
    bench = get_benchmark(benchmark)
    if str(fold) == "all":
        return list(range(bench.nfolds))
    fold = int(fold)
    if fold >= bench.nfolds:
        raise HmreproError(f"{benchmark} has {bench.nfolds} fold(s); use --fold 0" if bench.nfolds == 1 else f"no fold {fold}")
    return [fold]


def _official(model: str, backbone: str, benchmark: str, fold: int, data_root: Path | None) -> Path:
    try:
        module = importlib.import_module("hmrepro.acquisition.checkpoints")
        resolver = getattr(module, "resolve_official_weights")
    except (ImportError, AttributeError):
        raise HmreproError(
            "--weights official: this hmrepro cannot fetch the authors' checkpoints yet "
            "(hmrepro.acquisition.checkpoints.resolve_official_weights is missing). Download the authors' "
            "best_model.pt yourself and pass --weights PATH (use {fold} in PATH for --fold all)."
        ) from None
    return Path(resolver(model, backbone, benchmark, fold, data_root=data_root))


def resolve_weights(
    spec: str, model: str, backbone: str, benchmark: str, fold: int, multi_fold: bool, data_root: Path | None = None
) -> WeightsSource:
    """Turn a ``--weights`` value into the checkpoint of ``fold`` (see the module docstring)."""
    if spec == "random":
        return WeightsSource(None, "random")
    if spec == "official":
        path = _official(model, backbone, benchmark, fold, data_root)
        return WeightsSource(path, "official", sha256=sha256_file(path))
    if multi_fold and "{fold}" not in spec and get_benchmark(benchmark).nfolds > 1:
        raise HmreproError(
            f"--fold all needs one checkpoint per fold: put {{fold}} in --weights (e.g. runs/{model}_fold{{fold}}), "
            "or evaluate one --fold at a time"
        )
    path = Path(spec.replace("{fold}", str(fold))).expanduser()
    run_dir = None
    if path.is_dir():
        run_dir = path
        path = runs.best_weights(path)
        config = runs.read_config(run_dir) if runs.is_run_dir(run_dir) else {}
        if config and config.get("benchmark") == benchmark and int(config.get("fold", fold)) != fold:
            raise HmreproError(
                f"run {run_dir} was trained on {benchmark} fold {config['fold']}: its training classes include the "
                f"test classes of fold {fold}. Evaluate it on --fold {config['fold']}"
            )
    elif not path.is_file():
        raise HmreproError(f"--weights {spec}: {path} is neither a checkpoint file, a run folder, 'random' nor 'official'")
    from .checkpoints import read_checkpoint
    from .origins import origin_of

    ckpt = read_checkpoint(path)
    origin = origin_of(ckpt, sha256_file(path), data_root)
    config = ckpt.metadata.get("config") or {}
    trained = int(config["img_size"]) if origin == "own" and config.get("img_size") else None
    return WeightsSource(
        path, origin, run_dir=run_dir, sha256=sha256_file(path), trained_img_size=trained,
        trained_benchmark=config.get("benchmark") if origin == "own" else None,
    )  # fmt: skip


def _progress(enabled: bool):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    from ..cli.common import console

    return Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), console=console, disable=not enabled,
    )  # fmt: skip


@torch.no_grad()
def evaluate_fold(
    model,
    benchmark: str,
    fold: int,
    shot: int,
    *,
    protocol: str,
    img_size: int,
    original_size: bool,
    data_root: Path,
    splits: SplitFolder,
    device: torch.device,
    bsz: int = 1,
    workers: int = 0,
    episodes: int | None = None,
    amp: bool = False,
    on_batch: Callable[[int, float], None] | None = None,
    preprocess: str = "hsnet",
) -> dict:
    """mIoU and FB-IoU of ``model`` on one fold's fixed episodes; also the episode count and seconds per episode."""
    bench = get_benchmark(benchmark)
    try:
        eps = test_episodes(benchmark, fold, shot, protocol=protocol, split="test", splits=splits)
    except ValueError as err:  # e.g. the asnet protocol has no FSS-1000 episodes
        raise HmreproError(str(err)) from None
    if episodes:
        eps = eps[:episodes]
    np.random.seed(0)
    torch.manual_seed(0)
    dataset = EpisodeDataset(bench, data_root, eps, img_size=img_size, original_size=original_size, preprocess=preprocess)
    loader = DataLoader(
        dataset, batch_size=1 if original_size else bsz, shuffle=False, num_workers=workers,
        pin_memory=device.type == "cuda", generator=torch.Generator().manual_seed(0),
    )  # fmt: skip
    meter = FewShotMeter(bench.num_classes(splits), bench.class_ids(fold, "test", splits))
    model.eval()
    start = time.perf_counter()
    for batch in loader:
        q = batch["query_img"].to(device, non_blocking=True)
        s_imgs = batch["support_imgs"].to(device, non_blocking=True)
        s_masks = batch["support_masks"].to(device, non_blocking=True)
        gt = batch["query_mask"]
        output_size = tuple(gt.shape[-2:]) if original_size else None
        ctx = torch.autocast(device.type, dtype=torch.bfloat16) if amp else torch.autocast(device.type, enabled=False)
        with ctx:
            pred = model.predict_nshot(q, s_imgs, s_masks, output_size=output_size)
        meter.update(pred.cpu(), gt, batch["class_id"], batch["query_ignore"])
        if on_batch is not None:
            miou = meter.compute()[0]
            on_batch(q.shape[0], miou)
    seconds = time.perf_counter() - start
    miou, fb_iou = meter.compute()
    return {"miou": miou, "fb_iou": fb_iou, "episodes": meter.episodes, "secs_per_episode": seconds / max(meter.episodes, 1)}


def eval_settings(model_name: str, benchmark: str, *, preprocess: str | None = None, original_size: bool = False) -> dict:
    """The recipe of ``model_name`` on ``benchmark`` with the ``protocol`` (episodes) and ``preprocess`` (image and
    mask preprocessing, :mod:`hmrepro.data.preprocessing`) the evaluation uses; ``preprocess`` overrides the recipe's.
    Refuses ``original_size`` for a preprocessing that resizes every mask (VAT's)."""
    recipe = resolve_recipe(model_name, benchmark)
    recipe["protocol"] = recipe.get("protocol", "hsnet")
    recipe["preprocess"] = preprocess or preprocess_of(recipe)
    if original_size and benchmark not in ORIGINAL_SIZE_BENCHMARKS:
        raise HmreproError(
            f"--original-size is not possible on {benchmark}: its authors' loader resizes every mask with the image "
            f"(original size only on {', '.join(ORIGINAL_SIZE_BENCHMARKS)}); drop --original-size"
        )
    if original_size and not get_preprocessing(recipe["preprocess"]).original_size:
        raise HmreproError(
            f"--original-size is not possible for {model_name}: its preprocessing ('{recipe['preprocess']}') resizes "
            "the masks together with the image, so its authors evaluate at the network resolution only "
            f"({recipe['img_size']} px here); drop --original-size"
        )
    return recipe


def load_model(
    source: WeightsSource,
    model_name: str,
    backbone: str,
    benchmark: str,
    *,
    pretrained: bool,
    device: torch.device,
    log: Callable[[str], None],
) -> torch.nn.Module:
    """``model_name`` with the weights of ``source`` (random weights are seeded with 0), on ``device``."""
    from .. import create_model

    torch.manual_seed(0)  # 'random' weights depend on this seed only
    model = create_model(
        model_name, backbone=backbone, pretrained=pretrained if source.path is None else False,
        benchmark=source.trained_benchmark or benchmark,
    )  # fmt: skip
    if source.path is not None:
        ckpt = load_checkpoint(source.path, model)
        if ckpt.model_name and ckpt.model_name != model_name:
            log(f"note: {source.path} was trained as {ckpt.model_name}; evaluating it as {model_name}")
    return model.to(device)


def provenance(
    source: WeightsSource, *, pretrained: bool, device: torch.device, data_root: Path, splits: SplitFolder
) -> dict:
    """The record fields that say which weights, code, machine and data produced a number."""
    return {
        "checkpoint_sha256": source.sha256,
        "origin": source.origin,
        "weights": str(source.path) if source.path else "random",
        "run_dir": str(source.run_dir) if source.run_dir else None,
        "pretrained_backbone": bool(pretrained) if source.path is None else None,
        "git_commit": git_commit(),
        "versions": versions(),
        "device": str(device),
        "device_name": runs.device_description(device)["device_name"],
        "date": now_iso(),
        "seed": 0,
        "data_root": str(data_root),
        "splits": "packaged" if splits.root == PACKAGED_SPLITS else str(splits.root),
    }


def evaluate(
    model_name: str,
    benchmark: str,
    fold: str | int,
    shot: int,
    *,
    weights: str,
    backbone: str = "resnet50",
    img_size: int | None = None,
    original_size: bool = False,
    data_root: str | Path | None = None,
    splits: str | Path | None = None,
    results_dir: str | Path | None = "results",
    device: str | None = None,
    bsz: int | None = None,
    workers: int = 0,
    episodes: int | None = None,
    pretrained: bool = True,
    amp: bool = False,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
    preprocess: str | None = None,
) -> list[dict]:
    """Evaluate ``model_name`` on every fold of ``fold`` ('all' or a number); returns the result records.

    Each record is written to ``results_dir`` (unless it is None) with :func:`write_record`; the written path is
    in the returned record under ``path``.
    """
    log = log or (lambda msg: None)
    folds = folds_of(benchmark, fold)
    recipe = eval_settings(model_name, benchmark, preprocess=preprocess, original_size=original_size)
    protocol, preprocess = recipe["protocol"], recipe["preprocess"]
    bsz = int(bsz or recipe.get("eval_bsz", 1))
    dev = resolve_device(device)
    split_folder = SplitFolder(splits)
    root = resolve_data_root(data_root)
    sources = [
        resolve_weights(weights, model_name, backbone, benchmark, f, multi_fold=len(folds) > 1, data_root=root)
        for f in folds
    ]
    records = []
    with _progress(progress) as bar:
        for f, source in zip(folds, sources):
            try:
                n_total = len(test_episodes(benchmark, f, shot, protocol=protocol, splits=split_folder))
            except ValueError as err:  # e.g. the asnet protocol has no FSS-1000 episodes
                raise HmreproError(str(err)) from None
            model = load_model(source, model_name, backbone, benchmark, pretrained=pretrained, device=dev, log=log)
            size = int(img_size or source.trained_img_size or recipe["img_size"])
            if not img_size and size != recipe["img_size"]:
                log(f"image size {size}: the size {source.path} was trained at (the recipe's is {recipe['img_size']})")
            n = min(episodes, n_total) if episodes else n_total
            task = bar.add_task(f"{model_name} {benchmark} fold {f} {shot}-shot", total=n, info="")
            result = evaluate_fold(
                model, benchmark, f, shot, protocol=protocol, img_size=size, original_size=original_size,
                data_root=root, splits=split_folder, device=dev, bsz=bsz, workers=workers, episodes=episodes, amp=amp,
                on_batch=lambda k, miou: bar.update(task, advance=k, info=f"mIoU {miou:5.1f}"), preprocess=preprocess,
            )  # fmt: skip
            record = {
                "kind": "eval",
                "model": model_name,
                "masking": model.masking.name,
                "backbone": backbone,
                "benchmark": benchmark,
                "fold": f,
                "shot": shot,
                **result,
                "protocol": protocol,
                "preprocess": preprocess,
                "img_size": size,
                "original_size": original_size,
                **provenance(source, pretrained=pretrained, device=dev, data_root=root, splits=split_folder),
                "bsz": 1 if original_size else bsz,
                **record_protocol_fields(
                    amp=amp, episodes=result["episodes"], total_episodes=n_total, img_size=size,
                    default_img_size=recipe["img_size"], original_size=original_size,
                ),
            }
            if results_dir is not None:
                record["path"] = str(write_record(record, Path(results_dir)))
            records.append(record)
            log(
                f"fold {f}: mIoU {result['miou']:.1f}, FB-IoU {result['fb_iou']:.1f} over {result['episodes']} "
                f"episodes ({result['secs_per_episode'] * 1000:.0f} ms/episode)"
            )
    return records


def mean_row(records: Sequence[dict]) -> dict:
    """Mean mIoU / FB-IoU over folds (what the paper's 'mean' column reports)."""
    return {
        "miou": float(np.mean([r["miou"] for r in records])),
        "fb_iou": float(np.mean([r["fb_iou"] for r in records])),
        "episodes": int(sum(r["episodes"] for r in records)),
        "secs_per_episode": float(np.mean([r["secs_per_episode"] for r in records])),
    }

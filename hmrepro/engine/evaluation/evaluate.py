"""The authors' evaluation: fixed episodes, K-shot vote, mIoU and FB-IoU, one result record per fold.

For each fold: the fixed test episodes of the model's protocol (``hsnet`` for the HSNet family: NumPy seeded
with 0 once, 1000 episodes on PASCAL/COCO, every test image on FSS-1000), NumPy/torch seeded with 0 before the
loop, images at the recipe's size (400), the query mask resized with nearest neighbours — or, with
``original_size``, logits upsampled to the query's original size and scored against the unresized mask (batch 1,
as the authors). The recipe's ``preprocess`` picks how images and masks are resized (``hsnet``: torchvision on
PIL; ``vat``: OpenCV at 473/417 px, always at the network resolution: ``original_size`` is refused). K-shot
predictions are the model's ``predict_nshot`` vote. Metrics:
:class:`~hmrepro.engine.evaluation.metrics.FewShotMeter`. The
episodes run through :func:`hmrepro.engine.evaluation.runner.run_episodes`, as those of ``domain-shift`` (an
episode source of
the same evaluation: :func:`evaluate_domain_shift`) and of ``viz episodes`` (:func:`figure_episodes`) do.
The engine prints nothing: progress and log lines go to a :class:`~hmrepro.progress.Progress`.

Weights (``weights`` argument): a checkpoint file, a run folder (its ``best_model.pt``), either with ``{fold}``
in the path to evaluate several folds, ``random`` (untrained learner, seed 0) or ``official`` (the authors'
checkpoint, resolved by ``hmrepro.acquisition.published_weights.resolve_official_weights`` when it exists).
"""

from __future__ import annotations

import hashlib
import importlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from ...atomic import sha256_file
from ...data.bam import bam_test_episodes
from ...data.benchmarks import get_benchmark, test_episodes
from ...data.domain_shift import (
    DOMAIN_SHIFT_BENCHMARK,
    EPISODE_SOURCE,
    VOC_CLASSES,
    domain_shift_class_ids,
    domain_shift_episodes,
    domain_shift_pool,
)
from ...data.episodes import Episode
from ...data.preprocessing import get_preprocessing, preprocess_of
from ...data.splits import PACKAGED_SPLITS, SplitFolder
from ...errors import HmreproError
from ...models.cards import ORIGINAL_SIZE_BENCHMARKS, EvalPlan
from ...models.model_args import model_arguments
from ...paths import resolve_data_root
from ...progress import Progress, Silent
from .. import runs
from ..checkpoint_io import load_checkpoint
from ..recipes import resolve as resolve_recipe
from ..records import (
    PER_EPISODE,
    ensure_writable_dir,
    git_commit,
    now_iso,
    record_protocol_fields,
    save_records,
    versions,
)
from ..training.distributed import resolve_device
from .bam_eval import run_bam
from .eval_config import EvalConfig
from .inference import apply_inference, inference_fields
from .runner import EpisodePrediction, EpisodeSource, run_episodes

__all__ = [
    "EpisodeFigure",
    "EvalConfig",
    "FigureEpisodes",
    "FoldEpisodes",
    "WeightsSource",
    "evaluation_plan",
    "evaluate",
    "evaluate_domain_shift",
    "figure_episodes",
    "fold_plan",
    "folds_of",
    "resolve_weights",
]


@dataclass(frozen=True)
class WeightsSource:
    """Where the weights of one fold come from."""

    path: Path | None  # None for random weights
    origin: str  # 'own' | 'official' | 'random'
    run_dir: Path | None = None
    sha256: str | None = None
    trained_img_size: int | None = None  # our own runs: the image size they trained at
    trained_benchmark: str | None = None  # our own runs: the benchmark they trained on (VAT's decoder differs)
    trained_seed: int | None = None  # our own runs: the training --seed
    trained_model_args: str = ""  # our own runs: the model's constructor arguments (--model-args)
    trained_config: dict | None = field(default=None, hash=False, compare=False)  # our own runs: the run's config


def folds_of(benchmark: str, fold: str | int) -> list[int]:
    """``'all'`` → every fold of the benchmark (FSS-1000: just 0); else the one fold."""
    bench = get_benchmark(benchmark)
    if str(fold) == "all":
        return list(range(bench.nfolds))
    fold = int(fold)
    if fold >= bench.nfolds:
        raise HmreproError(
            f"{benchmark} has {bench.nfolds} fold(s); use --fold 0" if bench.nfolds == 1 else f"no fold {fold}"
        )
    return [fold]


def _official(model: str, backbone: str, benchmark: str, fold: int, data_root: Path | None) -> Path:
    try:
        module = importlib.import_module("hmrepro.acquisition.published_weights")
        resolver = module.resolve_official_weights
    except (ImportError, AttributeError):
        raise HmreproError(
            "--weights official: this hmrepro cannot fetch the authors' checkpoints yet "
            "(hmrepro.acquisition.published_weights.resolve_official_weights is missing). Download the authors' "
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
        raise HmreproError(
            f"--weights {spec}: {path} is neither a checkpoint file, a run folder, 'random' nor 'official'"
        )
    from ..checkpoint_io import read_checkpoint
    from ..origins import origin_of

    ckpt = read_checkpoint(path)
    digest = sha256_file(path)  # read once: a checkpoint can be hundreds of MB
    origin = origin_of(ckpt, digest, data_root)
    config = ckpt.metadata.get("config") or {}
    trained = int(config["img_size"]) if origin == "own" and config.get("img_size") else None
    return WeightsSource(
        path,
        origin,
        run_dir=run_dir,
        sha256=digest,
        trained_img_size=trained,
        trained_benchmark=config.get("benchmark") if origin == "own" else None,
        trained_seed=int(config["seed"]) if origin == "own" and config.get("seed") is not None else None,
        trained_model_args=(
            with_checkpoint_encoder(config.get("model"), str(config.get("model_args") or ""), ckpt.state_dict)
            if origin == "own"
            else ""
        ),
        trained_config=dict(config) if origin == "own" and config else None,
    )


def with_checkpoint_encoder(model: str | None, model_args: str, state: dict) -> str:
    """``model_args`` of an own MCE checkpoint, plus ``encoder=imagenet`` when it names no ``encoder`` and its frozen
    ResNet has torchvision's 7×7 stem: a run from before MCE's ``encoder`` argument (default ``pspnet``, BAM's
    deep stem). Evaluation then builds the network the checkpoint holds, and the record says which encoder ran."""
    from ...models.cards import ModelCardError, card_of
    from ...models.model_args import parse_model_args

    try:
        if not model or card_of(str(model)).family != "mce" or "encoder" in parse_model_args(model_args):
            return model_args
    except (ModelCardError, HmreproError):
        return model_args
    stem = state.get("backbone.conv1.weight")
    if stem is None or tuple(stem.shape[-2:]) != (7, 7):
        return model_args
    return ";".join(part for part in (model_args, "encoder=imagenet") if part)


@dataclass(frozen=True)
class FoldEpisodes:
    """One fold's episodes for the common evaluation, and what its record says about them."""

    benchmark: str  # where the images and masks come from
    episodes: list[Episode]  # the full fixed set (``episodes=N`` keeps the first N)
    nclass: int  # the class axis of the metric
    class_ids: list[int]  # the classes mIoU averages over
    task: str  # the progress task's description
    name: str  # the fold as the log line names it
    fields: dict = field(default_factory=dict)  # record fields of this episode source


def protocol_preprocess(protocol: str, default: str) -> str:
    """The preprocessing that goes with an episode protocol chosen on the command line: ``bam`` has its own (the
    aspect-kept 473 canvas); another protocol for a model whose card says ``bam`` takes the square PIL resize."""
    if protocol == "bam":
        return "bam"
    return "hsnet" if default == "bam" else default


def bam_runs(fold: FoldEpisodes, limit: int | None) -> list[tuple[int, list[Episode]]]:
    """The (seed, episodes) runs of a ``bam`` fold (its episodes are the runs one after the other; ``limit`` keeps
    the first episodes of each run)."""
    seeds = fold.fields["bam_seeds"]
    size = len(fold.episodes) // len(seeds)
    return [
        (seed, fold.episodes[i * size : (i + 1) * size][:limit] if limit else fold.episodes[i * size : (i + 1) * size])
        for i, seed in enumerate(seeds)
    ]


def evaluation_plan(
    model_name: str,
    benchmark: str,
    *,
    preprocess: str | None = None,
    original_size: bool = False,
    protocol: str | None = None,
) -> EvalPlan:
    """The :class:`~hmrepro.models.cards.EvalPlan` of ``model_name`` on ``benchmark``: the card's protocol
    (episodes) and preprocessing (image and mask, :mod:`hmrepro.data.preprocessing`) unless ``protocol`` /
    ``preprocess`` choose others, at the recipe's image size. Refuses ``original_size`` where the benchmark or the
    preprocessing resizes every mask (FSS-1000; VAT's)."""
    recipe = resolve_recipe(model_name, benchmark)
    protocol = protocol or recipe.get("protocol", "hsnet")
    preprocess = preprocess or protocol_preprocess(protocol, preprocess_of(recipe))
    if original_size and benchmark not in ORIGINAL_SIZE_BENCHMARKS:
        raise HmreproError(
            f"--original-size is not possible on {benchmark}: its authors' loader resizes every mask with the image "
            f"(original size only on {', '.join(ORIGINAL_SIZE_BENCHMARKS)}); drop --original-size"
        )
    if original_size and not get_preprocessing(preprocess).original_size:
        raise HmreproError(
            f"--original-size is not possible for {model_name}: its preprocessing ('{preprocess}') resizes "
            "the masks together with the image, so its authors evaluate at the network resolution only "
            f"({recipe['img_size']} px here); drop --original-size"
        )
    return EvalPlan(protocol, preprocess, int(recipe["img_size"]), original_size)


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
    from ... import create_model

    torch.manual_seed(0)  # 'random' weights depend on this seed only
    model = create_model(
        model_name,
        backbone=backbone,
        pretrained=pretrained if source.path is None else False,
        benchmark=source.trained_benchmark or benchmark,
        **model_arguments(model_name, source.trained_model_args),
    )
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


@dataclass(frozen=True)
class _Evaluation:
    """What every fold of one evaluation shares: its configuration and what is derived from it."""

    config: EvalConfig
    kind: str  # the records' kind
    record_benchmark: str  # the records' benchmark
    trained_on: str  # the benchmark whose weights are resolved and whose model is built
    plan: EvalPlan  # evaluation_plan(model, trained_on): protocol, preprocess, the recipe's img_size, original size
    bsz: int


def fold_plan(plan: EvalPlan, source: WeightsSource, img_size: int | None, log) -> EvalPlan:
    """The plan a fold runs with: ``plan`` at ``img_size``, else at the size the checkpoint trained at, else at the
    plan's own (the recipe's) size."""
    size = int(img_size or source.trained_img_size or plan.img_size)
    if not img_size and size != plan.img_size:
        log(f"image size {size}, the checkpoint's training size (the recipe's is {plan.img_size}): {source.path}")
    return replace(plan, img_size=size)


def set_eval_numerics(device: torch.device) -> None:
    """On CUDA: cuDNN autotuning (the fastest algorithm for the episodes' fixed shapes; fp32 either way) and TF32 off
    (PyTorch lets cuDNN convolutions use TF32 by default, which changes numbers; bf16 is the opt-in ``--amp``, and
    records say ``precision``). Nothing to do on a CPU."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False


def _evaluate_folds(
    job: _Evaluation,
    folds: Sequence[int],
    episodes_of: Callable[[int], FoldEpisodes],
    *,
    data_root: Path,
    splits: SplitFolder,
    results_dir: str | Path | None,
    device: str | None,
    progress: Progress | bool | None,
    log: Callable[[str], None] | None,
) -> list[dict]:
    """The common evaluation: per fold, its weights, its model, its episodes through the runner, one record."""
    progress = _progress_of(progress)
    device, log = resolve_device(device), log or progress.log
    set_eval_numerics(device)
    if results_dir is not None:
        ensure_writable_dir(Path(results_dir))
    sources = [
        resolve_weights(
            job.config.weights,
            job.config.model,
            job.config.backbone,
            job.trained_on,
            f,
            multi_fold=len(folds) > 1,
            data_root=data_root,
        )
        for f in folds
    ]
    records = []
    for f, source in zip(folds, sources):
        record = _evaluate_fold(
            job,
            f,
            episodes_of(f),
            source,
            data_root=data_root,
            splits=splits,
            device=device,
            progress=progress,
            log=log,
        )
        records += save_records([record], None if results_dir is None else Path(results_dir))
    return records


def _evaluate_fold(
    job: _Evaluation,
    f: int,
    fold: FoldEpisodes,
    source: WeightsSource,
    *,
    data_root: Path,
    splits: SplitFolder,
    device: torch.device,
    progress: Progress,
    log: Callable[[str], None],
) -> dict:
    """One fold: the model with the weights of ``source``, its plan, the runner over ``fold``'s episodes, the record."""
    model = load_model(
        source,
        job.config.model,
        job.config.backbone,
        job.trained_on,
        pretrained=job.config.pretrained,
        device=device,
        log=log,
    )
    apply_inference(model, job.config.inference, job.config.model)
    if source.trained_benchmark and source.trained_benchmark != job.trained_on:
        log(f"note: {source.path} was trained on {source.trained_benchmark}, not {job.trained_on}")
    plan = fold_plan(job.plan, source, job.config.img_size, log)
    eps = fold.episodes[: job.config.episodes] if job.config.episodes else fold.episodes
    runs = bam_runs(fold, job.config.episodes) if plan.protocol == "bam" else None
    if runs is not None:
        eps = [e for _, run in runs for e in run]
    task = progress.start(fold.task, len(eps))
    advance = lambda batch, _, meter: progress.advance(task, len(batch["class_id"]), f"mIoU {meter.compute()[0]:5.1f}")  # noqa: E731
    loading = EpisodeSource(get_benchmark(fold.benchmark), data_root, plan, device, workers=job.config.workers)
    scoring = {"nclass": fold.nclass, "class_ids": fold.class_ids, "amp": job.config.amp, "on_batch": advance}
    if runs is not None:  # BAM: one run per seed, the mean kept as the fold's numbers, each run in the record
        result, per_run = run_bam(model, runs, loading, **scoring)
        fold = replace(fold, fields={**fold.fields, "bam_runs": per_run})
    else:
        loading = replace(loading, bsz=job.bsz, image_cache_mib=job.config.image_cache_mib)
        result = run_episodes(model, eps, loading, **scoring)
    progress.finish(task)
    log(
        f"{fold.name}: mIoU {result.miou:.1f}, FB-IoU {result.fb_iou:.1f} over {result.episodes} episodes "
        f"({result.secs_per_episode * 1000:.0f} ms/episode)"
    )
    return {
        **episode_fields(eps, fold.class_ids, job.config.episode_seed, source),
        PER_EPISODE: result.per_episode,
        "kind": job.kind,
        "model": job.config.model,
        "masking": model.masking.name,
        **inference_fields(model),
        **({"model_args": source.trained_model_args} if source.trained_model_args else {}),
        **run_fields(job.config.model, source),
        "backbone": job.config.backbone,
        "benchmark": job.record_benchmark,
        "fold": f,
        "shot": job.config.shot,
        **result.metrics(),
        **fold.fields,
        "protocol": plan.protocol,
        "preprocess": plan.preprocess,
        "img_size": plan.img_size,
        "original_size": plan.original_size,
        **provenance(source, pretrained=job.config.pretrained, device=device, data_root=data_root, splits=splits),
        "bsz": 1 if plan.original_size or runs is not None else job.bsz,  # original-size and BAM scoring: batch 1
        "image_cache_mib": job.config.image_cache_mib,
        "image_cache": result.image_cache,  # counters of the main process's cache (None with workers or BAM runs)
        **record_protocol_fields(
            amp=job.config.amp,
            episodes=result.episodes,
            total_episodes=len(fold.episodes),
            img_size=plan.img_size,
            default_img_size=job.plan.img_size,
            original_size=plan.original_size,
        ),
    }


def run_fields(model_name: str, source: WeightsSource) -> dict:
    """The record fields that say which run a number belongs to, for the tables' cells: ``model_arguments``, every
    constructor argument the model was built with (its defaults and the run's ``--model-args``), and, for our own
    runs, ``train_config``, the configuration the checkpoint was trained with (recipe values and flags)."""
    from ...models.model_args import recorded_arguments

    fields: dict = {"model_arguments": recorded_arguments(model_name, source.trained_model_args)}
    if source.trained_config is not None:
        fields["train_config"] = json.loads(json.dumps(source.trained_config, default=str))
    return fields


def episode_fields(
    episodes: Sequence[Episode], class_ids: Sequence[int], episode_seed: int, source: WeightsSource
) -> dict:
    """The record fields that say which episodes were drawn and scored (what ``hmrepro compare`` pairs by) and
    which training seed produced the weights."""
    listing = json.dumps([e.to_json() for e in episodes], separators=(",", ":")).encode()
    return {
        "episodes_sha256": hashlib.sha256(listing).hexdigest(),
        "eval_class_ids": [int(c) for c in class_ids],
        "episode_seed": int(episode_seed),
        "train_seed": source.trained_seed,
    }


def _progress_of(progress: Progress | bool | None) -> Progress:
    """``progress`` when it is a reporter; ``None``/``True``/``False``: no reports (the engine draws nothing)."""
    return Silent() if progress is None or isinstance(progress, bool) else progress


def evaluate(
    config: EvalConfig, *, progress: Progress | bool | None = None, log: Callable[[str], None] | None = None
) -> list[dict]:
    """Run the evaluation ``config`` (:class:`~.eval_config.EvalConfig`) on every fold of ``config.fold``
    ('all' or a number); returns the result records.

    Each record is written to ``config.results_dir`` (unless it is None) with :func:`write_record`; the written path
    is in the returned record under ``path``. ``progress`` (:class:`~hmrepro.progress.Progress`) gets a task
    per fold and, unless ``log`` is given, the notes and the result line of each fold.
    """
    model_name, benchmark, fold, shot = config.model, config.benchmark, config.fold, config.shot
    episode_seed = config.episode_seed
    folds = folds_of(benchmark, fold)
    plan = evaluation_plan(
        model_name,
        benchmark,
        preprocess=config.preprocess,
        original_size=config.original_size,
        protocol=config.protocol,
    )
    split_folder = SplitFolder(config.splits)
    bench = get_benchmark(benchmark)

    def episodes_of(f: int) -> FoldEpisodes:
        if plan.protocol == "bam":  # BAM's five seeds x 1000 episodes, one run after the other
            runs = bam_test_episodes(benchmark, f, shot, split_folder)
            return FoldEpisodes(
                benchmark,
                [e for _, run in runs for e in run],
                bench.num_classes(split_folder),
                bench.class_ids(f, "test", split_folder),
                task=f"{model_name} {benchmark} fold {f} {shot}-shot (bam)",
                name=f"fold {f}",
                fields={"bam_seeds": [seed for seed, _ in runs]},
            )
        eps = test_episodes(
            benchmark, f, shot, protocol=plan.protocol, split="test", splits=split_folder, seed=episode_seed
        )
        return FoldEpisodes(
            benchmark,
            eps,
            bench.num_classes(split_folder),
            bench.class_ids(f, "test", split_folder),
            task=f"{model_name} {benchmark} fold {f} {shot}-shot",
            name=f"fold {f}",
        )

    job = _Evaluation(
        config,
        kind="eval",
        record_benchmark=benchmark,
        trained_on=benchmark,
        plan=plan,
        bsz=int(config.bsz or resolve_recipe(model_name, benchmark)["eval_bsz"]),
    )
    return _evaluate_folds(
        job,
        folds,
        episodes_of,
        data_root=resolve_data_root(config.data_root),
        splits=split_folder,
        results_dir=config.results_dir,
        device=config.device,
        progress=progress,
        log=log,
    )


def evaluate_domain_shift(
    model_name: str,
    fold: str | int,
    shot: int,
    *,
    weights: str,
    backbone: str = "resnet50",
    img_size: int | None = None,
    data_root: str | Path | None = None,
    splits: str | Path | None = None,
    results_dir: str | Path | None = "results",
    device: str | None = None,
    bsz: int = 1,
    workers: int = 0,
    episodes: int | None = None,
    pretrained: bool = True,
    amp: bool = False,
    progress: Progress | bool | None = None,
    log: Callable[[str], None] | None = None,
    episode_seed: int = 0,
) -> list[dict]:
    """Evaluate the COCO-20i model(s) ``weights`` on PASCAL, one record (``kind='domain-shift'``) per fold.

    The common evaluation with the episodes of :mod:`hmrepro.data.domain_shift`: ``weights`` is resolved as by
    :func:`evaluate` for COCO-20i (a checkpoint, a run folder, ``{fold}`` in the path for several folds,
    ``random``, ``official``), the model is built and preprocessed as on COCO-20i (its COCO recipe), and tested on
    the fold's PASCAL test classes. ``episodes`` keeps only the first N of the 1000 fixed episodes (quick checks).
    ``episode_seed`` other than 0 draws another set of episodes by the same protocol, as for :func:`evaluate`.
    """
    folds = folds_of("coco", fold)
    plan = evaluation_plan(model_name, "coco")
    split_folder = SplitFolder(splits)
    root = resolve_data_root(data_root)
    get_benchmark("pascal").require(root)  # before any download of official weights

    def episodes_of(f: int) -> FoldEpisodes:
        classes = domain_shift_class_ids(f)
        names = [VOC_CLASSES[c] for c in classes]
        fields = {
            "trained_on": "coco",
            "tested_on": "pascal",
            "test_classes": names,
            "test_class_ids": classes,
            "episode_source": EPISODE_SOURCE,
            "episode_pool_size": len(domain_shift_pool(f, split_folder)),
        }
        eps = domain_shift_episodes(f, shot, split_folder, protocol=plan.protocol, seed=episode_seed)
        return FoldEpisodes(
            "pascal",
            eps,
            get_benchmark("pascal").num_classes(),
            classes,
            task=f"{model_name} COCO→PASCAL fold {f} {shot}-shot",
            name=f"fold {f} ({', '.join(names)})",
            fields=fields,
        )

    config = EvalConfig(
        model_name,
        "coco",
        fold,
        shot,
        weights,
        backbone=backbone,
        img_size=img_size,
        episodes=episodes,
        episode_seed=episode_seed,
        workers=workers,
        pretrained=pretrained,
        amp=amp,
    )
    job = _Evaluation(
        config, kind="domain-shift", record_benchmark=DOMAIN_SHIFT_BENCHMARK, trained_on="coco", plan=plan, bsz=bsz
    )
    return _evaluate_folds(
        job,
        folds,
        episodes_of,
        data_root=root,
        splits=split_folder,
        results_dir=results_dir,
        device=device,
        progress=progress,
        log=log,
    )


@dataclass(frozen=True)
class EpisodeFigure:
    """Episodes to draw, the plan they were loaded with and, with a model, its predictions."""

    plan: EvalPlan
    episodes: list[Episode]
    predictions: list[EpisodePrediction] | None = None


@dataclass(frozen=True)
class FigureEpisodes:
    """The episodes a figure draws: ``start .. start+count-1`` of the fixed test episodes of ``benchmark``/``fold``/
    ``shot`` and, given ``model`` (``weights`` as for :func:`evaluate`), its prediction of each. Without a model:
    the HSNet protocol and preprocessing at ``img_size`` (default 400)."""

    benchmark: str
    fold: int
    shot: int
    start: int = 0
    count: int = 4
    model: str | None = None
    weights: str = "random"
    backbone: str = "resnet50"
    img_size: int | None = None
    data_root: str | Path | None = None
    splits: str | Path | None = None
    device: str | None = None
    pretrained: bool = True


def figure_episodes(request: FigureEpisodes, log: Callable[[str], None] | None = None) -> EpisodeFigure:
    """The episodes of ``request`` and the model's predictions, by the evaluation's own runner and plan."""
    splits, root = SplitFolder(request.splits), resolve_data_root(request.data_root)
    if request.model is None:
        plan = EvalPlan("hsnet", "hsnet", int(request.img_size or 400))
        return EpisodeFigure(plan, _episode_slice(request, plan, splits))
    log = log or (lambda msg: None)
    name, backbone, benchmark, fold = request.model, request.backbone, request.benchmark, request.fold
    source = resolve_weights(request.weights, name, backbone, benchmark, fold, multi_fold=False, data_root=root)
    plan = fold_plan(evaluation_plan(name, benchmark), source, request.img_size, log)
    eps = _episode_slice(request, plan, splits)
    dev = resolve_device(request.device)
    model = load_model(source, name, backbone, benchmark, pretrained=request.pretrained, device=dev, log=log)
    bench = get_benchmark(benchmark)
    result = run_episodes(
        model,
        eps,
        EpisodeSource(bench, root, plan, dev),
        nclass=bench.num_classes(splits),
        class_ids=bench.class_ids(fold, "test", splits),
        keep_predictions=True,
    )
    return EpisodeFigure(plan, eps, result.predictions)


def _episode_slice(request: FigureEpisodes, plan: EvalPlan, splits: SplitFolder) -> list[Episode]:
    episodes = test_episodes(request.benchmark, request.fold, request.shot, protocol=plan.protocol, splits=splits)
    chosen = episodes[request.start : request.start + request.count]
    if not chosen:
        raise HmreproError(f"no episodes from {request.start}: the fold has fewer")
    return chosen


def mean_row(records: Sequence[dict]) -> dict:
    """Mean mIoU / FB-IoU over folds (what the paper's 'mean' column reports)."""
    return {
        "miou": float(np.mean([r["miou"] for r in records])),
        "fb_iou": float(np.mean([r["fb_iou"] for r in records])),
        "episodes": int(sum(r["episodes"] for r in records)),
        "secs_per_episode": float(np.mean([r["secs_per_episode"] for r in records])),
    }

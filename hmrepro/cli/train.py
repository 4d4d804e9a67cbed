"""``hmrepro train``: episodic training of a registered model with the authors' recipe."""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from enum import Enum
from pathlib import Path

import typer

from ..safetext import safe_markup
from .common import (
    BenchmarkName,
    DataRootOption,
    DeviceOption,
    SplitsOption,
    bsz_option,
    check_backbone,
    console,
    img_size_option,
    option_group,
    optional_option,
    shell_arg,
)
from .rich_progress import RichProgress


class Precision(str, Enum):
    fp32 = "fp32"
    bf16 = "bf16"


class TrainSampler(str, Enum):
    hsnet = "hsnet"
    bam = "bam"


class Validation(str, Enum):
    one_shot = "one-shot"
    bam = "bam"


def few_shot_model(value: str | None) -> str | None:
    """The MODEL callback of the commands that take a few-shot model (eval, bench, domain-shift, viz)."""
    from ..models.registry import list_models

    if value is not None and value not in list_models():
        raise typer.BadParameter(f"{value!r} is not one of {', '.join(list_models())}")
    return value


def _model_name(value: str | None) -> str | None:
    """train's MODEL: a few-shot model, or BAM's base learner."""
    if value == BASE_LEARNER:
        return value
    try:
        return few_shot_model(value)
    except typer.BadParameter as err:
        raise typer.BadParameter(f"{err.message} or {BASE_LEARNER}") from None


BASE_LEARNER = "pspnet"  # BAM's base learner (hmrepro.engine.training.train_base): not a few-shot model, no card
BASE_LEARNER_FLAGS = (
    "backbone",
    "epochs",
    "bsz",
    "lr",
    "img_size",
    "patience",
    "val_bsz",
    "workers",
    "seed",
    "out",
    "data_root",
    "splits",
    "pretrained",
    "deterministic",
    "epoch_iterations",
    "device",
)
"""The flags ``train pspnet`` reads; there ``--val-episodes N`` means the first N validation images and
``--img-size`` sets the training crop and the validation size (BAM: 417 both)."""


@dataclass
class RecipeOverrides:
    """train's flags that override a value of the model's recipe (None: the recipe's), each named as the
    configuration's key (``--amp`` sets ``precision``)."""

    backbone: str | None = optional_option(
        "--backbone", callback=check_backbone, help="resnet50, resnet101 or vgg16 [default: resnet50]."
    )
    epochs: int | None = optional_option(
        "--epochs",
        min=1,
        help="Epochs; the best validation mIoU is kept [default: recipe: the authors' 2000 for HSNet/ASNet and "
        "their HM variants, VAT's 300 (COCO: 400)].",
    )
    bsz: int | None = bsz_option("Global batch size, all processes together [default: recipe].")
    lr: float | None = optional_option("--lr", min=0.0, help="Learning rate [default: recipe].")
    img_size: int | None = img_size_option("Image side in pixels [default: recipe, 400].")
    shot: int | None = optional_option(
        "--shot",
        min=1,
        help="Supports per training episode; K > 1 only for families that train on K-shot episodes (MCE's 5-shot "
        "model) [default: recipe, 1].",
    )
    augment: str | None = optional_option(
        "--augment",
        help="none, cats (image colours) or geometric (scale/rotate/blur/flip/crop of image and masks) [default: "
        "recipe].",
    )
    patience: int | None = optional_option(
        "--patience",
        min=0,
        help="Stop after this many epochs without a better val mIoU; the practical way to end a 2000-epoch recipe "
        "early (0: never, the authors') [default: recipe, 0].",
    )
    min_class_pixels: int | None = optional_option(
        "--min-class-pixels",
        min=0,
        help="BAM's training-image rule: use an (image, class) pair only if the class covers this many pixels of "
        "the stored mask (0: all); BAM's 2048 is 1.1 % of a 500x375 VOC image, on the synthetic benchmark "
        "(64-96 px images) about 100 [default: recipe: MCE 2048, else 0].",
    )
    train_sampler: TrainSampler | None = optional_option(
        "--train-sampler",
        help="How training episodes are drawn: hsnet (each listed (image, class) once per epoch; COCO class-uniform) "
        "or bam (BAM's loader: each image once per epoch, its class drawn among the mask's, distinct supports) "
        "[default: recipe: MCE bam, else hsnet].",
    )
    validation: Validation | None = optional_option(
        "--validation",
        help="one-shot (the protocol's fixed 1-shot validation episodes) or bam (BAM's: seed 321, the model's shot, "
        "scored on the original label) [default: recipe: MCE bam, else one-shot].",
    )
    val_episodes: int | None = optional_option(
        "--val-episodes",
        min=0,
        help="Validate on the first N of the fixed episodes (0: all, the authors' 1000) [default: recipe].",
    )
    val_bsz: int | None = optional_option("--val-bsz", min=1, help="Validation batch size [default: recipe].")
    workers: int | None = optional_option(
        "--workers", min=0, help="DataLoader worker processes per process [default: min(4, cores-1)]."
    )
    seed: int | None = optional_option(
        "--seed", help="Seed of the episode order, augmentation and initialisation [default: 0]."
    )
    out: Path | None = optional_option(
        "--out", help="Run folder to create [default: ~/.hmrepro/runs/<model>_<backbone>_<benchmark>_fold<f>_<time>]."
    )
    data_root: Path | None = DataRootOption
    splits: Path | None = SplitsOption
    pretrained: bool | None = optional_option(
        "--pretrained/--no-pretrained", help="ImageNet backbone weights [default: pretrained]."
    )
    calibrate_bn: bool | None = optional_option(
        "--calibrate-bn/--no-calibrate-bn",
        help="Re-estimate a random backbone's BatchNorm statistics on 64 training images, without which it cannot "
        "learn [default: on with --no-pretrained].",
    )
    deterministic: bool | None = optional_option(
        "--deterministic/--no-deterministic", help="Deterministic kernels (bit-reproducible on the CPU) [default: off]."
    )
    precision: Precision | None = optional_option(
        "--amp",
        help="Numeric precision of training and validation: fp32 (the authors') or bf16 autocast (faster on GPUs, "
        "changes numbers; recorded in config.json) [default: fp32].",
    )
    tf32: bool | None = optional_option(
        "--tf32/--no-tf32",
        help="TF32 matmuls and convolutions on CUDA (faster, changes numbers) [default: off, as the authors].",
    )
    checkpoint_every: int | None = optional_option(
        "--checkpoint-every", min=0, help="Also checkpoint every N iterations (0: only at epoch ends) [default: 500]."
    )
    model_args: str | None = optional_option(
        "--model-args",
        help="Constructor arguments of the model, 'key=value;key=value' (CRCNet's ablations, e.g. "
        "'mask_refine=false;feature_layers=layer3'); saved in config.json, and eval builds the same model "
        "[default: none].",
    )
    epoch_iterations: int | None = optional_option(
        "--epoch-iterations",
        min=0,
        help="Cut every epoch to its first N global batches, for smoke tests and quick checks (0: the whole "
        "training split, the authors') [default: 0].",
    )
    device: str | None = DeviceOption

    def as_dict(self) -> dict:
        """The configuration's keys and the given values (None: not given): choices by value, paths expanded."""
        return {field.name: _config_value(getattr(self, field.name)) for field in fields(self)}


def _config_value(value):
    if isinstance(value, Enum):
        return value.value
    return str(value.expanduser()) if isinstance(value, Path) else value


@option_group("recipe", RecipeOverrides)
def train(
    model: str | None = typer.Argument(
        None,
        callback=_model_name,
        help="Model to train: hsnet, hsnet-hm, vat, vat-hm, asnet, asnet-hm, ... "
        "(-im, -hm-add, -hm-reverse: the masking ablations); pspnet: BAM's base learner of the fold, whose encoder "
        "MCE freezes (--model-args 'encoder_weights=RUN').",
        show_default=False,
    ),
    benchmark: BenchmarkName | None = optional_option("--benchmark", "-b", help="Benchmark."),
    fold: int | None = optional_option("--fold", "-f", min=0, max=3, help="Fold (0-3) [default: 0]."),
    *,
    recipe: RecipeOverrides,
    resume: Path | None = optional_option(
        "--resume", help="Continue the run in this folder where it stopped (mid-epoch too)."
    ),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show progress bars [default: on]."),
    memory_check: bool = typer.Option(
        True,
        "--memory-check/--no-memory-check",
        help="Before the first iteration, stop if the batch cannot fit the free memory (estimated from one measured "
        "training step of one sample) and name the batch size that fits [default: on].",
        show_default=False,
    ),
    print_config: bool = typer.Option(
        False,
        "--print-config",
        help="Print the effective configuration (recipe, flags, derived values) as JSON and exit without touching "
        "data.",
    ),
) -> None:
    """Train MODEL episodically with a frozen backbone, validating every epoch and keeping the best weights.

    Values come from the model's recipe (recipes/*.toml: the authors' hyper-parameters); every flag overrides
    its recipe value, and the effective configuration is saved as RUN/config.json. The run folder gets
    metrics.jsonl (one line per epoch: the training curve), best_model.pt, last.pt (resume checkpoint, written at
    every epoch end and every --checkpoint-every iterations) and run.json (device, versions, wall time).
    Multi-GPU: [bold]torchrun --nproc_per_node 4 -m hmrepro train ...[/] (--bsz is the global batch).

    Example: [bold]hmrepro train hsnet-hm --benchmark pascal --fold 0 --backbone resnet50[/]

    Example (synthetic data, CPU, minutes): [bold]hmrepro train hsnet-hm -b pascal --data-root ~/.hmrepro/synthetic
    --splits ~/.hmrepro/synthetic/splits --no-pretrained --img-size 96 --epochs 2 --val-episodes 50[/]
    """
    from ..engine.training.train import TrainingInterrupted
    from ..engine.training.train import train as run_training
    from ..engine.training.train_config import build_config, resume_config

    overrides = recipe.as_dict()
    if model == BASE_LEARNER:
        _train_base_learner(overrides, benchmark, fold, resume, recipe.val_episodes, print_config, progress)
        return
    if resume is not None:
        if recipe.out is not None:
            raise typer.BadParameter(
                "--out and --resume exclude each other: a resumed run stays in its folder", param_hint="--out"
            )
        resume = resume.expanduser()
        given = {"model": model, "benchmark": benchmark.value if benchmark else None, "fold": fold, **overrides}
        config = resume_config(resume, given)
    else:
        if model is None or benchmark is None:
            raise typer.BadParameter("MODEL and --benchmark are required (or --resume RUN_DIR)")
        config = build_config(model, benchmark.value, fold if fold is not None else 0, overrides)
    if print_config:
        typer.echo(json.dumps(effective_config(config), indent=2, sort_keys=True))
        return
    if resume is None:
        config = base_learner_encoder(config)
    try:
        with RichProgress(progress) as reporter:
            run_dir = run_training(config, resume=resume is not None, progress=reporter, memory_check=memory_check)
    except TrainingInterrupted as err:
        console.print(f"[yellow]interrupted:[/] {safe_markup(err)}", highlight=False, soft_wrap=True)
        raise typer.Exit(err.exit_code) from None
    console.print(f"[green]done[/]: run folder {safe_markup(run_dir)}", highlight=False, soft_wrap=True)
    console.print(
        f"evaluate: [bold]hmrepro eval {config.model} -b {config.benchmark} --fold {config.fold} "
        f"--weights {shell_arg(run_dir)}[/]",
        highlight=False,
        soft_wrap=True,
    )


def base_learner_encoder(config):
    """An MCE run on pretrained weights with ``encoder=pspnet`` (the default, the paper's) and ``encoder_weights``
    unset or ``official``: the fold's published BAM base learner, taken from the checkpoint index (``hmrepro download
    checkpoints --model pspnet --from DIR``; sha256 pinned), its path written into ``model_args``. Other runs pass."""
    from dataclasses import replace

    from ..acquisition.published_weights import resolve_official_weights
    from ..errors import MissingDataError
    from ..models.cards import card_of
    from ..models.model_args import model_arguments

    if card_of(config.model).family != "mce" or not config.pretrained:
        return config
    args = model_arguments(config.model, config.model_args)
    weights = str(args.get("encoder_weights", ""))
    if args.get("encoder", "pspnet") != "pspnet" or (weights and weights != "official"):
        return config
    data_root = Path(config.data_root) if config.data_root else None
    try:
        path = resolve_official_weights(
            BASE_LEARNER, config.backbone, config.benchmark, config.fold, data_root=data_root
        )
    except MissingDataError as err:
        raise MissingDataError(
            f"{config.model} freezes the encoder of the fold's PSPNet base learner (BAM's, what the paper did) and "
            f"none was given: {err}. Or train one (`hmrepro train pspnet -b {config.benchmark} -f {config.fold}`) and "
            "pass --model-args 'encoder_weights=RUN_FOLDER', or use --model-args encoder=imagenet (a deviation)."
        ) from None
    if any(c in str(path) for c in ";,="):
        raise MissingDataError(f"{path}: a path with ';', ',' or '=' cannot be a model argument; move the data root")
    kept = [
        p for p in (config.model_args or "").split(";") if p.strip() and p.split("=")[0].strip() != "encoder_weights"
    ]
    return replace(config, model_args=";".join([*kept, f"encoder_weights={path}"]))


def _train_base_learner(overrides: dict, benchmark, fold, resume, val_episodes, print_config, progress) -> None:
    """``hmrepro train pspnet``: BAM's base learner on the fold's base classes (not episodic)."""
    from ..engine.training.train_base import build_base_config, train_base

    if resume is not None:
        raise typer.BadParameter("a pspnet run cannot be resumed; start it again", param_hint="--resume")
    if benchmark is None:
        raise typer.BadParameter("pspnet needs --benchmark (pascal or coco)")
    ignored = sorted(k for k, v in overrides.items() if v is not None and k not in BASE_LEARNER_FLAGS)
    ignored = [k for k in ignored if k != "val_episodes"]
    if ignored:
        flags = ", ".join("--" + k.replace("_", "-") for k in ignored)
        raise typer.BadParameter(f"{flags}: not a setting of the pspnet base learner (its recipe: recipes/pspnet.toml)")
    given = {k: v for k, v in overrides.items() if k in BASE_LEARNER_FLAGS}
    given["val_images"] = val_episodes
    given["val_size"] = overrides.get("img_size")  # BAM's train_h = val_size: --img-size sets both
    config = build_base_config(benchmark.value, fold if fold is not None else 0, given)
    if print_config:
        typer.echo(json.dumps(config.as_dict(), indent=2, sort_keys=True))
        return
    with RichProgress(progress) as reporter:
        run_dir = train_base(config, progress=reporter)
    console.print(f"[green]done[/]: run folder {safe_markup(run_dir)}", highlight=False, soft_wrap=True)
    console.print(
        f"MCE on this encoder: [bold]hmrepro train mce -b {config.benchmark} --fold {config.fold} "
        f"--model-args {shell_arg(f'encoder_weights={run_dir}')}[/]",
        highlight=False,
        soft_wrap=True,
    )


def effective_config(config) -> dict:
    """What a run would use: the configuration with the machine's defaults filled in, and the process count."""
    import os

    from ..engine.training.distributed import resolve_device

    derived = config.derived(resolve_device(config.device).type)
    return {**derived.as_dict(), "world_size": int(os.environ.get("WORLD_SIZE", "1"))}

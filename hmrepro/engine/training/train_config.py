"""The typed, frozen configuration of a training run: the recipe's values, the user's overrides, derived values.

:func:`build_config` merges the model's recipe (``recipes/*.toml``, :mod:`hmrepro.engine.recipes`) with the
command-line overrides; :meth:`TrainConfig.derived` fills in what depends on the machine (worker count, BatchNorm
calibration, the device). The run saves ``asdict(config)`` as ``config.json``; :func:`resume_config` reads it back
and applies the few overrides a resumed run may change.

Defaults are the authors' (``shared/specs``): fp32 training and validation (``precision='bf16'`` only when
asked), no TF32, the recipe's epochs (HSNet, HSNet-HM and ASNet: the authors' 2000; VAT: its released configs'
300 / 400) with the best validation mIoU kept, and no early stopping unless ``patience`` is set.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from ...errors import HmreproError
from ..recipes import resolve as resolve_recipe

__all__ = ["PRECISIONS", "RESUMABLE_CHANGES", "TrainConfig", "build_config", "config_from_saved", "resume_config"]

PRECISIONS = ("fp32", "bf16")
# what --resume may change; anything else must match the saved configuration
RESUMABLE_CHANGES = (
    "epochs",
    "patience",
    "workers",
    "device",
    "checkpoint_every",
    "precision",
    "tf32",
    "data_root",
    "splits",
)


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run depends on (saved as ``config.json``)."""

    model: str
    benchmark: str
    fold: int
    # the recipe (hmrepro.engine.recipes)
    optimizer: str
    lr: float
    weight_decay: float
    bsz: int  # global batch, all processes together
    img_size: int
    augment: str
    epochs: int
    patience: int  # epochs without a better val mIoU before stopping (0: never, the authors')
    val_episodes: int  # 0: the benchmark's fixed validation episodes (the authors')
    val_bsz: int
    eval_bsz: int
    shot: int
    protocol: str
    preprocess: str
    recipe: str = ""
    # recipe keys of the SGD/poly families (CRCNet, MCE); the defaults keep the HM families' behaviour
    momentum: float = 0.9  # SGD only
    lr_schedule: str = "constant"  # 'constant' | 'poly' (hmrepro.engine.training.schedules)
    poly_power: float = 0.9
    # augment = 'geometric' (hmrepro.data.geometric.GeometricParams: the defaults are PFENet/BAM's pipeline)
    scale_range: tuple = (0.9, 1.1)
    scale_mode: str = "image"  # 'image': factor of the image's own size (PFENet); 'square': s·img_size square (CaNet)
    rotate_range: tuple = (-10.0, 10.0)
    rotate_p: float = 0.5
    blur_p: float = 0.5
    blur_kernel: int = 5
    flip_p: float = 0.5
    crop_keep: float = 0.85  # re-draw a crop that keeps less than this share of the foreground (0: never)
    pad_label: int = 255  # label of padded pixels: 255 ignored by the loss and the metric, 0 background
    # BAM's training-image rule (hmrepro.data.training_filter)
    exclude_novel_images: bool = False
    min_class_pixels: int = 0  # BAM: 2 * 32 * 32
    # episodes: 'hsnet' (data.episodes.training_episodes) or 'bam' (data.bam.bam_training_episodes: BAM's loader)
    train_sampler: str = "hsnet"
    # 'one-shot': the protocol's fixed 1-shot validation episodes; 'bam': BAM's (seed 321, the model's shot, scored
    # on the original label after BAM's two-step upsampling)
    validation: str = "one-shot"
    # the run
    model_args: str = (
        ""  # constructor arguments of the model, 'key=value;...' (CRCNet's ablations; models/model_args.py)
    )
    backbone: str = "resnet50"
    pretrained: bool = True
    calibrate_bn: bool | None = None  # None: on for random (not pretrained) backbones
    workers: int | None = None  # None: min(4, CPU cores - 1)
    seed: int = 0
    deterministic: bool = False
    precision: str = "fp32"  # 'fp32' (the authors') or 'bf16' autocast
    tf32: bool = False  # TF32 matmuls/convolutions on CUDA (changes numbers; off as the authors)
    checkpoint_every: int = 500
    epoch_iterations: int = 0  # cap on the global batches of an epoch (0: the whole training split, the authors')
    device: str | None = None  # None: CUDA if available
    data_root: str | None = None
    splits: str | None = None
    out: str | None = None

    def __post_init__(self) -> None:
        for key in ("scale_range", "rotate_range"):  # JSON and TOML give lists; keep the dataclass hashable
            object.__setattr__(self, key, tuple(float(v) for v in getattr(self, key)))
        if self.precision not in PRECISIONS:
            raise HmreproError(
                f"precision {self.precision!r} is not one of {', '.join(PRECISIONS)} (use --amp bf16 or --amp fp32)"
            )

    @property
    def bf16(self) -> bool:
        return self.precision == "bf16"

    def derived(self, device_type: str) -> TrainConfig:
        """The configuration with the machine-dependent defaults filled in."""
        workers = self.workers if self.workers is not None else default_workers()
        calibrate = self.calibrate_bn if self.calibrate_bn is not None else not self.pretrained
        return replace(self, workers=int(workers), calibrate_bn=bool(calibrate), device=self.device or device_type)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


FIELDS = tuple(f.name for f in fields(TrainConfig))


def default_workers() -> int:
    return max(0, min(4, (os.cpu_count() or 1) - 1))


def _from_values(values: Mapping[str, Any]) -> TrainConfig:
    """A :class:`TrainConfig` from merged values; keys that are no field (recipe metadata) are dropped."""
    return TrainConfig(**{k: v for k, v in values.items() if k in FIELDS})


def _check_overrides(overrides: Mapping[str, Any]) -> None:
    unknown = sorted(set(overrides) - set(FIELDS))
    if unknown:
        raise HmreproError(f"unknown training setting(s) {', '.join(unknown)}; known: {', '.join(FIELDS)}")


def build_config(model: str, benchmark: str, fold: int, overrides: Mapping[str, Any] | None = None) -> TrainConfig:
    """Recipe values for (model, benchmark) overridden by ``overrides`` (``None`` values ignored)."""
    from ...data.benchmarks import get_benchmark
    from ...models.registry import list_models

    if model not in list_models():
        raise HmreproError(f"unknown model {model!r}; choose one of {', '.join(list_models())}")
    get_benchmark(benchmark)
    given = {k: v for k, v in (overrides or {}).items() if v is not None}
    _check_overrides(given)
    if given.get("model_args"):  # unknown constructor arguments are refused before any work
        from ...models.model_args import model_arguments

        model_arguments(model, given["model_args"])
    values = resolve_recipe(model, benchmark, {**given, "model": model, "benchmark": benchmark, "fold": int(fold)})
    if benchmark == "fss" and int(fold) != 0:
        raise HmreproError("FSS-1000 has a single split: use --fold 0")
    return _from_values(values)


def config_from_saved(saved: Mapping[str, Any]) -> TrainConfig:
    """The configuration a run saved, also from runs written before ``precision`` existed (``amp``: bool)."""
    values = dict(saved)
    if "precision" not in values:
        values["precision"] = "bf16" if values.get("amp") else "fp32"
    values.setdefault("tf32", False)
    values.setdefault("preprocess", "hsnet")
    return _from_values(values)


def resume_config(run_dir, overrides: Mapping[str, Any] | None = None) -> TrainConfig:
    """The saved configuration of ``run_dir`` with the allowed ``overrides`` applied; others must match."""
    from pathlib import Path

    from .. import runs

    saved = config_from_saved(runs.read_config(Path(run_dir)))
    changes = {}
    for key, value in (overrides or {}).items():
        if value is None:
            continue
        if key == "epochs" and saved.lr_schedule == "poly" and int(value) != saved.epochs:
            raise HmreproError(
                f"--resume {run_dir}: the run's poly learning-rate schedule decays over its {saved.epochs} epochs; "
                f"--epochs {value} would bend the curve mid-run. Resume without --epochs, or start a new run."
            )
        if key in RESUMABLE_CHANGES:
            changes[key] = value
        elif str(getattr(saved, key, None)) != str(value):
            raise HmreproError(
                f"--resume {run_dir}: the run was started with {key}={getattr(saved, key, None)!r}; it cannot continue "
                f"with {key}={value!r} (only {', '.join(RESUMABLE_CHANGES)} may change). Start a new run instead."
            )
    return replace(saved, **changes, out=str(Path(run_dir)))

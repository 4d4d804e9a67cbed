"""Recipes: the authors' hyper-parameters as TOML files, merged with command-line overrides.

A recipe file (``recipes/<name>.toml`` at the top of the repository) holds the training hyper-parameters of a
family of models::

    [recipe]      name (optional)
    [defaults]    optimizer, lr, weight_decay, bsz, img_size, augment, epochs, patience, val_episodes, ...
    [benchmark.<b>]                  per-benchmark values
    [model.<m>]                      per-model values
    [model.<m>.benchmark.<b>]        per-model, per-benchmark values

The model's card (:mod:`hmrepro.models.cards`) names its family's recipe file (``card.recipe``: a model ``m`` is
trained by ``recipes/<card_of(m).recipe>.toml``) and lists the family's models, which ``[model.<m>]`` sections
may name. What the card says about evaluation is the lowest layer: ``protocol``
(episode sampler), ``preprocess`` ('hsnet' | 'vat') and the authors' ``img_size`` on the benchmark. Precedence,
lowest first: card < defaults < benchmark < model < model+benchmark < explicit overrides (command-line flags; a
flag left at ``None`` does not override). :func:`resolve` returns the merged values, which every run saves as
``config.json``.

Where the files are found: ``$HMREPRO_RECIPES`` if set, else ``recipes/`` next to the ``hmrepro`` package (an
editable install or a checkout), else ``<sys.prefix>/share/hmrepro/recipes`` (a non-editable install with the
files listed as setuptools data-files).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import tomllib

from ..errors import HmreproError
from ..models.cards import card_of, eval_plan

__all__ = [
    "RECIPE_KEYS",
    "RecipeError",
    "check_section",
    "find_recipe",
    "load_recipe_file",
    "merge",
    "recipe_dir",
    "resolve",
]

# every key a recipe may set, with its type (validated when a file is read)
RECIPE_KEYS: dict[str, type | tuple[type, ...]] = {
    "optimizer": str,
    "lr": (int, float),
    "weight_decay": (int, float),
    "bsz": int,
    "img_size": int,
    "augment": str,
    "epochs": int,
    "patience": int,
    "val_episodes": int,
    "val_bsz": int,
    "eval_bsz": int,
    "shot": int,
    # SGD and the learning-rate schedule (hmrepro.engine.training.schedules)
    "momentum": (int, float),
    "lr_schedule": str,
    "poly_power": (int, float),
    # augment = "geometric" (hmrepro.data.geometric)
    "scale_range": list,
    "scale_mode": str,
    "rotate_range": list,
    "rotate_p": (int, float),
    "blur_p": (int, float),
    "blur_kernel": int,
    "flip_p": (int, float),
    "crop_keep": (int, float),
    "pad_label": int,
    # BAM's training-image rule (hmrepro.data.training_filter)
    "exclude_novel_images": bool,
    "min_class_pixels": int,
    # how training episodes are drawn and how the model is validated (hmrepro.engine.training.train; BAM:
    # hmrepro.data.bam)
    "train_sampler": str,
    "validation": str,
}
RECIPE_TABLE_KEYS = ("name",)  # the [recipe] table; the models and evaluation facts live in the model cards
OPTIMIZERS = ("adam", "adamw", "sgd")
AUGMENTS = ("none", "cats", "geometric")
PREPROCESSINGS = ("hsnet", "vat", "bam")  # image/mask preprocessing (hmrepro.data.preprocessing)
TRAIN_SAMPLERS = ("hsnet", "bam")  # hsnet: data.episodes.training_episodes; bam: data.bam.bam_training_episodes
VALIDATIONS = ("one-shot", "bam")  # one-shot: the protocol's fixed 1-shot episodes; bam: BAM's, at the model's shot


class RecipeError(HmreproError):
    """A recipe file is missing, malformed or does not cover the requested model."""


def recipe_dir() -> Path:
    """The folder holding the recipe TOML files (see the module docstring for the search order)."""
    env = os.environ.get("HMREPRO_RECIPES")
    if env:  # asked for: that folder or an error, never a silent fall back to the packaged recipes
        return _named_recipe_dir(Path(env).expanduser())
    candidates = [
        Path(__file__).resolve().parents[2] / "recipes",
        Path(sys.prefix) / "share" / "hmrepro" / "recipes",
    ]
    for path in candidates:
        if path.is_dir() and any(path.glob("*.toml")):
            return path
    raise RecipeError(
        "no recipe folder found (looked in " + ", ".join(str(p) for p in candidates) + "). "
        "Set HMREPRO_RECIPES to the repository's recipes/ folder."
    )


def _named_recipe_dir(path: Path) -> Path:
    """The folder ``HMREPRO_RECIPES`` names, which must hold recipe files."""
    unset = "or unset HMREPRO_RECIPES to use the recipes that come with hmrepro"
    if not path.is_dir():
        what = "does not exist" if not path.exists() else "is not a folder"
        raise RecipeError(f"HMREPRO_RECIPES={path} {what}; point it at a folder of recipe .toml files, {unset}")
    if not any(path.glob("*.toml")):
        raise RecipeError(f"HMREPRO_RECIPES={path} holds no recipe (.toml) file; copy the recipes there, {unset}")
    return path


def check_section(section: Any, where: str, keys: Mapping[str, type | tuple[type, ...]] = RECIPE_KEYS) -> dict:
    """The plain entries of the recipe table ``section`` (named ``where`` in errors), each a key of ``keys`` with a
    value of its type (a bool only where the type is bool); nested tables are left to the caller."""
    if not isinstance(section, Mapping):
        raise RecipeError(f"{where} must be a table")
    out = {}
    for key, value in section.items():
        if isinstance(value, Mapping):
            continue  # nested tables (benchmark.<b> under model.<m>) are handled by the caller
        if key not in keys:
            raise RecipeError(f"{where}: unknown key {key!r}; known keys: {', '.join(keys)}")
        if (isinstance(value, bool) and keys[key] is not bool) or not isinstance(value, keys[key]):
            raise RecipeError(f"{where}: {key} = {value!r} has the wrong type")
        out[key] = value
    return out


def load_recipe_file(path: Path) -> dict:
    """Read and validate one recipe file."""
    try:
        data = tomllib.loads(Path(path).read_text())
    except (OSError, tomllib.TOMLDecodeError) as err:
        raise RecipeError(f"cannot read recipe {path}: {err}") from err
    meta = data.get("recipe", {})
    if not isinstance(meta, Mapping):
        raise RecipeError(f"{path}: [recipe] must be a table")
    moved = sorted(set(meta) - set(RECIPE_TABLE_KEYS))
    if moved:
        raise RecipeError(
            f"{path} [recipe]: unknown key(s) {', '.join(moved)}; the table holds only {', '.join(RECIPE_TABLE_KEYS)} "
            "(the models, protocol and preprocess come from the model card, hmrepro/models/cards.py): delete them"
        )
    check_section(data.get("defaults", {}), f"{path} [defaults]")
    for bench, section in data.get("benchmark", {}).items():
        check_section(section, f"{path} [benchmark.{bench}]")
    for model, section in data.get("model", {}).items():
        check_section(section, f"{path} [model.{model}]")
        for bench, sub in section.get("benchmark", {}).items():
            check_section(sub, f"{path} [model.{model}.benchmark.{bench}]")
    data["_path"] = str(path)
    return data


def find_recipe(model: str, directory: Path | None = None) -> dict:
    """The recipe file of ``model``'s family, ``<directory>/<card.recipe>.toml`` (its card names it); its
    ``[model.<m>]`` sections must name models of that card."""
    card = card_of(model)
    path = (Path(directory) if directory else recipe_dir()) / f"{card.recipe}.toml"
    if not path.is_file():
        raise RecipeError(f"no recipe for {model}: {path} does not exist (the {card.family} card names it)")
    recipe = load_recipe_file(path)
    strangers = sorted(set(recipe.get("model", {})) - set(card.variants))
    if strangers:
        raise RecipeError(
            f"{path}: [model.{strangers[0]}] is not a model of the {card.family} family; "
            f"its models are {', '.join(card.variants)}"
        )
    return recipe


def merge(*layers: Mapping[str, Any] | None) -> dict:
    """Later layers win; ``None`` values (flags not given) never override."""
    out: dict[str, Any] = {}
    for layer in layers:
        for key, value in (layer or {}).items():
            if value is not None:
                out[key] = value
    return out


def resolve(
    model: str,
    benchmark: str,
    overrides: Mapping[str, Any] | None = None,
    directory: Path | None = None,
    *,
    check_training_extras: bool = True,
) -> dict:
    """The effective configuration of ``model`` on ``benchmark``: recipe layers, then ``overrides``.

    ``check_training_extras=False`` skips the check of the schedule and geometric-augmentation keys (it imports
    torch; a plan's cost estimate reads only sizes, epochs and batches).

    The result holds every recipe key plus ``recipe`` (file path), ``protocol``, ``preprocess`` and whatever
    ``overrides`` adds (model, fold, seed, ...). ``img_size``, ``protocol`` and ``preprocess`` default to the
    model card's :func:`~hmrepro.models.cards.eval_plan`.
    """
    recipe = find_recipe(model, directory)
    plan = eval_plan(model, benchmark)
    model_section = recipe.get("model", {}).get(model, {})
    layers = [
        {"img_size": plan.img_size},
        check_section(recipe.get("defaults", {}), "defaults"),
        check_section(recipe.get("benchmark", {}).get(benchmark, {}), f"benchmark.{benchmark}"),
        check_section(model_section, f"model.{model}"),
        check_section(model_section.get("benchmark", {}).get(benchmark, {}), f"model.{model}.benchmark.{benchmark}"),
    ]
    config = merge(*layers)
    missing = [k for k in ("optimizer", "lr", "bsz", "img_size", "epochs") if k not in config]
    if missing:
        raise RecipeError(f"{recipe['_path']} sets no {', '.join(missing)} for {model} on {benchmark}")
    config.setdefault("weight_decay", 0.0)
    config.setdefault("augment", "none")
    config.setdefault("patience", 0)
    config.setdefault("val_episodes", 0)
    config.setdefault("val_bsz", config["bsz"])
    config.setdefault("eval_bsz", 1)
    config.setdefault("shot", 1)
    config.setdefault("train_sampler", "hsnet")
    config.setdefault("validation", "one-shot")
    config = merge(
        config,
        {
            "recipe": recipe["_path"],
            "protocol": plan.protocol,
            "preprocess": plan.preprocess,
        },
        overrides,
    )
    if config["optimizer"] not in OPTIMIZERS:
        raise RecipeError(f"optimizer {config['optimizer']!r} is not one of {', '.join(OPTIMIZERS)}")
    if config["augment"] not in AUGMENTS:
        raise RecipeError(f"augment {config['augment']!r} is not one of {', '.join(AUGMENTS)}")
    if config["preprocess"] not in PREPROCESSINGS:
        raise RecipeError(f"preprocess {config['preprocess']!r} is not one of {', '.join(PREPROCESSINGS)}")
    if config["train_sampler"] not in TRAIN_SAMPLERS:
        raise RecipeError(f"train_sampler {config['train_sampler']!r} is not one of {', '.join(TRAIN_SAMPLERS)}")
    if config["validation"] not in VALIDATIONS:
        raise RecipeError(f"validation {config['validation']!r} is not one of {', '.join(VALIDATIONS)}")
    for key in ("bsz", "img_size", "epochs", "val_bsz", "eval_bsz", "shot"):
        if int(config[key]) < 1:
            raise RecipeError(f"{key} must be at least 1 (got {config[key]})")
    if float(config["lr"]) <= 0:
        raise RecipeError(f"lr must be positive (got {config['lr']})")
    if check_training_extras:
        _check_training_extras(config, recipe["_path"])
    return config


def _check_training_extras(config: Mapping[str, Any], path: str) -> None:
    """The schedule and geometric-augmentation keys, checked where they are read (the error names the file)."""
    from ..data.geometric import GeometricParams
    from .training.schedules import check_schedule

    try:
        check_schedule(config.get("lr_schedule", "constant"), config.get("poly_power", 0.9))
        GeometricParams.from_config(config)
    except (HmreproError, ValueError) as err:
        raise RecipeError(f"{path} (or a flag): {err}") from None

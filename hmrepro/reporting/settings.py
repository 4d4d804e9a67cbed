"""Whether a record is the run a claimed row names: its model arguments, training switches, protocol and test-time
options (:func:`setting_differences`; :mod:`hmrepro.reporting.tables` fills a cell only where there are none).

A claimed row names its run by its ``model`` and its ``overrides`` (``key=value;...``, the settings that differ from
the recipe's and the model's defaults). Each override key is one of:

- a test-time option (``TEST_TIME_OPTIONS``: CRCNet's ``scales``, ``kshot``), compared with the record's
  ``inference`` (what the evaluation ran with, chosen or default);
- a constructor argument of the row's model (``branches``, ``use_prior``, ``mask_refine``, ``feature_layers``, ...),
  compared with the record's ``model_arguments``;
- otherwise a training-recipe key (``augment``), compared with the record's ``train_config``.

Defaults count: every constructor argument and test-time option the row does not name must be the model's default
(``branches=both`` set explicitly equals the default), and the training switches of ``TRAINING_SWITCHES`` the row
does not name must be the recipe's value for the row's model and benchmark. The K-shot mode and the fine-tuning
arguments (``finetune_*``) count only for rows of 2 or more shots (a 1-shot episode runs no K-shot method), the
fine-tuning arguments only where the row's K-shot mode fine-tunes. The episode protocol must be the one the row's
model card names (``bam`` for MCE, ``hsnet`` for CRCNet, HSNet and VAT, ``asnet`` for ASNet): the paper's.

Older records: a record without ``model_arguments`` was built from its ``model_args`` text (absent: none) over the
constructor defaults (hmrepro's evaluation has always built the model from exactly the recorded text), taken as
today's defaults; an argument a record does not name (added since) ran the value declared in ``ADDED_ARGUMENTS``,
else today's default; a record without ``train_config`` fills no row that names a training setting, and is not checked
on the ones the row does not name; a record of a model with test-time options but without ``inference`` fills no
row of that model (its options are unknown). Training settings are not checked for ``official`` records (the
authors' published checkpoint is the row's own run). Models this hmrepro does not know are compared on what their
records and rows say, without defaults or protocol.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any

import pandas as pd

__all__ = ["RowSettings", "TEST_TIME_OPTIONS", "TRAINING_SWITCHES", "row_settings", "setting_differences"]

TEST_TIME_OPTIONS = ("scales", "kshot")
"""Test-time options of a model (CRCNet's), compared with the record's ``inference``."""
TRAINING_SWITCHES = ("augment",)
"""Training-recipe keys that claimed rows use to tell runs apart (HSNet* of HM Table 1: ``augment=cats``): compared
for every row, with the recipe's value where the row does not name one."""
ADDED_ARGUMENTS: dict[str, dict[str, Any]] = {"mce": {"encoder": "imagenet"}}
"""Model family → {constructor argument: the value that ran before the argument existed}, for arguments added with a
default that changes what older models did: a record that does not name such an argument is taken to have run that
value, not today's default. Whoever adds such an argument declares it here. MCE's ``encoder`` (default ``pspnet``,
BAM's base-learner encoder, the paper's): every MCE before it froze torchvision's ImageNet ResNet (``imagenet``)."""
RUN_ARGUMENTS = ("encoder_weights",)
"""Constructor arguments that say where a run's weights came from (MCE's base-learner run folder or file), not how
the model was set up: never compared with a row (every fold and run has its own)."""
KSHOT = "kshot"
FINETUNE_PREFIX = "finetune_"
NO_FINETUNING = "fusion"  # the K-shot mode that fine-tunes nothing


@dataclass(frozen=True)
class RowSettings:
    """What a claimed row expects of a record's run."""

    protocol: str | None  # the card's episode protocol (None: a model this hmrepro does not know)
    model_args: Mapping[str, Any]  # every constructor argument: the row's value or the default
    test_time: Mapping[str, Any]  # the model's test-time options: the row's value or the default
    training: Mapping[str, Any]  # training-recipe keys: the row's value, or the recipe's for TRAINING_SWITCHES
    named: frozenset[str]  # the keys the row's overrides name
    defaults: Mapping[str, Any]  # the model's constructor defaults
    known: bool  # whether this hmrepro knows the row's model (else no defaults, no protocol)
    family: str = ""  # the row's model family (its card's), for ADDED_ARGUMENTS


def row_settings(row: pd.Series) -> RowSettings:
    """The settings ``row`` (a claimed row) names, with the model's and recipe's defaults filled in."""
    from ..engine.recipes import recipe_dir

    benchmark = row.get("trained_on") or row["benchmark"]
    return _settings(str(row["model"]), str(benchmark), str(row.get("overrides") or ""), str(recipe_dir()))


@cache
def _settings(model: str, benchmark: str, overrides: str, recipes: str) -> RowSettings:
    """:func:`row_settings` of one (model, benchmark, overrides) under the recipe folder ``recipes``."""
    from ..models.model_args import parse_model_args

    given = parse_model_args(overrides)
    defaults, protocol, known, family = _model_defaults(model)
    if known:  # a default that is a tuple makes a single value a tuple, as the model's own parsing does
        given = {
            k: (v,) if isinstance(defaults.get(k), tuple) and not isinstance(v, tuple) else v for k, v in given.items()
        }
    test_time = {k: defaults[k] for k in TEST_TIME_OPTIONS if k in defaults}
    test_time.update({k: v for k, v in given.items() if k in TEST_TIME_OPTIONS})
    model_args = {k: v for k, v in defaults.items() if k not in TEST_TIME_OPTIONS}
    training: dict[str, Any] = {}
    for key, value in given.items():
        if key in TEST_TIME_OPTIONS:
            continue
        if key in defaults or not known:
            model_args[key] = value
        else:
            training[key] = value
    recipe = _recipe_values(model, benchmark) if known else {}
    for key in TRAINING_SWITCHES:
        if key in recipe:
            training.setdefault(key, recipe[key])
    return RowSettings(protocol, model_args, test_time, training, frozenset(given), defaults, known, family)


def setting_differences(row: pd.Series, record: Mapping[str, Any]) -> list[str]:
    """How ``record``'s run differs from the one ``row`` names, in short words (empty: it is that run), e.g.
    ``protocol hsnet, the paper's is bam``, ``model argument branches=query, the row's is the default (both)``,
    ``scales 1.0, the row's are 0.75,1.0,1.25``."""
    wanted = row_settings(row)
    shot = _as_int(row.get("shot")) or 1
    reasons = []
    if wanted.protocol is not None and record.get("protocol") != wanted.protocol:
        reasons.append(f"protocol {record.get('protocol') or 'not recorded'}, the paper's is {wanted.protocol}")
    reasons += _test_time_differences(wanted, record, shot)
    reasons += _model_arg_differences(wanted, record, shot)
    reasons += _training_differences(wanted, record)
    return reasons


def _kshot_counts(wanted: RowSettings, shot: int) -> tuple[bool, bool]:
    """(the K-shot mode counts, the fine-tuning arguments count) for a row of ``shot`` shots."""
    kshot = shot >= 2
    return kshot, kshot and wanted.test_time.get(KSHOT, wanted.model_args.get(KSHOT)) != NO_FINETUNING


def _test_time_differences(wanted: RowSettings, record: Mapping[str, Any], shot: int) -> list[str]:
    if not wanted.test_time:
        return []
    ran = record.get("inference")
    if not isinstance(ran, Mapping):
        return ["test-time options not recorded (" + _listed(wanted.test_time) + " wanted)"]
    kshot_counts, _ = _kshot_counts(wanted, shot)
    reasons = []
    for key, want in wanted.test_time.items():
        if key == KSHOT and not kshot_counts:
            continue
        got = ran.get(key)
        if not _same(got, want):
            name = "K-shot mode" if key == KSHOT else key
            verb = "are" if isinstance(want, (tuple, list)) and len(want) > 1 else "is"
            reasons.append(f"{name} {_text(got)}, the row's {verb} {_wanted_text(wanted, key, want)}")
    return reasons


def _model_arg_differences(wanted: RowSettings, record: Mapping[str, Any], shot: int) -> list[str]:
    ran = _record_model_args(record, wanted)
    if ran is None:
        return [f"model arguments unreadable (model_args {_text(record.get('model_args'))!r})"]
    _, finetune_counts = _kshot_counts(wanted, shot)
    reasons = []
    for key in sorted(set(wanted.model_args) | set(ran)):
        if (
            key in TEST_TIME_OPTIONS
            or key in RUN_ARGUMENTS
            or (key.startswith(FINETUNE_PREFIX) and not finetune_counts)
        ):
            continue
        if key not in wanted.model_args:  # an argument the row's model no longer has (ignored), or an unknown model's
            if not wanted.known and not _default_like(ran[key]):
                reasons.append(f"model argument {key}={_text(ran[key])}, the row names none")
            continue
        want = wanted.model_args[key]
        got = ran.get(key)
        if not _same(got, want):
            own_default = " (the default)" if key in wanted.defaults and _same(got, wanted.defaults[key]) else ""
            reasons.append(
                f"model argument {key}={_text(got)}{own_default}, the row's is {_wanted_text(wanted, key, want)}"
            )
    return reasons


def _training_differences(wanted: RowSettings, record: Mapping[str, Any]) -> list[str]:
    if not wanted.training or record.get("origin") == "official":
        return []
    config = record.get("train_config")
    named = {k: v for k, v in wanted.training.items() if k in wanted.named}
    if not isinstance(config, Mapping):
        if not named:
            return []
        return ["training settings not recorded (the row's: " + _listed(named) + ")"]
    reasons = []
    for key, want in wanted.training.items():
        if key not in config and key not in named:
            continue
        got = config.get(key)
        if not _same(got, want):
            whose = f"the recipe's ({_text(want)})" if key not in wanted.named else _text(want)
            reasons.append(f"trained with {key}={_text(got)}, the row's is {whose}")
    return reasons


def _record_model_args(record: Mapping[str, Any], wanted: RowSettings) -> dict[str, Any] | None:
    """The constructor arguments ``record``'s model was built with: its ``model_arguments``, else (an older record)
    its ``model_args`` text; an argument the record does not name ran its ``ADDED_ARGUMENTS`` value, else today's
    default. None: the record's text cannot be read."""
    before = ADDED_ARGUMENTS.get(wanted.family, {})
    unnamed = {key: before.get(key, value) for key, value in wanted.defaults.items()}
    recorded = record.get("model_arguments")
    if isinstance(recorded, Mapping):
        return {**unnamed, **recorded}
    from ..errors import HmreproError
    from ..models.model_args import parse_model_args

    try:
        text = parse_model_args(str(record.get("model_args") or ""))
    except (HmreproError, ValueError):  # a hand-edited record: its text names no key=value
        return None
    return {**unnamed, **text}


def _wanted_text(wanted: RowSettings, key: str, want: Any) -> str:
    if key not in wanted.named and key in wanted.defaults:
        return f"the default ({_text(want)})"
    return _text(want)


def _listed(settings: Mapping[str, Any]) -> str:
    return "; ".join(f"{k}={_text(v)}" for k, v in settings.items())


def _default_like(value: Any) -> bool:
    return value is None or value is False or value == "" or value == [] or value == ()


def _norm(value: Any) -> Any:
    """A comparable form: numbers as floats, sequences as tuples (a single value as itself), text trimmed."""
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, (list, tuple)):
        items = tuple(_norm(v) for v in value)
        return items[0] if len(items) == 1 else items
    if isinstance(value, str):
        text = value.strip()
        if text.lower() in ("true", "false"):
            return text.lower() == "true"
        try:
            return float(text)
        except ValueError:
            return text
    return value


def _same(a: Any, b: Any) -> bool:
    a, b = _norm(a), _norm(b)
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
    if isinstance(a, tuple) and isinstance(b, tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


def _text(value: Any) -> str:
    if value is None:
        return "not recorded"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (list, tuple)):  # numbers all as floats where one is (scales 0.75,1.0,1.25)
        floats = any(isinstance(v, float) for v in value)
        return ",".join(
            _text(float(v) if floats and isinstance(v, int) and not isinstance(v, bool) else v) for v in value
        )
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value) if value != int(value) else f"{value:.1f}"
    return str(value)


@cache
def _model_defaults(model: str) -> tuple[dict[str, Any], str | None, bool, str]:
    """(constructor defaults, the card's protocol, whether this hmrepro knows the model, its family)."""
    from ..models.cards import ModelCardError, card_of
    from ..models.model_args import constructor_defaults

    try:
        card = card_of(model)
    except ModelCardError:
        return {}, None, False, ""
    return constructor_defaults(model), card.protocol, True, card.family


def _recipe_values(model: str, benchmark: str) -> dict[str, Any]:
    from ..engine.recipes import resolve
    from ..errors import HmreproError

    try:
        return dict(resolve(model, benchmark, check_training_extras=False))  # values only: no torch
    except (HmreproError, KeyError, ValueError, OSError):
        return {}


def _as_int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None

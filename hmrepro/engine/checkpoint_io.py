"""Reading, loading and atomically writing model checkpoints.

Formats read (always ``torch.load(..., weights_only=True)``, on the CPU unless told otherwise):

- **authors' HSNet / HSNet-HM** ``best_model.pt``: a bare state dict saved from ``nn.DataParallel``, every key
  prefixed ``module.``;
- a bare state dict without the prefix;
- a dict with the weights under ``state_dict`` (VAT's trainer, Lightning), prefixed or not;
- **authors' ASNet / ASNet-HM** PyTorch-Lightning ``.ckpt``: weights under ``state_dict`` (``backbone.*``,
  ``learner.*``), marked by a ``pytorch-lightning_version`` entry. Lightning also pickles objects that
  ``weights_only=True`` refuses (PyTorch-Lightning 1.3 keys callback states by the callback's class, e.g. the
  authors' ``common.callbacks.CustomCheckpoint``). Such a file is read again with every refused global replaced
  by an inert placeholder class (it only stores what the pickle hands it; no code of the original runs, nothing
  is imported), and accepted only if it then is a Lightning checkpoint whose ``state_dict`` holds plain tensors;
  anything else is refused as before. The placeholders' names are listed in ``metadata["placeholders"]``;
- **ours** (written by :func:`save_checkpoint`)::

      {
          "format": "hmrepro-checkpoint",   # marks the file as ours
          "format_version": 1,
          "model": {<state_dict, authors' key names, no "module." prefix>},
          "model_name": "hsnet-hm",         # registry name, or None
          "backbone": "resnet50",           # or None
          "metadata": {...},                # free-form: str/int/float/bool/None/lists/dicts/tensors
          # later versions may add top-level keys (e.g. "optimizer", "epoch"); readers ignore unknown keys
      }

Loading into a model is strict: a key or shape mismatch raises :class:`CheckpointMismatchError` listing the
missing, unexpected and mis-shaped keys and naming the model the file looks like it belongs to.
"""

from __future__ import annotations

import importlib
import os
import pickle
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..atomic import atomic_open
from ..errors import CorruptFileError, HmreproError, MissingDataError
from ..models.cards import ModelCard, list_cards

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "Checkpoint",
    "CheckpointMismatchError",
    "PicklePlaceholder",
    "check_compatible",
    "describe_state_dict",
    "family_card",
    "load_checkpoint",
    "read_checkpoint",
    "save_checkpoint",
    "strip_module_prefix",
]

FORMAT = "hmrepro-checkpoint"
FORMAT_VERSION = 1
MODULE_PREFIX = "module."
_LISTED_KEYS = 10  # keys listed per category in a mismatch message


class CheckpointMismatchError(HmreproError):
    """A checkpoint's keys or shapes do not fit the model it is loaded into."""


@dataclass
class Checkpoint:
    """A checkpoint as read from disk: the model weights (no ``module.`` prefix) and what came with them."""

    state_dict: dict[str, Tensor]
    source_format: str
    """``hmrepro`` (ours), ``dataparallel`` (bare, ``module.`` keys: the authors' HSNet), ``bare``, ``wrapped``, or
    ``lightning`` (a PyTorch-Lightning checkpoint: the authors' ASNet / ASNet-HM)."""
    model_name: str | None = None
    backbone: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    """Other top-level entries of the file (e.g. optimizer state, epoch)."""


# ---------------------------------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------------------------------


def strip_module_prefix(state_dict: Mapping[str, Tensor]) -> tuple[dict[str, Tensor], bool]:
    """The state dict without ``nn.DataParallel``'s ``module.`` prefix (when every key has it), and whether it had."""
    if state_dict and all(key.startswith(MODULE_PREFIX) for key in state_dict):
        return {key[len(MODULE_PREFIX) :]: value for key, value in state_dict.items()}, True
    return dict(state_dict), False


def _is_state_dict(obj: Any) -> bool:
    return (
        isinstance(obj, Mapping)
        and bool(obj)
        and all(isinstance(k, str) and isinstance(v, Tensor) for k, v in obj.items())
    )


def read_checkpoint(path: str | os.PathLike, map_location: Any = "cpu") -> Checkpoint:
    """Read any supported checkpoint file (see the module docstring) without a model."""
    path = Path(path)
    if not path.is_file():
        raise MissingDataError(f"checkpoint not found: {path}")
    placeholders: list[str] = []
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except OSError as err:
        raise CorruptFileError(f"cannot read checkpoint {path}: {err.strerror or err}") from None
    except Exception as err:
        obj, placeholders = _read_lightning_with_placeholders(path, map_location, err)

    if isinstance(obj, Mapping) and obj.get("format") == FORMAT:
        version = obj.get("format_version")
        if not isinstance(version, int) or version > FORMAT_VERSION:
            raise CorruptFileError(
                f"checkpoint {path} has format version {version!r}; this hmrepro reads up to {FORMAT_VERSION}"
            )
        known = {"format", "format_version", "model", "model_name", "backbone", "metadata"}
        return Checkpoint(
            state_dict=strip_module_prefix(obj["model"])[0],
            source_format="hmrepro",
            model_name=obj.get("model_name"),
            backbone=obj.get("backbone"),
            metadata=dict(obj.get("metadata") or {}),
            extra={k: v for k, v in obj.items() if k not in known},
        )
    if _is_lightning(obj):
        return Checkpoint(
            state_dict=strip_module_prefix(obj["state_dict"])[0],
            source_format="lightning",
            metadata={
                "lightning_version": obj.get(LIGHTNING_VERSION_KEY),
                "epoch": obj.get("epoch"),
                "global_step": obj.get("global_step"),
                "placeholders": placeholders,
            },
            extra={k: v for k, v in obj.items() if k != "state_dict"},
        )
    if _is_state_dict(obj):
        state, had_prefix = strip_module_prefix(obj)
        return Checkpoint(state_dict=state, source_format="dataparallel" if had_prefix else "bare")
    if isinstance(obj, Mapping) and _is_state_dict(obj.get("state_dict")):
        return Checkpoint(
            state_dict=strip_module_prefix(obj["state_dict"])[0],
            source_format="wrapped",
            extra={k: v for k, v in obj.items() if k != "state_dict"},
        )
    found = f"top-level keys {sorted(map(str, obj))[:10]}" if isinstance(obj, Mapping) else type(obj).__name__
    raise CorruptFileError(
        f"{path} is not a checkpoint hmrepro knows: expected a state dict, a dict with 'state_dict', "
        f"or an hmrepro checkpoint (found {found})"
    )


# ---------------------------------------------------------------------------------------------------------------
# PyTorch-Lightning checkpoints (the authors' ASNet / ASNet-HM)
# ---------------------------------------------------------------------------------------------------------------

LIGHTNING_VERSION_KEY = "pytorch-lightning_version"


def _is_lightning(obj: Any) -> bool:
    return isinstance(obj, Mapping) and LIGHTNING_VERSION_KEY in obj and _is_state_dict(obj.get("state_dict"))


class PicklePlaceholder:
    """Stands in for a class or function a checkpoint pickles by name and ``weights_only=True`` refuses.

    Calling or instantiating it only stores the arguments and the pickled state (``args``, ``state``); nothing of
    the original object is imported or run. ``pickled_name`` is the full name the pickle refers to.
    """

    pickled_name = ""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args, self.kwargs, self.state = args, kwargs, None

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __repr__(self) -> str:
        return f"<placeholder for {self.pickled_name}>"


def _placeholder_class(full_name: str) -> type:
    short = full_name.rpartition(".")[2] or "Unknown"
    return type(short, (PicklePlaceholder,), {"pickled_name": full_name, "__module__": __name__})


def _asks_to_run_code(path: Path, names: list[str]) -> CorruptFileError:
    shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
    return CorruptFileError(
        f"checkpoint {path} asks to run code when loaded (it refers to {shown}); hmrepro will not load it. "
        "Use weights from a source you trust (hmrepro download checkpoints)."
    )


def _refused_globals(err: Exception) -> list[str]:
    """The globals torch's ``weights_only`` unpickler named when it refused a file (legacy format included)."""
    return re.findall(r"GLOBAL ([\w.]+)", str(err)) if isinstance(err, pickle.UnpicklingError) else []


def _read_lightning_with_placeholders(path: Path, map_location: Any, err: Exception) -> tuple[Any, list]:
    """Read ``path`` with its refused globals replaced by placeholders; only a Lightning checkpoint is accepted.

    A placeholder stores its arguments and runs nothing, so even a pickle that calls ``os.system`` is read
    harmlessly here; anything but a Lightning checkpoint with a plain-tensor state dict is then refused.
    """
    try:
        names = list(torch.serialization.get_unsafe_globals_in_checkpoint(path))
    except Exception:  # not a zip checkpoint (garbage, truncated, legacy format)
        names = None
    if not names and _refused_globals(err):  # the legacy format: no placeholders, refused outright
        raise _asks_to_run_code(path, _refused_globals(err)) from None
    if not names:
        raise CorruptFileError(
            f"cannot read checkpoint {path}: it is not a PyTorch checkpoint hmrepro can read safely (truncated, "
            "another format, or the legacy non-zip format); fetch or save it again"
        ) from None
    substitutes = [(_placeholder_class(name), name) for name in names]
    try:
        with torch.serialization.safe_globals(substitutes):
            obj = torch.load(path, map_location=map_location, weights_only=True)
    except Exception:
        raise _asks_to_run_code(path, names) from None
    if not _is_lightning(obj):
        raise _asks_to_run_code(path, names)
    return obj, names


# ---------------------------------------------------------------------------------------------------------------
# Guessing what a state dict belongs to
# ---------------------------------------------------------------------------------------------------------------


def _guess_backbone(state_dict: Mapping[str, Tensor]) -> str | None:
    if "backbone.features.0.weight" in state_dict:
        return "vgg16"
    blocks = {m.group(1) for key in state_dict if (m := re.match(r"backbone\.layer3\.(\d+)\.", key))}
    if not blocks:
        return None
    return {6: "resnet50", 23: "resnet101"}.get(len(blocks), f"ResNet with {len(blocks)} layer3 blocks")


def family_card(state_dict: Mapping[str, Tensor]) -> ModelCard | None:
    """The card of the family whose key signature the state dict (no ``module.`` prefix) has, else None."""
    for card in list_cards():
        if any(key.startswith(card.key_signature) for key in state_dict):
            return card
    return None


def _trained_benchmark(state_dict: Mapping[str, Tensor]) -> str | None:
    """The benchmark a state dict's parameters belong to, for families whose shapes differ per benchmark (VAT's
    decoder; the card's ``benchmark_probe``), else None."""
    card = family_card(state_dict)
    if card is None or card.benchmark_probe is None:
        return None
    module_name, function = card.benchmark_probe.split(":")
    probe_module = importlib.import_module(f"..models.{module_name}", __package__)
    probe = getattr(probe_module, function)
    return probe(state_dict)


def describe_state_dict(state_dict: Mapping[str, Tensor]) -> str:
    """A best guess in words of the model a state dict (no ``module.`` prefix) belongs to."""
    card = family_card(state_dict)
    if card is not None:
        family = f"{card.description} ({', '.join(card.variants)} share these weights)"
        benchmark = _trained_benchmark(state_dict)
        if benchmark:
            family = family[:-1] + f"; the {benchmark!r} benchmark's decoder)"
    elif any(k.startswith("backbone.") for k in state_dict):
        family = "a model with an unknown learner"
    else:
        top = sorted({k.split(".", 1)[0] for k in state_dict})[:5]
        return f"an unknown model (top-level prefixes {top})"
    backbone = _guess_backbone(state_dict)
    return f"{family} with a {backbone} backbone" if backbone else family


# ---------------------------------------------------------------------------------------------------------------
# Loading into a model
# ---------------------------------------------------------------------------------------------------------------


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)) else model


def _listed(keys: list[str]) -> str:
    shown = ", ".join(keys[:_LISTED_KEYS])
    return shown + (f", ... ({len(keys) - _LISTED_KEYS} more)" if len(keys) > _LISTED_KEYS else "")


def check_compatible(model: nn.Module, state_dict: Mapping[str, Tensor], source: str = "checkpoint") -> None:
    """Raise :class:`CheckpointMismatchError` unless ``state_dict`` has exactly the model's keys and shapes."""
    expected = _unwrap(model).state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    mis_shaped = [
        f"{k} {tuple(state_dict[k].shape)} vs {tuple(expected[k].shape)}"
        for k in expected
        if k in state_dict and state_dict[k].shape != expected[k].shape
    ]
    if not (missing or unexpected or mis_shaped):
        return
    lines = [f"{source} does not fit the model."]
    lines.append(f"The file looks like {describe_state_dict(state_dict)};")
    lines.append(f"the model is {describe_state_dict(expected)}.")
    file_decoder, model_decoder = _trained_benchmark(state_dict), _trained_benchmark(expected)
    if file_decoder and model_decoder and file_decoder != model_decoder:
        lines.append(
            f"{family_card(expected).class_name}'s decoder differs per benchmark: this file holds the "
            f"{file_decoder!r} decoder but the model was "
            f"built with benchmark={model_decoder!r}; build it with benchmark={file_decoder!r} to load this file."
        )
    if missing:
        lines.append(f"Missing keys ({len(missing)}): {_listed(missing)}.")
    if unexpected:
        lines.append(f"Unexpected keys ({len(unexpected)}): {_listed(unexpected)}.")
    if mis_shaped:
        lines.append(f"Shape mismatches, file vs model ({len(mis_shaped)}): {_listed(mis_shaped)}.")
    raise CheckpointMismatchError(" ".join(lines))


def load_checkpoint(path: str | os.PathLike, model: nn.Module, map_location: Any = "cpu") -> Checkpoint:
    """Read ``path`` and load its weights strictly into ``model`` (plain or DataParallel-wrapped)."""
    checkpoint = read_checkpoint(path, map_location=map_location)
    check_compatible(model, checkpoint.state_dict, source=f"checkpoint {path}")
    _unwrap(model).load_state_dict(checkpoint.state_dict, strict=True)
    return checkpoint


# ---------------------------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------------------------


def save_checkpoint(
    path: str | os.PathLike,
    model: nn.Module | Mapping[str, Tensor],
    *,
    model_name: str | None = None,
    backbone: str | None = None,
    metadata: Mapping[str, Any] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write an hmrepro checkpoint atomically (:func:`hmrepro.atomic.atomic_open`).

    ``model`` is a module (DataParallel unwrapped) or a state dict (a ``module.`` prefix is stripped).
    ``extra`` adds top-level entries (e.g. optimizer state); they must be loadable with ``weights_only=True``.
    """
    path = Path(path)
    state = _unwrap(model).state_dict() if isinstance(model, nn.Module) else model
    payload: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model": strip_module_prefix(state)[0],
        "model_name": model_name,
        "backbone": backbone,
        "metadata": dict(metadata or {}),
    }
    for key, value in (extra or {}).items():
        if key in payload:
            raise ValueError(f"extra entry {key!r} would overwrite a checkpoint field")
        payload[key] = value
    with atomic_open(path, "wb", what="checkpoint") as handle:  # a full disk: WriteFailed, the old file kept
        torch.save(payload, handle)
    return path

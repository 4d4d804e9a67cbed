"""Constructor arguments of a model as text, ``key=value;key=value`` (CRCNet's ablation switches).

``hmrepro train crcnet --model-args "mask_refine=false;feature_layers=layer3"`` trains Table 2's reduced model; the
text is saved in the run's ``config.json`` and ``hmrepro eval`` builds the same model from it. The format is the
``overrides`` column of the claimed tables. Values: ``true``/``false``, numbers, text; a comma makes a tuple, and an
argument whose default is a tuple always gets one (``feature_layers=layer3`` → ``("layer3",)``).
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any

from ..errors import HmreproError
from .cards import card_of

__all__ = ["model_arguments", "parse_model_args"]

RESERVED = ("backbone", "masking", "pretrained", "benchmark")


def _value(text: str) -> Any:
    text = text.strip()
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def parse_model_args(text: str) -> dict[str, Any]:
    """``"a=1;b=x,y"`` → ``{"a": 1, "b": ("x", "y")}`` (no checking against a model; see :func:`model_arguments`)."""
    args: dict[str, Any] = {}
    for item in filter(None, (part.strip() for part in (text or "").split(";"))):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise HmreproError(f"model argument {item!r} is not key=value (separate several with ';')")
        args[key.strip()] = tuple(_value(v) for v in value.split(",")) if "," in value else _value(value)
    return args


def model_arguments(model_name: str, text: str) -> dict[str, Any]:
    """The keyword arguments ``text`` gives to ``model_name``'s class, checked against its constructor."""
    args = parse_model_args(text)
    if not args:
        return {}
    card = card_of(model_name)
    cls = getattr(importlib.import_module(f".{card.module}", __package__), card.class_name)
    params = {
        name: p for name, p in inspect.signature(cls).parameters.items() if name not in RESERVED and name != "self"
    }
    unknown = sorted(set(args) - set(params))
    if unknown:
        raise HmreproError(
            f"{model_name} has no argument {', '.join(unknown)}; its arguments are {', '.join(params) or 'none'}"
        )
    for key, value in args.items():
        if isinstance(params[key].default, tuple) and not isinstance(value, tuple):
            args[key] = (value,)
    return args

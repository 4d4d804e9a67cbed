"""Constructor arguments of a model as text, ``key=value;key=value`` (CRCNet's ablation switches).

``hmrepro train crcnet --model-args "mask_refine=false;feature_layers=layer3"`` trains Table 2's reduced model; the
text is saved in the run's ``config.json`` and ``hmrepro eval`` builds the same model from it. The format is the
``overrides`` column of the claimed tables. Values: ``true``/``false``, numbers, text; a comma makes a tuple, and an
argument whose default is a tuple always gets one (``feature_layers=layer3`` → ``("layer3",)``).
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import inspect
import sys
from functools import cache
from pathlib import Path
from typing import Any

from ..errors import HmreproError
from .cards import card_of

__all__ = ["constructor_defaults", "model_arguments", "parse_model_args", "recorded_arguments"]

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


def _parameters(model_name: str) -> dict[str, inspect.Parameter]:
    card = card_of(model_name)
    cls = getattr(importlib.import_module(f".{card.module}", __package__), card.class_name)
    return {name: p for name, p in inspect.signature(cls).parameters.items() if name not in RESERVED and name != "self"}


def constructor_defaults(model_name: str) -> dict[str, Any]:
    """Every keyword argument of ``model_name``'s class (``backbone``, ``masking``, ... excepted) with its default.

    Read from the class's source when its module is not imported yet and every default there is a literal (the
    tables read records without importing torch or the model modules); else from the imported class."""
    card = card_of(model_name)
    if f"{__package__}.{card.module}" not in sys.modules:
        declared = _literal_defaults(card.module, card.class_name)
        if declared is not None:
            return dict(declared)
    return {
        name: p.default
        for name, p in _parameters(model_name).items()
        if p.default is not inspect.Parameter.empty and p.kind is not inspect.Parameter.VAR_KEYWORD
    }


@cache
def _literal_defaults(module: str, class_name: str) -> dict[str, Any] | None:
    """The defaults of ``class_name.__init__``'s keyword arguments as written in ``module``'s source, without running
    it: literals, or names the module assigns a literal. None where that is not plain: no ``__init__`` in the class
    body, or any other default."""
    spec = importlib.util.find_spec(f".{module}", __package__)
    if spec is None or not spec.origin:
        return None
    tree = ast.parse(Path(spec.origin).read_text(encoding="utf-8"))
    cls = next((n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == class_name), None)
    init = cls and next((n for n in cls.body if isinstance(n, ast.FunctionDef) and n.name == "__init__"), None)
    if init is None:
        return None
    args = init.args
    positional = [*args.posonlyargs, *args.args]
    nodes = dict(zip([a.arg for a in positional[len(positional) - len(args.defaults) :]], args.defaults, strict=True))
    nodes.update({a.arg: node for a, node in zip(args.kwonlyargs, args.kw_defaults, strict=True) if node is not None})
    constants = {  # the module's top-level NAME = <literal>, for a default written as such a name
        node.targets[0].id: node.value
        for node in tree.body
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)
    }
    try:
        return {
            name: ast.literal_eval(constants.get(node.id, node) if isinstance(node, ast.Name) else node)
            for name, node in nodes.items()
            if name not in RESERVED
        }
    except ValueError:
        return None


def recorded_arguments(model_name: str, text: str) -> dict[str, Any]:
    """Every constructor argument ``model_name`` is built with from ``text`` (its defaults, then ``text``'s), as
    JSON values (tuples as lists): what a result record keeps as ``model_arguments``."""

    def plain(value: Any) -> Any:
        if isinstance(value, (tuple, list)):
            return [plain(v) for v in value]
        return value if value is None or isinstance(value, (bool, int, float, str)) else str(value)

    return {
        key: plain(value)
        for key, value in {**constructor_defaults(model_name), **model_arguments(model_name, text)}.items()
    }


def model_arguments(model_name: str, text: str) -> dict[str, Any]:
    """The keyword arguments ``text`` gives to ``model_name``'s class, checked against its constructor."""
    args = parse_model_args(text)
    if not args:
        return {}
    params = _parameters(model_name)
    unknown = sorted(set(args) - set(params))
    if unknown:
        raise HmreproError(
            f"{model_name} has no argument {', '.join(unknown)}; its arguments are {', '.join(params) or 'none'}"
        )
    for key, value in args.items():
        if isinstance(params[key].default, tuple) and not isinstance(value, tuple):
            args[key] = (value,)
    return args

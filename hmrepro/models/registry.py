"""The model registry: model name → builder function (the feel of timm's ``create_model``, no framework).

A builder takes ``backbone`` and ``pretrained`` (plus any model-specific keywords) and returns an
``nn.Module``. Every model of every card (:mod:`hmrepro.models.cards`) is registered here with a builder that
imports its module lazily, so listing models does not import torch. Other models register with
:func:`register_model`.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from typing import Any

from .cards import ModelCard, ModelCardError, list_cards

__all__ = ["create_model", "list_models", "register_model"]

Builder = Callable[..., Any]

_MODELS: dict[str, Builder] = {}


def register_model(name: str, builder: Builder) -> Builder:
    """Register ``builder`` under ``name``; a name can only be taken once."""
    if name in _MODELS:
        raise ValueError(f"model {name!r} is already registered")
    _MODELS[name] = builder
    return builder


def list_models() -> list[str]:
    """The registered model names, sorted."""
    return sorted(_MODELS)


def create_model(
    name: str, backbone: str = "resnet50", pretrained: bool = True, benchmark: str | None = None, **kwargs: Any
) -> Any:
    """Build model ``name`` on ``backbone``; ``pretrained`` loads the backbone's ImageNet weights.

    ``benchmark`` (``pascal``, ``coco``, ``fss``) reaches only the builders that take it (VAT, whose decoder
    differs per benchmark); for the others it is ignored, so callers may always pass it. Other keywords go to
    the builder as they are.
    """
    try:
        builder = _MODELS[name]
    except KeyError:
        raise ModelCardError(f"unknown model {name!r}; choose one of {', '.join(list_models())}") from None
    if benchmark is not None and "benchmark" in inspect.signature(builder).parameters:
        kwargs["benchmark"] = benchmark
    return builder(backbone=backbone, pretrained=pretrained, **kwargs)


def card_builder(card: ModelCard, name: str) -> Builder:
    """The builder of ``card``'s model ``name`` (imports the model module when called); it refuses a backbone the
    card does not list."""
    masking = card.variants[name]

    def build(backbone: str = "resnet50", pretrained: bool = True, benchmark: str | None = None, **kwargs: Any) -> Any:
        if backbone not in card.backbones:
            raise ModelCardError(
                f"{name} has no {backbone!r} backbone; choose one of {', '.join(card.backbones)} (--backbone)"
            )
        cls = getattr(importlib.import_module(f".{card.module}", __package__), card.class_name)
        if card.needs_benchmark:
            if benchmark is None:
                raise ModelCardError(
                    f"{card.class_name}'s decoder depends on the benchmark: pass benchmark='pascal', 'coco' or "
                    "'fss' to create_model"
                )
            kwargs["benchmark"] = benchmark
        return cls(backbone=backbone, masking=masking, pretrained=pretrained, **kwargs)

    build.__doc__ = f"{card.class_name} with {masking!r} support masking."
    return build


for _card in list_cards():
    for _name in _card.variants:
        register_model(_name, card_builder(_card, _name))

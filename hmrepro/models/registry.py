"""The model registry: model name → builder function (the feel of timm's ``create_model``, no framework).

A builder takes ``backbone`` and ``pretrained`` (plus any model-specific keywords) and returns an
``nn.Module``. Builders import their model lazily, so listing models does not import torch.
New models register with :func:`register_model`.
"""

from __future__ import annotations

from typing import Any, Callable

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


def create_model(name: str, backbone: str = "resnet50", pretrained: bool = True, **kwargs: Any) -> Any:
    """Build model ``name`` on ``backbone``; ``pretrained`` loads the backbone's ImageNet weights."""
    try:
        builder = _MODELS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; choose one of {list_models()}") from None
    return builder(backbone=backbone, pretrained=pretrained, **kwargs)


def _hsnet_builder(masking: str) -> Builder:
    def build(backbone: str = "resnet50", pretrained: bool = True) -> Any:
        from .hsnet import HSNet

        return HSNet(backbone=backbone, masking=masking, pretrained=pretrained)

    build.__doc__ = f"HSNet with {masking!r} support masking."
    return build


HSNET_MASKING_BY_NAME = {
    "hsnet": "fm",
    "hsnet-im": "im",
    "hsnet-hm": "hm",
    "hsnet-hm-add": "hm-add",
    "hsnet-hm-reverse": "hm-reverse",
}

for _name, _masking in HSNET_MASKING_BY_NAME.items():
    register_model(_name, _hsnet_builder(_masking))

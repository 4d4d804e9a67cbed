"""The model registry: model name → builder function (the feel of timm's ``create_model``, no framework).

A builder takes ``backbone`` and ``pretrained`` (plus any model-specific keywords) and returns an
``nn.Module``. Builders import their model lazily, so listing models does not import torch.
New models register with :func:`register_model`.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, Optional

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
    name: str, backbone: str = "resnet50", pretrained: bool = True, benchmark: Optional[str] = None, **kwargs: Any
) -> Any:
    """Build model ``name`` on ``backbone``; ``pretrained`` loads the backbone's ImageNet weights.

    ``benchmark`` (``pascal``, ``coco``, ``fss``) reaches only the builders that take it (VAT, whose decoder
    differs per benchmark); for the others it is ignored, so callers may always pass it. Other keywords go to
    the builder as they are.
    """
    try:
        builder = _MODELS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; choose one of {list_models()}") from None
    if benchmark is not None and "benchmark" in inspect.signature(builder).parameters:
        kwargs["benchmark"] = benchmark
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


def _asnet_builder(masking: str) -> Builder:
    def build(backbone: str = "resnet50", pretrained: bool = True) -> Any:
        from .asnet import ASNet

        return ASNet(backbone=backbone, masking=masking, pretrained=pretrained)

    build.__doc__ = f"ASNet (FS-S) with {masking!r} support masking."
    return build


# ASNet's baseline masks no support features: its mask only masks attention keys (mode "none").
ASNET_MASKING_BY_NAME = {
    "asnet": "none",
    "asnet-im": "im",
    "asnet-hm": "hm",
    "asnet-hm-add": "hm-add",
    "asnet-hm-reverse": "hm-reverse",
}

for _name, _masking in ASNET_MASKING_BY_NAME.items():
    register_model(_name, _asnet_builder(_masking))


def _vat_builder(masking: str) -> Builder:
    def build(
        backbone: str = "resnet50", pretrained: bool = True, benchmark: Optional[str] = None, **kwargs: Any
    ) -> Any:
        from .vat import VAT

        if benchmark is None:
            raise ValueError(
                "VAT's decoder depends on the benchmark: pass benchmark='pascal', 'coco' or 'fss' to create_model"
            )
        return VAT(backbone=backbone, benchmark=benchmark, masking=masking, pretrained=pretrained, **kwargs)

    build.__doc__ = f"VAT with {masking!r} support masking (decoder chosen by ``benchmark``)."
    return build


# The VAT baseline masks features after resizing them to its fixed grids, VAT-HM (and the other modes) at the
# taps' native resolution (hmrepro/models/vat.py).
VAT_MASKING_BY_NAME = {
    "vat": "fm",
    "vat-im": "im",
    "vat-hm": "hm",
    "vat-hm-add": "hm-add",
    "vat-hm-reverse": "hm-reverse",
}

for _name, _masking in VAT_MASKING_BY_NAME.items():
    register_model(_name, _vat_builder(_masking))

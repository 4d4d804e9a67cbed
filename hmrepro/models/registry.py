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


# One family per baseline: its module, class and the baseline's masking mode; each family also registers the
# masking variants of the HM paper under ``<family>-im``, ``-hm``, ``-hm-add`` and ``-hm-reverse``.
# ASNet's baseline masks no support features (its mask only masks attention keys: mode "none"); the VAT
# baseline masks after resizing the taps to its fixed grids, its other modes at native resolution (vat.py).
# VAT's decoder depends on the benchmark, so its builder requires ``benchmark``.
FAMILIES = {
    "hsnet": ("hsnet", "HSNet", "fm", False),
    "asnet": ("asnet", "ASNet", "none", False),
    "vat": ("vat", "VAT", "fm", True),
}
VARIANTS = {"im": "im", "hm": "hm", "hm-add": "hm-add", "hm-reverse": "hm-reverse"}


def masking_by_name(family: str) -> dict[str, str]:
    """Model name → masking mode for one family, e.g. ``{'hsnet': 'fm', 'hsnet-im': 'im', ...}``."""
    baseline = FAMILIES[family][2]
    return {family: baseline, **{f"{family}-{suffix}": mode for suffix, mode in VARIANTS.items()}}


def _builder(family: str, masking: str) -> Builder:
    module, cls_name, _, needs_benchmark = FAMILIES[family]

    def build(
        backbone: str = "resnet50", pretrained: bool = True, benchmark: Optional[str] = None, **kwargs: Any
    ) -> Any:
        import importlib

        cls = getattr(importlib.import_module(f".{module}", __package__), cls_name)
        if needs_benchmark:
            if benchmark is None:
                raise ValueError(
                    f"{cls_name}'s decoder depends on the benchmark: pass benchmark='pascal', 'coco' or 'fss' "
                    "to create_model"
                )
            kwargs["benchmark"] = benchmark
        return cls(backbone=backbone, masking=masking, pretrained=pretrained, **kwargs)

    build.__doc__ = f"{cls_name} with {masking!r} support masking."
    return build


HSNET_MASKING_BY_NAME = masking_by_name("hsnet")
ASNET_MASKING_BY_NAME = masking_by_name("asnet")
VAT_MASKING_BY_NAME = masking_by_name("vat")

for _family in FAMILIES:
    for _name, _masking in masking_by_name(_family).items():
        register_model(_name, _builder(_family, _masking))

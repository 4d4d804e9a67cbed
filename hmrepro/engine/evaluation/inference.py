"""Test-time options of a model (CRCNet's multi-scale testing and K-shot method), applied and recorded.

A model's ``inference_options()`` gives its test-time options and their values (none for most; CRCNet:
``scales``, ``kshot``) and ``set_inference(**options)`` chooses them (the model interface,
:class:`~hmrepro.models.interface.FewShotModel`). ``hmrepro eval --multi-scale --kshot finetune`` passes them here;
every record of such a model says which ones it ran with (``inference``), chosen or default.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ...errors import HmreproError

__all__ = ["MULTI_SCALES", "apply_inference", "inference_fields"]

MULTI_SCALES = (0.75, 1.0, 1.25)
"""The paper's multi-scale testing (CRCNet §5.3): both images at 0.75, 1 and 1.25 of the base size."""


def apply_inference(model: Any, options: Mapping[str, Any] | None, model_name: str) -> None:
    """Set the test-time ``options`` (None or empty: the model's defaults) on ``model``; a model without test-time
    options refuses any."""
    options = {k: v for k, v in (options or {}).items() if v is not None}
    if not options:
        return
    if not model.inference_options():
        flags = ", ".join("--multi-scale" if k == "scales" else f"--{k}" for k in options)
        raise HmreproError(
            f"{flags} applies to models with test-time options (crcnet and its variants), not {model_name}; drop it"
        )
    try:
        model.set_inference(**options)
    except ValueError as err:
        raise HmreproError(f"{model_name}: {err}") from None


def inference_fields(model: Any) -> dict:
    """``{"inference": {"scales": [...], "kshot": ...}}`` for a model with test-time options, else ``{}``."""
    values = dict(model.inference_options())
    if not values:
        return {}
    if "scales" in values:
        values["scales"] = [float(s) for s in values["scales"]]
    return {"inference": values}

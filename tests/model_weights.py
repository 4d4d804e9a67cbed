"""Helpers for parity tests against the authors' fixtures (``../shared/fixtures``).

:func:`fill_params` is the fixtures' deterministic-weights rule (fixtures/README.md): every floating-point
``state_dict`` entry is overwritten from a CPU generator seeded with the CRC-32 of its key name, so the
values depend only on key names and shapes — which is why the models must use the authors' key names.
"""

from __future__ import annotations

import json
import zlib
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = ["fill_params", "fixture_value", "load_fixture"]


@torch.no_grad()
def fill_params(model: nn.Module) -> nn.Module:
    """Overwrite every floating-point state_dict entry (except ``*attn_mask``) by the fixtures' rule; returns model."""
    for name, tensor in model.state_dict().items():
        if not tensor.is_floating_point() or name.endswith("attn_mask"):
            continue
        generator = torch.Generator().manual_seed(zlib.crc32(name.encode()))
        r = torch.randn(tensor.shape, generator=generator, dtype=torch.float32)
        if name.endswith("running_mean"):
            value = 0.1 * r
        elif name.endswith("running_var"):
            value = 1.0 + 0.1 * r.abs()
        elif tensor.dim() >= 2:
            value = r * (1.0 / (tensor.numel() / tensor.shape[0])) ** 0.5
        elif name.endswith("weight"):
            value = 1.0 + 0.1 * r
        elif name.endswith("bias"):
            value = 0.01 * r
        else:
            value = 0.02 * r
        tensor.copy_(value)
    return model


def load_fixture(path: str | Path) -> dict[str, Any]:
    """A fixture file's tensors, with its ``meta`` JSON string decoded into a dict."""
    data = torch.load(path, map_location="cpu", weights_only=True)
    data["meta"] = json.loads(data["meta"]) if "meta" in data else {}
    return data


def fixture_value(data: dict[str, Any], key: str) -> Any:
    """``data[key]``, with a message naming the available keys when it is missing."""
    if key not in data:
        raise KeyError(f"fixture has no {key!r}; it has {sorted(data)}")
    return data[key]

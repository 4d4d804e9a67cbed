"""The progress protocol, kept importable from here for older callers: it lives on the ground floor
(:mod:`hmrepro.progress`) so that every layer, acquisition included, can take one without importing the engine."""

from __future__ import annotations

from ..progress import Progress, Silent

__all__ = ["Progress", "Silent"]

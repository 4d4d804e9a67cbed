"""Public home of the metric: ``from hmrepro.metrics import FewShotMeter``."""

from .engine.evaluation.metrics import FewShotMeter, intersection_union

__all__ = ["FewShotMeter", "intersection_union"]

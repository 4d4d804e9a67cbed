"""Learning-rate schedules of the training engine (recipe key ``lr_schedule``), applied once per iteration.

- ``constant`` (the default; HSNet, VAT, ASNet and their HM variants): the recipe's ``lr`` throughout.
- ``poly`` (PFENet, BAM and so MCE; an option for CRCNet): ``lr = base_lr · (1 − it / max_it) ** poly_power``
  over the whole run, where ``max_it = epochs × iterations per epoch`` and ``it`` counts the iterations done
  *including* the current one (PFENet/BAM's ``current_iter = epoch · len(train_loader) + i + 1``), so the first
  step uses slightly less than ``base_lr`` and the last step uses 0. No warm-up (PFENet's and BAM's default).

The learning rate is a pure function of (iteration, run length): a resumed run recomputes it from the saved
iteration counter and continues on exactly the same curve (this is why ``--epochs`` cannot change on resume
under ``poly``; :func:`hmrepro.engine.training.train_config.resume_config`). Each optimizer parameter group keeps
its own
``base_lr`` (set by :func:`set_base_lr`), so a family could give a group a multiplier; the specs of CRCNet and
MCE use one group for all learnable parameters.
"""

from __future__ import annotations

import torch

from ...errors import HmreproError

__all__ = ["LR_SCHEDULES", "apply_schedule", "check_schedule", "lr_factor", "set_base_lr"]

LR_SCHEDULES = ("constant", "poly")


def check_schedule(name: str, power: float = 0.9) -> None:
    """Refuse an unknown schedule or a negative poly power (the error names the recipe key and the choices)."""
    if name not in LR_SCHEDULES:
        raise HmreproError(f"lr_schedule {name!r} is not one of {', '.join(LR_SCHEDULES)}; set it in the recipe")
    if float(power) < 0:
        raise HmreproError(f"poly_power must not be negative (got {power}); the lineage's value is 0.9")


def lr_factor(schedule: str, iteration: int, max_iterations: int, power: float = 0.9) -> float:
    """The multiplier of the base learning rate for the step that completes ``iteration`` (1-based) of
    ``max_iterations``."""
    check_schedule(schedule, power)
    if schedule == "constant":
        return 1.0
    if max_iterations < 1:
        raise HmreproError(f"the poly schedule needs at least one iteration (got max_iterations={max_iterations})")
    progress = min(max(iteration, 0), max_iterations) / max_iterations
    return (1.0 - progress) ** float(power)


def set_base_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Remember ``lr`` as the base learning rate of every parameter group that has none yet."""
    for group in optimizer.param_groups:
        group.setdefault("base_lr", float(lr))


def apply_schedule(optimizer: torch.optim.Optimizer, factor: float) -> float:
    """Set every group's learning rate to its ``base_lr`` × ``factor``; returns the first group's.

    A group without ``base_lr`` (an optimizer restored from a checkpoint written before schedules existed) takes
    its current learning rate as the base."""
    for group in optimizer.param_groups:
        group["lr"] = group.setdefault("base_lr", group["lr"]) * factor
    return optimizer.param_groups[0]["lr"]

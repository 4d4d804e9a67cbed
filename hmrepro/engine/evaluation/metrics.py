"""The few-shot segmentation metrics, accumulated as the authors' HSNet evaluator does.

Per episode, the intersection and union of background (0) and foreground (1) are computed after setting
ignored pixels (PASCAL's 255 boundaries) to "ignore" in both prediction and ground truth; they are summed
per class over the episodes. Then

- mIoU   = mean over the fold's classes of (foreground intersection / max(union, 1)) × 100 — a class that no
  episode touched counts as IoU 0;
- FB-IoU = mean over {background, foreground} of (intersection / union, both summed over the fold's
  classes) × 100.

The authors accumulate in float32; we accumulate exact integer pixel counts (int64), which differs from
theirs only by float32 rounding (< 1e-5 percentage points on a full benchmark).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch


def intersection_union(
    pred: torch.Tensor, gt: torch.Tensor, ignore: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-episode [2, B] intersection and union of background/foreground pixels (ignored pixels excluded)."""
    pred = pred.round().long()
    gt = gt.round().long()
    if pred.shape != gt.shape:
        raise ValueError(f"prediction {tuple(pred.shape)} and ground truth {tuple(gt.shape)} differ in shape")
    valid = torch.ones_like(gt, dtype=torch.bool) if ignore is None else ignore == 0
    dims = tuple(range(1, gt.dim()))
    inter, union = [], []
    for value in (0, 1):
        p = (pred == value) & valid
        g = (gt == value) & valid
        i = (p & g).sum(dim=dims)
        inter.append(i)
        union.append(p.sum(dim=dims) + g.sum(dim=dims) - i)
    return torch.stack(inter), torch.stack(union)


class FewShotMeter:
    """Accumulates per-class intersections and unions over episodes; ``compute()`` gives (mIoU, FB-IoU) in %.

    ``nclass`` is the size of the class axis (20 PASCAL, 80 COCO, 1000 FSS-1000) and ``eval_class_ids`` the
    classes of the fold being evaluated.
    """

    def __init__(self, nclass: int, eval_class_ids: Sequence[int]):
        self.nclass = int(nclass)
        self.eval_class_ids = torch.as_tensor(list(eval_class_ids), dtype=torch.long)
        if self.eval_class_ids.numel() == 0:
            raise ValueError("eval_class_ids is empty")
        if int(self.eval_class_ids.min()) < 0 or int(self.eval_class_ids.max()) >= self.nclass:
            raise ValueError(f"eval_class_ids must lie in 0..{self.nclass - 1}")
        self.intersection = torch.zeros(2, self.nclass, dtype=torch.long)
        self.union = torch.zeros(2, self.nclass, dtype=torch.long)
        self.episodes = 0

    def update(
        self,
        pred: torch.Tensor,
        gt: torch.Tensor,
        class_id: torch.Tensor | Sequence[int] | int,
        ignore: torch.Tensor | None = None,
    ) -> None:
        """Add a batch: ``pred``/``gt`` [B,H,W] 0/1 (int or float), ``class_id`` [B], ``ignore`` [B,H,W] or None."""
        if pred.dim() == 2:
            pred, gt = pred[None], gt[None]
            ignore = ignore[None] if ignore is not None and ignore.dim() == 2 else ignore
        if ignore is not None and ignore.numel() == 0:
            ignore = None
        inter, union = intersection_union(
            pred.detach().cpu(), gt.detach().cpu(), None if ignore is None else ignore.detach().cpu()
        )
        self.add_counts(inter, union, class_id)

    def add_counts(
        self, inter: torch.Tensor, union: torch.Tensor, class_id: torch.Tensor | Sequence[int] | int
    ) -> None:
        """Add per-episode counts of :func:`intersection_union` ([2, B] each) for the episodes' ``class_id`` [B]."""
        class_id = torch.as_tensor(class_id, dtype=torch.long).reshape(-1).cpu()
        if class_id.numel() != inter.shape[1]:
            raise ValueError(f"{class_id.numel()} class ids for a batch of {inter.shape[1]} episodes")
        self.intersection.index_add_(1, class_id, inter)
        self.union.index_add_(1, class_id, union)
        self.episodes += inter.shape[1]

    def class_iou(self) -> torch.Tensor:
        """Foreground IoU (0..1) of each evaluated class, in ``eval_class_ids`` order."""
        iou = self.intersection[1].double() / self.union[1].clamp(min=1).double()
        return iou[self.eval_class_ids]

    def compute(self) -> tuple[float, float]:
        miou = self.class_iou().mean().item() * 100
        inter = self.intersection[:, self.eval_class_ids].sum(dim=1).double()
        union = self.union[:, self.eval_class_ids].sum(dim=1).double()
        fb_iou = (inter / union.clamp(min=1)).mean().item() * 100
        return miou, fb_iou

    def state_dict(self) -> dict:
        return {"intersection": self.intersection.clone(), "union": self.union.clone(), "episodes": self.episodes}

    def load_state_dict(self, state: dict) -> None:
        """Take the counts of :meth:`state_dict` (e.g. from a checkpoint)."""
        self.intersection.copy_(state["intersection"])
        self.union.copy_(state["union"])
        self.episodes = int(state["episodes"])

    def copy(self) -> FewShotMeter:
        twin = FewShotMeter(self.nclass, self.eval_class_ids.tolist())
        twin.load_state_dict(self.state_dict())
        return twin

    def all_reduce(self, sum_over_processes: Callable[[torch.Tensor], torch.Tensor]) -> None:
        """Replace the counts by their sum over processes; ``sum_over_processes`` sums one int64 tensor (in the
        engine: a ``torch.distributed`` all-reduce). All counts travel in one tensor, one collective call."""
        n = self.intersection.numel()
        flat = torch.cat([self.intersection.flatten(), self.union.flatten(), torch.tensor([self.episodes])])
        flat = sum_over_processes(flat)
        self.intersection.copy_(flat[:n].view_as(self.intersection))
        self.union.copy_(flat[n : 2 * n].view_as(self.union))
        self.episodes = int(flat[-1])

    def merge(self, other: FewShotMeter) -> None:
        """Add another meter's counts (e.g. from another process)."""
        self.intersection += other.intersection
        self.union += other.union
        self.episodes += other.episodes

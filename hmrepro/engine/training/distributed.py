"""Process groups for ``torchrun`` (DistributedDataParallel) and the helpers that hide them when absent.

``torchrun --nproc_per_node N -m hmrepro train ...`` sets ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``; then
:func:`setup` joins the process group (NCCL on CUDA, gloo on the CPU) and picks ``cuda:LOCAL_RANK``. Without
those variables everything runs in one process and the helpers are no-ops.

Sharding: the global batch ``i`` of an epoch is episodes ``[i·B, (i+1)·B)`` of the epoch's list; rank ``r`` takes
every ``W``-th of them starting at ``r`` (:func:`shard`). The global batch is therefore the same for any number of
processes, and the loss is scaled (:func:`loss_scale`) so that DDP's gradient average equals the mean over the
global batch even when the last batch does not split evenly.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

import torch
import torch.distributed as dist

__all__ = [
    "Dist",
    "all_reduce_sum",
    "barrier",
    "broadcast_object",
    "loss_scale",
    "max_replica_difference",
    "setup",
    "shard",
]

T = TypeVar("T")


@dataclass(frozen=True)
class Dist:
    """Where this process stands: rank, world size, device."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def resolve_device(device: str | None, local_rank: int = 0) -> torch.device:
    """``None``/'auto': CUDA if available else CPU; 'cuda' becomes ``cuda:LOCAL_RANK``."""
    if device in (None, "", "auto"):
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            from ...errors import HmreproError

            raise HmreproError(f"--device {device}: CUDA is not available on this machine; use --device cpu")
        if dev.index is None:
            dev = torch.device("cuda", local_rank)
    return dev


def setup(device: str | None = None) -> Dist:
    """Join the ``torchrun`` process group if there is one; returns this process's :class:`Dist`."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device, local_rank)
    if world_size > 1 and not dist.is_initialized():
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo", rank=rank, world_size=world_size)
    return Dist(rank, world_size, local_rank, dev)


def teardown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def shard(batch: Sequence[T], rank: int, world_size: int) -> list[T]:
    """This rank's part of a global batch: elements ``rank, rank + W, ...``."""
    return list(batch[rank::world_size])


def loss_scale(local_count: int, global_count: int, world_size: int) -> float:
    """Factor that turns this rank's mean loss into its share of the global mean under DDP's gradient average."""
    return local_count * world_size / global_count


def all_reduce_sum(tensor: torch.Tensor, d: Dist) -> torch.Tensor:
    """Sum ``tensor`` over processes (in place, returned); a no-op in one process."""
    if d.enabled:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def barrier(d: Dist) -> None:
    if d.enabled:
        dist.barrier()


def broadcast_object(obj, d: Dist):
    """Rank 0's ``obj`` on every rank."""
    if not d.enabled:
        return obj
    holder = [obj]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]


@torch.no_grad()
def max_replica_difference(module: torch.nn.Module, d: Dist) -> float:
    """Largest absolute difference between any rank's trainable parameters and rank 0's (0.0 in one process)."""
    if not d.enabled:
        return 0.0
    params = [p.detach().flatten().float() for p in module.parameters() if p.requires_grad]
    flat = torch.cat(params) if params else torch.zeros(1, device=d.device)
    reference = flat.clone()
    dist.broadcast(reference, src=0)
    diff = (flat - reference).abs().max().reshape(1)
    dist.all_reduce(diff, op=dist.ReduceOp.MAX)
    return float(diff.item())

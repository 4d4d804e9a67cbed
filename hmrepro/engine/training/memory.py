"""Peak memory of a block of work, on a CPU or a CUDA device (what ``hmrepro bench`` reports).

- CUDA: ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats`` (tensors only, not the caching
  allocator's reserve nor the CUDA context).
- CPU on Linux: the process's peak resident set (``VmHWM`` in ``/proc/self/status``), reset at the start of the block
  by writing 5 to ``/proc/self/clear_refs``, after glibc's ``malloc_trim`` has handed freed heap pages back so that
  memory kept from earlier work does not hide the block's own. Everything the process touches counts (tensors,
  allocator slack, libraries' buffers), which is what the machine has to provide.
- Elsewhere (another OS, or a /proc that cannot be written): ``ru_maxrss``, the peak since the process started,
  which cannot be reset; :attr:`PeakMemory.method` says so.

``increase_mib`` is the peak minus the memory in use when the block started: what the block itself needed.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import math
import resource
import sys
from pathlib import Path

import torch

from ...errors import HmreproError

__all__ = ["BatchTooLarge", "PeakMemory", "check_batch_fits", "free_memory_mib"]

MIB = 1024 * 1024
_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def _status_mib(field: str) -> float | None:
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024 / MIB  # kB
    except OSError:
        return None
    return None


def _trim_heap() -> None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _reset_peak_rss() -> bool:
    try:
        _CLEAR_REFS.write_text("5")
    except OSError:
        return False
    return _status_mib("VmHWM") is not None


def _max_rss_mib() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / MIB if sys.platform == "darwin" else peak * 1024 / MIB  # bytes on macOS, kB elsewhere


class PeakMemory:
    """``with PeakMemory(device) as mem: work()`` → ``mem.peak_mib``, ``mem.base_mib``, ``mem.increase_mib``,
    ``mem.method``."""

    def __init__(self, device: torch.device | str) -> None:
        self.device = torch.device(device)
        self.method = ""
        self.base_mib = 0.0
        self.peak_mib = 0.0
        self.phase_peaks_mib: list[float] = []

    @property
    def increase_mib(self) -> float:
        return max(self.peak_mib - self.base_mib, 0.0)

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.method = "torch.cuda.max_memory_allocated"
            self.base_mib = torch.cuda.memory_allocated(self.device) / MIB
            return self
        _trim_heap()
        if _reset_peak_rss():
            self.method = "peak resident set (VmHWM, reset at the start)"
            self.base_mib = _status_mib("VmRSS") or 0.0
        else:
            self.method = "ru_maxrss (peak since the process started: cannot be reset here)"
            self.base_mib = _max_rss_mib()
        return self

    def _peak_so_far(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            return torch.cuda.max_memory_allocated(self.device) / MIB
        if self.method.startswith("peak resident"):
            return _status_mib("VmHWM") or 0.0
        return _max_rss_mib()

    def next_phase(self) -> None:
        """End a phase of the block: its peak is appended to ``phase_peaks_mib`` and the peak counter is reset, so
        that the next phase's peak is its own (``peak_mib`` stays the whole block's: the largest phase's). Where the
        peak cannot be reset (``ru_maxrss``) every later phase reports at least the earlier ones' peak."""
        self.phase_peaks_mib.append(self._peak_so_far())
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        elif self.method.startswith("peak resident"):
            _trim_heap()  # the pages the phase freed go back first, as at the start of the block
            _reset_peak_rss()

    def __exit__(self, *exc) -> None:
        self.phase_peaks_mib.append(self._peak_so_far())
        self.peak_mib = max(self.phase_peaks_mib)

    def as_dict(self, prefix: str = "peak_memory") -> dict:
        """Record fields: ``<prefix>_mib``, ``<prefix>_increase_mib``, ``<prefix>_method``."""
        return {
            f"{prefix}_mib": round(self.peak_mib, 1),
            f"{prefix}_increase_mib": round(self.increase_mib, 1),
            f"{prefix}_method": self.method,
        }


class BatchTooLarge(HmreproError):
    """The training batch would not fit the memory the machine has free."""


def free_memory_mib(device: torch.device | str) -> float | None:
    """Memory free for new allocations: ``MemAvailable`` of ``/proc/meminfo`` on a CPU, the device's free memory on
    CUDA (``torch.cuda.mem_get_info``); ``None`` where it cannot be read."""
    device = torch.device(device)
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return free / MIB
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024 / MIB  # kB
    except (OSError, ValueError, IndexError):
        return None
    return None


def check_batch_fits(
    per_sample_mib: float,
    free_mib: float | None,
    *,
    bsz: int,
    world_size: int,
    device_type: str,
    img_size: int,
    how: str,
) -> str | None:
    """Refuse (``BatchTooLarge``) a training batch whose estimated memory exceeds the free memory.

    The estimate is ``per_sample_mib`` (measured: ``how``) times the samples each process holds. One process: a
    batch that does not fit is an error naming the largest that does. Several processes (DDP): a warning, returned
    as text — on a CPU the processes share the machine's memory (per process x processes), on CUDA each has its
    own device. ``None`` when it fits or nothing can be said.
    """
    if free_mib is None or per_sample_mib <= 0:
        return None
    local = math.ceil(bsz / world_size)
    sharing = world_size if device_type == "cpu" else 1
    need = per_sample_mib * local * sharing
    if need <= free_mib:
        return None
    fits = int(free_mib // (per_sample_mib * sharing)) * world_size
    gib = 1024.0
    said = (
        f"--bsz {bsz} needs about {need / gib:.1f} GiB for training at {img_size} px "
        f"({per_sample_mib / gib:.2f} GiB per sample, {how}"
        + (f"; {local} per process x {world_size} processes" if world_size > 1 else "")
        + f"), {free_mib / gib:.1f} GiB are free"
    )
    advice = f"--bsz {fits} fits" if fits >= 1 else "not even --bsz 1 fits: a smaller --img-size or a larger machine"
    if world_size > 1:
        return f"{said}; {advice} (a warning under DDP: the processes may be killed for memory)"
    raise BatchTooLarge(f"{said}; {advice} (--no-memory-check skips this check)")

"""Peak memory of HSNet-HM / ASNet-HM episodes, the authors' code against hmrepro's, each side in a fresh process.

Per episode, two numbers at once: the process's peak resident set above the start (hmrepro's ``PeakMemory``: VmHWM
reset after ``malloc_trim``), and the peak of **live tensor bytes** from ``torch.profiler(profile_memory=True)``:
every allocation and free of torch's CPU allocator in time order, summed; the peak of that running sum is what
the tensors alone need, whatever glibc and oneDNN keep on top. Episodes 1 (cold: the process's first) .. N (warm).

Usage: python memory_live_peak.py MODEL SIDE SHOTS [EPISODES]   (MODEL hsnet-hm|asnet-hm, SIDE authors|hmrepro);
without arguments both sides of hsnet-hm and asnet-hm at 1, then 5 shots, 2 episodes each, each in a child process.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

REPO = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(REPO / "benchmarks"), str(REPO / "tests"), str(REPO)]


def live_peak_mib(prof) -> float:
    """Peak of the running sum of torch's CPU allocations minus frees during the profile (MiB above its start)."""
    events = sorted((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events() if e.name() == "[memory]")
    live = peak = 0
    for _, nbytes in events:
        live += nbytes
        peak = max(peak, live)
    return peak / 2**20


def child(name: str, side: str, shots: int, episodes: int) -> dict:
    import side_by_side as sbs
    from model_weights import fill_params

    import hmrepro
    from hmrepro.engine.training.memory import PeakMemory

    torch.set_num_threads(2)
    family, hm = name.split("-")[0], name.endswith("-hm")
    if side == "authors":
        model = fill_params(sbs.build_authors(family, hm, sbs.DEFAULT_AUTHORS, "resnet50", "pascal")).eval()
    else:
        model = fill_params(hmrepro.create_model(name, pretrained=False)).eval()
    batch, _ = sbs.make_inputs(400, shots, 1, sbs.DEFAULT_FIXTURES, "cpu")
    rows = []
    for episode in range(episodes):
        with PeakMemory("cpu") as mem, profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            sbs._eval_call(model, side == "authors", batch, shots)
        live = live_peak_mib(prof)
        rows.append(
            {"episode": episode, "rss_increase_mib": round(mem.increase_mib, 1), "live_tensor_peak_mib": round(live, 1)}
        )
    return {"model": name, "side": side, "shots": shots, "episodes": rows}


def main() -> int:
    if len(sys.argv) > 1:
        name, side, shots = sys.argv[1], sys.argv[2], int(sys.argv[3])
        episodes = int(sys.argv[4]) if len(sys.argv) > 4 else 3
        print("RESULT " + json.dumps(child(name, side, shots, episodes)), flush=True)
        return 0
    for name, shots in (("hsnet-hm", 1), ("asnet-hm", 1), ("hsnet-hm", 5), ("asnet-hm", 5)):
        for side in ("authors", "hmrepro"):
            out = subprocess.run(
                [sys.executable, __file__, name, side, str(shots), "2"], capture_output=True, text=True, check=True
            ).stdout
            print(json.dumps(json.loads(out.split("RESULT ", 1)[1])), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Where hmrepro's 1-shot episode memory goes (CPU, 400 px): peak RSS increase per stage, cold and warm.

Usage: python memory_stages.py MODEL (hsnet, hsnet-hm); phases: query taps, support taps, logits_from_taps
(correlation + learner), after ``del``; then ``predict_nshot`` whole. MiB above the resident set at the start.
"""

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
import hmrepro
from hmrepro.engine.benchmarking.bench_model import episode_inputs
from hmrepro.engine.training.memory import PeakMemory

torch.set_num_threads(2)
name = sys.argv[1]
model = hmrepro.create_model(name, pretrained=False).eval()
q, s, m = episode_inputs(400, 1, 1, "cpu")
for label in ("cold", "warm"):
    with torch.no_grad(), PeakMemory("cpu") as mem:
        qt = model.query_taps(q)
        mem.next_phase()
        st = model.support_taps(s[:, 0], m[:, 0])
        mem.next_phase()
        logits = model.logits_from_taps(qt, st, (400, 400))
        mem.next_phase()
        del qt, st, logits
    with torch.no_grad(), PeakMemory("cpu") as whole:
        model.predict_nshot(q, s, m)
    phases = [round(p - mem.base_mib) for p in mem.phase_peaks_mib]
    result = {"base": round(mem.base_mib), "phases": phases, "predict_nshot_increase": round(whole.increase_mib)}
    print(name, label, result, flush=True)

"""Replay mechanism of tests/test_vat_parity.py: the replayed second model gives the very tensors of a full pass."""

import contextlib
import sys
import time

import torch

sys.path.insert(0, "tests")  # run from the repository root
import test_vat_parity as T
from model_weights import fill_params

from hmrepro import create_model

g = torch.Generator().manual_seed(0)
side, shots = 64, 2
q = torch.randn(1, 3, side, side, generator=g)
s = torch.randn(1, shots, 3, side, side, generator=g)
m = (torch.rand(1, shots, side, side, generator=g) > 0.5).float()


def build(bench):
    return fill_params(create_model("vat-hm", backbone="resnet50", benchmark=bench, pretrained=False)).eval()


def run(model, ctx):
    out = []
    h = model.hpn_learner.register_forward_hook(lambda mod, a, o: out.append(o))
    c = time.process_time()
    with ctx, torch.no_grad():
        votes = model.predict_nshot(q, s, m)
    h.remove()
    return votes, out, time.process_time() - c


first, second = build("pascal"), build("fss")
record = {}
v1, _, t_rec = run(first, T._record_shared(first, record))
shared_a, shared_b = T._shared_part(first, "x"), T._shared_part(second, "x")
assert T._same_shared_part(shared_a, shared_b)
assert not T._same_shared_part(shared_a, T._shared_part(build("coco"), "y"))  # other inputs: no sharing
v_replay, out_replay, t_rep = run(second, T._replay_shared(second, record))
v_full, out_full, t_full = run(second, contextlib.nullcontext())
print("record", t_rec, "replay", t_rep, "full", t_full)
assert torch.equal(v_replay, v_full)
assert all(torch.equal(a, b) for a, b in zip(out_replay, out_full, strict=True)), [
    (a - b).abs().max().item() for a, b in zip(out_replay, out_full)
]
assert not hasattr(second, "query_taps") or "query_taps" not in second.__dict__
print("replay identical to the full pass:", len(out_full), "shots")

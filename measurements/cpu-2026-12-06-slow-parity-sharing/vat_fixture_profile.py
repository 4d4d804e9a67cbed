import sys
import time

import torch

sys.path.insert(0, "tests")  # run from the repository root
from helpers import FIXTURES, reuse_freed_memory
from model_weights import fill_params, load_fixture

import hmrepro.models.vat as V
from hmrepro import create_model

T = {}


def wrap(obj, name, label):
    f = getattr(obj, name)

    def g(*a, **k):
        t = time.perf_counter()
        c = time.process_time()
        r = f(*a, **k)
        T.setdefault(label, [0, 0, 0])
        T[label][0] += time.perf_counter() - t
        T[label][1] += time.process_time() - c
        T[label][2] += 1
        return r

    setattr(obj, name, g)


with reuse_freed_memory():
    t0 = time.process_time()
    exp = load_fixture(FIXTURES / "model_vat-hm_resnet50.pt")
    inputs = load_fixture(FIXTURES / "inputs_473.pt")
    print("load", time.process_time() - t0)
    t0 = time.process_time()
    m = create_model("vat-hm", backbone="resnet50", benchmark="pascal", pretrained=False)
    print("build", time.process_time() - t0)
    t0 = time.process_time()
    m = fill_params(m).eval()
    print("fill", time.process_time() - t0)
    wrap(m.backbone, "taps", "backbone")
    wrap(V, "hypercorrelation_pyramid", "corr")
    ours = m.hpn_learner.ours
    for i in range(3):
        wrap(ours.encoders[i], "forward", f"enc{i}")
    for i in range(3):
        wrap(ours.transformer[i], "forward", f"tr{i}")
    for i in range(3):
        wrap(ours.swin_decoder[i], "forward", f"dec{i}")
    wrap(m.hpn_learner, "forward", "learner")
    t0 = time.process_time()
    w0 = time.perf_counter()
    with torch.no_grad():
        votes = m.predict_nshot(inputs["query_img"], inputs["support_imgs"], inputs["support_masks"].float())
    print("nshot cpu", time.process_time() - t0, "wall", time.perf_counter() - w0)
    for k, v in T.items():
        print(k, [f"{x:.2f}" for x in v])

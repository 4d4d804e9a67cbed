"""torch.profiler (profile_memory) of one warm 1-shot forward of the authors' HSNet and hmrepro's (400 px, CPU).

Usage (repository root, the authors' code exported by benchmarks/side_by_side.py): python THIS fm|hm. The table's
memory columns are bytes allocated per op summed over the forward, not peaks.
"""

import sys
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

REPO = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(REPO / "benchmarks"), str(REPO / "tests"), str(REPO)]
import side_by_side as sbs  # noqa: E402
from model_weights import fill_params  # noqa: E402

import hmrepro  # noqa: E402

torch.set_num_threads(2)
hm = sys.argv[1] == "hm"
theirs = fill_params(sbs.build_authors("hsnet", hm, REPO / "benchmarks/.authors", "resnet50", "pascal")).eval()
ours = hmrepro.create_model("hsnet-hm" if hm else "hsnet", pretrained=False).eval()
ours.load_state_dict(theirs.state_dict(), strict=False)
batch, _ = sbs.make_inputs(400, 1, 1, REPO.parent / "shared/fixtures", "cpu")
q, s, m = batch["query_img"], batch["support_imgs"][:, 0], batch["support_masks"][:, 0]
for name, model in (("authors", theirs), ("hmrepro", ours)):
    with torch.no_grad():
        model(q, s, m)
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            model(q, s, m)
    print("=====", name, flush=True)
    print(prof.key_averages().table(sort_by="self_cpu_memory_usage", row_limit=14, max_name_column_width=40))

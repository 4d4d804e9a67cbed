"""Peak memory of the two branches of HSNet's first centre-pivot 4D conv on a 400 px layer2 correlation (CPU)."""

import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from hmrepro.engine.training.memory import PeakMemory

torch.set_num_threads(2)
x = torch.rand(1, 4, 50, 50, 50, 50)
w, b = torch.randn(16, 4, 3, 3), torch.randn(16)


def conv3d():  # hmrepro's support branch (conv_over_support_dims)
    return F.conv3d(x.reshape(1, 4, 2500, 50, 50), w.unsqueeze(2), b, stride=(1, 4, 4), padding=(0, 1, 1))


def permuted():  # the authors' support branch: permute, contiguous copy, conv2d
    planes = x.permute(0, 2, 3, 1, 4, 5).reshape(2500, 4, 50, 50)
    return F.conv2d(planes, w, b, stride=4, padding=1)


def pruned_query():  # the query branch on the subsampled support dims
    planes = x[..., ::4, ::4].permute(0, 4, 5, 1, 2, 3).reshape(169, 4, 50, 50)
    return F.conv2d(planes, w, b, padding=1)


BRANCHES = {
    "conv3d (hmrepro support branch)": conv3d,
    "permute+conv2d (authors' support branch)": permuted,
    "query branch": pruned_query,
}
with torch.no_grad():
    for rep in range(2):
        for name, fn in BRANCHES.items():
            with PeakMemory("cpu") as mem:
                out = fn()
                del out
            print(rep, name, round(mem.increase_mib), "MiB above", round(mem.base_mib), flush=True)

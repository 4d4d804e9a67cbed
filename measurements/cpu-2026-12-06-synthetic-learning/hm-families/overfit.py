"""Diagnosis: can the family's learner fit a few fixed synthetic episodes? (taps cached; the backbone is frozen)."""
import sys, time, resource, torch, hmrepro
from hmrepro.data.benchmarks import get_benchmark, test_episodes
from hmrepro.data.dataset import EpisodeDataset
from hmrepro.data.splits import SplitFolder
from hmrepro.engine.training.train import calibrate_batchnorm
from pathlib import Path
name, bench_name, size, n, steps, lr = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), float(sys.argv[6])
root = Path("/tmp/l5/syn"); splits = SplitFolder(root / "splits")
def cpu(): r = resource.getrusage(resource.RUSAGE_SELF); return r.ru_utime + r.ru_stime
torch.manual_seed(0)
kw = {"benchmark": bench_name} if name.startswith("vat") else {}
m = hmrepro.create_model(name, backbone="resnet50", pretrained=False, **kw)
prep = "vat" if name.startswith("vat") else "hsnet"
bench = get_benchmark(bench_name)
eps = test_episodes(bench_name, 0, 1, split="val", splits=splits)[:n]
data = EpisodeDataset(bench, root, eps, img_size=size, preprocess=prep)
items = [data[i] for i in range(n)]
q = torch.stack([it["query_img"] for it in items]); s = torch.stack([it["support_imgs"][0] for it in items])
sm = torch.stack([it["support_masks"][0] for it in items]).float(); qm = torch.stack([it["query_mask"] for it in items]).long()
calibrate_batchnorm(m.backbone, torch.cat([q, s]))
m.train()
qt, st = m.query_taps(q), m.support_taps(s, sm)
def logits():
    if name.startswith("asnet"): return m.logits_from_taps(qt, st, sm, (size, size))
    return m.logits_from_taps(qt, st, (size, size))
def fg_iou():
    m.eval()
    with torch.no_grad(): lg = logits()
    m.train(); t = qm == 1; p = lg.argmax(1) == 1
    score = (lg[:, 1] - lg[:, 0])
    fg, bg = score[t], score[~t]
    # AUC: probability that a random fg pixel scores above a random bg pixel (ranking, bias-free)
    ranks = torch.cat([fg, bg]).argsort().argsort().float() + 1
    auc = float((ranks[: fg.numel()].sum() - fg.numel() * (fg.numel() + 1) / 2) / (fg.numel() * bg.numel()))
    return round(float((p & t).sum() / (p | t).sum().clamp(min=1)), 3), round(float(p.float().mean()), 3), round(auc, 3)
opt = torch.optim.Adam([p for p in m.parameters() if p.requires_grad], lr=lr)
c0 = cpu(); print("before", fg_iou(), flush=True)
for step in range(steps):
    loss = m.compute_objective(logits(), {"query_mask": qm}); opt.zero_grad(); loss.backward(); opt.step()
    print(step, f"loss {loss.item():.3f}", "iou/fgshare/auc", fg_iou(), f"cpu {cpu()-c0:.0f}", flush=True)

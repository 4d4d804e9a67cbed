"""Diagnosis: does the family's learner learn from a few training episodes, scored on held-out val-class episodes?
Backbone taps cached (the backbone is frozen and runs under no_grad: caching changes no gradient)."""
import sys, resource, torch, hmrepro
from pathlib import Path
from hmrepro.data.benchmarks import get_benchmark, test_episodes
from hmrepro.data.dataset import EpisodeDataset
from hmrepro.data.episodes import training_episodes
from hmrepro.data.splits import SplitFolder
from hmrepro.engine.training.train import calibrate_batchnorm
name, bname, size, ntr, nev, steps, lr = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6]), float(sys.argv[7])
root = Path(sys.argv[8] if len(sys.argv) > 8 else "/tmp/l5/syn"); splits = SplitFolder(root / "splits")
def cpu(): r = resource.getrusage(resource.RUSAGE_SELF); return r.ru_utime + r.ru_stime
torch.manual_seed(0)
m = hmrepro.create_model(name, backbone="resnet50", pretrained=False, **({"benchmark": bname} if name.startswith("vat") else {}))
bench = get_benchmark(bname); prep = "vat" if name.startswith("vat") else "hsnet"
def load(eps):
    d = EpisodeDataset(bench, root, eps, img_size=size, preprocess=prep); it = [d[i] for i in range(len(d))]
    return (torch.stack([x["query_img"] for x in it]), torch.stack([x["support_imgs"][0] for x in it]),
            torch.stack([x["support_masks"][0] for x in it]).float(), torch.stack([x["query_mask"] for x in it]).long())
tr = load(training_episodes(bench.pool(splits, "trn", 0), 1, 0, 0)[:ntr])
ev = load(test_episodes(bname, 0, 1, split="val", splits=splits)[:nev])
calibrate_batchnorm(m.backbone, torch.cat([tr[0], tr[1], ev[0], ev[1]]))
m.train()
def taps(d): return m.query_taps(d[0]), m.support_taps(d[1], d[2])
ttr, tev = taps(tr), taps(ev)
def logits(t, d):
    if name.startswith("asnet"): return m.logits_from_taps(t[0], t[1], d[2], (size, size))
    return m.logits_from_taps(t[0], t[1], (size, size))
def score(t, d):
    m.eval()
    with torch.no_grad(): lg = logits(t, d)
    m.train(); truth = d[3] == 1; p = lg.argmax(1) == 1; s = lg[:, 1] - lg[:, 0]
    aucs = []
    for i in range(len(s)):
        fg, bg = s[i][truth[i]], s[i][~truth[i]]
        r = torch.cat([fg, bg]).argsort().argsort().float() + 1
        aucs.append(float((r[: fg.numel()].sum() - fg.numel() * (fg.numel() + 1) / 2) / (fg.numel() * bg.numel())))
    return round(float((p & truth).sum() / (p | truth).sum().clamp(min=1)), 3), round(float(p.float().mean()), 3), round(sum(aucs) / len(aucs), 3)
opt = torch.optim.Adam([p for p in m.parameters() if p.requires_grad], lr=lr)
c0 = cpu(); print("before train(iou,fgshare,auc)", score(ttr, tr), "held-out", score(tev, ev), flush=True)
for step in range(steps):
    loss = m.compute_objective(logits(ttr, tr), {"query_mask": tr[3]}); opt.zero_grad(); loss.backward(); opt.step()
    print(step, f"loss {loss.item():.3f}", "train", score(ttr, tr), "held-out", score(tev, ev), f"cpu {cpu()-c0:.0f}", flush=True)

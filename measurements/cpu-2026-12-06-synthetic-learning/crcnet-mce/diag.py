"""Diagnostic (issue 23): the engine's own training loop (setup_run, train_step, validate_epoch) on the synthetic
FSS-like split, printing per epoch the mean loss, the training batches' predicted foreground share, validation mIoU
(for CRCNet also with T = 1) and per-module gradient norms; "verbose": 1 prints every iteration.

Usage: SYN=<synthetic root> .venv/bin/python diag.py MODEL 'JSON recipe overrides (build_config keys)'
"""
import os, sys, time, json, resource
from contextlib import ExitStack
import torch
from hmrepro.engine.training.train_config import build_config
from hmrepro.engine.training import train as T
from hmrepro.engine.training import distributed, schedules
from hmrepro.models.interface import logits_of
from hmrepro.progress import Silent

model = sys.argv[1]
over = json.loads(sys.argv[2]); verbose = over.pop("verbose", 0); over_v = verbose
epochs = over.get("epochs", 4)
base = {"pretrained": False, "img_size": 64, "workers": 0, "seed": 0, "checkpoint_every": 0, "device": "cpu",
        "data_root": os.environ.get("SYN", "/tmp/e5/syn"), "splits": os.environ.get("SYN", "/tmp/e5/syn") + "/splits", "out": f"/tmp/diagruns/{time.time_ns()}"}
base.update(over)
bench = base.pop("benchmark", "fss")
cfg = build_config(model, bench, 0, base)
d = distributed.setup("cpu")
with ExitStack() as hold:
    run = T.setup_run(cfg, d, resume=False, progress=Silent(), hold=hold, memory_check=False)
    print("config lr", run.config.lr, "bsz", run.config.bsz, "opt", run.config.optimizer, "sched", run.config.lr_schedule, flush=True)
    model_ = run.model
    groups = {}
    for n, p in model_.named_parameters():
        if p.requires_grad:
            groups.setdefault(n.split(".")[0], []).append(p)
    while run.state.epoch < cfg.epochs:
        stop = T._StopFlag()
        session = T._Session(run, False)
        # one epoch via our own loop for stats
        episodes = T.epoch_episodes(run.config, run.data, run.state.epoch)
        batches = T.global_batches(len(episodes), run.config.bsz, 1)
        if run.config.epoch_iterations > 0:
            batches = batches[: run.config.epoch_iterations]
        run.data.sampler.batches = [[(run.state.epoch, i, episodes[i]) for i in b] for b in batches]
        losses, fgfrac = [], []
        gn = {k: 0.0 for k in groups}
        for step, batch in enumerate(run.data.train_loader):
            torch.manual_seed(T.iteration_seed(run.config.seed, 0, run.state.global_iter))
            factor = schedules.lr_factor(run.config.lr_schedule, run.state.global_iter + 1, run.config.epochs * len(batches), run.config.poly_power)
            schedules.apply_schedule(run.optimizer, factor)
            loss, out = T.train_step(run.model, batch, run.optimizer, shot=run.config.shot)
            for k, ps in groups.items():
                gn[k] += sum(float(p.grad.norm() ** 2) for p in ps if p.grad is not None) ** 0.5
            losses.append(loss.item())
            fgfrac.append(float((logits_of(out).argmax(1) == 1).float().mean()))
            run.state.global_iter += 1
            if over_v:
                lg = logits_of(out).detach()
                print(f"  it {run.state.global_iter} loss {loss.item():.3f} fg {fgfrac[-1]:.2f} margin {float((lg[:,1]-lg[:,0]).abs().mean()):.2f}", flush=True)
        row = T.validate_epoch(run, Silent())
        extra = ""
        if hasattr(run.model, "refine"):
            steps = run.model.refine.steps
            run.model.refine.steps = 1
            r1 = T.validate_epoch(run, Silent())
            run.model.refine.steps = steps
            extra = f" [T=1: {r1['val_miou']:.1f} FB {r1['val_fb_iou']:.1f}]"
        ru = resource.getrusage(resource.RUSAGE_SELF)
        print(f"ep {run.state.epoch} loss {sum(losses)/len(losses):.4f} trn-fg {sum(fgfrac)/len(fgfrac):.3f} "
              f"val mIoU {row['val_miou']:.1f} FB {row['val_fb_iou']:.1f}{extra} cpu {ru.ru_utime+ru.ru_stime:.0f}s "
              + " ".join(f"{k}:{v/len(losses):.2e}" for k, v in gn.items()), flush=True)
        run.state.epoch += 1

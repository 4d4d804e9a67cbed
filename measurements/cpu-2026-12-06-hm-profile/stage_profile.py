"""Where a K-shot HSNet-HM / ASNet-HM episode's time goes, hmrepro against the authors' code (CPU, 400 px).

Both models of ``benchmarks/side_by_side.py``'s pair (the authors' code exported into benchmarks/.authors, the
fixtures' weights and inputs) run ``--repeats`` interleaved episodes of each shot count; every stage is timed by a
wrapper (wall and process CPU seconds, exclusive of the stages nested inside it):

- authors: ``extract_feats`` call 1 / 2 / 3 of each 1-shot forward = backbone query / support / masked support,
  ``Correlation.multilayer_correlation``, the learner; "other" = the rest of the episode (FM masking, the HM merge,
  the input masking, the resize of the logits, the vote);
- hmrepro: ``query_taps`` (backbone query, once per episode), ``backbone.taps`` inside ``support_taps`` (plain and
  input-masked support in one batch), the rest of ``support_taps`` (FM, HM merge; ASNet: pooling), the correlation
  (``hypercorrelation_pyramid``), the learner; "other" as above.

Usage: python stage_profile.py [--models hsnet-hm,asnet-hm] [--shots 1,5] [--repeats 3] [--json OUT]
Prints the median per stage (seconds per episode), wall and CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import types
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "benchmarks"))
sys.path.insert(0, str(REPO))
import side_by_side as sbs  # noqa: E402


class StageClock:
    """Exclusive wall / CPU seconds per stage name, nested stages subtracted from their parent."""

    def __init__(self) -> None:
        self.totals: dict[str, list[float]] = {}
        self.stack: list[list] = []

    def wrap(self, name, fn):
        def timed(*args, **kwargs):
            label = name(*args) if callable(name) else name
            frame = [label, time.perf_counter(), time.process_time(), 0.0, 0.0]
            self.stack.append(frame)
            try:
                return fn(*args, **kwargs)
            finally:
                self.stack.pop()
                wall, cpu = time.perf_counter() - frame[1], time.process_time() - frame[2]
                tot = self.totals.setdefault(label, [0.0, 0.0])
                tot[0] += wall - frame[3]
                tot[1] += cpu - frame[4]
                if self.stack:
                    self.stack[-1][3] += wall
                    self.stack[-1][4] += cpu

        return timed

    def episode(self, fn):
        self.totals = {}
        w0, c0 = time.perf_counter(), time.process_time()
        fn()
        wall, cpu = time.perf_counter() - w0, time.process_time() - c0
        out = dict(self.totals)
        out["other"] = [wall - sum(v[0] for v in out.values()), cpu - sum(v[1] for v in out.values())]
        out["total"] = [wall, cpu]
        return out


def instrument_authors(model, clock: StageClock) -> None:
    calls = {"n": 0}
    names = ["backbone query", "backbone support (plain)", "backbone support (masked)"]
    extract = model.extract_feats

    def labelled_extract(*args, **kwargs):
        label = names[calls["n"] % 3]
        calls["n"] += 1
        return clock.wrap(label, extract)(*args, **kwargs)

    model.extract_feats = labelled_extract
    corr_cls = model.forward.__func__.__globals__["Correlation"]
    corr = corr_cls.multilayer_correlation
    corr_cls.multilayer_correlation = staticmethod(clock.wrap("correlation", corr))
    learner = model.hpn_learner if hasattr(model, "hpn_learner") else model.learner
    learner.forward = clock.wrap("learner", learner.forward)


def instrument_hmrepro(model, clock: StageClock) -> None:
    import hmrepro.models.asnet as asnet_mod
    import hmrepro.models.hsnet as hsnet_mod

    model.query_taps = clock.wrap("query", model.query_taps)
    model.support_taps = clock.wrap("support masking (FM, HM merge, pooling)", model.support_taps)
    taps = model.backbone.taps

    def backbone_taps(images):
        if any(f[0].startswith("support masking") for f in clock.stack):
            label = "backbone supports (plain+masked, one batch)"
        else:
            label = "backbone query" if any(f[0] == "query" for f in clock.stack) else "backbone (other)"
        return clock.wrap(label, taps)(images)

    model.backbone.taps = backbone_taps
    for mod in (hsnet_mod, asnet_mod):
        mod.hypercorrelation_pyramid = clock.wrap("correlation", mod.hypercorrelation_pyramid)
    learner = model.hpn_learner if hasattr(model, "hpn_learner") else model.learner
    learner.forward = clock.wrap("learner", learner.forward)


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--models", default="hsnet-hm,asnet-hm")
    p.add_argument("--shots", default="1,5")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", type=Path)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    args = types.SimpleNamespace(
        authors=sbs.DEFAULT_AUTHORS, backbone="resnet50", benchmark="pascal", device="cpu", sizes=sbs.DEFAULT_SIZES
    )
    report = {"load_start": os.getloadavg(), "threads": a.threads, "rows": []}
    for name in a.models.split(","):
        family, hm = name.split("-")[0], name.endswith("-hm")
        theirs, ours = sbs.build_pair(family, hm, args)
        clock = StageClock()
        instrument_authors(theirs, clock)
        instrument_hmrepro(ours, clock)
        batch, _ = sbs.make_inputs(400, 5, 1, sbs.DEFAULT_FIXTURES, "cpu")
        for side, model in (("authors", theirs), ("hmrepro", ours)):  # warm-up
            sbs._eval_call(model, side == "authors", batch, 1)
        for shot in [int(s) for s in a.shots.split(",")]:
            runs = {"authors": [], "hmrepro": []}
            for r in range(a.repeats):
                for side in ("authors", "hmrepro") if r % 2 == 0 else ("hmrepro", "authors"):
                    model = theirs if side == "authors" else ours
                    runs[side].append(
                        clock.episode(lambda m=model, s=side, k=shot, b=batch: sbs._eval_call(m, s == "authors", b, k))
                    )
            for side, eps in runs.items():
                stages = sorted({k for e in eps for k in e}, key=lambda k: (k == "total", k == "other", k))
                med = {k: [statistics.median(e.get(k, [0, 0])[i] for e in eps) for i in (0, 1)] for k in stages}
                report["rows"].append({"model": name, "shot": shot, "side": side, "median_s": med})
                print(f"{name} {shot}-shot {side} (median of {a.repeats}; wall / CPU s per episode)")
                for k in stages:
                    print(f"  {k:45s} {med[k][0]:7.3f} {med[k][1]:7.3f}")
            sys.stdout.flush()
        del theirs, ours
    report["load_end"] = os.getloadavg()
    print("load", report["load_start"], "->", report["load_end"])
    if a.json:
        a.json.write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

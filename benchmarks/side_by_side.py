"""hmrepro against the authors' code, side by side: same weights, same inputs, interleaved timings (issue 25).

For HSNet, VAT and ASNet with feature masking (FM, the authors' models) and hybrid masking (HM, the HM repository's
hsnet.py / vat.py / asnet.py dropped into them), this script builds the authors' model and hmrepro's model
(``hmrepro.create_model(name, backbone, pretrained=False)``), fills the authors' ``state_dict`` by the fixtures'
deterministic rule (``fill_params``, ../shared/fixtures/README.md) and loads it into hmrepro's model by key (hmrepro
uses the authors' key names), runs both on the same episode, prints how far their outputs are apart, then times them
alternately (A B, B A, A B, ...; medians):

- evaluation (default): one episode per call, under ``torch.no_grad()``; the authors' ``predict_mask_nshot(batch,
  nshot)`` (their test.py: a 1-shot forward per shot and the vote) against hmrepro's ``model.predict_nshot``;
- training (``--train``): the authors' train.py iteration (``train_mode()``, 1-shot forward, ``compute_objective``,
  ``zero_grad``, ``backward``, the optimizer's ``step``; HSNet/ASNet: Adam lr 1e-3, VAT: AdamW in its two groups
  with the PASCAL fold-0 config's lr 5e-4 and weight decay 0) against ``hmrepro.engine.training.train.train_step``
  with the
  same optimizer settings (``build_optimizer``).

None of the authors' code is in this repository: ``--export-from-mirror`` exports it from the local bare mirrors,
``--clone`` clones the public repositories (both into ``--authors``, default ``benchmarks/.authors``, ignored by git),
and their two small pure-Python dependencies (einops, timm) are installed there with ``pip install --target``.
Local edits made to the export, all listed in ``SOURCES.json``: the HM files replace the models' files (as the HM
README says); VAT's ``corr4 += ...`` / ``corr3 += ...`` are written out of place (current PyTorch refuses the in-place
form in backward; the fixtures were made the same way). At construction the torchvision backbones are built without
downloading weights (they are overwritten anyway), ``pytorch_lightning`` is stubbed for ASNet (``LightningModule`` :=
``nn.Module``) and VAT's yacs config is given as a plain namespace with the keys the model reads.

Peak memory: every timed call runs inside hmrepro's ``PeakMemory`` (:func:`timed`; CPU: the peak resident set,
VmHWM, reset after ``malloc_trim`` at the start of the call, minus what was resident then; CUDA:
``max_memory_allocated`` after ``reset_peak_memory_stats``), so each row has both sides' per-call peak increase, and
the first 1-shot forward of each (the agreement check, cold) is measured the same way. ``--memory-fresh`` measures
instead, without timing, each side alone in a fresh process (only that side's model built, :func:`build_side`), one
row per shot with ``--memory-episodes`` episodes each (the first cold).

Example (CPU, quick): ``python benchmarks/side_by_side.py --export-from-mirror --families hsnet --img-size 64
--repeats 1``. Seconds per episode (wall) and the process CPU seconds are both reported; the ratio is authors /
hmrepro (> 1: hmrepro faster). The whole comparison, six models x 1 and 5 shots, is the defaults:
``python benchmarks/side_by_side.py --export-from-mirror --json OUT.json`` (docs/performance.md gives its time).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DEFAULT_AUTHORS = HERE / ".authors"
DEFAULT_MIRROR = Path("/work/.mirror")
DEFAULT_FIXTURES = REPO.parent / "shared" / "fixtures"

# name -> (mirror folder, public URL, the paths the models need: a mirror may lack large unrelated blobs)
UPSTREAM = {
    "hsnet": ("juhongm999+hsnet", "https://github.com/juhongm999/hsnet", ["model", "common"]),
    "vat": (
        "Seokju-Cho+Volumetric-Aggregation-Transformer",
        "https://github.com/Seokju-Cho/Volumetric-Aggregation-Transformer",
        ["model", "common", "config"],
    ),
    "ifsl": ("dahyun-kang+ifsl", "https://github.com/dahyun-kang/ifsl", ["fs-s/model", "fs-s/common"]),
    "hm": (
        "moonsh+HM-Hybrid-Masking",
        "https://github.com/moonsh/HM-Hybrid-Masking",
        ["hsnet.py", "vat.py", "asnet.py"],
    ),
}
# exported folder -> (upstream, subfolder of it, HM file replacing a model file or None)
LAYOUT = {
    "hsnet": ("hsnet", "", None),
    "hsnet-hm": ("hsnet", "", ("hsnet.py", "model/hsnet.py")),
    "vat": ("vat", "", None),
    "vat-hm": ("vat", "", ("vat.py", "model/vat.py")),
    "asnet": ("ifsl", "fs-s", None),
    "asnet-hm": ("ifsl", "fs-s", ("asnet.py", "model/asnet.py")),
}
OUT_OF_PLACE = {
    "model/ours.py": [
        ("corr4 += corr5_upsampled", "corr4 = corr4 + corr5_upsampled"),
        ("corr3 += corr4_upsampled", "corr3 = corr3 + corr4_upsampled"),
    ]
}
PYDEPS = ["einops", "timm"]
FAMILIES = ("hsnet", "vat", "asnet")
DEFAULT_SIZES = {"hsnet": 400, "vat": 473, "asnet": 400}
AUTHOR_MODULES = ("model", "common", "config", "data")  # top-level names the three repositories share


# ----------------------------------------------------------------------------------------------------------- export
def _git(*args: str, cwd: Path | None = None) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


def export_authors(target: Path, mirror: Path | None, clone: bool) -> None:
    """Export (from ``mirror``) or clone the four repositories into ``target`` in the layout of LAYOUT."""
    target.mkdir(parents=True, exist_ok=True)
    sources: dict = {"upstream": {}, "edits": []}
    with tempfile.TemporaryDirectory() as tmp:
        trees = {}
        for name, (folder, url, paths) in UPSTREAM.items():
            tree = Path(tmp) / name
            tree.mkdir()
            if clone:
                _git("clone", "--depth", "1", "--quiet", url, str(tree))
                commit = _git("rev-parse", "HEAD", cwd=tree)
            else:
                bare = mirror / folder / "repo"
                commit = _git("-C", str(bare), "rev-parse", "HEAD")
                archive = subprocess.run(
                    ["git", "-C", str(bare), "archive", "HEAD", *paths], check=True, capture_output=True
                )
                subprocess.run(["tar", "-x", "-C", str(tree)], input=archive.stdout, check=True)
            trees[name] = tree
            sources["upstream"][name] = {"url": url, "commit": commit, "via": "clone" if clone else str(mirror)}
        for out, (name, sub, hm_file) in LAYOUT.items():
            dest = target / out
            if dest.exists():
                shutil.rmtree(dest)
            shutil.copytree(trees[name] / sub if sub else trees[name], dest, ignore=shutil.ignore_patterns(".git"))
            if hm_file:
                shutil.copyfile(trees["hm"] / hm_file[0], dest / hm_file[1])
                sources["edits"].append(f"{out}/{hm_file[1]} := HM repository's {hm_file[0]}")
            for rel, subs in OUT_OF_PLACE.items():
                path = dest / rel
                if path.exists():
                    text = path.read_text()
                    for old, new in subs:
                        if old in text:
                            text = text.replace(old, new)
                            sources["edits"].append(f"{out}/{rel}: {old!r} -> {new!r}")
                    path.write_text(text)
    deps = target / "_pydeps"
    if not all((deps / d).is_dir() for d in PYDEPS):
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(deps), *PYDEPS], check=True
        )
        sources["pydeps"] = PYDEPS
    (target / "SOURCES.json").write_text(json.dumps(sources, indent=1) + "\n")
    print(
        f"authors' code exported to {target}: "
        + ", ".join(f"{k}@{v['commit'][:7]}" for k, v in sources["upstream"].items())
    )


# ---------------------------------------------------------------------------------------------- authors' models
@contextlib.contextmanager
def _authors_import_path(root: Path):
    """Import the authors' top-level packages (model, common, config) from ``root`` and nowhere else."""
    for key in list(sys.modules):
        if key.split(".")[0] in AUTHOR_MODULES:
            del sys.modules[key]
    sys.path.insert(0, str(root))
    try:
        yield
    finally:
        sys.path.remove(str(root))
        for key in list(sys.modules):
            if key.split(".")[0] in AUTHOR_MODULES:
                del sys.modules[key]


@contextlib.contextmanager
def _no_download_backbones():
    """torchvision's resnet50/resnet101/vgg16 built without weights while the authors' constructors run."""
    from torchvision.models import resnet, vgg

    saved = {(m, n): getattr(m, n) for m, n in [(resnet, "resnet50"), (resnet, "resnet101"), (vgg, "vgg16")]}

    def plain(fn):
        return lambda *a, pretrained=False, **kw: fn(weights=None)

    for (module, name), fn in saved.items():
        setattr(module, name, plain(fn))
    try:
        yield
    finally:
        for (module, name), fn in saved.items():
            setattr(module, name, fn)


def build_authors(family: str, hm: bool, authors: Path, backbone: str, benchmark: str):
    root = authors / (family + ("-hm" if hm else ""))
    if not root.is_dir():
        raise SystemExit(f"{root} missing: export the authors' code first (--export-from-mirror or --clone)")
    deps = str(authors / "_pydeps")
    if deps not in sys.path:
        sys.path.append(deps)
    import warnings

    warnings.filterwarnings("ignore", category=FutureWarning)  # timm.models.layers' deprecation notice
    with _authors_import_path(root), _no_download_backbones():
        torch.manual_seed(0)
        if family == "hsnet":
            cls = importlib.import_module("model.hsnet").HypercorrSqueezeNetwork
            model = cls(backbone, False)
        elif family == "vat":
            cls = importlib.import_module("model.vat").VAT
            train = types.SimpleNamespace(BACKBONE=backbone, BENCHMARK=benchmark, MASK=True, IMG_SIZE=473)
            model = cls(types.SimpleNamespace(TRAIN=train), False)
        elif family == "asnet":
            stub = types.ModuleType("pytorch_lightning")
            stub.LightningModule = torch.nn.Module
            sys.modules.setdefault("pytorch_lightning", stub)
            cls = importlib.import_module("model.asnet").AttentiveSqueezeNetwork
            model = cls(types.SimpleNamespace(backbone=backbone, lr=1e-3), False)
        else:
            raise SystemExit(f"unknown family {family}")
    return model


def authors_optimizer(family: str, model):
    if family == "vat":  # VAT train.py: AdamW, decoder / rest groups (PASCAL fold-0 config: lr 5e-4, wd 0 both)
        dec = [p for n, p in model.named_parameters() if "decoder" in n]
        enc = [p for n, p in model.named_parameters() if "decoder" not in n]
        return torch.optim.AdamW(
            [{"params": enc, "lr": 5e-4, "weight_decay": 0.0}, {"params": dec, "lr": 5e-4, "weight_decay": 0.0}]
        )
    return torch.optim.Adam([{"params": model.parameters(), "lr": 1e-3}])  # HSNet train.py / ASNet's Lightning


def hmrepro_optimizer(family: str, model):
    from hmrepro.engine.training.train import build_optimizer

    params = [p for p in model.parameters() if p.requires_grad]
    if family == "vat":
        return build_optimizer("adamw", params, 5e-4, 0.0)
    return build_optimizer("adam", params, 1e-3, 0.0)


# ----------------------------------------------------------------------------------------------------- inputs
def make_inputs(size: int, shots: int, bsz: int, fixtures: Path, device: str) -> tuple[dict, str]:
    path = fixtures / f"inputs_{size}.pt"
    if path.is_file() and bsz <= 2:
        data = torch.load(path, map_location="cpu", weights_only=True)
        batch = {
            "query_img": data["query_img"][:bsz],
            "support_imgs": data["support_imgs"][:bsz, :shots],
            "support_masks": data["support_masks"][:bsz, :shots].float(),
            "query_mask": data["query_mask"][:bsz].float(),
        }
        origin = str(path)
    else:  # smooth random images, elliptic masks
        g = torch.Generator().manual_seed(0)
        low = torch.randn(bsz * (shots + 1), 3, 16, 16, generator=g)
        imgs = torch.nn.functional.interpolate(low, size=(size, size), mode="bilinear", align_corners=False)
        yy, xx = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
        params = torch.rand(bsz * (shots + 1), 4, generator=g)
        masks = torch.stack(
            [
                (
                    ((xx - (p[0] - 0.5)) / (0.3 + 0.4 * p[2])) ** 2 + ((yy - (p[1] - 0.5)) / (0.3 + 0.4 * p[3])) ** 2
                    <= 1
                ).float()
                for p in params
            ]
        )
        imgs, masks = imgs.view(bsz, shots + 1, 3, size, size), masks.view(bsz, shots + 1, size, size)
        batch = {
            "query_img": imgs[:, 0],
            "support_imgs": imgs[:, 1:],
            "support_masks": masks[:, 1:],
            "query_mask": masks[:, 0],
        }
        origin = "random (seed 0)"
    return {k: v.to(device) for k, v in batch.items()}, origin


# ------------------------------------------------------------------------------------------------------ timing
def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn, device: str) -> tuple[float, float, object, float, float]:
    """(wall s, process CPU s, result, peak MiB, increase MiB) of one call, the device synchronised around it.

    Peak memory: hmrepro's ``PeakMemory`` (what ``hmrepro bench`` reports) around the call. CUDA:
    ``max_memory_allocated`` after ``reset_peak_memory_stats``. CPU: the process's peak resident set (VmHWM)
    reset at the start after glibc's ``malloc_trim`` handed freed pages back, so the increase is what this call
    touched above what was resident before it (both models, the inputs); torch's CPU tensors come from malloc, so
    they are all in it. The two models share the process: nothing of one side's call is left when the other's starts
    (its result aside: one mask)."""
    from hmrepro.engine.training.memory import PeakMemory

    _sync(device)
    with PeakMemory(device) as mem:
        w0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        _sync(device)
        w1, c1 = time.perf_counter(), time.process_time()
    return w1 - w0, c1 - c0, out, mem.peak_mib, mem.increase_mib


def interleave(fns: dict, repeats: int, device: str) -> dict:
    """Alternate the callables (A B, B A, ...) ``repeats`` times; per name: walls, cpus, peaks, first result."""
    names = list(fns)
    res = {n: {"wall": [], "cpu": [], "peak_mib": [], "increase_mib": [], "first": None} for n in names}
    for r in range(repeats):
        for n in names if r % 2 == 0 else names[::-1]:
            wall, cpu, out, peak, increase = timed(fns[n], device)
            res[n]["wall"].append(wall)
            res[n]["cpu"].append(cpu)
            res[n]["peak_mib"].append(peak)
            res[n]["increase_mib"].append(increase)
            if res[n]["first"] is None:
                res[n]["first"] = out
    return res


def _load() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


# -------------------------------------------------------------------------------------------------------- runs
def build_pair(family: str, hm: bool, args):
    """The authors' model with the fixtures' weights and hmrepro's with the same state, both in eval mode on
    ``args.device``."""
    import hmrepro

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from model_weights import fill_params  # the fixtures' deterministic-weights rule, kept with the tests

    name = family + ("-hm" if hm else "")
    theirs = fill_params(build_authors(family, hm, args.authors, args.backbone, args.benchmark))
    ours = hmrepro.create_model(name, backbone=args.backbone, pretrained=False, benchmark=args.benchmark)
    state = theirs.state_dict()
    missing, unexpected = ours.load_state_dict(state, strict=False)
    floating_missing = [k for k in missing if ours.state_dict()[k].is_floating_point() and not k.endswith("attn_mask")]
    if floating_missing or unexpected:
        print(
            f"  {name}: hmrepro lacks {len(floating_missing)} float keys {floating_missing[:3]}, "
            f"has no {len(unexpected)} authors' keys {list(unexpected)[:3]}"
        )
    return theirs.to(args.device).eval(), ours.to(args.device).eval()


def build_side(family: str, hm: bool, args, authors: bool):
    """One model of the pair alone, in eval mode on ``args.device``: the fixtures' ``fill_params`` weights give both
    sides the same values by key (hmrepro uses the authors' key names), so the other model is never built. Building
    both and deleting one (as this harness first did) leaves the deleted model's freed memory in the heap, which
    the measured episode then reuses without touching new pages: the authors' hsnet-hm 1-shot read 150 MiB that way
    and 454 MiB alone."""
    import hmrepro

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from model_weights import fill_params

    if authors:
        model = build_authors(family, hm, args.authors, args.backbone, args.benchmark)
    else:
        name = family + ("-hm" if hm else "")
        model = hmrepro.create_model(name, backbone=args.backbone, pretrained=False, benchmark=args.benchmark)
    return fill_params(model).to(args.device).eval()


def run_pair(family: str, hm: bool, args, fixtures: Path, emit) -> None:
    """Build one pair (authors', hmrepro's), check that they agree, time them; ``emit(row)`` per measurement."""
    from hmrepro.engine.training.train import train_step

    name = family + ("-hm" if hm else "")
    size = args.sizes[family]
    device = args.device
    t0 = time.perf_counter()
    theirs, ours = build_pair(family, hm, args)
    print(f"  {name}: both models built and loaded in {time.perf_counter() - t0:.1f} s (load {_load()})", flush=True)
    common = {
        "model": name,
        "family": family,
        "masking": "hm" if hm else "fm",
        "device": device,
        "img_size": size,
        "backbone": args.backbone,
        "threads": torch.get_num_threads(),
    }
    if not args.train:
        batch, origin = make_inputs(size, max(args.shots), args.bsz, fixtures, device)
        q, s, m = batch["query_img"], batch["support_imgs"], batch["support_masks"]
        with torch.no_grad():  # agreement of the 1-shot logits (also the warm-up of both; their memory, cold)
            *_, logits_a, _, cold_a = timed(lambda: theirs(q, s[:, 0], m[:, 0]), device)
            *_, logits_b, _, cold_b = timed(lambda: ours(q, s[:, 0], m[:, 0]), device)
            diff = (logits_a - logits_b).abs().max().item()
            del logits_a, logits_b
        print(
            f"  {name}: 1-shot logits max |authors - hmrepro| = {diff:.2e} ({origin}, batch {args.bsz}); first 1-shot "
            f"forward's peak increase (cold): authors {cold_a:.0f} MiB, hmrepro {cold_b:.0f} MiB",
            flush=True,
        )
        common["cold_1shot_forward_increase_mib"] = {"authors": round(cold_a, 1), "hmrepro": round(cold_b, 1)}
        for shot in args.shots:
            sb = {"query_img": q, "support_imgs": s[:, :shot], "support_masks": m[:, :shot]}

            def authors_eval(sb=sb, shot=shot):
                with torch.no_grad():
                    return theirs.predict_mask_nshot(sb, nshot=shot)

            def hmrepro_eval(sb=sb):
                with torch.no_grad():
                    return ours.predict_nshot(sb["query_img"], sb["support_imgs"], sb["support_masks"])

            fns = {"authors": authors_eval, "hmrepro": hmrepro_eval}
            if args.warmup:
                interleave(fns, args.warmup, device)
            load0 = _load()
            res = interleave(fns, args.repeats, device)
            agree = (res["authors"]["first"].long() == res["hmrepro"]["first"].long()).float().mean().item()
            emit(
                _row(
                    common,
                    "eval",
                    shot,
                    args.bsz,
                    res,
                    load0,
                    {"max_abs_diff_1shot_logits": diff, "mask_agreement": agree, "inputs": origin},
                )
            )
    else:
        batch, origin = make_inputs(size, 1, args.bsz, fixtures, device)
        opt_a, opt_b = authors_optimizer(family, theirs), hmrepro_optimizer(family, ours)
        qm = batch["query_mask"]

        def authors_step():
            theirs.train_mode()
            torch.manual_seed(1000)
            logit = theirs(batch["query_img"], batch["support_imgs"][:, 0], batch["support_masks"][:, 0])
            loss = theirs.compute_objective(logit, qm)
            opt_a.zero_grad()
            loss.backward()
            opt_a.step()
            return loss.detach()

        def hmrepro_step():
            torch.manual_seed(1000)
            loss, _ = train_step(ours, batch, opt_b, shot=1)
            return loss.detach()

        load0 = _load()
        drop = max(1, args.warmup)
        res = interleave({"authors": authors_step, "hmrepro": hmrepro_step}, args.repeats + drop, device)
        first_loss = (res["authors"]["first"] - res["hmrepro"]["first"]).abs().item()
        for who in ("authors", "hmrepro"):  # the first steps of each are its warm-up
            for key in ("wall", "cpu", "peak_mib", "increase_mib"):
                res[who][key] = res[who][key][drop:]
        print(f"  {name}: first training step's loss |authors - hmrepro| = {first_loss:.2e} ({origin})", flush=True)
        emit(_row(common, "train", 1, args.bsz, res, load0, {"loss_diff_step0": first_loss, "inputs": origin}))
    if device.startswith("cuda"):
        torch.cuda.empty_cache()


def _eval_call(model, authors: bool, batch: dict, shot: int):
    """One K-shot evaluation episode: the authors' test.py call or hmrepro's ``predict_nshot``."""
    q, s, m = batch["query_img"], batch["support_imgs"][:, :shot], batch["support_masks"][:, :shot]
    with torch.no_grad():
        if authors:
            return model.predict_mask_nshot({"query_img": q, "support_imgs": s, "support_masks": m}, nshot=shot)
        return model.predict_nshot(q, s, m)


def memory_child(args) -> None:
    """``--memory-child SIDE``: in this fresh process, only SIDE's model of the pair (:func:`build_side`),
    ``--memory-episodes`` K-shot episodes one after the other, each inside ``PeakMemory`` (see :func:`timed`);
    prints one ``MEMORY {json}`` line."""
    import gc

    from hmrepro.engine.training.memory import _status_mib

    (family,), (masking,), (shot,) = args.families.split(","), args.masking.split(","), args.shots
    authors = args.memory_child == "authors"
    model = build_side(family, masking == "hm", args, authors)
    gc.collect()
    batch, origin = make_inputs(args.sizes[family], shot, args.bsz, args.fixtures, args.device)
    episodes = []
    for _ in range(args.memory_episodes):
        wall, cpu, out, peak, increase = timed(lambda: _eval_call(model, authors, batch, shot), args.device)
        del out
        episodes.append({"wall_s": wall, "cpu_s": cpu, "peak_mib": round(peak, 1), "increase_mib": round(increase, 1)})
    result = {
        "episodes": episodes,
        "ru_maxrss_mib": round(_max_rss_mib(), 1),
        "rss_end_mib": _status_mib("VmRSS"),
        "inputs": origin,
    }
    print("MEMORY " + json.dumps(result), flush=True)


def _max_rss_mib() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


def run_memory(family: str, hm: bool, args, emit) -> None:
    """Peak memory of K-shot episodes, each side in its own fresh process (:func:`memory_child`), one row per shot."""
    name = family + ("-hm" if hm else "")
    for shot in args.shots:
        row = {
            "model": name,
            "family": family,
            "masking": "hm" if hm else "fm",
            "device": args.device,
            "img_size": args.sizes[family],
            "backbone": args.backbone,
            "threads": args.threads,
            "mode": "memory",
            "shot": shot,
            "bsz": args.bsz,
            "memory_method": "fresh process per side; per episode: "
            + ("max_memory_allocated" if args.device != "cpu" else "VmHWM reset after malloc_trim")
            + " minus what was resident at its start (the model, the inputs)",
            "load_before": _load(),
        }
        for who in ("authors", "hmrepro"):
            if who == "authors" and args.memory_authors_shots and shot not in args.memory_authors_shots:
                continue
            cmd = [sys.executable, str(Path(__file__).resolve()), "--memory-child", who, "--families", family]
            cmd += ["--masking", row["masking"], "--shots", str(shot), "--memory-episodes", str(args.memory_episodes)]
            cmd += ["--img-size", f"{family}={args.sizes[family]}", "--bsz", str(args.bsz), "--threads"]
            cmd += [str(args.threads), "--device", args.device, "--authors", str(args.authors), "--backbone"]
            cmd += [args.backbone, "--benchmark", args.benchmark, "--fixtures", str(args.fixtures)]
            done = subprocess.run(cmd, capture_output=True, text=True)
            lines = [line for line in done.stdout.splitlines() if line.startswith("MEMORY ")]
            if done.returncode or not lines:
                raise SystemExit(f"memory child {who} {name} {shot}-shot failed:\n{done.stdout}\n{done.stderr}")
            res = json.loads(lines[-1][len("MEMORY ") :])
            row[f"{who}_episodes"] = res["episodes"]
            row[f"{who}_increase_mib"] = [e["increase_mib"] for e in res["episodes"]]
            row[f"{who}_ru_maxrss_mib"] = res["ru_maxrss_mib"]
            row["inputs"] = res["inputs"]
        row["load_after"] = _load()
        a, b = row.get("authors_increase_mib"), row["hmrepro_increase_mib"]
        print(
            f"  {name:9s} memory {shot}-shot (fresh processes): peak increase per episode authors {a} MiB, "
            f"hmrepro {b} MiB (load {row['load_before']} -> {row['load_after']})",
            flush=True,
        )
        emit(row)


def _row(common: dict, mode: str, shot: int, bsz: int, res: dict, load0: str, extra: dict) -> dict:
    row = {**common, "mode": mode, "shot": shot, "bsz": bsz, "repeats": len(res["authors"]["wall"]), **extra}
    for who in ("authors", "hmrepro"):
        row[f"{who}_wall_s"] = res[who]["wall"]
        row[f"{who}_cpu_s"] = res[who]["cpu"]
        row[f"{who}_median_s"] = statistics.median(res[who]["wall"])
        row[f"{who}_median_cpu_s"] = statistics.median(res[who]["cpu"])
        row[f"{who}_peak_mib"] = [round(x, 1) for x in res[who]["peak_mib"]]
        row[f"{who}_increase_mib"] = [round(x, 1) for x in res[who]["increase_mib"]]
        row[f"{who}_max_increase_mib"] = round(max(res[who]["increase_mib"]), 1)
    row["ratio"] = row["authors_median_s"] / row["hmrepro_median_s"]
    row["ratio_cpu"] = row["authors_median_cpu_s"] / max(row["hmrepro_median_cpu_s"], 1e-9)
    row["load_before"], row["load_after"] = load0, _load()
    row["memory_method"] = "in-process, per call: " + ("max_memory_allocated" if row["device"] != "cpu" else "VmHWM")
    print(
        f"  {row['model']:9s} {mode:5s} {shot}-shot: authors {row['authors_median_s']:.3f} s, hmrepro "
        f"{row['hmrepro_median_s']:.3f} s per {'episode' if mode == 'eval' else 'iteration'}, ratio {row['ratio']:.2f}"
        f" (CPU time ratio {row['ratio_cpu']:.2f}; peak increase authors {row['authors_max_increase_mib']:.0f} MiB,"
        f" hmrepro {row['hmrepro_max_increase_mib']:.0f} MiB; load {load0} -> {row['load_after']})",
        flush=True,
    )
    return row


def print_table(rows: list[dict]) -> None:
    print(
        "\n| model | mode | shot | px | authors s | hmrepro s | ratio (wall) | ratio (CPU time) | peak increase MiB "
        "authors / hmrepro | max abs diff / agreement | load |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        check = (
            f"{r['max_abs_diff_1shot_logits']:.1e} / {r['mask_agreement']:.4f}"
            if r["mode"] == "eval"
            else f"loss {r['loss_diff_step0']:.1e}"
        )
        print(
            f"| {r['model']} | {r['mode']} | {r['shot']} | {r['img_size']} | {r['authors_median_s']:.3f} | "
            f"{r['hmrepro_median_s']:.3f} | {r['ratio']:.2f} | {r['ratio_cpu']:.2f} | "
            f"{r['authors_max_increase_mib']:.0f} / {r['hmrepro_max_increase_mib']:.0f} | {check} | "
            f"{r['load_before']} -> {r['load_after']} |"
        )


def parse_sizes(text: str | None) -> dict:
    sizes = dict(DEFAULT_SIZES)
    if text:
        for part in text.split(","):
            if "=" in part:
                fam, val = part.split("=")
                sizes[fam.strip()] = int(val)
            else:  # one size for all; ASNet takes only 393-512
                sizes = {f: (int(part) if f != "asnet" or 393 <= int(part) <= 512 else sizes[f]) for f in sizes}
    return sizes


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--authors", type=Path, default=DEFAULT_AUTHORS, help="where the authors' code is exported")
    src = p.add_mutually_exclusive_group()
    src.add_argument(
        "--export-from-mirror",
        nargs="?",
        const=DEFAULT_MIRROR,
        type=Path,
        metavar="MIRROR_ROOT",
        help=f"export the authors' repositories from the bare mirrors (default {DEFAULT_MIRROR})",
    )
    src.add_argument("--clone", action="store_true", help="git clone the public repositories into --authors")
    p.add_argument("--export-only", action="store_true", help="export / clone, then stop")
    p.add_argument("--families", default="hsnet,vat,asnet", help="comma list of hsnet, vat, asnet")
    p.add_argument("--masking", default="fm,hm", help="comma list of fm, hm")
    p.add_argument("--shots", default="1,5", help="comma list (evaluation)")
    p.add_argument("--repeats", type=int, default=3, help="timed calls of each side (interleaved)")
    p.add_argument(
        "--warmup",
        type=int,
        default=0,
        help="untimed interleaved calls of each side before each timing (the agreement check already\n"
        "runs both once; training always drops at least its first step)",
    )
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument(
        "--img-size",
        default=None,
        help=f"one size for all (ASNet keeps 400 outside 393-512) or family=size,...; default {DEFAULT_SIZES}",
    )
    p.add_argument("--bsz", type=int, default=1, help="episodes per call (fixture inputs up to 2, else random)")
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    p.add_argument("--backbone", default="resnet50")
    p.add_argument("--benchmark", default="pascal", help="VAT's decoder")
    p.add_argument("--fixtures", type=Path, default=DEFAULT_FIXTURES, help="where inputs_<S>.pt are")
    p.add_argument("--train", action="store_true", help="time training iterations instead of evaluation")
    p.add_argument("--json", type=Path, default=None, help="write the rows here")
    p.add_argument(
        "--memory-fresh",
        action="store_true",
        help="instead of timing: peak memory of K-shot episodes, each side in a fresh process",
    )
    p.add_argument(
        "--memory-episodes",
        type=int,
        default=2,
        help="episodes per fresh process (--memory-fresh): the first cold, the next warm",
    )
    p.add_argument(
        "--memory-authors-shots",
        default=None,
        help="--memory-fresh: measure the authors' side at these shots only (comma list; default: --shots)",
    )
    p.add_argument("--memory-child", choices=("authors", "hmrepro"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.authors = args.authors.resolve()
    if args.export_from_mirror or args.clone:
        export_authors(args.authors, args.export_from_mirror, args.clone)
    if args.export_only:
        return 0
    args.shots = [int(x) for x in args.shots.split(",")]
    args.memory_authors_shots = [int(x) for x in (args.memory_authors_shots or "").split(",") if x]
    args.sizes = parse_sizes(args.img_size)
    torch.set_num_threads(args.threads)
    if args.device.startswith("cuda"):  # fp32 for both sides
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    if args.memory_child:
        memory_child(args)
        return 0
    env = {
        "date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
        "torch": torch.__version__,
        "device_name": torch.cuda.get_device_name() if args.device.startswith("cuda") else _cpu_name(),
        "hmrepro_commit": _commit(),
        "hmrepro_uncommitted": _dirty(),
        "command": " ".join(sys.argv),
        "threads": args.threads,
    }
    sources = args.authors / "SOURCES.json"
    if sources.is_file():
        env["authors"] = json.loads(sources.read_text())
    print(
        f"{env['date_utc']} UTC, {env['device_name']}, torch {env['torch']}, {args.threads} threads, "
        f"hmrepro {env['hmrepro_commit']} ({len(env['hmrepro_uncommitted'])} files of hmrepro/ modified), "
        f"load {_load()}",
        flush=True,
    )
    rows = []

    def emit(row: dict) -> None:
        rows.append(row)
        if args.json:  # written as it goes: a long run killed half-way keeps what it measured
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps({"env": env, "rows": rows}, indent=1) + "\n")

    for family in args.families.split(","):
        for masking in args.masking.split(","):
            if args.memory_fresh:
                run_memory(family, masking == "hm", args, emit)
            else:
                run_pair(family, masking == "hm", args, args.fixtures, emit)
    if not args.memory_fresh:
        print_table(rows)
    return 0


def _commit() -> str:
    try:
        return _git("-C", str(REPO), "rev-parse", "--short", "HEAD")
    except (subprocess.CalledProcessError, FileNotFoundError):
        return "unknown"


def _dirty() -> list[str]:
    """hmrepro's files that differ from its commit (the tree is shared: the timings are of what is on disk)."""
    try:
        return _git("-C", str(REPO), "status", "--porcelain", "--", "hmrepro").splitlines()
    except (subprocess.CalledProcessError, FileNotFoundError):
        return []


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "cpu"


if __name__ == "__main__":
    sys.exit(main())

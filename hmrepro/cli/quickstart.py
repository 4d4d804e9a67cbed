"""``hmrepro quickstart``: the whole pipeline on the synthetic benchmark, on a CPU, without any download."""

from __future__ import annotations

import time
from pathlib import Path

import typer
from rich.console import Console
from rich.panel import Panel
from rich.table import Table

from ..paths import default_synthetic_root
from ..safetext import safe_markup
from .common import (
    ProgressOption,
    console,
    optional_option,
    say,
)
from .rich_progress import RichProgress

MODELS = ("hsnet", "hsnet-hm")
BENCHMARK = "fss"  # the synthetic FSS-like split: one object per image, 80 training / 40 val / 40 test episodes

# (img_size, epochs): default measured at about 4 minutes of training and evaluation on 2 CPU cores
DEFAULT = {"img_size": 96, "epochs": 8}
FAST = {"img_size": 64, "epochs": 1}

REAL_COMMANDS = """\
hmrepro download pascal && hmrepro prepare pascal        # the real data (see `hmrepro download --help`)
hmrepro train hsnet-hm --benchmark pascal --fold 0 --backbone resnet50          # a GPU: the authors' recipe
torchrun --nproc_per_node 4 -m hmrepro train hsnet-hm --benchmark coco --fold 0  # several GPUs
hmrepro eval hsnet-hm --benchmark pascal --fold all --shot 1 --weights official   # the authors' checkpoints"""


def quickstart(
    workdir: Path | None = optional_option(
        "--workdir", help="Where the synthetic data, runs and records go [default: ~/.hmrepro/synthetic]."
    ),
    fast: bool = typer.Option(
        False, "--fast", help="A smoke test in well under a minute (64 px, 1 epoch): checks the plumbing only."
    ),
    epochs: int | None = optional_option(
        "--epochs", min=1, help=f"Training epochs per model [default: {DEFAULT['epochs']}]."
    ),
    img_size: int | None = optional_option("--img-size", min=32, help=f"Image side [default: {DEFAULT['img_size']}]."),
    workers: int = typer.Option(1, "--workers", min=0, help="DataLoader worker processes."),
    progress: bool = ProgressOption,
) -> None:
    """Try the whole pipeline in minutes on a laptop CPU: synthetic data, training, evaluation, comparison.

    Writes the synthetic benchmark (no download), trains hsnet (feature masking) and hsnet-hm (hybrid
    masking) briefly from random backbones, evaluates both on the fixed test episodes, writes result records
    and prints a comparison table, then writes the HTML report of its own runs (as `hmrepro report` does) and
    prints its path. About 4 minutes on 2 CPU cores; --fast takes well under a minute. Numbers on synthetic data
    say nothing about the paper's claims.

    Example: [bold]hmrepro quickstart[/]   or   [bold]hmrepro quickstart --fast --workdir /tmp/hm[/]
    """
    from ..data.synthetic import make_synthetic
    from ..engine.evaluation.evaluate import EvalConfig, evaluate
    from ..engine.records import now_iso
    from ..engine.runs import read_metrics
    from ..engine.training.train import build_config, train

    start = time.perf_counter()
    root = (workdir or default_synthetic_root()).expanduser().resolve()
    preset = FAST if fast else DEFAULT
    size = img_size or preset["img_size"]
    n_epochs = epochs or preset["epochs"]
    stamp = now_iso().replace(":", "").replace("+0000", "Z")
    out = root / "quickstart" / stamp
    results = out / "results"

    console.rule("[bold]hmrepro quickstart")
    say(f"1/3 synthetic benchmark in {root}")
    for line in make_synthetic(root, seed=0, progress=progress):
        say(f"    {line}")
    splits = root / "splits"

    rows = []
    for i, model in enumerate(MODELS):
        console.print(
            f"2/3 training {model} ({i + 1}/{len(MODELS)}): random ResNet-50, {size} px, {n_epochs} epoch(s), CPU"
        )
        config = build_config(
            model,
            BENCHMARK,
            0,
            {
                "pretrained": False,
                "img_size": size,
                "epochs": n_epochs,
                "bsz": 8,
                "val_bsz": 8,
                "workers": workers,
                "seed": 0,
                "checkpoint_every": 0,
                "device": "cpu",
                "out": str(out / "runs" / model),
                "data_root": str(root),
                "splits": str(splits),
            },
        )
        t0 = time.perf_counter()
        with RichProgress(progress, log_prefix="    ") as reporter:
            run_dir = train(config, progress=reporter)
        train_secs = time.perf_counter() - t0
        problems: list[str] = []
        metrics = read_metrics(run_dir, problems)
        for problem in problems:
            console.print(f"    [yellow]warning:[/] {safe_markup(problem)}", highlight=False, soft_wrap=True)
        best = max(metrics, key=lambda r: r["val_miou"])
        rows.append({"model": model, "run_dir": run_dir, "train_secs": train_secs, "best": best, "metrics": metrics})

    console.print("3/3 evaluating both on the fixed test episodes (1-shot)")
    for row in rows:
        with RichProgress(progress, log_prefix="    ") as bars:
            config = EvalConfig(
                row["model"],
                BENCHMARK,
                0,
                1,
                weights=str(row["run_dir"]),
                data_root=root,
                splits=splits,
                results_dir=results,
                device="cpu",
                workers=workers,
            )
            record = evaluate(config, progress=bars)[0]
        row["record"] = record

    table = Table(title="quickstart: synthetic FSS-like benchmark, 1-shot, random-init ResNet-50")
    for col in ("model", "masking", "best val mIoU (epoch)", "test mIoU", "test FB-IoU", "train time", "train ep/s"):
        table.add_column(col, justify="left" if col in ("model", "masking") else "right")
    for row in rows:
        r, best = row["record"], row["best"]
        speed = sum(m["train_episodes_per_s"] * m["train_secs"] for m in row["metrics"]) / max(
            sum(m["train_secs"] for m in row["metrics"]), 1e-9
        )
        table.add_row(
            row["model"],
            r["masking"],
            f"{best['val_miou']:.1f} ({best['epoch']})",
            f"{r['miou']:.1f}",
            f"{r['fb_iou']:.1f}",
            f"{row['train_secs']:.0f} s",
            f"{speed:.1f}",
        )
    Console().print(table)
    console.print(
        Panel(
            "These numbers come from a tiny synthetic benchmark, random backbones and a few minutes of CPU "
            "training. They test that the pipeline works; they say [bold]nothing[/] about the paper's claims "
            "(which need the real PASCAL-5i / COCO-20i / FSS-1000 data, ImageNet backbones and GPU training).",
            title="read this",
            border_style="yellow",
        )
    )
    console.print("run folders (config.json, metrics.jsonl = training curve, best_model.pt, last.pt, run.json):")
    for row in rows:
        say(f"    {row['run_dir']}")
    say(f"result records: {results}")
    report = _write_report(results, out / "report.html")
    console.print("the real thing:")
    for line in REAL_COMMANDS.splitlines():
        console.print(f"    [bold]{line}[/]", highlight=False, soft_wrap=True)
    console.print(f"quickstart took {time.perf_counter() - start:.0f} s")
    if report is not None:
        console.print(
            f"report of these runs (open it in a browser): [bold]{safe_markup(report)}[/]",
            highlight=False,
            soft_wrap=True,
        )


def _write_report(results: Path, output: Path) -> Path | None:
    """The HTML report of the quickstart's own records (``hmrepro report``); a failure is a warning, not an end."""
    from ..errors import HmreproError
    from ..reporting.report import write_report

    try:
        return write_report(results, output)
    except (HmreproError, OSError) as err:
        console.print(f"[yellow]warning:[/] no report written: {safe_markup(err)}", highlight=False, soft_wrap=True)
        return None

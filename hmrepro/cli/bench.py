"""``hmrepro bench``: inference time per image of a model's FM and HM variants (HM Table 7), with records."""

from __future__ import annotations

import json
import sys
from enum import Enum
from pathlib import Path
from typing import Optional

import typer

from ..models.cards import list_cards
from .common import check_backbone, check_device, console, report_saved

BenchFamily = Enum("BenchFamily", {card.family: card.family for card in list_cards()}, type=str)


def bench_command(
    model: BenchFamily = typer.Option(BenchFamily.hsnet, "--model", "-m", help="Model family: its FM variant (e.g. hsnet) is timed against its HM variant (hsnet-hm)."),
    backbone: str = typer.Option("resnet50", "--backbone", callback=check_backbone, help="resnet50, resnet101 or vgg16."),
    device: Optional[str] = typer.Option(None, "--device", callback=check_device, help="cpu, cuda or cuda:N [default: cuda if available].", show_default=False),
    img_size: Optional[int] = typer.Option(None, "--img-size", min=16, help="Image side in pixels [default: the family's COCO-20i size, 400; VAT 417].", show_default=False),
    runs: int = typer.Option(20, "--runs", min=1, help="Timed runs per model; the median is reported."),
    warmup: int = typer.Option(3, "--warmup", min=0, help="Untimed warm-up runs per model."),
    results: Path = typer.Option(Path("results"), "--results", help="Folder for the bench records."),
    no_record: bool = typer.Option(False, "--no-record", help="Do not write records."),
    as_json: bool = typer.Option(False, "--json", help="Print the records as JSON on stdout."),
) -> None:
    """Time 1-shot inference per image of a model's FM and HM variants (Table 7 of the HM paper).

    Random weights and random inputs at batch size 1 (timing does not depend on them); warm-up, the device
    synchronised around every call, the median of --runs alternating timings; support masking, feature extraction,
    forward pass, upsampling and argmax included, data loading excluded. Prints both times and the HM overhead in
    percent and writes one record per model (kind 'bench') that `hmrepro table 7` shows.

    Example: [bold]hmrepro bench --model hsnet --device cuda --runs 50 && hmrepro table 7[/]

    Example (quick CPU check): [bold]hmrepro bench --device cpu --img-size 200 --runs 3 --results /tmp/bench[/]
    """
    from rich.table import Table

    from ..engine.bench import bench, overhead_pct

    records = bench(
        model.value, backbone=backbone, device=device, img_size=img_size, runs=runs, warmup=warmup,
        results_dir=None if no_record else results,
    )  # fmt: skip
    table = Table(title=f"{model.value} ({backbone}), {records[0]['img_size']} px, 1-shot, {records[0]['device_name']}")
    for col in ("model", "masking", "secs/image (median)", "min", "runs"):
        table.add_column(col, justify="left" if col in ("model", "masking") else "right")
    for r in records:
        table.add_row(r["model"], r["masking"], f"{r['secs_per_image']:.4f}", f"{r['secs_min']:.4f}", str(r["runs"]))
    from rich.console import Console

    Console(stderr=as_json).print(table)
    console.print(f"HM overhead: {overhead_pct(records):+.1f}%  (the paper: 0.27 → 0.34 s, +25.9%)")
    if as_json:
        json.dump(records, sys.stdout, indent=2)
        sys.stdout.write("\n")
    report_saved(records, no_record)

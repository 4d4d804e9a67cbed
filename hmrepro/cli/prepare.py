"""``hmrepro prepare``: lay out datasets the way the readers expect them."""

from __future__ import annotations

from pathlib import Path

import typer

from ..paths import default_synthetic_root
from ..safetext import safe_markup
from . import prepare_datasets
from .common import (
    console,
    optional_option,
    say,
    shell_arg,
)

app = typer.Typer(
    help="Prepare datasets in the layout the readers expect (the synthetic benchmark needs no download).\n\n"
    "Example: [bold]hmrepro download pascal && hmrepro prepare pascal && hmrepro prepare --check pascal[/]",
    no_args_is_help=True,
)


@app.command("synthetic")
def synthetic(
    data_root: Path | None = optional_option("--data-root", help="Where to write it [default: ~/.hmrepro/synthetic]."),
    seed: int = typer.Option(0, "--seed", help="Seed of the generator: the same seed gives the same files."),
    force: bool = typer.Option(False, "--force", help="Rewrite an existing synthetic benchmark."),
    scale: int = typer.Option(
        1,
        "--scale",
        min=1,
        max=50,
        help="Images per class of the PASCAL-like and COCO-like parts, times this: 1 is 3 training and 2 validation "
        "images per PASCAL-like class (every code path, minutes on a CPU); training from a random backbone needs more "
        "to generalise to a fold's new classes, e.g. 8 (README: CRCNet, MCE).",
    ),  # (max = data.synthetic.MAX_SCALE, not imported here so that --help stays light)
) -> None:
    """Write a small procedurally generated benchmark in all three on-disk layouts, plus its split lists.

    PASCAL-like (VOC2012/, 20 classes, 255 boundaries), COCO-like (COCO2014/ with class-mask PNGs and
    instances_*.json, 80 classes) and FSS-like (FSS-1000/<class>/), with split lists in DATA_ROOT/splits.
    Use it with any command that reads data: --data-root DATA_ROOT --splits DATA_ROOT/splits.

    Example: [bold]hmrepro prepare synthetic --data-root synth && hmrepro episodes -b pascal --splits synth/splits[/]

    Example (a larger benchmark for learning checks): [bold]hmrepro prepare synthetic --data-root synth8 --scale 8[/]
    """
    from ..data.synthetic import make_synthetic

    root = (data_root or default_synthetic_root()).expanduser()
    summary = make_synthetic(root, seed=seed, force=force, progress=True, scale=scale)
    console.print(f"[green]synthetic benchmark ready[/] in {safe_markup(root)}", highlight=False, soft_wrap=True)
    for line in summary:
        say(f"  {line}")
    console.print(
        f"next: [bold]hmrepro episodes --benchmark pascal --fold 0 --shot 1 --splits {shell_arg(root / 'splits')}[/]",
        highlight=False,
        soft_wrap=True,
    )


# real datasets (pascal, coco, fss) and `hmrepro prepare --check BENCHMARK` live in prepare_datasets.py
app.callback(invoke_without_command=True)(prepare_datasets.prepare_group)
app.command("pascal")(prepare_datasets.pascal)
app.command("coco")(prepare_datasets.coco)
app.command("fss")(prepare_datasets.fss)

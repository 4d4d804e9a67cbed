"""Options and helpers shared by the CLI commands."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

console = Console(stderr=True)  # human-facing output; stdout stays clean for --json and pipes


class BenchmarkName(str, Enum):
    pascal = "pascal"
    coco = "coco"
    fss = "fss"


DataRootOption = typer.Option(
    None,
    "--data-root",
    envvar="HMREPRO_DATA",
    help="Folder holding VOC2012/, COCO2014/ and FSS-1000/ [default: $HMREPRO_HOME/data, i.e. ~/.hmrepro/data].",
    show_default=False,
)

SplitsOption = typer.Option(
    None,
    "--splits",
    help="Folder of split lists (pascal/, coco/, fss/, SHA256SUMS) [default: the authors' lists shipped with hmrepro]. "
    "For the synthetic benchmark: DATA_ROOT/splits.",
    show_default=False,
)

FoldOption = typer.Option(0, "--fold", "-f", min=0, max=3, help="Fold of the benchmark (0-3).")
ShotOption = typer.Option(1, "--shot", "-k", min=1, max=10, help="Support images per episode (the paper: 1 or 5).")


def fail(message: str, code: int = 1) -> None:
    """Print an actionable error and exit (no traceback)."""
    console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def optional_path(value: Optional[Path]) -> Optional[Path]:
    return value.expanduser() if value is not None else None

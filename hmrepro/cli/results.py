"""``hmrepro results``: every result record as one table (CSV, JSON, Parquet or a terminal table), filterable."""

from __future__ import annotations

from enum import Enum
from pathlib import Path

import typer

from ..safetext import safe_markup
from .common import RecordsFolderOption, console, fail, say
from .table import PaperName

DEFAULT_RESULTS = Path("results")
RICH_COLUMNS = (
    "model",
    "backbone",
    "benchmark",
    "fold",
    "shot",
    "origin",
    "precision",
    "img_size",
    "episodes",
    "miou",
    "fb_iou",
    "date",
    "cells",
    "why_not",
)


class ResultsFormat(str, Enum):
    rich = "rich"
    csv = "csv"
    json = "json"
    parquet = "parquet"


def results(
    results_dir: Path | None = RecordsFolderOption,
    fmt: ResultsFormat = typer.Option(
        ResultsFormat.rich, "--format", help="rich (a terminal table of the main columns), csv, json or parquet."
    ),
    where: str | None = typer.Option(
        None,
        "--where",
        help="Keep the rows for which this pandas query holds, e.g. 'model == \"hsnet-hm\" and fills_cell'.",
    ),
    paper: PaperName = typer.Option(
        PaperName.hm, "--paper", help="Whose tables decide which cell a record fills: hm, crcnet or mce."
    ),
    output: Path | None = typer.Option(
        None, "--output", "-o", help="Write to this file instead of stdout (needed for parquet)."
    ),
) -> None:
    """Every result record as one table, one row per record, filterable.

    The columns: what was evaluated, how (origin, precision, image size, episodes), the numbers, the checkpoint's
    sha256, the run folder, the date, the machine, and the table cell it fills or why it fills none.

    Example: [bold]hmrepro results --results results/ --format csv --where 'model == "hsnet-hm"'[/]

    Example: [bold]hmrepro results --format parquet -o records.parquet[/] (needs pyarrow: pip install
    'hmrepro\\[parquet]')
    """
    if fmt is ResultsFormat.parquet and output is None:
        fail("--format parquet writes a binary file: give it with -o FILE.parquet")
    from ..reporting.results import load

    folder = _results_dir(results_dir)
    frame = load(folder, paper=paper.value)
    for line in frame.attrs.get("skipped_records", []):
        console.print(f"[yellow]warning:[/] {safe_markup(line)}", highlight=False, soft_wrap=True)
    found = len(frame)
    if where:
        frame = _filter(frame, where)
    if len(frame) == 0 and fmt is ResultsFormat.rich and output is None:  # an empty table says nothing
        say(_nothing_to_show(folder, found, where))
        return
    _emit(frame, fmt, output)


def _nothing_to_show(folder: Path, found: int, where: str | None) -> str:
    if found:
        return f"none of the {found} result record(s) under {folder} satisfies --where {where!r}"
    return f"no result records under {folder} (hmrepro eval writes them to --results, ./results by default)"


def _results_dir(results_dir: Path | None) -> Path:
    if results_dir is None:
        return DEFAULT_RESULTS
    results_dir = results_dir.expanduser()
    if not results_dir.is_dir():
        fail(f"results folder not found: {results_dir} (give --results DIR, the folder the evaluations wrote to)")
    return results_dir


def _filter(frame, where: str):
    """``frame.query(where)``; a bad expression is one line naming it (never a traceback)."""
    try:
        kept = frame.query(where)
    except Exception as err:  # pandas raises many kinds for a bad expression
        reason = " ".join(str(err).split()) or type(err).__name__
        fail(f"--where {where!r} is not a query over the columns ({type(err).__name__}: {reason})")
    if not hasattr(kept, "columns") or len(kept.columns) != len(frame.columns):
        fail(f"--where {where!r} must be a condition on the rows (e.g. 'model == \"hsnet-hm\"')")
    return kept


def _emit(frame, fmt: ResultsFormat, output: Path | None) -> None:
    if fmt is ResultsFormat.parquet:
        _write_parquet(frame, output)
        return
    if fmt is ResultsFormat.rich and output is None:
        _print_rich(frame)
        return
    if fmt is ResultsFormat.json:
        text = frame.to_json(orient="records", indent=1, force_ascii=False) + "\n"
    else:
        text = frame.to_csv(index=False, lineterminator="\n")
    if output is None:
        typer.echo(text, nl=False)
        return
    from ..atomic import atomic_write_text

    atomic_write_text(output, text, what="results table")
    say(f"{len(frame)} record(s) ({fmt.value}) written to {output}")


def _write_parquet(frame, output: Path) -> None:
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        fail("--format parquet needs pyarrow: pip install 'hmrepro[parquet]' (or pip install pyarrow)")
    from ..atomic import atomic_open

    with atomic_open(output, "wb", what="results table") as handle:
        frame.to_parquet(handle, index=False)
    say(f"{len(frame)} record(s) (parquet) written to {output}")


def _print_rich(frame) -> None:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    table = Table(title=f"{len(frame)} result record(s)", title_justify="left")
    for column in RICH_COLUMNS:
        table.add_column(column, justify="right" if column in ("fold", "shot", "img_size", "episodes") else "left")
    for _, row in frame.iterrows():
        table.add_row(*(Text(_cell(row[column])) for column in RICH_COLUMNS))  # record strings are never markup
    Console().print(table)


def _cell(value) -> str:
    import pandas as pd

    if value is None or value is pd.NA or (isinstance(value, float) and pd.isna(value)):
        return ""
    return f"{value:.1f}" if isinstance(value, float) else str(value)

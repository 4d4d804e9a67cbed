"""``hmrepro analyze sizes``: the small-object test — mIoU per object-size bin of paired records, with intervals."""

from __future__ import annotations

import math
from enum import Enum
from pathlib import Path

import typer
from rich.markup import escape
from rich.table import Table

from .common import (
    figure_option,
    optional_option,
    print_json,
    print_warnings,
    say,
)
from .compare import MAX_RESAMPLES, SeedOption

app = typer.Typer(
    help=(
        "Analyses of per-episode results.\n\n"
        "Example: [bold]hmrepro analyze sizes results/fm/ results/hm/ -o sizes.png[/]"
    ),
    no_args_is_help=True,
)


class SizeOf(str, Enum):
    query = "query"
    support = "support"


def _edges(value: str | None) -> list[float] | None:
    if value is None:
        return None
    try:
        edges = [float(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise typer.BadParameter(f"{value!r}: give comma-separated fractions, e.g. 0,0.05,0.15,1") from None
    finite = all(math.isfinite(e) for e in edges)
    increasing = all(low < high for low, high in zip(edges, edges[1:]))
    if len(edges) < 2 or not finite or not increasing or edges[0] < 0 or edges[-1] > 1:
        raise typer.BadParameter(
            f"{value!r}: give at least two strictly increasing fractions between 0 and 1, e.g. 0,0.05,0.15,1"
        )
    return edges


@app.command("sizes")
def sizes(
    records: list[str] = typer.Argument(
        ...,
        metavar="RECORD...",
        help="Two or more sets: each a record file, a folder of records (one per fold) or a glob pattern. The first "
        "is the baseline (e.g. FM), the others are compared with it (e.g. HM).",
        show_default=False,
    ),
    by: SizeOf = typer.Option(
        SizeOf.query, "--by", help="Bin by the query's foreground fraction or the supports' (mean over shots)."
    ),
    bins: int = typer.Option(5, "--bins", min=1, max=50, help="Quantile bins of the first set's episodes."),
    edges: str | None = optional_option(
        "--edges",
        callback=_edges,
        help="Bin edges as foreground fractions instead of quantiles, e.g. 0,0.05,0.15,1 [default: quantiles].",
    ),
    resamples: int = typer.Option(
        2000,
        "--resamples",
        min=100,
        max=MAX_RESAMPLES,
        help=f"Bootstrap resamples per bin (and permutations), 100 to {MAX_RESAMPLES:,}.",
    ),
    seed: int = SeedOption,
    output: Path = figure_option("sizes.png"),
    as_json: bool = typer.Option(False, "--json", help="Print the bins as JSON on stdout."),
) -> None:
    """mIoU per object-size bin for each set of records, the paired difference to the first set per bin with its
    95 % interval, and a figure of both (IoU vs object size, intervals as bands).

    Object size = the foreground share of the query image (--by support: of the support images). Bins are
    quantiles of the first set's episodes (equal counts) or --edges. The sets must hold the same episodes (same
    benchmark, folds, shot, episode draw); several folds are pooled. A bin's mIoU averages the classes present in
    the bin.

    Example:
    [bold]hmrepro analyze sizes results/eval_hsnet_*fold0*.json results/eval_hsnet-hm_*fold0*.json -o sizes.png[/]

    Example:
    [bold]hmrepro analyze sizes 'results/fm/*.json' 'results/hm/*.json' --edges 0,0.05,0.15,0.3,1 --by support[/]
    """
    from ..reporting.paired import load_set
    from ..reporting.sizes import analyze_sizes, plot_sizes

    if len(records) < 2:
        raise typer.BadParameter(
            "give at least two sets of records: the baseline and the model compared with it", param_hint="RECORD..."
        )
    problems: list[str] = []
    sets = [load_set(spec, problems) for spec in records]
    print_warnings(problems)  # record files of a folder that were left out
    analysis = analyze_sizes(sets, by=by.value, bins=bins, edges=edges, resamples=resamples, seed=seed)
    path = plot_sizes(analysis, output)
    if as_json:
        print_json({**analysis.to_json(), "figure": str(path)})
    else:
        _print(analysis)
    say(f"wrote {path}")


def _print(analysis) -> None:
    from rich.console import Console

    from ..reporting.sizes import bin_label
    from ..safetext import safe_markup

    first = analysis.labels[0]
    table = Table(
        title=f"mIoU by {analysis.by} object size ({analysis.resamples} resamples, seed {analysis.seed})",
        title_justify="left",
    )
    table.add_column("size (fg share)")
    table.add_column("episodes", justify="right")
    for label in analysis.labels:
        table.add_column(safe_markup(label), justify="right")
    for label in analysis.labels[1:]:
        table.add_column(safe_markup(f"{label} − {first}"), justify="right")
    for b in analysis.bins:
        if b.episodes == 0:
            table.add_row(bin_label(b.low, b.high), "0", *["—"] * (2 * len(analysis.labels) - 1))
            continue
        values = [escape(f"{v.value:.1f} [{v.low:.1f}, {v.high:.1f}]") for v in b.values]
        deltas = [
            escape(f"{d.delta_miou:+.1f} [{d.ci95[0]:+.1f}, {d.ci95[1]:+.1f}] p={d.p_value:.3f}") for d in b.deltas
        ]
        table.add_row(bin_label(b.low, b.high), str(b.episodes), *values, *deltas)
    Console().print(table)

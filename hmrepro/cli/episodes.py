"""``hmrepro episodes``: list the authors' evaluation episodes of a benchmark fold."""

from __future__ import annotations

from pathlib import Path

import typer

from .common import (
    BenchmarkName,
    BenchmarkOption,
    FoldOption,
    ShotOption,
    SplitsOption,
    choices,
    console,
    fail,
    plain,
    print_json,
)

Protocol = choices("Protocol", ("hsnet", "asnet", "bam"))  # hmrepro.data.episodes.PROTOCOLS and BAM's
EvalSplit = choices("EvalSplit", ("test", "val"))


def episodes(
    benchmark: BenchmarkName = BenchmarkOption,
    fold: int = FoldOption,
    shot: int = ShotOption,
    protocol: Protocol = typer.Option(
        Protocol.hsnet,
        "--protocol",
        help="Episode sampler: hsnet (HSNet, HM, VAT), asnet (reseeded per episode) "
        "or bam (MCE: BAM's 5 seeds x 1000).",
    ),
    split: EvalSplit = typer.Option(
        EvalSplit.test, "--split", help="test, or val (the validation episodes of training; differs for FSS-1000 only)."
    ),
    seed: int = typer.Option(0, "--seed", help="Seed of the hsnet protocol (the authors use 0)."),
    as_json: bool = typer.Option(
        False, "--json", help="Print the list as JSON: [[query, [supports...], class_id], ...]."
    ),
    limit: int = typer.Option(10, "--limit", "-n", min=0, help="Rows to show in the table view (0: all)."),
    splits: Path | None = SplitsOption,
) -> None:
    """List the fixed evaluation episodes, drawn exactly as the authors' evaluation draws them.

    No image is read: the list depends only on the split lists, fold, shot and seed.
    FSS-1000 has a single split: its episodes are the same for every fold (the authors ignore the fold).

    Example: [bold]hmrepro episodes --benchmark pascal --fold 0 --shot 5 --json > episodes.json[/]
    """
    from rich.table import Table

    from ..data.benchmarks import test_episodes
    from ..data.splits import SplitFolder

    if protocol is Protocol.bam:
        _bam_episodes(benchmark.value, fold, shot, SplitFolder(splits), as_json, limit)
        return
    try:
        eps = test_episodes(
            benchmark.value,
            fold,
            shot,
            protocol=protocol.value,
            split=split.value,
            splits=SplitFolder(splits),
            seed=seed,
        )
    except ValueError as err:
        fail(str(err), code=2)
    if as_json:
        print_json([e.to_json() for e in eps], indent=None)
        return
    table = Table(title=f"{benchmark.value} fold {fold}, {shot}-shot, protocol {protocol.value}: {len(eps)} episodes")
    table.add_column("#", justify="right")
    table.add_column("query")
    table.add_column("supports")
    table.add_column("class", justify="right")
    shown = eps if limit == 0 else eps[:limit]
    for i, e in enumerate(shown):
        table.add_row(str(i), plain(e.query), plain(", ".join(e.supports)), str(e.class_id))
    from rich.console import Console

    Console().print(table)
    if len(shown) < len(eps):
        console.print(f"… {len(eps) - len(shown)} more (use --limit 0 or --json for all)")


def _bam_episodes(benchmark: str, fold: int, shot: int, splits, as_json: bool, limit: int) -> None:
    """BAM's five evaluation runs: JSON ``{"protocol": "bam", "seeds": [...], "runs": {seed: episodes}}``."""
    from rich.console import Console
    from rich.table import Table

    from ..data.bam import bam_test_episodes

    try:
        runs = bam_test_episodes(benchmark, fold, shot, splits)
    except ValueError as err:
        fail(str(err), code=2)
    if as_json:
        listing = {str(seed): [e.to_json() for e in eps] for seed, eps in runs}
        print_json({"protocol": "bam", "seeds": [seed for seed, _ in runs], "runs": listing}, indent=None)
        return
    for seed, eps in runs:
        table = Table(title=f"{benchmark} fold {fold}, {shot}-shot, protocol bam, seed {seed}: {len(eps)} episodes")
        for col, justify in (("#", "right"), ("query", "left"), ("supports", "left"), ("class", "right")):
            table.add_column(col, justify=justify)
        shown = eps if limit == 0 else eps[:limit]
        for i, e in enumerate(shown):
            table.add_row(str(i), plain(e.query), plain(", ".join(e.supports)), str(e.class_id))
        Console().print(table)

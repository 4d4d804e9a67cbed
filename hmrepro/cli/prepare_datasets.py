"""``hmrepro prepare {pascal,coco,fss}`` and ``hmrepro prepare --check {pascal,coco,fss}``: real-dataset layouts.

The archives come from ``hmrepro download`` (verified); these commands extract them safely into the
layout the readers expect and then check that every file the split lists name is there.
"""

from __future__ import annotations

import posixpath
import shlex
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import typer

from ..acquisition.lock import LockFile
from ..acquisition.parallel import default_workers
from ..acquisition.registry import load_registry
from ..acquisition.steps import PrepareContext
from ..data.splits import SplitFolder
from ..paths import resolve_data_root
from ..safetext import safe_markup
from .common import BenchmarkName, DataRootOption, QuietOption, SplitsOption, console, option_group, say
from .rich_progress import RichProgress

SHOW_MISSING = 10
NAMES = {"pascal": "PASCAL-5i", "coco": "COCO-20i", "fss": "FSS-1000"}

CheckFlag = typer.Option(
    False,
    "--check",
    help="Only check the layout (every listed image and mask exists and a sample decodes); exit 1 if not.",
)
WorkersOption = typer.Option(default_workers(), "--workers", "-j", min=1, help="Worker processes for mask generation.")
ForceOption = typer.Option(False, "--force", help="Extract and place again even if it was done before.")


def report_check(benchmark: str, data_root: Path, splits: Path | None, full: bool = False) -> bool:
    """Print the layout check of ``benchmark`` (every file decoded and validated with ``full``); True if complete."""
    from ..acquisition.check import check_layout  # imports torch (through data.benchmarks): not at start-up

    with RichProgress(enabled=full) as progress:
        report = check_layout(benchmark, data_root, SplitFolder(splits), full=full, progress=progress)
    name = NAMES[benchmark]
    if report.ok:
        decoded = f"all {report.sampled} decode" if full else f"{report.sampled} sampled files decode"
        console.print(
            f"[green]{name} layout OK[/] in {safe_markup(data_root)}: all {report.referenced} images and masks named "
            f"by the split lists exist; {decoded} and the masks are valid (values, size).",
            highlight=False,
            soft_wrap=True,
        )
        return True
    console.print(
        f"[bold red]{name} layout incomplete[/] in {safe_markup(data_root)} "
        f"({report.referenced} files named by the split lists)",
        highlight=False,
        soft_wrap=True,
    )
    if report.missing:
        console.print(f"{len(report.missing)} missing:", highlight=False)
        for folder, n in Counter(posixpath.dirname(p) for p in report.missing).most_common(8):
            say(f"  {n:>7} in {folder}/")
        console.print(f"first {min(SHOW_MISSING, len(report.missing))}:", highlight=False)
        for p in report.missing[:SHOW_MISSING]:
            say(f"  {p}")
    if report.unreadable:
        console.print(
            f"{len(report.unreadable)} of {report.sampled} decoded files are unreadable or invalid:", highlight=False
        )
    for _, why in report.unreadable[: SHOW_MISSING * 2]:
        say(f"  {why}")
    if len(report.unreadable) > SHOW_MISSING * 2:
        console.print(f"  … and {len(report.unreadable) - SHOW_MISSING * 2} more", highlight=False)
    console.print(f"fetch them with: [bold]{safe_markup(report.fetch_command())}[/]", highlight=False, soft_wrap=True)
    return False


def _check_or_exit(benchmark: str, data_root: Path, splits: Path | None, full: bool = False) -> None:
    if not report_check(benchmark, data_root, splits, full):
        raise typer.Exit(1)


@dataclass
class Preparation:
    """The options of every ``prepare`` command of a real dataset (FSS-1000 has no masks to generate: 1 worker)."""

    data_root: Path | None = DataRootOption
    check: bool = CheckFlag
    splits: Path | None = SplitsOption
    workers: int = WorkersOption
    force: bool = ForceOption
    quiet: bool = QuietOption


def _context(benchmark: str, preparation: Preparation) -> PrepareContext:
    root = resolve_data_root(preparation.data_root)
    return PrepareContext(
        data_root=root,
        lock=LockFile.for_data_root(root),
        fetch_command=f"hmrepro download {benchmark} --data-root {shlex.quote(str(root))}",
        force=preparation.force,
        progress=not preparation.quiet,
        workers=preparation.workers,
        console=console,
        log=lambda msg: console.print(f"[yellow]{safe_markup(msg)}[/]", highlight=False, soft_wrap=True),
    )


def _prepare(benchmark: str, preparation: Preparation, **choices) -> None:
    """Extract ``benchmark`` (``choices``: its command's own options), saying what was done, then check its layout;
    with ``--check`` only check it."""
    ctx = _context(benchmark, preparation)
    if not preparation.check:
        for line in _extract(benchmark, ctx, **choices):
            say(f"  {line}")
    _check_or_exit(benchmark, ctx.data_root, preparation.splits)


def _extract(benchmark: str, ctx: PrepareContext, **choices) -> list[str]:
    """Extract ``benchmark``'s archives into its layout; lines saying what was done."""
    if benchmark == "pascal":  # the steps import numpy and PIL: not at start-up
        from ..acquisition.prepare_pascal import prepare_pascal as prepare
    elif benchmark == "coco":
        from ..acquisition.prepare_coco import prepare_coco as prepare
    else:
        from ..acquisition.prepare_fss import prepare_fss as prepare
    return prepare(ctx, load_registry(), **choices)


@option_group("preparation", Preparation)
def pascal(
    *,
    preparation: Preparation,
    from_sbd: bool = typer.Option(
        False,
        "--from-sbd",
        help="Build SegmentationClassAug from VOC + SBD (needs `hmrepro download pascal --with-sbd` and scipy).",
    ),
) -> None:
    """Extract PASCAL VOC 2012 and the SBD-augmented masks into DATA_ROOT/VOC2012/ (JPEGImages, SegmentationClassAug).

    With --from-sbd the augmented masks are built from the SBD release instead of the authors' zip: VOC's mask is
    used where both exist. Afterwards the layout is checked against the split lists.

    Example: [bold]hmrepro download pascal && hmrepro prepare pascal[/]
    (check only: [bold]hmrepro prepare --check pascal[/])
    """
    _prepare("pascal", preparation, from_sbd=from_sbd)


@option_group("preparation", Preparation)
def coco(
    *,
    preparation: Preparation,
    from_json: bool = typer.Option(
        False,
        "--from-json",
        help="Regenerate the class masks from instances_*.json with pycocotools "
        "(approximate; needs `hmrepro download coco --with-json`).",
    ),
) -> None:
    """Extract COCO 2014 images and class masks into DATA_ROOT/COCO2014/.

    The folders: {train,val}2014/ and annotations/{train,val}2014/.

    The masks come from the authors' archives by default. --from-json regenerates them (crowd annotations
    skipped, later instances on top, pixel = 1 + class index): close to, but not byte-identical with, the authors'.

    Example: [bold]hmrepro download coco && hmrepro prepare coco[/]
    or [bold]hmrepro prepare coco --from-json -j 8[/]
    """
    _prepare("coco", preparation, from_json=from_json)


def fss(
    data_root: Path | None = DataRootOption,
    check: bool = CheckFlag,
    splits: Path | None = SplitsOption,
    force: bool = ForceOption,
    quiet: bool = QuietOption,
) -> None:
    """Extract FSS-1000 into DATA_ROOT/FSS-1000/<class>/{1..10}.jpg|png and check it against the split lists.

    Example: [bold]hmrepro download fss && hmrepro prepare fss[/]
    """
    _prepare("fss", Preparation(data_root, check, splits, workers=1, force=force, quiet=quiet))


def prepare_group(
    ctx: typer.Context,
    check: BenchmarkName | None = typer.Option(
        None,
        "--check",
        metavar="BENCHMARK",
        help="Check the layout of pascal, coco or fss (every listed image and mask exists, a sample decodes); "
        "exit 1 if not.",
    ),
    data_root: Path | None = DataRootOption,
    splits: Path | None = SplitsOption,
    full: bool = typer.Option(
        False,
        "--full",
        help="With --check: decode and validate every image and mask, not a sample (slow: minutes for COCO).",
    ),
) -> None:
    """Prepare datasets in the layout the readers expect, or check one.

    The check looks for every file the split lists name, then decodes a sample of image/mask pairs and validates
    the masks (single-channel, values that are classes of the benchmark, the size of their image); --full does
    so for every pair.

    Example: [bold]hmrepro prepare --check pascal --data-root ~/data[/]
    (everything: [bold]hmrepro prepare --check pascal --full[/])
    """
    if check is None:
        if full:
            console.print(
                "[bold red]error:[/] --full goes with --check BENCHMARK (e.g. hmrepro prepare --check pascal --full)"
            )
            raise typer.Exit(2)
        if ctx.invoked_subcommand is None:
            console.print(ctx.get_help())
            raise typer.Exit(0)
        return
    if ctx.invoked_subcommand is not None:
        console.print("[bold red]error:[/] use either --check BENCHMARK or a command, not both")
        raise typer.Exit(2)
    _check_or_exit(check.value, resolve_data_root(data_root), splits, full)
    raise typer.Exit(0)

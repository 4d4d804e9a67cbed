"""``hmrepro compare A B``: is B better than A, beyond the noise of the episode draw?

Paired bootstrap + permutation."""

from __future__ import annotations

import typer
from rich.markup import escape
from rich.table import Table

MAX_RESAMPLES = 1_000_000  # about 100 s of resampling on 1000 episodes; memory stays bounded (stats.BLOCK)
ResamplesOption = typer.Option(
    10_000,
    "--resamples",
    min=100,
    max=MAX_RESAMPLES,
    help=f"Bootstrap resamples (and permutations), 100 to {MAX_RESAMPLES:,}.",
)
SeedOption = typer.Option(0, "--seed", min=0, help="Seed of the resampling (same seed, same interval).")


def compare(
    a: str = typer.Argument(
        ...,
        metavar="A",
        help="Record file, folder of records (one per fold) or glob pattern: the baseline.",
        show_default=False,
    ),
    b: str = typer.Argument(
        ..., metavar="B", help="The same for the model compared with A (the difference is B − A).", show_default=False
    ),
    resamples: int = ResamplesOption,
    seed: int = SeedOption,
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON on stdout."),
) -> None:
    """Compare two evaluations of the same episodes: ΔmIoU and ΔFB-IoU (B − A) with a 95 % paired bootstrap
    interval and a paired permutation p-value.

    Each resample draws the fold's episodes with replacement, the same ones for A and B, and recomputes the
    class-accumulated mIoU as the evaluation does; over several folds each fold is resampled on its own and the
    mean over folds is reported, as the tables do. Records of different episodes are refused. The interval covers
    the episode draw only, not training noise (another --seed of training needs its own runs).

    Example: [bold]hmrepro compare results/eval_hsnet_*fold0*.json results/eval_hsnet-hm_*fold0*.json[/]

    Example (four folds, JSON): [bold]hmrepro compare 'results/fm/*.json' 'results/hm/*.json' --json[/]
    """
    from ..errors import HmreproError
    from ..reporting.paired import check_sets_paired, labels_of, load_set
    from ..reporting.stats import compare as paired_compare
    from .common import print_json, print_warnings

    problems: list[str] = []
    set_a, set_b = load_set(a, problems), load_set(b, problems)
    print_warnings(problems)  # record files of a folder that were left out
    check_sets_paired(set_a, set_b)
    try:
        result = paired_compare([x.fold for x in set_a], [x.fold for x in set_b], resamples=resamples, seed=seed)
    except ValueError as err:
        raise HmreproError(f"cannot compare {a} and {b}: {err}") from None
    if as_json:
        payload = {**result.to_json(), "a": [x.path for x in set_a], "b": [x.path for x in set_b]}
        print_json(payload)
        return
    _print(result, *labels_of([set_a, set_b]), [x.fold_number for x in set_a])


def _print(result, label_a: str, label_b: str, folds: list[int]) -> None:
    from ..safetext import safe_markup

    label_a, label_b = safe_markup(label_a), safe_markup(label_b)  # model names come from the record files
    table = Table(
        title=f"B − A over {result.episodes} paired episodes, fold(s) {', '.join(map(str, folds))}",
        title_justify="left",
    )
    for column in ("metric", f"A: {label_a}", f"B: {label_b}", "B − A", "95% interval", "p (permutation)"):
        table.add_column(column, justify="left" if column == "metric" else "right")
    table.add_row(
        "mIoU",
        f"{result.miou_a:.2f}",
        f"{result.miou_b:.2f}",
        f"{result.delta_miou:+.2f}",
        _interval(result.ci95),
        _p(result.p_value),
    )
    table.add_row(
        "FB-IoU",
        f"{result.fb_iou_a:.2f}",
        f"{result.fb_iou_b:.2f}",
        f"{result.delta_fb_iou:+.2f}",
        _interval(result.ci95_fb_iou),
        _p(result.p_value_fb_iou),
    )
    from rich.console import Console

    out = Console()
    if _natural_width(out, table) > out.width:  # COLUMNS=20: the table would cut its numbers to "…"
        _print_lines(out, table)
    else:
        out.print(table)
    verdict = (
        "excludes 0: B differs from A beyond the episode draw"
        if result.ci95[0] > 0 or result.ci95[1] < 0
        else "contains 0: no difference beyond the episode draw"
    )
    out.print(
        f"mIoU interval {verdict} ({result.resamples} resamples, seed {result.seed}; training noise not included)",
        highlight=False,
    )


def _natural_width(out, table) -> int:
    """The width ``table`` needs to show every cell whole."""
    from rich.measure import Measurement

    return Measurement.get(out, out.options.update_width(10_000), table).maximum


def _print_lines(out, table) -> None:
    """``table`` as one line per cell (``metric: column value``): a terminal too narrow for the table still shows
    every number whole."""
    out.print(table.title, highlight=False, soft_wrap=True)
    headers = [column.header for column in table.columns]
    cells = [list(column.cells) for column in table.columns]
    for row in range(table.row_count):
        for header, column in zip(headers[1:], cells[1:]):
            out.print(f"{cells[0][row]}: {header}: {column[row]}", highlight=False, soft_wrap=True)


def _interval(ci: tuple[float, float]) -> str:
    return escape(f"[{ci[0]:+.2f}, {ci[1]:+.2f}]")


def _p(p: float) -> str:
    return f"{p:.4f}" if p >= 1e-4 else f"{p:.1e}"

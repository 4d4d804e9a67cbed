"""``hmrepro table N [--paper hm|crcnet|mce]``: one of a paper's tables, claimed vs verified vs reproduced."""

from __future__ import annotations

from pathlib import Path

import typer

from ..errors import HmreproError
from ..papers import PAPERS
from .common import RecordsFolderOption, choices, console, fail, say

DEFAULT_RESULTS = Path("results")
# hmrepro.reporting.claimed.TABLE_NUMBERS (a test checks), here without importing pandas: `table 9` is refused at once
TABLE_NUMBERS = tuple(range(1, 8))


PaperName = choices("PaperName", PAPERS)  # the papers whose claimed tables hmrepro holds
TableFormat = choices("TableFormat", ("rich", "markdown", "csv", "latex"))  # hmrepro.reporting.render.FORMATS


def _check_table_number(number: int, paper: str) -> None:
    """Refuse a table the paper does not have (exit status 2, naming the allowed values)."""
    from ..papers import get_paper

    tables = TABLE_NUMBERS if paper == "hm" else get_paper(paper).tables
    if number not in tables:
        allowed = ", ".join(map(str, tables))
        whose = "the paper" if paper == "hm" else f"the {paper} paper"
        raise typer.BadParameter(
            f"{whose} has no table {number} with results; choose one of {allowed}", param_hint="'N'"
        )


def table(
    number: int = typer.Argument(
        ..., metavar="N", help="Table of the paper: HM 1-7; CRCNet 1-9, 11-15; MCE 1-4 (its Tables I-IV)."
    ),
    paper: PaperName = typer.Option(
        PaperName.hm,
        "--paper",
        help="Whose table: hm (the HM paper), crcnet (CRCNet, IJCV 2022) or mce (MCE, arXiv "
        "2308.11201); claimed numbers from recipes/claimed/ (hm) or recipes/claimed/<paper>/.",
    ),
    compare_claimed: bool = typer.Option(
        False,
        "--compare-claimed",
        help="Under each row the paper's authors ran (and each reproduced baseline: HSNet, VAT, ASNet), add verified "
        "and reproduced lines with every fold and the difference to the claimed value, and under each HM row a gain "
        "line: reproduced HM − reproduced baseline next to the claimed gain.",
    ),
    ci: bool = typer.Option(
        False,
        "--ci",
        help="With --compare-claimed: the 95 % bootstrap interval over the episodes of every verified/reproduced "
        "cell and the paired interval of every gain, saying whether the claimed gain lies inside (needs records "
        "with per-episode results).",
    ),
    fmt: TableFormat = typer.Option(TableFormat.rich, "--format", help="Output format."),
    results: Path | None = RecordsFolderOption,
    all_records: bool = typer.Option(
        False,
        "--all-records",
        help="Instead of the table, list every result record of its rows: the cell each one fills, or why it fills "
        "none (e.g. '20 of 1000 episodes', 'bf16', 'img 200 ≠ 400', 'original size', 'external checkpoint').",
    ),
    output: Path | None = typer.Option(None, "--output", "-o", help="Write to this file instead of stdout."),
) -> None:
    """Show table N of a paper (the HM paper unless --paper says another): the claimed numbers next to the verified
    (official checkpoints) and reproduced (own training runs) ones from the result records.

    HM tables: 1 PASCAL-5i, 2 COCO-20i, 3 FSS-1000, 4 domain shift COCO-20i to PASCAL-5i, 5 masking ablation,
    6 merging ablation, 7 inference time. Rows quoted by the paper from other papers show their claimed values only,
    except the baselines HSNet, VAT and ASNet (reproduced, so that HM's gains can be); "—" marks a row without
    result records. The CSV has one line per (row, shot). Several training seeds of one cell: mean ± sd (n seeds).

    A cell takes only records of the full protocol: every episode of the fold, the model's default image size,
    fp32, at network resolution; of those the newest. Verified cells take only checkpoints whose sha256 is a
    published one (origin official); a foreign file hmrepro does not know is external and fills no cell. Quick
    checks (--episodes 50), other sizes, bf16 (--amp) and --original-size runs are kept, and --all-records
    lists them with the reason they fill no cell.

    Example: [bold]hmrepro table 2 --compare-claimed --format markdown --results results/ -o table2.md[/]

    Example (intervals and gains): [bold]hmrepro table 1 --compare-claimed --ci --results results/[/]

    Example: [bold]hmrepro table 1 --all-records --results results/[/] (a 50-episode check shows
    "not shown: 50 of 1000 episodes")

    Other papers: [bold]hmrepro table 8 --paper crcnet --format csv[/] (CRCNet's Table 8),
    [bold]hmrepro table 1 --paper mce --compare-claimed[/] (MCE's Table I); rows their authors ran take records.
    """
    _check_table_number(number, paper.value)  # before the imports: a wrong number is refused at once
    from ..reporting.render import build_view, print_rich, render
    from ..reporting.tables import TableQuery, compare_table

    results_dir = _results_dir(results)
    if all_records:
        _show_records(number, results_dir, fmt, output, paper.value)
        return
    try:
        frame = compare_table(TableQuery(number, results_dir, paper=paper.value), ci=ci and compare_claimed)
    except HmreproError as err:
        fail(str(err))
    _warn_skipped(frame)
    if output is None and fmt is TableFormat.rich:
        print_rich(build_view(frame, number, compare_claimed))
        return
    _write(render(frame, number, fmt.value, compare=compare_claimed), number, fmt, output)


def _show_records(
    number: int, results_dir: Path | None, fmt: TableFormat, output: Path | None, paper: str = "hm"
) -> None:
    """``--all-records``: the record listing of table ``number``."""
    from ..reporting.render import build_records_view, print_rich, render_records
    from ..reporting.tables import TableQuery, record_listing

    try:
        listing = record_listing(TableQuery(number, results_dir, paper=paper))
    except HmreproError as err:
        fail(str(err))
    _warn_skipped(listing)
    if output is None and fmt is TableFormat.rich:
        print_rich(build_records_view(listing, number))
        return
    _write(render_records(listing, number, fmt.value), number, fmt, output)


def _warn_skipped(frame) -> None:
    """One line on stderr per record file the table could not use (stdout stays the table)."""
    from ..safetext import safe_markup

    for line in frame.attrs.get("skipped_records", []):
        console.print(f"[yellow]warning:[/] {safe_markup(line)}", highlight=False, soft_wrap=True)


def _write(text: str, number: int, fmt: TableFormat, output: Path | None) -> None:
    """``text`` to stdout, or to ``output`` (saying so)."""
    if output is None:
        typer.echo(text, nl=False)
        return
    from ..atomic import atomic_write_text

    atomic_write_text(output, text, what="table")  # a full disk keeps the old table whole
    say(f"table {number} ({fmt.value}) written to {output}")


def _results_dir(results: Path | None) -> Path | None:
    """The records folder: an explicit one must exist; the default ``./results`` may be absent (no records)."""
    if results is None:
        return DEFAULT_RESULTS if DEFAULT_RESULTS.is_dir() else None
    results = results.expanduser()
    if not results.is_dir():
        fail(f"results folder not found: {results} (give --results DIR, the folder the evaluations wrote to)")
    return results

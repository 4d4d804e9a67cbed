"""``hmrepro report``: one self-contained HTML page with the paper's tables, the claims checklist and the runs."""

from __future__ import annotations

from pathlib import Path

import typer

from ..errors import HmreproError
from .common import RecordsFolderOption, fail, say
from .table import PaperName, _results_dir


def report(
    results: Path | None = RecordsFolderOption,
    paper: PaperName = typer.Option(PaperName.hm, "--paper", help="Whose tables and claims: hm, crcnet or mce."),
    output: Path = typer.Option(Path("report.html"), "--output", "-o", help="The HTML file to write."),
) -> None:
    """Write the reproduction report: one self-contained HTML file a reader can check.

    No network, no external CSS or JS; figures inline. It holds the environment, the paper's headline claims as a
    checklist, every table with claimed, verified and reproduced values side by side (95 % intervals where records have
    per-episode results; "not run" where no record exists), each training run's curve, best epoch, deviations from the
    authors' recipe, checkpoint hash and the commands that repeat it, every record with the cell it fills or why not,
    per-class IoU and the faithfulness table.

    Example: [bold]hmrepro report --results results/ -o report.html[/]
    """
    from ..reporting.report import write_report

    results_dir = _results_dir(results)
    try:
        path = write_report(results_dir, output.expanduser(), paper=paper.value)
    except HmreproError as err:
        fail(str(err))
    size = path.stat().st_size
    say(f"report written to {path} ({size / 1024:.0f} KiB)")
    typer.echo(str(path))

"""The ``hmrepro`` application: registers every command group.

A new command lives in its own module under ``hmrepro/cli/`` and is registered here with one line.
"""

from __future__ import annotations

import typer

from .. import __version__
from ..errors import HmreproError
from . import download as download_cmd
from . import episodes as episodes_cmd
from . import prepare as prepare_cmd
from . import train as train_cmd
from . import eval as eval_cmd
from . import quickstart as quickstart_cmd
from . import table as table_cmd
from . import bench as bench_cmd
from . import domain_shift as domain_shift_cmd
from . import plot as plot_cmd
from . import viz as viz_cmd
from .common import console

app = typer.Typer(
    name="hmrepro",
    help="Reproduce, verify and extend HM: Hybrid Masking for Few-Shot Segmentation (ECCV 2022).",
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

app.command("episodes")(episodes_cmd.episodes)
app.command("train")(train_cmd.train)
app.command("eval")(eval_cmd.eval_command)
app.command("quickstart")(quickstart_cmd.quickstart)
app.command("table")(table_cmd.table)
app.command("bench")(bench_cmd.bench_command)
app.command("domain-shift")(domain_shift_cmd.domain_shift)
app.add_typer(prepare_cmd.app, name="prepare")
app.add_typer(download_cmd.app, name="download")
app.add_typer(plot_cmd.app, name="plot")
app.add_typer(viz_cmd.app, name="viz")


def _version(value: bool) -> None:
    if value:
        print(f"hmrepro {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version and exit."),
) -> None:
    """Reproduce, verify and extend HM: Hybrid Masking for Few-Shot Segmentation (ECCV 2022).

    Example: [bold]hmrepro prepare synthetic && hmrepro episodes --benchmark pascal --fold 0 --shot 1[/]
    """


def main() -> None:
    """Console-script entry point: user errors become one red line and exit status 1, never a traceback."""
    try:
        app()
    except HmreproError as err:
        console.print(f"[bold red]error:[/] {err}", highlight=False, soft_wrap=True)
        raise SystemExit(1) from None

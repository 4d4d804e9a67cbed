"""The ``hmrepro`` application: registers every command group, and the console-script entry point.

A new command lives in its own module under ``hmrepro/cli/`` and is registered in :func:`build_app` with one
line. Command modules import only typer and rich at load time (torch, pandas, matplotlib inside the command
functions), so that ``hmrepro --help``, ``--version`` and argument errors answer at once.

This module itself imports only the standard library: :func:`main` sets up the error boundary
(:mod:`hmrepro.cli.error_boundary`) before typer and the command modules are imported. ``app`` is built on first use
(``from hmrepro.cli.app import app`` works as for any module attribute).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence

from .. import __version__
from . import error_boundary

__all__ = ["app", "build_app", "main", "run"]  # noqa: F822 - app is built on first use (module __getattr__)

# Rich reads "[default: …]" in a help text as a (bad) markup tag and drops it; escaped, it is shown as written.
_UNESCAPED_DEFAULT = re.compile(r"(?<!\\)\[(default:)")


def escape_help_defaults(text: str | None) -> str | None:
    """``"Device [default: cuda]."`` → ``"Device \\[default: cuda]."`` (Rich then prints the brackets)."""
    return _UNESCAPED_DEFAULT.sub(r"\\[\1", text) if text else text


def _escape_tree(command) -> None:
    for param in getattr(command, "params", []):
        if getattr(param, "help", None):
            param.help = escape_help_defaults(param.help)
    for sub in getattr(command, "commands", {}).values():
        _escape_tree(sub)


@functools.cache
def build_app():
    """The typer application with every command registered (imports typer and the command modules)."""
    import typer
    from typer.core import TyperGroup

    from . import analyze as analyze_cmd
    from . import bench as bench_cmd
    from . import compare as compare_cmd
    from . import domain_shift as domain_shift_cmd
    from . import download as download_cmd
    from . import episodes as episodes_cmd
    from . import eval as eval_cmd
    from . import plot as plot_cmd
    from . import prepare as prepare_cmd
    from . import quickstart as quickstart_cmd
    from . import report as report_cmd
    from . import results as results_cmd
    from . import sweep as sweep_cmd
    from . import table as table_cmd
    from . import train as train_cmd
    from . import viz as viz_cmd

    class HmreproGroup(TyperGroup):
        """The root group: makes every "[default: …]" in every option help of every command visible."""

        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            _escape_tree(self)

    application = typer.Typer(
        name="hmrepro",
        cls=HmreproGroup,
        no_args_is_help=True,
        rich_markup_mode="rich",
        pretty_exceptions_enable=False,
        context_settings={"help_option_names": ["-h", "--help"]},
    )
    application.command("episodes")(episodes_cmd.episodes)
    application.command("train")(train_cmd.train)
    application.command("eval")(eval_cmd.eval_command)
    application.command("quickstart")(quickstart_cmd.quickstart)
    application.command("table")(table_cmd.table)
    application.command("domain-shift")(domain_shift_cmd.domain_shift)
    application.add_typer(prepare_cmd.app, name="prepare")
    application.add_typer(download_cmd.app, name="download")
    application.add_typer(plot_cmd.app, name="plot")
    application.add_typer(viz_cmd.app, name="viz")
    application.add_typer(bench_cmd.app, name="bench")
    application.command("compare")(compare_cmd.compare)
    application.command("results")(results_cmd.results)
    application.command("report")(report_cmd.report)
    application.add_typer(analyze_cmd.app, name="analyze")
    application.add_typer(sweep_cmd.app, name="sweep")
    _register_root(application)
    return application


def _version(value: bool) -> None:
    if value:
        import typer

        print(f"hmrepro {__version__}")
        raise typer.Exit()


def _debug(value: bool) -> None:
    if value:
        error_boundary.enable_debug()


def _register_root(application) -> None:
    import typer

    @application.callback()
    def root(
        version: bool = typer.Option(
            False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
        ),
        debug: bool = typer.Option(
            False,
            "--debug",
            callback=_debug,
            is_eager=True,
            help="Show the Python traceback of an error (also: the environment variable HMREPRO_DEBUG=1).",
        ),
    ) -> None:
        """Reproduce, verify and extend HM: Hybrid Masking for Few-Shot Segmentation (ECCV 2022).

        Errors are one line naming the file or value and the fix (exit status 1; 2 for a bad option, 130 after
        Ctrl-C, 143 after SIGTERM); --debug adds the traceback.

        Example: [bold]hmrepro prepare synthetic && hmrepro episodes --benchmark pascal --fold 0 --shot 1[/]
        """


def run(args: Sequence[str] | None = None) -> int:
    """Run ``hmrepro ARGS`` in this process through the error boundary; returns the exit status."""
    return error_boundary.run(args, app_factory=build_app)


def main() -> None:
    """Console-script entry point: every failure one line with its exit status, never a traceback."""
    error_boundary.install_signal_handlers()
    error_boundary.prepare_streams()
    raise SystemExit(run())


def __getattr__(name: str):
    if name == "app":  # `from hmrepro.cli.app import app`: the typer application, built on first use
        return build_app()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

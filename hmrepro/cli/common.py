"""Options and helpers shared by the CLI commands."""

from __future__ import annotations

import functools
import inspect
import json
import shlex
import sys
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

import typer
from rich.console import Console

from ..data.image_cache import DEFAULT_IMAGE_CACHE_MIB
from ..safetext import safe_markup, safe_text

# human-facing output; stdout stays clean for --json and pipes. No emoji codes: a ":fire:" in a path stays as it is.
console = Console(stderr=True, emoji=False)


def optional_option(*names: str, help: str, **settings) -> typer.models.OptionInfo:
    """An option that may be left out (``None``): what the command does then is said in its ``help``
    (``[default: ...]``), not shown by typer."""
    return typer.Option(None, *names, help=help, show_default=False, **settings)


def choices(name: str, values) -> type[Enum]:
    """The allowed values of an option or argument as a ``str`` enum (what typer shows and checks); a member's name
    is its value with ``-`` as ``_`` (``KShotMethod.finetune_fusion`` is ``"finetune-fusion"``)."""
    return Enum(name, {value.replace("-", "_"): value for value in values}, type=str)


BenchmarkName = choices("BenchmarkName", ("pascal", "coco", "fss"))


DataRootOption = optional_option(
    "--data-root",
    envvar="HMREPRO_DATA",
    help="Folder holding VOC2012/, COCO2014/ and FSS-1000/ [default: $HMREPRO_HOME/data, i.e. ~/.hmrepro/data].",
)

SplitsOption = optional_option(
    "--splits",
    help="Folder of split lists (pascal/, coco/, fss/, SHA256SUMS) [default: the authors' lists shipped with hmrepro]. "
    "For the synthetic benchmark: DATA_ROOT/splits.",
)

ImageCacheOption = typer.Option(
    DEFAULT_IMAGE_CACHE_MIB,
    "--image-cache-mib",
    min=0,
    help="MiB of decoded, resized images kept per loading process (each --workers process has its own; 0: off). "
    "Queries and supports recur across a fold's episodes; results are identical either way.",
)

FoldOption = typer.Option(0, "--fold", "-f", min=0, max=3, help="Fold of the benchmark (0-3).")
ShotOption = typer.Option(1, "--shot", "-k", min=1, max=10, help="Support images per episode (the paper: 1 or 5).")
BenchmarkOption = typer.Option(..., "--benchmark", "-b", help="Benchmark.")
ProgressOption = typer.Option(True, "--progress/--no-progress", help="Show progress bars.")
QuietOption = typer.Option(False, "--quiet", "-q", help="No progress bars.")
LoaderWorkersOption = typer.Option(0, "--workers", min=0, help="DataLoader worker processes (pinned memory on CUDA).")


# the result records an evaluation writes (eval, domain-shift)
ResultsOption = typer.Option(Path("results"), "--results", help="Folder for the result records.")
NoRecordOption = typer.Option(False, "--no-record", help="Do not write result records.")
JsonRecordsOption = typer.Option(False, "--json", help="Print the records as JSON on stdout.")
# the result records a report reads (table, results, report)
RecordsFolderOption = optional_option(
    "--results", envvar="HMREPRO_RESULTS", help="Folder of result records (searched recursively) [default: ./results]."
)


def say(text: object) -> None:
    """One line on stderr as plain text: no rich markup or highlighting (a ``[`` in a path is a ``[``), control
    characters escaped, never hard-wrapped (a long path stays on one line in a log file or a pipe)."""
    console.print(safe_text(text), markup=False, highlight=False, emoji=False, soft_wrap=True)


def shell_arg(value: object) -> str:
    """``value`` as one shell word (quoted where it has spaces or quotes: a suggested command can be pasted as
    printed), escaped for a string rich parses as markup."""
    return safe_markup(shlex.quote(str(value)))


def plain(value: object):
    """``value`` as a rich ``Text`` of plain text, for a table cell or title: a ``[`` in a path or a record's field is
    shown, never parsed as markup; control characters are escaped."""
    from rich.text import Text

    return Text(safe_text(value))


def fail(message: str, code: int = 1) -> None:
    """Print an actionable error and exit (no traceback)."""
    console.print(f"[bold red]error:[/] {safe_markup(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def print_json(value, indent: int | None = 2) -> None:
    """``--json``: ``value`` as JSON on stdout, one newline after it."""
    json.dump(value, sys.stdout, indent=indent)
    sys.stdout.write("\n")


def print_warnings(lines: list[str]) -> None:
    """One ``warning:`` line on stderr per line (text from files shown as text: :mod:`hmrepro.safetext`)."""
    from ..safetext import safe_markup

    for line in lines:
        console.print(f"[yellow]warning:[/] {safe_markup(line)}", highlight=False, soft_wrap=True)


def optional_path(value: Path | None) -> Path | None:
    return value.expanduser() if value is not None else None


# --- validated values: a wrong one is a usage error (exit 2) that lists the allowed values ---------------

FIGURE_SUFFIXES = (".png", ".pdf", ".svg")


def check_backbone(value: str | None) -> str | None:
    """``--backbone``: one of the backbones every model family is built on."""
    from ..models.cards import ALL_BACKBONES

    if value is not None and value not in ALL_BACKBONES:
        raise typer.BadParameter(f"{value!r} is not a backbone; choose one of {', '.join(ALL_BACKBONES)}")
    return value


def check_device(value: str | None) -> str | None:
    """``--device``: cpu, cuda, cuda:N or auto (whether CUDA is there is checked when the device is opened)."""
    if value is None:
        return value
    kind, _, index = value.partition(":")
    if value in ("cpu", "cuda", "auto") or (kind == "cuda" and index.isdigit()):
        return value
    raise typer.BadParameter(f"{value!r} is not a device; choose one of cpu, cuda, cuda:N (N = 0, 1, ...), auto")


def check_figure_path(value: Path | None) -> Path | None:
    """``--output`` of a figure: its suffix names the format."""
    if value is not None and value.suffix.lower() not in FIGURE_SUFFIXES:
        raise typer.BadParameter(
            f"{str(value)!r}: unsupported figure format {value.suffix or '(no suffix)'!r}; "
            f"name the file with one of {', '.join(FIGURE_SUFFIXES)}"
        )
    return value.expanduser() if value is not None else value


def figure_option(default: str) -> typer.models.OptionInfo:
    """``--output`` / ``-o``: the figure file to write, ``default`` when not given; its suffix names the format."""
    return typer.Option(
        Path(default), "--output", "-o", callback=check_figure_path, help="Image file (.png, .pdf or .svg)."
    )


BackboneOption = typer.Option("resnet50", "--backbone", callback=check_backbone, help="resnet50, resnet101 or vgg16.")


def device_option(help: str) -> typer.models.OptionInfo:
    """``--device``, checked (:func:`check_device`); not given: the command chooses (said in ``help``)."""
    return optional_option("--device", callback=check_device, help=help)


DeviceOption = device_option("cpu, cuda, cuda:1 ... [default: cuda if available].")


# options several commands take, each with its own help (what the command does when the option is not given)


def img_size_option(help: str) -> typer.models.OptionInfo:
    """``--img-size``: the image side in pixels, at least 16."""
    return optional_option("--img-size", min=16, help=help)


def bsz_option(help: str) -> typer.models.OptionInfo:
    """``--bsz``: episodes (or samples) per batch, at least 1."""
    return optional_option("--bsz", min=1, help=help)


def pretrained_option(help: str) -> typer.models.OptionInfo:
    """``--pretrained/--no-pretrained``: ImageNet backbone weights, on unless switched off."""
    return typer.Option(True, "--pretrained/--no-pretrained", help=help)


def episodes_option(help: str) -> typer.models.OptionInfo:
    """``--episodes``: only the first N of the fixed episodes."""
    return optional_option("--episodes", min=1, help=help)


def episode_seed_option(help: str) -> typer.models.OptionInfo:
    """``--episode-seed``: another draw of the episodes (0: the fixed ones)."""
    return typer.Option(0, "--episode-seed", min=0, help=help)


KShotMethod = choices("KShotMethod", ("finetune-fusion", "finetune", "fusion"))  # hmrepro.models.crcnet.KSHOT_MODES


@dataclass
class InferenceOptions:
    """CRCNet's test-time options, which eval and bench model take: multi-scale testing and the K-shot method."""

    multi_scale: bool = typer.Option(
        False,
        "--multi-scale/--single-scale",
        help="CRCNet: test at 0.75, 1 and 1.25 x the image size and average the probabilities (the paper's headline "
        "numbers; 3 times the work). Kept in the record.",
    )
    kshot: KShotMethod | None = optional_option(
        "--kshot",
        help="CRCNet K-shot method [default: finetune-fusion]: fine-tune a copy of the model on pairs of the episode's "
        "supports, then average the predictions of every support (finetune: the first support only); fusion: average "
        "of K 1-shot predictions, no fine-tuning (the paper's Table 4). Kept in the record.",
    )

    def inference(self) -> dict:
        """The ``inference`` of an evaluation (:mod:`hmrepro.engine.evaluation.inference`): scales, K-shot method."""
        from ..engine.evaluation.inference import MULTI_SCALES

        return {"scales": MULTI_SCALES if self.multi_scale else None, "kshot": self.kshot.value if self.kshot else None}


def report_saved(records: list[dict], no_record: bool) -> None:
    """Say where the records went; a record that could not be saved (its numbers are already printed) is an
    error: one line each, exit status 1."""
    if no_record:
        return
    saved = [r["path"] for r in records if "path" in r]
    if saved:
        say(f"records: {', '.join(saved)}")
    failures = sorted({r["save_error"] for r in records if "save_error" in r})
    for failure in failures:
        console.print(
            f"[bold red]error:[/] {safe_markup(failure)}; the numbers above were not saved",
            highlight=False,
            soft_wrap=True,
        )
    if failures:
        raise typer.Exit(1)


def option_group(name: str, group: type) -> Callable[[Callable], Callable]:
    """Let a command's parameter ``name`` stand for the options several commands share, declared once as the fields
    of the dataclass ``group`` (each field's default a ``typer.Option`` or ``typer.Argument``): the command line shows
    those options in that parameter's place, and the command receives them as one ``group`` instance (a keyword-only
    parameter: ``def plan(*, selection: SweepSelection, as_json: bool = JsonOption)``)."""
    fields = inspect.signature(group, eval_str=True).parameters

    def decorate(command: Callable) -> Callable:
        own = inspect.signature(command, eval_str=True).parameters
        shown = [
            param.replace(kind=inspect.Parameter.KEYWORD_ONLY)
            for own_param in own.values()
            for param in (fields.values() if own_param.name == name else [own_param])
        ]

        @functools.wraps(command)
        def with_group(**values):
            grouped = group(**{field: values.pop(field) for field in fields})
            return command(**values, **{name: grouped})

        with_group.__signature__ = inspect.Signature(shown)
        with_group.__annotations__ = {p.name: p.annotation for p in shown}
        return with_group

    return decorate

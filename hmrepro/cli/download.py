"""``hmrepro download {pascal,coco,fss,backbones,checkpoints,all}``: fetch archives and weights, verified.

Downloads resume after an interruption, retry with backoff, verify sizes and md5/sha256 (published, or
pinned in DATA_ROOT/.hmrepro-lock.json on first download) and skip what is already complete. Archives
you already have are taken from --from DIR (matched by file name, verified, linked: nothing big is copied).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from pathlib import Path

import typer
from rich.table import Table

from ..acquisition.diskspace import human
from ..acquisition.fetch import FetchOptions, acquire, check_from_dirs, destination
from ..acquisition.gdrive import GDrive
from ..acquisition.lock import LockFile
from ..acquisition.published_weights import MODELS, checkpoint_root, download_checkpoints, index_path
from ..acquisition.registry import Registry, Source, load_registry
from ..acquisition.retry import RetryPolicy
from ..paths import resolve_data_root
from ..safetext import safe_markup
from .common import BenchmarkName, DataRootOption, QuietOption, console, option_group, plain, shell_arg

app = typer.Typer(
    help="Download datasets, ImageNet backbones and the authors' checkpoints: resumable, retried, verified.\n\n"
    "Download sources can be overridden (private mirrors, offline tests): HMREPRO_SOURCES=FILE.toml replaces the "
    "packaged registry of files, URLs, Drive ids and checksums (hmrepro/acquisition/sources.toml is the template); "
    "HMREPRO_GDRIVE_URL='http://host/uc?id={id}' (and HMREPRO_GDRIVE_FOLDER_URL for folders) replaces Google "
    "Drive's address. Checksums are verified either way. Two downloads of one file into one data root do not "
    "collide: the second waits for the first.\n\n"
    "Example: [bold]hmrepro download pascal --data-root ~/data[/]   (mirror: [bold]HMREPRO_SOURCES=~/mirror.toml "
    "hmrepro download fss[/])",
    no_args_is_help=True,
)

ModelName = Enum("ModelName", {m.replace("-", "_"): m for m in MODELS}, type=str)

FromOption = typer.Option(
    None, "--from", help="Folder with archives you already have (matched by file name, verified, linked). Repeatable."
)
OnlyOption = typer.Option(None, "--only", help="Fetch only these sources (names as shown by --list). Repeatable.")
ListOption = typer.Option(False, "--list", help="Show what would be fetched (sizes, checksums, mirrors) and exit.")
RetriesOption = typer.Option(5, "--retries", min=1, help="Attempts per mirror (a broken transfer resumes).")
DelayOption = typer.Option(
    2.0, "--retry-delay", min=0.0, help="First wait between attempts in seconds (doubles each time)."
)
TimeoutOption = typer.Option(
    60.0, "--timeout", min=1.0, help="Seconds without data before a connection counts as broken."
)


@dataclass
class Transfer:
    """How every download command transfers: retries, their delay, the timeout, progress bars."""

    retries: int = RetriesOption
    retry_delay: float = DelayOption
    timeout: float = TimeoutOption
    quiet: bool = QuietOption


@dataclass
class Sources:
    """Which files a dataset or backbone download command fetches and where to: the data root, the folders of files
    you already have, ``--only`` some of them, or ``--list`` them instead."""

    data_root: Path | None = DataRootOption
    from_: list[Path] | None = FromOption
    only: list[str] | None = OnlyOption
    list_: bool = ListOption


def _options(from_: list[Path] | None, transfer: Transfer) -> FetchOptions:
    return FetchOptions(
        retry=RetryPolicy(attempts=transfer.retries, base_delay=transfer.retry_delay),
        timeout=transfer.timeout,
        progress=not transfer.quiet,
        gdrive=GDrive.from_env(quiet=transfer.quiet),
        from_dirs=check_from_dirs(from_ or ()),
        log=lambda msg: console.print(f"[yellow]{safe_markup(msg)}[/]", highlight=False, soft_wrap=True),
        console=console,
    )


def _checksum_text(s: Source) -> str:
    if s.md5:
        return f"md5 {s.md5}"
    if s.sha256:
        return f"sha256 {s.sha256[:16]}…"
    if s.sha256_prefix:
        return f"sha256 {s.sha256_prefix}…"
    return "pinned on first download"


def _list(sources: list[Source], data_root: Path) -> None:
    table = Table(title="sources", show_lines=False)
    for col in ("name", "file", "size", "checksum", "mirrors", "destination"):
        table.add_column(col)
    for s in sources:
        table.add_row(
            s.name,
            s.filename,
            human(s.size) if s.size else "?",
            _checksum_text(s),
            str(len(s.candidates)),
            plain(destination(s, data_root)),
        )
    console.print(table)


def _select(registry: Registry, group: str, extra: list[str], only: list[str] | None) -> list[Source]:
    sources = registry.group(group) + [registry[n] for n in extra]
    if only:
        sources = [registry[n] for n in only]
    return sources


def fetch_sources(sources: list[Source], data_root: Path, opts: FetchOptions) -> None:
    """Acquire every source (stop at the first that cannot be fetched) and print a summary table."""
    lock = LockFile.for_data_root(data_root)
    table = Table(show_header=True)
    for col in ("file", "status", "path"):
        table.add_column(col)
    done = []
    try:
        for s in sources:
            console.print(f"[bold]{s.filename}[/] — {s.description}", highlight=False)
            got = acquire(s, data_root, lock, opts)
            done.append(got)
    finally:
        for got in done:
            table.add_row(got.source.filename, got.status, plain(got.path))
        if done:
            console.print(table)


def _run(group: str, chosen: Sources, transfer: Transfer, extra=()) -> Path:
    root = resolve_data_root(chosen.data_root)
    sources = _select(load_registry(), group, list(extra), chosen.only)
    if chosen.list_:
        _list(sources, root)
        raise typer.Exit(0)
    fetch_sources(sources, root, _options(chosen.from_, transfer))
    return root


@app.command("pascal")
@option_group("transfer", Transfer)
@option_group("sources", Sources)
def pascal(
    *,
    sources: Sources,
    with_sbd: bool = typer.Option(
        False, "--with-sbd", help="Also fetch the SBD release (for `hmrepro prepare pascal --from-sbd`)."
    ),
    transfer: Transfer,
) -> None:
    """Fetch VOC 2012 trainval (2 GB, md5-checked) and the SegmentationClassAug masks into DATA_ROOT/downloads/.

    Example: [bold]hmrepro download pascal --data-root ~/data && hmrepro prepare pascal --data-root ~/data[/]
    """
    root = _run("pascal", sources, transfer, extra=["sbd_benchmark"] if with_sbd else [])
    sbd = " --from-sbd" if with_sbd else ""
    console.print(f"next: [bold]hmrepro prepare pascal --data-root {shell_arg(root)}{sbd}[/]", soft_wrap=True)


@app.command("coco")
@option_group("transfer", Transfer)
@option_group("sources", Sources)
def coco(
    *,
    sources: Sources,
    with_json: bool = typer.Option(
        False, "--with-json", help="Also fetch annotations_trainval2014.zip (for `prepare coco --from-json`)."
    ),
    transfer: Transfer,
) -> None:
    """Fetch COCO 2014 train/val images (20 GB, md5-checked) and the authors' class-mask zips into DATA_ROOT/downloads/.

    HSNet's mask zips are also called train2014.zip / val2014.zip: for --from, keep them in DIR/annotations/ or
    DIR/masks/ (or rename them hsnet_coco_masks_train2014.zip / hsnet_coco_masks_val2014.zip).

    Example: [bold]hmrepro download coco --from ~/Downloads && hmrepro prepare coco[/]
    """
    root = _run("coco", sources, transfer, extra=["coco_annotations2014"] if with_json else [])
    console.print(f"next: [bold]hmrepro prepare coco --data-root {shell_arg(root)}[/]", soft_wrap=True)


@app.command("fss")
@option_group("transfer", Transfer)
@option_group("sources", Sources)
def fss(*, sources: Sources, transfer: Transfer) -> None:
    """Fetch FSS-1000 (the authors' Google-Drive zip, with the older ids as fallbacks) into DATA_ROOT/downloads/.

    Example: [bold]hmrepro download fss && hmrepro prepare fss[/]
    """
    root = _run("fss", sources, transfer)
    console.print(f"next: [bold]hmrepro prepare fss --data-root {shell_arg(root)}[/]", soft_wrap=True)


@app.command("backbones")
@option_group("transfer", Transfer)
@option_group("sources", Sources)
def backbones(
    *,
    sources: Sources,
    legacy: bool = typer.Option(
        False, "--legacy", help="Also fetch the torchvision <= 0.9 ResNet files the authors' environments used."
    ),
    transfer: Transfer,
) -> None:
    """Fetch the ImageNet weights of ResNet-50/101 and VGG-16 (IMAGENET1K_V1) into torch's hub cache (sha256-checked).

    Files go to torch.hub.get_dir()/checkpoints/, where torchvision finds them without network.

    Example: [bold]hmrepro download backbones --legacy[/]
    """
    _run("backbones", sources, transfer, extra=["resnet50_legacy", "resnet101_legacy"] if legacy else [])


def _print_entries(entries, root: Path) -> None:
    table = Table(title=plain(f"official weights recorded in {index_path(root)}"))
    for col in ("model", "backbone", "benchmark", "fold", "file"):
        table.add_column(col)
    for e in entries:
        table.add_row(*(plain(v) for v in (e.model, e.backbone, e.benchmark, e.fold, e.path)))
    console.print(table)


@app.command("checkpoints")
@option_group("transfer", Transfer)
def checkpoints(
    model: ModelName = typer.Option("hsnet-hm", "--model", "-m", help="Whose weights."),
    benchmark: BenchmarkName | None = typer.Option(
        None, "--benchmark", "-b", help="Only this benchmark [default: all]."
    ),
    data_root: Path | None = DataRootOption,
    from_: list[Path] | None = typer.Option(
        None, "--from", help="A folder you downloaded yourself (e.g. in a browser): its weight files are recorded."
    ),
    *,
    transfer: Transfer,
) -> None:
    """Fetch the authors' published weights into DATA_ROOT/checkpoints/ and record which file serves which
    (model, backbone, benchmark, fold), for [bold]hmrepro eval --weights official[/].

    Example: [bold]hmrepro download checkpoints --model hsnet-hm --benchmark coco[/]
    """
    root = resolve_data_root(data_root)
    opts = _options(None, transfer)
    entries = download_checkpoints(
        model.value,
        benchmark=benchmark.value if benchmark else None,
        data_root=root,
        opts=opts,
        from_dirs=check_from_dirs(from_ or ()),
    )
    if entries:
        _print_entries(entries, checkpoint_root(root))
    else:
        console.print(
            f"[yellow]no weight file could be matched to a (backbone, benchmark, fold); see 'unassigned' in "
            f"{safe_markup(index_path(checkpoint_root(root)))}[/]",
            highlight=False,
            soft_wrap=True,
        )


@app.command("all")
@option_group("transfer", Transfer)
def all_(
    data_root: Path | None = DataRootOption,
    from_: list[Path] | None = FromOption,
    model: ModelName = typer.Option("hsnet-hm", "--model", "-m", help="Whose checkpoints to fetch as well."),
    *,
    transfer: Transfer,
) -> None:
    """Fetch everything the paper's experiments need: PASCAL, COCO, FSS-1000, the backbones and one model's checkpoints.

    About 25 GB; already complete files are skipped, so it can be rerun after an interruption.

    Example: [bold]hmrepro download all --data-root /big/disk/hmrepro --model hsnet-hm[/]
    """
    root = resolve_data_root(data_root)
    registry = load_registry()
    opts = _options(from_, transfer)
    sources = [s for g in ("pascal", "coco", "fss", "backbones") for s in registry.group(g)]
    fetch_sources(sources, root, opts)
    entries = download_checkpoints(model.value, data_root=root, registry=registry, opts=opts, from_dirs=())
    _print_entries(entries, checkpoint_root(root))
    console.print(
        f"next: [bold]hmrepro prepare pascal && hmrepro prepare coco && hmrepro prepare fss[/] "
        f"(--data-root {shell_arg(root)})",
        soft_wrap=True,
    )

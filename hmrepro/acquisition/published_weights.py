"""The authors' published weights: fetch them, record which file serves which run, resolve ``--weights official``.

Downloads go to ``<data_root>/checkpoints/<source>/`` (Drive folders through gdown; the file names inside
are not published, so every file is pinned by sha256 in the lock on first download). The record
``<data_root>/checkpoints/index.json`` maps (model, backbone, benchmark, fold) to a file; it is built by
reading the folder names (``res101_pas/res101_pas_fold0/best_model.pt``, ``pascal_resnet50_fold2/...``).
Loading and normalising the checkpoint formats is :mod:`hmrepro.engine.checkpoint_io`' job, not this module's.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tarfile
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path

from ..atomic import atomic_write_text
from ..errors import CorruptFileError, InvalidInputError, MissingDataError
from ..locks import exclusive_lock, lock_path_for
from ..models.cards import list_cards, published_checkpoints
from ..paths import default_data_root
from .download_errors import ChecksumError, DownloadError
from .extract import extract
from .fetch import FetchOptions
from .lock import LockFile
from .registry import Registry, Source, load_registry
from .verify import file_digests

BASE_LEARNERS = ("pspnet",)
"""Published networks that are no few-shot model: BAM's PSPNet base learners, whose encoder MCE freezes (no card;
``sources.toml`` says what ``bam_pspnet`` serves)."""
MODELS = tuple(dict.fromkeys(p.model for p in published_checkpoints())) + BASE_LEARNERS
"""The models whose authors published weights (the cards' ``published``), e.g. ``hsnet``, ``hsnet-nofm``, and
:data:`BASE_LEARNERS`."""
BENCHMARKS = ("pascal", "coco", "fss")
BACKBONES = ("vgg16", "resnet50", "resnet101")
WEIGHT_SUFFIXES = (".pt", ".pth", ".ckpt", ".pth.tar")
INDEX_NAME = "index.json"
COMPLETE = ".hmrepro-complete.json"
LOCAL_ORIGIN = "local"


@dataclass(frozen=True)
class CheckpointEntry:
    model: str
    backbone: str
    benchmark: str
    fold: int
    path: str  # relative to the checkpoint root
    sha256: str
    source: str

    @property
    def key(self) -> tuple[str, str, str, int]:
        return (self.model, self.backbone, self.benchmark, self.fold)


def checkpoint_root(data_root: Path | None = None) -> Path:
    return Path(data_root or default_data_root()).expanduser() / "checkpoints"


def fetch_command(model: str, benchmark: str | None = None) -> str:
    cmd = f"hmrepro download checkpoints --model {model}"
    return cmd + (f" --benchmark {benchmark}" if benchmark else "")


# -- reading folder names ----------------------------------------------------------------------------------
_B = r"(?<![a-z0-9])"
_BACKBONE = [
    ("resnet101", re.compile(_B + r"(?:resnet|res|r)[-_]?101(?![0-9])")),
    ("resnet50", re.compile(_B + r"(?:resnet|res|r)[-_]?50(?![0-9])")),
    ("vgg16", re.compile(_B + r"vgg(?:[-_]?16)?(?![0-9])")),
]
_BENCHMARK = [
    ("pascal", re.compile(_B + r"(?:pascal|pas|voc)")),
    ("coco", re.compile(_B + r"coco")),
    ("fss", re.compile(_B + r"fss")),
]
_MODEL_BASE = [(name, re.compile(_B + re.escape(name))) for name in [card.family for card in list_cards()] + ["pspnet"]]
_FOLD = re.compile(r"(?:fold|split)[-_]?([0-9])")  # BAM: initmodel/PSPNet/pascal/split0/resnet50/best.pth
_VERSION = re.compile(r"-v(\d+)\.")


def _one(table, text: str, hints: tuple[str, ...]) -> str | None:
    if len(hints) == 1:
        return hints[0]
    found = [name for name, rx in table if rx.search(text) and (not hints or name in hints)]
    return found[0] if found else None


def _model(text: str, hints: tuple[str, ...]) -> str | None:
    if len(hints) == 1:
        return hints[0]
    for base, rx in _MODEL_BASE:
        if rx.search(text):
            for m in hints or MODELS:
                if m.split("-")[0] == base:  # model names are <family>[-<variant>]
                    return m
    return None


def infer(rel_path: str, models=(), benchmarks=(), backbones=()) -> tuple[str, str, str, int] | None:
    """(model, backbone, benchmark, fold) read from a checkpoint's relative path, or None if ambiguous."""
    text = rel_path.lower().replace("\\", "/")
    model = _model(text, tuple(models))
    benchmark = _one(_BENCHMARK, text, tuple(benchmarks))
    backbone = _one(_BACKBONE, text, tuple(backbones))
    m = _FOLD.search(text)
    fold = 0 if benchmark == "fss" else (int(m.group(1)) if m else None)
    if None in (model, benchmark, backbone, fold):
        return None
    return model, backbone, benchmark, fold


def _preference(path: str) -> tuple:
    """Among several files for one run: best_model first, then the highest -vK (Lightning), then shortest."""
    name = Path(path).name
    m = _VERSION.search(name)
    return (name.startswith("best_model"), int(m.group(1)) if m else -1, -len(path))


def weight_files(folder: Path) -> list[Path]:
    """Every file below ``folder`` that looks like saved weights (.pt, .pth, .ckpt, .pth.tar)."""
    return sorted(p for p in Path(folder).rglob("*") if p.is_file() and p.name.endswith(WEIGHT_SUFFIXES))


# -- the record ----------------------------------------------------------------------------------------------
def index_path(root: Path) -> Path:
    return Path(root) / INDEX_NAME


def load_index(root: Path) -> dict:
    path = index_path(root)
    if not path.is_file():
        return {"version": 1, "entries": [], "unassigned": []}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise CorruptFileError(
            f"{path} is not valid JSON ({err}); delete it and run `hmrepro download checkpoints`"
        ) from None


def save_index(root: Path, index: dict) -> None:
    path = index_path(root)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(index, indent=1, sort_keys=True) + "\n")


def index_folder(
    root: Path, folder: Path, source: Source | None, lock: LockFile, *, models=(), benchmarks=(), backbones=()
) -> list[CheckpointEntry]:
    """Record every weight file of ``folder`` whose run can be read from its path; returns the new entries."""
    models = models or (source.models if source else ())
    benchmarks = benchmarks or (source.benchmarks if source else ())
    backbones = backbones or (source.backbones if source else ())
    chosen: dict[tuple, tuple[Path, str]] = {}
    unassigned = []
    for path in weight_files(folder):
        rel = path.relative_to(root).as_posix()
        key = infer(path.relative_to(folder).as_posix(), models, benchmarks, backbones)
        if key is None:
            unassigned.append(rel)
        elif key not in chosen or _preference(rel) > _preference(chosen[key][1]):
            chosen[key] = (path, rel)
    entries = []
    for key, (path, rel) in sorted(chosen.items()):
        sha = lock.entry(_lock_key(root, path)).get("sha256") or file_digests(path)["sha256"]
        entries.append(CheckpointEntry(*key, path=rel, sha256=sha, source=source.name if source else LOCAL_ORIGIN))
    index = load_index(root)
    keep = [
        e
        for e in index["entries"]
        if tuple(e[k] for k in ("model", "backbone", "benchmark", "fold")) not in {e.key for e in entries}
    ]
    index["entries"] = sorted(
        keep + [asdict(e) for e in entries], key=lambda e: (e["model"], e["benchmark"], e["backbone"], e["fold"])
    )
    index["unassigned"] = sorted(set(index.get("unassigned", [])) - {e.path for e in entries} | set(unassigned))
    save_index(root, index)
    return entries


# -- fetching ------------------------------------------------------------------------------------------------
def _lock_key(root: Path, path: Path) -> str:
    return "checkpoints/" + Path(path).relative_to(root).as_posix()


def _pin_folder(root: Path, folder: Path, lock: LockFile, origin: str) -> None:
    """Pin (first time) or verify (later) the sha256 of every file in ``folder``; a mismatch deletes the file."""
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.name != COMPLETE):
        key = _lock_key(root, path)
        if lock.is_fresh(key, path):
            continue
        digests = file_digests(path)
        pinned = lock.pinned(key, origin)
        if pinned and pinned != digests["sha256"]:
            path.unlink()
            raise ChecksumError(
                f"{path} has sha256 {digests['sha256']}, but {pinned} was pinned in {lock.path}; deleted it"
            )
        lock.record(key, path, digests, origin)


def _folder_intact(root: Path, folder: Path, lock: LockFile) -> bool:
    """True if the folder finished downloading and no file changed since (stamps, or a re-hash vs the pin)."""
    if not (folder / COMPLETE).is_file():
        return False
    ok = True
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.name != COMPLETE):
        key = _lock_key(root, path)
        if lock.is_fresh(key, path):
            continue
        pinned = lock.pinned_any(key)
        if pinned and file_digests(path)["sha256"] not in pinned:
            path.unlink()  # corrupt: fetched again (gdown skips the intact files)
            ok = False
    recorded = [k for k in lock.data["files"] if k.startswith(_lock_key(root, folder) + "/")]
    missing = [k for k in recorded if not (root / k[len("checkpoints/") :]).exists()]
    return ok and not missing


def _unpack_archives(folder: Path, opts: FetchOptions) -> None:
    for path in sorted(folder.rglob("*")):
        archive_name = path.suffix == ".zip" or path.name.endswith((".tar", ".tar.gz", ".tgz"))
        if path.is_file() and archive_name and not path.name.endswith(".pth.tar"):
            if zipfile.is_zipfile(path) or tarfile.is_tarfile(path):
                extract(path, path.parent, progress=opts.progress, console=opts.console)


def acquire_folder(source: Source, root: Path, lock: LockFile, opts: FetchOptions) -> Path:
    """Download the Drive folder (or file) of ``source`` into ``root/<filename>/``, verified; returns the folder."""
    folder = Path(root) / source.filename
    if _folder_intact(root, folder, lock):
        return folder
    if source.kind == "manual":
        raise DownloadError(
            f"{source.description}: automatic download is not possible. Open {', '.join(source.manual_urls)} in a "
            f"browser, download the folder, and run "
            f"`hmrepro download checkpoints --model {source.models[0]} --from DIR`."
        )
    failures = []
    for drive_id in source.gdrive_ids:
        origin = f"gdrive:{drive_id}"
        try:
            if source.kind == "folder":
                opts.gdrive.fetch_folder(drive_id, folder, retry=opts.retry, log=opts.log)
            else:  # drive-any: a folder, or a single file (often an archive)
                try:
                    opts.gdrive.fetch_folder(drive_id, folder, retry=opts.retry, log=opts.log)
                except DownloadError:
                    opts.gdrive.fetch_file(
                        drive_id, str(folder) + os.sep, retry=opts.retry, log=opts.log
                    )  # gdown names it
            _unpack_archives(folder, opts)
            _pin_folder(root, folder, lock, origin)
        except (DownloadError, ChecksumError) as err:
            failures.append(f"{origin}: {err}")
            opts.say(f"{source.filename}: {origin} failed ({err})")
            continue
        atomic_write_text(folder / COMPLETE, json.dumps({"source": source.name, "origin": origin}), what="marker")
        return folder
    pages = ", ".join(f"https://drive.google.com/drive/folders/{i}" for i in source.gdrive_ids)
    raise DownloadError(
        f"could not fetch {source.description}:\n  " + "\n  ".join(failures) + f"\nDownload it in a browser ({pages}) "
        f"and run `hmrepro download checkpoints --model {source.models[0]} --from DIR`."
    )


def _link_tree(src: Path, dest: Path) -> None:
    for path in sorted(p for p in Path(src).rglob("*") if p.is_file()):
        target = dest / path.relative_to(src)
        if target.exists():
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(path, target)
        except OSError:
            shutil.copy2(path, target)


def select_sources(registry: Registry, model: str, benchmark: str | None) -> list[Source]:
    """The primary checkpoint sources of ``model`` (restricted to ``benchmark``)."""
    return [
        s
        for s in registry.group("checkpoints", include_optional=True)
        if model in s.models and not s.fallback_for and (benchmark is None or benchmark in s.benchmarks)
    ]


def fallbacks(registry: Registry, primary: Source, model: str, benchmark: str | None) -> list[Source]:
    return [
        s
        for s in registry.group("checkpoints", include_optional=True)
        if s.fallback_for == primary.name and model in s.models and (benchmark is None or benchmark in s.benchmarks)
    ]


def download_checkpoints(
    model: str,
    *,
    benchmark: str | None = None,
    data_root: Path | None = None,
    registry: Registry | None = None,
    opts: FetchOptions | None = None,
    from_dirs=(),
) -> list[CheckpointEntry]:
    """Fetch (or take from ``from_dirs``) the published weights of ``model`` and record them in the index.

    One process at a time fetches into a checkpoint folder and rewrites its index (``checkpoints.lock``); a
    second one waits, then finds the verified files in place.
    """
    if model not in MODELS:
        raise InvalidInputError(f"unknown model {model!r}; choose one of {', '.join(MODELS)}")
    registry = registry or load_registry()
    opts = opts or FetchOptions()
    data_root = Path(data_root or default_data_root()).expanduser()
    root = checkpoint_root(data_root)
    root.mkdir(parents=True, exist_ok=True)
    with exclusive_lock(
        lock_path_for(root),
        wait=True,
        holder_info=f"hmrepro download checkpoints --model {model}",
        subject=str(root),
        on_wait=opts.say,
    ):
        lock = LockFile.for_data_root(data_root)
        return _download_locked(model, benchmark, registry, opts, root, lock, from_dirs)


def _download_locked(
    model: str, benchmark: str | None, registry: Registry, opts: FetchOptions, root: Path, lock: LockFile, from_dirs
) -> list[CheckpointEntry]:
    bench = (benchmark,) if benchmark else ()
    entries: list[CheckpointEntry] = []
    if from_dirs:
        for folder in from_dirs:
            local = root / f"local-{model}" / Path(folder).expanduser().resolve().name
            _link_tree(Path(folder).expanduser(), local)
            _pin_folder(root, local, lock, LOCAL_ORIGIN)
            entries += index_folder(root, local, None, lock, models=(model,), benchmarks=bench)
        return entries
    sources = select_sources(registry, model, benchmark)
    if not sources:
        raise MissingDataError(
            f"no published {model} weights{' for ' + benchmark if benchmark else ''} in {registry.origin}"
        )
    failures: list[str] = []
    for source in sources:
        try:
            entries += _fetch_and_index(source, model, bench, root, lock, opts)
            continue
        except DownloadError as err:
            backups = fallbacks(registry, source, model, benchmark)
            if not backups:
                failures.append(str(err))
                continue
            opts.say(f"{err}\ntrying the older per-model links")
        for backup in backups:
            try:
                entries += _fetch_and_index(backup, model, bench, root, lock, opts)
            except DownloadError as err:
                failures.append(str(err))
    if failures and not entries:
        raise DownloadError("\n".join(failures))
    for failure in failures:
        opts.say(f"not everything could be fetched: {failure}")
    return entries


def _fetch_and_index(
    source: Source, model: str, bench: tuple, root: Path, lock: LockFile, opts: FetchOptions
) -> list[CheckpointEntry]:
    folder = acquire_folder(source, root, lock, opts)
    return index_folder(root, folder, source, lock, models=_models(source, model), benchmarks=bench)


def _models(source: Source, model: str) -> tuple[str, ...]:
    """Model hints for indexing: the one requested when the folder holds a single model, else all of them."""
    return (model,) if len(source.models) == 1 else source.models


# -- resolving -----------------------------------------------------------------------------------------------
def resolve_official_weights(
    model: str, backbone: str, benchmark: str, fold: int, *, data_root: Path | None = None
) -> Path:
    """The file of the authors' weights for this run (``hmrepro eval --weights official``).

    Raises :class:`MissingDataError` saying which command fetches it, or that the authors never published it.
    """
    if model not in MODELS:
        raise MissingDataError(
            f"the authors published no weights for {model!r}; official weights exist for {', '.join(MODELS)}"
        )
    root = checkpoint_root(data_root)
    fold = 0 if benchmark == "fss" else int(fold)
    for e in load_index(root)["entries"]:
        if (e["model"], e["backbone"], e["benchmark"], int(e["fold"])) == (model, backbone, benchmark, fold):
            path = root / e["path"]
            if not path.is_file():
                raise MissingDataError(
                    f"{path} (official {model} {backbone} {benchmark} fold {fold}) is gone; "
                    f"run `{fetch_command(model, benchmark)}`"
                )
            lock = LockFile.for_data_root(root.parent)
            key = _lock_key(root, path)
            if not lock.is_fresh(key, path) and file_digests(path)["sha256"] != e["sha256"]:
                raise CorruptFileError(
                    f"{path} no longer matches the sha256 recorded at download; delete it and run "
                    f"`{fetch_command(model, benchmark)}`"
                )
            return path
    published = published_checkpoints(model)
    if model not in BASE_LEARNERS and not any((p.backbone, p.benchmark) == (backbone, benchmark) for p in published):
        offered = ", ".join(f"{p.backbone} on {p.benchmark}" for p in published)
        raise MissingDataError(
            f"the authors published no {model} weights for {backbone} on {benchmark} "
            f"(published: {offered}); train them with hmrepro instead"
        )
    raise MissingDataError(
        f"no official {model} weights for {backbone} {benchmark} fold {fold} in {index_path(root)}; fetch them with "
        f"`{fetch_command(model, benchmark)}` (add --data-root if your data root is elsewhere)"
    )

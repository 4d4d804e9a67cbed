"""The sources registry: every file hmrepro fetches, read from ``sources.toml`` (data, not code).

``HMREPRO_SOURCES=/path/to/other.toml`` replaces the packaged registry (private mirrors, tests).
"""

from __future__ import annotations

import os

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import HmreproError
from ..models.cards import published_checkpoints
from ..textfile import read_text

PACKAGED_REGISTRY = Path(__file__).resolve().parent / "sources.toml"
GROUPS = ("pascal", "coco", "fss", "backbones", "checkpoints")
KINDS = ("file", "folder", "drive-any", "manual")
DESTS = ("downloads", "torch_hub")


@dataclass(frozen=True)
class Candidate:
    """One place a source can be fetched from: ``kind`` is 'url' or 'gdrive'."""

    kind: str
    location: str

    @property
    def label(self) -> str:
        return f"gdrive:{self.location}" if self.kind == "gdrive" else self.location


@dataclass(frozen=True)
class Source:
    """One archive, file or Drive folder and everything known about it."""

    name: str
    group: str
    filename: str
    description: str = ""
    kind: str = "file"
    urls: tuple[str, ...] = ()
    gdrive_ids: tuple[str, ...] = ()
    manual_urls: tuple[str, ...] = ()
    from_names: tuple[str, ...] = ()
    size: int | None = None
    md5: str | None = None
    sha256: str | None = None
    sha256_prefix: str | None = None
    expect_member: str | None = None
    optional: bool = False
    dest: str = "downloads"
    models: tuple[str, ...] = ()
    benchmarks: tuple[str, ...] = ()
    backbones: tuple[str, ...] = ()
    fallback_for: str | None = None
    extra: dict = field(default_factory=dict, compare=False)

    @property
    def candidates(self) -> list[Candidate]:
        """Drive ids first (current, then older README ids), then URLs in the order listed."""
        return [Candidate("gdrive", i) for i in self.gdrive_ids] + [Candidate("url", u) for u in self.urls]

    @property
    def published(self) -> bool:
        """True when a checksum is published (otherwise the first download is pinned in the lock)."""
        return bool(self.md5 or self.sha256 or self.sha256_prefix)

    @property
    def accepted_names(self) -> tuple[str, ...]:
        """File names (relative paths) that ``--from DIR`` accepts for this source."""
        return (self.filename, *self.from_names)


_LIST_FIELDS = ("urls", "gdrive_ids", "manual_urls", "from_names", "models", "benchmarks", "backbones")
_KNOWN = {f for f in Source.__dataclass_fields__ if f not in ("name", "extra")}
_SERVES = ("models", "benchmarks", "backbones")
"""What a checkpoint source's weights are for: the cards' ``published`` says it for the sources it names."""


def _served_by_cards(name: str) -> dict[str, tuple[str, ...]] | None:
    """The models, benchmarks and backbones the cards publish from source ``name`` (in card order); None when no
    card names it (a fallback link, a data set: then the registry file says what it serves)."""
    published = [p for p in published_checkpoints() if p.source == name]
    if not published:
        return None
    return {
        "models": tuple(dict.fromkeys(p.model for p in published)),
        "benchmarks": tuple(dict.fromkeys(p.benchmark for p in published)),
        "backbones": tuple(dict.fromkeys(p.backbone for p in published)),
    }


def _parse(name: str, table: dict, origin: Path) -> Source:
    unknown = sorted(set(table) - _KNOWN)
    if unknown:
        raise HmreproError(f"{origin}: source {name!r} has unknown field(s) {', '.join(unknown)}")
    for key in ("group", "filename"):
        if key not in table:
            raise HmreproError(f"{origin}: source {name!r} lacks the field {key!r}")
    values = dict(table)
    for key in _LIST_FIELDS:
        values[key] = tuple(values.get(key, ()))
    served = _served_by_cards(name)
    if served is not None:
        doubled = [key for key in _SERVES if key in table]
        if doubled:
            raise HmreproError(
                f"{origin}: source {name!r} sets {', '.join(doubled)}, which the model cards' published weights "
                "say (hmrepro/models/cards.py); delete them"
            )
        values.update(served)
    src = Source(name=name, **values)
    if src.group not in GROUPS:
        raise HmreproError(f"{origin}: source {name!r} has group {src.group!r}; use one of {', '.join(GROUPS)}")
    if src.kind not in KINDS:
        raise HmreproError(f"{origin}: source {name!r} has kind {src.kind!r}; use one of {', '.join(KINDS)}")
    if src.dest not in DESTS:
        raise HmreproError(f"{origin}: source {name!r} has dest {src.dest!r}; use one of {', '.join(DESTS)}")
    if src.kind != "manual" and not src.candidates:
        raise HmreproError(f"{origin}: source {name!r} has neither urls nor gdrive_ids")
    if Path(src.filename).name != src.filename or src.filename in ("", ".", ".."):
        raise HmreproError(f"{origin}: source {name!r} has filename {src.filename!r}; it must be a plain file name")
    return src


class Registry:
    """All sources of one registry file, by name and by group."""

    def __init__(self, sources: dict[str, Source], origin: Path):
        self.sources = sources
        self.origin = origin

    def __getitem__(self, name: str) -> Source:
        try:
            return self.sources[name]
        except KeyError:
            raise HmreproError(
                f"no source named {name!r} in {self.origin}; known: {', '.join(sorted(self.sources))}"
            ) from None

    def __iter__(self):
        return iter(self.sources.values())

    def group(self, group: str, *, include_optional: bool = False) -> list[Source]:
        return [s for s in self if s.group == group and (include_optional or not s.optional)]


def registry_path() -> Path:
    env = os.environ.get("HMREPRO_SOURCES")
    return Path(env).expanduser() if env else PACKAGED_REGISTRY


def load_registry(path: str | os.PathLike | None = None) -> Registry:
    """Read the registry (the packaged ``sources.toml`` unless ``path`` or ``$HMREPRO_SOURCES`` says otherwise)."""
    origin = Path(path).expanduser() if path else registry_path()
    what = "sources registry" + (" ($HMREPRO_SOURCES)" if not path and os.environ.get("HMREPRO_SOURCES") else "")
    text = read_text(origin, what, f"point it at a TOML file such as {PACKAGED_REGISTRY}, or unset it")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise HmreproError(f"{what} {origin} is not valid TOML: {err}") from None
    if not isinstance(data.get("sources", {}), dict):
        raise HmreproError(f"{what} {origin} has no [sources.<name>] tables; see {PACKAGED_REGISTRY}")
    tables = data.get("sources", {})
    return Registry({name: _parse(name, table, origin) for name, table in tables.items()}, origin)

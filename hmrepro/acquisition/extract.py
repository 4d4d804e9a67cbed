"""Safe, resumable extraction of tar and zip archives.

Every entry is checked before anything is written: absolute paths, '..' components, symlinks or
hard links that point outside the target folder, entries that pass through a symlink of the archive,
and special files (devices, fifos) are refused with an :class:`UnsafeArchiveError` naming the entry.
Files are written under a temporary name and renamed, so a partial file is never mistaken for a
finished one; a rerun skips files already extracted with the right size, and a marker file per finished
archive makes the whole archive a no-op next time.
"""

from __future__ import annotations

import json
import os
import posixpath
import re
import shutil
import stat
import tarfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ..atomic import atomic_open, atomic_write_text
from ..errors import CorruptFileError
from .diskspace import ensure_free_space
from .download_errors import UnsafeArchiveError
from .transfer_bars import count_bar

_DRIVE = re.compile(r"^[A-Za-z]:")


@dataclass(frozen=True)
class Entry:
    """One archive member, normalised: ``kind`` is 'file', 'dir', 'symlink' or 'hardlink'."""

    name: str  # as stored in the archive (for messages)
    path: str  # normalised relative posix path
    kind: str
    size: int = 0
    link: str | None = None  # symlink target (as stored) or hard-link target (normalised path)
    member: object = None


def normalise(name: str, archive: Path) -> str:
    """The relative posix path of entry ``name``; refuses absolute paths and '..'."""
    unified = name.replace("\\", "/")
    if unified.startswith("/") or _DRIVE.match(unified):
        raise UnsafeArchiveError(f"{archive}: entry {name!r} has an absolute path; refusing to extract the archive")
    parts = [p for p in unified.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise UnsafeArchiveError(f"{archive}: entry {name!r} contains '..' and would leave the target folder; refusing")
    return "/".join(parts)


def _symlink_target(entry_path: str, target: str, name: str, archive: Path) -> str:
    unified = target.replace("\\", "/")
    if unified.startswith("/") or _DRIVE.match(unified):
        raise UnsafeArchiveError(f"{archive}: symlink entry {name!r} points to the absolute path {target!r}; refusing")
    joined = posixpath.normpath(posixpath.join(posixpath.dirname(entry_path), unified))
    if joined == ".." or joined.startswith("../") or joined.startswith("/"):
        raise UnsafeArchiveError(f"{archive}: symlink entry {name!r} -> {target!r} leaves the target folder; refusing")
    return joined


def _tar_entries(tf: tarfile.TarFile, archive: Path) -> Iterator[Entry]:
    """The entries of a tar archive, in its order; links checked, devices and fifos refused."""
    for m in tf.getmembers():
        path = normalise(m.name, archive)
        if m.isdir():
            yield Entry(m.name, path, "dir", member=m)
        elif m.isreg():
            yield Entry(m.name, path, "file", m.size, member=m)
        elif m.issym():
            _symlink_target(path, m.linkname, m.name, archive)
            yield Entry(m.name, path, "symlink", link=m.linkname, member=m)
        elif m.islnk():
            try:
                target = normalise(m.linkname, archive)
            except UnsafeArchiveError:
                raise UnsafeArchiveError(
                    f"{archive}: hard-link entry {m.name!r} -> {m.linkname!r} leaves the target folder; refusing"
                ) from None
            yield Entry(m.name, path, "hardlink", link=target, member=m)
        else:
            raise UnsafeArchiveError(f"{archive}: entry {m.name!r} is a device or fifo; refusing to extract it")


def _zip_entries(zf: zipfile.ZipFile, archive: Path) -> Iterator[Entry]:
    """The entries of a zip archive, in its order; symlinks (stored in the mode bits) checked."""
    for info in zf.infolist():
        path = normalise(info.filename, archive)
        mode = info.external_attr >> 16
        if stat.S_ISLNK(mode):
            target = zf.read(info).decode("utf-8", "replace")
            _symlink_target(path, target, info.filename, archive)
            yield Entry(info.filename, path, "symlink", link=target, member=info)
        elif info.is_dir():
            yield Entry(info.filename, path, "dir", member=info)
        else:
            yield Entry(info.filename, path, "file", info.file_size, member=info)


def _through_link(entry: Entry, links: set[str], archive: Path) -> None:
    """Refuse a symlink whose target walks through another symlink of the archive (its '..' could escape)."""
    stack = [p for p in posixpath.dirname(entry.path).split("/") if p]
    comps = [c for c in (entry.link or "").replace("\\", "/").split("/") if c not in ("", ".")]
    for i, c in enumerate(comps):
        if c == "..":
            if not stack:
                raise UnsafeArchiveError(
                    f"{archive}: symlink entry {entry.name!r} -> {entry.link!r} leaves the target folder"
                )
            stack.pop()
            continue
        stack.append(c)
        if i + 1 < len(comps) and "/".join(stack) in links:
            raise UnsafeArchiveError(
                f"{archive}: symlink entry {entry.name!r} -> {entry.link!r} goes through the symlink "
                f"{'/'.join(stack)!r} of the same archive; refusing"
            )


def check_entries(entries: list[Entry], archive: Path) -> None:
    """Refuse entries (and symlink targets) that would be written or resolved through a symlink of the archive."""
    links = {e.path for e in entries if e.kind == "symlink"}
    if not links:
        return
    for e in entries:
        if e.kind == "symlink":
            _through_link(e, links, archive)
        parts = e.path.split("/")
        for i in range(1, len(parts)):
            if "/".join(parts[:i]) in links:
                raise UnsafeArchiveError(
                    f"{archive}: entry {e.name!r} is written through the symlink {'/'.join(parts[:i])!r} of the same "
                    "archive; refusing"
                )


def list_entries(archive: Path) -> list[Entry]:
    """All entries of a tar or zip archive, checked (see the module docstring)."""
    archive = Path(archive)
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            entries = list(_zip_entries(zf, archive))
    elif tarfile.is_tarfile(archive):
        with tarfile.open(archive) as tf:
            entries = list(_tar_entries(tf, archive))
    else:
        raise CorruptFileError(f"{archive} is neither a zip nor a tar archive; delete it and fetch it again")
    check_entries(entries, archive)
    return entries


def _inside(root: Path, target: Path) -> bool:
    root_real = os.path.realpath(root)
    real = os.path.realpath(target)
    return real == root_real or real.startswith(root_real + os.sep)


def _write_stream(src, target: Path) -> None:
    with atomic_open(target, "wb", what="extracted file", sync=False) as out:
        shutil.copyfileobj(src, out, 1 << 20)


def marker_path(archive: Path, dest: Path) -> Path:
    return Path(dest) / f".{Path(archive).name}.extracted"


def _marker_matches(marker: Path, archive: Path) -> bool:
    if not marker.is_file():
        return False
    try:
        info = json.loads(marker.read_text())
    except json.JSONDecodeError:
        return False
    return info.get("size") == Path(archive).stat().st_size


def extract(archive: Path, dest: Path, *, marker: Path | None = None, progress: bool = True, console=None) -> Path:
    """Extract ``archive`` into ``dest`` safely and resumably; returns ``dest``.

    ``marker`` (default ``dest/.<archive name>.extracted``) is written when every entry is out; while it
    exists (and the archive keeps its size) the call does nothing.
    """
    archive, dest = Path(archive), Path(dest)
    marker = Path(marker) if marker else marker_path(archive, dest)
    if _marker_matches(marker, archive):
        return dest
    entries = list_entries(archive)
    dest.mkdir(parents=True, exist_ok=True)
    pending = [e for e in entries if not (e.kind == "file" and _done(dest / e.path, e.size))]
    ensure_free_space(dest, sum(e.size for e in pending if e.kind == "file"), f"extracting {archive.name}")
    is_zip = zipfile.is_zipfile(archive)
    opener = zipfile.ZipFile(archive) if is_zip else tarfile.open(archive)
    with (
        opener as ar,
        count_bar(f"extracting {archive.name}", len(pending), enabled=progress, console=console) as advance,
    ):
        for e in pending:
            target = dest / e.path
            if e.path and not _inside(dest, target.parent if e.kind != "dir" else target):
                raise UnsafeArchiveError(
                    f"{archive}: entry {e.name!r} leaves the target folder through a link; refusing"
                )
            if e.kind == "dir":
                target.mkdir(parents=True, exist_ok=True)
            elif e.kind == "file":
                target.parent.mkdir(parents=True, exist_ok=True)
                if target.is_symlink():
                    target.unlink()
                with ar.open(e.member) if is_zip else ar.extractfile(e.member) as src:
                    _write_stream(src, target)
            elif e.kind == "symlink":
                target.parent.mkdir(parents=True, exist_ok=True)
                if target.is_symlink() or target.exists():
                    target.unlink()
                os.symlink(e.link, target)
                if not _inside(dest, target):
                    target.unlink()
                    raise UnsafeArchiveError(
                        f"{archive}: symlink entry {e.name!r} -> {e.link!r} leaves the target folder"
                    )
            elif e.kind == "hardlink":
                source = dest / e.link
                if not _inside(dest, source):
                    raise UnsafeArchiveError(
                        f"{archive}: hard-link entry {e.name!r} leaves the target folder; refusing"
                    )
                target.parent.mkdir(parents=True, exist_ok=True)
                target.unlink(missing_ok=True)
                shutil.copyfile(source, target)
            advance(1)
    marker.parent.mkdir(parents=True, exist_ok=True)
    summary = {"archive": str(archive), "size": archive.stat().st_size, "entries": len(entries)}
    atomic_write_text(marker, json.dumps(summary), what="extraction marker")
    return dest


def _done(target: Path, size: int) -> bool:
    return target.is_file() and not target.is_symlink() and target.stat().st_size == size

"""Get one source onto the disk, verified: skip it if complete, take it from ``--from DIR``, else download.

Candidates are tried in registry order (current Drive id, older ids, URLs); a file already on disk is
re-verified (cheaply, through the lock stamp) and fetched again if it is truncated or corrupt.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import HmreproError, MissingDataError
from ..locks import exclusive_lock, lock_path_for
from .diskspace import ensure_free_space, human
from .download_errors import ChecksumError, DownloadError, PermanentHTTPError
from .gdrive import GDrive
from .http import HttpOptions, fetch_url, part_path
from .lock import LockFile
from .registry import Candidate, Source
from .retry import RetryPolicy
from .verify import Expected, fetch_verified, require_readable_file, verify_file

DOWNLOADS = "downloads"
LOCAL_ORIGIN = "local"


@dataclass
class FetchOptions:
    """How to fetch: retries, timeouts, progress output, Drive access, user-supplied archives."""

    retry: RetryPolicy = field(default_factory=RetryPolicy)
    timeout: float = 60.0
    progress: bool = True
    gdrive: GDrive = field(default_factory=GDrive.from_env)
    from_dirs: tuple[Path, ...] = ()
    refetches: int = 1
    log: Callable[[str], None] | None = None
    console: object = None

    def http(self) -> HttpOptions:
        """How a URL candidate is transferred."""
        return HttpOptions(self.retry, self.timeout, self.progress, self.console, self.log)

    def say(self, message: str) -> None:
        if self.log is not None:
            self.log(message)


@dataclass(frozen=True)
class Acquired:
    source: Source
    path: Path
    status: str  # 'present' (verified, untouched), 'downloaded', 'local' (taken from --from DIR)
    origin: str | None = None


def hub_checkpoint_dir() -> Path:
    import torch

    return Path(torch.hub.get_dir()) / "checkpoints"


def destination(source: Source, data_root: Path) -> Path:
    """Where ``source`` lives once fetched."""
    if source.dest == "torch_hub":
        return hub_checkpoint_dir() / source.filename
    return Path(data_root) / DOWNLOADS / source.filename


def published_expected(source: Source) -> Expected:
    return Expected(
        size=source.size,
        md5=source.md5,
        sha256=source.sha256,
        sha256_prefix=source.sha256_prefix,
        expect_member=source.expect_member,
        zip=source.filename.endswith(".zip"),
    )


def expected_for_origin(source: Source, lock: LockFile, origin: str | None) -> Expected:
    """Published checksums, plus the sha256 pinned for ``origin`` when nothing is published."""
    exp = published_expected(source)
    if not source.published and origin:
        pinned = lock.pinned(source.name, origin)
        if pinned:
            exp = dataclasses.replace(exp, sha256=pinned)
    return exp


def is_verified(source: Source, path: Path, lock: LockFile, *, rehash: bool = True) -> bool:
    """True if ``path`` is complete and verified; a stale stamp is re-checked by hashing (``rehash``)."""
    if not path.is_file():
        return False
    entry = lock.entry(source.name)
    exp = expected_for_origin(source, lock, entry.get("origin"))
    if lock.is_fresh(source.name, path):
        sha = entry["sha256"]
        return (
            (not exp.sha256 or sha == exp.sha256)
            and (not exp.sha256_prefix or sha.startswith(exp.sha256_prefix))
            and (not exp.md5 or entry.get("md5") == exp.md5)
        )
    if not rehash:
        return False
    try:
        digests = verify_file(path, exp)
    except ChecksumError:
        return False
    lock.record(source.name, path, digests, entry.get("origin"))
    return True


def check_from_dirs(from_dirs) -> tuple[Path, ...]:
    """The ``--from`` folders, each of which must be an existing folder (never silently fall back to the network)."""
    folders = tuple(Path(folder).expanduser() for folder in from_dirs)
    for folder in folders:
        if folder.is_file():
            raise HmreproError(f"--from {folder} is a file; pass the folder that holds it (--from {folder.parent})")
        if not folder.is_dir():
            raise MissingDataError(f"--from {folder} does not exist; pass the folder that holds the downloaded files")
    return folders


def find_local(source: Source, from_dirs) -> list[tuple[Path, bool]]:
    """Files in ``from_dirs`` named as the source accepts: ``(path, is_primary_name)``, primary names first."""
    found = []
    for folder in from_dirs:
        folder = Path(folder).expanduser()
        for name in source.accepted_names:
            cand = folder / name
            if cand.is_file():
                found.append((cand, name == source.filename))
    return sorted(found, key=lambda pair: not pair[1])


def _link_or_copy(src: Path, dest: Path) -> None:
    """Hard link ``src`` at ``dest``; a symlink across file systems (nothing big is copied)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.exists() and src.resolve() == dest.resolve():
        return  # already the same file: never delete the user's copy
    dest.unlink(missing_ok=True)
    try:
        os.link(src, dest)
    except OSError:
        os.symlink(src.resolve(), dest)


def take_local(source: Source, src: Path, dest: Path, lock: LockFile) -> Acquired:
    """Verify a user-supplied archive and link it into place; raises :class:`ChecksumError` if it is wrong."""
    exp = published_expected(source)
    try:
        digests = verify_file(src, exp)
    except ChecksumError as err:
        raise ChecksumError(
            f"--from: {err}. This is not the expected {source.filename}; remove it or fix it."
        ) from None
    pinned = lock.pinned_any(source.name)
    if not source.published and pinned and digests["sha256"] not in pinned:
        raise ChecksumError(
            f"--from: {src} (sha256 {digests['sha256']}) differs from the copy of {source.filename} pinned in "
            f"{lock.path}. If yours is a legitimate other copy, delete the entry {source.name!r} from that file."
        )
    _link_or_copy(src, dest)
    origin = next(
        (o for o, s in lock.entry(source.name).get("origins", {}).items() if s == digests["sha256"]), LOCAL_ORIGIN
    )
    lock.record(source.name, dest, digests, origin)
    return Acquired(source, dest, "local", origin)


def _fetch_candidate(source: Source, cand: Candidate, dest: Path, lock: LockFile, opts: FetchOptions) -> dict:
    exp = expected_for_origin(source, lock, cand.label)
    if cand.kind == "url":
        return fetch_url(cand.location, dest, exp, opts.http(), refetches=opts.refetches)
    tmp = dest.with_name(dest.name + ".gdown")

    def _transfer(path: Path) -> None:
        opts.gdrive.fetch_file(cand.location, path, retry=opts.retry, log=opts.log)

    return fetch_verified(_transfer, tmp, dest, exp, refetches=opts.refetches, on_corrupt=opts.log)


def _space_needed(source: Source, dest: Path) -> int:
    if source.size is None:
        return 0
    part = part_path(dest)
    return source.size - (part.stat().st_size if part.is_file() else 0)


def acquire(source: Source, data_root: Path, lock: LockFile, opts: FetchOptions | None = None) -> Acquired:
    """Make ``source`` present and verified at :func:`destination`; download only what is missing or corrupt.

    One process at a time works on a destination: a second download of the same file (into the same data root)
    waits for the first under ``<dest>.lock``, then finds the file present and verified. A verified file is
    therefore never rewritten while another process reads or pins it, and no two writers share a ``.part``.
    """
    opts = opts or FetchOptions()
    dest = destination(source, data_root)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with exclusive_lock(
        lock_path_for(dest),
        wait=True,
        holder_info=f"hmrepro download of {source.filename}",
        subject=f"{dest}",
        on_wait=opts.say,
    ):
        lock.reload()  # the other process may have downloaded and pinned it meanwhile
        return _acquire_locked(source, dest, lock, opts)


def _acquire_locked(source: Source, dest: Path, lock: LockFile, opts: FetchOptions) -> Acquired:
    require_readable_file(dest)  # a folder or an unreadable file is not "corrupt": fetching again would not help
    if dest.exists() or dest.is_symlink():
        if is_verified(source, dest, lock):
            return Acquired(source, dest, "present", lock.entry(source.name).get("origin"))
        opts.say(f"{dest} is incomplete or corrupt (checksum mismatch): fetching it again")
        dest.unlink()
        lock.forget(source.name)
    for local, primary in find_local(source, opts.from_dirs):
        try:
            return take_local(source, local, dest, lock)
        except ChecksumError as err:
            if primary:
                raise
            opts.say(
                f"{local} is not {source.filename} ({err}); ignoring it"
            )  # e.g. COCO images vs masks train2014.zip
    if source.kind == "manual" or not source.candidates:
        raise DownloadError(_manual_message(source, dest, []))
    dest.parent.mkdir(parents=True, exist_ok=True)
    ensure_free_space(dest.parent, _space_needed(source, dest), f"downloading {source.filename}")
    failures = []
    for cand in source.candidates:
        try:
            digests = _fetch_candidate(source, cand, dest, lock, opts)
        except (DownloadError, ChecksumError, PermanentHTTPError) as err:
            failures.append(f"{cand.label}: {err}")
            opts.say(f"{source.filename}: {cand.label} failed ({err}); trying the next source")
            continue
        lock.record(source.name, dest, digests, cand.label)
        return Acquired(source, dest, "downloaded", cand.label)
    raise DownloadError(_manual_message(source, dest, failures))


def _manual_message(source: Source, dest: Path, failures: list[str]) -> str:
    what = f" ({source.description})" if source.description else ""
    lines = [f"could not fetch {source.filename}{what}."]
    lines += [f"  tried {f}" for f in failures]
    pages = [*(f"https://drive.google.com/uc?id={i}" for i in source.gdrive_ids), *source.urls, *source.manual_urls]
    if pages:
        lines.append("Download it in a browser from one of: " + ", ".join(pages))
    names = " or ".join(source.accepted_names)
    lines.append(
        f"then pass the folder that holds it (named {names}) with --from DIR; it is verified and linked to {dest}."
    )
    return "\n".join(lines)


def require_verified(source: Source, data_root: Path, lock: LockFile, fetch_command: str) -> Path:
    """The verified archive of ``source`` for extraction (no network).

    Missing or corrupt: an error saying what to run."""
    dest = destination(source, data_root)
    if not dest.exists():
        raise MissingDataError(
            f"{dest} is missing. Fetch it with `{fetch_command}` (or add --from DIR if you have it)."
        )
    require_readable_file(dest)
    if not is_verified(source, dest, lock):
        size = human(dest.stat().st_size)
        raise ChecksumError(
            f"{dest} ({size}) is truncated or corrupt and will not be extracted. Run `{fetch_command}`: "
            "it detects the damaged file and fetches it again."
        )
    return dest

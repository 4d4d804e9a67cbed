"""The lock file ``<data_root>/.hmrepro-lock.json``: pinned sha256 sums and verification stamps.

Most Google-Drive files have no published checksum. The first successful download of such a file pins
its sha256 per origin (the Drive id or URL it came from: mirrors may legitimately differ); every later
download from that origin, and the file on disk, is verified against it. The lock also stamps each
verified file with its size and mtime so that a complete, verified file is not hashed again.

Every change is a read-modify-write under an exclusive lock on ``<lock file>.lock`` (:mod:`hmrepro.locks`): the
file is read again, changed and written atomically, so two downloads into one data root never lose a pin.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from ..atomic import atomic_write_text
from ..errors import HmreproError
from ..locks import exclusive_lock, lock_path_for

LOCK_NAME = ".hmrepro-lock.json"
VERSION = 1


class LockFile:
    """Read-modify-write access to one lock file (written atomically)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.data = self._load()

    @classmethod
    def for_data_root(cls, data_root: Path) -> LockFile:
        return cls(Path(data_root) / LOCK_NAME)

    def _load(self) -> dict:
        if not self.path.exists():
            return {"version": VERSION, "files": {}}
        broken = "fix it or delete it (pinned checksums are then re-pinned on the next download)"
        try:
            data = json.loads(self.path.read_text())
        except IsADirectoryError:
            raise HmreproError(f"lock file {self.path} is a folder, not a file; remove it") from None
        except PermissionError:
            raise HmreproError(f"cannot read the lock file {self.path}: permission denied; make it readable") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise HmreproError(f"lock file {self.path} is not valid JSON ({err}); {broken}") from None
        if not isinstance(data, dict) or not isinstance(data.setdefault("files", {}), dict):
            raise HmreproError(f"lock file {self.path} is not an hmrepro lock file; {broken}")
        return data

    def reload(self) -> None:
        """Read the file again (another process may have changed it)."""
        self.data = self._load()

    def _guard(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        return exclusive_lock(lock_path_for(self.path), wait=True, holder_info=f"updating {self.path.name}")

    def update(self, change) -> None:
        """Under the lock: read the file again, apply ``change(data)``, write it atomically."""
        with self._guard():
            self.data = self._load()
            change(self.data)
            self._write()

    def save(self) -> None:
        """Write the data held in memory (under the lock)."""
        with self._guard():
            self._write()

    def _write(self) -> None:
        atomic_write_text(self.path, json.dumps(self.data, indent=1, sort_keys=True) + "\n", what="lock file")

    # -- pinned checksums -------------------------------------------------------------------------
    def entry(self, key: str) -> dict:
        return self.data["files"].get(key, {})

    def pinned(self, key: str, origin: str) -> str | None:
        """The sha256 pinned for ``key`` downloaded from ``origin`` (None: nothing pinned yet)."""
        return self.entry(key).get("origins", {}).get(origin)

    def pinned_any(self, key: str) -> set[str]:
        return set(self.entry(key).get("origins", {}).values())

    # -- verification stamps ----------------------------------------------------------------------
    def is_fresh(self, key: str, path: Path) -> bool:
        """True if ``path`` is the file verified last time (same size and mtime as stamped)."""
        e = self.entry(key)
        if not e or not path.is_file():
            return False
        st = path.stat()
        return e.get("size") == st.st_size and e.get("mtime_ns") == st.st_mtime_ns and bool(e.get("sha256"))

    def record(self, key: str, path: Path, digests: dict[str, str], origin: str | None) -> None:
        """Stamp ``path`` as verified and pin its sha256 for ``origin`` (kept if already pinned)."""
        st = Path(path).stat()

        def change(data: dict) -> None:
            e = data["files"].setdefault(key, {})
            e.update(
                path=str(path),
                size=st.st_size,
                mtime_ns=st.st_mtime_ns,
                sha256=digests["sha256"],
                verified_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            )
            if "md5" in digests:
                e["md5"] = digests["md5"]
            if origin:
                e["origin"] = origin
                e.setdefault("origins", {}).setdefault(origin, digests["sha256"])

        self.update(change)

    def forget(self, key: str) -> None:
        """Drop the stamp of ``key`` (its file was found corrupt); pinned origins stay."""

        def change(data: dict) -> None:
            for k in ("size", "mtime_ns", "sha256", "md5", "verified_at"):
                data["files"].get(key, {}).pop(k, None)

        self.update(change)

"""The lock file ``<data_root>/.hmrepro-lock.json``: pinned sha256 sums and verification stamps.

Most Google-Drive files have no published checksum. The first successful download of such a file pins
its sha256 per origin (the Drive id or URL it came from: mirrors may legitimately differ); every later
download from that origin, and the file on disk, is verified against it. The lock also stamps each
verified file with its size and mtime so that a complete, verified file is not hashed again.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

from ..errors import HmreproError

LOCK_NAME = ".hmrepro-lock.json"
VERSION = 1


class LockFile:
    """Read-modify-write access to one lock file (written atomically)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.data = self._load()

    @classmethod
    def for_data_root(cls, data_root: Path) -> "LockFile":
        return cls(Path(data_root) / LOCK_NAME)

    def _load(self) -> dict:
        if not self.path.is_file():
            return {"version": VERSION, "files": {}}
        try:
            data = json.loads(self.path.read_text())
        except json.JSONDecodeError as err:
            raise HmreproError(
                f"lock file {self.path} is not valid JSON ({err}); fix it or delete it (pinned checksums are then "
                "re-pinned on the next download)"
            ) from None
        data.setdefault("files", {})
        return data

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=self.path.name, suffix=".tmp", dir=self.path.parent)
        with os.fdopen(fd, "w") as f:
            json.dump(self.data, f, indent=1, sort_keys=True)
            f.write("\n")
        os.replace(tmp, self.path)

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
        e = self.data["files"].setdefault(key, {})
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
        self.save()

    def forget(self, key: str) -> None:
        """Drop the stamp of ``key`` (its file was found corrupt); pinned origins stay."""
        e = self.data["files"].get(key)
        if e:
            for k in ("size", "mtime_ns", "sha256", "md5", "verified_at"):
                e.pop(k, None)
            self.save()

"""Google-Drive files and folders through gdown.

The gdown functions are injectable and the URLs overridable, so tests (and private mirrors) can point
the same code at another server: ``HMREPRO_GDRIVE_URL`` (a template with ``{id}``, e.g.
``http://127.0.0.1:8000/uc?id={id}``) replaces ``https://drive.google.com/uc?id=<id>``; gdown downloads
any plain URL. ``HMREPRO_GDRIVE_FOLDER_URL`` does the same for folders.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .download_errors import DownloadError
from .retry import RetryPolicy

FILE_URL_ENV = "HMREPRO_GDRIVE_URL"
FOLDER_URL_ENV = "HMREPRO_GDRIVE_FOLDER_URL"


def _call(fn: Callable, **kwargs):
    """Call ``fn`` with the keyword arguments its signature accepts (gdown's grew over versions)."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return fn(**kwargs)
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return fn(**kwargs)
    return fn(**{k: v for k, v in kwargs.items() if k in params})


def _permanent(err: Exception) -> bool:
    """Drive refusing a file (permissions, quota, deleted id) does not heal within seconds."""
    return type(err).__name__ in ("FileURLRetrievalError", "FolderContentsMaximumLimitError") or isinstance(
        err, (ValueError, PermissionError)
    )


@dataclass
class GDrive:
    """How to reach Google Drive: gdown functions and optional URL templates."""

    file_url_template: str | None = None
    folder_url_template: str | None = None
    download: Callable | None = None
    download_folder: Callable | None = None
    quiet: bool = False

    @classmethod
    def from_env(cls, **kwargs) -> GDrive:
        kwargs.setdefault("file_url_template", os.environ.get(FILE_URL_ENV) or None)
        kwargs.setdefault("folder_url_template", os.environ.get(FOLDER_URL_ENV) or None)
        return cls(**kwargs)

    def _file_fn(self) -> Callable:
        if self.download is not None:
            return self.download
        import gdown

        return gdown.download

    def _folder_fn(self) -> Callable:
        if self.download_folder is not None:
            return self.download_folder
        import gdown

        return gdown.download_folder

    def _target(self, template: str | None, drive_id: str) -> dict:
        return {"url": template.format(id=drive_id)} if template else {"id": drive_id}

    def describe(self, drive_id: str, folder: bool = False) -> str:
        template = self.folder_url_template if folder else self.file_url_template
        if template:
            return template.format(id=drive_id)
        kind = "drive/folders/" if folder else "uc?id="
        return f"https://drive.google.com/{kind}{drive_id}"

    def _retrying(self, what: str, retry: RetryPolicy, fn: Callable[[], object], log) -> object:
        last = None
        for attempt in range(retry.attempts):
            try:
                result = fn()
            except KeyboardInterrupt:
                raise
            except Exception as err:  # gdown/requests raise many types
                last = err
                if _permanent(err):
                    break
            else:
                if result:  # older gdown returns None on failure
                    return result
                last = "gdown returned no file"
            if attempt + 1 < retry.attempts:
                if log:
                    log(f"{what}: {last}; retrying in {retry.delay(attempt):.1f} s")
                retry.wait(attempt)
        raise DownloadError(f"{what}: {last}")

    def fetch_file(self, drive_id: str, output: Path | str, *, retry: RetryPolicy = RetryPolicy(), log=None) -> Path:
        """Download Drive file ``drive_id`` to ``output`` (a file path, or a folder ending in '/'); gdown resumes."""
        fn = self._file_fn()
        out = str(output)
        result = self._retrying(
            f"Google-Drive file {self.describe(drive_id)}",
            retry,
            lambda: _call(
                fn, output=out, quiet=self.quiet, resume=True, **self._target(self.file_url_template, drive_id)
            ),
            log,
        )
        return Path(result) if isinstance(result, (str, os.PathLike)) else Path(output)

    def fetch_folder(
        self, drive_id: str, output_dir: Path, *, retry: RetryPolicy = RetryPolicy(), log=None
    ) -> list[Path]:
        """Download Drive folder ``drive_id`` into ``output_dir`` (already complete files are skipped)."""
        fn = self._folder_fn()
        output_dir.mkdir(parents=True, exist_ok=True)
        result = self._retrying(
            f"Google-Drive folder {self.describe(drive_id, folder=True)}",
            retry,
            lambda: _call(
                fn,
                output=str(output_dir),
                quiet=self.quiet,
                resume=True,
                **self._target(self.folder_url_template, drive_id),
            ),
            log,
        )
        return [Path(p) for p in result] if isinstance(result, (list, tuple)) else []

"""Where hmrepro keeps data, runs and results unless told otherwise.

``HMREPRO_HOME`` (default ``~/.hmrepro``) holds everything; ``HMREPRO_DATA`` overrides the data root
(default ``$HMREPRO_HOME/data``), the folder that contains ``VOC2012/``, ``COCO2014/`` and ``FSS-1000/``
exactly as the authors' code expects them.
"""

from __future__ import annotations

import os
from pathlib import Path


def hmrepro_home() -> Path:
    return Path(os.environ.get("HMREPRO_HOME", Path.home() / ".hmrepro")).expanduser()


def default_data_root() -> Path:
    env = os.environ.get("HMREPRO_DATA")
    return Path(env).expanduser() if env else hmrepro_home() / "data"


def default_synthetic_root() -> Path:
    return hmrepro_home() / "synthetic"


def resolve_data_root(data_root: str | os.PathLike | None) -> Path:
    return Path(data_root).expanduser() if data_root else default_data_root()

"""Where a checkpoint comes from — the ``origin`` of every result record it produces.

- ``own``: an hmrepro checkpoint (written by an hmrepro training run);
- ``official``: a file in another format whose sha256 is that of a checkpoint the authors published, as hmrepro
  knows it: recorded in ``<data_root>/checkpoints/index.json`` or pinned in the lock
  ``<data_root>/.hmrepro-lock.json`` when ``hmrepro download checkpoints`` fetched it (or took it with ``--from``),
  or listed with its sha256 among a model card's published checkpoints;
- ``external``: any other file (a fine-tuned or converted checkpoint, a file from elsewhere). It never fills the
  *verified* nor the *reproduced* column of a table.
"""

from __future__ import annotations

from pathlib import Path

from .checkpoint_io import Checkpoint

__all__ = ["OWN_FORMAT", "origin_of", "published_sha256s"]

OWN_FORMAT = "hmrepro"  # Checkpoint.source_format of the files hmrepro writes
CHECKPOINT_LOCK_PREFIX = "checkpoints/"  # lock keys of the downloaded checkpoints


def origin_of(checkpoint: Checkpoint, sha256: str, data_root: Path | None) -> str:
    """``own``, ``official`` or ``external`` for ``checkpoint`` whose file has ``sha256`` (see the module docstring)."""
    if checkpoint.source_format == OWN_FORMAT:
        return "own"
    return "official" if sha256 in published_sha256s(data_root) else "external"


def published_sha256s(data_root: Path | None) -> set[str]:
    """The sha256 of every published checkpoint hmrepro knows: downloaded under ``data_root``, or on a card."""
    return downloaded_sha256s(data_root) | card_sha256s()


def downloaded_sha256s(data_root: Path | None) -> set[str]:
    """The sha256 recorded in the checkpoint index and pinned in the lock of ``data_root``.

    ``None``: the default data root."""
    from ..acquisition.lock import LockFile
    from ..acquisition.published_weights import checkpoint_root, load_index

    root = checkpoint_root(data_root)
    found = {entry.get("sha256") for entry in load_index(root).get("entries", [])}
    lock = LockFile.for_data_root(root.parent)
    for key, entry in lock.data["files"].items():
        if key.startswith(CHECKPOINT_LOCK_PREFIX):
            found |= {entry.get("sha256"), *entry.get("origins", {}).values()}
    return {sha for sha in found if sha}


def card_sha256s() -> set[str]:
    """The sha256 listed for published checkpoints on the model cards (none where the cards list none)."""
    try:
        from ..models.cards import published_checkpoints
    except ImportError:  # an hmrepro without model cards
        return set()
    return {published.sha256 for published in published_checkpoints() if published.sha256}

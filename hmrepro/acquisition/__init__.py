"""Download, verify, extract and lay out the datasets, backbones and checkpoints hmrepro uses.

Small modules with one job each:

- :mod:`.registry` reads ``sources.toml`` (every file hmrepro fetches, with mirrors and checksums);
- :mod:`.http` and :mod:`.gdrive` fetch one file (resume, retries, progress); :mod:`.fetch` picks a
  candidate, honours ``--from DIR`` and skips what is already complete and verified;
- :mod:`.verify` and :mod:`.lock` check sizes and md5/sha256 (published, or pinned on first download);
- :mod:`.extract` unpacks tar/zip archives refusing entries that leave the target folder;
- :mod:`.prepare_pascal`, :mod:`.prepare_coco`, :mod:`.prepare_fss` build the layout the readers expect,
  :mod:`.coco_masks` and :mod:`.sbd` regenerate masks, :mod:`.check` validates a layout;
- :mod:`.checkpoints` fetches the authors' weights and resolves ``--weights official``.
"""

from .published_weights import resolve_official_weights

__all__ = ["resolve_official_weights"]

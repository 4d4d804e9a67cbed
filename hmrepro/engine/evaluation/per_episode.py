"""Per-episode results: what each evaluated episode contributed to mIoU and FB-IoU, and how large its objects were.

The runner (:func:`hmrepro.engine.evaluation.runner.run_loader`) records, for every episode, the columns of
``EPISODE_COLUMNS``:

- ``episode``: the episode's index in the evaluated list (the order of the protocol's fixed episodes);
- ``class_id``: the class on the metric's class axis;
- ``fg_inter``, ``fg_union``, ``bg_inter``, ``bg_union``: foreground/background intersection and union in
  pixels, exactly the counts :class:`~hmrepro.engine.evaluation.metrics.FewShotMeter` sums per class (ignored
  pixels left
  out, at the resolution the episode was scored at: the network's, or the query's original size);
- ``query_fg_fraction``: the query's foreground pixels over its non-ignored pixels (0..1);
- ``support_fg_fraction``: the same for each support (at the network resolution), averaged over the shots.

mIoU is recomputed from the columns as the meter does (:func:`miou_from_columns`): per class of the fold, summed
foreground intersection over summed union, a class with no episode counting 0; FB-IoU from the background and
foreground sums. Records keep the table in a compressed NumPy file next to the record JSON
(:func:`save_table`, :func:`load_table`; read without pickle).
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ...atomic import sha256_bytes  # noqa: F401 - re-exported: older callers import it from here

COUNT_COLUMNS = ("episode", "class_id", "fg_inter", "fg_union", "bg_inter", "bg_union")
FRACTION_COLUMNS = ("query_fg_fraction", "support_fg_fraction")
EPISODE_COLUMNS = (*COUNT_COLUMNS, *FRACTION_COLUMNS)
CLASS_IDS_KEY = "eval_class_ids"  # the classes mIoU averages over, stored with the table

EpisodeTable = dict  # column name -> 1-D numpy array, every column of EPISODE_COLUMNS

if TYPE_CHECKING:  # torch is imported where a batch is scored: reading a record's per-episode table needs NumPy only
    import torch  # (`hmrepro compare` never imports torch and starts ~2 s sooner)


def foreground_fraction(mask: torch.Tensor, ignore: torch.Tensor | None) -> torch.Tensor:
    """Foreground pixels over non-ignored pixels of each mask ([..., H, W] → [...]); 0 where all are ignored."""
    import torch

    valid = torch.ones_like(mask, dtype=torch.bool) if ignore is None or ignore.numel() == 0 else ignore == 0
    fg = ((mask.round() == 1) & valid).flatten(-2).sum(-1).double()
    return fg / valid.flatten(-2).sum(-1).clamp(min=1).double()


def batch_rows(first: int, inter: torch.Tensor, union: torch.Tensor, batch: Mapping) -> EpisodeTable:
    """The rows of one batch: episodes ``first ..``, counts from
    :func:`~hmrepro.engine.evaluation.metrics.intersection_union`
    ([2, B] each) and the fractions of the batch's query and support masks."""
    import torch

    n = inter.shape[1]
    support = foreground_fraction(batch["support_masks"], batch.get("support_ignores"))  # [B, K]
    return {
        "episode": np.arange(first, first + n, dtype=np.int64),
        "class_id": torch.as_tensor(batch["class_id"]).reshape(-1).cpu().numpy().astype(np.int64),
        "fg_inter": inter[1].cpu().numpy().astype(np.int64),
        "fg_union": union[1].cpu().numpy().astype(np.int64),
        "bg_inter": inter[0].cpu().numpy().astype(np.int64),
        "bg_union": union[0].cpu().numpy().astype(np.int64),
        "query_fg_fraction": foreground_fraction(batch["query_mask"], batch.get("query_ignore")).cpu().numpy(),
        "support_fg_fraction": support.reshape(n, -1).mean(dim=1).cpu().numpy(),
    }


def concat(parts: Sequence[EpisodeTable]) -> EpisodeTable:
    """One table from the tables of several batches (an empty table for none)."""
    if not parts:
        return {c: np.zeros(0, dtype=np.int64 if c in COUNT_COLUMNS else np.float64) for c in EPISODE_COLUMNS}
    return {c: np.concatenate([p[c] for p in parts]) for c in EPISODE_COLUMNS}


def miou_from_columns(table: Mapping, class_ids: Sequence[int]) -> tuple[float, float]:
    """(mIoU, FB-IoU) in % from the episode columns, as :meth:`FewShotMeter.compute` gives them."""
    class_ids = np.asarray(class_ids, dtype=np.int64)
    cls = np.asarray(table["class_id"], dtype=np.int64)
    size = int(max(class_ids.max(initial=0), cls.max(initial=0))) + 1
    inter = np.bincount(cls, weights=np.asarray(table["fg_inter"], dtype=np.float64), minlength=size)
    union = np.bincount(cls, weights=np.asarray(table["fg_union"], dtype=np.float64), minlength=size)
    miou = float(np.mean(inter[class_ids] / np.maximum(union[class_ids], 1))) * 100
    counted = np.isin(cls, class_ids)
    fb = []
    for i, u in (("bg_inter", "bg_union"), ("fg_inter", "fg_union")):
        fb.append(np.asarray(table[i])[counted].sum() / max(np.asarray(table[u])[counted].sum(), 1))
    return miou, float(np.mean(fb)) * 100


def table_bytes(table: Mapping, class_ids: Sequence[int]) -> bytes:
    """The table (and the classes mIoU averages over) as the bytes of a compressed ``.npz`` file."""
    buffer = io.BytesIO()
    arrays = {c: np.asarray(table[c]) for c in EPISODE_COLUMNS}
    arrays = {c: a.astype(np.int32 if c in COUNT_COLUMNS and _fits_int32(a) else a.dtype) for c, a in arrays.items()}
    np.savez_compressed(buffer, **arrays, **{CLASS_IDS_KEY: np.asarray(list(class_ids), dtype=np.int32)})
    return buffer.getvalue()


def load_table(path: Path) -> tuple[EpisodeTable, np.ndarray]:
    """(table, eval class ids) from a file written with :func:`table_bytes`, with the limits and checks of
    :func:`hmrepro.engine.record_schema.table_from_npz` (a regular file, sizes checked before decompressing, no
    pickle, counts and fractions in range); a one-line :class:`~hmrepro.errors.HmreproError` otherwise."""
    from ...saferead import UntrustedFileError, read_bounded
    from ..record_schema import MAX_SIDECAR_BYTES, RecordError, table_from_npz

    path = Path(path)
    try:
        table, class_ids = table_from_npz(read_bounded(path, inside=path.parent, max_bytes=MAX_SIDECAR_BYTES))
    except (UntrustedFileError, RecordError) as err:
        raise RecordError(f"{path}: {err}") from None
    return table, np.asarray(class_ids, dtype=np.int64)


def _fits_int32(a: np.ndarray) -> bool:
    return a.size == 0 or (a.min() >= np.iinfo(np.int32).min and a.max() <= np.iinfo(np.int32).max)

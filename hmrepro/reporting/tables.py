"""Claimed vs verified vs reproduced: the rows of one of the paper's tables joined with hmrepro's result records.

Result records are the JSON files of :mod:`hmrepro.engine.records`. A claimed row takes records only when the
HM authors ran it themselves (``source == 'hm'`` and a ``model`` is named); rows quoted from other papers keep
their claimed values only. A record matches a row when all of these hold:

- ``model``, ``shot`` and ``backbone`` are the row's (a row without a backbone, Table 7, takes any backbone);
- ``kind`` (default ``'eval'``) is the table's: ``'domain-shift'`` for Table 4, ``'bench'`` for Table 7,
  ``'eval'`` otherwise;
- ``benchmark`` is the row's; for Table 4 (a COCO-20i model tested on PASCAL-5i) the record may name the test
  benchmark (``'pascal'``), the training benchmark (``'coco'``) or both (``'coco2pascal'``);
- ``fold`` gives the column; FSS-1000 has a single split, so its records match whatever their fold.

Records of origin ``'official'`` (the authors' checkpoints) fill the *verified* columns, but only for rows whose
checkpoint the HM authors published (``official_checkpoint`` in the claimed data): an official HSNet checkpoint
is not the HM authors' HSNet* of Table 1. Records of origin ``'own'`` fill the *reproduced* columns; ``'random'``
records are never shown. Of several matching records the newest (``date``) wins. The mean over folds is given only
when all four folds have a record.

Bench records (``kind='bench'``, Table 7) carry ``secs_per_image``: the wall-clock seconds that inference of one
query image takes at batch size 1, after warm-up and with the device synchronised before the clock is read —
support masking, feature extraction of query and supports, the model's forward pass and the prediction
(upsampling and argmax) included; data loading and metric computation excluded. This is the paper's
"secs/image" of Table 7. A bench record without ``secs_per_image`` falls back to ``secs_per_episode`` (the same
thing for a 1-shot episode of one query). Bench records of any origin count: timing does not depend on weights.
"""

from __future__ import annotations

import math
from datetime import datetime
from pathlib import Path
from typing import Iterable

import pandas as pd

from ..engine.records import ORIGINS, read_records
from .claimed import FOLD_COLUMNS, load_claimed

ORIGIN_COLUMNS = {"official": "verified", "own": "reproduced"}
SINGLE_SPLIT_BENCHMARKS = {"fss"}
DOMAIN_SHIFT_TABLE = 4
BENCH_TABLE = 7


def record_kind(table: int) -> str:
    """The ``kind`` of the records that fill ``table``."""
    return {DOMAIN_SHIFT_TABLE: "domain-shift", BENCH_TABLE: "bench"}.get(table, "eval")


def accepted_benchmarks(row: pd.Series) -> set[str]:
    """Benchmark names a matching record may carry for ``row``."""
    names = {row["benchmark"]}
    if row["trained_on"]:
        names |= {row["trained_on"], f"{row['trained_on']}2{row['benchmark']}"}
    return names


def takes_records(row: pd.Series) -> bool:
    """Whether ``row`` is one the HM authors ran, with an hmrepro model that reproduces it."""
    return row["source"] == "hm" and bool(row["model"])


def matching_records(row: pd.Series, records: Iterable[dict], origins: Iterable[str]) -> list[dict]:
    """The records of one of ``origins`` that belong to ``row`` (all folds)."""
    kind = record_kind(int(row["table"]))
    benchmarks = accepted_benchmarks(row)
    origins = set(origins)
    return [
        r
        for r in records
        if r.get("origin") in origins
        and r.get("kind", "eval") == kind
        and r.get("model") == row["model"]
        and r.get("benchmark") in benchmarks
        and _as_int(r.get("shot")) == int(row["shot"])
        and (not row["backbone"] or r.get("backbone") == row["backbone"])
    ]


def newest(records: Iterable[dict]) -> dict | None:
    """The record with the latest ``date`` (None for no records)."""
    return max(records, key=_record_time, default=None)


def measured_values(row: pd.Series, records: list[dict]) -> dict[str, float]:
    """Per-fold mIoU, mean mIoU and mean FB-IoU of ``row`` from its matching ``records`` (NaN where missing).

    Single-split benchmarks (FSS-1000) take the newest record of any fold as the mean.
    """
    values = {c: math.nan for c in (*FOLD_COLUMNS, "miou", "fb_iou")}
    if row["benchmark"] in SINGLE_SPLIT_BENCHMARKS:
        best = newest(records)
        if best is not None:
            values["miou"], values["fb_iou"] = _as_float(best.get("miou")), _as_float(best.get("fb_iou"))
        return values
    fb_ious = []
    for fold, column in enumerate(FOLD_COLUMNS):
        best = newest(r for r in records if _as_int(r.get("fold")) == fold)
        if best is not None:
            values[column] = _as_float(best.get("miou"))
            fb_ious.append(_as_float(best.get("fb_iou")))
    folds = [values[c] for c in FOLD_COLUMNS]
    if not any(math.isnan(v) for v in folds):
        values["miou"] = sum(folds) / len(folds)
        if len(fb_ious) == len(FOLD_COLUMNS) and not any(math.isnan(v) for v in fb_ious):
            values["fb_iou"] = sum(fb_ious) / len(fb_ious)
    return values


def measured_secs_per_image(row: pd.Series, records: list[dict]) -> float:
    """Seconds per image of the newest bench record of ``row`` (NaN when there is none)."""
    best = newest(records)
    if best is None:
        return math.nan
    return _as_float(best.get("secs_per_image", best.get("secs_per_episode")))


def compare_table(
    table: int,
    results_dir: Path | None = None,
    records: list[dict] | None = None,
    claimed_folder: Path | None = None,
) -> pd.DataFrame:
    """The claimed rows of ``table`` with the verified and reproduced values next to them.

    Records come from ``records`` or else from ``results_dir`` (none when both are None). Columns: every claimed
    column, then ``verified_*`` and ``reproduced_*`` for fold0..fold3, miou and fb_iou, the flags
    ``verified_applicable`` / ``reproduced_applicable``, and for Table 7 ``measured_secs_per_image`` and
    ``measured_overhead_pct`` (relative to the table's first row, HSNet-FM).
    """
    claimed = load_claimed(table, claimed_folder)
    if records is None:
        records = list(read_records(results_dir)) if results_dir is not None else []
    rows = [_compare_row(row, records) for _, row in claimed.iterrows()]
    frame = pd.concat([claimed, pd.DataFrame(rows, index=claimed.index)], axis=1)
    if table == BENCH_TABLE:
        reference = frame["measured_secs_per_image"].iloc[0]
        frame["measured_overhead_pct"] = (frame["measured_secs_per_image"] / reference - 1.0) * 100.0
        frame.loc[frame.index[0], "measured_overhead_pct"] = math.nan
    return frame


def _compare_row(row: pd.Series, records: list[dict]) -> dict:
    """The measured columns of one claimed row."""
    out: dict[str, object] = {}
    table = int(row["table"])
    applicable = {
        "verified": takes_records(row) and bool(row["official_checkpoint"]) and table != BENCH_TABLE,
        "reproduced": takes_records(row) and table != BENCH_TABLE,
    }
    for origin, prefix in ORIGIN_COLUMNS.items():
        out[f"{prefix}_applicable"] = applicable[prefix]
        matched = matching_records(row, records, [origin]) if applicable[prefix] else []
        for column, value in measured_values(row, matched).items():
            out[f"{prefix}_{column}"] = value
        out[f"{prefix}_records"] = len(matched)
    if table == BENCH_TABLE:
        # timing does not depend on the weights: bench records of every origin count
        matched = matching_records(row, records, ORIGINS) if takes_records(row) else []
        out["measured_secs_per_image"] = measured_secs_per_image(row, matched)
    return out


def _record_time(record: dict) -> datetime:
    """The record's ``date`` as an aware datetime (the earliest possible time when unreadable)."""
    try:
        when = datetime.fromisoformat(str(record.get("date")))
    except ValueError:
        return datetime.min.replace(tzinfo=datetime.now().astimezone().tzinfo)
    return when if when.tzinfo else when.astimezone()


def _as_int(value) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _as_float(value) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan

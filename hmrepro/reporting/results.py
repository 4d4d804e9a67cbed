"""Every result record as one table: :func:`load` gives a pandas DataFrame, one row per record.

Records are read by :func:`hmrepro.engine.records.read_records` (files that cannot be used are skipped and named in
``frame.attrs["skipped_records"]``). Whether a record fills a cell of the paper's tables, and why not, comes from
:func:`hmrepro.reporting.tables.record_listing` over every table of the paper, so the answer is the tables' own.

Columns (``COLUMNS``): what was evaluated (model, masking, backbone, benchmark, kind, fold, shot), how (protocol,
origin, precision, img_size, episodes, total_episodes), the numbers (miou, fb_iou), where it came from
(checkpoint_sha256, train_seed, run_dir, date), the machine (git_commit, hmrepro_version, torch_version, device,
device_name), ``fills_cell`` (bool), ``cells`` (e.g. ``Table 3 reproduced miou``), ``why_not`` (why it fills no
cell) and ``path`` (the record file).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from ..engine.records import precision_of, read_records
from ..papers import get_paper
from .tables import SKIPPED, TableQuery, record_listing

NO_ROW = "belongs to no row of the paper's tables"
COLUMNS = (
    "model",
    "masking",
    "backbone",
    "benchmark",
    "kind",
    "fold",
    "shot",
    "protocol",
    "origin",
    "precision",
    "img_size",
    "episodes",
    "total_episodes",
    "miou",
    "fb_iou",
    "checkpoint_sha256",
    "train_seed",
    "run_dir",
    "date",
    "git_commit",
    "hmrepro_version",
    "torch_version",
    "device",
    "device_name",
    "fills_cell",
    "cells",
    "why_not",
    "path",
)
INTEGER_COLUMNS = ("fold", "shot", "img_size", "episodes", "total_episodes", "train_seed")
FLOAT_COLUMNS = ("miou", "fb_iou")
TEXT_COLUMNS = tuple(c for c in COLUMNS if c not in (*INTEGER_COLUMNS, *FLOAT_COLUMNS, "fills_cell"))


def load(results_dir: Path | str, *, paper: str = "hm") -> pd.DataFrame:
    """One row per record below ``results_dir`` with the columns ``COLUMNS``; ``frame.attrs["skipped_records"]``
    names each record file that could not be used, and why."""
    problems: list[str] = []
    records = list(read_records(Path(results_dir), problems)) if Path(results_dir).is_dir() else []
    frame = records_frame(records, paper=paper)
    frame.attrs[SKIPPED] = problems
    return frame


def records_frame(records: list[dict], *, paper: str = "hm") -> pd.DataFrame:
    """The frame of :func:`load` for records already read (each with its ``path``)."""
    placement = cell_placement(records, paper=paper)
    rows = [_row(record, placement.get(str(record.get("path", "")))) for record in records]
    frame = pd.DataFrame(rows, columns=list(COLUMNS))
    frame = frame.astype({c: "Int64" for c in INTEGER_COLUMNS} | {c: "float64" for c in FLOAT_COLUMNS})
    frame = frame.astype({"fills_cell": "bool"} | {c: "string" for c in TEXT_COLUMNS})
    frame.attrs["paper"] = paper
    return frame


def cell_placement(records: list[dict], *, paper: str = "hm") -> dict[str, tuple[list[str], list[str]]]:
    """By record path: (the cells it fills, e.g. ``Table 1 verified fold0``; why it fills none of a row it belongs
    to), over every table of ``paper`` (:func:`~hmrepro.reporting.tables.record_listing`)."""
    spec = get_paper(paper)
    placement: dict[str, tuple[list[str], list[str]]] = {}
    for table in spec.tables:
        listing = record_listing(TableQuery(table, records=records, paper=paper))
        for _, line in listing.iterrows():
            cells, reasons = placement.setdefault(str(line["path"]), ([], []))
            if line["cell"]:
                cells.append(f"{spec.table_label(table)} {line['cell']}")
            elif line["reason"]:
                reasons.append(f"{spec.table_label(table)}: {line['reason']}")
    return placement


def _row(record: dict, placement: tuple[list[str], list[str]] | None) -> dict:
    cells, reasons = placement or ([], [])
    versions = record.get("versions") if isinstance(record.get("versions"), dict) else {}
    row = {key: record.get(key) for key in COLUMNS}
    row.update(
        kind=record.get("kind", "eval"),
        precision=precision_of(record),
        hmrepro_version=versions.get("hmrepro"),
        torch_version=versions.get("torch"),
        fills_cell=bool(cells),
        cells="; ".join(cells),
        why_not="" if cells else ("; ".join(_unique(reasons)) if reasons else NO_ROW),
    )
    for key in INTEGER_COLUMNS:
        row[key] = _as_int(row[key])
    for key in FLOAT_COLUMNS:
        row[key] = _as_float(row[key])
    for key in TEXT_COLUMNS:
        row[key] = None if row[key] is None else str(row[key])
    return row


def _unique(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(items))


def _as_int(value) -> int | None:
    try:
        return None if value is None or isinstance(value, bool) else int(value)
    except (TypeError, ValueError):
        return None


def _as_float(value) -> float | None:
    try:
        return None if value is None or isinstance(value, bool) else float(value)
    except (TypeError, ValueError):
        return None

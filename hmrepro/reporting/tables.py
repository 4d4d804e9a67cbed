"""Claimed vs verified vs reproduced: the rows of one of the paper's tables joined with hmrepro's result records.

Result records are the JSON files of :mod:`hmrepro.engine.records`. A claimed row takes records only when the
paper's authors ran it themselves (``source`` is the paper's key: ``'hm'`` for the HM paper, ``'crcnet'``, ...)
and a ``model`` is named, and for the quoted baselines whose claimed data names a ``model`` (HSNet, VAT, ASNet: a
gain over them can only be reproduced if both sides are); other quoted rows keep their claimed values only. A
record matches a row when all of these hold:

- ``model``, ``shot`` and ``backbone`` are the row's (a row without a backbone, Table 7, takes any backbone);
- ``kind`` (default ``'eval'``) is the table's (:mod:`hmrepro.papers`): for the HM paper ``'domain-shift'`` for
  Table 4, ``'bench'`` for Table 7; ``'eval'`` otherwise and for every table of the other papers;
- ``benchmark`` is the row's; for Table 4 (a COCO-20i model tested on PASCAL-5i) the record may name the test
  benchmark (``'pascal'``), the training benchmark (``'coco'``) or both (``'coco2pascal'``);
- ``fold`` gives the column; FSS-1000 has a single split, so its records match whatever their fold;
- the record is the run the row names (:mod:`hmrepro.reporting.settings`): the row's ``overrides`` and every
  default it does not override (model arguments, the training switch ``augment``, test-time options such as
  CRCNet's ``scales`` and K-shot mode) and the episode protocol of the row's model card (``bam`` for MCE). Timing
  rows (Table 7) skip this check.

Records of origin ``'official'`` (a checkpoint whose sha256 is one the authors published) fill the *verified*
columns, but only for rows whose checkpoint the HM authors published (``official_checkpoint`` in the claimed data):
an official HSNet checkpoint is not the HM authors' HSNet* of Table 1. Records of origin ``'own'`` fill the
*reproduced* columns; ``'external'`` (any other foreign checkpoint) and ``'random'`` records are never shown.

Only records of the full protocol fill a cell (:func:`hmrepro.engine.records.protocol_deviations`: every episode of
the fold, the model's default image size, fp32, network resolution unless ``original_size`` is asked for); of
several such records the newest (``date``) wins. The mean over folds is given only when all four folds have a
record. :func:`record_listing` lists every record of a table's rows with the cell it fills or why it fills none.

Bench records (``kind='bench'``, Table 7) carry ``secs_per_image``: the wall-clock seconds that inference of one
query image takes at batch size 1, after warm-up and with the device synchronised before the clock is read —
support masking, feature extraction of query and supports, the model's forward pass and the prediction
(upsampling and argmax) included; data loading and metric computation excluded. This is the paper's
"secs/image" of Table 7. A bench record without ``secs_per_image`` falls back to ``secs_per_episode`` (the same
thing for a 1-shot episode of one query). Bench records of any origin and protocol count: timing does not depend on
weights, and a bench record evaluates no episodes.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pandas as pd

from ..engine.records import ORIGINS, precision_of, protocol_deviations, read_records
from ..papers import get_paper
from .claimed import FOLD_COLUMNS, load_claimed
from .settings import setting_differences

ORIGIN_COLUMNS = {"official": "verified", "own": "reproduced"}
NEVER_SHOWN = {"external": "external checkpoint", "random": "random weights"}  # origins that fill no cell
MEASURED = "measured"  # Table 7's cell prefix
SUPERSEDED = "a newer record fills the cell"
LISTING_COLUMNS = (
    "method",
    "backbone",
    "shot",
    "model",
    "benchmark",
    "fold",
    "origin",
    "miou",
    "episodes",
    "precision",
    "img_size",
    "date",
    "cell",
    "reason",
    "path",
)
SINGLE_SPLIT_BENCHMARKS = {"fss"}
DOMAIN_SHIFT_TABLE = 4
BENCH_TABLE = 7
SKIPPED = "skipped_records"  # frame.attrs[SKIPPED]: one line per record file that could not be used, and why


def record_kind(table: int, paper: str = "hm") -> str:
    """The ``kind`` of the records that fill ``paper``'s ``table`` (the HM paper: 4 domain-shift, 7 bench)."""
    return get_paper(paper).record_kind(table)


def row_kind(row: pd.Series) -> str:
    """The ``kind`` of the records that fill ``row`` (a claimed row; its ``paper`` column, default the HM paper)."""
    return record_kind(int(row["table"]), row.get("paper") or "hm")


def accepted_benchmarks(row: pd.Series) -> set[str]:
    """Benchmark names a matching record may carry for ``row``."""
    names = {row["benchmark"]}
    if row["trained_on"]:
        names |= {row["trained_on"], f"{row['trained_on']}2{row['benchmark']}"}
    return names


def takes_records(row: pd.Series) -> bool:
    """Whether ``row`` has an hmrepro model that reproduces it: a row the paper's authors ran (source ``hm`` for the
    HM paper), or a quoted baseline (HSNet, VAT, ASNet) whose claimed data names its model, so that a gain over it
    can be reproduced on both sides."""
    return row["source"] in ((row.get("paper") or "hm"), "quoted") and bool(row["model"])


def matching_records(row: pd.Series, records: Iterable[dict], origins: Iterable[str]) -> list[dict]:
    """The records of one of ``origins`` that belong to ``row`` (all folds): its model, benchmark, shot and backbone
    (:func:`candidate_records`), and the run it names (:func:`~hmrepro.reporting.settings.setting_differences`
    finds nothing: model arguments, training switches, protocol, test-time options; not for timing rows)."""
    candidates = candidate_records(row, records, origins)
    if row_kind(row) == "bench":
        return candidates
    return [r for r in candidates if not setting_differences(row, r)]


def candidate_records(row: pd.Series, records: Iterable[dict], origins: Iterable[str]) -> list[dict]:
    """The records of one of ``origins`` of ``row``'s kind, model, benchmark, shot and backbone (all folds), whatever
    run they are."""
    kind = row_kind(row)
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


def cell_records(row: pd.Series, records: list[dict], *, original_size: bool = False) -> dict[str, dict]:
    """The record that fills each value cell of ``row`` among its matching ``records`` (one origin), by column.

    Only full-protocol records qualify; the newest per fold (``fold0``..``fold3``) wins. Single-split benchmarks
    (FSS-1000) have one cell, ``miou``, filled by the newest record of any fold.
    """
    full = [r for r in records if not protocol_deviations(r, original_size_wanted=original_size)]
    if row["benchmark"] in SINGLE_SPLIT_BENCHMARKS:
        best = newest(full)
        return {"miou": best} if best is not None else {}
    cells = {}
    for fold, column in enumerate(FOLD_COLUMNS):
        best = newest(r for r in full if _as_int(r.get("fold")) == fold)
        if best is not None:
            cells[column] = best
    return cells


def measured_values(cells: dict[str, dict]) -> dict[str, float]:
    """Per-fold mIoU, mean mIoU and mean FB-IoU from the records of :func:`cell_records` (NaN where missing)."""
    values = {c: math.nan for c in (*FOLD_COLUMNS, "miou", "fb_iou")}
    if "miou" in cells:  # single split
        values["miou"], values["fb_iou"] = _as_float(cells["miou"].get("miou")), _as_float(cells["miou"].get("fb_iou"))
        return values
    for column, record in cells.items():
        values[column] = _as_float(record.get("miou"))
    if all(column in cells for column in FOLD_COLUMNS):
        values["miou"] = sum(values[c] for c in FOLD_COLUMNS) / len(FOLD_COLUMNS)
        fb_ious = [_as_float(cells[c].get("fb_iou")) for c in FOLD_COLUMNS]
        if not any(math.isnan(v) for v in fb_ious):
            values["fb_iou"] = sum(fb_ious) / len(fb_ious)
    return values


def measured_secs_per_image(record: dict | None) -> float:
    """Seconds per image of a bench record (NaN for none)."""
    if record is None:
        return math.nan
    return _as_float(record.get("secs_per_image", record.get("secs_per_episode")))


def applicable_columns(row: pd.Series) -> dict[str, bool]:
    """Whether ``row`` has a *verified* and a *reproduced* value to show."""
    measured = takes_records(row) and row_kind(row) != "bench"
    return {"verified": measured and bool(row["official_checkpoint"]), "reproduced": measured}


def row_cells(row: pd.Series, records: list[dict], *, original_size: bool = False) -> dict[str, dict[str, dict]]:
    """The records that fill ``row``'s cells: ``{'verified' | 'reproduced' | 'measured': {column: record}}``."""
    if row_kind(row) == "bench":
        best = newest(matching_records(row, records, ORIGINS)) if takes_records(row) else None
        return {MEASURED: {"secs_per_image": best} if best is not None else {}}
    applicable = applicable_columns(row)
    return {
        prefix: cell_records(row, matching_records(row, records, [origin]), original_size=original_size)
        if applicable[prefix]
        else {}
        for origin, prefix in ORIGIN_COLUMNS.items()
    }


@dataclass(frozen=True)
class TableQuery:
    """A table to fill: ``paper``'s ``table`` (its claimed values from ``claimed_folder``, else the package's), and
    the records that fill it: ``records``, or else those below ``results_dir`` (none when both are None); only
    full-protocol records fill a cell, original-size ones instead of network-resolution ones when ``original_size``."""

    table: int
    results_dir: Path | None = None
    records: list[dict] | None = None
    claimed_folder: Path | None = None
    original_size: bool = False
    paper: str = "hm"

    def load(self) -> tuple[pd.DataFrame, list[dict], list[str]]:
        """The claimed rows, the records, and one line per record file below ``results_dir`` that could not be
        read."""
        claimed = load_claimed(self.table, self.claimed_folder, paper=self.paper)
        problems: list[str] = []
        return claimed, _records(self.results_dir, self.records, problems), problems


def compare_table(query: TableQuery, *, ci: bool = False) -> pd.DataFrame:
    """The claimed rows of the ``query``'s table with the verified and reproduced values next to them. Columns:
    every claimed column, then ``verified_*`` and ``reproduced_*`` for fold0..fold3, miou and fb_iou, the flags
    ``verified_applicable`` / ``reproduced_applicable``, the counts ``verified_records`` / ``reproduced_records``
    (matching records of any protocol), and for Table 7 ``measured_secs_per_image`` and ``measured_overhead_pct``
    (relative to the table's first row, HSNet-FM). ``frame.attrs["skipped_records"]`` lists, one line per file,
    the record files below ``results_dir`` that could not be read (for the caller to show). Other tables also get
    the training-seed, interval (``ci``) and gain columns of :mod:`hmrepro.reporting.uncertainty`.
    """
    claimed, records, problems = query.load()
    table, original_size, paper = query.table, query.original_size, query.paper
    rows = [_compare_row(row, records, original_size) for _, row in claimed.iterrows()]
    frame = pd.concat([claimed, pd.DataFrame(rows, index=claimed.index)], axis=1)
    frame.attrs["paper"] = paper
    if record_kind(table, paper) == "bench":
        reference = frame["measured_secs_per_image"].iloc[0]
        frame["measured_overhead_pct"] = (frame["measured_secs_per_image"] / reference - 1.0) * 100.0
        frame.loc[frame.index[0], "measured_overhead_pct"] = math.nan
    else:
        from .uncertainty import add_uncertainty

        frame = add_uncertainty(frame, records, original_size=original_size, ci=ci)
        frame.attrs["paper"] = paper
    frame.attrs[SKIPPED] = problems
    return frame


def record_listing(query: TableQuery) -> pd.DataFrame:
    """Every record that belongs to a row of the ``query``'s table, one line per (row, record), with the cell it fills
    (``cell``, e.g. ``verified fold0``) or the reasons it fills none (``reason``, e.g. ``20 of 1000 episodes;
    bf16``). Columns: ``LISTING_COLUMNS``; rows in the table's order, then fold, newest first;
    ``frame.attrs["skipped_records"]`` as in :func:`compare_table`."""
    claimed, records, problems = query.load()
    rows = [row for _, row in claimed.iterrows() if takes_records(row)]
    listed = _listed_rows(rows, records)
    lines = []
    for number, row in enumerate(rows):
        filled = {
            id(r): f"{prefix} {column}"
            for prefix, cells in row_cells(row, records, original_size=query.original_size).items()
            for column, r in cells.items()
        }
        mine = [r for r in candidate_records(row, records, ORIGINS) if number in listed[id(r)]]
        for record in sorted(sorted(mine, key=_record_time, reverse=True), key=lambda r: _as_int(r.get("fold")) or 0):
            cell = filled.get(id(record), "")
            reason = "" if cell else "; ".join(why_not_shown(row, record, original_size=query.original_size))
            lines.append(_listing_line(row, record, cell, reason))
    frame = pd.DataFrame(lines, columns=list(LISTING_COLUMNS))
    frame = frame.astype({column: "Int64" for column in ("shot", "fold", "episodes", "img_size")})
    frame.attrs[SKIPPED] = problems
    frame.attrs["paper"] = query.paper
    return frame


def _listed_rows(rows: list[pd.Series], records: list[dict]) -> dict[int, set[int]]:
    """Under which of ``rows`` (their positions) the listing shows each record (by ``id``): the rows whose run it is
    (:func:`matching_records`); a record that is no row's run, under the rows it is a candidate of
    (:func:`candidate_records`) that differ from it in the fewest settings, so that the listing says what differed."""
    differences: dict[int, dict[int, int]] = {}
    for number, row in enumerate(rows):
        bench = row_kind(row) == "bench"
        for record in candidate_records(row, records, ORIGINS):
            differences.setdefault(id(record), {})[number] = 0 if bench else len(setting_differences(row, record))
    listed = {}
    for key, by_row in differences.items():
        fewest = min(by_row.values())
        listed[key] = {number for number, count in by_row.items() if count == fewest}
    return {**{id(r): set() for r in records}, **listed}


def why_not_shown(row: pd.Series, record: dict, *, original_size: bool = False) -> list[str]:
    """Why ``record``, one of ``row``'s candidate records, fills none of its cells: the settings in which it is not
    the row's run (:func:`~hmrepro.reporting.settings.setting_differences`), its origin, its protocol deviations
    (``SUPERSEDED`` if nothing else)."""
    reasons = []
    if row_kind(row) != "bench":
        reasons += setting_differences(row, record)
        origin = record.get("origin")
        if origin in NEVER_SHOWN:
            reasons.append(NEVER_SHOWN[origin])
        elif origin in ORIGIN_COLUMNS and not applicable_columns(row)[ORIGIN_COLUMNS[origin]]:
            reasons.append("no official checkpoint of this row was published")
        reasons += protocol_deviations(record, original_size_wanted=original_size)
    return reasons or [SUPERSEDED]


def _listing_line(row: pd.Series, record: dict, cell: str, reason: str) -> dict:
    return {
        "method": row["method"],
        "backbone": row["backbone"],
        "shot": int(row["shot"]),
        "model": record.get("model"),
        "benchmark": record.get("benchmark"),
        "fold": _as_int(record.get("fold")),
        "origin": record.get("origin"),
        "miou": _as_float(record.get("miou")),
        "episodes": _as_int(record.get("episodes")),
        "precision": precision_of(record),
        "img_size": _as_int(record.get("img_size")),
        "date": str(record.get("date", "")),
        "cell": cell,
        "reason": reason,
        "path": str(record.get("path", "")),
    }


def _records(results_dir: Path | None, records: list[dict] | None, problems: list[str]) -> list[dict]:
    if records is not None:
        return records
    return list(read_records(results_dir, problems)) if results_dir is not None else []


def _compare_row(row: pd.Series, records: list[dict], original_size: bool) -> dict:
    """The measured columns of one claimed row."""
    out: dict[str, object] = {}
    cells = row_cells(row, records, original_size=original_size)
    if row_kind(row) == "bench":
        out["measured_secs_per_image"] = measured_secs_per_image(cells[MEASURED].get("secs_per_image"))
    applicable = applicable_columns(row)
    for origin, prefix in ORIGIN_COLUMNS.items():
        out[f"{prefix}_applicable"] = applicable[prefix]
        for column, value in measured_values(cells.get(prefix, {})).items():
            out[f"{prefix}_{column}"] = value
        out[f"{prefix}_records"] = len(matching_records(row, records, [origin])) if applicable[prefix] else 0
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

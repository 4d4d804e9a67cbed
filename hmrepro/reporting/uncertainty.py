"""Uncertainty and baselines in the compared tables: training seeds, episode intervals, and HM's gains.

Added to :func:`hmrepro.reporting.tables.compare_table`'s frame (non-bench tables) by :func:`add_uncertainty`:

- **Training seeds.** When a reproduced cell has full-protocol records of several training runs with different
  ``--seed`` (the record's ``train_seed``; the newest record per seed), the cell shows the mean over seeds with
  the standard deviation (``reproduced_<col>_sd``) and how many seeds (``reproduced_<col>_seeds``); the mean
  column averages each seed's complete set of folds.
- **Intervals** (``ci``): each verified/reproduced cell filled by one record gets the 95 % bootstrap interval of
  its mIoU over the fold's episodes (``<prefix>_<col>_low`` / ``_high``; the mean column resamples each fold on its
  own, and FB-IoU gets its interval too), from the records' per-episode results (:mod:`hmrepro.reporting.stats`).
- **Gains.** Every HM row (masking ``hm*``) whose baseline row is in the table (the family's baseline model, same
  backbone, benchmark and shot) gets ``gain_baseline`` (the baseline's method), the claimed gain
  ``gain_claimed_<col>`` (HM − baseline as printed), the reproduced gain ``gain_<col>`` (reproduced HM − reproduced
  baseline, cell by cell) and, with ``ci``, its paired interval ``gain_<col>_low`` / ``_high`` and
  ``gain_inside``: whether the claimed mean gain lies inside the reproduced one's interval. The interval comes
  from the records the two cells show: a cell that is a mean over training seeds brings every seed's records
  (the interval of the difference of the means, :func:`~hmrepro.reporting.stats.compare_means`), else its one
  record per fold.

Intervals cover the episode draw only; training-seed noise shows only through several seeds.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

import pandas as pd

from ..errors import HmreproError
from .claimed import FOLD_COLUMNS

TABLE_RESAMPLES = 2000  # per interval; a table computes many
VALUE_COLUMNS = (*FOLD_COLUMNS, "miou")
PREFIXES = ("verified", "reproduced")


def add_uncertainty(
    frame: pd.DataFrame, records: list[dict], *, original_size: bool, ci: bool, resamples: int = TABLE_RESAMPLES
) -> pd.DataFrame:
    """``frame`` with the seed, interval and gain columns of the module docstring (a new frame)."""
    from .tables import matching_records, row_cells

    frame = frame.copy()
    extra: dict[str, list] = {}
    cells_by_row = [row_cells(row, records, original_size=original_size) for _, row in frame.iterrows()]
    seeds_by_row = []  # per row: the reproduced cells of each training seed ([] for one seed or none)
    for position, (_index, row) in enumerate(frame.iterrows()):
        own = [r for r in matching_records(row, records, ["own"])] if row["reproduced_applicable"] else []
        seeds_by_row.append(_seed_cells(row, own, original_size))
        _put(extra, position, len(frame), _seed_columns(seeds_by_row[-1]))
        if ci:
            for prefix in PREFIXES:
                _put(
                    extra,
                    position,
                    len(frame),
                    _interval_columns(prefix, cells_by_row[position].get(prefix, {}), resamples),
                )
    for column, values in extra.items():
        frame[column] = values
    frame = _apply_seed_means(frame)
    _add_gains(frame, cells_by_row, seeds_by_row, ci, resamples)
    return frame


def _put(extra: dict[str, list], position: int, size: int, values: dict) -> None:
    for column, value in values.items():
        extra.setdefault(column, [math.nan] * size)[position] = value


# ---------------------------------------------------------------------------------------------------------------
# Training seeds
# ---------------------------------------------------------------------------------------------------------------


def _seed_cells(row: pd.Series, own: list[dict], original_size: bool) -> list[dict[str, dict]]:
    """The reproduced cells (:func:`~hmrepro.reporting.tables.cell_records`) of each training seed of ``own``;
    empty when there are fewer than two seeds."""
    from .tables import cell_records

    by_seed: dict[object, list[dict]] = {}
    for record in own:
        by_seed.setdefault(_training_run(record, own), []).append(record)
    if len(by_seed) < 2:
        return []
    return [cell_records(row, rs, original_size=original_size) for rs in by_seed.values()]


def _seed_columns(seed_cells: list[dict[str, dict]]) -> dict:
    """Mean, sd and count over training seeds of each reproduced value column (count 1 or less: no columns)."""
    per_seed = [_values(cells) for cells in seed_cells]
    out = {}
    for column in VALUE_COLUMNS:
        values = [v[column] for v in per_seed if not math.isnan(v[column])]
        if len(values) >= 2:
            out[f"reproduced_{column}_seedmean"] = statistics.fmean(values)
            out[f"reproduced_{column}_sd"] = statistics.stdev(values)
            out[f"reproduced_{column}_seeds"] = len(values)
    return out


def _training_run(record: dict, records: list[dict]) -> object:
    """Which training seed ``record`` evaluates: its ``train_seed``; for an older record without one, the seed of
    another record of the same checkpoint, else the checkpoint itself (one run, whatever its seed)."""
    if record.get("train_seed") is not None:
        return record["train_seed"]
    sha = record.get("checkpoint_sha256")
    known = {r.get("checkpoint_sha256"): r["train_seed"] for r in records if r.get("train_seed") is not None}
    return known.get(sha, ("checkpoint", sha))


def _values(cells: dict[str, dict]) -> dict[str, float]:
    from .tables import measured_values

    return measured_values(cells)


def _apply_seed_means(frame: pd.DataFrame) -> pd.DataFrame:
    """Where several seeds exist, the reproduced value is their mean (the sd and count sit next to it)."""
    for column in VALUE_COLUMNS:
        mean = f"reproduced_{column}_seedmean"
        if mean in frame:
            several = frame[mean].notna()
            frame.loc[several, f"reproduced_{column}"] = frame.loc[several, mean]
            frame = frame.drop(columns=[mean])
    return frame


# ---------------------------------------------------------------------------------------------------------------
# Intervals of single cells
# ---------------------------------------------------------------------------------------------------------------


def _interval_columns(prefix: str, cells: dict[str, dict], resamples: int) -> dict:
    from .stats import bootstrap_value

    out = {}
    groups = {column: [record] for column, record in cells.items()}
    if all(column in cells for column in FOLD_COLUMNS):
        groups["miou"] = [cells[c] for c in FOLD_COLUMNS]
    for column, group in groups.items():
        folds = _folds(group)
        if folds is None:
            continue
        interval, fb_interval = bootstrap_value(folds, resamples=resamples)
        out[f"{prefix}_{column}_low"], out[f"{prefix}_{column}_high"] = interval.low, interval.high
        if column == "miou":  # the mean over folds (or the single split): FB-IoU too
            out[f"{prefix}_fb_iou_low"], out[f"{prefix}_fb_iou_high"] = fb_interval.low, fb_interval.high
    return out


def _folds(records: Sequence[dict]):
    """The per-episode folds of ``records`` (None when one of them has no per-episode results)."""
    from .paired import load_record

    folds = []
    for record in records:
        if not record.get("per_episode_file") or not record.get("path"):
            return None
        try:
            folds.append(load_record(record["path"]).fold)
        except HmreproError:
            return None
    return folds


# ---------------------------------------------------------------------------------------------------------------
# Gains of the HM rows over their baselines
# ---------------------------------------------------------------------------------------------------------------


def baseline_position(frame: pd.DataFrame, position: int) -> int | None:
    """The row of ``frame`` that is the baseline of the HM row at ``position`` (None if none or not an HM row)."""
    row = frame.iloc[position]
    if not str(row.get("masking", "")).startswith("hm") or not row["model"]:
        return None
    try:
        from ..models.cards import card_of

        base = card_of(row["model"]).family
    except Exception:  # a model this hmrepro does not know: no baseline
        return None
    same = (
        (frame["model"] == base)
        & (frame["backbone"] == row["backbone"])
        & (frame["benchmark"] == row["benchmark"])
        & (frame["shot"] == row["shot"])
        & (frame["trained_on"] == row["trained_on"])
    )
    hits = [i for i, hit in enumerate(same.tolist()) if hit]
    return hits[0] if hits else None


def _add_gains(
    frame: pd.DataFrame, cells_by_row: list[dict], seeds_by_row: list[list], ci: bool, resamples: int
) -> None:
    def runs(position: int, column: str) -> list[list[dict]]:
        return _shown_runs(frame, position, column, cells_by_row, seeds_by_row)

    lines: list[dict] = []
    for position in range(len(frame)):
        base = baseline_position(frame, position)
        lines.append({} if base is None else _gain(frame, position, base, runs, ci, resamples))
    columns = sorted({c for line in lines for c in line})
    for column in columns:
        frame[column] = [line.get(column, math.nan if column != "gain_baseline" else "") for line in lines]
    if "gain_baseline" not in frame:
        frame["gain_baseline"] = ""


def _gain(frame: pd.DataFrame, position: int, base: int, runs, ci: bool, resamples: int) -> dict:
    row, baseline = frame.iloc[position], frame.iloc[base]
    out: dict[str, object] = {"gain_baseline": baseline["method"]}
    for column in VALUE_COLUMNS:
        out[f"gain_claimed_{column}"] = row[column] - baseline[column]
        out[f"gain_{column}"] = row[f"reproduced_{column}"] - baseline[f"reproduced_{column}"]
    if ci:
        out.update(_gain_intervals(lambda column: runs(position, column), lambda column: runs(base, column), resamples))
        low, high, claimed = out.get("gain_miou_low"), out.get("gain_miou_high"), out["gain_claimed_miou"]
        if low is not None and not any(math.isnan(v) for v in (low, high, claimed)):
            out["gain_inside"] = bool(low <= claimed <= high)
    return out


def _shown_runs(
    frame: pd.DataFrame, position: int, column: str, cells_by_row: list[dict], seeds_by_row: list[list]
) -> list[list[dict]]:
    """The records behind the reproduced ``column`` cell of the row at ``position``, as runs (each a list of one
    record per fold): every training seed's when the cell shows their mean, else the cell's own records; [] if
    the cell is empty."""
    groups = [cells_by_row[position].get("reproduced", {})]
    if _as_count(frame.iloc[position].get(f"reproduced_{column}_seeds")) >= 2:
        groups = seeds_by_row[position]
    runs = [_run_of(cells, column) for cells in groups]
    return [run for run in runs if run is not None]


def _run_of(cells: dict[str, dict], column: str) -> list[dict] | None:
    """The records of ``cells`` behind ``column`` (the mean over folds: all four), None when one is missing."""
    if column == "miou" and "miou" not in cells:
        return [cells[c] for c in FOLD_COLUMNS] if all(c in cells for c in FOLD_COLUMNS) else None
    return [cells[column]] if column in cells else None


def _as_count(value) -> int:
    try:
        return 0 if value is None or math.isnan(float(value)) else int(value)
    except (TypeError, ValueError):
        return 0


def _gain_intervals(hm_runs, base_runs, resamples: int) -> dict:
    """Paired intervals of reproduced HM − baseline per column whose cells are filled on both rows (``hm_runs`` /
    ``base_runs``: column → the runs behind that cell, :func:`_shown_runs`)."""
    from .stats import compare, compare_means

    out = {}
    for column in VALUE_COLUMNS:
        hm, base = hm_runs(column), base_runs(column)
        if not hm or not base:
            continue
        fhm, fbase = [_folds(run) for run in hm], [_folds(run) for run in base]
        if any(f is None for f in (*fhm, *fbase)):
            continue
        try:
            if len(hm) == len(base) == 1:  # one record per fold on each side
                low, high = compare(fbase[0], fhm[0], resamples=resamples).ci95  # B − A = HM − baseline
            else:
                interval = compare_means(fbase, fhm, resamples=resamples)
                low, high = interval.low, interval.high
        except ValueError:  # not the same episodes: no paired interval
            continue
        out[f"gain_{column}_low"], out[f"gain_{column}_high"] = low, high
    return out

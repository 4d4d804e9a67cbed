"""Claimed numbers: the HM paper's (Tables 1–7, ``recipes/claimed/tableN.csv``) and those of the other papers
hmrepro reproduces (``recipes/claimed/<paper>/tableN.csv``; the papers and their tables: :mod:`hmrepro.papers`).

The CSV files are data, one line per (table row, shot); ``recipes/claimed/README.md`` describes the columns.
A file may leave out the columns its table does not use; :func:`load_claimed` returns every column of
``CLAIMED_COLUMNS`` (numbers as floats, NaN where the paper prints none) plus ``paper`` (the paper's key).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..errors import HmreproError, MissingDataError
from ..papers import PAPERS, get_paper

TABLE_NUMBERS = PAPERS["hm"].tables  # the HM paper's
TABLE_CAPTIONS = dict(PAPERS["hm"].captions)

FOLD_COLUMNS = ("fold0", "fold1", "fold2", "fold3")
NUMBER_COLUMNS = (*FOLD_COLUMNS, "miou", "fb_iou", "secs_per_image", "overhead_pct")
CLAIMED_COLUMNS = (
    "table",
    "method",
    "ref",
    "source",
    "backbone",
    "benchmark",
    "trained_on",
    "shot",
    *NUMBER_COLUMNS,
    "model",
    "masking",
    "recipe",
    "overrides",
    "official_checkpoint",
    "note",
)
REQUIRED_COLUMNS = ("table", "method", "source", "benchmark", "shot")
SOURCES = PAPERS["hm"].sources  # another paper's: (its key, "quoted")


def claimed_dir(paper: str = "hm") -> Path:
    """The folder of ``paper``'s claimed-number CSV files: ``recipes/claimed/`` for the HM paper,
    ``recipes/claimed/<paper>/`` for the others (found as the training recipes are)."""
    from ..engine.recipes import recipe_dir

    return recipe_dir() / "claimed" / get_paper(paper).folder


def claimed_path(table: int, folder: Path | None = None, paper: str = "hm") -> Path:
    """``tableN.csv`` in ``folder`` (the paper's CSV folder itself) or else in :func:`claimed_dir`."""
    return Path(folder or claimed_dir(paper)) / f"table{table}.csv"


def load_claimed(table: int, folder: Path | None = None, paper: str = "hm") -> pd.DataFrame:
    """The claimed rows of ``paper``'s ``table`` in the paper's order, every column of ``CLAIMED_COLUMNS`` and
    ``paper``. ``folder``: where the paper's CSVs are (default :func:`claimed_dir`)."""
    spec = get_paper(paper)
    spec.check_table(table)
    path = claimed_path(table, folder, paper)
    if not path.is_file():
        raise MissingDataError(
            f"claimed numbers of {'' if spec.key == 'hm' else spec.key + ' '}table {table} not found: {path} "
            "(run hmrepro from a source checkout, where recipes/claimed/ sits next to the hmrepro package)"
        )
    raw = pd.read_csv(path, dtype=str, keep_default_na=False)
    _check_columns(raw, path)
    frame = raw.reindex(columns=list(CLAIMED_COLUMNS), fill_value="")
    for column in NUMBER_COLUMNS:
        frame[column] = _numbers(frame[column], path)
    frame["table"] = frame["table"].astype(int)
    frame["shot"] = frame["shot"].astype(int)
    frame["official_checkpoint"] = frame["official_checkpoint"].str.lower().eq("true")
    _check_values(frame, table, path, spec.sources)
    frame["paper"] = spec.key
    return frame.reset_index(drop=True)


def load_all_claimed(folder: Path | None = None) -> pd.DataFrame:
    """The claimed rows of every table, one frame."""
    return pd.concat([load_claimed(n, folder) for n in TABLE_NUMBERS], ignore_index=True)


def _numbers(column: pd.Series, path: Path) -> pd.Series:
    """A text column as floats: empty cells become NaN, anything else that is not a number is an error."""
    try:
        return pd.to_numeric(column.mask(column.str.strip() == ""), errors="raise").astype(float)
    except (ValueError, TypeError) as err:
        raise HmreproError(f"{path}: column {column.name}: {err}") from None


def _check_columns(raw: pd.DataFrame, path: Path) -> None:
    unknown = sorted(set(raw.columns) - set(CLAIMED_COLUMNS))
    missing = [c for c in REQUIRED_COLUMNS if c not in raw.columns]
    if unknown or missing:
        raise HmreproError(f"{path}: unknown columns {unknown}, missing columns {missing}")


def _check_values(frame: pd.DataFrame, table: int, path: Path, sources: tuple[str, ...] = SOURCES) -> None:
    wrong_table = frame.index[frame["table"] != table].tolist()
    bad_source = frame.index[~frame["source"].isin(sources)].tolist()
    if wrong_table or bad_source:
        raise HmreproError(
            f"{path}: lines {[i + 2 for i in wrong_table]} are not table {table}; "
            f"lines {[i + 2 for i in bad_source]} have a source other than {', '.join(sources)}"
        )

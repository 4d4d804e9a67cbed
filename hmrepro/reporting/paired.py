"""Result records with their per-episode results, gathered into sets (one record per fold) and paired.

A *set* is what one side of ``hmrepro compare`` names: a record file, a folder of records or a glob pattern —
one record per fold (a fold with several records is refused: name the files). Two sets are *paired* when they
have the same folds and, per fold, were evaluated on the same episodes: the same benchmark, fold and shot, the
same episode list (``episodes_sha256``) and the same episode and class columns. Anything else is refused with a
one-line :class:`~hmrepro.errors.HmreproError` saying what differs.
"""

from __future__ import annotations

import glob
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..engine.records import read_episode_table, read_records
from ..errors import HmreproError
from .stats import Fold, check_paired


@dataclass(frozen=True)
class RecordFold:
    """One record and its per-episode results."""

    record: dict
    fold: Fold

    @property
    def path(self) -> str:
        return str(self.record.get("path", "?"))

    @property
    def fold_number(self) -> int:
        return int(self.record.get("fold", 0))


def load_record(path: str | Path) -> RecordFold:
    """A record file with its per-episode results (a one-line error when it has none)."""
    record, table, class_ids = read_episode_table(Path(path))
    return RecordFold(record, Fold(table, [int(c) for c in class_ids]))


def record_paths(spec: str | Path, problems: list[str] | None = None) -> list[Path]:
    """The record files ``spec`` names: a file, a folder (its valid records, recursively: a file that fails
    validation is left out, with one line naming it appended to ``problems``) or a glob pattern. A file or folder
    that exists is taken as named, even where its name holds a pattern character (``runs/[ablation]/``)."""
    text = str(spec)
    if any(ch in text for ch in "*?[") and not Path(text).expanduser().exists():
        paths = [
            Path(p) for p in sorted(glob.glob(str(Path(text).expanduser()), recursive=True)) if p.endswith(".json")
        ]
        if not paths:
            raise HmreproError(
                f"{text}: no record file matches; give record files, a folder or a pattern like 'results/*hm*.json'"
            )
        return paths
    path = Path(text).expanduser()
    if path.is_dir():
        paths = [Path(r["path"]) for r in read_records(path, problems)]
        if not paths:
            raise HmreproError(f"{path}: the folder holds no result record")
        return paths
    if not path.is_file():
        raise HmreproError(f"{path}: no such record file or folder")
    return [path]


def load_set(spec: str | Path, problems: list[str] | None = None) -> list[RecordFold]:
    """The records ``spec`` names, one per fold, sorted by fold (files of a folder that fail validation: one line
    each in ``problems``)."""
    records = [load_record(p) for p in record_paths(spec, problems)]
    by_fold: dict[int, RecordFold] = {}
    for item in records:
        if item.fold_number in by_fold:
            raise HmreproError(
                f"{spec}: two records of fold {item.fold_number} ({by_fold[item.fold_number].path} and {item.path}); "
                "name one record file per fold"
            )
        by_fold[item.fold_number] = item
    return [by_fold[f] for f in sorted(by_fold)]


def check_sets_paired(a: Sequence[RecordFold], b: Sequence[RecordFold]) -> None:
    """One-line ``HmreproError`` unless ``a`` and ``b`` hold the same folds evaluated on the same episodes."""
    folds_a, folds_b = [x.fold_number for x in a], [x.fold_number for x in b]
    if folds_a != folds_b:
        raise HmreproError(
            f"not paired: A has fold(s) {_list(folds_a)}, B has {_list(folds_b)}; give both the same folds"
        )
    for x, y in zip(a, b):
        why = _unpaired_reason(x, y)
        if why:
            raise HmreproError(
                f"not paired: fold {x.fold_number} of A ({x.path}) and of B ({y.path}) {why}; a paired comparison "
                "needs the same episodes (same benchmark, fold, shot, protocol and --episode-seed, all episodes)"
            )


def _unpaired_reason(x: RecordFold, y: RecordFold) -> str | None:
    for key in ("benchmark", "shot", "kind"):
        if x.record.get(key, "eval") != y.record.get(key, "eval"):
            return f"differ in {key} ({x.record.get(key)} vs {y.record.get(key)})"
    sha_a, sha_b = x.record.get("episodes_sha256"), y.record.get("episodes_sha256")
    if sha_a and sha_b and sha_a != sha_b:
        episodes = (
            f"{x.record.get('episodes')} vs {y.record.get('episodes')} episodes, "
            if x.record.get("episodes") != y.record.get("episodes")
            else ""
        )
        seeds = f"{x.record.get('episode_seed', 0)} vs {y.record.get('episode_seed', 0)}"
        return f"were evaluated on different episode lists ({episodes}episode seed {seeds})"
    try:
        check_paired(x.fold, y.fold)
    except ValueError as err:
        return f"were evaluated on different episodes ({err})"
    return None


def _list(folds: Sequence[int]) -> str:
    return ", ".join(map(str, folds)) or "none"


def label_of(records: Sequence[RecordFold]) -> str:
    """A short name for a set: its model, e.g. ``hsnet-hm`` (``hsnet-hm seed 1`` for a training seed other than 0)."""
    first = records[0].record
    seed = first.get("train_seed")
    return f"{first.get('model', '?')}{f' seed {seed}' if seed else ''}"


def labels_of(sets: Sequence[Sequence[RecordFold]]) -> list[str]:
    """:func:`label_of` of each set, numbered where two sets would get the same name."""
    labels = [label_of(s) for s in sets]
    return [f"{label} ({k + 1})" if labels.count(label) > 1 else label for k, label in enumerate(labels)]


def pooled(records: Sequence[RecordFold]) -> Fold:
    """The episodes of several folds as one (the classes of all folds; the small-object test bins them together)."""
    columns = records[0].fold.table.keys()
    table = {c: np.concatenate([np.asarray(r.fold.table[c]) for r in records]) for c in columns}
    class_ids = sorted({int(c) for r in records for c in r.fold.class_ids})
    return Fold(table, class_ids)

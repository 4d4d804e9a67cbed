"""Is a difference real? Bootstrap intervals and paired tests over the episodes of result records (pure NumPy).

The unit that varies is the *episode*: a fold's 1000 test episodes are a random draw, and a model's mIoU moves
with the draw. Every statistic here recomputes the class-accumulated mIoU exactly as the evaluation does (per
class of the fold: summed foreground intersection over summed union, mean over the fold's classes, a class with
no episode counting 0; FB-IoU from the summed background and foreground counts), on resampled episodes:

- :func:`bootstrap_value`: one record (or one record per fold): resample each fold's episodes with replacement,
  recompute the mIoU, take the mean over folds; the 2.5 and 97.5 percentiles are the 95 % interval.
- :func:`compare`: two records of the *same* episodes (paired): each resample draws the same episodes for both,
  so what the two models share (an easy or a hard draw) cancels and the interval is that of the difference
  B − A. The p-value is a paired permutation test: under "no difference" A's and B's results of an episode are
  exchangeable, so each permutation swaps them on a random half of the episodes; p is the share of permutations
  whose |Δ| reaches the observed one ((1 + count) / (1 + permutations)).
- :func:`binned_comparison`: the same per bin of episodes (e.g. by the query's object size); the mIoU of a bin
  averages over the classes present in it.

Resampling is vectorised: a block of resamples is a matrix of how often each episode is drawn, and the per-class
sums of every resample are one matrix product. 10 000 resamples of 1000 episodes take well under a second.
These intervals cover the noise of the episode draw only, not that of training (another ``--seed`` gives
another model: that needs several trained runs).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np

DEFAULT_RESAMPLES = 10_000
DEFAULT_SEED = 0
CONFIDENCE = 0.95
BLOCK = 500  # resamples per matrix product (bounds memory: BLOCK x episodes floats)


@dataclass(frozen=True)
class Fold:
    """One fold's per-episode columns (numpy arrays, :data:`hmrepro.engine.evaluation.per_episode.EPISODE_COLUMNS`)
    and the
    classes its mIoU averages over."""

    table: Mapping[str, np.ndarray]
    class_ids: Sequence[int]


@dataclass(frozen=True)
class Interval:
    """A value (the mean over folds) with its 95 % bootstrap interval."""

    value: float
    low: float
    high: float


@dataclass(frozen=True)
class Comparison:
    """B − A over paired episodes: mIoU and FB-IoU differences, their 95 % intervals and permutation p-values."""

    miou_a: float
    miou_b: float
    delta_miou: float
    ci95: tuple[float, float]
    p_value: float
    fb_iou_a: float
    fb_iou_b: float
    delta_fb_iou: float
    ci95_fb_iou: tuple[float, float]
    p_value_fb_iou: float
    episodes: int
    folds: int
    resamples: int
    seed: int

    def to_json(self) -> dict:
        out = asdict(self)
        out["ci95"], out["ci95_fb_iou"] = list(self.ci95), list(self.ci95_fb_iou)
        return out


# The per-episode columns of one fold, sorted by class: every sum a statistic needs is a segment sum of
# (episode weights) x (column)
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Design:
    """One fold's episodes (those of the fold's classes) sorted by class, with the class segments."""

    columns: np.ndarray  # [6, n]: fg_inter, fg_union, 1 (episode count), bg_inter, bg_union, fg_inter again (FB)
    starts: np.ndarray  # start of each present class's segment
    present: np.ndarray  # the column (0..C-1, class_ids order) of each present class
    nclass: int

    def __len__(self) -> int:
        return self.columns.shape[1]

    def sums(self, weights: np.ndarray, columns: np.ndarray | None = None) -> np.ndarray:
        """[R, 3C + 4]: per class summed fg intersection, union and episode count, then the summed bg/fg
        intersection and union, of the episodes weighted by each row of ``weights`` [R, n]."""
        columns = self.columns if columns is None else columns
        r, c = weights.shape[0], self.nclass
        out = np.zeros((r, 3 * c + 4))
        for k in range(3):
            out[:, k * c + self.present] = np.add.reduceat(weights * columns[k], self.starts, axis=1)
        fb = weights @ columns[[3, 4, 0, 1]].T
        out[:, 3 * c :] = fb
        return out


def _design(fold: Fold) -> _Design:
    """The columns of ``fold`` sorted by class; episodes of classes outside the fold's are left out."""
    class_ids = np.asarray(list(fold.class_ids), dtype=np.int64)
    cls = np.asarray(fold.table["class_id"], dtype=np.int64)
    keep = np.isin(cls, class_ids)
    column = np.argsort(class_ids)[np.searchsorted(np.sort(class_ids), cls[keep])]  # class → 0..C-1
    order = np.argsort(column, kind="stable")
    column = column[order]
    values = [np.asarray(fold.table[k], dtype=np.float64)[keep][order] for k in ("fg_inter", "fg_union")]
    bg = [np.asarray(fold.table[k], dtype=np.float64)[keep][order] for k in ("bg_inter", "bg_union")]
    columns = np.stack([*values, np.ones(len(column)), *bg, values[0]])
    present, starts = np.unique(column, return_index=True)
    return _Design(columns, starts, present, len(class_ids))


def _metrics(sums: np.ndarray, c: int, present_classes: bool) -> tuple[np.ndarray, np.ndarray]:
    """(mIoU, FB-IoU) in % of each row of :meth:`_Design.sums` ([R, 3C + 4] → [R], [R])."""
    inter, union, count = sums[:, :c], sums[:, c : 2 * c], sums[:, 2 * c : 3 * c]
    iou = inter / np.maximum(union, 1)
    if present_classes:
        present = count > 0
        miou = (iou * present).sum(axis=1) / np.maximum(present.sum(axis=1), 1)
    else:
        miou = iou.mean(axis=1)
    bg_i, bg_u, fg_i, fg_u = (sums[:, 3 * c + k] for k in range(4))
    fb = (bg_i / np.maximum(bg_u, 1) + fg_i / np.maximum(fg_u, 1)) / 2
    return miou * 100, fb * 100


def _draw_weights(rng: np.random.Generator, n: int, r: int) -> np.ndarray:
    """[r, n]: how often each of n episodes is drawn in each of r bootstrap resamples (n draws with replacement)."""
    idx = rng.integers(0, n, size=(r, n))
    idx += (np.arange(r) * n)[:, None]
    return np.bincount(idx.ravel(), minlength=r * n).reshape(r, n)


def _blocks(total: int):
    done = 0
    while done < total:
        size = min(BLOCK, total - done)
        yield size
        done += size


def _percentiles(values: np.ndarray) -> tuple[float, float]:
    tail = (1 - CONFIDENCE) / 2 * 100
    low, high = np.percentile(values, [tail, 100 - tail])
    return float(low), float(high)


# ---------------------------------------------------------------------------------------------------------------
# One record (or one per fold): value and interval
# ---------------------------------------------------------------------------------------------------------------


def observed(folds: Sequence[Fold], present_classes: bool = False) -> tuple[float, float]:
    """(mIoU, FB-IoU): the mean over folds of each fold's value (what the record and the tables say)."""
    values = [_metrics(d.sums(np.ones((1, len(d)))), d.nclass, present_classes) for d in map(_design, folds)]
    return float(np.mean([m[0] for m, _ in values])), float(np.mean([fb[0] for _, fb in values]))


def bootstrap_value(
    folds: Sequence[Fold],
    *,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
    present_classes: bool = False,
) -> tuple[Interval, Interval]:
    """(mIoU, FB-IoU) with 95 % intervals: each fold's episodes resampled on their own, mean over folds."""
    _check(folds, resamples)
    rng = np.random.default_rng(seed)
    designs = [_design(f) for f in folds]
    miou, fb = np.zeros(resamples), np.zeros(resamples)
    for design in designs:
        start = 0
        for size in _blocks(resamples):
            m, b = _metrics(design.sums(_draw_weights(rng, len(design), size)), design.nclass, present_classes)
            miou[start : start + size] += m / len(folds)
            fb[start : start + size] += b / len(folds)
            start += size
    value_miou, value_fb = observed(folds, present_classes)
    return Interval(value_miou, *_percentiles(miou)), Interval(value_fb, *_percentiles(fb))


# ---------------------------------------------------------------------------------------------------------------
# Two records of the same episodes: paired bootstrap and permutation test
# ---------------------------------------------------------------------------------------------------------------


def compare(
    a: Sequence[Fold],
    b: Sequence[Fold],
    *,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
    present_classes: bool = False,
) -> Comparison:
    """B − A over paired episodes (``a[i]`` and ``b[i]``: one fold, the same episodes in the same order).

    ΔmIoU and ΔFB-IoU are means over folds, as the tables' means are; each fold is resampled on its own; the
    permutation test uses as many permutations as ``resamples``. Raises ``ValueError`` for unpaired input."""
    _check(a, resamples)
    if len(a) != len(b):
        raise ValueError(f"{len(a)} fold(s) against {len(b)}")
    for fa, fb_ in zip(a, b):
        check_paired(fa, fb_)
    rng = np.random.default_rng(seed)
    boot = np.zeros((2, resamples))
    perm = np.zeros((2, resamples))
    for fa, fb_ in zip(a, b):
        _paired_fold(rng, _design(fa), _design(fb_), present_classes, boot, perm, len(a))
    obs_a, obs_b = observed(a, present_classes), observed(b, present_classes)
    delta = (obs_b[0] - obs_a[0], obs_b[1] - obs_a[1])
    p = [_p_value(perm[k], delta[k]) for k in range(2)]
    return Comparison(
        obs_a[0],
        obs_b[0],
        delta[0],
        _percentiles(boot[0]),
        p[0],
        obs_a[1],
        obs_b[1],
        delta[1],
        _percentiles(boot[1]),
        p[1],
        sum(len(_design(f)) for f in a),
        len(a),
        resamples,
        seed,
    )


def compare_means(
    a_runs: Sequence[Sequence[Fold]],
    b_runs: Sequence[Sequence[Fold]],
    *,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
    present_classes: bool = False,
) -> Interval:
    """Mean over B's runs − mean over A's runs of the mIoU (each run: one fold list, e.g. one training seed's
    records), with its 95 % paired interval: every run's fold ``i`` holds the same episodes, and each resample draws
    the same episodes for all of them. With one run a side this is :func:`compare`'s ΔmIoU (interval by another draw).
    Raises ``ValueError`` for unpaired input."""
    runs = [*a_runs, *b_runs]
    if not a_runs or not b_runs:
        raise ValueError("a side without runs")
    for run in runs:
        _check(run, resamples)
        if len(run) != len(runs[0]):
            raise ValueError(f"{len(run)} fold(s) against {len(runs[0])}")
        for fold, first in zip(run, runs[0]):
            check_paired(first, fold)
    rng = np.random.default_rng(seed)
    boot = np.zeros(resamples)
    nfolds = len(runs[0])
    for i in range(nfolds):
        designs_a, designs_b = [_design(run[i]) for run in a_runs], [_design(run[i]) for run in b_runs]
        n, c = len(designs_a[0]), designs_a[0].nclass
        start = 0
        for size in _blocks(resamples):
            w = _draw_weights(rng, n, size)
            mean_a = np.mean([_metrics(d.sums(w), c, present_classes)[0] for d in designs_a], axis=0)
            mean_b = np.mean([_metrics(d.sums(w), c, present_classes)[0] for d in designs_b], axis=0)
            boot[start : start + size] += (mean_b - mean_a) / nfolds
            start += size
    delta = np.mean([observed(run, present_classes)[0] for run in b_runs]) - np.mean(
        [observed(run, present_classes)[0] for run in a_runs]
    )
    return Interval(float(delta), *_percentiles(boot))


def _paired_fold(rng, da: _Design, db: _Design, present_classes, boot, perm, nfolds) -> None:
    """Add one fold's resampled and permuted differences (divided by the number of folds) to ``boot``/``perm``."""
    n, c = len(da), da.nclass
    diff = db.columns - da.columns  # the episode-count row is 0: swapping moves counts, not episodes
    total_a, total_b = da.sums(np.ones((1, n))), db.sums(np.ones((1, n)))
    start = 0
    for size in _blocks(boot.shape[1]):
        w = _draw_weights(rng, n, size)
        ma, fa = _metrics(da.sums(w), c, present_classes)
        mb, fb = _metrics(db.sums(w), c, present_classes)
        boot[:, start : start + size] += np.stack([mb - ma, fb - fa]) / nfolds
        swap = da.sums(rng.integers(0, 2, size=(size, n), dtype=np.int8), diff)  # what the swapped episodes move
        ma, fa = _metrics(total_a + swap, c, present_classes)
        mb, fb = _metrics(total_b - swap, c, present_classes)
        perm[:, start : start + size] += np.stack([mb - ma, fb - fa]) / nfolds
        start += size


def _p_value(permuted: np.ndarray, delta: float) -> float:
    """Two-sided: the share of permutations at least as extreme as ``delta`` (rounding noise ignored)."""
    extreme = np.abs(permuted) >= abs(delta) - 1e-9
    return float((1 + extreme.sum()) / (1 + len(permuted)))


def check_paired(a: Fold, b: Fold) -> None:
    """``ValueError`` (saying what differs) unless ``a`` and ``b`` hold the same episodes in the same order."""
    ea, eb = np.asarray(a.table["episode"]), np.asarray(b.table["episode"])
    if len(ea) != len(eb):
        raise ValueError(f"{len(ea)} episodes against {len(eb)}")
    if not np.array_equal(ea, eb) or not np.array_equal(
        np.asarray(a.table["class_id"]), np.asarray(b.table["class_id"])
    ):
        raise ValueError("the episode indices or classes differ")
    if sorted(a.class_ids) != sorted(b.class_ids):
        raise ValueError("the folds' classes differ")


def _check(folds: Sequence[Fold], resamples: int) -> None:
    if not folds:
        raise ValueError("no folds")
    if resamples < 1:
        raise ValueError(f"resamples must be positive, got {resamples}")
    for fold in folds:
        if len(np.asarray(fold.table["episode"])) == 0:
            raise ValueError("a fold without episodes")


# ---------------------------------------------------------------------------------------------------------------
# Bins of episodes (the small-object test)
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BinResult:
    """One bin of episodes: its edges, its size, each record's mIoU with interval, and B − A against the first."""

    low: float
    high: float
    episodes: int
    values: list[Interval]  # per record
    deltas: list[Comparison]  # per record after the first: that record − the first


def bin_edges(values: np.ndarray, bins: int | None = None, edges: Sequence[float] | None = None) -> np.ndarray:
    """Given ``edges`` (sorted, ascending), or ``bins`` quantile edges of ``values`` (duplicates dropped)."""
    if edges is not None:
        out = np.asarray(sorted(float(e) for e in edges))
        if len(out) < 2:
            raise ValueError("give at least two edges")
        return out
    out = np.unique(np.quantile(values, np.linspace(0, 1, int(bins or 5) + 1)))
    return out if len(out) >= 2 else np.array([out[0], out[0]])


def bin_index(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Bin of each value (0 .. len(edges) - 2; the last bin includes its upper edge; -1 outside the edges)."""
    index = np.searchsorted(edges, values, side="right") - 1
    index[values == edges[-1]] = len(edges) - 2
    index[(values < edges[0]) | (values > edges[-1])] = -1
    return index


def binned_comparison(
    records: Sequence[Fold],
    by: np.ndarray,
    edges: np.ndarray,
    *,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
) -> list[BinResult]:
    """Per bin of ``by`` (one value per episode, e.g. the query's foreground fraction): each record's mIoU over the
    classes present in the bin with its interval, and each later record's paired difference to the first."""
    index = bin_index(np.asarray(by, dtype=np.float64), edges)
    results = []
    for k in range(len(edges) - 1):
        keep = index == k
        subsets = [Fold({c: np.asarray(v)[keep] for c, v in r.table.items()}, r.class_ids) for r in records]
        n = int(keep.sum())
        if n == 0:
            results.append(BinResult(float(edges[k]), float(edges[k + 1]), 0, [], []))
            continue
        values = [bootstrap_value([s], resamples=resamples, seed=seed, present_classes=True)[0] for s in subsets]
        deltas = [compare([subsets[0]], [s], resamples=resamples, seed=seed, present_classes=True) for s in subsets[1:]]
        results.append(BinResult(float(edges[k]), float(edges[k + 1]), n, values, deltas))
    return results

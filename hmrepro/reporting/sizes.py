"""The small-object test: IoU against object size, for paired records (HM's claim: it recovers small objects).

Episodes are binned by the query's foreground fraction (or, ``by='support'``, the supports' mean foreground
fraction) — quantile bins of the first set's episodes, or given edges. Per bin: each set's mIoU (mean over the
classes present in the bin of summed intersection over summed union) with its 95 % bootstrap interval, and each
later set's paired difference to the first (B − A) with its interval and permutation p-value
(:func:`hmrepro.reporting.stats.binned_comparison`). A set of several folds is pooled into one list of episodes.
:func:`plot_sizes` draws both panels (values with bands; differences with bands and the zero line) in a PNG.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .paired import RecordFold, check_sets_paired, labels_of, pooled
from .stats import BinResult, bin_edges, binned_comparison

BY_COLUMNS = {"query": "query_fg_fraction", "support": "support_fg_fraction"}


@dataclass(frozen=True)
class SizeAnalysis:
    by: str  # 'query' | 'support'
    labels: list[str]  # one per set
    edges: np.ndarray
    bins: list[BinResult]
    resamples: int
    seed: int

    def to_json(self) -> dict:
        return {
            "by": self.by,
            "labels": self.labels,
            "edges": [float(e) for e in self.edges],
            "resamples": self.resamples,
            "seed": self.seed,
            "bins": [
                {
                    "low": b.low,
                    "high": b.high,
                    "episodes": b.episodes,
                    "miou": [{"value": v.value, "ci95": [v.low, v.high]} for v in b.values],
                    "delta_vs_first": [
                        {"delta_miou": d.delta_miou, "ci95": list(d.ci95), "p_value": d.p_value} for d in b.deltas
                    ],
                }
                for b in self.bins
            ],
        }


def analyze_sizes(
    sets: Sequence[Sequence[RecordFold]],
    *,
    by: str = "query",
    bins: int = 5,
    edges: Sequence[float] | None = None,
    resamples: int = 2000,
    seed: int = 0,
) -> SizeAnalysis:
    """Bin the paired episodes of ``sets`` (each: records of one model, one per fold) by object size."""
    if by not in BY_COLUMNS:
        raise ValueError(f"by must be one of {', '.join(BY_COLUMNS)}")
    for other in sets[1:]:
        check_sets_paired(sets[0], other)
    folds = [pooled(s) for s in sets]
    sizes = np.asarray(folds[0].table[BY_COLUMNS[by]], dtype=np.float64)
    cut = bin_edges(sizes, bins=bins, edges=edges)
    results = binned_comparison(folds, sizes, cut, resamples=resamples, seed=seed)
    return SizeAnalysis(by, labels_of(sets), cut, results, resamples, seed)


def bin_label(low: float, high: float) -> str:
    """``'0.4–2.1 %'``: a bin's range of foreground fractions in percent."""
    return f"{low * 100:.1f}–{high * 100:.1f} %"


def plot_sizes(analysis: SizeAnalysis, output: str | Path, title: str | None = None, dpi: int = 150) -> Path:
    """Two panels: mIoU per size bin of each set with 95 % bands; each later set minus the first with bands."""
    from .figures import _pyplot, _save

    plt = _pyplot()
    shown = [b for b in analysis.bins if b.episodes > 0]
    x = np.arange(len(shown))
    ticks = [f"{bin_label(b.low, b.high)}\nn={b.episodes}" for b in shown]
    panels = 2 if len(analysis.labels) > 1 else 1
    fig, axes = plt.subplots(1, panels, figsize=(6.0 * panels, 4.6), squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    ax = axes[0][0]
    for k, label in enumerate(analysis.labels):
        value = np.array([b.values[k].value for b in shown])
        low, high = np.array([b.values[k].low for b in shown]), np.array([b.values[k].high for b in shown])
        ax.fill_between(x, low, high, color=colors[k % len(colors)], alpha=0.2, linewidth=0)
        ax.plot(x, value, marker="o", color=colors[k % len(colors)], label=label)
    _axis(ax, x, ticks, analysis.by, "mIoU of the bin (%)", "mIoU per object size (bands: 95 % interval)")
    ax.legend(loc="best", fontsize=8)
    if panels == 2:
        ax = axes[0][1]
        ax.axhline(0.0, color="black", linewidth=0.8, linestyle="--")
        for k, label in enumerate(analysis.labels[1:], start=1):
            color = colors[k % len(colors)]
            delta = np.array([b.deltas[k - 1].delta_miou for b in shown])
            low = np.array([b.deltas[k - 1].ci95[0] for b in shown])
            high = np.array([b.deltas[k - 1].ci95[1] for b in shown])
            ax.fill_between(x, low, high, color=color, alpha=0.2, linewidth=0)
            ax.plot(x, delta, marker="o", color=color, label=f"{label} − {analysis.labels[0]}")
        ylabel = "difference in mIoU (points)"
        if len(analysis.labels) == 2:
            ylabel = f"{analysis.labels[1]} − {analysis.labels[0]}, mIoU points (> 0: {analysis.labels[1]} better)"
        _axis(ax, x, ticks, analysis.by, ylabel, "Paired difference per size (band clear of 0: a real difference)")
        ax.legend(loc="best", fontsize=8)
    what = "query" if analysis.by == "query" else "supports' mean"
    fig.suptitle(
        title or f"IoU vs object size ({what} foreground fraction, {analysis.resamples} resamples)", fontsize=11
    )
    fig.tight_layout()
    return _save(plt, fig, output, dpi)


def _axis(ax, x, ticks, by: str, ylabel: str, title: str) -> None:
    ax.set_xticks(x)
    ax.set_xticklabels(ticks, fontsize=8)
    who = "query" if by == "query" else "support (mean over shots)"
    ax.set_xlabel(f"object size: foreground share of the {who} image (small → large)")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(axis="y", alpha=0.3)

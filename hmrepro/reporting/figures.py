"""Figures: the training profile of runs (HM Fig. 6) and qualitative episodes (HM Figs. 1 and 5).

- :func:`plot_training_profile` reads only a run folder's ``metrics.jsonl`` (one row per epoch, written by
  ``hmrepro train``) and ``config.json`` (for the label): validation mIoU per epoch, best epoch marked.
- :func:`plot_episodes` draws fixed evaluation episodes: the support images with their masks, the query with its
  ground truth and, given a model, the model's prediction and the episode's foreground IoU.
- :func:`plot_support_features` draws the first channel of one backbone tap of a support image under FM, IM
  and HM masking (HM Fig. 5).

matplotlib is imported lazily with the non-interactive Agg backend, so no display is needed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import HmreproError

if TYPE_CHECKING:
    from ..engine.evaluation.evaluate import FigureEpisodes

__all__ = [
    "TrainingProfile",
    "plot_episodes",
    "plot_support_features",
    "plot_training_profile",
    "read_training_profile",
]

PROFILE_METRICS = ("val_miou", "val_fb_iou", "train_miou", "train_loss", "val_loss")


class TrainingProfile:
    """One run's curve: epochs, values of ``metric``, and the best epoch (highest ``val_miou``)."""

    def __init__(self, run_dir: Path, label: str, epochs: list[int], values: list[float], best_epoch: int | None):
        self.run_dir, self.label, self.epochs, self.values, self.best_epoch = run_dir, label, epochs, values, best_epoch

    @property
    def best_value(self) -> float | None:
        return self.values[self.epochs.index(self.best_epoch)] if self.best_epoch in self.epochs else None


def read_training_profile(
    run_dir: str | Path, metric: str = "val_miou", problems: list[str] | None = None
) -> TrainingProfile:
    """The per-epoch ``metric`` of ``run_dir`` (an error naming the folder when it has no finished epoch); a torn
    last line of its ``metrics.jsonl`` is dropped and said in ``problems``."""
    from ..engine import runs

    run_dir = Path(run_dir).expanduser()
    if not run_dir.is_dir():
        raise HmreproError(f"{run_dir} is not a folder (pass run folders written by `hmrepro train`)")
    rows = [r for r in runs.read_metrics(run_dir, problems) if metric in r and r.get(metric) is not None]
    if not rows:
        raise HmreproError(
            f"{run_dir} has no {runs.METRICS} rows with {metric} (no epoch finished yet, or not a run folder)"
        )
    config = runs.read_config(run_dir) if runs.is_run_dir(run_dir) else {}
    label = (
        f"{config['model']} {config.get('backbone', '')} {config.get('benchmark', '')} fold {config.get('fold', '?')}"
        if config.get("model")
        else run_dir.name
    )
    epochs = [int(r.get("epoch", i)) for i, r in enumerate(rows)]
    values = [float(r[metric]) for r in rows]
    val = [(float(r["val_miou"]), int(r.get("epoch", i))) for i, r in enumerate(rows) if r.get("val_miou") is not None]
    # the best epoch is the first one that reaches the highest val mIoU, as training keeps it (strictly better)
    best_epoch = max(val, key=lambda v: (v[0], -v[1]))[1] if val else None
    return TrainingProfile(run_dir, " ".join(label.split()), epochs, values, best_epoch)


def plot_training_profile(
    run_dirs: Sequence[str | Path],
    output: str | Path,
    *,
    metric: str = "val_miou",
    title: str | None = None,
    dpi: int = 150,
    log: Callable[[str], None] | None = None,
) -> Path:
    """Plot ``metric`` per epoch of every run in ``run_dirs`` into ``output`` (PNG, PDF or SVG by its suffix).

    The best epoch of each run (highest val mIoU, the checkpoint ``best_model.pt`` holds) is marked with a star
    and its value given in the legend. Problems met while reading (a torn last line) go to ``log``.
    """
    if metric not in PROFILE_METRICS:
        raise HmreproError(f"unknown metric {metric!r}; choose one of {', '.join(PROFILE_METRICS)}")
    problems: list[str] = []
    profiles = [read_training_profile(d, metric, problems) for d in run_dirs]
    for problem in problems:
        (log or (lambda msg: None))(problem)
    if not profiles:
        raise HmreproError("no run folders given")
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for p in profiles:
        best = f" (best {p.best_value:.1f} @ epoch {p.best_epoch})" if p.best_value is not None else ""
        (line,) = ax.plot(p.epochs, p.values, label=p.label + best, linewidth=1.4)
        if p.best_value is not None:
            ax.plot(
                [p.best_epoch],
                [p.best_value],
                marker="*",
                markersize=13,
                color=line.get_color(),
                markeredgecolor="black",
                linestyle="none",
                zorder=5,
            )
    names = {"val_miou": "val mIoU (%)", "val_fb_iou": "val FB-IoU (%)", "train_miou": "train mIoU (%)"}
    ax.set_xlabel("epoch")
    ax.set_ylabel(names.get(metric, metric))
    ax.set_title(title or "Training profile (HM Fig. 6): " + names.get(metric, metric))
    ax.margins(y=0.12)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    return _save(plt, fig, output, dpi)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(plt, fig, output: str | Path, dpi: int, **savefig) -> Path:
    """Write ``fig`` to ``output`` atomically (its folder created; the format from its suffix) and close it."""
    from ..atomic import atomic_open

    output = Path(output).expanduser()
    savefig.setdefault("format", output.suffix.lstrip(".").lower() or None)
    try:
        with atomic_open(output, "wb", what="figure") as handle:
            fig.savefig(handle, dpi=dpi, **savefig)
    finally:
        plt.close(fig)
    return output


def _overlay(ax, img, mask, color, title: str) -> None:
    """``img`` (normalised tensor [3,H,W]) with ``mask`` ([H,W] 0/1) tinted in ``color``."""
    import numpy as np

    from ..data.transforms import denormalize

    rgb = denormalize(img).clamp(0, 1).permute(1, 2, 0).numpy()
    m = mask.float().numpy()[..., None]
    tinted = rgb * (1 - 0.5 * m) + 0.5 * m * np.asarray(color)[None, None, :]
    ax.imshow(tinted)
    if m.any() and not m.all():  # the mask's outline, visible on any image
        ax.contour(m[..., 0], levels=[0.5], colors=[color], linewidths=1.2)
    ax.set_title(title, fontsize=7)
    ax.axis("off")


def plot_episodes(
    request: FigureEpisodes, output: str | Path, *, dpi: int = 120, log: Callable[[str], None] | None = None
) -> Path:
    """Draw the episodes of ``request`` (:class:`hmrepro.engine.evaluation.evaluate.FigureEpisodes`).

    Columns: the supports (mask in green), the query with its ground truth (blue) and, when ``request.model`` is
    given, its prediction (red) with the episode's foreground IoU, both from the evaluation's runner
    (:func:`hmrepro.engine.evaluation.evaluate.figure_episodes`). Images are loaded with the model's preprocessing at
    ``request.img_size`` (default: the evaluation's size; without a model HSNet's at 400 px).
    """
    from ..data.benchmarks import get_benchmark
    from ..data.dataset import EpisodeDataset
    from ..engine.evaluation.evaluate import figure_episodes
    from ..paths import resolve_data_root

    benchmark, fold, shot, start = request.benchmark, request.fold, request.shot, request.start
    figure = figure_episodes(request, log=log)
    plan, eps = figure.plan, figure.episodes
    dataset = EpisodeDataset(
        get_benchmark(benchmark),
        resolve_data_root(request.data_root),
        eps,
        img_size=plan.img_size,
        preprocess=plan.preprocess,
    )
    ncols = shot + 1 + (figure.predictions is not None)
    plt = _pyplot()
    fig, axes = plt.subplots(len(eps), ncols, figsize=(1.9 * ncols, 2.0 * len(eps)), squeeze=False)
    for row, episode in enumerate(eps):
        item = dataset[row]
        for k in range(shot):
            _overlay(
                axes[row][k],
                item["support_imgs"][k],
                item["support_masks"][k],
                (0.1, 0.9, 0.1),
                f"support {k + 1}: {Path(episode.supports[k]).name}",
            )
        _overlay(
            axes[row][shot],
            item["query_img"],
            item["query_mask"],
            (0.1, 0.3, 1.0),
            f"query {start + row} (class {episode.class_id}): GT",
        )
        if figure.predictions is not None:
            pred = figure.predictions[row]
            _overlay(
                axes[row][shot + 1],
                item["query_img"],
                pred.mask,
                (1.0, 0.1, 0.1),
                f"{request.model}: IoU {pred.iou:.1f}",
            )
    fig.suptitle(f"{benchmark} fold {fold}, {shot}-shot episodes {start}..{start + len(eps) - 1}", fontsize=9)
    fig.tight_layout()
    return _save(plt, fig, output, dpi)


def plot_support_features(
    image,
    mask,
    backbone_name: str,
    layer: int,
    output: str | Path,
    *,
    pretrained: bool = True,
    title: str | None = None,
    dpi: int = 120,
) -> Path:
    """HM Fig. 5: the first channel of the FM, IM and HM support features of tap ``layer`` of a frozen backbone.

    ``image`` is a normalised support image [3, H, W] and ``mask`` its 0/1 mask [H, W]. ``layer`` is a 0-based
    index over the backbone's taps (shallowest first, as :meth:`FrozenBackbone.taps` returns them). Panels: the
    support with its mask (green), then FM (tap × resized mask), IM (taps of the masked image) and HM (FM where
    FM > 0, else IM) on one shared, zero-centred colour scale with a colourbar.
    """
    import torch

    from ..models.backbone import build_backbone
    from ..models.masking import hybrid_replace, mask_features, mask_image

    net = build_backbone(backbone_name, pretrained)  # a missing ImageNet file raises a clear HmreproError
    n_taps = net.extra_shallow_taps + sum(net.stage_tap_counts)
    if not 0 <= layer < n_taps:
        raise HmreproError(
            f"--layer {layer} is out of range for {backbone_name}: choose 0..{n_taps - 1} "
            f"(its {n_taps} taps, shallowest first)"
        )
    img = image[None].float()
    m = mask[None].float()
    with torch.no_grad():
        taps = net.taps(torch.cat([img, mask_image(img, m)]))
    image_taps, im_taps = [t[:1] for t in taps], [t[1:] for t in taps]
    fm_taps = mask_features(image_taps, m)
    hm_taps = hybrid_replace(fm_taps, im_taps)
    feats = {name: t[layer][0, 0].numpy() for name, t in (("FM", fm_taps), ("IM", im_taps), ("HM", hm_taps))}
    vmax = max(float(abs(f).max()) for f in feats.values()) or 1.0
    channels, h, w = taps[layer].shape[1:]

    plt = _pyplot()
    fig, axes = plt.subplots(1, 4, figsize=(10.5, 2.9), gridspec_kw={"width_ratios": [1, 1, 1, 1]})
    _overlay(axes[0], image, mask, (0.1, 0.9, 0.1), "support image + mask")
    names = {"FM": "FM (feature masking)", "IM": "IM (input masking)", "HM": "HM (hybrid masking)"}
    for ax, (name, feat) in zip(axes[1:], feats.items()):
        shown = ax.imshow(feat, cmap="RdBu_r", vmin=-vmax, vmax=vmax, interpolation="nearest")
        ax.set_title(names[name], fontsize=8)
        ax.axis("off")
    fig.colorbar(shown, ax=list(axes[1:]), fraction=0.025, pad=0.02)
    fig.suptitle(
        title
        or f"{backbone_name} tap {layer} of 0..{n_taps - 1} ({channels} × {h} × {w}), channel 0"
        f"{'' if pretrained else ' [random weights]'}",
        fontsize=9,
    )
    return _save(plt, fig, output, dpi, bbox_inches="tight")

"""``hmrepro plot``: figures from run folders (training profile, HM Fig. 6)."""

from __future__ import annotations

from enum import Enum
from pathlib import Path

import typer

from ..safetext import safe_markup
from .common import (
    BackboneOption,
    BenchmarkName,
    BenchmarkOption,
    DataRootOption,
    FoldOption,
    ShotOption,
    SplitsOption,
    check_device,
    console,
    figure_option,
    img_size_option,
    optional_option,
    pretrained_option,
    say,
)
from .train import few_shot_model

app = typer.Typer(
    help="Figures from run folders.\n\nExample: [bold]hmrepro plot training-profile runs/hsnet_* runs/hsnet-hm_*[/]",
    no_args_is_help=True,
)


class ProfileMetric(str, Enum):
    val_miou = "val_miou"
    val_fb_iou = "val_fb_iou"
    train_miou = "train_miou"
    train_loss = "train_loss"
    val_loss = "val_loss"


@app.command("training-profile")
def training_profile(
    run_dirs: list[Path] = typer.Argument(
        ..., metavar="RUN_DIR...", help="Run folders written by `hmrepro train`.", show_default=False
    ),
    output: Path = figure_option("training_profile.png"),
    metric: ProfileMetric = typer.Option(ProfileMetric.val_miou, "--metric", help="What to plot per epoch."),
    title: str | None = optional_option("--title", help="Figure title [default: names the metric]."),
) -> None:
    """Plot validation mIoU per epoch of one or more runs with each run's best epoch marked (HM Fig. 6).

    Reads each run's metrics.jsonl; the star marks the epoch whose weights best_model.pt holds.

    Example: [bold]hmrepro plot training-profile runs/hsnet_coco_fold0 runs/hsnet-hm_coco_fold0 -o fig6.png[/]
    """
    from ..reporting.figures import plot_training_profile

    def warn(message: str) -> None:
        console.print(f"[yellow]warning:[/] {safe_markup(message)}", highlight=False, soft_wrap=True)

    path = plot_training_profile(run_dirs, output, metric=metric.value, title=title, log=warn)
    say(f"wrote {path}")


def episodes(
    benchmark: BenchmarkName = BenchmarkOption,
    fold: int = FoldOption,
    shot: int = ShotOption,
    count: int = typer.Option(4, "--count", "-n", min=1, max=32, help="Episodes to draw."),
    start: int = typer.Option(0, "--start", min=0, help="Index of the first episode."),
    model: str | None = optional_option(
        "--model", "-m", callback=few_shot_model, help="Also draw this model's prediction (hsnet, hsnet-hm, ...)."
    ),
    weights: str | None = optional_option(
        "--weights",
        "-w",
        help="With --model: a checkpoint file, a run folder, 'official' or 'random' [default: random].",
    ),
    backbone: str = BackboneOption,
    img_size: int | None = img_size_option(
        "Image side in pixels [default: with --model the size hmrepro eval uses (the checkpoint's, else the "
        "recipe's), else 400]."
    ),
    device: str | None = typer.Option("cpu", "--device", callback=check_device, help="cpu, cuda, cuda:1 ..."),
    pretrained: bool = pretrained_option("ImageNet backbone for --weights random."),
    output: Path = figure_option("episodes.png"),
    data_root: Path | None = DataRootOption,
    splits: Path | None = SplitsOption,
) -> None:
    """Draw fixed test episodes: supports with their masks, the query with its ground truth and, with --model,
    the model's prediction and IoU (qualitative results as HM Figs. 1 and 5).

    Example:
    [bold]hmrepro viz episodes -b pascal --fold 0 --shot 1 -n 6 --model hsnet-hm --weights official -o fig5.png[/]
    """
    from ..engine.evaluation.evaluate import FigureEpisodes
    from ..reporting.figures import plot_episodes

    if weights is not None and model is None:
        raise typer.BadParameter(
            "--weights needs --model: name the model the weights belong to", param_hint="--weights"
        )
    request = FigureEpisodes(
        benchmark.value,
        fold,
        shot,
        start=start,
        count=count,
        model=model,
        weights=weights or "random",
        backbone=backbone,
        img_size=img_size,
        data_root=data_root,
        splits=splits,
        device=device,
        pretrained=pretrained,
    )
    path = plot_episodes(request, output, log=say)
    say(f"wrote {path}")

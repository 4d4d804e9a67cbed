"""``hmrepro viz``: qualitative figures of the HM paper (episodes: Figs. 1 and 4; support features: Fig. 5)."""

from __future__ import annotations

from enum import Enum
from pathlib import Path

import typer

from . import plot
from .common import (
    BenchmarkName,
    DataRootOption,
    FoldOption,
    SplitsOption,
    figure_option,
    pretrained_option,
    say,
)

app = typer.Typer(
    help="Qualitative figures: episodes with predictions and FM/IM/HM support features.\n\n"
    "Example: [bold]hmrepro viz features -b pascal --fold 0 --backbone resnet50 --layer 4 -o fig5.png[/]",
    no_args_is_help=True,
)

# the one episodes figure command (its function lives in plot.py, beside the other figure commands)
app.command("episodes")(plot.episodes)


class BackboneName(str, Enum):
    resnet50 = "resnet50"
    resnet101 = "resnet101"
    vgg16 = "vgg16"


@app.command("features")
def features(
    backbone: BackboneName = typer.Option(BackboneName.resnet50, "--backbone", help="Frozen ImageNet backbone."),
    layer: int = typer.Option(
        0,
        "--layer",
        min=0,
        help="Tap index, 0-based over the backbone's taps, shallowest first "
        "(resnet50: 0-12, resnet101: 0-29, vgg16: 0-6).",
    ),
    benchmark: BenchmarkName = typer.Option(..., "--benchmark", "-b", help="Benchmark the support image comes from."),
    fold: int = FoldOption,
    episode: int = typer.Option(0, "--episode", min=0, help="Test episode (1-shot) whose support is drawn."),
    img_size: int = typer.Option(400, "--img-size", min=16, help="Image side in pixels."),
    pretrained: bool = pretrained_option("ImageNet weights (else random)."),
    output: Path = figure_option("features.png"),
    data_root: Path | None = DataRootOption,
    splits: Path | None = SplitsOption,
) -> None:
    """Draw the first channel of one backbone tap of a support image under FM, IM and HM masking (HM Fig. 5).

    Panels: the support with its mask, then FM (features × resized mask), IM (features of the masked image) and
    HM (FM where FM > 0, else IM) on one colour scale.

    Example: [bold]hmrepro viz features -b pascal --fold 0 --episode 3 --backbone resnet50 --layer 4 -o fig5.png[/]
    """
    from ..data.benchmarks import get_benchmark, test_episodes
    from ..data.dataset import EpisodeDataset
    from ..data.splits import SplitFolder
    from ..errors import HmreproError
    from ..paths import resolve_data_root
    from ..reporting.figures import plot_support_features

    eps = test_episodes(benchmark.value, fold, 1, splits=SplitFolder(splits))
    if episode >= len(eps):
        raise HmreproError(
            f"--episode {episode} is out of range: {benchmark.value} fold {fold} has {len(eps)} "
            f"test episodes (0..{len(eps) - 1})"
        )
    # the backbones are HSNet's (ImageNet, torchvision preprocessing): the support is loaded as HSNet loads it
    dataset = EpisodeDataset(
        get_benchmark(benchmark.value),
        resolve_data_root(data_root),
        [eps[episode]],
        img_size=img_size,
        preprocess="hsnet",
    )
    item = dataset[0]
    support = Path(eps[episode].supports[0]).name
    title = (
        f"{benchmark.value} fold {fold} episode {episode} support {support}: {backbone.value} tap {layer}, "
        f"channel 0{'' if pretrained else ' [random weights]'}"
    )
    path = plot_support_features(
        item["support_imgs"][0],
        item["support_masks"][0],
        backbone.value,
        layer,
        output,
        pretrained=pretrained,
        title=title,
    )
    say(f"wrote {path}")

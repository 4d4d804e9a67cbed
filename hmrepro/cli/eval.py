"""``hmrepro eval``: the authors' evaluation of a model on a benchmark's folds, with result records."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from .common import (
    BackboneOption,
    BenchmarkName,
    BenchmarkOption,
    DataRootOption,
    DeviceOption,
    ImageCacheOption,
    InferenceOptions,
    JsonRecordsOption,
    LoaderWorkersOption,
    NoRecordOption,
    ProgressOption,
    ResultsOption,
    ShotOption,
    SplitsOption,
    bsz_option,
    console,
    episode_seed_option,
    episodes_option,
    img_size_option,
    option_group,
    optional_option,
    pretrained_option,
    print_json,
    report_saved,
)
from .episodes import Protocol
from .rich_progress import RichProgress
from .train import few_shot_model

FoldChoice = Enum("FoldChoice", {"f0": "0", "f1": "1", "f2": "2", "f3": "3", "all": "all"}, type=str)


@dataclass
class EvalRun:
    """The options of an evaluation run that eval and domain-shift share: the backbone, the device, where the data
    and the split lists are, progress bars, and the result records (where they go, whether, JSON on stdout)."""

    backbone: str = BackboneOption
    device: str | None = DeviceOption
    data_root: Path | None = DataRootOption
    splits: Path | None = SplitsOption
    progress: bool = ProgressOption
    results: Path = ResultsOption
    no_record: bool = NoRecordOption
    as_json: bool = JsonRecordsOption

    def settings(self) -> dict:
        """The evaluation settings these options give (keywords of EvalConfig and of evaluate_domain_shift)."""
        passed_on = {key: getattr(self, key) for key in ("backbone", "device", "data_root", "splits")}
        return {**passed_on, "results_dir": None if self.no_record else self.results}

    def show(self, records: list[dict], title: str) -> None:
        """The records: their table (on stderr with --json), the JSON, where they were saved."""
        print_table(records, title, to_stderr=self.as_json)
        if self.as_json:
            print_json(records)
        report_saved(records, self.no_record)


def print_table(records: list[dict], title: str, to_stderr: bool = False) -> None:
    from ..engine.evaluation.evaluate import mean_row

    table = Table(title=title)
    for col in ("fold", "mIoU", "FB-IoU", "episodes", "ms/episode", "origin"):
        table.add_column(col, justify="right" if col not in ("origin",) else "left")
    for r in records:
        table.add_row(
            str(r["fold"]),
            f"{r['miou']:.1f}",
            f"{r['fb_iou']:.1f}",
            str(r["episodes"]),
            f"{r['secs_per_episode'] * 1000:.0f}",
            r["origin"],
        )
    if len(records) > 1:
        m = mean_row(records)
        table.add_row("mean", f"[bold]{m['miou']:.1f}", f"[bold]{m['fb_iou']:.1f}", str(m["episodes"]), "", "")
    Console(stderr=to_stderr).print(table)


@option_group("run", EvalRun)
@option_group("test_time", InferenceOptions)
def eval_command(
    model: str = typer.Argument(
        ...,
        callback=few_shot_model,
        help="Model: hsnet, hsnet-hm, vat, vat-hm, asnet, asnet-hm, ... "
        "(-im, -hm-add, -hm-reverse: the masking ablations).",
        show_default=False,
    ),
    benchmark: BenchmarkName = BenchmarkOption,
    fold: FoldChoice = typer.Option(FoldChoice.f0, "--fold", "-f", help="Fold, or all (the paper's mean over folds)."),
    shot: int = ShotOption,
    weights: str = typer.Option(
        ...,
        "--weights",
        "-w",
        help="A checkpoint file, a run folder (its best_model.pt), 'random' (untrained learner) or 'official' "
        "(the authors' checkpoint). With --fold all put {fold} in the path: runs/hsnet-hm_fold{fold}.",
    ),
    img_size: int | None = img_size_option("Image side [default: recipe, 400]."),
    original_size: bool = typer.Option(
        False,
        "--original-size",
        help="Upsample the logits to each query's original size and score the unresized mask (batch 1).",
    ),
    episodes: int | None = episodes_option("Only the first N of the fixed episodes (quick checks) [default: all]."),
    episode_seed: int = episode_seed_option(
        "Another draw of the protocol's episodes (0: the authors' own). Records say so and fill no table cell; "
        "evaluate seeds 1, 2, ... to see how much a fold's mIoU moves with the draw alone."
    ),
    bsz: int | None = bsz_option(
        "Episodes per batch through the model [default: recipe, 1 as the authors; ASNet 12]. A speed choice: each "
        "episode is scored on its own; on a CPU a batch can round differently (README, Batched evaluation)."
    ),
    workers: int = LoaderWorkersOption,
    image_cache_mib: int = ImageCacheOption,
    pretrained: bool = pretrained_option("ImageNet backbone for --weights random (checkpoints bring their own)."),
    amp: bool = typer.Option(
        False, "--amp/--no-amp", help="bf16 autocast (faster on GPUs; the authors evaluate in fp32)."
    ),
    protocol: Protocol | None = optional_option(
        "--protocol",
        help="Episode protocol [default: the model's card: hsnet for HSNet/VAT, asnet, bam for MCE]. bam: BAM's 5 "
        "seeds "
        "x 1000 episodes, aspect-kept 473 canvas, scored at the original label; hsnet on an MCE model: the HM models' "
        "episodes with the square resize (like-for-like tables).",
    ),
    *,
    test_time: InferenceOptions,
    run: EvalRun,
) -> None:
    """Evaluate MODEL as the authors do: fixed episodes (seed 0), K-shot vote, mIoU and FB-IoU per fold.

    Writes one result record per fold to --results (never overwriting one) with the checkpoint's sha256, its
    origin (own / official / random), versions, device and seconds per episode.

    Example:
    [bold]hmrepro eval hsnet-hm --benchmark pascal --fold all --shot 5 --weights runs/hsnet-hm_pascal_fold{fold}[/]

    Example (authors' weights, original-size masks):
    [bold]hmrepro eval hsnet-hm -b coco --fold 0 --weights official --original-size[/]

    Example (CRCNet as in its paper: multi-scale, fine-tuned 5-shot):
    [bold]hmrepro eval crcnet -b pascal -k 5 --multi-scale --kshot finetune-fusion --weights runs/crcnet_pascal_fold0[/]

    Example (MCE, BAM's protocol: 5 seeds, each kept in the record):
    [bold]hmrepro eval mce-hm -b pascal --protocol bam --weights runs/mce-hm_pascal_fold0[/]
    """
    from ..engine.evaluation.evaluate import EvalConfig, evaluate

    if weights == "official" and run.backbone not in ("resnet50", "resnet101"):
        console.print("[yellow]note:[/] the authors released ResNet-50/101 checkpoints only")
    with RichProgress(run.progress) as bars:
        config = EvalConfig(
            model,
            benchmark.value,
            fold.value,
            shot,
            weights=weights,
            img_size=img_size,
            original_size=original_size,
            bsz=bsz,
            workers=workers,
            episodes=episodes,
            pretrained=pretrained,
            amp=amp,
            episode_seed=episode_seed,
            protocol=protocol.value if protocol else None,
            inference=test_time.inference(),
            image_cache_mib=image_cache_mib,
            **run.settings(),
        )
        records = evaluate(config, progress=bars)
    run.show(records, f"{model} ({run.backbone}) on {benchmark.value}, {shot}-shot")

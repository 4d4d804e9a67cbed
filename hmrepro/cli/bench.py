"""``hmrepro bench``: the measuring tool, with records.

- ``hmrepro bench`` (no subcommand): inference time per image of a family's FM and HM variants (HM Table 7);
- ``hmrepro bench model``: one K-shot episode of any model: seconds, breakdown (backbone, correlation, learner),
  peak memory;
- ``hmrepro bench eval``: end-to-end evaluation throughput on a benchmark folder (data loading included);
- ``hmrepro bench train``: training iterations per second and peak memory at the recipe's batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from pathlib import Path

import typer
from rich.console import Console

from ..models.cards import list_cards
from .common import (
    BackboneOption,
    BenchmarkName,
    DataRootOption,
    FoldOption,
    ImageCacheOption,
    InferenceOptions,
    JsonRecordsOption,
    LoaderWorkersOption,
    ShotOption,
    SplitsOption,
    bsz_option,
    console,
    device_option,
    img_size_option,
    option_group,
    optional_option,
    print_json,
    report_saved,
)

BenchFamily = Enum("BenchFamily", {card.family: card.family for card in list_cards()}, type=str)

app = typer.Typer(invoke_without_command=True)  # help: the callback's docstring


def _model_name(value: str | None) -> str | None:
    from .train import few_shot_model

    return few_shot_model(value)


ModelOption = typer.Option(
    ..., "--model", "-m", callback=_model_name, help="Any model: hsnet, hsnet-hm, vat-hm, asnet-hm, ..."
)
BenchDeviceOption = device_option("cpu, cuda or cuda:N [default: cuda if available].")
AmpOption = typer.Option(False, "--amp/--no-amp", help="bf16 autocast (changes numbers; recorded).")


@dataclass
class BenchRun:
    """The options every bench command takes: the backbone, the device, and the bench records (where they go,
    whether, JSON on stdout)."""

    backbone: str = BackboneOption
    device: str | None = BenchDeviceOption
    results: Path = typer.Option(Path("results"), "--results", help="Folder for the bench records.")
    no_record: bool = typer.Option(False, "--no-record", help="Do not write records.")
    as_json: bool = JsonRecordsOption

    def settings(self) -> dict:
        """What these options pass on to the engine's bench functions (backbone, device, results_dir)."""
        return {
            "backbone": self.backbone,
            "device": self.device,
            "results_dir": None if self.no_record else self.results,
        }

    def publish(self, records: list[dict] | dict) -> None:
        """The records (one: a subcommand's) as JSON on stdout with --json, then where they were saved."""
        if self.as_json:
            print_json(records)
        report_saved(records if isinstance(records, list) else [records], self.no_record)


@app.callback(invoke_without_command=True)
@option_group("run", BenchRun)
def bench_command(
    ctx: typer.Context,
    model: BenchFamily = typer.Option(
        BenchFamily.hsnet,
        "--model",
        "-m",
        help="Model family: its FM variant (e.g. hsnet) is timed against its HM variant (hsnet-hm).",
    ),
    img_size: int | None = img_size_option("Image side in pixels [default: the family's COCO-20i size, 400; VAT 417]."),
    runs: int = typer.Option(20, "--runs", min=1, help="Timed runs per model; the median is reported."),
    warmup: int = typer.Option(3, "--warmup", min=0, help="Untimed warm-up runs per model."),
    *,
    run: BenchRun,
) -> None:
    """Time 1-shot inference per image of a model's FM and HM variants (Table 7 of the HM paper).

    Random weights and random inputs at batch size 1 (timing does not depend on them); warm-up, the device
    synchronised around every call, the median of --runs alternating timings; support masking, feature extraction,
    forward pass, upsampling and argmax included, data loading excluded. Prints both times and the HM overhead in
    percent and writes one record per model (kind 'bench') that `hmrepro table 7` shows.

    Example: [bold]hmrepro bench --model hsnet --device cuda --runs 50 && hmrepro table 7[/]

    Example (quick CPU check): [bold]hmrepro bench --device cpu --img-size 200 --runs 3 --results /tmp/bench[/]

    Subcommands: [bold]model[/] (one episode of any model: time, breakdown, peak memory), [bold]eval[/] (end-to-end
    episodes/s on a benchmark folder), [bold]train[/] (iterations/s at the recipe's batch).
    """
    if ctx.invoked_subcommand is not None:
        return
    from rich.table import Table

    from ..engine.benchmarking.bench import bench, overhead_pct

    records = bench(
        model.value,
        img_size=img_size,
        runs=runs,
        warmup=warmup,
        **run.settings(),
    )
    table = Table(
        title=f"{model.value} ({run.backbone}), {records[0]['img_size']} px, 1-shot, {records[0]['device_name']}"
    )
    for col in ("model", "masking", "secs/image (median)", "min", "runs"):
        table.add_column(col, justify="left" if col in ("model", "masking") else "right")
    for r in records:
        table.add_row(r["model"], r["masking"], f"{r['secs_per_image']:.4f}", f"{r['secs_min']:.4f}", str(r["runs"]))
    Console(stderr=run.as_json).print(table)
    console.print(f"HM overhead: {overhead_pct(records):+.1f}%  (the paper: 0.27 → 0.34 s, +25.9%)")
    run.publish(records)


def _memory_line(record: dict) -> str:
    return (
        f"peak memory {record['peak_memory_mib']:.0f} MiB, "
        f"{record['peak_memory_increase_mib']:.0f} MiB above the start "
        f"({record['peak_memory_method']})"
    )


@app.command("model")
@option_group("run", BenchRun)
@option_group("test_time", InferenceOptions)
def model_command(
    model: str = ModelOption,
    shot: int = typer.Option(1, "--shot", "-k", min=1, max=10, help="Support images per episode."),
    img_size: int | None = img_size_option("Image side [default: the model's size for --benchmark]."),
    benchmark: BenchmarkName = typer.Option(
        BenchmarkName.coco, "--benchmark", "-b", help="Whose decoder (VAT) and image size."
    ),
    bsz: int = typer.Option(1, "--bsz", min=1, help="Episodes per batch."),
    runs: int = typer.Option(3, "--runs", min=1, help="Timed episodes; the median is reported."),
    warmup: int = typer.Option(1, "--warmup", min=0, help="Untimed episodes first."),
    amp: bool = AmpOption,
    channels_last: bool = typer.Option(
        False, "--channels-last/--no-channels-last", help="Channels-last query images (recorded)."
    ),
    profile: bool = typer.Option(
        True, "--profile/--no-profile", help="One more episode under torch.profiler for the breakdown."
    ),
    model_args: str | None = optional_option(
        "--model-args",
        help="Constructor arguments, 'key=value;...' (e.g. CRCNet's 'finetune_steps=5'; recorded) [default: none].",
    ),
    *,
    test_time: InferenceOptions,
    run: BenchRun,
) -> None:
    """Time one K-shot episode of MODEL (predict_nshot, random weights and images), its peak memory, and where the
    time goes: query backbone, support backbone, correlation, learner, other, and the slowest ops (torch.profiler).

    Writes one record (kind 'bench-model'); the README's table of measured numbers comes from these records.

    Example: [bold]hmrepro bench model --model hsnet-hm --shot 5 --img-size 400 --device cpu[/]

    Example: [bold]hmrepro bench model -m vat-hm -b pascal --device cuda --runs 20 --amp[/]

    Example (CRCNet, multi-scale, fine-tuned 5-shot):
    [bold]hmrepro bench model -m crcnet-hm -k 5 -b pascal --multi-scale --kshot finetune-fusion --runs 1 --warmup 0[/]
    """
    from rich.table import Table

    from ..engine.benchmarking.bench_model import STAGES, bench_model

    record = bench_model(
        model,
        shot=shot,
        benchmark=benchmark.value,
        img_size=img_size,
        bsz=bsz,
        runs=runs,
        warmup=warmup,
        bf16=amp,
        channels_last=channels_last,
        profile=profile,
        **run.settings(),
        inference=test_time.inference(),
        model_args=model_args or "",
    )
    out = Console(stderr=run.as_json)
    title = (
        f"{model} ({run.backbone}), {record['img_size']} px, {shot}-shot, batch {bsz}, "
        f"{record['precision']}, {record['device_name']}"
    )
    out.print(f"[bold]{title}[/]")
    out.print(
        f"{record['secs_per_episode']:.3f} s/episode (median of {runs}; min {record['secs_min']:.3f}; process CPU "
        f"{record['cpu_secs_per_episode']:.3f} s); {_memory_line(record)}"
    )
    breakdown = record["breakdown"]
    if breakdown:
        table = Table(title=f"one profiled episode: {breakdown['profiled_secs']:.3f} s")
        table.add_column("stage")
        table.add_column("secs", justify="right")
        table.add_column("share", justify="right")
        for stage in STAGES:
            secs = breakdown["stages"][stage]
            table.add_row(stage, f"{secs:.3f}", f"{100 * secs / max(breakdown['profiled_secs'], 1e-9):.0f}%")
        out.print(table)
        out.print(
            "slowest ops (self time): " + ", ".join(f"{op['op']} {op['secs']:.3f} s" for op in breakdown["top_ops"][:5])
        )
    run.publish(record)


@app.command("eval")
@option_group("run", BenchRun)
def eval_command(
    model: str = ModelOption,
    benchmark: BenchmarkName = typer.Option(..., "--benchmark", "-b", help="Benchmark folder to read."),
    fold: int = FoldOption,
    shot: int = ShotOption,
    episodes: int = typer.Option(20, "--episodes", min=1, help="The first N of the fold's fixed episodes."),
    weights: str = typer.Option("random", "--weights", "-w", help="'random', a checkpoint file or a run folder."),
    img_size: int | None = img_size_option("Image side [default: the model's card]."),
    bsz: int | None = bsz_option("Episodes per batch through the model [default: the recipe's: 1, ASNet 12]."),
    workers: int = LoaderWorkersOption,
    image_cache_mib: int = ImageCacheOption,
    amp: bool = AmpOption,
    data_root: Path | None = DataRootOption,
    splits: Path | None = SplitsOption,
    *,
    run: BenchRun,
) -> None:
    """Episodes per second of MODEL's evaluation on a benchmark folder, data loading included, and peak memory.

    Runs the real evaluation (fixed episodes, DataLoader, K-shot vote, metric) on the first --episodes episodes and
    writes one record (kind 'bench-eval'; it fills no table cell).

    Example:
    [bold]hmrepro prepare synthetic --data-root syn && hmrepro bench eval -m hsnet-hm -b fss --data-root syn[/]
    """
    from ..engine.benchmarking.bench_run import bench_eval
    from ..engine.evaluation.eval_config import EvalConfig

    config = EvalConfig(
        model,
        benchmark.value,
        fold,
        shot,
        weights,
        img_size=img_size,
        bsz=bsz,
        episodes=episodes,
        amp=amp,
        workers=workers,
        image_cache_mib=image_cache_mib,
        data_root=data_root,
        splits=splits,
        **run.settings(),
    )
    record = bench_eval(config)
    console.print(
        f"[bold]{model}[/] on {benchmark.value} fold {fold}, {shot}-shot, {record['img_size']} px, "
        f"batch {record['bsz']}, {workers} workers, {record['precision']}, {record['device_name']}: "
        f"{record['episodes_per_sec']:.3f} episodes/s "
        f"({record['secs_per_episode']:.3f} s/episode over {record['episodes']}); {_memory_line(record)}"
        f"{_phases_line(record)}; {_cache_line(record)}"
    )
    run.publish(record)


def _phases_line(record: dict) -> str:
    after = record.get("peak_memory_after_first_batch_mib")
    if after is None:
        return ""
    first = record["peak_memory_first_batch_mib"]
    return f" (model building + first batch {first:.0f} MiB, the batches after {after:.0f} MiB)"


def _cache_line(record: dict) -> str:
    stats = record["image_cache"]
    if not record["image_cache_mib"]:
        return "image cache off"
    if stats is None:  # counted in the worker processes
        return f"image cache {record['image_cache_mib']} MiB per worker"
    return (
        f"image cache {record['image_cache_mib']} MiB: {100 * (stats['hit_rate'] or 0):.0f}% hits "
        f"({stats['hits']}/{stats['hits'] + stats['misses']}), {stats['bytes'] / 2**20:.1f} MiB held"
    )


@app.command("train")
@option_group("run", BenchRun)
def train_command(
    model: str = ModelOption,
    benchmark: BenchmarkName = typer.Option(
        BenchmarkName.pascal, "--benchmark", "-b", help="Whose recipe (batch, image size)."
    ),
    iterations: int = typer.Option(3, "--iterations", min=1, help="Timed iterations; the median is reported."),
    warmup: int = typer.Option(1, "--warmup", min=0, help="Untimed iterations first."),
    bsz: int | None = bsz_option("Batch [default: the recipe's]."),
    img_size: int | None = img_size_option("Image side [default: the recipe's]."),
    amp: bool = AmpOption,
    *,
    run: BenchRun,
) -> None:
    """Training iterations per second of MODEL at its recipe's batch and image size, and peak memory.

    Random episodes already in memory (data loading excluded), the recipe's optimizer, the model's objective,
    forward + backward + step. Writes one record (kind 'bench-train').

    Example: [bold]hmrepro bench train -m hsnet-hm -b pascal --device cuda --amp[/]

    Example (CPU, small): [bold]hmrepro bench train -m hsnet-hm --bsz 2 --img-size 200 --device cpu[/]
    """
    from ..engine.benchmarking.bench_run import bench_train

    record = bench_train(
        model,
        benchmark.value,
        iterations=iterations,
        warmup=warmup,
        bsz=bsz,
        img_size=img_size,
        bf16=amp,
        **run.settings(),
    )
    console.print(
        f"[bold]{model}[/] training, batch {record['bsz']} (recipe {record['recipe_bsz']}), {record['img_size']} px, "
        f"{record['precision']}, {record['device_name']}: {record['iterations_per_sec']:.3f} iterations/s "
        f"({record['secs_per_iteration']:.3f} s/iteration); {_memory_line(record)}; "
        f"{record['peak_memory_per_sample_mib']:.0f} MiB per sample"
    )
    run.publish(record)

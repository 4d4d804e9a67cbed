"""What a sweep costs before it runs: GPU-hours per job and in total, from measured speeds only.

Speeds come from ``bench`` records: the user's own (``kind`` 'bench-train' / 'bench-eval' below the results folder,
written by ``hmrepro bench train`` / ``hmrepro bench eval``) take precedence; else the reference speeds measured in
this repository (``recipes/bench_reference.csv``: one row per record of ``measurements/h200-2026-11-26/``, each
naming its record file). A speed fits a job when model, backbone, shot, image size and precision agree (training:
the batch too). The benchmark is not compared: a training iteration on random in-memory episodes and the model's
forward do not depend on it at a given size and batch; an evaluation's data loading does (the reference was timed
on the synthetic benchmark). A job that no speed fits is left out of the total and says which measurement it lacks.

- training: ``epochs × (iterations per epoch / iterations per second + validation episodes / episodes per
  second)``; iterations per epoch from the training split lists (``ceil(episodes / bsz)``, or
  ``--epoch-iterations``), validation episodes from the protocol (1000 per fold for PASCAL-5i and COCO-20i, one per
  image of FSS-1000's val classes, or ``val_episodes``); validation at the speed of a 1-shot ``bench eval``.
  ``bench train`` excludes data loading. With ``patience`` the epochs are an upper bound.
- evaluation (``eval``, ``domain-shift``): the protocol's test episodes (1000 per fold; BAM: 5 runs of 1000; FSS-1000:
  one per test image) / episodes per second.
- downloads take no GPU; Table 7's ``bench`` jobs have no estimate.

Pure data, no printing: :func:`estimate_plan` returns a :class:`PlanEstimate`.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from ..errors import HmreproError
from .plan import Job

__all__ = [
    "REFERENCE_FILE",
    "JobEstimate",
    "PlanEstimate",
    "Speed",
    "estimate_job",
    "estimate_plan",
    "own_speeds",
    "reference_speeds",
]

REFERENCE_FILE = "bench_reference.csv"
TRAIN, EVAL = "bench-train", "bench-eval"
OWN, REFERENCE = "yours", "reference"
EVAL_KINDS = ("eval", "domain-shift")
RECIPE_FLAGS = ("bsz", "img_size", "epochs", "patience", "val_episodes", "val_bsz", "eval_bsz", "shot")


@dataclass(frozen=True)
class Speed:
    """One measured speed: iterations per second (``bench-train``) or episodes per second (``bench-eval``)."""

    kind: str
    model: str
    backbone: str
    benchmark: str
    shot: int
    img_size: int
    bsz: int
    precision: str
    device_name: str
    per_second: float
    date: str
    where: str  # the record file it comes from
    origin: str = REFERENCE  # OWN or REFERENCE

    @property
    def label(self) -> str:
        """Where the speed comes from, e.g. ``NVIDIA H200 measured 2026-11-26 (measurements/h200-2026-11-26/),
        not your device``."""
        if self.origin == OWN:
            return f"{self.device_name}, your bench records"
        folder = "/".join(Path(self.where).parts[:2])
        return f"{self.device_name} measured {self.date} ({folder}/), not your device"

    def timed(self, benchmark: str, bsz: int) -> str:
        """``33.7/s`` and, where they differ from the job's, the benchmark and batch it was timed at, e.g.
        ``33.7/s (timed on pascal, at batch 1)``."""
        unit = " it/s" if self.kind == TRAIN else "/s"
        notes = []
        if self.benchmark != benchmark:
            notes.append(f"on {self.benchmark}")
        if self.bsz != bsz:
            notes.append(f"at batch {self.bsz}")
        return f"{self.per_second:.3g}{unit}" + (f" (timed {', '.join(notes)})" if notes else "")


@dataclass(frozen=True)
class JobEstimate:
    """A job's GPU-hours (None: no measurement, or nothing to estimate) and how they were reached."""

    job_id: str
    hours: float | None
    detail: str
    speeds: tuple[Speed, ...] = ()

    @property
    def measured(self) -> bool:
        return self.hours is not None


@dataclass(frozen=True)
class PlanEstimate:
    """The estimates of a plan's jobs; the total counts the pending jobs that have one."""

    jobs: tuple[JobEstimate, ...]
    pending: frozenset[str] = field(default_factory=frozenset)

    def of(self, job_id: str) -> JobEstimate | None:
        return next((e for e in self.jobs if e.job_id == job_id), None)

    @property
    def counted(self) -> list[JobEstimate]:
        return [e for e in self.jobs if e.job_id in self.pending and e.measured]

    @property
    def unmeasured(self) -> list[JobEstimate]:
        return [e for e in self.jobs if e.job_id in self.pending and not e.measured and e.detail != NO_GPU]

    @property
    def pending_gpu_jobs(self) -> int:
        """Pending jobs that need a GPU (every kind but downloads)."""
        return sum(1 for e in self.jobs if e.job_id in self.pending and e.detail != NO_GPU)

    @property
    def total_hours(self) -> float:
        return sum(e.hours for e in self.counted)

    @property
    def sources(self) -> dict[str, int]:
        """Label of each speed source → jobs of the total that use it."""
        out: dict[str, int] = {}
        for estimate in self.counted:
            for label in dict.fromkeys(s.label for s in estimate.speeds):
                out[label] = out.get(label, 0) + 1
        return out

    @property
    def patience_bounded(self) -> bool:
        return any("upper bound" in e.detail for e in self.counted)


NO_GPU = "no GPU (a download)"


# ---------------------------------------------------------------------------------------------------------------
# Speeds
# ---------------------------------------------------------------------------------------------------------------


def reference_speeds(path: Path | None = None) -> list[Speed]:
    """The speeds measured in this repository (``recipes/bench_reference.csv``)."""
    from ..engine.recipes import recipe_dir

    path = Path(path) if path else recipe_dir() / REFERENCE_FILE
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
    except OSError as err:
        raise HmreproError(f"cannot read the reference speeds {path}: {err.strerror or err}") from None
    try:
        return [_speed_of_row(row) for row in rows]
    except (KeyError, ValueError, TypeError) as err:
        raise HmreproError(f"{path}: a row does not read as a bench speed ({err}); restore the file from git") from None


def _speed_of_row(row: dict) -> Speed:
    per_second = row["iterations_per_s"] if row["kind"] == TRAIN else row["episodes_per_s"]
    return Speed(
        kind=row["kind"],
        model=row["model"],
        backbone=row["backbone"],
        benchmark=row["benchmark"],
        shot=int(row["shot"]),
        img_size=int(row["img_size"]),
        bsz=int(row["bsz"]),
        precision=row["precision"],
        device_name=row["device_name"],
        per_second=float(per_second),
        date=row["date"],
        where=row["source"],
    )


def own_speeds(records: Iterable[dict]) -> list[Speed]:
    """The speeds of the user's ``bench train`` / ``bench eval`` records (others, and incomplete ones, skipped)."""
    out = []
    for record in records:
        speed = _speed_of_record(record)
        if speed is not None:
            out.append(speed)
    return out


def _speed_of_record(record: dict) -> Speed | None:
    kind = record.get("kind")
    if kind not in (TRAIN, EVAL):
        return None
    per_second = record.get("iterations_per_sec" if kind == TRAIN else "episodes_per_sec")
    try:
        if not per_second or float(per_second) <= 0 or not math.isfinite(float(per_second)):
            return None
        return Speed(
            kind=kind,
            model=str(record["model"]),
            backbone=str(record["backbone"]),
            benchmark=str(record["benchmark"]),
            shot=int(record["shot"]),
            img_size=int(record["img_size"]),
            bsz=int(record.get("bsz") or 1),
            precision=str(record.get("precision") or "fp32"),
            device_name=str(record.get("device_name") or record.get("device") or "unnamed device"),
            per_second=float(per_second),
            date=str(record.get("date") or ""),
            where=str(record.get("path") or ""),
            origin=OWN,
        )
    except (KeyError, TypeError, ValueError):
        return None


def find_speed(speeds: Sequence[Speed], kind: str, want: dict, *, same_bsz: bool) -> Speed | None:
    """The speed for ``want`` (model, backbone, shot, img_size, precision, bsz): the user's own before the
    reference, then one at the same batch, then the newest."""
    keys = ("model", "backbone", "shot", "img_size", "precision")
    fits = [s for s in speeds if s.kind == kind and all(getattr(s, k) == want[k] for k in keys)]
    if same_bsz:
        fits = [s for s in fits if s.bsz == want["bsz"]]
    if not fits:
        return None
    return max(fits, key=lambda s: (s.origin == OWN, s.bsz == want["bsz"], s.date))


def _describe(kind: str, want: dict) -> str:
    what = "bench train" if kind == TRAIN else "bench eval"
    batch = f", batch {want['bsz']}" if kind == TRAIN else ""
    return (
        f"no measurement: {what} of {want['model']} {want['backbone']} {want['shot']}-shot, "
        f"{want['img_size']} px{batch}, {want['precision']}"
    )


# ---------------------------------------------------------------------------------------------------------------
# Workloads: what a job's command asks for
# ---------------------------------------------------------------------------------------------------------------


def command_options(command: Sequence[str]) -> tuple[str, dict[str, str], set[str]]:
    """``("hmrepro", "train", "hsnet-hm", "--bsz", "20", "--no-progress")`` → ``("hsnet-hm", {"bsz": "20"},
    {"no_progress"})``: the model, the options with a value, the switches (names with ``_``)."""
    rest = list(command[2:])
    model = rest.pop(0) if rest and not rest[0].startswith("--") else ""
    values: dict[str, str] = {}
    switches: set[str] = set()
    i = 0
    while i < len(rest):
        name = rest[i].removeprefix("--").replace("-", "_")
        if i + 1 < len(rest) and not rest[i + 1].startswith("--"):
            values[name] = rest[i + 1]
            i += 2
        else:
            switches.add(name)
            i += 1
    return model, values, switches


def _recipe(model: str, benchmark: str, values: dict[str, str]) -> dict:
    """The recipe of ``model`` on ``benchmark`` with the command's size, epoch and batch options."""
    overrides = tuple((k, int(values[k])) for k in RECIPE_FLAGS if k in values)
    return dict(_cached_recipe(model, benchmark, overrides))


@lru_cache(maxsize=256)
def _cached_recipe(model: str, benchmark: str, overrides: tuple[tuple[str, int], ...]) -> tuple:
    from ..engine.recipes import resolve

    return tuple(resolve(model, benchmark, dict(overrides), check_training_extras=False).items())


@lru_cache(maxsize=64)
def training_episodes(benchmark: str, fold: int, splits: str | None) -> int:
    """Episodes of one training epoch: the training pool of ``benchmark``/``fold`` from the split lists."""
    from ..data.benchmarks import get_benchmark
    from ..data.splits import SplitFolder

    return len(get_benchmark(benchmark).pool(SplitFolder(splits), "trn", fold))


@lru_cache(maxsize=64)
def protocol_episodes(benchmark: str, fold: int, protocol: str, split: str, splits: str | None) -> int:
    """Episodes of one evaluation (``split`` 'test') or validation pass ('val', BAM: one run) by the protocol."""
    from ..data.bam import BAM_EPISODES, bam_seeds
    from ..data.benchmarks import get_benchmark
    from ..data.splits import SplitFolder

    if protocol == "bam":
        return BAM_EPISODES * (len(bam_seeds()) if split == "test" else 1)
    bench = get_benchmark(benchmark)
    if bench.test_episodes is not None:
        return bench.test_episodes
    return len(bench.pool(SplitFolder(splits), split, fold))


# ---------------------------------------------------------------------------------------------------------------
# Estimates
# ---------------------------------------------------------------------------------------------------------------


def estimate_job(job: Job, speeds: Sequence[Speed]) -> JobEstimate:
    """GPU-hours of ``job`` at the best fitting of ``speeds`` (see :func:`find_speed`)."""
    if job.kind == "download":
        return JobEstimate(job.id, None, NO_GPU)
    try:
        if job.kind == "train":
            return _estimate_training(job, speeds)
        if job.kind in EVAL_KINDS:
            return _estimate_evaluation(job, speeds)
    except (HmreproError, ValueError, KeyError) as err:
        return JobEstimate(job.id, None, f"no estimate: {err}")
    return JobEstimate(job.id, None, "no measurement: Table 7's timing itself (no bench train/eval speed applies)")


def _estimate_training(job: Job, speeds: Sequence[Speed]) -> JobEstimate:
    model, values, _ = command_options(job.command)
    benchmark, fold = values["benchmark"], int(values.get("fold", 0))
    config = _recipe(model, benchmark, values)
    want = {
        "model": model,
        "backbone": values.get("backbone", "resnet50"),
        "shot": int(config["shot"]),
        "img_size": int(config["img_size"]),
        "precision": values.get("amp", "fp32"),
        "bsz": int(config["bsz"]),
    }
    train = find_speed(speeds, TRAIN, want, same_bsz=True)
    if train is None:
        return JobEstimate(job.id, None, _describe(TRAIN, want))
    want_val = {**want, "shot": 1, "bsz": int(config["val_bsz"])}
    val = find_speed(speeds, EVAL, want_val, same_bsz=False)
    if val is None:
        return JobEstimate(job.id, None, _describe(EVAL, want_val) + " (its validation)")
    iterations = math.ceil(training_episodes(benchmark, fold, values.get("splits")) / want["bsz"])
    if int(values.get("epoch_iterations", 0)) > 0:
        iterations = min(iterations, int(values["epoch_iterations"]))
    val_episodes = protocol_episodes(benchmark, fold, config["protocol"], "val", values.get("splits"))
    if int(config["val_episodes"]) > 0:
        val_episodes = min(val_episodes, int(config["val_episodes"]))
    epochs = int(config["epochs"])
    seconds = epochs * (iterations / train.per_second + val_episodes / val.per_second)
    bound = f", an upper bound (patience {config['patience']})" if int(config["patience"]) > 0 else ""
    detail = (
        f"{epochs} epochs{bound} × ({iterations} it at {train.timed(benchmark, want['bsz'])} + {val_episodes} "
        f"val episodes at {val.timed(benchmark, want_val['bsz'])})"
    )
    return JobEstimate(job.id, seconds / 3600.0, detail, (train, val))


def _estimate_evaluation(job: Job, speeds: Sequence[Speed]) -> JobEstimate:
    model, values, switches = command_options(job.command)
    shifted = job.kind == "domain-shift"  # a COCO-20i model at its COCO-20i size, on PASCAL images, batch 1
    benchmark = "coco" if shifted else values["benchmark"]
    fold = int(values.get("fold", 0))
    config = _recipe(model, benchmark, {k: v for k, v in values.items() if k == "img_size"})
    want = {
        "model": model,
        "backbone": values.get("backbone", "resnet50"),
        "shot": int(values.get("shot", 1)),
        "img_size": int(config["img_size"]),
        "precision": "bf16" if "amp" in switches else "fp32",
        "bsz": int(values.get("bsz", 1 if shifted else config["eval_bsz"])),
    }
    speed = find_speed(speeds, EVAL, want, same_bsz=False)
    if speed is None:
        return JobEstimate(job.id, None, _describe(EVAL, want))
    if shifted:
        from ..data.domain_shift import EPISODES_PER_FOLD

        episodes = EPISODES_PER_FOLD
    else:
        episodes = protocol_episodes(benchmark, fold, config["protocol"], "test", values.get("splits"))
    detail = f"{episodes} episodes at {speed.timed('pascal' if shifted else benchmark, want['bsz'])}"
    return JobEstimate(job.id, episodes / speed.per_second / 3600.0, detail, (speed,))


def estimate_plan(jobs: Sequence[Job], records: Iterable[dict] = (), reference: Sequence[Speed] | None = None):
    """Every job's estimate; the user's bench records (``records``) before the reference speeds."""
    from .plan import PENDING

    speeds = own_speeds(records) + list(reference_speeds() if reference is None else reference)
    return PlanEstimate(
        tuple(estimate_job(job, speeds) for job in jobs),
        frozenset(job.id for job in jobs if job.state == PENDING),
    )

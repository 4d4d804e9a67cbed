"""The plan of a sweep: the jobs that the empty cells of one of the paper's tables need, and which are done.

:func:`build_plan` reads the table's claimed rows (:mod:`hmrepro.reporting.claimed`; the rows the HM authors ran,
``takes_records``) and turns them into jobs, pure data with no printing:

- ``train``: one run per (model, backbone, training benchmark, fold, seed) with the row's recipe and its
  ``overrides`` column (``key=value;...``: training keys → ``--key value``, model arguments → ``--model-args``,
  test-time options → the evaluation's flags; :func:`row_argv`), into ``SWEEP/runs/<name>``;
- ``eval`` (``domain-shift`` for Table 4): one per fold and shot of each trained run (*reproduced* cells), and
  one per fold and shot with ``--weights official`` (*verified* cells, rows whose checkpoint was published),
  after a ``download`` of the authors' checkpoints;
- ``bench`` (Table 7): one per model family and backbone, timing its FM and HM variants together.

Every HM row brings its baseline (the family's FM model, e.g. ``hsnet`` for ``hsnet-hm``, with the recipe's own
settings) unless the table has a row of that model itself (Table 1's HSNet*), so that HM can be compared with a
baseline trained the same way.

Idempotence: an evaluation is *done* when a record exists that fills its cell by the tables' own rule
(:func:`hmrepro.reporting.tables.matching_records` and :func:`~hmrepro.reporting.tables.cell_records`: right
model, backbone, benchmark, shot, origin and fold, full protocol); with several ``seeds`` the record must also
name the run folder it evaluated. A training run is *done* when its ``run.json`` says finished (or
early-stopped), or when every evaluation that needs it is done (nothing depends on re-running it); one whose
folder holds ``config.json`` is continued with ``--resume`` (from ``last.pt`` when there is one). A download is
done when every evaluation that needs it is. Commands are the exact ``hmrepro …`` argv lists; paths in them
are absolute, so that they run the same on any node.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

from ..errors import HmreproError

__all__ = [
    "CELL_KINDS",
    "DONE",
    "KINDS",
    "PENDING",
    "Job",
    "SweepSpec",
    "build_plan",
    "current_command",
    "dependents",
    "parse_key_values",
    "process_argv",
    "run_folder_name",
]

KINDS = ("download", "train", "eval", "domain-shift", "bench")
CELL_KINDS = ("verified", "reproduced")
DONE, PENDING = "done", "pending"
FINISHED_RUN_STATUSES = ("finished", "early-stopped")
RUNS = "runs"
FOLDS = (0, 1, 2, 3)
SHOTS_OF_BENCH = 1  # Table 7 times 1-shot inference


@dataclass(frozen=True)
class SweepSpec:
    """What a sweep covers and where it writes; every path absolute (the CLI resolves them)."""

    table: int
    sweep_dir: Path
    results: Path
    paper: str = "hm"
    backbones: tuple[str, ...] = ()  # empty: every backbone of the table
    models: tuple[str, ...] = ()  # empty: every row; else the rows of these models (with their baselines)
    seeds: tuple[int, ...] = (0,)
    cells: tuple[str, ...] = CELL_KINDS
    data_root: Path | None = None
    splits: Path | None = None
    train_overrides: tuple[tuple[str, str], ...] = ()  # after the row's overrides, on every training
    eval_overrides: tuple[tuple[str, str], ...] = ()  # on every eval / domain-shift
    claimed_folder: Path | None = None


@dataclass(frozen=True)
class Job:
    """One unit of work: an exact ``hmrepro …`` command and the jobs it needs first."""

    id: str
    kind: str
    command: tuple[str, ...]
    depends_on: tuple[str, ...] = ()
    state: str = PENDING
    run_dir: str | None = None  # train: its run folder; eval: the run folder it evaluates
    cells: tuple[str, ...] = ()  # the table cells it fills, e.g. "HSNet-HM resnet50 1-shot: reproduced fold0"
    note: str = ""

    def as_dict(self) -> dict:
        out = asdict(self)
        for key in ("command", "depends_on", "cells"):
            out[key] = list(out[key])
        return out


# ---------------------------------------------------------------------------------------------------------------
# Small pieces
# ---------------------------------------------------------------------------------------------------------------


def parse_key_values(text: str | Iterable[str], where: str) -> tuple[tuple[str, str], ...]:
    """``"augment=cats;bsz=20"`` (or a list of ``key=value``) → ``(("augment", "cats"), ("bsz", "20"))``."""
    items = text.split(";") if isinstance(text, str) else list(text)
    pairs = []
    for item in (i.strip() for i in items):
        if not item:
            continue
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not re.fullmatch(r"[a-z][a-z0-9_-]*", key):
            raise HmreproError(f"{where}: {item!r} is not key=value (e.g. augment=cats, epochs=100, pretrained=false)")
        pairs.append((key, value.strip()))
    return tuple(pairs)


def override_argv(pairs: Iterable[tuple[str, str]]) -> list[str]:
    """``(("img_size", "64"), ("pretrained", "false"))`` → ``["--img-size", "64", "--no-pretrained"]``."""
    argv: list[str] = []
    for key, value in pairs:
        flag = key.replace("_", "-")
        lowered = value.lower()
        if lowered in ("true", "yes", "on"):
            argv.append(f"--{flag}")
        elif lowered in ("false", "no", "off"):
            argv.append(f"--no-{flag}")
        else:
            argv += [f"--{flag}", value]
    return argv


MULTI_SCALES = (0.75, 1.0, 1.25)  # what `hmrepro eval --multi-scale` tests at (CRCNet's paper)
TEST_TIME_KEYS = ("scales", "kshot")  # overrides that only the evaluation reads


def row_argv(pairs: Iterable[tuple[str, str]], where: str) -> tuple[list[str], list[str]]:
    """A claimed row's overrides as (training argv, evaluation argv).

    Test-time options go to the evaluation (``scales=0.75,1,1.25`` → ``--multi-scale``, ``scales=1`` →
    ``--single-scale``, ``kshot=M`` → ``--kshot M``); keys of the training configuration go to the training as
    ``--key value`` (:func:`override_argv`); every other key is a constructor argument of the model, passed as one
    ``--model-args "k=v;..."`` (evaluation builds the model from the run's saved configuration).
    """
    from ..engine.training.train_config import TrainConfig

    training_keys = {f.name for f in fields(TrainConfig)}
    train: list[tuple[str, str]] = []
    model_args: list[str] = []
    evaluation: list[str] = []
    for key, value in pairs:
        if key == "scales":
            evaluation.append(_scales_flag(value, where))
        elif key == "kshot":  # the other test-time key
            evaluation += ["--kshot", value]
        elif key in training_keys:
            train.append((key, value))
        else:
            model_args.append(f"{key}={value}")
    argv = override_argv(train) + (["--model-args", ";".join(model_args)] if model_args else [])
    return argv, evaluation


def _scales_flag(value: str, where: str) -> str:
    try:
        scales = tuple(float(v) for v in value.split(","))
    except ValueError:
        scales = ()
    if scales == (1.0,):
        return "--single-scale"
    if scales == MULTI_SCALES:
        return "--multi-scale"
    raise HmreproError(
        f"{where}: scales={value} is not a test-time setting hmrepro can run; "
        f"use scales=1 or scales={','.join(f'{s:g}' for s in MULTI_SCALES)}"
    )


def _slug(pairs: Iterable[tuple[str, str]]) -> str:
    return "_".join(re.sub(r"[^A-Za-z0-9.+-]+", "-", f"{k}-{v}") for k, v in pairs)


def run_folder_name(model: str, backbone: str, benchmark: str, fold: int, seed: int, overrides=()) -> str:
    """``hsnet-hm_resnet50_coco_fold0_seed0`` (``_augment-cats`` appended for a row's overrides)."""
    name = f"{model}_{backbone}_{benchmark}_fold{fold}_seed{seed}"
    slug = _slug(overrides)
    return f"{name}_{slug}" if slug else name


def current_command(job: Job) -> tuple[str, ...]:
    """The command to start ``job`` with now: a training whose folder already holds a run resumes it
    (``--out DIR`` becomes ``--resume DIR``: the rest of the argv equals the saved configuration)."""
    from ..engine.runs import is_run_dir

    command = list(job.command)
    if job.kind == "train" and job.run_dir and is_run_dir(Path(job.run_dir)) and "--out" in command:
        command[command.index("--out")] = "--resume"
    return tuple(command)


def process_argv(command: Sequence[str], *, gpus: int = 1, python: str = "python") -> list[str]:
    """The process that runs a plan command: ``python -m hmrepro …``; a training on several GPUs under torchrun
    (``python -m torch.distributed.run --standalone --nproc_per_node G -m hmrepro train …``, one DDP process per
    GPU; ``--bsz`` stays the global batch)."""
    rest = list(command[1:]) if command and command[0] == "hmrepro" else list(command)
    if gpus > 1 and rest[:1] == ["train"]:
        return [
            python,
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc_per_node={gpus}",
            "-m",
            "hmrepro",
            *rest,
        ]
    return [python, "-m", "hmrepro", *rest]


def dependents(jobs: Sequence[Job]) -> dict[str, list[str]]:
    """Job id → ids of the jobs that depend on it."""
    out: dict[str, list[str]] = {job.id: [] for job in jobs}
    for job in jobs:
        for dep in job.depends_on:
            out.setdefault(dep, []).append(job.id)
    return out


def _run_status(run_dir: Path) -> tuple[str | None, bool]:
    """(run.json's status or None, whether last.pt exists)."""
    from ..engine import runs
    from .folder import MAX_STATE_BYTES, read_state_file

    info, _ = read_state_file(run_dir / runs.RUN_INFO, MAX_STATE_BYTES)  # a FIFO, a list, deep nesting: no status
    status = info.get("status") if isinstance(info, dict) else None
    return (status if isinstance(status, str) else None), (run_dir / runs.LAST).is_file()


def _same_path(a, b) -> bool:
    if not a or not b:
        return False
    return Path(str(a)).expanduser().resolve() == Path(str(b)).expanduser().resolve()


# ---------------------------------------------------------------------------------------------------------------
# The plan
# ---------------------------------------------------------------------------------------------------------------


def load_rows(spec: SweepSpec):
    """The claimed rows of ``spec.paper``'s table ``spec.table`` (:func:`hmrepro.reporting.claimed.load_claimed`)."""
    from ..reporting.claimed import load_claimed

    return load_claimed(spec.table, spec.claimed_folder, paper=spec.paper)


def build_plan(spec: SweepSpec, records: list[dict] | None = None, problems: list[str] | None = None) -> list[Job]:
    """Every job of ``spec``'s table in dependency order, each with its state (done / pending) from the records
    below ``spec.results`` (or ``records``) and the run folders below ``spec.sweep_dir``. A record file that fails
    validation counts for no job (one line naming it is appended to ``problems``)."""
    from ..engine.records import read_records

    unknown = sorted(set(spec.cells) - set(CELL_KINDS))
    if unknown:
        raise HmreproError(f"--cells {','.join(unknown)}: choose among {', '.join(CELL_KINDS)}")
    if records is None:
        records = list(read_records(spec.results, problems)) if Path(spec.results).is_dir() else []
    builder = _Builder(spec, records)
    for _, row in load_rows(spec).iterrows():
        builder.add_row(row)
    return builder.finish()


class _Builder:
    """Collects the jobs of a table's rows (merging those two rows share) and settles their states."""

    def __init__(self, spec: SweepSpec, records: list[dict]) -> None:
        self.spec = spec
        self.records = records
        self.jobs: dict[str, Job] = {}
        self.rows = None

    # --- rows ------------------------------------------------------------------------------------------------

    def add_row(self, row) -> None:
        from ..reporting.tables import row_kind, takes_records

        if not takes_records(row) or (
            self.spec.backbones and row["backbone"] and row["backbone"] not in self.spec.backbones
        ):
            return
        if self.spec.models and row["model"] not in self._selected_models():
            return
        if row_kind(row) == "bench":
            self._bench(row)
            return
        for variant in (row, self._baseline(row)):
            if variant is None:
                continue
            if "reproduced" in self.spec.cells and row["recipe"]:
                self._reproduced(variant)
            if "verified" in self.spec.cells and bool(variant["official_checkpoint"]):
                self._verified(variant)

    def _selected_models(self) -> set[str]:
        """``spec.models`` and their baselines (the family's FM model)."""
        from ..models.cards import card_of

        selected = set(self.spec.models)
        for model in self.spec.models:
            try:
                selected.add(card_of(model).family)
            except HmreproError:
                pass
        return selected

    def _baseline(self, row):
        """The row's baseline as a row of its own: the family's FM model, the recipe's settings (None if the row is
        the baseline, or the table has a row of the baseline model that takes records, for the same backbone,
        benchmark and shot: HSNet* of Table 1, or a quoted baseline row that names its model)."""
        from ..models.cards import card_of
        from ..reporting.tables import takes_records

        try:
            family = card_of(row["model"]).family
        except HmreproError:
            return None
        if family == row["model"]:
            return None
        if self.rows is None:
            self.rows = load_rows(self.spec)
        own = self.rows[
            (self.rows["model"] == family)
            & (self.rows["backbone"] == row["backbone"])
            & (self.rows["benchmark"] == row["benchmark"])
            & (self.rows["shot"] == row["shot"])
        ]
        if any(takes_records(r) for _, r in own.iterrows()):
            return None
        base = row.copy()
        base["model"], base["masking"] = family, ""
        base["method"] = f"{family} (baseline of {row['method']})"
        base["overrides"], base["official_checkpoint"] = "", False
        return base

    def _folds(self, row) -> tuple[int, ...]:
        from ..reporting.tables import SINGLE_SPLIT_BENCHMARKS

        return (0,) if row["benchmark"] in SINGLE_SPLIT_BENCHMARKS else FOLDS

    def _column(self, row, fold: int) -> str:
        from ..reporting.claimed import FOLD_COLUMNS
        from ..reporting.tables import SINGLE_SPLIT_BENCHMARKS

        return "miou" if row["benchmark"] in SINGLE_SPLIT_BENCHMARKS else FOLD_COLUMNS[fold]

    def _cell(self, row, prefix: str, fold: int) -> str:
        text = f"{row['method']} {row['backbone'] or ''} {int(row['shot'])}-shot: {prefix} {self._column(row, fold)}"
        return text.replace("  ", " ")

    def _filled(self, row, origin: str, fold: int, run_dir: str | None = None) -> bool:
        """Whether a record fills ``row``'s cell of ``fold`` for ``origin`` (of ``run_dir`` when given)."""
        from ..reporting.tables import cell_records, matching_records

        matched = matching_records(row, self.records, [origin])
        if run_dir is not None:
            matched = [r for r in matched if _same_path(r.get("run_dir"), run_dir)]
        return self._column(row, fold) in cell_records(row, matched)

    # --- jobs ------------------------------------------------------------------------------------------------

    def _data_args(self) -> list[str]:
        args = []
        if self.spec.data_root:
            args += ["--data-root", str(self.spec.data_root)]
        if self.spec.splits:
            args += ["--splits", str(self.spec.splits)]
        return args

    def _eval_kind(self, row) -> str:
        from ..reporting.tables import row_kind

        return row_kind(row)

    def _reproduced(self, row) -> None:
        where = f"claimed table {self.spec.table}, {row['method']}: overrides"
        overrides = parse_key_values(row["overrides"], where)
        train_argv, _ = row_argv(overrides, where)
        trained_with = tuple((k, v) for k, v in overrides if k not in TEST_TIME_KEYS)  # one training serves them all
        trained_on = row["trained_on"] or row["benchmark"]
        for fold in self._folds(row):
            for seed in self.spec.seeds:
                name = run_folder_name(row["model"], row["backbone"], trained_on, fold, seed, trained_with)
                run_dir = str(Path(self.spec.sweep_dir) / RUNS / name)
                train = self._add(
                    Job(
                        id=f"train_{name}",
                        kind="train",
                        run_dir=run_dir,
                        command=(
                            "hmrepro",
                            "train",
                            row["model"],
                            "--benchmark",
                            trained_on,
                            "--fold",
                            str(fold),
                            "--backbone",
                            row["backbone"],
                            "--seed",
                            str(seed),
                            *train_argv,
                            *override_argv(self.spec.train_overrides),
                            *self._data_args(),
                            "--no-progress",
                            "--out",
                            run_dir,
                        ),
                    )
                )
                exact = run_dir if len(self.spec.seeds) > 1 else None
                done = self._filled(row, "own", fold, exact)
                self._add(
                    self._evaluation(
                        row,
                        fold,
                        run_dir,
                        f"seed{seed}" + (f"_{_slug(overrides)}" if overrides else ""),
                        depends_on=train.id,
                        prefix="reproduced",
                        done=done,
                    )
                )

    def _verified(self, row) -> None:
        trained_on = row["trained_on"] or row["benchmark"]
        download = self._add(
            Job(
                id=f"download_{row['model']}_{trained_on}",
                kind="download",
                command=(
                    "hmrepro",
                    "download",
                    "checkpoints",
                    "--model",
                    row["model"],
                    "--benchmark",
                    trained_on,
                    *(["--data-root", str(self.spec.data_root)] if self.spec.data_root else []),
                    "--quiet",
                ),
            )
        )
        for fold in self._folds(row):
            done = self._filled(row, "official", fold)
            self._add(
                self._evaluation(
                    row, fold, "official", "official", depends_on=download.id, prefix="verified", done=done
                )
            )

    def _row_eval_argv(self, row) -> list[str]:
        """The test-time options the row's overrides name (its eval flags)."""
        where = f"claimed table {self.spec.table}, {row['method']}: overrides"
        return row_argv(parse_key_values(row["overrides"] or "", where), where)[1]

    def _evaluation(self, row, fold: int, weights: str, tag: str, *, depends_on: str, prefix: str, done: bool) -> Job:
        kind = self._eval_kind(row)
        shot = int(row["shot"])
        command = ["hmrepro", kind, row["model"]]
        if kind == "eval":
            command += ["--benchmark", row["benchmark"]]
        command += [
            "--fold",
            str(fold),
            "--shot",
            str(shot),
            "--backbone",
            row["backbone"],
            "--weights",
            weights,
            "--results",
            str(self.spec.results),
            *self._data_args(),
            *self._row_eval_argv(row),
            *override_argv(self.spec.eval_overrides),
            "--no-progress",
        ]
        return Job(
            id=f"{kind}_{row['model']}_{row['backbone']}_{row['benchmark']}_fold{fold}_{shot}shot_{tag}",
            kind=kind,
            command=tuple(command),
            depends_on=(depends_on,),
            state=DONE if done else PENDING,
            run_dir=None if weights == "official" else weights,
            cells=(self._cell(row, prefix, fold),),
        )

    def _bench(self, row) -> None:
        from ..models.cards import card_of
        from ..reporting.tables import MEASURED, row_cells

        family = card_of(row["model"]).family
        backbone = row["backbone"] or "resnet50"
        done = bool(row_cells(row, self.records)[MEASURED])
        job = Job(
            id=f"bench_{family}_{backbone}",
            kind="bench",
            state=DONE if done else PENDING,
            command=(
                "hmrepro",
                "bench",
                "--model",
                family,
                "--backbone",
                backbone,
                "--results",
                str(self.spec.results),
            ),
            cells=(f"{row['method']}: measured secs_per_image",),
        )
        self._add(job)

    def _add(self, job: Job) -> Job:
        previous = self.jobs.get(job.id)
        if previous is None:
            self.jobs[job.id] = job
            return job
        merged = replace(previous, cells=previous.cells + tuple(c for c in job.cells if c not in previous.cells))
        if job.state != previous.state:  # a bench times several rows: done only when every row has its record
            merged = replace(merged, state=PENDING)
        self.jobs[job.id] = merged
        return merged

    # --- states ----------------------------------------------------------------------------------------------

    def finish(self) -> list[Job]:
        """Settle the states of trainings and downloads from their dependents and run folders; dependency order."""
        jobs = list(self.jobs.values())
        needed_by = dependents(jobs)
        by_id = {job.id: job for job in jobs}
        for job in jobs:
            if job.kind not in ("train", "download"):
                continue
            users = [by_id[i] for i in needed_by.get(job.id, [])]
            settled = _settle(job, users)
            by_id[job.id] = settled
        order = {"download": 0, "train": 1, "bench": 2, "eval": 3, "domain-shift": 3}
        return sorted(by_id.values(), key=lambda j: order[j.kind])


def _settle(job: Job, users: list[Job]) -> Job:
    """A training's or a download's state and note: done when finished, or when nothing needs it any more."""
    if users and all(u.state == DONE for u in users):
        return replace(job, state=DONE, note="not needed: every evaluation of it has its record")
    if job.kind == "download":
        return job
    status, has_last = _run_status(Path(job.run_dir))
    if status in FINISHED_RUN_STATUSES and (Path(job.run_dir) / "best_model.pt").is_file():
        return replace(job, state=DONE, note=f"run {status}")
    if has_last:
        return replace(job, note="resumes from last.pt")
    from ..engine.runs import is_run_dir

    if is_run_dir(Path(job.run_dir)):
        return replace(job, note="resumes its run folder (no checkpoint yet)")
    return job

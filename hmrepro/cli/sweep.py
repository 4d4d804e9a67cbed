"""``hmrepro sweep plan|run|status table N``: the jobs a table needs, run here or on SLURM, and where they stand."""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

import typer

from ..safetext import safe_markup
from .common import (
    DataRootOption,
    SplitsOption,
    console,
    fail,
    option_group,
    optional_option,
    plain,
    say,
)

app = typer.Typer(
    help="Reproduce a whole table: the trainings, evaluations, downloads and timings its empty cells need, run on "
    "this machine or submitted to SLURM through submitit, resumable at any point.\n\n"
    "Example: [bold]hmrepro sweep plan table 2 --backbone resnet50[/], then [bold]hmrepro sweep run table 2 "
    "--launcher slurm --gpus-per-job 4 --partition gpu[/] and [bold]hmrepro sweep status table 2[/]",
    no_args_is_help=True,
)

CELLS = ("verified", "reproduced")


class Target(str, Enum):
    table = "table"


class Launcher(str, Enum):
    local = "local"
    slurm = "slurm"


TargetArgument = typer.Argument(..., metavar="table", help="What to fill: a table of the paper.", show_default=False)
NumberArgument = typer.Argument(
    ..., metavar="N", help="Table number: HM 1-7; CRCNet 1-9, 11-15; MCE 1-4.", show_default=False
)
PaperOption = typer.Option(
    "hm", "--paper", help="Whose table: hm (the HM paper), crcnet or mce (claimed numbers in recipes/claimed/<paper>/)."
)
ModelOption = optional_option(
    "--model", help="Only rows of this model, e.g. hsnet-hm, with their baselines (repeatable) [default: every row]."
)
BackboneOption = optional_option(
    "--backbone", help="Only rows of this backbone (repeatable) [default: every backbone of the table]."
)
SeedsOption = typer.Option(
    "0", "--seeds", help="Training seeds, comma-separated: one training run per seed (e.g. 0,1,2)."
)
CellsOption = typer.Option(
    "verified,reproduced",
    "--cells",
    help="Which cells: verified (official checkpoints), reproduced (own training), or both.",
)
ResultsOption = typer.Option(
    Path("results"), "--results", envvar="HMREPRO_RESULTS", help="Folder of the result records (read and written)."
)
SweepDirOption = optional_option(
    "--sweep-dir",
    help="Folder of the sweep's run folders, logs and SLURM files, shared by a paper's tables "
    "(Table 4 uses Table 2's COCO runs) [default: sweeps/<paper>].",
)
TrainOverrideOption = optional_option(
    "--train-override",
    metavar="KEY=VALUE",
    help="A training setting for every run, after the row's own overrides, e.g. patience=100, amp=bf16, workers=8 "
    "(repeatable; KEY is a `hmrepro train` option; true/false for switches) [default: none].",
)
EvalOverrideOption = optional_option(
    "--eval-override",
    metavar="KEY=VALUE",
    help="An evaluation setting for every eval/domain-shift, e.g. workers=4 "
    "(repeatable; KEY is a `hmrepro eval` option) [default: none].",
)
JsonOption = typer.Option(False, "--json", help="Print the jobs as JSON on stdout.")
EstimateOption = typer.Option(
    False,
    "--estimate",
    help="Also the GPU-hours of each job and in total, from your `hmrepro bench train` / `bench eval` records in "
    "--results, else the speeds measured in this repository (recipes/bench_reference.csv, labelled as such).",
)


@dataclass
class SweepSelection:
    """The table and the options saying which of its jobs a sweep holds and where; plan, run and status take the
    same."""

    target: Target = TargetArgument
    number: int = NumberArgument
    paper: str = PaperOption
    model: list[str] | None = ModelOption
    backbone: list[str] | None = BackboneOption
    seeds: str = SeedsOption
    cells: str = CellsOption
    results: Path = ResultsOption
    sweep_dir: Path | None = SweepDirOption
    data_root: Path | None = DataRootOption
    splits: Path | None = SplitsOption
    train_override: list[str] | None = TrainOverrideOption
    eval_override: list[str] | None = EvalOverrideOption


def _spec(selection: SweepSelection):
    from ..errors import HmreproError
    from ..papers import PAPERS
    from ..sweep.plan import SweepSpec, parse_key_values

    number, paper, seeds, cells = selection.number, selection.paper, selection.seeds, selection.cells
    if paper not in PAPERS:
        raise typer.BadParameter(f"{paper!r} is not one of {', '.join(PAPERS)}", param_hint="--paper")
    if number not in PAPERS[paper].tables:
        allowed = ", ".join(map(str, PAPERS[paper].tables))
        raise typer.BadParameter(
            f"the {paper} paper has no table {number} with results; choose one of {allowed}", param_hint="'N'"
        )
    try:
        seed_list = tuple(int(s) for s in seeds.split(",") if s.strip())
    except ValueError:
        raise typer.BadParameter(
            f"{seeds!r} is not a comma-separated list of integers (e.g. 0,1,2)", param_hint="--seeds"
        ) from None
    cell_list = tuple(c.strip() for c in cells.split(",") if c.strip())
    wrong = [c for c in cell_list if c not in CELLS]
    if wrong or not cell_list:
        raise typer.BadParameter(f"{cells!r}: choose among {', '.join(CELLS)} (comma-separated)", param_hint="--cells")
    if not seed_list:
        raise typer.BadParameter("give at least one seed", param_hint="--seeds")
    try:
        train_pairs = parse_key_values(selection.train_override or [], "--train-override")
        eval_pairs = parse_key_values(selection.eval_override or [], "--eval-override")
    except HmreproError as err:
        raise typer.BadParameter(str(err)) from None
    sweep_dir = (selection.sweep_dir or Path("sweeps") / paper).expanduser().resolve()
    return SweepSpec(
        table=number,
        paper=paper,
        models=tuple(selection.model or ()),
        backbones=tuple(selection.backbone or ()),
        seeds=seed_list,
        cells=cell_list,
        results=selection.results.expanduser().resolve(),
        sweep_dir=sweep_dir,
        data_root=selection.data_root.expanduser().resolve() if selection.data_root else None,
        splits=selection.splits.expanduser().resolve() if selection.splits else None,
        train_overrides=train_pairs,
        eval_overrides=eval_pairs,
    )


def _plan(spec):
    from ..errors import HmreproError
    from ..sweep.plan import build_plan

    problems: list[str] = []
    try:
        jobs = build_plan(spec, problems=problems)
    except HmreproError as err:
        fail(str(err))
    for line in problems:  # record files that count for no job
        console.print(f"[yellow]warning:[/] {safe_markup(line)}", highlight=False, soft_wrap=True)
    _check_override_keys(spec.train_overrides, {"train"}, "--train-override")
    evaluations = {job.kind for job in jobs if job.kind in ("eval", "domain-shift")} or {"eval"}
    _check_override_keys(spec.eval_overrides, evaluations, "--eval-override")
    return jobs


def _check_override_keys(pairs, commands: set[str], option: str) -> None:
    """Refuse, now, an override the jobs' ``hmrepro <command>`` has no option for: it would fail hours later on
    the cluster. Override keys become options (``img_size=64`` → ``--img-size 64``, ``pretrained=false`` →
    ``--no-pretrained``)."""
    for command in sorted(commands):
        known = _option_keys(command)
        unknown = [key for key, _ in pairs if key.replace("-", "_") not in known]
        if unknown:
            raise typer.BadParameter(
                f"`hmrepro {command}` has no option {', '.join(repr(k) for k in unknown)}; known keys: "
                f"{', '.join(sorted(known))}",
                param_hint=option,
            )


def _option_keys(command: str) -> set[str]:
    """The override keys ``hmrepro <command>`` takes: its ``--long-option`` names, with ``_`` for ``-``."""
    import typer.main

    from .app import build_app

    params = typer.main.get_command(build_app()).commands[command].params
    names = {opt[2:] for param in params for opt in param.opts if opt.startswith("--")}
    return {name.replace("-", "_") for name in names} - {"help"}


def _summary(jobs) -> str:
    from collections import Counter

    counts = Counter((job.kind, job.state) for job in jobs)
    kinds = dict.fromkeys(job.kind for job in jobs)
    parts = []
    for kind in kinds:
        total = sum(n for (k, _), n in counts.items() if k == kind)
        parts.append(f"{kind} {counts[(kind, 'done')]}/{total} done")
    return ", ".join(parts) if parts else "no jobs (no row of this table is run by its authors with an hmrepro model)"


@app.command("plan")
@option_group("selection", SweepSelection)
def plan(
    *,
    selection: SweepSelection,
    as_json: bool = JsonOption,
    estimate: bool = EstimateOption,
) -> None:
    """List the jobs that the empty cells of table N need, and which are done.

    Trainings (model x backbone x fold x seed, with the row's recipe and overrides, baselines too) and their 1- and
    5-shot evaluations (domain-shift for Table 4); checkpoint downloads and the verified evaluations; bench for
    Table 7. A job whose record fills its cell is done; a training whose folder holds last.pt resumes. Nothing runs.

    Example: [bold]hmrepro sweep plan table 2 --json > plan.json[/]

    Example: [bold]hmrepro sweep plan table 1 --backbone resnet50 --cells reproduced --seeds 0,1,2[/]

    Example: [bold]hmrepro sweep plan table 2 --estimate[/] (GPU-hours per job and in total)
    """
    from rich.table import Table

    spec = _spec(selection)
    jobs = _plan(spec)
    costs = _estimate(spec, jobs) if estimate else None
    if as_json:
        typer.echo(json.dumps([_job_json(job, costs) for job in jobs], indent=2))
        return
    view = Table(title=f"sweep of table {spec.table} ({spec.paper}): {spec.sweep_dir}")
    for column in ("job", "kind", "state", "needs", "note", *(("GPU-h", "estimate") if costs else ())):
        view.add_column(column, overflow="fold")
    for job in jobs:
        view.add_row(job.id, job.kind, job.state, ", ".join(job.depends_on), job.note, *_estimate_cells(job, costs))
    console.print(view)
    console.print(_summary(jobs), highlight=False)
    if costs:
        _print_estimate(costs)


def _estimate(spec, jobs):
    """The plan's cost (:func:`hmrepro.sweep.estimate.estimate_plan`) from the bench records in --results."""
    from ..engine.records import read_records
    from ..errors import HmreproError
    from ..sweep.estimate import estimate_plan

    records = list(read_records(spec.results)) if spec.results.is_dir() else []
    try:
        return estimate_plan(jobs, records)
    except HmreproError as err:
        fail(str(err))


def _hours(hours: float) -> str:
    return f"{hours:,.0f}" if hours >= 100 else f"{hours:.3g}"


def _estimate_cells(job, costs) -> tuple[str, ...]:
    if costs is None:
        return ()
    cost = costs.of(job.id)
    if job.state == "done":
        return ("done", "")
    return (_hours(cost.hours) if cost.measured else "-", cost.detail)


def _job_json(job, costs) -> dict:
    out = job.as_dict()
    if costs is not None:
        cost = costs.of(job.id)
        out["estimate"] = {
            "gpu_hours": cost.hours,
            "detail": cost.detail,
            "speeds": [{"source": s.label, "record": s.where} for s in cost.speeds],
        }
    return out


def _print_estimate(costs) -> None:
    """The total, where its speeds come from, and what it leaves out."""

    pending = costs.pending_gpu_jobs
    counted, unmeasured = len(costs.counted), len(costs.unmeasured)
    if not pending:
        console.print("estimate: no GPU job is pending", highlight=False)
        return
    console.print(
        f"[bold]estimate: {_hours(costs.total_hours)} GPU-hours[/] for {counted} of the {pending} pending GPU job(s); "
        f"{unmeasured} with no measurement, not in the total"
        + (
            " (`hmrepro bench train` / `hmrepro bench eval` on your device, into --results, fill them)"
            if unmeasured
            else ""
        ),
        highlight=False,
        soft_wrap=True,
    )
    for label, count in costs.sources.items():
        console.print(f"speeds: {safe_markup(label)} ({count} job(s))", highlight=False, soft_wrap=True)
    epochs = (
        "trainings with a patience stop early: their hours are an upper bound"
        if costs.patience_bounded
        else "trainings run every epoch of their recipe (patience 0, as the authors: the best checkpoint is kept); "
        "with --train-override patience=N they may stop earlier"
    )
    console.print(
        f"epochs: {epochs}. Training iterations exclude data loading (bench train); validation and evaluation run at "
        "the bench eval speed named in each job's estimate (timed on another benchmark or batch: it says so). One GPU "
        "per job; a training that resumes counts in full.",
        highlight=False,
        soft_wrap=True,
    )


@app.command("run")
@option_group("selection", SweepSelection)
def run(
    launcher: Launcher = typer.Option(
        Launcher.local, "--launcher", help="local: this machine, in dependency order; slurm: submit through submitit."
    ),
    *,
    selection: SweepSelection,
    parallel: str = typer.Option(
        "auto", "--parallel", help="local: jobs at a time; auto = one per visible GPU (one without a GPU)."
    ),
    gpus_per_job: int = typer.Option(
        1,
        "--gpus-per-job",
        min=1,
        help="slurm: GPUs of each training job (one node, torchrun DDP; --bsz stays global).",
    ),
    cpus_per_gpu: int = typer.Option(8, "--cpus-per-gpu", min=1, help="slurm: CPU cores per GPU (DataLoader workers)."),
    partition: str | None = optional_option("--partition", help="slurm: partition [default: the cluster's]."),
    account: str | None = optional_option("--account", help="slurm: account to charge [default: yours]."),
    qos: str | None = optional_option("--qos", help="slurm: quality of service [default: the cluster's]."),
    constraint: str | None = optional_option("--constraint", help="slurm: node features, e.g. a100 [default: none]."),
    mem: str | None = optional_option("--mem", help="slurm: memory per node, e.g. 64G [default: the cluster's]."),
    time_min: int = typer.Option(
        24 * 60,
        "--time",
        min=10,
        help="slurm: time limit of a training job in minutes; it requeues itself and resumes when it runs out.",
    ),
    eval_time_min: int = typer.Option(
        4 * 60, "--eval-time", min=10, help="slurm: time limit of the other jobs in minutes."
    ),
    max_requeues: int = typer.Option(
        20, "--max-requeues", min=0, help="slurm: time-outs after which a training is given up."
    ),
    setup: list[str] | None = optional_option(
        "--setup",
        help="slurm: shell line run before each job, e.g. 'source .venv/bin/activate' (repeatable) [default: none].",
    ),
    slurm_arg: list[str] | None = optional_option(
        "--slurm-arg",
        metavar="KEY=VALUE",
        help="slurm: any other sbatch option, e.g. mail-type=END (repeatable) [default: none].",
    ),
) -> None:
    """Run the jobs of table N that are not done: here, or submitted to SLURM.

    local: in dependency order, one job at a time or one per visible GPU; logs in SWEEP/logs/. A failed job blocks
    only the jobs that need it. Ctrl-C stops the running jobs cleanly (a training saves last.pt); run the same command
    again to continue: done jobs are skipped and stopped trainings resume.

    slurm: one job per training on --gpus-per-job GPUs under torchrun, requeued with its checkpoint when it reaches
    --time or is preempted; evaluations as job arrays after their training (afterok); logs in SWEEP/slurm/. Run it
    again after anything went wrong: jobs still queued or running are left alone, only the missing ones are submitted.

    Example: [bold]hmrepro sweep run table 3 --launcher local --data-root ~/data[/]

    Example:
    [bold]hmrepro sweep run table 2 --launcher slurm --partition gpu --time 1440 --setup 'source .venv/bin/activate'[/]
    """
    from ..errors import HmreproError
    from ..sweep.folder import SweepFolder
    from ..sweep.plan import parse_key_values

    spec = _spec(selection)
    try:
        extra = parse_key_values(slurm_arg or [], "--slurm-arg")
    except HmreproError as err:
        raise typer.BadParameter(str(err), param_hint="--slurm-arg") from None
    slots = _slots(parallel) if launcher is Launcher.local else []
    jobs = _plan(spec)
    folder = SweepFolder(spec.sweep_dir)
    todo = [job for job in jobs if job.state != "done"]
    say(f"table {spec.table}: {_summary(jobs)}; {len(todo)} job(s) to run; sweep folder {spec.sweep_dir}")
    if not todo:
        return
    if launcher is Launcher.local:
        _run_local(spec, todo, jobs, folder, slots)
        return
    from ..sweep.slurm import SlurmOptions

    options = SlurmOptions(
        gpus_per_job=gpus_per_job,
        cpus_per_gpu=cpus_per_gpu,
        partition=partition,
        account=account,
        qos=qos,
        constraint=constraint,
        mem=mem,
        train_time_min=time_min,
        eval_time_min=eval_time_min,
        max_requeues=max_requeues,
        setup=tuple(setup or ()),
        extra=extra,
    )
    _run_slurm(jobs, folder, options)


def _slots(parallel: str) -> list:
    from ..sweep.local import visible_gpus

    gpus = visible_gpus()
    if parallel == "auto":
        return list(gpus) or [None]
    if not parallel.isdigit() or int(parallel) < 1:
        raise typer.BadParameter(
            f"{parallel!r}: give auto or a number of jobs at a time (1, 2, ...)", param_hint="--parallel"
        )
    count = int(parallel)
    return [gpus[i % len(gpus)] for i in range(count)] if gpus else [None] * count


def _run_local(spec, todo, jobs, folder, slots) -> None:
    from ..sweep.local import LocalEvent, run_local
    from ..sweep.plan import build_plan

    def fills(job) -> bool:  # the plan again, from the records now on disk
        if job.kind in ("train", "download"):
            return True
        return next((j.state == "done" for j in build_plan(spec) if j.id == job.id), True)

    position = {job.id: i + 1 for i, job in enumerate(todo)}

    def show(event: LocalEvent) -> None:
        tag = safe_markup(f"[{position[event.job.id]}/{len(todo)}] {event.job.id}")
        if event.what == "start":
            console.print(f"{tag}: started{f' on GPU {event.gpu}' if event.gpu is not None else ''}", highlight=False)
        elif event.what == "blocked":
            console.print(f"[yellow]{tag}: not run[/]: a job it needs failed", highlight=False)
        elif event.what == "stopped":
            console.print(
                f"[yellow]{tag}: stopped[/] (exit {event.returncode}); run the same command again to continue",
                highlight=False,
            )
        elif event.unfilled:
            console.print(
                f"[red]{tag}: finished, but no record fills its cell[/] "
                f"(`hmrepro table {spec.table} --all-records` says why)",
                highlight=False,
            )
        elif event.returncode == 0:
            console.print(f"[green]{tag}: done[/] in {event.seconds:.0f} s", highlight=False)
        else:
            console.print(
                f"[red]{tag}: failed[/] (exit {event.returncode}); log {safe_markup(folder.log_path(event.job.id))}",
                highlight=False,
                soft_wrap=True,
            )

    outcome = run_local(jobs, folder, gpus=slots, on_event=show, fills=fills)
    bad = [job_id for job_id, state in outcome.items() if state != "done"]
    if bad:
        console.print(
            f"[red]{len(bad)} job(s) not done[/]; see `hmrepro sweep status`, fix, and run the same command again",
            highlight=False,
        )
        raise typer.Exit(1)
    console.print(f"[green]all {len(outcome)} job(s) done[/]", highlight=False)


def _warn_state_problems(folder) -> None:
    """One warning line per sweep state file that could not be trusted (on stderr: ``--json`` stays clean)."""
    for line in folder.problems:
        console.print(f"[yellow]warning:[/] {safe_markup(line)}", highlight=False, soft_wrap=True)


def _run_slurm(jobs, folder, options) -> None:
    from ..errors import HmreproError
    from ..sweep.slurm import SlurmEvent, submit_plan

    def show(event: SlurmEvent) -> None:
        if event.what == "submitted":
            console.print(f"{event.job.id}: submitted as SLURM job {event.slurm_id}", highlight=False)
        elif event.what == "in-flight":
            console.print(
                f"{event.job.id}: already {event.state.lower()} as SLURM job {event.slurm_id}", highlight=False
            )
        elif event.what == "cancelled":
            console.print(
                f"{event.job.id}: cancelled SLURM job {event.slurm_id} (its dependency is submitted anew)",
                highlight=False,
            )
        else:
            console.print(
                f"[yellow]{event.job.id}: not submitted[/]: a job it needs was not submitted", highlight=False
            )

    try:
        submitted = submit_plan(jobs, folder, options, on_event=show)
    except HmreproError as err:
        fail(str(err))
    console.print(
        f"{len(submitted)} job(s) queued or running; follow them with `hmrepro sweep status`", highlight=False
    )


@app.command("status")
@option_group("selection", SweepSelection)
def status(
    *,
    selection: SweepSelection,
    show_table: bool = typer.Option(
        True, "--table/--no-table", help="Also show the table with the cells filled so far."
    ),
    as_json: bool = JsonOption,
) -> None:
    """Where each job of table N stands: done, running, queued, failed (with its log's last lines), blocked or
    pending; read from the records, the run folders, the local launcher's files and SLURM (sacct through submitit).
    Then the table itself, with the cells filled so far.

    Example: [bold]hmrepro sweep status table 2[/]
    (same --paper/--backbone/--seeds/--cells/--results/--sweep-dir as the run)
    """
    from rich.table import Table

    from ..sweep.folder import SweepFolder
    from ..sweep.status import job_statuses

    spec = _spec(selection)
    jobs = _plan(spec)
    folder = SweepFolder(spec.sweep_dir)
    statuses = job_statuses(jobs, folder)
    _warn_state_problems(folder)
    if as_json:
        typer.echo(json.dumps([s.as_dict() for s in statuses], indent=2))
        return
    view = Table(title=f"sweep of table {spec.table} ({spec.paper}): {spec.sweep_dir}")
    view.add_column("job", overflow="fold", min_width=min(60, max((len(s.job.id) for s in statuses), default=3)))
    for column in ("state", "where", "note"):
        view.add_column(column, overflow="fold")
    for s in statuses:
        if s.state != "done":
            view.add_row(*(plain(v) for v in (s.job.id, s.state, s.where, s.job.note)))
    if view.row_count:
        console.print(view)
    from collections import Counter

    counts = Counter(s.state for s in statuses)
    console.print(", ".join(f"{n} {state}" for state, n in counts.items()), highlight=False)
    cells_total = sum(len(s.job.cells) for s in statuses if s.job.kind in ("eval", "domain-shift", "bench"))
    cells_done = sum(
        len(s.job.cells) for s in statuses if s.job.kind in ("eval", "domain-shift", "bench") and s.state == "done"
    )
    console.print(f"cells filled: {cells_done} of {cells_total}", highlight=False)
    for s in statuses:
        if s.state == "failed" and s.tail:
            console.print(f"[red]{safe_markup(s.job.id)}[/] ({safe_markup(s.log)}):", highlight=False, soft_wrap=True)
            for line in s.tail:
                say(f"    {line}")
    if show_table:
        _show_table(spec)


def _show_table(spec) -> None:
    from ..errors import HmreproError
    from ..reporting.render import build_view, print_rich
    from ..reporting.tables import TableQuery, compare_table

    try:
        results = spec.results if spec.results.is_dir() else None
        frame = compare_table(TableQuery(spec.table, results, claimed_folder=spec.claimed_folder, paper=spec.paper))
    except HmreproError as err:
        console.print(f"[yellow]table not shown:[/] {safe_markup(err)}", highlight=False, soft_wrap=True)
        return
    print_rich(build_view(frame, spec.table, True))

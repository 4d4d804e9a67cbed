"""hmrepro sweep: the plan of a table, its idempotence, a local run that fills a tiny table (with a killed and
resumed training), and the SLURM path through submitit against a fake sbatch/srun/sacct/scancel on PATH."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import signal
import threading
import time
from pathlib import Path

import pytest
from engine_helpers import cli_env

from hmrepro.cli.app import run
from hmrepro.engine.records import write_record
from hmrepro.sweep.folder import SweepFolder
from hmrepro.sweep.plan import DONE, SweepSpec, build_plan, current_command

TABLE2_TRAINED = {  # Table 2's HM rows and their baselines, (model, backbone)
    *[(m, "resnet50") for m in ("hsnet-hm", "vat-hm", "asnet-hm", "hsnet", "vat", "asnet")],
    *[(m, "resnet101") for m in ("hsnet-hm", "asnet-hm", "hsnet", "asnet")],
}


def _spec(tmp_path: Path, table: int, **fields) -> SweepSpec:
    return SweepSpec(table=table, sweep_dir=tmp_path / "sweep", results=tmp_path / "results", **fields)


def _record(**fields) -> dict:
    record = dict(
        model="hsnet-hm",
        masking="hm",
        backbone="resnet50",
        benchmark="coco",
        fold=0,
        shot=1,
        miou=40.0,
        fb_iou=70.0,
        episodes=1000,
        total_episodes=1000,
        full_episode_set=True,
        protocol="hsnet",
        img_size=400,
        original_size=False,
        checkpoint_sha256=None,
        origin="own",
        git_commit=None,
        versions={},
        device="cpu",
        date="2026-01-01T00:00:00+00:00",
        secs_per_episode=0.1,
    )
    record.update(fields)
    return record


# --- the plan ----------------------------------------------------------------------------------------------


def test_plan_of_table2_on_empty_results_trains_every_model_backbone_fold_and_evaluates_1_and_5_shot(tmp_path, capsys):
    sweep, results = tmp_path / "sweep", tmp_path / "results"
    assert run(["sweep", "plan", "table", "2", "--json", "--sweep-dir", str(sweep), "--results", str(results)]) == 0
    jobs = json.loads(capsys.readouterr().out)
    assert all(set(job) >= {"id", "kind", "command", "depends_on", "state"} for job in jobs)
    assert all(job["state"] == "pending" for job in jobs)
    trains = [job for job in jobs if job["kind"] == "train"]
    keys = sorted(
        (
            j["command"][2],
            j["command"][j["command"].index("--backbone") + 1],
            j["command"][j["command"].index("--fold") + 1],
        )
        for j in trains
    )
    assert keys == sorted((m, b, str(f)) for m, b in TABLE2_TRAINED for f in range(4))  # one per model, backbone, fold
    by_id = {job["id"]: job for job in jobs}
    for train in trains:
        evals = [job for job in jobs if job["depends_on"] == [train["id"]]]
        assert sorted(int(e["command"][e["command"].index("--shot") + 1]) for e in evals) == [1, 5]
        for e in evals:
            assert e["command"][e["command"].index("--weights") + 1] == train["run_dir"]
    train = by_id["train_hsnet-hm_resnet50_coco_fold2_seed0"]
    run_dir = str(sweep.resolve() / "runs" / "hsnet-hm_resnet50_coco_fold2_seed0")
    assert train["command"] == [
        "hmrepro",
        "train",
        "hsnet-hm",
        "--benchmark",
        "coco",
        "--fold",
        "2",
        "--backbone",
        "resnet50",
        "--seed",
        "0",
        "--no-progress",
        "--out",
        run_dir,
    ]
    assert by_id["eval_hsnet-hm_resnet50_coco_fold2_5shot_seed0"]["command"] == [
        "hmrepro",
        "eval",
        "hsnet-hm",
        "--benchmark",
        "coco",
        "--fold",
        "2",
        "--shot",
        "5",
        "--backbone",
        "resnet50",
        "--weights",
        run_dir,
        "--results",
        str(results.resolve()),
        "--no-progress",
    ]
    # verified cells: the authors' checkpoints, downloaded once per model, then evaluated with --weights official,
    # for every fold and shot of the rows whose checkpoints were published (the HM rows among them)
    official = [job for job in jobs if job["id"].endswith("_official")]
    assert all(job["depends_on"] == [f"download_{job['command'][2]}_coco"] for job in official)
    published = sorted((m, b, f, k) for m, b in TABLE2_TRAINED if m.endswith("-hm") for f in range(4) for k in (1, 5))
    assert published == sorted(
        (job["command"][2], job["command"][10], int(job["command"][6]), int(job["command"][8]))
        for job in official
        if job["command"][2].endswith("-hm")
    )
    assert by_id["download_vat-hm_coco"]["command"] == [
        "hmrepro",
        "download",
        "checkpoints",
        "--model",
        "vat-hm",
        "--benchmark",
        "coco",
        "--quiet",
    ]


def test_plan_takes_the_rows_recipe_overrides_seeds_and_cells(tmp_path):
    jobs = build_plan(_spec(tmp_path, 1, backbones=("resnet50",), seeds=(0, 1), cells=("reproduced",)))
    trains = {job.id: job for job in jobs if job.kind == "train"}
    star = trains["train_hsnet_resnet50_pascal_fold3_seed1_augment-cats"]  # HSNet*: HSNet retrained with augment=cats
    assert star.command[star.command.index("--augment") + 1] == "cats"
    assert star.command[star.command.index("--seed") + 1] == "1"
    assert "--augment" not in trains["train_hsnet-hm_resnet50_pascal_fold3_seed1"].command
    # HSNet* is Table 1's own baseline of HSNet*-HM: no second hsnet run; VAT-HM brings its VAT baseline
    assert not any(i.startswith("train_hsnet_resnet50_pascal_fold0_seed0") and "augment" not in i for i in trains)
    assert "train_vat_resnet50_pascal_fold0_seed0" in trains
    assert len(trains) == 4 * 4 * 2 and not any(job.kind == "download" for job in jobs)


def test_jobs_whose_records_fill_their_cells_are_done_and_nothing_reruns_for_them(tmp_path):
    results = tmp_path / "results"
    run_dir = str(tmp_path / "sweep" / "runs" / "hsnet-hm_resnet50_coco_fold0_seed0")
    for shot in (1, 5):
        write_record(_record(shot=shot, run_dir=run_dir), results)
    write_record(_record(fold=1, shot=1), results)
    write_record(_record(fold=1, shot=5, episodes=50, full_episode_set=False), results)  # a quick check: fills nothing
    write_record(_record(fold=3, shot=5, origin="official"), results)
    jobs = {job.id: job for job in build_plan(_spec(tmp_path, 2, backbones=("resnet50",)))}
    assert jobs["eval_hsnet-hm_resnet50_coco_fold0_1shot_seed0"].state == DONE
    assert jobs["eval_hsnet-hm_resnet50_coco_fold0_5shot_seed0"].state == DONE
    assert jobs["train_hsnet-hm_resnet50_coco_fold0_seed0"].state == DONE  # nothing needs it any more
    assert jobs["eval_hsnet-hm_resnet50_coco_fold1_1shot_seed0"].state == DONE
    assert jobs["eval_hsnet-hm_resnet50_coco_fold1_5shot_seed0"].state == "pending"
    assert jobs["train_hsnet-hm_resnet50_coco_fold1_seed0"].state == "pending"  # its 5-shot evaluation needs it
    assert jobs["eval_hsnet-hm_resnet50_coco_fold3_5shot_official"].state == DONE
    assert jobs["eval_hsnet-hm_resnet50_coco_fold3_5shot_seed0"].state == "pending"  # official fills no reproduced cell
    assert jobs["download_hsnet-hm_coco"].state == "pending"
    assert jobs["eval_hsnet_resnet50_coco_fold0_1shot_seed0"].state == "pending"  # the baseline's own records
    # with several seeds a record counts only for the run it evaluated
    seeded = {job.id: job for job in build_plan(_spec(tmp_path, 2, backbones=("resnet50",), seeds=(0, 1)))}
    assert seeded["eval_hsnet-hm_resnet50_coco_fold0_1shot_seed0"].state == DONE
    assert seeded["eval_hsnet-hm_resnet50_coco_fold0_1shot_seed1"].state == "pending"
    assert seeded["eval_hsnet-hm_resnet50_coco_fold1_1shot_seed0"].state == "pending"  # that record names no run


def test_a_training_with_a_run_folder_resumes_and_a_finished_one_is_done(tmp_path):
    spec = _spec(tmp_path, 3, backbones=("resnet50",), cells=("reproduced",))
    train = next(job for job in build_plan(spec) if job.id == "train_hsnet-hm_resnet50_fss_fold0_seed0")
    assert current_command(train)[-2:] == ("--out", train.run_dir)
    run_dir = Path(train.run_dir)
    run_dir.mkdir(parents=True)
    (run_dir / "config.json").write_text("{}")
    (run_dir / "last.pt").write_bytes(b"")
    train = next(job for job in build_plan(spec) if job.id == train.id)
    assert train.state == "pending" and train.note == "resumes from last.pt"
    assert current_command(train) == (*train.command[:-2], "--resume", train.run_dir)
    (run_dir / "run.json").write_text(json.dumps({"status": "finished"}))
    (run_dir / "best_model.pt").write_bytes(b"")
    assert next(job for job in build_plan(spec) if job.id == train.id).state == DONE


# --- the local launcher: a tiny table filled end to end -----------------------------------------------------

TINY_TABLE = """\
table,method,ref,source,backbone,benchmark,shot,miou,model,masking,recipe,overrides,official_checkpoint,note
3,HSNet,,hm,resnet50,fss,1,80.0,hsnet,fm,hsnet,bsz=2,false,
"""
# test-only: the HSNet card's FSS-1000 size becomes 48 px in every process of the test (the sweep's subprocesses
# read it through PYTHONPATH), so the full protocol (all 40 synthetic test episodes, the card's size) takes seconds
SMALL_CARD = """\
from types import MappingProxyType
import hmrepro.models.cards as cards
object.__setattr__(cards.HSNET, "img_size", MappingProxyType({**cards.HSNET.img_size, "fss": 48}))
"""
TINY_TRAINING = [
    "epochs=1",
    "epoch_iterations=6",
    "pretrained=false",
    "calibrate_bn=false",
    "val_episodes=2",
    "val_bsz=2",
    "checkpoint_every=1",
    "workers=0",
    "device=cpu",
]


@pytest.fixture
def tiny_world(tmp_path, monkeypatch, synthetic_root):
    """A recipes folder whose claimed Table 3 is one row, the small card, and the environment of the sweep."""
    from types import MappingProxyType

    import hmrepro.models.cards as cards
    from hmrepro.engine.recipes import recipe_dir
    from hmrepro.engine.records import _looked_up_img_size
    from hmrepro.reporting.claimed import claimed_path

    recipes = tmp_path / "recipes"
    shutil.copytree(recipe_dir(), recipes, ignore=shutil.ignore_patterns("*.csv"))
    table = recipes / claimed_path(3).relative_to(recipe_dir())
    table.parent.mkdir(parents=True, exist_ok=True)
    table.write_text(TINY_TABLE)
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "sitecustomize.py").write_text(SMALL_CARD)
    for key, value in cli_env().items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("HMREPRO_RECIPES", str(recipes))
    monkeypatch.setenv("HMREPRO_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(tmp_path / "site"), os.environ.get("PYTHONPATH", "")]))
    sizes = cards.HSNET.img_size
    object.__setattr__(cards.HSNET, "img_size", MappingProxyType({**sizes, "fss": 48}))  # the card is frozen
    _looked_up_img_size.cache_clear()
    yield tmp_path
    object.__setattr__(cards.HSNET, "img_size", sizes)
    _looked_up_img_size.cache_clear()


def _sweep_run_args(world: Path, root: Path) -> list[str]:
    args = [
        "sweep",
        "run",
        "table",
        "3",
        "--launcher",
        "local",
        "--cells",
        "reproduced",
        "--results",
        str(world / "results"),
        "--sweep-dir",
        str(world / "sweep"),
        "--data-root",
        str(root),
        "--splits",
        str(root / "splits"),
        "--eval-override",
        "device=cpu",
        "--eval-override",
        "bsz=8",
        "--parallel",
        "1",
    ]
    for item in TINY_TRAINING:
        args += ["--train-override", item]
    return args


def _stop_training_once_it_checkpointed(folder: SweepFolder, job_id: str, run_dir: Path, stopped: list) -> None:
    """SIGTERM to the training process as soon as it has written last.pt (it stops at its next iteration)."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        attempt = folder.attempt(job_id)
        if attempt and (run_dir / "last.pt").is_file():
            os.kill(attempt["pid"], signal.SIGTERM)
            stopped.append(attempt["pid"])
            return
        time.sleep(0.02)


@pytest.mark.slow  # sweep: trains, kills, resumes and evaluates
def test_local_sweep_fills_a_tiny_table_and_resumes_a_killed_training(tiny_world, synthetic_root, capsys):
    from hmrepro.reporting.tables import TableQuery, compare_table

    world = tiny_world
    folder = SweepFolder(world / "sweep")
    train_id = "train_hsnet_resnet50_fss_fold0_seed0_bsz-2"
    run_dir = folder.runs / "hsnet_resnet50_fss_fold0_seed0_bsz-2"
    stopped: list = []
    killer = threading.Thread(target=_stop_training_once_it_checkpointed, args=(folder, train_id, run_dir, stopped))
    killer.start()
    assert run(_sweep_run_args(world, synthetic_root)) == 1  # the training was stopped: its evaluation did not run
    killer.join()
    out = " ".join(capsys.readouterr().err.split())  # whatever the console's width wrapped
    assert stopped and "failed (exit 143)" in out and "not run" in out
    assert json.loads((run_dir / "run.json").read_text())["status"] == "interrupted"
    assert (run_dir / "last.pt").is_file() and not (world / "results").exists()
    assert (
        run(
            [
                "sweep",
                "status",
                "table",
                "3",
                "--cells",
                "reproduced",
                "--results",
                str(world / "results"),
                "--sweep-dir",
                str(world / "sweep"),
                "--json",
            ]
        )
        == 0
    )
    states = {s["id"]: s["state"] for s in json.loads(capsys.readouterr().out)}
    assert states == {train_id: "pending", "eval_hsnet_resnet50_fss_fold0_1shot_seed0_bsz-2": "pending"}

    assert run(_sweep_run_args(world, synthetic_root)) == 0  # the same command again: resume, then evaluate
    info = json.loads((run_dir / "run.json").read_text())
    assert info["status"] == "finished" and [s["resumed"] for s in info["sessions"]] == [False, True]
    config = json.loads((run_dir / "config.json").read_text())
    assert config["bsz"] == 2 and config["img_size"] == 48  # the row's override; the card's size
    frame = compare_table(TableQuery(3, results_dir=world / "results"))
    assert frame.loc[0, "reproduced_miou"] == frame.loc[0, "reproduced_miou"]  # the cell is filled (not NaN)
    capsys.readouterr()
    assert run(_sweep_run_args(world, synthetic_root)) == 0  # nothing left to do
    assert "0 job(s) to run" in " ".join(capsys.readouterr().err.split())


# --- the SLURM launcher, without a cluster -----------------------------------------------------------------

FAKE_SBATCH = """#!/bin/sh
n=$(cat "$FAKE_SLURM/next" 2>/dev/null || echo 1000)
echo $((n + 1)) > "$FAKE_SLURM/next"
cp "$1" "$FAKE_SLURM/script_$n.sh"
echo "Submitted batch job $n"
"""
FAKE_SCANCEL = """#!/bin/sh
echo "$@" >> "$FAKE_SLURM/scancel.log"
"""
FAKE_SACCT = """#!/bin/sh
echo "JobID|State|NodeList"
cat "$FAKE_SLURM/states" 2>/dev/null
"""


@pytest.fixture
def fake_slurm(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in {
        "sbatch": FAKE_SBATCH,
        "scancel": FAKE_SCANCEL,
        "sacct": FAKE_SACCT,
        "srun": "#!/bin/sh\nexit 0\n",
    }.items():
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_SLURM", str(tmp_path))
    return tmp_path


def _submitted_function(folder: SweepFolder, slurm_id: str):
    from submitit.core.utils import DelayedSubmission, JobPaths

    return DelayedSubmission.load(JobPaths(folder.slurm / "%j", job_id=slurm_id).submitted_pickle).function


def test_slurm_submission_carries_gpus_torchrun_dependencies_and_requeue(tmp_path, fake_slurm):
    from hmrepro.sweep.slurm import SlurmOptions, submit_plan

    spec = _spec(tmp_path, 3, backbones=("resnet50",))
    jobs = [
        job for job in build_plan(spec) if job.id.split("_")[1] == "hsnet-hm"
    ]  # a training, a download, 2 + 2 evaluations
    folder = SweepFolder(spec.sweep_dir)
    options = SlurmOptions(
        gpus_per_job=4, partition="gpu", account="lab", train_time_min=1440, extra=(("mail_type", "END"),)
    )
    ids = submit_plan(jobs, folder, options)
    train_id = ids["train_hsnet-hm_resnet50_fss_fold0_seed0"]
    script = (fake_slurm / f"script_{train_id}.sh").read_text()
    for line in (
        "--gpus-per-node=4",
        "--ntasks-per-node=1",
        "--cpus-per-task=32",
        "--partition=gpu",
        "--account=lab",
        "--time=1440",
        "--requeue",
        "--signal=USR2@90",
        "--mail-type=END",
    ):
        assert f"#SBATCH {line}\n" in script, line
    assert "dependency" not in script
    training = _submitted_function(folder, train_id)
    assert training.argv(python="python")[:7] == [
        "python",
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=4",
        "-m",
        "hmrepro",
    ]
    assert training.argv(python="python")[7:10] == ["train", "hsnet-hm", "--benchmark"]
    eval_ids = [ids[job.id] for job in jobs if job.kind == "eval" and job.depends_on == (jobs[1].id,)]
    assert (
        jobs[1].kind == "train" and len(eval_ids) == 2 and eval_ids[0].split("_")[0] == eval_ids[1].split("_")[0]
    )  # one array
    official = [ids[job.id] for job in jobs if job.id.endswith("official")]
    assert len(official) == 2 and official[0].split("_")[0] == official[1].split("_")[0] != eval_ids[0].split("_")[0]
    download_id = ids["download_hsnet-hm_fss"]
    assert (
        f"#SBATCH --dependency=afterok:{download_id}\n"
        in (fake_slurm / f"script_{official[0].split('_')[0]}.sh").read_text()
    )
    assert "gpus" not in (fake_slurm / f"script_{download_id}.sh").read_text()
    array = (fake_slurm / f"script_{eval_ids[0].split('_')[0]}.sh").read_text()
    for line in (f"--dependency=afterok:{train_id}", "--array=0-1%2", "--gpus-per-node=1", "--cpus-per-task=8"):
        assert f"#SBATCH {line}\n" in array, line
    assert "--requeue" not in array
    evaluation = _submitted_function(folder, eval_ids[1])
    assert evaluation.argv(python="python")[:4] == ["python", "-m", "hmrepro", "eval"]

    # again, everything queued (sacct says so): nothing is submitted; the training failed: it and its waiting
    # evaluations go again
    before = len(list(fake_slurm.glob("script_*.sh")))
    (fake_slurm / "states").write_text("".join(f"{i}|PENDING|\n" for i in ids.values()))
    assert submit_plan(jobs, folder, options) == ids
    assert len(list(fake_slurm.glob("script_*.sh"))) == before
    again = submit_plan(jobs, folder, options, state_of=lambda i: "FAILED" if i == train_id else "PENDING")
    renewed = {job_id for job_id in again if again[job_id] != ids[job_id]}
    assert renewed == {jobs[1].id} | {
        job.id for job in jobs if job.depends_on == (jobs[1].id,)
    }  # not the official ones
    assert sorted((fake_slurm / "scancel.log").read_text().split()) == sorted(eval_ids)


FAKE_TRAINER = """#!/bin/sh
# stands for `python -m hmrepro train ...`: a fresh run writes config.json and trains until SIGTERM, which it
# answers as hmrepro does (checkpoint, exit 143); a resumed run finishes at once
echo "$@" >> "$FAKE_SLURM/trainer.log"
case "$*" in *--resume*) exit 0;; esac
out=$(echo "$@" | sed 's/.*--out //')
mkdir -p "$out" && echo '{}' > "$out/config.json"
trap 'touch "$out/last.pt"; exit 143' TERM
while true; do sleep 0.05; done
"""


@pytest.mark.slow  # resume after the requeue of a training
def test_the_checkpoint_hook_stops_the_trainer_and_the_requeued_job_resumes(tmp_path, fake_slurm):
    from hmrepro.sweep.slurm import TrainingJob

    trainer = fake_slurm / "bin" / "python"
    trainer.write_text(FAKE_TRAINER)
    trainer.chmod(0o755)
    spec = _spec(tmp_path, 3, backbones=("resnet50",), cells=("reproduced",))
    train = next(job for job in build_plan(spec) if job.id == "train_hsnet-hm_resnet50_fss_fold0_seed0")
    job = TrainingJob(train.id, train.command, train.run_dir, gpus=1, python=str(trainer))
    outcome: list = []
    worker = threading.Thread(target=lambda: outcome.append(_call(job)))
    worker.start()
    deadline = time.monotonic() + 30
    while not (Path(train.run_dir) / "config.json").is_file() and time.monotonic() < deadline:
        time.sleep(0.02)
    requeued = job.checkpoint()  # what submitit calls on USR2 (time limit or preemption) before it requeues
    worker.join(timeout=30)
    assert (Path(train.run_dir) / "last.pt").is_file()  # the trainer got SIGTERM and checkpointed
    assert isinstance(outcome[0], RuntimeError) and "143" in str(outcome[0])
    resubmitted = pickle.loads(pickle.dumps(requeued.function))  # submitit pickles it for the requeued job
    assert resubmitted.argv()[-2:] == ["--resume", train.run_dir]
    assert resubmitted() == 0
    calls = (fake_slurm / "trainer.log").read_text().splitlines()
    assert len(calls) == 2 and "--out" in calls[0] and calls[1].endswith(f"--resume {train.run_dir}")


def _call(job):
    try:
        return job()
    except RuntimeError as err:
        return err


def test_sweep_run_slurm_without_sbatch_says_where_to_run_it(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PATH", str(tmp_path))
    code = run(
        [
            "sweep",
            "run",
            "table",
            "7",
            "--launcher",
            "slurm",
            "--sweep-dir",
            str(tmp_path / "s"),
            "--results",
            str(tmp_path / "r"),
        ]
    )
    assert code == 1 and "login node" in capsys.readouterr().err


def test_status_reads_local_attempts_and_slurm_states_and_shows_a_failed_jobs_last_log_lines(tmp_path):
    from hmrepro.sweep.status import job_statuses, slurm_log

    spec = _spec(tmp_path, 3, backbones=("resnet50",), cells=("reproduced",))
    jobs = build_plan(spec)
    folder = SweepFolder(spec.sweep_dir)
    ids = {job.id: job for job in jobs}
    hm_train, hm_eval = "train_hsnet-hm_resnet50_fss_fold0_seed0", "eval_hsnet-hm_resnet50_fss_fold0_5shot_seed0"
    folder.start_attempt(hm_train, 1, ["python"], None)
    folder.end_attempt(hm_train, 1)
    folder.logs.mkdir(parents=True)
    folder.log_path(hm_train).write_text("starting\nTraceback ...\nerror: out of memory\n")
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)  # a process that is gone
    folder.start_attempt("train_hsnet_resnet50_fss_fold0_seed0", pid, ["python"], None)  # no exit status: killed
    folder.add_submissions(
        {
            "train_vat-hm_resnet50_fss_fold0_seed0": {"slurm_id": "41"},
            "train_vat_resnet50_fss_fold0_seed0": {"slurm_id": "42"},
            "eval_vat-hm_resnet50_fss_fold0_1shot_seed0": {"slurm_id": "43_0"},
        }
    )
    log = slurm_log(folder, "42")
    log.parent.mkdir(parents=True)
    log.write_text("epoch 3 ...\nslurmstepd: error: *** JOB 42 CANCELLED DUE TO TIME LIMIT ***\n")
    states = {"41": "RUNNING", "42": "TIMEOUT", "43_0": "PENDING"}
    status = {s.job.id: s for s in job_statuses(jobs, folder, slurm_state_of=states.get)}
    assert status[hm_train].state == "failed" and status[hm_train].tail[-1] == "error: out of memory"
    assert status[hm_eval].state == "blocked"
    assert (
        status["train_hsnet_resnet50_fss_fold0_seed0"].state == "failed"
        and "killed" in status["train_hsnet_resnet50_fss_fold0_seed0"].where
    )
    assert status["train_vat-hm_resnet50_fss_fold0_seed0"].state == "running"
    assert (
        status["train_vat_resnet50_fss_fold0_seed0"].state == "failed"
        and "TIME LIMIT" in status["train_vat_resnet50_fss_fold0_seed0"].tail[-1]
    )
    assert status["eval_vat-hm_resnet50_fss_fold0_1shot_seed0"].state == "queued"
    assert len(ids) == len(status)


def test_a_run_folder_left_by_a_training_killed_before_its_configuration_is_started_afresh(tmp_path):
    """A sweep re-runs `train --out DIR` for such a folder: only the lock file and partial writes are in it."""
    from contextlib import ExitStack

    from hmrepro.engine.training import distributed
    from hmrepro.engine.training.train import _run_folder, build_config
    from hmrepro.errors import HmreproError

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "run.lock").write_text("")
    (run_dir / ".config.json.abc.tmp").write_text("{")
    config = build_config("hsnet", "fss", 0, {"out": str(run_dir)})
    with ExitStack() as hold:
        assert _run_folder(config, distributed.Dist(), False, hold) == run_dir
    assert not (run_dir / ".config.json.abc.tmp").exists()
    (run_dir / "config.json").write_text("{}")
    with ExitStack() as hold, pytest.raises(HmreproError, match="--resume"):
        _run_folder(config, distributed.Dist(), False, hold)


def test_local_launcher_runs_in_dependency_order_one_per_gpu_and_a_failure_blocks_only_its_dependents(tmp_path):
    from hmrepro.sweep.local import run_local
    from hmrepro.sweep.plan import Job

    jobs = [
        Job(id="bad", kind="download", command=("hmrepro", "no-such-command")),
        Job(id="after-bad", kind="eval", command=("hmrepro", "--version"), depends_on=("bad",)),
        Job(id="fine", kind="eval", command=("hmrepro", "--version")),
        Job(id="unfilled", kind="eval", command=("hmrepro", "--version")),
        Job(id="old", kind="eval", command=("hmrepro", "no-such-command"), state=DONE),
    ]
    folder = SweepFolder(tmp_path / "sweep")
    events = []
    outcome = run_local(
        jobs, folder, gpus=("0", "1"), on_event=events.append, fills=lambda job: job.id != "unfilled", poll_s=0.02
    )
    assert outcome == {"bad": "failed", "after-bad": "blocked", "fine": "done", "unfilled": "failed"}
    assert {e.gpu for e in events if e.what == "start"} == {"0", "1"}
    assert [e.job.id for e in events if e.what == "end" and e.unfilled] == ["unfilled"]
    assert folder.attempt("bad")["returncode"] == 2 and "=== exit status 0" in folder.log_path("fine").read_text()

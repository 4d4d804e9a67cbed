"""A table cell takes only the run its row names: the row's overrides and defaults (model arguments, training
switches, test-time options) and its paper's protocol. Tiny claimed tables in a temporary recipe folder; records
written as dicts (no training)."""

from __future__ import annotations

import io
import shutil

import pandas as pd
import pytest
from engine_helpers import run_cli_importing_none_of
from typer.testing import CliRunner

from hmrepro.engine.recipes import recipe_dir
from hmrepro.engine.records import write_record
from hmrepro.models.model_args import recorded_arguments
from hmrepro.reporting import TableQuery, compare_table
from hmrepro.reporting.settings import setting_differences
from hmrepro.reporting.tables import record_listing

HEADER = (
    "table,method,ref,source,backbone,benchmark,shot,fold0,fold1,fold2,fold3,miou,fb_iou,model,masking,recipe,"
    "overrides,official_checkpoint,note\n"
)
MCE_TABLE1 = HEADER + "1,Ours,,mce,resnet50,pascal,1,,,,,65.93,,mce,none,mce,,,\n"
MCE_TABLE3 = (
    HEADER
    + "3,f'Q,,mce,resnet50,pascal,1,,,,,65.24,,mce,none,mce,branches=query,,\n"
    + "3,Fusion,,mce,resnet50,pascal,1,,,,,65.93,,mce,none,mce,,,\n"
)
CRCNET_TABLE8 = (
    HEADER
    + '8,CRCNet,,crcnet,resnet50,pascal,1,,,,,56.4,,crcnet,none,crcnet,"scales=0.75,1,1.25",false,\n'
    + "8,CRCNet,,crcnet,resnet50,pascal,5,,,,,58.7,,crcnet,none,crcnet,"
    + '"scales=0.75,1,1.25;kshot=finetune-fusion",false,\n'
)
HM_TABLE1 = HEADER + "1,HSNet*,,hm,resnet50,pascal,1,,,,,64.3,,hsnet,fm,hsnet,augment=cats,false,\n"
MULTI_SCALE = [0.75, 1.0, 1.25]


@pytest.fixture
def recipes(tmp_path, monkeypatch):
    """A recipe folder (HMREPRO_RECIPES) with the real recipes and the tiny claimed tables above."""
    folder = tmp_path / "recipes"
    folder.mkdir()
    for toml in recipe_dir().glob("*.toml"):
        shutil.copy(toml, folder)
    claimed = folder / "claimed"
    for paper, number, text in (
        ("mce", 1, MCE_TABLE1),
        ("mce", 3, MCE_TABLE3),
        ("crcnet", 8, CRCNET_TABLE8),
        ("", 1, HM_TABLE1),
    ):
        (claimed / paper).mkdir(parents=True, exist_ok=True)
        (claimed / paper / f"table{number}.csv").write_text(text)
    monkeypatch.setenv("HMREPRO_RECIPES", str(folder))
    return folder


def _mce(fold: int = 0, model_args: str = "", **fields) -> dict:
    """A full-protocol own MCE record of PASCAL-5i (BAM's protocol: 5 x 1000 episodes at 473 px)."""
    base = dict(protocol="bam", img_size=473, episodes=5000, model_arguments=recorded_arguments("mce", model_args))
    return _record(**{**base, "model": "mce", "fold": fold, **fields})


def _crcnet(fold: int = 0, shot: int = 1, scales=MULTI_SCALE, kshot: str = "finetune-fusion", **fields) -> dict:
    """A full-protocol own CRCNet record of PASCAL-5i (HSNet's episodes at 321 px)."""
    base = dict(protocol="hsnet", img_size=321, model_arguments=recorded_arguments("crcnet", ""))
    inference = {"scales": list(scales), "kshot": kshot}
    return _record(**{**base, "model": "crcnet", "fold": fold, "shot": shot, "inference": inference, **fields})


def _record(**fields) -> dict:
    record = dict(
        masking="none",
        backbone="resnet50",
        benchmark="pascal",
        fold=0,
        shot=1,
        miou=60.0,
        fb_iou=70.0,
        episodes=1000,
        full_episode_set=True,
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
    record["total_episodes"] = record["episodes"]
    return record


def _cells(table: int, paper: str, records: list[dict], method: str, shot: int = 1) -> pd.Series:
    frame = compare_table(TableQuery(table, records=records, paper=paper))
    return frame[(frame["method"] == method) & (frame["shot"] == shot)].iloc[0]


def _reasons(table: int, paper: str, records: list[dict]) -> dict[float, str]:
    """mIoU → reason of every listed record that fills nothing."""
    listing = record_listing(TableQuery(table, records=records, paper=paper))
    return {line.miou: line.reason for line in listing.itertuples() if not line.cell}


def test_an_hsnet_protocol_mce_record_fills_no_cell_and_says_why(recipes):
    records = [_mce(fold=f, miou=50.0 + f, protocol="hsnet", img_size=473, episodes=1000) for f in range(4)]
    row = _cells(1, "mce", records, "Ours")
    assert row["reproduced_records"] == 0 and pd.isna(row["reproduced_fold0"]) and pd.isna(row["reproduced_miou"])
    assert set(_reasons(1, "mce", records).values()) == {"protocol hsnet, the paper's is bam"}
    # the positive case: the same records with BAM's protocol fill every fold and the mean
    row = _cells(1, "mce", [_mce(fold=f, miou=50.0 + f) for f in range(4)], "Ours")
    assert [row[f"reproduced_fold{f}"] for f in range(4)] == [50.0, 51.0, 52.0, 53.0]
    assert row["reproduced_miou"] == pytest.approx(51.5)


def test_a_branches_query_mce_record_fills_only_the_query_row(recipes):
    query = _mce(miou=40.0, model_args="branches=query")
    full = _mce(miou=45.0)
    # (a text-only record, older than MCE's `encoder` argument, ran ImageNet's encoder: the test after the next)
    explicit = _mce(fold=1, miou=46.0, model_args="branches=both")
    records = [query, full, explicit]
    assert pd.isna(_cells(1, "mce", records, "Ours")["reproduced_fold0"]) is False
    assert _cells(1, "mce", records, "Ours")["reproduced_fold0"] == 45.0  # the full model, not the ablation
    assert _cells(1, "mce", records, "Ours")["reproduced_fold1"] == 46.0  # branches=both is the default
    assert _cells(3, "mce", records, "f'Q")["reproduced_fold0"] == 40.0
    assert pd.isna(_cells(3, "mce", records, "f'Q")["reproduced_fold1"])
    assert _cells(3, "mce", records, "Fusion")["reproduced_fold0"] == 45.0
    assert _reasons(1, "mce", records) == {40.0: "model argument branches=query, the row's is the default (both)"}
    assert _reasons(3, "mce", records) == {}  # every record is the run of one row of Table III
    rows = compare_table(TableQuery(3, records=records, paper="mce"))
    assert setting_differences(rows.iloc[0], full) == ["model argument branches=both (the default), the row's is query"]


def test_a_single_scale_crcnet_record_fills_no_multi_scale_cell(recipes):
    single = [_crcnet(fold=f, miou=50.0, scales=[1.0]) for f in range(4)]
    row = _cells(8, "crcnet", single, "CRCNet")
    assert row["reproduced_records"] == 0 and pd.isna(row["reproduced_miou"])
    assert set(_reasons(8, "crcnet", single).values()) == {"scales 1.0, the row's are 0.75,1.0,1.25"}
    multi = [_crcnet(fold=f, miou=56.0 + f) for f in range(4)]
    row = _cells(8, "crcnet", single + multi, "CRCNet")
    assert row["reproduced_records"] == 4 and row["reproduced_miou"] == pytest.approx(57.5)


def test_the_k_shot_mode_counts_for_k_shot_rows_only(recipes):
    fusion = [_crcnet(fold=0, shot=s, kshot="fusion", miou=50.0 + s) for s in (1, 5)]
    assert _cells(8, "crcnet", fusion, "CRCNet", shot=1)["reproduced_fold0"] == 51.0  # 1-shot runs no K-shot method
    assert pd.isna(_cells(8, "crcnet", fusion, "CRCNet", shot=5)["reproduced_fold0"])
    assert _reasons(8, "crcnet", fusion) == {55.0: "K-shot mode fusion, the row's is finetune-fusion"}
    tuned = _crcnet(fold=0, shot=5, miou=58.0)
    tuned["model_arguments"] = {**tuned["model_arguments"], "finetune_steps": 10}
    assert _reasons(8, "crcnet", [tuned]) == {58.0: "model argument finetune_steps=10, the row's is the default (50)"}


def test_a_crcnet_record_without_test_time_options_fills_nothing(recipes):
    old = _crcnet(miou=56.0)
    del old["inference"]
    assert _reasons(8, "crcnet", [old]) == {
        56.0: "test-time options not recorded (scales=0.75,1.0,1.25; kshot=finetune-fusion wanted)"
    }


def test_hsnet_star_takes_only_records_trained_with_its_augmentation(recipes):
    cats = _record(
        model="hsnet", masking="fm", protocol="hsnet", img_size=400, miou=63.0, train_config={"augment": "cats"}
    )
    plain = {**cats, "miou": 62.0, "train_config": {"augment": "none"}}
    old = {key: value for key, value in cats.items() if key != "train_config"} | {"miou": 61.0}
    assert _cells(1, "hm", [cats, plain, old], "HSNet*")["reproduced_fold0"] == 63.0
    assert _reasons(1, "hm", [plain, old]) == {
        62.0: "trained with augment=none, the row's is cats",
        61.0: "training settings not recorded (the row's: augment=cats)",
    }


def test_table_all_records_names_the_protocol_through_the_cli(recipes, tmp_path):
    from hmrepro.cli.app import app

    results = tmp_path / "results"
    write_record(_mce(miou=44.4, protocol="hsnet", episodes=1000), results)
    result = CliRunner().invoke(
        app,
        ["table", "1", "--paper", "mce", "--all-records", "--format", "csv", "--results", str(results)],
        env={"HMREPRO_RECIPES": str(recipes)},
    )
    assert result.exit_code == 0, result.output
    listing = pd.read_csv(io.StringIO(result.stdout))
    assert list(listing["miou"]) == [44.4] and listing["cell"].isna().all()
    assert listing["reason"][0] == "protocol hsnet, the paper's is bam"
    text = CliRunner().invoke(
        app,
        ["table", "1", "--paper", "mce", "--all-records", "--results", str(results)],
        env={"HMREPRO_RECIPES": str(recipes)},
    )
    assert text.exit_code == 0 and "protocol hsnet, the paper's is bam" in " ".join(text.stdout.split())


@pytest.mark.slow  # a fresh process
def test_table_reads_records_and_model_defaults_without_importing_torch(recipes, tmp_path):
    """Whether a record ran a row's settings needs the model's constructor defaults, read from the model's source:
    ``table`` imports neither torch nor the model modules (with these two records: 1.2-1.5 s instead of 7.9-9.3 s,
    docs/performance.md)."""
    results = tmp_path / "results"
    write_record(_mce(miou=44.4, model_args="branches=query"), results)
    write_record(_crcnet(miou=50.0, scales=[1.0]), results)
    absent = ["torch", "hmrepro.models.mce", "hmrepro.models.crcnet"]
    args = ["table", "1", "--paper", "mce", "--all-records", "--format", "csv", "--results", str(results)]
    result = run_cli_importing_none_of(absent, *args, env={"HMREPRO_RECIPES": str(recipes)})
    assert result.returncode == 0, result.stderr[-2000:]
    assert "model argument branches=query" in result.stdout


def test_eval_records_carry_the_runs_model_arguments_and_training_configuration(tmp_path):
    from hmrepro.engine.evaluation.evaluate import WeightsSource, run_fields

    own = WeightsSource(
        tmp_path / "best_model.pt",
        "own",
        trained_model_args="branches=query;levels=4",
        trained_config={"augment": "geometric", "data_root": tmp_path},
    )
    fields = run_fields("mce", own)
    assert fields["model_arguments"]["branches"] == "query" and fields["model_arguments"]["levels"] == [4]
    assert fields["model_arguments"]["use_prior"] is True  # the defaults too: what ran, not only what was asked
    assert fields["train_config"] == {"augment": "geometric", "data_root": str(tmp_path)}
    assert "train_config" not in run_fields("mce", WeightsSource(None, "random"))


def test_an_argument_added_since_a_record_ran_its_declared_old_value(recipes, monkeypatch):
    from hmrepro.reporting import settings

    record = _mce(miou=47.0)
    del record["model_arguments"]["use_prior"]  # written before the argument existed
    assert _cells(1, "mce", [record], "Ours")["reproduced_fold0"] == 47.0  # undeclared: today's default ran
    monkeypatch.setitem(settings.ADDED_ARGUMENTS, "mce", {"use_prior": False})
    assert _reasons(1, "mce", [record]) == {47.0: "model argument use_prior=false, the row's is the default (true)"}


def test_an_mce_record_from_before_the_encoder_argument_ran_imagenets_encoder_and_fills_nothing(recipes):
    old = _mce(miou=44.0, model_arguments=None, model_args="")  # no `encoder`: MCE froze torchvision's ResNet then
    imagenet = _mce(fold=1, miou=43.0, model_args="encoder=imagenet")
    paper = _mce(fold=2, miou=47.0, model_args="encoder_weights=/runs/pspnet_fold2")  # the run's own base learner
    cells = _cells(1, "mce", [old, imagenet, paper], "Ours")
    assert pd.isna(cells["reproduced_fold0"]) and pd.isna(cells["reproduced_fold1"])
    assert cells["reproduced_fold2"] == 47.0  # where the encoder's weights came from is never compared
    reason = "model argument encoder=imagenet, the row's is the default (pspnet)"
    assert _reasons(1, "mce", [old, imagenet, paper]) == {44.0: reason, 43.0: reason}


def test_hand_edited_settings_fill_nothing_and_say_so(recipes):
    unreadable = {**_mce(miou=1.0), "model_arguments": "junk", "model_args": "nonsense"}
    odd = {**_crcnet(miou=2.0), "inference": [1.0]}
    assert _reasons(1, "mce", [unreadable]) == {1.0: "model arguments unreadable (model_args 'nonsense')"}
    assert _reasons(8, "crcnet", [odd]) == {
        2.0: "test-time options not recorded (scales=0.75,1.0,1.25; kshot=finetune-fusion wanted)"
    }

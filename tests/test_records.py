"""Records that say what they are (protocol fields, origin) and tables that fill cells with full-protocol ones only."""

import io
import json

import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from hmrepro.cli.app import app
from hmrepro.data.splits import sha256_file
from hmrepro.engine.evaluation.evaluate import resolve_weights
from hmrepro.engine.records import (
    is_full_protocol,
    precision_of,
    protocol_deviations,
    read_records,
    record_protocol_fields,
    write_record,
)
from hmrepro.reporting.tables import TableQuery, compare_table, record_listing

runner = CliRunner()

FULL = dict(
    model="hsnet-hm",
    masking="hm",
    backbone="resnet50",
    benchmark="coco",
    fold=0,
    shot=1,
    miou=41.5,
    fb_iou=71.0,
    protocol="hsnet",
    checkpoint_sha256=None,
    origin="official",
    git_commit=None,
    versions={},
    device="cpu",
    date="2024-02-01T00:00:00+00:00",
    secs_per_episode=0.1,
    **record_protocol_fields(
        amp=False, episodes=1000, total_episodes=1000, img_size=400, default_img_size=400, original_size=False
    ),
    episodes=1000,
)
NEWER = "2024-03-01T00:00:00+00:00"

# newer records of the same cell that must not fill it, and the reason --all-records gives
NOT_FULL = {
    "20 episodes": (dict(episodes=20, full_episode_set=False), "20 of 1000 episodes"),
    "bf16": (dict(precision="bf16", amp=True), "bf16"),
    "original size": (dict(original_size=True), "original size"),
    "other size": (dict(img_size=200), "img 200 ≠ 400"),
}


def _record(**fields) -> dict:
    return {**FULL, **fields}


def _hsnet_hm_coco_row(frame: pd.DataFrame) -> pd.Series:
    rows = frame[(frame["method"] == "HSNet-HM") & (frame["backbone"] == "resnet50") & (frame["shot"] == 1)]
    assert len(rows) == 1
    return rows.iloc[0]


# ---------------------------------------------------------------- the protocol judge


def test_a_full_protocol_record_has_no_deviation():
    assert protocol_deviations(FULL) == [] and is_full_protocol(FULL)


@pytest.mark.parametrize("case", NOT_FULL)
def test_each_deviation_is_named(case):
    fields, reason = NOT_FULL[case]
    assert protocol_deviations(_record(**fields)) == [reason]
    assert not is_full_protocol(_record(**fields))


def test_original_size_is_full_only_where_it_is_asked_for():
    original = _record(original_size=True)
    assert is_full_protocol(original, original_size_wanted=True)
    assert protocol_deviations(FULL, original_size_wanted=True) == ["not original size"]


def test_default_size_is_the_models_for_the_benchmark():
    vat = _record(model="vat-hm", benchmark="pascal", img_size=473)
    assert is_full_protocol(vat)
    assert protocol_deviations({**vat, "benchmark": "coco"}) == ["img 473 ≠ 417"]  # VAT's COCO size
    shifted = _record(kind="domain-shift", model="vat-hm", benchmark="coco2pascal", trained_on="coco", img_size=417)
    assert is_full_protocol(shifted)  # a COCO model keeps its COCO size on PASCAL


def test_old_records_are_judged_by_what_they_say():
    old = {k: v for k, v in FULL.items() if k not in ("precision", "full_episode_set", "total_episodes")}
    assert precision_of({**old, "amp": False}) == "fp32" and precision_of(old) == "fp32"
    assert precision_of({**old, "amp": True}) == "bf16"
    assert protocol_deviations({**old, "amp": False}) == ["1000 episodes, full set not recorded"]
    assert protocol_deviations({**old, "amp": True, "full_episode_set": True}) == ["bf16"]


def test_protocol_fields_say_precision_and_keep_amp():
    fields = record_protocol_fields(
        amp=True, episodes=50, total_episodes=1000, img_size=400, default_img_size=400, original_size=False
    )
    assert fields["precision"] == "bf16" and fields["amp"] is True
    assert fields["full_episode_set"] is False and fields["total_episodes"] == 1000
    assert fields["img_size"] == fields["default_img_size"] == 400 and fields["original_size"] is False


def test_written_records_state_their_precision(tmp_path):
    legacy = {k: v for k, v in FULL.items() if k != "precision"}
    write_record({**legacy, "amp": True}, tmp_path)
    (record,) = read_records(tmp_path)
    assert record["precision"] == "bf16"


# ---------------------------------------------------------------- tables pick the full-protocol record


@pytest.mark.parametrize("case", NOT_FULL)
def test_a_newer_record_off_the_protocol_does_not_replace_the_full_one(case, tmp_path):
    fields, reason = NOT_FULL[case]
    write_record(_record(), tmp_path)
    write_record(_record(miou=12.3, date=NEWER, **fields), tmp_path)

    row = _hsnet_hm_coco_row(compare_table(TableQuery(2, results_dir=tmp_path)))
    assert row["verified_fold0"] == pytest.approx(41.5)

    listing = record_listing(TableQuery(2, results_dir=tmp_path))
    mine = listing[(listing["method"] == "HSNet-HM") & (listing["backbone"] == "resnet50") & (listing["shot"] == 1)]
    assert sorted(mine["miou"]) == [12.3, 41.5]
    full, other = (mine[mine["miou"] == m].iloc[0] for m in (41.5, 12.3))
    assert full["cell"] == "verified fold0" and full["reason"] == ""
    assert other["cell"] == "" and other["reason"] == reason


def test_all_records_cli_lists_both_with_the_reason(tmp_path):
    write_record(_record(), tmp_path)
    write_record(_record(miou=12.3, date=NEWER, episodes=20, full_episode_set=False), tmp_path)
    table = runner.invoke(app, ["table", "2", "--results", str(tmp_path), "--compare-claimed", "--format", "markdown"])
    assert table.exit_code == 0, table.output
    assert "| verified | 41.5 (+0.5) | — |" in table.stdout and "12.3" not in table.stdout

    listed = runner.invoke(app, ["table", "2", "--results", str(tmp_path), "--all-records", "--format", "markdown"])
    assert listed.exit_code == 0, listed.output
    lines = [line for line in listed.stdout.splitlines() if "| HSNet-HM |" in line]
    assert len(lines) == 2
    assert any("| 41.5 |" in line and "| verified fold0 |" in line for line in lines)
    assert any("| 12.3 |" in line and "not shown: 20 of 1000 episodes" in line for line in lines)

    csv = runner.invoke(app, ["table", "2", "--results", str(tmp_path), "--all-records", "--format", "csv"])
    frame = pd.read_csv(io.StringIO(csv.stdout))
    assert set(frame["reason"].fillna("")) == {"", "20 of 1000 episodes"}


def test_all_records_rich_output_and_an_empty_listing(tmp_path):
    write_record(_record(origin="external", date=NEWER), tmp_path)
    text = runner.invoke(app, ["table", "2", "--results", str(tmp_path), "--all-records"]).stdout
    assert "external checkpoint" in text
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "no result records" in runner.invoke(app, ["table", "2", "--results", str(empty), "--all-records"]).stdout


def test_external_records_never_fill_a_cell(tmp_path):
    for fold in range(4):
        write_record(_record(fold=fold, origin="external"), tmp_path)
    row = _hsnet_hm_coco_row(compare_table(TableQuery(2, results_dir=tmp_path)))
    assert pd.isna(row["verified_fold0"]) and pd.isna(row["reproduced_fold0"]) and pd.isna(row["verified_miou"])


# ---------------------------------------------------------------- origin of a checkpoint


@pytest.fixture(scope="module")
def authors_style_checkpoint(tmp_path_factory):
    """An untrained hsnet saved as the authors save theirs: torch.save of a DataParallel state dict."""
    from hmrepro import create_model

    torch.manual_seed(0)
    model = create_model("hsnet", pretrained=False)
    path = tmp_path_factory.mktemp("authors") / "best_model.pt"
    torch.save({f"module.{k}": v for k, v in model.state_dict().items()}, path)
    return path


def _origin(path, data_root) -> str:
    return resolve_weights(str(path), "hsnet", "resnet50", "pascal", 0, multi_fold=False, data_root=data_root).origin


def test_a_foreign_checkpoint_of_unknown_hash_is_external(authors_style_checkpoint, tmp_path):
    assert _origin(authors_style_checkpoint, tmp_path) == "external"


def test_a_foreign_checkpoint_in_the_download_index_is_official(authors_style_checkpoint, tmp_path):
    index = {
        "version": 1,
        "unassigned": [],
        "entries": [
            {
                "model": "hsnet",
                "backbone": "resnet50",
                "benchmark": "pascal",
                "fold": 0,
                "source": "hsnet_pascal",
                "path": "hsnet_pascal/res50_pas_fold0/best_model.pt",
                "sha256": sha256_file(authors_style_checkpoint),
            }
        ],
    }
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "index.json").write_text(json.dumps(index))
    assert _origin(authors_style_checkpoint, tmp_path) == "official"


def test_a_foreign_checkpoint_pinned_in_the_lock_is_official(authors_style_checkpoint, tmp_path):
    from hmrepro.acquisition.lock import LockFile

    key = "checkpoints/hsnet_pascal/res50_pas_fold0/best_model.pt"
    lock = LockFile.for_data_root(tmp_path)
    lock.data["files"][key] = {"origins": {"gdrive:abc": sha256_file(authors_style_checkpoint)}}
    lock.save()
    assert _origin(authors_style_checkpoint, tmp_path) == "official"
    lock.data["files"] = {"VOC2012.tar": {"sha256": sha256_file(authors_style_checkpoint)}}  # not a checkpoint
    lock.save()
    assert _origin(authors_style_checkpoint, tmp_path) == "external"


def test_hmrepro_checkpoints_stay_own(tmp_path):
    from hmrepro import create_model
    from hmrepro.engine.checkpoint_io import save_checkpoint

    torch.manual_seed(0)
    path = save_checkpoint(tmp_path / "mine.pt", create_model("hsnet", pretrained=False), model_name="hsnet")
    assert _origin(path, tmp_path) == "own"

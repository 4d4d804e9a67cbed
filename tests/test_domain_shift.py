"""COCO-20i → PASCAL domain shift (Table 4): the test classes, the episode pool, and records that fill Table 4."""

from __future__ import annotations

import io
import json

import pandas as pd
import pytest
import torch
from engine_helpers import synthetic_args
from typer.testing import CliRunner

from hmrepro.cli.app import app
from hmrepro.data.domain_shift import (
    DOMAIN_SHIFT_CLASSES,
    VOC_CLASSES,
    domain_shift_class_ids,
    domain_shift_episodes,
    domain_shift_pool,
)
from hmrepro.data.splits import SplitFolder
from hmrepro.engine.evaluation.evaluate import WeightsSource, episode_fields
from hmrepro.engine.records import RECORD_FIELDS
from hmrepro.reporting.tables import TableQuery, compare_table

runner = CliRunner()

# VOC names that COCO spells differently
VOC_TO_COCO = {
    "aeroplane": "airplane",
    "diningtable": "dining table",
    "motorbike": "motorcycle",
    "pottedplant": "potted plant",
    "sofa": "couch",
    "tvmonitor": "tv",
}


def test_test_classes_are_the_pascal_classes_outside_coco_fold_f_training_classes():
    from hmrepro.data.synthetic_coco import COCO_CATEGORIES

    coco_names = [name for _, name in COCO_CATEGORIES]
    for fold in range(4):
        coco_val = {coco_names[fold + 4 * v] for v in range(20)}  # COCO-20i's interleaved val classes of fold f
        expected = [i + 1 for i, voc in enumerate(VOC_CLASSES) if VOC_TO_COCO.get(voc, voc) in coco_val]
        assert list(DOMAIN_SHIFT_CLASSES[fold]) == expected
    assert sorted(c for f in range(4) for c in DOMAIN_SHIFT_CLASSES[f]) == list(range(1, 21))  # a partition
    assert 6 in domain_shift_class_ids(2) and 7 in domain_shift_class_ids(
        3
    )  # car in fold 2, cat in fold 3 (not RePRI's code)


def test_packaged_episodes_are_fixed_and_stay_in_the_fold_classes():
    assert [len(domain_shift_pool(f)) for f in range(4)] == [817, 292, 438, 321]
    eps = domain_shift_episodes(1, 5)
    assert len(eps) == 1000 and eps == domain_shift_episodes(1, 5)
    assert {e.class_id for e in eps} <= set(domain_shift_class_ids(1))
    assert all(e.query not in e.supports and len(e.supports) == 5 for e in eps)
    assert eps[0].query == domain_shift_pool(1).queries[0][0]  # the HSNet protocol walks the pool in order


@pytest.fixture(scope="module")
def coco_checkpoints(tmp_path_factory):
    """An untrained hsnet-hm saved as our own COCO-20i checkpoint, one path per fold (links to one file)."""
    from hmrepro import create_model
    from hmrepro.engine.checkpoint_io import save_checkpoint

    folder = tmp_path_factory.mktemp("ckpt")
    torch.manual_seed(0)
    model = create_model("hsnet-hm", pretrained=False)
    config = {"benchmark": "coco", "fold": 0, "img_size": 48}
    save_checkpoint(
        folder / "hsnet-hm_coco_fold0.pt",
        model,
        model_name="hsnet-hm",
        backbone="resnet50",
        metadata={"config": config},
    )
    for fold in (1, 2, 3):
        (folder / f"hsnet-hm_coco_fold{fold}.pt").symlink_to(folder / "hsnet-hm_coco_fold0.pt")
    return str(folder / "hsnet-hm_coco_fold{fold}.pt")


@pytest.mark.slow  # end-to-end: trains COCO checkpoints, evaluates through the CLI
def test_cli_records_fill_table_4(synthetic_root, coco_checkpoints, tmp_path):
    results = tmp_path / "results"
    args = [
        "domain-shift",
        "hsnet-hm",
        "--fold",
        "all",
        "--weights",
        coco_checkpoints,
        "--episodes",
        "2",
        "--device",
        "cpu",
    ]
    result = runner.invoke(
        app, [*args, *synthetic_args(synthetic_root), "--results", str(results), "--no-progress", "--json"]
    )
    assert result.exit_code == 0, result.output
    records = json.loads(result.stdout)
    assert [r["fold"] for r in records] == [0, 1, 2, 3]
    for r in records:
        assert set(RECORD_FIELDS) <= set(r)
        assert r["kind"] == "domain-shift" and r["benchmark"] == "coco2pascal" and r["origin"] == "own"
        assert r["img_size"] == 48 and r["episodes"] == 2 and not r["full_episode_set"]  # the checkpoint's size
        assert r["test_class_ids"] == domain_shift_class_ids(r["fold"]) and r["episode_source"]
    assert len(list(results.glob("*.json"))) == 4

    # 2-episode records at the checkpoint's 48 px are Table 4's records but not of the full protocol: listed, not shown
    row = compare_table(TableQuery(4, results_dir=results))
    row = row[(row["method"] == "HSNet-HM") & (row["backbone"] == "resnet50") & (row["shot"] == 1)].iloc[0]
    assert row["reproduced_records"] == 4
    assert all(pd.isna(row[f"reproduced_fold{fold}"]) for fold in range(4)) and pd.isna(row["reproduced_miou"])

    csv = runner.invoke(app, ["table", "4", "--all-records", "--format", "csv", "--results", str(results)])
    assert csv.exit_code == 0, csv.output
    frame = pd.read_csv(io.StringIO(csv.stdout))
    hm = frame[(frame["method"] == "HSNet-HM") & (frame["backbone"] == "resnet50") & (frame["shot"] == 1)]
    assert sorted(hm["fold"]) == [0, 1, 2, 3] and list(hm["miou"]) == pytest.approx([r["miou"] for r in records])
    assert set(hm["reason"]) == {"2 of 1000 episodes; img 48 ≠ 400"}


def test_random_weights_and_bad_choices(synthetic_root, tmp_path):
    args = ["domain-shift", "hsnet", "--weights", "random", "--no-pretrained", "--img-size", "32", "--episodes", "5"]
    result = runner.invoke(
        app,
        [
            *args,
            "--episode-seed",
            "3",
            *synthetic_args(synthetic_root),
            "--no-record",
            "--no-progress",
            "--device",
            "cpu",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    (record,) = json.loads(result.stdout)
    assert record["origin"] == "random" and record["fold"] == 0 and record["masking"] == "fm"
    # another draw of the episodes, as eval's --episode-seed: recorded, and those episodes were scored
    drawn = {s: domain_shift_episodes(0, 1, SplitFolder(synthetic_root / "splits"), seed=s)[:5] for s in (0, 3)}
    assert drawn[3] != drawn[0] and record["episode_seed"] == 3
    assert (
        record["episodes_sha256"] == episode_fields(drawn[3], [], 3, WeightsSource(None, "random"))["episodes_sha256"]
    )
    for bad in (["--fold", "4"], ["--shot", "0"]):
        result = runner.invoke(app, ["domain-shift", "hsnet", "--weights", "random", *bad])
        assert result.exit_code == 2 and "Traceback" not in result.output
    assert runner.invoke(app, ["domain-shift", "nonet", "--weights", "random"]).exit_code == 2

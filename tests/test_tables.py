"""``hmrepro table N``: the paper's claimed numbers (recipes/claimed/) and their join with result records."""

import io
import re

import pandas as pd
import pytest
from helpers import SHARED, reference_path
from typer.testing import CliRunner

from hmrepro.cli.app import app
from hmrepro.engine.records import write_record
from hmrepro.reporting import TABLE_NUMBERS, TableQuery, compare_table, load_all_claimed, load_claimed, render
from hmrepro.reporting.render import BENCH_CSV_COLUMNS, CSV_COLUMNS, FORMATS

runner = CliRunner()

ROWS_PER_TABLE = {1: 46, 2: 38, 3: 20, 4: 18, 5: 12, 6: 3, 7: 2}

# (table, method, backbone, shot, column, value), read off the paper's tables
PAPER_CELLS = [
    (1, "PANet", "resnet50", 1, "fold0", 44.0),
    (1, "HSNet*", "resnet50", 1, "fb_iou", 78.2),
    (1, "HSNet*-HM", "resnet50", 1, "miou", 65.0),
    (1, "HSNet*-HM", "resnet101", 5, "fold2", 64.0),
    (1, "VAT-HM", "resnet101", 1, "fb_iou", 79.4),
    (1, "CyCTR", "resnet101", 5, "fold0", 73.5),
    (2, "HSNet-HM", "resnet50", 1, "miou", 44.3),
    (2, "HSNet-HM", "resnet101", 5, "fold1", 55.2),
    (2, "ASGNet", "resnet50", 5, "fb_iou", 67.0),
    (2, "ASNet-HM", "resnet101", 1, "fold3", 46.4),
    (2, "VAT-HM", "resnet50", 5, "fb_iou", 71.8),
    (2, "FWB", "resnet101", 1, "fold3", 28.9),
    (3, "FSOT", "resnet50", 1, "miou", 82.5),
    (3, "HSNet-HM", "resnet50", 5, "miou", 88.0),
    (3, "VAT-HM", "resnet101", 1, "miou", 90.2),
    (3, "DAN", "resnet101", 5, "miou", 88.1),
    (4, "RPMM", "resnet50", 1, "fold0", 36.3),
    (4, "HSNet-HM", "resnet50", 1, "miou", 65.2),
    (4, "VAT-HM", "resnet50", 5, "fold3", 82.8),
    (4, "HSNet-HM", "resnet101", 5, "miou", 70.9),
    (5, "HSNet-IM", "resnet50", 1, "fold2", 46.0),
    (5, "HSNet-IM", "resnet101", 5, "fb_iou", 72.7),
    (5, "HSNet-FM", "resnet101", 1, "miou", 41.2),
    (5, "HSNet-HM", "resnet50", 5, "fold0", 45.3),
    (6, "HSNet-HM(Simple Add.)", "resnet50", 1, "miou", 42.5),
    (6, "HSNet-HM(Reverse)", "resnet50", 1, "fold1", 45.2),
    (6, "HSNet-HM", "resnet50", 1, "fold3", 43.7),
    (7, "HSNet-FM", "", 1, "secs_per_image", 0.27),
    (7, "HSNet-HM", "", 1, "secs_per_image", 0.34),
    (7, "HSNet-HM", "", 1, "overhead_pct", 25.9),
]


def _row(frame: pd.DataFrame, method: str, backbone: str, shot: int) -> pd.Series:
    rows = frame[(frame["method"] == method) & (frame["backbone"] == backbone) & (frame["shot"] == shot)]
    assert len(rows) == 1, (method, backbone, shot)
    return rows.iloc[0]


def _invoke(*args: str):
    result = runner.invoke(app, ["table", *args])
    assert result.exit_code == 0, result.output
    return result


def _csv(*args: str) -> pd.DataFrame:
    text = _invoke(*args, "--format", "csv").stdout
    frame = pd.read_csv(io.StringIO(text), dtype={"backbone": str, "method": str})
    frame["backbone"] = frame["backbone"].fillna("")
    return frame


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
        full_episode_set=True,  # records of the full protocol unless a test says otherwise
        protocol="hsnet",
        img_size=400,
        original_size=False,
        checkpoint_sha256=None,
        origin="official",
        git_commit=None,
        versions={},
        device="cpu",
        date="2024-01-01T00:00:00+00:00",
        secs_per_episode=0.1,
    )
    record.update(fields)
    return record


# ---------------------------------------------------------------- the claimed data


def test_every_table_has_every_row_of_the_paper():
    claimed = load_all_claimed()
    assert claimed.groupby("table").size().to_dict() == ROWS_PER_TABLE
    assert set(claimed["shot"]) == {1, 5}
    assert set(claimed["backbone"]) <= {"resnet50", "resnet101", "vgg16", ""}
    assert set(claimed["source"]) == {"hm", "quoted"}
    keys = claimed[["table", "method", "backbone", "shot"]].astype(str).agg("|".join, axis=1)
    assert keys.is_unique


@pytest.mark.parametrize("table,method,backbone,shot,column,value", PAPER_CELLS)
def test_claimed_cells_are_the_papers(table, method, backbone, shot, column, value):
    assert _row(load_claimed(table), method, backbone, shot)[column] == pytest.approx(value)


def test_means_agree_with_folds_or_the_row_says_why():
    claimed = load_all_claimed()
    with_folds = claimed.dropna(subset=["fold0", "fold1", "fold2", "fold3", "miou"])
    assert len(with_folds) > 100
    for _, row in with_folds.iterrows():
        mean = (row["fold0"] + row["fold1"] + row["fold2"] + row["fold3"]) / 4
        noted = re.search(r"mean of the printed folds is ([\d.]+)", row["note"])
        if noted:  # a noted inconsistency must be a real one, with the right mean
            assert float(noted.group(1)) == pytest.approx(mean, abs=0.001), row["method"]
            assert abs(mean - row["miou"]) > 0.05
        else:
            assert abs(mean - row["miou"]) <= 0.05 + 1e-9, (row["table"], row["method"], row["backbone"], row["shot"])


def test_rows_the_hm_authors_ran_say_how_to_reproduce_them():
    claimed = load_all_claimed()
    hm = claimed[claimed["source"] == "hm"]
    assert (hm["model"] != "").all() and (hm["masking"] != "").all()
    assert (hm[hm["table"] != 7]["recipe"] != "").all()
    assert (claimed[claimed["source"] == "quoted"]["ref"] != "").all()
    models = dict(zip(hm["method"], hm["model"]))
    assert models["HSNet*-HM"] == "hsnet-hm" and models["HSNet*"] == "hsnet" and models["VAT-HM"] == "vat-hm"
    assert models["HSNet-HM(Simple Add.)"] == "hsnet-hm-add" and models["HSNet-HM(Reverse)"] == "hsnet-hm-reverse"
    assert models["HSNet-IM"] == "hsnet-im" and models["ASNet-HM"] == "asnet-hm"
    starred = claimed[claimed["method"] == "HSNet*"]
    assert (starred["overrides"] == "augment=cats").all() and (starred["recipe"] == "hsnet").all()


def test_recipes_named_by_the_rows_are_their_models_recipes():
    """A row's recipe is the one its model's card names (``card.recipe``), and that file exists."""
    from hmrepro.engine.recipes import recipe_dir as recipes_dir
    from hmrepro.models.cards import card_of

    claimed = load_all_claimed()
    trained = claimed[claimed["recipe"] != ""]
    assert len(trained)
    for recipe, models in trained.groupby("recipe")["model"]:
        assert (recipes_dir() / f"{recipe}.toml").is_file(), recipe
        assert {card_of(model).recipe for model in models} == {recipe}, recipe


def test_hm_rows_agree_with_the_papers_listed_results():
    """Every HM result of the Papers-with-Code listing (../shared/papers/002_…) is in the claimed data."""
    listing = reference_path(SHARED / "papers" / "002_ab754d5d1662dc83.txt")
    tables = {"PASCAL-5i": 1, "COCO-20i": 2, "FSS-1000": 3, "COCO-20i -> Pascal VOC": 4}
    claimed = load_all_claimed()
    pattern = re.compile(r"\| (.+?) \((\d)-[Ss]hot\) \| (\w+) \(HM, ResNet-(\d+)\) \| Mean IoU \| ([\d.]+) \|")
    found = 0
    for dataset, shot, model, depth, value in pattern.findall(listing.read_text()):
        rows = claimed[
            (claimed["table"] == tables[dataset])
            & (claimed["method"].isin([f"{model}-HM", f"{model}*-HM"]))
            & (claimed["backbone"] == f"resnet{depth}")
            & (claimed["shot"] == int(shot))
        ]
        assert len(rows) == 1 and rows.iloc[0]["miou"] == pytest.approx(float(value)), (dataset, model, depth, shot)
        found += 1
    assert found == 32


def test_missing_claimed_folder_names_the_path(tmp_path):
    from hmrepro.errors import HmreproError

    with pytest.raises(HmreproError, match=re.escape(str(tmp_path / "table2.csv"))):
        load_claimed(2, tmp_path)


# ---------------------------------------------------------------- rendering


@pytest.mark.parametrize("table", TABLE_NUMBERS)
@pytest.mark.parametrize("fmt", FORMATS)
def test_every_table_renders_in_every_format(table, fmt):
    for compare in ([], ["--compare-claimed"]):
        text = _invoke(str(table), "--format", fmt, *compare).stdout
        assert f"Table {table}" in text or fmt == "csv"
        first = load_claimed(table).iloc[0]
        assert first["method"] in text
        if fmt == "markdown":
            assert text.count("\n| ") > ROWS_PER_TABLE[table]
        if fmt == "latex":
            assert r"\begin{tabular}" in text and r"\end{table}" in text


@pytest.mark.parametrize("fmt", ["rich", "markdown", "latex"])
def test_text_formats_show_the_claimed_cells(fmt):
    frame = compare_table(TableQuery(2))
    text = render(frame, 2, fmt)
    for cell in ("44.3", "70.8", "45.7", "50.6", "73.3", "29.6"):
        assert cell in text
    assert "HSNet-HM" in text and "ASNet-HM" in text
    table1 = render(compare_table(TableQuery(1)), 1, fmt)
    assert ("HSNet\\*-HM" if fmt == "markdown" else "HSNet*-HM") in table1


def test_csv_has_the_exact_columns_and_spelling():
    for table in TABLE_NUMBERS:
        frame = _csv(str(table))
        expected = BENCH_CSV_COLUMNS if table == 7 else CSV_COLUMNS
        assert tuple(frame.columns) == expected
        assert len(frame) == ROWS_PER_TABLE[table]
        assert set(frame["shot"].astype(str)) <= {"1", "5"}
        assert set(frame["backbone"]) <= {"resnet50", "resnet101", ""}
    header = _invoke("1", "--format", "csv").stdout.splitlines()[0]
    assert header == ",".join(CSV_COLUMNS)
    assert "claimed_secs_per_image,measured_secs_per_image" in _invoke("7", "--format", "csv").stdout
    assert {"HSNet*-HM", "HSNet*", "PFENet", "VAT-HM"} <= set(_csv("1")["method"])
    assert {"HSNet-HM(Simple Add.)", "HSNet-HM(Reverse)"} <= set(_csv("6")["method"])
    assert "HSNet-FM" in set(_csv("5")["method"])
    row = _row(_csv("1").rename(columns={"claimed_miou": "miou"}), "HSNet*-HM", "resnet101", 1)
    assert row["miou"] == 66.7 and row["claimed_fold0"] == 69.8 and row["claimed_fbiou"] == 77.8
    t7 = _csv("7")
    assert list(t7["claimed_secs_per_image"]) == [0.27, 0.34] and list(t7["backbone"]) == ["", ""]


def test_bad_table_number_exits_2_with_the_allowed_values():
    for bad in ("0", "8"):
        result = runner.invoke(app, ["table", bad])
        assert result.exit_code == 2
        message = re.sub(r"[\s│]+", " ", result.output)
        assert "choose one of 1, 2, 3, 4, 5, 6, 7" in message and "Traceback" not in result.output


def test_missing_results_folder_is_an_error_naming_it(tmp_path):
    result = runner.invoke(app, ["table", "2", "--results", str(tmp_path / "nowhere")])
    assert result.exit_code == 1 and "nowhere" in result.output


def test_output_file(tmp_path):
    out = tmp_path / "t3.md"
    _invoke("3", "--format", "markdown", "--output", str(out))
    assert "87.1" in out.read_text() and "| HSNet-HM |" in out.read_text()


# ---------------------------------------------------------------- records in the cells


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """Records of HSNet-HM ResNet50 COCO 1-shot: official on 4 folds (one superseded), own on 2 folds, and noise."""
    folder = tmp_path_factory.mktemp("results")
    official = [41.5, 45.0, 47.9, 43.2]
    for fold, miou in enumerate(official):
        write_record(_record(fold=fold, miou=miou, fb_iou=71.0, date="2024-02-01T00:00:00+00:00"), folder)
    write_record(_record(fold=0, miou=10.0, fb_iou=10.0, date="2023-12-31T00:00:00+00:00"), folder)  # older
    write_record(_record(fold=0, miou=40.0, origin="own", date="2024-03-01T00:00:00+00:00"), folder)
    write_record(_record(fold=2, miou=46.0, origin="own", date="2024-03-01T00:00:00+00:00"), folder)
    write_record(_record(fold=1, miou=99.0, origin="random"), folder)
    write_record(_record(fold=1, miou=98.0, shot=5, backbone="resnet101", model="vat-hm"), folder)  # no such row
    write_record(_record(fold=0, miou=97.0, kind="domain-shift", benchmark="pascal"), folder)  # Table 4
    return folder


def test_records_land_in_the_verified_and_reproduced_cells(results):
    frame = _csv("2", "--results", str(results))
    row = _row(frame, "HSNet-HM", "resnet50", 1)
    assert row["verified_miou"] == pytest.approx(sum([41.5, 45.0, 47.9, 43.2]) / 4, abs=0.01)
    assert row["verified_fbiou"] == pytest.approx(71.0)
    assert pd.isna(row["reproduced_miou"]) and pd.isna(row["reproduced_fbiou"])  # 2 of 4 folds: no mean
    for method, backbone, shot in [
        ("HSNet-HM", "resnet50", 5),
        ("VAT-HM", "resnet50", 1),
        ("HSNet-HM", "resnet101", 1),
    ]:
        other = _row(frame, method, backbone, shot)
        assert pd.isna(other["verified_miou"]) and pd.isna(other["reproduced_miou"])


def test_compared_view_shows_folds_differences_and_dashes(results):
    text = _invoke("2", "--results", str(results), "--compare-claimed", "--format", "markdown").stdout
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if "| HSNet-HM | HM | 1 | claimed | 41.0 |" in line)
    verified, reproduced = lines[start + 1], lines[start + 2]
    assert (
        "| verified | 41.5 (+0.5) | 45.0 (-0.7) | 47.9 (+1.0) | 43.2 (-0.5) | 44.4 (+0.1) | 71.0 (+0.2) |" in verified
    )
    assert "| reproduced | 40.0 (-1.0) | — | 46.0 (-0.9) | — | — | — |" in reproduced
    vat = next(i for i, line in enumerate(lines) if "| VAT-HM | HM | 1 | claimed |" in line)
    assert lines[vat + 1].count("—") == 6
    pmm = next(i for i, line in enumerate(lines) if "| PMM | quoted [38] | 1 | claimed |" in line)
    assert "| PMM | quoted [38] | 5 | claimed |" in lines[pmm + 1]  # quoted rows: no verified/reproduced lines


def test_summary_view_gives_the_mean_or_the_folds_present(results):
    text = _invoke("2", "--results", str(results), "--format", "markdown").stdout
    row = next(line for line in text.splitlines() if "| HSNet-HM | HM | 1 |" in line)
    assert "44.4 (+0.1)" in row and "— (2/4 folds)" in row
    pmm = next(line for line in text.splitlines() if "| PMM | quoted [38] | 1 |" in line)
    assert "—" not in pmm  # quoted rows: claimed values only


def test_kinds_keep_tables_apart(results):
    table4 = compare_table(TableQuery(4, results_dir=results))
    assert _row(table4, "HSNet-HM", "resnet50", 1)["verified_fold0"] == pytest.approx(97.0)
    assert pd.isna(_row(table4, "HSNet-HM", "resnet50", 1)["verified_miou"])  # fold 0 only: no mean
    table2 = compare_table(TableQuery(2, results_dir=results))
    assert _row(table2, "HSNet-HM", "resnet50", 1)["verified_fold0"] == pytest.approx(41.5)  # newest eval record
    assert pd.isna(
        _row(compare_table(TableQuery(1, results_dir=results)), "HSNet*-HM", "resnet50", 1)["verified_fold0"]
    )


def test_official_baseline_checkpoints_do_not_verify_the_hm_authors_retrained_baseline(tmp_path):
    for fold in range(4):
        write_record(_record(model="hsnet", masking="fm", benchmark="pascal", fold=fold, miou=64.0), tmp_path)
        write_record(
            _record(
                model="hsnet",
                masking="fm",
                benchmark="pascal",
                fold=fold,
                miou=63.0,
                origin="own",
                train_config={"augment": "cats"},  # HSNet*: retrained with augmentation (the row's augment=cats)
            ),
            tmp_path,
        )
    row = _row(_csv("1", "--results", str(tmp_path)), "HSNet*", "resnet50", 1)
    assert pd.isna(row["verified_miou"]) and row["reproduced_miou"] == pytest.approx(63.0)
    summary = _invoke("1", "--results", str(tmp_path), "--format", "markdown").stdout
    assert "| n/a | 63.0 (-1.3) |" in summary


def test_fss_records_match_whatever_their_fold(tmp_path):
    write_record(_record(benchmark="fss", fold=0, miou=87.6, fb_iou=90.0), tmp_path)
    write_record(_record(benchmark="fss", fold=0, miou=86.0, origin="own", shot=5, backbone="resnet101"), tmp_path)
    frame = _csv("3", "--results", str(tmp_path))
    assert _row(frame, "HSNet-HM", "resnet50", 1)["verified_miou"] == pytest.approx(87.6)
    assert _row(frame, "HSNet-HM", "resnet101", 5)["reproduced_miou"] == pytest.approx(86.0)
    assert "87.6 (+0.5)" in _invoke("3", "--results", str(tmp_path)).stdout


def test_bench_records_fill_table_7(tmp_path):
    write_record(_record(model="hsnet", kind="bench", secs_per_image=0.20, miou=0.0), tmp_path)
    write_record(_record(model="hsnet-hm", kind="bench", secs_per_image=0.25, miou=0.0), tmp_path)
    write_record(_record(model="hsnet-hm", kind="eval", secs_per_image=9.0), tmp_path)  # not a bench record
    frame = _csv("7", "--results", str(tmp_path))
    assert list(frame["measured_secs_per_image"]) == [0.2, 0.25]
    text = _invoke("7", "--results", str(tmp_path), "--format", "markdown").stdout
    assert "| 0.250 | 25.0 (-0.9) |" in text


def test_the_cli_knows_the_same_tables_as_the_claimed_numbers():
    from hmrepro.cli import table as table_cli

    assert table_cli.TABLE_NUMBERS == TABLE_NUMBERS  # the CLI keeps a pandas-free copy for a fast refusal

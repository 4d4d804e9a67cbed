"""``hmrepro table N --paper X``: other papers' claimed tables (recipes/claimed/<paper>/), here from a temporary
claimed folder so that the test does not depend on the transcriptions."""

from __future__ import annotations

import io
import re
import shutil

import pandas as pd
import pytest
from typer.testing import CliRunner

from hmrepro.cli.app import app
from hmrepro.cli.table import PaperName
from hmrepro.engine.recipes import recipe_dir
from hmrepro.engine.records import write_record
from hmrepro.errors import HmreproError
from hmrepro.papers import PAPERS
from hmrepro.reporting import TableQuery, compare_table, load_claimed

runner = CliRunner()

CRCNET_TABLE8 = """table,method,ref,source,backbone,benchmark,shot,fold0,fold1,fold2,fold3,miou,model,note
8,CANet,63,quoted,resnet50,pascal,1,52.5,65.9,51.3,51.9,55.4,,
8,CRCNet,,crcnet,resnet50,pascal,1,57.1,65.7,51.4,51.2,56.4,crcnet-test,multi-scale testing
"""
MCE_TABLE2 = """table,method,source,backbone,benchmark,shot,fold0,fold1,fold2,fold3,miou,model
2,MCE,mce,resnet50,coco,1,40.0,45.0,44.0,41.0,42.5,mce-test
"""
# model names no card knows: the records' own default_img_size decides what the full protocol is


@pytest.fixture
def recipes(tmp_path):
    """A recipe folder (HMREPRO_RECIPES) whose claimed/ holds a CRCNet Table 8 and an MCE Table II of two rows."""
    folder = tmp_path / "recipes"
    shutil.copytree(recipe_dir() / "claimed", folder / "claimed", ignore=shutil.ignore_patterns("crcnet", "mce"))
    shutil.copy(recipe_dir() / "hsnet.toml", folder)
    (folder / "claimed" / "crcnet").mkdir()
    (folder / "claimed" / "crcnet" / "table8.csv").write_text(CRCNET_TABLE8)
    (folder / "claimed" / "mce").mkdir()
    (folder / "claimed" / "mce" / "table2.csv").write_text(MCE_TABLE2)
    return folder


def _table(recipes, *args: str, code: int = 0):
    result = runner.invoke(app, ["table", *args], env={"HMREPRO_RECIPES": str(recipes)})
    assert result.exit_code == code, result.output
    return result


def _own_records(folder, model: str, benchmark: str, mious: list[float]) -> None:
    for fold, miou in enumerate(mious):
        write_record(
            dict(
                model=model,
                masking="none",
                backbone="resnet50",
                benchmark=benchmark,
                fold=fold,
                shot=1,
                miou=miou,
                fb_iou=70.0,
                episodes=1000,
                full_episode_set=True,
                protocol="hsnet",
                img_size=321,
                default_img_size=321,
                original_size=False,
                origin="own",
                date="2026-01-01T00:00:00+00:00",
                secs_per_episode=0.1,
                checkpoint_sha256=None,
                git_commit=None,
                versions={},
                device="cpu",
            ),
            folder,
        )


def test_crcnet_table_renders_claimed_and_reproduced_cells_in_every_format(recipes, tmp_path):
    results = tmp_path / "results"
    _own_records(results, "crcnet-test", "pascal", [58.0, 66.0, 52.0, 52.0])
    _own_records(results, "hsnet", "pascal", [10.0, 10.0, 10.0, 10.0])  # no row of this table: ignored
    text = _table(recipes, "8", "--paper", "crcnet", "--format", "csv", "--results", str(results)).stdout
    frame = pd.read_csv(io.StringIO(text))
    assert list(frame["method"]) == ["CANet", "CRCNet"] and list(frame["claimed_fold0"]) == [52.5, 57.1]
    assert pd.isna(frame["reproduced_miou"][0]) and frame["reproduced_miou"][1] == pytest.approx(57.0)
    assert pd.isna(frame["verified_miou"][1])  # no official CRCNet checkpoint exists
    markdown = _table(
        recipes, "8", "--paper", "crcnet", "--format", "markdown", "--compare-claimed", "--results", str(results)
    ).stdout
    assert "CRCNet Table 8: PASCAL-5i" in markdown and "CRCNet = run by the CRCNet authors" in markdown
    assert "| CRCNet | CRCNet | 1 | claimed | 57.1 |" in markdown and "| reproduced | 58.0 (+0.9) |" in markdown
    for fmt in ("latex", "rich"):
        assert "57.1" in _table(recipes, "8", "--paper", "crcnet", "--format", fmt).stdout
    listing = _table(recipes, "8", "--paper", "crcnet", "--all-records", "--format", "csv", "--results", str(results))
    assert listing.stdout.count("\n") == 5 and "hsnet" not in listing.stdout  # header + 4 CRCNet folds


def test_mce_tables_are_named_in_roman_and_the_hm_default_is_unchanged(recipes):
    markdown = _table(recipes, "2", "--paper", "mce", "--format", "markdown").stdout
    assert "MCE Table II: COCO-20i" in markdown and "| MCE | MCE | 1 | 40.0 |" in markdown
    hm = _table(recipes, "2", "--format", "markdown").stdout
    assert hm == _table(recipes, "2", "--paper", "hm", "--format", "markdown").stdout
    assert "**Table 2: COCO-20i" in hm and "Source: HM = run by the HM authors" in hm


def test_unknown_tables_and_papers_are_refused_in_one_line(recipes):
    for args, expected in [
        (
            ["10", "--paper", "crcnet"],
            "the crcnet paper has no table 10 with results; choose one of 1, 2, 3, 4, 5, 6, 7, 8, 9, 11",
        ),
        (["5", "--paper", "mce"], "the mce paper has no table 5 with results; choose one of 1, 2, 3, 4"),
        (["1", "--paper", "pfenet"], "'pfenet' is not one of 'hm', 'crcnet', 'mce'"),
    ]:
        result = _table(recipes, *args, code=2)
        assert expected in re.sub(r"[\s│]+", " ", result.output) and "Traceback" not in result.output
    missing = _table(recipes, "9", "--paper", "crcnet", code=1)
    assert "claimed numbers of crcnet table 9 not found" in re.sub(r"\s+", " ", missing.output)


def test_a_row_must_name_its_own_paper_or_quoted(tmp_path):
    (tmp_path / "table8.csv").write_text(CRCNET_TABLE8.replace(",crcnet,resnet50", ",hm,resnet50"))
    with pytest.raises(HmreproError, match="source other than crcnet, quoted"):
        load_claimed(8, tmp_path, paper="crcnet")
    (tmp_path / "table8.csv").write_text(CRCNET_TABLE8)
    frame = compare_table(TableQuery(8, claimed_folder=tmp_path, paper="crcnet"))
    assert frame.attrs["paper"] == "crcnet" and set(frame["paper"]) == {"crcnet"}


def test_the_cli_and_the_help_know_every_paper():
    assert [p.value for p in PaperName] == list(PAPERS)
    help_text = re.sub(r"[\s│]+", " ", runner.invoke(app, ["table", "--help"]).output)
    assert "--paper" in help_text and "crcnet" in help_text and "mce" in help_text and "[default: hm]" in help_text

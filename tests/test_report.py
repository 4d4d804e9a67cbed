"""``hmrepro report``: the self-contained HTML page of a synthetic results folder, checked as a reader would."""

from __future__ import annotations

import io
import re
import shutil
import subprocess
from html.parser import HTMLParser

import numpy as np
import pandas as pd
import pytest
from test_results import record
from typer.testing import CliRunner

from hmrepro.cli.app import app
from hmrepro.engine.evaluation.per_episode import miou_from_columns
from hmrepro.engine.records import write_record
from hmrepro.engine.runs import write_config, write_metrics
from hmrepro.papers import get_paper
from hmrepro.reporting.report import NOT_RUN, agreement, eval_command, write_report

runner = CliRunner()
SCRIPT = "<script>alert(1)</script>"
MAX_BYTES = 5 * 1024 * 1024


class Tables(HTMLParser):
    """The paper tables of a report: ``{table: [(row attributes, [cell texts])]}``."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[int, list[tuple[dict, list[str]]]] = {}
        self.headers: dict[int, list[str]] = {}
        self._table: int | None = None
        self._cell: list[str] | None = None
        self._header: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "table" and "data-table" in attrs:
            self._table = int(attrs["data-table"])
            self.tables[self._table] = []
            self.headers[self._table] = []
        elif tag == "th" and self._table is not None:
            self._header = []
        elif tag == "tr" and self._table is not None and "data-values" in attrs:
            self.tables[self._table].append((attrs, []))
        elif tag == "td" and self._table is not None and self.tables[self._table]:
            self._cell = []

    def handle_endtag(self, tag):
        if tag == "th" and self._header is not None:
            self.headers[self._table].append("".join(self._header))
            self._header = None
        elif tag == "td" and self._cell is not None:
            self.tables[self._table][-1][1].append("".join(self._cell))
            self._cell = None
        elif tag == "table":
            self._table = None

    def handle_data(self, data):
        for part in (self._cell, self._header):
            if part is not None:
                part.append(data)


def episode_table(hit: int) -> dict:
    """40 episodes of classes 1 and 2 whose foreground IoU is ``hit`` / 4 (class 1) and 1 / 4 (class 2)."""
    episodes = np.arange(40)
    classes = 1 + episodes % 2
    return {
        "episode": episodes,
        "class_id": classes,
        "fg_inter": np.where(classes == 1, hit, 1),
        "fg_union": np.full(40, 4),
        "bg_inter": np.full(40, 90),
        "bg_union": np.full(40, 96),
        "query_fg_fraction": np.linspace(0.01, 0.5, 40),
        "support_fg_fraction": np.linspace(0.02, 0.4, 40),
    }


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """A partial results folder: HSNet*-HM R50 1-shot on PASCAL-5i reproduced on every fold (from a run folder),
    one official fold, a 50-episode check, and a record whose strings carry a script tag."""
    root = tmp_path_factory.mktemp("report")
    run = root / "runs" / "hsnet-hm"
    config = {"model": "hsnet-hm", "benchmark": "pascal", "fold": 0, "backbone": "resnet50", "img_size": 400}
    write_config(run, config | {"epochs": 3, "bsz": 20, "lr": 0.001, "seed": 0, "precision": "fp32"})
    write_metrics(run, [{"epoch": e, "val_miou": 50.0 + 3 * e, "train_loss": 1.0 / (e + 1)} for e in range(3)])
    results = root / "results"
    for fold, miou in enumerate([64.1, 71.5, 62.0, 59.9]):
        write_record(record(fold=fold, miou=miou, run_dir=str(run)), results)
    write_record(record(origin="official", miou=55.0), results)
    write_record(record(episodes=50, full_episode_set=False, miou=10.0, run_dir=str(run)), results)
    write_record(record(model=SCRIPT, device_name=SCRIPT), results)
    for model, masking, hit in (("hsnet", "fm", 2), ("hsnet-hm", "hm", 3)):  # paired, with per-episode results
        table = episode_table(hit)
        miou, fb_iou = miou_from_columns(table, [1, 2])  # what the record says is what its episodes give
        fss = dict(benchmark="fss", img_size=64, episodes=40, total_episodes=40, episodes_sha256="e" * 64)
        fss |= dict(miou=miou, fb_iou=fb_iou, eval_class_ids=[1, 2], per_episode=table)
        write_record(record(model=model, masking=masking, **fss), results)
    output = write_report(results, root / "report.html")
    return {"results": results, "html": output.read_text(encoding="utf-8"), "path": output}


def test_every_table_and_section_is_there(folder):
    html = folder["html"]
    for table in get_paper("hm").tables:
        assert f'id="table-{table}"' in html
    assert 'id="claims"' in html and "Claims checklist (32 results)" in html
    assert 'id="runs"' in html and 'src="data:image/png;base64,' in html  # the training curve, inline
    assert "best epoch</td><td>2 (val mIoU 56.0)" in html
    assert "hmrepro train hsnet-hm --benchmark pascal --fold 0" in html and "--weights" in html
    assert "Environment" in html and "torch" in html


def test_no_external_resource(folder):
    html = folder["html"]
    links = re.findall(r"""(?:src|href)\s*=\s*["']?([^"'\s>]+)""", html, flags=re.IGNORECASE)
    assert links and all(link.startswith(("data:", "#")) for link in links), links
    assert "<link" not in html.lower() and "@import" not in html and "url(" not in html


def test_a_record_string_is_escaped(folder):
    html = folder["html"]
    assert SCRIPT not in html and "<script" not in html.lower()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html


def test_the_file_is_small(folder):
    assert folder["path"].stat().st_size < MAX_BYTES


def test_the_numbers_equal_hmrepro_tables(folder):
    """Every verified and reproduced mIoU the report shows is the one `hmrepro table N --format csv` gives."""
    parser = Tables()
    parser.feed(folder["html"])
    compared = 0
    for table in (1, 2, 3, 4, 5, 6):
        text = runner.invoke(app, ["table", str(table), "--results", str(folder["results"]), "--format", "csv"]).stdout
        csv = pd.read_csv(io.StringIO(text), dtype={"backbone": str}).fillna({"backbone": ""})
        miou_at = parser.headers[table].index("mIoU")
        for attrs, cells in parser.tables[table]:
            if attrs["data-values"] not in ("verified", "reproduced"):
                continue
            line = csv[
                (csv["method"] == attrs["data-method"])
                & (csv["backbone"] == attrs["data-backbone"])
                & (csv["shot"] == int(attrs["data-shot"]))
            ]
            assert len(line) == 1
            expected = line.iloc[0][f"{attrs['data-values']}_miou"]
            shown = cells[miou_at]
            if pd.isna(expected):
                assert shown.startswith((NOT_RUN, "n/a")), (table, attrs, shown)
            else:
                assert shown.split()[0] == f"{expected:.1f}", (table, attrs, shown)
                compared += 1
    assert compared == 1  # HSNet*-HM R50 1-shot reproduced: the one complete mean


def test_a_partial_folder_says_not_run_never_a_number(folder):
    parser = Tables()
    parser.feed(folder["html"])
    rows = [(a, c) for a, c in parser.tables[1] if a["data-method"] == "HSNet*-HM" and a["data-backbone"] == "resnet50"]
    verified = next(c for a, c in rows if a["data-values"] == "verified" and a["data-shot"] == "1")
    assert verified[5].startswith("55.0") and all(cell == NOT_RUN for cell in verified[6:11])
    for attrs, cells in parser.tables[2]:
        if attrs["data-values"] == "reproduced":
            assert all(cell == NOT_RUN for cell in cells[5:-1]), cells


def test_per_class_iou_and_the_small_object_figure(folder):
    html = folder["html"]
    assert 'id="per-class"' in html
    assert "hsnet-hm fss fold 0 1-shot</td><td>1: 75.0, 2: 25.0" in html
    assert "hsnet fss fold 0 1-shot</td><td>1: 50.0, 2: 25.0" in html
    section = html.split('id="small-objects"', 1)[1]
    assert "hsnet vs hsnet-hm, fss fold 0" in section and 'src="data:image/png;base64,' in section


def test_missing_measurements_read_not_run(folder):
    parser = Tables()
    parser.feed(folder["html"])
    bench = parser.tables[7]
    at = parser.headers[7].index("Measured secs/image")
    assert bench and all(cells[at] == NOT_RUN for _, cells in bench)


def test_eval_command_repeats_what_the_record_did():
    quick = eval_command(record(episodes=50, full_episode_set=False, run_dir="/runs/a b", precision="bf16"))
    assert quick.startswith("hmrepro eval hsnet-hm --benchmark pascal --fold 0 --shot 1 --backbone resnet50")
    assert "--weights '/runs/a b'" in quick and "--episodes 50" in quick and quick.endswith("--amp")
    assert "--episodes" not in eval_command(record(run_dir="/runs/a"))
    synthetic = eval_command(record(run_dir="/r", data_root="/syn", splits="/syn/splits"))
    assert synthetic.endswith("--data-root /syn --splits /syn/splits")
    assert "--splits" not in eval_command(record(run_dir="/r", data_root="/data", splits="packaged"))


def test_agreement_colours():
    assert agreement("64.4 (-0.6)") == "agree" and agreement("62.0 (+2.7)") == "disagree"
    assert agreement("64.4 (-0.6) [63.0, 64.5]") == "disagree" and agreement("64.4 (-0.6) [63.0, 66.0]") == "agree"
    assert agreement(NOT_RUN) == "notrun" and agreement("n/a") == ""


def test_cli_writes_the_report_of_an_empty_folder(tmp_path):
    out, empty = tmp_path / "r" / "report.html", tmp_path / "results"
    empty.mkdir()
    result = runner.invoke(app, ["report", "--results", str(empty), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert out.is_file() and str(out) in result.stdout
    html = out.read_text(encoding="utf-8")
    assert "0 result record(s)" in html and "32 not yet run" in html


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.slow
def test_report_renders_in_chromium(folder, tmp_path):
    """A real browser opens the page without network and paints it (the screenshot is left for a person)."""
    browser = _chromium()
    if browser is None:
        pytest.skip("no chromium on PATH: run scripts/install_chromium.sh (apt-get install chromium) to check this")
    shot = tmp_path / "report.png"
    args = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"]
    args += [f"--screenshot={shot}", "--window-size=1280,2000", folder["path"].as_uri()]
    subprocess.run(args, capture_output=True, timeout=120, check=False)
    assert shot.is_file() and shot.stat().st_size > 10_000
    from PIL import Image

    with Image.open(shot) as image:
        assert image.size == (1280, 2000)
        colours = image.convert("RGB").resize((64, 100)).getcolors(64 * 100)
    assert colours is not None and len(colours) > 5  # more than a blank page

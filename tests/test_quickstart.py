"""``hmrepro quickstart --fast``: the whole pipeline on a fresh folder, no download, no GPU, in well under a minute."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from hmrepro.cli.app import app

pytestmark = pytest.mark.slow  # end-to-end: the quickstart trains, evaluates and explains

runner = CliRunner()


def test_quickstart_fast_trains_evaluates_and_explains(tmp_path):
    result = runner.invoke(app, ["quickstart", "--fast", "--workdir", str(tmp_path), "--no-progress", "--workers", "0"])
    assert result.exit_code == 0, result.output
    out = " ".join(result.output.split())
    assert "nothing about the paper's claims" in out
    assert "hsnet-hm" in out and "hmrepro train hsnet-hm --benchmark pascal" in out
    (session,) = (tmp_path / "quickstart").iterdir()
    for model in ("hsnet", "hsnet-hm"):
        run = session / "runs" / model
        assert (run / "best_model.pt").is_file() and (run / "metrics.jsonl").is_file()
        assert json.loads((run / "config.json").read_text())["pretrained"] is False
    records = [json.loads(p.read_text()) for p in (session / "results").glob("*.json")]
    assert sorted(r["model"] for r in records) == ["hsnet", "hsnet-hm"]
    assert {r["masking"] for r in records} == {"fm", "hm"}
    assert (tmp_path / "splits" / "SHA256SUMS").is_file()  # the synthetic benchmark was written there
    report = session / "report.html"  # the quickstart ends with the report of its own runs, and says where
    assert report.is_file() and str(report) in "".join(result.output.split())
    html = report.read_text(encoding="utf-8")
    assert "Claims checklist" in html and 'src="data:image/png;base64,' in html and "hsnet-hm" in html

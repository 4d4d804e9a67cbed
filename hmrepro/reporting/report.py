"""``hmrepro report``: one self-contained HTML page a reader can check without hmrepro.

The page holds, for one paper (:mod:`hmrepro.papers`):

- the environment that wrote it (hmrepro version and commit, torch, device) and the machines of the records;
- the claims checklist: each headline result of the paper (for HM: the 32 HM rows of Tables 1-4, its
  Papers-with-Code listing) as verified / reproduced, within the 95 % interval / outside, or not yet run;
- every table of the paper as ``hmrepro table N --compare-claimed --ci`` computes it
  (:func:`~hmrepro.reporting.tables.compare_table`, :func:`~hmrepro.reporting.render.build_view`): claimed,
  verified and reproduced side by side, each measured cell with its interval, HM's gains; a cell without a
  record says "not run", never a number; cells coloured by agreement with the claim;
- every training run a record names: its curve (PNG, inline), best epoch, recipe and deviations from the
  authors', checkpoint hash and the commands that reproduce it; every record with the cell it fills or why not;
- per-class IoU of each evaluation with per-episode results, the small-object figure (IoU per object size) of
  each HM evaluation paired with its baseline's on the same episodes, and the faithfulness table
  (``docs/faithfulness.md``).

Everything read from disk is HTML-escaped; the page loads nothing (no network, no external CSS, JS or fonts).
"""

from __future__ import annotations

import base64
import html
import re
import shlex
import tempfile
from pathlib import Path

import pandas as pd

from ..engine.records import precision_of, read_records
from ..papers import get_paper
from .render import NO_RECORD, build_view
from .results import records_frame
from .tables import TableQuery, compare_table

NOT_RUN = "not run"
AGREEMENT_POINTS = 1.0  # without an interval, a value within this many points of the claim agrees
HEADLINE_TABLES = {"hm": (1, 2, 3, 4)}  # the tables of a paper's headline claims (other papers: all tables)
DEVIATION_KEYS = ("img_size", "epochs", "bsz", "lr", "augment", "precision", "pretrained", "epoch_iterations")
TRAIN_FLAGS = {
    "img_size": "--img-size",
    "epochs": "--epochs",
    "bsz": "--bsz",
    "lr": "--lr",
    "augment": "--augment",
    "precision": "--amp",
    "epoch_iterations": "--epoch-iterations",
    "seed": "--seed",
}
FAITHFULNESS = Path(__file__).resolve().parents[2] / "docs" / "faithfulness.md"
STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:1.5em;color:#222}
h1{font-size:1.5em}h2{font-size:1.2em;border-bottom:1px solid #ccc;margin-top:2em}h3{font-size:1em}
table{border-collapse:collapse;margin:.5em 0;font-size:12px;display:block;overflow-x:auto;max-width:100%}
th,td{border:1px solid #ddd;padding:2px 6px;text-align:left;vertical-align:top}
th{background:#f0f0f0}td.num{text-align:right;white-space:nowrap}
tr.claimed td{background:#fafafa}tr.section-end td{border-bottom:2px solid #999}
td.agree{background:#d9f2d9}td.disagree{background:#f8d4d4}td.notrun{color:#888;font-style:italic}
.legend{font-size:11px;color:#555;max-width:1200px}code{font-size:11px;word-break:break-all}
.status-verified,.status-reproduced,.status-within{background:#d9f2d9}.status-outside{background:#f8d4d4}
.status-notrun{color:#888;font-style:italic}img{max-width:700px;border:1px solid #eee}
"""


# ---------------------------------------------------------------------------------------------------------------
# The page
# ---------------------------------------------------------------------------------------------------------------


def build_report(results_dir: Path | None, *, paper: str = "hm", claimed_folder: Path | None = None) -> str:
    """The HTML of the report of the records below ``results_dir`` (None: no records) for ``paper``."""
    spec = get_paper(paper)
    problems: list[str] = []
    records = list(read_records(Path(results_dir), problems)) if results_dir is not None else []
    frames = {
        table: compare_table(TableQuery(table, records=records, claimed_folder=claimed_folder, paper=paper), ci=True)
        for table in spec.tables
    }
    listing = records_frame(records, paper=paper)
    sections = [
        f"<h1>Reproduction report: {_e(spec.title)}</h1>",
        f"<p>Results folder: <code>{_e(results_dir if results_dir is not None else 'none')}</code>; "
        f"{len(records)} result record(s).</p>",
        _skipped_section(problems),
        _environment_section(listing),
        _checklist_section(frames, paper),
        *(_table_section(frames[table], table) for table in spec.tables),
        _runs_section(records, listing),
        _records_section(listing),
        _per_class_section(records),
        _small_objects_section(records),
        _faithfulness_section(),
    ]
    body = "\n".join(s for s in sections if s)
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>hmrepro report: {_e(spec.label)}</title><style>{STYLE}</style></head>\n"
        f"<body>\n{body}\n</body></html>\n"
    )


def write_report(
    results_dir: Path | None, output: Path, *, paper: str = "hm", claimed_folder: Path | None = None
) -> Path:
    """Write the report atomically to ``output`` and return its path."""
    from ..atomic import atomic_write_text

    text = build_report(results_dir, paper=paper, claimed_folder=claimed_folder)
    atomic_write_text(Path(output), text, what="report")
    return Path(output)


def _e(value) -> str:
    """Text for HTML (every string from a record or file goes through here)."""
    return html.escape("" if value is None or value is pd.NA else str(value), quote=True)


def _table(headers: list[str], rows: list[list[str]], *, escaped: bool = False, attrs: str = "") -> str:
    """A plain HTML table; cells are escaped unless ``escaped`` says they are HTML already."""
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{c if escaped else _e(c)}</td>" for c in row) + "</tr>\n" for row in rows)
    return f"<table{attrs}><thead><tr>{head}</tr></thead><tbody>\n{body}</tbody></table>"


def _skipped_section(problems: list[str]) -> str:
    if not problems:
        return ""
    items = "".join(f"<li>{_e(p)}</li>" for p in problems)
    return f"<h2>Record files not used</h2><ul>{items}</ul>"


# ---------------------------------------------------------------------------------------------------------------
# Environment
# ---------------------------------------------------------------------------------------------------------------


def environment() -> dict[str, str]:
    """hmrepro version and commit, torch version and the device of the machine writing the report."""
    from .. import __version__
    from ..engine.records import git_commit

    info = {"hmrepro": __version__, "git commit": git_commit() or "unknown (not a git checkout)"}
    try:
        import torch

        info["torch"] = torch.__version__
        info["device"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu (no CUDA device)"
    except ImportError:  # pragma: no cover - torch is a dependency
        info["torch"] = info["device"] = "torch not importable"
    return info


def _environment_section(listing: pd.DataFrame) -> str:
    rows = [[key, value] for key, value in environment().items()]
    machines = ""
    if len(listing):
        keys = ["hmrepro_version", "git_commit", "torch_version", "device", "device_name"]
        counts = listing[keys].astype(str).value_counts().reset_index()
        machines = "<h3>Where the records were computed</h3>" + _table(
            ["hmrepro", "git commit", "torch", "device", "device name", "records"],
            [[*map(str, r[:-1]), str(r[-1])] for r in counts.itertuples(index=False)],
        )
    return "<h2>Environment</h2><p>This report was written with:</p>" + _table(["", ""], rows) + machines


# ---------------------------------------------------------------------------------------------------------------
# Claims checklist
# ---------------------------------------------------------------------------------------------------------------


def claims(frames: dict[int, pd.DataFrame], paper: str = "hm") -> pd.DataFrame:
    """The paper's headline claims with their status: rows its authors ran of its headline tables (for HM: the
    HM variants of Tables 1-4, the results of its Papers-with-Code page)."""
    spec = get_paper(paper)
    tables = HEADLINE_TABLES.get(paper, spec.tables)
    parts = []
    for table in tables:
        frame = frames[table]
        own = frame[(frame["source"] == spec.key) & frame["reproduced_applicable"].astype(bool)]
        if paper == "hm":
            own = own[own["method"].str.endswith("-HM")]
        parts.append(own.assign(claim_table=table))
    out = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
    out["status"] = [claim_status(row) for _, row in out.iterrows()]
    return out


def claim_status(row: pd.Series) -> str:
    """``verified``/``reproduced`` with ``within the interval``/``outside`` where an interval exists, else ``not yet
    run`` (verified takes precedence: the authors' own checkpoint)."""
    for prefix in ("verified", "reproduced"):
        value = row.get(f"{prefix}_miou")
        if not row.get(f"{prefix}_applicable") or _missing(value):
            continue
        low, high = row.get(f"{prefix}_miou_low"), row.get(f"{prefix}_miou_high")
        if _missing(low) or _missing(high):
            return prefix
        inside = float(low) <= float(row["miou"]) <= float(high)
        return f"{prefix}, {'within the interval' if inside else 'outside the interval'}"
    return "not yet run"


def _checklist_section(frames: dict[int, pd.DataFrame], paper: str) -> str:
    spec = get_paper(paper)
    table = claims(frames, paper)
    rows = []
    for _, row in table.iterrows():
        status = row["status"]
        css = "notrun" if status == "not yet run" else ("outside" if "outside" in status else "within")
        rows.append(
            [
                _e(spec.table_label(int(row["claim_table"]))),
                _e(row["method"]),
                _e(row["backbone"]),
                _e(row["benchmark"]),
                _e(row["shot"]),
                _e(_number(row["miou"])),
                _e(_measured(row, "verified")),
                _e(_measured(row, "reproduced")),
                f'<span class="status-{css}">{_e(status)}</span>',
            ]
        )
    counts = table["status"].value_counts().to_dict() if len(table) else {}
    summary = ", ".join(f"{n} {_e(s)}" for s, n in counts.items())
    headers = ["Table", "Method", "Backbone", "Benchmark", "Shot", "Claimed mIoU", "Verified", "Reproduced", "Status"]
    return (
        f'<h2 id="claims">Claims checklist ({len(table)} results)</h2><p>{summary}</p>'
        + _table(headers, rows, escaped=True, attrs=' class="claims"')
        + "<p class=\"legend\">Verified: the authors' checkpoint evaluated by hmrepro; reproduced: hmrepro's own "
        "training; within / outside: whether the claimed mean mIoU lies in the measured cell's 95 % bootstrap "
        "interval over the episodes (records with per-episode results only).</p>"
    )


def _measured(row: pd.Series, prefix: str) -> str:
    if not row.get(f"{prefix}_applicable"):
        return "n/a"
    value = row.get(f"{prefix}_miou")
    if _missing(value):
        return NOT_RUN
    low, high = row.get(f"{prefix}_miou_low"), row.get(f"{prefix}_miou_high")
    interval = "" if _missing(low) else f" [{low:.1f}, {high:.1f}]"
    return f"{value:.1f}{interval}"


# ---------------------------------------------------------------------------------------------------------------
# The paper's tables
# ---------------------------------------------------------------------------------------------------------------

_MEASURED = re.compile(r"^(-?\d+(?:\.\d+)?) \(([+-]\d+(?:\.\d+)?)\)(?: \[(-?\d+(?:\.\d+)?), (-?\d+(?:\.\d+)?)\])?")


def agreement(text: str) -> str:
    """The CSS class of a measured cell's text ``64.9 (-0.1) [63.1, 65.0]``: ``agree`` when the claim lies in the
    interval (without one: within ``AGREEMENT_POINTS``), ``disagree`` otherwise, ``notrun``, or empty."""
    if text.startswith(NOT_RUN):
        return "notrun"
    match = _MEASURED.match(text)
    if not match:
        return ""
    value, diff = float(match.group(1)), float(match.group(2))
    if match.group(3) is not None:
        inside = float(match.group(3)) <= value - diff <= float(match.group(4))
    else:
        inside = abs(diff) <= AGREEMENT_POINTS
    return "agree" if inside else "disagree"


def _not_run(text: str) -> str:
    """A view cell with "not run" where it says "no record" (never a number in its place)."""
    return NOT_RUN + text[len(NO_RECORD) :] if text.startswith(NO_RECORD) else text


def _table_section(frame: pd.DataFrame, table: int) -> str:
    view = build_view(frame, table, compare=True)
    values_at = view.headers.index("Values") if "Values" in view.headers else None
    position = -1
    rows = []
    for index, cells in enumerate(view.rows):
        kind = cells[values_at] if values_at is not None else "claimed"
        position += kind == "claimed" or values_at is None
        rows.append(_table_row(frame.iloc[position], cells, kind, view.numeric_columns, index in view.section_ends))
    head = "".join(f"<th>{_e(h)}</th>" for h in view.headers)
    notes = "".join(f"<li>[{i}] {_e(n)}</li>" for i, n in enumerate(view.notes, 1))
    return (
        f'<h2 id="table-{table}">{_e(view.title)}</h2>'
        f'<table class="paper-table" data-table="{table}"><thead><tr>{head}</tr></thead><tbody>\n'
        + "".join(rows)
        + f'</tbody></table><p class="legend">{_e(view.legend)} Not run: no full-protocol record yet. Green: the '
        f"claim lies in the 95 % interval (without one: within {AGREEMENT_POINTS:.0f} point); red: it does not.</p>"
        + (f'<ul class="legend">{notes}</ul>' if notes else "")
    )


def _table_row(row: pd.Series, cells: list[str], kind: str, numeric: set[int], section_end: bool) -> str:
    classes = " ".join(c for c in ("claimed" if kind == "claimed" else "", "section-end" if section_end else "") if c)
    attrs = (
        f' class="{classes}" data-values="{_e(kind)}" data-method="{_e(row["method"])}" '
        f'data-backbone="{_e(row["backbone"])}" data-shot="{_e(row["shot"])}"'
    )
    tds = []
    for i, text in enumerate(cells):
        text = _not_run(text)  # claimed values never read "—" (the paper's blanks are "-")
        css = ["num"] if i in numeric else []
        if kind in ("verified", "reproduced") and i in numeric:
            css.append(agreement(text))
        elif text.endswith("gain inside") or text.endswith("gain outside"):
            css.append("agree" if text.endswith("inside") else "disagree")
        css_attr = f' class="{" ".join(c for c in css if c)}"' if any(css) else ""
        tds.append(f"<td{css_attr}>{_e(text)}</td>")
    return f"<tr{attrs}>{''.join(tds)}</tr>\n"


# ---------------------------------------------------------------------------------------------------------------
# Runs and records
# ---------------------------------------------------------------------------------------------------------------


def _runs_section(records: list[dict], listing: pd.DataFrame) -> str:
    run_dirs = list(dict.fromkeys(str(r["run_dir"]) for r in records if r.get("run_dir")))
    if not run_dirs:
        return '<h2 id="runs">Training runs</h2><p>No record names a training run folder (no own training yet).</p>'
    parts = ['<h2 id="runs">Training runs</h2>']
    for run_dir in run_dirs:
        behind = [r for r in records if str(r.get("run_dir")) == run_dir]
        parts.append(run_block(Path(run_dir), behind, listing))
    return "\n".join(parts)


def run_block(run_dir: Path, records: list[dict], listing: pd.DataFrame) -> str:
    """One run: its curve, best epoch, recipe and deviations, checkpoint hash and commands."""
    from ..engine import runs

    problems: list[str] = []
    try:
        config = runs.read_config(run_dir)
        metrics = runs.read_metrics(run_dir, problems)
    except Exception as err:  # a run folder moved or damaged: the report still renders
        return f"<h3>{_e(run_dir)}</h3><p>cannot be read: {_e(err)}</p>"
    best = max((m for m in metrics if m.get("val_miou") is not None), key=lambda m: m["val_miou"], default=None)
    cells = sorted(set(listing.loc[listing["run_dir"] == str(run_dir), "cells"].dropna()) - {""})
    facts = [
        [
            "model",
            f"{config.get('model')} {config.get('backbone', '')} on {config.get('benchmark')} "
            f"fold {config.get('fold')}",
        ],
        ["best epoch", f"{best['epoch']} (val mIoU {best['val_miou']:.1f})" if best else "no finished epoch"],
        ["recipe", str(config.get("recipe", ""))],
        ["deviations from the authors' recipe", "; ".join(deviations(config)) or "none"],
        ["checkpoint sha256", ", ".join(sorted({str(r.get("checkpoint_sha256")) for r in records}))],
        ["cells it fills", "; ".join(cells) or "none"],
        ["train command", train_command(config)],
        *(["eval command", command] for command in dict.fromkeys(eval_command(r) for r in records)),
    ]
    rows = [[_e(k), f"<code>{_e(v)}</code>" if k.endswith("command") else _e(v)] for k, v in facts]
    rows += [["warning", _e(p)] for p in problems]
    return f"<h3>{_e(run_dir)}</h3>" + _curve(run_dir) + _table(["", ""], rows, escaped=True)


def deviations(config: dict) -> list[str]:
    """Where a run's configuration differs from the authors' recipe for its model and benchmark."""
    from ..engine.recipes import resolve

    try:
        authors = resolve(str(config.get("model")), str(config.get("benchmark")))
    except Exception as err:  # an unknown model or recipe: say so instead
        return [f"recipe unknown ({err})"]
    authors.update(precision="fp32", pretrained=True, epoch_iterations=0)
    return [
        f"{key} {config[key]} (authors {authors[key]})"
        for key in DEVIATION_KEYS
        if key in config and key in authors and config[key] != authors[key]
    ]


def train_command(config: dict) -> str:
    """The ``hmrepro train`` command that repeats the run (its deviations as flags)."""
    words = ["hmrepro", "train", str(config.get("model")), "--benchmark", str(config.get("benchmark"))]
    words += ["--fold", str(config.get("fold", 0)), "--backbone", str(config.get("backbone", "resnet50"))]
    deviating = {d.split(" ", 1)[0] for d in deviations(config)}
    for key, flag in TRAIN_FLAGS.items():
        if key in config and (key in deviating or key == "seed"):
            words += [flag, str(config[key])]
    if "pretrained" in deviating:
        words.append("--no-pretrained")
    return shlex.join(words + _data_flags(config.get("data_root"), config.get("splits")))


def _data_flags(data_root, splits) -> list[str]:
    """``--data-root`` / ``--splits`` where a run or record names its own (the synthetic benchmark, a moved copy)."""
    words = ["--data-root", str(data_root)] if data_root else []
    return words + (["--splits", str(splits)] if splits and splits != "packaged" else [])


def eval_command(record: dict) -> str:
    """The ``hmrepro eval`` command that repeats a record's evaluation."""
    weights = record.get("run_dir") or record.get("weights") or "official"
    words = ["hmrepro", "eval", str(record.get("model")), "--benchmark", str(record.get("benchmark"))]
    words += ["--fold", str(record.get("fold")), "--shot", str(record.get("shot"))]
    words += ["--backbone", str(record.get("backbone")), "--weights", str(weights)]
    if record.get("img_size") is not None:
        words += ["--img-size", str(record.get("img_size"))]
    if record.get("full_episode_set") is False and record.get("episodes") is not None:
        words += ["--episodes", str(record.get("episodes"))]
    if record.get("episode_seed"):
        words += ["--episode-seed", str(record.get("episode_seed"))]
    if record.get("original_size"):
        words.append("--original-size")
    if precision_of(record) != "fp32":
        words.append("--amp")
    return shlex.join(words + _data_flags(record.get("data_root"), record.get("splits")))


def _curve(run_dir: Path) -> str:
    """The run's training curve as an inline PNG (empty when it has no finished epoch)."""
    from ..errors import HmreproError
    from .figures import plot_training_profile

    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = plot_training_profile([run_dir], Path(tmp) / "curve.png", dpi=70)
        except HmreproError as err:
            return f"<p>no training curve: {_e(err)}</p>"
        data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<p><img alt="training curve of {_e(run_dir.name)}" src="data:image/png;base64,{data}"></p>'


def _records_section(listing: pd.DataFrame) -> str:
    if not len(listing):
        return '<h2 id="records">Result records</h2><p>No result records.</p>'
    headers = [
        "Model",
        "Backbone",
        "Benchmark",
        "Fold",
        "Shot",
        "Origin",
        "Precision",
        "Img",
        "Episodes",
        "mIoU",
        "FB-IoU",
        "Checkpoint sha256",
        "Date",
        "Cell / why not",
        "File",
    ]
    rows = []
    for _, r in listing.iterrows():
        status = r["cells"] if r["fills_cell"] else f"not shown: {r['why_not']}"
        rows.append(
            [r["model"], r["backbone"], r["benchmark"], r["fold"], r["shot"], r["origin"], r["precision"],
             r["img_size"], r["episodes"], _number(r["miou"]), _number(r["fb_iou"]),
             str(r["checkpoint_sha256"] or "")[:16], r["date"], status, r["path"]]
        )  # fmt: skip
    rows = [["" if _missing(c) else c for c in row] for row in rows]
    return '<h2 id="records">Result records</h2>' + _table(headers, rows)


def _per_class_section(records: list[dict]) -> str:
    from ..engine.records import read_episode_table
    from ..errors import HmreproError

    rows = []
    for record in records:
        if not record.get("per_episode_file"):
            continue
        try:
            _, table, class_ids = read_episode_table(Path(record["path"]))
        except HmreproError as err:
            rows.append([record.get("path"), f"per-episode results unusable: {err}"])
            continue
        label = f"{record.get('model')} {record.get('benchmark')} fold {record.get('fold')} {record.get('shot')}-shot"
        rows.append([label, ", ".join(f"{c}: {v:.1f}" for c, v in per_class_iou(table, class_ids).items())])
    if not rows:
        return ""
    return '<h2 id="per-class">Per-class IoU (class id: IoU %)</h2>' + _table(["Evaluation", "Per-class IoU"], rows)


def per_class_iou(table: dict, class_ids: list[int]) -> dict[int, float]:
    """Summed foreground intersection over summed union per class, in % (the classes mIoU averages over)."""
    import numpy as np

    classes, inter, union = (np.asarray(table[k]) for k in ("class_id", "fg_inter", "fg_union"))
    out = {}
    for c in class_ids:
        u = union[classes == c].sum()
        out[int(c)] = float(inter[classes == c].sum() / u * 100.0) if u else 0.0
    return out


def paired_sets(records: list[dict]) -> list[tuple[dict, dict]]:
    """(baseline record, HM record) pairs with per-episode results on the same episodes: an HM model's evaluation
    and its family's baseline (``card_of(model).family``) on the same benchmark, fold, shot and backbone (newest
    baseline of those with the same ``episodes_sha256``)."""
    from ..models.cards import card_of

    pairs = []
    with_episodes = [r for r in records if r.get("per_episode_file") and r.get("path")]
    for hm in with_episodes:
        if not str(hm.get("masking", "")).startswith("hm"):
            continue
        try:
            family = card_of(str(hm.get("model"))).family
        except Exception:  # a model this hmrepro does not know
            continue
        keys = ("benchmark", "fold", "shot", "backbone", "episodes_sha256", "kind")
        bases = [r for r in with_episodes if r.get("model") == family and all(r.get(k) == hm.get(k) for k in keys)]
        if bases:
            pairs.append((max(bases, key=lambda r: str(r.get("date"))), hm))
    return pairs


def _small_objects_section(records: list[dict]) -> str:
    """IoU per object-size bin of each paired (baseline, HM) evaluation (``hmrepro analyze sizes``), inline PNGs."""
    from ..errors import HmreproError
    from .paired import load_record
    from .sizes import analyze_sizes, plot_sizes

    pairs = paired_sets(records)
    if not pairs:
        return (
            '<h2 id="small-objects">Small objects</h2><p>No HM evaluation has a paired baseline evaluation with '
            "per-episode results (same episodes), so there is no small-object figure.</p>"
        )
    parts = ['<h2 id="small-objects">Small objects: IoU per object size, baseline vs HM</h2>']
    for base, hm in pairs:
        title = f"{base.get('model')} vs {hm.get('model')}, {hm.get('benchmark')} fold {hm.get('fold')}"
        try:
            analysis = analyze_sizes([[load_record(base["path"])], [load_record(hm["path"])]], resamples=500)
            with tempfile.TemporaryDirectory() as tmp:
                data = plot_sizes(analysis, Path(tmp) / "sizes.png", title=title, dpi=70).read_bytes()
        except (HmreproError, ValueError) as err:
            parts.append(f"<p>{_e(title)}: no figure ({_e(err)})</p>")
            continue
        encoded = base64.b64encode(data).decode("ascii")
        parts.append(f'<h3>{_e(title)}</h3><p><img alt="{_e(title)}" src="data:image/png;base64,{encoded}"></p>')
    return "\n".join(parts)


def _faithfulness_section() -> str:
    if not FAITHFULNESS.is_file():
        return "<h2>Faithfulness</h2><p>docs/faithfulness.md is not part of this installation.</p>"
    lines = [line for line in FAITHFULNESS.read_text(encoding="utf-8").splitlines() if line.startswith("|")]
    cells = [[c.strip().replace("`", "") for c in line.strip().strip("|").split("|")] for line in lines]
    cells = [row for row in cells if not all(set(c) <= set("-: ") for c in row)]
    if not cells:
        return ""
    return '<h2 id="faithfulness">Faithfulness: where hmrepro differs from the authors</h2>' + _table(
        cells[0], cells[1:]
    )


def _number(value) -> str:
    return "" if _missing(value) else f"{float(value):.1f}"


def _missing(value) -> bool:
    if value is None or value is pd.NA:
        return True
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False

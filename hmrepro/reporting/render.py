"""Render a compared table (:func:`hmrepro.reporting.tables.compare_table`) as rich, Markdown, CSV or LaTeX.

The rich, Markdown and LaTeX forms share one :class:`TableView` (title, headers, rows of text, notes).
Two layouts: the *summary* shows the claimed row with the verified and reproduced mean mIoU next to it; the
*comparison* (``--compare-claimed``) adds, under each row the HM authors ran, a verified and a reproduced line
with every fold, the mean and FB-IoU, each followed by its difference to the claimed value.
Cell conventions: ``-`` the paper prints no value; ``—`` no result record yet; ``n/a`` nothing to verify (no
official checkpoint published); quoted rows show their claimed values only.

:func:`build_records_view` / :func:`render_records` show a record listing
(:func:`hmrepro.reporting.tables.record_listing`, ``hmrepro table N --all-records``) in the same formats.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass, field

import pandas as pd

from ..papers import Paper, get_paper
from ..safetext import safe_text
from .claimed import FOLD_COLUMNS
from .tables import LISTING_COLUMNS, record_kind

FORMATS = ("rich", "markdown", "csv", "latex")
NO_RECORD = "—"
NOT_PRINTED = "-"
NOT_APPLICABLE = "n/a"
BACKBONE_NAMES = {"resnet50": "ResNet50", "resnet101": "ResNet101", "vgg16": "VGG16"}
VALUE_HEADERS = {
    "fold0": "fold0",
    "fold1": "fold1",
    "fold2": "fold2",
    "fold3": "fold3",
    "miou": "mIoU",
    "fb_iou": "FB-IoU",
}
LEGEND = (
    "Source: HM = run by the HM authors; quoted [n] = copied by the paper from its reference [n] (claimed values "
    "only, except the baselines HSNet, VAT and ASNet, which hmrepro verifies and reproduces). Verified = the "
    "authors' official checkpoints (recognised by sha256) evaluated by hmrepro; reproduced = "
    "hmrepro's own training runs; only full-protocol records of the row's run count (all episodes, the model's image "
    "size, fp32; the row's settings and defaults, the paper's episode protocol; --all-records lists the others). "
    "(±x) = difference to the claimed value; [a, b] = 95 % bootstrap interval over "
    "the episodes (--ci); ± s (n seeds) = standard deviation over training seeds; gain over X = reproduced HM − "
    "reproduced X [paired 95 % interval over the records the cells show, each seed's for a mean over seeds, --ci] "
    "vs the claimed gain. — no result record; n/a no official "
    "checkpoint; - not printed."
)
RECORDS_LEGEND = (
    "Every result record of the table's rows. Cell: the cell the record fills; otherwise why it fills none. Only "
    "full-protocol records (every episode of the fold, the model's default image size, fp32, network resolution) "
    "of the row's run (its overrides and the defaults: model arguments, training switches, test-time options; the "
    "paper's episode protocol) of origin official (verified) or own (reproduced) fill a cell, the newest of them per "
    "fold; a record that is no row's run is listed under the rows it differs from least."
)
RECORDS_HEADERS = {
    "method": "Method",
    "backbone": "Backbone",
    "shot": "Shot",
    "fold": "Fold",
    "origin": "Origin",
    "miou": "mIoU",
    "episodes": "Episodes",
    "precision": "Precision",
    "img_size": "Img",
    "date": "Date",
    "status": "Cell / why not",
    "path": "File",
}

CSV_COLUMNS = (
    "table",
    "method",
    "backbone",
    "shot",
    "claimed_fold0",
    "claimed_fold1",
    "claimed_fold2",
    "claimed_fold3",
    "claimed_miou",
    "claimed_fbiou",
    "verified_miou",
    "verified_fbiou",
    "reproduced_miou",
    "reproduced_fbiou",
)
BENCH_CSV_COLUMNS = (*CSV_COLUMNS, "claimed_secs_per_image", "measured_secs_per_image")


@dataclass
class TableView:
    """A table as text cells, ready for any text format."""

    title: str
    headers: list[str]
    rows: list[list[str]] = field(default_factory=list)
    section_ends: set[int] = field(default_factory=set)  # rows after which a group (backbone) ends
    numeric_columns: set[int] = field(default_factory=set)
    notes: list[str] = field(default_factory=list)
    legend: str = LEGEND


# ---------------------------------------------------------------- building the view


def paper_of(frame: pd.DataFrame) -> Paper:
    """The paper of a compared table or listing (``frame.attrs['paper']``, set by the reporting functions)."""
    return get_paper(frame.attrs.get("paper", "hm"))


def build_view(frame: pd.DataFrame, table: int, compare: bool = False) -> TableView:
    """The text cells of a compared table: the summary layout, or the comparison layout when ``compare``."""
    paper = paper_of(frame)
    title = f"{_paper_prefix(paper)}{paper.table_label(table)}: {paper.captions[table]}"
    if record_kind(table, paper.key) == "bench":
        return _bench_view(frame, title)
    values = value_columns(frame)
    lead = ["Backbone", "Method", "Source", "Shot"]
    if compare:
        headers = [*lead, "Values", *(VALUE_HEADERS[c] for c in values), "Note"]
    else:
        headers = [*lead, *(VALUE_HEADERS[c] for c in values), "Verified mIoU", "Reproduced mIoU", "Note"]
    view = TableView(title=title, headers=headers, legend=_legend(paper))
    view.numeric_columns = {i for i, h in enumerate(headers) if h in VALUE_HEADERS.values() or h.endswith("mIoU")}
    for position, (_, row) in enumerate(frame.iterrows()):
        note = _note_marker(row["note"], view.notes)
        lead_cells = [_backbone_cell(frame, position), row["method"], source_cell(row), str(row["shot"])]
        claimed_cells = [format_claimed(row[c]) for c in values]
        if compare:
            view.rows.append([*lead_cells, "claimed", *claimed_cells, note])
            if row["verified_applicable"] or row["reproduced_applicable"]:
                for prefix in ("verified", "reproduced"):
                    cells = [measured_cell(row, prefix, c) for c in values]
                    view.rows.append(["", "", "", "", prefix, *cells, ""])
            if row.get("gain_baseline"):
                view.rows.append(
                    [
                        "",
                        "",
                        "",
                        "",
                        f"gain over {row['gain_baseline']}",
                        *(gain_cell(row, c) for c in values),
                        gain_note(row),
                    ]
                )
        else:
            summaries = [summary_cell(row, "verified"), summary_cell(row, "reproduced")]
            view.rows.append([*lead_cells, *claimed_cells, *summaries, note])
        if _ends_group(frame, position):
            view.section_ends.add(len(view.rows) - 1)
    return view


def value_columns(frame: pd.DataFrame) -> list[str]:
    """The claimed value columns this table prints (those with at least one number)."""
    return [c for c in (*FOLD_COLUMNS, "miou", "fb_iou") if frame[c].notna().any()]


def source_cell(row: pd.Series) -> str:
    if row["source"] == "quoted":
        return f"quoted [{row['ref']}]" if row["ref"] else "quoted"
    return get_paper(row.get("paper") or "hm").label


def _paper_prefix(paper: Paper) -> str:
    """``CRCNet `` before another paper's table title (the HM paper's titles stay as they were)."""
    return "" if paper.key == "hm" else f"{paper.label} "


def _legend(paper: Paper) -> str:
    if paper.key == "hm":
        return LEGEND
    return LEGEND.replace("HM = run by the HM authors", f"{paper.label} = run by the {paper.label} authors")


def format_claimed(value: float, digits: int = 1) -> str:
    return NOT_PRINTED if _missing(value) else f"{value:.{digits}f}"


def measured_cell(row: pd.Series, prefix: str, column: str) -> str:
    """A verified/reproduced value with its difference to the claimed one, ``—`` without a record."""
    if not row[f"{prefix}_applicable"]:
        return NOT_APPLICABLE
    text = with_difference(row[f"{prefix}_{column}"], row[column])
    return text if text == NO_RECORD else text + uncertainty_suffix(row, prefix, column)


def uncertainty_suffix(row: pd.Series, prefix: str, column: str) -> str:
    """`` ± 0.4 (3 seeds)`` over training seeds, else `` [63.1, 65.0]`` (95 % episode interval), else nothing."""
    seeds = row.get(f"{prefix}_{column}_seeds")
    if not _missing(seeds):
        return f" ± {row[f'{prefix}_{column}_sd']:.1f} ({int(seeds)} seeds)"
    low = row.get(f"{prefix}_{column}_low")
    return "" if _missing(low) else f" [{low:.1f}, {row[f'{prefix}_{column}_high']:.1f}]"


def gain_cell(row: pd.Series, column: str) -> str:
    """Reproduced HM − baseline gain with its paired interval and the claimed gain: ``+0.4 [-0.3, +1.1] vs +0.7``."""
    if column == "fb_iou" or f"gain_{column}" not in row:
        return ""
    gain, claimed = row[f"gain_{column}"], row[f"gain_claimed_{column}"]
    text = NO_RECORD if _missing(gain) else f"{gain:+.1f}"
    low = row.get(f"gain_{column}_low")
    if not _missing(gain) and not _missing(low):
        text += f" [{low:+.1f}, {row[f'gain_{column}_high']:+.1f}]"
    return text if _missing(claimed) else f"{text} vs {claimed:+.1f}"


def gain_note(row: pd.Series) -> str:
    """Whether the claimed mean gain lies inside the reproduced gain's interval (empty when unknown)."""
    inside = row.get("gain_inside")
    if inside is None or _missing(inside):
        return ""
    return "claimed gain inside" if bool(inside) else "claimed gain outside"


def summary_cell(row: pd.Series, prefix: str) -> str:
    """The mean mIoU of ``prefix`` for the summary layout; how many folds exist when the mean is incomplete."""
    if not row[f"{prefix}_applicable"]:
        return NOT_APPLICABLE if row["source"] != "quoted" and row["model"] else ""
    if not _missing(row[f"{prefix}_miou"]):
        return with_difference(row[f"{prefix}_miou"], row["miou"])
    present = [c for c in FOLD_COLUMNS if not _missing(row[f"{prefix}_{c}"])]
    return f"{NO_RECORD} ({len(present)}/4 folds)" if present else NO_RECORD


def with_difference(measured: float, claimed: float, digits: int = 1) -> str:
    if _missing(measured):
        return NO_RECORD
    if _missing(claimed):
        return f"{measured:.{digits}f}"
    return f"{measured:.{digits}f} ({measured - claimed:+.{digits}f})"


def _bench_view(frame: pd.DataFrame, title: str) -> TableView:
    """Table 7: claimed and measured seconds per image and overhead over the first row (HSNet-FM)."""
    headers = [
        "Method",
        "Source",
        "Shot",
        "secs/image",
        "Overhead %",
        "Measured secs/image",
        "Measured overhead %",
        "Note",
    ]
    view = TableView(title=title, headers=headers, numeric_columns={3, 4, 5, 6})
    for _, row in frame.iterrows():
        measured = row["measured_secs_per_image"]
        view.rows.append(
            [
                row["method"],
                source_cell(row),
                str(row["shot"]),
                format_claimed(row["secs_per_image"], 2),
                format_claimed(row["overhead_pct"], 1),
                NO_RECORD if _missing(measured) else f"{measured:.3f}",
                _measured_overhead_cell(row),
                _note_marker(row["note"], view.notes),
            ]
        )
    view.legend = "Measured = newest bench record (kind 'bench') of the row's model; overhead relative to HSNet-FM."
    return view


def _measured_overhead_cell(row: pd.Series) -> str:
    """Measured overhead with its difference; ``-`` for the reference row, ``—`` without a measurement."""
    if _missing(row["measured_secs_per_image"]):
        return NO_RECORD
    if _missing(row["measured_overhead_pct"]):
        return NOT_PRINTED if _missing(row["overhead_pct"]) else NO_RECORD
    return with_difference(row["measured_overhead_pct"], row["overhead_pct"])


def _backbone_cell(frame: pd.DataFrame, position: int) -> str:
    backbone = frame["backbone"].iloc[position]
    if position > 0 and frame["backbone"].iloc[position - 1] == backbone:
        return ""
    return BACKBONE_NAMES.get(backbone, backbone)


def _ends_group(frame: pd.DataFrame, position: int) -> bool:
    last = position == len(frame) - 1
    return not last and frame["backbone"].iloc[position + 1] != frame["backbone"].iloc[position]


def _note_marker(note: str, notes: list[str]) -> str:
    """``[k]`` for ``note`` (added to ``notes`` the first time), empty for no note."""
    if not note:
        return ""
    if note not in notes:
        notes.append(note)
    return f"[{notes.index(note) + 1}]"


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def build_records_view(listing: pd.DataFrame, table: int) -> TableView:
    """The text cells of a record listing (:func:`hmrepro.reporting.tables.record_listing`)."""
    paper = paper_of(listing)
    view = TableView(
        title=f"{_paper_prefix(paper)}{paper.table_label(table)}: result records",
        headers=list(RECORDS_HEADERS.values()),
    )
    view.numeric_columns = {
        i for i, key in enumerate(RECORDS_HEADERS) if key in ("fold", "miou", "episodes", "img_size")
    }
    view.legend = RECORDS_LEGEND
    for _, line in listing.iterrows():
        view.rows.append([records_cell(line, key) for key in RECORDS_HEADERS])
    if not view.rows:
        view.notes.append("no result records belong to this table's rows")
    return view


def records_cell(line: pd.Series, key: str) -> str:
    """One cell of a record listing line as text (what came from a record file with its control characters
    escaped: :func:`hmrepro.safetext.safe_text`)."""
    if key == "status":
        return safe_text(line["cell"] or f"not shown: {line['reason']}")
    if key == "backbone":
        return safe_text(BACKBONE_NAMES.get(line["backbone"], line["backbone"]))
    if key == "miou":
        return NO_RECORD if _missing(line["miou"]) else f"{line['miou']:.1f}"
    value = line[key]
    return "" if value is None or pd.isna(value) else safe_text(value)


def render_records(listing: pd.DataFrame, table: int, fmt: str) -> str:
    """A record listing as text in format ``fmt`` (one of ``FORMATS``; CSV has the columns ``LISTING_COLUMNS``)."""
    if fmt == "csv":
        columns = listing[list(LISTING_COLUMNS)].map(lambda v: safe_text(v) if isinstance(v, str) else v)
        return columns.to_csv(index=False, na_rep="", lineterminator="\n")
    return _render_view(build_records_view(listing, table), fmt)


# ---------------------------------------------------------------- text formats


def render_markdown(view: TableView) -> str:
    """A GitHub-flavoured Markdown table with its title, legend and notes."""

    def cells(values: list[str]) -> str:
        return "| " + " | ".join(_markdown_escape(v) for v in values) + " |"

    align = ["---:" if i in view.numeric_columns else "---" for i in range(len(view.headers))]
    lines = [f"**{_markdown_escape(view.title)}**", "", cells(view.headers), "| " + " | ".join(align) + " |"]
    lines += [cells(row) for row in view.rows]
    lines += ["", _markdown_escape(view.legend)]
    if view.notes:
        lines.append("")
        lines += [f"- [{i}] {_markdown_escape(note)}" for i, note in enumerate(view.notes, 1)]
    return "\n".join(lines) + "\n"


def render_latex(view: TableView) -> str:
    """A LaTeX ``table`` (plain ``tabular``, no extra packages) with caption, legend and notes."""
    spec = "".join("r" if i in view.numeric_columns else "l" for i in range(len(view.headers)))
    lines = [
        r"\begin{table}[t]",
        r"\centering",
        rf"\caption{{{_latex_escape(view.title)}}}",
        rf"\begin{{tabular}}{{{spec}}}",
        r"\hline",
        " & ".join(_latex_escape(h) for h in view.headers) + r" \\",
        r"\hline",
    ]
    for index, row in enumerate(view.rows):
        lines.append(" & ".join(_latex_escape(c) for c in row) + r" \\")
        if index in view.section_ends:
            lines.append(r"\hline")
    lines += [r"\hline", r"\end{tabular}", r"\par\smallskip", rf"{{\footnotesize {_latex_escape(view.legend)}\par}}"]
    lines += [rf"{{\footnotesize [{i}] {_latex_escape(note)}\par}}" for i, note in enumerate(view.notes, 1)]
    lines.append(r"\end{table}")
    return "\n".join(lines) + "\n"


def rich_table(view: TableView):
    """The rows as a ``rich.table.Table``; cells are plain text (never rich markup: a record's fields are shown as
    they are written)."""
    from rich.table import Table
    from rich.text import Text

    table = Table(title=view.title, title_justify="left")
    for index, header in enumerate(view.headers):
        table.add_column(header, justify="right" if index in view.numeric_columns else "left", no_wrap=True)
    for index, row in enumerate(view.rows):
        table.add_row(*(Text(safe_text(cell)) for cell in row), end_section=index in view.section_ends)
    return table


def rich_footer(view: TableView):
    """The legend and the numbered notes, dimmed."""
    from rich.text import Text

    return Text("\n".join([view.legend, *(f"[{i}] {note}" for i, note in enumerate(view.notes, 1))]), style="dim")


def print_rich(view: TableView, console=None) -> None:
    """Print the view on ``console`` (default: stdout), never narrower than the table: a table wider than the
    terminal is printed whole (the terminal wraps its lines) rather than with its numbers cut to "…"."""
    from rich.console import Console
    from rich.measure import Measurement

    console = console or Console()
    table = rich_table(view)
    needed = Measurement.get(console, console.options.update_width(10_000), table).maximum
    if needed > console.width:
        console.width = needed
    console.print(table)
    console.print(rich_footer(view))


def render_rich_text(view: TableView) -> str:
    """The rich layout as plain text (for ``--output`` and tests)."""
    from rich.console import Console

    buffer = io.StringIO()
    print_rich(view, Console(file=buffer, width=100, no_color=True, color_system=None))
    return buffer.getvalue()


def _markdown_escape(text: str) -> str:
    for char in ("\\", "|", "*", "_"):
        text = text.replace(char, "\\" + char)
    return text


_LATEX_SPECIALS = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "—": "---",
    "±": r"$\pm$",
}


def _latex_escape(text: str) -> str:
    return "".join(_LATEX_SPECIALS.get(char, char) for char in text)


# ---------------------------------------------------------------- CSV


def csv_frame(frame: pd.DataFrame, table: int) -> pd.DataFrame:
    """One line per (table row, shot) with the columns of ``CSV_COLUMNS`` (plus the timing ones for Table 7)."""
    out = pd.DataFrame(
        {
            "table": frame["table"],
            "method": frame["method"],
            "backbone": frame["backbone"],
            "shot": frame["shot"],
            **{f"claimed_{c}": frame[c] for c in FOLD_COLUMNS},
            "claimed_miou": frame["miou"],
            "claimed_fbiou": frame["fb_iou"],
            "verified_miou": frame["verified_miou"].round(2),
            "verified_fbiou": frame["verified_fb_iou"].round(2),
            "reproduced_miou": frame["reproduced_miou"].round(2),
            "reproduced_fbiou": frame["reproduced_fb_iou"].round(2),
        }
    )
    if record_kind(table, paper_of(frame).key) == "bench":
        out["claimed_secs_per_image"] = frame["secs_per_image"]
        out["measured_secs_per_image"] = frame["measured_secs_per_image"].round(4)
        return out[list(BENCH_CSV_COLUMNS)]
    return out[list(CSV_COLUMNS)]


UNCERTAINTY_CSV_COLUMNS = (
    "verified_miou_low",
    "verified_miou_high",
    "reproduced_miou_low",
    "reproduced_miou_high",
    "reproduced_miou_sd",
    "reproduced_miou_seeds",
    "gain_baseline",
    "gain_claimed_miou",
    "gain_miou",
    "gain_miou_low",
    "gain_miou_high",
    "gain_inside",
)


def render_csv(frame: pd.DataFrame, table: int, compare: bool = False) -> str:
    """The CSV; with ``compare`` (``--compare-claimed``) also ``UNCERTAINTY_CSV_COLUMNS`` (empty where unknown)."""
    out = csv_frame(frame, table)
    if compare and "gain_baseline" in frame:
        for column in UNCERTAINTY_CSV_COLUMNS:
            values = frame[column] if column in frame else pd.Series([None] * len(frame), index=frame.index)
            out[column] = values.round(2) if values.dtype.kind == "f" else values
    return out.to_csv(index=False, na_rep="", lineterminator="\n")


def render(frame: pd.DataFrame, table: int, fmt: str, compare: bool = False) -> str:
    """``frame`` (a compared table) as text in format ``fmt`` (one of ``FORMATS``)."""
    if fmt == "csv":
        return render_csv(frame, table, compare)
    return _render_view(build_view(frame, table, compare), fmt)


def _render_view(view: TableView, fmt: str) -> str:
    if fmt == "markdown":
        return render_markdown(view)
    if fmt == "latex":
        return render_latex(view)
    if fmt == "rich":
        return render_rich_text(view)
    raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")

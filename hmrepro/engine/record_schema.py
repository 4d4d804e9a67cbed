"""The schema of result records and of their per-episode files, checked every time one is read.

Results folders are shared, copied and edited by hand, so a record is input like any other: :func:`load_record`
reads one (a regular file inside its folder, at most :data:`MAX_RECORD_BYTES`, JSON nested at most
:data:`~hmrepro.saferead.MAX_JSON_DEPTH` levels), :func:`record_problem` judges its fields and
:func:`load_sidecar` its per-episode file. Every refusal is a :class:`RecordError` whose message names the field
or the value and what to do; the readers of :mod:`hmrepro.engine.records` turn it into one warning per file.

Schema version :data:`RECORD_SCHEMA` (written as ``record_schema``; a record without it is version 1, read by the
same rules; a newer version is refused: upgrade hmrepro). A record is a JSON object with ``model``, ``benchmark``
and ``miou``; these fields are checked when present:

- ``miou``, ``fb_iou``: finite real numbers in [0, 100] (a bool is no number); ``None`` only in bench records
  (kinds :data:`BENCH_KINDS`);
- ``fold``, ``shot``, ``episodes``, ``total_episodes``, ``img_size``, ``default_img_size``, ``episode_seed``,
  ``train_seed``: integers (fold 0-3, shot 1-10, seeds and episodes ≥ 0, sizes ≥ 1);
- ``secs_per_episode``, ``secs_per_image``: finite and ≥ 0 (or None);
- ``date``: an ISO date with its time zone, not later than now plus :data:`CLOCK_SKEW`;
- ``model``, ``benchmark``, ``backbone``, ``kind``, ``origin`` (one of ``ORIGINS``), ``precision``: text;
- ``per_episode_file``: a plain file name (no folder, no ``..``) ending in ``.episodes.npz``, with
  ``per_episode_sha256`` (64 hex digits) required beside it.

The per-episode file (:mod:`hmrepro.engine.evaluation.per_episode`) must have the sha256 the record names, hold only 1-D
numeric arrays within :data:`MAX_SIDECAR_MEMBER_BYTES` each and :data:`MAX_SIDECAR_DECOMPRESSED_BYTES` in all, as
declared in the zip (checked before anything is decompressed), one length for all columns equal to the record's
``episodes``, counts 0 ≤ intersection ≤ union, class ids in [0, :data:`MAX_CLASS_ID`], fractions in [0, 1]; the mIoU
and FB-IoU recomputed from it must agree with the record's within :data:`HEADLINE_TOLERANCE`.
"""

from __future__ import annotations

import io
import math
import re
import zipfile
import zlib
from datetime import datetime, timedelta, timezone
from pathlib import Path

from ..errors import HmreproError
from ..saferead import UntrustedFileError, is_plain_name, parse_json, read_bounded

RECORD_SCHEMA = 2
CORE_FIELDS = ("model", "benchmark", "miou")
MAX_RECORD_BYTES = 2 << 20
MAX_SIDECAR_BYTES = 64 << 20
MAX_SIDECAR_MEMBER_BYTES = 32 << 20  # decompressed: 8 bytes × 4 million episodes (a fold has 1000)
MAX_SIDECAR_DECOMPRESSED_BYTES = 128 << 20  # all members together
MAX_SIDECAR_MEMBERS = 32
MAX_CLASS_ID = 10_000
HEADLINE_TOLERANCE = 1e-3  # percentage points between the record's mIoU and the one its episodes give
CLOCK_SKEW = timedelta(hours=1)
_SHA256 = re.compile(r"[0-9a-f]{64}")
_INT_FIELDS = {  # field -> (smallest, largest) allowed value; fold and shot as `hmrepro eval --fold/--shot` take them
    "fold": (0, 3),
    "shot": (1, 10),
    "episodes": (0, None),
    "total_episodes": (0, None),
    "img_size": (1, None),
    "default_img_size": (1, None),
    "episode_seed": (0, None),
    "train_seed": (0, None),
}
BENCH_KINDS = ("bench", "bench-model", "bench-eval", "bench-train")  # timings: no mIoU (None)
_TEXT_FIELDS = ("model", "benchmark", "backbone", "kind", "origin", "precision", "masking", "protocol")
_SECONDS_FIELDS = ("secs_per_episode", "secs_per_image")


class RecordError(HmreproError):
    """A record or per-episode file that fails the schema (the message says which field and why)."""


# ---------------------------------------------------------------------------------------------------------------
# Records
# ---------------------------------------------------------------------------------------------------------------


def load_record(path: Path, folder: Path | None = None) -> dict | None:
    """The record at ``path`` (read inside ``folder``, default its own folder), or None for a JSON file that is no
    record at all (no core field, e.g. a run's ``config.json``); :class:`RecordError` for a file that cannot be
    read or fails the schema. The returned record's ``path`` is ``path``, whatever the file says."""
    path = Path(path)
    try:
        raw = read_bounded(path, inside=folder or path.parent, max_bytes=MAX_RECORD_BYTES)
    except UntrustedFileError as err:
        raise RecordError(str(err)) from None
    try:
        data = parse_json(raw)
    except UntrustedFileError as err:
        raise RecordError(f"{err}; a damaged record: rerun the evaluation or delete the file") from None
    if not isinstance(data, dict) or not any(field in data for field in CORE_FIELDS):
        return None
    problem = record_problem(data)
    if problem:
        raise RecordError(problem if ";" in problem else f"{problem}; correct the field or evaluate again")
    data["path"] = str(path)  # what hmrepro read, never what the file claims
    return data


def record_problem(record: dict, *, now: datetime | None = None) -> str | None:
    """Why ``record`` fails the schema (None: it passes); the first problem found, naming the field."""
    missing = [field for field in CORE_FIELDS if field not in record]
    if missing:
        return (
            f"is a result record without {', '.join(missing)}; evaluate again (a file that is no record: move it "
            "out of the results folder)"
        )
    checks = (
        _schema_problem,
        _text_problem,
        _headline_problem,
        _int_problem,
        _seconds_problem,
        _class_ids_problem,
        _sidecar_field_problem,
    )
    for check in checks:
        problem = check(record)
        if problem:
            return problem
    return _date_problem(record, now or datetime.now(timezone.utc))


def _schema_problem(record: dict) -> str | None:
    version = record.get("record_schema", 1)
    if not _is_int(version) or version < 1:
        return f"field 'record_schema' is {_show(version)}, not a schema version"
    if version > RECORD_SCHEMA:
        return f"field 'record_schema' is {version}, newer than the {RECORD_SCHEMA} this hmrepro reads; upgrade hmrepro"
    return None


def _text_problem(record: dict) -> str | None:
    for field in _TEXT_FIELDS:
        if (
            field in record
            and not isinstance(record[field], str)
            and not (field == "masking" and record[field] is None)
        ):
            return f"field '{field}' is {_show(record[field])}, not text"
    from .records import ORIGINS

    if "origin" in record and record["origin"] not in ORIGINS:
        return f"field 'origin' is {_show(record['origin'])}, not one of {', '.join(ORIGINS)}"
    return None


def _headline_problem(record: dict) -> str | None:
    for field in ("miou", "fb_iou"):
        if field not in record or (record[field] is None and (field == "fb_iou" or record.get("kind") in BENCH_KINDS)):
            continue
        value = record[field]
        if not _is_real(value) or not 0 <= value <= 100:
            return f"field '{field}' is {_show(value)}, not a number in [0, 100]; the record is damaged: evaluate again"
    return None


def _int_problem(record: dict) -> str | None:
    for field, (low, high) in _INT_FIELDS.items():
        value = record.get(field)
        if value is None:
            continue
        if not _is_int(value) or value < low or (high is not None and value > high):
            allowed = f"in [{low}, {high}]" if high is not None else f"≥ {low}"
            return f"field '{field}' is {_show(value)}, not an integer {allowed}"
    return None


def _seconds_problem(record: dict) -> str | None:
    for field in _SECONDS_FIELDS:
        value = record.get(field)
        if value is not None and (not _is_real(value) or value < 0):
            return f"field '{field}' is {_show(value)}, not a number of seconds ≥ 0"
    return None


def _class_ids_problem(record: dict) -> str | None:
    ids = record.get("eval_class_ids")
    if ids is not None and (not isinstance(ids, list) or not all(_is_int(c) and 0 <= c <= MAX_CLASS_ID for c in ids)):
        return f"field 'eval_class_ids' is {_show(ids)}, not a list of class ids in [0, {MAX_CLASS_ID}]"
    return None


def _sidecar_field_problem(record: dict) -> str | None:
    from .records import EPISODES_SUFFIX

    name = record.get("per_episode_file")
    if name is None:
        return None
    if not is_plain_name(name) or not name.endswith(EPISODES_SUFFIX):
        return (
            f"field 'per_episode_file' is {_show(name)}, not a plain file name ending in {EPISODES_SUFFIX} "
            "beside the record (no folder, no '..'); only files in the record's folder are read"
        )
    sha = record.get("per_episode_sha256")
    if not isinstance(sha, str) or not _SHA256.fullmatch(sha):
        return (
            f"field 'per_episode_sha256' is {_show(sha) if 'per_episode_sha256' in record else 'missing'}, not the "
            "64-digit sha256 of its per-episode file; without it the file cannot be tied to the record: evaluate again"
        )
    return None


def _date_problem(record: dict, now: datetime) -> str | None:
    if "date" not in record:
        return None
    value = record["date"]
    try:
        when = datetime.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        when = None
    if when is None:
        return f"field 'date' is {_show(value)}, not an ISO date such as 2026-01-31T12:00:00+00:00"
    if when.tzinfo is None or when.utcoffset() is None:
        return f"field 'date' is {_show(value)}, a date without its time zone (write it as e.g. {value}+00:00)"
    if when > now + CLOCK_SKEW:
        return (
            f"field 'date' is {_show(value)}, in the future; fix the date (or the clock of the machine that wrote it)"
        )
    return None


# ---------------------------------------------------------------------------------------------------------------
# Per-episode files
# ---------------------------------------------------------------------------------------------------------------


def load_sidecar(record: dict, record_path: Path) -> tuple[dict, list[int]]:
    """(per-episode table, eval class ids) of ``record``, read from its ``per_episode_file`` beside
    ``record_path`` and checked against the record (:class:`RecordError` naming the file and what disagrees).

    ``record`` must have passed :func:`record_problem` (its file name is then a plain name)."""
    from .evaluation.per_episode import sha256_bytes

    record_path = Path(record_path)
    name = record["per_episode_file"]
    sidecar = record_path.parent / name
    try:
        data = read_bounded(sidecar, inside=record_path.parent, max_bytes=MAX_SIDECAR_BYTES)
    except UntrustedFileError as err:
        raise RecordError(f"its per-episode file {name} {err}; keep it next to {record_path.name}") from None
    if sha256_bytes(data) != record["per_episode_sha256"]:
        raise RecordError(
            f"its per-episode file {name} does not have the sha256 the record names (per_episode_sha256): "
            "it belongs to another record or was changed; evaluate again"
        )
    try:
        table, class_ids = table_from_npz(data)
    except RecordError as err:
        raise RecordError(f"its per-episode file {name} {err}") from None
    _check_agrees(record, table, class_ids, name)
    return table, class_ids


def table_from_npz(data: bytes) -> tuple[dict, list[int]]:
    """(table, eval class ids) from the bytes of a per-episode ``.npz``, every member's size checked before it is
    decompressed, no pickle loaded, the columns checked (:class:`RecordError` says what is wrong)."""
    from .evaluation.per_episode import CLASS_IDS_KEY, COUNT_COLUMNS, EPISODE_COLUMNS

    arrays = _npz_arrays(data)
    missing = [c for c in (*EPISODE_COLUMNS, CLASS_IDS_KEY) if c not in arrays]
    if missing:
        raise RecordError(f"lacks the columns {', '.join(missing)}; evaluate again")
    table = {c: _column(c, arrays[c], integer=c in COUNT_COLUMNS) for c in EPISODE_COLUMNS}
    class_ids = _column(CLASS_IDS_KEY, arrays[CLASS_IDS_KEY], integer=True)
    _check_columns(table, class_ids)
    return table, [int(c) for c in class_ids]


def _npz_arrays(data: bytes) -> dict:
    import numpy as np

    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, ValueError, OSError) as err:
        raise RecordError(f"is not a per-episode .npz file ({err})") from None
    with archive:
        members = archive.infolist()
        if len(members) > MAX_SIDECAR_MEMBERS:
            raise RecordError(f"holds {len(members)} arrays, more than {MAX_SIDECAR_MEMBERS}")
        for member in members:  # every declared size checked before anything is decompressed
            if member.file_size > MAX_SIDECAR_MEMBER_BYTES:
                raise RecordError(
                    f"would decompress {member.filename} to {member.file_size} bytes, more than the "
                    f"{MAX_SIDECAR_MEMBER_BYTES} allowed"
                )
        total = sum(member.file_size for member in members)
        if total > MAX_SIDECAR_DECOMPRESSED_BYTES:
            raise RecordError(
                f"would decompress to {total} bytes, more than the {MAX_SIDECAR_DECOMPRESSED_BYTES} allowed"
            )
        arrays = {}
        for member in members:
            try:
                with archive.open(member) as f:
                    raw = f.read(member.file_size + 1)
            except (
                zipfile.BadZipFile,
                OSError,
                ValueError,
                EOFError,
                NotImplementedError,
                RuntimeError,  # encrypted
                zlib.error,  # a damaged deflate stream
            ) as err:
                raise RecordError(f"has a damaged member {member.filename} ({err})") from None
            if len(raw) != member.file_size:
                raise RecordError(f"has a member {member.filename} larger than its zip entry says")
            arrays[member.filename.removesuffix(".npy")] = _npy_array(raw, member.filename, np)
    return arrays


def _npy_array(raw: bytes, name: str, np):
    """One ``.npy`` member: its header read first, so that no array larger than the member's bytes is allocated."""
    fmt = np.lib.format
    buffer = io.BytesIO(raw)
    try:
        version = fmt.read_magic(buffer)
        if version == (1, 0):
            shape, _, dtype = fmt.read_array_header_1_0(buffer)
        elif version == (2, 0):
            shape, _, dtype = fmt.read_array_header_2_0(buffer)
        else:
            raise ValueError(f"npy format {version[0]}.{version[1]} is not read")
        if dtype.hasobject or dtype.kind not in "biuf":
            raise ValueError(f"dtype {dtype} is not numeric")
        if len(shape) != 1 or shape[0] * dtype.itemsize > len(raw):
            raise ValueError(f"shape {shape} is not a column of the member's {len(raw)} bytes")
        buffer.seek(0)
        return np.load(buffer, allow_pickle=False)
    except (ValueError, OSError, EOFError, TypeError, SyntaxError) as err:
        raise RecordError(f"has a member {name} that is no plain numeric column ({err})") from None


def _column(name: str, array, *, integer: bool):
    import numpy as np

    if integer:
        if array.dtype.kind not in "biu":
            raise RecordError(f"has column {name} of {array.dtype}, not integers")
        if array.dtype.kind == "u" and array.size and array.max() > np.iinfo(np.int64).max:
            raise RecordError(f"has column {name} with values beyond int64")
        return array.astype(np.int64)
    return array.astype(np.float64)


def _check_columns(table: dict, class_ids) -> None:
    import numpy as np

    lengths = {len(column) for column in table.values()}
    if len(lengths) != 1:
        raise RecordError(f"has columns of different lengths ({', '.join(map(str, sorted(lengths)))})")
    for inter, union in (("fg_inter", "fg_union"), ("bg_inter", "bg_union")):
        bad = (table[inter] < 0) | (table[inter] > table[union])
        if bad.any():
            i = int(np.argmax(bad))
            raise RecordError(
                f"has episode {i} with {inter} {table[inter][i]} and {union} {table[union][i]}, "
                "not 0 ≤ intersection ≤ union"
            )
    for name in ("class_id", "episode"):
        if (table[name] < 0).any() or (table[name] > (MAX_CLASS_ID if name == "class_id" else np.inf)).any():
            raise RecordError(f"has {name} values outside [0, {MAX_CLASS_ID if name == 'class_id' else '∞'})")
    if len(class_ids) == 0 or (class_ids < 0).any() or (class_ids > MAX_CLASS_ID).any():
        raise RecordError(f"has eval_class_ids that are not class ids in [0, {MAX_CLASS_ID}]")
    for name in ("query_fg_fraction", "support_fg_fraction"):
        column = table[name]
        bad = ~np.isfinite(column) | (column < 0) | (column > 1)
        if bad.any():
            i = int(np.argmax(bad))
            raise RecordError(f"has episode {i} with {name} {column[i]}, not a fraction in [0, 1]")


def _check_agrees(record: dict, table: dict, class_ids: list[int], name: str) -> None:
    """The record's headline numbers and episode count are those of its per-episode file."""
    episodes = record.get("episodes")
    if episodes is not None and episodes != len(table["episode"]):
        raise RecordError(f"says episodes {episodes}, but its per-episode file {name} holds {len(table['episode'])}")
    if record.get("eval_class_ids") is not None and [int(c) for c in record["eval_class_ids"]] != class_ids:
        raise RecordError(f"names other eval_class_ids than its per-episode file {name}")
    miou, fb_iou = _headline_of(record, table, class_ids, name)
    for field, value in (("miou", miou), ("fb_iou", fb_iou)):
        claimed = record.get(field)
        if claimed is not None and abs(claimed - value) > HEADLINE_TOLERANCE:
            raise RecordError(
                f"says {field} {claimed:.4g}, but its per-episode file {name} gives {value:.4g}; "
                "one of them was changed: evaluate again"
            )


def _headline_of(record: dict, table: dict, class_ids: list[int], name: str) -> tuple[float, float]:
    """(mIoU, FB-IoU) as the record computed them from its episodes: over all of them, or — for BAM's protocol,
    whose record keeps each run in ``bam_runs`` and its episodes one run after the other — the mean over runs."""
    import numpy as np

    from .evaluation.per_episode import miou_from_columns

    runs = record.get("bam_runs")
    if runs is None:
        return miou_from_columns(table, class_ids)
    counts = [run.get("episodes") if isinstance(run, dict) else None for run in runs] if isinstance(runs, list) else []
    if not counts or not all(_is_int(n) and n >= 0 for n in counts) or sum(counts) != len(table["episode"]):
        raise RecordError(f"field 'bam_runs' does not split the {len(table['episode'])} episodes of {name} into runs")
    bounds = np.cumsum([0, *counts])
    per_run = [
        miou_from_columns({c: v[bounds[i] : bounds[i + 1]] for c, v in table.items()}, class_ids)
        for i in range(len(counts))
    ]
    return float(np.mean([m for m, _ in per_run])), float(np.mean([f for _, f in per_run]))


# ---------------------------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------------------------


def _is_real(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _show(value) -> str:
    """A field's value for a message: short, quoted when text (shown safely by the CLI)."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."

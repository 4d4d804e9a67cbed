"""Records, per-episode files and split lists are input from outside (issue 24, classes 1-5): each test is one
class of failure, table-driven over hostile files grown from the issue's examples. Every case must end in a
correct result, one clear line, or one warning with the rest of the folder read — never "internal error", a hang,
a wrong number, or a file opened outside the results folder or the data root."""

from __future__ import annotations

import io
import json
import os
import signal
import sys
import zipfile
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest

from hmrepro.cli.app import run
from hmrepro.data.splits import SplitFolder, write_checksums
from hmrepro.engine import record_schema
from hmrepro.engine.evaluation.per_episode import CLASS_IDS_KEY, EPISODE_COLUMNS, miou_from_columns, sha256_bytes
from hmrepro.engine.records import default_img_size, read_episode_table, read_records, write_record
from hmrepro.errors import CorruptFileError, HmreproError
from hmrepro.reporting import TableQuery, compare_table
from hmrepro.safetext import safe_markup, safe_text

CLASSES = [0, 1, 2, 3]
VALID_MIOU_DATE = "2024-01-01T00:00:00+00:00"
NEWER = "2024-06-01T00:00:00+00:00"


# ---------------------------------------------------------------- small hand-made records


def episodes(n: int = 40, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    fg_union = rng.integers(100, 1000, n)
    fg_inter = (fg_union * rng.uniform(0.2, 0.9, n)).astype(np.int64)
    return {
        "episode": np.arange(n),
        "class_id": np.asarray(CLASSES)[np.arange(n) % len(CLASSES)],
        "fg_inter": fg_inter,
        "fg_union": fg_union,
        "bg_inter": 5000 - fg_union,
        "bg_union": 5000 - fg_inter,
        "query_fg_fraction": rng.uniform(0.01, 0.6, n),
        "support_fg_fraction": rng.uniform(0.01, 0.6, n),
    }


def fields(**extra) -> dict:
    """A full-protocol official HSNet-HM COCO-20i fold-0 1-shot record (HM Table 2) without per-episode results."""
    record = {
        "model": "hsnet-hm",
        "masking": "hm",
        "backbone": "resnet50",
        "benchmark": "coco",
        "fold": 0,
        "shot": 1,
        "miou": 41.5,
        "fb_iou": 70.0,
        "episodes": 1000,
        "total_episodes": 1000,
        "full_episode_set": True,
        "protocol": "hsnet",
        "img_size": default_img_size("hsnet-hm", "coco"),
        "original_size": False,
        "checkpoint_sha256": None,
        "origin": "official",
        "git_commit": None,
        "versions": {},
        "device": "cpu",
        "date": VALID_MIOU_DATE,
        "secs_per_episode": 0.1,
    }
    record.update(extra)
    return record


def with_episodes(table: dict | None = None, **extra) -> dict:
    """``fields`` with per-episode results whose mIoU, FB-IoU and count are the record's."""
    table = table or episodes()
    miou, fb_iou = miou_from_columns(table, CLASSES)
    n = len(table["episode"])
    return fields(
        miou=miou, fb_iou=fb_iou, episodes=n, total_episodes=n, eval_class_ids=CLASSES, per_episode=table, **extra
    )


def edit(path: Path, /, **changes) -> None:
    """Rewrite fields of the record at ``path`` (``None`` removes one; NaN and Infinity are written as such)."""
    data = json.loads(Path(path).read_text())
    for key, value in changes.items():
        if value is None:
            data.pop(key, None)
        else:
            data[key] = value
    Path(path).write_text(json.dumps(data))


def npz_bytes(arrays: dict) -> bytes:
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    return buffer.getvalue()


def replace_sidecar(record_path: Path, arrays: dict) -> None:
    """Write ``arrays`` as the record's per-episode file and name its sha256 in the record: only the content is bad."""
    data = npz_bytes(arrays)
    record = json.loads(record_path.read_text())
    (record_path.parent / record["per_episode_file"]).write_bytes(data)
    edit(record_path, per_episode_sha256=sha256_bytes(data))


def sidecar_arrays(**changes) -> dict:
    arrays = {c: v for c, v in episodes().items()}
    arrays[CLASS_IDS_KEY] = np.asarray(CLASSES, dtype=np.int32)
    arrays.update(changes)
    return {k: v for k, v in arrays.items() if v is not None}


def cell(folder: Path) -> tuple[float, list[str]]:
    """(Table 2's verified fold-0 cell of HSNet-HM ResNet-50 1-shot, the skipped-record lines)."""
    frame = compare_table(TableQuery(2, results_dir=folder))
    rows = frame[(frame["method"] == "HSNet-HM") & (frame["backbone"] == "resnet50") & (frame["shot"] == 1)]
    return float(rows.iloc[0]["verified_fold0"]), list(frame.attrs.get("skipped_records", []))


def read_all(folder: Path) -> tuple[list[dict], list[str]]:
    problems: list[str] = []
    return list(read_records(folder, problems)), problems


# ---------------------------------------------------------------- opened files are watched (audit hook)

_OPENED: list[str] | None = None


def _audit(event: str, args) -> None:
    if _OPENED is not None and event == "open" and args and isinstance(args[0], (str, bytes, os.PathLike)):
        _OPENED.append(os.fsdecode(args[0]))


sys.addaudithook(_audit)


@pytest.fixture
def opened():
    """The paths every ``open`` of the test opened (builtins.open, os.open, numpy and zipfile included)."""
    global _OPENED
    _OPENED = []
    yield _OPENED
    _OPENED = None


class Hung(Exception):
    """Raised by the alarm when a read blocks (not an OSError, so no reader can swallow it)."""


@pytest.fixture
def no_hang():
    def alarm(signum, frame):
        raise Hung("a read blocked")

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(120)  # generous: a blocking open never returns; a slow machine does
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


# ---------------------------------------------------------------- class 1: one bad file breaks every table


def _deep_non_record(folder: Path) -> Path:
    path = folder / "deep.json"
    path.write_text("[" * 100_000 + "]" * 100_000)
    return path


def _deep_record(folder: Path) -> Path:
    path = folder / "deep_record.json"
    path.write_text('{"model": "hsnet-hm", "benchmark": "coco", "miou": 1.0, "x": ' + "[" * 5000 + "]" * 5000 + "}")
    return path


def _long_integer(folder: Path) -> Path:
    path = folder / "long_int.json"
    path.write_text('{"model": "hsnet-hm", "benchmark": "coco", "miou": 4' + "0" * 5000 + "}")
    return path


def _long_float(folder: Path) -> Path:
    path = folder / "long_float.json"
    path.write_text('{"model": "hsnet-hm", "benchmark": "coco", "miou": 4' + "0" * 5000 + ".5}")
    return path


def _naive_date(folder: Path) -> Path:
    path = write_record(fields(date="2024-03-01T00:00:00+00:00"), folder)
    edit(path, date="0001-01-01T00:00:00")
    return path


def _fifo(folder: Path) -> Path:
    path = folder / "fifo.json"
    os.mkfifo(path)
    return path


def _link_to_dev_zero(folder: Path) -> Path:
    path = folder / "zero.json"
    path.symlink_to("/dev/zero")
    return path


def _link_out_of_folder(folder: Path) -> Path:
    outside = folder.parent / f"{folder.name}-outside"
    outside.mkdir(exist_ok=True)
    target = write_record(fields(miou=99.0, date=NEWER), outside)
    path = folder / "elsewhere.json"
    path.symlink_to(target)
    return path


def _oversized(folder: Path) -> Path:
    path = folder / "huge.json"
    with open(path, "wb") as f:
        f.truncate(record_schema.MAX_RECORD_BYTES + 1)  # sparse: costs no disk
    return path


def _not_utf8(folder: Path) -> Path:
    path = folder / "latin1.json"
    path.write_bytes(b'{"model": "hsnet-\xe9", "benchmark": "coco", "miou": 1.0}')
    return path


def _torn(folder: Path) -> Path:
    path = folder / "torn.json"
    path.write_text('{"model": "hsnet-hm", "benchmark": "co')
    return path


ONE_BAD_FILE = {  # case -> (writer, words the warning must hold)
    "deeply nested non-record": (_deep_non_record, "nests"),
    "deeply nested record": (_deep_record, "nests"),
    "5000-digit integer": (_long_integer, "digit"),
    "5000-digit float": (_long_float, "'miou'"),
    "naive date": (_naive_date, "'date'"),
    "FIFO": (_fifo, "FIFO"),
    "link to /dev/zero": (_link_to_dev_zero, "leads out of"),
    "link out of the folder": (_link_out_of_folder, "leads out of"),
    "oversized": (_oversized, "bytes"),
    "not UTF-8": (_not_utf8, "UTF-8"),
    "torn": (_torn, "not valid JSON"),
}


@pytest.mark.parametrize("case", ONE_BAD_FILE)
def test_one_bad_file_is_skipped_with_one_warning_and_the_rest_read(tmp_path, case, no_hang):
    folder = tmp_path / "results"
    folder.mkdir()
    good = write_record(fields(), folder)
    make, words = ONE_BAD_FILE[case]
    bad = make(folder)
    records, problems = read_all(folder)
    assert [r["path"] for r in records] == [str(good)]
    assert len(problems) == 1 and str(bad) in problems[0] and words in problems[0], problems


def test_a_bad_file_is_one_warning_line_in_table(tmp_path, capsys, no_hang):
    folder = tmp_path / "results"
    folder.mkdir()
    write_record(fields(), folder)
    for make, _ in ONE_BAD_FILE.values():
        make(folder)
    assert run(["table", "2", "--results", str(folder), "--format", "csv"]) == 0
    out, err = capsys.readouterr()
    assert len(err.strip().splitlines()) == len(ONE_BAD_FILE) and "internal error" not in err
    assert all(line.startswith("warning: skipped ") for line in err.strip().splitlines())
    assert "41.5" in out and "99.0" not in out


# ---------------------------------------------------------------- class 2: impossible numbers fill cells

IN_TWO_DAYS = (datetime.now(timezone.utc) + timedelta(days=2)).isoformat()
IMPOSSIBLE = {  # field -> values a record must never carry into a cell
    "miou": [150.0, -5.0, float("inf"), float("nan"), True, "63.0", None, [41.5]],
    "fb_iou": [100.5, float("nan"), False],
    "date": [
        "9999-01-01T00:00:00+00:00",
        "0001-01-01T00:00:00",
        "2024-06-01",
        "yesterday",
        17,
        IN_TWO_DAYS,
    ],
    "fold": [-1, "0", True, 0.0, 7, 10**20],
    "shot": [0, 1.5, 10**25],
    "episodes": [-1, "1000"],
    "origin": ["verified", 1],
    "model": [7],
    "secs_per_episode": [float("nan"), -1.0],
    "record_schema": [record_schema.RECORD_SCHEMA + 1, "2"],
}
IMPOSSIBLE_CASES = [(field, value) for field, values in IMPOSSIBLE.items() for value in values]
IMPOSSIBLE_IDS = [f"{f}={'in two days' if v is IN_TWO_DAYS else repr(v)}" for f, v in IMPOSSIBLE_CASES]
"""Ids that do not change with the clock: every xdist worker must collect the same tests."""


@pytest.mark.parametrize(("field", "value"), IMPOSSIBLE_CASES, ids=IMPOSSIBLE_IDS)
def test_impossible_numbers_never_fill_a_cell_nor_hide_a_valid_one(tmp_path, field, value):
    """Tables read records through read_records only; the cells of all cases at once: the last test."""
    older = write_record(fields(), tmp_path)  # 41.5, dated VALID_MIOU_DATE
    newer = write_record(fields(miou=63.0, date=NEWER), tmp_path)
    data = json.loads(newer.read_text())
    data[field] = value
    newer.write_text(json.dumps(data))  # NaN / Infinity written as JSON's NaN / Infinity
    records, problems = read_all(tmp_path)
    assert [r["path"] for r in records] == [str(older)]
    assert len(problems) == 1 and str(newer) in problems[0] and f"'{field}'" in problems[0], problems


def test_valid_records_of_every_kind_pass_the_schema(tmp_path):
    """The control: what hmrepro writes (eval, bench without mIoU, BAM's runs, a schema-1 record) is read."""
    write_record(fields(), tmp_path)
    write_record(fields(kind="bench", miou=None, fb_iou=None, secs_per_image=0.2), tmp_path)
    first, second = episodes(20, seed=1), episodes(30, seed=2)
    both = {c: np.concatenate([first[c], second[c]]) for c in EPISODE_COLUMNS}
    runs = [miou_from_columns(t, CLASSES) for t in (first, second)]
    bam = with_episodes(both, protocol="bam", date=NEWER)
    bam.update(miou=float(np.mean([m for m, _ in runs])), fb_iou=float(np.mean([f for _, f in runs])))
    bam["bam_runs"] = [
        {"seed": s, "miou": m, "fb_iou": f, "episodes": n} for s, (m, f), n in zip((0, 1), runs, (20, 30))
    ]
    bam_path = write_record(bam, tmp_path)
    legacy = tmp_path / "legacy.json"
    legacy.write_text(json.dumps({"model": "hsnet", "benchmark": "pascal", "miou": 50.0}))
    records, problems = read_all(tmp_path)
    assert problems == [] and len(records) == 4
    assert {r.get("record_schema", 1) for r in records} == {record_schema.RECORD_SCHEMA, 1}
    record, table, class_ids = read_episode_table(bam_path)
    assert len(table["episode"]) == 50 and class_ids == CLASSES


# ---------------------------------------------------------------- class 3: nothing ties a record to its sidecar


def _swap_in_another_sidecar(path: Path) -> None:
    other = write_record(with_episodes(episodes(seed=5), date=NEWER, fold=1), path.parent / "other")
    other_name = json.loads(other.read_text())["per_episode_file"]
    own = json.loads(path.read_text())["per_episode_file"]
    (path.parent / own).write_bytes((other.parent / other_name).read_bytes())


SIDECAR_CASES = {  # case -> (how the pair is damaged, words the refusal must hold)
    "hash missing": (lambda p: edit(p, per_episode_sha256=None), "per_episode_sha256"),
    "hash empty": (lambda p: edit(p, per_episode_sha256=""), "per_episode_sha256"),
    "another record's sidecar": (_swap_in_another_sidecar, "sha256"),
    "mIoU edited": (lambda p: edit(p, miou=90.0), "miou 90"),
    "FB-IoU edited": (lambda p: edit(p, fb_iou=12.0), "fb_iou 12"),
    "episode count edited": (lambda p: edit(p, episodes=1000), "episodes 1000"),
    "intersection > union": (
        lambda p: replace_sidecar(p, sidecar_arrays(fg_inter=episodes()["fg_union"] + 5)),
        "intersection ≤ union",
    ),
    "negative counts": (
        lambda p: replace_sidecar(p, sidecar_arrays(bg_inter=-episodes()["bg_inter"])),
        "intersection ≤ union",
    ),
    "NaN counts": (
        lambda p: replace_sidecar(p, sidecar_arrays(fg_union=np.full(40, np.nan))),
        "not integers",
    ),
    "NaN fraction": (
        lambda p: replace_sidecar(p, sidecar_arrays(query_fg_fraction=np.full(40, np.nan))),
        "fraction in [0, 1]",
    ),
    "fraction > 1": (
        lambda p: replace_sidecar(p, sidecar_arrays(support_fg_fraction=np.full(40, 8.94))),
        "fraction in [0, 1]",
    ),
    "columns of two lengths": (
        lambda p: replace_sidecar(p, sidecar_arrays(episode=np.arange(39))),
        "lengths",
    ),
    "a column missing": (lambda p: replace_sidecar(p, sidecar_arrays(fg_inter=None)), "lacks"),
    "huge class id": (
        lambda p: replace_sidecar(p, sidecar_arrays(class_id=np.full(40, 10**12))),
        "class_id",
    ),
    "pickled column": (  # np.savez pickles object arrays
        lambda p: replace_sidecar(p, sidecar_arrays(episode=np.asarray([{"x": 1}] * 40, dtype=object))),
        "no plain numeric column",
    ),
    "not a zip": (lambda p: _write_raw_sidecar(p, b"not a zip at all"), "not a per-episode .npz"),
    "damaged compressed data": (lambda p: _write_raw_sidecar(p, _damaged(npz_bytes(sidecar_arrays()))), "damaged"),
}


def _damaged(data: bytes) -> bytes:
    """``data`` with bytes of its first member's compressed stream overwritten (the zip's directory intact)."""
    start = 30 + len("episode.npy") + 20
    return data[:start] + bytes(range(7, 47)) + data[start + 40 :]


def _write_raw_sidecar(path: Path, data: bytes) -> None:
    name = json.loads(path.read_text())["per_episode_file"]
    (path.parent / name).write_bytes(data)
    edit(path, per_episode_sha256=sha256_bytes(data))


@pytest.mark.parametrize("case", SIDECAR_CASES)
def test_a_record_and_its_sidecar_are_one_unit(tmp_path, case, capsys):
    path = write_record(with_episodes(), tmp_path)
    read_episode_table(path)  # the control: the pair as written is read
    damage, words = SIDECAR_CASES[case]
    damage(path)
    with pytest.raises(HmreproError) as info:
        read_episode_table(path)
    assert str(path) in str(info.value) and words in str(info.value), str(info.value)
    records, problems = read_all(tmp_path)
    assert [r for r in records if r["path"] == str(path)] == [] and len(problems) == 1 and words in problems[0]
    assert run(["compare", str(path), str(path)]) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "internal error" not in err and words in " ".join(err.split())


def test_an_edited_mIoU_names_both_values(tmp_path):
    path = write_record(with_episodes(), tmp_path)
    true_miou = json.loads(path.read_text())["miou"]
    edit(path, miou=90.0)
    with pytest.raises(HmreproError) as info:
        read_episode_table(path)
    assert "miou 90" in str(info.value) and f"{true_miou:.4g}" in str(info.value)


def test_a_sidecar_that_would_decompress_beyond_the_limit_is_refused_before_decompressing(tmp_path, monkeypatch):
    path = write_record(with_episodes(), tmp_path)
    monkeypatch.setattr(record_schema, "MAX_SIDECAR_MEMBER_BYTES", 10_000)
    big = sidecar_arrays(**{"episode": np.zeros(5_000, dtype=np.int64)})  # 40 kB of zeros: a few hundred bytes zipped
    replace_sidecar(path, big)
    decompressed = []
    monkeypatch.setattr(record_schema, "_npy_array", lambda raw, name, np: decompressed.append(name))
    with pytest.raises(HmreproError, match="would decompress episode.npy to 40128 bytes"):
        read_episode_table(path)
    assert decompressed == []
    monkeypatch.setattr(record_schema, "MAX_SIDECAR_MEMBER_BYTES", 50_000)
    monkeypatch.setattr(record_schema, "MAX_SIDECAR_DECOMPRESSED_BYTES", 40_000)  # each fits, all do not
    with pytest.raises(HmreproError, match=r"would decompress to 43\d\d\d bytes, more than the 40000 allowed"):
        read_episode_table(path)
    assert decompressed == []


def test_an_npy_header_claiming_more_than_its_bytes_is_refused_before_allocating(tmp_path):
    path = write_record(with_episodes(), tmp_path)
    lie = io.BytesIO()
    header = {"descr": "<i8", "fortran_order": False, "shape": (4_000_000_000_000,)}  # 32 TB
    np.lib.format.write_array_header_1_0(lie, header)
    header_lie = lie.getvalue() + np.arange(40, dtype=np.int64).tobytes()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, array in sidecar_arrays().items():
            one = io.BytesIO()
            np.save(one, array)
            archive.writestr(f"{name}.npy", header_lie if name == "episode" else one.getvalue())
    _write_raw_sidecar(path, buffer.getvalue())
    with pytest.raises(HmreproError, match=r"no plain numeric column \(shape \(4000000000000,\)"):
        read_episode_table(path)


# ---------------------------------------------------------------- class 4: paths escape their folder


@pytest.fixture
def outside(tmp_path) -> Path:
    """A valid sidecar outside the results folder (the hash is right: only the place is wrong)."""
    folder = tmp_path / "outside"
    path = write_record(with_episodes(), folder)
    return folder / json.loads(path.read_text())["per_episode_file"]


def _point_at(path: Path, name: str, sha_of: Path | None) -> None:
    edit(path, per_episode_file=name, per_episode_sha256=sha256_bytes(sha_of.read_bytes()) if sha_of else None)


ESCAPES = {  # case -> per_episode_file given the outside sidecar
    "absolute path": lambda out: str(out),
    "../": lambda out: f"../outside/{out.name}",
    "/etc/passwd": lambda out: "/etc/passwd",
    "/dev/zero": lambda out: "/dev/zero",
    "a sub-folder": lambda out: f"sub/{out.name}",
}


@pytest.mark.parametrize("case", ESCAPES)
def test_paths_never_leave_their_folder(tmp_path, outside, case, opened, no_hang):
    results = tmp_path / "results"
    path = write_record(with_episodes(), results)
    _point_at(path, ESCAPES[case](outside), outside)
    opened.clear()
    with pytest.raises(HmreproError, match="'per_episode_file'"):
        read_episode_table(path)
    records, problems = read_all(results)
    assert records == [] and len(problems) == 1 and "'per_episode_file'" in problems[0]
    hostile = [p for p in opened if p.startswith(str(outside.parent)) or p in ("/etc/passwd", "/dev/zero")]
    assert hostile == []


@pytest.mark.parametrize("kind", ["link out", "FIFO", "link to /dev/zero"])
def test_a_plain_sidecar_name_that_is_no_regular_file_inside_is_refused_without_hanging(
    tmp_path, outside, kind, opened, no_hang
):
    results = tmp_path / "results"
    path = write_record(with_episodes(), results)
    sidecar = results / json.loads(path.read_text())["per_episode_file"]
    sidecar.unlink()
    if kind == "FIFO":
        os.mkfifo(sidecar)
    else:
        sidecar.symlink_to(outside if kind == "link out" else "/dev/zero")
    opened.clear()
    with pytest.raises(HmreproError, match="FIFO" if kind == "FIFO" else "leads out of"):
        read_episode_table(path)
    assert str(outside) not in opened and "/dev/zero" not in opened


def test_a_records_path_field_never_replaces_the_file_read(tmp_path, capsys):
    path = write_record(with_episodes(), tmp_path)
    edit(path, path="/etc/passwd")
    (record,) = read_records(tmp_path)
    assert record["path"] == str(path)
    assert read_episode_table(path)[0]["path"] == str(path)
    assert run(["compare", str(path), str(path), "--json", "--resamples", "100"]) == 0
    assert json.loads(capsys.readouterr().out)["a"] == [str(path)]


def test_a_record_the_user_names_may_be_a_link_its_sidecar_is_read_beside_the_file_itself(tmp_path, capsys):
    real = write_record(with_episodes(), tmp_path / "elsewhere")
    link = tmp_path / "mine.json"
    link.symlink_to(real)
    record, table, _ = read_episode_table(link)
    assert record["path"] == str(link) and len(table["episode"]) == 40
    assert run(["compare", str(link), str(link), "--json", "--resamples", "100"]) == 0
    assert json.loads(capsys.readouterr().out)["a"] == [str(link)]


SPLIT_ESCAPES = {  # (list, text) -> where the refusal points
    "pascal ../": ("pascal/val_fold0.txt", "2007_000032__1\n../../etc/passwd__1\n", "line 2"),
    "pascal absolute": ("pascal/val_fold0.txt", "/etc/passwd__1\n", "line 1"),
    "pascal ..": ("pascal/val_fold0.txt", "..__1\n", "line 1"),
    "fss ../": ("fss/trn.txt", "cat\n../../../etc\n", "line 2"),
    "fss backslash": ("fss/trn.txt", "..\\..\\x\n", "line 1"),
    "coco image_dir": ("coco/val_fold0.json", json.dumps({"image_dir": "../..", "classes": {"0": [1]}}), "image_dir"),
}


@pytest.mark.parametrize("case", SPLIT_ESCAPES)
def test_split_list_names_stay_inside_the_data_root(tmp_path, case):
    rel, text, where = SPLIT_ESCAPES[case]
    path = tmp_path / "splits" / rel
    path.parent.mkdir(parents=True)
    path.write_text(text)
    write_checksums(tmp_path / "splits")
    splits = SplitFolder(tmp_path / "splits")
    read = {
        "pascal": lambda: splits.pascal("val", 0),
        "fss": lambda: splits.fss("trn"),
        "coco": lambda: splits.coco("val", 0),
    }
    with pytest.raises(CorruptFileError) as info:
        read[rel.split("/")[0]]()
    assert str(path) in str(info.value) and where in str(info.value) and "data root" in str(info.value)


# ---------------------------------------------------------------- class 5: terminal injection

HOSTILE = "\x1b]0;pwned\x07\x1b[2J[link=https://evil.example]fp32[/link]\u202e"
SAFE_TEXT = [
    ("plain", "plain"),
    ("naïve café 数据", "naïve café 数据"),
    ("\x1b[31mred", "\\x1b[31mred"),
    ("a\nb\rc\td", "a\\nb\\rc\\td"),
    ("\x9b2J", "\\x9b2J"),
    ("\u202eevil", "\\u202eevil"),
    ("name\udcff.json", "name\\udcff.json"),  # an undecodable byte of a file name (surrogateescape)
    (None, "None"),
    (41.5, "41.5"),
    ("[link=https://evil.example]ok[/link] [bold red]x", "[link=https://evil.example]ok[/link] [bold red]x"),
    ("\\[bold]x", "\\[bold]x"),
]


@pytest.mark.parametrize(("value", "shown"), SAFE_TEXT)
def test_file_text_is_shown_as_text(value, shown):
    from rich.text import Text

    assert safe_text(value) == shown
    assert Text.from_markup(safe_markup(value)).plain == shown  # what rich shows is the text, markup and all


def test_file_text_in_all_records_compare_and_warnings_reaches_the_terminal_as_text(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "400")
    results = tmp_path / "res\x1b[2Jults"
    write_record(fields(precision=HOSTILE), results)  # listed: "not shown: <precision>"
    (results / "bad\x1b]0;x\x07[red]name[bold].json").write_text("{")
    assert run(["table", "2", "--all-records", "--results", str(results)]) == 0
    out, err = capsys.readouterr()
    assert "\x1b" not in out + err and "\x07" not in out + err
    assert "[link=https://evil.example]fp32[/link]" in out and "\\x1b]0;pwned" in out
    assert "[red]name[bold]" in err and len(err.strip().splitlines()) == 1
    for fmt in ("csv", "markdown", "latex"):
        assert run(["table", "2", "--all-records", "--results", str(results), "--format", fmt]) == 0
        out, _ = capsys.readouterr()
        assert "\x1b" not in out and "x1b" in out
    a = write_record(with_episodes(model="hsnet\x1b[2J[link=https://evil.example]ok[/link]"), tmp_path / "a")
    assert run(["compare", str(a), str(a), "--resamples", "100"]) == 0
    out, err = capsys.readouterr()
    assert "\x1b" not in out + err and "[link=https://evil.example]ok[/link]" in out


# ---------------------------------------------------------------- done when: all of them at once


def test_a_folder_of_every_example_shows_only_the_valid_records_numbers(tmp_path, capsys, no_hang):
    folder = tmp_path / "results"
    folder.mkdir()
    write_record(fields(), folder)  # the one valid fold-0 record: 41.5
    for make, _ in ONE_BAD_FILE.values():
        make(folder)
    for number, (field, value) in enumerate(IMPOSSIBLE_CASES):
        path = write_record(fields(miou=60.0 + number / 100, date=NEWER), folder)
        data = json.loads(path.read_text())
        data[field] = value
        path.write_text(json.dumps(data))
    for number, (damage, _) in enumerate(SIDECAR_CASES.values()):
        damage(write_record(with_episodes(episodes(seed=10 + number), date=NEWER), folder / f"sidecar{number}"))
    bad = len(ONE_BAD_FILE) + len(IMPOSSIBLE_CASES) + len(SIDECAR_CASES)
    value, skipped = cell(folder)
    assert value == 41.5 and len(skipped) == bad
    assert run(["table", "2", "--results", str(folder), "--compare-claimed", "--format", "markdown"]) == 0
    out, err = capsys.readouterr()
    assert len(err.strip().splitlines()) == bad and "internal error" not in err
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if "| HSNet-HM | HM | 1 | claimed | 41.0 |" in line)
    assert "| verified | 41.5 (+0.5) | " in lines[start + 1]  # fold 1: the valid donor of a swapped sidecar


def test_sweep_plan_counts_no_job_done_by_a_bad_record_and_warns_once(tmp_path, capsys):
    results, sweep = tmp_path / "results", tmp_path / "sweep"
    valid = write_record(fields(origin="own", date=NEWER), results)
    command = ["sweep", "plan", "table", "2", "--json", "--sweep-dir", str(sweep), "--results", str(results)]
    assert run(command) == 0
    done = [job["id"] for job in json.loads(capsys.readouterr().out) if job["state"] == "done"]
    assert done  # the control: the valid record settles its evaluation
    edit(valid, miou=150.0)
    _deep_non_record(results)
    assert run(command) == 0
    out, err = capsys.readouterr()
    assert [job["id"] for job in json.loads(out) if job["state"] == "done"] == []
    warnings = [line for line in err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 2 and "'miou'" in err and "internal error" not in err


def test_compare_and_analyze_of_a_folder_leave_a_bad_record_out_with_one_warning(tmp_path, capsys):
    folder = tmp_path / "a"
    valid = write_record(with_episodes(), folder)
    edit(write_record(with_episodes(episodes(seed=3), fold=1), folder), miou=90.0)
    assert run(["compare", str(folder), str(valid), "--json", "--resamples", "100"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["a"] == [str(valid)]
    assert len(err.strip().splitlines()) == 1 and "miou 90" in err and "fold1" in err
    figure = tmp_path / "sizes.svg"
    assert (
        run(["analyze", "sizes", str(folder), str(valid), "--bins", "2", "--resamples", "100", "-o", str(figure)]) == 0
    )
    err = capsys.readouterr().err
    assert len([line for line in err.splitlines() if line.startswith("warning:")]) == 1

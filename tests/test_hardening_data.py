"""Bad data, locks, permissions and hostile files: each case a one-line error naming the file, never silence.

Everything runs on small files written into tmp folders and a loopback HTTP server (no network, CPU only).
Tests run as root in CI, where chmod 000 files stay readable: such cases are skipped for root.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from test_acquisition_http import md5, options, payload, server  # noqa: F401  (server is a fixture)

from hmrepro.acquisition import fetch as fetch_module
from hmrepro.acquisition import verify as verify_module
from hmrepro.acquisition.check import check_layout
from hmrepro.acquisition.fetch import acquire, check_from_dirs, require_verified
from hmrepro.acquisition.http import HttpOptions, TransientError, transfer_once
from hmrepro.acquisition.lock import LockFile
from hmrepro.acquisition.registry import Source, load_registry
from hmrepro.data.benchmarks import get_benchmark
from hmrepro.data.splits import SplitFolder, write_checksums
from hmrepro.engine.checkpoint_io import read_checkpoint, save_checkpoint
from hmrepro.engine.records import atomic_write_text, read_records
from hmrepro.engine.runs import RunError, read_metrics
from hmrepro.errors import HmreproError
from hmrepro.locks import LockedError, exclusive_lock

ROOT = os.geteuid() == 0
needs_non_root = pytest.mark.skipif(ROOT, reason="root reads chmod-000 files")


# -- tiny benchmark layouts -------------------------------------------------------------------------------------


def _pascal_pair(root: Path, name: str, mask: np.ndarray | Image.Image, size=(40, 30)) -> None:
    """VOC2012/JPEGImages/<name>.jpg (``size`` = W, H) and its mask as given."""
    (root / "VOC2012" / "JPEGImages").mkdir(parents=True, exist_ok=True)
    (root / "VOC2012" / "SegmentationClassAug").mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (120, 30, 200)).save(root / "VOC2012" / "JPEGImages" / f"{name}.jpg")
    img = mask if isinstance(mask, Image.Image) else Image.fromarray(mask)
    img.save(root / "VOC2012" / "SegmentationClassAug" / f"{name}.png")


def _good_mask(h=30, w=40, value=1) -> np.ndarray:
    arr = np.zeros((h, w), dtype=np.uint8)
    arr[5:15, 5:20] = value
    arr[0, :] = 255
    return arr


def _pascal_splits(root: Path, names: list[str]) -> Path:
    splits = root / "splits"
    (splits / "pascal").mkdir(parents=True, exist_ok=True)
    for split in ("trn", "val"):
        for fold in range(4):
            (splits / "pascal" / f"{split}_fold{fold}.txt").write_text("".join(f"{n}__{fold * 5 + 1}\n" for n in names))
    write_checksums(splits)
    return splits


PASCAL = get_benchmark("pascal")


def _one_line(err: BaseException) -> str:
    text = str(err)
    assert "\n" not in text and "Traceback" not in text
    return text


# -- masks ----------------------------------------------------------------------------------------------------


def test_pascal_mask_value_that_is_no_class_names_the_file_value_and_fix(tmp_path):
    arr = _good_mask()
    arr[3, 3] = 77
    _pascal_pair(tmp_path, "a", arr)
    with pytest.raises(HmreproError) as info:
        PASCAL.read_mask(tmp_path, "a")
    text = _one_line(info.value)
    assert "a.png" in text and "77" in text and "hmrepro prepare --check pascal" in text


def test_sixteen_bit_mask_with_values_above_255_is_refused_not_wrapped(tmp_path):
    arr = _good_mask().astype(np.uint16)
    arr[2, 2] = 257  # wrapped to 8 bits this would read as class 1
    _pascal_pair(tmp_path, "a", Image.fromarray(arr))
    assert Image.open(tmp_path / "VOC2012" / "SegmentationClassAug" / "a.png").mode.startswith("I")
    with pytest.raises(HmreproError, match="257"):
        PASCAL.read_mask(tmp_path, "a")


def test_sixteen_bit_mask_whose_values_are_classes_reads_as_its_8bit_twin(tmp_path):
    arr = _good_mask()
    _pascal_pair(tmp_path, "a", Image.fromarray(arr.astype(np.uint16)))
    assert torch.equal(PASCAL.read_mask(tmp_path, "a"), torch.from_numpy(arr))


def test_rgb_mask_is_refused_naming_the_file(tmp_path):
    _pascal_pair(tmp_path, "a", Image.fromarray(_good_mask()).convert("RGB"))
    with pytest.raises(HmreproError, match=r"a\.png is not a single-channel 8-bit image \(mode RGB"):
        PASCAL.read_mask(tmp_path, "a")


def test_mask_of_another_size_than_its_image_is_refused(tmp_path):
    _pascal_pair(tmp_path, "a", _good_mask(h=29))
    with pytest.raises(HmreproError) as info:
        PASCAL.load_pair(tmp_path, "a")
    text = _one_line(info.value)
    assert "a.png is 40x29" in text and "image is 40x30" in text


def test_coco_mask_value_81_is_no_class(tmp_path):
    name = "train2014/COCO_train2014_000000000001.jpg"
    (tmp_path / "COCO2014" / "annotations" / "train2014").mkdir(parents=True)
    arr = np.full((8, 8), 80, dtype=np.uint8)
    Image.fromarray(arr).save(tmp_path / "COCO2014" / "annotations" / "train2014" / "COCO_train2014_000000000001.png")
    assert int(get_benchmark("coco").read_mask(tmp_path, name).max()) == 80  # 80 = 1 + class 79: fine
    arr[0, 0] = 81
    Image.fromarray(arr).save(tmp_path / "COCO2014" / "annotations" / "train2014" / "COCO_train2014_000000000001.png")
    with pytest.raises(HmreproError, match="81, which are no coco class"):
        get_benchmark("coco").read_mask(tmp_path, name)


def test_fss_masks_are_grey_levels_as_the_authors_read_them_but_16_bit_is_refused(tmp_path):
    folder = tmp_path / "FSS-1000" / "cat"
    folder.mkdir(parents=True)
    Image.fromarray(np.array([[0, 127, 128, 255]], dtype=np.uint8)).convert("RGB").save(folder / "1.png")
    fss = get_benchmark("fss")
    raw = fss.read_mask(tmp_path, "cat/1.jpg")
    assert fss.binarize(raw, 0)[0].tolist() == [[0.0, 0.0, 1.0, 1.0]]
    Image.fromarray(np.array([[0, 300]], dtype=np.uint16)).save(folder / "2.png")
    with pytest.raises(HmreproError, match=r"2\.png is a 16/32-bit image"):
        fss.read_mask(tmp_path, "cat/2.jpg")


def test_a_folder_in_place_of_an_image_is_not_said_to_be_missing(tmp_path):
    _pascal_pair(tmp_path, "a", _good_mask())
    img = tmp_path / "VOC2012" / "JPEGImages" / "a.jpg"
    img.unlink()
    img.mkdir()
    with pytest.raises(HmreproError) as info:
        PASCAL.load_pair(tmp_path, "a")
    assert "is a folder" in str(info.value) and "does not exist" not in str(info.value)


class _Recorder:
    def __init__(self):
        self.started, self.advanced, self.finished = [], 0, 0

    def start(self, description, total, completed=0):
        self.started.append(total)
        return "task"

    def advance(self, task, n=1, info=""):
        self.advanced += n

    def finish(self, task):
        self.finished += 1

    def log(self, message):
        pass


def test_prepare_check_sample_catches_wrong_size_and_wrong_values_and_full_checks_every_pair(tmp_path):
    names = [f"img{i}" for i in range(6)]
    for n in names:
        _pascal_pair(tmp_path, n, _good_mask())
    bad_value = _good_mask()
    bad_value[1, 1] = 99
    _pascal_pair(tmp_path, "img1", bad_value)
    _pascal_pair(tmp_path, "img4", _good_mask(h=20))
    splits = SplitFolder(_pascal_splits(tmp_path, names))

    sampled = check_layout("pascal", tmp_path, splits, sample=16)  # 6 pairs: the sample holds them all
    assert not sampled.ok and sorted(p for p, _ in sampled.unreadable) == [
        "VOC2012/SegmentationClassAug/img1.png",
        "VOC2012/SegmentationClassAug/img4.png",
    ]

    one = check_layout("pascal", tmp_path, splits, sample=1)  # the fast default decodes a sample only
    assert one.sampled == 2

    progress = _Recorder()
    full = check_layout("pascal", tmp_path, splits, full=True, progress=progress)
    assert full.sampled == 12 and progress.started == [6] and progress.advanced == 6 and progress.finished == 1
    assert {p for p, _ in full.unreadable} == {p for p, _ in sampled.unreadable}


def test_prepare_check_full_on_the_command_line_exits_1_naming_the_bad_mask(tmp_path):
    from typer.testing import CliRunner

    from hmrepro.cli.app import app

    names = ["x", "y"]
    _pascal_pair(tmp_path, "x", _good_mask())
    _pascal_pair(tmp_path, "y", Image.fromarray(_good_mask()).convert("RGB"))
    splits = _pascal_splits(tmp_path, names)
    result = CliRunner().invoke(
        app, ["prepare", "--check", "pascal", "--full", "--data-root", str(tmp_path), "--splits", str(splits)]
    )
    assert result.exit_code == 1, result.output
    assert "y.png" in result.output and "Traceback" not in result.output


# -- split lists ----------------------------------------------------------------------------------------------


def _splits_with(tmp_path: Path, rel: str, text: str) -> SplitFolder:
    path = tmp_path / "splits" / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    write_checksums(tmp_path / "splits")
    return SplitFolder(tmp_path / "splits")


def test_empty_split_list_is_an_error_naming_it_not_a_zero_division(tmp_path):
    splits = _splits_with(tmp_path, "pascal/val_fold0.txt", "")
    with pytest.raises(HmreproError, match=r"val_fold0\.txt is empty"):
        PASCAL.pool(splits, "val", 0)


def test_split_line_without_double_underscore_names_file_and_line(tmp_path):
    splits = _splits_with(tmp_path, "pascal/val_fold0.txt", "2007_000032__1\n2007_000039-2\n")
    with pytest.raises(HmreproError, match=r"val_fold0\.txt line 2 is not '<image id>__<class>'"):
        splits.pascal("val", 0)


def test_malformed_sha256sums_names_the_file_and_line(tmp_path):
    splits = _splits_with(tmp_path, "fss/trn.txt", "cat\n")
    (tmp_path / "splits" / "SHA256SUMS").write_text("not-a-digest\n")
    with pytest.raises(HmreproError, match=r"SHA256SUMS line 1 is not"):
        splits.fss("trn")


def test_truncated_coco_split_json_names_the_file(tmp_path):
    splits = _splits_with(tmp_path, "coco/val_fold0.json", '{"image_dir": "val2014", "classes": {"0": [1, 2')
    with pytest.raises(HmreproError, match=r"val_fold0\.json is not valid JSON"):
        splits.coco("val", 0)


def test_a_folder_in_place_of_a_split_list_is_not_said_to_be_missing(tmp_path):
    splits = _splits_with(tmp_path, "fss/trn.txt", "cat\n")
    (tmp_path / "splits" / "fss" / "val.txt").mkdir()
    with pytest.raises(HmreproError) as info:
        splits.fss("val")
    assert "is a folder" in str(info.value) and "does not exist" not in str(info.value)


@needs_non_root
def test_unreadable_split_list_says_permission_not_fetch(tmp_path):
    splits = _splits_with(tmp_path, "fss/trn.txt", "cat\n")
    (tmp_path / "splits" / "fss" / "trn.txt").chmod(0)
    try:
        with pytest.raises(HmreproError, match="permission denied") as info:
            splits.fss("trn")
        assert "fetch" not in str(info.value)
    finally:
        (tmp_path / "splits" / "fss" / "trn.txt").chmod(0o644)


# -- locks ----------------------------------------------------------------------------------------------------

_HOLDER = """
import sys, time
from hmrepro.locks import exclusive_lock
with exclusive_lock(sys.argv[1], wait=False, holder_info="test holder"):
    print("held", flush=True)
    time.sleep(60)
"""


def test_a_held_lock_refuses_a_second_process_naming_the_holders_pid_and_is_free_once_it_dies(tmp_path):
    lock = tmp_path / "run.lock"
    proc = subprocess.Popen([sys.executable, "-c", _HOLDER, str(lock)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        with pytest.raises(LockedError) as info:
            with exclusive_lock(lock, wait=False, holder_info="second", subject="run folder r1"):
                pass
        assert info.value.pid == proc.pid and f"PID {proc.pid}" in str(info.value) and "test holder" in str(info.value)
    finally:
        proc.kill()
        proc.wait()
    with exclusive_lock(lock, wait=False, holder_info="third"):  # the kernel dropped the dead holder's lock
        assert json.loads(lock.read_text())["pid"] == os.getpid()


def test_waiting_lock_blocks_until_the_holder_leaves(tmp_path):
    lock, order, said = tmp_path / "t.lock", [], []

    def second():
        with exclusive_lock(lock, wait=True, holder_info="second", on_wait=said.append):
            order.append("second")

    with exclusive_lock(lock, wait=False, holder_info="first"):
        t = threading.Thread(target=second)
        t.start()
        time.sleep(0.3)
        order.append("first done")
    t.join(10)
    assert order == ["first done", "second"] and len(said) == 1 and "first" in said[0]


def _source(**kw) -> Source:
    kw.setdefault("name", "thing")
    kw.setdefault("group", "pascal")
    kw.setdefault("filename", "thing.bin")
    return Source(**kw)


def test_two_concurrent_downloads_of_one_file_fetch_and_verify_it_once(server, tmp_path, monkeypatch):  # noqa: F811
    body = payload(600_000)
    src = _source(urls=(server.add("/race.bin", body),), size=len(body), md5=md5(body))
    verified, real_verify = [], verify_module.verify_file
    real_fetch = fetch_module._fetch_candidate

    def counting_verify(*a, **kw):
        verified.append(a[0])
        return real_verify(*a, **kw)

    def slow_fetch(*a, **kw):
        time.sleep(0.3)  # both threads are inside acquire() at once
        return real_fetch(*a, **kw)

    monkeypatch.setattr(verify_module, "verify_file", counting_verify)
    monkeypatch.setattr(fetch_module, "verify_file", counting_verify)
    monkeypatch.setattr(fetch_module, "_fetch_candidate", slow_fetch)
    results, errors = [], []

    def run():
        try:
            results.append(acquire(src, tmp_path, LockFile.for_data_root(tmp_path), options()).status)
        except Exception as err:  # surfaced by the assertion below
            errors.append(err)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors and sorted(results) == ["downloaded", "present"]
    assert len(server.requests_for("/race.bin")) == 1 and len(verified) == 1
    assert (tmp_path / "downloads" / "thing.bin").read_bytes() == body
    assert not (tmp_path / "downloads" / "thing.bin.part").exists()


def test_lock_file_updates_from_two_writers_lose_no_pin(tmp_path):
    target = tmp_path / "f.bin"
    target.write_bytes(b"x")

    def pin(prefix):
        lock = LockFile.for_data_root(tmp_path)  # each writer read the file once, before the others wrote
        for i in range(15):
            lock.record(f"{prefix}{i}", target, {"sha256": f"{i:064x}"}, origin=f"url:{prefix}{i}")

    threads = [threading.Thread(target=pin, args=(p,)) for p in "ab"]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(LockFile.for_data_root(tmp_path).data["files"]) == 30


def _stalling_server(body: bytes, sent: int):
    """One connection: headers for all of ``body``, ``sent`` bytes of it, then silence."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)

    def serve():
        conn, _ = srv.accept()
        conn.recv(65536)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body[:sent])
        time.sleep(3)
        conn.close()
        srv.close()

    threading.Thread(target=serve, daemon=True).start()
    return f"http://127.0.0.1:{srv.getsockname()[1]}/f"


def test_a_stalled_download_keeps_every_byte_it_received_for_the_resume(tmp_path):
    body = payload(200_000)
    url = _stalling_server(body, 70_000)
    part = tmp_path / "f.part"
    with pytest.raises(TransientError):
        transfer_once(url, part, HttpOptions(timeout=0.5, progress=False), size=len(body))
    assert part.read_bytes() == body[:70_000]


# -- downloads: wrong kinds, --from, registry -------------------------------------------------------------------


def test_from_naming_a_missing_folder_fails_instead_of_going_to_the_network(tmp_path):
    with pytest.raises(HmreproError, match=r"--from .*nothere does not exist"):
        check_from_dirs([tmp_path / "nothere"])
    (tmp_path / "afile").write_text("x")
    with pytest.raises(HmreproError, match="is a file"):
        check_from_dirs([tmp_path / "afile"])


def test_a_folder_in_place_of_a_downloaded_archive_is_neither_missing_nor_to_be_fetched_again(tmp_path):
    src = _source(urls=("http://127.0.0.1:9/x",), md5="0" * 32)
    (tmp_path / "downloads" / "thing.bin").mkdir(parents=True)
    with pytest.raises(HmreproError) as info:
        require_verified(src, tmp_path, LockFile.for_data_root(tmp_path), "hmrepro download pascal")
    assert "is a folder" in str(info.value) and "does not exist" not in str(info.value)
    with pytest.raises(HmreproError, match="is a folder"):
        acquire(src, tmp_path, LockFile.for_data_root(tmp_path), options())


@needs_non_root
def test_an_unreadable_archive_says_permission_not_fetch_it_again(tmp_path):
    src = _source(urls=("http://127.0.0.1:9/x",), md5="0" * 32)
    path = tmp_path / "downloads" / "thing.bin"
    path.parent.mkdir()
    path.write_bytes(b"data")
    path.chmod(0)
    try:
        with pytest.raises(HmreproError, match="permission denied") as info:
            require_verified(src, tmp_path, LockFile.for_data_root(tmp_path), "hmrepro download pascal")
        assert "again" not in str(info.value)
    finally:
        path.chmod(0o644)


@pytest.mark.parametrize("kind", ["folder", "binary"])
def test_hmrepro_sources_that_is_a_folder_or_binary_is_one_line(tmp_path, monkeypatch, kind):
    target = tmp_path / "reg"
    if kind == "folder":
        target.mkdir()
    else:
        target.write_bytes(bytes(range(256)) * 4)
    monkeypatch.setenv("HMREPRO_SOURCES", str(target))
    with pytest.raises(HmreproError) as info:
        load_registry()
    assert str(target) in _one_line(info.value) and "HMREPRO_SOURCES" in str(info.value)


# -- permissions of written files -------------------------------------------------------------------------------


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_records_checkpoints_and_the_lock_file_get_the_umask_mode_not_0600(tmp_path, umask):
    old = os.umask(umask)
    try:
        atomic_write_text(tmp_path / "r.json", "{}")
        save_checkpoint(tmp_path / "c.pt", {"w": torch.ones(1)})
        lock = LockFile.for_data_root(tmp_path)
        lock.record("k", tmp_path / "r.json", {"sha256": "0" * 64}, origin=None)
        for name in ("r.json", "c.pt", ".hmrepro-lock.json"):
            assert os.stat(tmp_path / name).st_mode & 0o777 == 0o666 & ~umask, name
    finally:
        os.umask(old)


# -- hostile checkpoints --------------------------------------------------------------------------------------


class _RunsCode:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("zipfile", [True, False])
def test_a_checkpoint_that_asks_to_run_code_is_refused_in_one_line_and_runs_nothing(tmp_path, zipfile):
    marker = tmp_path / "PWNED"
    path = tmp_path / "evil.pt"
    torch.save(
        {"state_dict": {"w": torch.ones(1)}, "x": _RunsCode(marker)}, path, _use_new_zipfile_serialization=zipfile
    )
    with pytest.raises(HmreproError) as info:
        read_checkpoint(path)
    text = _one_line(info.value)
    assert "asks to run code" in text and "will not load it" in text and str(path) in text
    assert "weights_only=False" not in text and "PyTorch 2.6" not in text
    assert not marker.exists()


# -- run folders and records ------------------------------------------------------------------------------------


def test_a_torn_last_metrics_line_is_dropped_with_a_warning(tmp_path):
    (tmp_path / "metrics.jsonl").write_text('{"epoch": 0, "miou": 1.0}\n{"epoch": 1, "mi')
    problems: list[str] = []
    assert read_metrics(tmp_path, problems) == [{"epoch": 0, "miou": 1.0}]
    assert len(problems) == 1 and "metrics.jsonl line 2" in problems[0]


def test_a_bad_metrics_line_before_the_last_names_file_and_line(tmp_path):
    (tmp_path / "metrics.jsonl").write_text('{"epoch": 0}\n{"epo\n{"epoch": 2}\n')
    with pytest.raises(RunError, match=r"metrics\.jsonl line 2"):
        read_metrics(tmp_path)


def test_table_records_that_cannot_be_read_are_named_not_silently_skipped(tmp_path):
    good = {"model": "hsnet", "benchmark": "pascal", "miou": 50.0}
    (tmp_path / "good.json").write_text(json.dumps(good))
    (tmp_path / "torn.json").write_text('{"model": "hsnet", "bench')
    (tmp_path / "half.json").write_text(json.dumps({"model": "hsnet"}))
    (tmp_path / "config.json").write_text(json.dumps({"lr": 0.001}))  # no record at all: passed over
    problems: list[str] = []
    records = list(read_records(tmp_path, problems))
    assert [Path(r["path"]).name for r in records] == ["good.json"]
    assert sorted(Path(p.split()[1].rstrip(":")).name for p in problems) == ["half.json", "torn.json"]

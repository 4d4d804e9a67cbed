"""Downloads against a loopback HTTP server: complete, resumed, corrupt, flaky, mirrors, --from, lock, gdown.

The server (``LoopbackServer``) is also used by the other acquisition tests. It listens on 127.0.0.1 only,
serves bytes the test registers, honours ``Range: bytes=N-`` and injects faults: fail N times with 500,
truncate a response (full Content-Length, half the body, then close), corrupt a response, ignore Range.
It shuts itself down after ``lifetime`` seconds even if a test forgets to.
"""

from __future__ import annotations

import hashlib
import http.server
import re
import threading
from collections import namedtuple
from dataclasses import dataclass
from pathlib import Path

import pytest

from hmrepro.acquisition import diskspace
from hmrepro.acquisition.download_errors import ChecksumError, DownloadError, InsufficientSpaceError, PermanentHTTPError
from hmrepro.acquisition.fetch import FetchOptions, acquire, require_verified
from hmrepro.acquisition.gdrive import GDrive
from hmrepro.acquisition.http import HttpOptions, fetch_url
from hmrepro.acquisition.lock import LockFile
from hmrepro.acquisition.registry import Source
from hmrepro.acquisition.retry import RetryPolicy
from hmrepro.acquisition.verify import Expected
from hmrepro.errors import HmreproError, MissingDataError

Request = namedtuple("Request", "path range status")


@dataclass
class Route:
    body: bytes
    fail: int = 0  # answer 500 this many times
    truncate: int = 0  # send half the body this many times
    corrupt: int = 0  # flip bytes this many times
    ignore_range: bool = False
    content_type: str = "application/octet-stream"


class LoopbackServer:
    """A threaded HTTP server on 127.0.0.1 with Range support and fault injection (see module docstring)."""

    def __init__(self, lifetime: float = 120.0):
        self.routes: dict[str, Route] = {}
        self.requests: list[Request] = []
        self._lock = threading.Lock()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            timeout = 10

            def log_message(self, *args):  # keep test output clean
                pass

            def do_GET(self):
                server._handle(self)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.timer = threading.Timer(lifetime, self.stop)
        self.timer.daemon = True

    # -- set-up ------------------------------------------------------------------------------------------
    def add(self, path: str, body: bytes, **faults) -> str:
        self.routes[path] = Route(body, **faults)
        return self.url(path)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"

    def start(self) -> LoopbackServer:
        self.thread.start()
        self.timer.start()
        return self

    def stop(self) -> None:
        self.timer.cancel()
        self.httpd.shutdown()
        self.httpd.server_close()

    def requests_for(self, path: str) -> list[Request]:
        return [r for r in self.requests if r.path == path]

    # -- serving ----------------------------------------------------------------------------------------
    def _handle(self, h: http.server.BaseHTTPRequestHandler) -> None:
        route = self.routes.get(h.path)
        rng = h.headers.get("Range")
        with self._lock:
            if route is None:
                status = 404
            elif route.fail:
                route.fail -= 1
                status = 500
            else:
                status = 200
            fault_truncate = route is not None and status == 200 and route.truncate > 0
            fault_corrupt = route is not None and status == 200 and route.corrupt > 0
            if fault_truncate:
                route.truncate -= 1
            if fault_corrupt:
                route.corrupt -= 1
        if status != 200:
            self.requests.append(Request(h.path, rng, status))
            h.send_response(status)
            h.send_header("Content-Length", "0")
            h.end_headers()
            return
        body = route.body
        start = 0
        m = re.match(r"bytes=(\d+)-$", rng or "")
        if m and not route.ignore_range:
            start = int(m.group(1))
            if start >= len(body):
                self.requests.append(Request(h.path, rng, 416))
                h.send_response(416)
                h.send_header("Content-Range", f"bytes */{len(body)}")
                h.send_header("Content-Length", "0")
                h.end_headers()
                return
            status = 206
        chunk = body[start:]
        if fault_corrupt:
            chunk = bytes(b ^ 0xFF for b in chunk[:64]) + chunk[64:]
        self.requests.append(Request(h.path, rng, status))
        h.send_response(status)
        h.send_header("Content-Type", route.content_type)
        h.send_header("Content-Length", str(len(chunk)))
        if status == 206:
            h.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        h.send_header("Accept-Ranges", "bytes")
        h.end_headers()
        if fault_truncate:
            h.wfile.write(chunk[: len(chunk) // 2])
            h.wfile.flush()
            h.close_connection = True
            return
        h.wfile.write(chunk)


@pytest.fixture
def server():
    srv = LoopbackServer().start()
    yield srv
    srv.stop()


FAST = RetryPolicy(attempts=4, base_delay=0.001, max_delay=0.01)
QUIET = HttpOptions(retry=FAST, progress=False)


def payload(n: int = 300_000, seed: int = 1) -> bytes:
    return hashlib.sha256(str(seed).encode()).digest() * (n // 32) + b"end"


def md5(b: bytes) -> str:
    return hashlib.md5(b).hexdigest()


def sha256(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def options(**kw) -> FetchOptions:
    kw.setdefault("retry", FAST)
    kw.setdefault("progress", False)
    kw.setdefault("timeout", 10.0)
    kw.setdefault("gdrive", GDrive(quiet=True))
    return FetchOptions(**kw)


# -- fetch_url ---------------------------------------------------------------------------------------------------


def test_complete_download_verified_and_renamed(server, tmp_path):
    body = payload()
    url = server.add("/a.bin", body)
    dest = tmp_path / "a.bin"
    digests = fetch_url(url, dest, Expected(size=len(body), md5=md5(body)), QUIET)
    assert dest.read_bytes() == body
    assert digests == {"sha256": sha256(body), "md5": md5(body)}
    assert not (tmp_path / "a.bin.part").exists()
    assert [r.status for r in server.requests] == [200]


def test_interrupted_download_resumes_with_range(server, tmp_path):
    body = payload()
    url = server.add("/big.tar", body, truncate=1)
    dest = tmp_path / "big.tar"
    fetch_url(url, dest, Expected(size=len(body), md5=md5(body)), QUIET)
    assert dest.read_bytes() == body
    reqs = server.requests_for("/big.tar")
    assert reqs[0].range is None and reqs[0].status == 200
    assert reqs[1].range == f"bytes={len(body) // 2}-" and reqs[1].status == 206  # the server saw a Range request


def test_part_file_from_an_earlier_run_is_resumed(server, tmp_path):
    body = payload()
    url = server.add("/b.bin", body)
    dest = tmp_path / "b.bin"
    (tmp_path / "b.bin.part").write_bytes(body[:1000])
    fetch_url(url, dest, Expected(sha256=sha256(body)), QUIET)
    assert dest.read_bytes() == body
    assert server.requests_for("/b.bin")[0].range == "bytes=1000-"


def test_server_ignoring_range_restarts_from_zero(server, tmp_path):
    body = payload()
    url = server.add("/c.bin", body, truncate=1, ignore_range=True)
    dest = tmp_path / "c.bin"
    fetch_url(url, dest, Expected(size=len(body), md5=md5(body)), QUIET)
    assert dest.read_bytes() == body
    reqs = server.requests_for("/c.bin")
    assert reqs[1].range is not None and reqs[1].status == 200  # asked to resume, got the whole file


def test_corrupt_download_is_fetched_again(server, tmp_path):
    body = payload()
    url = server.add("/d.bin", body, corrupt=1)
    dest = tmp_path / "d.bin"
    seen = []
    fetch_url(
        url, dest, Expected(size=len(body), md5=md5(body)), HttpOptions(retry=FAST, progress=False, log=seen.append)
    )
    assert dest.read_bytes() == body
    assert [r.status for r in server.requests_for("/d.bin")] == [200, 200]
    assert any("md5" in m for m in seen)


def test_always_corrupt_download_is_refused_and_not_kept(server, tmp_path):
    body = payload()
    url = server.add("/e.bin", body, corrupt=10)
    dest = tmp_path / "e.bin"
    with pytest.raises(ChecksumError, match="md5"):
        fetch_url(url, dest, Expected(md5=md5(body)), QUIET)
    assert not dest.exists() and not (tmp_path / "e.bin.part").exists()


def test_server_failing_twice_then_succeeding_with_backoff(server, tmp_path):
    body = payload()
    url = server.add("/f.bin", body, fail=2)
    waits = []
    policy = RetryPolicy(attempts=4, base_delay=0.001, factor=2.0, sleep=waits.append)
    fetch_url(url, tmp_path / "f.bin", Expected(md5=md5(body)), HttpOptions(retry=policy, progress=False))
    assert (tmp_path / "f.bin").read_bytes() == body
    assert [r.status for r in server.requests_for("/f.bin")] == [500, 500, 200]
    assert waits == [0.001, 0.002]  # exponential backoff


def test_server_failing_too_often_gives_up(server, tmp_path):
    url = server.add("/g.bin", payload(), fail=100)
    with pytest.raises(DownloadError, match="gave up after 3 attempts"):
        retry = RetryPolicy(attempts=3, base_delay=0, sleep=lambda s: None)
        fetch_url(url, tmp_path / "g.bin", options=HttpOptions(retry=retry, progress=False))
    assert len(server.requests_for("/g.bin")) == 3


def test_not_found_is_not_retried(server, tmp_path):
    with pytest.raises(PermanentHTTPError, match="404"):
        fetch_url(server.url("/missing"), tmp_path / "x", options=QUIET)
    assert len(server.requests) == 1


def test_wrong_size_on_server_is_refused_before_downloading(server, tmp_path):
    url = server.add("/h.bin", payload())
    with pytest.raises(ChecksumError, match="expected"):
        fetch_url(url, tmp_path / "h.bin", Expected(size=123), QUIET)


# -- acquire: registry sources, lock, --from, mirrors, disk space ------------------------------------------------


def _source(name="thing", filename="thing.bin", **kw) -> Source:
    return Source(name=name, group="pascal", filename=filename, **kw)


def test_acquire_skips_a_verified_file_and_refetches_a_corrupt_one(server, tmp_path):
    body = payload()
    src = _source(urls=(server.add("/t.bin", body),), size=len(body), md5=md5(body))
    lock = LockFile.for_data_root(tmp_path)
    got = acquire(src, tmp_path, lock, options())
    assert got.status == "downloaded" and got.path == tmp_path / "downloads" / "thing.bin"
    assert acquire(src, tmp_path, lock, options()).status == "present"
    assert len(server.requests) == 1  # nothing fetched the second time

    # truncate the file on disk: detected, fetched again (never handed to extraction)
    got.path.write_bytes(body[:100])
    with pytest.raises(HmreproError, match="truncated"):
        require_verified(src, tmp_path, LockFile.for_data_root(tmp_path), "hmrepro download pascal")
    assert acquire(src, tmp_path, LockFile.for_data_root(tmp_path), options()).status == "downloaded"
    assert got.path.read_bytes() == body

    # same size, different bytes (bit rot): the stale stamp forces a re-hash, md5 mismatch, fetched again
    data = bytearray(body)
    data[5] ^= 1
    got.path.write_bytes(bytes(data))
    assert acquire(src, tmp_path, LockFile.for_data_root(tmp_path), options()).status == "downloaded"
    assert got.path.read_bytes() == body
    assert len(server.requests) == 3


def test_acquire_pins_unpublished_checksum_and_verifies_against_it(server, tmp_path):
    body = payload(seed=2)
    url = server.add("/p.zip", body)
    src = _source(urls=(url,))
    lock = LockFile.for_data_root(tmp_path)
    acquire(src, tmp_path, lock, options())
    pinned = LockFile.for_data_root(tmp_path).pinned("thing", url)
    assert pinned == sha256(body)

    # the mirror now serves other bytes: the new download does not match the pin and is refused
    (tmp_path / "downloads" / "thing.bin").unlink()
    server.routes["/p.zip"].body = payload(seed=3)
    with pytest.raises(DownloadError, match="sha256"):
        acquire(src, tmp_path, LockFile.for_data_root(tmp_path), options(refetches=0))
    assert not (tmp_path / "downloads" / "thing.bin").exists()


def test_acquire_falls_back_to_the_next_mirror(server, tmp_path):
    body = payload()
    src = _source(urls=(server.url("/gone"), server.add("/mirror.bin", body)), md5=md5(body))
    got = acquire(src, tmp_path, LockFile.for_data_root(tmp_path), options())
    assert got.origin == server.url("/mirror.bin") and got.path.read_bytes() == body


def test_acquire_takes_verified_archives_from_a_local_folder(server, tmp_path):
    body = payload()
    src = _source(urls=(server.add("/never.bin", body),), md5=md5(body))
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thing.bin").write_bytes(body)
    root = tmp_path / "root"
    got = acquire(src, root, LockFile.for_data_root(root), options(from_dirs=(mine,)))
    assert got.status == "local" and got.path.read_bytes() == body
    assert server.requests == []

    (mine / "thing.bin").write_bytes(body[:-1] + b"X")  # a wrong local copy is refused, not used
    got.path.unlink()
    with pytest.raises(ChecksumError, match="--from"):
        acquire(src, root, LockFile.for_data_root(root), options(from_dirs=(mine,)))


def test_not_enough_disk_space_is_a_clear_error(server, tmp_path, monkeypatch):
    body = payload()
    src = _source(urls=(server.add("/huge.bin", body),), size=13_510_573_713)
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(diskspace.shutil, "disk_usage", lambda p: usage(10**9, 0, 10**9))
    with pytest.raises(InsufficientSpaceError, match="needs 12.6 GiB free"):
        acquire(src, tmp_path, LockFile.for_data_root(tmp_path), options())
    assert server.requests == []


def test_missing_archive_error_names_the_command(tmp_path):
    with pytest.raises(MissingDataError, match="hmrepro download fss"):
        require_verified(
            _source(urls=("http://127.0.0.1:9/x",)), tmp_path, LockFile.for_data_root(tmp_path), "hmrepro download fss"
        )


# -- Google Drive through gdown, pointed at the loopback server --------------------------------------------------


def test_gdown_fetches_from_the_loopback_url(server, tmp_path):
    import zipfile

    zpath = tmp_path / "made.zip"
    with zipfile.ZipFile(zpath, "w") as zf:
        zf.writestr("FSS-1000/abacus/1.png", b"png")
    body = zpath.read_bytes()
    server.add("/uc?id=NEWID", body)
    src = _source(name="fss1000", filename="FSS-1000.zip", gdrive_ids=("NEWID",), expect_member="*/1.png")
    drive = GDrive(file_url_template=server.url("/uc?id={id}"), quiet=True)
    lock = LockFile.for_data_root(tmp_path / "root")
    got = acquire(src, tmp_path / "root", lock, options(gdrive=drive))
    assert got.path.read_bytes() == body and got.origin == "gdrive:NEWID"
    assert lock.pinned("fss1000", "gdrive:NEWID") == sha256(body)
    assert server.requests_for("/uc?id=NEWID")


def test_gdrive_html_page_instead_of_zip_falls_back_to_an_older_id(server, tmp_path):
    import zipfile

    zpath = tmp_path / "ok.zip"
    with zipfile.ZipFile(zpath, "w") as zf:
        zf.writestr("SegmentationClassAug/2007_000032.png", b"png")
    server.add(
        "/uc?id=QUOTA",
        b"<!DOCTYPE html><html>Too many users have viewed or downloaded this file</html>",
        content_type="text/html",
    )
    server.add("/uc?id=OLD", zpath.read_bytes())
    src = _source(name="aug", filename="SegmentationClassAug.zip", gdrive_ids=("QUOTA", "OLD"), expect_member="*.png")
    drive = GDrive(file_url_template=server.url("/uc?id={id}"), quiet=True)
    logs = []
    got = acquire(src, tmp_path, LockFile.for_data_root(tmp_path), options(gdrive=drive, log=logs.append, refetches=0))
    assert got.origin == "gdrive:OLD"
    assert any("HTML page" in m for m in logs)


def test_gdrive_downloader_is_injectable(tmp_path):
    calls = []

    def fake_download(url=None, output=None, quiet=False, id=None, resume=False):
        calls.append((url, id, resume))
        Path(output).write_bytes(b"weights")
        return output

    drive = GDrive(download=fake_download)
    out = drive.fetch_file("ABC", tmp_path / "w.pt", retry=FAST)
    assert out.read_bytes() == b"weights" and calls == [(None, "ABC", True)]

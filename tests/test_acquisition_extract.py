"""Safe, resumable extraction: escaping entries are refused (tar and zip), finished archives are not redone."""

from __future__ import annotations

import io
import stat
import tarfile
import zipfile

import pytest

from hmrepro.acquisition.download_errors import UnsafeArchiveError
from hmrepro.acquisition.extract import extract, list_entries, marker_path
from hmrepro.atomic import is_temporary
from hmrepro.errors import CorruptFileError, HmreproError


def make_tar(path, entries):
    """``entries``: (name, kind, data_or_link) with kind 'file', 'dir', 'sym', 'hard', 'fifo'."""
    with tarfile.open(path, "w:gz" if str(path).endswith("gz") else "w") as tf:
        for name, kind, data in entries:
            info = tarfile.TarInfo(name)
            if kind == "file":
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
                continue
            info.type = {
                "dir": tarfile.DIRTYPE,
                "sym": tarfile.SYMTYPE,
                "hard": tarfile.LNKTYPE,
                "fifo": tarfile.FIFOTYPE,
            }[kind]
            if kind in ("sym", "hard"):
                info.linkname = data
            tf.addfile(info)
    return path


def make_zip(path, entries):
    """``entries``: (name, kind, data) with kind 'file' or 'sym' (data = link target)."""
    with zipfile.ZipFile(path, "w") as zf:
        for name, kind, data in entries:
            if kind == "sym":
                info = zipfile.ZipInfo(name)
                info.external_attr = (stat.S_IFLNK | 0o777) << 16
                zf.writestr(info, data)
            else:
                zf.writestr(name, data)
    return path


GOOD = [("top/", "dir", None), ("top/a.txt", "file", b"alpha"), ("top/sub/b.txt", "file", b"beta" * 1000)]


@pytest.mark.parametrize("suffix", [".tar", ".tar.gz", ".zip"])
def test_extracts_and_marks_finished_archive(tmp_path, suffix):
    archive = tmp_path / f"good{suffix}"
    if suffix == ".zip":
        make_zip(archive, [(n, k, d) for n, k, d in GOOD if k == "file"])
    else:
        make_tar(archive, GOOD + [("top/link", "sym", "a.txt"), ("top/hard", "hard", "top/a.txt")])
    out = tmp_path / "out"
    extract(archive, out, progress=False)
    assert (out / "top/a.txt").read_bytes() == b"alpha"
    assert (out / "top/sub/b.txt").read_bytes() == b"beta" * 1000
    if suffix != ".zip":
        assert (out / "top/link").is_symlink() and (out / "top/link").read_bytes() == b"alpha"
        assert (out / "top/hard").read_bytes() == b"alpha"
    assert marker_path(archive, out).is_file()

    # finished: a second call is a no-op (a deleted file is not restored without removing the marker)
    (out / "top/a.txt").unlink()
    extract(archive, out, progress=False)
    assert not (out / "top/a.txt").exists()


def test_interrupted_extraction_resumes_and_repairs_partial_files(tmp_path):
    archive = make_zip(tmp_path / "x.zip", [(n, k, d) for n, k, d in GOOD if k == "file"])
    out = tmp_path / "out"
    (out / "top/sub").mkdir(parents=True)
    (out / "top/a.txt").write_bytes(b"alpha")  # finished before the interruption
    (out / "top/sub/b.txt").write_bytes(b"be")  # cut short
    extract(archive, out, progress=False)
    assert (out / "top/sub/b.txt").read_bytes() == b"beta" * 1000
    assert not [p for p in out.rglob("*") if is_temporary(p) or p.name.endswith(".extracting")]


TAR_ATTACKS = {  # name: (entries, the entry the error must name)
    "dotdot": ([("../evil.txt", "file", b"x")], "../evil.txt"),
    "nested_dotdot": ([("ok/../../evil.txt", "file", b"x")], "ok/../../evil.txt"),
    "absolute": ([("/tmp/hmrepro-evil.txt", "file", b"x")], "/tmp/hmrepro-evil.txt"),
    "symlink_escape": ([("link", "sym", "../../outside"), ("link/evil.txt", "file", b"x")], "link"),
    "absolute_symlink": ([("link", "sym", "/etc"), ("other.txt", "file", b"x")], "link"),
    "through_own_symlink": ([("d", "sym", "."), ("esc", "sym", "d/../../x")], "esc"),
    "write_through_symlink": ([("sub/", "dir", None), ("d", "sym", "sub"), ("d/evil.txt", "file", b"x")], "d/evil.txt"),
    "hardlink_escape": ([("h", "hard", "../../etc/passwd")], "h"),
    "hardlink_absolute": ([("h", "hard", "/etc/passwd")], "h"),
    "fifo": ([("pipe", "fifo", None)], "pipe"),
}


@pytest.mark.parametrize("attack", sorted(TAR_ATTACKS))
def test_tar_entries_leaving_the_folder_are_refused(tmp_path, attack):
    entries, offending = TAR_ATTACKS[attack]
    archive = make_tar(tmp_path / "bad.tar", [("fine.txt", "file", b"ok")] + entries)
    out = tmp_path / "deep" / "out"
    with pytest.raises(UnsafeArchiveError) as err:
        extract(archive, out, progress=False)
    assert isinstance(err.value, HmreproError)
    assert repr(offending) in str(err.value)  # the message names the entry
    assert not out.exists()  # checked before anything is written
    assert not (tmp_path / "evil.txt").exists() and not (tmp_path / "deep" / "evil.txt").exists()


ZIP_ATTACKS = {
    "dotdot": [("../evil.txt", "file", b"x")],
    "backslash_dotdot": [("ok\\..\\..\\evil.txt", "file", b"x")],
    "absolute": [("/tmp/hmrepro-evil.txt", "file", b"x")],
    "drive_letter": [("C:/evil.txt", "file", b"x")],
    "symlink_escape": [("link", "sym", "../../outside")],
    "symlink_absolute": [("link", "sym", "/etc/passwd")],
}


@pytest.mark.parametrize("attack", sorted(ZIP_ATTACKS))
def test_zip_entries_leaving_the_folder_are_refused(tmp_path, attack):
    entries = ZIP_ATTACKS[attack]
    archive = tmp_path / "bad.zip"
    with zipfile.ZipFile(archive, "w") as zf:  # write names verbatim (ZipFile.writestr would not normalise them)
        zf.writestr("fine.txt", b"ok")
        for name, kind, data in entries:
            info = zipfile.ZipInfo(name)
            if kind == "sym":
                info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, data)
    out = tmp_path / "deep" / "out"
    with pytest.raises(UnsafeArchiveError) as err:
        extract(archive, out, progress=False)
    assert repr(entries[0][0]) in str(err.value)
    assert not out.exists()
    assert not (tmp_path / "evil.txt").exists()


def test_symlink_placed_on_disk_beforehand_is_not_followed(tmp_path):
    """A link already in the target folder (not from the archive) must not carry an entry outside."""
    archive = make_tar(tmp_path / "a.tar", [("d/evil.txt", "file", b"x")])
    out = tmp_path / "out"
    out.mkdir()
    (tmp_path / "elsewhere").mkdir()
    (out / "d").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(UnsafeArchiveError, match="d/evil.txt"):
        extract(archive, out, progress=False)
    assert not (tmp_path / "elsewhere" / "evil.txt").exists()


def test_not_an_archive(tmp_path):
    junk = tmp_path / "junk.zip"
    junk.write_bytes(b"<html>quota exceeded</html>")
    with pytest.raises(CorruptFileError, match="neither a zip nor a tar"):
        list_entries(junk)

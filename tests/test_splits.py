import shutil

import pytest
from helpers import SHARED, reference_path

from hmrepro.data.splits import PACKAGED_SPLITS, SplitFolder
from hmrepro.errors import CorruptFileError, MissingDataError


def test_packaged_lists_are_the_shared_ones():
    for path in reference_path(SHARED / "splits").rglob("*"):
        if path.is_file() and path.name != "README.md":
            assert (PACKAGED_SPLITS / path.relative_to(SHARED / "splits")).read_bytes() == path.read_bytes()


def test_counts_match_the_authors_lists():
    s = SplitFolder()
    assert [len(s.pascal("trn", f)) for f in range(4)] == [2286, 3425, 5883, 2086]
    assert [len(s.pascal("val", f)) for f in range(4)] == [346, 451, 725, 346]
    assert (len(s.fss("trn")), len(s.fss("val")), len(s.fss("test"))) == (520, 240, 240)
    coco = s.coco("val", 0)
    assert sorted(coco) == list(range(80))
    assert {c for c, ids in coco.items() if ids} == set(range(0, 80, 4))
    assert coco[0][0].startswith("val2014/COCO_val2014_") and coco[0][0].endswith(".jpg")


def test_tampered_list_is_refused(tmp_path):
    root = tmp_path / "splits"
    shutil.copytree(PACKAGED_SPLITS, root)
    path = root / "pascal" / "val_fold0.txt"
    path.write_text(path.read_text().replace("2007_000033__01\n", ""))
    with pytest.raises(CorruptFileError, match="val_fold0.txt"):
        SplitFolder(root).pascal("val", 0)


def test_missing_folder_and_checksums(tmp_path):
    with pytest.raises(MissingDataError, match="--splits"):
        SplitFolder(tmp_path / "nope")
    (tmp_path / "pascal").mkdir()
    (tmp_path / "pascal" / "val_fold0.txt").write_text("a__01\n")
    with pytest.raises(MissingDataError, match="SHA256SUMS"):
        SplitFolder(tmp_path).pascal("val", 0)


def test_a_list_rewritten_in_process_is_checked_again(tmp_path):
    root = tmp_path / "splits"
    shutil.copytree(PACKAGED_SPLITS, root)
    assert len(SplitFolder(root).pascal("val", 0)) == 346
    path = root / "pascal" / "val_fold0.txt"
    path.write_text("2007_000033__01\n")
    with pytest.raises(CorruptFileError):
        SplitFolder(root).pascal("val", 0)

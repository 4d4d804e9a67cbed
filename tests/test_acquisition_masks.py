"""Mask regeneration: COCO class masks from instances json, SegmentationClassAug from VOC + SBD."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
from PIL import Image

from hmrepro.acquisition.coco_masks import generate_masks, plan, render
from hmrepro.acquisition.sbd import build_segclassaug
from hmrepro.errors import HmreproError


def uncompressed_rle(mask: np.ndarray) -> dict:
    """COCO's uncompressed RLE, written here without pycocotools: column-major runs, zeros first."""
    flat = mask.flatten(order="F").astype(bool)
    counts, current, run = [], False, 0
    for v in flat:
        if v != current:
            counts.append(run)
            current, run = v, 0
        run += 1
    counts.append(run)
    return {"size": list(mask.shape), "counts": counts}


def rect(h, w, y0, y1, x0, x1):
    m = np.zeros((h, w), np.uint8)
    m[y0:y1, x0:x1] = 1
    return m


def tiny_coco(tmp_path):
    """Three images, categories with gaps (ids 1, 5, 90 -> labels 1, 2, 3), overlaps, a crowd, an empty one."""
    from pycocotools import mask as mask_utils

    h, w = 20, 30
    a = rect(h, w, 2, 10, 3, 15)  # category 5 -> 2
    b = rect(h, w, 5, 15, 10, 25)  # category 90 -> 3, drawn after a: wins on the overlap
    c = rect(h, w, 8, 12, 0, 6)  # category 1 -> 1, compressed RLE, drawn last: on top of a
    crowd = rect(h, w, 0, 20, 0, 30)
    compressed = mask_utils.encode(np.asfortranarray(c))
    compressed["counts"] = compressed["counts"].decode("ascii")
    data = {
        "images": [
            {"id": 7, "file_name": "COCO_val2014_000000000007.jpg", "height": h, "width": w},
            {"id": 8, "file_name": "COCO_val2014_000000000008.jpg", "height": h, "width": w},
            {"id": 9, "file_name": "COCO_val2014_000000000009.jpg", "height": h, "width": w},
        ],
        "categories": [{"id": 90, "name": "toothbrush"}, {"id": 1, "name": "person"}, {"id": 5, "name": "airplane"}],
        "annotations": [
            {"id": 1, "image_id": 7, "category_id": 5, "iscrowd": 0, "segmentation": uncompressed_rle(a)},
            {"id": 2, "image_id": 7, "category_id": 1, "iscrowd": 1, "segmentation": uncompressed_rle(crowd)},
            {"id": 3, "image_id": 7, "category_id": 90, "iscrowd": 0, "segmentation": uncompressed_rle(b)},
            {"id": 4, "image_id": 7, "category_id": 1, "iscrowd": 0, "segmentation": compressed},
            {"id": 5, "image_id": 8, "category_id": 5, "iscrowd": 1, "segmentation": uncompressed_rle(crowd)},
            {"id": 6, "image_id": 9, "category_id": 5, "iscrowd": 0, "segmentation": []},
        ],
    }
    expected7 = np.zeros((h, w), np.uint8)
    expected7[a > 0] = 2
    expected7[b > 0] = 3
    expected7[c > 0] = 1
    path = tmp_path / "instances_val2014.json"
    path.write_text(json.dumps(data))
    return path, {
        "COCO_val2014_000000000007.png": expected7,
        "COCO_val2014_000000000008.png": np.zeros((h, w), np.uint8),
        "COCO_val2014_000000000009.png": np.zeros((h, w), np.uint8),
    }


def test_coco_masks_match_independently_drawn_masks(tmp_path):
    path, expected = tiny_coco(tmp_path)
    out = tmp_path / "val2014"
    stats = generate_masks(path, out, workers=1, progress=False)
    assert (stats.images, stats.written, stats.skipped) == (3, 3, 0)
    for name, want in expected.items():
        got = np.array(Image.open(out / name))
        assert Image.open(out / name).mode == "L"
        np.testing.assert_array_equal(got, want, err_msg=name)
        assert 255 not in got


def test_coco_polygons_are_filled(tmp_path):
    task = plan(
        {
            "images": [{"id": 1, "file_name": "x.jpg", "height": 40, "width": 40}],
            "categories": [{"id": 3, "name": "car"}],
            "annotations": [
                {
                    "id": 1,
                    "image_id": 1,
                    "category_id": 3,
                    "iscrowd": 0,
                    "segmentation": [[10, 10, 30, 10, 30, 30, 10, 30], [0, 0, 2]],
                }
            ],  # a square + a degenerate ring
        }
    )[0]
    got = render(task)
    want = rect(40, 40, 10, 30, 10, 30)
    inter, union = ((got > 0) & (want > 0)).sum(), ((got > 0) | (want > 0)).sum()
    assert inter / union > 0.85 and set(np.unique(got)) == {0, 1}


def test_coco_mask_generation_resumes_and_keeps_existing_masks(tmp_path):
    path, _ = tiny_coco(tmp_path)
    out = tmp_path / "val2014"
    out.mkdir()
    sentinel = np.full((20, 30), 9, np.uint8)
    Image.fromarray(sentinel, mode="L").save(out / "COCO_val2014_000000000007.png")
    (out / "COCO_val2014_000000000008.png.tmp.png").write_bytes(b"half")  # left by a killed run
    stats = generate_masks(path, out, workers=1, progress=False)
    assert (stats.written, stats.skipped) == (2, 1)
    np.testing.assert_array_equal(np.array(Image.open(out / "COCO_val2014_000000000007.png")), sentinel)
    assert not list(out.glob("*.tmp.png"))
    assert generate_masks(path, out, workers=1, progress=False).written == 0


def test_coco_masks_equal_the_synthetic_benchmark_masks(synthetic_root, tmp_path):
    """The synthetic benchmark's json is written so that its non-crowd polygons give exactly its PNGs."""
    ann = synthetic_root / "COCO2014" / "annotations"
    out = tmp_path / "val2014"
    stats = generate_masks(ann / "instances_val2014.json", out, workers=2, progress=False)
    assert stats.written == stats.images > 0
    for png in sorted((ann / "val2014").glob("*.png")):
        np.testing.assert_array_equal(np.array(Image.open(out / png.name)), np.array(Image.open(png)), err_msg=png.name)


# -- SBD -> SegmentationClassAug -------------------------------------------------------------------------------------


def _palette_png(path, array):
    img = Image.fromarray(array, mode="P")
    img.putpalette([i % 256 for i in range(768)])
    img.save(path)


def _fake_sbd(tmp_path):
    voc = tmp_path / "VOC2012"
    (voc / "SegmentationClass").mkdir(parents=True)
    cls = tmp_path / "benchmark_RELEASE" / "dataset" / "cls"
    cls.mkdir(parents=True)
    voc_a = np.array([[0, 1], [255, 1]], np.uint8)
    voc_b = np.array([[0, 15], [15, 255]], np.uint8)
    _palette_png(voc / "SegmentationClass" / "2007_000001.png", voc_a)
    _palette_png(voc / "SegmentationClass" / "2008_000002.png", voc_b)
    sbd_b = np.array([[0, 15], [15, 15]], np.uint8)  # also in VOC: VOC's mask must win
    sbd_c = np.array([[20, 20], [0, 3]], np.uint8)
    # stand-ins for .mat files (scipy is not a dependency): the loader is injected
    for name, arr in (("2008_000002", sbd_b), ("2011_000003", sbd_c)):
        with open(cls / f"{name}.mat", "wb") as f:
            np.save(f, arr)
    return voc, cls, {"2007_000001": voc_a, "2008_000002": voc_b, "2011_000003": sbd_c}


def test_segclassaug_from_voc_and_sbd_prefers_voc(tmp_path):
    voc, cls, expected = _fake_sbd(tmp_path)
    out = voc / "SegmentationClassAug"
    stats = build_segclassaug(voc, cls, out, load_mat=lambda p: np.load(p), progress=False)
    assert (stats.from_voc, stats.from_sbd, stats.skipped) == (2, 1, 0)
    for image_id, want in expected.items():
        img = Image.open(out / f"{image_id}.png")
        assert img.mode == "L"
        np.testing.assert_array_equal(np.array(img), want)
    again = build_segclassaug(voc, cls, out, load_mat=lambda p: np.load(p), progress=False)
    assert again.skipped == 3 and again.from_sbd == 0


def test_segclassaug_without_scipy_says_how_to_install_it(tmp_path, monkeypatch):
    voc, cls, _ = _fake_sbd(tmp_path)
    monkeypatch.setitem(sys.modules, "scipy", None)  # `import scipy` now raises ImportError
    monkeypatch.setitem(sys.modules, "scipy.io", None)
    with pytest.raises(HmreproError, match="pip install scipy"):
        build_segclassaug(voc, cls, voc / "SegmentationClassAug", progress=False)

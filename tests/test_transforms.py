"""Preprocessing as the authors do it: PIL bilinear resize, ImageNet normalisation, nearest masks,
PASCAL's 255 ignore, FSS's threshold at 128, and errors that name the file."""

import numpy as np
import pytest
import torch
from PIL import Image

from hmrepro.data.benchmarks import get_benchmark
from hmrepro.data.dataset import EpisodeDataset
from hmrepro.data.episodes import Episode
from hmrepro.data.transforms import IMAGENET_MEAN, IMAGENET_STD, denormalize, image_transform, resize_mask
from hmrepro.errors import CorruptFileError, MissingDataError


def _image(h, w, seed=0):
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8))


def test_image_transform_is_pil_bilinear_then_imagenet_normalisation():
    img = _image(37, 53)
    out = image_transform(24)(img)
    ref = np.asarray(img.resize((24, 24), Image.BILINEAR), dtype=np.float32) / 255
    ref = (torch.from_numpy(ref).permute(2, 0, 1) - torch.tensor(IMAGENET_MEAN)[:, None, None]) / torch.tensor(
        IMAGENET_STD
    )[:, None, None]
    assert out.shape == (3, 24, 24)
    assert torch.allclose(out, ref, atol=1e-6)
    assert torch.allclose(
        denormalize(out),
        ref * torch.tensor(IMAGENET_STD)[:, None, None] + torch.tensor(IMAGENET_MEAN)[:, None, None],
        atol=1e-6,
    )


def test_mask_resize_is_nearest_and_keeps_values():
    raw = torch.tensor([[0, 255], [3, 3]], dtype=torch.uint8)
    out = resize_mask(raw, (4, 4))
    assert set(out.unique().tolist()) == {0.0, 3.0, 255.0}
    assert out[0, 3] == 255 and out[3, 0] == 3


def _pascal_root(tmp_path, size=(30, 40)):
    root = tmp_path
    (root / "VOC2012" / "JPEGImages").mkdir(parents=True)
    (root / "VOC2012" / "SegmentationClassAug").mkdir(parents=True)
    mask = np.zeros(size, np.uint8)
    mask[5:15, 5:20] = 3  # class id 2 (bird)
    mask[4, 5:20] = 255  # boundary
    mask[20:25, 25:35] = 7
    for name in ("a", "b"):
        _image(*size).save(root / "VOC2012" / "JPEGImages" / f"{name}.jpg")
        Image.fromarray(mask).save(root / "VOC2012" / "SegmentationClassAug" / f"{name}.png")
    return root


def test_pascal_item_binarises_class_and_ignores_255(tmp_path):
    root = _pascal_root(tmp_path)
    ds = EpisodeDataset("pascal", root, [Episode("a", ("b",), 2)], img_size=20, preprocess="hsnet")
    item = ds[0]
    assert item["query_img"].shape == (3, 20, 20) and item["support_imgs"].shape == (1, 3, 20, 20)
    assert set(item["query_mask"].unique().tolist()) == {0.0, 1.0}
    assert item["query_ignore"].sum() > 0
    assert (item["query_ignore"] * item["query_mask"]).sum() == 0  # ignored pixels are background for the loss
    assert item["org_query_imsize"].tolist() == [40, 30]
    # class 7 pixels are background for an episode of class 2
    raw = resize_mask(get_benchmark("pascal").read_mask(root, "a"), (20, 20))
    assert item["query_mask"][raw == 7].sum() == 0 and item["query_mask"][raw == 3].min() == 1


def test_original_size_keeps_the_query_mask_unresized(tmp_path):
    root = _pascal_root(tmp_path)
    item = EpisodeDataset(
        "pascal", root, [Episode("a", ("b",), 2)], img_size=20, original_size=True, preprocess="hsnet"
    )[0]
    assert item["query_mask"].shape == (30, 40) and item["support_masks"].shape == (1, 20, 20)
    assert item["query_mask"].sum() == 10 * 15


def test_fss_threshold_at_128(tmp_path):
    folder = tmp_path / "FSS-1000" / "cls"
    folder.mkdir(parents=True)
    grey = np.array([[0, 127, 128, 255]], np.uint8).repeat(4, axis=0)
    for n in (1, 2):
        _image(4, 4).save(folder / f"{n}.jpg")
        Image.fromarray(grey).convert("RGB").save(folder / f"{n}.png")  # FSS masks are read as grey levels
    item = EpisodeDataset("fss", tmp_path, [Episode("cls/1.jpg", ("cls/2.jpg",), 760)], img_size=4, preprocess="hsnet")[
        0
    ]
    assert item["query_mask"][0].tolist() == [0.0, 0.0, 1.0, 1.0]
    assert item["query_ignore"].sum() == 0


def test_missing_file_names_path_and_fix(tmp_path):
    root = _pascal_root(tmp_path)
    (root / "VOC2012" / "JPEGImages" / "b.jpg").unlink()
    with pytest.raises(MissingDataError, match=r"b\.jpg.*hmrepro download pascal"):
        EpisodeDataset("pascal", root, [Episode("a", ("b",), 2)], img_size=20, preprocess="hsnet")[0]


def test_unreadable_image_names_the_file(tmp_path):
    root = _pascal_root(tmp_path)
    (root / "VOC2012" / "JPEGImages" / "a.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(CorruptFileError, match=r"a\.jpg"):
        EpisodeDataset("pascal", root, [Episode("a", ("b",), 2)], img_size=20, preprocess="hsnet")[0]


def test_missing_data_root_names_path_and_command(tmp_path):
    with pytest.raises(MissingDataError, match=r"nowhere.*hmrepro download coco"):
        EpisodeDataset("coco", tmp_path / "nowhere", [], img_size=20, preprocess="hsnet")
    with pytest.raises(MissingDataError, match=r"COCO2014.*hmrepro download coco"):
        EpisodeDataset("coco", tmp_path, [], img_size=20, preprocess="hsnet")

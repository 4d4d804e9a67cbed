"""Each model family preprocesses as its authors: HSNet/ASNet with torchvision on PIL, VAT with OpenCV
(Albumentations 1.1.0: cv2 INTER_LINEAR without antialiasing, float32 normalisation, cv2 nearest masks)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from hmrepro.data.augment import CatsAugment
from hmrepro.data.benchmarks import get_benchmark, load_image, test_episodes
from hmrepro.data.dataset import EpisodeDataset
from hmrepro.data.preprocessing import PREPROCESSINGS, get_preprocessing, preprocess_of, train_transform
from hmrepro.data.splits import SplitFolder
from hmrepro.data.transforms import IMAGENET_MEAN, IMAGENET_STD, VatImageTransform, resize_mask, resize_mask_cv2
from hmrepro.engine import recipes
from hmrepro.engine.evaluation.evaluate import EvalConfig, evaluate, evaluation_plan
from hmrepro.engine.training.train import build_config
from hmrepro.errors import HmreproError

cv2 = pytest.importorskip("cv2")

# (source H, W) → side: odd sizes, down- and up-scaling, and the authors' sizes
CASES = [((37, 53), 24), ((17, 23), 41), ((333, 499), 473), ((281, 500), 417), ((101, 77), 473), ((500, 375), 400)]


def _albumentations_reference(arr: np.ndarray, side: int) -> np.ndarray:
    """What VAT's A.Compose([Resize, Normalize, ToTensorV2]) returns, written out with cv2 and NumPy."""
    resized = cv2.resize(arr, (side, side), interpolation=cv2.INTER_LINEAR)
    mean = np.array(IMAGENET_MEAN, dtype=np.float32) * 255
    std = np.array(IMAGENET_STD, dtype=np.float32) * 255
    out = (resized.astype(np.float32) - mean) * np.reciprocal(std, dtype=np.float32)
    return out.transpose(2, 0, 1)


@pytest.mark.parametrize("shape,side", CASES)
def test_vat_image_transform_is_cv2_resize_and_albumentations_normalize(shape, side):
    arr = np.random.default_rng(sum(shape) + side).integers(0, 256, (*shape, 3), dtype=np.uint8)
    out = VatImageTransform(side)(Image.fromarray(arr))
    assert out.shape == (3, side, side) and out.dtype == torch.float32
    assert np.array_equal(out.numpy(), _albumentations_reference(arr, side))
    assert torch.equal(VatImageTransform(side)(arr), out)  # arrays and PIL images alike
    # the same thing in float64 ((x/255 - mean) / std), up to float32 rounding
    ref64 = cv2.resize(arr, (side, side), interpolation=cv2.INTER_LINEAR).astype(np.float64) / 255
    ref64 = ((ref64 - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)).transpose(2, 0, 1)
    assert np.abs(out.numpy() - ref64).max() < 1e-5


def test_float_bilinear_differs_from_opencv_which_is_why_cv2_is_used():
    arr = np.random.default_rng(0).integers(0, 256, (333, 499, 3), dtype=np.uint8)
    ref = cv2.resize(arr, (473, 473), interpolation=cv2.INTER_LINEAR).astype(np.int64)
    t = torch.from_numpy(arr).permute(2, 0, 1)[None].double()
    ours = F.interpolate(t, size=(473, 473), mode="bilinear", align_corners=False)[0].permute(1, 2, 0)
    diff = np.abs(ours.round().numpy().astype(np.int64) - ref)
    assert diff.max() == 1 and diff.mean() > 0.01  # OpenCV's 8-bit path is fixed-point


@pytest.mark.parametrize("shape,side", CASES + [((224, 224), 400), ((333, 499), 417)])
def test_vat_mask_resize_is_cv2_nearest(shape, side):
    raw = np.random.default_rng(side).integers(0, 256, shape, dtype=np.uint8)
    out = resize_mask_cv2(torch.from_numpy(raw), (side, side))
    assert out.shape == (side, side) and out.dtype == torch.float32
    assert np.array_equal(out.numpy(), cv2.resize(raw, (side, side), interpolation=cv2.INTER_NEAREST))
    # non-square targets: size is (H, W)
    assert resize_mask_cv2(torch.from_numpy(raw), (side, side + 3)).shape == (side, side + 3)


def test_torch_nearest_is_not_cv2_nearest_at_some_sizes():
    raw = np.random.default_rng(0).integers(0, 21, (224, 224), dtype=np.uint8)
    ours = resize_mask(torch.from_numpy(raw), (400, 400)).numpy()
    assert (ours != cv2.resize(raw, (400, 400), interpolation=cv2.INTER_NEAREST)).any()


def _splits(root):
    return SplitFolder(root / "splits")


@pytest.mark.parametrize("benchmark,side", [("pascal", 473), ("coco", 417), ("fss", 473)])
def test_dataset_with_vat_preprocessing(synthetic_root, benchmark, side):
    bench = get_benchmark(benchmark)
    eps = test_episodes(benchmark, 0, 2, split="test", splits=_splits(synthetic_root))[:2]
    data = EpisodeDataset(bench, synthetic_root, eps, img_size=side, preprocess="vat")
    item = data[0]
    assert item["query_img"].shape == (3, side, side)
    assert item["query_mask"].shape == item["query_ignore"].shape == (side, side)
    assert item["support_imgs"].shape == (2, 3, side, side)
    assert item["support_masks"].shape == item["support_ignores"].shape == (2, side, side)
    assert set(item["query_mask"].unique().tolist()) <= {0.0, 1.0}
    # exactly the OpenCV pipeline on the files
    img = load_image(bench.image_path(synthetic_root, eps[0].query), benchmark)
    assert torch.equal(item["query_img"], torch.from_numpy(_albumentations_reference(np.asarray(img), side)))
    raw = bench.read_mask(synthetic_root, eps[0].query).numpy()
    expected, _ = bench.binarize(
        torch.from_numpy(cv2.resize(raw, (side, side), interpolation=cv2.INTER_NEAREST)), eps[0].class_id
    )
    assert torch.equal(item["query_mask"], expected)
    # the HSNet preprocessing of the same episode differs
    hs = EpisodeDataset(bench, synthetic_root, eps, img_size=side, preprocess="hsnet")[0]
    assert hs["query_img"].shape == item["query_img"].shape and not torch.equal(hs["query_img"], item["query_img"])
    with pytest.raises(ValueError, match="original-size"):
        EpisodeDataset(bench, synthetic_root, eps, img_size=side, original_size=True, preprocess="vat")


def test_preprocessing_registry():
    assert tuple(PREPROCESSINGS) == recipes.PREPROCESSINGS
    assert get_preprocessing("hsnet").original_size and not get_preprocessing("vat").original_size
    assert preprocess_of({}) == "hsnet" and preprocess_of({"preprocess": "vat"}) == "vat"
    with pytest.raises(ValueError, match="unknown preprocessing"):
        get_preprocessing("pil")
    assert isinstance(train_transform("none", "vat", 33), VatImageTransform)
    cats = train_transform("cats", "vat", 33)
    assert isinstance(cats, CatsAugment) and isinstance(cats.base, VatImageTransform)
    assert not isinstance(train_transform("cats", "hsnet", 33).base, VatImageTransform)
    cats.reseed((0, 0, 0))
    assert cats(Image.new("RGB", (20, 30), (10, 200, 30))).shape == (3, 33, 33)


@pytest.mark.parametrize(
    "model,benchmark,protocol,preprocess,img_size",
    [
        ("vat-hm", "pascal", "hsnet", "vat", 473),
        ("vat", "coco", "hsnet", "vat", 417),
        ("vat-hm", "fss", "hsnet", "vat", 473),
        ("hsnet-hm", "pascal", "hsnet", "hsnet", 400),
        ("hsnet", "coco", "hsnet", "hsnet", 400),
        ("asnet", "pascal", "asnet", "hsnet", 400),
        ("asnet-hm", "coco", "asnet", "hsnet", 400),
    ],
)
def test_eval_and_train_pick_each_models_preprocessing(model, benchmark, protocol, preprocess, img_size):
    plan = evaluation_plan(model, benchmark)
    assert (plan.protocol, plan.preprocess, plan.img_size, plan.original_size) == (
        protocol,
        preprocess,
        img_size,
        False,
    )
    assert build_config(model, benchmark, 0).preprocess == preprocess


def test_original_size_is_refused_for_vat(synthetic_root):
    with pytest.raises(HmreproError, match="--original-size is not possible for vat-hm"):
        evaluation_plan("vat-hm", "pascal", original_size=True)
    with pytest.raises(HmreproError, match="original-size"):
        evaluate(
            EvalConfig(
                "vat-hm",
                "pascal",
                0,
                1,
                weights="random",
                original_size=True,
                data_root=synthetic_root,
                splits=synthetic_root / "splits",
                results_dir=None,
                device="cpu",
            )
        )
    assert evaluation_plan("hsnet-hm", "pascal", original_size=True).preprocess == "hsnet"
    assert evaluation_plan("vat-hm", "pascal", preprocess="hsnet", original_size=True).preprocess == "hsnet"


def test_recipe_rejects_unknown_preprocessing(tmp_path):
    (tmp_path / "hsnet.toml").write_text(
        '[recipe]\nname = "x"\n[defaults]\noptimizer = "adam"\nlr = 1e-3\nbsz = 2\nimg_size = 64\nepochs = 1\n'
    )
    with pytest.raises(recipes.RecipeError, match="preprocess 'pil'"):
        recipes.resolve("hsnet", "pascal", {"preprocess": "pil"}, directory=tmp_path)
    (tmp_path / "hsnet.toml").write_text('[recipe]\nname = "x"\npreprocess = "vat"\n')
    with pytest.raises(recipes.RecipeError, match="preprocess.*model card"):  # the card says, not the recipe
        recipes.resolve("hsnet", "pascal", directory=tmp_path)

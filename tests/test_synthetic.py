"""The synthetic benchmark: deterministic, small, and in exactly the layouts the readers read."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools.coco import COCO
from typer.testing import CliRunner

from hmrepro.cli.app import app
from hmrepro.data.benchmarks import get_benchmark, test_episodes
from hmrepro.data.episodes import training_episodes
from hmrepro.data.splits import SplitFolder
from hmrepro.data.synthetic import COMPLETE_MARKER, STARTED_MARKER, make_synthetic
from hmrepro.errors import HmreproError

MISSING_COCO_IDS = {12, 26, 29, 30, 45, 66, 68, 69, 71, 83}

# pycocotools < 2.0.9 warns on every decode under NumPy 2
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy:DeprecationWarning")


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def cli_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A second seed-0 benchmark, written through the command line."""
    root = tmp_path_factory.mktemp("synthetic-cli")
    result = CliRunner().invoke(app, ["prepare", "synthetic", "--data-root", str(root)])
    assert result.exit_code == 0, result.output
    return root


@pytest.fixture(scope="module")
def splits(synthetic_root: Path) -> SplitFolder:
    return SplitFolder(synthetic_root / "splits")


# -- generation ----------------------------------------------------------------------------------


@pytest.mark.slow  # end-to-end: generates a benchmark through the CLI
def test_cli_writes_the_benchmark(cli_root: Path) -> None:
    assert (cli_root / COMPLETE_MARKER).is_file() and not (cli_root / STARTED_MARKER).exists()
    for folder in ("VOC2012", "COCO2014", "FSS-1000", "splits"):
        assert (cli_root / folder).is_dir()


@pytest.mark.slow  # generates the benchmark a second time, through the CLI
def test_same_seed_gives_identical_bytes(synthetic_root: Path, cli_root: Path) -> None:
    first, second = _files(synthetic_root), _files(cli_root)
    assert first.keys() == second.keys()
    assert [name for name in first if first[name] != second[name]] == []


def test_complete_benchmark_is_kept(synthetic_root: Path) -> None:
    image = synthetic_root / "VOC2012" / "JPEGImages" / "synth_000001.jpg"
    before = image.stat().st_mtime_ns
    summary = make_synthetic(synthetic_root, seed=0)
    assert image.stat().st_mtime_ns == before
    assert any(line.startswith("pascal-like: 20 classes") for line in summary)


def test_other_seed_refusal_and_interrupted_run(synthetic_root: Path, tmp_path: Path, monkeypatch) -> None:
    import hmrepro.data.synthetic as synthetic

    for part in ("make_coco", "make_fss"):  # the markers' logic needs one part; writing all three took 15 s of CI
        monkeypatch.setattr(synthetic, part, lambda *args: "skipped")
    root = tmp_path / "seed1"
    make_synthetic(root, seed=1)
    name = "VOC2012/JPEGImages/synth_000001.jpg"
    assert (root / name).read_bytes() != (synthetic_root / name).read_bytes()
    with pytest.raises(HmreproError, match="seed 1"):
        make_synthetic(root, seed=0)
    (root / STARTED_MARKER).write_text("{}")  # as if a run had been killed: regenerated without --force
    make_synthetic(root, seed=0)
    assert (root / name).read_bytes() == (synthetic_root / name).read_bytes()
    assert not (root / STARTED_MARKER).exists()


def test_scale_multiplies_the_pascal_images_and_keeps_the_first_ones(synthetic_root: Path, tmp_path: Path) -> None:
    from hmrepro.data.synthetic import make_pascal

    summary = make_pascal(tmp_path, np.random.default_rng([0, 0]), lambda: None, scale=2)
    assert "200 images (120 trn, 80 val)" in summary
    images = sorted((tmp_path / "VOC2012" / "JPEGImages").iterdir())
    assert len(images) == 200
    first = "VOC2012/JPEGImages/synth_000001.jpg"  # the draws run in the same order: scale 1's first image again
    assert (tmp_path / first).read_bytes() == (synthetic_root / first).read_bytes()
    small = (synthetic_root / "splits" / "pascal" / "trn_fold1.txt").read_text().splitlines()
    large = (tmp_path / "splits" / "pascal" / "trn_fold1.txt").read_text().splitlines()
    assert len(large) > 1.5 * len(small)


def test_a_benchmark_of_another_scale_is_replaced_only_with_force(tmp_path: Path) -> None:
    from hmrepro.data.synthetic import VERSION

    (tmp_path / COMPLETE_MARKER).write_text(json.dumps({"seed": 0, "scale": 2, "version": VERSION, "summary": []}))
    with pytest.raises(HmreproError, match="scale 2.*--force"):
        make_synthetic(tmp_path, seed=0)
    assert make_synthetic(tmp_path, seed=0, scale=2) == []  # the same seed and scale: kept as it is
    with pytest.raises(HmreproError, match="--scale must be"):
        make_synthetic(tmp_path / "other", scale=0)


def test_refuses_to_overwrite_foreign_data(tmp_path: Path) -> None:
    (tmp_path / "VOC2012" / "JPEGImages").mkdir(parents=True)
    with pytest.raises(HmreproError, match="refusing"):
        make_synthetic(tmp_path)
    assert (tmp_path / "VOC2012" / "JPEGImages").is_dir()


def test_small_images_and_small_total(synthetic_root: Path) -> None:
    files = [p for p in synthetic_root.rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in files) < 10_000_000
    sizes = {Image.open(p).size for p in files if p.suffix == ".jpg"}
    assert max(max(s) for s in sizes) <= 96
    assert any(w != h for w, h in sizes)


# -- the readers read it -------------------------------------------------------------------------


def _episode_pairs(name: str, splits: SplitFolder) -> set[tuple[str, int]]:
    """Every (image, class) an evaluation or training episode of any fold and shot (1, 5) uses."""
    bench = get_benchmark(name)
    folds = range(1) if name == "fss" else range(4)
    eval_splits = ("test", "val") if name == "fss" else ("test",)
    pairs = set()
    for fold in folds:
        for shot in (1, 5):
            episodes = [e for s in eval_splits for e in test_episodes(name, fold, shot, split=s, splits=splits)]
            episodes += training_episodes(bench.pool(splits, "trn", fold), shot, seed=0, epoch=0)
            for episode in episodes:
                pairs.update((image, episode.class_id) for image in (episode.query, *episode.supports))
    return pairs


@pytest.mark.parametrize("name", ["pascal", "coco", "fss"])
def test_every_episode_image_shows_its_class(name: str, synthetic_root: Path, splits: SplitFolder) -> None:
    bench = get_benchmark(name)
    assert bench.require(synthetic_root) == synthetic_root
    pairs = _episode_pairs(name, splits)
    assert len(pairs) > 20
    masks = {}
    for image, class_id in sorted(pairs):
        assert bench.image_path(synthetic_root, image).is_file()
        if image not in masks:
            masks[image] = bench.read_mask(synthetic_root, image)
        foreground, _ = bench.binarize(masks[image], class_id)
        assert foreground.sum() > 0, (image, class_id)


def test_pascal_masks(synthetic_root: Path, splits: SplitFolder) -> None:
    bench = get_benchmark("pascal")
    listed: dict[str, set[int]] = {}
    for split in ("trn", "val"):
        for fold in range(4):
            for image, class_id in splits.pascal(split, fold):
                assert class_id // 5 == fold
                listed.setdefault(image, set()).add(class_id)
    small = 0
    for image, classes in listed.items():
        raw = bench.read_mask(synthetic_root, image).numpy()
        assert (raw == 255).any(), "objects have a 255 boundary ring"
        present = {int(v) - 1 for v in np.unique(raw) if 0 < v < 255}
        assert present == classes, image  # every class in the image is listed, and only those
        small += any((raw == c + 1).mean() < 0.05 for c in classes)
    assert sum(len(c) == 2 for c in listed.values()) >= 10, "some images hold two classes"
    assert small >= 10, "some objects are small"
    trn = {i for f in range(4) for i, _ in splits.pascal("trn", f)}
    val = {i for f in range(4) for i, _ in splits.pascal("val", f)}
    assert not trn & val


def _pycocotools_masks(annotation_file: Path) -> tuple[dict[str, np.ndarray], COCO]:
    """Class masks drawn from the JSON alone: non-crowd annotations in file order, later ones on top."""
    coco = COCO(str(annotation_file))
    index = {cid: i for i, cid in enumerate(sorted(coco.getCatIds()))}
    masks = {}
    for image in coco.loadImgs(coco.getImgIds()):
        canvas = np.zeros((image["height"], image["width"]), dtype=np.uint8)
        for ann in coco.loadAnns(coco.getAnnIds(imgIds=image["id"], iscrowd=False)):
            canvas[coco.annToMask(ann) > 0] = index[ann["category_id"]] + 1
        masks[image["file_name"]] = canvas
    return masks, coco


@pytest.mark.parametrize("image_dir", ["train2014", "val2014"])
def test_coco_masks_match_the_json(image_dir: str, synthetic_root: Path) -> None:
    coco_root = synthetic_root / "COCO2014"
    expected, coco = _pycocotools_masks(coco_root / "annotations" / f"instances_{image_dir}.json")
    assert len(coco.getCatIds()) == 80 and max(coco.getCatIds()) == 90
    assert not MISSING_COCO_IDS & set(coco.getCatIds())
    crowds = coco.loadAnns(coco.getAnnIds(iscrowd=True))
    assert crowds and all(isinstance(a["segmentation"]["counts"], list) for a in crowds)
    for file_name, mask in expected.items():
        assert (coco_root / image_dir / file_name).is_file()
        png = np.array(Image.open(coco_root / "annotations" / image_dir / file_name.replace(".jpg", ".png")))
        assert png.dtype == np.uint8 and not (png == 255).any()
        np.testing.assert_array_equal(png, mask, err_msg=file_name)
    index = {cid: i for i, cid in enumerate(sorted(coco.getCatIds()))}
    for crowd in crowds:  # the crowd is drawn in the image but left out of the mask
        (file_name,) = [img["file_name"] for img in coco.loadImgs(crowd["image_id"])]
        assert coco.annToMask(crowd).any()
        assert not (expected[file_name] == index[crowd["category_id"]] + 1).any()


def test_coco_split_lists(synthetic_root: Path, splits: SplitFolder) -> None:
    bench = get_benchmark("coco")
    for split, image_dir in (("trn", "train2014"), ("val", "val2014")):
        for fold in range(4):
            data = json.loads((synthetic_root / "splits" / "coco" / f"{split}_fold{fold}.json").read_text())
            assert data["image_dir"] == image_dir and sorted(data["classes"], key=int) == [str(c) for c in range(80)]
            classwise = splits.coco(split, fold)
            for class_id, images in classwise.items():
                used = (class_id % 4 != fold) if split == "trn" else (class_id % 4 == fold)
                assert len(images) >= 2 if used else images == [], (split, fold, class_id)
                for image in images:
                    raw = bench.read_mask(synthetic_root, image)
                    assert bench.binarize(raw, class_id)[0].any(), (image, class_id)


def test_fss_layout(synthetic_root: Path, splits: SplitFolder) -> None:
    bench = get_benchmark("fss")
    names = {split: splits.fss(split) for split in ("trn", "val", "test")}
    assert [len(n) for n in names.values()] == [8, 4, 4]
    every = [n for split in names.values() for n in split]
    assert len(set(every)) == len(every)
    assert b"\r" not in (synthetic_root / "splits" / "fss" / "trn.txt").read_bytes()
    soft_edges = 0
    for name in every:
        folder = synthetic_root / "FSS-1000" / name
        expected = {f"{n}.{ext}" for n in range(1, 11) for ext in ("jpg", "png")}
        assert {p.name for p in folder.iterdir()} == expected
        for n in range(1, 11):
            raw = bench.read_mask(synthetic_root, f"{name}/{n}.jpg")
            soft_edges += bool(((raw > 0) & (raw < 255)).any())
            assert bench.binarize(raw, 0)[0].any()
    assert soft_edges == 10 * len(every), "masks have anti-aliased edges, so the threshold matters"

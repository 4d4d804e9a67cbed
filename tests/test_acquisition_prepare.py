"""``hmrepro download`` + ``hmrepro prepare`` end to end: archives made from the synthetic benchmark, served by
the loopback server (Drive ids through gdown), extracted into the readers' layout, checked against split lists."""

from __future__ import annotations

import hashlib
import shutil
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_acquisition_http import LoopbackServer
from typer.testing import CliRunner

from hmrepro.cli.app import app
from hmrepro.errors import HmreproError


@pytest.fixture
def server():
    srv = LoopbackServer().start()
    yield srv
    srv.stop()


def run(*args: str):
    result = CliRunner().invoke(app, [str(a) for a in args], env={"COLUMNS": "400"})
    text = result.output + (
        result.stderr if result.stderr_bytes is not None and result.stderr not in result.output else ""
    )
    return result, text


def _zip_tree(path: Path, pairs) -> Path:
    """``pairs``: (source folder, name of that folder inside the zip)."""
    with zipfile.ZipFile(path, "w") as zf:
        for folder, arc in pairs:
            for f in sorted(Path(folder).rglob("*")):
                if f.is_file():
                    zf.write(f, f"{arc}/{f.relative_to(folder).as_posix()}")
    return path


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def archives(synthetic_root, tmp_path_factory) -> Path:
    """The synthetic benchmark packed the way the real archives are packed."""
    s, out = synthetic_root, tmp_path_factory.mktemp("archives")
    with tarfile.open(out / "VOCtrainval_11-May-2012.tar", "w") as tf:
        tf.add(s / "VOC2012" / "JPEGImages", arcname="VOCdevkit/VOC2012/JPEGImages")
        tf.add(s / "VOC2012" / "SegmentationClassAug", arcname="VOCdevkit/VOC2012/SegmentationClass")
    aug = _zip_tree(
        out / "SegmentationClassAug.zip", [(s / "VOC2012" / "SegmentationClassAug", "SegmentationClassAug")]
    )
    with zipfile.ZipFile(aug, "a") as zf:
        zf.writestr("__MACOSX/SegmentationClassAug/._synth_000001.png", b"resource fork")
    for split in ("train2014", "val2014"):
        _zip_tree(out / f"{split}.zip", [(s / "COCO2014" / split, split)])
        masks = out / "masks"
        masks.mkdir(exist_ok=True)
        _zip_tree(masks / f"{split}.zip", [(s / "COCO2014" / "annotations" / split, split)])  # HSNet's name
    with zipfile.ZipFile(out / "annotations_trainval2014.zip", "w") as zf:
        for split in ("train2014", "val2014"):
            zf.write(s / "COCO2014" / "annotations" / f"instances_{split}.json", f"annotations/instances_{split}.json")
    _zip_tree(out / "FSS-1000.zip", [(s / "FSS-1000", "FSS-1000")])
    return out


def _registry(server: LoopbackServer, archives: Path, tmp_path: Path) -> Path:
    """A sources.toml like the packaged one, pointing at the loopback server."""

    def serve(name, path=None, **faults):
        return server.add(f"/{name}", (path or archives / name).read_bytes(), **faults)

    for drive_id, path in (
        ("AUG", archives / "SegmentationClassAug.zip"),
        ("MTRAIN", archives / "masks/train2014.zip"),
        ("MVAL", archives / "masks/val2014.zip"),
        ("FSS", archives / "FSS-1000.zip"),
    ):
        server.add(f"/uc?id={drive_id}", path.read_bytes())
    voc = archives / "VOCtrainval_11-May-2012.tar"
    text = f'''
[sources.voc2012_trainval]
group = "pascal"
filename = "VOCtrainval_11-May-2012.tar"
size = {voc.stat().st_size}
md5 = "{_md5(voc)}"
urls = ["{server.url("/gone.tar")}", "{serve(voc.name, truncate=1)}"]

[sources.voc_segclassaug]
group = "pascal"
filename = "SegmentationClassAug.zip"
gdrive_ids = ["AUG"]
expect_member = "*.png"

[sources.sbd_benchmark]
group = "pascal"
filename = "benchmark.tgz"
urls = ["{server.url("/benchmark.tgz")}"]
optional = true
'''
    for split in ("train2014", "val2014"):
        text += f'''
[sources.coco_{split}]
group = "coco"
filename = "{split}.zip"
md5 = "{_md5(archives / f"{split}.zip")}"
urls = ["{serve(f"{split}.zip")}"]

[sources.coco_masks_{split}]
group = "coco"
filename = "hsnet_coco_masks_{split}.zip"
from_names = ["masks/{split}.zip", "{split}.zip"]
gdrive_ids = ["{"MTRAIN" if split == "train2014" else "MVAL"}"]
expect_member = "*COCO_{split}_*.png"
'''
    text += f'''
[sources.coco_annotations2014]
group = "coco"
filename = "annotations_trainval2014.zip"
urls = ["{serve("annotations_trainval2014.zip")}"]
optional = true

[sources.fss1000]
group = "fss"
filename = "FSS-1000.zip"
gdrive_ids = ["FSS"]
expect_member = "*/1.png"
'''
    path = tmp_path / "sources.toml"
    path.write_text(text)
    return path


@pytest.fixture
def env(server, archives, tmp_path, monkeypatch):
    monkeypatch.setenv("HMREPRO_SOURCES", str(_registry(server, archives, tmp_path)))
    monkeypatch.setenv("HMREPRO_GDRIVE_URL", server.url("/uc?id={id}"))
    monkeypatch.delenv("HMREPRO_DATA", raising=False)
    return tmp_path / "data"


FAST = ("--quiet", "--retry-delay", "0")


def _same_tree(a: Path, b: Path, pattern: str) -> None:
    names = sorted(p.name for p in a.glob(pattern))
    assert names and names == sorted(p.name for p in b.glob(pattern))
    for n in names[:5]:
        assert (a / n).read_bytes() == (b / n).read_bytes()


def test_pascal_download_prepare_and_check(env, server, synthetic_root):
    root, splits = env, synthetic_root / "splits"
    result, out = run("download", "pascal", "--data-root", root, *FAST)
    assert result.exit_code == 0, out
    voc_requests = server.requests_for("/VOCtrainval_11-May-2012.tar")
    assert voc_requests[1].range and voc_requests[1].status == 206  # truncated once, resumed

    result, out = run("prepare", "pascal", "--data-root", root, "--splits", splits, "--quiet")
    assert result.exit_code == 0, out
    assert "PASCAL-5i layout OK" in out
    _same_tree(root / "VOC2012" / "JPEGImages", synthetic_root / "VOC2012" / "JPEGImages", "*.jpg")
    _same_tree(root / "VOC2012" / "SegmentationClassAug", synthetic_root / "VOC2012" / "SegmentationClassAug", "*.png")
    assert (
        not (root / ".staging").exists()
        and not (root / "VOC2012" / "SegmentationClassAug" / "._synth_000001.png").exists()
    )

    n = len(server.requests)
    result, out = run("download", "pascal", "--data-root", root, *FAST)
    assert result.exit_code == 0 and len(server.requests) == n  # complete and verified: nothing fetched again

    victim_img = sorted((root / "VOC2012" / "JPEGImages").glob("*.jpg"))[3]
    victim_mask = sorted((root / "VOC2012" / "SegmentationClassAug").glob("*.png"))[5]
    victim_img.unlink()
    victim_mask.unlink()
    for args in (("prepare", "--check", "pascal"), ("prepare", "pascal", "--check")):
        result, out = run(*args, "--data-root", root, "--splits", splits)
        assert result.exit_code == 1, out
        assert "2 missing" in out
        assert (
            f"VOC2012/JPEGImages/{victim_img.name}" in out and f"VOC2012/SegmentationClassAug/{victim_mask.name}" in out
        )
        assert "hmrepro download pascal && hmrepro prepare pascal" in out

    result, out = run("prepare", "pascal", "--data-root", root, "--splits", splits, "--quiet", "--force")
    assert result.exit_code == 0, out
    assert victim_img.is_file() and victim_mask.is_file()


def test_corrupt_archive_is_never_extracted(env, synthetic_root):
    root = env
    result, out = run("download", "fss", "--data-root", root, *FAST)
    assert result.exit_code == 0, out
    archive = root / "downloads" / "FSS-1000.zip"
    data = bytearray(archive.read_bytes())
    data[len(data) // 2] ^= 0xFF
    archive.write_bytes(bytes(data))
    result, out = run("prepare", "fss", "--data-root", root, "--splits", synthetic_root / "splits", "--quiet")
    assert isinstance(result.exception, HmreproError) and "corrupt" in str(result.exception)
    assert "hmrepro download fss" in str(result.exception)
    assert not (root / "FSS-1000").exists() and not (root / ".staging").exists()
    result, out = run("download", "fss", "--data-root", root, *FAST)  # detects the damage and fetches it again
    assert result.exit_code == 0, out
    result, out = run("prepare", "fss", "--data-root", root, "--splits", synthetic_root / "splits", "--quiet")
    assert result.exit_code == 0 and "FSS-1000 layout OK" in out, out


def test_fss_from_local_archives_without_network(env, server, archives, synthetic_root):
    root = env
    result, out = run("download", "fss", "--data-root", root, "--from", archives, *FAST)
    assert result.exit_code == 0, out
    assert server.requests == []
    assert (root / "downloads" / "FSS-1000.zip").stat().st_ino == (archives / "FSS-1000.zip").stat().st_ino  # linked
    result, out = run("prepare", "fss", "--data-root", root, "--splits", synthetic_root / "splits", "--quiet")
    assert result.exit_code == 0 and "FSS-1000 layout OK" in out, out
    cls = sorted((synthetic_root / "FSS-1000").iterdir())[0].name
    _same_tree(root / "FSS-1000" / cls, synthetic_root / "FSS-1000" / cls, "*")


def test_coco_with_the_authors_masks(env, synthetic_root):
    root = env
    result, out = run("download", "coco", "--data-root", root, *FAST)
    assert result.exit_code == 0, out
    result, out = run("prepare", "coco", "--data-root", root, "--splits", synthetic_root / "splits", "--quiet")
    assert result.exit_code == 0 and "COCO-20i layout OK" in out, out
    for split in ("train2014", "val2014"):
        _same_tree(
            root / "COCO2014" / "annotations" / split, synthetic_root / "COCO2014" / "annotations" / split, "*.png"
        )
        _same_tree(root / "COCO2014" / split, synthetic_root / "COCO2014" / split, "*.jpg")


def test_coco_masks_regenerated_from_json(env, archives, server, synthetic_root):
    root = env
    result, out = run(
        "download",
        "coco",
        "--data-root",
        root,
        "--with-json",
        "--from",
        archives,
        "--only",
        "coco_train2014",
        "--only",
        "coco_val2014",
        "--only",
        "coco_annotations2014",
        *FAST,
    )
    assert result.exit_code == 0, out
    assert server.requests == []
    result, out = run(
        "prepare",
        "coco",
        "--from-json",
        "-j",
        "2",
        "--data-root",
        root,
        "--splits",
        synthetic_root / "splits",
        "--quiet",
    )
    assert result.exit_code == 0 and "COCO-20i layout OK" in out, out
    assert "not byte-identical" in out
    for split in ("train2014", "val2014"):
        ours, theirs = root / "COCO2014" / "annotations" / split, synthetic_root / "COCO2014" / "annotations" / split
        for png in sorted(theirs.glob("*.png"))[:20]:
            np.testing.assert_array_equal(np.array(Image.open(ours / png.name)), np.array(Image.open(png)))


def test_images_zip_is_not_taken_for_the_mask_zip(env, archives, tmp_path, synthetic_root):
    """HSNet's mask zip and COCO's image zip are both called train2014.zip: --from must tell them apart."""
    only_images = tmp_path / "only_images"
    only_images.mkdir()
    shutil.copy(archives / "train2014.zip", only_images / "train2014.zip")
    result, out = run(
        "download", "coco", "--data-root", env, "--from", only_images, "--only", "coco_masks_train2014", *FAST
    )
    assert result.exit_code == 0, out
    assert "ignoring it" in out
    with zipfile.ZipFile(env / "downloads" / "hsnet_coco_masks_train2014.zip") as zf:
        assert all(n.endswith(".png") for n in zf.namelist() if not n.endswith("/"))


def test_prepare_without_download_says_what_to_run(env, synthetic_root):
    result, out = run("prepare", "fss", "--data-root", env, "--splits", synthetic_root / "splits", "--quiet")
    assert isinstance(result.exception, HmreproError)
    assert "hmrepro download fss" in str(result.exception)


def test_check_of_an_empty_data_root(env, synthetic_root):
    result, out = run("prepare", "--check", "coco", "--data-root", env, "--splits", synthetic_root / "splits")
    assert result.exit_code == 1
    assert "missing" in out and "COCO2014/train2014/" in out and "hmrepro download coco" in out


def test_commands_have_help_with_an_example():
    for args in (
        ("download", "pascal"),
        ("download", "coco"),
        ("download", "fss"),
        ("download", "backbones"),
        ("download", "checkpoints"),
        ("download", "all"),
        ("prepare", "pascal"),
        ("prepare", "coco"),
        ("prepare", "fss"),
    ):
        result, out = run(*args, "--help")
        assert result.exit_code == 0 and "Example" in out, args


def test_list_shows_sources_without_downloading(env, server):
    result, out = run("download", "pascal", "--list", "--with-sbd")
    assert result.exit_code == 0
    assert "voc2012_trainval" in out and "sbd_benchmark" in out and server.requests == []


def test_backbones_go_to_the_torch_hub_cache(server, tmp_path, monkeypatch):
    good, bad = b"resnet weights" * 1000, b"tampered weights" * 1000
    prefix = hashlib.sha256(good).hexdigest()[:8]
    registry = tmp_path / "sources.toml"
    registry.write_text(f'''
[sources.resnet50_imagenet1k_v1]
group = "backbones"
filename = "resnet50-{prefix}.pth"
sha256_prefix = "{prefix}"
urls = ["{server.add(f"/models/resnet50-{prefix}.pth", good)}"]
dest = "torch_hub"

[sources.vgg16_imagenet1k_v1]
group = "backbones"
filename = "vgg16-397923af.pth"
sha256_prefix = "397923af"
urls = ["{server.add("/models/vgg16-397923af.pth", bad)}"]
dest = "torch_hub"
optional = true
''')
    monkeypatch.setenv("HMREPRO_SOURCES", str(registry))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    result, out = run("download", "backbones", "--data-root", tmp_path / "data", *FAST)
    assert result.exit_code == 0, out
    assert (tmp_path / "torch" / "hub" / "checkpoints" / f"resnet50-{prefix}.pth").read_bytes() == good
    result, out = run("download", "backbones", "--only", "vgg16_imagenet1k_v1", "--data-root", tmp_path / "data", *FAST)
    assert isinstance(result.exception, HmreproError) and "397923af" in str(result.exception)
    assert not (tmp_path / "torch" / "hub" / "checkpoints" / "vgg16-397923af.pth").exists()


def test_pascal_segclassaug_built_from_sbd(env, synthetic_root, tmp_path, monkeypatch):
    """--from-sbd: VOC masks where VOC has them, SBD's for the rest (SBD .mat stand-ins read by an injected loader)."""
    from hmrepro.acquisition.check import check_layout
    from hmrepro.acquisition.lock import LockFile
    from hmrepro.acquisition.prepare_pascal import prepare_pascal
    from hmrepro.acquisition.registry import load_registry
    from hmrepro.acquisition.steps import PrepareContext
    from hmrepro.data.splits import SplitFolder

    aug = synthetic_root / "VOC2012" / "SegmentationClassAug"
    masks = sorted(aug.glob("*.png"))
    voc_part, sbd_part = masks[: len(masks) // 2], masks[len(masks) // 2 - 1 :]  # one id in both
    mine = tmp_path / "mine"
    mine.mkdir()
    with tarfile.open(mine / "VOCtrainval_11-May-2012.tar", "w") as tf:
        tf.add(synthetic_root / "VOC2012" / "JPEGImages", arcname="VOCdevkit/VOC2012/JPEGImages")
        for m in voc_part:
            tf.add(m, arcname=f"VOCdevkit/VOC2012/SegmentationClass/{m.name}")
    stage = tmp_path / "sbd" / "benchmark_RELEASE" / "dataset" / "cls"
    stage.mkdir(parents=True)
    for m in sbd_part:
        arr = np.array(Image.open(m))
        if m == voc_part[-1]:
            arr = np.zeros_like(arr)  # SBD disagrees here: VOC must win
        with open(stage / f"{m.stem}.mat", "wb") as f:
            np.save(f, arr)
    with tarfile.open(mine / "benchmark.tgz", "w:gz") as tf:
        tf.add(tmp_path / "sbd" / "benchmark_RELEASE", arcname="benchmark_RELEASE")

    registry = tmp_path / "local.toml"  # these archives differ from the ones the `env` registry pins
    registry.write_text("""
[sources.voc2012_trainval]
group = "pascal"
filename = "VOCtrainval_11-May-2012.tar"
urls = ["http://127.0.0.1:9/unused"]

[sources.sbd_benchmark]
group = "pascal"
filename = "benchmark.tgz"
urls = ["http://127.0.0.1:9/unused"]
optional = true
""")
    monkeypatch.setenv("HMREPRO_SOURCES", str(registry))
    root = env
    result, out = run(
        "download",
        "pascal",
        "--with-sbd",
        "--only",
        "voc2012_trainval",
        "--only",
        "sbd_benchmark",
        "--from",
        mine,
        "--data-root",
        root,
        *FAST,
    )
    assert result.exit_code == 0, out
    ctx = PrepareContext(root, LockFile.for_data_root(root), "hmrepro download pascal", progress=False)
    lines = prepare_pascal(ctx, load_registry(), from_sbd=True, load_mat=lambda p: np.load(p))
    assert "from VOC" in lines[-1]
    for m in masks:
        np.testing.assert_array_equal(
            np.array(Image.open(root / "VOC2012/SegmentationClassAug" / m.name)),
            np.array(Image.open(m)),
            err_msg=m.name,
        )
    assert check_layout("pascal", root, SplitFolder(synthetic_root / "splits")).ok

"""The synthetic benchmark: a small procedurally generated dataset in the three on-disk layouts.

``make_synthetic(root)`` writes, below ``root``, exactly what :mod:`hmrepro.data.benchmarks` reads for the real
data, so readers, training and evaluation run without a download:

- ``VOC2012/`` PASCAL-like: 20 classes in 4 folds of 5; masks hold class 1..20, 0 background and a 255 ring on
  every object boundary (as VOC's void label).
- ``COCO2014/`` COCO-like: the 80 COCO categories (real category ids); class-mask PNGs (1 + class index, no 255)
  and ``annotations/instances_{train2014,val2014}.json`` whose non-crowd polygons, drawn with pycocotools in
  file order, give exactly those PNGs; a few crowd annotations (uncompressed RLE) that the PNGs leave out.
- ``FSS-1000/`` FSS-like: 16 classes of 10 images; grey masks with anti-aliased edges (>= 128 is foreground).
- ``splits/``: split lists in the format of the packaged ones, and their ``SHA256SUMS``.

``scale`` (``hmrepro prepare synthetic --scale K``) writes K times the PASCAL-like and COCO-like images per class:
scale 1 exercises every code path in minutes; models trained from a random backbone need more images to generalise
to a fold's new classes (scale 8 is enough for CRCNet and MCE, README).

Classes differ by shape, colour and texture; backgrounds are blotchy and grainy; objects are small or large;
some images hold two classes. Everything follows from the seed: the same seed gives byte-identical files.
A marker file written last (``.synthetic-complete``, with seed and version) tells a finished benchmark
from one a killed run left behind.
"""

from __future__ import annotations

import contextlib
import json
import shutil
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from ..atomic import atomic_open, atomic_write_text
from ..errors import HmreproError
from .splits import write_checksums
from .synthetic_coco import categories_json, crowd_annotation, image_json, object_annotation
from .synthetic_shapes import (
    Look,
    SceneObject,
    class_look,
    dilate,
    erode,
    paint_labels,
    place_polygon,
    polygon_coverage,
    polygon_mask,
    random_size,
    render,
    sample_objects,
)

VERSION = 1
COMPLETE_MARKER = ".synthetic-complete"
STARTED_MARKER = ".synthetic-incomplete"
OWNED_PATHS = ("VOC2012", "COCO2014", "FSS-1000", "splits")

PASCAL_CLASSES, PASCAL_FOLDS = 20, 4
PASCAL_IMAGES_PER_CLASS = {"trn": 3, "val": 2}  # images whose main object is of the class
COCO_CLASSES, COCO_FOLDS = 80, 4
COCO_IMAGES_PER_CLASS = {"train2014": 3, "val2014": 2}
COCO_FIRST_ID = {"train2014": 100001, "val2014": 200001}
FSS_SPLIT_SIZES = {"trn": 8, "val": 4, "test": 4}
FSS_IMAGES_PER_CLASS = 10
MAX_SCALE = 50  # --scale: at most 50 × the PASCAL-like/COCO-like images per class (COCO-like: 20,000 images)
SECOND_CLASS_PROBABILITY = 0.4
CROWD_PROBABILITY = 0.1
CROWD_BLOBS = 3
JPEG_QUALITY = 90

Tick = Callable[[], None]


# -- files ---------------------------------------------------------------------------------------


def _save_jpeg(path: Path, rgb: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb, "RGB").save(path, format="JPEG", quality=JPEG_QUALITY, subsampling=2)


def _save_png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, format="PNG")


def _write_text(path: Path, text: str) -> None:
    with atomic_open(path, "w", what="file", sync=False) as f:  # regenerated if lost: no fsync per file
        f.write(text)


def _write_json(path: Path, data) -> None:
    _write_text(path, json.dumps(data, separators=(",", ":")))


def _scene_classes(rng: np.random.Generator, main_class: int, num_classes: int) -> list[int]:
    """The main class, and with some probability a second, different class."""
    if rng.random() >= SECOND_CLASS_PROBABILITY:
        return [main_class]
    other = int(rng.integers(num_classes - 1))
    return [main_class, other + (other >= main_class)]


def _present_classes(labels: np.ndarray) -> list[int]:
    """0-based classes with at least one pixel in a label map (0 background, 255 void)."""
    return [int(v) - 1 for v in np.unique(labels) if 0 < v < 255]


def _layers(objects: Sequence[SceneObject]) -> list:
    return [(obj.look, obj.polygon) for obj in objects]


# -- PASCAL-like ---------------------------------------------------------------------------------


def pascal_labels(objects: Sequence[SceneObject], height: int, width: int) -> np.ndarray:
    """VOC-style label map: class 1..20 with a 255 ring (one pixel in, one out) around every object region."""
    labels = paint_labels(objects, height, width)
    ring = np.zeros(labels.shape, dtype=bool)
    for value in np.unique(labels[labels > 0]):
        region = labels == value
        ring |= dilate(region) & ~erode(region)
    labels[ring] = 255
    return labels


def _pascal_fold(class_index: int) -> int:
    return class_index // (PASCAL_CLASSES // PASCAL_FOLDS)


def _write_pascal_splits(splits_dir: Path, pairs: dict[str, list[tuple[str, int]]]) -> None:
    """``{trn,val}_fold{f}.txt``: the (image, class) pairs of fold f's classes; trn by class, val by image."""
    for split, split_pairs in pairs.items():
        for fold in range(PASCAL_FOLDS):
            chosen = [(name, c) for name, c in split_pairs if _pascal_fold(c) == fold]
            key = (lambda p: (p[1], p[0])) if split == "trn" else (lambda p: p)
            lines = [f"{name}__{c + 1:02d}\n" for name, c in sorted(chosen, key=key)]
            _write_text(splits_dir / "pascal" / f"{split}_fold{fold}.txt", "".join(lines))


def make_pascal(root: Path, rng: np.random.Generator, tick: Tick, scale: int = 1) -> str:
    """Write the PASCAL-like images, masks and split lists (``scale`` × the images per class); return a summary line."""
    voc = root / "VOC2012"
    pairs: dict[str, list[tuple[str, int]]] = {split: [] for split in PASCAL_IMAGES_PER_CLASS}
    number = 0
    for split, per_class in PASCAL_IMAGES_PER_CLASS.items():
        for main_class in range(PASCAL_CLASSES):
            for _ in range(per_class * scale):
                number += 1
                image_id = f"synth_{number:06d}"
                height, width = random_size(rng)
                classes = _scene_classes(rng, main_class, PASCAL_CLASSES)
                objects, labels = sample_objects(rng, height, width, classes, pascal_labels)
                _save_jpeg(voc / "JPEGImages" / f"{image_id}.jpg", render(rng, height, width, _layers(objects)))
                _save_png(voc / "SegmentationClassAug" / f"{image_id}.png", labels)
                pairs[split].extend((image_id, c) for c in _present_classes(labels))
                tick()
    _write_pascal_splits(root / "splits", pairs)
    counts = ", ".join(f"{PASCAL_CLASSES * n * scale} {split}" for split, n in PASCAL_IMAGES_PER_CLASS.items())
    return f"pascal-like: {PASCAL_CLASSES} classes in {PASCAL_FOLDS} folds, {number} images ({counts}) in VOC2012/"


# -- COCO-like -----------------------------------------------------------------------------------


def _crowd(rng: np.random.Generator, height: int, width: int, class_index: int) -> tuple[list, np.ndarray]:
    """A few small objects of one class painted as a crowd: their layers and the union of their masks."""
    look = class_look(class_index)
    polygons = [place_polygon(rng, look.shape, height, width, small=True) for _ in range(CROWD_BLOBS)]
    union = np.zeros((height, width), dtype=bool)
    for polygon in polygons:
        union |= polygon_mask(polygon, height, width)
    return [(look, polygon) for polygon in polygons], union


class _CocoSplitWriter:
    """Collects the images, annotations and per-class image lists of one COCO-like image folder."""

    def __init__(self, root: Path, image_dir: str, first_annotation_id: int):
        self.root, self.image_dir = root, image_dir
        self.images: list[dict] = []
        self.annotations: list[dict] = []
        self.classwise: dict[int, list[int]] = {c: [] for c in range(COCO_CLASSES)}
        self.next_annotation_id = first_annotation_id

    def _annotation_id(self) -> int:
        self.next_annotation_id += 1
        return self.next_annotation_id - 1

    def add_image(self, rng: np.random.Generator, image_id: int, main_class: int) -> None:
        stem = f"COCO_{self.image_dir}_{image_id:012d}"
        height, width = random_size(rng)
        classes = _scene_classes(rng, main_class, COCO_CLASSES)
        objects, labels = sample_objects(rng, height, width, classes, paint_labels)
        annotations = [object_annotation(self._annotation_id(), image_id, o, height, width) for o in objects]
        layers = _layers(objects)
        if rng.random() < CROWD_PROBABILITY:
            crowd_class = int(rng.choice([c for c in range(COCO_CLASSES) if c not in classes]))
            crowd_layers, crowd_mask = _crowd(rng, height, width, crowd_class)
            layers = crowd_layers + layers  # the crowd lies behind the annotated objects
            crowd = crowd_annotation(self._annotation_id(), image_id, crowd_class, crowd_mask)
            annotations.insert(int(rng.integers(len(annotations) + 1)), crowd)
        _save_jpeg(self.root / self.image_dir / f"{stem}.jpg", render(rng, height, width, layers))
        _save_png(self.root / "annotations" / self.image_dir / f"{stem}.png", labels)
        self.images.append(image_json(image_id, f"{stem}.jpg", height, width))
        self.annotations.extend(annotations)
        for c in _present_classes(labels):
            self.classwise[c].append(image_id)

    def write_instances(self) -> None:
        _write_json(
            self.root / "annotations" / f"instances_{self.image_dir}.json",
            {
                "info": {"description": "hmrepro synthetic COCO-like benchmark", "version": str(VERSION)},
                "licenses": [],
                "images": self.images,
                "annotations": self.annotations,
                "categories": categories_json(),
            },
        )

    def write_splits(self, splits_dir: Path, split: str, is_listed: Callable[[int, int], bool]) -> None:
        """``{split}_fold{f}.json`` with all 80 classes; only those ``is_listed(class, fold)`` keep their images."""
        for fold in range(COCO_FOLDS):
            classes = {str(c): (ids if is_listed(c, fold) else []) for c, ids in self.classwise.items()}
            path = splits_dir / "coco" / f"{split}_fold{fold}.json"
            _write_json(path, {"image_dir": self.image_dir, "classes": classes})


def make_coco(root: Path, rng: np.random.Generator, tick: Tick, scale: int = 1) -> str:
    """Write the COCO-like images, masks, instance JSONs and split lists (``scale`` × the images per class);
    return a summary line."""
    coco_root = root / "COCO2014"
    writers = {}
    next_annotation_id = 1
    for image_dir, per_class in COCO_IMAGES_PER_CLASS.items():
        writer = _CocoSplitWriter(coco_root, image_dir, next_annotation_id)
        image_id = COCO_FIRST_ID[image_dir]
        for main_class in range(COCO_CLASSES):
            for _ in range(per_class * scale):
                writer.add_image(rng, image_id, main_class)
                image_id += 1
                tick()
        writer.write_instances()
        next_annotation_id = writer.next_annotation_id
        writers[image_dir] = writer
    writers["train2014"].write_splits(root / "splits", "trn", lambda c, fold: c % COCO_FOLDS != fold)
    writers["val2014"].write_splits(root / "splits", "val", lambda c, fold: c % COCO_FOLDS == fold)
    images = ", ".join(f"{len(w.images)} {d}" for d, w in writers.items())
    annotations = [a for w in writers.values() for a in w.annotations]
    crowds = sum(a["iscrowd"] for a in annotations)
    return (
        f"coco-like: {COCO_CLASSES} classes in {COCO_FOLDS} folds, {images} images, "
        f"{len(annotations)} annotations ({crowds} crowd) in COCO2014/"
    )


# -- FSS-like ------------------------------------------------------------------------------------


def fss_looks() -> dict[str, list[Look]]:
    """The FSS-like classes of each split (trn/val/test); their looks step through shapes and colours.

    A class's folder name is its look's name, e.g. ``red_flat_disc``.
    """
    total = sum(FSS_SPLIT_SIZES.values())
    looks = [class_look((7 * i) % COCO_CLASSES) for i in range(total)]  # 7 is coprime to 80: all distinct
    out, start = {}, 0
    for split, size in FSS_SPLIT_SIZES.items():
        out[split] = looks[start : start + size]
        start += size
    return out


def make_fss(root: Path, rng: np.random.Generator, tick: Tick, scale: int = 1) -> str:
    """Write the FSS-like class folders and class lists; return a summary line. ``scale`` does not apply:
    FSS-1000 has 10 images per class by definition."""
    fss = root / "FSS-1000"
    classes = fss_looks()
    for split, looks in classes.items():
        for look in looks:
            for n in range(1, FSS_IMAGES_PER_CLASS + 1):
                height, width = random_size(rng)
                polygon = place_polygon(rng, look.shape, height, width, small=rng.random() < 0.3)
                _save_jpeg(fss / look.name / f"{n}.jpg", render(rng, height, width, [(look, polygon)]))
                grey = np.rint(255 * polygon_coverage(polygon, height, width)).astype(np.uint8)
                _save_png(fss / look.name / f"{n}.png", np.repeat(grey[..., None], 3, axis=2))  # grey RGB, as FSS-1000
                tick()
        names = sorted(look.name for look in looks)
        _write_text(root / "splits" / "fss" / f"{split}.txt", "".join(f"{name}\n" for name in names))
    sizes = ", ".join(f"{len(looks)} {split}" for split, looks in classes.items())
    return f"fss-like: {sum(FSS_SPLIT_SIZES.values())} classes ({sizes}) x {FSS_IMAGES_PER_CLASS} images in FSS-1000/"


# -- the whole benchmark -------------------------------------------------------------------------


def total_images(scale: int = 1) -> int:
    pascal = PASCAL_CLASSES * sum(PASCAL_IMAGES_PER_CLASS.values()) * scale
    coco = COCO_CLASSES * sum(COCO_IMAGES_PER_CLASS.values()) * scale
    return pascal + coco + sum(FSS_SPLIT_SIZES.values()) * FSS_IMAGES_PER_CLASS


def completed_state(root: Path) -> dict | None:
    """Seed, version and summary of a finished synthetic benchmark in ``root``; None if there is none."""
    marker = Path(root) / COMPLETE_MARKER
    if not marker.is_file() or (Path(root) / STARTED_MARKER).exists():
        return None
    try:
        state = json.loads(marker.read_text())
    except (OSError, ValueError):
        return None
    return state if isinstance(state, dict) and {"seed", "version", "summary"} <= state.keys() else None


def _clear_previous(root: Path) -> None:
    """Remove what an earlier synthetic run wrote; refuse to touch dataset folders it did not write."""
    present = [name for name in OWNED_PATHS if (root / name).exists()]
    ours = (root / COMPLETE_MARKER).exists() or (root / STARTED_MARKER).exists()
    if present and not ours:
        raise HmreproError(
            f"{root} already holds {', '.join(present)}, not written by `hmrepro prepare synthetic`; refusing to "
            "overwrite them. Choose an empty --data-root (the default is ~/.hmrepro/synthetic)."
        )
    for name in present:
        path = root / name
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()
    (root / COMPLETE_MARKER).unlink(missing_ok=True)


def _write_marker(path: Path, state: dict) -> None:
    atomic_write_text(path, json.dumps(state, indent=1) + "\n", what="completion marker")


def _folder_bytes(root: Path) -> int:
    return sum(p.stat().st_size for name in OWNED_PATHS for p in (root / name).rglob("*") if p.is_file())


@contextlib.contextmanager
def _progress(enabled: bool, total: int) -> Iterator[Tick]:
    if not enabled:
        yield lambda: None
        return
    from rich.console import Console
    from rich.progress import Progress

    with Progress(console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task("writing the synthetic benchmark", total=total)
        yield lambda: bar.advance(task)


def make_synthetic(root: Path, seed: int = 0, force: bool = False, progress: bool = False, scale: int = 1) -> list[str]:
    """Write the synthetic benchmark below ``root`` (see the module docstring); return summary lines.

    ``scale`` multiplies the PASCAL-like and COCO-like images per class (1: 3 training and 2 validation images per
    PASCAL-like class, enough to exercise every code path; training from a random backbone needs more to generalise
    to a fold's new classes). Scale 1 writes the same files as before the option existed.

    An existing complete benchmark of the same seed, scale and version is kept (``force`` rewrites it); one of
    another seed or scale is only replaced with ``force``; the leftovers of an interrupted run are replaced. Folders
    that this function did not write are never deleted.
    """
    root = Path(root).expanduser()
    if seed < 0:
        raise HmreproError(f"--seed must be a non-negative integer, got {seed}")
    if not 1 <= scale <= MAX_SCALE:
        raise HmreproError(f"--scale must be an integer from 1 to {MAX_SCALE}, got {scale}")
    state = completed_state(root)
    if state is not None and not force:
        made = (state["seed"], state.get("scale", 1))
        if made != (seed, scale):
            raise HmreproError(
                f"{root} already holds the synthetic benchmark made with seed {made[0]}, scale {made[1]}; pass "
                f"--force to rewrite it with seed {seed}, scale {scale}, or choose another --data-root"
            )
        if state["version"] == VERSION:
            return list(state["summary"])
    root.mkdir(parents=True, exist_ok=True)
    _clear_previous(root)
    _write_marker(root / STARTED_MARKER, {"seed": seed, "scale": scale, "version": VERSION})
    makers = (make_pascal, make_coco, make_fss)
    with _progress(progress, total_images(scale)) as tick:
        summary = [make(root, np.random.default_rng([seed, i]), tick, scale) for i, make in enumerate(makers)]
    write_checksums(root / "splits")
    size_mb = _folder_bytes(root) / 1e6
    scaled = f", scale {scale}" if scale != 1 else ""
    summary.append(f"split lists in splits/ (pass --splits DATA_ROOT/splits); {size_mb:.1f} MB, seed {seed}{scaled}")
    _write_marker(root / COMPLETE_MARKER, {"seed": seed, "scale": scale, "version": VERSION, "summary": summary})
    (root / STARTED_MARKER).unlink()
    return summary

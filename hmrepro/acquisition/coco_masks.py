"""COCO class masks regenerated from ``instances_*.json`` (the fallback of ``hmrepro prepare coco --from-json``).

Rules (sources.md A.2, the RePRI copy of PFENet's original script, with pycocotools for the shapes):

- crowd annotations (``iscrowd=1``) are skipped entirely;
- every other annotation is rasterised with pycocotools (all polygons, or its RLE) and painted in json
  order, so a later instance overwrites an earlier one where they overlap;
- pixel value = 1 + the contiguous class index (position of the category in ascending category-id
  order: 1..80 for COCO), 0 = background, no 255;
- one 8-bit PNG per image, ``<file_name stem>.png``; images without a (non-crowd) annotation get an
  all-background mask so that every listed image has a mask file.

The authors' masks came from a script that draws only the first polygon of each annotation with
OpenCV; masks made here are therefore close to, but not byte-identical with, the authors' ones.
"""

from __future__ import annotations

import functools
import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ..atomic import atomic_open, is_temporary
from ..errors import CorruptFileError, MissingDataError
from .parallel import run_tasks

APPROXIMATION_NOTE = (
    "masks regenerated from instances json are close to, but not byte-identical with, the authors' masks "
    "(they drew only the first polygon of each instance with OpenCV); results on them are approximate. "
    "For exact reproduction use the authors' mask archives: `hmrepro download coco && hmrepro prepare coco`."
)


@dataclass(frozen=True)
class MaskTask:
    """Everything needed to draw one image's mask (picklable, no COCO object needed in the worker)."""

    file_name: str
    height: int
    width: int
    anns: tuple  # ((label, segmentation), ...) in json order, crowd annotations removed


@dataclass(frozen=True)
class MaskStats:
    images: int
    written: int
    skipped: int


def category_labels(categories: list[dict]) -> dict[int, int]:
    """``{category_id: 1 + contiguous index}`` in ascending category-id order."""
    ids = sorted(int(c["id"]) for c in categories)
    if len(ids) > 254:
        raise CorruptFileError(f"{len(ids)} categories do not fit into 8-bit masks")
    return {cid: i + 1 for i, cid in enumerate(ids)}


def plan(instances: dict) -> list[MaskTask]:
    """One :class:`MaskTask` per image of an instances dict (``json.load`` of ``instances_*.json``)."""
    labels = category_labels(instances["categories"])
    per_image: dict[int, list] = {int(img["id"]): [] for img in instances["images"]}
    for ann in instances["annotations"]:
        if ann.get("iscrowd", 0):
            continue
        segm = ann.get("segmentation")
        if not segm:
            continue
        per_image.setdefault(int(ann["image_id"]), []).append((labels[int(ann["category_id"])], segm))
    return [
        MaskTask(img["file_name"], int(img["height"]), int(img["width"]), tuple(per_image.get(int(img["id"]), ())))
        for img in instances["images"]
    ]


def segmentation_mask(segm, height: int, width: int) -> np.ndarray:
    """0/1 array of one annotation's segmentation (polygons, uncompressed RLE or compressed RLE)."""
    from pycocotools import mask as mask_utils

    if isinstance(segm, list):
        polys = [p for p in segm if len(p) >= 6]
        if not polys:
            return np.zeros((height, width), np.uint8)
        rle = mask_utils.merge(mask_utils.frPyObjects(polys, height, width))
    elif isinstance(segm.get("counts"), list):
        rle = mask_utils.frPyObjects(segm, height, width)
    else:
        rle = dict(segm)
        if isinstance(rle["counts"], str):
            rle["counts"] = rle["counts"].encode("ascii")
    with warnings.catch_warnings():  # pycocotools' own numpy-2 DeprecationWarning, not ours to fix
        warnings.simplefilter("ignore", DeprecationWarning)
        return mask_utils.decode(rle)


def render(task: MaskTask) -> np.ndarray:
    """The class mask of one image: annotations painted in order, later ones on top."""
    canvas = np.zeros((task.height, task.width), np.uint8)
    for label, segm in task.anns:
        m = segmentation_mask(segm, task.height, task.width)
        canvas[m.reshape(canvas.shape) > 0] = label
    return canvas


def mask_name(file_name: str) -> str:
    return Path(file_name).stem + ".png"


def write_one(task: MaskTask, out_dir: str) -> bool:
    """Write the mask of ``task`` unless it exists (resumable); True if written."""
    target = Path(out_dir) / mask_name(task.file_name)
    if target.is_file():
        return False
    with atomic_open(target, "wb", what="mask", sync=False) as out:
        Image.fromarray(render(task), mode="L").save(out, format="PNG")
    return True


def load_instances(path: Path) -> dict:
    if not Path(path).is_file():
        raise MissingDataError(f"{path} does not exist (the COCO instances json; `hmrepro download coco --with-json`)")
    try:
        return json.loads(Path(path).read_text())
    except json.JSONDecodeError as err:
        raise CorruptFileError(f"{path} is not valid JSON ({err}); fetch it again") from None


def generate_masks(
    instances_json: Path, out_dir: Path, *, workers: int = 1, progress: bool = True, console=None
) -> MaskStats:
    """Write one class-mask PNG per image of ``instances_json`` into ``out_dir`` (existing PNGs are kept)."""
    tasks = plan(load_instances(instances_json))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in out_dir.glob("*.tmp*"):  # left by an interrupted run (older versions: <name>.tmp.png)
        if is_temporary(stale) or stale.name.endswith(".tmp.png"):
            stale.unlink()
    todo = [t for t in tasks if not (out_dir / mask_name(t.file_name)).is_file()]
    fn = functools.partial(write_one, out_dir=str(out_dir))
    written = sum(
        run_tasks(fn, todo, workers=workers, description=f"masks {out_dir.name}", progress=progress, console=console)
    )
    return MaskStats(images=len(tasks), written=written, skipped=len(tasks) - len(todo))

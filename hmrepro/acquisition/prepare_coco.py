"""``hmrepro prepare coco``: ``COCO2014/{train2014,val2014}/*.jpg`` and
``COCO2014/annotations/{train2014,val2014}/*.png``."""

from __future__ import annotations

import os
from pathlib import Path

from .coco_masks import APPROXIMATION_NOTE, generate_masks
from .layout import find_dir, remove_staging
from .registry import Registry
from .steps import PrepareContext, extracted, place

SPLITS = ("train2014", "val2014")


def _images_of(split: str):
    return lambda d, dirs, files: sum(1 for f in files if f.startswith(f"COCO_{split}_") and f.endswith(".jpg"))


def _masks_of(split: str):
    return lambda d, dirs, files: sum(1 for f in files if f.startswith(f"COCO_{split}_") and f.endswith(".png"))


def place_instances_json(ctx: PrepareContext, registry: Registry, ann_dir: Path) -> str:
    """Put ``instances_{train,val}2014.json`` into ``ann_dir`` from the annotations zip (if not there yet)."""
    wanted = [f"instances_{s}.json" for s in SPLITS]
    if all((ann_dir / w).is_file() for w in wanted):
        return f"{ann_dir}: instances json present"
    source = registry["coco_annotations2014"]
    content = extracted(ctx, source)
    found = find_dir(content, lambda d, dirs, files: sum(w in files for w in wanted), "instances_*2014.json")
    ann_dir.mkdir(parents=True, exist_ok=True)
    for w in wanted:
        if (found / w).is_file() and not (ann_dir / w).is_file():
            os.replace(found / w, ann_dir / w)
    remove_staging(ctx.data_root, source.name)
    return f"{ann_dir}: instances json placed from {source.filename}"


def prepare_coco(ctx: PrepareContext, registry: Registry, *, from_json: bool = False) -> list[str]:
    """Images and class masks in place; ``from_json`` regenerates the masks from the instances json."""
    root = Path(ctx.data_root) / "COCO2014"
    ann_dir = root / "annotations"
    lines = []
    for split in SPLITS:
        lines.append(place(ctx, registry[f"coco_{split}"], root / split, _images_of(split), f"{split} images"))
    if not from_json:
        for split in SPLITS:
            lines.append(
                place(ctx, registry[f"coco_masks_{split}"], ann_dir / split, _masks_of(split), f"{split} masks")
            )
        return lines
    lines.append(place_instances_json(ctx, registry, ann_dir))
    ctx.log(f"note: {APPROXIMATION_NOTE}")
    for split in SPLITS:
        stats = generate_masks(
            ann_dir / f"instances_{split}.json",
            ann_dir / split,
            workers=ctx.workers,
            progress=ctx.progress,
            console=ctx.console,
        )
        lines.append(
            f"{ann_dir / split}: {stats.written} masks written, {stats.skipped} already there "
            f"({stats.images} images; regenerated, approximate)"
        )
    return lines

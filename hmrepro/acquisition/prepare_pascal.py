"""``hmrepro prepare pascal``: ``VOC2012/{JPEGImages,SegmentationClass,SegmentationClassAug}`` under the data root."""

from __future__ import annotations

from pathlib import Path

from .layout import count_matching, find_dir, mark_placed, named_dir_with, remove_staging
from .registry import Registry
from .sbd import build_segclassaug
from .steps import PrepareContext, extracted, place


def prepare_pascal(ctx: PrepareContext, registry: Registry, *, from_sbd: bool = False, load_mat=None) -> list[str]:
    """Extract VOC 2012 and the augmented masks into place; ``from_sbd`` builds the masks from SBD instead."""
    root = Path(ctx.data_root)
    voc = root / "VOC2012"
    lines = [place(ctx, registry["voc2012_trainval"], voc, named_dir_with("VOC2012", "JPEGImages"), "VOC2012 folder")]
    aug = voc / "SegmentationClassAug"
    if not from_sbd:
        lines.append(place(ctx, registry["voc_segclassaug"], aug, count_matching("*.png"), "folder of PNG masks"))
        return lines
    sbd = registry["sbd_benchmark"]
    content = extracted(ctx, sbd)
    cls_dir = find_dir(
        content,
        lambda d, dirs, files: d.name == "cls" and sum(f.endswith(".mat") for f in files),
        "SBD cls/ folder of .mat masks",
    )
    stats = build_segclassaug(
        voc, cls_dir, aug, load_mat=load_mat, workers=ctx.workers, progress=ctx.progress, console=ctx.console
    )
    remove_staging(root, sbd.name)
    mark_placed(root, "segclassaug_from_sbd", {"archive": sbd.filename, "target": str(aug)})
    lines.append(
        f"{aug}: built {stats.from_voc} masks from VOC and {stats.from_sbd} from SBD ({stats.skipped} already there); "
        "where an image is in both, VOC's mask (with 255 boundaries) is used"
    )
    return lines

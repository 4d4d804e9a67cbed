"""SegmentationClassAug built from VOC 2012 and the SBD release (``hmrepro prepare pascal --from-sbd``).

For every image id in VOC ``SegmentationClass`` or SBD ``dataset/cls``: VOC's mask wins where both
exist (palette indices 0..20 plus 255 on boundaries, written as plain 8-bit values); otherwise SBD's
``GTcls.Segmentation`` (0..20, no 255). Output: 8-bit grey PNGs ``<id>.png``. Reading SBD's .mat files
needs scipy, which hmrepro does not require: it is imported only here.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ..atomic import atomic_open
from ..errors import HmreproError, MissingDataError
from .parallel import run_tasks

SCIPY_HINT = (
    "reading SBD .mat files needs scipy, which hmrepro does not install: run `pip install scipy`, "
    "or use the authors' SegmentationClassAug zip instead (`hmrepro prepare pascal` without --from-sbd)"
)


def require_scipy() -> None:
    try:
        import scipy.io  # noqa: F401
    except ImportError:
        raise HmreproError(SCIPY_HINT) from None


def load_sbd_mat(path: Path) -> np.ndarray:
    """The class mask stored in one SBD ``cls/<id>.mat`` (field GTcls.Segmentation)."""
    try:
        import scipy.io
    except ImportError:
        raise HmreproError(SCIPY_HINT) from None
    mat = scipy.io.loadmat(str(path))
    return np.asarray(mat["GTcls"][0]["Segmentation"][0], dtype=np.uint8)


def load_voc_png(path: Path) -> np.ndarray:
    """VOC palette PNG as its index values (0..20, 255)."""
    with Image.open(path) as img:
        return np.array(img, dtype=np.uint8)


@dataclass(frozen=True)
class AugStats:
    from_voc: int
    from_sbd: int
    skipped: int


def _write(task: tuple[str, str, str], out_dir: str, load_mat: Callable) -> str:
    image_id, kind, src = task
    mask = load_voc_png(Path(src)) if kind == "voc" else load_mat(Path(src))
    target = Path(out_dir) / f"{image_id}.png"
    with atomic_open(target, "wb", what="mask", sync=False) as out:
        Image.fromarray(mask.astype(np.uint8), mode="L").save(out, format="PNG")
    return kind


def build_segclassaug(
    voc_dir: Path,
    sbd_cls_dir: Path,
    out_dir: Path,
    *,
    load_mat: Callable | None = None,
    workers: int = 1,
    progress: bool = True,
    console=None,
) -> AugStats:
    """Write ``out_dir/<id>.png`` for every VOC or SBD id (existing PNGs are kept: resumable)."""
    voc_masks = {p.stem: p for p in (Path(voc_dir) / "SegmentationClass").glob("*.png")}
    sbd_masks = {p.stem: p for p in Path(sbd_cls_dir).glob("*.mat")}
    if not voc_masks:
        raise MissingDataError(
            f"no VOC masks in {Path(voc_dir) / 'SegmentationClass'}; run `hmrepro prepare pascal` first"
        )
    if not sbd_masks:
        raise MissingDataError(f"no SBD .mat files in {sbd_cls_dir}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tasks, skipped = [], 0
    for image_id in sorted(set(voc_masks) | set(sbd_masks)):
        if (out_dir / f"{image_id}.png").is_file():
            skipped += 1
        elif image_id in voc_masks:
            tasks.append((image_id, "voc", str(voc_masks[image_id])))
        else:
            tasks.append((image_id, "sbd", str(sbd_masks[image_id])))
    if load_mat is None:
        if any(kind == "sbd" for _, kind, _ in tasks):
            require_scipy()
        load_mat = load_sbd_mat
    fn = functools.partial(_write, out_dir=str(out_dir), load_mat=load_mat)
    kinds = list(
        run_tasks(fn, tasks, workers=workers, description="SegmentationClassAug", progress=progress, console=console)
    )
    return AugStats(from_voc=kinds.count("voc"), from_sbd=kinds.count("sbd"), skipped=skipped)

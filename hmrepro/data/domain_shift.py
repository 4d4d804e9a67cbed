"""COCO-20i → PASCAL-5i domain shift (HM Table 4): the test classes, the episode pool, and the evaluation.

A model trained on COCO-20i fold f is tested on PASCAL VOC on the PASCAL classes that are *not* among COCO fold
f's 60 training classes (the folds of RePRI and HSNet; ``shared/specs/sources.md`` C.1). The class lists are those
of RePRI's figure (standard VOC ids; RePRI's code swaps car and cat, we do not):

====  ==========================================================
fold  PASCAL test classes (VOC ids 1..20)
====  ==========================================================
0     aeroplane 1, boat 4, chair 9, diningtable 11, dog 12, person 15
1     bicycle 2, bus 6, horse 13, sofa 18
2     bird 3, car 7, pottedplant 16, sheep 17, train 19, tvmonitor 20
3     bottle 5, cat 8, cow 10, motorbike 14
====  ==========================================================

Neither the HM paper nor any of the authors' repositories give the episode lists or the image size of Table 4.
hmrepro's choice (written into every record):

- queries: the (image, class) entries of the PASCAL val lists of all four PASCAL-5i folds (the packaged lists, in
  fold order, then file order), kept when the class is a test class of the fold — 817 / 292 / 438 / 321 entries
  for folds 0–3 with the authors' lists;
- supports: drawn from the same entries of the query's class (rejecting the query), as for PASCAL-5i;
- 1000 episodes per fold drawn with the model's evaluation protocol (``hsnet``: NumPy seeded once with 0);
- images at the size the COCO model was trained at (the recipe's COCO size, 400 for HSNet), masks resized with
  nearest neighbours, PASCAL's 255 ignored; mIoU over the fold's test classes (class axis of 20), FB-IoU.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch.utils.data import DataLoader

from .benchmarks import get_benchmark
from .episodes import Episode, EpisodePool, evaluation_episodes
from .splits import SplitFolder

__all__ = [
    "DOMAIN_SHIFT_BENCHMARK",
    "DOMAIN_SHIFT_CLASSES",
    "EPISODES_PER_FOLD",
    "EPISODE_SOURCE",
    "VOC_CLASSES",
    "domain_shift_class_ids",
    "domain_shift_episodes",
    "domain_shift_pool",
    "evaluate_domain_shift",
]

VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)  # fmt: skip

# PASCAL test classes of each COCO-20i fold, as VOC ids (1..20): sources.md C.1 / RePRI's figure
DOMAIN_SHIFT_CLASSES: dict[int, tuple[int, ...]] = {
    0: (1, 4, 9, 11, 12, 15),
    1: (2, 6, 13, 18),
    2: (3, 7, 16, 17, 19, 20),
    3: (5, 8, 10, 14),
}
EPISODES_PER_FOLD = 1000
DOMAIN_SHIFT_BENCHMARK = "coco2pascal"  # the record's benchmark: trained on COCO-20i, tested on PASCAL
EPISODE_SOURCE = (
    "queries: the PASCAL-5i val lists of all four folds (fold order, then file order) filtered to the fold's "
    "PASCAL test classes (VOC classes not among COCO-20i fold f's training classes, RePRI/HSNet folds); supports "
    "drawn from the same entries of the query's class"
)


def domain_shift_class_ids(fold: int) -> list[int]:
    """The PASCAL test classes of COCO-20i fold ``fold`` as class ids 0..19 (VOC id - 1)."""
    if fold not in DOMAIN_SHIFT_CLASSES:
        raise ValueError(f"unknown fold {fold!r}; choose 0, 1, 2 or 3")
    return [c - 1 for c in DOMAIN_SHIFT_CLASSES[fold]]


def domain_shift_pool(fold: int, splits: SplitFolder | None = None) -> EpisodePool:
    """Queries and support candidates of the domain-shift test of COCO-20i fold ``fold`` (see the module doc)."""
    splits = splits or SplitFolder()
    classes = domain_shift_class_ids(fold)
    wanted = set(classes)
    queries = [(name, c) for f in range(4) for name, c in splits.pascal("val", f) if c in wanted]
    return EpisodePool.from_queries("pascal", queries, classes, shuffle=False)


def domain_shift_episodes(
    fold: int,
    shot: int,
    splits: SplitFolder | None = None,
    *,
    protocol: str = "hsnet",
    num_episodes: int = EPISODES_PER_FOLD,
    seed: int = 0,
) -> list[Episode]:
    """The fixed domain-shift test episodes of fold ``fold`` (PASCAL image names, class ids 0..19)."""
    return evaluation_episodes(domain_shift_pool(fold, splits), shot, num_episodes, protocol=protocol, seed=seed)


@torch.no_grad()
def _evaluate_episodes(
    model,
    eps: list[Episode],
    class_ids: list[int],
    *,
    img_size: int,
    data_root: Path,
    device: torch.device,
    bsz: int,
    workers: int,
    on_batch: Callable[[int, float], None] | None = None,
) -> dict:
    """mIoU / FB-IoU of ``model`` on PASCAL episodes ``eps`` (the loop of ``evaluate.evaluate_fold``)."""
    from ..data.dataset import EpisodeDataset
    from ..engine.metrics import FewShotMeter

    bench = get_benchmark("pascal")
    np.random.seed(0)
    torch.manual_seed(0)
    dataset = EpisodeDataset(bench, data_root, eps, img_size=img_size)
    loader = DataLoader(
        dataset, batch_size=bsz, shuffle=False, num_workers=workers, pin_memory=device.type == "cuda",
        generator=torch.Generator().manual_seed(0),
    )  # fmt: skip
    meter = FewShotMeter(bench.num_classes(), class_ids)
    model.eval()
    start = time.perf_counter()
    for batch in loader:
        q = batch["query_img"].to(device, non_blocking=True)
        pred = model.predict_nshot(
            q, batch["support_imgs"].to(device, non_blocking=True), batch["support_masks"].to(device, non_blocking=True)
        )
        meter.update(pred.cpu(), batch["query_mask"], batch["class_id"], batch["query_ignore"])
        if on_batch is not None:
            on_batch(q.shape[0], meter.compute()[0])
    seconds = time.perf_counter() - start
    miou, fb_iou = meter.compute()
    return {"miou": miou, "fb_iou": fb_iou, "episodes": meter.episodes, "secs_per_episode": seconds / max(meter.episodes, 1)}


def evaluate_domain_shift(
    model_name: str,
    fold: str | int,
    shot: int,
    *,
    weights: str,
    backbone: str = "resnet50",
    img_size: int | None = None,
    data_root: str | Path | None = None,
    splits: str | Path | None = None,
    results_dir: str | Path | None = "results",
    device: str | None = None,
    bsz: int = 1,
    workers: int = 0,
    episodes: int | None = None,
    pretrained: bool = True,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> list[dict]:
    """Evaluate the COCO-20i model(s) ``weights`` on PASCAL, one record (``kind='domain-shift'``) per fold.

    ``weights`` is resolved as by ``hmrepro eval`` for the COCO-20i benchmark (a checkpoint, a run folder,
    ``{fold}`` in the path for several folds, ``random``, ``official``). ``episodes`` keeps only the first N of
    the 1000 fixed episodes (quick checks).
    """
    from ..engine.distributed import resolve_device
    from ..engine.evaluate import _progress, folds_of, load_model, provenance, resolve_weights
    from ..engine.recipes import resolve as resolve_recipe
    from ..engine.records import write_record
    from ..errors import HmreproError
    from ..paths import resolve_data_root

    log = log or (lambda msg: None)
    folds = folds_of("coco", fold)
    recipe = resolve_recipe(model_name, "coco")
    protocol = recipe.get("protocol", "hsnet")
    dev = resolve_device(device)
    split_folder = SplitFolder(splits)
    root = resolve_data_root(data_root)
    get_benchmark("pascal").require(root)
    sources = [
        resolve_weights(weights, model_name, backbone, "coco", f, multi_fold=len(folds) > 1, data_root=root)
        for f in folds
    ]
    records = []
    with _progress(progress) as bar:
        for f, source in zip(folds, sources):
            try:
                eps = domain_shift_episodes(f, shot, split_folder, protocol=protocol)
            except ValueError as err:
                raise HmreproError(str(err)) from None
            n_total = len(eps)
            if episodes:
                eps = eps[:episodes]
            model = load_model(source, model_name, backbone, "coco", pretrained=pretrained, device=dev, log=log)
            if source.trained_benchmark and source.trained_benchmark != "coco":
                log(f"note: {source.path} was trained on {source.trained_benchmark}, not COCO-20i")
            size = int(img_size or source.trained_img_size or recipe["img_size"])
            classes = domain_shift_class_ids(f)
            task = bar.add_task(f"{model_name} COCO→PASCAL fold {f} {shot}-shot", total=len(eps), info="")
            result = _evaluate_episodes(
                model, eps, classes, img_size=size, data_root=root, device=dev, bsz=bsz, workers=workers,
                on_batch=lambda k, miou: bar.update(task, advance=k, info=f"mIoU {miou:5.1f}"),
            )  # fmt: skip
            record = {
                "kind": "domain-shift",
                "model": model_name,
                "masking": model.masking.name,
                "backbone": backbone,
                "benchmark": DOMAIN_SHIFT_BENCHMARK,
                "trained_on": "coco",
                "tested_on": "pascal",
                "fold": f,
                "shot": shot,
                **result,
                "test_classes": [VOC_CLASSES[c] for c in classes],
                "test_class_ids": classes,
                "episode_source": EPISODE_SOURCE,
                "episode_pool_size": len(domain_shift_pool(f, split_folder)),
                "protocol": protocol,
                "img_size": size,
                "original_size": False,
                **provenance(source, pretrained=pretrained, device=dev, data_root=root, splits=split_folder),
                "bsz": bsz,
                "amp": False,
                "full_episode_set": result["episodes"] == n_total,
            }
            if results_dir is not None:
                record["path"] = str(write_record(record, Path(results_dir)))
            records.append(record)
            log(
                f"fold {f} ({', '.join(record['test_classes'])}): mIoU {result['miou']:.1f}, "
                f"FB-IoU {result['fb_iou']:.1f} over {result['episodes']} episodes"
            )
    return records

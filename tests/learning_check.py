"""The "learns nothing" guard of the reconstructed families (issue 23): a short training from a random backbone on the
synthetic FSS-like split, scored on its validation classes before and during training.

Everything a real run uses below the engine's loop is used here: the model's own forward and objective through the
engine's :func:`~hmrepro.engine.training.train.train_step`, the FSS-like training episodes
(:func:`~hmrepro.data.episodes.training_episodes`), the BatchNorm re-estimation of a random backbone and the
validation episodes (the 40 of the val classes), scored with the engine's meter. Square resize and ImageNet
normalisation (the ``hsnet`` preprocessing) for every family: the check is about learning, not preprocessing.
"""

from __future__ import annotations

from collections.abc import Collection

import torch
from torch.utils.data import DataLoader

import hmrepro
from hmrepro.data.benchmarks import get_benchmark, test_episodes
from hmrepro.data.dataset import EpisodeDataset
from hmrepro.data.episodes import training_episodes
from hmrepro.data.splits import SplitFolder
from hmrepro.engine.evaluation.metrics import FewShotMeter
from hmrepro.engine.training.schedules import lr_factor
from hmrepro.engine.training.train import calibrate_batchnorm, train_step


def validation_miou(net, loader, meter_args) -> float:
    """mIoU (%) of ``net`` (eval mode, 1-shot, argmax) over the validation ``loader``."""
    meter = FewShotMeter(*meter_args)
    net.eval()
    with torch.no_grad():
        for batch in loader:
            logits = net(batch["query_img"], batch["support_imgs"][:, 0], batch["support_masks"][:, 0])
            meter.update(logits.argmax(dim=1), batch["query_mask"], batch["class_id"], batch["query_ignore"])
    return float(meter.compute()[0])


def learning_check(
    model: str,
    root,
    *,
    img_size: int,
    epochs: int,
    bsz: int,
    lr: float,
    momentum: float = 0.9,
    weight_decay: float = 1e-4,
    model_args: dict | None = None,
    seed: int = 0,
    epoch_iterations: int = 0,
    training_losses: list[float] | None = None,
    scored_epochs: Collection[int] | None = None,
) -> tuple[float, list[float]]:
    """(untrained validation mIoU, validation mIoU after each scored epoch) of ``model`` trained ``epochs`` epochs of
    the FSS-like split (80 episodes each; the first ``epoch_iterations`` batches if > 0) with SGD and the poly
    schedule, from a random calibrated ResNet-50. ``scored_epochs`` (0-based; default: all) are the epochs after
    which the model is validated (40 episodes each: an epoch known to score 0 need not pay them); training stops
    after the last of them (the schedule still spans ``epochs``). ``training_losses``, if given, gets each step's
    loss."""
    torch.manual_seed(seed)
    net = hmrepro.create_model(model, backbone="resnet50", pretrained=False, **(model_args or {}))
    bench, splits = get_benchmark("fss"), SplitFolder(root / "splits")
    pool = bench.pool(splits, "trn")

    def dataset(episodes):
        return EpisodeDataset(bench, root, episodes, img_size=img_size, preprocess="hsnet")

    first = dataset(training_episodes(pool, 1, seed, 0)[:64])
    calibrate_batchnorm(net.backbone, torch.stack([first[i]["query_img"] for i in range(len(first))]))
    val = DataLoader(dataset(test_episodes("fss", 0, 1, split="val", splits=splits)), batch_size=20)
    meter_args = (bench.num_classes(splits), bench.class_ids(0, "val", splits))
    untrained = validation_miou(net, val, meter_args)

    params = [p for p in net.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    steps_per_epoch = -(-len(pool) // bsz)
    if epoch_iterations:
        steps_per_epoch = min(steps_per_epoch, epoch_iterations)
    curve, step = [], 0
    losses = training_losses if training_losses is not None else []
    scored = set(range(epochs) if scored_epochs is None else scored_epochs)
    for epoch in range(max(scored) + 1):
        episodes = training_episodes(pool, 1, seed, epoch)[: steps_per_epoch * bsz]
        train = DataLoader(dataset(episodes), batch_size=bsz)
        for batch in train:
            step += 1
            for group in optimizer.param_groups:
                group["lr"] = lr * lr_factor("poly", step, epochs * steps_per_epoch)
            loss, _ = train_step(net, batch, optimizer)
            losses.append(loss.item())
        if epoch in scored:
            curve.append(validation_miou(net, val, meter_args))
    return untrained, curve

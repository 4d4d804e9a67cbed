"""The cheap "learns nothing" guard of the authors' families whose engine training costs CPU-hours (VAT, ASNet;
issue 23): a few optimiser steps of the model's learner on real synthetic episodes, scored before and after by how
well the logits rank the query's foreground above its background (the per-episode ROC AUC of the foreground logit
margin). A model that learns nothing, or only the class prior ("background everywhere": a shift of every logit),
keeps its AUC; one that learns the task raises it.

The frozen backbone's taps are computed once (the backbone runs under no_grad in every family, so caching them
changes no gradient); the steps run the model's own masking mode, learner and objective.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor

import hmrepro
from hmrepro.data.benchmarks import get_benchmark, test_episodes
from hmrepro.data.dataset import EpisodeDataset
from hmrepro.data.episodes import training_episodes
from hmrepro.data.splits import SplitFolder
from hmrepro.engine.training.train import calibrate_batchnorm


def foreground_auc(logits: Tensor, query_mask: Tensor) -> float:
    """Mean over episodes of P(a foreground pixel's logit margin > a background pixel's) (ties count half)."""
    aucs = []
    for margin, truth in zip(logits[:, 1] - logits[:, 0], query_mask == 1, strict=True):
        fg, bg = margin[truth], margin[~truth]
        ranks = torch.cat([fg, bg]).double().argsort().argsort().double() + 1  # ties are measure-zero for floats
        aucs.append(float((ranks[: fg.numel()].sum() - fg.numel() * (fg.numel() + 1) / 2) / (fg.numel() * bg.numel())))
    return sum(aucs) / len(aucs)


def _batch(bench, root: Path, episodes, img_size: int, preprocess: str) -> dict[str, Tensor]:
    data = EpisodeDataset(bench, root, episodes, img_size=img_size, preprocess=preprocess)
    items = [data[i] for i in range(len(data))]
    return {
        "query_img": torch.stack([x["query_img"] for x in items]),
        "support_img": torch.stack([x["support_imgs"][0] for x in items]),
        "support_mask": torch.stack([x["support_masks"][0] for x in items]).float(),
        "query_mask": torch.stack([x["query_mask"] for x in items]).long(),
    }


def learner_fit(
    model: str,
    benchmark: str,
    root: Path,
    *,
    img_size: int,
    preprocess: str,
    steps: int,
    lr: float,
    train_episodes: int = 1,
    heldout_episodes: int = 1,
    logits: Callable | None = None,
    model_args: dict | None = None,
) -> dict[str, tuple[float, float]]:
    """{'train': (AUC before, AUC after), 'heldout': (before, after)}: ``steps`` Adam steps of ``model`` (random
    calibrated ResNet-50) on the first ``train_episodes`` episodes of the fold-0 training split, scored on them and on
    the first ``heldout_episodes`` validation episodes (the fold's other classes; 0: no 'heldout' key).
    ``logits(model, query_taps, support_taps, batch)`` gives the learner's logits at the image size (default:
    ``logits_from_taps(q, s, size)``); ``model_args`` go to :func:`hmrepro.create_model`."""
    torch.manual_seed(0)
    net = hmrepro.create_model(model, backbone="resnet50", pretrained=False, **(model_args or {}))
    bench, splits = get_benchmark(benchmark), SplitFolder(root / "splits")
    first = training_episodes(bench.pool(splits, "trn", 0), 1, 0, 0)[:train_episodes]
    train = _batch(bench, root, first, img_size, preprocess)
    batches = {"train": train}
    if heldout_episodes:
        val = test_episodes(benchmark, 0, 1, split="val", splits=splits)[:heldout_episodes]
        batches["heldout"] = _batch(bench, root, val, img_size, preprocess)
    images = [b[k] for b in batches.values() for k in ("query_img", "support_img")]
    calibrate_batchnorm(net.backbone, torch.cat(images))
    net.train()
    size = (img_size, img_size)

    def run(taps, batch):
        if logits is not None:
            return logits(net, *taps, batch)
        return net.logits_from_taps(*taps, size)

    taps = {
        name: (net.query_taps(b["query_img"]), net.support_taps(b["support_img"], b["support_mask"]))
        for name, b in batches.items()
    }

    def scores() -> dict[str, float]:
        net.eval()
        with torch.no_grad():
            out = {name: foreground_auc(run(taps[name], b), b["query_mask"]) for name, b in batches.items()}
        net.train()
        return out

    before = scores()
    optimizer = torch.optim.Adam([p for p in net.parameters() if p.requires_grad], lr=lr)
    for _ in range(steps):
        loss = net.compute_objective(run(taps["train"], train), {"query_mask": train["query_mask"]})
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    after = scores()
    return {name: (before[name], after[name]) for name in batches}

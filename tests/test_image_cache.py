"""The bounded cache of decoded, resized images: identical episodes and metrics with and without it, its byte bound."""

from __future__ import annotations

import pytest
import torch

from hmrepro.data.benchmarks import test_episodes as fold_episodes
from hmrepro.data.dataset import EpisodeDataset
from hmrepro.data.image_cache import ImageCache
from hmrepro.data.splits import SplitFolder


def _episodes(root, benchmark="pascal", shot=2, count=12):
    return fold_episodes(benchmark, 0, shot, split="test", splits=SplitFolder(root / "splits"))[:count]


def _assert_same_items(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key, value in a.items():
        if isinstance(value, torch.Tensor):
            assert value.dtype == b[key].dtype and torch.equal(value, b[key]), key
        else:
            assert value == b[key], key


@pytest.mark.parametrize("preprocess,original_size", [("hsnet", True), ("vat", False)])
def test_items_identical_with_and_without_the_cache(synthetic_root, preprocess, original_size):
    eps = _episodes(synthetic_root)
    plain = EpisodeDataset(
        "pascal", synthetic_root, eps, img_size=32, original_size=original_size, preprocess=preprocess
    )
    cached = EpisodeDataset(
        "pascal",
        synthetic_root,
        eps,
        img_size=32,
        original_size=original_size,
        preprocess=preprocess,
        image_cache_mib=64,
    )
    for _ in range(2):  # the second pass reads everything from the cache
        for i in range(len(eps)):
            item = cached[i]
            _assert_same_items(plain[i], item)
            item["query_img"].add_(1.0)  # a caller that writes into an item changes nothing kept
            item["support_imgs"].add_(1.0)
            item["query_mask"].add_(1.0)
    stats = cached.image_cache.stats()
    assert stats["hits"] >= len(eps) * 3 and stats["evictions"] == 0
    assert plain.image_cache.stats()["entries"] == 0  # off by default


def test_cache_is_bounded_by_bytes_and_evicts_least_recently_used():
    tensor = lambda: torch.zeros(256)  # noqa: E731  1 KiB
    cache = ImageCache(2560)  # room for two entries
    loads = []
    get = lambda key: cache.get(key, lambda: loads.append(key) or (tensor(), (1, 1)))  # noqa: E731
    get("a"), get("b"), get("a"), get("c")  # c evicts b, the least recently used
    assert "a" in cache and "c" in cache and "b" not in cache
    assert cache.bytes == 2048 <= cache.max_bytes and cache.evictions == 1
    get("b")
    assert loads == ["a", "b", "c", "b"] and cache.hits == 1 and cache.misses == 4
    assert cache.stats()["hit_rate"] == pytest.approx(1 / 5)
    big = ImageCache(100)  # an entry larger than the bound is returned, not kept
    assert big.get("x", lambda: (torch.zeros(256),))[0].numel() == 256 and len(big) == 0
    with pytest.raises(ValueError):
        ImageCache(-1)


def test_small_cache_evicts_and_stays_identical(synthetic_root):
    eps = _episodes(synthetic_root, count=8)
    plain = EpisodeDataset("pascal", synthetic_root, eps, img_size=32, preprocess="hsnet")
    entry = 3 * 32 * 32 * 4 + 32 * 32  # image fp32 + uint8 mask
    tiny = EpisodeDataset(
        "pascal", synthetic_root, eps, img_size=32, preprocess="hsnet", image_cache_mib=2.5 * entry / 2**20
    )
    for i in range(len(eps)):
        _assert_same_items(plain[i], tiny[i])
    assert tiny.image_cache.bytes <= tiny.image_cache.max_bytes and len(tiny.image_cache) == 2
    assert tiny.image_cache.evictions > 0


@pytest.mark.slow  # two evaluations
def test_evaluation_metrics_identical_with_and_without_the_cache(synthetic_root):
    from hmrepro.engine.evaluation.evaluate import EvalConfig, evaluate

    common = dict(
        weights="random",
        pretrained=False,
        backbone="resnet50",
        img_size=32,
        episodes=6,
        data_root=synthetic_root,
        splits=synthetic_root / "splits",
        results_dir=None,
        device="cpu",
    )
    off = evaluate(EvalConfig("hsnet-hm", "pascal", 0, 2, image_cache_mib=0, **common))[0]
    on = evaluate(EvalConfig("hsnet-hm", "pascal", 0, 2, image_cache_mib=16, **common))[0]
    assert (on["miou"], on["fb_iou"]) == (off["miou"], off["fb_iou"])
    assert on["image_cache_mib"] == 16 and off["image_cache_mib"] == 0
    assert on["image_cache"]["misses"] + on["image_cache"]["hits"] == 6 * 3 and off["image_cache"]["entries"] == 0


def test_bench_eval_records_the_cache_setting_and_its_counters(synthetic_root):
    from hmrepro.engine.benchmarking.bench_run import bench_eval
    from hmrepro.engine.evaluation.eval_config import EvalConfig

    config = EvalConfig(
        "hsnet",
        "pascal",
        0,
        1,
        "random",
        episodes=3,
        img_size=32,
        device="cpu",
        data_root=synthetic_root,
        splits=synthetic_root / "splits",
        results_dir=None,
        image_cache_mib=8,
    )
    record = bench_eval(config)
    assert record["image_cache_mib"] == 8 and record["image_cache"]["hits"] + record["image_cache"]["misses"] == 3 * 2
    assert record["image_cache"]["max_bytes"] == 8 * 2**20
    # the peak of the whole call is that of its larger phase: building + the first batch, or the batches after it
    phases = (record["peak_memory_first_batch_mib"], record["peak_memory_after_first_batch_mib"])
    assert record["peak_memory_mib"] == pytest.approx(max(phases), abs=0.1)

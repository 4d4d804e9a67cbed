"""Evaluation and training episodes: equal to the authors' fixtures, and to a literal re-statement of the
authors' sampling loop (global NumPy RNG, ``np.random.choice`` on the lists) for every fold and shot."""

import json
import re

import numpy as np
import pytest
from helpers import fixture_files, fixture_id, reference_path

from hmrepro.data.benchmarks import get_benchmark, test_episodes
from hmrepro.data.episodes import training_episodes
from hmrepro.data.splits import SplitFolder


@pytest.mark.parametrize("path", fixture_files("episodes_*.json"), ids=fixture_id)
def test_matches_authors_fixture(path):
    reference_path(path)
    proto, bench, fold, shot = re.match(r"episodes_(\w+)_(\w+)_fold(\d)_(\d+)shot", path.stem).groups()
    got = [e.to_json() for e in test_episodes(bench, int(fold), int(shot), protocol=proto)]
    assert got == json.loads(path.read_text())


# --- an independent, literal statement of the authors' samplers -------------------------------------------------


def _literal_pascal(fold, shot, reseed):
    lines = SplitFolder().path(f"pascal/val_fold{fold}.txt").read_text().split("\n")[:-1]
    meta = [[l.split("__")[0], int(l.split("__")[1]) - 1] for l in lines]
    classwise = {c: [] for c in range(20)}
    for name, c in meta:
        classwise[c] += [name]
    np.random.seed(0)
    out = []
    for idx in range(1000):
        if reseed:
            np.random.seed(idx)
        query, c = meta[idx % len(meta)]
        sup = []
        while True:
            s = np.random.choice(classwise[c], 1, replace=False)[0]
            if s != query:
                sup.append(str(s))
            if len(sup) == shot:
                break
        out.append([query, sup, c])
    return out


def _literal_coco(fold, shot, reseed):
    data = json.loads(SplitFolder().path(f"coco/val_fold{fold}.json").read_text())
    d = data["image_dir"]
    classwise = {int(c): [f"{d}/COCO_{d}_{i:012d}.jpg" for i in ids] for c, ids in data["classes"].items()}
    class_ids = [fold + 4 * v for v in range(20)]
    np.random.seed(0)
    out = []
    for idx in range(1000):
        if reseed:
            np.random.seed(idx)
        c = np.random.choice(class_ids, 1, replace=False)[0]
        query = np.random.choice(classwise[c], 1, replace=False)[0]
        sup = []
        while True:
            s = np.random.choice(classwise[c], 1, replace=False)[0]
            if query != s:
                sup.append(str(s))
            if len(sup) == shot:
                break
        out.append([str(query), sup, int(c)])
    return out


def _literal_fss(shot):
    cats = sorted(SplitFolder().path("fss/test.txt").read_text().split("\n")[:-1])
    meta = []
    for cat in cats:
        for p in sorted(f"{cat}/{n}.{ext}" for n in range(1, 11) for ext in ("jpg", "png")):
            if p.split(".")[1] == "jpg":
                meta.append(p)
    np.random.seed(0)
    out = []
    for query in meta:
        c = cats.index(query.split("/")[-2]) + 760
        sup = []
        while True:
            s = np.random.choice(range(1, 11), 1, replace=False)[0]
            s = f"{query.rsplit('/', 1)[0]}/{s}.jpg"
            if query != s:
                sup.append(s)
            if len(sup) == shot:
                break
        out.append([query, sup, c])
    return out


@pytest.mark.parametrize("shot", [1, pytest.param(5, marks=pytest.mark.slow)])  # 5-shot: full suite (FSS: fast)
@pytest.mark.parametrize(
    "fold", [0, *(pytest.param(f, marks=pytest.mark.slow) for f in (1, 2, 3))]
)  # folds 1-3: full suite
@pytest.mark.parametrize(
    "benchmark,protocol", [("pascal", "hsnet"), ("pascal", "asnet"), ("coco", "hsnet"), ("coco", "asnet")]
)
def test_every_fold_and_shot_matches_literal_sampler(benchmark, protocol, fold, shot):
    reseed = protocol == "asnet"
    expected = _literal_pascal(fold, shot, reseed) if benchmark == "pascal" else _literal_coco(fold, shot, reseed)
    got = [e.to_json() for e in test_episodes(benchmark, fold, shot, protocol=protocol)]
    assert got == expected


@pytest.mark.parametrize("shot", [1, 5])
def test_fss_matches_literal_sampler_and_ignores_fold(shot):
    expected = _literal_fss(shot)
    assert len(expected) == 2400
    for fold in (0, 3):
        assert [e.to_json() for e in test_episodes("fss", fold, shot)] == expected


def test_asnet_kshot_first_support_is_the_one_shot_support():
    one = test_episodes("pascal", 1, 1, protocol="asnet")
    five = test_episodes("pascal", 1, 5, protocol="asnet")
    assert all(a.supports[0] == b.supports[0] for a, b in zip(one, five))


def test_episode_invariants():
    for bench in ("pascal", "coco"):
        b = get_benchmark(bench)
        for fold in range(4):
            classes = set(b.class_ids(fold, "test"))
            for e in test_episodes(bench, fold, 5):
                assert e.class_id in classes
                assert e.query not in e.supports
                assert len(e.supports) == 5


def test_fss_validation_split_uses_val_classes():
    eps = test_episodes("fss", 0, 1, split="val")
    assert len(eps) == 2400 and {e.class_id for e in eps} == set(range(520, 760))


def test_asnet_has_no_fss_protocol():
    with pytest.raises(ValueError, match="FSS"):
        test_episodes("fss", 0, 1, protocol="asnet")


def test_training_episodes_pascal_each_entry_once_reproducible():
    pool = get_benchmark("pascal").pool(SplitFolder(), "trn", 0)
    a = training_episodes(pool, 1, seed=3, epoch=0)
    assert training_episodes(pool, 1, seed=3, epoch=0) == a
    assert training_episodes(pool, 1, seed=3, epoch=1) != a
    assert sorted((e.query, e.class_id) for e in a) == sorted(pool.queries)
    assert [(e.query, e.class_id) for e in a] != pool.queries  # shuffled
    assert all(e.class_id not in range(0, 5) for e in a)  # fold 0's test classes never train
    assert all(e.query not in e.supports for e in a)


@pytest.mark.slow  # draws COCO training episodes for every class
def test_training_episodes_coco_class_uniform():
    pool = get_benchmark("coco").pool(SplitFolder(), "trn", 1)
    eps = training_episodes(pool, 1, seed=0, epoch=0)
    assert len(eps) == len(pool) == len(set(pool.queries))
    counts = np.bincount([e.class_id for e in eps], minlength=80)
    train_classes = [c for c in range(80) if c % 4 != 1]
    assert counts[[c for c in range(80) if c % 4 == 1]].sum() == 0
    expected = len(eps) / 60
    assert counts[train_classes].min() > 0.8 * expected and counts[train_classes].max() < 1.2 * expected

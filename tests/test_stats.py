"""Is the difference real? Per-episode results, bootstrap intervals, paired tests, the small-object test, and the
tables' intervals, seeds and gain lines — on hand-made per-episode data whose answers are known, and on one tiny
real evaluation of the synthetic benchmark."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from hmrepro.cli.app import app, run
from hmrepro.engine.evaluation.per_episode import EPISODE_COLUMNS, miou_from_columns
from hmrepro.engine.records import default_img_size, protocol_deviations, read_episodes, write_record
from hmrepro.errors import HmreproError
from hmrepro.reporting import TableQuery, compare_table, render
from hmrepro.reporting.paired import check_sets_paired, load_set
from hmrepro.reporting.stats import Fold, bin_edges, binned_comparison, bootstrap_value, compare, compare_means

runner = CliRunner()
CLASSES = list(range(5))


def episodes(n: int = 200, seed: int = 0, classes=CLASSES, skill: float = 0.5) -> dict:
    """Hand-made per-episode columns: ``skill`` of each episode's foreground union is intersected."""
    rng = np.random.default_rng(seed)
    fg_union = rng.integers(200, 4000, n)
    fg_inter = np.floor(fg_union * np.clip(skill + rng.normal(0, 0.2, n), 0, 1)).astype(np.int64)
    return {
        "episode": np.arange(n),
        "class_id": np.asarray(classes)[np.arange(n) % len(classes)],
        "fg_inter": fg_inter,
        "fg_union": fg_union,
        "bg_inter": 10_000 - fg_union,
        "bg_union": 10_000 - fg_inter,
        "query_fg_fraction": rng.uniform(0.01, 0.6, n),
        "support_fg_fraction": rng.uniform(0.01, 0.6, n),
    }


def improved(table: dict, pixels: int = 40) -> dict:
    """The same episodes, ``pixels`` more foreground intersection on every one (capped by the union)."""
    better = dict(table)
    better["fg_inter"] = np.minimum(table["fg_inter"] + pixels, table["fg_union"])
    better["bg_union"] = 10_000 - better["fg_inter"]
    return better


def record(tmp, model: str, table: dict, *, fold: int = 0, benchmark: str = "coco", shot: int = 1, **extra) -> str:
    """A full-protocol own record of ``model`` with ``table`` as its per-episode results, written to ``tmp``."""
    class_ids = sorted({int(c) for c in table["class_id"]})
    miou, fb_iou = miou_from_columns(table, class_ids)
    fields = {
        "model": model,
        "masking": "hm" if model.endswith("-hm") else "fm",
        "backbone": "resnet50",
        "benchmark": benchmark,
        "fold": fold,
        "shot": shot,
        "miou": miou,
        "fb_iou": fb_iou,
        "episodes": len(table["episode"]),
        "protocol": "hsnet",
        "img_size": default_img_size(model, benchmark),
        "original_size": False,
        "checkpoint_sha256": "0" * 64,
        "origin": "own",
        "git_commit": None,
        "versions": {},
        "device": "cpu",
        "date": f"2026-01-0{fold + 1}T00:00:00+00:00",
        "secs_per_episode": 0.1,
        "precision": "fp32",
        "full_episode_set": True,
        "total_episodes": len(table["episode"]),
        "default_img_size": default_img_size(model, benchmark),
        "eval_class_ids": class_ids,
        "episodes_sha256": f"eps-{benchmark}-{fold}-{shot}",
        "episode_seed": 0,
        "per_episode": table,
        **extra,
    }
    return str(write_record(fields, tmp))


# ---------------------------------------------------------------- the statistics, on known answers


def test_identical_records_differ_by_zero_with_a_narrow_interval_and_p_one():
    table = episodes()
    result = compare([Fold(table, CLASSES)], [Fold(table, CLASSES)], resamples=500)
    assert result.delta_miou == 0 and result.delta_fb_iou == 0
    assert result.ci95 == (0.0, 0.0) and result.p_value == 1.0


def test_better_on_every_episode_gives_an_interval_above_zero():
    base = episodes()
    result = compare([Fold(base, CLASSES)], [Fold(improved(base), CLASSES)], resamples=1000)
    assert 0 < result.ci95[0] <= result.delta_miou <= result.ci95[1]
    assert result.p_value < 0.01 and result.delta_fb_iou > 0
    worse = compare([Fold(improved(base), CLASSES)], [Fold(base, CLASSES)], resamples=1000)
    assert worse.ci95[1] < 0 and worse.delta_miou == pytest.approx(-result.delta_miou)


def test_a_noisy_difference_of_zero_mean_is_not_called_real():
    base = episodes(seed=1)
    rng = np.random.default_rng(2)
    other = dict(base)  # half the episodes better, half worse by the same amount: no systematic gain
    shift = np.where(rng.permutation(len(base["episode"])) % 2 == 0, 100, -100)
    other["fg_inter"] = np.clip(base["fg_inter"] + shift, 0, base["fg_union"])
    result = compare([Fold(base, CLASSES)], [Fold(other, CLASSES)], resamples=2000)
    assert result.ci95[0] < 0 < result.ci95[1] and result.p_value > 0.05


def test_bootstrap_is_reproducible_under_its_seed_and_matches_the_metric():
    table = episodes(seed=3)
    first = bootstrap_value([Fold(table, CLASSES)], resamples=300, seed=7)
    again = bootstrap_value([Fold(table, CLASSES)], resamples=300, seed=7)
    other = bootstrap_value([Fold(table, CLASSES)], resamples=300, seed=8)
    assert first == again and first != other
    miou, fb_iou = miou_from_columns(table, CLASSES)
    assert first[0].value == pytest.approx(miou) and first[1].value == pytest.approx(fb_iou)
    assert first[0].low < miou < first[0].high


def test_folds_are_resampled_on_their_own_and_averaged():
    folds_a = [
        Fold(episodes(seed=s, classes=[5 * s + c for c in CLASSES]), [5 * s + c for c in CLASSES]) for s in range(4)
    ]
    folds_b = [Fold(improved(f.table), f.class_ids) for f in folds_a]
    result = compare(folds_a, folds_b, resamples=300)
    per_fold = [compare([a], [b], resamples=300).delta_miou for a, b in zip(folds_a, folds_b)]
    assert result.delta_miou == pytest.approx(np.mean(per_fold)) and result.folds == 4 and result.episodes == 800
    with pytest.raises(ValueError, match="episodes"):
        compare([folds_a[0]], [Fold({k: v[:100] for k, v in folds_b[0].table.items()}, CLASSES)], resamples=100)


def test_a_class_without_episodes_counts_zero_as_in_the_metric():
    table = episodes(classes=[0, 1, 2])
    value = bootstrap_value([Fold(table, [0, 1, 2, 3])], resamples=100)[0].value
    assert value == pytest.approx(miou_from_columns(table, [0, 1, 2, 3])[0])
    assert value == pytest.approx(miou_from_columns(table, [0, 1, 2])[0] * 3 / 4)


def test_bins_split_the_episodes_and_find_a_gain_only_on_small_objects():
    base = episodes(n=400, seed=4)
    small = base["query_fg_fraction"] < 0.2
    better = dict(base)
    better["fg_inter"] = np.where(small, np.minimum(base["fg_inter"] + 300, base["fg_union"]), base["fg_inter"])
    edges = bin_edges(base["query_fg_fraction"], edges=[0, 0.2, 1])
    bins = binned_comparison(
        [Fold(base, CLASSES), Fold(better, CLASSES)], base["query_fg_fraction"], edges, resamples=500
    )
    assert [b.episodes for b in bins] == [int(small.sum()), int((~small).sum())]
    assert bins[0].deltas[0].ci95[0] > 0 and bins[1].deltas[0].delta_miou == 0
    assert len(bin_edges(base["query_fg_fraction"], bins=4)) == 5


# ---------------------------------------------------------------- records, compare and analyze sizes


def test_read_episodes_gives_exactly_the_columns_and_unpaired_records_are_refused(tmp_path, capsys):
    base = episodes()
    path = record(tmp_path / "a", "hsnet", base)
    frame = read_episodes(path)
    assert list(frame.columns) == list(EPISODE_COLUMNS) and len(frame) == 200
    assert (frame["fg_inter"].to_numpy() == base["fg_inter"]).all()
    other = record(tmp_path / "b", "hsnet-hm", episodes(seed=9), episodes_sha256="another draw", episode_seed=2)
    with pytest.raises(HmreproError, match="not paired: fold 0 .* different episode lists .*episode seed 0 vs 2"):
        check_sets_paired(load_set(path), load_set(other))
    assert run(["compare", path, other]) == 1
    error = capsys.readouterr().err
    assert "not paired" in error and "Traceback" not in error and len(error.strip().splitlines()) == 1
    legacy = tmp_path / "legacy.json"
    legacy.write_text(json.dumps({"model": "hsnet", "benchmark": "coco", "miou": 1.0}))
    with pytest.raises(HmreproError, match="no per-episode results .* evaluate again"):
        load_set(legacy)


def test_compare_and_analyze_sizes_cli(tmp_path):
    base = episodes(n=300)
    a, b = record(tmp_path / "fm", "hsnet", base), record(tmp_path / "hm", "hsnet-hm", improved(base))
    result = runner.invoke(app, ["compare", a, str(tmp_path / "hm"), "--json", "--resamples", "500"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert {"delta_miou", "ci95", "p_value", "episodes", "resamples"} <= set(data)
    assert data["ci95"][0] > 0 and data["episodes"] == 300 and data["resamples"] == 500
    figure = tmp_path / "sizes.png"
    result = runner.invoke(
        app, ["analyze", "sizes", a, b, "--bins", "3", "--resamples", "200", "-o", str(figure), "--json"]
    )
    assert result.exit_code == 0, result.output
    bins = json.loads(result.stdout)["bins"]
    assert len(bins) == 3 and sum(x["episodes"] for x in bins) == 300
    assert all(x["delta_vs_first"][0]["delta_miou"] > 0 for x in bins)
    assert figure.stat().st_size > 10_000 and figure.read_bytes()[:4] == b"\x89PNG"


def test_a_folder_or_file_named_like_a_pattern_is_taken_as_named(tmp_path):
    """``runs/[ablation]/`` is a folder, not the glob class ``[ablation]``: compare reads it; a pattern that names no
    existing path is still a pattern."""
    base = episodes(n=100)
    fm = record(tmp_path / "[fm]", "hsnet", base)
    hm_folder = tmp_path / "hm [v2]"
    record(hm_folder, "hsnet-hm", improved(base))
    assert [x.path for x in load_set(tmp_path / "[fm]")] == [fm]
    assert [x.record["model"] for x in load_set(hm_folder)] == ["hsnet-hm"]
    assert [x.path for x in load_set(fm)] == [fm]
    assert [x.record["model"] for x in load_set(tmp_path / "h[m]*" / "*.json")] == ["hsnet-hm"]  # still a pattern
    result = runner.invoke(app, ["compare", str(tmp_path / "[fm]"), str(hm_folder), "--json", "--resamples", "200"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["episodes"] == 100


def test_mIoU_from_the_columns_equals_the_record_on_a_real_evaluation(synthetic_root, tmp_path):
    from hmrepro.engine.evaluation.evaluate import EvalConfig, evaluate

    common = dict(data_root=synthetic_root, splits=synthetic_root / "splits", results_dir=tmp_path)
    rec = evaluate(
        EvalConfig(
            "hsnet",
            "pascal",
            0,
            2,
            weights="random",
            pretrained=False,
            img_size=32,
            episodes=4,
            original_size=True,
            device="cpu",
            **common,
        )
    )[0]  # (PASCAL-like: 255 boundaries ignored; scored at each query's original size)
    frame = read_episodes(rec["path"])
    assert frame["episode"].tolist() == list(range(4)) and "per_episode" not in rec
    assert ((frame["query_fg_fraction"] > 0) & (frame["query_fg_fraction"] < 1)).all()
    miou, fb_iou = miou_from_columns({c: frame[c].to_numpy() for c in frame}, rec["eval_class_ids"])
    assert miou == pytest.approx(rec["miou"], abs=1e-9) and fb_iou == pytest.approx(rec["fb_iou"], abs=1e-9)
    assert rec["episode_seed"] == 0 and len(rec["episodes_sha256"]) == 64


# ---------------------------------------------------------------- episode draws and training seeds


def test_another_episode_draw_is_recorded_and_fills_no_cell():
    from hmrepro.data.episodes import EpisodePool, evaluation_episodes

    pool = EpisodePool.from_queries("pascal", [(f"img{i}", i % 3) for i in range(30)], [0, 1, 2])
    for protocol in ("hsnet", "asnet"):
        own = evaluation_episodes(pool, 1, 20, protocol=protocol)
        assert evaluation_episodes(pool, 1, 20, protocol=protocol, seed=0) == own
        assert evaluation_episodes(pool, 1, 20, protocol=protocol, seed=3) != own
    full = {
        "full_episode_set": True,
        "precision": "fp32",
        "img_size": 400,
        "default_img_size": 400,
        "model": "hsnet",
        "benchmark": "coco",
    }
    assert protocol_deviations(full) == [] and protocol_deviations({**full, "episode_seed": 3}) == ["episode seed 3"]


# ---------------------------------------------------------------- tables: intervals, seeds, gain lines


def test_table_2_shows_intervals_seeds_and_gain_lines_in_every_format(tmp_path):
    results = tmp_path / "results"
    for fold in range(4):
        classes = [20 * fold + c for c in CLASSES]
        base = episodes(n=120, seed=fold, classes=classes)
        record(results, "hsnet", base, fold=fold, train_seed=0)
        record(results, "hsnet-hm", improved(base, pixels=60), fold=fold, train_seed=0)
        record(results, "vat", base, fold=fold, train_seed=0)  # VAT baseline: a second seed, slightly better
        record(results, "vat", improved(base, pixels=20), fold=fold, train_seed=1)
    frame = compare_table(TableQuery(2, results_dir=results), ci=True)
    hm = frame[(frame["method"] == "HSNet-HM") & (frame["backbone"] == "resnet50") & (frame["shot"] == 1)].iloc[0]
    hsnet = frame[(frame["method"] == "HSNet") & (frame["backbone"] == "resnet50") & (frame["shot"] == 1)].iloc[0]
    vat = frame[(frame["method"] == "VAT") & (frame["shot"] == 1)].iloc[0]
    assert hm["gain_baseline"] == "HSNet" and hm["gain_claimed_miou"] == pytest.approx(44.3 - 39.2)
    assert hm["gain_miou"] == pytest.approx(hm["reproduced_miou"] - hsnet["reproduced_miou"]) and hm["gain_miou"] > 0
    assert 0 < hm["gain_miou_low"] < hm["gain_miou"] < hm["gain_miou_high"]
    assert hm["gain_inside"] == (hm["gain_miou_low"] <= 44.3 - 39.2 <= hm["gain_miou_high"])
    assert hsnet["reproduced_miou_low"] < hsnet["reproduced_miou"] < hsnet["reproduced_miou_high"]
    assert hsnet["reproduced_fb_iou_low"] < hsnet["reproduced_fb_iou"] < hsnet["reproduced_fb_iou_high"]
    assert vat["reproduced_miou_seeds"] == 2 and vat["reproduced_miou_sd"] > 0
    for fmt in ("rich", "markdown", "latex"):
        text = render(frame, 2, fmt, compare=True)
        assert "gain over HSNet" in text and f"{hm['gain_miou']:+.1f} [{hm['gain_miou_low']:+.1f}" in text, fmt
        assert "(2 seeds)" in text and f"[{hsnet['reproduced_miou_low']:.1f}," in text
    csv = render(frame, 2, "csv", compare=True)
    assert "gain_miou_low" in csv.splitlines()[0] and "HSNet" in csv
    result = runner.invoke(
        app, ["table", "2", "--compare-claimed", "--ci", "--results", str(results), "--format", "markdown"]
    )
    assert result.exit_code == 0 and "gain over HSNet" in result.stdout and "claimed gain" in result.stdout


def test_a_gain_over_a_mean_of_seeds_takes_its_interval_from_every_seed(tmp_path):
    """The gain line's interval comes from the records the cells show: here the VAT cells average two seeds, the
    newer of which alone would put the interval far below the gain shown."""
    results = tmp_path / "results"
    for fold in range(4):
        classes = [20 * fold + c for c in CLASSES]
        base = episodes(n=120, seed=fold, classes=classes)
        date = f"2026-01-0{fold + 1}T00:00:00+00:00"
        record(results, "vat-hm", improved(base, pixels=100), fold=fold, train_seed=0)
        record(results, "vat", base, fold=fold, train_seed=0)
        record(results, "vat", improved(base, pixels=200), fold=fold, train_seed=1, date=date.replace("T00", "T01"))
    frame = compare_table(TableQuery(2, results_dir=results), ci=True)
    hm = frame[(frame["method"] == "VAT-HM") & (frame["shot"] == 1)].iloc[0]
    vat = frame[(frame["method"] == "VAT") & (frame["shot"] == 1)].iloc[0]
    assert vat["reproduced_miou_seeds"] == 2 and hm["gain_baseline"] == "VAT"
    assert hm["gain_miou"] == pytest.approx(hm["reproduced_miou"] - vat["reproduced_miou"])
    assert hm["gain_miou_low"] < hm["gain_miou"] < hm["gain_miou_high"]
    newest_only = compare(
        [
            Fold(
                improved(episodes(n=120, seed=f, classes=[20 * f + c for c in CLASSES]), 200),
                [20 * f + c for c in CLASSES],
            )
            for f in range(4)
        ],
        [
            Fold(
                improved(episodes(n=120, seed=f, classes=[20 * f + c for c in CLASSES]), 100),
                [20 * f + c for c in CLASSES],
            )
            for f in range(4)
        ],
        resamples=500,
    )
    assert newest_only.ci95[1] < hm["gain_miou_low"]  # what the line showed before: the newest seed's interval


def test_compare_means_of_one_run_a_side_and_of_repeated_runs():
    a, b = Fold(episodes(seed=5), CLASSES), Fold(improved(episodes(seed=5), 50), CLASSES)
    one = compare_means([[a]], [[b]], resamples=400)
    assert one.value == pytest.approx(compare([a], [b], resamples=400).delta_miou) and one.low < one.value < one.high
    assert compare_means([[a], [a]], [[b]], resamples=400) == one  # the mean of identical runs is that run
    c = Fold(improved(episodes(seed=5), 150), CLASSES)
    two = compare_means([[a]], [[b], [c]], resamples=400)
    assert two.value == pytest.approx((one.value + compare_means([[a]], [[c]], resamples=400).value) / 2)
    with pytest.raises(ValueError, match="differ"):
        compare_means([[a]], [[Fold(episodes(seed=5, classes=[7, 8, 9, 10, 11]), [7, 8, 9, 10, 11])]], resamples=10)

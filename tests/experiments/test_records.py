import csv
import json

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from experiments import records  # noqa: E402


def test_csv_json_and_figure_round_trip(tmp_path):
    rows = [{"step": 1, "loss": 0.5}, {"step": 2, "loss": 0.25}]
    records.write_csv(tmp_path / "metrics.csv", rows)
    with open(tmp_path / "metrics.csv") as f:
        assert list(csv.DictReader(f)) == [{"step": "1", "loss": "0.5"},
                                           {"step": "2", "loss": "0.25"}]
    records.write_json(tmp_path / "summary.json", {"x": np.float32(1.5), "n": np.int64(2)})
    assert json.loads((tmp_path / "summary.json").read_text()) == {"x": 1.5, "n": 2}
    fig, ax = plt.subplots()
    ax.plot([0, 1])
    records.save_figure(fig, tmp_path / "plot.png")
    assert (tmp_path / "plot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.csv", "plot.png",
                                                          "summary.json"]


def test_tensorboard_log_writes_one_run_per_key_with_every_numeric_column(
        tmp_path, read_tensorboard):
    from experiments.records import TensorBoardLog

    log = TensorBoardLog(tmp_path / "tb", ("method", "seed"), "epoch")
    for seed in (0, 1):
        for epoch in (1, 2):
            log.add({"method": "pgd", "seed": seed, "epoch": epoch, "loss": 1.0 / epoch + seed,
                     "collapsed": False, "note": "text", "missing": None})
    log.close()
    runs = read_tensorboard(tmp_path / "tb")
    assert set(runs) == {"method_pgd/seed_0", "method_pgd/seed_1"}
    for seed in (0, 1):
        assert runs[f"method_pgd/seed_{seed}"] == {"loss": [(1, 1.0 + seed), (2, 0.5 + seed)]}
    assert log.seconds > 0


def test_summary_helpers_group_and_spread_over_seeds(tmp_path):
    rows = [{"seed": s, "method": m, "step": t, "loss": s + t}
            for s in (3, 1) for m in ("a", "b") for t in (1, 2)]
    runs = records.runs_by_seed(rows, method="b")
    assert list(runs) == [3, 1] and [r["step"] for r in runs[1]] == [1, 2]
    assert records.over_seeds({3: 1.0, 1: 4.0}) == {
        "mean": 2.5, "min": 1.0, "max": 4.0, "per_seed": {"3": 1.0, "1": 4.0}}
    assert records.over_seeds([1.0, 2.0, 9.0], "median") == {
        "median": 2.0, "min": 1.0, "max": 9.0, "per_seed": [1.0, 2.0, 9.0]}
    summary = records.write_results(tmp_path, rows, {"x": 1})
    assert summary == {"x": 1} and json.loads((tmp_path / "summary.json").read_text()) == summary
    fig, ax = records.subplots()
    records.band(ax, [1, 2], [[1.0, 2.0], [3.0, 6.0]], "C0", "mean")
    assert list(ax.lines[0].get_ydata()) == [2.0, 4.0]
    records.save_figure(fig, tmp_path / "band.png")


def test_bootstrap_interval_of_the_mean_matches_the_normal_theory_interval():
    """For 200 normal draws the percentile bootstrap of the mean is close to mean +- 1.96 s /
    sqrt(n) (the textbook interval), is repeatable, and shrinks to a point for constants."""
    values = np.random.default_rng(3).normal(10.0, 2.0, 200)
    lo, hi = records.bootstrap_interval(values)
    half = 1.96 * values.std(ddof=1) / np.sqrt(values.size)
    assert abs(lo - (values.mean() - half)) < 0.1 * half
    assert abs(hi - (values.mean() + half)) < 0.1 * half
    assert records.bootstrap_interval(values) == (lo, hi)
    assert records.bootstrap_interval([500.0] * 10) == (500.0, 500.0)
    summary = records.with_interval([1, 2, 3, 10])
    assert summary["mean"] == 4.0 and summary["median"] == 2.5
    assert summary["ci95"][0] < 4.0 < summary["ci95"][1] and summary["per_seed"] == [1, 2, 3, 10]

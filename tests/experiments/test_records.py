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

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

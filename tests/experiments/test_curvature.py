"""Smoke test of the edge-of-stability experiment: a --quick run end to end, plus its config."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import csv  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import re  # noqa: E402

import keras  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

from experiments import curvature  # noqa: E402

COLUMNS = ["seed", "learning_rate", "step", "loss", "sharpness", "two_over_eta",
           "loss_rises_so_far", "wall_seconds"]


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("curvature")
    return out, curvature.main(["--quick", "--out", str(out)])


def test_quick_run_writes_every_output(quick_run):
    out, _ = quick_run
    for name in ("config.json", "metrics.csv", "summary.json", "sharpness.png"):
        assert (out / name).stat().st_size > 0, name
    assert (out / "sharpness.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(out.glob(".*tmp*")), "atomic writes left temporary files behind"

    saved = json.loads((out / "config.json").read_text())
    assert saved["config"]["quick"] is True
    assert saved["config"]["steps"] == curvature.QUICK_STEPS  # the resolved config is saved
    assert saved["versions"]["tensorflow"] == tf.__version__


def test_quick_run_metrics(quick_run):
    out, _ = quick_run
    config = curvature.Config(quick=True).resolved()
    with open(out / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == COLUMNS
    measured_steps = config.steps // config.measure_every + 1
    assert len(rows) == len(config.seeds) * len(config.learning_rates) * measured_steps
    for row in rows:
        sharpness, loss = float(row["sharpness"]), float(row["loss"])
        assert math.isfinite(sharpness) and sharpness > 0, row
        assert math.isfinite(loss) and loss > 0, row
        assert float(row["two_over_eta"]) == pytest.approx(2 / float(row["learning_rate"]))

    runs = {}
    for row in rows:
        runs.setdefault((int(row["seed"]), float(row["learning_rate"])), []).append(row)
    assert set(runs) == {(s, lr) for s in config.seeds for lr in config.learning_rates}
    for (seed, lr), run in runs.items():
        assert [int(r["step"]) for r in run] == list(range(0, config.steps + 1,
                                                           config.measure_every))
        assert float(run[-1]["loss"]) < float(run[0]["loss"]), (seed, lr)  # GD trains
        # Every learning rate starts from the seed's own data and weights.
        first = runs[(seed, config.learning_rates[0])][0]
        assert (run[0]["loss"], run[0]["sharpness"]) == (first["loss"], first["sharpness"])
    initial_losses = {runs[(s, config.learning_rates[0])][0]["loss"] for s in config.seeds}
    assert len(initial_losses) == len(config.seeds)  # seeds differ


def test_quick_run_summary(quick_run):
    out, returned = quick_run
    summary = json.loads((out / "summary.json").read_text())
    assert summary == json.loads(json.dumps(returned))
    assert isinstance(summary["edge_of_stability_at_every_learning_rate"], bool)
    config = curvature.Config()
    assert [float(k) for k in summary["per_learning_rate"]] == list(config.learning_rates)
    for entry in summary["per_learning_rate"].values():
        assert entry["two_over_eta"] == pytest.approx(2 / entry["learning_rate"])
        assert 0 < entry["initial_sharpness_median"] <= entry["max_sharpness_median"]
        assert math.isfinite(entry["tail_sharpness_over_two_over_eta_median"])
        assert entry["statement"].startswith(f"eta={entry['learning_rate']}")


def test_measure_traces_once_across_data_and_weights():
    config = curvature.Config(examples=16, width=8, depth=1, power_iters=3, trace_samples=2)
    model = curvature.build_mlp(config)
    signature = (tf.TensorSpec([16, config.input_dim]), tf.TensorSpec([16, config.output_dim]))
    measure = curvature.make_measure(model, keras.losses.MeanSquaredError(), config, signature)
    weights = model.get_weights()
    for seed in (0, 1):
        x = tf.random.stateless_normal([16, config.input_dim], seed=[seed, 0])
        y = tf.random.stateless_normal([16, config.output_dim], seed=[seed, 1])
        model.set_weights(weights)
        values = measure(x, y)
        assert set(values) == {"loss", "sharpness", "hessian_trace"}
    assert measure.experimental_get_tracing_count() == 1


def test_bad_flag_is_a_usage_error_naming_it(tmp_path, read_error):
    with pytest.raises(SystemExit) as exit_info:
        curvature.main(["--quick", "--out", str(tmp_path), "--learning-rates", "0.1", "-0.1"])
    assert exit_info.value.code == 2
    error = read_error()
    assert "learning_rates[1] must be > 0" in error and "-0.1" in error
    assert not any(tmp_path.iterdir()), "nothing is written for an invalid config"


@pytest.mark.parametrize("field, value, message", [
    ("learning_rates", (-0.1,), "learning_rates[0] must be > 0"),
    ("learning_rates", (), "learning_rates must be one or more distinct values"),
    ("seeds", (0, 0), "seeds must be one or more distinct non-negative integers"),
    ("steps", 0, "steps must be an integer >= 1"),
    ("measure_every", 5000, "measure_every must be in [1, 3000]"),
    ("trace_samples", -1, "trace_samples must be an integer >= 0"),
    ("tail_fraction", 0.0, "tail_fraction must be in (0.0, 1.0]"),
    ("tolerance", 1.5, "tolerance must be in (0.0, 1.0)"),
])
def test_config_rejects_out_of_range_values(field, value, message):
    with pytest.raises(ValueError, match=re.escape(message) + f".*Received: {field}") as error:
        curvature.Config(**{field: value})
    assert message in str(error.value)


def test_quick_run_writes_tensorboard_runs_matching_the_metrics(quick_run, tensorboard_holds):
    out, _ = quick_run
    tensorboard_holds(out / "tensorboard", out / "metrics.csv", ("learning_rate", "seed"),
                      "step", ("sharpness",))

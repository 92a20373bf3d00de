"""The straight-through experiment: a --quick run end to end, the learning claim (the STE
network learns; with the true gradient only the readout does), saving, and the config."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import csv
import json
import re

import keras
import numpy as np
import pytest
import tensorflow as tf

from experiments import straight_through as experiment
from lab import activations

COLUMNS = ["seed", "method", "epoch", "train_loss", "test_accuracy", "seconds"]


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("straight_through") / "out"
    summary = experiment.main(["--quick", "--out", str(out)])
    return out, summary


def test_quick_run_writes_every_file(quick_run):
    out, summary = quick_run
    assert sorted(p.name for p in out.iterdir()) == [
        "accuracy.png", "config.json", "metrics.csv", "models", "run.json", "summary.json",
        "tensorboard"]
    assert sorted(p.name for p in (out / "models").iterdir()) == [
        "ste_round_seed0.keras", "ste_sign_seed0.keras"]
    for path in out.rglob("*"):
        assert path.is_dir() or path.stat().st_size > 0, path
    assert (out / "accuracy.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(out.rglob(".*tmp*")), "atomic writes left temporary files behind"
    assert not (out.parent / "out.partial").exists()

    saved = json.loads((out / "config.json").read_text())
    assert saved["config"]["quick"] is True  # the resolved config is saved
    assert saved["config"]["epochs"] == experiment.QUICK_EPOCHS
    assert saved["config"]["seeds"] == [0, 1]
    assert saved["config"]["train_examples"] == experiment.QUICK_TRAIN_EXAMPLES
    assert (saved["data_source"], saved["train_examples"], saved["test_examples"]) == (
        "sample", 2000, 2000)
    assert saved["versions"]["tensorflow"] == tf.__version__
    assert json.loads((out / "summary.json").read_text()) == json.loads(json.dumps(summary))


def test_quick_run_metrics(quick_run):
    out, _ = quick_run
    with open(out / "metrics.csv", newline="") as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames == COLUMNS
        rows = list(reader)
    epochs = range(experiment.QUICK_EPOCHS + 1)
    assert [(int(r["seed"]), r["method"], int(r["epoch"])) for r in rows] == [
        (seed, method, epoch) for seed in (0, 1) for method in experiment.METHODS
        for epoch in epochs]
    initial = {(int(r["seed"]), r["method"]): r for r in rows if r["epoch"] == "0"}
    for seed in (0, 1):
        # Same initial weights and the same forward pass: the same network at epoch 0.
        for ste, true in (("ste_sign", "true_sign"), ("ste_round", "true_round")):
            assert initial[seed, ste]["train_loss"] == initial[seed, true]["train_loss"]
            assert initial[seed, ste]["test_accuracy"] == initial[seed, true]["test_accuracy"]
    assert initial[0, "ste_sign"]["train_loss"] != initial[1, "ste_sign"]["train_loss"]


def test_quick_run_summary(quick_run):
    _, summary = quick_run
    methods = summary["methods"]
    assert list(methods) == list(experiment.METHODS)
    for name, entry in methods.items():
        accuracy = entry["final_test_accuracy"]
        assert set(accuracy["per_seed"]) == {"0", "1"}
        assert accuracy["min"] <= accuracy["mean"] <= accuracy["max"]
        assert len(entry["test_accuracy_per_epoch_mean"]) == experiment.QUICK_EPOCHS + 1
        assert entry["test_accuracy_per_epoch_mean"][-1] == pytest.approx(accuracy["mean"])
        if entry["gradient"] == "true":  # the hidden weights never move; the readout does
            assert entry["hidden_weights_max_abs_change"] == 0.0, name
            for changes in entry["weight_changes_per_seed"].values():
                assert changes["readout_weights_max_abs_change"] > 0
                assert changes["fraction_of_weights_changed"] <= \
                    summary["readout_fraction_of_weights"]
        else:
            assert entry["hidden_weights_max_abs_change"] > 0, name
    for family in ("sign", "round"):
        result = summary["families"][family]
        assert result["true_gradient_hidden_weights_max_abs_change"] == 0.0
        assert result["every_straight_through_seed_beats_every_true_gradient_seed"] is True
        assert result["straight_through_minus_true_gradient"] > 0.3
        assert result["statement"] in summary["statement"]
    ste_sign = methods["ste_sign"]["final_test_accuracy"]
    assert (f"ste_sign {100 * ste_sign['mean']:.1f}% ({100 * ste_sign['min']:.1f}%-"
            f"{100 * ste_sign['max']:.1f}%)") in summary["statement"]
    for method in ("ste_sign", "ste_round"):
        check = summary["reloaded_models"][method]
        assert check["path"] == f"models/{method}_seed0.keras"
        assert check["predictions_identical"] and check["gradients_identical"]
        assert check["first_layer_kernel_gradient_norm"] > 0


def test_the_true_gradient_is_zero_under_the_same_forward_pass():
    x = tf.constant([-2.0, -0.5, 0.0, 0.5, 1.5, 2.5, 3.7])
    for true, ste in ((experiment.true_sign, activations.straight_through_sign),
                      (experiment.true_round, activations.straight_through_round)):
        with tf.GradientTape(persistent=True) as tape:
            tape.watch(x)
            y_true, y_ste = true(x), ste(x)
        np.testing.assert_array_equal(y_true, y_ste)
        gradient = tape.gradient(y_true, x)
        assert gradient is not None  # zero, not "unconnected": Adam must see a zero
        np.testing.assert_array_equal(gradient, np.zeros(7))
        assert np.any(tape.gradient(y_ste, x).numpy() != 0)


@pytest.mark.slow
def test_slow_learning_ste_sign_learns_while_the_true_gradient_trains_only_the_readout():
    """Fixed seed 0 and budget (2,000 training digits, 3 epochs): the STE sign network goes
    above 80% test accuracy; the true-gradient one trains exactly as a readout-only network
    (hidden layers frozen, same initial weights and batches): bitwise the same weights."""
    config = experiment.Config(train_examples=2000, epochs=3, seeds=(0,))
    data = experiment.load_data(config)
    initial = {}
    for seed in (0, 1):  # drawn before anything compiles (set_seed clears function caches)
        keras.utils.set_random_seed(seed)
        initial[seed] = experiment.build_model("ste_sign", config.width).get_weights()
    frozen = experiment.build_model("true_sign", config.width)
    for layer in frozen.layers:
        if isinstance(layer, keras.layers.Dense) and layer is not experiment.readout(frozen):
            layer.trainable = False
    trainers = {method: experiment.Trainer(experiment.build_model(method, config.width), config)
                for method in ("ste_sign", "true_sign")}
    trainers["readout_only"] = experiment.Trainer(frozen, config)
    assert len(frozen.trainable_variables) == 2

    # Another seed first: fit must reset weights and optimizer state, without retracing.
    list(trainers["true_sign"].fit(initial[1], 1, data, 1))
    accuracy = {name: list(trainer.fit(initial[0], 0, data, config.epochs))[-1]["test_accuracy"]
                for name, trainer in trainers.items()}
    print(accuracy)
    assert trainers["true_sign"].step.trace_count == 1

    true_weights = trainers["true_sign"].model.get_weights()
    for got, start in zip(true_weights[:4], initial[0][:4], strict=True):  # hidden layers
        np.testing.assert_array_equal(got, start)
    reference_weights = trainers["readout_only"].model.get_weights()
    for got, reference in zip(true_weights, reference_weights, strict=True):
        np.testing.assert_array_equal(got, reference)
    assert accuracy["true_sign"] == accuracy["readout_only"]
    assert accuracy["ste_sign"] > 0.8
    assert accuracy["true_sign"] < accuracy["ste_sign"] - 0.3


@pytest.mark.parametrize("method", ["ste_sign", "ste_round"])
def test_saved_ste_models_predict_and_differentiate_like_the_trained_ones(
        method, tmp_path, monkeypatch):
    keras.utils.set_random_seed(0)
    model = experiment.build_model(method, width=16, inputs=12)
    x = tf.random.stateless_uniform([8, 12], seed=[0, 1])
    y = tf.constant([0, 1, 2, 3, 4, 5, 6, 7])
    path = tmp_path / "models" / f"{method}.keras"
    check = experiment.save_and_check_reload(model, path, x, y)
    assert check["predictions_identical"] and check["gradients_identical"]
    assert check["first_layer_kernel_gradient_norm"] > 0
    loaded = keras.saving.load_model(path)
    expected = (activations.StraightThroughSign if method == "ste_sign"
                else activations.StraightThroughRound)
    assert sum(isinstance(layer, expected) for layer in loaded.layers) == 2

    # A model that lost its custom gradient (the true one instead) predicts the same but
    # differentiates differently: the check must refuse it.
    true_method = method.replace("ste_", "true_")
    load_model = keras.saving.load_model

    def load_without_custom_gradient(path):
        lost = experiment.build_model(true_method, width=16, inputs=12)
        lost.set_weights(load_model(path).get_weights())
        return lost

    monkeypatch.setattr(keras.saving, "load_model", load_without_custom_gradient)
    with pytest.raises(RuntimeError, match="'predictions_identical': True, "
                                           "'gradients_identical': False"):
        experiment.save_and_check_reload(model, path, x, y)


def test_bad_flag_is_a_usage_error_naming_it(tmp_path, read_error):
    with pytest.raises(SystemExit) as exit_info:
        experiment.main(["--quick", "--out", str(tmp_path / "out"), "--methods", "sign"])
    assert exit_info.value.code == 2
    assert "methods[0] must be one of" in read_error()
    with pytest.raises(SystemExit, match="batch_size must be at most the 2000 training digits"):
        experiment.main(["--quick", "--out", str(tmp_path / "out"), "--batch-size", "4000"])
    assert not any(tmp_path.iterdir()), "nothing is written for an invalid config"


@pytest.mark.parametrize("field, value, message", [
    ("seeds", (), "seeds must be one or more distinct non-negative integers"),
    ("seeds", (0, 0), "seeds must be one or more distinct non-negative integers"),
    ("methods", (), "methods must be one or more distinct values"),
    ("methods", ("ste_sign", "ste_sign"), "methods must be one or more distinct values"),
    ("methods", ("relu",), "methods[0] must be one of"),
    ("epochs", 0, "epochs must be an integer >= 1"),
    ("batch_size", 1.5, "batch_size must be an integer >= 1"),
    ("width", -1, "width must be an integer >= 1"),
    ("learning_rate", 0.0, "learning_rate must be > 0"),
    ("train_examples", 0, "train_examples must be an integer >= 1"),
    ("source", "mnist", "source must be one of"),
])
def test_config_rejects_bad_values_naming_the_field(field, value, message):
    with pytest.raises(ValueError, match=re.escape(message) + f".*Received: {field}"):
        experiment.Config(**{field: value})


def test_quick_caps_what_runs():
    config = experiment.Config(quick=True, seeds=(3, 4, 5), epochs=10).resolved()
    assert (config.seeds, config.epochs, config.train_examples) == (
        (3, 4), experiment.QUICK_EPOCHS, experiment.QUICK_TRAIN_EXAMPLES)
    assert experiment.Config(quick=True, train_examples=500).resolved().train_examples == 500
    assert experiment.Config(epochs=10).resolved().epochs == 10


def test_quick_run_writes_tensorboard_runs_matching_the_metrics(quick_run, tensorboard_holds):
    out, _ = quick_run
    tensorboard_holds(out / "tensorboard", out / "metrics.csv", ("method", "seed"), "epoch",
                      ("test_accuracy",))

"""Straight-through estimators: a network with binarized (sign) or quantized (round) hidden
activations trains with them; with the true gradient only its linear readout learns.

``sign`` and ``round`` have a zero derivative wherever they have one, so with the true
gradient no weight under them moves (Adam leaves a weight with zero gradient exactly as it
is). A straight-through estimator (STE; Bengio et al. 2013; Hubara et al. 2016) keeps the
forward pass and, backward, acts as the identity clipped to where the real-valued counterpart
has slope 1. One MLP on MNIST (784-width-width-10, Glorot init, no batch normalization: the
true-gradient network is then exactly a linear readout on fixed random features, which the
tests check bitwise) per activation of ``METHODS``, in two families: sign (``hard_tanh``,
``ste_sign``, ``true_sign``) and 2-bit round (``clipped_relu``, ``ste_round``,
``true_round``), each STE with its real-valued counterpart's backward pass and its quantized
counterpart's forward pass. Every method of a seed trains from the same weights on the same
batches; the first seed's STE models are saved, reloaded, and must predict and differentiate
bit for bit as trained.

Writes ``config.json``, ``metrics.csv`` (per seed, method and epoch; epoch 0 is the initial
network), ``summary.json`` (final accuracy over seeds, how far the hidden and readout weights
moved, the STE's lead per family, the reload checks; ``statement``), ``accuracy.png`` and
``models/<method>_seed<k>.keras`` (run folder: ``experiments.run_folder``).

References:
  Bengio, Leonard, Courville. Estimating or propagating gradients through stochastic neurons
  for conditional computation. arXiv:1308.3432, 2013.
  Hubara, Courbariaux, Soudry, El-Yaniv, Bengio. Binarized neural networks. NeurIPS 2016.
  arXiv:1602.02830.
  Yin, Lyu, Zhang, Osher, Qi, Xin. Understanding straight-through estimator in training
  activation quantized neural nets. ICLR 2019. arXiv:1903.05662.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator
from dataclasses import field
from functools import partial
from pathlib import Path
from typing import NamedTuple

import keras
import numpy as np
import tensorflow as tf
from tqdm import tqdm

from attacks.mnist import (
    NUM_CLASSES,
    SOURCES,
    default_source,
    load_mnist_arrays,
    resolve_mnist_source,
)
from experiments import records
from experiments.atomic import atomic_path
from experiments.cli import check_values, run_command
from experiments.skeleton import run_experiment
from lab import activations
from lab.checks import check_one_of, check_positive, check_positive_int, check_seeds
from lab.higher_order import input_gradient
from lab.training import make_train_step

# --quick caps these so a smoke test runs in seconds; everything else is kept.
QUICK_EPOCHS = 2
QUICK_TRAIN_EXAMPLES = 2000
QUICK_SEEDS = 2  # the first two seeds: still more than one, so the bands are drawn

QUANTIZATION_LEVELS = 3.0  # round family: clip to [0, 3], then round: 2 bits per activation


# The forward passes are lab.activations' own, so the true-gradient and straight-through
# networks compute the same function and differ only backward.
true_sign = activations.zero_gradient(activations.straight_through_sign)
true_round = activations.zero_gradient(activations.straight_through_round)


def _clip_0_3():
    return keras.layers.ReLU(max_value=QUANTIZATION_LEVELS)


class Method(NamedTuple):
    family: str                    # "sign" or "round": methods compared with each other
    gradient: str                  # "real" (a real-valued activation), "straight_through", "true"
    activation: Callable[[], list]  # a fresh list of Keras layers for one activation
    label: str                     # for the plot


METHODS = {
    "hard_tanh": Method("sign", "real", lambda: [keras.layers.Activation("hard_tanh")],
                        "hard tanh (real-valued)"),
    "ste_sign": Method("sign", "straight_through", lambda: [activations.StraightThroughSign()],
                       "sign, straight-through gradient"),
    "true_sign": Method("sign", "true", lambda: [keras.layers.Activation(true_sign)],
                        "sign, true gradient (zero)"),
    "clipped_relu": Method("round", "real", lambda: [_clip_0_3()],
                           "clip to [0, 3] (real-valued)"),
    "ste_round": Method("round", "straight_through",
                        lambda: [_clip_0_3(), activations.StraightThroughRound()],
                        "round(clip), straight-through gradient"),
    "true_round": Method("round", "true",
                         lambda: [_clip_0_3(), keras.layers.Activation(true_round)],
                         "round(clip), true gradient (zero)"),
}
FAMILIES = {"sign": "sign activations (±1)",
            "round": "2-bit activations: round(clip(x, 0, 3))"}


@dataclasses.dataclass(frozen=True)
class Config:
    """Every setting of the experiment; each field is a command-line flag."""
    source: str | None = field(default=None, metadata={
        "help": f"MNIST source, one of {SOURCES} (default: idx when --data-dir is given, "
                "else sample)"})
    data_dir: str | None = field(default=None, metadata={"help": "folder of MNIST IDX files"})
    out: str = field(default="results/straight_through", metadata={"help": "output folder"})
    seeds: tuple[int, ...] = field(
        default=(0, 1, 2), metadata={"help": "seeds; each draws its own initial weights and "
                                             "batch order, shared by every method"})
    methods: tuple[str, ...] = field(
        default=tuple(METHODS), metadata={"help": f"activations, from {tuple(METHODS)}"})
    epochs: int = field(default=15, metadata={"help": "passes over the training digits"})
    batch_size: int = field(default=100, metadata={"help": "digits per Adam step"})
    learning_rate: float = field(default=1e-3, metadata={"help": "Adam learning rate"})
    width: int = field(default=256, metadata={"help": "units per hidden layer"})
    train_examples: int | None = field(
        default=None, metadata={"help": "train on the first this many digits (default: all)"})
    quick: bool = field(
        default=False,
        metadata={"help": f"smoke test: at most {QUICK_EPOCHS} epochs, {QUICK_TRAIN_EXAMPLES} "
                          f"training digits and the first {QUICK_SEEDS} seeds"})

    def __post_init__(self):
        if self.source is not None:
            check_one_of("source", self.source, SOURCES)
        check_seeds("seeds", self.seeds)
        check_values("methods", self.methods, partial(check_one_of, choices=tuple(METHODS)))
        for name in ("epochs", "batch_size", "width"):
            check_positive_int(name, getattr(self, name))
        check_positive("learning_rate", self.learning_rate)
        if self.train_examples is not None:
            check_positive_int("train_examples", self.train_examples)

    @property
    def data_source(self) -> str:
        """``--source``, or what a folder given with ``--data-dir`` implies."""
        return default_source(self.source, self.data_dir)

    def resolved(self) -> Config:
        """This config with the ``--quick`` caps applied (what actually runs and is saved)."""
        if not self.quick:
            return self
        return dataclasses.replace(
            self, epochs=min(self.epochs, QUICK_EPOCHS), seeds=self.seeds[:QUICK_SEEDS],
            train_examples=min(self.train_examples or QUICK_TRAIN_EXAMPLES, QUICK_TRAIN_EXAMPLES))


class Data(NamedTuple):
    x_train: np.ndarray  # float32 [n, 784] in [0, 1]
    y_train: np.ndarray  # int32 [n]
    x_test: np.ndarray
    y_test: np.ndarray
    source: str          # the source actually read ("sample", "idx" or "tfds")


def load_data(config: Config) -> Data:
    """The MNIST splits, flattened, the training split cut to ``config.train_examples``.

    Raises:
      ValueError, OSError: unreadable data, or fewer training digits than one batch.
    """
    source = resolve_mnist_source(config.data_source, config.data_dir)
    x_train, y_train = load_mnist_arrays("train", source, config.data_dir)
    x_test, y_test = load_mnist_arrays("test", source, config.data_dir)
    x_train, y_train = x_train[:config.train_examples], y_train[:config.train_examples]
    if len(x_train) < config.batch_size:
        raise ValueError(f"batch_size must be at most the {len(x_train)} training digits. "
                         f"Received: batch_size={config.batch_size}")
    return Data(x_train.reshape(len(x_train), -1), y_train,
                x_test.reshape(len(x_test), -1), y_test, source)


def build_model(method: str, width: int, inputs: int = 784) -> keras.Sequential:
    """``inputs -> Dense(width) -> act -> Dense(width) -> act -> Dense(10)`` logits.

    Every method has the same weights (the activations have none), so one method's initial
    weights fit every other's.
    """
    activation = METHODS[method].activation
    return keras.Sequential([keras.Input((inputs,)),
                             keras.layers.Dense(width), *activation(),
                             keras.layers.Dense(width), *activation(),
                             keras.layers.Dense(NUM_CLASSES)], name=method)


def readout(model: keras.Model) -> keras.layers.Dense:
    """The last Dense layer: the only one above every activation."""
    return [layer for layer in model.layers if isinstance(layer, keras.layers.Dense)][-1]


def epoch_order(seed: int, epoch: int, examples: int) -> np.ndarray:
    """The order of the training digits in an epoch: a function of the seed and epoch only,
    so every method of a seed sees the same batches."""
    return np.random.default_rng((seed, epoch)).permutation(examples)


LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


class Trainer:
    """A model with its compiled Adam step and evaluation, reused across seeds.

    ``fit`` resets the weights and the optimizer's state instead of building a new model and
    step, so the step traces once for all seeds (``self.step.trace_count``).
    """

    def __init__(self, model: keras.Model, config: Config):
        self.model = model
        self.batch_size = config.batch_size
        self.optimizer = keras.optimizers.Adam(config.learning_rate)
        inputs = model.input_shape[-1]
        self.step = make_train_step(
            model, LOSS, self.optimizer,
            input_signature=(tf.TensorSpec([config.batch_size, inputs], tf.float32),
                             tf.TensorSpec([config.batch_size], tf.int32)))
        # make_train_step built the optimizer: this is its state before any update (step
        # count 0, moments 0), restored before each seed.
        self._fresh_optimizer = [v.numpy() for v in self.optimizer.variables]
        self.evaluate = tf.function(
            self._evaluate, input_signature=(tf.TensorSpec([None, inputs], tf.float32),
                                             tf.TensorSpec([None], tf.int32)))

    def _evaluate(self, x, y):
        """Mean cross-entropy and accuracy on ``(x, y)``."""
        logits = self.model(x, training=False)
        correct = tf.equal(tf.argmax(logits, axis=-1, output_type=tf.int32), y)
        return LOSS(y, logits), tf.reduce_mean(tf.cast(correct, tf.float32))

    def fit(self, initial_weights: list, seed: int, data: Data, epochs: int) -> Iterator[dict]:
        """Trains from ``initial_weights``; yields a row after each epoch (and one for the
        initial network, epoch 0) with the training-set loss and the test accuracy."""
        self.model.set_weights(initial_weights)
        for variable, value in zip(self.optimizer.variables, self._fresh_optimizer, strict=True):
            variable.assign(value)
        examples = len(data.x_train)
        start = time.perf_counter()
        for epoch in range(epochs + 1):
            if epoch > 0:
                order = epoch_order(seed, epoch, examples)
                for first in range(0, examples - self.batch_size + 1, self.batch_size):
                    batch = order[first:first + self.batch_size]  # the remainder is dropped
                    self.step(data.x_train[batch], data.y_train[batch])
            train_loss, _ = self.evaluate(data.x_train, data.y_train)
            _, test_accuracy = self.evaluate(data.x_test, data.y_test)
            yield {"epoch": epoch, "train_loss": float(train_loss),
                   "test_accuracy": float(test_accuracy),
                   "seconds": round(time.perf_counter() - start, 3)}


def weight_changes(model: keras.Model, initial_weights: list) -> dict:
    """How far training moved the hidden layers (under an activation) and the readout."""
    head = {id(v) for v in readout(model).weights}
    moved = {"hidden": [], "readout": []}
    changed, total = 0, 0
    for variable, initial in zip(model.weights, initial_weights, strict=True):
        delta = np.abs(variable.numpy() - initial)
        moved["readout" if id(variable) in head else "hidden"].append(float(delta.max()))
        changed += int(np.count_nonzero(delta))
        total += delta.size
    return {"hidden_weights_max_abs_change": max(moved["hidden"]),
            "readout_weights_max_abs_change": max(moved["readout"]),
            "fraction_of_weights_changed": changed / total}


def weight_gradients(model: keras.Model, x, y) -> list[np.ndarray]:
    """Gradient of the mean cross-entropy with respect to every trainable weight."""
    with tf.GradientTape() as tape:
        loss = LOSS(y, model(x, training=False))
    return [g.numpy() for g in tape.gradient(loss, model.trainable_variables)]


def save_and_check_reload(model: keras.Model, path: Path, x, y) -> dict:
    """Saves ``model`` as ``.keras``, loads it back, and checks that the loaded model predicts
    and differentiates (input and weight gradients) bit for bit like ``model``.

    Raises:
      RuntimeError: the loaded model differs (a custom gradient lost in saving would show as
        different gradients with identical predictions).
    """
    with atomic_path(path) as tmp:
        model.save(tmp)
    loaded = keras.saving.load_model(path)
    same_predictions = np.array_equal(model(x, training=False), loaded(x, training=False))
    gradients = [input_gradient(model, LOSS, x, y).numpy(), *weight_gradients(model, x, y)]
    loaded_gradients = [input_gradient(loaded, LOSS, x, y).numpy(),
                        *weight_gradients(loaded, x, y)]
    same_gradients = len(gradients) == len(loaded_gradients) and all(
        np.array_equal(a, b) for a, b in zip(gradients, loaded_gradients, strict=True))
    check = {"path": str(Path(path.parent.name) / path.name),
             "predictions_identical": bool(same_predictions),
             "gradients_identical": bool(same_gradients),
             # Non-zero, so "identical" is not two zero gradients agreeing.
             "first_layer_kernel_gradient_norm": float(np.linalg.norm(gradients[1])),
             "examples": len(x)}
    if not (same_predictions and same_gradients):
        raise RuntimeError(f"{path}: the reloaded model does not match the trained one: {check}")
    return check


def train(config: Config, data: Data, models_dir: Path,
          tensorboard=None) -> tuple[list[dict], dict, dict]:
    """Trains every (seed, method) pair.

    Returns:
      ``(rows, changes, reloads)``: the metrics rows (also written to ``tensorboard``, a
      ``TensorBoardLog``, if given); ``{(seed, method): weight_changes}``; and, per
      straight-through method, the reload check of its first seed's saved model.
    """
    # Each seed's initial weights are drawn before anything is compiled:
    # keras.utils.set_random_seed clears TensorFlow's function caches.
    inputs = data.x_train.shape[1]
    initial = {}
    for seed in config.seeds:
        keras.utils.set_random_seed(seed)
        initial[seed] = build_model(config.methods[0], config.width, inputs).get_weights()
    trainers = {method: Trainer(build_model(method, config.width, inputs), config)
                for method in config.methods}

    rows, changes, reloads = [], {}, {}
    runs = len(config.seeds) * len(config.methods)
    with tqdm(total=runs * config.epochs, desc="training", unit="epoch", dynamic_ncols=True,
              disable=None) as bar:  # quiet off a terminal
        for seed in config.seeds:
            for method, trainer in trainers.items():
                for row in trainer.fit(initial[seed], seed, data, config.epochs):
                    rows.append({"seed": seed, "method": method, **row})
                    if tensorboard is not None:
                        tensorboard.add(rows[-1])
                    bar.update(int(row["epoch"] > 0))
                    bar.set_postfix(seed=seed, method=method,
                                    accuracy=f"{row['test_accuracy']:.3f}", refresh=False)
                changes[seed, method] = weight_changes(trainer.model, initial[seed])
                if seed == config.seeds[0] and METHODS[method].gradient == "straight_through":
                    reloads[method] = save_and_check_reload(
                        trainer.model, models_dir / f"{method}_seed{seed}.keras",
                        data.x_test[:256], data.y_test[:256])
    return rows, changes, reloads


def _accuracy_range(entry: dict) -> str:
    """``mean% (min%-max%)`` of the final test accuracy."""
    return "{:.1%} ({:.1%}-{:.1%})".format(*(entry["final_test_accuracy"][k]
                                             for k in ("mean", "min", "max")))


def summarize(rows: list[dict], changes: dict, reloads: dict, config: Config,
              data: Data) -> dict:
    """Per method, final accuracy over seeds and the weights' movement; per family, how far
    the straight-through estimator is ahead of the true gradient."""
    per_method = {}
    for method in config.methods:
        curves = _curves(rows, method)
        final = curves[:, -1]
        losses = [r["train_loss"] for r in rows
                  if r["method"] == method and r["epoch"] == config.epochs]
        moved = [changes[seed, method] for seed in config.seeds]
        per_method[method] = {
            "family": METHODS[method].family,
            "gradient": METHODS[method].gradient,
            "label": METHODS[method].label,
            "final_test_accuracy": records.over_seeds(dict(zip(config.seeds, final,
                                                               strict=True))),
            "test_accuracy_per_epoch_mean": [float(a) for a in curves.mean(axis=0)],
            "final_train_loss_mean": float(np.mean(losses)),
            # The largest over seeds: 0.0 means no hidden weight moved in any seed.
            "hidden_weights_max_abs_change": max(m["hidden_weights_max_abs_change"]
                                                 for m in moved),
            "weight_changes_per_seed": {str(seed): m for seed, m
                                        in zip(config.seeds, moved, strict=True)},
            "seconds_mean": float(np.mean([r["seconds"] for r in rows if r["method"] == method
                                           and r["epoch"] == config.epochs])),
        }

    probe = build_model(config.methods[0], config.width, data.x_train.shape[1])
    readout_fraction = readout(probe).count_params() / probe.count_params()
    families = {}
    for family in FAMILIES:
        members = {METHODS[m].gradient: m for m in config.methods if METHODS[m].family == family}
        if members:
            families[family] = _family_summary(members, per_method, readout_fraction)
    epochs, seeds = config.epochs, len(config.seeds)
    statement = (f"Final test accuracy after {epochs} epoch{'s' * (epochs != 1)}, mean "
                 f"(min-max) over {seeds} seed{'s' * (seeds != 1)}: "
                 + " ".join(f["statement"] for f in families.values()))
    return {
        "statement": statement,
        "data_source": data.source,
        "train_examples": len(data.x_train),
        "test_examples": len(data.x_test),
        "epochs": config.epochs,
        "seeds": list(config.seeds),
        "readout_fraction_of_weights": readout_fraction,
        "methods": per_method,
        "families": families,
        "reloaded_models": reloads,
    }


def _family_summary(members: dict, per_method: dict, readout_fraction: float) -> dict:
    """The comparison inside one family; ``members`` maps a gradient kind to its method."""
    mean = {kind: per_method[m]["final_test_accuracy"]["mean"] for kind, m in members.items()}
    result, sentences = {}, []
    for kind in ("straight_through", "real", "true"):
        if kind in members:
            sentences.append(f"{members[kind]} {_accuracy_range(per_method[members[kind]])}")
    statement = ", ".join(sentences) + "."
    if "true" in members:
        true = per_method[members["true"]]
        result["true_gradient_hidden_weights_max_abs_change"] = \
            true["hidden_weights_max_abs_change"]
        change = true["hidden_weights_max_abs_change"]
        moved = ("did not move at all (largest change 0.0)" if change == 0 else
                 f"moved by at most {change:.3g}")
        statement += (f" With the true gradient the hidden weights {moved}: only the linear "
                      f"readout ({readout_fraction:.2%} of the weights) learned.")
    if "straight_through" in members and "true" in members:
        ste = per_method[members["straight_through"]]["final_test_accuracy"]
        true = per_method[members["true"]]["final_test_accuracy"]
        lead = mean["straight_through"] - mean["true"]
        result["straight_through_minus_true_gradient"] = lead
        result["every_straight_through_seed_beats_every_true_gradient_seed"] = bool(
            ste["min"] > true["max"])
        statement += (f" The straight-through estimator is ahead of the true gradient by "
                      f"{100 * lead:.1f} points.")
    if "straight_through" in members and "real" in members:
        gap = mean["straight_through"] - mean["real"]
        result["straight_through_minus_real"] = gap
        statement += (f" Against real-valued activations it is "
                      f"{'ahead' if gap >= 0 else 'behind'} by {100 * abs(gap):.1f} points.")
    return {"methods": members, **result, "statement": statement}


def _curves(rows: list[dict], method: str) -> np.ndarray:
    """The test accuracy per epoch of ``method``, one row per seed."""
    runs = records.runs_by_seed(rows, method=method).values()
    return np.array([[r["test_accuracy"] for r in run] for run in runs])


def plot(rows: list[dict], config: Config, data: Data, path) -> Path:
    from matplotlib.ticker import MaxNLocator

    families = [f for f in FAMILIES if any(METHODS[m].family == f for m in config.methods)]
    fig, axes = records.subplots(1, len(families), figsize=(6.5 * len(families), 4.5),
                                 squeeze=False, layout="tight")
    colors = {"real": "C0", "straight_through": "C2", "true": "C3"}
    epochs = np.arange(config.epochs + 1)
    for ax, family in zip(axes[0], families, strict=True):
        for method in (m for m in config.methods if METHODS[m].family == family):
            records.band(ax, epochs, _curves(rows, method) * 100,
                         colors[METHODS[method].gradient],
                         f"{method}: {METHODS[method].label}", marker="o", ms=3)
        ax.axhline(100 / NUM_CLASSES, color="gray", linestyle=":", linewidth=1, label="chance")
        ax.set(title=FAMILIES[family], xlabel="epoch (0: initial weights)",
               ylabel="test accuracy (%)", ylim=(0, 100))
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right", fontsize="small")
    fig.suptitle(f"MNIST ({data.source}, {len(data.x_train):,} training digits), MLP 784-"
                 f"{config.width}-{config.width}-10, Adam {config.learning_rate:g}: test "
                 f"accuracy, mean and min-max over {len(config.seeds)} seeds")
    return records.save_figure(fig, path)


def start(config: Config):
    """The data (unreadable data fails here, before any folder is made)."""
    data = load_data(config)
    return data, {"data_source": data.source, "train_examples": len(data.x_train),
                  "test_examples": len(data.x_test)}


def run(config: Config, folder, data: Data) -> dict:
    with folder.tensorboard(("method", "seed"), "epoch") as tensorboard:
        rows, changes, reloads = train(config, data, folder.path / "models", tensorboard)
    summary = records.write_results(folder.path, rows,
                                    summarize(rows, changes, reloads, config, data))
    plot(rows, config, data, folder.path / "accuracy.png")
    return summary


def main(argv=None) -> dict:
    return run_experiment(Config, argv, name="straight_through", start=start, run=run,
                          report=lambda config, summary, out: print(summary["statement"]))


if __name__ == "__main__":
    run_command(main)

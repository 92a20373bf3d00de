"""Edge of stability: full-batch gradient descent drives the sharpness to 2/eta.

GD with learning rate ``eta`` on a quadratic is stable only while the curvature stays below
``2 / eta``. On a network's loss, full-batch GD raises the sharpness (the top Hessian
eigenvalue) until it reaches ``2 / eta`` and hovers there while the loss keeps falling, no
longer monotonically (Cohen et al. 2021). Here a tanh MLP memorizes random Gaussian targets
(harder tasks sharpen more) by full-batch GD at each learning rate, from the same data and
weights per seed; every ``measure_every`` steps the loss, the sharpness
(``lab.higher_order.hessian_top_eigenvalue``: power iteration, which approaches it from below)
and optionally the Hessian trace (Hutchinson) are recorded, and every step whether the update
raised the loss.

Writes ``config.json``, ``metrics.csv`` (per seed, learning rate and measured step),
``summary.json`` (per learning rate, medians over seeds, whether the sharpness reached and
stayed at ``2 / eta``) and ``sharpness.png`` (run folder: ``experiments.run_folder``).

References:
  Cohen, Kaur, Li, Kolter, Talwalkar. Gradient descent on neural networks typically occurs at
  the edge of stability. ICLR 2021. arXiv:2103.00065.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import field
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from tqdm import tqdm

from experiments import records
from experiments.cli import check_values, run_command
from experiments.skeleton import run_experiment
from lab.checks import (
    check_in_range,
    check_nonnegative_int,
    check_positive,
    check_positive_int,
    check_seeds,
)
from lab.higher_order import hessian_top_eigenvalue, hessian_trace
from lab.training import make_train_step

# --quick caps these so a smoke test runs in seconds; everything else is kept.
QUICK_STEPS = 100
QUICK_MEASURE_EVERY = 25
QUICK_POWER_ITERS = 10  # the unrolled power iteration dominates compile time


@dataclasses.dataclass(frozen=True)
class Config:
    """Every setting of the experiment; each field is a command-line flag."""
    out: str = field(default="results/curvature", metadata={"help": "output directory"})
    seeds: tuple[int, ...] = field(
        default=(0, 1, 2), metadata={"help": "seeds; each draws its own data and initial weights"})
    learning_rates: tuple[float, ...] = field(
        default=(0.05, 0.1, 0.2), metadata={"help": "GD learning rates eta (2/eta = 40, 20, 10)"})
    steps: int = field(default=3000, metadata={"help": "full-batch GD steps per run"})
    measure_every: int = field(
        default=50, metadata={"help": "measure loss and curvature every this many steps"})
    examples: int = field(default=500, metadata={"help": "training examples"})
    input_dim: int = field(default=10, metadata={"help": "input dimension"})
    output_dim: int = field(default=4, metadata={"help": "random-target dimension"})
    width: int = field(default=64, metadata={"help": "units per hidden layer"})
    depth: int = field(default=4, metadata={"help": "tanh hidden layers"})
    power_iters: int = field(
        default=30, metadata={"help": "Hessian-vector products per sharpness estimate"})
    trace_samples: int = field(default=0, metadata={
        "help": "Hutchinson probes per Hessian-trace estimate, added to metrics.csv (0: off)"})
    tail_fraction: float = field(
        default=0.25, metadata={"help": "final fraction of training summarized as 'at the edge'"})
    tolerance: float = field(
        default=0.10, metadata={"help": "relative distance to 2/eta that counts as reaching it"})
    quick: bool = field(
        default=False,
        metadata={"help": f"smoke test: at most {QUICK_STEPS} steps, measured every "
                          f"{QUICK_MEASURE_EVERY} with {QUICK_POWER_ITERS} power iterations"})

    def __post_init__(self):
        check_seeds("seeds", self.seeds)
        check_values("learning_rates", self.learning_rates, check_positive)
        for name in ("steps", "measure_every", "examples", "input_dim", "output_dim", "width",
                     "depth", "power_iters"):
            check_positive_int(name, getattr(self, name))
        check_in_range("measure_every", self.measure_every, 1, self.steps)
        check_nonnegative_int("trace_samples", self.trace_samples)
        check_in_range("tail_fraction", self.tail_fraction, 0.0, 1.0, lo_open=True)
        check_in_range("tolerance", self.tolerance, 0.0, 1.0, lo_open=True, hi_open=True)

    def resolved(self) -> Config:
        """This config with the ``--quick`` caps applied (what actually runs and is saved)."""
        if not self.quick:
            return self
        return dataclasses.replace(self, steps=min(self.steps, QUICK_STEPS),
                                   measure_every=min(self.measure_every, QUICK_MEASURE_EVERY),
                                   power_iters=min(self.power_iters, QUICK_POWER_ITERS))


def make_data(rng: np.random.Generator, config: Config) -> tuple[tf.Tensor, tf.Tensor]:
    """Gaussian inputs and independent Gaussian targets: a pure memorization task."""
    x = rng.standard_normal((config.examples, config.input_dim)).astype(np.float32)
    y = rng.standard_normal((config.examples, config.output_dim)).astype(np.float32)
    return tf.constant(x), tf.constant(y)


def build_mlp(config: Config) -> keras.Model:
    layers = [keras.Input((config.input_dim,))]
    layers += [keras.layers.Dense(config.width, activation="tanh") for _ in range(config.depth)]
    layers += [keras.layers.Dense(config.output_dim)]
    return keras.Sequential(layers, name="tanh_mlp")


def make_measure(model, loss_fn, config: Config, signature):
    """One compiled function ``(x, y) -> {"loss", "sharpness"[, "hessian_trace"]}`` on the
    full batch: the lab helpers run the power iteration's vector arithmetic eagerly between
    their compiled HVPs; a ``tf.function`` around them unrolls it into one faster graph (for a
    one-off trace of a few seconds)."""
    def measure(x, y):
        def loss():
            return loss_fn(y, model(x, training=False))
        variables = model.trainable_variables
        # Power iteration finds the eigenvalue of largest magnitude; here that is the top
        # positive one (a negative result would mean strong negative curvature instead).
        values = {"loss": loss(),
                  "sharpness": hessian_top_eigenvalue(loss, variables, config.power_iters)}
        if config.trace_samples:
            values["hessian_trace"] = hessian_trace(loss, variables, config.trace_samples)
        return values

    return tf.function(measure, input_signature=signature)


def train(config: Config, tensorboard=None) -> list[dict]:
    """Runs every (seed, learning rate) pair and returns the metrics rows (also written to
    ``tensorboard``, a ``TensorBoardLog``, if given)."""
    # Each seed's data and initial weights are drawn before anything is compiled:
    # keras.utils.set_random_seed clears TensorFlow's function caches.
    problems = {}
    for seed in config.seeds:
        keras.utils.set_random_seed(seed)
        rng = np.random.default_rng(seed)
        x, y = make_data(rng, config)
        problems[seed] = (x, y, build_mlp(config).get_weights())  # Glorot draws, this seed

    # One model and one set of compiled functions for all runs; each run resets the weights,
    # so nothing retraces after the first run.
    model = build_mlp(config)
    loss_fn = keras.losses.MeanSquaredError()
    signature = (tf.TensorSpec([config.examples, config.input_dim], tf.float32),
                 tf.TensorSpec([config.examples, config.output_dim], tf.float32))
    train_steps = {lr: make_train_step(model, loss_fn, keras.optimizers.SGD(lr),
                                       input_signature=signature)
                   for lr in config.learning_rates}
    measure = make_measure(model, loss_fn, config, signature)

    rows = []
    runs = len(config.seeds) * len(config.learning_rates)
    with tqdm(total=runs * config.steps, desc="full-batch GD", unit="step",
              dynamic_ncols=True, disable=None) as bar:  # quiet off a terminal
        for seed, (x, y, initial_weights) in problems.items():
            for lr in config.learning_rates:
                model.set_weights(initial_weights)
                step = train_steps[lr]
                # Updates that raised the loss: none for GD in the stable regime
                # (eta < 2 / sharpness), many at the edge of stability.
                loss_rises, previous_loss = 0, math.inf
                start = time.perf_counter()
                for t in range(config.steps + 1):
                    measured = t % config.measure_every == 0 or t == config.steps
                    if measured:
                        values = {k: float(v) for k, v in measure(x, y).items()}
                    if t < config.steps:
                        loss = float(step(x, y).loss)  # at w_t, before this step's update
                        bar.update()
                    else:
                        loss = values["loss"]
                    loss_rises += loss > previous_loss  # did update t - 1 raise the loss?
                    previous_loss = loss
                    if measured:
                        rows.append({"seed": seed, "learning_rate": lr, "step": t, **values,
                                     "two_over_eta": 2.0 / lr, "loss_rises_so_far": loss_rises,
                                     "wall_seconds": round(time.perf_counter() - start, 3)})
                        if tensorboard is not None:
                            tensorboard.add(rows[-1])
                        bar.set_postfix(seed=seed, lr=lr, loss=f"{values['loss']:.3g}",
                                        sharpness=f"{values['sharpness']:.1f}", refresh=False)
    return rows


def _verdict(reached: bool, stayed: bool) -> str:
    if reached and stayed:
        return "edge of stability: the sharpness reached 2/eta and stayed there"
    if reached:
        return "the sharpness reached 2/eta but did not stay within tolerance of it"
    return "the sharpness stayed below 2/eta"


def summarize(rows: list[dict], config: Config) -> dict:
    """Per learning rate, medians over seeds, and whether the sharpness reached 2/eta."""
    tail_start = config.steps * (1 - config.tail_fraction)
    per_lr = {}
    for lr in config.learning_rates:
        edge = 2.0 / lr
        initial, peak, tail_ratio, tail_rises, final_loss = [], [], [], [], []
        rises_before_edge = []  # loss-raising updates before the sharpness first neared 2/eta
        for run in records.runs_by_seed(rows, learning_rate=lr).values():
            tail = [r for r in run if r["step"] >= tail_start]
            sharpness = np.array([r["sharpness"] for r in run])
            initial.append(sharpness[0])
            peak.append(sharpness.max())
            tail_ratio.append(np.mean([r["sharpness"] for r in tail]) / edge)
            tail_updates = max(tail[-1]["step"] - tail[0]["step"], 1)
            tail_rises.append((tail[-1]["loss_rises_so_far"] - tail[0]["loss_rises_so_far"])
                              / tail_updates)
            final_loss.append(run[-1]["loss"])
            near = [r for r in run if r["sharpness"] >= (1 - config.tolerance) * edge]
            if near:
                rises_before_edge.append(near[0]["loss_rises_so_far"])
        max_median = float(np.median(peak))
        ratio_median = float(np.median(tail_ratio))
        reached = max_median >= (1 - config.tolerance) * edge
        stayed = abs(ratio_median - 1) <= config.tolerance
        before = (f"{np.median(rises_before_edge):g} updates raised the loss before it got "
                  "within tolerance of 2/eta" if rises_before_edge else "it never got near 2/eta")
        per_lr[str(lr)] = {
            "learning_rate": lr,
            "two_over_eta": edge,
            "initial_sharpness_median": float(np.median(initial)),
            "max_sharpness_median": max_median,
            "max_sharpness_over_two_over_eta": max_median / edge,
            "tail_sharpness_over_two_over_eta_median": ratio_median,
            "tail_sharpness_over_two_over_eta_range": [float(min(tail_ratio)),
                                                       float(max(tail_ratio))],
            "tail_fraction_of_updates_raising_loss_median": float(np.median(tail_rises)),
            "updates_raising_loss_before_reaching_edge_median": (
                float(np.median(rises_before_edge)) if rises_before_edge else None),
            "final_loss_median": float(np.median(final_loss)),
            "reached_two_over_eta": bool(reached),
            "stayed_at_two_over_eta": bool(stayed),
            "statement": (
                f"eta={lr}: median sharpness rose from {np.median(initial):.1f} to a max of "
                f"{max_median:.1f} (2/eta = {edge:g}); {before}; over the last "
                f"{config.tail_fraction:.0%} of steps it averaged {ratio_median:.2f} x 2/eta "
                f"while {np.median(tail_rises):.0%} of updates raised the loss; "
                f"{_verdict(reached, stayed)} (tolerance {config.tolerance:.0%})."),
        }
    everywhere = all(s["reached_two_over_eta"] and s["stayed_at_two_over_eta"]
                     for s in per_lr.values())
    statement = (f"For every learning rate the sharpness rose to within {config.tolerance:.0%} "
                 "of 2/eta and stayed there: edge of stability." if everywhere else
                 "Not every learning rate reached and stayed at 2/eta; see per_learning_rate.")
    return {
        "edge_of_stability_at_every_learning_rate": everywhere,
        "statement": statement,
        "seeds": list(config.seeds),
        "tail_starts_at_step": int(math.ceil(tail_start)),
        "per_learning_rate": per_lr,
    }


def plot(rows: list[dict], config: Config, path) -> Path:
    fig, (ax_loss, ax_sharp) = records.subplots(1, 2, figsize=(13.5, 4.5), layout="tight")
    colors = records.pyplot().cm.viridis(np.linspace(0.0, 0.75, len(config.learning_rates)))
    for lr, color in zip(config.learning_rates, colors):
        runs = list(records.runs_by_seed(rows, learning_rate=lr).values())
        for ax, key in ((ax_loss, "loss"), (ax_sharp, "sharpness")):
            records.band(ax, [r["step"] for r in runs[0]],
                         [[r[key] for r in run] for run in runs], color, f"η = {lr}")
        ax_sharp.axhline(2.0 / lr, color=color, linestyle="--", linewidth=1)
        ax_sharp.annotate(f"2/η = {2.0 / lr:g}", (0.99, 2.0 / lr), color=color,
                          xycoords=("axes fraction", "data"), ha="right", va="bottom",
                          fontsize="small")
    ax_loss.set_yscale("log")
    ax_loss.set(title="Training loss", xlabel="GD step", ylabel="full-batch MSE (log scale)")
    ax_sharp.set(title="Sharpness (top Hessian eigenvalue)", xlabel="GD step",
                 ylabel="λ_max of the loss Hessian")
    ax_loss.legend()
    ax_sharp.plot([], [], color="gray", linestyle="--", linewidth=1,
                  label="2/η: GD's stability threshold")
    ax_sharp.legend(loc="upper left", bbox_to_anchor=(1.01, 1))  # outside: curves fill the axes
    for ax in (ax_loss, ax_sharp):
        ax.grid(alpha=0.3)
    fig.suptitle(f"Edge of stability: full-batch GD on a tanh MLP (depth {config.depth}, "
                 f"width {config.width}), {config.examples} random targets; "
                 f"mean and min-max over {len(config.seeds)} seeds")
    return records.save_figure(fig, path)


def run(config: Config, folder, started=None) -> dict:
    with folder.tensorboard(("learning_rate", "seed"), "step") as tensorboard:
        rows = train(config, tensorboard)
    summary = records.write_results(folder.path, rows, summarize(rows, config))
    plot(rows, config, folder.path / "sharpness.png")
    return summary


def report(config: Config, summary: dict, out) -> None:
    print(summary["statement"])
    for entry in summary["per_learning_rate"].values():
        print(entry["statement"])


def main(argv=None) -> dict:
    return run_experiment(Config, argv, name="curvature", run=run, report=report)


if __name__ == "__main__":
    run_command(main)

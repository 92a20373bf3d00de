"""Gradient clipping on a vanilla RNN: the adding problem over 100 time steps.

Each input is ``sequence_length`` pairs ``(value, marker)``, values uniform in [0, 1], one
marker in each half; the target is the sum of the two marked values (Hochreiter &
Schmidhuber 1997). Predicting the mean leaves MSE 1/6; beating it takes carrying a value
across half the sequence, where a vanilla RNN's gradients vanish or explode (Pascanu et al.).
A ``SimpleRNN`` trains with Adam at each learning rate under each method of
``lab.transforms``: ``none``, ``value``, ``norm`` (per tensor), ``global_norm`` (Pascanu et
al.) and ``adaptive`` (unit-wise, Brock et al.), every run of a seed from the same weights
on the same batches. A run ends ``diverged`` (a skipped non-finite step, or a final MSE above
the initial one), ``learned`` (best MSE below ``learned_mse``) or ``stalled``.

Writes ``config.json``, ``metrics.csv`` (per seed, method, learning rate and recorded step),
``summary.json`` (outcomes, MSE and gradient norms over seeds; time per step against
``none``), ``loss.png`` and ``grad_norm.png`` (run folder: ``experiments.run_folder``).

References:
  Hochreiter, Schmidhuber. Long short-term memory. Neural Computation 1997.
  Pascanu, Mikolov, Bengio. On the difficulty of training recurrent neural networks.
  ICML 2013. arXiv:1211.5063.
  Brock, De, Smith, Simonyan. High-performance large-scale image recognition without
  normalization. ICML 2021. arXiv:2102.06171.
"""

from __future__ import annotations

import dataclasses
import math
import queue
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import field
from functools import partial
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from tqdm import tqdm

from experiments import records
from experiments.cli import check_values, run_command
from experiments.skeleton import run_experiment
from lab.checks import check_in_range, check_one_of, check_positive, check_positive_int, check_seeds
from lab.clipping import global_norm
from lab.training import make_train_step
from lab.transforms import AdaptiveClip, ClipByGlobalNorm, ClipByNorm, ClipByValue

METHODS = ("none", "value", "norm", "global_norm", "adaptive")
BASELINE_MSE = 1.0 / 6.0  # predicting the mean sum, 1: the variance of the sum of two U(0, 1)
OUTCOMES = ("learned", "stalled", "diverged")

# --quick caps these so a smoke test runs in seconds; everything else is kept. Sequences of 20
# steps: tracing and running the unrolled RNN over 100 took most of a quick run (67 s of it).
QUICK_STEPS = 60
QUICK_EVAL_EVERY = 20
QUICK_SEED_COUNT = 2
QUICK_SEQUENCE_LENGTH = 20


@dataclasses.dataclass(frozen=True)
class Config:
    """Every setting of the experiment; each field is a command-line flag."""
    out: str = field(default="results/clipping", metadata={"help": "output directory"})
    seeds: tuple[int, ...] = field(
        default=(0, 1, 2), metadata={"help": "seeds; each draws its own data and initial weights"})
    methods: tuple[str, ...] = field(default=METHODS, metadata={"help": f"from {METHODS}"})
    learning_rates: tuple[float, ...] = field(
        default=(1e-3, 3e-3, 1e-2), metadata={"help": "Adam learning rates"})
    steps: int = field(default=1000, metadata={"help": "training steps per run"})
    eval_every: int = field(default=50, metadata={"help": "record metrics every this many steps"})
    sequence_length: int = field(default=100, metadata={"help": "time steps per sequence"})
    hidden: int = field(default=64, metadata={"help": "SimpleRNN units"})
    batch_size: int = field(default=256, metadata={"help": "sequences per step (fresh each step)"})
    eval_examples: int = field(default=1000, metadata={"help": "fixed evaluation sequences"})
    clip_value: float = field(default=0.1, metadata={"help": "bound of method value"})
    clip_norm: float = field(
        default=1.0, metadata={"help": "largest norm for methods norm (per tensor) and "
                                       "global_norm (all gradients together)"})
    adaptive_ratio: float = field(
        default=0.01, metadata={"help": "method adaptive: largest gradient/weight norm ratio "
                                        "per unit"})
    workers: int = field(
        default=2, metadata={"help": "runs trained at once, in threads (a run uses about one "
                                     "CPU core; results do not depend on this)"})
    learned_mse: float = field(
        default=0.1, metadata={"help": "a run whose best evaluation MSE is below this learned "
                                       "the task (the baseline is 1/6)"})
    quick: bool = field(
        default=False,
        metadata={"help": f"smoke test: the first {QUICK_SEED_COUNT} seeds, {QUICK_STEPS} steps, "
                          f"recorded every {QUICK_EVAL_EVERY}, sequences of at most "
                          f"{QUICK_SEQUENCE_LENGTH} steps, one worker"})

    def __post_init__(self):
        check_seeds("seeds", self.seeds)
        check_values("methods", self.methods, partial(check_one_of, choices=METHODS))
        check_values("learning_rates", self.learning_rates, check_positive)
        for name in ("steps", "eval_every", "hidden", "batch_size", "eval_examples", "workers",
                     "sequence_length"):
            check_positive_int(name, getattr(self, name))
        if self.sequence_length < 2:
            raise ValueError(f"sequence_length must be >= 2 (one marker in each half). "
                             f"Received: sequence_length={self.sequence_length!r}")
        check_in_range("eval_every", self.eval_every, 1, self.steps)
        for name in ("clip_value", "clip_norm", "adaptive_ratio"):
            check_positive(name, getattr(self, name))
        check_in_range("learned_mse", self.learned_mse, 0.0, BASELINE_MSE, lo_open=True,
                       hi_open=True)

    def resolved(self) -> Config:
        """This config with the ``--quick`` caps applied (what actually runs and is saved)."""
        if not self.quick:
            return self
        # One worker: a quick run is mostly compiling, and each worker compiles its own models.
        return dataclasses.replace(self, seeds=self.seeds[:QUICK_SEED_COUNT],
                                   steps=min(self.steps, QUICK_STEPS),
                                   eval_every=min(self.eval_every, QUICK_EVAL_EVERY),
                                   sequence_length=min(self.sequence_length,
                                                       QUICK_SEQUENCE_LENGTH), workers=1)


def adding_problem(rng: np.random.Generator, examples: int, length: int):
    """``examples`` sequences of the adding problem: inputs ``[examples, length, 2]`` (value,
    marker) and targets ``[examples, 1]`` (the sum of the two marked values)."""
    values = rng.uniform(0.0, 1.0, (examples, length)).astype(np.float32)
    rows = np.arange(examples)
    markers = np.zeros((examples, length), np.float32)
    markers[rows, rng.integers(0, length // 2, examples)] = 1.0
    markers[rows, rng.integers(length // 2, length, examples)] = 1.0
    targets = (values * markers).sum(axis=1, keepdims=True)
    return np.stack([values, markers], axis=-1), targets


def build_rnn(config: Config) -> keras.Model:
    # unroll: a fixed number of steps runs faster as one unrolled graph than as a while loop.
    return keras.Sequential([keras.Input((config.sequence_length, 2)),
                             keras.layers.SimpleRNN(config.hidden, unroll=True),
                             keras.layers.Dense(1)], name="simple_rnn")


def make_transform(method: str, config: Config):
    return {"none": None,
            "value": ClipByValue(-config.clip_value, config.clip_value),
            "norm": ClipByNorm(config.clip_norm),
            "global_norm": ClipByGlobalNorm(config.clip_norm),
            "adaptive": AdaptiveClip(config.adaptive_ratio)}[method]


class Recorded:
    """Wraps a gradient transform and keeps the global norm of what it returns (what the
    optimizer receives) in ``self.norm``, a variable the compiled step assigns."""

    def __init__(self, transform):
        self.transform = transform
        self.norm = tf.Variable(0.0, trainable=False, name="applied_grad_norm")

    def __call__(self, grads, params):
        if self.transform is not None:
            grads = self.transform(grads, params)
        self.norm.assign(global_norm(grads))
        return grads


class Method:
    """One clipping method's model, Adam and compiled step, reused by all its runs: each run
    sets the weights, resets Adam and assigns the learning rate, so nothing retraces."""

    def __init__(self, method: str, config: Config):
        self.model = build_rnn(config)
        self.optimizer = keras.optimizers.Adam(config.learning_rates[0])
        self.recorded = Recorded(make_transform(method, config))
        signature = (tf.TensorSpec([config.batch_size, config.sequence_length, 2], tf.float32),
                     tf.TensorSpec([config.batch_size, 1], tf.float32))
        self.step = make_train_step(self.model, keras.losses.MeanSquaredError(), self.optimizer,
                                    transform=self.recorded, input_signature=signature)
        self.fresh_optimizer = [v.numpy() for v in self.optimizer.variables]
        self.evaluate = tf.function(self._mse, input_signature=(
            tf.TensorSpec([config.eval_examples, config.sequence_length, 2], tf.float32),
            tf.TensorSpec([config.eval_examples, 1], tf.float32)))
        # Compile both here, in the main thread, rather than in the worker threads.
        self.step.trace()
        self.evaluate.get_concrete_function()

    def _mse(self, x, y):
        return tf.reduce_mean(tf.square(self.model(x, training=False) - y))

    def reset(self, weights, learning_rate: float):
        self.model.set_weights(weights)
        for variable, value in zip(self.optimizer.variables, self.fresh_optimizer, strict=True):
            variable.assign(value)
        self.optimizer.learning_rate = learning_rate
        self.step.skipped.assign(0)


def train_run(method: Method, name: str, seed: int, lr: float, weights, eval_set,
              config: Config, bar, stop: threading.Event | None = None) -> list[dict]:
    """Trains one (seed, method, learning rate) run; returns its metrics rows (none if
    ``stop`` is set before it ends: the run is abandoned)."""
    method.reset(weights, lr)
    rng = np.random.default_rng([seed, 1])  # the same batches for every method and lr
    x_eval, y_eval = eval_set
    rows, losses, pre_norms, post_norms = [], [], [], []
    initial_mse = float(method.evaluate(x_eval, y_eval))
    elapsed = 0.0
    for t in range(1, config.steps + 1):
        if stop is not None and stop.is_set():
            return []
        x, y = adding_problem(rng, config.batch_size, config.sequence_length)
        start = time.perf_counter()
        out = method.step(x, y)
        losses.append(float(out.loss))
        elapsed += time.perf_counter() - start
        pre_norms.append(float(out.grad_norm))
        post_norms.append(float(method.recorded.norm) if bool(out.applied) else 0.0)
        bar.update()
        if t % config.eval_every == 0 or t == config.steps:
            rows.append({
                "seed": seed, "method": name, "learning_rate": lr, "step": t,
                "train_loss": float(np.mean(losses)),
                "eval_mse": float(method.evaluate(x_eval, y_eval)),
                "initial_eval_mse": initial_mse,
                # nan (a non-finite gradient) counts as the spike it is
                "max_grad_norm": float(np.max(np.nan_to_num(pre_norms, nan=np.inf))),
                "median_grad_norm": float(np.median(pre_norms)),
                "max_applied_grad_norm": float(np.max(post_norms)),
                "skipped_steps": int(method.step.skipped.numpy()),
                "step_seconds": elapsed / t,
            })
            losses, pre_norms, post_norms = [], [], []
            bar.set_postfix(method=name, lr=lr, seed=seed, mse=f"{rows[-1]['eval_mse']:.3f}",
                            refresh=False)
    return rows


def train(config: Config, tensorboard=None) -> list[dict]:
    """Runs every (seed, method, learning rate) and returns the metrics rows (also written to
    ``tensorboard``, a ``TensorBoardLog``, if given).

    ``config.workers`` runs train at once, each in a thread with its own models (TensorFlow
    releases the GIL while it computes, and one small RNN keeps one core busy). A run's
    numbers do not depend on which worker trains it or when.
    """
    # Each seed's initial weights and evaluation set are drawn before anything is compiled:
    # keras.utils.set_random_seed clears TensorFlow's function caches (tf.random.set_seed).
    problems = {}
    for seed in config.seeds:
        keras.utils.set_random_seed(seed)
        eval_set = adding_problem(np.random.default_rng([seed, 2]), config.eval_examples,
                                  config.sequence_length)
        problems[seed] = (build_rnn(config).get_weights(), eval_set)
    runs = [(seed, lr, name) for seed in config.seeds for lr in config.learning_rates
            for name in config.methods]
    workers = min(config.workers, len(runs))
    free = queue.Queue()  # one set of compiled methods per worker
    for _ in range(workers):
        free.put({name: Method(name, config) for name in config.methods})
    stop = threading.Event()

    def work(seed, lr, name):
        methods = free.get()
        try:
            weights, eval_set = problems[seed]
            return train_run(methods[name], name, seed, lr, weights, eval_set, config, bar,
                             stop)
        finally:
            free.put(methods)

    with tqdm(total=len(runs) * config.steps, desc="adding problem", unit="step",
              dynamic_ncols=True, disable=None) as bar, \
            ThreadPoolExecutor(workers) as pool:  # the bar is quiet off a terminal
        futures = [pool.submit(work, *run) for run in runs]
        try:
            results = []
            for future in futures:  # in order; each run's rows go to TensorBoard when it ends
                results.append(future.result())
                for row in results[-1] if tensorboard is not None else ():
                    tensorboard.add(row)
        except BaseException:  # Ctrl-C, or a failed run: stop the others at once
            stop.set()
            for future in futures:
                future.cancel()
            raise
    return [row for rows in results for row in rows]


def outcome(run: list[dict], config: Config) -> str:
    """``diverged``, ``learned`` or ``stalled`` (see the module docstring)."""
    final = run[-1]["eval_mse"]
    if run[-1]["skipped_steps"] > 0 or not math.isfinite(final) or \
            final > run[0]["initial_eval_mse"]:
        return "diverged"
    if min(r["eval_mse"] for r in run) < config.learned_mse:
        return "learned"
    return "stalled"


_stats = partial(records.over_seeds, center="median")


def summarize(rows: list[dict], config: Config) -> dict:
    seconds_per_step = {
        name: float(np.median([
            run[-1]["step_seconds"] for lr in config.learning_rates
            for run in records.runs_by_seed(rows, method=name, learning_rate=lr).values()]))
        for name in config.methods}
    per_method = {}
    for name in config.methods:
        per_lr = {}
        for lr in config.learning_rates:
            runs = list(records.runs_by_seed(rows, method=name, learning_rate=lr).values())
            outcomes = [outcome(run, config) for run in runs]
            per_lr[str(lr)] = {
                "learning_rate": lr,
                "outcomes": {kind: outcomes.count(kind) for kind in OUTCOMES},
                "best_eval_mse": _stats(min(r["eval_mse"] for r in run) for run in runs),
                "final_eval_mse": _stats(run[-1]["eval_mse"] for run in runs),
                "max_grad_norm": _stats(max(r["max_grad_norm"] for r in run) for run in runs),
                # the typical size between spikes: the median over a run's intervals
                "median_grad_norm": _stats(np.median([r["median_grad_norm"] for r in run])
                                           for run in runs),
                "max_applied_grad_norm": _stats(max(r["max_applied_grad_norm"] for r in run)
                                                for run in runs),
                "skipped_steps": _stats(run[-1]["skipped_steps"] for run in runs),
            }
        learned = sum(entry["outcomes"]["learned"] for entry in per_lr.values())
        per_method[name] = {
            "learned_runs": learned,
            "diverged_runs": sum(entry["outcomes"]["diverged"] for entry in per_lr.values()),
            "runs": len(config.seeds) * len(config.learning_rates),
            "seconds_per_step": seconds_per_step[name],
            "cost_vs_none": (seconds_per_step[name] / seconds_per_step["none"]
                             if "none" in seconds_per_step else None),
            "per_learning_rate": per_lr,
        }
    ranking = sorted(config.methods, key=lambda name: (
        -per_method[name]["learned_runs"],
        float(np.median([e["best_eval_mse"]["median"]
                         for e in per_method[name]["per_learning_rate"].values()]))))
    best = ranking[0]
    cost = per_method[best]["cost_vs_none"]
    verdict = (f"Most runs learned with {best}" if per_method[best]["learned_runs"] else
               f"No run learned; {best} reached the lowest evaluation MSE")
    statement = (
        f"Over {len(config.seeds)} seeds x {len(config.learning_rates)} learning rates, "
        + "; ".join(f"{name}: {per_method[name]['learned_runs']}/{per_method[name]['runs']} "
                    f"learned, {per_method[name]['diverged_runs']} diverged"
                    for name in config.methods)
        + f". {verdict}"
        + (f", at {cost:.2f}x the time per step of no clipping." if cost is not None else "."))
    return {"statement": statement, "best_method": best, "ranking": ranking,
            "baseline_mse": BASELINE_MSE, "learned_mse": config.learned_mse,
            "seeds": list(config.seeds), "steps": config.steps, "methods": per_method}


def plot(rows: list[dict], config: Config, key: str, ylabel: str, title: str, path) -> Path:
    lrs = config.learning_rates
    fig, axes = records.subplots(1, len(lrs), figsize=(4.8 * len(lrs), 4.2), sharey=True,
                                 squeeze=False, layout="tight")
    # A diverged run's values (inf, or nan at a skipped step) are drawn at the plot's ceiling.
    ceiling = 10.0 if key == "eval_mse" else 1e6
    for ax, lr in zip(axes[0], lrs, strict=True):
        for name in config.methods:
            runs = list(records.runs_by_seed(rows, method=name, learning_rate=lr).values())
            values = np.array([[r[key] for r in run] for run in runs], dtype=float)
            values = np.minimum(np.nan_to_num(values, nan=ceiling, posinf=ceiling), ceiling)
            records.band(ax, [r["step"] for r in runs[0]], values, f"C{METHODS.index(name)}",
                         name, center=np.median, alpha=0.2)
        if key == "eval_mse":
            ax.axhline(BASELINE_MSE, color="black", linestyle="--", linewidth=1,
                       label="baseline (predict the mean)")
            ax.axhline(config.learned_mse, color="gray", linestyle=":", linewidth=1,
                       label="learned below this")
        else:
            ax.axhline(config.clip_norm, color="black", linestyle="--", linewidth=1,
                       label=f"clip_norm = {config.clip_norm:g}")
        ax.set_yscale("log")
        ax.set(title=f"Adam, learning rate {lr:g}", xlabel="training step")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel(ylabel)
    axes[0][-1].legend(loc="upper left", bbox_to_anchor=(1.01, 1))
    fig.suptitle(f"{title}: SimpleRNN({config.hidden}) on the adding problem, "
                 f"{config.sequence_length} steps; median and min-max over "
                 f"{len(config.seeds)} seeds (diverged values drawn at {ceiling:g})")
    return records.save_figure(fig, path)


def run(config: Config, folder, started=None) -> dict:
    with folder.tensorboard(("method", "learning_rate", "seed"), "step") as tensorboard:
        rows = train(config, tensorboard)
    summary = records.write_results(folder.path, rows, summarize(rows, config))
    plot(rows, config, "eval_mse", "evaluation MSE (log scale)", "Loss",
         folder.path / "loss.png")
    plot(rows, config, "max_grad_norm", "largest gradient norm before clipping, per interval",
         "Gradient spikes", folder.path / "grad_norm.png")
    return summary


def main(argv=None) -> dict:
    return run_experiment(Config, argv, name="clipping", run=run,
                          report=lambda config, summary, out: print(summary["statement"]))


if __name__ == "__main__":
    run_command(main)

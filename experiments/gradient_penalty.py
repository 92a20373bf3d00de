"""Gradient penalties as a defence: double backpropagation between clean and PGD training.

An input-gradient penalty ("double backpropagation", Drucker & LeCun 1992; Ross &
Doshi-Velez 2018) adds ``lambda * mean_i ||d CE_i / d x_i||^2`` to the loss, for one more
backward pass instead of PGD-7 training's seven attack steps. Where does such a model land
between a clean and a PGD-trained one, under FGSM and PGD at a small eps and at 0.3, and at
what cost? Four methods (``RECIPES``: ``clean``; ``l2``, is any regularizer enough?;
``input_gradient``; ``pgd``, Madry et al. 2018) train the same model from the same weights
per seed through ``attacks.adversarial_training.adversarial_train``. The coefficients come
from a sweep on held-out training digits (``--holdout``; the README gives it): the largest
whose clean accuracy stays within half a point of clean training's. Each model gets
``attacks.evaluation.robustness_curve``, whose masking checks apply up to its claimed radius
(0 for clean and l2, ``--small-eps`` for input_gradient, the trained eps for pgd). An epoch's
cost is the fastest after the first; ``cost_vs_clean`` its ratio to the same seed's clean run.

Writes ``config.json``, ``metrics.csv`` (per seed, method and epoch), ``summary.json`` (per
method: accuracies per eps over seeds, costs, warnings; ``statement``) and
``robustness.png`` (run folder: ``experiments.run_folder``).

References:
  Drucker, LeCun. Improving generalization performance using double backpropagation. IEEE
  Trans. Neural Networks 1992.
  Ross, Doshi-Velez. Improving the adversarial robustness and interpretability of deep neural
  networks by regularizing their input gradients. AAAI 2018. arXiv:1711.09404.
  Madry, Makelov, Schmidt, Tsipras, Vladu. Towards deep learning models resistant to
  adversarial attacks. ICLR 2018. arXiv:1706.06083.
  Athalye, Carlini, Wagner. Obfuscated gradients give a false sense of security. ICML 2018.
  arXiv:1802.00420.
"""

from __future__ import annotations

import dataclasses
from dataclasses import field
from functools import partial

import keras
import numpy as np

from attacks.adversarial_training import AdversarialTrainingConfig, adversarial_train
from attacks.evaluation import accuracy, robustness_curve
from attacks.mnist import SOURCES, default_source, load_mnist_arrays, resolve_mnist_source
from attacks.models import MODELS
from experiments import records
from experiments.cli import check_values, run_command
from experiments.skeleton import run_experiment
from lab.checks import (
    check_in_range,
    check_nonnegative_int,
    check_one_of,
    check_positive,
    check_positive_int,
    check_seeds,
)

METHODS = ("clean", "l2", "input_gradient", "pgd")

# AdversarialTrainingConfig fields per method. clean, l2 and input_gradient share one recipe
# (fgsm_mnist's clean one), so the penalty is the only difference. pgd keeps fgsm_mnist's PGD
# recipe (a constant learning rate: the README says why) with the eps ramp cut to 2 epochs,
# and one epoch more than the others, so that it trains two epochs at the full eps.
_CLEAN = {"method": "clean", "epochs": 3, "learning_rate": 2e-3, "lr_schedule": "cosine"}
RECIPES = {"clean": _CLEAN, "l2": _CLEAN, "input_gradient": _CLEAN,
           "pgd": {"method": "pgd", "epochs": 4, "eps_ramp_epochs": 2}}
INPUT_GRADIENT_PENALTY = 3.0  # lambda, from the sweep (module docstring)
WEIGHT_DECAY = 1e-3           # from the sweep

# The collapse guard of adversarial_train runs after every epoch of every method; small, as
# none of these methods is single-step adversarial training (the guard's purpose). Its
# PGD accuracy per epoch goes into metrics.csv as a robustness log.
GUARD = {"guard_examples": 256, "guard_pgd_steps": 5}

# --quick caps these so that a smoke test runs in seconds.
QUICK = {"seeds": 2, "epochs": 1, "train_examples": 1000, "curve_examples": 100,
         "pgd_steps": 10}


@dataclasses.dataclass(frozen=True)
class Config:
    """Every setting of the experiment; each field is a command-line flag."""
    source: str | None = field(default=None, metadata={
        "help": f"MNIST source, one of {SOURCES} (default: idx when --data-dir is given, "
                "else sample)"})
    data_dir: str | None = field(default=None, metadata={"help": "folder of MNIST IDX files"})
    out: str = field(default="results/gradient_penalty", metadata={"help": "output folder"})
    methods: tuple[str, ...] = field(default=METHODS, metadata={
        "help": f"training methods, from {METHODS}"})
    seeds: tuple[int, ...] = field(default=(0, 1, 2), metadata={
        "help": "seeds; each draws its own initial weights, data order and attack starts"})
    model: str = field(default="small_cnn", metadata={"help": f"one of {tuple(MODELS)}"})
    epochs: int | None = field(default=None, metadata={
        "help": "epochs for every method (default per method: "
                f"{ {m: r['epochs'] for m, r in RECIPES.items()} })"})
    train_examples: int | None = field(default=None, metadata={
        "help": "use the first this many training digits (default: all)"})
    holdout: int = field(default=0, metadata={
        "help": "hold out the last this many training digits and evaluate on them instead "
                "of the test split (for choosing coefficients; 0: evaluate on the test split)"})
    input_gradient_penalty: float = field(default=INPUT_GRADIENT_PENALTY, metadata={
        "help": "lambda of the input_gradient method"})
    weight_decay: float = field(default=WEIGHT_DECAY, metadata={
        "help": "L2 coefficient of the l2 method (Keras L2: sum of squared kernel weights)"})
    pgd_eps: float = field(default=0.3, metadata={"help": "training eps of the pgd method"})
    eval_eps: tuple[float, ...] = field(default=(0.0, 0.05, 0.1, 0.2, 0.3), metadata={
        "help": "eps values of the robustness curves"})
    small_eps: float = field(default=0.1, metadata={
        "help": "the small headline eps (in --eval-eps); input_gradient's claimed radius for "
                "the FGSM-PGD gap check"})
    large_eps: float = field(default=0.3, metadata={"help": "the large headline eps"})
    curve_examples: int = field(default=500, metadata={
        "help": "evaluation digits for the curves"})
    pgd_steps: int = field(default=20, metadata={"help": "steps of the evaluation PGD"})
    pgd_restarts: int = field(default=1, metadata={"help": "random starts of the evaluation PGD"})
    quick: bool = field(default=False, metadata={
        "help": f"smoke test: at most {QUICK['seeds']} seeds, {QUICK['epochs']} epoch, "
                f"{QUICK['train_examples']} training and {QUICK['curve_examples']} curve "
                f"digits, PGD-{QUICK['pgd_steps']}, eps 0, small and large only"})
    progress: bool = field(default=True, metadata={"help": "progress bars (on a terminal)"})

    def __post_init__(self):
        if self.source is not None:
            check_one_of("source", self.source, SOURCES)
        check_one_of("model", self.model, tuple(MODELS))
        check_values("methods", self.methods, partial(check_one_of, choices=METHODS))
        check_seeds("seeds", self.seeds)
        for name in ("epochs", "train_examples"):
            if getattr(self, name) is not None:
                check_positive_int(name, getattr(self, name))
        check_nonnegative_int("holdout", self.holdout)
        if self.train_examples is not None and self.holdout >= self.train_examples:
            raise ValueError(f"holdout must be below train_examples={self.train_examples}. "
                             f"Received: holdout={self.holdout}")
        for name in ("curve_examples", "pgd_steps", "pgd_restarts"):
            check_positive_int(name, getattr(self, name))
        check_positive("input_gradient_penalty", self.input_gradient_penalty)
        check_positive("weight_decay", self.weight_decay)
        check_values("eval_eps", self.eval_eps, partial(check_in_range, lo=0.0, hi=1.0),
                     increasing=True)
        for name in ("pgd_eps", "small_eps", "large_eps"):
            check_in_range(name, getattr(self, name), 0.0, 1.0, lo_open=True)
        for name in ("small_eps", "large_eps"):
            if getattr(self, name) not in self.eval_eps:
                raise ValueError(f"{name} must be one of eval_eps={self.eval_eps}. "
                                 f"Received: {name}={getattr(self, name)}")
        if self.small_eps >= self.large_eps:
            raise ValueError(f"small_eps must be below large_eps={self.large_eps}. "
                             f"Received: small_eps={self.small_eps}")
        for method in self.methods:  # the training settings, checked before anything runs
            training_config(method, self, self.seeds[0])

    @property
    def data_source(self) -> str:
        """``--source``, or what a folder given with ``--data-dir`` implies."""
        return default_source(self.source, self.data_dir)

    def resolved(self) -> Config:
        """This config with the ``--quick`` caps applied (what actually runs and is saved)."""
        if not self.quick:
            return self
        train = min(self.train_examples or QUICK["train_examples"], QUICK["train_examples"])
        return dataclasses.replace(
            self, seeds=self.seeds[:QUICK["seeds"]], epochs=QUICK["epochs"],
            train_examples=train, holdout=min(self.holdout, train // 2),
            curve_examples=min(self.curve_examples, QUICK["curve_examples"]),
            pgd_steps=min(self.pgd_steps, QUICK["pgd_steps"]),
            eval_eps=tuple(sorted({0.0, self.small_eps, self.large_eps})))


def training_config(method: str, config: Config, seed: int) -> AdversarialTrainingConfig:
    """The ``adversarial_train`` settings of ``method``: its recipe, ``--epochs`` if given,
    its coefficient, and the guard's eps (the pgd model's training eps; ``--small-eps`` for
    the others, which never train at an eps: there the guard is a robustness log)."""
    recipe = dict(RECIPES[method], **GUARD)
    recipe["epochs"] = config.epochs or recipe["epochs"]
    if method == "input_gradient":
        recipe["input_gradient_penalty"] = config.input_gradient_penalty
    if method == "l2":
        recipe["weight_decay"] = config.weight_decay
    eps = config.pgd_eps if recipe["method"] == "pgd" else config.small_eps
    return AdversarialTrainingConfig(eps=eps, seed=seed, **recipe)


def claimed_eps(method: str, trained_eps: float, config: Config) -> float:
    """The radius up to which the FGSM-PGD gap check applies (``attacks.evaluation``)."""
    return config.small_eps if method == "input_gradient" else trained_eps


def load_data(config: Config, source: str):
    """``(x_train, y_train), (x_eval, y_eval)``: the first ``train_examples`` training digits
    minus the last ``holdout``, and the held-out digits or else the test split."""
    x, y = load_mnist_arrays("train", source, config.data_dir)
    x, y = x[:config.train_examples], y[:config.train_examples]
    if config.holdout:
        if config.holdout >= len(x):
            raise ValueError(f"holdout must be below the {len(x)} training digits. "
                             f"Received: holdout={config.holdout}")
        cut = len(x) - config.holdout
        return (x[:cut], y[:cut]), (x[cut:], y[cut:])
    return (x, y), load_mnist_arrays("test", source, config.data_dir)


def _epoch_seconds(history) -> float:
    """The fastest epoch after the first (whose time includes tracing the step): on a shared
    machine the least disturbed one, the best estimate of what an epoch costs (as ``timeit``
    takes the minimum)."""
    seconds = [row["seconds"] for row in history]
    return min(seconds[1:] if len(seconds) > 1 else seconds)


def train_and_evaluate(config: Config, train, evaluation, tensorboard=None):
    """Every (seed, method) run, one seed after the other; returns ``(rows, runs)``: the
    metrics rows (also written to ``tensorboard``, a ``TensorBoardLog``, if given) and
    ``runs[method][seed]``, a dict of the run's results."""
    x_train, y_train = train
    x_eval, y_eval = evaluation
    curve_data = (x_eval[:config.curve_examples], y_eval[:config.curve_examples])
    # Initial weights of every seed first: keras.utils.set_random_seed calls tf.random.set_seed,
    # which clears TensorFlow's function caches: no seeding once anything is compiled.
    initial = {}
    for seed in config.seeds:
        keras.utils.set_random_seed(seed)
        initial[seed] = MODELS[config.model]().get_weights()
    # One model for every run: the attacks and the prediction function are compiled for it
    # once (a fresh model would cost seconds of tracing per run); each run resets its weights.
    # Nothing else in training is random: data order and attack starts come from the seed.
    model = MODELS[config.model]()
    rows, runs = [], {method: {} for method in config.methods}
    for seed in config.seeds:
        for method in config.methods:
            model.set_weights(initial[seed])
            training = training_config(method, config, seed)
            def log_epoch(epoch, model, row, seed=seed, method=method):
                if tensorboard is not None:
                    tensorboard.add({"seed": seed, "method": method, **row})

            result = adversarial_train(model, x_train, y_train, training,
                                       validation=(x_eval, y_eval), progress=config.progress,
                                       on_epoch_end=log_epoch)
            rows += [{"seed": seed, "method": method, "epoch": r["epoch"], "eps": r["eps"],
                      "loss": r["loss"], "clean_accuracy": r["clean_accuracy"],
                      "guard_eps": training.eps, "guard_pgd_accuracy": r["guard_pgd_accuracy"],
                      "seconds": r["seconds"], "collapsed": r["collapsed"]}
                     for r in result.history]
            claimed = claimed_eps(method, result.trained_eps, config)
            # FGSM and PGD only: the runs and README numbers predate the APGD worst case.
            curve = robustness_curve(model, curve_data, config.eval_eps, ("fgsm", "pgd"),
                                     pgd_steps=config.pgd_steps,
                                     pgd_restarts=config.pgd_restarts, seed=seed,
                                     claimed_eps=claimed)
            runs[method][seed] = {
                "clean_accuracy": accuracy(model, x_eval, y_eval),
                "fgsm": curve.accuracy["fgsm"], "pgd": curve.accuracy["pgd"],
                "seconds_per_epoch": _epoch_seconds(result.history),
                "mean_seconds_per_epoch": float(np.mean([r["seconds"] for r in result.history])),
                "first_epoch_seconds": result.history[0]["seconds"],
                "trained_eps": result.trained_eps, "claimed_eps": claimed,
                "collapsed": result.collapsed, "warnings": curve.warnings}
    return rows, runs


def _curve_spread(values: dict) -> dict:
    """Mean, min, max per eps and per-seed curves of ``{seed: [accuracy per eps]}``."""
    array = np.array(list(values.values()))
    return {"mean": array.mean(axis=0).tolist(), "min": array.min(axis=0).tolist(),
            "max": array.max(axis=0).tolist(),
            "per_seed": {str(s): list(v) for s, v in values.items()}}


def _over_seeds(per_seed: dict, key: str, spread=records.over_seeds) -> dict:
    """The ``spread`` over seeds of one result of the runs ``{seed: results}``."""
    return spread({seed: results[key] for seed, results in per_seed.items()})


def summarize(runs: dict, config: Config, record: dict) -> dict:
    """Per method: accuracies with spreads over seeds, cost, warnings; and the statement."""
    methods = {}
    for method, per_seed in runs.items():
        seeds = list(per_seed)
        entry = {
            "training": dataclasses.asdict(training_config(method, config, seeds[0])),
            "clean_accuracy": _over_seeds(per_seed, "clean_accuracy"),
            "fgsm": _over_seeds(per_seed, "fgsm", _curve_spread),
            "pgd": _over_seeds(per_seed, "pgd", _curve_spread),
            "seconds_per_epoch": _over_seeds(per_seed, "seconds_per_epoch"),
            "mean_seconds_per_epoch": _over_seeds(per_seed, "mean_seconds_per_epoch"),
            "first_epoch_seconds": _over_seeds(per_seed, "first_epoch_seconds"),
            "trained_eps": per_seed[seeds[0]]["trained_eps"],
            "claimed_eps": per_seed[seeds[0]]["claimed_eps"],
            "collapsed": {str(s): per_seed[s]["collapsed"] for s in seeds},
            "warnings": {str(s): per_seed[s]["warnings"] for s in seeds},
        }
        if "clean" in runs:
            ratios = [per_seed[s]["seconds_per_epoch"] / runs["clean"][s]["seconds_per_epoch"]
                      for s in seeds]
            entry["cost_vs_clean"] = records.over_seeds(dict(zip(seeds, ratios)), "median")
        methods[method] = entry
    return {**record, "seeds": list(config.seeds), "eps": list(config.eval_eps),
            "curve_examples": min(config.curve_examples, record["eval_examples"]),
            "attacks": {"fgsm": "FGSM, true labels",
                        "pgd": f"PGD-{config.pgd_steps}, step 2.5 eps / {config.pgd_steps}, "
                               f"{config.pgd_restarts} random start(s), true labels"},
            "methods": methods, "statement": statement(methods, config)}


def statement(methods: dict, config: Config) -> dict:
    """Where input_gradient lands between clean and pgd under PGD at the small and the large
    eps: the accuracies (mean and min-max over seeds), the fraction of the clean-to-pgd gap
    it closes, the costs, and the masking-check warnings. Needs those three methods."""
    if not {"clean", "input_gradient", "pgd"} <= set(methods):
        return {"text": "needs the methods clean, input_gradient and pgd"}
    eps_index = {eps: config.eval_eps.index(eps) for eps in (config.small_eps, config.large_eps)}
    result, parts = {}, []
    for eps, i in eps_index.items():
        at = {m: {k: methods[m]["pgd"][k][i] for k in ("mean", "min", "max")} for m in methods}
        gap = at["pgd"]["mean"] - at["clean"]["mean"]
        closed = (at["input_gradient"]["mean"] - at["clean"]["mean"]) / gap if gap > 0 else None
        result[f"eps_{eps:g}"] = {"pgd_accuracy": at, "fraction_of_gap_closed": closed}
        shown = ", ".join(f"{m} {_percent(at[m])}" for m in methods)
        parts.append(f"At eps {eps:g} under PGD-{config.pgd_steps}: {shown}"
                     + (f"; input_gradient closes {closed:.0%} of the clean-to-pgd gap"
                        if closed is not None else "; pgd is no better than clean here"))
    clean = {m: {k: methods[m]["clean_accuracy"][k] for k in ("mean", "min", "max")}
             for m in methods}
    cost = {m: methods[m]["cost_vs_clean"]["median"] for m in methods}
    warnings = {m: sum(len(w) for w in methods[m]["warnings"].values()) for m in methods}
    split = "held-out" if config.holdout else "test"
    parts.insert(0, f"Clean {split} accuracy: " + ", ".join(f"{m} {_percent(clean[m])}"
                                                          for m in methods))
    parts.append("Training cost per epoch relative to clean (median over seeds): "
                 + ", ".join(f"{m} {cost[m]:.2f}x" for m in methods if m != "clean"))
    parts.append("Masking-check warnings: " + ", ".join(f"{m} {warnings[m]}" for m in methods))
    return {**result, "clean_accuracy": clean, "cost_vs_clean": cost, "warnings": warnings,
            "text": ". ".join(parts) + "."}


def _percent(spread: dict) -> str:
    return (f"{100 * spread['mean']:.1f}% ({100 * spread['min']:.1f}-"
            f"{100 * spread['max']:.1f})")


def plot(summary: dict, config: Config, path):
    methods = summary["methods"]
    fig, axes = records.subplots(1, 3, figsize=(15, 4.4), layout="constrained",
                                 gridspec_kw={"width_ratios": [1, 1, 0.7]})
    eps = summary["eps"]
    for i, (method, entry) in enumerate(methods.items()):
        for ax, attack in zip(axes[:2], ("fgsm", "pgd")):
            records.band(ax, eps, 100 * np.array(list(entry[attack]["per_seed"].values())),
                         f"C{i}", method, alpha=0.2, marker="o", ms=3)
    for ax, attack in zip(axes[:2], ("fgsm", "pgd")):
        ax.set(title=f"{summary['attacks'][attack].split(',')[0]}: accuracy on "
                     f"{summary['curve_examples']} digits",
               xlabel="L-infinity eps (pixel scale 0-1)", ylabel="accuracy (%)", ylim=(0, 100))
        for x in (config.small_eps, config.large_eps):  # the statement's two radii
            ax.axvline(x, color="k", lw=0.6, ls=":")
        ax.grid(alpha=0.3)
    axes[0].legend(loc="lower left")
    if all("cost_vs_clean" in entry for entry in methods.values()):
        names = list(methods)
        cost = [methods[m]["cost_vs_clean"] for m in names]
        medians = [c["median"] for c in cost]
        axes[2].bar(names, medians, color=[f"C{i}" for i in range(len(names))],
                    yerr=[[m - c["min"] for m, c in zip(medians, cost)],
                          [c["max"] - m for m, c in zip(medians, cost)]], capsize=4)
        axes[2].set(title="training cost per epoch",
                    ylabel="seconds / clean's, same seed (median, min-max)")
        axes[2].tick_params(axis="x", labelrotation=20)
        axes[2].grid(alpha=0.3, axis="y")
    else:
        axes[2].axis("off")
    fig.suptitle(f"Gradient penalties vs PGD training on MNIST ({config.model}, "
                 f"{summary['train_examples']} training digits): mean and min-max over "
                 f"{len(summary['seeds'])} seeds", fontsize=10)
    records.save_figure(fig, path)


def start(config: Config):
    """The data, checked (unreadable data fails here, before anything is written)."""
    source = resolve_mnist_source(config.data_source, config.data_dir)
    train, evaluation = load_data(config, source)
    if len(train[0]) < AdversarialTrainingConfig.batch_size:
        raise ValueError(f"training needs at least one batch of "
                         f"{AdversarialTrainingConfig.batch_size} digits. Received: "
                         f"{len(train[0])} training digits")
    record = {"data_source": source, "train_examples": len(train[0]),
              "evaluated_on": "holdout" if config.holdout else "test",
              "eval_examples": len(evaluation[0])}
    return (train, evaluation, record), {
        **record, "training": {m: dataclasses.asdict(training_config(m, config, 0))
                               for m in config.methods}}


def run(config: Config, folder, started) -> dict:
    train, evaluation, record = started
    with folder.tensorboard(("method", "seed"), "epoch") as tensorboard:
        rows, runs = train_and_evaluate(config, train, evaluation, tensorboard)
    summary = records.write_results(folder.path, rows, summarize(runs, config, record))
    plot(summary, config, folder.path / "robustness.png")
    return summary


def report(config: Config, summary: dict, out) -> None:
    small, large = (config.eval_eps.index(e) for e in (config.small_eps, config.large_eps))
    for method, entry in summary["methods"].items():
        fgsm, pgd = entry["fgsm"]["mean"], entry["pgd"]["mean"]
        print(f"{method:15s} clean {entry['clean_accuracy']['mean']:.4f}  "
              f"eps {config.small_eps:g}: fgsm {fgsm[small]:.4f} pgd {pgd[small]:.4f}  "
              f"eps {config.large_eps:g}: fgsm {fgsm[large]:.4f} pgd {pgd[large]:.4f}  "
              f"{entry['seconds_per_epoch']['mean']:.2f} s/epoch")
    print(summary["statement"]["text"])


def main(argv=None) -> dict:
    return run_experiment(Config, argv, name="gradient_penalty", start=start, run=run,
                          report=report)


if __name__ == "__main__":
    run_command(main)

"""Adversarial training on MNIST and an honest robustness evaluation.

    python -m experiments.fgsm_mnist --source sample --out DIR

Trains a clean model and one model per adversarial-training method (``--methods``, default
every method of ``attacks.adversarial_training``: ``DEFAULT_METHODS``) at
L-infinity radius ``--eps`` (0.3), once per seed of ``--seeds`` (0 1 2), then evaluates each
model at the training eps on the first ``--eval-examples`` test digits: clean accuracy, FGSM,
PGD-40 (steps of 2.5 eps / 40) with ``--restarts`` random restarts, and the worst case over
APGD-CE and APGD-T (``attacks.evaluation.worst_case``); ``--attacks`` names fewer. The first
seed's models also get the robustness curve (the same attacks across ``--eval-eps``, on
``--curve-examples`` test digits). ``--train-examples`` trains on the first digits of the
training split only. Every method has its own training recipe (``RECIPES``). Every evaluation
runs the gradient-masking sanity checks of ``attacks.evaluation``; failures are listed under
``warnings`` (per seed) and ``curve_warnings`` in the summary.

Writes into DIR (default ``results/fgsm_mnist/``): ``config.json`` (with the data source
actually used), ``metrics.csv`` (per method, seed and epoch: eps, loss, clean test accuracy,
PGD accuracy on a fixed training batch, seconds), ``summary.json`` (per method: the mean,
min and max over seeds of ``clean_accuracy``, ``fgsm_accuracy``, ``pgd_accuracy``,
``worst_case_accuracy`` and ``seconds_per_epoch``, the seeds that collapsed, the robustness
``curve``, and every seed's results under ``per_seed``), ``robustness_curve.png``,
``adversarial_examples.png``, ``training_curves.png``, and
``models/<method>_seed<seed>.keras``.

The run is written into ``DIR.partial/`` and moved over DIR only when complete, so DIR always
holds one whole run. Metrics are written there after every epoch, and the training state of
the run in training is checkpointed after every epoch (``progress/<method>_seed<seed>/``,
beside the finished runs' results in ``progress/progress.json``); ``--resume`` continues an
interrupted or killed run from there, losing at most the epoch in progress, and ends with the
numbers of a run that was never stopped (wall times aside); Ctrl-C stops at the end of the
epoch. Under ``--strategy multi_worker`` every worker runs the same command with
``--resume``: the chief reopens its partial folder, and the other workers copy it once the
chief has (``experiments.skeleton``), so that all restore the same state; ``--out`` must be
readable by every worker.

``--quick`` (a smoke test: its time is in the README) trains one seed on at most 1,000 digits
for two epochs and evaluates on at most 100 at eps 0 and ``--eps``, with a quarter of the
worst case's budget (``QUICK``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
from dataclasses import field

import keras
import numpy as np

from attacks.adversarial_training import (
    LR_SCHEDULES,
    METHODS,
    STRATEGIES,
    AdversarialTrainingConfig,
    adversarial_train,
    checkpoint_history,
    is_chief,
    make_strategy,
)
from attacks.evaluation import (
    ATTACKS,
    accuracy,
    fgsm_accuracy,
    pgd_accuracy,
    robustness_curve,
    sanity_warnings,
    worst_case_accuracy,
)
from attacks.mnist import SOURCES, default_source, load_mnist_arrays, resolve_mnist_source
from attacks.models import MODELS
from attacks.pgd import default_step_size, pgd
from experiments.atomic import atomic_path
from experiments.cli import check_values, run_command
from experiments.interrupts import interrupts_deferred
from experiments.records import (
    over_seeds,
    runs_by_seed,
    save_figure,
    subplots,
    write_csv,
    write_results,
)
from experiments.run_folder import PROGRESS
from experiments.skeleton import run_experiment
from lab.checks import check_in_range, check_nonnegative_int, check_one_of, check_positive_int

# Training recipe per method: AdversarialTrainingConfig fields over its defaults (Adam 1e-3,
# batch 64, eps ramped over 5 epochs), chosen on the 8,000-digit sample with small_cnn: the
# clean model trains with cosine decay and 2-pixel shifts; PGD training keeps batch 64, no
# shifts and a constant rate. The README ("Adversarial training on MNIST") gives the runs
# behind each choice as commands.
RECIPES = {
    "clean": {"epochs": 16, "learning_rate": 2e-3, "lr_schedule": "cosine", "shift": 2},
    "fgsm": {"epochs": 10},
    "fgsm_rs": {"epochs": 10},
    "n_fgsm": {"epochs": 10},
    "grad_align": {"epochs": 10},
    "pgd": {"epochs": 20},
}
# The methods a run trains unless --methods says otherwise: every one, so the headline table
# covers each over the seeds (their costs per epoch: README, Benchmarks).
DEFAULT_METHODS = METHODS
DEFAULT_EPOCHS = {method: recipe["epochs"] for method, recipe in RECIPES.items()}

# The evaluation attack: PGD-40 with steps of attacks.pgd.default_step_size (2.5 eps / 40,
# 0.01875 at eps 0.3), stronger here than Madry et al.'s step of 0.01 (README, "Adversarial
# training on MNIST").
PGD_STEPS = 40
# The worst case's APGD-T target classes (AutoAttack's standard suite: 9; the 3 classes the
# model ranks next after its top one hold most of the successes).
WORST_CASE_TARGETS = 3
# --quick: a smoke test on the first 1,000 training and 100 test digits.
# Its worst case runs a quarter of the full budget: a smoke test of the code path (the summary
# names the budget), not a measurement.
QUICK = {"train": 1000, "test": 100, "epochs": 2, "curve_examples": 100, "restarts": 1,
         "worst_case_steps": 25, "worst_case_targeted_steps": 10}


@dataclasses.dataclass(frozen=True)
class ExperimentConfig:
    source: str | None = field(default=None, metadata={
        "help": f"MNIST source, one of {SOURCES} (default: idx when --data-dir is given, "
                "else sample)"})
    data_dir: str | None = field(default=None, metadata={"help": "folder of MNIST IDX files"})
    out: str = field(default="results/fgsm_mnist", metadata={"help": "output folder"})
    methods: tuple[str, ...] = field(default=DEFAULT_METHODS, metadata={
        "help": f"training methods, from {METHODS}"})
    model: str = field(default="small_cnn", metadata={"help": f"one of {tuple(MODELS)}"})
    eps: float = field(default=0.3, metadata={"help": "training and headline eps"})
    epochs: int | None = field(default=None, metadata={
        "help": f"epochs for every method (default per method: {DEFAULT_EPOCHS})"})
    eval_eps: tuple[float, ...] = field(default=(0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35),
                                        metadata={"help": "eps values of the curve"})
    curve_examples: int = field(default=500, metadata={"help": "test digits for the curve"})
    restarts: int = field(default=3, metadata={"help": "PGD-40 restarts at the training eps"})
    attacks: tuple[str, ...] = field(default=ATTACKS, metadata={
        "help": f"the evaluation's attacks, from {ATTACKS} (the worst case costs most)"})
    worst_case_steps: int = field(default=100, metadata={
        "help": "the worst case's APGD-CE iterations (AutoAttack: 100)"})
    worst_case_targeted_steps: int = field(default=40, metadata={
        "help": "the worst case's APGD-T iterations per target class (3 classes)"})
    seeds: tuple[int, ...] = field(default=(0, 1, 2), metadata={
        "help": "one model per method and seed (each seeds data order, weights, attacks); the "
                "headline is the mean and range over seeds"})
    eval_examples: int = field(default=1000, metadata={
        "help": "test digits of the headline evaluation at --eps (at most the test split)"})
    train_examples: int | None = field(default=None, metadata={
        "help": "train on the first this many training digits (default: all of them)"})
    batch_size: int | None = field(default=None, metadata={
        "help": "override every method's recipe (RECIPES): examples per step"})
    learning_rate: float | None = field(default=None, metadata={
        "help": "override every method's recipe: Adam learning rate"})
    lr_schedule: str | None = field(default=None, metadata={
        "help": f"override every method's recipe: one of {LR_SCHEDULES}"})
    shift: int | None = field(default=None, metadata={
        "help": "override every method's recipe: random shifts of up to this many pixels"})
    n_fgsm_noise: float | None = field(default=None, metadata={
        "help": "override n_fgsm's noise radius, times eps (default 2)"})
    n_fgsm_step: float | None = field(default=None, metadata={
        "help": "override n_fgsm's step, times eps (default 1)"})
    grad_align_lambda: float | None = field(default=None, metadata={
        "help": "override grad_align's penalty weight (default 0.2)"})
    quick: bool = field(default=False, metadata={"help": "smoke test: small and short"})
    resume: bool = field(default=False, metadata={
        "help": "continue the interrupted run in <out>.partial from its last checkpoint"})
    progress: bool = field(default=True, metadata={"help": "progress bars (on a terminal)"})
    strategy: str = field(default="default", metadata={
        "help": f"one of {STRATEGIES}: one device; every device of this machine; or the "
                "workers of TF_CONFIG, each running this same command (the chief writes --out)"})

    def __post_init__(self):
        check_one_of("strategy", self.strategy, STRATEGIES)
        if self.source is not None:
            check_one_of("source", self.source, SOURCES)
        check_one_of("model", self.model, tuple(MODELS))
        check_values("methods", self.methods, functools.partial(check_one_of, choices=METHODS))
        check_in_range("eps", self.eps, 0.0, 1.0, lo_open=True)
        if self.epochs is not None:
            check_positive_int("epochs", self.epochs)
        check_positive_int("curve_examples", self.curve_examples)
        check_positive_int("restarts", self.restarts)
        check_values("attacks", self.attacks, functools.partial(check_one_of, choices=ATTACKS))
        check_positive_int("worst_case_steps", self.worst_case_steps)
        check_positive_int("worst_case_targeted_steps", self.worst_case_targeted_steps)
        check_values("seeds", self.seeds, check_nonnegative_int)
        check_positive_int("eval_examples", self.eval_examples)
        if self.train_examples is not None:
            check_positive_int("train_examples", self.train_examples)
        check_values("eval_eps", self.eval_eps, functools.partial(check_in_range, lo=0.0, hi=1.0),
                     increasing=True)
        # The training settings are checked where they are used, before anything trains.
        for method in self.methods:
            training_config(method, self)

    def resolved(self) -> ExperimentConfig:
        """This config with the ``--quick`` caps applied (what actually runs and is saved)."""
        if not self.quick:
            return self
        return dataclasses.replace(
            self, epochs=self.epochs or QUICK["epochs"], restarts=QUICK["restarts"],
            curve_examples=min(self.curve_examples, QUICK["curve_examples"]),
            eval_eps=(0.0, self.eps), seeds=self.seeds[:1],
            eval_examples=min(self.eval_examples, QUICK["test"]),
            train_examples=min(self.train_examples or QUICK["train"], QUICK["train"]),
            worst_case_steps=QUICK["worst_case_steps"],
            worst_case_targeted_steps=QUICK["worst_case_targeted_steps"])

    @property
    def data_source(self) -> str:
        """``--source``, or what a folder given with ``--data-dir`` implies."""
        return default_source(self.source, self.data_dir)


# The flags that override a training setting of every recipe: the ExperimentConfig fields
# that AdversarialTrainingConfig shares, except the ones every method takes as they are.
RECIPE_OVERRIDES = tuple(
    sorted(({f.name for f in dataclasses.fields(ExperimentConfig)}
            & {f.name for f in dataclasses.fields(AdversarialTrainingConfig)})
           - {"epochs", "eps", "seed", "seeds"}))


def workers(config: ExperimentConfig):
    """Under ``--strategy multi_worker``: whether this process is the chief, and a barrier
    over the workers (``experiments.skeleton``)."""
    strategy = _strategy(config.strategy)  # first: before any other TensorFlow op
    if config.strategy == "multi_worker":
        return is_chief(strategy), functools.partial(_barrier, strategy)
    return None


_strategy = functools.cache(make_strategy)  # one per process


def _barrier(strategy, value: float) -> float:
    """Returns, once every worker of ``strategy`` has called it, the sum of their values."""
    import tensorflow as tf

    total = strategy.reduce(tf.distribute.ReduceOp.SUM,
                            strategy.run(lambda: tf.constant(value)), axis=None)
    return float(total.numpy())


def start(config: ExperimentConfig):
    """The data (unreadable data fails here, before anything is written)."""
    source = resolve_mnist_source(config.data_source, config.data_dir)
    n_train, n_test = config.train_examples, (QUICK["test"] if config.quick else None)
    x_train, y_train = (a[:n_train] for a in load_mnist_arrays("train", source,
                                                                config.data_dir))
    x_test, y_test = (a[:n_test] for a in load_mnist_arrays("test", source, config.data_dir))
    for name, split, size in (("train_examples", "training", len(x_train)),
                              ("eval_examples", "test", len(x_test)),
                              ("curve_examples", "test", len(x_test))):
        if not config.quick and (getattr(config, name) or 0) > size:  # --quick's are caps
            raise ValueError(f"{name} must be at most the {size:,} digits of the {split} "
                             f"split. Received: {name}={getattr(config, name)}")
    return ((x_train, y_train), (x_test, y_test), source), {
        "data_source": source, "train_examples": len(x_train), "test_examples": len(x_test),
        "training": {m: dataclasses.asdict(training_config(m, config)) for m in config.methods}}


def run(config: ExperimentConfig, folder, started) -> dict:
    """Trains and evaluates every (method, seed) not finished yet, writes the results into
    ``folder`` and returns the summary per method."""
    (x_train, y_train), (x_test, y_test), source = started
    strategy = _strategy(config.strategy)
    # Runs finished before an interruption: their metrics rows and results.
    done = folder.progress({"rows": [], "runs": {}})
    rows, runs = done["rows"], done["runs"]
    x_eval, y_eval = x_test[:config.eval_examples], y_test[:config.eval_examples]
    with folder.tensorboard(("method", "seed"), "epoch", rows) as tensorboard:
        for method in config.methods:
            for seed in config.seeds:
                if run_name(method, seed) in runs:
                    continue
                model, result = train(method, seed, config, folder, tensorboard, rows,
                                      strategy, (x_train, y_train), (x_test, y_test))
                model = evaluation_model(config.model, model)
                outcome = evaluate(model, x_eval, y_eval, config, seed, result.trained_eps)
                outcome.update(
                    seconds_per_epoch=sum(r["seconds"] for r in result.history) / len(
                        result.history),
                    epochs_trained=len(result.history), collapsed=result.collapsed,
                    collapsed_at_epoch=result.collapsed_at_epoch,
                    restored_epoch=result.best_epoch)
                if seed == config.seeds[0]:  # one curve per method: the first seed's
                    n = config.curve_examples
                    curve = robustness_curve(model, (x_test[:n], y_test[:n]), config.eval_eps,
                                             config.attacks, seed=seed,
                                             claimed_eps=result.trained_eps,
                                             worst_case_options=worst_case_budget(config))
                    outcome["curve"] = {"examples": curve.examples, "eps": curve.eps_values,
                                        **curve.accuracy}
                    outcome["curve_warnings"] = curve.warnings
                runs[run_name(method, seed)] = outcome
                rows += [{"method": method, "seed": seed, **r} for r in result.history]
                folder.save_progress({"rows": rows, "runs": runs})  # drops the checkpoint
    summary = summarize(runs, config)
    write_results(folder.path, rows, {"eps": config.eps, "data_source": source,
                                      "seeds": list(config.seeds), **summary})
    models = {}
    for method in config.methods:
        path = saved_model(folder.path, method, config.seeds[0])
        with folder.reading(path):
            models[method] = keras.models.load_model(path)
    plot_robustness(summary["methods"], config, folder.path / "robustness_curve.png")
    plot_training(rows, config, folder.path / "training_curves.png")
    plot_examples(models, x_test, y_test, config, folder.path / "adversarial_examples.png")
    return summary["methods"]


def evaluation_model(architecture: str, model):
    """The model of ``architecture`` that evaluates every trained one in this process, holding
    ``model``'s weights: the attacks are compiled once per model object
    (``lab.compile_cache``), so one evaluating model traces them once per run rather than once
    per method and seed. The same weights through the same layers: the same numbers."""
    evaluator = _evaluator(architecture)
    evaluator.set_weights(model.get_weights())
    return evaluator


@functools.cache
def _evaluator(architecture: str):
    return MODELS[architecture]()


def run_name(method: str, seed: int) -> str:
    return f"{method}/seed_{seed}"


def saved_model(folder, method: str, seed: int):
    return folder / "models" / f"{method}_seed{seed}.keras"


def train(method, seed, config, folder, tensorboard, rows, strategy, train_data, test_data):
    """Trains ``method`` with ``seed`` from its checkpoint, if an interrupted run left one,
    writing metrics as it goes; saves the model; returns ``(model, TrainingResult)``."""
    keras.utils.set_random_seed(seed)
    with strategy.scope() if strategy is not None else contextlib.nullcontext():
        model = MODELS[config.model]()
    # Replaced by the next save_progress, once the run is done.
    checkpoint = folder.path / PROGRESS / f"{method}_seed{seed}"
    with folder.reading(checkpoint):
        run_rows = [{"method": method, "seed": seed, **r}
                    for r in checkpoint_history(checkpoint)]
    for row in run_rows:  # epochs a resumed run restores
        tensorboard.add(row)
    with interrupts_deferred() as deferred:
        def save_epoch(epoch, model, row):
            run_rows.append({"method": method, "seed": seed, **row})
            write_csv(folder.path / "metrics.csv", rows + run_rows)
            tensorboard.add(run_rows[-1])
            deferred.raise_if_received()  # a Ctrl-C stops here: the epoch is saved

        result = adversarial_train(
            model, *train_data, training_config(method, config, seed), validation=test_data,
            progress=config.progress, on_epoch_end=save_epoch, checkpoint=checkpoint,
            strategy=strategy)
    with atomic_path(saved_model(folder.path, method, seed)) as tmp:
        model.save(tmp)
    return model, result


# The per-seed numbers the summary gives as mean, min and max over seeds (the attacks' of
# them: those of ``--attacks``).
HEADLINE = ("clean_accuracy", "fgsm_accuracy", "pgd_accuracy", "worst_case_accuracy",
            "seconds_per_epoch")


def headline(config: ExperimentConfig) -> tuple[str, ...]:
    """The ``HEADLINE`` numbers a run of ``config`` measures."""
    measured = {f"{attack}_accuracy" for attack in ("clean", *config.attacks)}
    return tuple(key for key in HEADLINE if key in measured or not key.endswith("_accuracy"))


def summarize(runs: dict, config: ExperimentConfig) -> dict:
    """Per method: each ``HEADLINE`` number over seeds (``records.over_seeds``), the seeds
    that collapsed, the first seed's curve, and every seed's results."""
    methods = {}
    for method in config.methods:
        per_seed = {seed: runs[run_name(method, seed)] for seed in config.seeds}
        first = per_seed[config.seeds[0]]
        methods[method] = {
            **{key: over_seeds({s: r[key] for s, r in per_seed.items()})
               for key in headline(config)},
            "epochs": training_config(method, config, config.seeds[0]).epochs,
            "collapsed_seeds": [s for s, r in per_seed.items() if r["collapsed"]],
            "trained_eps": min(r["trained_eps"] for r in per_seed.values()),
            "examples": first["examples"],
            **{attack: first[attack] for attack in ("pgd", "worst_case") if attack in first},
            "curve": first["curve"],
            "curve_warnings": first["curve_warnings"],
            "warnings": {str(s): r["warnings"] for s, r in per_seed.items()},
            "per_seed": {str(s): r for s, r in per_seed.items()},
        }
    return {"methods": methods}


def report(config: ExperimentConfig, summary: dict, out) -> None:
    for method, s in summary.items():
        print(f"{method:8s} " + "  ".join(
            f"{key.split('_')[0]} {s[key]['mean']:.4f}" for key in headline(config)[:-1])
            + f"  {s['seconds_per_epoch']['mean']:.1f} s/epoch"
            + (f"  COLLAPSED (seeds {s['collapsed_seeds']})" if s["collapsed_seeds"] else ""))


def main(argv=None) -> dict:
    return run_experiment(ExperimentConfig, argv, name="fgsm_mnist", start=start, run=run,
                          resumable=True, report=report, workers=workers)


def training_config(method: str, config: ExperimentConfig,
                    seed: int | None = None) -> AdversarialTrainingConfig:
    """The method's recipe; ``--epochs`` (else ``--quick``'s two) and the other override flags
    win. ``config``: resolved (``ExperimentConfig.resolved``)."""
    recipe = dict(RECIPES[method])
    recipe["epochs"] = config.epochs or recipe["epochs"]
    for name in RECIPE_OVERRIDES:
        if getattr(config, name) is not None:
            recipe[name] = getattr(config, name)
    seed = config.seeds[0] if seed is None else seed
    return AdversarialTrainingConfig(method=method, eps=config.eps, seed=seed, **recipe)


def worst_case_budget(config) -> dict:
    """``attacks.evaluation.worst_case``'s budget options under ``config``."""
    return {"steps": config.worst_case_steps, "targets": WORST_CASE_TARGETS,
            "targeted_steps": config.worst_case_targeted_steps}


def evaluate(model, x, y, config, seed, trained_eps) -> dict:
    """Headline accuracies at the experiment's eps on the evaluation digits: clean and each of
    ``--attacks`` (FGSM, PGD-40 with restarts, the APGD worst case of
    ``attacks.evaluation.worst_case``); the masking checks' gap check applies up to
    ``trained_eps``, the eps the model's weights were trained at (the ramp and a collapse
    guard's restore both count)."""
    eps = config.eps
    measure = {
        "fgsm": lambda: fgsm_accuracy(model, x, y, eps),
        "pgd": lambda: pgd_accuracy(model, x, y, eps, steps=PGD_STEPS,
                                    restarts=config.restarts, seed=seed),
        "worst_case": lambda: worst_case_accuracy(model, x, y, eps, seed=seed,
                                                  **worst_case_budget(config)),
    }
    described = {
        "pgd": f"PGD-{PGD_STEPS}, step {default_step_size(eps, PGD_STEPS):g}, "
               f"{config.restarts} restart(s), eps {eps}",
        "worst_case": f"APGD-CE {config.worst_case_steps} iterations, then APGD-T on the "
                      f"targeted DLR loss toward {WORST_CASE_TARGETS} classes, "
                      f"{config.worst_case_targeted_steps} iterations each, eps {eps}",
    }
    clean = accuracy(model, x, y)
    attacked = {attack: measure[attack]() for attack in config.attacks}
    return {"clean_accuracy": clean,
            **{f"{attack}_accuracy": value for attack, value in attacked.items()},
            **{attack: described[attack] for attack in config.attacks if attack in described},
            "examples": len(x), "trained_eps": trained_eps,
            "warnings": sanity_warnings(
                [0.0, eps], {attack: [clean, value] for attack, value in attacked.items()},
                len(x), claimed_eps=trained_eps)}


def plot_robustness(methods, config, path):
    fig, ax = subplots(figsize=(7.5, 4.8))
    for i, (method, summary) in enumerate(methods.items()):
        curve = summary["curve"]
        for attack, style, label in (("fgsm", "--", "FGSM"), ("pgd", ":", "PGD-40"),
                                     ("worst_case", "-", "worst case")):
            if attack not in config.attacks:
                continue
            ax.plot(curve["eps"], [100 * a for a in curve[attack]], style, color=f"C{i}",
                    marker="o", ms=3, label=f"{method} model, {label}")
    ax.axvline(config.eps, color="k", lw=0.8, ls=":", label=f"training eps {config.eps:g}")
    examples = next(iter(methods.values()))["curve"]["examples"]
    ax.set(title=f"Robust accuracy on {examples} MNIST test digits ({config.model}, seed "
                 f"{config.seeds[0]})",
           xlabel="L-infinity eps (pixel scale 0-1)", ylabel="accuracy (%)", ylim=(0, 100))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6, ncol=3, loc="lower left")
    save_figure(fig, path)


def plot_training(rows, config, path):
    fig, axes = subplots(1, 3, figsize=(13, 3.8), layout="constrained")
    for i, method in enumerate(dict.fromkeys(r["method"] for r in rows)):
        # One line per seed (a collapse can end a seed early), one colour per method.
        for k, mine in enumerate(runs_by_seed(rows, method=method).values()):
            epochs = [r["epoch"] for r in mine]
            for ax, key, scale in ((axes[0], "loss", 1), (axes[1], "clean_accuracy", 100),
                                   (axes[2], "guard_pgd_accuracy", 100)):
                ax.plot(epochs, [scale * r[key] for r in mine], marker="o", ms=2, lw=1,
                        color=f"C{i}", label=method if k == 0 else None)
    axes[0].set(title="training loss", xlabel="epoch", ylabel="cross-entropy")
    axes[1].set(title="clean test accuracy", xlabel="epoch", ylabel="accuracy (%)")
    axes[2].set(title=f"PGD-10 accuracy, fixed training batch, eps {config.eps:g}",
                xlabel="epoch", ylabel="accuracy (%)", ylim=(0, 100))
    for ax in axes:
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.suptitle(f"Adversarial training on MNIST, seeds {list(config.seeds)} (the guard's "
                 "batch shows catastrophic overfitting as a collapse)", fontsize=10)
    save_figure(fig, path)


def plot_examples(models, x, y, config, path, count: int = 6):
    method = "pgd" if "pgd" in models else next(iter(models))
    shown = {"clean": models.get("clean"), method: models[method]}
    shown = {k: v for k, v in shown.items() if v is not None}
    fig, axes = subplots(3 * len(shown), count, figsize=(1.6 * count, 5.2 * len(shown)),
                         layout="constrained")
    axes = np.atleast_2d(axes)
    for block, (name, model) in enumerate(shown.items()):
        model = evaluation_model(config.model, model)
        xb, yb = x[:count], y[:count]
        adv = pgd(model, xb, yb, config.eps, steps=PGD_STEPS,
                  step_size=default_step_size(config.eps, PGD_STEPS),
                  seed=config.seeds[0]).numpy()
        clean_pred = np.argmax(model(xb, training=False), -1)
        adv_pred = np.argmax(model(adv, training=False), -1)
        for j in range(count):
            panels = ((xb[j], f"{name}: {clean_pred[j]}", "gray", (0, 1)),
                      (adv[j] - xb[j], "perturbation", "seismic", (-config.eps, config.eps)),
                      (adv[j], f"PGD: {adv_pred[j]}", "gray", (0, 1)))
            for k, (image, title, cmap, (lo, hi)) in enumerate(panels):
                ax = axes[3 * block + k, j]
                ax.imshow(image[..., 0], cmap=cmap, vmin=lo, vmax=hi)
                wrong = k == 2 and adv_pred[j] != yb[j]
                ax.set_title(title, fontsize=8, color="red" if wrong else "black")
                ax.axis("off")
    fig.suptitle(f"Clean digits, PGD-40 perturbations (eps {config.eps:g}) and adversarial "
                 "digits, with each model's prediction (red: wrong)", fontsize=9)
    save_figure(fig, path)


if __name__ == "__main__":
    run_command(main)

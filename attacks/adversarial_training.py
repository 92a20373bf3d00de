"""Adversarial training on image batches, with a guard against catastrophic overfitting.

Methods (``AdversarialTrainingConfig.method``), each one fused, compiled training step
(``lab.training.make_train_step`` with the attack as its ``perturb``: the attack calls the
model with ``training=False``, the update with ``training=True``):

- ``"clean"``: plain training.
- ``"fgsm"``: Goodfellow et al. 2015: the loss is ``0.5 L(x) + 0.5 L(x_fgsm)``, taken as the
  mean over one batch of clean and FGSM examples.
- ``"fgsm_rs"``: Wong et al. 2020's fast recipe: FGSM from a uniform random start in the
  eps-ball with step ``1.25 eps``, training on the adversarial examples only.
- ``"n_fgsm"``: de Jorge et al. 2022's N-FGSM: uniform noise in ``[-k eps, k eps]``
  (``n_fgsm_noise`` k = 2), then one signed step of ``n_fgsm_step`` eps (1) from the noisy
  point, *not* projected back onto the eps-ball (only into [0, 1]): the training point may lie
  up to 3 eps away. The stronger noise, not a projection, is what keeps single-step training
  from catastrophic overfitting, at the cost of one gradient, as FGSM-RS.
- ``"grad_align"``: Andriushchenko & Flammarion 2020's GradAlign: FGSM from ``x`` (no random
  start, step eps), trained on the FGSM examples alone, plus ``grad_align_lambda *
  mean_i (1 - cos(g_i(x), g_i(x + eta)))``, the input gradients of the clean example's
  cross-entropy at ``x`` (a constant) and at a uniform random ``x + eta`` of the eps-ball
  (``lab.regularizers.GradientAlignmentPenalty``). It keeps the loss locally linear, which
  FGSM's step assumes; the penalty's double backpropagation costs about two more passes.
- ``"pgd"``: Madry et al. 2018: training on PGD examples (random start, ``pgd_steps`` steps
  of ``2.5 eps / pgd_steps``).

``eps_ramp_epochs`` grows eps linearly over the first epochs (a common stabilizer on MNIST).

Any method can carry penalties on top of its loss (``training_penalties``; both off by
default, and then the step is exactly the one without them):

- ``input_gradient_penalty`` (lambda): double backpropagation (Drucker & LeCun 1992; Ross &
  Doshi-Velez 2018), ``lambda * mean_i ||d CE_i / d x_i||^2`` with the per-example
  cross-entropy ``CE_i`` (``lab.regularizers.InputGradientPenalty``), on the batch the method
  trains on (adversarial examples included). It flattens the loss around the data, so
  ``"clean"`` with this penalty is a defence that costs a second forward and backward pass and
  the backward pass through them, not an attack's many steps.
- ``weight_decay``: ``weight_decay * sum(w**2)`` over the kernels, biases left out
  (``lab.regularizers.WeightPenalty(l2=...)``, Keras's ``L2`` convention, no factor 1/2).

The training loss in the history is the whole objective, penalties included.

Single-step methods at eps = 0.3 on MNIST can overfit catastrophically: within an epoch the
model learns to mask its gradient, FGSM accuracy soars and PGD accuracy falls to a few percent
(Wong et al. 2020). The guard measures PGD accuracy on a fixed training batch after every
epoch; when it drops more than ``collapse_drop`` below its best, training stops, the weights
of the best epoch are restored, and the result records the collapse. It watches every method,
``"clean"`` too (at ``eps``, where a clean model never trains: there it is a robustness log
that fires only if PGD accuracy there falls by ``collapse_drop``, penalties or not).

References:
  Goodfellow, Shlens, Szegedy. Explaining and harnessing adversarial examples. ICLR 2015.
  arXiv:1412.6572.
  Madry, Makelov, Schmidt, Tsipras, Vladu. Towards deep learning models resistant to
  adversarial attacks. ICLR 2018. arXiv:1706.06083.
  Wong, Rice, Kolter. Fast is better than free: revisiting adversarial training. ICLR 2020.
  arXiv:2001.03994.
  de Jorge, Bibi, Volpi, Sanyal, Torr, Rogez, Dokania. Make some noise: reliable and
  efficient single-step adversarial training. NeurIPS 2022. arXiv:2202.01181.
  Andriushchenko, Flammarion. Understanding and improving fast adversarial training.
  NeurIPS 2020. arXiv:2007.02617.
  Drucker, LeCun. Improving generalization performance using double backpropagation. IEEE
  Trans. Neural Networks 1992.
  Ross, Doshi-Velez. Improving the adversarial robustness and interpretability of deep neural
  networks by regularizing their input gradients. AAAI 2018. arXiv:1711.09404.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Callable
from dataclasses import field
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from attacks.evaluation import accuracy, pgd_accuracy
from attacks.fgsm import cross_entropy, gradient_step
from attacks.pgd import default_step_size, pgd_steps
from attacks.validation import check_labels, check_nonempty_batch, num_classes
from lab.ball import uniform_in_ball
from lab.checks import (
    check_in_range,
    check_nonnegative_int,
    check_one_of,
    check_positive,
    check_positive_int,
)
from lab.regularizers import GradientAlignmentPenalty, InputGradientPenalty, WeightPenalty
from lab.training import make_train_step

METHODS = ("clean", "fgsm", "fgsm_rs", "n_fgsm", "grad_align", "pgd")
LR_SCHEDULES = ("constant", "cosine", "step")


@dataclasses.dataclass(frozen=True)
class AdversarialTrainingConfig:
    """Every setting of one adversarial training run."""
    method: str = field(default="pgd", metadata={"help": f"one of {METHODS}"})
    eps: float = field(default=0.3, metadata={"help": "L-infinity radius of training attacks"})
    epochs: int = field(default=20, metadata={"help": "passes over the training set"})
    batch_size: int = field(default=64, metadata={"help": "examples per step"})
    learning_rate: float = field(default=1e-3, metadata={"help": "Adam learning rate"})
    lr_schedule: str = field(default="constant", metadata={
        "help": f"one of {LR_SCHEDULES}: constant; cosine decay to 0; step: a tenth for the "
                "last quarter of the steps"})
    eps_ramp_epochs: int = field(default=5, metadata={"help": "linear eps warm-up (0: none)"})
    fgsm_rs_step: float = field(default=1.25, metadata={"help": "fgsm_rs step, times eps"})
    n_fgsm_noise: float = field(default=2.0, metadata={
        "help": "n_fgsm noise radius, times eps"})
    n_fgsm_step: float = field(default=1.0, metadata={"help": "n_fgsm step, times eps"})
    grad_align_lambda: float = field(default=0.2, metadata={
        "help": "grad_align's penalty weight (the paper's 0.2 at CIFAR-10's eps 8/255)"})
    pgd_steps: int = field(default=7, metadata={"help": "PGD steps for method pgd"})
    shift: int = field(default=0, metadata={
        "help": "random translation of training images by up to this many pixels (0: none)"})
    guard_examples: int = field(default=512, metadata={"help": "fixed batch for the guard"})
    guard_pgd_steps: int = field(default=10, metadata={"help": "PGD steps of the guard"})
    collapse_drop: float = field(default=0.3, metadata={
        "help": "guard PGD accuracy drop below its best that counts as collapse"})
    input_gradient_penalty: float = field(default=0.0, metadata={
        "help": "lambda of double backpropagation: lambda * mean ||d CE_i / d x_i||^2 added to "
                "the loss (0: off)"})
    weight_decay: float = field(default=0.0, metadata={
        "help": "L2 penalty weight_decay * sum(w**2) on the kernels, biases excluded "
                "(Keras L2 convention; 0: off)"})
    seed: int = field(default=0, metadata={"help": "shuffling and random starts"})

    def __post_init__(self):
        check_one_of("method", self.method, METHODS)
        check_one_of("lr_schedule", self.lr_schedule, LR_SCHEDULES)
        check_in_range("eps", self.eps, 0.0, 1.0)
        for name in ("epochs", "batch_size", "pgd_steps", "guard_examples", "guard_pgd_steps"):
            check_positive_int(name, getattr(self, name))
        check_positive("learning_rate", self.learning_rate)
        for name in ("fgsm_rs_step", "n_fgsm_noise", "n_fgsm_step"):
            check_positive(name, getattr(self, name))
        check_in_range("collapse_drop", self.collapse_drop, 0.0, 1.0, lo_open=True)
        for name in ("input_gradient_penalty", "weight_decay", "grad_align_lambda"):
            # An infinite weight: NaN steps.
            check_in_range(name, getattr(self, name), 0.0, math.inf, hi_open=True)
        for name in ("shift", "eps_ramp_epochs", "seed"):
            check_nonnegative_int(name, getattr(self, name))

    def eps_at(self, epoch: int) -> float:
        """Training eps in ``epoch`` (0-based), after the ramp; 0 for ``"clean"``."""
        if self.method == "clean":
            return 0.0
        if self.eps_ramp_epochs == 0:
            return self.eps
        return self.eps * min(1.0, (epoch + 1) / self.eps_ramp_epochs)

    @property
    def final_eps(self) -> float:
        """The largest eps the run trains at: the radius a trained model can claim
        (``attacks.evaluation``'s ``claimed_eps``). Below ``eps`` when the ramp is longer
        than the run; 0 for ``"clean"``."""
        return self.eps_at(self.epochs - 1)


def training_penalties(config: AdversarialTrainingConfig, eps=None, seed=None) -> tuple:
    """The ``lab.training.make_train_step`` penalties of ``config``: an
    ``InputGradientPenalty`` (per-example cross-entropy, scale ``input_gradient_penalty``) and
    a kernel-only ``WeightPenalty(l2=weight_decay)``, each only when its coefficient is > 0,
    so that a config without penalties compiles the same step as before they existed; for
    ``"grad_align"``, its ``GradientAlignmentPenalty`` in the ball of radius ``eps`` (a
    ``tf.Variable``), its random points drawn from the step counter ``seed``."""
    penalties = []
    if config.method == "grad_align":
        if eps is None or seed is None:
            raise ValueError("grad_align's penalty needs the trainer's eps and seed variables "
                             f"(AdversarialTrainer builds them). Received: eps={eps!r}, "
                             f"seed={seed!r}")
        draw = lambda: tf.random.experimental.stateless_fold_in(_attack_seed(config, seed), 1)
        penalties.append(GradientAlignmentPenalty(cross_entropy, config.grad_align_lambda, eps,
                                                  draw))
    if config.input_gradient_penalty > 0:
        penalties.append(InputGradientPenalty(cross_entropy, config.input_gradient_penalty))
    if config.weight_decay > 0:
        penalties.append(WeightPenalty(l2=config.weight_decay))
    return tuple(penalties)


class CollapseGuard:
    """Tracks a robustness score per epoch; keeps the best weights; flags a collapse when the
    score falls more than ``drop`` below its best."""

    def __init__(self, drop: float):
        self.drop = drop
        self.best_score = -np.inf
        self.best_epoch = None
        self.best_weights = None

    def update(self, epoch: int, score: float, model) -> bool:
        """Records ``score``; returns True on collapse."""
        if score > self.best_score:
            self.best_score, self.best_epoch = score, epoch
            self.best_weights = [w.copy() for w in model.get_weights()]
            return False
        return self.best_score - score > self.drop

    def restore(self, model):
        model.set_weights(self.best_weights)


@dataclasses.dataclass
class TrainingResult:
    history: list[dict]           # one row per epoch
    collapsed: bool               # the guard fired
    collapsed_at_epoch: int | None
    best_epoch: int | None        # the epoch whose weights the model holds after a collapse

    @property
    def trained_eps(self) -> float:
        """The eps of the epoch whose weights the model holds: the radius it can claim
        (``attacks.evaluation``'s ``claimed_eps``). After a collapse that is the restored
        epoch's eps, which is below ``config.final_eps`` while the ramp was still rising."""
        epoch = self.best_epoch if self.collapsed else len(self.history)
        return self.history[epoch - 1]["eps"]


def make_perturb(model, config: AdversarialTrainingConfig, eps: tf.Variable,
                 seed: tf.Variable) -> Callable | None:
    """The attack of ``config.method`` as ``perturb(x, y) -> (x', y')`` for a train step."""
    method = config.method
    if method == "clean":
        return None

    def perturb(x, y):
        stateless_seed = _attack_seed(config, seed)
        if method == "grad_align":  # FGSM from x; the penalty is in training_penalties
            return gradient_step(model, x, x, y, eps, eps), y
        if method == "fgsm":
            adversarial = gradient_step(model, x, x, y, eps, eps)
            # 0.5 clean + 0.5 adversarial loss = the mean over both halves of one batch.
            return tf.concat([x, adversarial], 0), tf.concat([y, y], 0)
        if method == "fgsm_rs":
            start = uniform_in_ball(x, eps, stateless_seed, (0.0, 1.0))
            return gradient_step(model, start, x, y, eps, config.fgsm_rs_step * eps), y
        if method == "n_fgsm":
            noise, step = config.n_fgsm_noise * eps, config.n_fgsm_step * eps
            start = uniform_in_ball(x, noise, stateless_seed, (0.0, 1.0))
            # A ball of noise + step never binds: no projection, only the clip into [0, 1].
            return gradient_step(model, start, x, y, noise + step, step), y
        step = default_step_size(eps, config.pgd_steps)
        return pgd_steps(model, x, y, eps, config.pgd_steps, step, stateless_seed), y

    return perturb


def _attack_seed(config: AdversarialTrainingConfig, seed: tf.Variable) -> tf.Tensor:
    """The stateless seed of this step's random draws: ``config.seed`` and the step counter."""
    stateless_seed = tf.stack([tf.constant(config.seed, tf.int64), seed.read_value()])
    # Under a distribution strategy every replica runs this with the same counter: fold the
    # replica id in, or all replicas would draw the same random starts. Replica 0 (and a
    # single device) keeps the seed as it is.
    replica = tf.cast(tf.distribute.get_replica_context().replica_id_in_sync_group, tf.int64)
    return tf.where(replica > 0,
                    tf.random.experimental.stateless_fold_in(stateless_seed, replica),
                    stateless_seed)


class AdversarialTrainer:
    """The compiled training step of ``config.method`` on ``model`` and the epoch around it.

    ``adversarial_train`` is the usual entry point; this class is for loops of one's own (the
    benchmark runs several methods batch by batch in turn, so that they share machine noise).

    Args:
      model: a built Keras classifier returning logits (created under ``strategy.scope()``
        when a strategy is given).
      config: an ``AdversarialTrainingConfig``.
      num_examples: training-set size (sets the learning-rate schedule's length).
      strategy: optional ``tf.distribute.Strategy``.
    """

    def __init__(self, model, config: AdversarialTrainingConfig, *, num_examples: int,
                 strategy=None):
        check_positive_int("num_examples", num_examples)
        self.model, self.config = model, config
        self.strategy = strategy or tf.distribute.get_strategy()
        self.steps_per_epoch = num_examples // config.batch_size
        if self.steps_per_epoch == 0:
            raise ValueError(f"num_examples must be at least batch_size={config.batch_size}. "
                             f"Received: num_examples={num_examples}")
        distributed = self.strategy.num_replicas_in_sync > 1
        with self.strategy.scope():
            self._eps = tf.Variable(config.eps_at(0), trainable=False, dtype=tf.float32)
            self._seed = tf.Variable(0, trainable=False, dtype=tf.int64)
            self.optimizer = keras.optimizers.Adam(learning_rate_schedule(
                config.learning_rate, config.lr_schedule, config.epochs * self.steps_per_epoch))
            self.step = make_train_step(model, cross_entropy, self.optimizer,
                                        perturb=make_perturb(model, config, self._eps,
                                                             self._seed),
                                        penalties=training_penalties(config, self._eps,
                                                                     self._seed),
                                        strategy=self.strategy if distributed else None)

    def start_epoch(self, epoch: int):
        """Sets the training eps of ``epoch`` (0-based): ``config.eps_at(epoch)``."""
        self._eps.assign(self.config.eps_at(epoch))

    def train_step(self, x, y):
        """One compiled step on a batch (a fresh random start for the attack each call);
        returns the ``lab.training.StepOutput``."""
        self._seed.assign_add(1)
        return self.step(x, y)

    def batches(self, x, y, rng: np.random.Generator):
        """``(x, y)`` shuffled by ``rng``, shifted per ``config.shift``, in full batches (one
        batch shape: one trace; the last partial batch is dropped). ``y``: integer labels
        (``attacks.validation.check_labels``)."""
        y = check_labels(y, len(x), num_classes(self.model))
        order = rng.permutation(len(x))
        images = random_shift(x[order], self.config.shift, rng)
        batches = tf.data.Dataset.from_tensor_slices((images, y[order])).batch(
            self.config.batch_size, drop_remainder=True)
        if self.strategy.num_replicas_in_sync > 1:
            batches = self.strategy.experimental_distribute_dataset(batches)
        return batches

    def train_epoch(self, x, y, epoch: int, rng: np.random.Generator,
                    on_step: Callable | None = None) -> tuple[float, float]:
        """One pass over ``(x, y)`` (see ``batches``) at ``config.eps_at(epoch)``.

        Returns:
          ``(mean loss, seconds)``; the seconds cover the training steps only.
        """
        self.start_epoch(epoch)
        batches = self.batches(x, y, rng)
        start, losses = time.perf_counter(), []
        for xb, yb in batches:
            losses.append(self.train_step(xb, yb).loss)
            if on_step is not None:
                on_step()
        seconds = time.perf_counter() - start
        return float(np.mean([float(v) for v in losses])), seconds


def adversarial_train(model, x, y, config: AdversarialTrainingConfig, *, validation=None,
                      strategy=None, progress: bool = False,
                      on_epoch_end: Callable | None = None, checkpoint=None) -> TrainingResult:
    """Trains ``model`` in place on ``(x, y)`` with ``config.method``.

    Args:
      model: a built Keras classifier returning logits (created under ``strategy.scope()``
        when a strategy is given).
      x: training images, float32 in [0, 1]; y: integer labels, one per image (float labels
        only if whole numbers: ``attacks.validation.check_labels``).
      config: an ``AdversarialTrainingConfig``.
      validation: optional ``(x, y)`` whose clean accuracy is logged every epoch (checked
        like ``x, y``, before training starts).
      strategy: optional ``tf.distribute.Strategy``: ``MirroredStrategy`` (the devices of one
        machine) or ``MultiWorkerMirroredStrategy`` (processes on one or several machines,
        from ``TF_CONFIG``; each worker calls this function with the same arguments and trains
        on its shard of every global batch of ``config.batch_size``).
      progress: show tqdm progress bars (on a terminal only).
      on_epoch_end: optional ``on_epoch_end(epoch, model, row)`` called after each epoch
        (``epoch`` is 1-based), after the guard and the checkpoint: on a collapse
        ``row["collapsed"]`` is True and ``model`` already holds the restored best weights.
        The experiment saves its metrics there, and may stop there (a deferred Ctrl-C): the
        epoch is already checkpointed.
      checkpoint: optional folder. After every epoch the whole training state is saved there
        (``tf.train.Checkpoint``: weights, optimizer, attack seed, the guard's best weights;
        and as JSON the history, the data order's random state, the guard's score), replacing
        the previous save only once complete. If it holds a checkpoint of the same config,
        training continues from it and ends with the weights and history an uninterrupted
        run would have had: at most the epoch in progress is lost. Deleted during training,
        it is not recreated: the next save raises. Under a multi-worker strategy only the
        chief writes it (``is_chief``).

    Returns:
      A ``TrainingResult``; each history row has ``epoch``, ``eps``, ``loss``,
      ``clean_accuracy`` (on ``validation``, else NaN), ``guard_pgd_accuracy`` (PGD on the
      fixed training batch at the full eps), ``seconds`` (training time of the epoch) and
      ``collapsed``.

    Raises:
      ValueError: labels that are not one integer class per example (``y`` or
        ``validation``'s), or ``checkpoint`` holds the state of a run with another config
        or model, or cannot be read.
      FileNotFoundError: ``checkpoint`` was deleted during training.
    """
    x = np.asarray(x, np.float32)
    classes = num_classes(model)
    y = check_labels(y, len(x), classes)  # np.asarray(y, np.int32) would truncate 3.7 to 3
    if validation is not None:  # checked now, not after the first epoch
        x_val, y_val = validation
        check_nonempty_batch(x_val)
        validation = (x_val, check_labels(y_val, len(x_val), classes,
                                          name="validation labels"))
    trainer = AdversarialTrainer(model, config, num_examples=len(x), strategy=strategy)
    rng = np.random.default_rng(config.seed)
    guard_index = rng.choice(len(x), size=min(config.guard_examples, len(x)), replace=False)
    guard = CollapseGuard(config.collapse_drop)
    history, collapsed_at = [], None
    saved = None if checkpoint is None else _Checkpoint(checkpoint, config, trainer)
    if saved is not None and saved.latest is not None:
        history, collapsed_at = saved.restore(rng, guard)
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=config.epochs * trainer.steps_per_epoch, unit="step",
                   initial=len(history) * trainer.steps_per_epoch, desc=config.method,
                   dynamic_ncols=True, leave=False, disable=None)
    try:
        for epoch in range(len(history), config.epochs if collapsed_at is None else 0):
            loss, seconds = trainer.train_epoch(x, y, epoch, rng,
                                                on_step=bar.update if bar is not None else None)
            guard_accuracy = pgd_accuracy(model, x[guard_index], y[guard_index], config.eps,
                                          steps=config.guard_pgd_steps, seed=config.seed)
            row = {"epoch": epoch + 1, "eps": config.eps_at(epoch), "loss": loss,
                   "clean_accuracy": (accuracy(model, *validation) if validation is not None
                                      else float("nan")),
                   "guard_pgd_accuracy": guard_accuracy, "seconds": seconds}
            if bar is not None:
                bar.set_postfix(clean=f"{row['clean_accuracy']:.3f}",
                                pgd=f"{guard_accuracy:.3f}")
            history.append(row)
            row["collapsed"] = guard.update(epoch + 1, guard_accuracy, model)
            if row["collapsed"]:
                collapsed_at = epoch + 1
                guard.restore(model)
            # The checkpoint holds the history: stopped anywhere, a resume redoes at most this
            # epoch, and the callback sees an epoch that is already saved.
            if saved is not None:
                saved.save(rng, guard, history, collapsed_at)
            if on_epoch_end is not None:
                on_epoch_end(epoch + 1, model, row)
            if row["collapsed"]:
                break
    finally:
        if bar is not None:
            bar.close()
    return TrainingResult(history, collapsed_at is not None, collapsed_at,
                          guard.best_epoch if collapsed_at is not None else None)


STRATEGIES = ("default", "mirrored", "multi_worker")


def make_strategy(name: str):
    """The ``tf.distribute`` strategy called ``name``: ``"default"`` (one device, no
    strategy: ``None``), ``"mirrored"`` (every device of this machine) or ``"multi_worker"``
    (``MultiWorkerMirroredStrategy``: the processes listed in ``TF_CONFIG``, each running
    the same program). Create it first thing in the program, before other TensorFlow ops,
    as ``MultiWorkerMirroredStrategy`` requires."""
    check_one_of("strategy", name, STRATEGIES)
    if name == "default":
        return None
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    return tf.distribute.MultiWorkerMirroredStrategy()


def is_chief(strategy) -> bool:
    """Whether this process writes checkpoints: always, except under a multi-worker strategy,
    where only the chief does (the task of type ``"chief"``, else worker 0). Every worker
    holds the same state after each step, so one copy is the whole of it; on several
    machines, put the checkpoint folder on storage the workers share, so that a restart
    resumes all of them from it."""
    resolver = getattr(strategy, "cluster_resolver", None)
    cluster = resolver.cluster_spec().as_dict() if resolver is not None else {}
    if not cluster:
        return True
    if "chief" in cluster:
        return resolver.task_type == "chief"
    return resolver.task_type == "worker" and resolver.task_id == 0


class _Checkpoint:
    """``adversarial_train``'s ``checkpoint`` folder: a ``tf.train.CheckpointManager`` keeping
    the latest save (complete before the previous one is dropped: a crash mid-save leaves
    that one whole), the rest of the state as a JSON string variable."""

    def __init__(self, path, config, trainer):
        self.path, self.writes = Path(path), is_chief(trainer.strategy)
        self.config = json.loads(json.dumps(dataclasses.asdict(config)))
        # Plain variables (not the strategy's): saved and restored by every worker alike.
        self.state = tf.Variable("", trainable=False)
        self.guard_weights = [tf.Variable(w, trainable=False)
                              for w in trainer.model.get_weights()]
        self.checkpoint = tf.train.Checkpoint(
            model=trainer.model, optimizer=trainer.optimizer, attack_seed=trainer._seed,
            guard_weights=self.guard_weights, state=self.state)
        if self.writes:
            self.path.mkdir(parents=True, exist_ok=True)
        self.manager = tf.train.CheckpointManager(self.checkpoint, str(self.path), max_to_keep=1)
        self.latest = tf.train.latest_checkpoint(str(self.path))
        if self.latest is None and (self.path / "state.json").exists():
            raise ValueError(f"checkpoint holds a checkpoint of an earlier gradlab, which this "
                             f"one cannot read; delete it to start over. Received: "
                             f"checkpoint={str(self.path)!r}")

    def save(self, rng, guard, history, collapsed_at):
        if not self.writes:
            return
        if not self.path.is_dir():  # removed under the run: not recreated
            raise FileNotFoundError(f"the checkpoint folder {self.path} was deleted while "
                                    f"training; training stops without writing there")
        if guard.best_weights is not None:
            for variable, value in zip(self.guard_weights, guard.best_weights):
                variable.assign(value)
        self.state.assign(json.dumps({
            "config": self.config, "history": history, "collapsed_at": collapsed_at,
            "data_rng": rng.bit_generator.state, "guard": {
                "best_score": guard.best_score, "best_epoch": guard.best_epoch,
                "has_weights": guard.best_weights is not None}}))
        self.manager.save()

    def restore(self, rng, guard):
        """Puts the latest save back; returns ``(history, collapsed_at)``."""
        state = _saved_state(self.latest)
        if state.get("config") != self.config:
            raise ValueError(f"checkpoint must come from a run with the same config. "
                             f"Received: checkpoint={str(self.path)!r}, saved with config "
                             f"{state.get('config')}")
        try:
            self.checkpoint.restore(self.latest).assert_existing_objects_matched()
        except (tf.errors.OpError, AssertionError, ValueError) as error:
            raise ValueError(f"{self.latest}: not a checkpoint of this model and optimizer "
                             f"({error})") from None
        rng.bit_generator.state = state["data_rng"]
        guard.best_score = state["guard"]["best_score"]
        guard.best_epoch = state["guard"]["best_epoch"]
        guard.best_weights = ([w.numpy() for w in self.guard_weights]
                              if state["guard"]["has_weights"] else None)
        return state["history"], state["collapsed_at"]


def _saved_state(prefix) -> dict:
    try:
        return json.loads(tf.train.load_checkpoint(prefix).get_tensor(
            "state/.ATTRIBUTES/VARIABLE_VALUE"))
    except (tf.errors.OpError, ValueError) as error:
        raise ValueError(f"{prefix}: checkpoint unreadable ({error})") from None


def checkpoint_history(path) -> list[dict]:
    """The history rows of the epochs saved in an ``adversarial_train`` checkpoint (empty if
    ``path`` holds none): what a resumed run has already done.

    Raises:
      ValueError: the checkpoint cannot be read.
    """
    latest = tf.train.latest_checkpoint(str(path)) if Path(path).is_dir() else None
    return [] if latest is None else _saved_state(latest)["history"]


def learning_rate_schedule(learning_rate: float, kind: str, total_steps: int):
    """``"constant"``, ``"cosine"`` (to 0 over ``total_steps``) or ``"step"`` (a tenth for the
    last quarter: a one-step form of the piecewise decay common in adversarial training; Rice
    et al. 2020, arXiv:2002.11569, decay at half and at three quarters)."""
    check_one_of("kind", kind, LR_SCHEDULES)
    if kind == "cosine":
        return keras.optimizers.schedules.CosineDecay(learning_rate, total_steps)
    if kind == "step":
        return keras.optimizers.schedules.PiecewiseConstantDecay(
            [int(0.75 * total_steps)], [learning_rate, learning_rate / 10])
    return learning_rate


def random_shift(images, shift: int, rng: np.random.Generator):
    """Each image translated by a uniform offset in ``[-shift, shift]`` pixels per axis, the
    border filled with zeros: the classic MNIST augmentation, a cheap guard against
    overfitting an 8,000-image training set."""
    if shift == 0:
        return images
    n, h, w = images.shape[:3]
    padded = np.pad(images, ((0, 0), (shift, shift), (shift, shift), (0, 0)))
    dy, dx = rng.integers(0, 2 * shift + 1, size=(2, n))
    rows = dy[:, None] + np.arange(h)[None, :]
    cols = dx[:, None] + np.arange(w)[None, :]
    return padded[np.arange(n)[:, None, None], rows[:, :, None], cols[:, None, :]]

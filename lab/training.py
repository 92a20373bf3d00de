"""A compiled supervised training step built from the ``lab`` parts.

``make_train_step`` returns a ``TrainStep``: call it on a batch, ``step(x, y)``. One call:

0. optionally replaces the batch by ``perturb(x, y)`` (adversarial examples, outside the
   tape: the perturbed batch is a constant for the weight update);
1. runs the model with ``training=True`` on a tape and computes the data loss;
2. adds ``model.losses`` and the given penalties (``lab.regularizers.regularized_loss``), each
   on the perturbed batch or, if it asks for it (``clean_batch``), the batch as given;
3. takes the gradient, measures its global norm *before* any clipping;
4. applies the gradient transform (``lab.transforms``), then the optimizer;
5. skips the whole update when the loss or the gradient (before or after the transform) is
   NaN or infinite, and counts the skip in ``step.skipped``. A skipped step leaves every
   variable as it was: the weights, the optimizer state, and the model's non-trainable
   variables (batch-norm moving statistics, which the forward pass has already updated, are
   put back).

It returns ``StepOutput(loss, grad_norm, applied)``. The step is one ``tf.function``: it traces
once per input signature (``step.trace_count`` says how often it has), so give batches a fixed
shape (``drop_remainder=True``) or pass ``input_signature``.

Under a ``tf.distribute.Strategy`` (``strategy=``), call the step on distributed batches
(``strategy.experimental_distribute_dataset``). Each replica's loss is its share of the global
batch mean (``tf.nn.compute_average_loss``); gradients are summed across replicas *before*
the norm, the transform and the finiteness check, so clipping and skipping see the global
gradient and every replica takes the same branch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import tensorflow as tf

from lab.clipping import global_norm
from lab.regularizers import regularized_loss


class StepOutput(NamedTuple):
    loss: tf.Tensor       # total objective: data loss + model.losses + penalties
    grad_norm: tf.Tensor  # global gradient norm before the transform
    applied: tf.Tensor    # False when the update was skipped as non-finite


class TrainStep:
    """A compiled training step; build it with ``make_train_step``."""

    def __init__(self, model, loss_fn, optimizer, transform, penalties, input_signature,
                 perturb=None, strategy=None):
        if not model.trainable_variables:
            raise ValueError(
                "model must be built and have trainable variables before make_train_step "
                "(give it a keras.Input or call it once on a batch). Received: a model with "
                "no trainable variables")
        for i, penalty in enumerate(penalties):
            if not callable(penalty):
                raise ValueError(f"every penalty must be callable as penalty(model, x, y). "
                                 f"Received: penalties[{i}]={penalty!r}")
        for name, fn in (("transform", transform), ("perturb", perturb)):
            if fn is not None and not callable(fn):
                raise ValueError(f"{name} must be callable. Received: {name}={fn!r}")
        self.model = model
        self.loss_fn = loss_fn
        self.optimizer = optimizer
        self.transform = transform
        self.penalties = tuple(penalties)
        self.perturb = perturb
        self.strategy = strategy
        # Optimizer slots must exist before tracing: variables cannot be created inside the
        # tf.cond that skips non-finite updates.
        if not optimizer.built:
            optimizer.build(model.trainable_variables)
        self.skipped = tf.Variable(0, dtype=tf.int64, trainable=False, name="skipped_steps",
                                   aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)
        self._step = tf.function(self._update, input_signature=input_signature)

    def __call__(self, x, y) -> StepOutput:
        return self._step(x, y)

    @property
    def trace_count(self) -> int:
        """How many times the step has been traced (one per distinct input signature)."""
        return self._step.experimental_get_tracing_count()

    def trace(self, x_spec=None, y_spec=None) -> None:
        """Traces the step without running it, so that no variable changes.

        For a step built with ``input_signature``, call it without arguments; otherwise give
        the ``tf.TensorSpec`` of a batch and its labels. Useful to compile before a timed
        loop, or in the main thread before worker threads call the step.
        """
        specs = () if x_spec is None and y_spec is None else (x_spec, y_spec)
        self._step.get_concrete_function(*specs)

    def _update(self, x, y):
        strategy = self.strategy or tf.distribute.get_strategy()  # the default: one device
        loss, grads, grad_norm, finite, saved = strategy.run(self._gradients, args=(x, y))
        # Every replica holds the same summed gradient and decision. The tf.cond sits in
        # cross-replica context: inside strategy.run a branch may not hold the optimizer's
        # merge_call (Keras's LossScaleOptimizer does the same).
        first = lambda value: strategy.experimental_local_results(value)[0]
        replicas = strategy.num_replicas_in_sync

        def apply_shares(grads):
            if replicas > 1:
                # Keras sums gradients over replicas when it applies them: give it each
                # replica's share of the already summed (and transformed) gradient.
                grads = [None if g is None else g / replicas for g in grads]
            self.optimizer.apply_gradients(zip(grads, self.model.trainable_variables))

        def apply():
            strategy.extended.call_for_each_replica(apply_shares, args=(grads,))
            return tf.constant(True)

        def restore(saved):
            for variable, value in zip(self.model.non_trainable_variables, saved):
                variable.assign(value)

        def skip():
            if saved:
                strategy.extended.call_for_each_replica(restore, args=(saved,))
            self.skipped.assign_add(1)
            return tf.constant(False)

        with strategy.scope():
            applied = tf.cond(first(finite), apply, skip)
        return StepOutput(strategy.reduce(tf.distribute.ReduceOp.SUM, loss, axis=None),
                          first(grad_norm), applied)

    def _gradients(self, x, y):
        """Loss, (replica-summed, transformed) gradients, pre-transform norm, finiteness, and
        the non-trainable variables' values before the forward pass."""
        context = tf.distribute.get_replica_context()
        replicas = context.num_replicas_in_sync
        # The forward pass with training=True updates batch-norm statistics in place, before
        # the finiteness is known: keep their values so that a skipped step can put them back.
        # Per replica, because Keras updates each replica's copy on its own.
        saved = [tf.identity(v) for v in self.model.non_trainable_variables]
        clean = (x, y)
        if self.perturb is not None:
            x, y = self.perturb(x, y)
        variables = self.model.trainable_variables
        with tf.GradientTape() as tape:
            data_loss = self.loss_fn(y, self.model(x, training=True))
            if replicas > 1:  # this replica's share of the global batch mean
                data_loss = tf.nn.compute_average_loss(data_loss)
            elif data_loss.shape.rank:  # per-example losses
                data_loss = tf.reduce_mean(data_loss)
            penalties = [p(self.model, *(clean if getattr(p, "clean_batch", False) else (x, y)))
                         / replicas for p in self.penalties]
            model_losses = [t / replicas for t in self.model.losses]
            loss = regularized_loss(data_loss, None, model_losses + penalties)
        grads = list(tape.gradient(loss, variables))
        total_loss = loss
        if replicas > 1:
            present = [i for i, g in enumerate(grads) if g is not None]
            summed = context.all_reduce(tf.distribute.ReduceOp.SUM, [grads[i] for i in present])
            for i, g in zip(present, summed):
                grads[i] = g
            total_loss = context.all_reduce(tf.distribute.ReduceOp.SUM, loss)
        grad_norm = global_norm(grads)
        finite = tf.math.logical_and(tf.math.is_finite(total_loss), tf.math.is_finite(grad_norm))
        if self.transform is not None:
            grads = self.transform(grads, variables)
            # A transform can turn finite gradients into NaN (a division by a zero norm).
            finite = tf.math.logical_and(finite, tf.math.is_finite(global_norm(grads)))
        return loss, grads, grad_norm, finite, saved


def make_train_step(model, loss_fn: Callable, optimizer, *, transform: Callable | None = None,
                    penalties: Sequence[Callable] = (), input_signature=None,
                    perturb: Callable | None = None, strategy=None) -> TrainStep:
    """Builds a compiled training step for ``model``.

    Args:
      model: a built Keras model returning what ``loss_fn`` expects.
      loss_fn: ``loss_fn(y, predictions)``, a scalar or per-example losses (averaged).
      optimizer: a Keras optimizer.
      transform: optional gradient transform ``(grads, params) -> grads``, e.g.
        ``lab.transforms.chain(AdaptiveClip(0.01), ClipByGlobalNorm(1.0))``.
      penalties: callables ``penalty(model, x, y) -> scalar`` added to the loss, e.g.
        ``lab.regularizers.WeightPenalty(l2=1e-4)``. ``model.losses`` are always added. A
        penalty sees the batch the model trains on (after ``perturb``), or, when its
        ``clean_batch`` attribute is true, the batch as it was given (GradAlign's).
      input_signature: optional ``(x_spec, y_spec)`` of ``tf.TensorSpec`` to trace only once,
        e.g. with a ``None`` batch dimension.
      perturb: optional ``perturb(x, y) -> (x, y)`` applied to the batch before the tape, e.g.
        an attack for adversarial training (which may also grow the batch, as a clean plus
        adversarial mix does).
      strategy: optional ``tf.distribute.Strategy``; build the model and optimizer under its
        scope and call the step on distributed batches. ``loss_fn`` must then return
        per-example losses.

    Returns:
      A ``TrainStep``; ``step(x, y)`` returns ``StepOutput(loss, grad_norm, applied)``.
    """
    return TrainStep(model, loss_fn, optimizer, transform, penalties, input_signature,
                     perturb, strategy)

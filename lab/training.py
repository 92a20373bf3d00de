"""A compiled supervised training step built from the ``lab`` parts.

``make_train_step`` returns a ``TrainStep``: call it on a batch, ``step(x, y)``. One call:

1. runs the model with ``training=True`` on a tape and computes the data loss;
2. adds ``model.losses`` and the given penalties (``lab.regularizers.regularized_loss``);
3. takes the gradient, measures its global norm *before* any clipping;
4. applies the gradient transform (``lab.transforms``), then the optimizer;
5. skips the whole update (optimizer state included) when the loss or the gradient is NaN or
   infinite, and counts the skip in ``step.skipped``.

It returns ``StepOutput(loss, grad_norm, applied)``. The step is one ``tf.function``: it traces
once per input signature (``step.trace_count`` says how often it has), so give batches a fixed
shape (``drop_remainder=True``) or pass ``input_signature``.
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

    def __init__(self, model, loss_fn, optimizer, transform, penalties, input_signature):
        if not model.trainable_variables:
            raise ValueError(
                "model must be built and have trainable variables before make_train_step "
                "(give it a keras.Input or call it once on a batch). Received: a model with "
                "no trainable variables")
        for i, penalty in enumerate(penalties):
            if not callable(penalty):
                raise ValueError(f"every penalty must be callable as penalty(model, x, y). "
                                 f"Received: penalties[{i}]={penalty!r}")
        if transform is not None and not callable(transform):
            raise ValueError(f"transform must be callable as transform(grads, params). "
                             f"Received: transform={transform!r}")
        self.model = model
        self.loss_fn = loss_fn
        self.optimizer = optimizer
        self.transform = transform
        self.penalties = tuple(penalties)
        # Optimizer slots must exist before tracing: variables cannot be created inside the
        # tf.cond that skips non-finite updates.
        if not optimizer.built:
            optimizer.build(model.trainable_variables)
        self.skipped = tf.Variable(0, dtype=tf.int64, trainable=False, name="skipped_steps")
        self._step = tf.function(self._update, input_signature=input_signature)

    def __call__(self, x, y) -> StepOutput:
        return self._step(x, y)

    @property
    def trace_count(self) -> int:
        """How many times the step has been traced (one per distinct input signature)."""
        return self._step.experimental_get_tracing_count()

    def _update(self, x, y):
        variables = self.model.trainable_variables
        with tf.GradientTape() as tape:
            data_loss = self.loss_fn(y, self.model(x, training=True))
            if data_loss.shape.rank:  # per-example losses
                data_loss = tf.reduce_mean(data_loss)
            penalties = [p(self.model, x, y) for p in self.penalties]
            loss = regularized_loss(data_loss, self.model, penalties)
        grads = tape.gradient(loss, variables)
        grad_norm = global_norm(grads)
        if self.transform is not None:
            grads = self.transform(grads, variables)
        finite = tf.math.logical_and(tf.math.is_finite(loss), tf.math.is_finite(grad_norm))

        def apply():
            self.optimizer.apply_gradients(zip(grads, variables))
            return tf.constant(True)

        def skip():
            self.skipped.assign_add(1)
            return tf.constant(False)

        applied = tf.cond(finite, apply, skip)
        return StepOutput(loss, grad_norm, applied)


def make_train_step(model, loss_fn: Callable, optimizer, *, transform: Callable | None = None,
                    penalties: Sequence[Callable] = (), input_signature=None) -> TrainStep:
    """Builds a compiled training step for ``model``.

    Args:
      model: a built Keras model returning what ``loss_fn`` expects.
      loss_fn: ``loss_fn(y, predictions)``, a scalar or per-example losses (averaged).
      optimizer: a Keras optimizer.
      transform: optional gradient transform ``(grads, params) -> grads``, e.g.
        ``lab.transforms.chain(AdaptiveClip(0.01), ClipByGlobalNorm(1.0))``.
      penalties: callables ``penalty(model, x, y) -> scalar`` added to the loss, e.g.
        ``lab.regularizers.WeightPenalty(l2=1e-4)``. ``model.losses`` are always added.
      input_signature: optional ``(x_spec, y_spec)`` of ``tf.TensorSpec`` to trace only once,
        e.g. with a ``None`` batch dimension.

    Returns:
      A ``TrainStep``; ``step(x, y)`` returns ``StepOutput(loss, grad_norm, applied)``.
    """
    return TrainStep(model, loss_fn, optimizer, transform, penalties, input_signature)

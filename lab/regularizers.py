"""Regularized losses for custom ``tf.GradientTape`` loops.

Scaling conventions, since libraries differ:

- ``l2_penalty(vs, scale)`` is ``scale * sum(w**2)``, Keras's convention
  (``keras.regularizers.L2(scale)``). ``tf.nn.l2_loss(w)`` is ``sum(w**2) / 2``: the same
  penalty needs ``scale = l2 / 2`` here to match ``l2 * tf.nn.l2_loss(w)``. Decoupled weight
  decay (``keras.optimizers.AdamW``) is a different thing and does not go through the loss.
- ``l1_penalty(vs, scale)`` is ``scale * sum(|w|)`` (``keras.regularizers.L1``).
- ``elastic_net_penalty(vs, l1, l2)`` is ``l1 * sum(|w|) + l2 * sum(w**2)``
  (``keras.regularizers.L1L2``; Zou & Hastie 2005).

``regularized_loss`` adds a Keras model's own ``model.losses`` (layer ``kernel_regularizer``
and ``activity_regularizer`` terms, and ``add_loss`` calls): ``model.fit`` adds them for you,
a hand-written tape loop silently forgets them unless it does the same.

A *penalty* for ``lab.training.make_train_step`` is any callable ``penalty(model, x, y)``
returning a scalar; ``WeightPenalty``, ``InputGradientPenalty`` and
``GradientAlignmentPenalty`` are the kinds here. A penalty whose ``clean_batch`` attribute is
true (``GradientAlignmentPenalty``) sees the batch before the step's ``perturb``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import ClassVar

import tensorflow as tf

from lab.ball import uniform_in_ball
from lab.checks import check_positive
from lab.higher_order import input_gradient


def _sum_over(fn, variables):
    terms = [tf.reduce_sum(fn(tf.convert_to_tensor(v))) for v in variables]
    return tf.add_n(terms) if terms else tf.constant(0.0)


def l1_penalty(variables: Sequence, scale) -> tf.Tensor:
    """``scale * sum(|w|)`` over all ``variables`` (``scale >= 0``)."""
    check_positive("scale", scale, allow_zero=True)
    return scale * _sum_over(tf.abs, variables)


def l2_penalty(variables: Sequence, scale) -> tf.Tensor:
    """``scale * sum(w**2)`` over all ``variables``: Keras's ``L2``, no factor 1/2."""
    check_positive("scale", scale, allow_zero=True)
    return scale * _sum_over(tf.square, variables)


def elastic_net_penalty(variables: Sequence, l1, l2) -> tf.Tensor:
    """``l1 * sum(|w|) + l2 * sum(w**2)`` over all ``variables`` (Keras's ``L1L2``).

    References:
      Zou, Hastie. Regularization and variable selection via the elastic net. JRSS B 2005.
    """
    return l1_penalty(variables, l1) + l2_penalty(variables, l2)


def regularized_loss(loss, model, extra: Sequence = ()) -> tf.Tensor:
    """``loss + sum(model.losses) + sum(extra)``, all in ``loss``'s dtype.

    Call it inside the tape, after the forward pass: Keras 3 computes weight-regularizer terms
    when ``model.losses`` is read, and activity-regularizer terms come from the last call.

    Args:
      loss: the scalar data loss.
      model: a Keras model or layer (anything with ``.losses``), or ``None``.
      extra: further scalar penalties, e.g. ``[l2_penalty(vs, 1e-4)]``.

    Returns:
      The scalar total loss.
    """
    loss = tf.convert_to_tensor(loss)
    if loss.shape.rank != 0:
        raise ValueError(f"loss must be a scalar. Received: loss of shape {loss.shape}")
    terms = list(model.losses) if model is not None else []
    terms += list(extra)
    if not terms:
        return loss
    return loss + tf.add_n([tf.cast(t, loss.dtype) for t in terms])


def input_gradient_penalty(model: Callable, loss_fn: Callable, x, y, *, training=True):
    """Mean squared norm of the per-example input gradient, ``mean_i ||d loss_i / d x_i||^2``.

    The input gradient (``lab.higher_order.input_gradient``) is taken on an inner tape while
    any outer tape keeps recording, so the penalty is differentiable with respect to the
    weights ("double backpropagation"). It rewards models whose loss is flat around the data,
    which makes them smoother and harder to attack with small perturbations.

    Args:
      model: callable ``model(x, training=...) -> logits``.
      loss_fn: callable ``loss_fn(y, logits)`` returning per-example losses (e.g.
        ``keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True)``); the
        gradient of their sum is the per-example input gradient.
      x: the input batch.
      y: the labels.
      training: the mode the model runs in; ``True`` when the penalty is part of training.

    Returns:
      The scalar penalty (without a coefficient).

    References:
      Drucker, LeCun. Improving generalization performance using double backpropagation.
      IEEE Trans. Neural Networks 1992.
      Ross, Doshi-Velez. Improving the adversarial robustness and interpretability of deep
      neural networks by regularizing their input gradients. AAAI 2018. arXiv:1711.09404.
    """
    grad = input_gradient(model, loss_fn, x, y, training=training)
    per_example = tf.reduce_sum(tf.reshape(tf.square(grad), [tf.shape(grad)[0], -1]), axis=1)
    return tf.reduce_mean(per_example)


def gradient_alignment_penalty(model: Callable, loss_fn: Callable, x, y, x_near, *,
                               training=True):
    """GradAlign: ``mean_i (1 - cos(g_i(x_i), g_i(x_near_i)))``, ``g_i`` the input gradient of
    example ``i``'s loss.

    The gradient at ``x`` is a constant (as in Andriushchenko & Flammarion's code); the one at
    ``x_near`` is taken on an inner tape, so the penalty is differentiable with respect to the
    weights (double backpropagation). Examples whose gradient is zero at either point have no
    direction and are left out of the mean (0 when none is left). A loss whose input gradient
    keeps its direction inside the ball (a two-class linear classifier's cross-entropy) has a
    penalty of 0 there; one whose gradient turns around inside it (the local non-linearity
    behind catastrophic overfitting of FGSM training) a penalty up to 2.

    Args:
      model: callable ``model(x, training=...) -> logits``.
      loss_fn: callable ``loss_fn(y, logits)`` returning per-example losses.
      x: the input batch.
      y: the labels.
      x_near: the second point of each example, shaped like ``x`` (GradAlign: a uniform random
        point of the attack's ball around ``x``).
      training: the mode the model runs in; ``True`` when the penalty is part of training.

    Returns:
      The scalar penalty (without a coefficient), in ``[0, 2]``.

    References:
      Andriushchenko, Flammarion. Understanding and improving fast adversarial training.
      NeurIPS 2020. arXiv:2007.02617.
    """
    batch = tf.shape(x)[0]
    at_x = tf.stop_gradient(input_gradient(model, loss_fn, x, y, training=training))
    at_near = input_gradient(model, loss_fn, x_near, y, training=training)
    at_x, at_near = tf.reshape(at_x, [batch, -1]), tf.reshape(at_near, [batch, -1])
    squared_x = tf.reduce_sum(tf.square(at_x), axis=1)
    squared_near = tf.reduce_sum(tf.square(at_near), axis=1)
    kept = (squared_x > 0) & (squared_near > 0)
    # The square root only of kept norms: its derivative at 0 would be NaN even when masked.
    norms = tf.sqrt(tf.where(kept, squared_x * squared_near, tf.ones_like(squared_x)))
    cosines = tf.reduce_sum(at_x * at_near, axis=1) / norms
    weights = tf.cast(kept, cosines.dtype)
    return tf.reduce_sum((1.0 - cosines) * weights) / tf.maximum(tf.reduce_sum(weights), 1.0)


@dataclasses.dataclass(frozen=True)
class WeightPenalty:
    """Elastic-net penalty on a model's trainable weights, as a ``make_train_step`` penalty.

    ``l1 * sum(|w|) + l2 * sum(w**2)`` over the model's trainable variables; biases and other
    vectors (normalization gains and offsets) are left out unless ``include_vectors`` is set,
    as is customary for weight decay.
    """
    l1: float = 0.0
    l2: float = 0.0
    include_vectors: bool = False

    def __post_init__(self):
        check_positive("l1", self.l1, allow_zero=True)
        check_positive("l2", self.l2, allow_zero=True)

    def __call__(self, model, x=None, y=None):
        weights = [v for v in model.trainable_variables
                   if self.include_vectors or len(v.shape) > 1]
        return elastic_net_penalty(weights, self.l1, self.l2)


@dataclasses.dataclass(frozen=True)
class InputGradientPenalty:
    """``scale * input_gradient_penalty(model, loss_fn, x, y)`` as a ``make_train_step`` penalty."""
    loss_fn: Callable
    scale: float = 1.0

    def __post_init__(self):
        check_positive("scale", self.scale, allow_zero=True)

    def __call__(self, model, x, y):
        return self.scale * input_gradient_penalty(model, self.loss_fn, x, y, training=True)


@dataclasses.dataclass(frozen=True, eq=False)  # identity: its radius may be a tf.Variable
class GradientAlignmentPenalty:
    """``scale * gradient_alignment_penalty`` with ``x_near`` a uniform random point of the
    L-infinity ball of ``radius`` around the clean ``x`` (not clipped, as in GradAlign's
    code), as a ``make_train_step`` penalty: it sees the batch before ``perturb``.

    ``radius`` may be a ``tf.Variable`` (an eps that ramps up); ``seed`` is a callable
    returning a stateless seed (shape ``[2]`` integers) for the step's random point, read
    inside the compiled step (e.g. from a counter the training loop advances).
    """
    loss_fn: Callable
    scale: float
    radius: float | tf.Variable
    seed: Callable[[], tf.Tensor]
    clean_batch: ClassVar[bool] = True

    def __post_init__(self):
        check_positive("scale", self.scale, allow_zero=True)
        if not isinstance(self.radius, tf.Variable):
            check_positive("radius", self.radius, allow_zero=True)
        if not callable(self.seed):
            raise ValueError(f"seed must be a callable returning a stateless seed. "
                             f"Received: seed={self.seed!r}")

    def __call__(self, model, x, y):
        radius = tf.cast(self.radius, x.dtype)
        x_near = uniform_in_ball(x, radius, self.seed())
        return self.scale * gradient_alignment_penalty(model, self.loss_fn, x, y, x_near,
                                                       training=True)

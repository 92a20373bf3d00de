"""Activations whose backward pass is not the derivative of their forward pass.

Each is a ``tf.custom_gradient`` function and a Keras layer (registered for ``.keras``
saving under the package name ``gradlab``, so a loaded model keeps its custom gradient):

=========================  =====================  ==============================================
function / layer           forward                backward (given upstream gradient ``dy``)
=========================  =====================  ==============================================
``custom_relu``            ``max(x, 0)``          ``dy * [x > 0]`` (0 at ``x = 0``)
``straight_through_sign``  ``+1 if x >= 0 else    ``dy * [|x| <= 1]`` (Bengio et al. 2013;
                           -1``                   Hubara et al. 2016)
``straight_through_round`` ``round(x)``           ``dy`` (Bengio et al. 2013)
``gradient_reversal``      ``x``                  ``-scale * dy`` (Ganin & Lempitsky 2015)
``clip_gradient_norm``     ``x``                  ``dy`` rescaled to L2 norm ``<= max_norm``
``zero_gradient(f)``       ``f(x)``               ``0``: the true derivative of a piecewise-
                                                  constant ``f`` (the baseline a straight-
                                                  through estimator replaces)
=========================  =====================  ==============================================

References:
  Bengio, Leonard, Courville. Estimating or propagating gradients through stochastic
  neurons for conditional computation. arXiv:1308.3432, 2013.
  Hubara, Courbariaux, Soudry, El-Yaniv, Bengio. Binarized neural networks. NeurIPS 2016.
  arXiv:1602.02830.
  Ganin, Lempitsky. Unsupervised domain adaptation by backpropagation. ICML 2015.
  arXiv:1409.7495.
"""

from __future__ import annotations

from collections.abc import Callable

import keras
import tensorflow as tf

from lab.checks import check_positive


@tf.custom_gradient
def custom_relu(x):
    """ReLU with the gradient written out: ``dy * [x > 0]``."""
    def grad(dy):
        return dy * tf.cast(x > 0, dy.dtype)
    return tf.maximum(x, tf.zeros_like(x)), grad


@tf.custom_gradient
def straight_through_sign(x):
    """Binarizes to ±1 (0 maps to +1); the gradient passes where ``|x| <= 1``."""
    def grad(dy):
        return dy * tf.cast(tf.abs(x) <= 1, dy.dtype)
    return tf.where(x >= 0, tf.ones_like(x), -tf.ones_like(x)), grad


def zero_gradient(function: Callable) -> Callable:
    """``function`` forward; backward, zero: the true derivative of a piecewise-constant
    function, wherever it exists (at the jumps it does not; zero is used there too).
    ``zero_gradient(straight_through_sign)`` is ``sign`` with its true gradient, the
    baseline its straight-through estimator is compared with."""
    @tf.custom_gradient
    def wrapped(x):
        def grad(dy):
            return tf.zeros_like(dy)
        return function(x), grad
    return wrapped


@tf.custom_gradient
def straight_through_round(x):
    """Rounds to the nearest integer (half to even); the gradient passes unchanged."""
    def grad(dy):
        return dy
    return tf.round(x), grad


def gradient_reversal(x, scale=1.0):
    """Identity forward, ``-scale`` times the gradient backward (domain-adversarial training).

    Args:
      x: a tensor.
      scale: ``>= 0``; the reversed gradient's magnitude (Ganin & Lempitsky's lambda).
    """
    check_positive("scale", scale, allow_zero=True)

    @tf.custom_gradient
    def _reverse(x):
        def grad(dy):
            return -tf.cast(scale, dy.dtype) * dy
        return tf.identity(x), grad

    return _reverse(x)


def clip_gradient_norm(x, max_norm):
    """Identity forward; backward, the gradient of the whole tensor is clipped to L2 norm
    ``max_norm`` (``tf.clip_by_norm``). With a batch, the norm is over the whole batch.

    Args:
      x: a tensor.
      max_norm: ``> 0``.
    """
    check_positive("max_norm", max_norm)

    @tf.custom_gradient
    def _clip(x):
        def grad(dy):
            return tf.clip_by_norm(dy, tf.cast(max_norm, dy.dtype))
        return tf.identity(x), grad

    return _clip(x)


class _ShapePreservingLayer(keras.layers.Layer):
    """Applies ``self.function`` (set by subclasses); the output has the input's shape."""

    function = staticmethod(tf.identity)

    def call(self, inputs):
        return self.function(inputs)

    def compute_output_shape(self, input_shape):
        return input_shape


@keras.saving.register_keras_serializable(package="gradlab")
class CustomReLU(_ShapePreservingLayer):
    """Layer form of ``custom_relu``."""
    function = staticmethod(custom_relu)


@keras.saving.register_keras_serializable(package="gradlab")
class StraightThroughSign(_ShapePreservingLayer):
    """Layer form of ``straight_through_sign``."""
    function = staticmethod(straight_through_sign)


@keras.saving.register_keras_serializable(package="gradlab")
class StraightThroughRound(_ShapePreservingLayer):
    """Layer form of ``straight_through_round``."""
    function = staticmethod(straight_through_round)


@keras.saving.register_keras_serializable(package="gradlab")
class GradientReversal(_ShapePreservingLayer):
    """Layer form of ``gradient_reversal``."""

    def __init__(self, scale=1.0, **kwargs):
        super().__init__(**kwargs)
        check_positive("scale", scale, allow_zero=True)
        self.scale = float(scale)

    def call(self, inputs):
        return gradient_reversal(inputs, self.scale)

    def get_config(self):
        return {**super().get_config(), "scale": self.scale}


@keras.saving.register_keras_serializable(package="gradlab")
class ClipGradientNorm(_ShapePreservingLayer):
    """Layer form of ``clip_gradient_norm``."""

    def __init__(self, max_norm, **kwargs):
        super().__init__(**kwargs)
        check_positive("max_norm", max_norm)
        self.max_norm = float(max_norm)

    def call(self, inputs):
        return clip_gradient_norm(inputs, self.max_norm)

    def get_config(self):
        return {**super().get_config(), "max_norm": self.max_norm}

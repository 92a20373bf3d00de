"""Argument checks shared by the attacks: clear errors in Python, before the compiled call.

Errors read like the rest of gradlab's (``lab.checks``): the argument's name, the rule, and what
was received, e.g. ``ValueError: eps must be in [0.0, 1.0]. Received: eps=-0.1``.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from lab.checks import check_in_range, check_nonnegative_int


def num_classes(model) -> int:
    """The number of logits ``model`` returns."""
    return int(model.output_shape[-1])


def check_attack_arguments(model, x, y, eps, *, clip, targeted):
    """Validates an attack call.

    Args:
      model: a Keras classifier with known input and output shapes.
      x: the batch (at least one example), values in ``clip``.
      y: integer labels in ``[0, num_classes)``, one per example, or ``None``.
      eps: L-infinity radius, a real number in ``[0, hi - lo]``.
      clip: ``(lo, hi)``, the valid input range.
      targeted: whether ``y`` holds targets (then it is required).

    Returns:
      ``(x, y)``: ``x`` as a floating tensor of its own dtype (float32 if it was not floating),
      ``y`` as int32 (or ``None``).

    Raises:
      ValueError: naming the argument and the value received.
    """
    check_eps(eps, clip)
    lo, hi = clip
    x = tf.convert_to_tensor(x)
    if not x.dtype.is_floating:
        x = tf.cast(x, tf.float32)
    if x.shape.rank is None or x.shape.rank < 2:
        raise ValueError(f"x must be a batch (rank >= 2). Received: x with shape {x.shape}")
    expected = getattr(model, "input_shape", None)
    if isinstance(expected, tuple) and not tf.TensorShape(expected[1:]).is_compatible_with(
            x.shape[1:]):
        raise ValueError(f"x must be a batch of the model's inputs, shape {expected}. "
                         f"Received: x with shape {tuple(x.shape)}")
    check_nonempty_batch(x)
    if not bool(tf.reduce_all(tf.math.is_finite(x))):
        raise ValueError("x must be finite. Received: x with NaN or infinite values")
    x_min, x_max = float(tf.reduce_min(x)), float(tf.reduce_max(x))
    if x_min < lo or x_max > hi:
        raise ValueError(f"x must lie in clip=[{lo}, {hi}]. Received: x with values in "
                         f"[{x_min:.4g}, {x_max:.4g}]")
    if y is None:
        if targeted:
            raise ValueError("y must be given for a targeted attack (the target labels). "
                             "Received: y=None")
        return x, None
    y = tf.convert_to_tensor(y)
    if not y.dtype.is_integer or y.shape.rank != 1:
        raise ValueError(f"y must be a vector of integer labels. Received: y with shape "
                         f"{y.shape} and dtype {y.dtype.name}")
    if y.shape[0] != x.shape[0]:
        raise ValueError(f"x and y must hold the same number of examples. Received: "
                         f"{x.shape[0]} images and {y.shape[0]} labels")
    classes = num_classes(model)
    y_np = y.numpy()
    if y_np.size and (y_np.min() < 0 or y_np.max() >= classes):
        raise ValueError(f"labels must be in [0, {classes}) for a model with {classes} outputs. "
                         f"Received: labels in [{y_np.min()}, {y_np.max()}]")
    return x, tf.cast(y, tf.int32)


def check_eps(eps, clip=(0.0, 1.0), *, name="eps"):
    """Raises ``ValueError`` unless ``clip`` is ``(lo, hi)`` with ``lo < hi`` and ``eps`` is a real
    number in ``[0, hi - lo]``."""
    lo, hi = clip
    if not lo < hi:
        raise ValueError(f"clip must be (lo, hi) with lo < hi. Received: clip={clip!r}")
    # eps > hi - lo would let the ball cover the whole range: surely a unit mistake (eps=8
    # meant 8/255).
    check_in_range(name, eps, 0.0, hi - lo)


def check_nonempty_batch(x):
    """Raises ``ValueError`` if the batch ``x`` (an array or a tensor) holds no values: the
    model would fail inside its kernels, an accuracy would divide by zero."""
    shape = tuple(np.shape(x))
    if 0 in shape:
        raise ValueError(f"x must be a non-empty batch. Received: an empty batch, x with shape "
                         f"{shape}")


def as_scalar(value, dtype):
    """An attack's eps or step (a number or a scalar tensor) as a scalar tensor of ``dtype``;
    a Python float is converted at that precision, not through float32."""
    return tf.cast(tf.convert_to_tensor(value, dtype_hint=dtype), dtype)


def attack_signature(model, dtype, *scalars):
    """``tf.function`` input signature: a batch of the model's input shape (any batch size) of
    ``dtype``, int32 labels, then scalar specs of the given dtypes. One trace per model."""
    x_spec = tf.TensorSpec([None, *model.input_shape[1:]], dtype)
    return [x_spec, tf.TensorSpec([None], tf.int32),
            *[tf.TensorSpec([], scalar) for scalar in scalars]]


def labels_or_predictions(model, x, y):
    """``y``, or the model's predicted labels when ``y`` is ``None``."""
    if y is not None:
        return y
    return tf.argmax(model(x, training=False), axis=-1, output_type=tf.int32)


def new_seed(seed) -> int:
    """``seed`` as an int, or a fresh one from NumPy's global generator (which
    ``lab.seeding`` seeds, so unseeded runs are repeatable too)."""
    if seed is None:
        return int(np.random.randint(0, 2**31 - 1))
    check_nonnegative_int("seed", seed)
    return int(seed)

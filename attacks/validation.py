"""Argument checks shared by the attacks: clear errors in Python, before the compiled call.

Errors read like the rest of gradlab's (``lab.checks``): the argument's name, the rule, and what
was received, e.g. ``ValueError: eps must be in [0.0, 1.0]. Received: eps=-0.1``.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from lab.ball import NORMS
from lab.checks import (
    check_in_range,
    check_nonnegative_int,
    check_one_of,
    check_positive,
    static_value,
)


def num_classes(model) -> int | None:
    """The number of logits ``model`` returns, or ``None`` if that is not known before a call
    (a plain callable, an unbuilt model)."""
    try:
        return int(model.output_shape[-1])
    except (AttributeError, IndexError, TypeError, ValueError):  # unbuilt, several outputs
        return None


def check_labels(y, num_examples: int, classes: int | None = None, *,
                 name: str = "y") -> np.ndarray:
    """Checks class labels for a batch: the one label check of every attack and evaluation.

    Runs on the host, in NumPy, once per call (never inside a ``tf.function``): a few
    microseconds for a batch, well under a millisecond for all of MNIST.

    Args:
      y: the labels, an array-like or an eager tensor: 1-D, one label per example, of an
        integer dtype, or floating with whole-number values only (``3.0`` is label 3; ``3.7``
        is refused, not truncated).
      num_examples: the number of examples the labels go with (``len(x)``).
      classes: the model's number of classes (``num_classes(model)``); labels must lie in
        ``[0, classes)``. ``None``: only ``>= 0`` is checked.

    Returns:
      ``y`` as an int32 NumPy array.

    Raises:
      ValueError: naming ``y`` (``name``) and what was received (its shape, dtype, or the first
        offending label).
    """
    try:
        labels = np.asarray(y)
    except (TypeError, ValueError):  # ragged nesting
        raise ValueError(f"{name} must be a vector of integer labels. Received: "
                         f"{name}={y!r}") from None
    if labels.dtype.kind not in "iuf":  # bool, complex, str, object: not class labels
        raise ValueError(f"{name} must be a vector of integer labels. Received: {name} with "
                         f"dtype {labels.dtype}")
    if labels.ndim != 1:
        raise ValueError(f"{name} must be a vector of integer labels, one per example. "
                         f"Received: {name} with shape {labels.shape}")
    if len(labels) != num_examples:
        raise ValueError(f"{name} must hold one label per example, the same number of examples "
                         f"as x. Received: {num_examples} examples in x and {len(labels)} "
                         f"labels in {name}")
    if labels.dtype.kind == "f":
        # A float label must be a whole number: casting would turn 3.7 into class 3 silently.
        bad = np.flatnonzero(~(np.isfinite(labels) & (labels == np.floor(labels))))
        if bad.size:
            raise ValueError(f"{name} must hold integer labels (a float array only of whole "
                             f"numbers). Received: {name}[{bad[0]}]={labels[bad[0]]} in a "
                             f"{labels.dtype} array")
    hi = classes if classes is not None else 2**31  # int32, what the attacks take
    if labels.size and (labels.min() < 0 or labels.max() >= hi):  # min/max: no temporaries
        bad = np.flatnonzero((labels < 0) | (labels >= hi))
        rule = (f"in [0, {classes}) for a model with {classes} outputs"
                if classes is not None else "in [0, 2**31)")
        raise ValueError(f"{name} must hold labels {rule}. Received: {name}[{bad[0]}]="
                         f"{labels[bad[0]]} ({bad.size} of {labels.size} labels outside)")
    return labels.astype(np.int32, copy=False)


def check_attack_arguments(model, x, y, eps, *, clip, targeted, eps_scale=None, norm="linf"):
    """Validates an attack call.

    Args:
      model: a Keras classifier with known input and output shapes.
      x: the batch (at least one example), values in ``clip``.
      y: labels in ``[0, num_classes)``, one per example, or ``None`` (see
        ``check_labels``).
      eps: the radius, a real number >= 0 (in units of ``eps_scale``); see ``check_eps``.
      clip: ``(lo, hi)``, the valid input range: numbers, or arrays that broadcast to one
        example's shape (per-feature bounds, infinite where a feature is unbounded); ``None``
        for unbounded inputs.
      targeted: whether ``y`` holds targets (then it is required).
      eps_scale: ``None`` (eps in input units) or positive per-feature scales that broadcast
        to one example's shape: the radius of feature ``i`` is ``eps * eps_scale[i]``.
      norm: the threat model, one of ``lab.ball.NORMS``.

    Returns:
      ``(x, y, bounds)``: ``x`` as a floating tensor of its own dtype (float32 if it was not
      floating), ``y`` as int32 (or ``None``), and ``bounds = (lo, hi, scale)``, tensors of
      ``x``'s dtype shaped like one example, for the compiled attacks.

    Raises:
      ValueError: naming the argument and the value received.
    """
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
    lo, hi, scale = check_eps(eps, clip, eps_scale=eps_scale, feature_shape=tuple(x.shape[1:]),
                              norm=norm)
    if not bool(tf.reduce_all(tf.math.is_finite(x))):
        raise ValueError("x must be finite. Received: x with NaN or infinite values")
    values = x.numpy()
    below, above = values < lo, values > hi
    if below.any() or above.any():
        if np.ndim(lo) == 0:
            raise ValueError(f"x must lie in clip=[{float(lo)}, {float(hi)}]. Received: x with "
                             f"values in [{values.min():.4g}, {values.max():.4g}]")
        index = np.argwhere(below | above)[0]
        where = [int(i) for i in index]
        raise ValueError(f"x must lie within clip in every feature. Received: x{where}="
                         f"{values[tuple(index)]:.4g} outside "
                         f"[{np.broadcast_to(lo, values.shape)[tuple(index)]:.4g}, "
                         f"{np.broadcast_to(hi, values.shape)[tuple(index)]:.4g}]")
    bounds = tuple(tf.constant(np.broadcast_to(b, x.shape[1:]), x.dtype) for b in (lo, hi, scale))
    if y is None:
        if targeted:
            raise ValueError("y must be given for a targeted attack (the target labels). "
                             "Received: y=None")
        return x, None, bounds
    y = check_labels(y, x.shape[0], num_classes(model))
    return x, tf.constant(y), bounds


def _per_feature(name, value, feature_shape):
    """``value`` (a number or an array) as float64, broadcast-checked against one example."""
    try:
        array = np.asarray(value, np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be numbers or arrays of numbers. Received: "
                         f"{name}={value!r}") from None
    if feature_shape is not None:
        try:
            np.broadcast_to(array, feature_shape)
        except ValueError:
            raise ValueError(f"{name} must broadcast to one example's shape {feature_shape}. "
                             f"Received: {name} with shape {array.shape}") from None
    return array


def check_eps(eps, clip=(0.0, 1.0), *, name="eps", eps_scale=None, feature_shape=None,
              norm="linf"):
    """Checks an attack's radius against its input domain.

    ``clip`` is ``(lo, hi)`` (numbers or per-feature arrays, ``lo < hi`` everywhere, infinite
    for unbounded features) or ``None``; ``eps`` a real number >= 0; ``eps_scale`` ``None``
    or finite positive per-feature scales; ``norm`` one of ``lab.ball.NORMS``. Under
    L-infinity, where both bounds are finite, the radius ``eps * eps_scale`` must not exceed
    ``hi - lo``: a larger ball would cover the whole range, surely a unit mistake (eps=8 meant
    8/255). An L2 radius may exceed the range of one feature (2.0 is a common MNIST radius),
    so only ``eps >= 0`` is checked.

    Returns:
      ``(lo, hi, scale)`` as float64 arrays (or numbers).

    Raises:
      ValueError: naming the argument and the value received.
    """
    check_one_of("norm", norm, NORMS)
    if clip is None:
        lo, hi = np.float64(-np.inf), np.float64(np.inf)
    else:
        try:
            lo, hi = clip
        except (TypeError, ValueError):
            raise ValueError(f"clip must be (lo, hi) or None. Received: clip={clip!r}") from None
        lo = _per_feature("clip", lo, feature_shape)
        hi = _per_feature("clip", hi, feature_shape)
        if np.isnan(lo).any() or np.isnan(hi).any() or not np.all(lo < hi):
            raise ValueError(f"clip must be (lo, hi) with lo < hi. Received: clip={clip!r}")
    scale = np.float64(1.0)
    if eps_scale is not None:
        scale = _per_feature("eps_scale", eps_scale, feature_shape)
        if not (np.all(np.isfinite(scale)) and np.all(scale > 0)):
            raise ValueError(f"eps_scale must be finite and > 0 in every feature. Received: "
                             f"eps_scale={eps_scale!r}")
    width = hi - lo
    if norm == "l2":
        check_positive(name, eps, allow_zero=True)
    elif np.ndim(width) == 0 and np.ndim(scale) == 0 and float(scale) == 1.0:
        check_in_range(name, eps, 0.0, float(width))  # the classic message: eps in [0, hi - lo]
    else:
        check_positive(name, eps, allow_zero=True)
        known = static_value(eps)
        if known is not None and np.any(float(known) * scale > width):
            raise ValueError(f"{name} * eps_scale must be at most hi - lo in every bounded "
                             f"feature. Received: {name}={known!r}, which exceeds it")
    return lo, hi, scale


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
    ``keras.utils.set_random_seed`` seeds, so unseeded runs are repeatable too)."""
    if seed is None:
        return int(np.random.randint(0, 2**31 - 1))
    check_nonnegative_int("seed", seed)
    return int(seed)

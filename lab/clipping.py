"""Gradient clipping over lists of gradients.

Every function takes a list of gradients as ``tf.GradientTape.gradient`` returns it: entries may
be ``None`` (a variable the loss does not touch; kept as ``None``) or ``tf.IndexedSlices`` (from
embedding lookups and gathers; kept sparse where the operation allows). Results equal
TensorFlow's ``tf.clip_by_value`` / ``tf.clip_by_norm`` / ``tf.clip_by_global_norm`` where those
apply, including their convention that the norm of an ``IndexedSlices`` is the norm of its
``values`` (duplicate indices are not summed first).

To compose clipping with other gradient transforms, see ``lab.transforms``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import tensorflow as tf

from lab.checks import check_in_range, check_positive, static_value


def _map_values(fn, grad):
    """Applies ``fn`` to a dense gradient, or to the values of an ``IndexedSlices``."""
    if grad is None:
        return None
    if isinstance(grad, tf.IndexedSlices):
        return tf.IndexedSlices(fn(grad.values), grad.indices, grad.dense_shape)
    return fn(grad)


def _values(grad):
    return grad.values if isinstance(grad, tf.IndexedSlices) else grad


def _check_floating(grads: Sequence) -> None:
    """Raises ``ValueError`` unless every gradient (``None`` aside) is floating point.

    Integer gradients would be scaled by a factor cast to their dtype, which truncates to zero
    (``[30, 40]`` clipped to norm 10 became ``[0, 0]``), and complex ones would lose their
    imaginary part in the float32 norm; TensorFlow's own clipping rejects both.
    """
    for i, g in enumerate(grads):
        if g is None:
            continue
        dtype = getattr(_values(g), "dtype", None)
        dtype = tf.convert_to_tensor(g).dtype if dtype is None else tf.as_dtype(dtype)
        if not dtype.is_floating:
            raise ValueError(f"grads[{i}] must be floating point. Received: grads[{i}] of "
                             f"dtype {dtype.name}")


def global_norm(grads: Sequence) -> tf.Tensor:
    """Euclidean norm of all gradients taken together, in float32 (``None`` entries skipped).

    Equals ``tf.linalg.global_norm`` for same-dtype inputs, and also accepts mixed dtypes
    (e.g. float16 gradients next to float32 ones) by accumulating in float32.

    Args:
      grads: list of floating-point gradients (tensors, ``tf.IndexedSlices`` or ``None``).

    Returns:
      The global norm, a float32 scalar (0 when every entry is ``None``).
    """
    _check_floating(grads)
    squares = [tf.reduce_sum(tf.square(tf.cast(_values(g), tf.float32)))
               for g in grads if g is not None]
    if not squares:
        return tf.constant(0.0, tf.float32)
    return tf.sqrt(tf.add_n(squares))


def check_value_bounds(lo, hi):
    """Raises ``ValueError`` unless ``lo <= hi`` are real numbers, not NaN (a NaN bound makes
    every clipped gradient NaN). An infinite bound is allowed: that side is not clipped."""
    check_in_range("lo", lo, -math.inf, math.inf, allow_inf=True)
    check_in_range("hi", hi, -math.inf, math.inf, allow_inf=True)
    lo_value, hi_value = static_value(lo), static_value(hi)
    if lo_value is not None and hi_value is not None and float(lo_value) > float(hi_value):
        raise ValueError(f"lo must be <= hi. Received: lo={lo!r}, hi={hi!r}")


def clip_by_value(grads: Sequence, lo, hi) -> list:
    """Clips every gradient element into ``[lo, hi]``.

    Args:
      grads: list of gradients (tensors, ``tf.IndexedSlices`` or ``None``).
      lo: lower bound, not NaN (``-inf``: no lower bound).
      hi: upper bound, ``>= lo``, not NaN (``inf``: no upper bound).

    Returns:
      A list of clipped gradients, ``None`` entries kept, ``IndexedSlices`` kept sparse.
    """
    check_value_bounds(lo, hi)
    return [_map_values(lambda t: tf.clip_by_value(t, tf.cast(lo, t.dtype), tf.cast(hi, t.dtype)),
                        g) for g in grads]


def clip_by_norm(grads: Sequence, max_norm) -> list:
    """Rescales each gradient on its own so that its L2 norm is at most ``max_norm``.

    Args:
      grads: list of floating-point gradients (tensors, ``tf.IndexedSlices`` or ``None``).
      max_norm: the largest allowed norm per tensor, ``> 0``.

    Returns:
      A list of clipped gradients; equals ``[tf.clip_by_norm(g, max_norm) for g in grads]``.
    """
    check_positive("max_norm", max_norm)
    _check_floating(grads)
    return [_map_values(lambda t: tf.clip_by_norm(t, tf.cast(max_norm, t.dtype)), g)
            for g in grads]


def clip_by_global_norm(grads: Sequence, max_norm):
    """Rescales all gradients together so that their global L2 norm is at most ``max_norm``.

    With ``g`` the concatenation of all gradients, the result is
    ``g * max_norm / max(||g||, max_norm)`` (Pascanu et al. 2013, arXiv:1211.5063). A NaN or
    infinite global norm makes every clipped gradient NaN, as in ``tf.clip_by_global_norm``:
    what to do with such a step is the training step's decision, in one place
    (``lab.training.make_train_step`` skips it whole, optimizer state included).

    Args:
      grads: list of floating-point gradients (tensors, ``tf.IndexedSlices`` or ``None``).
      max_norm: the largest allowed global norm, ``> 0``.

    Returns:
      ``(clipped, norm)``: the clipped list and the global norm *before* clipping.

    References:
      Pascanu, Mikolov, Bengio. On the difficulty of training recurrent neural networks.
      ICML 2013. arXiv:1211.5063.
    """
    check_positive("max_norm", max_norm)
    norm = global_norm(grads)
    # Same arithmetic as tf.clip_by_global_norm, so results agree to the last bit.
    max_norm_f = tf.cast(max_norm, tf.float32)
    use_norm = tf.where(tf.math.is_finite(norm), norm, tf.constant(float("nan"), tf.float32))
    scale = max_norm_f * tf.minimum(1.0 / use_norm, 1.0 / max_norm_f)
    return [_map_values(lambda t: t * tf.cast(scale, t.dtype), g) for g in grads], norm


def _unitwise_norm(x: tf.Tensor) -> tf.Tensor:
    """L2 norm per output unit, broadcastable against ``x``.

    Scalars and vectors (biases, gains) count as one unit. Kernels in Keras's layouts keep the
    output units on the last axis: dense ``[in, out]``, conv ``[w, in, out]``,
    ``[h, w, in, out]`` and ``[d, h, w, in, out]``; each output unit's norm is taken over all
    other axes. (The NFNet reference code treats a rank-3 tensor as a multi-head dense kernel
    and reduces axis 0 only; Keras's rank-3 kernels are Conv1D kernels.)
    """
    if x.shape.rank <= 1:
        return tf.norm(x)
    axes = list(range(x.shape.rank - 1))
    return tf.sqrt(tf.reduce_sum(tf.square(x), axis=axes, keepdims=True))


def adaptive_clip(grads: Sequence, params: Sequence, clipping=0.01, eps=1e-3) -> list:
    """Unit-wise adaptive gradient clipping (AGC).

    For each unit ``i`` (an output neuron or channel) with weights ``W_i`` and gradient ``G_i``:
    ``G_i <- G_i * clipping * max(||W_i||, eps) / ||G_i||`` when
    ``||G_i|| / max(||W_i||, eps) > clipping``, else unchanged. ``eps`` keeps freshly
    zero-initialized weights (biases) from having their gradients clipped to zero.

    Args:
      grads: list of floating-point gradients (tensors, ``tf.IndexedSlices`` or ``None``).
        ``IndexedSlices`` are made dense: a unit's norm needs all of its rows.
      params: the variables the gradients belong to, same order and shapes.
      clipping: the largest allowed ratio of gradient norm to weight norm, ``> 0``.
      eps: the smallest weight norm used in the ratio, ``>= 0``.

    Returns:
      The list of clipped gradients, ``None`` kept.

    References:
      Brock, De, Smith, Simonyan. High-Performance Large-Scale Image Recognition Without
      Normalization. ICML 2021. arXiv:2102.06171.
    """
    check_positive("clipping", clipping)
    check_positive("eps", eps, allow_zero=True)
    if len(grads) != len(params):
        raise ValueError(
            f"grads and params must have the same length. Received: {len(grads)} gradients "
            f"and {len(params)} params")
    _check_floating(grads)
    clipped = []
    for g, p in zip(grads, params):
        if g is None:
            clipped.append(None)
            continue
        g = tf.convert_to_tensor(g)
        p = tf.cast(tf.convert_to_tensor(p), g.dtype)
        if g.shape != p.shape:
            raise ValueError(f"each gradient must have its param's shape. Received: gradient "
                             f"of shape {g.shape} for a param of shape {p.shape}")
        max_norm = tf.maximum(_unitwise_norm(p), tf.cast(eps, g.dtype)) * tf.cast(clipping, g.dtype)
        grad_norm = _unitwise_norm(g)
        # tf.where evaluates both branches: keep the unused one from dividing by zero.
        safe_norm = tf.maximum(grad_norm, tf.cast(1e-6, g.dtype))
        clipped.append(tf.where(grad_norm > max_norm, g * (max_norm / safe_norm), g))
    return clipped

"""Maximizing a function of the input over an L-infinity ball, by projected signed gradients.

The inner problem of robust training, ``max_{||delta||_inf <= eps} f(x + delta)``, solved
approximately the way PGD does (Madry et al. 2018): from a uniform random point of the ball,
``steps`` times

    x' <- project(x' + step_size * sign(grad f(x')))

where ``project`` clips to the ball around ``x`` and then into an optional box ``clip``.
Radius and step are in units of an optional per-feature ``scale`` (feature ``i``'s radius is
``eps * scale[i]``): features that live on scales a hundred times apart get balls of the same
relative size. The random start matters when ``f`` is a divergence from the clean point: its
gradient is zero at ``delta = 0``, where a start at ``x`` would never move.

The result is returned as a constant (``tf.stop_gradient``): by Danskin's theorem the gradient
of ``max_delta f_theta(x + delta)`` in ``theta`` is the gradient of ``f_theta`` at the
maximizer, taken with the maximizer held fixed. The input gradient comes from
``lab.higher_order.input_gradient``, gradlab's one place for it.

Everything here is graph-friendly: the start is drawn from a stateless seed, so a compiled
step is deterministic given its seed, and ``eps`` may be a ``tf.Variable`` assigned between
calls (a ramp) without retracing.

References:
  Madry, Makelov, Schmidt, Tsipras, Vladu. Towards deep learning models resistant to
  adversarial attacks. ICLR 2018. arXiv:1706.06083.
  Danskin. The theory of max-min, with applications. SIAM J. Appl. Math. 1966.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import tensorflow as tf

from lab.checks import check_nonnegative_int, check_positive, check_positive_int, static_value
from lab.higher_order import input_gradient


def project_to_ball(candidate, x, radius, clip=None):
    """``candidate`` clipped to the L-infinity ball of ``radius`` around ``x``, then into
    ``clip``.

    Args:
      candidate: the point to project, shaped like ``x``.
      x: the centre of the ball.
      radius: a scalar or a per-feature radius (broadcast against ``x``).
      clip: optional ``(lo, hi)``, scalars or per-feature; ``None`` for no box.

    Returns:
      The projected point, shaped like ``x``.
    """
    projected = tf.clip_by_value(candidate, x - radius, x + radius)
    return projected if clip is None else tf.clip_by_value(projected, clip[0], clip[1])


def uniform_in_ball(x, radius, seed, clip=None):
    """A uniform point of the L-infinity ball of ``radius`` around ``x`` (then into ``clip``).

    Args:
      x: the centre, a floating-point batch.
      radius: a scalar or a per-feature radius.
      seed: a stateless seed, shape ``[2]`` integer tensor (``tf.random.stateless_uniform``).
      clip: optional ``(lo, hi)``.

    Returns:
      ``x + radius * u`` with ``u`` uniform in ``[-1, 1]`` per element, clipped into ``clip``.
    """
    noise = tf.random.stateless_uniform(tf.shape(x), seed, -1.0, 1.0, dtype=x.dtype)
    start = x + radius * noise
    return start if clip is None else tf.clip_by_value(start, clip[0], clip[1])


def _as_seed(seed):
    """An int seed as the stateless pair ``[seed, 0]``; a pair (tensor or variable) as is."""
    if isinstance(seed, (int, np.integer)) and not isinstance(seed, bool):
        check_nonnegative_int("seed", seed)
        return tf.constant([int(seed), 0], tf.int64)
    seed = tf.convert_to_tensor(seed)
    if seed.shape.rank != 1 or seed.shape[0] != 2 or not seed.dtype.is_integer:
        raise ValueError(f"seed must be an integer >= 0 or an integer tensor of shape [2]. "
                         f"Received: seed of dtype {seed.dtype.name} and shape {seed.shape}")
    return seed


def _check_scale(scale, dtype):
    if scale is None:
        return None
    known = static_value(scale)
    if known is not None:
        known = np.asarray(known, np.float64)
        if known.size == 0 or not (np.all(np.isfinite(known)) and np.all(known > 0)):
            raise ValueError(f"scale must be finite and > 0 in every feature. Received: "
                             f"scale={scale!r}")
    return tf.cast(scale, dtype)


def maximize_in_ball(f: Callable, x, eps, *, steps: int, seed, step_size=None, scale=None,
                     clip=None) -> tf.Tensor:
    """``x + delta`` with ``delta`` approximately maximizing ``f(x + delta)`` over
    ``||delta / scale||_inf <= eps``, by projected signed-gradient ascent from a random start.

    ``f`` may return one value per example (each example's ball is searched on its own: the
    gradient of the sum is the per-example gradient when examples do not interact) or a
    scalar (the batch's total is ascended).

    Args:
      f: callable ``f(x) -> tf.Tensor``, differentiable in ``x``; called ``steps`` times.
      x: the floating-point batch, the centre of the ball.
      eps: the radius, ``>= 0``, in units of ``scale``; a number, tensor or ``tf.Variable``
        (checked when its value is known before run time).
      steps: signed-gradient steps, an integer ``>= 1`` (unrolled: a fixed small count).
      seed: the random start's seed: an integer ``>= 0``, or a stateless pair (an integer
        tensor or variable of shape ``[2]``: assign it per call to draw new starts without
        retracing).
      step_size: step length in units of ``scale``, ``> 0``; default ``2.5 * eps / steps``
        (enough to cross the ball and come back, as for PGD in ``attacks.pgd``).
      scale: optional per-feature scale (finite, ``> 0``), broadcast against ``x``'s
        features.
      clip: optional ``(lo, hi)`` box, scalars or per-feature, that the result stays in.

    Returns:
      ``x + delta``, shaped like ``x``, inside the ball and ``clip``, with no gradient
      (``tf.stop_gradient``): the maximizer is a constant for any outer tape.

    Raises:
      ValueError: naming ``eps``, ``steps``, ``step_size``, ``scale`` or ``seed`` and the
        value received.
    """
    check_positive("eps", eps, allow_zero=True)
    check_positive_int("steps", steps)
    if step_size is not None:
        check_positive("step_size", step_size)
    x = tf.stop_gradient(tf.convert_to_tensor(x))
    seed = _as_seed(seed)
    scale = _check_scale(scale, x.dtype)
    per_unit = (lambda value: value) if scale is None else (lambda value: value * scale)
    eps = tf.cast(eps, x.dtype)
    step = 2.5 * eps / steps if step_size is None else tf.cast(step_size, x.dtype)
    radius, step = per_unit(eps), per_unit(step)

    # input_gradient differentiates loss_fn(y, model(x)): f is the model, the loss the identity.
    as_model = lambda z, training=False: f(z)
    identity = lambda _, value: value
    candidate = uniform_in_ball(x, radius, seed, clip)
    for _ in range(steps):
        grad = input_gradient(as_model, identity, candidate, None)
        candidate = project_to_ball(candidate + step * tf.sign(grad), x, radius, clip)
    return tf.stop_gradient(candidate)

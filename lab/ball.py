"""Maximizing a function of the input over an L-infinity or L2 ball, by projected steepest
ascent; the ball's primitives (projection, random start, ascent step) that every attack uses.

The inner problem of robust training, ``max_{||delta|| <= eps} f(x + delta)``, solved
approximately the way PGD does (Madry et al. 2018): from a uniform random point of the ball,
``steps`` times

    x' <- project(x' + step_size * d),  d = sign(grad f(x'))  (L-infinity)
                                        d = grad f(x') / ||grad f(x')||_2  (L2)

where ``project`` maps onto the ball around ``x`` and then into an optional box ``clip``.
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

from lab.checks import (
    check_nonnegative_int,
    check_one_of,
    check_positive,
    check_positive_int,
    static_value,
)
from lab.higher_order import input_gradient

NORMS = ("linf", "l2")


def _scaled(value, scale, dtype):
    """``value`` in input units: times the per-feature ``scale`` when there is one."""
    value = tf.cast(value, dtype)
    return value if scale is None else value * scale


def _l2_norm(v):
    """Each example's L2 norm over all its features, shaped to broadcast against ``v``."""
    return tf.sqrt(tf.reduce_sum(tf.square(v), axis=tf.range(1, tf.rank(v)), keepdims=True))


def _unit_l2(v):
    """``v / ||v||_2`` per example; 0 where ``v`` is 0 (the floor keeps 0 / 0 out)."""
    return v / tf.maximum(_l2_norm(v), tf.constant(1e-12, v.dtype))


def project_to_ball(candidate, x, eps, clip=None, *, scale=None, norm="linf"):
    """``candidate`` projected onto the ball ``||(z - x) / scale||_norm <= eps``, then into
    ``clip``.

    L-infinity: clipped per feature to ``x +- eps * scale``. L2: the offset from ``x`` scaled
    down to length ``eps`` when longer (in ``scale``'s units). The box comes last; with ``x``
    inside it, clipping only moves features toward ``x``, so the result stays in the ball (for
    L2 it is a feasible point, not the exact projection onto the intersection, as in Croce &
    Hein's APGD).

    Args:
      candidate: the point to project, shaped like ``x``.
      x: the centre of the ball, a batch.
      eps: the radius: a scalar, or for L-infinity per-feature (broadcast against ``x``).
      clip: optional ``(lo, hi)``, scalars or per-feature; ``None`` for no box.
      scale: optional per-feature scale (finite, ``> 0``); ``None``: input units.
      norm: ``"linf"`` or ``"l2"``.

    Returns:
      The projected point, shaped like ``x``.
    """
    if norm == "linf":
        radius = _scaled(eps, scale, x.dtype)
        projected = tf.clip_by_value(candidate, x - radius, x + radius)
    else:
        offset = candidate - x if scale is None else (candidate - x) / scale
        eps = tf.cast(eps, x.dtype)
        offset *= tf.minimum(1.0, eps / tf.maximum(_l2_norm(offset), 1e-12))
        projected = x + (offset if scale is None else offset * scale)
    return projected if clip is None else tf.clip_by_value(projected, clip[0], clip[1])


def uniform_in_ball(x, eps, seed, clip=None, *, scale=None, norm="linf"):
    """A uniform random point of the ball ``||(z - x) / scale||_norm <= eps`` (then into
    ``clip``).

    Args:
      x: the centre, a floating-point batch.
      eps: the radius: a scalar, or for L-infinity per-feature.
      seed: a stateless seed, shape ``[2]`` integer tensor (``tf.random.stateless_uniform``).
      clip: optional ``(lo, hi)``.
      scale: optional per-feature scale.
      norm: ``"linf"`` (independent uniform offsets in ``[-eps, eps]``) or ``"l2"`` (a
        Gaussian direction, normalized, at a radius ``eps * u ** (1 / d)`` for ``d`` features:
        uniform in the volume of the ball).

    Returns:
      The random point, shaped like ``x``, clipped into ``clip``.
    """
    if norm == "linf":
        noise = tf.random.stateless_uniform(tf.shape(x), seed, -1.0, 1.0, dtype=x.dtype)
    else:
        direction = _unit_l2(tf.random.stateless_normal(tf.shape(x), seed, dtype=x.dtype))
        features = tf.cast(tf.reduce_prod(tf.shape(x)[1:]), x.dtype)
        per_example = tf.concat([tf.shape(x)[:1], tf.ones_like(tf.shape(x)[1:])], 0)
        u = tf.random.stateless_uniform(per_example, tf.random.experimental.stateless_fold_in(
            seed, 1), dtype=x.dtype)
        noise = direction * u ** (1.0 / features)
    start = x + _scaled(eps, scale, x.dtype) * noise
    return start if clip is None else tf.clip_by_value(start, clip[0], clip[1])


def ascent_step(z, grad, step, *, scale=None, norm="linf"):
    """``z`` moved ``step`` along the steepest ascent direction of the norm's unit ball (in
    ``scale``'s units): ``sign(grad)`` for L-infinity, ``grad / ||grad||_2`` for L2 (0 where
    the gradient is 0). Not projected (``project_to_ball``)."""
    if norm == "linf":
        return z + _scaled(step, scale, z.dtype) * tf.sign(grad)
    direction = _unit_l2(grad if scale is None else grad * scale)
    return z + _scaled(step, scale, z.dtype) * direction


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
                     clip=None, norm: str = "linf") -> tf.Tensor:
    """``x + delta`` with ``delta`` approximately maximizing ``f(x + delta)`` over
    ``||delta / scale||_norm <= eps``, by projected steepest ascent (signed gradients for
    L-infinity) from a random start.

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
      norm: ``"linf"`` or ``"l2"`` (``NORMS``).

    Returns:
      ``x + delta``, shaped like ``x``, inside the ball and ``clip``, with no gradient
      (``tf.stop_gradient``): the maximizer is a constant for any outer tape.

    Raises:
      ValueError: naming ``eps``, ``steps``, ``step_size``, ``scale``, ``seed`` or ``norm``
        and the value received.
    """
    check_one_of("norm", norm, NORMS)
    check_positive("eps", eps, allow_zero=True)
    check_positive_int("steps", steps)
    if step_size is not None:
        check_positive("step_size", step_size)
    x = tf.stop_gradient(tf.convert_to_tensor(x))
    seed = _as_seed(seed)
    scale = _check_scale(scale, x.dtype)
    eps = tf.cast(eps, x.dtype)
    step = 2.5 * eps / steps if step_size is None else tf.cast(step_size, x.dtype)

    # input_gradient differentiates loss_fn(y, model(x)): f is the model, the loss the identity.
    as_model = lambda z, training=False: f(z)
    identity = lambda _, value: value
    candidate = uniform_in_ball(x, eps, seed, clip, scale=scale, norm=norm)
    for _ in range(steps):
        grad = input_gradient(as_model, identity, candidate, None)
        candidate = project_to_ball(ascent_step(candidate, grad, step, scale=scale, norm=norm),
                                    x, eps, clip, scale=scale, norm=norm)
    return tf.stop_gradient(candidate)

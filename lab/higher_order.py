"""Derivatives beyond the gradient: second derivatives, Hessian-vector products, dense
Hessians, Newton steps and curvature diagnostics, plus the input gradient that attacks use.

Conventions. ``f`` is a zero-argument callable that returns a scalar and reads ``variables``
(the usual TensorFlow loss closure, e.g. ``lambda: loss_fn(y, model(x))``); ``variables`` is a
variable or tensor, or a list of them (Keras 3 variables are accepted as they are). Results
mirror that form: one tensor for one variable, a list for a list. A flat vector over a list of
variables orders their elements as ``lab.variables.flatten`` does; ``lab.variables.unflatten``
maps such a vector (a Hessian row, an eigenvector, a Newton step) back onto the variables.

The math, for a scalar loss ``L(w)`` with gradient ``g(w)`` and Hessian ``H(w)``:

- ``hvp``: ``H v = d/dt g(w + t v) |_{t=0}``, a forward-mode derivative (a JVP) of the
  reverse-mode gradient, "forward-over-back": one pass each way, memory of one gradient, no
  ``n x n`` matrix (Pearlmutter 1994).
- ``hessian``: the Jacobian of ``g``, vectorized over its rows (``GradientTape.jacobian`` with
  pfor); ``n`` must be small enough for an ``n x n`` matrix.
- ``newton_step``: ``d = -(H + damping I)^{-1} g``, computed by solving the linear system.
- ``hessian_top_eigenvalue``: power iteration ``v <- Hv / ||Hv||`` on ``hvp``.
- ``hessian_trace``: Hutchinson's estimator ``tr(H) = E[z^T H z]`` with Rademacher ``z``.

References:
  Pearlmutter. Fast exact multiplication by the Hessian. Neural Computation 1994.
  Hutchinson. A stochastic estimator of the trace of the influence matrix for Laplacian
  smoothing splines. Communications in Statistics 1990.
"""

from __future__ import annotations

from collections.abc import Callable

import tensorflow as tf

from lab.checks import check_positive, check_positive_int
from lab.compile_cache import cached_function
from lab.variables import as_list, flatten, unflatten

_ZERO = tf.UnconnectedGradients.ZERO


def _check_scalar(value, what="f"):
    value = tf.convert_to_tensor(value)
    if value.shape.rank != 0:
        raise ValueError(f"{what} must return a scalar. Received: a value of shape {value.shape}"
                         " (reduce it, e.g. with tf.reduce_mean, before differentiating)")
    return value


def _mirror(results, single):
    return results[0] if single else results


def value_and_grad(f: Callable, variables):
    """Returns ``(f(), df/dvariables)``.

    Args:
      f: zero-argument callable returning a scalar.
      variables: a variable or tensor, or a list of them.

    Returns:
      ``(value, grads)``; ``grads`` mirrors ``variables`` and holds zeros (never ``None``) for
      variables ``f`` does not use.
    """
    vs, single = as_list(variables)
    with tf.GradientTape(watch_accessed_variables=False) as tape:
        tape.watch(vs)
        value = _check_scalar(f())
    grads = tape.gradient(value, vs, unconnected_gradients=_ZERO)
    return value, _mirror(grads, single)


def second_derivative(f: Callable, x):
    """First and second derivative of an elementwise function: ``(dy/dx, d2y/dx2)``.

    For ``f(x) = x**2`` at ``x = 3`` this gives ``(6, 2)``. ``x`` may be a tensor, in which
    case ``f`` must act elementwise (each ``y_i`` depends on ``x_i`` only): the result is then
    the derivative of each element. For mixed partials of a general function use ``hessian``.

    Args:
      f: callable mapping ``x`` to ``y``.
      x: a number, tensor or variable (floating point).

    Returns:
      ``(dy_dx, d2y_dx2)``, each shaped like ``x``.
    """
    if not isinstance(x, (tf.Tensor, tf.Variable)):
        x = tf.convert_to_tensor(x, dtype_hint=tf.float32)
    if not x.dtype.is_floating:
        raise ValueError(f"x must be floating point. Received: x of dtype {x.dtype.name}")
    with tf.GradientTape(watch_accessed_variables=False) as outer:
        outer.watch(x)
        with tf.GradientTape(watch_accessed_variables=False) as inner:
            inner.watch(x)
            y = f(x)
        dy_dx = inner.gradient(y, x, unconnected_gradients=_ZERO)
    d2y_dx2 = outer.gradient(dy_dx, x, unconnected_gradients=_ZERO)
    return dy_dx, d2y_dx2


def _as_tangents(vector, vs, single):
    """Checks that ``vector`` matches the variables' structure, shapes and dtypes."""
    if single:
        vector = [vector]
    if not isinstance(vector, (list, tuple)) or len(vector) != len(vs):
        raise ValueError(
            f"vector must have the structure of variables: {len(vs)} tensor(s) shaped "
            f"{[tuple(v.shape) for v in vs]}. Received: vector={vector!r}")
    tangents = []
    for i, (t, v) in enumerate(zip(vector, vs)):
        t = tf.convert_to_tensor(t, dtype=v.dtype)
        if t.shape != v.shape:
            raise ValueError(
                f"vector[{i}] must have the shape of variables[{i}], {tuple(v.shape)}. "
                f"Received: vector[{i}] with shape {tuple(t.shape)}")
        tangents.append(t)
    return tangents


def hvp(f: Callable, variables, vector):
    """Hessian-vector product ``H v`` of the scalar ``f`` (forward-over-back).

    Args:
      f: zero-argument callable returning a scalar.
      variables: a variable or tensor, or a list of them (Keras 3 variables accepted).
      vector: the vector ``v``, with the structure, shapes and dtypes of ``variables``.

    Returns:
      ``H v``, mirroring ``variables``.

    Cost: ``benchmarks/bench_higher_order.py`` times it against a gradient and against
    back-over-back (a gradient of ``<g, v>``), which can be faster in TensorFlow, whose
    forward-mode rules are derived from backward ones; forward-over-back keeps the memory of
    one backward pass.

    References:
      Pearlmutter. Fast exact multiplication by the Hessian. Neural Computation 1994.
    """
    vs, single = as_list(variables)
    tangents = _as_tangents(vector, vs, single)
    with tf.autodiff.ForwardAccumulator(vs, tangents) as acc:
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch(vs)
            value = _check_scalar(f())
        grads = tape.gradient(value, vs, unconnected_gradients=_ZERO)
    return _mirror(acc.jvp(grads, unconnected_gradients=_ZERO), single)


def _grad_and_hessian(f, vs):
    """Returns ``(flat_grad, hessian)`` over the list of variables ``vs``."""
    with tf.GradientTape(watch_accessed_variables=False) as outer:
        outer.watch(vs)
        with tf.GradientTape(watch_accessed_variables=False) as inner:
            inner.watch(vs)
            value = _check_scalar(f())
        flat_grad = flatten(inner.gradient(value, vs, unconnected_gradients=_ZERO))
    rows = outer.jacobian(flat_grad, vs, unconnected_gradients=_ZERO,
                          experimental_use_pfor=True)
    n = flat_grad.shape[0]
    # Each block's static width, not -1: a block with no elements reshaped to [0, -1] comes
    # out [0, 1], and the Hessian of size-0 variables would be [0, k] instead of [0, 0].
    blocks = [tf.reshape(r, [n, v.shape.num_elements()]) for r, v in zip(rows, vs)]
    return flat_grad, tf.concat(blocks, axis=1)


def hessian(f: Callable, variables) -> tf.Tensor:
    """The dense Hessian of the scalar ``f`` across all ``variables``, shape ``[n, n]``.

    Row and column ``i`` belong to element ``i`` of ``lab.variables.flatten(variables)``;
    ``lab.variables.flat_slices(variables)`` gives each variable's block and
    ``lab.variables.unflatten(row, variables)`` maps a row back onto the variables.

    Args:
      f: zero-argument callable returning a scalar.
      variables: a variable or tensor, or a list of them.

    Returns:
      The ``[n, n]`` Hessian, ``n`` the total number of scalars in ``variables``.
    """
    vs, _ = as_list(variables)
    return _grad_and_hessian(f, vs)[1]


def newton_step(f: Callable, variables, damping=0.0):
    """The damped Newton step ``d = -(H + damping I)^{-1} g``, by a linear solve.

    The Hessian is never inverted: ``(H + damping I) d = -g`` is solved by LU decomposition.
    A positive ``damping`` (Levenberg-Marquardt) keeps the step finite where ``H`` is singular
    and shortens it where curvature is small or negative.

    Args:
      f: zero-argument callable returning a scalar.
      variables: a variable or tensor, or a list of them.
      damping: ``>= 0``, added to the Hessian's diagonal.

    Returns:
      The step ``d``, mirroring ``variables`` (apply it with ``v.assign_add(d)``).
    """
    check_positive("damping", damping, allow_zero=True)
    vs, single = as_list(variables)
    flat_grad, h = _grad_and_hessian(f, vs)
    system = h + tf.cast(damping, h.dtype) * tf.eye(tf.shape(h)[0], dtype=h.dtype)
    step = -tf.linalg.solve(system, flat_grad[:, None])[:, 0]
    return _mirror(unflatten(step, vs), single)


def _compiled_hvp(f, vs):
    """``hvp`` of ``f`` over fixed variables as one ``tf.function``, cached per closure: a
    caller measuring curvature every few hundred steps with the same ``f`` traces once."""
    # Named functions, not a lambda inside a lambda: autograph finds a lambda's source by its
    # line and can convert the wrong one of two on the same line.
    def build():
        def compiled_hvp(tangents):
            return hvp(f, vs, tangents)
        return tf.function(compiled_hvp)

    return cached_function(f, ("hvp", tuple(v.ref() for v in vs)), build)


def _dot(a, b):
    return tf.add_n([tf.reduce_sum(x * y) for x, y in zip(a, b)])


def hessian_top_eigenvalue(f: Callable, variables, iters: int = 20, *, seed: int = 0):
    """The Hessian's eigenvalue of largest magnitude, by power iteration on ``hvp``.

    Starting from a random unit vector ``v``, repeats ``v <- Hv / ||Hv||`` and returns the
    Rayleigh quotient ``v^T H v``. Near a minimum (``H`` positive semi-definite) this is the
    sharpness ``lambda_max``; for an indefinite ``H`` it is the eigenvalue of largest absolute
    value, with its sign. Convergence is geometric in ``|lambda_2 / lambda_1|``. ``f`` must be
    traceable by ``tf.function``: the products run compiled, traced once per closure
    and list of variables, so reuse the same ``f`` when measuring repeatedly.

    Args:
      f: zero-argument callable returning a scalar.
      variables: a variable or tensor, or a list of them.
      iters: number of Hessian-vector products, ``>= 1``.
      seed: seed of the random start vector.

    Returns:
      The eigenvalue estimate, a scalar tensor.
    """
    check_positive_int("iters", iters)
    vs, _ = as_list(variables)
    product = _compiled_hvp(f, vs)
    v = [tf.random.stateless_normal(x.shape, seed=[seed, i], dtype=x.dtype)
         for i, x in enumerate(vs)]
    eigenvalue = tf.constant(0.0, vs[0].dtype)
    for _ in range(iters):
        # A zero Hessian gives Hv = 0: divide by a floor so the estimate is 0, not NaN.
        norm = tf.maximum(tf.sqrt(_dot(v, v)), tf.constant(1e-30, v[0].dtype))
        v = [x / norm for x in v]
        hv = product(v)
        eigenvalue = _dot(v, hv)
        v = hv
    return eigenvalue


def hessian_trace(f: Callable, variables, samples: int = 100, *, seed: int = 0):
    """Hutchinson's estimate of the Hessian's trace, ``mean_k z_k^T H z_k``.

    Each ``z_k`` has independent Rademacher (+1/-1) entries, so ``E[z^T H z] = tr(H)``; the
    variance is ``2 * sum_{i != j} H_ij^2``, exactly zero for a diagonal ``H``. ``f`` must be
    traceable by ``tf.function``: the products run compiled, traced once per closure
    and list of variables, so reuse the same ``f`` when measuring repeatedly.

    Args:
      f: zero-argument callable returning a scalar.
      variables: a variable or tensor, or a list of them.
      samples: number of probe vectors (Hessian-vector products), ``>= 1``.
      seed: seed of the probe vectors.

    Returns:
      The trace estimate, a scalar tensor.

    References:
      Hutchinson. A stochastic estimator of the trace of the influence matrix for Laplacian
      smoothing splines. Communications in Statistics 1990.
    """
    check_positive_int("samples", samples)
    vs, _ = as_list(variables)
    product = _compiled_hvp(f, vs)
    total = tf.constant(0.0, vs[0].dtype)
    for k in range(samples):
        z = [tf.cast(2 * tf.random.stateless_uniform(x.shape, seed=[seed, k * len(vs) + i],
                                                     maxval=2, dtype=tf.int32) - 1, x.dtype)
             for i, x in enumerate(vs)]
        total += _dot(z, product(z))
    return total / samples


def input_gradient(model: Callable, loss_fn: Callable, x, y, *, training: bool = False):
    """Gradient of the loss with respect to the input batch.

    This is the one place where gradlab takes an input gradient: the attacks, and the
    input-gradient penalty (``lab.regularizers``). By default the model is called with
    ``training=False`` (dropout off, batch-norm statistics frozen), so the gradient belongs to
    the function that is being attacked and two calls on the same batch agree. Inside an outer
    tape the result stays differentiable with respect to the weights (double backprop).

    Args:
      model: callable ``model(x, training=...) -> logits``.
      loss_fn: callable ``loss_fn(y, logits)``; per-example losses give per-example input
        gradients (the gradient of their sum), a batch mean scales them by ``1 / batch``.
      x: the input batch (floating point).
      y: the labels, passed to ``loss_fn`` as they are.
      training: the mode the model runs in; ``True`` for a penalty that is part of training.

    Returns:
      ``d loss / d x``, shaped like ``x``.
    """
    return outputs_loss_and_input_gradient(model, loss_fn, x, y, training=training)[2]


def outputs_loss_and_input_gradient(model: Callable, loss_fn: Callable, x, y, *,
                                    training: bool = False):
    """``input_gradient`` with what the same forward pass computed on the way: the model's
    outputs and the loss, for an attack that checks success and progress at every step
    without a second forward pass.

    Returns:
      ``(outputs, loss, d loss / d x)``.
    """
    x = tf.convert_to_tensor(x)
    with tf.GradientTape(watch_accessed_variables=False) as tape:
        tape.watch(x)
        outputs = model(x, training=training)
        loss = loss_fn(y, outputs)
    return outputs, loss, tape.gradient(loss, x, unconnected_gradients=_ZERO)

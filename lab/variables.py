"""Lists of variables: unwrapping Keras 3 variables, and flat vectors over a list of them.

Keras 3 wraps each ``tf.Variable`` in a ``keras.Variable``. ``tf.GradientTape`` accepts the
wrapper, but ``tf.autodiff.ForwardAccumulator`` does not (it fails deep inside with
``'str' object has no attribute 'is_floating'``), so every helper that hands variables to
TensorFlow's autodiff unwraps them here, in one place.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
import tensorflow as tf


def as_tf_variable(variable):
    """Returns the ``tf.Variable`` behind a ``keras.Variable``; anything else unchanged."""
    if isinstance(variable, keras.Variable):
        return variable.value
    return variable


def as_list(variables) -> tuple[list, bool]:
    """Returns ``(list_of_variables, was_single)`` so results can mirror the input's form.

    Args:
      variables: a variable or tensor, or a non-empty list or tuple of them.

    Returns:
      ``(list_of_variables, was_single)``, Keras variables unwrapped.
    """
    if isinstance(variables, (list, tuple)):
        if not variables:
            # An empty list would otherwise fail deep inside TensorFlow (ConcatV2 of nothing).
            raise ValueError("variables must be a variable or tensor, or a non-empty list of "
                             f"them. Received: variables={variables!r}")
        return [as_tf_variable(v) for v in variables], False
    return [as_tf_variable(variables)], True


def flat_size(variables: Sequence) -> int:
    """Total number of scalars across ``variables`` (static shapes, so it works when traced)."""
    return sum(v.shape.num_elements() for v in variables)


def flat_slices(variables: Sequence) -> list[slice]:
    """For each variable, the ``slice`` of the flat vector (or Hessian row/column) it occupies."""
    slices, start = [], 0
    for v in variables:
        size = v.shape.num_elements()
        slices.append(slice(start, start + size))
        start += size
    return slices


def flatten(tensors: Sequence) -> tf.Tensor:
    """Concatenates ``tensors`` into one vector, in order (the Hessian's row order)."""
    return tf.concat([tf.reshape(t, [-1]) for t in tensors], axis=0)


def unflatten(flat, like: Sequence) -> list[tf.Tensor]:
    """Splits a flat vector back into tensors shaped like ``like`` (inverse of ``flatten``).

    Use it to map a Hessian row, an eigenvector or a Newton step back onto the variables.
    """
    like = [as_tf_variable(v) for v in like]
    n = flat_size(like)
    if flat.shape.rank != 1 or flat.shape[0] != n:
        raise ValueError(
            f"flat must be a vector of {n} elements (the total size of the variables). "
            f"Received: flat with shape {flat.shape}")
    return [tf.reshape(flat[s], v.shape) for s, v in zip(flat_slices(like), like)]

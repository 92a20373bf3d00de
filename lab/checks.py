"""Argument checks that fail early with the argument's name and the value received.

Every public function in gradlab validates its arguments the same way, so errors read alike:
``ValueError: max_norm must be > 0. Received: max_norm=-1.0``. A checked number must be a real
scalar (a Python or NumPy number, a 0-d array or a scalar tensor; not a bool, a string, a vector
or ``None``) and finite: NaN and +/-inf are refused (``lr must be a finite number > 0. Received:
lr=inf``), since a hyperparameter that is not finite only turns up later as NaN losses. Values
that are only known at graph run time (symbolic tensors inside a ``tf.function``,
``tf.Variable``s) cannot be checked here and pass.
"""

from __future__ import annotations

import math
import numbers

import numpy as np
import tensorflow as tf


def static_value(value):
    """Returns ``value`` as a Python/NumPy value if known before run time, else ``None``."""
    if isinstance(value, (tf.Tensor, tf.Variable)):
        try:
            return tf.get_static_value(value)
        except (TypeError, ValueError):
            return None
    if hasattr(value, "numpy") and callable(value.numpy):  # keras.Variable
        return value.numpy()
    return value


def _fail(name, rule, value):
    raise ValueError(f"{name} must be {rule}. Received: {name}={value!r}")


def _known_real(name, value):
    """``value`` as a float if known before run time, ``None`` if it is not (a symbolic tensor or
    a ``tf.Variable``); raises ``ValueError`` unless it is a real scalar."""
    if value is None:
        _fail(name, "a real number", value)
    known = static_value(value)
    if known is None:  # known only at run time
        return None
    if isinstance(known, np.ndarray) and known.ndim == 0:
        known = known[()]  # a 0-d array holds one number
    # A bool is a flag, not a number (True would pass as 1.0); a string, a vector or a
    # complex number here is a mistake that float() would hide or report without the name.
    if isinstance(known, (bool, np.bool_)) or not isinstance(known, numbers.Real):
        _fail(name, "a real number", _shown(value, known))
    return float(known)


def _shown(value, known):
    """What an error echoes: a tensor's value, not its repr."""
    return known if isinstance(value, tf.Tensor) else value


def _fail_number(name, rule, value, known, *, finite=True):
    """Fails with ``rule``, saying "a finite number" when ``known`` is NaN or infinite and
    ``finite`` numbers are the rule: the message of a finite value out of range stays the
    plain ``rule``."""
    if finite and not math.isfinite(known):
        rule = f"a finite number {rule}"
    _fail(name, rule, _shown(value, known))


def check_finite(name, value):
    """Raises ``ValueError`` unless ``value`` is a finite real scalar (any sign)."""
    known = _known_real(name, value)
    if known is not None and not math.isfinite(known):
        _fail(name, "a finite number", _shown(value, known))


def check_positive(name, value, *, allow_zero=False):
    """Raises ``ValueError`` unless ``value`` is a finite real scalar > 0 (or >= 0 with
    ``allow_zero``)."""
    known = _known_real(name, value)
    if known is None:
        return
    if not math.isfinite(known) or known < 0 or (known == 0 and not allow_zero):
        _fail_number(name, ">= 0" if allow_zero else "> 0", value, known)


def check_in_range(name, value, lo, hi, *, lo_open=False, hi_open=False, allow_inf=False):
    """Raises ``ValueError`` unless ``value`` is a finite real scalar in the interval from ``lo``
    to ``hi``. An infinite bound only leaves that side unbounded; ``allow_inf`` also lets an
    infinite ``value`` through where the interval holds it (a bound that may be open-ended,
    such as one side of a clip). NaN never passes."""
    known = _known_real(name, value)
    if known is None:
        return
    above = known > lo if lo_open else known >= lo
    below = known < hi if hi_open else known <= hi
    if not ((math.isfinite(known) or allow_inf) and above and below):  # NaN: neither holds
        rule = f"in {'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}"
        _fail_number(name, rule, value, known, finite=not allow_inf)


def check_one_of(name, value, choices):
    """Raises ``ValueError`` unless ``value`` is one of ``choices``."""
    if value not in choices:
        _fail(name, f"one of {tuple(choices)}", value)


def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def check_positive_int(name, value):
    """Raises ``ValueError`` unless ``value`` is an integer >= 1 (Python or NumPy)."""
    if not _is_int(value) or value < 1:
        _fail(name, "an integer >= 1", value)


def check_nonnegative_int(name, value):
    """Raises ``ValueError`` unless ``value`` is an integer >= 0 (Python or NumPy)."""
    if not _is_int(value) or value < 0:
        _fail(name, "an integer >= 0", value)


def check_seeds(name, values):
    """Raises ``ValueError`` unless ``values`` is one or more distinct integers >= 0 (a list of
    seeds: a repeated one would run, and count, the same run twice)."""
    if (not values or not all(_is_int(v) and v >= 0 for v in values)
            or len(set(values)) != len(values)):
        _fail(name, "one or more distinct non-negative integers", values)

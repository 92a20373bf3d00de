"""Compiled functions cached per owner (a model, a loss closure), held weakly.

``tf.function`` traces once per function object: wrapping a model call in a new
``tf.function`` on every call retraces every time. Code that compiles something *about* an
object it is handed (an attack about a model, an HVP about a loss closure) caches the
compiled function on that object here, so a second call with the same object reuses the
trace, and the cache entry goes away with the object.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Hashable

_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def cached_function(owner, key: Hashable, build: Callable[[], Callable]) -> Callable:
    """Returns ``build()`` (typically a ``tf.function``), built once per ``(owner, key)``.

    Args:
      owner: the object the function is about; held weakly. Objects that cannot be weakly
        referenced get a fresh function each call (correct, only slower).
      key: distinguishes functions about the same owner (e.g. an attack's name and options).
      build: makes the function.
    """
    try:
        per_owner = _CACHE.setdefault(owner, {})
    except TypeError:
        return build()
    if key not in per_owner:
        per_owner[key] = build()
    return per_owner[key]

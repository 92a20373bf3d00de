"""Compiled functions cached per owner (a model, a loss closure), stored on the owner.

``tf.function`` traces once per function object: wrapping a model call in a new
``tf.function`` on every call retraces every time. Code that compiles something *about* an
object it is handed (an attack about a model, an HVP about a loss closure) caches the
compiled function on that object here, so a second call with the same object reuses the
trace, and the cache goes away with the object.

The cache lives in the owner's ``__dict__``, not in a module-level weakly keyed table: the
functions close over their owner, and a ``weakref.WeakKeyDictionary`` value that refers to its
key keeps the key alive forever (it is not an ephemeron table). On the owner, owner -> cache ->
function -> owner is a cycle, which the garbage collector frees.
"""

from __future__ import annotations

import types
import weakref
from collections.abc import Callable, Hashable

_ATTRIBUTE = "_gradlab_compiled_functions"


class _Functions:
    """One owner's compiled functions, by key.

    Deliberately not a ``dict``: Keras saving walks a model's attributes and descends into
    dicts, lists and tuples; an object of its own is left alone.
    """

    __slots__ = ("by_key", "owner")

    def __init__(self, owner=None):
        # Weak, so the cache can tell its owner from a copy that shares the copied __dict__.
        self.owner = None if owner is None else weakref.ref(owner)
        self.by_key = {}

    def __reduce__(self):
        # Copies and pickles of the owner start empty: the functions belong to the original.
        return _Functions, ()


def _functions_of(owner) -> _Functions | None:
    """The cache stored on ``owner``, created if needed; ``None`` where none can be stored."""
    try:
        namespace = vars(owner)
        functions = namespace.get(_ATTRIBUTE)
        if functions is None or functions.owner is None or functions.owner() is not owner:
            functions = _Functions(owner)
            # Written into __dict__ directly, past any __setattr__: Keras layers track (and
            # wrap) what is assigned to them, frozen dataclasses refuse assignment.
            namespace[_ATTRIBUTE] = functions
    except TypeError:  # no __dict__ (slots, builtins), a read-only one (classes), no weakref
        return None
    return functions


def cached_function(owner, key: Hashable, build: Callable[[], Callable]) -> Callable:
    """Returns ``build()`` (typically a ``tf.function``), built once per ``(owner, key)``.

    The function may refer to ``owner``: the cache is stored on the owner itself, so it does not
    keep the owner alive, and goes away with it.

    Args:
      owner: the object the function is about. Objects that cannot hold attributes or be
        weakly referenced (e.g. ints, objects with ``__slots__``) get a fresh function each
        call (correct, only slower). A bound method is cached on its instance.
      key: distinguishes functions about the same owner (e.g. an attack's name and options).
      build: makes the function.

    Returns:
      The cached (or, where nothing can be cached, a fresh) result of ``build()``.
    """
    if isinstance(owner, types.MethodType):
        # Each attribute access makes a new bound method: cache on the instance instead.
        owner, key = owner.__self__, (owner.__func__, key)
    functions = _functions_of(owner)
    if functions is None:
        return build()
    if key not in functions.by_key:
        functions.by_key[key] = build()
    return functions.by_key[key]

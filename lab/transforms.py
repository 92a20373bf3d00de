"""Composable gradient transforms, in the spirit of ``optax.chain``.

A gradient transform is any callable ``transform(grads, params) -> grads``. The ones here are
frozen dataclasses, so they print, compare and serialize as their configuration::

    transform = chain(AdaptiveClip(0.01), ClipByGlobalNorm(1.0))
    grads = transform(grads, model.trainable_variables)

``lab.training.make_train_step(..., transform=transform)`` applies one between the tape and the
optimizer.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Protocol

from lab import clipping
from lab.checks import check_positive


class GradientTransform(Protocol):
    """Maps ``(grads, params)`` to new grads of the same structure."""

    def __call__(self, grads: Sequence, params: Sequence) -> list: ...


@dataclasses.dataclass(frozen=True)
class ClipByValue:
    """Clips each gradient element into ``[lo, hi]`` (``lab.clipping.clip_by_value``; an
    infinite bound leaves that side unclipped, NaN is refused)."""
    lo: float
    hi: float

    def __post_init__(self):
        clipping.check_value_bounds(self.lo, self.hi)

    def __call__(self, grads, params):
        return clipping.clip_by_value(grads, self.lo, self.hi)


@dataclasses.dataclass(frozen=True)
class ClipByNorm:
    """Clips each gradient tensor to norm ``max_norm`` (``lab.clipping.clip_by_norm``)."""
    max_norm: float

    def __post_init__(self):
        check_positive("max_norm", self.max_norm)

    def __call__(self, grads, params):
        return clipping.clip_by_norm(grads, self.max_norm)


@dataclasses.dataclass(frozen=True)
class ClipByGlobalNorm:
    """Clips all gradients to global norm ``max_norm`` (``lab.clipping.clip_by_global_norm``)."""
    max_norm: float

    def __post_init__(self):
        check_positive("max_norm", self.max_norm)

    def __call__(self, grads, params):
        clipped, _ = clipping.clip_by_global_norm(grads, self.max_norm)
        return clipped


@dataclasses.dataclass(frozen=True)
class AdaptiveClip:
    """Unit-wise adaptive gradient clipping (``lab.clipping.adaptive_clip``, arXiv:2102.06171)."""
    clipping: float = 0.01
    eps: float = 1e-3

    def __post_init__(self):
        check_positive("clipping", self.clipping)
        check_positive("eps", self.eps, allow_zero=True)

    def __call__(self, grads, params):
        return clipping.adaptive_clip(grads, params, self.clipping, self.eps)


@dataclasses.dataclass(frozen=True)
class Chain:
    """Applies ``transforms`` in order; build it with ``chain(...)``."""
    transforms: tuple[Callable, ...]

    def __call__(self, grads, params):
        for transform in self.transforms:
            grads = transform(grads, params)
        return grads


def chain(*transforms: Callable) -> Chain:
    """Composes gradient transforms left to right: ``chain(f, g)(grads, params)`` is
    ``g(f(grads, params), params)``.

    Args:
      *transforms: callables ``(grads, params) -> grads``.

    Returns:
      A ``Chain`` transform.
    """
    for i, transform in enumerate(transforms):
        if not callable(transform):
            raise ValueError(f"every transform must be callable as transform(grads, params). "
                             f"Received: transforms[{i}]={transform!r}")
    return Chain(tuple(transforms))

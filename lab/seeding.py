"""One seed for every random number generator a run touches."""

from __future__ import annotations

import random

import keras
import numpy as np
import tensorflow as tf


def seed_everything(seed: int) -> np.random.Generator:
    """Seeds Python's ``random``, NumPy's global generator, TensorFlow and Keras.

    Environments and data pipelines take the seed explicitly as well (``env.reset(seed=...)``,
    ``dataset.shuffle(seed=...)``); this covers the global generators.

    Call it before building models and compiling functions: ``tf.random.set_seed`` clears
    TensorFlow's caches of traced functions, so seeding afterwards costs a retrace of each.

    Args:
      seed: a non-negative integer.

    Returns:
      A fresh ``np.random.Generator`` seeded with ``seed``, for code that prefers one.
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer. Received: seed={seed!r}")
    random.seed(seed)
    np.random.seed(seed)
    tf.random.set_seed(seed)
    keras.utils.set_random_seed(seed)
    return np.random.default_rng(seed)

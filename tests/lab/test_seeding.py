import random

import numpy as np
import pytest
import tensorflow as tf

from lab.seeding import seed_everything


def _draw():
    return random.random(), np.random.rand(), float(tf.random.uniform([]))


def test_same_seed_same_numbers_other_seed_other_numbers():
    seed_everything(7)
    first = _draw()
    seed_everything(7)
    assert _draw() == first
    seed_everything(8)
    assert _draw() != first


@pytest.mark.parametrize("bad", [-1, 1.5, "0", True])
def test_bad_seed(bad):
    with pytest.raises(ValueError, match="seed must be a non-negative integer"):
        seed_everything(bad)

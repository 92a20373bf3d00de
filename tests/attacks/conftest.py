import keras
import numpy as np
import pytest

from attacks.models import small_cnn


@pytest.fixture(scope="module")
def cnn_batch():
    """An untrained small_cnn and a batch of 32 random images with random labels."""
    keras.utils.set_random_seed(0)
    model = small_cnn()
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, size=(32, 28, 28, 1)).astype(np.float32)
    y = rng.integers(0, 10, size=32).astype(np.int32)
    return model, x, y

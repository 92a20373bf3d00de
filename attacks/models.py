"""MNIST classifiers that return logits.

- ``small_cnn``: two 3x3 conv layers and a 128-unit dense layer (about 225k weights); fast
  enough on a laptop CPU to adversarially train with PGD in a few minutes.
- ``madry_cnn``: the network of Madry et al. 2018 for MNIST: conv 5x5x32, 2x2 max pool,
  conv 5x5x64, 2x2 max pool, dense 1024, dense 10 (about 3.3M weights).

References:
  Madry, Makelov, Schmidt, Tsipras, Vladu. Towards deep learning models resistant to
  adversarial attacks. ICLR 2018. arXiv:1706.06083.
"""

from __future__ import annotations

import keras

INPUT_SHAPE = (28, 28, 1)


def small_cnn(num_classes: int = 10) -> keras.Sequential:
    """A small, fast CNN for 28x28x1 images; outputs ``num_classes`` logits."""
    return keras.Sequential([
        keras.Input(INPUT_SHAPE),
        keras.layers.Conv2D(32, 3, activation="relu"),
        keras.layers.MaxPooling2D(),
        keras.layers.Conv2D(64, 3, activation="relu"),
        keras.layers.MaxPooling2D(),
        keras.layers.Flatten(),
        keras.layers.Dense(128, activation="relu"),
        keras.layers.Dense(num_classes),
    ], name="small_cnn")


def madry_cnn(num_classes: int = 10) -> keras.Sequential:
    """Madry et al.'s MNIST network (arXiv:1706.06083); outputs ``num_classes`` logits."""
    return keras.Sequential([
        keras.Input(INPUT_SHAPE),
        keras.layers.Conv2D(32, 5, padding="same", activation="relu"),
        keras.layers.MaxPooling2D(),
        keras.layers.Conv2D(64, 5, padding="same", activation="relu"),
        keras.layers.MaxPooling2D(),
        keras.layers.Flatten(),
        keras.layers.Dense(1024, activation="relu"),
        keras.layers.Dense(num_classes),
    ], name="madry_cnn")


MODELS = {"small_cnn": small_cnn, "madry_cnn": madry_cnn}

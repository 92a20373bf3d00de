"""MNIST classifiers that return logits.

- ``small_cnn``: conv 3x3x16, 2x2 max pool, conv 3x3x32, 2x2 max pool, dense 128, dense 10
  (about 207k weights, 1.2M multiply-adds per image): fast enough to adversarially train with
  PGD on a CPU.
- ``madry_cnn``: the network of Madry et al. 2018 for MNIST: conv 5x5x32, 2x2 max pool,
  conv 5x5x64, 2x2 max pool, dense 1024, dense 10 (about 3.3M weights, 14M multiply-adds).

Both use "same" padding and ReLU, take ``[batch, 28, 28, 1]`` images in [0, 1] and return
logits (no softmax): attacks and losses apply it themselves, in a numerically stable way.

References:
  Madry, Makelov, Schmidt, Tsipras, Vladu. Towards deep learning models resistant to
  adversarial attacks. ICLR 2018. arXiv:1706.06083.
"""

from __future__ import annotations

import keras

INPUT_SHAPE = (28, 28, 1)


def small_cnn(num_classes: int = 10) -> keras.Sequential:
    """A small, fast CNN for 28x28x1 images: conv 3x3x16, pool, conv 3x3x32, pool, dense 128.

    A twelfth of ``madry_cnn``'s multiply-adds, so that PGD training fits a CPU; its
    accuracies are in the README (``experiments.fgsm_mnist``).

    Args:
      num_classes: number of logits.

    Returns:
      An uncompiled ``keras.Sequential`` named ``"small_cnn"``.
    """
    return keras.Sequential([
        keras.Input(INPUT_SHAPE),
        keras.layers.Conv2D(16, 3, padding="same", activation="relu"),
        keras.layers.MaxPooling2D(),
        keras.layers.Conv2D(32, 3, padding="same", activation="relu"),
        keras.layers.MaxPooling2D(),
        keras.layers.Flatten(),
        keras.layers.Dense(128, activation="relu"),
        keras.layers.Dense(num_classes),
    ], name="small_cnn")


def madry_cnn(num_classes: int = 10) -> keras.Sequential:
    """The MNIST network of Madry et al. 2018.

    conv 5x5x32 (same padding, ReLU), 2x2 max pool, conv 5x5x64 (same, ReLU), 2x2 max pool,
    dense 1024 (ReLU), dense ``num_classes``: 3,274,634 weights for 10 classes, as in the
    authors' ``mnist_challenge`` model (adapted from the TensorFlow MNIST tutorial).

    Args:
      num_classes: number of logits.

    Returns:
      An uncompiled ``keras.Sequential`` named ``"madry_cnn"``.

    References:
      Madry, Makelov, Schmidt, Tsipras, Vladu. Towards deep learning models resistant to
      adversarial attacks. ICLR 2018. arXiv:1706.06083.
    """
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

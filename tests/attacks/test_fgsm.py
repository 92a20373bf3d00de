import keras
import numpy as np
import pytest
import tensorflow as tf

from attacks.fgsm import cross_entropy, fgsm
from attacks.pgd import pgd

TOL = 1e-6  # float32 rounding of x +- eps


def _linear_model(rng):
    layer = keras.layers.Dense(3)
    model = keras.Sequential([keras.Input((5,)), layer])
    layer.set_weights([rng.normal(size=(5, 3)).astype(np.float32),
                       rng.normal(size=3).astype(np.float32)])
    return model, layer.get_weights()


def test_fgsm_on_a_linear_model_is_the_closed_form(rng):
    model, (w, b) = _linear_model(rng)
    x = rng.uniform(0.3, 0.7, size=(6, 5)).astype(np.float32)  # interior: clipping cannot bind
    y = rng.integers(0, 3, size=6)
    logits = x @ w + b
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    grad = (p - np.eye(3)[y]) @ w.T  # d cross-entropy / d x
    expected = x + 0.1 * np.sign(grad)
    np.testing.assert_allclose(fgsm(model, x, y, 0.1), expected, atol=TOL)


def test_adversarial_examples_stay_in_the_ball_and_the_range(cnn_batch):
    model, x, y = cnn_batch
    for adv in (fgsm(model, x, y, 0.3), fgsm(model, x, y, 0.1, random_start=True, seed=1),
                pgd(model, x, y, 0.2, steps=5, step_size=0.1, restarts=2, seed=2)):
        adv = adv.numpy()
        assert np.abs(adv - x).max() <= 0.3 + TOL
        assert adv.min() >= 0.0 and adv.max() <= 1.0
    assert np.abs(fgsm(model, x, y, 0.1, random_start=True, seed=1).numpy() - x).max() <= 0.1 + TOL


def test_fgsm_raises_the_loss_and_targeted_fgsm_lowers_the_target_loss(cnn_batch):
    model, x, y = cnn_batch
    loss = lambda batch, labels: cross_entropy(labels, model(batch, training=False)).numpy()
    assert np.mean(loss(fgsm(model, x, y, 0.05), y)) > np.mean(loss(x, y))
    target = (y + 1) % 10
    moved = fgsm(model, x, target, 0.05, targeted=True)
    assert np.mean(loss(moved, target)) < np.mean(loss(x, target))


def test_omitted_labels_mean_the_models_predictions(cnn_batch):
    model, x, _ = cnn_batch
    predicted = np.argmax(model(x, training=False), axis=-1)
    np.testing.assert_array_equal(fgsm(model, x, None, 0.1), fgsm(model, x, predicted, 0.1))


def test_attacks_call_the_model_in_inference_mode(rng):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(16, activation="relu"),
                              keras.layers.Dropout(0.5), keras.layers.Dense(3)])
    x = rng.uniform(0, 1, size=(20, 8)).astype(np.float32)
    y = rng.integers(0, 3, size=20)
    np.testing.assert_array_equal(fgsm(model, x, y, 0.1), fgsm(model, x, y, 0.1))
    np.testing.assert_array_equal(pgd(model, x, y, 0.1, steps=3, seed=0),
                                  pgd(model, x, y, 0.1, steps=3, seed=0))


def test_random_start_is_seeded(cnn_batch):
    model, x, y = cnn_batch
    a = fgsm(model, x, y, 0.1, random_start=True, seed=5)
    np.testing.assert_array_equal(a, fgsm(model, x, y, 0.1, random_start=True, seed=5))
    assert not np.array_equal(a, fgsm(model, x, y, 0.1, random_start=True, seed=6))


@pytest.mark.parametrize("call, message", [
    (lambda m, x, y: fgsm(m, x, y, -0.1), r"eps must be in \[0\.0, 1\.0\]\. Received: eps=-0\.1"),
    (lambda m, x, y: fgsm(m, x, y, 1.5), r"eps must be in \[0\.0, 1\.0\]"),
    (lambda m, x, y: fgsm(m, x, y + 10, 0.1), r"labels must be in \[0, 10\)"),
    (lambda m, x, y: fgsm(m, x, y[:5], 0.1), "same number of examples"),
    (lambda m, x, y: fgsm(m, x * 3, y, 0.1), r"x must lie in clip=\[0\.0, 1\.0\]"),
    (lambda m, x, y: fgsm(m, x, None, 0.1, targeted=True), "y must be given for a targeted"),
    (lambda m, x, y: fgsm(m, x, y, 0.1, step=0), "step must be > 0"),
    (lambda m, x, y: pgd(m, x, y, 0.1, steps=0), "steps must be an integer >= 1"),
    (lambda m, x, y: pgd(m, x, y, 0.1, restarts=0), "restarts must be an integer >= 1"),
    (lambda m, x, y: pgd(m, x, y, 0.1, step_size=-0.01), "step_size must be > 0"),
])
def test_bad_arguments(cnn_batch, call, message):
    model, x, y = cnn_batch
    with pytest.raises(ValueError, match=message):
        call(model, x, y)

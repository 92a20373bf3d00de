import keras
import numpy as np
import pytest
import tensorflow as tf

from attacks.fgsm import _compiled_fgsm, cross_entropy, fgsm, gradient_step
from attacks.pgd import pgd

TOL = 1e-6  # float32 rounding of x +- eps


def _linear_model(rng):
    layer = keras.layers.Dense(3)
    model = keras.Sequential([keras.Input((5,)), layer])
    layer.set_weights([rng.normal(size=(5, 3)).astype(np.float32),
                       rng.normal(size=3).astype(np.float32)])
    return model, layer.get_weights()


@pytest.mark.parametrize("targeted", [False, True])
def test_fgsm_on_a_linear_model_is_the_closed_form(rng, targeted):
    model, (w, b) = _linear_model(rng)
    x = rng.uniform(0, 1, size=(64, 5)).astype(np.float32)  # clipping binds for some pixels
    y = rng.integers(0, 3, size=64)
    logits = x @ w + b
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    grad = (p - np.eye(3)[y]) @ w.T  # d cross-entropy / d x for softmax(x W + b)
    direction = -np.sign(grad) if targeted else np.sign(grad)
    expected = np.clip(x + 0.1 * direction, 0.0, 1.0)
    adv = fgsm(model, x, y, 0.1, targeted=targeted).numpy()
    np.testing.assert_allclose(adv, expected, atol=TOL)
    interior = (x > 0.1) & (x < 0.9)
    np.testing.assert_allclose((adv - x)[interior], 0.1 * direction[interior], atol=TOL)


def test_a_per_example_targeted_mask_descends_where_true_and_ascends_elsewhere(rng):
    model, (w, b) = _linear_model(rng)
    x = rng.uniform(0.2, 0.8, size=(64, 5)).astype(np.float32)  # no clipping at eps 0.1
    y = rng.integers(0, 3, size=64)
    toward = rng.random(64) < 0.5
    logits = x @ w + b
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    grad = (p - np.eye(3)[y]) @ w.T
    direction = np.where(toward[:, None], -np.sign(grad), np.sign(grad))
    adv = gradient_step(model, tf.constant(x), tf.constant(x), tf.constant(y, tf.int32), 0.1,
                        0.1, targeted=tf.constant(toward)).numpy()
    np.testing.assert_allclose(adv, x + 0.1 * direction, atol=TOL)


def test_l2_fgsm_on_a_linear_model_steps_eps_along_the_normalized_gradient(rng):
    # The fast gradient method: x + eps * g / ||g||_2, g = d cross-entropy / d x. Unbounded
    # inputs (clip=None) leave the closed form unclipped; an L2 eps may exceed one feature's
    # range.
    model, (w, b) = _linear_model(rng)
    x = rng.uniform(0, 1, size=(64, 5)).astype(np.float32)
    y = rng.integers(0, 3, size=64)
    logits = x @ w + b
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    grad = (p - np.eye(3)[y]) @ w.T
    expected = x + 1.5 * grad / np.linalg.norm(grad, axis=1, keepdims=True)
    adv = fgsm(model, x, y, 1.5, norm="l2", clip=None).numpy()
    np.testing.assert_allclose(adv, expected, rtol=1e-5, atol=1e-5)
    # PGD from x with one step of eps is the same attack.
    np.testing.assert_allclose(pgd(model, x, y, 1.5, norm="l2", steps=1, step_size=1.5,
                                   random_start=False, clip=None), adv, atol=1e-6)


def test_l2_pgd_stays_in_the_l2_ball_and_the_box(cnn_batch):
    model, x, y = cnn_batch
    adv = pgd(model, x, y, 2.0, norm="l2", steps=5, step_size=1.0, seed=0).numpy()
    lengths = np.linalg.norm((adv - x).reshape(len(x), -1), axis=1)
    assert lengths.max() <= 2.0 * (1 + 1e-5) and adv.min() >= 0.0 and adv.max() <= 1.0
    assert lengths.min() > 1.0  # it moved: every example's loss has a gradient


def test_adversarial_examples_stay_in_the_ball_and_the_range(cnn_batch):
    model, x, y = cnn_batch
    attacks = {
        0.3: fgsm(model, x, y, 0.3),
        0.1: fgsm(model, x, y, 0.1, random_start=True, seed=1),
        0.2: pgd(model, x, y, 0.2, steps=5, step_size=0.1, restarts=2, seed=2),
        0.05: pgd(model, x, (y + 1) % 10, 0.05, steps=3, step_size=0.04, targeted=True, seed=3),
    }
    for eps, adv in attacks.items():
        adv = adv.numpy()
        assert np.abs(adv - x).max() <= eps + TOL
        assert adv.min() >= 0.0 and adv.max() <= 1.0
        assert adv.shape == x.shape and adv.dtype == x.dtype


def test_a_narrower_clip_range_is_respected(cnn_batch):
    model, x, y = cnn_batch
    x = 0.2 + 0.6 * x  # in [0.2, 0.8]
    for adv in (fgsm(model, x, y, 0.3, clip=(0.2, 0.8)),
                pgd(model, x, y, 0.3, steps=3, step_size=0.2, clip=(0.2, 0.8), seed=0)):
        adv = adv.numpy()
        assert adv.min() >= 0.2 and adv.max() <= 0.8
        assert np.abs(adv - x).max() <= 0.3 + TOL


def test_fgsm_raises_the_loss_and_targeted_fgsm_lowers_the_target_loss(cnn_batch):
    model, x, y = cnn_batch
    loss = lambda batch, labels: cross_entropy(labels, model(batch, training=False)).numpy()
    assert np.mean(loss(fgsm(model, x, y, 0.05), y)) > np.mean(loss(x, y))
    target = (y + 1) % 10
    moved = fgsm(model, x, target, 0.05, targeted=True)
    assert np.mean(loss(moved, target)) < np.mean(loss(x, target))
    probability = lambda batch: tf.nn.softmax(model(batch, training=False)).numpy()[
        np.arange(len(target)), target]
    assert np.mean(probability(moved) > probability(x)) > 0.9


def test_omitted_labels_mean_the_models_predictions(cnn_batch):
    model, x, _ = cnn_batch
    predicted = np.argmax(model(x, training=False), axis=-1)
    np.testing.assert_array_equal(fgsm(model, x, None, 0.1), fgsm(model, x, predicted, 0.1))
    np.testing.assert_array_equal(pgd(model, x, None, 0.1, steps=2, seed=0),
                                  pgd(model, x, predicted, 0.1, steps=2, seed=0))


def test_attacks_call_the_model_in_inference_mode(rng):
    # With dropout on, two calls would differ; with training=False the attack sees the same
    # function as the model without its dropout layer.
    keras.utils.set_random_seed(0)
    hidden, out = keras.layers.Dense(16, activation="relu"), keras.layers.Dense(3)
    with_dropout = keras.Sequential([keras.Input((8,)), hidden, keras.layers.Dropout(0.5), out])
    without = keras.Sequential([keras.Input((8,)), hidden, out])
    x = rng.uniform(0, 1, size=(20, 8)).astype(np.float32)
    y = rng.integers(0, 3, size=20)
    assert not np.array_equal(with_dropout(x, training=True), with_dropout(x, training=True))
    for attack in (lambda m: fgsm(m, x, y, 0.1),
                   lambda m: fgsm(m, x, y, 0.1, random_start=True, seed=0),
                   lambda m: pgd(m, x, y, 0.1, steps=3, restarts=2, seed=0)):
        first = attack(with_dropout)
        np.testing.assert_array_equal(first, attack(with_dropout))
        np.testing.assert_array_equal(first, attack(without))


def test_random_start_is_seeded(cnn_batch):
    model, x, y = cnn_batch
    a = fgsm(model, x, y, 0.1, random_start=True, seed=5)
    np.testing.assert_array_equal(a, fgsm(model, x, y, 0.1, random_start=True, seed=5))
    assert not np.array_equal(a, fgsm(model, x, y, 0.1, random_start=True, seed=6))


def test_the_default_step_is_eps_or_1_25_eps_from_a_random_start(cnn_batch):
    model, x, y = cnn_batch
    np.testing.assert_array_equal(fgsm(model, x, y, 0.1), fgsm(model, x, y, 0.1, step=0.1))
    np.testing.assert_array_equal(fgsm(model, x, y, 0.1, random_start=True, seed=0),
                                  fgsm(model, x, y, 0.1, random_start=True, seed=0, step=0.125))


def test_eps_zero_changes_nothing(cnn_batch):
    model, x, y = cnn_batch
    np.testing.assert_array_equal(fgsm(model, x, y, 0.0), x)
    np.testing.assert_array_equal(fgsm(model, x, y, 0.0, random_start=True, seed=0), x)


def test_float64_batches_come_back_as_float64(rng):
    model, _ = _linear_model(rng)
    x = rng.uniform(0.2, 0.8, size=(4, 5))
    for adv in (fgsm(model, x, [0, 1, 2, 0], 0.1), pgd(model, x, None, 0.1, steps=2, seed=0)):
        assert adv.dtype == tf.float64 and adv.shape == x.shape


def test_compiled_once_for_new_eps_steps_seeds_and_batch_sizes(cnn_batch):
    model, x, y = cnn_batch
    for eps, n, seed in ((0.1, 32, 0), (0.2, 7, 1), (0.05, 32, 2)):
        fgsm(model, x[:n], y[:n], eps, random_start=True, seed=seed)
        fgsm(model, x[:n], y[:n], eps, random_start=True, step=eps / 2, seed=seed)
    assert _compiled_fgsm(model, random_start=True).experimental_get_tracing_count() == 1


def _bad_calls():
    return [
        (lambda m, x, y: fgsm(m, x, y, -0.1),
         r"eps must be in \[0\.0, 1\.0\]\. Received: eps=-0\.1"),
        (lambda m, x, y: fgsm(m, x, y, 1.5), r"eps must be in \[0\.0, 1\.0\]\. Received: eps=1\.5"),
        (lambda m, x, y: fgsm(m, 0.5 * x, y, 0.6, clip=(0.0, 0.5)),
         r"eps must be in \[0\.0, 0\.5\]\. Received: eps=0\.6"),
        (lambda m, x, y: fgsm(m, x, y, float("nan")), r"eps must be a finite number in \[0\.0"),
        (lambda m, x, y: fgsm(m, x, y + 10, 0.1), r"y must hold labels in \[0, 10\)"),
        (lambda m, x, y: fgsm(m, x, y - 10, 0.1), r"y must hold labels in \[0, 10\)"),
        (lambda m, x, y: fgsm(m, x, y[:5], 0.1), "same number of examples"),
        (lambda m, x, y: fgsm(m, x, y + np.float32(0.5), 0.1), "integer labels"),
        (lambda m, x, y: fgsm(m, x, y[:, None], 0.1), "integer labels"),
        (lambda m, x, y: fgsm(m, x[..., 0], y, 0.1), "model's inputs"),
        (lambda m, x, y: fgsm(m, x * 3, y, 0.1), r"x must lie in clip=\[0\.0, 1\.0\]"),
        (lambda m, x, y: fgsm(m, x, y, 0.1, clip=(1.0, 0.0)), "clip must be"),
        (lambda m, x, y: fgsm(m, x, None, 0.1, targeted=True), "y must be given for a targeted"),
        (lambda m, x, y: fgsm(m, x, y, 0.1, step=0), r"step must be > 0\. Received: step=0"),
        (lambda m, x, y: fgsm(m, x, y, 0.1, random_start=True, seed=-1), "seed must be"),
        (lambda m, x, y: pgd(m, x, y, 0.1, steps=0), "steps must be an integer >= 1"),
        (lambda m, x, y: pgd(m, x, y, 0.1, steps=2.0), "steps must be an integer >= 1"),
        (lambda m, x, y: pgd(m, x, y, 0.1, restarts=0), "restarts must be an integer >= 1"),
        (lambda m, x, y: pgd(m, x, y, 0.1, restarts=2, random_start=False),
         "restarts > 1 needs random_start=True"),
        (lambda m, x, y: pgd(m, x, y, 0.1, step_size=-0.01), "step_size must be > 0"),
        (lambda m, x, y: pgd(m, x, y + 10, 1.5), r"eps must be in"),  # eps is checked first
        (lambda m, x, y: pgd(m, x, y, -0.5, norm="l2"), r"eps must be >= 0\. Received: eps=-0\.5"),
        (lambda m, x, y: fgsm(m, x, y, 0.1, norm="l1"), r"norm must be one of \('linf', 'l2'\)"),
        (lambda m, x, y: fgsm(m, np.where(x > 0.5, np.nan, x), y, 0.1), "x must be finite"),
        (lambda m, x, y: fgsm(m, x[:0], y[:0], 0.1),
         (r"^x must be a non-empty batch\. Received: an empty batch, x with shape "
          r"\(0, 28, 28, 1\)$")),
        (lambda m, x, y: fgsm(m, x[:0], None, 0.1), "x must be a non-empty batch"),
        (lambda m, x, y: pgd(m, x[:0], y[:0], 0.1, steps=2), "x must be a non-empty batch"),
        (lambda m, x, y: fgsm(m, x, y, "0.3"),
         r"^eps must be a real number\. Received: eps='0\.3'$"),
        (lambda m, x, y: fgsm(m, x, y, None), r"^eps must be a real number\. Received: eps=None$"),
        (lambda m, x, y: fgsm(m, x, y, [0.1, 0.2]), r"^eps must be a real number\."),
        (lambda m, x, y: fgsm(m, x, y, np.full(32, 0.1)), r"^eps must be a real number\."),
        (lambda m, x, y: fgsm(m, x, y, tf.constant([0.1, 0.2])), r"^eps must be a real number\."),
        (lambda m, x, y: fgsm(m, x, y, True), r"^eps must be a real number\."),
        (lambda m, x, y: pgd(m, x, y, np.array([0.1])), r"^eps must be a real number\."),
        (lambda m, x, y: fgsm(m, x, y, 0.1, step="0.1"),
         r"^step must be a real number\. Received: step='0\.1'$"),
        (lambda m, x, y: fgsm(m, x, y, 0.1, step=[0.1, 0.1]), r"^step must be a real number\."),
        (lambda m, x, y: pgd(m, x, y, 0.1, step_size=None),
         r"^step_size must be a real number\. Received: step_size=None$"),
        (lambda m, x, y: pgd(m, x, y, 0.1, step_size=tf.constant([0.01, 0.02])),
         r"^step_size must be a real number\."),
    ]


@pytest.mark.parametrize("call, message", _bad_calls())
def test_bad_arguments_raise_a_clear_value_error(cnn_batch, call, message):
    model, x, y = cnn_batch
    with pytest.raises(ValueError, match=message):
        call(model, x, y)


def test_eps_and_step_may_be_numpy_or_tensor_scalars(cnn_batch):
    model, x, y = cnn_batch
    expected = fgsm(model, x, y, 0.1, step=0.05)
    for eps, step in ((np.float32(0.1), np.float64(0.05)), (np.array(0.1), np.array(0.05)),
                      (tf.constant(0.1), tf.constant(0.05))):
        np.testing.assert_array_equal(fgsm(model, x, y, eps, step=step), expected)
    expected = pgd(model, x, y, 0.1, steps=2, step_size=0.05, seed=0)
    np.testing.assert_array_equal(
        pgd(model, x, y, tf.constant(0.1), steps=2, step_size=np.array(0.05), seed=0), expected)


@pytest.mark.slow
def test_slow_fgsm_breaks_a_trained_small_cnn_and_eps_zero_does_not():
    from attacks.evaluation import accuracy
    from attacks.mnist import load_mnist_arrays
    from attacks.models import small_cnn

    x, y = load_mnist_arrays("train", "sample")
    x_test, y_test = (a[:1000] for a in load_mnist_arrays("test", "sample"))
    keras.utils.set_random_seed(0)
    model = small_cnn()
    model.compile(keras.optimizers.Adam(2e-3),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, batch_size=64, epochs=2, verbose=0)
    clean = accuracy(model, x_test, y_test)
    attacked = lambda eps: accuracy(model, fgsm(model, x_test, y_test, eps).numpy(), y_test)
    # Measured with this seed and budget: 0.946 clean, 0.946 at eps 0, 0.071 at eps 0.3.
    assert clean > 0.9
    assert attacked(0.0) == clean
    assert attacked(0.3) < 0.3

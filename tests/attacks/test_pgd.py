import keras
import numpy as np
import pytest
import tensorflow as tf

from attacks.fgsm import cross_entropy, fgsm
from attacks.pgd import _compiled_pgd, default_step_size, pgd, pgd_steps


def test_one_step_without_random_start_and_step_eps_is_fgsm(cnn_batch):
    model, x, y = cnn_batch
    np.testing.assert_array_equal(
        pgd(model, x, y, 0.2, steps=1, step_size=0.2, random_start=False), fgsm(model, x, y, 0.2))
    target = (y + 1) % 10
    np.testing.assert_array_equal(
        pgd(model, x, target, 0.2, steps=1, step_size=0.2, random_start=False, targeted=True),
        fgsm(model, x, target, 0.2, targeted=True))


def test_one_step_from_a_random_start_is_fgsm_with_random_start(cnn_batch):
    model, x, y = cnn_batch
    np.testing.assert_array_equal(
        pgd(model, x, y, 0.1, steps=1, step_size=0.125, seed=3),
        fgsm(model, x, y, 0.1, random_start=True, seed=3))


def test_more_steps_raise_the_loss(cnn_batch):
    model, x, y = cnn_batch
    loss = lambda batch: float(np.mean(cross_entropy(y, model(batch, training=False))))
    one = loss(pgd(model, x, y, 0.05, steps=1, step_size=0.0125, random_start=False))
    ten = loss(pgd(model, x, y, 0.05, steps=10, step_size=0.0125, random_start=False))
    assert ten > one > loss(x)


@pytest.mark.parametrize("steps", [3, 4, 9])
def test_the_in_graph_loop_takes_exactly_steps_steps(cnn_batch, steps):
    # pgd loops four steps per iteration, then the remainder: compare with unrolled steps.
    model, x, y = cnn_batch
    unrolled = tf.function(lambda x, y: pgd_steps(model, x, y, 0.1, steps, 0.01, [0, 0],
                                                  random_start=False))
    np.testing.assert_allclose(
        pgd(model, x, y, 0.1, steps=steps, step_size=0.01, random_start=False),
        unrolled(tf.constant(x), tf.constant(y)), atol=1e-6)


def test_random_starts_are_seeded(cnn_batch):
    model, x, y = cnn_batch
    a = pgd(model, x, y, 0.1, steps=2, seed=7)
    np.testing.assert_array_equal(a, pgd(model, x, y, 0.1, steps=2, seed=7))
    assert not np.array_equal(a, pgd(model, x, y, 0.1, steps=2, seed=8))


def test_restarts_keep_the_strongest_result_per_example(cnn_batch):
    model, x, _ = cnn_batch
    y = np.argmax(model(x, training=False), -1).astype(np.int32)  # nothing fooled at the start
    loss = lambda batch: cross_entropy(y, model(batch, training=False)).numpy()
    fooled = lambda batch: np.argmax(model(batch, training=False), -1) != y
    # Restart r starts from the stateless seed (seed, r): run each one alone.
    runs = [pgd_steps(model, tf.constant(x), tf.constant(y), 0.1, tf.constant(2), 0.04,
                      tf.constant([4, r], tf.int64)) for r in range(3)]
    triple = pgd(model, x, y, 0.1, steps=2, step_size=0.04, restarts=3, seed=4)
    any_fooled = np.any([fooled(r) for r in runs], axis=0)
    assert 0 < any_fooled.sum() < len(y)  # both rules are exercised
    np.testing.assert_array_equal(fooled(triple), any_fooled)
    best_loss = np.max([loss(r) for r in runs], axis=0)
    np.testing.assert_allclose(loss(triple)[~any_fooled], best_loss[~any_fooled], rtol=1e-5)
    # So three restarts are at least as strong as one with the same seed, example by example.
    single = pgd(model, x, y, 0.1, steps=2, step_size=0.04, restarts=1, seed=4)
    np.testing.assert_allclose(single, runs[0], atol=1e-6)
    assert np.all(fooled(triple) >= fooled(single))
    assert np.all(loss(triple)[~fooled(triple)] >= loss(single)[~fooled(triple)] - 1e-6)


def test_restarts_prefer_a_fooling_example_over_a_stronger_loss(cnn_batch):
    model, x, _ = cnn_batch
    # Targeted at the predicted class, every start already "reaches the target": restart 0 is
    # kept for every example, even where a later restart has a lower target loss.
    y = np.argmax(model(x, training=False), -1).astype(np.int32)
    loss = lambda batch: cross_entropy(y, model(batch, training=False)).numpy()
    later = [pgd_steps(model, tf.constant(x), tf.constant(y), 0.02, tf.constant(1), 0.001,
                       tf.constant([1, r], tf.int64), targeted=True) for r in (1, 2)]
    single = pgd(model, x, y, 0.02, steps=1, step_size=0.001, restarts=1, targeted=True, seed=1)
    triple = pgd(model, x, y, 0.02, steps=1, step_size=0.001, restarts=3, targeted=True, seed=1)
    assert np.all(np.argmax(model(triple, training=False), -1) == y)
    assert np.any(np.min([loss(r) for r in later], axis=0) < loss(single) - 1e-6)
    np.testing.assert_array_equal(single, triple)


def test_compiled_once_for_new_eps_steps_restarts_and_batch_sizes(cnn_batch):
    model, x, y = cnn_batch
    for eps, steps, restarts, n in ((0.1, 2, 1, 32), (0.2, 3, 2, 7), (0.05, 1, 1, 32)):
        pgd(model, x[:n], y[:n], eps, steps=steps, step_size=eps / 4, restarts=restarts, seed=0)
    assert _compiled_pgd(model).experimental_get_tracing_count() == 1


def test_targeted_pgd_reaches_the_target_on_an_untrained_model(cnn_batch):
    model, x, y = cnn_batch
    target = (y + 3) % 10
    adv = pgd(model, x, target, 0.3, steps=20, step_size=0.03, targeted=True, seed=0)
    hit = np.mean(np.argmax(model(adv, training=False), -1) == target)
    assert hit > np.mean(np.argmax(model(x, training=False), -1) == target) + 0.5


def _linear_model(weights):
    """logits = x @ weights: the input gradient of the loss is known in closed form."""
    model = keras.Sequential([keras.Input((weights.shape[0],)),
                              keras.layers.Dense(weights.shape[1], use_bias=False)])
    model.layers[0].set_weights([weights.astype(np.float32)])
    return model


def test_per_feature_bounds_and_scale_set_each_features_radius_and_range():
    model = _linear_model(np.array([[1.0, -1.0], [-2.0, 2.0], [0.5, -0.5]]))
    x = np.array([[0.0, 5.0, -100.0], [0.2, -3.0, 50.0]], np.float32)
    y = np.array([0, 0])
    scale = np.array([0.1, 2.0, 10.0])
    lo = np.array([-np.inf, -4.0, -np.inf])
    hi = np.array([np.inf, 5.5, np.inf])
    # Class 0's loss rises along -(w0 - w1) = [-2, 4, -1]: each feature moves a whole radius
    # that way (FGSM), clipped into feature 1's bounds.
    x_adv = fgsm(model, x, y, 0.5, clip=(lo, hi), eps_scale=scale).numpy()
    expected = np.clip(x + 0.5 * scale * np.sign([-2.0, 4.0, -1.0]), lo, hi)
    np.testing.assert_allclose(x_adv, expected, rtol=1e-6)
    x_pgd = pgd(model, x, y, 0.5, steps=5, step_size=0.2, clip=(lo, hi), eps_scale=scale,
                seed=0).numpy()
    assert np.all(np.abs(x_pgd - x) <= 0.5 * scale + 1e-5)
    assert np.all(x_pgd >= lo) and np.all(x_pgd <= hi)


def test_unbounded_inputs_and_the_domain_checks():
    model = _linear_model(np.eye(2))
    x = np.array([[3.0, 4.0]], np.float32)  # logits = x: class 0's loss rises along [-1, 1]
    x_adv = fgsm(model, x, np.array([0]), 2.0, clip=None).numpy()
    np.testing.assert_allclose(x_adv, [[1.0, 6.0]])
    with pytest.raises(ValueError, match="x must lie within clip in every feature"):
        fgsm(model, x, None, 0.1, clip=([0.0, -np.inf], [1.0, np.inf]))
    with pytest.raises(ValueError, match="eps_scale must be finite and > 0"):
        fgsm(model, x, None, 0.1, clip=None, eps_scale=[1.0, 0.0])
    with pytest.raises(ValueError, match="clip must broadcast to one example's shape"):
        fgsm(model, x, None, 0.1, clip=([0.0, 0.0, 0.0], [1.0, 1.0, 1.0]))
    with pytest.raises(ValueError, match=r"eps \* eps_scale must be at most hi - lo"):
        fgsm(model, np.zeros((1, 2), np.float32), None, 0.5,
             clip=([-1.0, -0.1], [1.0, 0.1]), eps_scale=[1.0, 1.0])
    # One trace for every domain: bounds and scale are inputs of the compiled attack.
    fgsm(model, x, None, 0.1, clip=None, eps_scale=[1.0, 3.0])
    fgsm(model, x / 10, None, 0.1, clip=(-1.0, 1.0))
    from attacks.fgsm import _compiled_fgsm
    assert _compiled_fgsm(model).experimental_get_tracing_count() == 1


@pytest.mark.parametrize("eps, steps, message", [
    (0.3, 0, r"^steps must be an integer >= 1\. Received: steps=0$"),  # was ZeroDivisionError
    (0.3, 2.0, r"^steps must be an integer >= 1\. Received: steps=2\.0$"),
    (0.3, -4, r"^steps must be an integer >= 1\. Received: steps=-4$"),
    (-0.1, 40, r"^eps must be >= 0\. Received: eps=-0\.1$"),
    (float("inf"), 40, r"^eps must be a finite number >= 0\. Received: eps=inf$"),
    ("0.3", 40, r"^eps must be a real number\. Received: eps='0\.3'$"),
])
def test_default_step_size_checks_its_arguments(eps, steps, message):
    with pytest.raises(ValueError, match=message):
        default_step_size(eps, steps)


def test_default_step_size_is_two_and_a_half_radii_over_the_steps():
    assert default_step_size(0.3, 40) == pytest.approx(0.01875)
    assert default_step_size(0.0, 1) == 0.0
    eps = tf.Variable(0.3)  # known only at run time inside a tf.function: passes unchecked
    assert float(tf.function(lambda: default_step_size(eps, 10))()) == pytest.approx(0.075)

"""APGD and APGD-T against closed forms on linear models, PGD, and their argument checks."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from attacks.apgd import _compiled_apgd, apgd, apgd_targeted, checkpoints, dlr_loss
from attacks.pgd import default_step_size, pgd


def _linear_model(w, b):
    """Logits ``x @ w + b``."""
    layer = keras.layers.Dense(w.shape[1])
    model = keras.Sequential([keras.Input((w.shape[0],)), layer])
    layer.set_weights([w.astype(np.float32), b.astype(np.float32)])
    return model


def _robust_radius(x, y, w, b, dual):
    """The distance (in the dual norm's primal) from each example to the nearest class
    boundary of a linear classifier, with no box: ``min_j margin_j / ||w_y - w_j||_dual``;
    negative for a misclassified example."""
    logits = x @ w + b
    margins = logits[np.arange(len(x)), y][:, None] - logits
    gaps = w[:, y].T[:, None, :] - w.T[None, :, :]  # [example, class, feature]
    scale = np.linalg.norm(gaps, ord=dual, axis=-1)
    scale[np.arange(len(x)), y] = np.inf  # the label itself is no boundary
    return np.min(np.where(np.isinf(scale), np.inf, margins / np.maximum(scale, 1e-30)), axis=1)


def test_dlr_loss_is_its_formula_and_ignores_shifts_and_scales_of_the_logits():
    logits = np.array([[3.0, 1.0, 0.5, -2.0], [0.0, 4.0, 1.0, 2.0]], np.float32)
    labels = np.array([0, 3], np.int32)
    # Example 0: label on top; max other 1.0; sorted 3, 1, 0.5, -2. Example 1: max 4.0.
    expected = [-(3.0 - 1.0) / (3.0 - 0.5), -(2.0 - 4.0) / (4.0 - 1.0)]
    np.testing.assert_allclose(dlr_loss(labels, logits), expected, rtol=1e-6)
    np.testing.assert_allclose(dlr_loss(labels, 7.0 * logits - 3.0), expected, rtol=1e-5)
    targets = np.array([2, 1], np.int32)
    expected = [-(3.0 - 0.5) / (3.0 - 0.5 * (0.5 - 2.0)), -(2.0 - 4.0) / (4.0 - 0.5 * (1.0 + 0.0))]
    np.testing.assert_allclose(dlr_loss(labels, logits, targets), expected, rtol=1e-6)


def test_checkpoints_follow_the_papers_schedule():
    # 100 iterations: first after 22, intervals shrinking by 3 down to 6: 22 19 16 13 10 7 6 6.
    assert np.flatnonzero(checkpoints(100)).tolist() == [21, 40, 56, 69, 79, 86, 92, 98]
    assert np.flatnonzero(checkpoints(10)).tolist() == [1, 2, 3, 4, 5, 6, 7, 8, 9]
    assert checkpoints(1).tolist() == [True]


@pytest.mark.parametrize("norm, dual", [("linf", 1), ("l2", 2)])
def test_on_a_two_class_linear_model_apgd_finds_the_closed_form_worst_case(rng, norm, dual):
    # Two classes: the cross-entropy only grows as the margin shrinks, so its maximizer in the
    # ball is the closed form x - eps * (w_y - w_other) / ||.||_2 (L2) or
    # x - eps * sign(w_y - w_other) (L-infinity).
    w = rng.normal(size=(8, 2))
    model = _linear_model(w, np.zeros(2))
    x = rng.normal(size=(64, 8)).astype(np.float32)
    y = np.argmax(x @ w, axis=1).astype(np.int32)
    eps = 0.4
    gap = (w[:, y] - w[:, 1 - y]).T
    step = np.sign(gap) if norm == "linf" else gap / np.linalg.norm(gap, axis=1, keepdims=True)
    found = apgd(model, x, y, eps, norm=norm, steps=50, clip=None, seed=0).numpy()
    fooled = np.argmax(found @ w, axis=1) != y
    # A fooling point is returned as found; the others must sit at the maximizer (within 1% of
    # eps: the halved steps end near it, not on it).
    np.testing.assert_allclose(found[~fooled], (x - eps * step)[~fooled], atol=0.01 * eps)
    expected = _robust_radius(x, y, w, np.zeros(2), dual) <= eps
    np.testing.assert_array_equal(fooled, expected)


@pytest.mark.parametrize("norm, dual", [("linf", 1), ("l2", 2)])
def test_apgd_t_on_a_ten_class_linear_model_fools_exactly_the_examples_within_eps(rng, norm,
                                                                                 dual):
    w, b = rng.normal(size=(12, 10)), rng.normal(size=10)
    model = _linear_model(w, b)
    x = rng.normal(size=(400, 12)).astype(np.float32)
    y = np.argmax(x @ w + b, axis=1).astype(np.int32)
    radius = _robust_radius(x, y, w, b, dual)
    eps = float(np.median(radius))
    clear = np.abs(radius - eps) > 0.05 * eps  # leave out the examples on the edge
    found = apgd_targeted(model, x, y, eps, targets=9, norm=norm, steps=40, clip=None, seed=0)
    fooled = np.argmax(found.numpy() @ w + b, axis=1) != y
    np.testing.assert_array_equal(fooled[clear], (radius <= eps)[clear])


def test_results_stay_inside_the_ball_and_the_box(cnn_batch):
    model, x, y = cnn_batch
    linf = apgd(model, x, y, 0.1, steps=12, seed=3).numpy()
    assert np.abs(linf - x).max() <= 0.1 + 1e-6 and linf.min() >= 0 and linf.max() <= 1
    l2 = apgd_targeted(model, x, y, 1.5, targets=2, norm="l2", steps=12, seed=3).numpy()
    norms = np.linalg.norm((l2 - x).reshape(len(x), -1), axis=1)
    assert norms.max() <= 1.5 * (1 + 1e-5) and l2.min() >= 0 and l2.max() <= 1


def test_apgd_is_at_least_as_strong_as_pgd_at_equal_iterations(rng):
    # A small trained model: a logistic regression on 2,000 sample digits.
    from attacks.mnist import load_mnist_arrays

    x, y = load_mnist_arrays("train", "sample")
    x, y = x[:2000].reshape(2000, -1), y[:2000]
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((784,)), keras.layers.Dense(32, activation="relu"),
                              keras.layers.Dense(10)])
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, epochs=3, batch_size=64, verbose=0)
    xt, yt = x[:500], y[:500]
    accuracy = lambda a: np.mean(np.argmax(model(a), axis=1) == yt)
    for eps in (0.03, 0.08):
        by_pgd = accuracy(pgd(model, xt, yt, eps, steps=20,
                              step_size=default_step_size(eps, 20), seed=0))
        by_apgd = accuracy(apgd(model, xt, yt, eps, steps=20, seed=0))
        assert by_apgd <= by_pgd, (eps, by_apgd, by_pgd)
        assert by_pgd > 0.05  # the comparison means something: PGD did not fool everything


def test_seeds_repeat_and_differ(cnn_batch):
    model, x, y = cnn_batch
    run = lambda seed: apgd(model, x, y, 0.05, steps=3, seed=seed).numpy()
    np.testing.assert_array_equal(run(4), run(4))
    assert not np.array_equal(run(4), run(5))


def test_compiled_once_for_new_eps_steps_and_batch_sizes(cnn_batch):
    model, x, y = cnn_batch
    apgd(model, x, y, 0.05, steps=3, seed=0)
    run = _compiled_apgd(model, tf.float32, "linf", "ce", False)
    traces = run.experimental_get_tracing_count()
    apgd(model, x[:7], y[:7], 0.1, steps=5, restarts=2, seed=1)
    assert run.experimental_get_tracing_count() == traces


def test_restarts_only_attack_the_examples_still_standing(cnn_batch):
    model, x, y = cnn_batch
    # An untrained model: a large eps fools almost everything on the first restart, and more
    # restarts can only add fooled examples.
    once = np.argmax(model(apgd(model, x, y, 0.02, steps=5, seed=0)), 1) != y
    thrice = np.argmax(model(apgd(model, x, y, 0.02, steps=5, restarts=3, seed=0)), 1) != y
    assert np.all(thrice >= once)


@pytest.mark.parametrize("kwargs, message", [
    ({"loss": "hinge"}, "loss must be one of"),
    ({"steps": 0}, "steps must be an integer >= 1"),
    ({"restarts": 1.5}, "restarts must be an integer >= 1"),
    ({"rho": 0.0}, r"rho must be in \(0\.0, 1\.0\]"),
    ({"norm": "l1"}, "norm must be one of"),
])
def test_bad_arguments_name_themselves(cnn_batch, kwargs, message):
    model, x, y = cnn_batch
    with pytest.raises(ValueError, match=message):
        apgd(model, x, y, 0.1, **kwargs)


def test_dlr_needs_enough_classes_and_targets_stay_in_range(rng):
    model = _linear_model(rng.normal(size=(4, 2)), np.zeros(2))
    x = rng.uniform(size=(3, 4)).astype(np.float32)
    with pytest.raises(ValueError, match="loss='dlr' needs a model with at least 3 classes"):
        apgd(model, x, None, 0.1, loss="dlr")
    model = _linear_model(rng.normal(size=(4, 5)), np.zeros(5))
    with pytest.raises(ValueError, match=r"targets must be in \[1, 4\]"):
        apgd_targeted(model, x, None, 0.1, targets=5)

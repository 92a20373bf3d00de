"""``lab.ball.maximize_in_ball`` against functions whose maximizer over a box is known."""

import numpy as np
import pytest
import tensorflow as tf

from lab.ball import maximize_in_ball, project_to_ball, uniform_in_ball


def test_a_linear_function_is_maximized_at_the_corner_its_weights_point_to(rng):
    # max_{|delta_i| <= eps s_i} w . (x + delta) is at delta_i = eps s_i sign(w_i).
    x = rng.normal(size=(6, 4)).astype(np.float32)
    w = np.array([1.5, -0.2, 3.0, -4.0], np.float32)
    scale = np.array([1.0, 0.5, 0.01, 10.0], np.float32)
    found = maximize_in_ball(lambda z: tf.linalg.matvec(z, w), x, 0.3, steps=3, seed=1,
                             scale=scale)
    np.testing.assert_allclose(found, x + 0.3 * scale * np.sign(w), rtol=1e-6, atol=1e-6)


def test_a_scalar_objective_is_ascended_as_the_batch_total(rng):
    x = rng.normal(size=(3, 2)).astype(np.float32)
    w = np.array([-1.0, 2.0], np.float32)
    found = maximize_in_ball(lambda z: tf.reduce_sum(z * w), x, 0.1, steps=2, seed=0)
    np.testing.assert_allclose(found, x + 0.1 * np.sign(w), atol=1e-6)


def test_a_separable_quadratic_is_maximized_at_its_peak_clipped_to_the_ball(rng):
    # -sum (z - c)^2 peaks at c; over the box its maximizer is c clipped into the box, per
    # coordinate. Signed steps end within one step of an interior peak.
    x = rng.normal(size=(5, 3))
    c = x + rng.uniform(-2.0, 2.0, size=x.shape)  # some coordinates inside the ball, some out
    eps, steps, step_size = 1.0, 100, 0.03
    found = maximize_in_ball(lambda z: -tf.reduce_sum(tf.square(z - c), axis=1), x, eps,
                             steps=steps, seed=3, step_size=step_size)
    expected = np.clip(c, x - eps, x + eps)
    inside = np.abs(c - x) < eps
    assert inside.any() and (~inside).any()
    np.testing.assert_allclose(np.asarray(found)[~inside], expected[~inside], atol=1e-12)
    assert np.all(np.abs(np.asarray(found)[inside] - expected[inside]) <= step_size + 1e-12)


def test_the_result_never_leaves_the_ball_or_the_clip_box(rng):
    x = rng.uniform(-1.0, 1.0, size=(64, 5)).astype(np.float32)
    scale = rng.uniform(0.1, 2.0, size=5).astype(np.float32)
    lo, hi = np.float32(-1.0), rng.uniform(0.5, 1.5, size=5).astype(np.float32)
    x = np.minimum(x, hi)
    kernel = rng.normal(size=(5, 5)).astype(np.float32) * 3.0
    f = lambda z: tf.reduce_sum(tf.sin(z @ kernel), axis=1)  # many local maxima
    eps = 0.4
    found = np.asarray(maximize_in_ball(f, x, eps, steps=7, seed=5, scale=scale,
                                        clip=(lo, hi), step_size=0.9))
    radius = np.float32(eps) * scale
    assert np.all(found >= np.maximum(x - radius, lo)) and np.all(found <= np.minimum(x + radius,
                                                                                        hi))
    # The random start too: a projection after each step could hide a start outside.
    start = np.asarray(uniform_in_ball(tf.constant(x), radius, tf.constant([5, 0]), (lo, hi)))
    assert np.all(start >= np.maximum(x - radius, lo)) and np.all(start <= np.minimum(x + radius,
                                                                                        hi))
    projected = project_to_ball(tf.constant(x + 10.0), tf.constant(x), radius)
    np.testing.assert_array_equal(projected, x + radius)


def test_equal_seeds_give_equal_results_and_other_seeds_other_starts(rng):
    x = rng.normal(size=(8, 3)).astype(np.float32)
    f = lambda z: tf.reduce_sum(tf.tanh(3.0 * z) ** 2, axis=1)  # maximizers depend on the start
    run = lambda seed: np.asarray(maximize_in_ball(f, x, 0.5, steps=2, seed=seed))
    np.testing.assert_array_equal(run(7), run(7))
    np.testing.assert_array_equal(run(7), run(tf.constant([7, 0], tf.int64)))
    assert not np.array_equal(run(7), run(8))


def test_eps_and_seed_variables_change_the_search_without_retracing(rng):
    x = tf.constant(rng.normal(size=(4, 2)).astype(np.float32))
    eps = tf.Variable(0.1)
    seed = tf.Variable([0, 0], dtype=tf.int64)
    w = np.array([1.0, -1.0], np.float32)

    @tf.function(input_signature=[tf.TensorSpec([None, 2], tf.float32)])
    def search(x):
        return maximize_in_ball(lambda z: tf.linalg.matvec(z, w), x, eps, steps=2, seed=seed)

    np.testing.assert_allclose(search(x), x + 0.1 * np.sign(w), atol=1e-6)
    eps.assign(0.25)
    seed.assign([3, 4])
    np.testing.assert_allclose(search(x), x + 0.25 * np.sign(w), atol=1e-6)
    eps.assign(0.0)
    np.testing.assert_array_equal(search(x), x)  # an empty ball: x itself, exactly
    assert search.experimental_get_tracing_count() == 1


def test_the_maximizer_is_a_constant_for_an_outer_tape(rng):
    x = tf.constant(rng.normal(size=(4, 2)).astype(np.float32))
    w = tf.Variable([1.0, -2.0])
    with tf.GradientTape() as tape:
        found = maximize_in_ball(lambda z: tf.linalg.matvec(z, w), x, 0.1, steps=2, seed=0)
        total = tf.reduce_sum(found)
    assert tape.gradient(total, w) is None


@pytest.mark.parametrize("kwargs, message", [
    ({"eps": -0.1}, r"eps must be >= 0. Received: eps=-0.1"),
    ({"steps": 0}, r"steps must be an integer >= 1. Received: steps=0"),
    ({"step_size": 0.0}, r"step_size must be > 0. Received: step_size=0.0"),
    ({"scale": [1.0, 0.0]}, r"scale must be finite and > 0 in every feature"),
    ({"seed": -1}, r"seed must be an integer >= 0. Received: seed=-1"),
    ({"seed": tf.constant([1, 2, 3])}, r"seed must be an integer >= 0 or an integer tensor "
                                       r"of shape \[2\]"),
])
def test_invalid_arguments_name_the_argument_and_the_value(kwargs, message):
    args = {"eps": 0.1, "steps": 2, "seed": 0, **kwargs}
    with pytest.raises(ValueError, match=message):
        maximize_in_ball(lambda z: tf.reduce_sum(z, axis=1), tf.zeros((2, 2)), **args)


def test_the_l2_projection_shortens_long_offsets_to_eps_and_keeps_short_ones(rng):
    x = rng.normal(size=(6, 5))
    offset = rng.normal(size=(6, 5)) * np.array([[0.1], [0.2], [3.0], [5.0], [0.05], [2.0]])
    projected = np.asarray(project_to_ball(tf.constant(x + offset), tf.constant(x), 0.5,
                                           norm="l2"))
    length = np.linalg.norm(offset, axis=1, keepdims=True)
    np.testing.assert_allclose(projected, x + offset * np.minimum(1.0, 0.5 / length),
                               rtol=1e-12)
    # With a per-feature scale the ball is ||offset / scale||_2 <= eps.
    scale = rng.uniform(0.5, 2.0, size=5)
    projected = np.asarray(project_to_ball(tf.constant(x + offset), tf.constant(x), 0.5,
                                           scale=tf.constant(scale), norm="l2"))
    scaled = offset / scale
    expected = scaled * np.minimum(1.0, 0.5 / np.linalg.norm(scaled, axis=1, keepdims=True))
    np.testing.assert_allclose(projected, x + expected * scale, rtol=1e-12)


def test_l2_random_starts_fill_the_ball_uniformly():
    # Uniform in a d-ball: P(||offset|| <= r eps) = r ** d. In 2-D a quarter lies within
    # half the radius; none outside.
    x = tf.zeros((20000, 2), tf.float64)
    offset = np.asarray(uniform_in_ball(x, 0.3, tf.constant([1, 2]), norm="l2"))
    length = np.linalg.norm(offset, axis=1)
    assert length.max() <= 0.3 + 1e-12
    assert np.mean(length <= 0.15) == pytest.approx(0.25, abs=0.015)
    assert np.mean(length <= 0.3 * np.sqrt(0.5)) == pytest.approx(0.5, abs=0.015)
    # Directions are uniform: the mean offset is near zero.
    np.testing.assert_allclose(offset.mean(axis=0), 0.0, atol=0.005)


def test_l2_ascent_of_a_linear_function_ends_at_eps_along_its_weights(rng):
    # max_{||delta||_2 <= eps} w . (x + delta) is at delta = eps w / ||w||_2.
    x = rng.normal(size=(6, 4))
    w = np.array([1.5, -0.2, 3.0, -4.0])
    found = maximize_in_ball(lambda z: tf.linalg.matvec(z, w), x, 0.3, steps=40, seed=1,
                             step_size=0.3, norm="l2")
    np.testing.assert_allclose(found, x + 0.3 * w / np.linalg.norm(w), atol=1e-9)


def test_an_unknown_norm_is_named():
    with pytest.raises(ValueError, match=r"norm must be one of \('linf', 'l2'\)"):
        maximize_in_ball(lambda z: z, np.zeros((1, 2)), 0.1, steps=1, seed=0, norm="l1")

import keras
import numpy as np
import pytest
import tensorflow as tf

from lab import activations as act


def _value_and_grad(fn, x, upstream=None):
    x = tf.constant(x, tf.float32)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = fn(x)
        target = y * upstream if upstream is not None else y
    return y.numpy(), tape.gradient(target, x).numpy()


def test_custom_relu():
    y, g = _value_and_grad(act.custom_relu, [-1.0, 0.0, 2.0])
    np.testing.assert_array_equal(y, tf.nn.relu([-1.0, 0.0, 2.0]))
    np.testing.assert_array_equal(g, [0.0, 0.0, 1.0])


def test_straight_through_sign():
    y, g = _value_and_grad(act.straight_through_sign, [-2.0, -0.5, 0.0, 0.7, 1.0, 3.0],
                           upstream=tf.constant([1.0, 2.0, 3.0, 4.0, 5.0, 6.0]))
    np.testing.assert_array_equal(y, [-1, -1, 1, 1, 1, 1])
    np.testing.assert_array_equal(g, [0.0, 2.0, 3.0, 4.0, 5.0, 0.0])


def test_straight_through_round():
    y, g = _value_and_grad(act.straight_through_round, [0.4, 1.6, -2.5],
                           upstream=tf.constant([3.0, 4.0, 5.0]))
    np.testing.assert_array_equal(y, [0.0, 2.0, -2.0])
    np.testing.assert_array_equal(g, [3.0, 4.0, 5.0])


def test_gradient_reversal():
    y, g = _value_and_grad(lambda x: act.gradient_reversal(x, 0.3), [1.0, -2.0],
                           upstream=tf.constant([2.0, 1.0]))
    np.testing.assert_array_equal(y, [1.0, -2.0])
    np.testing.assert_allclose(g, [-0.6, -0.3], rtol=1e-6)


def test_clip_gradient_norm():
    upstream = tf.constant([3.0, 4.0])  # norm 5
    y, g = _value_and_grad(lambda x: act.clip_gradient_norm(x, 1.0), [7.0, 8.0], upstream)
    np.testing.assert_array_equal(y, [7.0, 8.0])
    np.testing.assert_allclose(g, [0.6, 0.8], rtol=1e-6)
    _, g = _value_and_grad(lambda x: act.clip_gradient_norm(x, 10.0), [7.0, 8.0], upstream)
    np.testing.assert_allclose(g, [3.0, 4.0])


def test_bad_arguments():
    with pytest.raises(ValueError, match=r"max_norm must be > 0\. Received: max_norm=0"):
        act.clip_gradient_norm(tf.ones(2), 0)
    with pytest.raises(ValueError, match="scale must be >= 0"):
        act.GradientReversal(-1.0)


def _gradients(model, x):
    with tf.GradientTape() as tape:
        out = tf.reduce_sum(model(x) ** 2)
    return [g.numpy() for g in tape.gradient(out, model.trainable_variables)]


def test_layers_survive_keras_save_and_load_with_their_gradients(tmp_path, rng):
    keras.utils.set_random_seed(0)
    layers = [act.GradientReversal(0.5), act.CustomReLU(), act.ClipGradientNorm(100.0),
              act.StraightThroughRound(), act.StraightThroughSign()]
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3), *layers,
                              keras.layers.Dense(2)])
    x = tf.constant(rng.normal(size=(5, 4)), tf.float32)
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    assert [type(layer).__name__ for layer in loaded.layers[1:-1]] == [
        "GradientReversal", "CustomReLU", "ClipGradientNorm", "StraightThroughRound",
        "StraightThroughSign"]
    assert loaded.layers[1].scale == 0.5 and loaded.layers[3].max_norm == 100.0
    np.testing.assert_array_equal(loaded(x), model(x))
    for a, b in zip(_gradients(loaded, x), _gradients(model, x)):
        np.testing.assert_array_equal(a, b)


def test_gradient_reversal_layer_flips_the_first_layers_gradient(rng):
    keras.utils.set_random_seed(0)
    first = keras.layers.Dense(3)
    last = keras.layers.Dense(1)
    plain = keras.Sequential([keras.Input((4,)), first, last])
    reversed_model = keras.Sequential([keras.Input((4,)), first, act.GradientReversal(2.0), last])
    x = tf.constant(rng.normal(size=(5, 4)), tf.float32)
    g_plain = _gradients(plain, x)
    g_reversed = _gradients(reversed_model, x)
    np.testing.assert_allclose(g_reversed[0], -2.0 * g_plain[0], rtol=1e-6)  # first kernel
    np.testing.assert_allclose(g_reversed[2], g_plain[2], rtol=1e-6)  # last kernel unchanged


def test_zero_gradient_keeps_the_forward_pass_and_has_the_true_derivative():
    x = tf.constant([-1.7, -0.4, 0.3, 2.6])
    true_sign = act.zero_gradient(act.straight_through_sign)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        straight, true = act.straight_through_sign(x), true_sign(x)
    np.testing.assert_array_equal(true, straight)
    # Away from the jump at 0 sign is flat: its central difference is 0, as is the gradient;
    # the straight-through estimator passes 1 where |x| <= 1.
    h = 1e-3
    difference = (np.sign(x.numpy() + h) - np.sign(x.numpy() - h)) / (2 * h)
    np.testing.assert_array_equal(tape.gradient(true, x), difference)
    np.testing.assert_array_equal(tape.gradient(straight, x), [0.0, 1.0, 1.0, 0.0])


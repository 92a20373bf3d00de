import keras
import numpy as np
import pytest
import tensorflow as tf

from lab import regularizers as reg


def test_penalties_follow_the_keras_convention(rng):
    ws = [tf.constant(rng.normal(size=(3, 2))), tf.constant(rng.normal(size=4))]
    l2 = reg.l2_penalty(ws, 0.1)
    # Keras rounds its coefficient to float32, hence rtol 1e-6 against it.
    np.testing.assert_allclose(l2, sum(keras.regularizers.L2(0.1)(w) for w in ws), rtol=1e-6)
    # tf.nn.l2_loss halves: the same penalty is 2 * scale * l2_loss.
    np.testing.assert_allclose(l2, sum(2 * 0.1 * tf.nn.l2_loss(w) for w in ws), rtol=1e-12)
    np.testing.assert_allclose(reg.l1_penalty(ws, 0.3),
                               sum(keras.regularizers.L1(0.3)(w) for w in ws), rtol=1e-6)
    np.testing.assert_allclose(reg.elastic_net_penalty(ws, 0.3, 0.1),
                               sum(keras.regularizers.L1L2(0.3, 0.1)(w) for w in ws), rtol=1e-6)


def test_regularized_loss_adds_model_losses_inside_the_tape():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((3,)),
        keras.layers.Dense(2, kernel_regularizer=keras.regularizers.L2(0.05)),
    ])
    x = tf.ones((4, 3))
    kernel = model.layers[0].kernel
    with tf.GradientTape() as tape:
        data_loss = tf.reduce_mean(model(x) ** 2)
        total = reg.regularized_loss(data_loss, model)
    np.testing.assert_allclose(total - data_loss, 0.05 * np.sum(kernel.numpy() ** 2), rtol=1e-5)
    with tf.GradientTape() as plain_tape:
        plain = tf.reduce_mean(model(x) ** 2)
    difference = tape.gradient(total, kernel) - plain_tape.gradient(plain, kernel)
    np.testing.assert_allclose(difference, 2 * 0.05 * kernel.numpy(), rtol=1e-4)


def test_regularized_loss_adds_extra_terms_and_rejects_vectors():
    total = reg.regularized_loss(tf.constant(1.0), None, [tf.constant(0.5), tf.constant(0.25)])
    assert float(total) == 1.75
    with pytest.raises(ValueError, match="loss must be a scalar"):
        reg.regularized_loss(tf.ones(3), None)


def _linear_regression():
    layer = keras.layers.Dense(1, use_bias=False, dtype="float64")
    layer.build((None, 3))
    layer.set_weights([np.array([[0.5], [-1.0], [2.0]])])
    model = lambda x, training=False: layer(x)
    loss_fn = lambda y, pred: tf.square(pred[:, 0] - y)  # per-example squared error
    return layer, model, loss_fn


def test_input_gradient_penalty_value_and_weight_gradient(rng, fd_grad):
    layer, model, loss_fn = _linear_regression()
    x = tf.constant(rng.normal(size=(5, 3)))
    y = tf.constant(rng.normal(size=5))
    w = layer.kernel.numpy()[:, 0]
    residual = x.numpy() @ w - y.numpy()
    # d loss_i / d x_i = 2 r_i w, so the penalty is mean_i 4 r_i^2 |w|^2.
    expected = np.mean(4 * residual ** 2) * np.sum(w ** 2)
    np.testing.assert_allclose(reg.input_gradient_penalty(model, loss_fn, x, y), expected,
                               rtol=1e-12)

    # Double backprop: the penalty's weight gradient against finite differences.
    penalty = lambda: reg.input_gradient_penalty(model, loss_fn, x, y)
    with tf.GradientTape() as tape:
        value = penalty()
    grad = tape.gradient(value, layer.kernel)
    reference = fd_grad(penalty, [layer.kernel])[0]
    np.testing.assert_allclose(grad, reference, rtol=1e-6)


def test_penalty_objects():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.layers[0].bias.assign([5.0, 5.0])
    kernel = model.layers[0].kernel.numpy()
    np.testing.assert_allclose(reg.WeightPenalty(l2=0.1)(model), 0.1 * np.sum(kernel ** 2),
                               rtol=1e-6)
    np.testing.assert_allclose(reg.WeightPenalty(l1=0.1, include_vectors=True)(model),
                               0.1 * (np.abs(kernel).sum() + 10.0), rtol=1e-6)
    layer, model_fn, loss_fn = _linear_regression()
    x, y = tf.ones((2, 3), tf.float64), tf.zeros(2, tf.float64)
    np.testing.assert_allclose(reg.InputGradientPenalty(loss_fn, 0.5)(model_fn, x, y),
                               0.5 * reg.input_gradient_penalty(model_fn, loss_fn, x, y))
    with pytest.raises(ValueError, match=r"l2 must be >= 0\. Received: l2=-0\.1"):
        reg.WeightPenalty(l2=-0.1)
    with pytest.raises(ValueError, match="scale must be >= 0"):
        reg.l2_penalty([tf.ones(2)], -1.0)

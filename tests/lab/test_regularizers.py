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


def test_gradient_alignment_of_a_linear_regression_is_the_sign_of_the_residuals(rng):
    # d loss_i / d x_i = 2 r_i w: the two gradients are parallel, the cosine is the sign of
    # r_i r'_i, and an example with a zero residual has no direction and is left out.
    layer, model, loss_fn = _linear_regression()
    w = layer.kernel.numpy()[:, 0]
    x = rng.normal(size=(4, 3))
    y = x @ w - np.array([1.0, 1.0, -1.0, 0.0])             # residuals at x: 1, 1, -1, 0
    moves = np.array([0.5, -3.0, 0.5, 1.0])                 # ... at x_near: 1.5, -2, -0.5, 1
    near = x + moves[:, None] * w / (w @ w)
    np.testing.assert_allclose(near @ w - y, [1.5, -2.0, -0.5, 1.0], rtol=1e-12)
    penalty = reg.gradient_alignment_penalty(model, loss_fn, tf.constant(x), tf.constant(y),
                                             tf.constant(near))
    np.testing.assert_allclose(penalty, (0.0 + 2.0 + 0.0) / 3, rtol=1e-12)


def test_gradient_alignment_of_a_two_class_linear_classifier_is_zero(rng):
    # Softmax cross-entropy of a linear model with two classes: d CE / d x = (p_1 - y_1)
    # (w_1 - w_0), with p_1 - y_1 < 0 for class 1 and > 0 for class 0 wherever x is: the
    # gradients at any two points point the same way.
    layer = keras.layers.Dense(2, dtype="float64")
    layer.build((None, 5))
    layer.set_weights([rng.normal(size=(5, 2)), rng.normal(size=2)])
    model = lambda x, training=False: layer(x)
    x = tf.constant(rng.normal(size=(8, 5)))
    near = x + tf.constant(rng.uniform(-2.0, 2.0, size=(8, 5)))
    y = tf.constant(rng.integers(0, 2, size=8))
    penalty = reg.gradient_alignment_penalty(model, _cross_entropy, x, y, near)
    np.testing.assert_allclose(penalty, 0.0, atol=1e-12)


def _cross_entropy(y, logits):
    return keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True)


def test_gradient_alignment_value_and_weight_gradient_against_numpy(rng, fd_grad):
    # Three classes: d CE_i / d x_i = W^T (softmax(W^T x_i + b) - e_{y_i}), in NumPy; the
    # weight gradient holds the gradient at x fixed (a constant, as in GradAlign's code).
    layer = keras.layers.Dense(3, dtype="float64")
    layer.build((None, 4))
    layer.set_weights([rng.normal(size=(4, 3)), rng.normal(size=3)])
    model = lambda x, training=False: layer(x)
    x = rng.normal(size=(6, 4))
    near = x + rng.uniform(-1.0, 1.0, size=x.shape)
    y = rng.integers(0, 3, size=6)

    def input_gradients(kernel, bias, points):
        logits = points @ kernel + bias
        p = np.exp(logits - logits.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        return (p - np.eye(3)[y]) @ kernel.T

    def numpy_penalty(at_x, kernel, bias):
        at_near = input_gradients(kernel, bias, near)
        cos = np.sum(at_x * at_near, 1) / np.linalg.norm(at_x, axis=1) / np.linalg.norm(
            at_near, axis=1)
        return np.mean(1 - cos)

    kernel, bias = layer.get_weights()
    at_x = input_gradients(kernel, bias, x)
    penalty = lambda: reg.gradient_alignment_penalty(model, _cross_entropy, tf.constant(x),
                                                     tf.constant(y), tf.constant(near))
    np.testing.assert_allclose(penalty(), numpy_penalty(at_x, kernel, bias), rtol=1e-10)

    with tf.GradientTape() as tape:
        value = penalty()
    grads = tape.gradient(value, [layer.kernel, layer.bias])
    # Finite differences of the NumPy penalty with the gradient at x frozen.
    frozen = lambda: numpy_penalty(at_x, layer.kernel.numpy(), layer.bias.numpy())
    for grad, reference in zip(grads, fd_grad(frozen, [layer.kernel, layer.bias])):
        np.testing.assert_allclose(grad, reference, rtol=1e-6, atol=1e-10)


def test_gradient_alignment_with_no_direction_left_is_zero_with_finite_gradients():
    layer, model, loss_fn = _linear_regression()
    x = tf.ones((2, 3), tf.float64)
    y = tf.fill([2], tf.constant(1.5, tf.float64))   # residual 0.5 - 1 + 2 - 1.5 = 0
    with tf.GradientTape() as tape:
        value = reg.gradient_alignment_penalty(model, loss_fn, x, y, x)
    assert float(value) == 0.0
    assert np.all(np.isfinite(tape.gradient(value, layer.kernel)))


def test_gradient_alignment_penalty_object_draws_its_point_in_the_ball():
    layer, model, loss_fn = _linear_regression()
    x, y = tf.ones((3, 3), tf.float64), tf.zeros(3, tf.float64)
    seed = lambda: tf.constant([7, 1], tf.int64)
    penalty = reg.GradientAlignmentPenalty(loss_fn, 0.5, 0.25, seed)
    near = x + 0.25 * tf.random.stateless_uniform(x.shape, [7, 1], -1.0, 1.0, tf.float64)
    np.testing.assert_allclose(penalty(model, x, y),
                               0.5 * reg.gradient_alignment_penalty(model, loss_fn, x, y, near))
    assert penalty.clean_batch
    with pytest.raises(ValueError, match="scale must be >= 0"):
        reg.GradientAlignmentPenalty(loss_fn, -1.0, 0.25, seed)
    with pytest.raises(ValueError, match="seed must be a callable"):
        reg.GradientAlignmentPenalty(loss_fn, 1.0, 0.25, 3)
    with pytest.raises(ValueError, match="radius must be >= 0"):
        reg.GradientAlignmentPenalty(loss_fn, 1.0, -0.25, seed)
    with pytest.raises(ValueError, match="radius must be a finite number"):
        reg.GradientAlignmentPenalty(loss_fn, 1.0, float("nan"), seed)

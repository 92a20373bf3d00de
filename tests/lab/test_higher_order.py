import gc
import weakref

import keras
import numpy as np
import pytest
import tensorflow as tf

from lab import higher_order as ho
from lab.variables import flat_slices, flatten, unflatten


def _random_symmetric(rng, eigenvalues):
    q, _ = np.linalg.qr(rng.normal(size=(len(eigenvalues), len(eigenvalues))))
    return q @ np.diag(eigenvalues) @ q.T


def test_second_derivative_of_the_seed_example():
    dy, d2y = ho.second_derivative(lambda x: x ** 2, 3.0)
    assert float(dy) == 6.0 and float(d2y) == 2.0


def test_second_derivative_elementwise_against_analytic():
    x = tf.constant([0.1, 1.0, 2.5], tf.float64)
    dy, d2y = ho.second_derivative(tf.sin, x)
    np.testing.assert_allclose(dy, np.cos(x), rtol=1e-12)
    np.testing.assert_allclose(d2y, -np.sin(x), rtol=1e-12)


def test_value_and_grad_against_finite_differences(tiny_mlp_f64, fd_grad):
    model, loss = tiny_mlp_f64
    value, grads = ho.value_and_grad(loss, model.trainable_variables)
    np.testing.assert_allclose(value, loss(), rtol=1e-12)
    reference = fd_grad(loss, model.trainable_variables)
    for g, r in zip(grads, reference):
        np.testing.assert_allclose(g, r, rtol=1e-6, atol=1e-9)


def test_hvp_forward_accumulator_docstring_example():
    # From tf.autodiff.ForwardAccumulator's docstring: the HVP of sum(v**3) at [1, 2].
    v = tf.Variable([1.0, 2.0])
    result = ho.hvp(lambda: tf.reduce_sum(v ** 3), v, tf.constant([1.0, 0.0]))
    np.testing.assert_allclose(result, [6.0, 0.0])


def test_hvp_of_quadratic_is_matrix_times_vector(rng):
    a = _random_symmetric(rng, [3.0, 1.0, -2.0, 0.5])
    b = rng.normal(size=4)
    w = tf.Variable(rng.normal(size=4))
    f = lambda: 0.5 * tf.tensordot(w, tf.linalg.matvec(a, w), 1) + tf.tensordot(b, w, 1)
    v = rng.normal(size=4)
    np.testing.assert_allclose(ho.hvp(f, w, v), a @ v, rtol=1e-12)
    np.testing.assert_allclose(ho.hessian(f, w), a, rtol=1e-12, atol=1e-14)


def test_hvp_on_keras_variables_against_finite_differences_and_dense_hessian(tiny_mlp_f64, rng):
    model, loss = tiny_mlp_f64
    variables = model.trainable_variables  # Keras 3 variables, passed as they are
    vector = [rng.normal(size=v.shape) for v in variables]
    product = ho.hvp(loss, variables, vector)

    # Central difference of the gradient along the vector.
    h = 1e-5
    base = [v.numpy() for v in variables]
    grads_at = {}
    for sign in (1, -1):
        for v, b0, d in zip(variables, base, vector):
            v.assign(b0 + sign * h * d)
        grads_at[sign] = ho.value_and_grad(loss, variables)[1]
    for v, b0 in zip(variables, base):
        v.assign(b0)
    for p, gp, gm in zip(product, grads_at[1], grads_at[-1]):
        np.testing.assert_allclose(p, (gp - gm) / (2 * h), rtol=1e-5, atol=1e-8)

    dense = ho.hessian(loss, variables)
    np.testing.assert_allclose(flatten(product), dense.numpy() @ flatten(vector).numpy(),
                               rtol=1e-10)


def test_hessian_of_network_loss_against_finite_differences(tiny_mlp_f64):
    model, loss = tiny_mlp_f64
    variables = model.trainable_variables
    dense = ho.hessian(loss, variables).numpy()
    n = sum(int(np.prod(v.shape)) for v in variables)
    assert dense.shape == (n, n)
    np.testing.assert_allclose(dense, dense.T, atol=1e-12)
    # Column j by central differences of the gradient in coordinate j.
    h = 1e-5
    base = flatten([v.numpy() for v in variables]).numpy()
    for j in range(0, n, 3):
        cols = []
        for sign in (1, -1):
            shifted = base.copy()
            shifted[j] += sign * h
            for v, part in zip(variables, unflatten(tf.constant(shifted), variables)):
                v.assign(part)
            cols.append(flatten(ho.value_and_grad(loss, variables)[1]).numpy())
        np.testing.assert_allclose(dense[:, j], (cols[0] - cols[1]) / (2 * h),
                                   rtol=1e-5, atol=1e-8)
    for v, part in zip(variables, unflatten(tf.constant(base), variables)):
        v.assign(part)


def test_hessian_across_variables_has_the_cross_terms():
    a = tf.Variable([1.0, 2.0], dtype=tf.float64)
    b = tf.Variable(3.0, dtype=tf.float64)
    # f = a0^2 b + a1 b^2 -> analytic Hessian in the order (a0, a1, b).
    f = lambda: a[0] ** 2 * b + a[1] * b ** 2
    expected = [[2 * 3.0, 0.0, 2 * 1.0],
                [0.0, 0.0, 2 * 3.0],
                [2 * 1.0, 2 * 3.0, 2 * 2.0]]
    h = ho.hessian(f, [a, b])
    np.testing.assert_allclose(h, expected)
    slices = flat_slices([a, b])
    assert slices == [slice(0, 2), slice(2, 3)]
    row_of_b = unflatten(h[2], [a, b])
    np.testing.assert_allclose(row_of_b[0], [2.0, 6.0])
    assert row_of_b[1].shape == ()


def test_newton_step_solves_a_quadratic_in_one_step(rng):
    a = _random_symmetric(rng, [4.0, 1.0, 0.5])
    b = rng.normal(size=3)
    w = tf.Variable(rng.normal(size=3))
    f = lambda: 0.5 * tf.tensordot(w, tf.linalg.matvec(a, w), 1) - tf.tensordot(b, w, 1)
    w.assign_add(ho.newton_step(f, w))
    np.testing.assert_allclose(w, np.linalg.solve(a, b), rtol=1e-10)

    w.assign(np.zeros(3))
    damped = ho.newton_step(f, w, damping=2.0)
    np.testing.assert_allclose(damped, np.linalg.solve(a + 2.0 * np.eye(3), b), rtol=1e-10)


def test_top_eigenvalue_by_power_iteration(rng):
    a = _random_symmetric(rng, [5.0, 2.0, -1.0, 0.5, 0.1])
    w = tf.Variable(rng.normal(size=5))
    f = lambda: 0.5 * tf.tensordot(w, tf.linalg.matvec(a, w), 1)
    np.testing.assert_allclose(ho.hessian_top_eigenvalue(f, w, iters=60), 5.0, rtol=1e-6)


def test_top_eigenvalue_of_network_loss_matches_dense_eigendecomposition(tiny_mlp_f64):
    model, loss = tiny_mlp_f64
    eigenvalues = np.linalg.eigvalsh(ho.hessian(loss, model.trainable_variables).numpy())
    largest = eigenvalues[np.argmax(np.abs(eigenvalues))]
    estimate = ho.hessian_top_eigenvalue(loss, model.trainable_variables, iters=300)
    np.testing.assert_allclose(estimate, largest, rtol=1e-3)


def test_curvature_loops_trace_the_closure_once_per_closure(rng):
    w = tf.Variable(rng.normal(size=3))
    calls = []

    def f():
        calls.append(1)  # Python side effect: runs only while TensorFlow traces f
        return tf.reduce_sum(w ** 4)

    ho.hessian_top_eigenvalue(f, w, iters=5)
    traced = len(calls)
    ho.hessian_top_eigenvalue(f, w, iters=5)
    ho.hessian_trace(f, w, samples=5)
    assert traced >= 1 and len(calls) == traced


def test_helpers_run_inside_tf_function(rng):
    a = _random_symmetric(rng, [4.0, 1.0, 0.5])
    w = tf.Variable(np.zeros(3))
    f = lambda: 0.5 * tf.tensordot(w, tf.linalg.matvec(a, w), 1) - tf.reduce_sum(w)
    step = tf.function(lambda: ho.newton_step(f, w))()
    np.testing.assert_allclose(step, np.linalg.solve(a, np.ones(3)), rtol=1e-10)
    np.testing.assert_allclose(tf.function(lambda: ho.hessian(f, w))(), a, atol=1e-12)


def test_hessian_trace_exact_for_diagonal_and_unbiased_otherwise(rng):
    d = tf.Variable(rng.normal(size=6))
    diag = np.array([1.0, -2.0, 3.0, 0.5, 4.0, 1.5])
    f_diag = lambda: 0.5 * tf.reduce_sum(diag * d ** 2)
    # Rademacher probes have z_i^2 = 1: the estimate is exact for a diagonal Hessian.
    np.testing.assert_allclose(ho.hessian_trace(f_diag, d, samples=3), diag.sum(), rtol=1e-12)

    a = _random_symmetric(rng, [3.0, 1.0, -0.5, 2.0])
    w = tf.Variable(rng.normal(size=4))
    f = lambda: 0.5 * tf.tensordot(w, tf.linalg.matvec(a, w), 1)
    samples = 2000
    std_error = np.sqrt(2 * (np.sum(a ** 2) - np.sum(np.diag(a) ** 2)) / samples)
    estimate = float(ho.hessian_trace(f, w, samples=samples, seed=3))
    assert abs(estimate - np.trace(a)) < 4 * std_error


def test_input_gradient_of_linear_softmax_against_closed_form(rng):
    w = rng.normal(size=(5, 3))
    b = rng.normal(size=3)
    layer = keras.layers.Dense(3, dtype="float64")
    layer.build((None, 5))
    layer.set_weights([w, b])
    x = rng.normal(size=(4, 5))
    y = np.array([0, 2, 1, 2])
    loss_fn = lambda labels, logits: keras.losses.sparse_categorical_crossentropy(
        labels, logits, from_logits=True)
    grad = ho.input_gradient(lambda inputs, training: layer(inputs), loss_fn, x, y)
    logits = x @ w + b
    softmax = np.exp(logits - logits.max(1, keepdims=True))
    softmax /= softmax.sum(1, keepdims=True)
    expected = (softmax - np.eye(3)[y]) @ w.T
    np.testing.assert_allclose(grad, expected, rtol=1e-10)


def test_input_gradient_runs_the_model_in_inference_mode(rng):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(16, activation="relu"),
                              keras.layers.Dropout(0.5), keras.layers.Dense(3)])
    x = rng.normal(size=(10, 8)).astype(np.float32)
    y = rng.integers(0, 3, size=10)
    loss_fn = lambda labels, logits: keras.losses.sparse_categorical_crossentropy(
        labels, logits, from_logits=True)
    first = ho.input_gradient(model, loss_fn, x, y)
    second = ho.input_gradient(model, loss_fn, x, y)
    np.testing.assert_array_equal(first, second)
    # The same computation in training mode differs (dropout is live), so the check has teeth.
    with tf.GradientTape() as tape:
        xt = tf.constant(x)
        tape.watch(xt)
        train_loss = loss_fn(y, model(xt, training=True))
    assert not np.allclose(tape.gradient(train_loss, xt), first)


def test_bad_arguments_name_the_argument():
    w = tf.Variable([1.0, 2.0])
    f = lambda: tf.reduce_sum(w ** 2)
    with pytest.raises(ValueError, match=r"vector must have the structure of variables"):
        ho.hvp(f, [w], [tf.ones(2), tf.ones(2)])
    with pytest.raises(ValueError, match=r"vector\[0\] must have the shape"):
        ho.hvp(f, w, tf.ones(3))
    with pytest.raises(ValueError, match="f must return a scalar. Received: a value of shape"):
        ho.hessian(lambda: w ** 2, w)
    with pytest.raises(ValueError, match=r"damping must be >= 0\. Received: damping=-1"):
        ho.newton_step(f, w, damping=-1.0)
    with pytest.raises(ValueError, match="iters must be an integer >= 1"):
        ho.hessian_top_eigenvalue(f, w, iters=0)
    with pytest.raises(ValueError, match="samples must be an integer >= 1"):
        ho.hessian_trace(f, w, samples=1.5)
    with pytest.raises(ValueError, match="x must be floating point"):
        ho.second_derivative(lambda x: x * x, tf.constant(3))


def test_size_zero_variables_have_empty_hessian_blocks():
    w = tf.Variable([1.0, 2.0], dtype=tf.float64)
    empty = tf.Variable(np.zeros(0))
    empty_matrix = tf.Variable(np.zeros((2, 0)))
    f = lambda: tf.reduce_sum(w ** 3) + tf.reduce_sum(empty ** 2) + tf.reduce_sum(empty_matrix)

    assert ho.hessian(f, empty).shape == (0, 0)
    assert ho.hessian(f, [empty, empty_matrix]).shape == (0, 0)
    assert tf.function(lambda: ho.hessian(f, empty))().shape == (0, 0)
    h = ho.hessian(f, [empty, w, empty_matrix])
    np.testing.assert_allclose(h, np.diag([6.0, 12.0]))  # d2/dw2 sum(w^3) = diag(6 w)

    assert ho.newton_step(f, empty).shape == (0,)
    step = ho.newton_step(f, [w, empty_matrix], damping=1.0)
    np.testing.assert_allclose(step[0], ho.newton_step(f, w, damping=1.0))
    assert step[1].shape == (2, 0)
    product = ho.hvp(f, [w, empty], [tf.ones(2, tf.float64), tf.zeros(0, tf.float64)])
    np.testing.assert_allclose(product[0], [6.0, 12.0])
    assert product[1].shape == (0,)
    assert ho.value_and_grad(f, empty)[1].shape == (0,)
    assert float(ho.hessian_trace(f, empty, samples=2)) == 0.0
    assert float(ho.hessian_top_eigenvalue(f, empty, iters=2)) == 0.0
    np.testing.assert_allclose(ho.hessian_trace(f, [w, empty], samples=2), 18.0)
    np.testing.assert_allclose(ho.hessian_top_eigenvalue(f, [w, empty], iters=50), 12.0,
                               rtol=1e-6)


def test_an_empty_list_of_variables_is_rejected_by_name():
    f = lambda: tf.constant(1.0)
    calls = [lambda vs: ho.value_and_grad(f, vs), lambda vs: ho.hvp(f, vs, []),
             lambda vs: ho.hessian(f, vs), lambda vs: ho.newton_step(f, vs),
             lambda vs: ho.hessian_top_eigenvalue(f, vs), lambda vs: ho.hessian_trace(f, vs)]
    for call in calls:
        for empty in ([], ()):
            with pytest.raises(ValueError, match=r"variables must be .* non-empty list .* "
                                                 r"Received: variables=(\[\]|\(\))"):
                call(empty)


def test_curvature_loops_do_not_keep_the_closure_alive(rng):
    w = tf.Variable(rng.normal(size=3))

    def make_loss(v):  # the loss closure, which the compiled HVP refers to
        return lambda: tf.reduce_sum(v ** 4)

    loss = make_loss(w)
    ho.hessian_trace(loss, w, samples=2)
    ho.hessian_top_eigenvalue(loss, w, iters=2)
    alive = weakref.ref(loss)
    del loss
    gc.collect()
    assert alive() is None

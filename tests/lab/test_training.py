import keras
import numpy as np
import pytest
import tensorflow as tf

from lab.regularizers import WeightPenalty
from lab.training import make_train_step
from lab.transforms import ClipByGlobalNorm


def _loss_fn(y, logits):
    return keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True)


def _model(seed=0, **dense_kwargs):
    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.Input((4,)),
                             keras.layers.Dense(8, activation="tanh", **dense_kwargs),
                             keras.layers.Dense(3)])


def _batch(rng, n=16):
    return (tf.constant(rng.normal(size=(n, 4)), tf.float32),
            tf.constant(rng.integers(0, 3, size=n), tf.int32))


def test_step_equals_a_hand_written_update(rng):
    model, reference = _model(), _model()
    x, y = _batch(rng)
    step = make_train_step(model, _loss_fn, keras.optimizers.SGD(0.1),
                           transform=ClipByGlobalNorm(0.01), penalties=[WeightPenalty(l2=1e-2)])
    out = step(x, y)

    with tf.GradientTape() as tape:
        data = tf.reduce_mean(_loss_fn(y, reference(x, training=True)))
        kernels = [v for v in reference.trainable_variables if len(v.shape) > 1]
        total = data + 1e-2 * tf.add_n([tf.reduce_sum(k ** 2) for k in kernels])
    grads = tape.gradient(total, reference.trainable_variables)
    norm = tf.linalg.global_norm(grads)
    clipped, _ = tf.clip_by_global_norm(grads, 0.01)
    for v, g in zip(reference.trainable_variables, clipped):
        v.assign_sub(0.1 * g)

    np.testing.assert_allclose(out.loss, total, rtol=1e-6)
    np.testing.assert_allclose(out.grad_norm, norm, rtol=1e-6)
    assert bool(out.applied)
    for a, b in zip(model.trainable_variables, reference.trainable_variables):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


def test_layer_regularizers_are_part_of_the_loss(rng):
    model = _model(kernel_regularizer=keras.regularizers.L2(0.5))
    x, y = _batch(rng)
    step = make_train_step(model, _loss_fn, keras.optimizers.SGD(0.0))
    data = tf.reduce_mean(_loss_fn(y, model(x)))
    expected = data + 0.5 * tf.reduce_sum(model.layers[0].kernel ** 2)
    np.testing.assert_allclose(step(x, y).loss, expected, rtol=1e-6)


def test_traces_once_per_input_signature(rng):
    model = _model()
    step = make_train_step(model, _loss_fn, keras.optimizers.Adam(1e-3))
    for _ in range(5):
        step(*_batch(rng))
    assert step.trace_count == 1

    relaxed = make_train_step(model, _loss_fn, keras.optimizers.Adam(1e-3), input_signature=(
        tf.TensorSpec([None, 4], tf.float32), tf.TensorSpec([None], tf.int32)))
    for n in (16, 7, 32, 1):
        relaxed(*_batch(rng, n))
    assert relaxed.trace_count == 1


def test_non_finite_updates_are_skipped_and_counted(rng):
    model = _model()
    optimizer = keras.optimizers.Adam(1e-2)
    step = make_train_step(model, _loss_fn, optimizer)
    x, y = _batch(rng)
    step(x, y)
    before = [v.numpy() for v in model.trainable_variables]
    moments = [v.numpy() for v in optimizer.variables]
    out = step(x * np.nan, y)
    assert not bool(out.applied) and int(step.skipped) == 1
    for v, b in zip(model.trainable_variables, before):
        np.testing.assert_array_equal(v, b)
    for v, m in zip(optimizer.variables, moments):  # iterations and Adam moments untouched
        np.testing.assert_array_equal(v, m)
    assert bool(step(x, y).applied) and int(step.skipped) == 1


def test_training_reduces_the_loss(rng):
    model = _model()
    x, y = _batch(rng, 64)
    step = make_train_step(model, _loss_fn, keras.optimizers.Adam(5e-2))
    first = float(step(x, y).loss)
    for _ in range(200):
        last = float(step(x, y).loss)
    assert last < 0.25 * first


def test_unbuilt_model_and_bad_penalty_are_rejected():
    unbuilt = keras.Sequential([keras.layers.Dense(2)])
    with pytest.raises(ValueError, match="model must be built"):
        make_train_step(unbuilt, _loss_fn, keras.optimizers.SGD(0.1))
    with pytest.raises(ValueError, match=r"penalties\[0\]"):
        make_train_step(_model(), _loss_fn, keras.optimizers.SGD(0.1), penalties=[0.1])

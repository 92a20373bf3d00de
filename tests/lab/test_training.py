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


def test_trace_compiles_without_running(rng):
    model = _model()
    step = make_train_step(model, _loss_fn, keras.optimizers.Adam(1e-3), input_signature=(
        tf.TensorSpec([None, 4], tf.float32), tf.TensorSpec([None], tf.int32)))
    before = [w.copy() for w in model.get_weights()]
    step.trace()
    assert step.trace_count == 1
    for w, b in zip(model.get_weights(), before, strict=True):
        np.testing.assert_array_equal(w, b)
    assert int(step.optimizer.iterations) == 0
    step(*_batch(rng))
    assert step.trace_count == 1  # the call used the traced step

    unsigned = make_train_step(model, _loss_fn, keras.optimizers.Adam(1e-3))
    x, y = _batch(rng)
    unsigned.trace(tf.TensorSpec.from_tensor(tf.constant(x)),
                   tf.TensorSpec.from_tensor(tf.constant(y)))
    unsigned(x, y)
    assert unsigned.trace_count == 1


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


def _batch_norm_model(seed=0):
    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.Input((4,)), keras.layers.Dense(8),
                             keras.layers.BatchNormalization(momentum=0.5),
                             keras.layers.Dropout(0.25), keras.layers.Dense(3)])


def test_a_skipped_step_leaves_batch_norm_statistics_as_they_were(rng):
    model = _batch_norm_model()
    optimizer = keras.optimizers.Adam(1e-2)
    step = make_train_step(model, _loss_fn, optimizer)
    x, y = _batch(rng)
    assert bool(step(x, y).applied)
    before = {v.path: v.numpy() for v in model.variables}
    assert any("moving_mean" in path for path in before)  # the check below covers them
    assert any("moving_variance" in path for path in before)
    moments = [v.numpy() for v in optimizer.variables]

    bad = x.numpy()
    bad[0, 0] = np.nan  # one NaN poisons the batch mean and so the moving statistics
    out = step(tf.constant(bad), y)
    assert not bool(out.applied) and int(step.skipped) == 1
    for v in model.variables:  # trainable and not: moving statistics, the dropout seed
        np.testing.assert_array_equal(v.numpy(), before[v.path], err_msg=v.path)
    for v, m in zip(optimizer.variables, moments):
        np.testing.assert_array_equal(v, m)
    assert np.all(np.isfinite(model(x, training=False)))

    # The next finite step is applied and moves the statistics again.
    assert bool(step(x, y).applied)
    moving_mean = model.layers[1].moving_mean
    assert not np.array_equal(moving_mean.numpy(), before[moving_mean.path])
    assert step.trace_count == 1


@pytest.mark.parametrize("transform", [
    lambda grads, params: [g * np.nan for g in grads],
    lambda grads, params: [g / tf.norm(g - g) for g in grads],  # a zero norm: inf and NaN
], ids=["nan", "divide_by_zero"])
def test_a_transform_that_makes_gradients_non_finite_skips_the_update(rng, transform):
    model = _batch_norm_model()
    optimizer = keras.optimizers.Adam(1e-2)
    step = make_train_step(model, _loss_fn, optimizer, transform=transform)
    x, y = _batch(rng)
    before = [v.numpy() for v in model.variables]
    moments = [v.numpy() for v in optimizer.variables]
    out = step(x, y)
    assert not bool(out.applied) and int(step.skipped) == 1
    assert np.isfinite(out.loss) and np.isfinite(out.grad_norm)  # finite before the transform
    for v, b in zip(model.variables, before):
        np.testing.assert_array_equal(v, b)
    for v, m in zip(optimizer.variables, moments):
        np.testing.assert_array_equal(v, m)
    step(x, y)
    assert step.trace_count == 1


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


def test_perturb_replaces_the_batch_before_the_tape(rng):
    model, reference = _model(), _model()
    x, y = _batch(rng)
    shifted = make_train_step(model, _loss_fn, keras.optimizers.SGD(0.1),
                              perturb=lambda x, y: (tf.concat([x, x + 1.0], 0),
                                                    tf.concat([y, y], 0)))
    plain = make_train_step(reference, _loss_fn, keras.optimizers.SGD(0.1))
    np.testing.assert_allclose(shifted(x, y).loss,
                               plain(tf.concat([x, x + 1.0], 0), tf.concat([y, y], 0)).loss,
                               rtol=1e-6)
    for a, b in zip(model.trainable_variables, reference.trainable_variables):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


class _MeanOfBatch:
    """A penalty: the mean of the batch it is given (no weight gradient)."""

    def __init__(self, clean_batch):
        self.clean_batch = clean_batch

    def __call__(self, model, x, y):
        return tf.reduce_mean(x)


@pytest.mark.parametrize("clean_batch", [False, True])
def test_a_penalty_sees_the_perturbed_batch_unless_it_asks_for_the_clean_one(rng, clean_batch):
    x, y = _batch(rng)
    step = make_train_step(_model(), _loss_fn, keras.optimizers.SGD(0.1),
                           perturb=lambda x, y: (x + 1.0, y),
                           penalties=[_MeanOfBatch(clean_batch)])
    plain = make_train_step(_model(), _loss_fn, keras.optimizers.SGD(0.1))
    seen = x if clean_batch else x + 1.0
    np.testing.assert_allclose(step(x, y).loss, plain(x + 1.0, y).loss + tf.reduce_mean(seen),
                               rtol=1e-6)


MIRRORED_SCRIPT = r"""
import os
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
import keras, numpy as np, tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from lab.training import make_train_step
from lab.transforms import ClipByGlobalNorm

loss_fn = lambda y, logits: keras.losses.sparse_categorical_crossentropy(
    y, logits, from_logits=True)
rng = np.random.default_rng(0)
x = rng.normal(size=(64, 4)).astype(np.float32)
y = rng.integers(0, 3, size=64).astype(np.int32)

def build():
    keras.utils.set_random_seed(0)
    return keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, activation="tanh"),
                             keras.layers.Dense(3, kernel_regularizer=keras.regularizers.L2(0.01))])

strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
with strategy.scope():
    mirrored = build()
    step = make_train_step(mirrored, loss_fn, keras.optimizers.Adam(0.01),
                           transform=ClipByGlobalNorm(0.5), strategy=strategy)
single = build()
single_step = make_train_step(single, loss_fn, keras.optimizers.Adam(0.01),
                              transform=ClipByGlobalNorm(0.5))
data = strategy.experimental_distribute_dataset(
    tf.data.Dataset.from_tensor_slices((x, y)).batch(16))
for (xd, yd), start in zip(data, range(0, 64, 16)):
    out = step(xd, yd)
    ref = single_step(x[start:start + 16], y[start:start + 16])
    np.testing.assert_allclose(out.loss, ref.loss, rtol=1e-5)
    np.testing.assert_allclose(out.grad_norm, ref.grad_norm, rtol=1e-5)
for a, b in zip(mirrored.trainable_variables, single.trainable_variables):
    np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-4, atol=1e-6)
print("replicas", strategy.num_replicas_in_sync)
"""


MIRRORED_SKIP_SCRIPT = r"""
import os
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
import keras, numpy as np, tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from lab.training import make_train_step

loss_fn = lambda y, logits: keras.losses.sparse_categorical_crossentropy(
    y, logits, from_logits=True)
rng = np.random.default_rng(0)
x = rng.normal(size=(32, 4)).astype(np.float32)
x[:16] += 3.0  # the two replicas see different halves, so their batch statistics differ
y = rng.integers(0, 3, size=32).astype(np.int32)

strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
with strategy.scope():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8),
                              keras.layers.BatchNormalization(), keras.layers.Dense(3)])
    step = make_train_step(model, loss_fn, keras.optimizers.Adam(0.01), strategy=strategy)

def distribute(x, y):
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(32)
    return next(iter(strategy.experimental_distribute_dataset(data)))

def per_replica(variables):
    return [[c.numpy() for c in v.value.values] for v in variables]

assert bool(step(*distribute(x, y)).applied)
before = per_replica(model.variables)
mean = model.layers[1].moving_mean
assert not np.array_equal(*per_replica([mean])[0])  # replicas hold different statistics
bad = x.copy()
bad[0, 0] = np.nan  # only replica 0 sees it; the summed gradient is NaN for both
assert not bool(step(*distribute(bad, y)).applied)
for v, copies, saved in zip(model.variables, per_replica(model.variables), before):
    for replica, (now, then) in enumerate(zip(copies, saved)):
        np.testing.assert_array_equal(now, then, err_msg=f"{v.path} on replica {replica}")
assert bool(step(*distribute(x, y)).applied) and step.trace_count == 1
print("restored on", strategy.num_replicas_in_sync, "replicas")
"""


def test_mirrored_strategy_skip_restores_each_replicas_statistics(fresh_process):
    # Keras updates each replica's copy of the batch-norm statistics on its own, so a skipped
    # step must put back each replica's own values.
    fresh_process(MIRRORED_SKIP_SCRIPT, expect="restored on 2 replicas")


def test_mirrored_strategy_over_two_cpus_matches_one_device(fresh_process):
    # Logical devices must be set before TensorFlow starts, so this runs in a fresh process.
    fresh_process(MIRRORED_SCRIPT, expect="replicas 2")

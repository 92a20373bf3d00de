import dataclasses

import keras
import numpy as np
import pytest
import tensorflow as tf

from attacks import adversarial_training as at
from attacks.evaluation import pgd_accuracy
from attacks.fgsm import cross_entropy
from attacks.models import small_cnn
from lab.training import make_train_step


@pytest.fixture(scope="module")
def digits():
    from attacks.mnist import load_mnist_arrays

    x, y = load_mnist_arrays("train", "sample")
    return x[:1024], y[:1024]


def test_eps_ramp_and_config_errors():
    config = at.AdversarialTrainingConfig(eps=0.3, eps_ramp_epochs=3)
    assert [round(config.eps_at(e), 6) for e in range(5)] == [0.1, 0.2, 0.3, 0.3, 0.3]
    assert at.AdversarialTrainingConfig(eps_ramp_epochs=0).eps_at(0) == 0.3
    with pytest.raises(ValueError, match="method must be one of"):
        at.AdversarialTrainingConfig(method="trades")
    with pytest.raises(ValueError, match=r"eps must be in \[0\.0, 1\.0\]"):
        at.AdversarialTrainingConfig(eps=1.3)
    with pytest.raises(ValueError, match="epochs must be an integer >= 1"):
        at.AdversarialTrainingConfig(epochs=0)
    with pytest.raises(ValueError, match=r"n_fgsm_noise must be > 0\. Received: n_fgsm_noise=0"):
        at.AdversarialTrainingConfig(n_fgsm_noise=0)
    with pytest.raises(ValueError, match=r"n_fgsm_step must be > 0\. Received: n_fgsm_step=-1"):
        at.AdversarialTrainingConfig(n_fgsm_step=-1.0)


def test_learning_rate_schedules():
    assert at.learning_rate_schedule(1e-3, "constant", 100) == 1e-3
    step = at.learning_rate_schedule(1e-3, "step", 100)
    assert [float(step(i)) for i in (0, 74, 76, 99)] == pytest.approx([1e-3, 1e-3, 1e-4, 1e-4])
    cosine = at.learning_rate_schedule(1e-3, "cosine", 100)
    assert [float(cosine(i)) for i in (0, 50, 100)] == pytest.approx([1e-3, 5e-4, 0.0], abs=1e-9)
    with pytest.raises(ValueError, match="lr_schedule must be one of"):
        at.AdversarialTrainingConfig(lr_schedule="linear")


def test_final_eps_follows_the_ramp_and_clean_training_has_none():
    assert at.AdversarialTrainingConfig(eps=0.3, epochs=2).final_eps == pytest.approx(0.12)
    assert at.AdversarialTrainingConfig(eps=0.3, epochs=5).final_eps == pytest.approx(0.3)
    clean = at.AdversarialTrainingConfig(method="clean", epochs=3)
    assert clean.final_eps == 0.0 and clean.eps_at(0) == 0.0
    for name, value in (("shift", 1.5), ("eps_ramp_epochs", -1), ("seed", -1)):
        with pytest.raises(ValueError, match=rf"^{name} must be an integer >= 0"):
            at.AdversarialTrainingConfig(**{name: value})


def test_trainer_traces_its_step_once_across_epochs_and_a_changing_eps(digits):
    x, y = digits
    keras.utils.set_random_seed(0)
    trainer = at.AdversarialTrainer(small_cnn(), at.AdversarialTrainingConfig(
        method="pgd", pgd_steps=2, eps_ramp_epochs=3), num_examples=256)
    rng = np.random.default_rng(0)
    for epoch in range(3):
        loss, seconds = trainer.train_epoch(x[:256], y[:256], epoch, rng)
        assert np.isfinite(loss) and seconds > 0
    assert trainer.step.trace_count == 1


def test_trainer_needs_a_full_batch():
    with pytest.raises(ValueError, match="num_examples must be at least batch_size=64"):
        at.AdversarialTrainer(small_cnn(), at.AdversarialTrainingConfig(), num_examples=63)


def test_random_shift_moves_each_image_within_bounds():
    images = np.zeros((50, 28, 28, 1), np.float32)
    images[:, 14, 14, 0] = 1.0
    shifted = at.random_shift(images, 2, np.random.default_rng(0))
    assert shifted.shape == images.shape
    rows, cols = np.nonzero(shifted[..., 0].sum(axis=0))
    assert rows.min() >= 12 and rows.max() <= 16 and cols.min() >= 12 and cols.max() <= 16
    assert np.all(shifted.reshape(50, -1).sum(axis=1) == 1.0)  # the pixel moved, not lost
    assert len({tuple(np.argwhere(s[..., 0])[0]) for s in shifted}) > 5
    np.testing.assert_array_equal(at.random_shift(images, 0, np.random.default_rng(0)), images)


def test_guard_keeps_the_best_weights_and_fires_on_a_drop():
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    guard = at.CollapseGuard(drop=0.3)
    for epoch, score in enumerate([0.1, 0.5, 0.6], start=1):
        model.layers[0].kernel.assign(np.full((2, 1), float(epoch), np.float32))
        assert not guard.update(epoch, score, model)
    model.layers[0].kernel.assign(np.zeros((2, 1), np.float32))
    assert not guard.update(4, 0.4, model)  # a drop of 0.2: noise, not collapse
    assert guard.update(5, 0.2, model)
    guard.restore(model)
    np.testing.assert_array_equal(model.layers[0].kernel.numpy(), np.full((2, 1), 3.0))
    assert guard.best_epoch == 3


def test_training_stops_and_restores_on_a_scripted_collapse(digits, monkeypatch):
    x, y = digits
    scores = iter([0.5, 0.7, 0.05, 0.9])  # epoch 3 collapses
    monkeypatch.setattr(at, "pgd_accuracy", lambda *args, **kwargs: next(scores))
    snapshots = {}
    keras.utils.set_random_seed(0)
    model = small_cnn()
    config = at.AdversarialTrainingConfig(method="fgsm", eps=0.3, epochs=4, eps_ramp_epochs=5)
    result = at.adversarial_train(
        model, x[:256], y[:256], config,
        on_epoch_end=lambda epoch, m, row: snapshots.setdefault(epoch, m.get_weights()))
    assert result.collapsed and result.collapsed_at_epoch == 3 and result.best_epoch == 2
    # The model holds epoch 2's weights, trained at 2/5 of eps on the ramp: that is the
    # radius it may claim, not the 4/5 the full run would have reached.
    assert result.trained_eps == pytest.approx(0.12) and config.final_eps == pytest.approx(0.24)
    assert len(result.history) == 3 and sorted(snapshots) == [1, 2, 3]
    assert [row["collapsed"] for row in result.history] == [False, False, True]
    assert any(np.any(a != b) for a, b in zip(snapshots[2], snapshots[1]))  # epochs train
    for restored, saved in zip(model.get_weights(), snapshots[2]):
        np.testing.assert_array_equal(restored, saved)
    # The callback of the collapsed epoch already sees the restored weights.
    for seen, saved in zip(snapshots[3], snapshots[2]):
        np.testing.assert_array_equal(seen, saved)


@pytest.mark.parametrize("method", ["fgsm", "fgsm_rs", "grad_align", "pgd"])
def test_perturbations_are_attacks_inside_the_ball(method, digits):
    x, y = digits
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Flatten(),
                              keras.layers.Dense(32, activation="relu"),
                              keras.layers.Dropout(0.5), keras.layers.Dense(10)])
    config = at.AdversarialTrainingConfig(method=method, eps=0.1)
    eps, seed = tf.Variable(0.1), tf.Variable(3, dtype=tf.int64)
    perturb = at.make_perturb(model, config, eps, seed)
    xb, yb = tf.constant(x[:64]), tf.constant(y[:64])
    x_adv, y_adv = perturb(xb, yb)
    if method == "fgsm":  # clean and adversarial halves in one batch
        assert x_adv.shape[0] == 128
        np.testing.assert_array_equal(x_adv[:64], xb)
        np.testing.assert_array_equal(y_adv, np.concatenate([y[:64], y[:64]]))
        x_adv = x_adv[64:]
    assert np.abs(x_adv.numpy() - x[:64]).max() <= 0.1 + 1e-6
    loss = lambda batch: float(tf.reduce_mean(at.cross_entropy(yb, model(batch, training=False))))
    assert loss(x_adv) > loss(xb)
    # The attack runs the model with training=False: dropout off, same seed, same batch.
    np.testing.assert_array_equal(perturb(xb, yb)[0], perturb(xb, yb)[0])


def test_n_fgsm_is_noise_of_two_eps_then_one_unprojected_signed_step(digits):
    # On a linear model the input gradient of the cross-entropy is known in closed form, so
    # the perturbation can be rebuilt by hand from the same noise: x + eta clipped to [0, 1],
    # plus eps * sign(grad) at that point, clipped to [0, 1] and never back to the eps-ball.
    x, y = digits
    keras.utils.set_random_seed(0)
    layer = keras.layers.Dense(10)
    model = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Flatten(), layer])
    w, b = layer.get_weights()
    config = at.AdversarialTrainingConfig(method="n_fgsm", eps=0.1, seed=5)
    perturb = at.make_perturb(model, config, tf.Variable(0.1), tf.Variable(3, dtype=tf.int64))
    xb, yb = x[:64], y[:64]
    x_adv, y_adv = (v.numpy() for v in perturb(tf.constant(xb), tf.constant(yb)))
    np.testing.assert_array_equal(y_adv, yb)
    noise = tf.random.stateless_uniform(xb.shape, tf.constant([5, 3], tf.int64), -1.0, 1.0)
    noisy = np.clip(xb + np.float32(0.2) * noise.numpy(), 0.0, 1.0)
    logits = noisy.reshape(64, -1) @ w + b
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    grad = ((p - np.eye(10)[yb]) @ w.T).reshape(xb.shape)
    expected = np.clip(noisy + np.float32(0.1) * np.sign(grad), 0.0, 1.0)
    np.testing.assert_allclose(x_adv, expected, atol=1e-6)
    distance = np.abs(x_adv - xb).max(axis=(1, 2, 3))
    assert distance.max() <= 0.3 + 1e-6 and (distance > 0.1 + 1e-3).all()
    assert x_adv.min() >= 0.0 and x_adv.max() <= 1.0  # out of the ball, never out of the box


@pytest.mark.slow
def test_slow_pgd_training_makes_a_model_more_robust_than_clean_training():
    from attacks.mnist import load_mnist_arrays

    x, y = (a[:2048] for a in load_mnist_arrays("train", "sample"))
    x_test, y_test = (a[:300] for a in load_mnist_arrays("test", "sample"))
    robust = {}
    for method in ("clean", "pgd"):
        keras.utils.set_random_seed(0)
        model = small_cnn()
        config = at.AdversarialTrainingConfig(
            method=method, eps=0.15, epochs=4, eps_ramp_epochs=0, guard_examples=64)
        result = at.adversarial_train(model, x, y, config)
        assert not result.collapsed and result.trained_eps == config.final_eps
        robust[method] = pgd_accuracy(model, x_test, y_test, 0.15, steps=10)
    # Measured with this seed and budget: 0.10 clean, 0.72 PGD-trained (4,096 digits: 0.27 and
    # 0.81, at twice the time).
    assert robust["pgd"] > robust["clean"] + 0.3


MIRRORED_SCRIPT = r"""
import os
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
import keras, numpy as np, tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from attacks import adversarial_training as at
from attacks.evaluation import accuracy
from attacks.mnist import load_mnist_arrays
from attacks.models import small_cnn

x, y = (a[:1024] for a in load_mnist_arrays("train", "sample"))
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
keras.utils.set_random_seed(0)
with strategy.scope():
    model = small_cnn()
result = at.adversarial_train(model, x, y, at.AdversarialTrainingConfig(
    method="fgsm_rs", eps=0.1, epochs=2, guard_examples=64), strategy=strategy,
    validation=(x[:256], y[:256]))
losses = [row["loss"] for row in result.history]
assert np.all(np.isfinite(losses)) and losses[1] < losses[0], losses
assert result.history[-1]["clean_accuracy"] > 0.5, result.history

# Replicas fold their id into the attack's seed: the same batch on both gets different starts.
config = at.AdversarialTrainingConfig(method="fgsm_rs", eps=0.1)
with strategy.scope():
    perturb = at.make_perturb(model, config, tf.Variable(0.1), tf.Variable(1, dtype=tf.int64))
starts = strategy.experimental_local_results(
    strategy.run(tf.function(perturb), args=(tf.constant(x[:8]), tf.constant(y[:8]))))
first, second = (np.asarray(s[0]) for s in starts)
assert np.abs(first - second).max() > 0.01, "replicas drew the same random starts"
print("replicas", strategy.num_replicas_in_sync)
"""


def test_adversarial_training_under_mirrored_strategy_on_two_cpus(fresh_process):
    # Logical devices must be set before TensorFlow starts, so this runs in a fresh process.
    fresh_process(MIRRORED_SCRIPT, expect="replicas 2")


def _without_seconds(history):
    return [{k: v for k, v in row.items() if k != "seconds"} for row in history]


@pytest.mark.parametrize("method", ["fgsm_rs", "pgd"])
def test_a_run_killed_midway_and_resumed_from_its_checkpoint_ends_like_an_unbroken_one(
        digits, tmp_path, method):
    x, y = digits[0][:512], digits[1][:512]
    config = at.AdversarialTrainingConfig(method=method, epochs=4, eps_ramp_epochs=2,
                                          pgd_steps=2, guard_examples=64, guard_pgd_steps=2,
                                          shift=1, lr_schedule="cosine", seed=3)

    def fresh_model():
        keras.utils.set_random_seed(0)
        return small_cnn()

    straight = fresh_model()
    expected = at.adversarial_train(straight, x, y, config, validation=(x[:128], y[:128]))

    class Killed(BaseException):  # like SIGKILL: nothing after it runs
        pass

    steps = []

    def kill_in_the_third_epoch():
        steps.append(1)
        if len(steps) == 2 * (512 // 64) + 3:
            raise Killed

    trainer_epoch = at.AdversarialTrainer.train_epoch

    def train_epoch(self, *args, on_step=None):
        return trainer_epoch(self, *args, on_step=kill_in_the_third_epoch)

    at.AdversarialTrainer.train_epoch = train_epoch
    try:
        with pytest.raises(Killed):
            at.adversarial_train(fresh_model(), x, y, config, validation=(x[:128], y[:128]),
                                 checkpoint=tmp_path / "checkpoint")
    finally:
        at.AdversarialTrainer.train_epoch = trainer_epoch
    assert [r["epoch"] for r in at.checkpoint_history(tmp_path / "checkpoint")] == [1, 2]

    resumed_model = fresh_model()  # a new process: new weights, replaced by the checkpoint's
    resumed = at.adversarial_train(resumed_model, x, y, config, validation=(x[:128], y[:128]),
                                   checkpoint=tmp_path / "checkpoint")
    assert _without_seconds(resumed.history) == _without_seconds(expected.history)
    for a, b in zip(straight.get_weights(), resumed_model.get_weights()):
        np.testing.assert_array_equal(a, b)  # bit for bit: CPU kernels are deterministic


def test_a_checkpoint_of_another_config_is_refused(digits, tmp_path):
    x, y = digits[0][:128], digits[1][:128]
    config = at.AdversarialTrainingConfig(method="clean", epochs=1, guard_examples=32,
                                          guard_pgd_steps=1)
    at.adversarial_train(small_cnn(), x, y, config, checkpoint=tmp_path)
    for changed in ({"epochs": 2}, {"weight_decay": 1e-4}, {"input_gradient_penalty": 1.0}):
        with pytest.raises(ValueError,
                           match="checkpoint must come from a run with the same config"):
            at.adversarial_train(small_cnn(), x, y, dataclasses.replace(config, **changed),
                                 checkpoint=tmp_path)


def test_a_checkpoint_restores_the_optimizer_moments_step_count_and_attack_seed(digits,
                                                                                 tmp_path):
    x, y = digits[0][:256], digits[1][:256]
    config = at.AdversarialTrainingConfig(method="fgsm_rs", epochs=2, guard_examples=32,
                                          guard_pgd_steps=1)
    trainers = []
    original = at.AdversarialTrainer.__init__

    def remember(self, *args, **kwargs):
        original(self, *args, **kwargs)
        trainers.append(self)

    at.AdversarialTrainer.__init__ = remember
    try:
        at.adversarial_train(small_cnn(), x, y, config, checkpoint=tmp_path)
        resumed = at.adversarial_train(small_cnn(), x, y, config, checkpoint=tmp_path)
    finally:
        at.AdversarialTrainer.__init__ = original
    assert len(resumed.history) == 2  # nothing left to train: the state is the saved one
    trained, restored = trainers
    assert int(restored.optimizer.iterations) == 2 * (256 // 64)
    assert int(restored._seed.numpy()) == int(trained._seed.numpy()) == 2 * (256 // 64)
    for a, b in zip(trained.optimizer.variables, restored.optimizer.variables, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())  # Adam's moments, bit for bit


def test_a_collapsed_run_resumes_as_collapsed_with_the_restored_weights(digits, tmp_path,
                                                                        monkeypatch):
    x, y = digits[0][:256], digits[1][:256]
    monkeypatch.setattr(at, "pgd_accuracy", lambda *args, **kwargs: next(scores))
    config = at.AdversarialTrainingConfig(method="fgsm", epochs=4, guard_examples=32)
    scores = iter([0.5, 0.7, 0.05])
    model = small_cnn()
    first = at.adversarial_train(model, x, y, config, validation=(x, y), checkpoint=tmp_path)
    again = small_cnn()
    second = at.adversarial_train(again, x, y, config, validation=(x, y), checkpoint=tmp_path)
    assert second.history == first.history and second.collapsed_at_epoch == 3
    assert second.best_epoch == first.best_epoch == 2
    for a, b in zip(model.get_weights(), again.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_a_crash_while_saving_leaves_the_previous_checkpoint_loadable(digits, tmp_path):
    x, y = digits[0][:128], digits[1][:128]
    config = at.AdversarialTrainingConfig(method="clean", epochs=1, guard_examples=32,
                                          guard_pgd_steps=1)
    at.adversarial_train(small_cnn(), x, y, config, checkpoint=tmp_path)
    # What a kill in the middle of the next save leaves: its files, half written, and the
    # record of the latest save (written last, atomically) still naming the first.
    for name in ("ckpt-2.index", "ckpt-2.data-00000-of-00001"):
        (tmp_path / name).write_bytes(b"half a checkpoint")
    assert [r["epoch"] for r in at.checkpoint_history(tmp_path)] == [1]
    result = at.adversarial_train(small_cnn(), x, y, config, checkpoint=tmp_path)
    assert [r["epoch"] for r in result.history] == [1]


def test_a_checkpoint_folder_deleted_during_training_is_not_recreated(digits, tmp_path):
    import shutil

    x, y = digits[0][:128], digits[1][:128]
    config = at.AdversarialTrainingConfig(method="clean", epochs=2, guard_examples=32,
                                          guard_pgd_steps=1)
    folder = tmp_path / "run" / "checkpoint"
    with pytest.raises(FileNotFoundError, match="was deleted while training"):
        at.adversarial_train(small_cnn(), x, y, config, checkpoint=folder,
                             on_epoch_end=lambda *args: shutil.rmtree(tmp_path / "run"))
    assert not (tmp_path / "run").exists()


def test_the_progress_bar_stays_quiet_when_output_is_not_a_terminal(digits, capsys):
    x, y = digits[0][:128], digits[1][:128]
    config = at.AdversarialTrainingConfig(method="clean", epochs=1, guard_examples=32,
                                          guard_pgd_steps=1)
    at.adversarial_train(small_cnn(), x, y, config, progress=True)
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("name", ["input_gradient_penalty", "weight_decay",
                                  "grad_align_lambda"])
@pytest.mark.parametrize("value, rule", [(-0.1, r"in \[0\.0, inf\)"),
                                         (float("inf"), r"a finite number in \[0\.0, inf\)"),
                                         (float("nan"), r"a finite number in \[0\.0, inf\)"),
                                         (True, "a real number")])
def test_penalty_coefficients_must_be_finite_and_nonnegative(name, value, rule):
    with pytest.raises(ValueError, match=rf"^{name} must be {rule}\. Received: {name}="):
        at.AdversarialTrainingConfig(**{name: value})


def test_zero_coefficients_add_no_penalty_and_train_bit_for_bit_as_before(digits):
    x, y = digits[0][:256], digits[1][:256]
    config = at.AdversarialTrainingConfig(method="fgsm_rs", eps=0.1, eps_ramp_epochs=0,
                                          input_gradient_penalty=0.0, weight_decay=0.0)
    assert at.training_penalties(config) == ()
    keras.utils.set_random_seed(0)
    model = small_cnn()
    trainer = at.AdversarialTrainer(model, config, num_examples=len(x))
    trainer.start_epoch(0)
    # The step as it was built before the penalty fields existed.
    keras.utils.set_random_seed(0)
    reference_model = small_cnn()
    seed = tf.Variable(0, dtype=tf.int64)
    reference = make_train_step(
        reference_model, cross_entropy, keras.optimizers.Adam(config.learning_rate),
        perturb=at.make_perturb(reference_model, config, tf.Variable(0.1), seed))
    for start in range(0, len(x), 64):
        xb, yb = tf.constant(x[start:start + 64]), tf.constant(y[start:start + 64])
        trainer.train_step(xb, yb)
        seed.assign_add(1)
        reference(xb, yb)
    for a, b in zip(model.get_weights(), reference_model.get_weights()):
        np.testing.assert_array_equal(a, b)


def _penalized_objective(model, x, y, lam, weight_decay):
    """The training objective computed without lab.regularizers: per-example input
    gradients one example at a time, the L2 term over the kernels by name."""
    data = tf.reduce_mean(cross_entropy(y, model(x, training=True)))
    squared_norms = []
    for i in range(len(x)):
        xi = x[i:i + 1]
        with tf.GradientTape() as tape:
            tape.watch(xi)
            loss_i = cross_entropy(y[i:i + 1], model(xi, training=True))[0]
        squared_norms.append(tf.reduce_sum(tape.gradient(loss_i, xi) ** 2))
    kernels = sum(tf.reduce_sum(layer.kernel ** 2) for layer in model.layers)
    return data + lam * tf.reduce_mean(tf.stack(squared_norms)) + weight_decay * kernels


@pytest.mark.parametrize("lam, weight_decay", [(0.7, 0.0), (0.0, 0.05), (0.7, 0.05)])
def test_the_step_minimizes_data_loss_plus_its_penalties(tiny_mlp_f64, fd_grad, lam,
                                                         weight_decay):
    model, _ = tiny_mlp_f64
    rng = np.random.default_rng(3)
    for layer in model.layers:  # biases off zero: the L2 term must leave them out
        layer.bias.assign(rng.normal(size=layer.bias.shape))
    x = tf.constant(rng.normal(size=(6, 3)))
    y = tf.constant([0, 1, 1, 0, 1, 0])
    config = at.AdversarialTrainingConfig(method="clean", batch_size=6,
                                          input_gradient_penalty=lam, weight_decay=weight_decay)
    assert len(at.training_penalties(config)) == (lam > 0) + (weight_decay > 0)
    expected_loss = float(_penalized_objective(model, x, y, lam, weight_decay))
    # Double backpropagation, checked against central differences of the objective.
    grads = fd_grad(lambda: _penalized_objective(model, x, y, lam, weight_decay),
                    model.trainable_variables)
    expected_norm = np.sqrt(sum(np.sum(g ** 2) for g in grads))
    out = at.AdversarialTrainer(model, config, num_examples=6).train_step(x, y)
    assert float(out.loss) == pytest.approx(expected_loss, rel=1e-10)
    assert float(out.grad_norm) == pytest.approx(expected_norm, rel=1e-6)


def _grad_align_objective(model, x_adv, y, x, near, lam, at_x=None):
    """GradAlign's objective built one example at a time with plain tapes: the cross-entropy
    of the FGSM batch plus lam * mean_i (1 - cos(g_i(x_i), g_i(near_i))); ``at_x`` holds the
    clean gradients fixed (they are a constant of the step)."""
    def example_gradient(point, i):
        with tf.GradientTape() as tape:
            tape.watch(point)
            loss = at.cross_entropy(y[i:i + 1], model(point, training=True))[0]
        return tf.reshape(tape.gradient(loss, point), [-1])

    at_x = at_x or [example_gradient(x[i:i + 1], i) for i in range(len(x))]
    cosines = []
    for i in range(len(x)):
        at_near = example_gradient(near[i:i + 1], i)
        cosines.append(tf.reduce_sum(at_x[i] * at_near)
                       / (tf.norm(at_x[i]) * tf.norm(at_near)))
    data = tf.reduce_mean(at.cross_entropy(y, model(x_adv, training=True)))
    return data + lam * (1.0 - tf.reduce_mean(tf.stack(cosines))), at_x


def test_grad_align_trains_on_fgsm_examples_plus_the_alignment_penalty(tiny_mlp_f64, fd_grad):
    model, _ = tiny_mlp_f64
    rng = np.random.default_rng(4)
    x = tf.constant(rng.uniform(0.2, 0.8, size=(6, 3)))
    y = tf.constant([0, 1, 1, 0, 1, 0])
    eps, lam = 0.1, 0.5
    config = at.AdversarialTrainingConfig(method="grad_align", eps=eps, eps_ramp_epochs=0,
                                          grad_align_lambda=lam, batch_size=6, seed=9)
    eps_used = float(np.float32(eps))  # the trainer keeps eps in a float32 variable
    # FGSM from x with step eps (the gradient by hand: a tape on x) ...
    with tf.GradientTape() as tape:
        tape.watch(x)
        loss = tf.reduce_sum(at.cross_entropy(y, model(x, training=False)))
    x_adv = tf.clip_by_value(x + eps_used * tf.sign(tape.gradient(loss, x)), 0.0, 1.0)
    # ... and the penalty's point: the first step's counter is 1, folded with 1.
    seed = tf.random.experimental.stateless_fold_in(tf.constant([9, 1], tf.int64), 1)
    near = x + eps_used * tf.random.stateless_uniform(x.shape, seed, -1.0, 1.0, tf.float64)
    expected, at_x = _grad_align_objective(model, x_adv, y, x, near, lam)
    grads = fd_grad(lambda: _grad_align_objective(model, x_adv, y, x, near, lam, at_x)[0],
                    model.trainable_variables)
    expected_norm = np.sqrt(sum(np.sum(g ** 2) for g in grads))
    out = at.AdversarialTrainer(model, config, num_examples=6).train_step(x, y)
    assert float(out.loss) == pytest.approx(float(expected), rel=1e-10)
    assert float(out.grad_norm) == pytest.approx(expected_norm, rel=1e-6)

import keras
import numpy as np
import pytest

from attacks.fgsm import cross_entropy, fgsm
from attacks.models import madry_cnn, small_cnn
from attacks.pgd import _build_pgd, pgd
from lab.compile_cache import cached_function


def test_one_step_without_random_start_and_step_eps_is_fgsm(cnn_batch):
    model, x, y = cnn_batch
    np.testing.assert_array_equal(
        pgd(model, x, y, 0.2, steps=1, step_size=0.2, random_start=False), fgsm(model, x, y, 0.2))


def test_more_steps_raise_the_loss(cnn_batch):
    model, x, y = cnn_batch
    loss = lambda batch: float(np.mean(cross_entropy(y, model(batch, training=False))))
    one = loss(pgd(model, x, y, 0.05, steps=1, step_size=0.0125, random_start=False))
    ten = loss(pgd(model, x, y, 0.05, steps=10, step_size=0.0125, random_start=False))
    assert ten > one > loss(x)


def test_restarts_keep_the_strongest_result_per_example(cnn_batch):
    model, x, _ = cnn_batch
    y = np.argmax(model(x, training=False), -1).astype(np.int32)  # nothing fooled at the start
    loss = lambda batch: cross_entropy(y, model(batch, training=False)).numpy()
    # Restart 0 of a 3-restart run is the 1-restart run with the same seed; the kept result
    # is at least as strong for every example (a fooling example counts as strongest).
    single = pgd(model, x, y, 0.03, steps=2, step_size=0.01, restarts=1, seed=4)
    triple = pgd(model, x, y, 0.03, steps=2, step_size=0.01, restarts=3, seed=4)
    fooled = lambda batch: np.argmax(model(batch, training=False), -1) != y
    f1, f3 = fooled(single), fooled(triple)
    assert np.all(f3 >= f1)
    both_correct = ~f1 & ~f3
    assert np.all(loss(triple)[both_correct] >= loss(single)[both_correct] - 1e-6)
    assert not np.array_equal(single, triple)


def test_compiled_once_for_new_eps_steps_and_restarts(cnn_batch):
    model, x, y = cnn_batch
    for eps, steps, restarts in ((0.1, 2, 1), (0.2, 3, 2), (0.05, 1, 1)):
        pgd(model, x, y, eps, steps=steps, restarts=restarts, seed=0)
    attack = cached_function(model, ("pgd", True, False, (0.0, 1.0)),
                             lambda: _build_pgd(model, True, False, (0.0, 1.0)))
    assert attack.experimental_get_tracing_count() == 1


def test_targeted_pgd_reaches_the_target_on_an_untrained_model(cnn_batch):
    model, x, y = cnn_batch
    target = (y + 3) % 10
    adv = pgd(model, x, target, 0.3, steps=20, step_size=0.03, targeted=True, seed=0)
    hit = np.mean(np.argmax(model(adv, training=False), -1) == target)
    assert hit > np.mean(np.argmax(model(x, training=False), -1) == target) + 0.5


def test_models_return_logits_of_the_right_shape():
    x = np.zeros((2, 28, 28, 1), np.float32)
    assert small_cnn()(x).shape == (2, 10)
    model = madry_cnn()
    assert model(x).shape == (2, 10)
    shapes = [tuple(w.shape) for w in model.trainable_weights if len(w.shape) > 1]
    assert shapes == [(5, 5, 1, 32), (5, 5, 32, 64), (7 * 7 * 64, 1024), (1024, 10)]

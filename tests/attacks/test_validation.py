"""The one label check (``attacks.validation.check_labels``) and every public function that
takes labels: each refuses labels that are not one integer class per example, naming ``y``.

Before it, ``accuracy(model, x, y[:, None])`` broadcast ``[n] == [n, 1]`` into an ``n x n``
comparison and returned 2.3125, float labels compared unequal to every prediction (accuracy
0.0), and ``adversarial_train`` truncated 3.7 to class 3.
"""

import keras
import numpy as np
import pytest

from attacks import adversarial_training as at
from attacks.evaluation import (
    accuracy,
    attack_accuracy,
    fgsm_accuracy,
    pgd_accuracy,
    robustness_curve,
)
from attacks.fgsm import fgsm
from attacks.pgd import pgd
from attacks.validation import check_labels, num_classes

N = 16


@pytest.fixture(scope="module")
def model_and_batch():
    """A 3-class dense model on 6 features in [0, 1], and its own predictions as labels."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(3)])
    x = np.random.default_rng(0).uniform(0.2, 0.8, size=(N, 6)).astype(np.float32)
    y = np.argmax(model(x, training=False), axis=-1).astype(np.int64)
    return model, x, y


def _calls():
    config = at.AdversarialTrainingConfig(method="fgsm", epochs=1, batch_size=4,
                                          guard_examples=4, guard_pgd_steps=1)
    return {
        "accuracy": lambda m, x, y: accuracy(m, x, y),
        "attack_accuracy": lambda m, x, y: attack_accuracy(m, x, y, lambda xb, yb, start: xb),
        "fgsm_accuracy at eps 0": lambda m, x, y: fgsm_accuracy(m, x, y, 0.0),
        "fgsm_accuracy": lambda m, x, y: fgsm_accuracy(m, x, y, 0.1),
        "pgd_accuracy at eps 0": lambda m, x, y: pgd_accuracy(m, x, y, 0.0),
        "pgd_accuracy": lambda m, x, y: pgd_accuracy(m, x, y, 0.1, steps=2),
        "robustness_curve": lambda m, x, y: robustness_curve(m, (x, y), [0.0, 0.1], pgd_steps=2),
        "robustness_curve without 0": lambda m, x, y: robustness_curve(m, (x, y), [0.1],
                                                                       pgd_steps=2),
        "fgsm": lambda m, x, y: fgsm(m, x, y, 0.1),
        "pgd": lambda m, x, y: pgd(m, x, y, 0.1, steps=2),
        "adversarial_train": lambda m, x, y: at.adversarial_train(m, x, y, config),
        "adversarial_train validation": lambda m, x, y: at.adversarial_train(
            m, x, np.zeros(len(x), np.int32), config, validation=(x, y)),
        "AdversarialTrainer.batches": lambda m, x, y: at.AdversarialTrainer(
            m, config, num_examples=len(x)).batches(x, y, np.random.default_rng(0)),
    }


BAD_LABELS = {
    "a column": (lambda y: y[:, None],
                 r"must be a vector of integer labels, one per example\. Received: .* with "
                 rf"shape \({N}, 1\)$"),
    "a fraction": (lambda y: y + 0.7,
                   r"must hold integer labels \(a float array only of whole numbers\)\. "
                   r"Received: .*\[0\]=\d\.7 in a float64 array$"),
    "NaN": (lambda y: np.where(np.arange(N) == 5, np.nan, y),
            r"must hold integer labels \(a float array only of whole numbers\)\. "
            r"Received: .*\[5\]=nan in a float64 array$"),
    "a class the model has not": (lambda y: np.where(np.arange(N) == 3, 3, y),
                                  r"must hold labels in \[0, 3\) for a model with 3 outputs\. "
                                  rf"Received: .*\[3\]=3 \(1 of {N} labels outside\)$"),
    "a negative class": (lambda y: np.where(np.arange(N) == 0, -1, y),
                         r"must hold labels in \[0, 3\).* Received: .*\[0\]=-1 "),
    "one too few": (lambda y: y[:-1],
                    r"must hold one label per example, the same number of examples as x\. "
                    rf"Received: {N} examples in x and {N - 1} labels in "),
    "strings": (lambda y: y.astype(str), r"must be a vector of integer labels\. Received: .* "
                                         r"with dtype <U"),
}


@pytest.mark.parametrize("labels", list(BAD_LABELS))
@pytest.mark.parametrize("call", list(_calls()))
def test_every_function_that_takes_labels_refuses_bad_ones_naming_y(model_and_batch, call,
                                                                     labels):
    model, x, y = model_and_batch
    make_bad, message = BAD_LABELS[labels]
    name = "validation labels" if call == "adversarial_train validation" else "y"
    with pytest.raises(ValueError, match=rf"^{name} {message}"):
        _calls()[call](model, x, make_bad(y))


def test_accuracy_of_a_column_of_labels_is_an_error_not_2_point_3(model_and_batch):
    model, x, y = model_and_batch
    assert accuracy(model, x, y) == 1.0
    with pytest.raises(ValueError, match=r"^y must be a vector of integer labels"):
        accuracy(model, x, y[:, None])


def test_whole_float_labels_are_the_integer_labels(model_and_batch):
    model, x, y = model_and_batch
    y_float = y.astype(np.float32)
    assert accuracy(model, x, y_float) == accuracy(model, x, y) == 1.0
    assert fgsm_accuracy(model, x, y_float, 0.0) == 1.0
    assert pgd_accuracy(model, x, y_float, 0.1, steps=2) == pgd_accuracy(model, x, y, 0.1,
                                                                          steps=2)
    np.testing.assert_array_equal(fgsm(model, x, y_float, 0.1), fgsm(model, x, y, 0.1))


def test_check_labels_returns_int32_and_checks_the_range_only_when_known():
    out = check_labels([0.0, 2.0, 7.0], 3)
    assert out.dtype == np.int32 and out.tolist() == [0, 2, 7]
    assert check_labels(np.array([1, 2], np.uint8), 2, 3).tolist() == [1, 2]
    with pytest.raises(ValueError, match=r"^y must hold labels in \[0, 2\*\*31\)\. "):
        check_labels([0, -4], 2)
    with pytest.raises(ValueError, match=r"^y must be a vector of integer labels\. "
                                         r"Received: y with dtype bool$"):
        check_labels([True, False], 2)
    with pytest.raises(ValueError, match=r"^y must be a vector of integer labels\. Received: y="):
        check_labels([[0, 1], [2]], 2)


def test_num_classes_is_none_when_the_model_does_not_say():
    assert num_classes(keras.Sequential([keras.Input((2,)), keras.layers.Dense(5)])) == 5
    assert num_classes(lambda x, training=False: x) is None

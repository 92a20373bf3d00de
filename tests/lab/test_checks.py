import math

import numpy as np
import pytest
import tensorflow as tf

from lab import checks


@pytest.mark.parametrize("value", [1, 7, np.int64(3), np.int32(1)])
def test_positive_int_accepts_python_and_numpy_integers(value):
    checks.check_positive_int("steps", value)


@pytest.mark.parametrize("value", [0, -2, 1.0, True, np.bool_(True), "3", None, np.int64(0)])
def test_positive_int_rejects_the_rest_naming_the_argument(value):
    with pytest.raises(ValueError, match=r"^steps must be an integer >= 1\. Received: steps="):
        checks.check_positive_int("steps", value)


def test_nonnegative_int_accepts_zero_and_rejects_negatives_and_floats():
    checks.check_nonnegative_int("shift", 0)
    checks.check_nonnegative_int("shift", np.int32(2))
    for value in (-1, 1.5, True):
        with pytest.raises(ValueError, match=r"^shift must be an integer >= 0\. Received: "):
            checks.check_nonnegative_int("shift", value)


def test_positive_and_range_checks_name_the_argument_and_the_range():
    checks.check_positive("lr", 1e-3)
    checks.check_positive("decay", 0.0, allow_zero=True)
    with pytest.raises(ValueError, match=r"^lr must be > 0\. Received: lr=0\.0$"):
        checks.check_positive("lr", 0.0)
    with pytest.raises(ValueError, match=r"^lr must be a finite number > 0\. Received: lr=nan$"):
        checks.check_positive("lr", float("nan"))
    with pytest.raises(ValueError, match=r"^eps must be in \[0\.0, 1\.0\]\. Received: eps=1\.5$"):
        checks.check_in_range("eps", 1.5, 0.0, 1.0)
    with pytest.raises(ValueError, match=r"must be in \(0\.0, 1\.0\]"):
        checks.check_in_range("eps", 0.0, 0.0, 1.0, lo_open=True)
    with pytest.raises(ValueError,
                       match=r"^mode must be one of \('a', 'b'\)\. Received: mode='c'$"):
        checks.check_one_of("mode", "c", ("a", "b"))


def test_tensors_are_checked_when_their_value_is_known_and_pass_when_symbolic():
    with pytest.raises(ValueError, match=r"Received: eps=-1\.0"):
        checks.check_in_range("eps", tf.constant(-1.0), 0.0, 1.0)
    checked = []

    @tf.function(input_signature=[tf.TensorSpec([], tf.float32)])
    def graph(eps):
        checks.check_in_range("eps", eps, 0.0, 1.0)  # unknown until run time: passes
        checked.append(True)
        return eps

    assert float(graph(tf.constant(-1.0))) == -1.0 and checked == [True]


NOT_REAL_SCALARS = ["0.3", "abc", None, True, np.bool_(False), 1 + 2j, [0.1, 0.2], (0.1,),
                    np.array([0.1, 0.2]), np.array([0.3]), tf.constant([0.1, 0.2]),
                    tf.constant("0.3"), tf.constant(True)]


@pytest.mark.parametrize("value", NOT_REAL_SCALARS)
def test_positive_and_range_checks_reject_what_is_not_a_real_scalar(value):
    # float() would accept "0.3" and report "abc" without the name; a vector would fail later.
    for check in (lambda: checks.check_positive("eps", value),
                  lambda: checks.check_positive("eps", value, allow_zero=True),
                  lambda: checks.check_in_range("eps", value, 0.0, 1.0)):
        with pytest.raises(ValueError, match=r"^eps must be a real number\. Received: eps="):
            check()


def test_a_rejected_value_is_echoed_like_the_other_errors():
    with pytest.raises(ValueError, match=r"^eps must be a real number\. Received: eps='0\.3'$"):
        checks.check_in_range("eps", "0.3", 0.0, 1.0)
    with pytest.raises(ValueError, match=r"^eps must be a real number\. Received: eps=None$"):
        checks.check_positive("eps", None)
    # A tensor shows its value, not its repr.
    with pytest.raises(ValueError, match=r"Received: eps=array\(\[0\.1, 0\.2\], dtype=float32\)$"):
        checks.check_in_range("eps", tf.constant([0.1, 0.2]), 0.0, 1.0)


@pytest.mark.parametrize("value", [0.3, 1, np.float32(0.3), np.float64(0.3), np.int64(1),
                                   np.array(0.3), np.array(1, np.int32), tf.constant(0.3),
                                   tf.constant(0.3, tf.float16), tf.constant(1, tf.int32),
                                   tf.constant(0.3, tf.float64)])
def test_real_scalars_of_every_kind_pass_and_are_range_checked(value):
    checks.check_positive("eps", value)
    checks.check_in_range("eps", value, 0.0, 1.0)
    with pytest.raises(ValueError, match=r"^eps must be in \[0\.5, 0\.75\]\. Received: eps="):
        checks.check_in_range("eps", value, 0.5, 0.75)


def test_a_keras_variable_is_checked_by_its_value():
    import keras

    checks.check_in_range("eps", keras.Variable(0.3), 0.0, 1.0)
    with pytest.raises(ValueError, match=r"^eps must be in \[0\.0, 0\.2\]\. Received: eps="):
        checks.check_in_range("eps", keras.Variable(0.3), 0.0, 0.2)


def test_seeds_must_be_distinct_non_negative_integers():
    from lab.checks import check_seeds

    check_seeds("seeds", (0, 1, 4))
    for bad in ((), (0, 0), (-1,), (1.5,), (True,)):
        with pytest.raises(ValueError, match="seeds must be one or more distinct non-negative"):
            check_seeds("seeds", bad)


NON_FINITE = [math.inf, -math.inf, math.nan, np.float32(np.inf), np.array(np.nan),
              tf.constant(np.inf), tf.constant(-np.inf, tf.float64)]


@pytest.mark.parametrize("value", NON_FINITE)
def test_number_checks_refuse_nan_and_infinities_saying_finite(value):
    # inf passed check_positive and any range with an infinite bound: a learning rate of inf
    # trained to NaN losses.
    for check, rule in ((lambda: checks.check_positive("lr", value), "> 0"),
                        (lambda: checks.check_positive("lr", value, allow_zero=True), ">= 0"),
                        (lambda: checks.check_in_range("lr", value, 0.0, math.inf),
                         r"in \[0\.0, inf\]"),
                        (lambda: checks.check_in_range("lr", value, -math.inf, math.inf,
                                                       hi_open=True), r"in \[-inf, inf\)"),
                        (lambda: checks.check_finite("lr", value), "")):
        with pytest.raises(ValueError,
                           match=rf"^lr must be a finite number{' ' if rule else ''}{rule}\. "
                                 rf"Received: lr=.*(inf|nan)"):
            check()


def test_a_finite_value_out_of_range_keeps_the_plain_rule():
    with pytest.raises(ValueError, match=r"^lr must be > 0\. Received: lr=-1\.0$"):
        checks.check_positive("lr", -1.0)
    with pytest.raises(ValueError, match=r"^x must be a real number\. Received: x='a'$"):
        checks.check_finite("x", "a")
    checks.check_finite("x", -3.5)


def test_allow_inf_lets_an_infinite_value_through_where_the_interval_holds_it_never_nan():
    checks.check_in_range("lo", -math.inf, -math.inf, math.inf, allow_inf=True)
    checks.check_in_range("hi", math.inf, 0.0, math.inf, allow_inf=True)
    with pytest.raises(ValueError, match=r"^hi must be in \[0\.0, inf\)\. Received: hi=inf$"):
        checks.check_in_range("hi", math.inf, 0.0, math.inf, hi_open=True, allow_inf=True)
    with pytest.raises(ValueError, match=r"^lo must be in \[-inf, inf\]\. Received: lo=nan$"):
        checks.check_in_range("lo", math.nan, -math.inf, math.inf, allow_inf=True)

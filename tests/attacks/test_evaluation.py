import keras
import numpy as np
import pytest

from attacks import evaluation
from attacks.evaluation import accuracy, robustness_curve, sanity_warnings


def _binary_linear_model(rng, dims=6):
    """Logits ``[0, w.x + b]``: class 1 iff ``w.x + b > 0``. For such a model the
    L-infinity worst case is known in closed form: an example survives radius ``eps`` iff it
    is classified correctly with margin ``|w.x + b| > eps * ||w||_1`` (when no clipping binds),
    and FGSM finds that worst case in one step."""
    w = rng.normal(size=dims).astype(np.float32)
    b = np.float32(-0.5 * w.sum())  # the boundary passes through the centre of the cube
    layer = keras.layers.Dense(2)
    model = keras.Sequential([keras.Input((dims,)), layer])
    layer.set_weights([np.stack([np.zeros(dims, np.float32), w], axis=1),
                       np.array([0.0, b], np.float32)])
    return model, w, b


def test_accuracy_counts_matching_predictions(rng):
    model, w, b = _binary_linear_model(rng)
    x = rng.uniform(0, 1, size=(1003, 6)).astype(np.float32)
    y = rng.integers(0, 2, size=1003)
    expected = np.mean((x @ w + b > 0).astype(int) == y)
    assert accuracy(model, x, y, batch_size=100) == pytest.approx(expected, abs=1e-12)


def test_robustness_curve_of_a_linear_model_is_the_closed_form(rng):
    model, w, b = _binary_linear_model(rng)
    # Inputs in [0.35, 0.65] and eps <= 0.3: the [0, 1] clip never binds.
    x = rng.uniform(0.35, 0.65, size=(800, 6)).astype(np.float32)
    margin = x @ w + b
    y = (margin > 0).astype(np.int32)
    y[:100] = 1 - y[:100]  # some examples misclassified from the start
    eps_values = [0.0, 0.02, 0.05, 0.1, 0.3]
    curve = robustness_curve(model, (x, y), eps_values, batch_size=256, seed=1)
    correct = (margin > 0).astype(np.int32) == y
    for i, eps in enumerate(eps_values):
        expected = np.mean(correct & (np.abs(margin) > eps * np.abs(w).sum()))
        # Examples within float32 rounding of the margin may go either way.
        for attack in ("fgsm", "pgd", "worst_case"):
            assert curve.accuracy[attack][i] == pytest.approx(expected, abs=2 / len(x)), (
                attack, eps)
    assert curve.at("pgd", 0.0) == accuracy(model, x, y)
    assert curve.examples == 800 and curve.warnings == []


def test_rising_accuracy_is_flagged_beyond_one_example_of_noise():
    eps = [0.0, 0.1, 0.2]
    assert sanity_warnings(eps, {"pgd": [0.9, 0.5, 0.501]}, examples=1000) == []
    warnings = sanity_warnings(eps, {"pgd": [0.9, 0.5, 0.6]}, examples=1000)
    assert len(warnings) == 1 and "rises with eps" in warnings[0] and "eps=0.2" in warnings[0]


def test_pgd_doing_worse_than_fgsm_is_flagged():
    warnings = sanity_warnings([0.0, 0.3], {"fgsm": [0.99, 0.5], "pgd": [0.99, 0.7]}, 1000)
    assert len(warnings) == 1 and "PGD does worse than FGSM at eps=0.3" in warnings[0]


def test_fgsm_pgd_gap_is_flagged_only_where_robustness_is_claimed():
    eps = [0.0, 0.1, 0.3, 0.4]
    accuracies = {"fgsm": [0.99, 0.6, 0.7, 0.6], "pgd": [0.99, 0.3, 0.1, 0.0]}
    every = sanity_warnings(eps, accuracies, 1000)
    assert [w.split(":")[0] for w in every] == [
        "fgsm accuracy rises with eps", "large FGSM-PGD gap at eps=0.1",
        "large FGSM-PGD gap at eps=0.3", "large FGSM-PGD gap at eps=0.4"]
    trained = sanity_warnings(eps, accuracies, 1000, claimed_eps=0.3)
    assert [w.split(":")[0] for w in trained] == [
        "fgsm accuracy rises with eps", "large FGSM-PGD gap at eps=0.1",
        "large FGSM-PGD gap at eps=0.3"]
    # An undefended model claims nothing: PGD beating FGSM by far is expected, not masking.
    undefended = sanity_warnings(eps, accuracies, 1000, claimed_eps=0.0)
    assert [w.split(":")[0] for w in undefended] == ["fgsm accuracy rises with eps"]
    small_gap = {"fgsm": [0.99, 0.6], "pgd": [0.99, 0.45]}
    assert sanity_warnings([0.0, 0.3], small_gap, 1000, claimed_eps=0.3) == []


def test_robustness_curve_rejects_bad_arguments(rng):
    model, _, _ = _binary_linear_model(rng)
    data = (np.full((4, 6), 0.5, np.float32), np.zeros(4, np.int32))
    with pytest.raises(ValueError, match="eps_values must be non-empty and increasing"):
        robustness_curve(model, data, [0.1, 0.1])
    with pytest.raises(ValueError, match="eps_values must be non-empty and increasing"):
        robustness_curve(model, data, [])
    with pytest.raises(ValueError, match="attacks must be names from"):
        robustness_curve(model, data, [0.1], attacks=("cw",))
    with pytest.raises(ValueError, match=r"pgd_step_size must be > 0\. Received: pgd_step_size=0"):
        robustness_curve(model, data, [0.1], pgd_step_size=0)
    with pytest.raises(ValueError, match=r"batch_size must be an integer >= 1"):
        robustness_curve(model, data, [0.1], batch_size=0)
    with pytest.raises(ValueError, match=r"claimed_eps must be >= 0"):
        robustness_curve(model, data, [0.1], claimed_eps=-0.1)
    with pytest.raises(ValueError, match=r"worst_case_options takes \('attacks', 'steps', "
                                         r"'targets', 'targeted_steps'\)\. Received: \['norm'\]"):
        robustness_curve(model, data, [0.1], worst_case_options={"norm": "l2"})
    with pytest.raises(ValueError, match=r"examples must be an integer >= 1"):
        sanity_warnings([0.0], {"pgd": [1.0]}, examples=0)


def test_robustness_curve_runs_the_worst_case_with_the_budget_it_is_given(rng, monkeypatch):
    model, w, b = _binary_linear_model(rng)
    x = rng.uniform(0.35, 0.65, size=(40, 6)).astype(np.float32)
    y = (x @ w + b > 0).astype(np.int32)
    budgets = []
    original = evaluation.worst_case

    def recorded(*args, **kwargs):
        budgets.append((kwargs["attacks"], kwargs["steps"]))
        return original(*args, **kwargs)

    monkeypatch.setattr(evaluation, "worst_case", recorded)
    options = {"attacks": ("apgd_ce", "pgd"), "steps": 7}
    curve = robustness_curve(model, (x, y), [0.0, 0.05, 0.1], attacks=("worst_case",),
                             worst_case_options=options)
    assert budgets == [(("apgd_ce", "pgd"), 7)] * 2  # each eps > 0, one batch each
    monkeypatch.undo()
    expected = [evaluation.worst_case_accuracy(model, x, y, eps, **options)
                for eps in (0.0, 0.05, 0.1)]
    assert curve.accuracy["worst_case"] == expected


def test_pgd_accuracy_at_eps_zero_is_the_clean_accuracy_and_seeds_each_batch(rng):
    from attacks.evaluation import attack_accuracy, pgd_accuracy

    model, w, b = _binary_linear_model(rng)
    x = rng.uniform(0.35, 0.65, size=(50, 6)).astype(np.float32)
    y = (x @ w + b > 0).astype(np.int32)
    assert pgd_accuracy(model, x, y, 0.0) == accuracy(model, x, y) == 1.0
    starts = []
    attack_accuracy(model, x, y, lambda xb, yb, start: starts.append(start) or xb, batch_size=20)
    assert starts == [0, 20, 40]


def _empty_batch_calls():
    from attacks.evaluation import attack_accuracy, fgsm_accuracy, pgd_accuracy

    return {
        "accuracy": lambda m, x, y: accuracy(m, x, y),
        "attack_accuracy": lambda m, x, y: attack_accuracy(m, x, y, lambda xb, yb, start: xb),
        "fgsm_accuracy": lambda m, x, y: fgsm_accuracy(m, x, y, 0.1),
        "fgsm_accuracy at eps 0": lambda m, x, y: fgsm_accuracy(m, x, y, 0.0),
        "pgd_accuracy": lambda m, x, y: pgd_accuracy(m, x, y, 0.1, steps=2),
        "robustness_curve": lambda m, x, y: robustness_curve(m, (x, y), [0.1, 0.2]),
        "robustness_curve without attacks": lambda m, x, y: robustness_curve(m, (x, y), [0.1],
                                                                             attacks=()),
    }


@pytest.mark.parametrize("name", list(_empty_batch_calls()))
def test_an_empty_batch_is_a_clear_error_not_a_division_by_zero(rng, name):
    model, _, _ = _binary_linear_model(rng)
    x, y = np.zeros((0, 6), np.float32), np.zeros(0, np.int32)
    with pytest.raises(ValueError, match=r"^x must be a non-empty batch\. Received: an empty "
                                         r"batch, x with shape \(0, 6\)$"):
        _empty_batch_calls()[name](model, x, y)


@pytest.mark.parametrize("eps", ["0.1", None, [0.1, 0.2], np.array([0.0, 0.1]), True])
def test_accuracy_under_attack_rejects_an_eps_that_is_not_a_real_number(rng, eps):
    from attacks.evaluation import fgsm_accuracy, pgd_accuracy

    model, _, _ = _binary_linear_model(rng)
    x, y = np.full((4, 6), 0.5, np.float32), np.zeros(4, np.int32)
    for call in (fgsm_accuracy, pgd_accuracy):
        with pytest.raises(ValueError, match=r"^eps must be a real number\. Received: eps="):
            call(model, x, y, eps)


def test_robustness_curve_checks_every_eps_before_measuring_any(rng):
    model, _, _ = _binary_linear_model(rng)
    data = (np.full((4, 6), 0.5, np.float32), np.zeros(4, np.int32))
    with pytest.raises(ValueError, match=r"^eps_values\[1\] must be a real number\. Received: "
                                         r"eps_values\[1\]='0\.1'$"):
        robustness_curve(model, data, [0.0, "0.1"])
    with pytest.raises(ValueError, match=r"^eps_values\[2\] must be in \[0\.0, 1\.0\]\. "
                                         r"Received: eps_values\[2\]=1\.5$"):
        robustness_curve(model, data, [0.0, 0.1, 1.5])


def test_pgd_accuracy_checks_steps_before_dividing_by_them(cnn_batch):
    model, x, y = cnn_batch
    with pytest.raises(ValueError, match="steps must be an integer >= 1. Received: steps=0"):
        evaluation.pgd_accuracy(model, x, y, 0.1, steps=0)


def _ten_class_linear_model(rng, dims=12):
    """Logits ``x @ w + b`` over 10 classes; returns the model, w and b."""
    w, b = rng.normal(size=(dims, 10)).astype(np.float32), rng.normal(size=10).astype(np.float32)
    layer = keras.layers.Dense(10)
    model = keras.Sequential([keras.Input((dims,)), layer])
    layer.set_weights([w, b])
    return model, w, b


@pytest.mark.parametrize("norm, dual", [("linf", 1), ("l2", 2)])
def test_worst_case_accuracy_of_a_linear_model_is_the_closed_form(rng, norm, dual):
    # An example survives iff every class boundary is farther than eps: margin_j over the
    # dual norm of w_y - w_j (no box: clip=None).
    model, w, b = _ten_class_linear_model(rng)
    x = rng.normal(size=(600, 12)).astype(np.float32)
    y = np.argmax(x @ w + b, axis=1).astype(np.int32)
    y[:60] = (y[:60] + 1) % 10  # some misclassified from the start
    logits = x @ w + b
    margins = logits[np.arange(len(x)), y][:, None] - logits
    gaps = np.linalg.norm(w[:, y].T[:, None, :] - w.T[None, :, :], ord=dual, axis=-1)
    ratio = margins / np.maximum(gaps, 1e-30)
    ratio[np.arange(len(x)), y] = np.inf  # the label itself is no boundary
    radius = np.min(ratio, axis=1)
    eps = float(np.median(radius[radius > 0]))
    clear = np.abs(radius - eps) > 0.05 * eps
    attacked = evaluation.worst_case(model, x, y, eps, norm=norm, clip=None, seed=2).numpy()
    survived = np.argmax(attacked @ w + b, axis=1) == y
    np.testing.assert_array_equal(survived[clear], (radius > eps)[clear])
    # The accuracy function batches the same attack.
    accuracy_found = evaluation.worst_case_accuracy(model, x, y, eps, norm=norm, clip=None,
                                                    batch_size=200)
    assert accuracy_found == pytest.approx(np.mean(radius > eps), abs=np.mean(~clear))


def test_worst_case_of_one_attack_is_that_attack(cnn_batch):
    from attacks.pgd import default_step_size, pgd

    model, x, y = cnn_batch
    # Examples misclassified to begin with are left alone; the others get exactly PGD.
    correct = np.argmax(model(x), 1) == y
    assert 0 < correct.sum() < len(x)
    alone = pgd(model, x[correct], y[correct], 0.01, steps=6,
                step_size=default_step_size(0.01, 6), seed=3)
    ensemble = evaluation.worst_case(model, x, y, 0.01, attacks=("pgd",), steps=6,
                                     seed=3).numpy()
    np.testing.assert_array_equal(ensemble[correct], alone)
    np.testing.assert_array_equal(ensemble[~correct], x[~correct])


def test_later_attacks_only_see_the_examples_earlier_ones_left(cnn_batch, monkeypatch):
    model, x, y = cnn_batch
    seen = []
    original = evaluation.apgd_targeted

    def spy(model, xs, ys, *args, **kwargs):
        seen.append(len(xs))
        return original(model, xs, ys, *args, **kwargs)

    monkeypatch.setattr(evaluation, "apgd_targeted", spy)
    correct = np.argmax(model(x), 1) == y
    first = evaluation.apgd(model, x[correct], y[correct], 0.004, steps=3, seed=0)
    left = int(np.sum(np.argmax(model(first), 1) == y[correct]))
    assert 0 < left < len(x)  # the test means something: some fooled, some not
    evaluation.worst_case(model, x, y, 0.004, steps=3, targeted_steps=2, seed=0)
    assert seen == [left]


def test_worst_case_rejects_unknown_attacks_and_drops_dlr_on_two_classes(rng):
    model, w, b = _binary_linear_model(rng)
    x = rng.uniform(0.3, 0.7, size=(50, 6)).astype(np.float32)
    with pytest.raises(ValueError, match="attacks must be a non-empty sequence of names"):
        evaluation.worst_case(model, x, None, 0.1, attacks=("square",))
    with pytest.raises(ValueError, match="attacks must be a non-empty sequence of names"):
        evaluation.worst_case(model, x, None, 0.1, attacks="pgd")
    # Two classes: APGD-T (targeted DLR needs 4) is left out, APGD-CE finds the closed form.
    survived = np.argmax(model(evaluation.worst_case(model, x, None, 0.05, seed=0)), 1) == (
        x @ w + b > 0)
    np.testing.assert_array_equal(survived, np.abs(x @ w + b) > 0.05 * np.abs(w).sum())


def test_a_worst_case_above_pgd_is_flagged():
    warnings = sanity_warnings([0.0, 0.3], {"pgd": [0.99, 0.5], "worst_case": [0.99, 0.6]},
                               1000)
    assert len(warnings) == 1 and "the worst case does worse than PGD at eps=0.3" in warnings[0]
    assert sanity_warnings([0.0, 0.3], {"pgd": [0.99, 0.5], "worst_case": [0.99, 0.45]},
                           1000) == []

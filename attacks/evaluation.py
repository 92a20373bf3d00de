"""Robust accuracy under attack, with the sanity checks that catch gradient masking.

``robustness_curve`` measures accuracy under each attack at each eps. Every evaluation also
runs the checks of Athalye et al. 2018 and Carlini et al. 2019 that a correct white-box
evaluation must pass; a failure does not raise but is listed in ``warnings`` (and written
into the experiment's results), because it means the numbers overstate robustness:

- accuracy must not rise with eps (a larger ball contains the smaller one, so a working
  attack can only do better);
- PGD must not do worse than FGSM at the same eps (it starts with the same step and keeps
  going);
- the worst case over the APGD attacks (``worst_case``) must not do worse than PGD: APGD
  is the stronger attack, so a higher accuracy under it means one of the two is broken;
- a large FGSM-PGD gap where the model is claimed robust (up to its training eps) is
  reported: the signature of gradient masking, as after catastrophic overfitting of
  single-step adversarial training (Wong et al. 2020). Outside that range a gap is expected
  (an undefended model, or a defended one beyond its training eps, simply falls faster to the
  multi-step attack) and is not reported.

References:
  Athalye, Carlini, Wagner. Obfuscated gradients give a false sense of security. ICML 2018.
  arXiv:1802.00420.
  Carlini et al. On evaluating adversarial robustness. 2019. arXiv:1902.06705.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow as tf

from attacks.apgd import apgd, apgd_targeted
from attacks.fgsm import fgsm
from attacks.pgd import default_step_size, pgd
from attacks.validation import check_eps, check_labels, check_nonempty_batch, num_classes
from lab.checks import check_positive, check_positive_int
from lab.compile_cache import cached_function

ATTACKS = ("fgsm", "pgd", "worst_case")
# The attacks of ``worst_case``, in the order they run (AutoAttack's gradient attacks).
WORST_CASE_ATTACKS = ("apgd_ce", "apgd_t", "apgd_dlr", "pgd")
# The options of ``worst_case`` that set its attacks and their budget.
WORST_CASE_BUDGET = ("attacks", "steps", "targets", "targeted_steps")


def _checked_labels(model, x, y):
    """``y`` checked against ``x`` and ``model`` (``attacks.validation.check_labels``), once
    per call on the host, before any batch runs."""
    check_nonempty_batch(x)
    return check_labels(y, len(x), num_classes(model))


def accuracy(model, x, y, batch_size: int = 500) -> float:
    """Fraction of ``x`` that ``model`` (called with ``training=False``) labels ``y`` (one
    label per example, see ``attacks.validation.check_labels``)."""
    check_positive_int("batch_size", batch_size)
    y = _checked_labels(model, x, y)
    correct = sum(_count_correct(model, x[start:start + batch_size], y[start:start + batch_size])
                  for start in range(0, len(x), batch_size))
    return correct / len(x)


def attack_accuracy(model, x, y, attack, *, batch_size: int = 500) -> float:
    """Accuracy of ``model`` on adversarial examples made batch by batch.

    Args:
      model: the classifier under attack.
      x, y: NumPy images and integer labels (``attacks.validation.check_labels``).
      attack: ``attack(x_batch, y_batch, start) -> adversarial batch``; ``start`` is the
        batch's offset in ``x`` (to seed each batch differently); ``y_batch`` is int32.
      batch_size: examples per attack call.
    """
    check_positive_int("batch_size", batch_size)
    y = _checked_labels(model, x, y)
    correct = 0
    for start in range(0, len(x), batch_size):
        xb, yb = x[start:start + batch_size], y[start:start + batch_size]
        correct += _count_correct(model, attack(xb, yb, start), yb)
    return correct / len(x)


def fgsm_accuracy(model, x, y, eps, *, norm="linf", clip=(0.0, 1.0), eps_scale=None,
                  batch_size: int = 500) -> float:
    """Accuracy under FGSM with true labels (eps 0: clean accuracy); ``norm``, ``clip`` and
    ``eps_scale`` describe the threat model and input domain as in ``attacks.fgsm.fgsm``."""
    # Before eps == 0, which a vector gets wrong.
    check_eps(eps, clip, eps_scale=eps_scale, norm=norm)
    if eps == 0:
        return accuracy(model, x, y, batch_size)
    return attack_accuracy(model, x, y, lambda xb, yb, start: fgsm(
        model, xb, yb, eps, norm=norm, clip=clip, eps_scale=eps_scale), batch_size=batch_size)


def pgd_accuracy(model, x, y, eps, *, norm="linf", steps: int = 40,
                 step_size: float | None = None, restarts: int = 1, seed: int = 0,
                 clip=(0.0, 1.0), eps_scale=None, batch_size: int = 500) -> float:
    """Accuracy under PGD with true labels, random starts seeded ``seed + offset`` per batch;
    ``step_size`` defaults to ``attacks.pgd.default_step_size(eps, steps)`` (eps 0: clean
    accuracy); ``norm``, ``clip`` and ``eps_scale`` as in ``attacks.pgd.pgd``."""
    # Before eps == 0 and default_step_size.
    check_eps(eps, clip, eps_scale=eps_scale, norm=norm)
    check_positive_int("steps", steps)  # at eps 0 too, where no attack runs
    if eps == 0:
        return accuracy(model, x, y, batch_size)
    step_size = default_step_size(eps, steps) if step_size is None else step_size
    return attack_accuracy(
        model, x, y, lambda xb, yb, start: pgd(model, xb, yb, eps, norm=norm, steps=steps,
                                               step_size=step_size, restarts=restarts,
                                               clip=clip, eps_scale=eps_scale,
                                               seed=seed + start), batch_size=batch_size)


def worst_case(model, x, y, eps, *, attacks=("apgd_ce", "apgd_t"), norm="linf", steps=100,
               targets=3, targeted_steps=40, clip=(0.0, 1.0), eps_scale=None, seed=0):
    """Per example, the first of ``attacks`` that fools ``model`` (Croce & Hein 2020's
    worst case over an ensemble): each attack runs only on the examples every earlier one
    left correctly classified, so the ensemble costs little more than its first attack on a
    model that few examples resist, and about the sum of its attacks on a robust one.

    Args:
      model: a Keras classifier returning logits.
      x, y: the batch and its true labels (``y=None``: the model's predictions).
      eps: the radius (``attacks.apgd.apgd``).
      attacks: names from ``WORST_CASE_ATTACKS``: ``"apgd_ce"`` (APGD on the cross-entropy,
        ``steps`` iterations), ``"apgd_t"`` (APGD-T on the targeted DLR loss, ``targets``
        classes of ``targeted_steps`` iterations), ``"apgd_dlr"`` (untargeted DLR, ``steps``),
        ``"pgd"`` (PGD, ``steps`` of ``attacks.pgd.default_step_size``). The DLR attacks are
        left out for a model with too few classes for them (``apgd_t`` below 4,
        ``apgd_dlr`` below 3), where the cross-entropy is a monotone function of the margin.
        The default suite costs 1.7 PGD-40x3 evaluations on the committed PGD-trained model
        (``benchmarks/bench_worst_case.py``).
      norm: ``"linf"`` or ``"l2"``.
      steps, targets, targeted_steps: the attacks' budgets, as above.
      clip, eps_scale: the input domain, as in ``attacks.pgd.pgd``.
      seed: seed of every attack's random starts.

    Returns:
      The adversarial batch, shaped like ``x``: per example the first attack's fooling point,
      else the last attack's point; an example misclassified to begin with is left as it is.

    Raises:
      ValueError: as the attacks, and for ``attacks`` empty or with an unknown name.

    References:
      Croce, Hein. Reliable evaluation of adversarial robustness with an ensemble of diverse
      parameter-free attacks. ICML 2020. arXiv:2003.01690.
    """
    if not attacks or isinstance(attacks, str) or any(a not in WORST_CASE_ATTACKS
                                                      for a in attacks):
        raise ValueError(f"attacks must be a non-empty sequence of names from "
                         f"{WORST_CASE_ATTACKS}. Received: attacks={attacks!r}")
    check_positive_int("targeted_steps", targeted_steps)
    domain = dict(norm=norm, clip=clip, eps_scale=eps_scale, seed=seed)
    classes = num_classes(model)
    if classes is not None and classes < 4:  # DLR needs 3 sorted logits, targeted DLR 4
        attacks = [a for a in attacks if a != "apgd_t" and (a != "apgd_dlr" or classes >= 3)]
    run = {
        "apgd_ce": lambda xs, ys: apgd(model, xs, ys, eps, loss="ce", steps=steps, **domain),
        "apgd_dlr": lambda xs, ys: apgd(model, xs, ys, eps, loss="dlr", steps=steps, **domain),
        "apgd_t": lambda xs, ys: apgd_targeted(model, xs, ys, eps, targets=targets,
                                               steps=targeted_steps, **domain),
        "pgd": lambda xs, ys: pgd(model, xs, ys, eps, steps=steps,
                                  step_size=default_step_size(eps, steps), **domain),
    }
    x = np.asarray(x)
    y = _checked_labels(model, x, y) if y is not None else np.argmax(
        _compiled_predict(model)(tf.convert_to_tensor(x)), axis=-1).astype(np.int32)
    result = x.copy()
    # Examples the model already gets wrong need no attack.
    left = np.flatnonzero(np.argmax(_compiled_predict(model)(tf.convert_to_tensor(x)), -1) == y)
    for attack in attacks:
        if left.size == 0:
            break
        found = run[attack](x[left], y[left]).numpy()
        result[left] = found
        correct = np.argmax(_compiled_predict(model)(tf.convert_to_tensor(found)), -1) == y[left]
        left = left[correct]
    return tf.constant(result)


def worst_case_accuracy(model, x, y, eps, *, batch_size: int = 500, **options) -> float:
    """Accuracy under ``worst_case`` with true labels (eps 0: clean accuracy); ``options``
    as in ``worst_case``."""
    check_eps(eps, options.get("clip", (0.0, 1.0)), eps_scale=options.get("eps_scale"),
              norm=options.get("norm", "linf"))
    if eps == 0:
        return accuracy(model, x, y, batch_size)
    seed = options.pop("seed", 0)
    return attack_accuracy(model, x, y, lambda xb, yb, start: worst_case(
        model, xb, yb, eps, seed=seed + start, **options), batch_size=batch_size)


def _count_correct(model, x, y) -> int:
    """How many of the batch ``x`` (NumPy or a tensor, left where it is) ``model`` labels
    ``y``."""
    logits = _compiled_predict(model)(tf.convert_to_tensor(x))
    return int(np.sum(np.argmax(logits, axis=-1) == np.asarray(y)))


def _compiled_predict(model):
    # Named functions, not a lambda inside a lambda: autograph finds a lambda's source by its
    # line and can convert the wrong one of two on the same line.
    def build():
        def predict(batch):
            return model(batch, training=False)
        return tf.function(predict, reduce_retracing=True)

    return cached_function(model, "predict", build)


@dataclasses.dataclass
class RobustnessCurve:
    """Accuracy per attack and eps; ``warnings`` lists failed sanity checks."""
    eps_values: list[float]
    accuracy: dict[str, list[float]]
    examples: int
    warnings: list[str]

    def at(self, attack: str, eps: float) -> float:
        return self.accuracy[attack][self.eps_values.index(eps)]


def sanity_warnings(eps_values, accuracies: dict, examples: int, *, gap: float = 0.2,
                    claimed_eps: float | None = None) -> list:
    """The checks above, on measured accuracies.

    Args:
      eps_values: the radii, increasing.
      accuracies: ``{attack: [accuracy per eps]}``.
      examples: how many examples each accuracy was measured on (differences of one example
        or less are noise, not failures).
      gap: FGSM minus PGD accuracy reported as suspicious.
      claimed_eps: the radius up to which the model is claimed robust (its training eps; 0
        for an undefended model); the gap is checked only up to it. ``None`` checks every eps.

    Returns:
      A list of messages, empty when every check passes.
    """
    check_positive_int("examples", examples)
    if claimed_eps is not None:
        check_positive("claimed_eps", claimed_eps, allow_zero=True)
    tolerance = 1.0 / examples + 1e-9
    warnings = []
    for attack, values in accuracies.items():
        for i in range(1, len(values)):
            if values[i] > values[i - 1] + tolerance:
                warnings.append(
                    f"{attack} accuracy rises with eps: {values[i - 1]:.4f} at eps="
                    f"{eps_values[i - 1]:g} to {values[i]:.4f} at eps={eps_values[i]:g} "
                    "(the attack is failing: suspect gradient masking)")
    if "worst_case" in accuracies and "pgd" in accuracies:
        for eps, w, p in zip(eps_values, accuracies["worst_case"], accuracies["pgd"]):
            if w > p + tolerance:
                warnings.append(f"the worst case does worse than PGD at eps={eps:g}: accuracy "
                                f"{w:.4f} under the APGD ensemble vs {p:.4f} under PGD (an "
                                "attack is misconfigured or gradients are masked)")
    if "fgsm" in accuracies and "pgd" in accuracies:
        for eps, f, p in zip(eps_values, accuracies["fgsm"], accuracies["pgd"]):
            if p > f + tolerance:
                warnings.append(f"PGD does worse than FGSM at eps={eps:g}: accuracy {p:.4f} "
                                f"under PGD vs {f:.4f} under FGSM (PGD is misconfigured or "
                                "gradients are masked)")
            elif f - p > gap and (claimed_eps is None or eps <= claimed_eps + 1e-9):
                warnings.append(f"large FGSM-PGD gap at eps={eps:g}: {f:.4f} under FGSM vs "
                                f"{p:.4f} under PGD (gradient masking, e.g. catastrophic "
                                "overfitting of single-step training)")
    return warnings


def robustness_curve(model, data, eps_values, attacks=ATTACKS, *, norm: str = "linf",
                     pgd_steps: int = 40, pgd_step_size: float | None = None,
                     pgd_restarts: int = 1, batch_size: int = 500, seed: int = 0,
                     claimed_eps: float | None = None, clip=(0.0, 1.0),
                     eps_scale=None, worst_case_options=None) -> RobustnessCurve:
    """Accuracy of ``model`` on ``data`` under each attack at each eps.

    Args:
      model: a Keras classifier returning logits.
      data: ``(x, y)`` NumPy arrays (images in [0, 1], integer labels: see
        ``attacks.validation.check_labels``).
      eps_values: increasing radii; 0 gives the clean accuracy.
      attacks: names from ``ATTACKS``: ``"fgsm"``, ``"pgd"``, ``"worst_case"`` (``worst_case``
        with its defaults: APGD-CE, then APGD-T on what is left).
      norm: the threat model, ``"linf"`` or ``"l2"``.
      pgd_steps: PGD iterations (40: Madry et al.'s MNIST evaluation).
      pgd_step_size: PGD step; default ``attacks.pgd.default_step_size(eps, pgd_steps)``
        (``2.5 * eps / pgd_steps``), so the steps can cross the ball.
      pgd_restarts: random restarts per example; the strongest is kept.
      batch_size: examples per attack call.
      seed: seed of PGD's random starts.
      claimed_eps: the radius the model was trained to resist (0 for an undefended model);
        the FGSM-PGD gap check applies up to it (see ``sanity_warnings``).
      clip: the valid input range, numbers or per-feature arrays, or ``None`` (unbounded).
      eps_scale: optional per-feature scale; every eps is then in its units.
      worst_case_options: keyword arguments of ``worst_case`` (``attacks``, ``steps``,
        ``targets``, ``targeted_steps``), else its defaults.

    Returns:
      A ``RobustnessCurve``.
    """
    x, y = data
    y = _checked_labels(model, x, y)  # before any attack runs
    for i, eps in enumerate(eps_values):
        check_eps(eps, clip, name=f"eps_values[{i}]", eps_scale=eps_scale, norm=norm)
    eps_values = [float(e) for e in eps_values]
    if not eps_values or any(b <= a for a, b in zip(eps_values, eps_values[1:])):
        raise ValueError(f"eps_values must be non-empty and increasing. "
                         f"Received: eps_values={eps_values}")
    for attack in attacks:
        if attack not in ATTACKS:
            raise ValueError(f"attacks must be names from {ATTACKS}. Received: {attack!r}")
    if pgd_step_size is not None:
        check_positive("pgd_step_size", pgd_step_size)
    check_positive_int("batch_size", batch_size)
    if claimed_eps is not None:
        check_positive("claimed_eps", claimed_eps, allow_zero=True)
    unknown = set(worst_case_options or {}) - set(WORST_CASE_BUDGET)
    if unknown:
        raise ValueError(f"worst_case_options takes {WORST_CASE_BUDGET}. Received: "
                         f"{sorted(unknown)}")
    # Every attack's value at eps 0, measured once.
    clean = accuracy(model, x, y, batch_size) if 0.0 in eps_values else None
    domain = dict(norm=norm, clip=clip, eps_scale=eps_scale, batch_size=batch_size)
    measure = {
        "fgsm": lambda eps: fgsm_accuracy(model, x, y, eps, **domain),
        "pgd": lambda eps: pgd_accuracy(model, x, y, eps, steps=pgd_steps,
                                        step_size=pgd_step_size, restarts=pgd_restarts,
                                        seed=seed, **domain),
        "worst_case": lambda eps: worst_case_accuracy(model, x, y, eps, seed=seed, **domain,
                                                      **(worst_case_options or {})),
    }
    accuracies = {attack: [clean if eps == 0 else measure[attack](eps) for eps in eps_values]
                  for attack in attacks}
    return RobustnessCurve(eps_values, accuracies, len(x),
                           sanity_warnings(eps_values, accuracies, len(x),
                                           claimed_eps=claimed_eps))

"""Auto-PGD (APGD) and its targeted variant on the DLR loss (APGD-T): the gradient attacks of
AutoAttack's standard suite (Croce & Hein 2020), L-infinity or L2.

APGD is PGD without a step size to tune. Each example has its own step, starting at
``2 eps``; a step of the iterate ``x_k`` is a projected gradient step followed by momentum,

    z       = P(x_k + eta * d(grad L(x_k)))                  (d: sign, or grad / ||grad||_2)
    x_{k+1} = P(x_k + alpha (z - x_k) + (1 - alpha)(x_k - x_{k-1})),   alpha = 0.75

and at checkpoints spaced ever closer (after 22% of the iterations, then shorter by 3% of them
each time, never under 6%) an example's step is halved, and it restarts from its best point
so far, when the loss went up in fewer than ``rho = 75%`` of the iterations since the last
checkpoint, or when neither the step was halved nor the best loss improved at the last one.

Losses (``LOSSES``): the cross-entropy, and the difference of logits ratio (DLR), invariant to
shifting and rescaling the logits, so that a model whose softmax saturates still gives a
useful direction:

    DLR(z, y)       = -(z_y - max_{i != y} z_i) / (z_pi1 - z_pi3)
    DLR_T(z, y, t)  = -(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2)

with ``z_pi1 >= z_pi2 >= ...`` the sorted logits. APGD-T runs the targeted DLR once per target
class, the classes the clean model ranks second, third, ... (``targets`` of them), each time
only on the examples no earlier run has fooled; success always means "misclassified".

Every run of one restart or target is one compiled call (an in-graph loop over the
iterations, traced once per model and option set, for any batch, eps and iteration count).

References:
  Croce, Hein. Reliable evaluation of adversarial robustness with an ensemble of diverse
  parameter-free attacks. ICML 2020. arXiv:2003.01690.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from attacks.fgsm import cross_entropy
from attacks.validation import (
    as_scalar,
    attack_signature,
    check_attack_arguments,
    labels_or_predictions,
    new_seed,
    num_classes,
)
from lab.ball import ascent_step, project_to_ball, uniform_in_ball
from lab.checks import check_in_range, check_one_of, check_positive_int
from lab.compile_cache import cached_function
from lab.higher_order import outputs_loss_and_input_gradient

LOSSES = ("ce", "dlr")
_MOMENTUM = 0.75  # alpha above
_UNROLL = 4


def dlr_loss(labels, logits, targets=None):
    """Per-example DLR loss (untargeted), or the targeted DLR toward ``targets``: see the
    module docstring. Needs at least 3 classes (4 targeted). The small constant keeps a model
    with tied top logits from dividing by zero."""
    top = tf.math.top_k(logits, k=3 if targets is None else 4).values
    true = tf.gather(logits, labels, batch_dims=1)
    if targets is None:
        # The largest other logit: the second largest when the label's logit is the largest.
        other = tf.where(true >= top[:, 0], top[:, 1], top[:, 0])
        return -(true - other) / (top[:, 0] - top[:, 2] + 1e-12)
    target = tf.gather(logits, targets, batch_dims=1)
    return -(true - target) / (top[:, 0] - 0.5 * (top[:, 2] + top[:, 3]) + 1e-12)


def _loss(name, targeted):
    """``loss(labels, logits, targets)`` to ascend: CE or DLR, untargeted or targeted (the
    targeted CE descends the target's cross-entropy)."""
    if name == "dlr":
        return dlr_loss if targeted else lambda labels, logits, targets: dlr_loss(labels,
                                                                                  logits)
    if targeted:
        return lambda labels, logits, targets: -cross_entropy(targets, logits)
    return lambda labels, logits, targets: cross_entropy(labels, logits)


def checkpoints(steps: int) -> np.ndarray:
    """Whether iteration ``i`` (0-based) of ``steps`` ends at a checkpoint: the first after
    ``max(int(0.22 steps), 1)`` iterations, then each interval shorter by
    ``max(int(0.03 steps), 1)`` down to ``max(int(0.06 steps), 1)`` (the reference code's
    integer schedule)."""
    marks = np.zeros(steps, bool)
    interval = max(int(0.22 * steps), 1)
    shorter, shortest = max(int(0.03 * steps), 1), max(int(0.06 * steps), 1)
    i = interval - 1
    while i < steps:
        marks[i] = True
        interval = max(interval - shorter, shortest)
        i += interval
    return marks


def _build_apgd(model, dtype, norm, loss_name, targeted):
    x_spec, y_spec, eps_spec, rho_spec = attack_signature(model, dtype, dtype, dtype)
    feature_spec = tf.TensorSpec(x_spec.shape[1:], dtype)
    loss_fn = _loss(loss_name, targeted)

    @tf.function(input_signature=[x_spec, y_spec, y_spec, eps_spec, rho_spec,
                                  tf.TensorSpec([2], tf.int64), tf.TensorSpec([None], tf.bool),
                                  feature_spec, feature_spec, feature_spec])
    def run(x, y, targets, eps, rho, seed, marks, lo, hi, scale):
        clip = (lo, hi)
        per_example = lambda v: tf.reshape(v, [-1] + [1] * (len(x.shape) - 1))
        ball = dict(clip=clip, scale=scale, norm=norm)

        def evaluate(z):
            logits, loss, grad = outputs_loss_and_input_gradient(
                model, lambda labels, out: loss_fn(labels, tf.cast(out, dtype), targets), z, y)
            return loss, grad, tf.not_equal(tf.argmax(logits, -1, output_type=y.dtype), y)

        def iteration(i, state):
            (x_adv, x_prev, grad, loss_prev, step, x_fooling, ever_fooled, x_best, grad_best,
             loss_best, increases, since_check, best_at_check, halved_at_check) = state
            z = project_to_ball(ascent_step(x_adv, grad, step, scale=scale, norm=norm), x, eps,
                                **ball)
            alpha = tf.where(i > 0, tf.constant(_MOMENTUM, dtype), tf.constant(1.0, dtype))
            x_prev, x_adv = x_adv, project_to_ball(
                x_adv + alpha * (z - x_adv) + (1.0 - alpha) * (x_adv - x_prev), x, eps, **ball)
            loss, grad, fooled = evaluate(x_adv)
            x_fooling = tf.where(per_example(fooled), x_adv, x_fooling)
            ever_fooled = ever_fooled | fooled
            increases += tf.cast(loss > loss_prev, dtype)
            improved = loss > loss_best
            x_best = tf.where(per_example(improved), x_adv, x_best)
            grad_best = tf.where(per_example(improved), grad, grad_best)
            loss_best = tf.where(improved, loss, loss_best)
            since_check += 1.0
            # A checkpoint, as masks rather than a branch, so that iterations unroll.
            check = marks[i]
            halve = check & ((increases <= rho * since_check)
                             | (~halved_at_check & (best_at_check >= loss_best)))
            halved_at_check = tf.where(check, halve, halved_at_check)
            best_at_check = tf.where(check, loss_best, best_at_check)
            step = tf.where(per_example(halve), step / 2.0, step)
            x_adv = tf.where(per_example(halve), x_best, x_adv)
            grad = tf.where(per_example(halve), grad_best, grad)
            increases = tf.where(check, tf.zeros_like(increases), increases)
            since_check = tf.where(check, tf.zeros_like(since_check), since_check)
            return (x_adv, x_prev, grad, loss, step, x_fooling, ever_fooled, x_best, grad_best,
                    loss_best, increases, since_check, best_at_check, halved_at_check)

        x_adv = uniform_in_ball(x, eps, seed, **ball)
        loss, grad, fooled = evaluate(x_adv)
        state = (x_adv, x_adv, grad, loss, per_example(tf.fill(tf.shape(loss), 2.0 * eps)),
                 x_adv, fooled, x_adv, grad, loss, tf.zeros_like(loss),
                 tf.constant(0.0, dtype), loss, tf.ones_like(fooled))
        # Iterations unrolled by _UNROLL per loop iteration (see attacks.pgd on the loop's
        # cost); the run ends early once every example is fooled (an undefended model).
        iterations = tf.shape(marks)[0]
        for block in tf.range(iterations // _UNROLL):
            if tf.reduce_all(state[6]):
                break
            for j in range(_UNROLL):
                state = iteration(block * _UNROLL + j, state)
        for i in tf.range(iterations - iterations % _UNROLL, iterations):
            state = iteration(i, state)
        x_fooling, ever_fooled, x_best, loss_best = state[5], state[6], state[7], state[9]
        return tf.where(per_example(ever_fooled), x_fooling, x_best), loss_best, ever_fooled
    return run


def _compiled_apgd(model, dtype, norm, loss, targeted):
    """One compiled APGD run, ``run(x, y, targets, eps, rho, seed_pair, marks, lo, hi, scale)
    -> (adversarial, best loss, fooled)``, cached per model and options; ``marks`` is
    ``checkpoints(steps)``."""
    key = ("apgd", tf.as_dtype(dtype).name, norm, loss, targeted)
    return cached_function(model, key, lambda: _build_apgd(model, tf.as_dtype(dtype), norm,
                                                           loss, targeted))


def _check_loss(model, loss, targeted):
    check_one_of("loss", loss, LOSSES)
    classes = num_classes(model)
    needed = 4 if targeted else 3
    if loss == "dlr" and classes is not None and classes < needed:
        raise ValueError(f"loss='dlr' needs a model with at least {needed} classes "
                         f"({'targeted ' if targeted else ''}DLR divides by a gap between "
                         f"sorted logits). Received: a model with {classes} outputs")


def _runs(model, x, y, eps, runs, *, norm, loss, targeted, steps, rho, bounds):
    """Runs APGD once per entry of ``runs`` (``(seed_pair, targets or None)``), each on the
    examples no earlier run fooled. Per example: the first fooling point found, else the
    highest-loss point of any run."""
    run = _compiled_apgd(model, x.dtype, norm, loss, targeted)
    marks = tf.constant(checkpoints(steps))
    eps, rho = as_scalar(eps, x.dtype), as_scalar(rho, x.dtype)
    result, y = x.numpy(), y.numpy()
    fooled = np.zeros(len(result), bool)
    best_loss = np.full(len(result), -np.inf)
    for seed, targets in runs:
        left = np.flatnonzero(~fooled)
        if left.size == 0:
            break
        targets = y[left] if targets is None else targets[left]
        adversarial, loss_found, fooled_now = (
            v.numpy() for v in run(tf.gather(x, left), y[left], targets, eps, rho, seed, marks,
                                   *bounds))
        better = fooled_now | (loss_found > best_loss[left])
        result[left[better]] = adversarial[better]
        best_loss[left[better]] = loss_found[better]
        fooled[left[fooled_now]] = True
    return tf.constant(result)


def apgd(model, x, y, eps, *, loss="ce", norm="linf", steps=100, restarts=1, rho=0.75,
         clip=(0.0, 1.0), eps_scale=None, seed=None):
    """Untargeted APGD on a batch (Croce & Hein 2020): see the module docstring.

    Args:
      model: a Keras classifier returning logits (called with ``training=False``).
      x: the batch, values in ``clip``, with the model's input shape.
      y: integer labels, or ``None`` to use the model's predictions.
      eps: the radius: in ``[0, hi - lo]`` for L-infinity, ``>= 0`` for L2.
      loss: ``"ce"`` (cross-entropy) or ``"dlr"`` (needs at least 3 classes).
      norm: the threat model, ``"linf"`` or ``"l2"``.
      steps: iterations, an integer >= 1 (the paper: 100).
      restarts: random starts, an integer >= 1; each runs only on the examples the earlier
        ones did not fool.
      rho: the checkpoint's threshold, in ``(0, 1]``: the step is halved when the loss rose
        in at most this fraction of the iterations since the last checkpoint.
      clip: the valid input range ``(lo, hi)`` (as in ``attacks.pgd.pgd``), or ``None``.
      eps_scale: optional per-feature scale; eps is then in its units.
      seed: seed of the random starts (an int); ``None`` draws one from NumPy's global
        generator.

    Returns:
      The adversarial batch, shaped like ``x``, inside the ball and ``clip``: per example a
      point the model misclassifies if any run found one, else the highest-loss point found.

    Raises:
      ValueError: as ``attacks.pgd.pgd``, and for ``loss`` not in ``LOSSES``, DLR on fewer
        than 3 classes, ``steps`` or ``restarts`` not an integer >= 1, ``rho`` outside
        ``(0, 1]``.

    References:
      Croce, Hein. Reliable evaluation of adversarial robustness with an ensemble of diverse
      parameter-free attacks. ICML 2020. arXiv:2003.01690.
    """
    x, y, bounds = _checked(model, x, y, eps, loss=loss, norm=norm, steps=steps,
                            restarts=restarts, rho=rho, clip=clip, eps_scale=eps_scale,
                            targeted=False)
    seed = new_seed(seed)
    runs = [(tf.constant([seed, r], tf.int64), None) for r in range(restarts)]
    return _runs(model, x, y, eps, runs, norm=norm, loss=loss, targeted=False, steps=steps,
                 rho=rho, bounds=bounds)


def apgd_targeted(model, x, y, eps, *, targets=9, loss="dlr", norm="linf", steps=100,
                  restarts=1, rho=0.75, clip=(0.0, 1.0), eps_scale=None, seed=None):
    """APGD-T (Croce & Hein 2020): APGD on the targeted DLR loss (or the targeted
    cross-entropy), once toward each of the ``targets`` classes the clean model ranks highest
    after its top one, each run only on the examples no earlier run fooled. ``y`` holds the
    true labels (or ``None``: the predictions); success is a misclassification.

    Args:
      targets: how many target classes, in ``[1, classes - 1]`` (AutoAttack: 9 on 10 classes).
      loss: ``"dlr"`` (needs at least 4 classes) or ``"ce"``.
      restarts: random starts per target class.
      The others: as in ``apgd``.

    Returns:
      As ``apgd``.

    Raises:
      ValueError: as ``apgd``, and for ``targets`` out of range.
    """
    x, y, bounds = _checked(model, x, y, eps, loss=loss, norm=norm, steps=steps,
                            restarts=restarts, rho=rho, clip=clip, eps_scale=eps_scale,
                            targeted=True)
    logits = model(x, training=False)
    check_positive_int("targets", targets)
    check_in_range("targets", targets, 1, logits.shape[-1] - 1)
    seed = new_seed(seed)
    ranked = tf.argsort(logits, axis=-1, direction="DESCENDING", stable=True).numpy()
    ranked = ranked.astype(np.int32)
    runs = [(tf.constant([seed, k * restarts + r], tf.int64), ranked[:, k])
            for k in range(1, targets + 1) for r in range(restarts)]
    return _runs(model, x, y, eps, runs, norm=norm, loss=loss, targeted=True, steps=steps,
                 rho=rho, bounds=bounds)


def _checked(model, x, y, eps, *, loss, norm, steps, restarts, rho, clip, eps_scale,
             targeted):
    x, y, bounds = check_attack_arguments(model, x, y, eps, clip=clip, targeted=False,
                                          eps_scale=eps_scale, norm=norm)
    _check_loss(model, loss, targeted)
    check_positive_int("steps", steps)
    check_positive_int("restarts", restarts)
    check_in_range("rho", rho, 0.0, 1.0, lo_open=True)
    return x, labels_or_predictions(model, x, y), bounds

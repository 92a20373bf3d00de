"""Projected gradient descent (PGD), the attack of Madry et al. 2018, under an L-infinity or an
L2 threat model.

PGD is FGSM iterated: from a random point in the eps-ball (or from ``x``), take ``steps``
projected gradient steps (``attacks.fgsm.gradient_step``: signed for L-infinity, normalized
for L2). With ``restarts``, it runs from
several random starts and keeps, per example, the strongest result: one that fools the model
(misclassified, or classified as the target) if any restart found one, else the one with the
highest loss (lowest target loss when targeted). The steps of a restart run in one in-graph loop
of one ``tf.function``: 40 steps are one call, not 40 Python round trips.

References:
  Madry, Makelov, Schmidt, Tsipras, Vladu. Towards deep learning models resistant to
  adversarial attacks. ICLR 2018. arXiv:1706.06083.
"""

from __future__ import annotations

import tensorflow as tf

from attacks.fgsm import cross_entropy, gradient_step
from attacks.validation import (
    as_scalar,
    attack_signature,
    check_attack_arguments,
    labels_or_predictions,
    new_seed,
)
from lab.ball import uniform_in_ball
from lab.checks import check_positive, check_positive_int
from lab.compile_cache import cached_function

# Steps per iteration of the in-graph loop: on a CPU a tf.while_loop iteration can cost as
# much as a PGD step of small_cnn, and unrolling all 40 steps doubles the tracing time; a few
# steps per iteration pay neither.
_STEPS_PER_ITERATION = 4


def default_step_size(eps, steps):
    """``2.5 * eps / steps``: enough for the steps to cross the eps-ball and come back. On the
    models here it is a stronger attack than Madry et al.'s fixed 0.01 for eps = 0.3 (README,
    "Adversarial training on MNIST").

    Args:
      eps: the radius, a finite number >= 0 or a tensor (checked when its value is known).
      steps: the number of steps, an integer >= 1.

    Raises:
      ValueError: naming ``eps`` or ``steps`` and the value received.
    """
    check_positive_int("steps", steps)
    check_positive("eps", eps, allow_zero=True)
    return 2.5 * eps / steps


def pgd_steps(model, x, y, eps, steps, step_size, seed, *, norm="linf", random_start=True,
              targeted=False, clip=(0.0, 1.0), scale=None, loss=None):
    """``steps`` projected gradient steps from ``x`` or a random start (graph-friendly: no
    validation). ``seed`` is a stateless seed pair for the start; ``norm``, ``clip``,
    ``scale`` and ``loss`` are as in ``attacks.fgsm.gradient_step``.

    ``steps`` is a Python int (the steps are unrolled: for the fixed step count of training)
    or an int32 tensor (an in-graph loop: one trace for any step count).
    """
    x_adv = (uniform_in_ball(x, eps, seed, clip, scale=scale, norm=norm) if random_start
             else x)

    def step(x_adv):
        return gradient_step(model, x_adv, x, y, eps, step_size, norm=norm, targeted=targeted,
                             clip=clip, scale=scale, loss=loss)

    if isinstance(steps, int):
        for _ in range(steps):
            x_adv = step(x_adv)
        return x_adv
    for _ in tf.range(steps // _STEPS_PER_ITERATION):
        for _ in range(_STEPS_PER_ITERATION):
            x_adv = step(x_adv)
    for _ in tf.range(steps % _STEPS_PER_ITERATION):
        x_adv = step(x_adv)
    return x_adv


def _build_pgd_restart(model, dtype, random_start, targeted, norm):
    x_spec, y_spec, *scalars = attack_signature(model, dtype, dtype, tf.int32, dtype)
    feature_spec = tf.TensorSpec(x_spec.shape[1:], dtype)
    signature = [x_spec, y_spec, *scalars, tf.TensorSpec([2], tf.int64), x_spec,
                 tf.TensorSpec([None], dtype), feature_spec, feature_spec, feature_spec]

    @tf.function(input_signature=signature)
    def restart(x, y, eps, steps, step_size, seed, best, best_score, lo, hi, scale):
        candidate = pgd_steps(model, x, y, eps, steps, step_size, seed, norm=norm,
                              random_start=random_start, targeted=targeted, clip=(lo, hi),
                              scale=scale)
        logits = model(candidate, training=False)
        loss = cross_entropy(y, tf.cast(logits, dtype))
        predicted = tf.argmax(logits, axis=-1, output_type=y.dtype)
        fooled = tf.equal(predicted, y) if targeted else tf.not_equal(predicted, y)
        # A fooling example beats any loss; among the rest, the stronger loss wins; ties keep
        # the earlier restart.
        score = tf.where(fooled, tf.constant(float("inf"), dtype), -loss if targeted else loss)
        better = score > best_score
        mask = tf.reshape(better, [-1] + [1] * (len(x.shape) - 1))
        return tf.where(mask, candidate, best), tf.where(better, score, best_score)
    return restart


def _compiled_pgd(model, dtype=tf.float32, *, random_start=True, targeted=False, norm="linf"):
    """One compiled PGD restart, ``restart(x, y, eps, steps, step_size, seed_pair, best,
    best_score, lo, hi, scale) -> (best, best_score)``, cached per model and options: it is
    traced once, for any batch size, eps, step count, step size and input domain. The steps
    run in an in-graph loop; ``pgd`` calls it once per restart (restarts are few, and each
    call carries the best results so far)."""
    key = ("pgd", tf.as_dtype(dtype).name, random_start, targeted, norm)
    return cached_function(model, key, lambda: _build_pgd_restart(
        model, tf.as_dtype(dtype), random_start, targeted, norm))


def pgd(model, x, y, eps, *, norm="linf", steps=40, step_size=0.01, restarts=1,
        random_start=True, targeted=False, clip=(0.0, 1.0), eps_scale=None, seed=None):
    """PGD attack on a batch (Madry et al. 2018), L-infinity or L2.

    With ``steps=1``, ``random_start=False`` and ``step_size=eps`` this is exactly ``fgsm``;
    with ``steps=1`` and ``step_size=1.25 * eps`` it is Wong et al.'s FGSM with random start
    (restart 0 uses the same start as ``fgsm(..., random_start=True, seed=seed)``).

    Args:
      model: a Keras classifier returning logits (called with ``training=False``).
      x: the batch, values in ``clip``, with the model's input shape.
      y: integer labels, or ``None`` to use the model's predictions (see ``attacks.fgsm.fgsm``
        on label leaking). A targeted attack needs ``y``: the targets.
      eps: the radius: in ``[0, hi - lo]`` for L-infinity, ``>= 0`` for L2.
      norm: the threat model, ``"linf"`` or ``"l2"`` (``lab.ball.NORMS``).
      steps: projected gradient steps, an integer >= 1 (Madry et al.: 40 on MNIST).
      step_size: step length, > 0. Madry et al. use 0.01 for eps = 0.3; ``default_step_size``
        (``2.5 * eps / steps``, 0.01875 there) lets the steps cross the ball and was the
        stronger attack on every model measured here.
      restarts: random starts, an integer >= 1; per example the strongest result is kept.
        More than one needs ``random_start`` (without it every restart is the same).
      random_start: start from a uniform point of the eps-ball (Madry et al.); else from ``x``.
      targeted: move toward the labels ``y`` (descend their loss).
      clip: the valid input range ``(lo, hi)``, numbers or per-feature arrays; ``None`` for
        unbounded inputs (see ``attacks.fgsm.fgsm``).
      eps_scale: optional per-feature scale; eps and step_size are then in its units.
      seed: seed of the random starts (an int); ``None`` draws one from NumPy's global
        generator (so ``keras.utils.set_random_seed`` makes runs repeatable).

    Returns:
      The adversarial batch, a ``tf.Tensor`` with the shape and (floating) dtype of ``x``,
      within ``eps`` of ``x`` and inside ``clip``.

    Raises:
      ValueError: as ``fgsm``, and for ``steps`` or ``restarts`` not an integer >= 1,
        ``step_size`` not a real number > 0, or ``restarts > 1`` without ``random_start``.

    References:
      Madry, Makelov, Schmidt, Tsipras, Vladu. Towards deep learning models resistant to
      adversarial attacks. ICLR 2018. arXiv:1706.06083.
    """
    x, y, bounds = check_attack_arguments(model, x, y, eps, clip=clip, targeted=targeted,
                                          eps_scale=eps_scale, norm=norm)
    check_positive_int("steps", steps)
    check_positive_int("restarts", restarts)
    check_positive("step_size", step_size)
    if restarts > 1 and not random_start:
        raise ValueError(f"restarts > 1 needs random_start=True: from x every restart gives the "
                         f"same result. Received: restarts={restarts}, random_start=False")
    seed = new_seed(seed)
    y = labels_or_predictions(model, x, y)
    restart = _compiled_pgd(model, x.dtype, random_start=random_start, targeted=targeted,
                            norm=norm)
    eps, steps = as_scalar(eps, x.dtype), tf.constant(steps, tf.int32)
    step_size = as_scalar(step_size, x.dtype)
    best, best_score = x, tf.fill(tf.shape(y), tf.constant(-float("inf"), x.dtype))
    for r in range(restarts):
        best, best_score = restart(x, y, eps, steps, step_size, tf.constant([seed, r], tf.int64),
                                   best, best_score, *bounds)
    return best

"""Projected gradient descent (PGD), the L-infinity attack of Madry et al. 2018.

PGD is FGSM iterated: from a random point in the eps-ball (or from ``x``), take ``steps``
projected signed-gradient steps (``attacks.fgsm.sign_step``). With ``restarts``, it runs from
several random starts and keeps, per example, the strongest result: one that fools the model
(misclassified, or classified as the target) if any restart found one, else the one with the
highest loss (lowest target loss when targeted). The steps and restarts run inside one
``tf.function``: 40 steps are one call, not 40 Python round trips.

References:
  Madry, Makelov, Schmidt, Tsipras, Vladu. Towards deep learning models resistant to
  adversarial attacks. ICLR 2018. arXiv:1706.06083.
"""

from __future__ import annotations

import tensorflow as tf

from attacks.fgsm import cross_entropy, sign_step, uniform_start
from attacks.validation import (attack_signature, check_attack_arguments,
                                labels_or_predictions, new_seed)
from lab.checks import check_positive, check_positive_int
from lab.compile_cache import cached_function


def pgd_steps(model, x, y, eps, steps, step_size, seed, *, random_start=True, targeted=False,
              clip=(0.0, 1.0)):
    """``steps`` projected signed-gradient steps from ``x`` or a random start (graph-friendly:
    no validation). ``seed`` is a stateless seed pair for the start; ``steps`` a Python int
    (unrolled) or an int32 tensor (a loop)."""
    x_adv = uniform_start(x, eps, seed, clip) if random_start else x
    # A Python int unrolls the loop (about 30% faster per step than a tf.while_loop here,
    # for the fixed step count of training); a tensor keeps one trace for any step count.
    for _ in range(steps) if isinstance(steps, int) else tf.range(steps):
        x_adv = sign_step(model, x_adv, x, y, eps, step_size, targeted=targeted, clip=clip)
    return x_adv


def _build_pgd(model, random_start, targeted, clip):
    @tf.function(input_signature=attack_signature(
        model, tf.float32, tf.int32, tf.float32, tf.int32, tf.int64))
    def attack(x, y, eps, steps, step_size, restarts, seed):
        best = x
        best_score = tf.fill(tf.shape(y), tf.constant(-float("inf"), x.dtype))
        for restart in tf.range(restarts):
            candidate = pgd_steps(model, x, y, eps, steps, step_size,
                                  tf.stack([seed, tf.cast(restart, tf.int64)]),
                                  random_start=random_start, targeted=targeted, clip=clip)
            logits = model(candidate, training=False)
            loss = cross_entropy(y, logits)
            predicted = tf.argmax(logits, axis=-1, output_type=y.dtype)
            fooled = tf.equal(predicted, y) if targeted else tf.not_equal(predicted, y)
            # A fooling example beats any loss; among the rest, the stronger loss wins.
            score = tf.where(fooled, tf.constant(float("inf"), x.dtype),
                             -loss if targeted else loss)
            better = score > best_score
            mask = tf.reshape(better, [-1] + [1] * (len(x.shape) - 1))
            best = tf.where(mask, candidate, best)
            best_score = tf.where(better, score, best_score)
        return best
    return attack


def pgd(model, x, y=None, eps=0.3, *, steps=40, step_size=0.01, restarts=1, random_start=True,
        targeted=False, clip=(0.0, 1.0), seed=None):
    """L-infinity PGD attack on a batch (Madry et al. 2018).

    Args:
      model: a Keras classifier returning logits (called with ``training=False``).
      x: the batch, values in ``clip``.
      y: integer labels; ``None`` uses the model's predictions (see ``attacks.fgsm.fgsm``
        on label leaking). Targeted attacks need ``y``: the targets.
      eps: L-infinity radius, in ``[0, hi - lo]``.
      steps: projected gradient steps, >= 1 (Madry et al.: 40 on MNIST).
      step_size: step length, > 0 (Madry et al.: 0.01 for eps = 0.3).
      restarts: random restarts, >= 1; per example the strongest result is kept.
      random_start: start each restart from a uniform point in the eps-ball.
      targeted: move toward the labels ``y``.
      clip: the valid input range ``(lo, hi)``.
      seed: seed of the random starts; ``None`` draws one from NumPy's global generator.

    Returns:
      The adversarial batch, a ``tf.Tensor`` shaped like ``x``, within ``eps`` of ``x`` and
      inside ``clip``.
    """
    x, y = check_attack_arguments(model, x, y, eps, clip=clip, targeted=targeted)
    check_positive_int("steps", steps)
    check_positive_int("restarts", restarts)
    check_positive("step_size", step_size)
    y = labels_or_predictions(model, x, y)
    attack = cached_function(model, ("pgd", random_start, targeted, tuple(clip)),
                             lambda: _build_pgd(model, random_start, targeted, tuple(clip)))
    return attack(x, y, tf.constant(eps, x.dtype), tf.constant(steps),
                  tf.constant(step_size, x.dtype), tf.constant(restarts),
                  tf.constant(new_seed(seed), tf.int64))

"""The fast gradient sign method (FGSM) and the one projected signed-gradient step that every
attack in gradlab is made of.

For a classifier with loss ``L(x, y)``, one L-infinity step from ``x_adv`` is

    x_adv <- clip( proj_{||. - x||_inf <= eps}( x_adv + step * sign(grad_x L(x_adv, y)) ), lo, hi )

(minus the sign for a targeted attack, which descends the loss of the target label).
FGSM (Goodfellow et al. 2015) is one such step from ``x`` with ``step = eps``; Wong et al.'s
variant starts from a uniform random point in the eps-ball and steps ``1.25 eps``; PGD
(``attacks.pgd``) repeats the step. The input gradient comes from
``lab.higher_order.input_gradient``, which calls the model with ``training=False``.

References:
  Goodfellow, Shlens, Szegedy. Explaining and harnessing adversarial examples. ICLR 2015.
  arXiv:1412.6572.
  Wong, Rice, Kolter. Fast is better than free: revisiting adversarial training. ICLR 2020.
  arXiv:2001.03994.
  Kurakin, Goodfellow, Bengio. Adversarial machine learning at scale. ICLR 2017.
  arXiv:1611.01236.
"""

from __future__ import annotations

import tensorflow as tf

from attacks.validation import (attack_signature, check_attack_arguments,
                                labels_or_predictions, new_seed)
from lab.compile_cache import cached_function
from lab.higher_order import input_gradient


def cross_entropy(labels, logits):
    """Per-example softmax cross-entropy of integer labels: the loss attacks ascend."""
    return tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)


def project(x_adv, x, eps, clip):
    """Onto the L-infinity ball of radius ``eps`` around ``x``, then into ``[lo, hi]``."""
    return tf.clip_by_value(tf.clip_by_value(x_adv, x - eps, x + eps), clip[0], clip[1])


def sign_step(model, x_adv, x, y, eps, step, *, targeted=False, clip=(0.0, 1.0)):
    """One projected signed-gradient step from ``x_adv`` (graph-friendly: no validation).

    Args:
      model: callable ``model(x, training=False) -> logits``.
      x_adv: the current adversarial batch.
      x: the clean batch (centre of the eps-ball).
      y: labels to move away from, or targets to move toward when ``targeted``.
      eps: L-infinity radius.
      step: step length.
      targeted: descend the loss of ``y`` instead of ascending it.
      clip: the valid input range ``(lo, hi)``.

    Returns:
      The new adversarial batch, inside the ball and the range.
    """
    grad = input_gradient(model, cross_entropy, x_adv, y)
    direction = -tf.sign(grad) if targeted else tf.sign(grad)
    return project(x_adv + tf.cast(step, x.dtype) * direction, x, tf.cast(eps, x.dtype), clip)


def uniform_start(x, eps, seed, clip=(0.0, 1.0)):
    """``x`` plus uniform noise in ``[-eps, eps]``, clipped; ``seed`` is a stateless pair."""
    noise = tf.random.stateless_uniform(tf.shape(x), seed, -1.0, 1.0, dtype=x.dtype)
    return tf.clip_by_value(x + tf.cast(eps, x.dtype) * noise, clip[0], clip[1])


def _build_fgsm(model, targeted, random_start, clip):
    @tf.function(input_signature=attack_signature(model, tf.float32, tf.float32)
                 + [tf.TensorSpec([2], tf.int64)])
    def attack(x, y, eps, step, seed):
        start = uniform_start(x, eps, seed, clip) if random_start else x
        return sign_step(model, start, x, y, eps, step, targeted=targeted, clip=clip)
    return attack


def fgsm(model, x, y=None, eps=0.3, *, targeted=False, random_start=False, step=None,
         clip=(0.0, 1.0), seed=None):
    """L-infinity fast gradient sign attack on a batch.

    Args:
      model: a Keras classifier returning logits (called with ``training=False``).
      x: the batch, values in ``clip``.
      y: integer labels; ``None`` uses the model's own predictions. That matters: with true
        labels, an adversarially trained model can learn to read the label from the
        perturbation ("label leaking", Kurakin et al. 2017) and look more robust to FGSM
        than it is; predictions carry no more information than the model already has (and
        are all there is when labels are unknown). Targeted attacks need ``y``: the targets.
      eps: L-infinity radius, in ``[0, hi - lo]``.
      targeted: move toward the labels ``y`` instead of away from them.
      random_start: start from a uniform point in the eps-ball (Wong et al. 2020); the
        default ``step`` is then ``1.25 * eps``.
      step: step length; default ``eps`` (plain FGSM).
      clip: the valid input range ``(lo, hi)``.
      seed: seed of the random start (an int); ``None`` draws one from NumPy's global
        generator (so ``lab.seeding.seed_everything`` makes runs repeatable).

    Returns:
      The adversarial batch, a ``tf.Tensor`` shaped like ``x``, within ``eps`` of ``x`` and
      inside ``clip``.
    """
    x, y = check_attack_arguments(model, x, y, eps, clip=clip, targeted=targeted)
    if step is None:
        step = 1.25 * eps if random_start else eps
    elif not step > 0:
        raise ValueError(f"step must be > 0. Received: step={step!r}")
    y = labels_or_predictions(model, x, y)
    attack = cached_function(model, ("fgsm", targeted, random_start, tuple(clip)),
                             lambda: _build_fgsm(model, targeted, random_start, tuple(clip)))
    return attack(x, y, tf.constant(eps, x.dtype), tf.constant(step, x.dtype),
                  tf.constant([new_seed(seed), 0], tf.int64))

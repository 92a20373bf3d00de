"""The fast gradient sign method (FGSM) and the one projected gradient step that FGSM and PGD
are made of.

For a classifier with loss ``L(x, y)``, one L-infinity step from ``x_adv`` is

    x_adv <- clip( proj_{||. - x||_inf <= eps}( x_adv + step * sign(grad_x L(x_adv, y)) ), lo, hi )

(minus the sign for a targeted attack, which descends the loss of the target label). Under
the L2 threat model the step follows ``grad / ||grad||_2`` and the projection shortens the
offset to length ``eps`` (the fast gradient method); both come from ``lab.ball``.
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

from attacks.validation import (
    as_scalar,
    attack_signature,
    check_attack_arguments,
    labels_or_predictions,
    new_seed,
)
from lab.ball import ascent_step, project_to_ball, uniform_in_ball
from lab.checks import check_positive
from lab.compile_cache import cached_function
from lab.higher_order import input_gradient


def cross_entropy(labels, logits):
    """Per-example softmax cross-entropy of integer labels: the loss attacks ascend."""
    return tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)


def gradient_step(model, x_adv, x, y, eps, step, *, norm="linf", targeted=False,
                  clip=(0.0, 1.0), scale=None, loss=None):
    """One projected steepest-ascent step from ``x_adv`` (graph-friendly: no validation):
    signed for L-infinity, along the normalized gradient for L2 (``lab.ball``).

    Args:
      model: callable ``model(x, training=False) -> outputs``.
      x_adv: the current adversarial batch.
      x: the clean batch (centre of the eps-ball).
      y: labels to move away from, or targets to move toward when ``targeted`` (or whatever
        reference ``loss`` compares the outputs with).
      eps: the radius.
      step: step length.
      norm: ``"linf"`` or ``"l2"``.
      targeted: descend the loss of ``y`` instead of ascending it; a boolean tensor
        ``[batch]`` chooses per example.
      clip: the valid input range ``(lo, hi)``, scalars or per-feature; ``None``: unbounded.
      scale: optional per-feature scale: ``eps`` and ``step`` are in its units (the
        L-infinity radius of feature ``i`` is ``eps * scale[i]``).
      loss: per-example ``loss(y, outputs)`` to ascend; default ``cross_entropy``.

    Returns:
      The new adversarial batch, inside the ball and the range.
    """
    grad = input_gradient(model, loss or cross_entropy, x_adv, y)
    if isinstance(targeted, bool):
        grad = -grad if targeted else grad
    else:
        grad = tf.where(tf.reshape(targeted, [-1] + [1] * (len(grad.shape) - 1)), -grad, grad)
    moved = ascent_step(x_adv, grad, step, scale=scale, norm=norm)
    return project_to_ball(moved, x, eps, clip, scale=scale, norm=norm)


def _build_fgsm(model, dtype, targeted, random_start, norm):
    x_spec, *signature = attack_signature(model, dtype, dtype, dtype)
    feature_spec = tf.TensorSpec(x_spec.shape[1:], dtype)

    @tf.function(input_signature=[x_spec, *signature, tf.TensorSpec([2], tf.int64),
                                  feature_spec, feature_spec, feature_spec])
    def attack(x, y, eps, step, seed, lo, hi, scale):
        clip = (lo, hi)
        start = (uniform_in_ball(x, eps, seed, clip, scale=scale, norm=norm) if random_start
                 else x)
        return gradient_step(model, start, x, y, eps, step, norm=norm, targeted=targeted,
                             clip=clip, scale=scale)
    return attack


def _compiled_fgsm(model, dtype=tf.float32, *, targeted=False, random_start=False,
                   norm="linf"):
    """The compiled attack behind ``fgsm``,
    ``attack(x, y, eps, step, seed_pair, lo, hi, scale)``, cached per model and options: it is
    traced once, for any batch size, eps, step and input domain (bounds and scale are
    per-feature tensors)."""
    key = ("fgsm", tf.as_dtype(dtype).name, targeted, random_start, norm)
    return cached_function(model, key, lambda: _build_fgsm(
        model, tf.as_dtype(dtype), targeted, random_start, norm))


def fgsm(model, x, y, eps, *, norm="linf", targeted=False, random_start=False, step=None,
         clip=(0.0, 1.0), eps_scale=None, seed=None):
    """Fast gradient sign attack on a batch: ``x + step * sign(grad_x L)``, projected (with
    ``norm="l2"``, the fast gradient method: ``x + step * grad_x L / ||grad_x L||_2``).

    Args:
      model: a Keras classifier returning logits (called with ``training=False``, so dropout
        is off and batch-norm statistics are frozen: the attack targets the deployed model).
      x: the batch, values in ``clip``, with the model's input shape.
      y: integer labels, or ``None`` to use the model's own predictions. That matters: during
        adversarial training with true labels the model can learn to read the label from the
        perturbation (FGSM's step is a function of the label) and then classifies FGSM
        examples *better* than clean ones, "label leaking" (Kurakin et al. 2017); attacking
        its prediction adds no information the model does not already have. Predictions are
        also all there is when labels are unknown. A targeted attack needs ``y``: the targets.
      eps: the radius: in ``[0, hi - lo]`` for L-infinity, ``>= 0`` for L2.
      norm: the threat model, ``"linf"`` or ``"l2"`` (``lab.ball.NORMS``).
      targeted: move toward the labels ``y`` (descend their loss) instead of away from them.
      random_start: start from a uniform point in the eps-ball (Wong et al. 2020); the
        default ``step`` is then ``1.25 * eps``, and the result is projected back.
      step: step length, > 0; default ``eps`` (plain FGSM).
      clip: the valid input range ``(lo, hi)``: numbers, or per-feature arrays that broadcast
        to one example's shape (``np.inf`` where a feature is unbounded); ``None`` for inputs
        without bounds (observations of a control task, say).
      eps_scale: optional per-feature scale (e.g. each feature's standard deviation): eps and
        step are then in its units, the radius of feature ``i`` being ``eps * eps_scale[i]``.
      seed: seed of the random start (an int); ``None`` draws one from NumPy's global
        generator (so ``keras.utils.set_random_seed`` makes runs repeatable).

    Returns:
      The adversarial batch, a ``tf.Tensor`` with the shape and (floating) dtype of ``x``,
      within ``eps`` (times ``eps_scale``) of ``x`` and inside ``clip``.

    Raises:
      ValueError: eps or step not a real number (a string, a vector, ``None``), eps outside
        ``[0, hi - lo]``, ``step <= 0``, ``x`` empty, outside ``clip`` or not shaped like the
        model's inputs, labels out of range or not one per example, or a targeted attack
        without ``y``.

    References:
      Goodfellow, Shlens, Szegedy. Explaining and harnessing adversarial examples. ICLR 2015.
      arXiv:1412.6572.
      Wong, Rice, Kolter. Fast is better than free: revisiting adversarial training. ICLR
      2020. arXiv:2001.03994.
      Kurakin, Goodfellow, Bengio. Adversarial machine learning at scale. ICLR 2017.
      arXiv:1611.01236.
    """
    x, y, bounds = check_attack_arguments(model, x, y, eps, clip=clip, targeted=targeted,
                                          eps_scale=eps_scale, norm=norm)
    if step is None:
        step = 1.25 * eps if random_start else eps
    else:
        check_positive("step", step)
    seed = new_seed(seed)
    y = labels_or_predictions(model, x, y)
    attack = _compiled_fgsm(model, x.dtype, targeted=targeted, random_start=random_start,
                            norm=norm)
    return attack(x, y, as_scalar(eps, x.dtype), as_scalar(step, x.dtype),
                  tf.constant([seed, 0], tf.int64), *bounds)


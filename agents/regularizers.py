"""The state-adversarial (SA) regularizer: a policy that does not change when its observation
is nudged within a small ball (Zhang et al. 2020, SA-MDP).

The policy loss ``L`` becomes

    L + kappa * mean_s max_{||delta / scale||_inf <= eps} D(pi(. | s) || pi(. | s + delta))

with ``D`` the KL divergence of the policy's action distributions (the policies' ``kl``:
categorical for Discrete actions, diagonal Gaussian over the pre-squash action for Box). The
inner max is solved approximately by ``lab.ball.maximize_in_ball``: a few projected
signed-gradient steps from a uniform random point of the ball (``D``'s gradient is zero at
``delta = 0``, so the start must be random). The maximizer ``delta*`` is a constant for the
weight gradient, which flows through both ``pi(s)`` and ``pi(s + delta*)``. Zhang et al.
bound the value a policy loses to any observation adversary of budget ``eps`` by the largest
total-variation distance between ``pi(s)`` and ``pi(s + delta)``, which the KL bounds
(Pinsker); SA-PPO adds this penalty to PPO's loss as it is added to REINFORCE's here.

``eps`` is in units of ``eps_scale`` per feature (e.g. observation standard deviations) and
is a ``tf.Variable``: ramp it during training with ``regularizer.eps.assign(...)`` (an eps
schedule, as SA-PPO uses) without retracing the training step. At ``eps = 0`` the search is
skipped (a ``tf.cond``): the penalty is exactly 0 and adds nothing to the gradient.

The random start's seed is an argument, not state: ``agents.Reinforce`` passes a seed it
derives from ``(config.seed, updates)``, so a saved and resumed agent draws the same starts as
one that never stopped.

References:
  Zhang, Chen, Xiao, Li, Liu, Boning, Hsieh. Robust deep reinforcement learning against
  adversarial perturbations on state observations. NeurIPS 2020. arXiv:2003.08938.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import tensorflow as tf

from lab.ball import maximize_in_ball
from lab.checks import check_positive, check_positive_int

# A few steps: each costs a forward and a backward pass on the batch, and the whole update
# must stay a small part of REINFORCE's wall time (acting and the environments dominate).
DEFAULT_STEPS = 5


def _per_feature(name, value) -> np.ndarray:
    try:
        array = np.asarray(value, np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number or a vector of numbers. Received: "
                         f"{name}={value!r}") from None
    if array.ndim > 1:
        raise ValueError(f"{name} must be a number or a vector (one entry per observation "
                         f"feature). Received: {name} with shape {array.shape}")
    return array


class StateAdversarialRegularizer:
    """``kappa * mean_s max_{delta in ball} KL(pi(s) || pi(s + delta))`` for a policy network.

    Args:
      kappa: weight of the penalty, ``>= 0``. ``0`` still measures the divergence (reported
        by ``Reinforce`` as ``adversarial_kl``) and adds exactly nothing to the update.
      eps: radius of the L-infinity ball, ``>= 0``, in units of ``eps_scale``;
        ``regularizer.eps`` is a ``tf.Variable`` to assign for a schedule.
      eps_scale: optional per-feature scale of the flat observation (finite, ``> 0``), e.g.
        the observations' standard deviations.
      steps: signed-gradient steps of the inner maximization, an integer ``>= 1``.
      step_size: step length in units of ``eps_scale``, ``> 0``; default ``2.5 * eps /
        steps`` (follows ``eps`` as it is ramped).
      clip: optional ``(lo, hi)`` bounds of the flat observation that perturbed states stay
        in (numbers or per-feature, ``lo < hi``; infinite for an unbounded side).

    Raises:
      ValueError: naming the argument, the accepted range and the value received.
    """

    def __init__(self, kappa, eps, *, eps_scale=None, steps: int = DEFAULT_STEPS,
                 step_size=None, clip=None):
        check_positive("kappa", kappa, allow_zero=True)
        check_positive("eps", eps, allow_zero=True)
        check_positive_int("steps", steps)
        if step_size is not None:
            check_positive("step_size", step_size)
        if eps_scale is not None:
            scale = _per_feature("eps_scale", eps_scale)
            if scale.size == 0 or not (np.all(np.isfinite(scale)) and np.all(scale > 0)):
                raise ValueError(f"eps_scale must be finite and > 0 in every feature. "
                                 f"Received: eps_scale={eps_scale!r}")
        if clip is not None:
            try:
                lo, hi = clip
            except (TypeError, ValueError):
                raise ValueError(f"clip must be (lo, hi) or None. Received: clip={clip!r}"
                                 ) from None
            lo, hi = _per_feature("clip", lo), _per_feature("clip", hi)
            if np.isnan(lo).any() or np.isnan(hi).any() or not np.all(lo < hi):
                raise ValueError(f"clip must be (lo, hi) with lo < hi. Received: clip={clip!r}")
        self.kappa = float(kappa)
        self.steps = steps
        self.step_size = None if step_size is None else float(step_size)
        self.eps = tf.Variable(float(eps), trainable=False, dtype=tf.float32,
                               name="state_regularizer_eps")
        self.eps_scale = None if eps_scale is None else tf.constant(eps_scale, tf.float32)
        self.clip = None if clip is None else tuple(tf.constant(b, tf.float32) for b in clip)

    def check_observation_size(self, size: int) -> None:
        """Raises ``ValueError`` unless ``eps_scale`` and ``clip`` fit flat observations of
        ``size`` features (a scalar, or one entry per feature)."""
        for name, values in (("eps_scale", [self.eps_scale]), ("clip", self.clip or [])):
            for value in values:
                if value is not None and value.shape.rank == 1 and value.shape[0] != size:
                    raise ValueError(f"{name} must hold one entry per observation feature "
                                     f"({size}). Received: {name} with {value.shape[0]} "
                                     f"entries")

    def adversarial_states(self, model, obs, kl: Callable, seed) -> tf.Tensor:
        """``obs + delta*``: the states in the ball where the policy moves furthest (in
        ``kl``) from its choice at ``obs``, approximately; a constant (no gradient).

        Args:
          model: the policy network, called with ``training=False`` (an attack's view).
          obs: float32 ``[batch, features]``.
          kl: ``kl(out_p, out_q) -> [batch]``, e.g. ``agents.policies.CategoricalPolicy.kl``.
          seed: the random start's seed: an integer, or a ``[2]`` integer tensor or variable.
        """
        clean = tf.stop_gradient(model(obs, training=False))
        return maximize_in_ball(lambda s: kl(clean, model(s, training=False)), obs, self.eps,
                                steps=self.steps, seed=seed, step_size=self.step_size,
                                scale=self.eps_scale, clip=self.clip)

    def max_divergence(self, model, obs, kl: Callable, seed, *, training: bool = True
                       ) -> tf.Tensor:
        """``KL(pi(s) || pi(s + delta*))`` per state, ``[batch]``, differentiable in the
        weights through both network calls (``delta*`` from ``adversarial_states``, held
        fixed). Exactly 0, with no search, while ``eps`` is 0.

        Args:
          model, obs, kl, seed: as for ``adversarial_states``.
          training: the mode of the two network calls the gradient flows through; ``True``
            inside a weight update.
        """
        obs = tf.convert_to_tensor(obs)

        def search():
            worst = self.adversarial_states(model, obs, kl, seed)
            return kl(model(obs, training=training), model(worst, training=training))

        return tf.cond(self.eps > 0, search, lambda: tf.zeros(tf.shape(obs)[:1], obs.dtype))

    def as_penalty(self, kl: Callable, seed, *, record: tf.Variable | None = None) -> Callable:
        """The regularizer as a ``lab.training.make_train_step`` penalty.

        Args:
          kl: the policy's divergence, ``kl(out_p, out_q) -> [batch]``.
          seed: the random start's seed (a ``[2]`` integer ``tf.Variable`` to assign before
            each step, so that every step draws new starts without retracing).
          record: optional scalar float32 ``tf.Variable`` that each call sets to the batch
            mean of ``max_divergence`` (before ``kappa``), to report it.

        Returns:
          ``penalty(model, x, y) -> kappa * mean(max_divergence(model, x, kl, seed))``;
          ``y`` is not used.
        """
        def state_adversarial_penalty(model, x, y):
            divergence = tf.reduce_mean(self.max_divergence(model, x, kl, seed))
            if record is not None:
                record.assign(divergence)
            return self.kappa * divergence

        return state_adversarial_penalty

    def __repr__(self):
        return (f"StateAdversarialRegularizer(kappa={self.kappa}, eps={float(self.eps.numpy())}"
                f", steps={self.steps}, step_size={self.step_size}, "
                f"eps_scale={None if self.eps_scale is None else self.eps_scale.numpy()})")

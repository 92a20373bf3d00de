"""Adversarial observations: perturbing what a policy network sees, within an L-infinity budget.

The attacks of ``attacks.fgsm`` and ``attacks.pgd``, pointed at a policy instead of a
classifier (Huang et al. 2017). ``ObservationAttack`` perturbs a batch of observations against
a Keras policy network: a plain function of ``(model, obs)``, so it can sit in a gymnasium
wrapper (``AttackedObservations`` for one environment, ``AttackedVectorObservations`` for a
vector environment: the environment keeps its true state, only what the agent sees changes) or
in an agent's acting function for adversarial training (Pattanaik et al. 2018), where it is
compiled with the action sampling.

Methods:

- ``"random"``: uniform noise in the same budget: the control (a policy that falls to it is
  fragile, not attacked);
- ``"fgsm"``: one signed-gradient step of the full budget;
- ``"pgd"``: ``steps`` projected steps of ``step_size`` from a random point in the ball;
  with ``restarts`` > 1, from that many random points, keeping for each observation the
  result with the highest objective (Madry et al. 2018's restarts; ``attacks.pgd.pgd`` does
  the same for classifiers). The objectives are not concave in the perturbation: a
  corner of the ball can be a local maximum far below the best one, and one start finds
  the nearest.

Objectives, what the attack ascends on the policy network's output:

- ``"away"``: cross-entropy of the attacked logits against the clean greedy action (a Discrete
  policy; the ``y=None`` attack of images): make the policy leave its choice;
- ``"toward"``: descend the cross-entropy of ``target``, a fixed action (a Discrete policy):
  push it consistently one way, often stronger than ``"away"``, whose flips land where the
  action matters little;
- ``"mean_shift"``: the squared distance between the attacked and the clean action mean, the
  first ``action_size`` outputs (a Gaussian policy; Zhang et al. 2020's objective for
  continuous actions). Its gradient is zero at the clean observation, so FGSM and PGD start
  from a random point of the ball for it;
- ``"kl"``: the KL divergence ``D(pi(.|s) || pi(.|s + delta))`` from the clean to the
  attacked action distribution, the maximal action difference (MAD) attack of Zhang et al.
  2020. Without ``action_size`` the outputs are a Discrete policy's logits
  (``categorical_kl``); with it they are ``concat([mean, log_std])`` of a diagonal Gaussian
  policy, ``action_size`` of each (``gaussian_kl``). It uses the whole distribution, so it
  needs no greedy action and weighs each action dimension by how sure the policy is of it.
  Like ``"mean_shift"`` its gradient is zero at the clean observation (a minimum of the
  KL): FGSM and PGD start from a random point of the ball.

``eps`` is in units of ``eps_scale`` per feature (e.g. each observation feature's standard
deviation: CartPole's pole angle and cart position live on scales a hundred times apart), and
is a variable, so training can ramp it without retracing. ``fraction`` < 1 attacks each
observation with that probability only (a random-timing relative of Lin et al. 2017's
strategically-timed attack).

Two helpers for training and measuring against such attacks: ``ObjectivePerEnvironment``, an
observation hook that gives each sub-environment of a batch its own objective (one episode,
one objective, as an evaluation attack does), and ``ObservationRecorder``, a vector wrapper
that keeps the observations it passes on (to measure the per-feature spread used as
``eps_scale``).

References:
  Huang, Papernot, Goodfellow, Duan, Abbeel. Adversarial attacks on neural network policies.
  2017. arXiv:1702.02284.
  Pattanaik, Tang, Liu, Bommannan, Chowdhary. Robust deep reinforcement learning with
  adversarial attacks. AAMAS 2018. arXiv:1712.03632.
  Madry, Makelov, Schmidt, Tsipras, Vladu. Towards deep learning models resistant to
  adversarial attacks. ICLR 2018. arXiv:1706.06083.
  Lin, Hong, Liao, Shih, Liu, Sun. Tactics of adversarial attack on deep reinforcement
  learning agents. IJCAI 2017. arXiv:1703.06748.
  Zhang, Chen, Xiao, Li, Liu, Boning, Hsieh. Robust deep reinforcement learning against
  adversarial perturbations on state observations. NeurIPS 2020. arXiv:2003.08938.
"""

from __future__ import annotations

import weakref

import gymnasium as gym
import numpy as np
import tensorflow as tf

from attacks.fgsm import cross_entropy, gradient_step
from attacks.pgd import default_step_size, pgd_steps
from attacks.validation import check_eps
from lab.ball import uniform_in_ball
from lab.checks import (
    check_in_range,
    check_nonnegative_int,
    check_one_of,
    check_positive,
    check_positive_int,
)
from lab.compile_cache import cached_function

METHODS = ("random", "fgsm", "pgd")
OBJECTIVES = ("away", "toward", "mean_shift", "kl")
# Objectives whose gradient vanishes at the clean observation: the attack starts at random.
RANDOM_START_OBJECTIVES = ("mean_shift", "kl")


class ObservationAttack:
    """Perturbs observation batches against a policy network; ``attack(model, obs)``.

    Args:
      method: ``"random"``, ``"fgsm"`` or ``"pgd"``.
      eps: budget, >= 0, in units of ``eps_scale``; ``attack.eps`` is a ``tf.Variable`` to
        assign (an eps ramp) without retracing.
      objective: ``"away"``, ``"toward"``, ``"mean_shift"`` or ``"kl"`` (module docstring).
      eps_scale: optional per-feature scale of the flat observation (e.g. standard deviations).
      clip: optional ``(lo, hi)`` bounds of the flat observation; default unbounded.
      target: the action ``"toward"`` pushes to (an index into the logits).
      action_size: the number of action-mean outputs, for ``"mean_shift"`` (required) and
        ``"kl"`` against a Gaussian policy (whose outputs are then ``2 * action_size``: means,
        then log standard deviations); ``"kl"`` without it treats the outputs as logits.
      steps: PGD steps.
      restarts: PGD runs from independent random starts, >= 1; per observation the one with
        the highest objective is kept (``restarts`` times the cost).
      step_size: PGD step in units of ``eps_scale``; default ``2.5 eps / steps``.
      fraction: probability that an observation is attacked, in (0, 1].
      seed: seed of the attack's own random stream (used when no generator is passed).
    """

    def __init__(self, method: str, eps, *, objective: str = "away", eps_scale=None, clip=None,
                 target: int | None = None, action_size: int | None = None, steps: int = 10,
                 restarts: int = 1, step_size: float | None = None, fraction: float = 1.0,
                 seed: int = 0):
        check_one_of("method", method, METHODS)
        check_one_of("objective", objective, OBJECTIVES)
        check_eps(eps, clip, eps_scale=eps_scale)
        check_positive_int("steps", steps)
        check_positive_int("restarts", restarts)
        check_in_range("fraction", fraction, 0.0, 1.0, lo_open=True)
        check_nonnegative_int("seed", seed)
        if objective == "toward":
            check_nonnegative_int("target", target)
        if objective == "mean_shift" or (objective == "kl" and action_size is not None):
            check_positive_int("action_size", action_size)
        if step_size is not None:
            check_positive("step_size", step_size)
        self.method, self.objective = method, objective
        self.target, self.action_size = target, action_size
        self.steps, self.restarts = steps, restarts
        self.step_size, self.fraction = step_size, fraction
        self.eps = tf.Variable(float(eps), trainable=False, dtype=tf.float32, name="attack_eps")
        self.scale = None if eps_scale is None else tf.constant(eps_scale, tf.float32)
        self.clip = None if clip is None else tuple(tf.constant(b, tf.float32) for b in clip)
        self.generator = tf.random.Generator.from_seed(seed)

    def _reference_and_loss(self, clean):
        """What the attack compares the attacked output with, and the loss it ascends."""
        if self.objective == "away":
            return tf.argmax(clean, axis=-1, output_type=tf.int32), cross_entropy
        if self.objective == "toward":
            return tf.fill(tf.shape(clean)[:1], tf.constant(self.target, tf.int32)), cross_entropy
        k = self.action_size
        if self.objective == "kl":
            if k is None:
                return tf.stop_gradient(clean), categorical_kl
            return tf.stop_gradient(clean), lambda p, q: gaussian_kl(p, q, k)

        def mean_shift(clean_mean, outputs):
            return tf.reduce_sum(tf.square(outputs[:, :k] - clean_mean), axis=-1)
        return tf.stop_gradient(clean[:, :k]), mean_shift

    def _pgd_restarts(self, model, obs, y, loss, eps, step, seeds):
        """PGD from each seed's random start; per observation, the result with the highest
        objective (the lowest target loss for ``"toward"``); ties keep the earlier start."""
        targeted = self.objective == "toward"

        def run(r):
            candidate = pgd_steps(model, obs, y, eps, self.steps, step, seeds[:, r],
                                  random_start=True, targeted=targeted, clip=self.clip,
                                  scale=self.scale, loss=loss)
            if self.restarts == 1:
                return candidate, None  # nothing to compare: no extra forward pass
            score = loss(y, model(candidate, training=False))
            return candidate, -score if targeted else score

        best, best_score = run(0)
        for r in range(1, self.restarts):  # few: unrolled in the graph
            candidate, score = run(r)
            better = score > best_score
            best = tf.where(better[:, None], candidate, best)
            best_score = tf.where(better, score, best_score)
        return best

    def __call__(self, model, obs, generator: tf.random.Generator | None = None):
        """The attacked batch (graph-friendly: trace it into a ``tf.function``).

        Args:
          model: the policy network, ``model(obs, training=False)`` giving logits (Discrete)
            or action means first (Gaussian).
          obs: float32 ``[batch, features]``, the observations the policy would see.
          generator: the random stream to draw from; default the attack's own.
        """
        generator = generator or self.generator
        eps = self.eps
        seeds = generator.make_seeds(self.restarts if self.method == "pgd" else 1)
        seed = seeds[:, 0]
        if self.method == "random":
            attacked = uniform_in_ball(obs, eps, seed, self.clip, scale=self.scale)
        else:
            clean = model(obs, training=False)
            y, loss = self._reference_and_loss(clean)
            targeted = self.objective == "toward"
            random_start = self.method == "pgd" or self.objective in RANDOM_START_OBJECTIVES
            if self.method == "fgsm":
                # With a random start (mean_shift, kl), a step of 1.25 eps as in Wong et al.
                start = (uniform_in_ball(obs, eps, seed, self.clip, scale=self.scale)
                         if random_start else obs)
                step = 1.25 * eps if random_start else eps
                attacked = gradient_step(model, start, obs, y, eps, step, targeted=targeted,
                                         clip=self.clip, scale=self.scale, loss=loss)
            else:
                step = (default_step_size(eps, self.steps) if self.step_size is None
                        else tf.constant(self.step_size, tf.float32))
                attacked = self._pgd_restarts(model, obs, y, loss, eps, step, seeds)
        if self.fraction < 1.0:
            chosen = generator.uniform(tf.shape(obs)[:1]) < self.fraction
            attacked = tf.where(chosen[:, None], attacked, obs)
        return attacked


def categorical_kl(clean_logits, logits):
    """Per-example ``D(softmax(clean_logits) || softmax(logits))``, the KL divergence from the
    clean to the attacked action distribution of a Discrete policy.

    ``sum_a p(a) (log p(a) - log q(a))`` with both log-probabilities from ``log_softmax``
    (no ``log(0)`` where a probability underflows).

    Args:
      clean_logits: ``[batch, actions]``, the policy's logits on the clean observations.
      logits: ``[batch, actions]``, its logits on the attacked ones.

    Returns:
      ``[batch]``, each >= 0 (up to rounding).

    References:
      Zhang et al. Robust deep reinforcement learning against adversarial perturbations on
      state observations. NeurIPS 2020. arXiv:2003.08938.
    """
    log_p = tf.nn.log_softmax(clean_logits)
    return tf.reduce_sum(tf.exp(log_p) * (log_p - tf.nn.log_softmax(logits)), axis=-1)


def gaussian_kl(clean, outputs, action_size: int):
    """Per-example ``D(N(m1, s1) || N(m2, s2))`` between diagonal Gaussian policies whose
    outputs are ``concat([mean, log_std])``, ``action_size`` of each (``agents.policies``'
    ``GaussianHead`` layout):

        sum_i  log(s2_i / s1_i) + (s1_i^2 + (m1_i - m2_i)^2) / (2 s2_i^2) - 1/2.

    The KL between the pre-squash Gaussians equals the KL between the tanh-squashed action
    distributions (KL is invariant under the same invertible map of both).

    Args:
      clean: ``[batch, 2 * action_size]``, the outputs on the clean observations.
      outputs: ``[batch, 2 * action_size]``, the outputs on the attacked ones.
      action_size: the number of action dimensions, >= 1.

    Returns:
      ``[batch]``, each >= 0 (up to rounding).

    Raises:
      ValueError: the outputs' width (when known at trace time) is not ``2 * action_size``.
    """
    width = outputs.shape[-1]
    if width is not None and width != 2 * action_size:
        raise ValueError(f"a Gaussian policy's outputs must be concat([mean, log_std]), "
                         f"2 * action_size = {2 * action_size} wide. Received: outputs of "
                         f"width {width} with action_size={action_size}")
    m1, log_s1 = clean[:, :action_size], clean[:, action_size:]
    m2, log_s2 = outputs[:, :action_size], outputs[:, action_size:]
    # Ratios through exp of log differences: no division by a variance that underflows.
    ratio = tf.exp(2.0 * (log_s1 - log_s2))
    shift = tf.square(m1 - m2) * tf.exp(-2.0 * log_s2)
    return tf.reduce_sum(log_s2 - log_s1 + 0.5 * (ratio + shift) - 0.5, axis=-1)


def check_attackable(space: gym.Space, env_id: str | None = None) -> None:
    """Raises ``ValueError`` unless observations of ``space`` can be perturbed: a
    floating-point ``Box`` (an integer Box would round a perturbation to whole units, past the
    budget; a ``Discrete`` observation has no neighbourhood to search)."""
    if not (isinstance(space, gym.spaces.Box) and np.issubdtype(space.dtype, np.floating)):
        where = f" ({env_id})" if env_id else ""
        raise ValueError(f"observations must come from a floating-point Box space to be "
                         f"perturbed. Received: observation space {space}{where}")


class _Perturber:
    """``attack`` against ``model`` on NumPy observations of ``space``, compiled once per
    attack, model and observation size (cached on the attack: assigning ``attack.eps`` and
    wrapping a new environment reuses the compiled function)."""

    def __init__(self, space: gym.Space, model, attack: ObservationAttack):
        check_attackable(space)
        self.shape, self.dtype = space.shape, space.dtype
        size = int(np.prod(space.shape))

        def build():
            def perturb(obs):
                return attack(model, obs)
            # Called once per environment step, so its fixed cost is what matters: XLA and
            # the concrete function, as for the agent's acting (bench_policy_attacks.py).
            return tf.function(
                perturb, input_signature=[tf.TensorSpec([None, size], tf.float32)],
                jit_compile=True).get_concrete_function()

        self._attack = cached_function(attack, ("perturb", weakref.ref(model), size), build)

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        flat = np.asarray(obs, np.float32).reshape(len(obs), -1)
        return self._attack(flat).numpy().reshape(obs.shape).astype(self.dtype)


class AttackedObservations(gym.ObservationWrapper):
    """A single environment whose observations are attacked against ``model`` before the agent
    sees them; ``clean_observation`` holds the true one."""

    def __init__(self, env: gym.Env, model, attack: ObservationAttack):
        super().__init__(env)
        self._perturb = _Perturber(env.observation_space, model, attack)
        self.clean_observation = None

    def observation(self, observation):
        self.clean_observation = observation
        return self._perturb(np.asarray(observation)[None])[0]


class AttackedVectorObservations(gym.vector.VectorWrapper):
    """A vector environment whose observations are attacked, all sub-environments in one call,
    against ``model`` before the agent sees them. Any autoreset mode: ``final_obs`` in
    ``info`` stays true (no one acts on it), which is why gymnasium's
    ``VectorObservationWrapper`` (NEXT_STEP only) is not the base."""

    def __init__(self, env: gym.vector.VectorEnv, model, attack: ObservationAttack):
        super().__init__(env)
        self._perturb = _Perturber(env.single_observation_space, model, attack)

    def reset(self, **kwargs):
        observations, info = self.env.reset(**kwargs)
        return self._perturb(observations), info

    def step(self, actions):
        observations, rewards, terminated, truncated, info = self.env.step(actions)
        return self._perturb(observations), rewards, terminated, truncated, info


class ObjectivePerEnvironment:
    """An observation hook that attacks row ``i`` of each batch with ``attacks[i % k]``.

    The agent collects from a vector environment whose sub-environment ``i`` is always row
    ``i``: each training episode then faces one objective throughout, as an evaluation attack
    does (a consistent push toward one action is what the away-only training never saw).
    ``eps`` is shared: assigning it sets every attack's budget. An attack may be any hook
    with an ``eps`` variable: an ``ObservationAttack``, a
    ``attacks.learned_adversary.LearnedAdversaryHook``, or another ``ObjectivePerEnvironment``
    (first in the list: the others then share its ``eps``).

    When the attacks are single-start PGD differing only in their ``"away"`` or ``"toward"``
    objective (adversarial training's case), they run as one PGD whose rows each ascend or
    descend their own cross-entropy: a third of the work for three objectives, and the same
    numbers, bit for bit, as running each attack on the whole batch and keeping its rows.
    """

    def __init__(self, attacks):
        self.attacks = attacks
        self.eps = attacks[0].eps
        for attack in attacks[1:]:
            attack.eps = self.eps
        first = attacks[0]
        self._fused = all(
            isinstance(a, ObservationAttack) and a.method == "pgd"
            and a.objective in ("away", "toward") and a.restarts == 1 and a.fraction == 1.0
            and a.steps == first.steps and a.step_size == first.step_size
            and _same(a.scale, first.scale) and _same(a.clip, first.clip) for a in attacks)

    def __call__(self, model, obs, generator=None):
        rows = tf.range(tf.shape(obs)[0])
        choice = tf.stack([rows % len(self.attacks), rows], axis=1)
        if not self._fused:
            attacked = tf.stack([attack(model, obs, generator) for attack in self.attacks])
            return tf.gather_nd(attacked, choice)
        # Each attack's random start, drawn in the order the separate attacks draw them.
        first, eps = self.attacks[0], self.eps
        starts = tf.stack([uniform_in_ball(obs, eps, (generator or a.generator).make_seeds(1)[:, 0],
                                           first.clip, scale=first.scale) for a in self.attacks])
        clean = model(obs, training=False)
        labels = tf.stack([a._reference_and_loss(clean)[0] for a in self.attacks])
        toward = tf.gather(tf.constant([a.objective == "toward" for a in self.attacks]),
                           choice[:, 0])
        x_adv, y = tf.gather_nd(starts, choice), tf.gather_nd(labels, choice)
        step = (default_step_size(eps, first.steps) if first.step_size is None
                else tf.constant(first.step_size, tf.float32))
        for _ in range(first.steps):
            x_adv = gradient_step(model, x_adv, obs, y, eps, step, targeted=toward,
                                  clip=first.clip, scale=first.scale)
        return x_adv


def _same(a, b) -> bool:
    """Whether two optional constants (or tuples of them) hold the same values."""
    if a is None or b is None:
        return a is b
    return bool(np.array_equal(np.asarray(a), np.asarray(b)))


class ObservationRecorder(gym.vector.VectorWrapper):
    """Keeps every observation a vector environment returns, as float64 rows (``seen``): to
    measure their spread, the unit of an attack's ``eps_scale``."""

    def __init__(self, env):
        super().__init__(env)
        self.seen = []

    def _keep(self, observations):
        self.seen.append(np.array(observations, np.float64).reshape(len(observations), -1))
        return observations

    def reset(self, **kwargs):
        observations, info = self.env.reset(**kwargs)
        return self._keep(observations), info

    def step(self, actions):
        observations, *rest = self.env.step(actions)
        return (self._keep(observations), *rest)

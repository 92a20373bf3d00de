"""A learned adversary: the environment in which an RL agent learns to perturb a fixed victim
policy's observations (SA-RL, Zhang et al. 2021's "optimal attack").

For a fixed victim policy ``pi`` and an L-infinity budget, the strongest observation attack is
itself the optimal policy of an MDP (shown by Zhang et al. 2020, learned by Zhang et al.
2021): its states are the true
states ``s``, its actions the perturbations ``delta`` with ``|delta_i| <= eps * scale_i``, the
victim then acts on ``s + delta``, the environment moves on with that action, and the
adversary's reward is the victim's reward negated. Unlike the gradient attacks of
``attacks.observation``, it needs no gradient of the victim (any callable will do) and it
plans: a perturbation that costs the victim nothing now but leads it somewhere it cannot
recover from is worth as much as the fall itself.

``AdversaryEnv`` is that MDP as a gymnasium environment. Any RL agent can learn in it (an
experiment trains ``agents.Reinforce`` there: ``attacks`` never imports ``agents``):

- observations: the victim environment's true observations (its flat float ``Box``);
- actions: ``Box(-1, 1, (features,))``, the perturbation in units of the budget:
  ``perturbed = clip(obs + eps * eps_scale * clip(action, -1, 1), lo, hi)``;
- reward: minus the victim's reward; ``info["victim_reward"]`` holds the victim's own, and
  ``info["perturbed_observation"]`` what the victim saw;
- episodes end when the victim's do (terminated or truncated as the victim environment);
  ``spec.max_episode_steps`` is the victim environment's time limit, which an agent such as
  ``Reinforce`` reads.

``DirectorEnv`` is the same MDP for a victim with Discrete actions, with the adversary's
actions in the victim's action space: it names the action to induce, and a search over the
corners of the ball finds a perturbation that induces it (PA-AD's director and actor, Sun et
al. 2022). It has as many actions as the victim, and is learned far more easily.

An adversary's undiscounted return is exactly minus the victim's return in the same episodes:
``-Reinforce.evaluate`` on an ``AdversaryEnv`` is the victim's return under the learned
adversary. ``victim_returns`` plays any adversary callable and sums ``info["victim_reward"]``
directly; ``random_adversary`` is the control, uniform noise of the same budget (the
``"random"`` method of ``attacks.observation.ObservationAttack``).

References:
  Zhang, Chen, Boning, Hsieh. Robust reinforcement learning on state observations with learned
  optimal adversary. ICLR 2021. arXiv:2101.08452.
  Zhang, Chen, Xiao, Li, Liu, Boning, Hsieh. Robust deep reinforcement learning against
  adversarial perturbations on state observations. NeurIPS 2020. arXiv:2003.08938.
  Sun, Zheng, Liang, Huang. Who is the strongest enemy? Towards optimal and efficient
  evasion attacks in deep RL. ICLR 2022. arXiv:2106.05087.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import gymnasium as gym
import numpy as np
import tensorflow as tf
from gymnasium.envs.registration import EnvSpec

from attacks.observation import check_attackable
from attacks.validation import check_eps
from lab.checks import check_nonnegative_int, check_positive_int


class AdversaryEnv(gym.Env):
    """The victim's environment seen from the adversary: act by perturbing what the victim
    sees, earn what the victim loses.

    Args:
      env: the victim's environment: a ``gym.Env`` (this environment then owns and closes
        it), a gymnasium id, or a callable returning a ``gym.Env``. Its observations must be
        a floating-point ``Box``.
      victim: the victim's policy, ``victim(obs) -> actions`` on a float32 batch ``[1,
        features]`` of (perturbed, flattened) observations, returning a batch of actions the
        environment takes (e.g. ``lambda obs: agent.act(obs, deterministic=True)`` for a
        trained ``agents.Reinforce``, or the argmax of a Keras policy's logits). A fixed
        policy: it should be greedy, or seeded, for episodes to repeat.
      eps: the budget, >= 0, in units of ``eps_scale``; a settable attribute (an eps ramp:
        ``envs.set_attr("eps", value)`` on the vector environment an agent trains in).
      eps_scale: optional positive per-feature scale of the flat observation (e.g. each
        feature's standard deviation under the victim's clean play); default 1.
      clip: optional ``(lo, hi)`` bounds of the perturbed observation (numbers or per-feature
        arrays, e.g. the observation space's ``low`` and ``high``), which must hold every
        true observation the victim acts on; default unbounded.

    Raises:
      ValueError: the observations are not a floating-point ``Box``, ``victim`` is not
        callable, or ``eps``, ``eps_scale`` or ``clip`` are invalid (naming the argument and
        the value received).

    An ``AsyncVectorEnv`` (``Reinforce``'s ``vectorization="async"``) sends the factory to
    worker processes: pass ``functools.partial(AdversaryEnv, env_id, victim, eps=...)`` with
    a picklable victim (a module-level function or a picklable object, not a lambda); each
    worker then holds its own copy of the victim. ``"sync"`` (the default for an environment
    built by a callable) has no such constraint.
    """

    metadata = {"render_modes": []}

    def __init__(self, env: gym.Env | str | Callable[[], gym.Env],
                 victim: Callable[[np.ndarray], np.ndarray], eps, *, eps_scale=None,
                 clip=None):
        if not callable(victim):
            raise ValueError(f"victim must be callable as victim(obs_batch) -> actions. "
                             f"Received: victim={victim!r}")
        self.env = (env if isinstance(env, gym.Env)
                    else gym.make(env) if isinstance(env, str) else env())
        check_attackable(self.env.observation_space,
                         self.env.spec.id if self.env.spec is not None else None)
        self.victim = victim
        self.observation_space = self.env.observation_space
        self._size = int(np.prod(self.observation_space.shape))
        self.action_space = gym.spaces.Box(-1.0, 1.0, (self._size,), np.float32)
        self._clip, self._eps_scale = clip, eps_scale
        lo, hi, scale = check_eps(eps, clip, eps_scale=eps_scale, feature_shape=(self._size,))
        # float32 like the perturbed observation: a float64 bound would round past itself.
        self._lo, self._hi = (np.broadcast_to(b, self._size).astype(np.float32) for b in (lo, hi))
        self._bounded = bool(np.isfinite(self._lo).any() or np.isfinite(self._hi).any())
        self.scale = np.broadcast_to(scale, self._size).astype(np.float32)
        self.eps = eps
        victim_spec = self.env.spec
        # Agents read the time limit from the spec (Reinforce: spec.max_episode_steps). No
        # reward_threshold: when an attack has "solved" a victim is the experiment's call.
        self.spec = EnvSpec(
            id=f"{victim_spec.id}-adversary" if victim_spec is not None else "Adversary",
            max_episode_steps=victim_spec.max_episode_steps if victim_spec else None)
        self._obs = None

    @property
    def eps(self) -> float:
        """The budget, in units of ``eps_scale``; assign to ramp it (checked as at
        construction)."""
        return self._eps

    @eps.setter
    def eps(self, value):
        check_eps(value, self._clip, eps_scale=self._eps_scale, feature_shape=(self._size,))
        self._eps = float(value)

    def perturb(self, action) -> np.ndarray:
        """The observation the victim sees when the adversary plays ``action`` now: the
        current true observation plus ``eps * eps_scale * clip(action, -1, 1)``, inside
        ``clip``; flat, float32.

        Raises:
          ValueError: ``action`` does not hold ``features`` finite numbers, or the true
            observation lies outside ``clip`` (clipping would then move it past the budget:
            the bounds must hold every observation the victim acts on).
        """
        action = np.asarray(action, np.float32)
        if action.size != self._size or not np.all(np.isfinite(action)):
            raise ValueError(f"action must hold {self._size} finite numbers (one per "
                             f"observation feature). Received: action={action!r}")
        return self._perturbed(np.clip(action.reshape(1, -1), -1.0, 1.0))[0]

    def _perturbed(self, directions: np.ndarray) -> np.ndarray:
        """The true observation moved by each row of ``directions`` (``[k, features]``, in
        units of the budget, in [-1, 1]), inside ``clip``: ``[k, features]``."""
        obs = self._obs.reshape(-1).astype(np.float32)
        delta = np.float32(self._eps) * self.scale * directions
        if not self._bounded:  # the hot path of a search over many candidates
            return obs + delta
        outside = np.flatnonzero((obs < self._lo) | (obs > self._hi))
        if outside.size:
            i = outside[0]
            raise ValueError(f"clip must hold every true observation. Received: clip bounds "
                             f"[{self._lo[i]:.4g}, {self._hi[i]:.4g}] for feature {i}, whose "
                             f"true value is {obs[i]:.4g}")
        return np.clip(obs + delta, self._lo, self._hi).astype(np.float32)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        """Resets the victim's environment (``seed`` and ``options`` go to it)."""
        super().reset(seed=seed)
        self._obs, info = self.env.reset(seed=seed, options=options)
        return self._obs, info

    def step(self, action):
        """The victim acts on the perturbed observation; the true environment steps.

        Returns:
          ``(true next observation, -victim reward, terminated, truncated, info)``, with
          ``info`` the victim environment's plus ``victim_reward`` and
          ``perturbed_observation``.
        """
        if self._obs is None:
            raise RuntimeError("AdversaryEnv.step called before reset")
        perturbed, victim_action = self._victim_acts(action)
        self._obs, reward, terminated, truncated, info = self.env.step(victim_action)
        info = {**info, "victim_reward": float(reward),
                "perturbed_observation": perturbed.reshape(self.observation_space.shape)}
        return self._obs, -float(reward), terminated, truncated, info

    def _victim_acts(self, action):
        """What the victim sees when the adversary plays ``action``, and what it does."""
        perturbed = self.perturb(action)
        victim_action = np.asarray(self.victim(perturbed[None]))[0]
        if isinstance(self.env.action_space, gym.spaces.Discrete):
            victim_action = int(victim_action)
        return perturbed, victim_action

    def close(self):
        self.env.close()


# The corners of a ball of F features: 2**F candidates, one victim call on all of them.
MAX_DIRECTOR_FEATURES = 12


class DirectorEnv(AdversaryEnv):
    """The adversary's MDP for a victim with Discrete actions, in the victim's action space:
    the adversary names the action it wants the victim to take, and gets it if some
    perturbation inside the budget makes the victim take it.

    Against a deterministic, memoryless victim, a perturbation matters only through the
    action it makes the victim take: the environment moves on with that action, and the next
    perturbation is chosen afresh. So the optimal attack of ``AdversaryEnv`` is an optimal
    choice, at each step, among the actions reachable inside the ball; Sun et al. 2022
    (PA-AD) split it the same way into a *director* that learns which action to induce and
    an *actor* that finds the perturbation. The director's MDP has ``n`` actions where
    ``AdversaryEnv`` has a continuous perturbation per feature, which REINFORCE learns far more
    easily; and a victim that no random perturbation topples still gives it different returns to
    learn from.

    The actor here needs no gradient of the victim: it tries the true observation and the
    ``2**features`` corners of the ball (``obs + eps * eps_scale * s``, ``s`` in ``{-1,
    1}**features``, inside ``clip``) in one call of the victim, and plays the first of them
    (the true observation first: no perturbation when the victim already obliges) at which
    the victim takes the requested action. L-infinity attacks end at corners when the victim
    is close to linear across the ball, as a small network is; an action the victim takes
    only inside the ball is missed. If no candidate reaches it, the victim sees the true
    observation.

    Args:
      env, victim, eps, eps_scale, clip: as ``AdversaryEnv``; the victim environment's
        actions must be ``Discrete`` and its observations have at most
        ``MAX_DIRECTOR_FEATURES`` features.

    Actions are ``Discrete(n)``, the victim's action to induce; ``info["reached"]`` says
    whether the perturbation induced it. Observations, rewards, episode ends and
    ``info`` are as ``AdversaryEnv``'s.

    Raises:
      ValueError: as ``AdversaryEnv``, or the victim environment's actions are not
        ``Discrete``, or its observations have more than ``MAX_DIRECTOR_FEATURES`` features.

    References:
      Sun, Zheng, Liang, Huang. Who is the strongest enemy? Towards optimal and efficient
      evasion attacks in deep RL. ICLR 2022. arXiv:2106.05087.
    """

    def __init__(self, env, victim, eps, *, eps_scale=None, clip=None):
        super().__init__(env, victim, eps, eps_scale=eps_scale, clip=clip)
        if not isinstance(self.env.action_space, gym.spaces.Discrete):
            raise ValueError(f"a DirectorEnv victim needs Discrete actions (use AdversaryEnv "
                             f"otherwise). Received: action space {self.env.action_space}")
        if self._size > MAX_DIRECTOR_FEATURES:
            raise ValueError(f"a DirectorEnv tries the 2**features corners of the ball: "
                             f"features must be <= {MAX_DIRECTOR_FEATURES}. Received: "
                             f"{self._size} observation features")
        self.action_space = gym.spaces.Discrete(self.env.action_space.n,
                                                start=self.env.action_space.start)
        corners = itertools.product((-1.0, 1.0), repeat=self._size)
        self._directions = np.array([[0.0] * self._size, *corners], np.float32)
        self.reached = False

    def perturb(self, action) -> np.ndarray:
        """The observation the victim sees when the adversary asks for ``action`` now (sets
        ``reached``); flat, float32.

        Raises:
          ValueError: ``action`` is not one of the victim's actions, or the true observation
            lies outside ``clip`` (as ``AdversaryEnv.perturb``).
        """
        return self._victim_acts(action)[0]

    def step(self, action):
        """As ``AdversaryEnv.step``, with ``info["reached"]``."""
        obs, reward, terminated, truncated, info = super().step(action)
        return obs, reward, terminated, truncated, {**info, "reached": self.reached}

    def _victim_acts(self, action):
        space = self.action_space
        requested = np.asarray(action).reshape(-1)
        if (requested.size != 1 or requested[0] != np.round(requested[0])
                or not space.start <= requested[0] < space.start + space.n):
            raise ValueError(f"action must be one of the victim's actions, an integer in "
                             f"{space}. Received: action={action!r}")
        candidates = self._perturbed(self._directions)
        taken = np.asarray(self.victim(candidates)).reshape(-1)
        hits = np.flatnonzero(taken == requested[0])
        self.reached = bool(hits.size)
        chosen = hits[0] if hits.size else 0
        return candidates[chosen], int(taken[chosen])


class LearnedAdversaryHook:
    """A learned adversary as an observation hook: what ``AdversaryEnv`` (or, with
    ``director``, ``DirectorEnv``) shows the victim when the adversary acts, on a batch and
    inside a compiled function, so that the victim can train against it (ATLA alternates the
    two: the adversary learns against the victim, then the victim against the adversary).

    Called as ``hook(model, obs, generator=None)``, the ``observation_hook`` of
    ``agents.Reinforce`` (or one attack of ``attacks.observation.ObjectivePerEnvironment``):
    ``model`` is the victim's policy network, ``obs`` a float32 ``[batch, features]`` batch
    of true observations; returns the batch the victim sees. ``generator`` is not used: the
    adversary acts greedily.

    Args:
      adversary: ``adversary(obs) -> actions`` in TensorFlow, on the same batch: the
        adversary's greedy actions as its environment takes them (e.g. the trained
        ``agents.Reinforce``'s ``greedy_function()``): the perturbation in units of the
        budget (clipped to [-1, 1]), or with ``director`` the victim's action to induce.
      eps: the budget, >= 0, in units of ``eps_scale``; ``hook.eps`` is a ``tf.Variable``
        (assign it to ramp the budget; ``ObjectivePerEnvironment`` shares its own).
      eps_scale, clip: as ``AdversaryEnv``'s (the perturbed batch is clipped into ``clip``).
      director: ``DirectorEnv``'s actor: try the true observation, then the ``2**features``
        corners of the ball, and show the first at which the victim's greedy action (the
        argmax of ``model``'s logits, plus ``action_start``) is the one requested; the true
        observation if none is.
      action_start: the ``start`` of the victim's ``Discrete`` actions (with ``director``).

    Raises:
      ValueError: ``adversary`` is not callable, ``eps``, ``eps_scale`` or ``clip`` are
        invalid (naming the argument and the value received), or, when called with
        ``director``, the observations have more than ``MAX_DIRECTOR_FEATURES`` features.

    References:
      Zhang, Chen, Boning, Hsieh. Robust reinforcement learning on state observations with
      learned optimal adversary. ICLR 2021. arXiv:2101.08452.
    """

    def __init__(self, adversary: Callable[[tf.Tensor], tf.Tensor], eps, *, eps_scale=None,
                 clip=None, director: bool = False, action_start: int = 0):
        if not callable(adversary):
            raise ValueError(f"adversary must be callable as adversary(obs) -> actions. "
                             f"Received: adversary={adversary!r}")
        lo, hi, scale = check_eps(eps, clip, eps_scale=eps_scale)
        self.adversary, self.director = adversary, bool(director)
        self.action_start = int(action_start)
        self._lo, self._hi, self.scale = (tf.constant(v, tf.float32) for v in (lo, hi, scale))
        self.eps = tf.Variable(float(eps), trainable=False, dtype=tf.float32, name="eps")

    def __call__(self, model, obs, generator=None):
        radius = self.eps * self.scale
        if not self.director:
            directions = tf.clip_by_value(tf.cast(self.adversary(obs), tf.float32), -1.0, 1.0)
            return self._inside(obs + radius * tf.reshape(directions, tf.shape(obs)))
        features = int(obs.shape[-1])
        if features > MAX_DIRECTOR_FEATURES:
            raise ValueError(f"a director tries the 2**features corners of the ball: features "
                             f"must be <= {MAX_DIRECTOR_FEATURES}. Received: {features} "
                             f"observation features")
        directions = np.array([[0.0] * features,
                               *itertools.product((-1.0, 1.0), repeat=features)], np.float32)
        candidates = self._inside(obs[:, None, :] + radius * directions)
        logits = model(tf.reshape(candidates, [-1, features]), training=False)
        taken = tf.reshape(tf.argmax(logits, axis=-1) + self.action_start, [-1, len(directions)])
        requested = tf.reshape(tf.cast(self.adversary(obs), tf.int64), [-1, 1])
        # The first candidate the victim obliges at; none: the true observation (index 0).
        order = tf.range(len(directions), dtype=tf.int64)
        first = tf.reduce_min(tf.where(tf.equal(taken, requested), order, len(directions)),
                              axis=1)
        return tf.gather(candidates, tf.where(first < len(directions), first, 0), batch_dims=1)

    def _inside(self, x):
        return tf.clip_by_value(x, self._lo, self._hi)


def random_adversary(size: int, seed: int = 0) -> Callable[[np.ndarray], np.ndarray]:
    """The control adversary: ``adversary(obs_batch)`` draws each perturbation uniformly from
    the budget, ``[-1, 1]`` per feature (as ``ObservationAttack("random", ...)``).

    Args:
      size: the number of observation features, >= 1.
      seed: seed of its NumPy stream, >= 0.

    Returns:
      A callable mapping ``[batch, ...]`` observations to ``[batch, size]`` actions.
    """
    check_positive_int("size", size)
    check_nonnegative_int("seed", seed)
    rng = np.random.default_rng(seed)
    return lambda obs: rng.uniform(-1.0, 1.0, (len(obs), size)).astype(np.float32)


def victim_returns(env: AdversaryEnv, adversary: Callable[[np.ndarray], np.ndarray],
                   episodes: int = 10, seed: int = 0) -> np.ndarray:
    """The victim's undiscounted returns in ``episodes`` episodes against ``adversary``.

    Args:
      env: an ``AdversaryEnv`` (not closed here).
      adversary: ``adversary(obs_batch) -> actions``, a ``[1, ...]`` batch of true
        observations to a batch of perturbations in ``[-1, 1]`` (e.g. ``lambda obs:
        agent.act(obs, deterministic=True)`` for a ``Reinforce`` agent trained in ``env``,
        ``random_adversary``, or ``lambda obs: np.zeros((len(obs), size))``: no attack).
      episodes: number of episodes, >= 1.
      seed: episode ``k`` resets with ``seed + k``, >= 0.

    Returns:
      float64 ``[episodes]``: sums of ``info["victim_reward"]`` (equal to minus the
      adversary's returns).
    """
    check_positive_int("episodes", episodes)
    check_nonnegative_int("seed", seed)
    returns = np.zeros(episodes)
    for k in range(episodes):
        obs, _ = env.reset(seed=seed + k)
        done = False
        while not done:
            action = np.asarray(adversary(np.asarray(obs)[None]))[0]
            obs, _, terminated, truncated, info = env.step(action)
            returns[k] += info["victim_reward"]
            done = terminated or truncated
    return returns

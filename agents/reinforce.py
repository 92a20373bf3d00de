"""REINFORCE (Williams 1992) for gymnasium environments with Discrete or Box actions.

Each update plays one episode in each of ``num_envs`` vector sub-environments with the current
policy, then takes one gradient step on

    L(theta) = -mean_t[ log pi(a_t | s_t) * A_t ] - entropy_coef * mean_t[ H(pi(. | s_t)) ]

over all steps of those episodes, where ``A_t`` is, by option:

- ``baseline=False``: the discounted reward-to-go ``G_t = sum_k gamma^k r_{t+k}`` (REINFORCE
  with causality: a reward cannot be credited to later actions);
- ``baseline=True``: ``G_t - V(s_t)``, with ``V`` a separate network fitted to ``G_t`` by
  mean squared error (REINFORCE with a learned state-value baseline; Sutton & Barto 13.4).
  Time-limit truncations then bootstrap: ``G`` at the cut is ``r + gamma * V(final_obs)``.

``normalize_returns=True`` (default) standardizes ``A_t`` over the batch. ``max_grad_norm``
clips the policy gradient's global norm and ``l2`` adds a weight penalty, both through ``lab``.
An optional ``state_regularizer`` (``agents.regularizers``) adds the state-adversarial penalty
of Zhang et al. 2020 to the policy loss: the largest KL divergence between the policy at a
state and at a perturbed state in a small ball. Both updates are ``tf.function``s with fixed
input signatures. A policy step whose loss or gradient is NaN or infinite is skipped by
``lab.training`` (the weights stay as they were) and counted in the metrics
(``skipped_updates``); ``MAX_CONSECUTIVE_SKIPPED_UPDATES`` in a row stop ``train`` with
``NonFiniteUpdatesError`` naming the environment. Acting runs the policy network's forward pass
in NumPy (``agents.policies.HostForward``: the network is tiny and a TensorFlow call costs ten
times its arithmetic), with the weights the update just wrote; with an observation hook, acting
is one XLA-compiled TensorFlow call.

References:
  Williams. Simple statistical gradient-following algorithms for connectionist
  reinforcement learning. Machine Learning 1992.
  Sutton, Barto. Reinforcement Learning: An Introduction, 2nd ed., 2018, section 13.4.
  Zhang, Chen, Xiao, Li, Liu, Boning, Hsieh. Robust deep reinforcement learning against
  adversarial perturbations on state observations. NeurIPS 2020. arXiv:2003.08938.
"""

from __future__ import annotations

import dataclasses
import time
from collections import deque
from collections.abc import Callable
from dataclasses import field
from pathlib import Path

import gymnasium as gym
import keras
import numpy as np
import tensorflow as tf

from agents.policies import HostForward, mlp, observation_size, policy_class, preprocess
from agents.regularizers import StateAdversarialRegularizer
from agents.returns import discounted_returns, normalize
from agents.rollout import VECTORIZATION_MODES, EnvFactory, collect_episodes, make_vector_env
from agents.saving import COUNTERS, read_meta, restore, write_save
from lab.checks import (
    check_finite,
    check_in_range,
    check_one_of,
    check_positive,
    check_positive_int,
)
from lab.regularizers import WeightPenalty
from lab.training import make_train_step
from lab.transforms import ClipByGlobalNorm

# Not a ReinforceConfig field: it changes no update, and a new field would make every agent
# saved before it unloadable (agent.json must hold every field). Ten in a row is far beyond the
# odd overflow of a healthy run, and about a second of a broken one.
MAX_CONSECUTIVE_SKIPPED_UPDATES = 10


# A FloatingPointError (an ArithmeticError): what went wrong is arithmetic on NaN or inf, and
# callers that already catch NumPy's floating-point errors catch this one too.
class NonFiniteUpdatesError(FloatingPointError):
    """``Reinforce.train`` skipped ``MAX_CONSECUTIVE_SKIPPED_UPDATES`` updates in a row because
    their loss or gradient was NaN or infinite. ``env`` names the environment, ``consecutive``
    counts the skips. The agent holds the weights of its last applied update and can be saved.
    """

    def __init__(self, message: str, *, env: str, consecutive: int):
        super().__init__(message)
        self.env = env
        self.consecutive = consecutive


@dataclasses.dataclass(frozen=True)
class ReinforceConfig:
    """Every hyperparameter of the agent; the defaults solve CartPole-v1."""
    hidden_sizes: tuple[int, ...] = field(default=(32,), metadata={"help": "hidden layer widths"})
    activation: str = field(default="tanh", metadata={"help": "hidden layer activation"})
    learning_rate: float = field(default=0.03, metadata={"help": "policy Adam learning rate"})
    gamma: float = field(default=0.997, metadata={"help": "discount factor, in (0, 1]"})
    num_envs: int = field(default=8, metadata={"help": "episodes per update (vector envs)"})
    vectorization: str = field(default="auto", metadata={
        "help": "native (env's own vector implementation), sync, async (processes), or auto: "
                "native where gymnasium has one, else sync"})
    normalize_returns: bool = field(default=True, metadata={"help": "standardize advantages"})
    baseline: bool = field(default=False, metadata={"help": "learned value baseline"})
    value_learning_rate: float = field(default=0.01, metadata={"help": "baseline learning rate"})
    entropy_coef: float = field(default=0.0, metadata={"help": "entropy bonus weight"})
    max_grad_norm: float | None = field(default=None,
                                        metadata={"help": "clip policy gradient global norm"})
    l2: float = field(default=0.0, metadata={"help": "L2 penalty on policy kernels"})
    init_log_std: float = field(default=-0.5, metadata={"help": "Box: initial log std"})
    max_episode_steps: int | None = field(default=None,
                                          metadata={"help": "time limit (default: env's)"})
    seed: int = field(default=0, metadata={"help": "seeds envs, weights and sampling"})

    def __post_init__(self):
        if not self.hidden_sizes or any(int(h) < 1 for h in self.hidden_sizes):
            raise ValueError("hidden_sizes must be one or more integers >= 1. "
                             f"Received: hidden_sizes={self.hidden_sizes!r}")
        check_positive("learning_rate", self.learning_rate)
        check_positive("value_learning_rate", self.value_learning_rate)
        check_in_range("gamma", self.gamma, 0.0, 1.0, lo_open=True)
        check_positive_int("num_envs", self.num_envs)
        check_one_of("vectorization", self.vectorization, VECTORIZATION_MODES)
        check_positive("entropy_coef", self.entropy_coef, allow_zero=True)
        check_positive("l2", self.l2, allow_zero=True)
        check_finite("init_log_std", self.init_log_std)
        if self.max_grad_norm is not None:
            check_positive("max_grad_norm", self.max_grad_norm)
        if self.max_episode_steps is not None:
            check_positive_int("max_episode_steps", self.max_episode_steps)
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed must be a non-negative integer. Received: seed={self.seed!r}")


def reinforce_loss(policy, out, raw_actions, advantages, entropy_coef=0.0):
    """``-mean(log pi(a|s) * A) - entropy_coef * mean(H(pi(.|s)))``.

    Its gradient is the REINFORCE estimate of ``-grad J`` when ``advantages`` are the
    returns-to-go (minus a baseline) of on-policy samples.

    Args:
      policy: a ``CategoricalPolicy`` or ``GaussianPolicy``.
      out: the policy network's output on the batch of observations.
      raw_actions: the sampled raw actions.
      advantages: ``[batch]`` float32, treated as constants.
      entropy_coef: weight of the entropy bonus, ``>= 0``.
    """
    surrogate = -tf.reduce_mean(policy.log_prob(out, raw_actions) * advantages)
    if entropy_coef:
        surrogate -= entropy_coef * tf.reduce_mean(policy.entropy(out))
    return surrogate


class Reinforce:
    """A REINFORCE agent bound to one environment.

    Args:
      env: a registered gymnasium id (``"CartPole-v1"``) or a callable returning a
        ``gym.Env`` (picklable if ``vectorization="async"``).
      config: a ``ReinforceConfig``.
      observation_hook: optional ``hook(model, obs, generator) -> obs`` applied to every batch
        of (preprocessed, float32) observations the agent acts on while collecting, inside the
        compiled acting function: ``model`` is the policy network, ``generator`` the agent's
        ``tf.random.Generator`` (seeded per update, so a hook that draws from it keeps runs
        reproducible and resumable). The observations it returns are the ones the agent
        experiences: actions, log-probabilities and the update use them. An adversarial attack
        here gives adversarial training (``attacks.observation.ObservationAttack``). Evaluation
        and ``act`` do not apply it.
      state_regularizer: optional ``agents.regularizers.StateAdversarialRegularizer``, whose
        penalty the policy step adds to the loss (its random starts are seeded per update
        from ``(config.seed, updates)``, so runs stay reproducible and resumable). Each
        update's metrics then hold ``adversarial_kl``, the batch mean of the largest KL found
        (the penalty is ``kappa`` times it, and is part of ``loss``). Composes with
        ``observation_hook``: the penalty is taken on the observations the agent acted on.
        Default ``None``: the policy step is exactly the plain one.

    Raises:
      ValueError: for an unsupported observation or action space, or an environment with no
        time limit and no ``max_episode_steps``, or a ``state_regularizer`` on observations
        that are not a floating-point Box (or whose ``eps_scale`` does not fit them), before
        anything is trained.
    """

    def __init__(self, env: str | Callable[[], gym.Env],
                 config: ReinforceConfig = ReinforceConfig(),
                 *, observation_hook: Callable | None = None,
                 state_regularizer: StateAdversarialRegularizer | None = None):
        if observation_hook is not None and not callable(observation_hook):
            raise ValueError(f"observation_hook must be callable as hook(model, obs, generator). "
                             f"Received: observation_hook={observation_hook!r}")
        if state_regularizer is not None and not isinstance(state_regularizer,
                                                            StateAdversarialRegularizer):
            raise ValueError(f"state_regularizer must be an agents.regularizers."
                             f"StateAdversarialRegularizer or None. Received: "
                             f"state_regularizer={state_regularizer!r}")
        self.config = config
        self.observation_hook = observation_hook
        self.state_regularizer = state_regularizer
        self.env_factory = EnvFactory(env, config.max_episode_steps)
        probe = self.env_factory()
        try:
            self.observation_space = probe.observation_space
            self.action_space = probe.action_space
            self.max_steps = config.max_episode_steps or (
                probe.spec.max_episode_steps if probe.spec else None)
            self.reward_threshold = probe.spec.reward_threshold if probe.spec else None
            self.env_name = env if isinstance(env, str) else (
                probe.spec.id if probe.spec else getattr(env, "__qualname__", repr(env)))
        finally:
            probe.close()
        obs_size = observation_size(self.observation_space)
        build_policy = policy_class(self.action_space).build
        if self.max_steps is None:
            raise ValueError("the environment has no time limit: set max_episode_steps. "
                             "Received: max_episode_steps=None")
        if state_regularizer is not None:
            space = self.observation_space
            # An integer Box or a one-hot Discrete observation has no neighbourhood to search.
            if not (isinstance(space, gym.spaces.Box)
                    and np.issubdtype(space.dtype, np.floating)):
                raise ValueError(f"a state_regularizer needs observations from a floating-point "
                                 f"Box space. Received: observation space {space} "
                                 f"({self.env_name})")
            state_regularizer.check_observation_size(obs_size)
        keras.utils.set_random_seed(config.seed)
        self.policy = build_policy(
            obs_size, self.action_space, config.hidden_sizes, config.activation,
            init_log_std=config.init_log_std)
        self.value = (mlp(obs_size, config.hidden_sizes, config.activation,
                          keras.layers.Dense(1), "value") if config.baseline else None)
        self._build_functions(obs_size)
        # act's own stream: a child of the seed that no update's (seed, updates) collides with.
        self._act_rng = np.random.default_rng(np.random.SeedSequence(config.seed).spawn(1)[0])
        self.envs = None
        self.env_steps = self.episodes = self.updates = 0
        # Updates skipped as non-finite since the last applied one (saved with the agent).
        self.consecutive_skipped_updates = 0
        self._updating = False

    def _build_functions(self, obs_size):
        """The compiled functions: acting through a hook, the policy and value steps."""
        config, policy = self.config, self.policy
        self.generator = tf.random.Generator.from_seed(config.seed)
        obs_spec = tf.TensorSpec([None, obs_size], tf.float32)
        raw_spec = tf.TensorSpec([None, *policy.raw_shape], policy.raw_dtype)
        adv_spec = tf.TensorSpec([None], tf.float32)

        # Acting without a hook runs in NumPy (HostForward): for a network this small the cost
        # of calling TensorFlow from Python, even compiled with XLA, dwarfs the arithmetic.
        # A hook (an attack, say) is TensorFlow code: it runs with
        # the network in one compiled call, no extra round trip.
        hook = self.observation_hook
        self._host = HostForward(policy.model)

        @tf.function(input_signature=[obs_spec], jit_compile=True)
        def sample_through_hook(obs):
            seen = hook(policy.model, obs, self.generator)
            return policy.sample(policy.model(seen, training=False), self.generator), seen

        def policy_loss(y, out):
            raw_actions, advantages = y
            return reinforce_loss(policy, out, raw_actions, advantages, config.entropy_coef)

        self._hooked_function = sample_through_hook if hook is not None else None
        self._hooked = sample_through_hook.get_concrete_function() if hook is not None else None
        penalties = [WeightPenalty(l2=config.l2)] if config.l2 else []
        if self.state_regularizer is not None:
            # Variables, so that a new seed per update and the reported value need no retrace.
            self._regularizer_seed = tf.Variable(tf.zeros([2], tf.int64), trainable=False,
                                                 name="state_regularizer_seed")
            self._adversarial_kl = tf.Variable(0.0, trainable=False, name="adversarial_kl")
            penalties.append(self.state_regularizer.as_penalty(
                policy.kl, self._regularizer_seed, record=self._adversarial_kl))
        self._policy_step = make_train_step(
            policy.model, policy_loss, keras.optimizers.Adam(config.learning_rate),
            transform=ClipByGlobalNorm(config.max_grad_norm) if config.max_grad_norm else None,
            penalties=penalties, input_signature=(obs_spec, (raw_spec, adv_spec)))
        if self.value is not None:
            value = self.value

            @tf.function(input_signature=[obs_spec])
            def predict_value(obs):
                return value(obs, training=False)[:, 0]

            self._value = predict_value
            self._value_step = make_train_step(
                value, lambda y, v: tf.reduce_mean(tf.square(v[:, 0] - y)),
                keras.optimizers.Adam(config.value_learning_rate),
                input_signature=(obs_spec, adv_spec))

    @property
    def trace_counts(self) -> dict:
        """Traces per compiled function: 1 each however long training runs."""
        counts = {"policy_update": self._policy_step.trace_count}
        if self.value is not None:
            counts["value_update"] = self._value_step.trace_count
        if self._hooked_function is not None:
            counts["act_through_hook"] = self._hooked_function.experimental_get_tracing_count()
        return counts

    # -- acting ------------------------------------------------------------------------------

    def _preprocess(self, obs):
        return preprocess(self.observation_space, obs)

    def _acting(self, deterministic: bool, rng: np.random.Generator | None = None):
        """``act(preprocessed_obs) -> raw actions`` with the policy's current weights."""
        self._host.sync()
        forward, policy = self._host.forward, self.policy
        if deterministic:
            return lambda obs: policy.host_mode(forward(obs))
        rng = self._act_rng if rng is None else rng
        return lambda obs: policy.host_sample(forward(obs), rng)

    def act(self, obs, deterministic: bool = False) -> np.ndarray:
        """Actions for a batch of raw observations, as ``env.step`` takes them (sampled from
        a stream seeded by ``config.seed`` and independent of training's)."""
        return self.policy.to_env(self._acting(deterministic)(self._preprocess(obs)))

    def greedy_function(self) -> Callable[[tf.Tensor], tf.Tensor]:
        """``policy(obs) -> actions`` in TensorFlow, on a float32 batch of preprocessed (flat)
        observations, reading the current weights at each call: the greedy action as
        ``env.step`` takes it (flat for ``Box``). For this agent acting inside another's
        compiled function, e.g. a learned adversary in a victim's ``observation_hook``
        (``attacks.learned_adversary.LearnedAdversaryHook``)."""
        policy = self.policy
        return lambda obs: policy.greedy(policy.model(obs, training=False))

    def set_learning_rate(self, value: float) -> None:
        """Sets the policy's Adam learning rate from the next update on (lower, say, to
        fine-tune a trained agent); ``config`` records it, and a save keeps it.

        Raises:
          ValueError: ``value`` is not a positive number (naming ``learning_rate``).
        """
        self.config = dataclasses.replace(self.config, learning_rate=value)
        self._policy_step.optimizer.learning_rate.assign(value)

    def greedy_policy(self) -> Callable[[np.ndarray], np.ndarray]:
        """``policy(obs) -> actions``: the greedy actions of the current weights, frozen now
        (a NumPy forward pass: about ten times cheaper per call than ``act``, which rereads
        the weights each time). For a trained agent played by others, e.g. the victim of an
        ``attacks.learned_adversary.AdversaryEnv``."""
        host = HostForward(self.policy.model)
        host.sync()
        policy = self.policy
        return lambda obs: policy.to_env(policy.host_mode(host.forward(self._preprocess(obs))))

    def evaluate(self, env: gym.Env | None = None, episodes: int = 10,
                 deterministic: bool = True, seed: int | None = None) -> np.ndarray:
        """Undiscounted returns of ``episodes`` episodes played one at a time.

        Args:
          env: a single (not vector) environment; default, a new one like the training envs.
          episodes: number of episodes, >= 1.
          deterministic: the most likely action (mean for Box) instead of a sample.
          seed: seed of the first reset; ``None`` draws a fresh one.
        """
        check_positive_int("episodes", episodes)
        own_env = env is None
        env = self.env_factory() if own_env else env
        returns, act = [], self._acting(deterministic)
        try:
            for k in range(episodes):
                obs, _ = env.reset(seed=None if seed is None else seed + k)
                total, done = 0.0, False
                while not done:
                    raw = act(self._preprocess(np.asarray(obs)[None]))
                    action = self.policy.to_env(raw)[0]
                    obs, reward, terminated, truncated, _ = env.step(action)
                    total += float(reward)
                    done = terminated or truncated
                returns.append(total)
        finally:
            if own_env:
                env.close()
        return np.asarray(returns)

    def evaluate_parallel(self, episodes: int = 10, *, seed: int = 0,
                          deterministic: bool = True,
                          wrap: Callable[[gym.vector.VectorEnv], gym.vector.VectorEnv] | None = None
                          ) -> np.ndarray:
        """Undiscounted returns of ``episodes`` episodes played at once, one per
        sub-environment of a vector environment like the training one (one policy call per
        step for all of them: much faster than ``evaluate`` for many episodes).

        Args:
          episodes: number of episodes, >= 1.
          seed: seed of the reset (sub-environment ``i`` gets ``seed + i``) and, when
            sampling, of the actions.
          deterministic: the most likely action (mean for Box) instead of a sample.
          wrap: optional ``wrap(envs) -> envs`` around the vector environment, e.g. an
            observation attack (``attacks.observation.AttackedVectorObservations``).
        """
        check_positive_int("episodes", episodes)
        envs = make_vector_env(self.env_factory, episodes, self.config.vectorization)
        try:
            if wrap is not None:
                envs = wrap(envs)
            act = self._acting(deterministic, np.random.default_rng(seed))
            batch = collect_episodes(envs, act, self._preprocess, self.policy.to_env,
                                     seed=seed, max_steps=self.max_steps)
        finally:
            envs.close()
        return batch.returns

    # -- learning ----------------------------------------------------------------------------

    def imitate(self, obs, actions, *, steps: int = 500, learning_rate: float = 0.01) -> float:
        """Behaviour cloning: fits the greedy policy to ``actions`` on ``obs`` by full-batch
        Adam (the policy's ``imitation_loss``), e.g. to start an agent from a known
        controller before ``train``. Touches only the policy's weights (its own optimizer,
        not training's; counters unchanged).

        Args:
          obs: a batch of raw observations.
          actions: the actions to imitate, one per observation, as ``env.step`` takes them.
          steps: Adam steps, >= 1.
          learning_rate: > 0.

        Returns:
          The imitation loss at the last step (before its update).
        """
        check_positive_int("steps", steps)
        check_positive("learning_rate", learning_rate)
        x = tf.constant(self._preprocess(obs))
        y = tf.constant(np.asarray(actions))
        if x.shape[0] != y.shape[0] or x.shape[0] == 0:
            raise ValueError(f"obs and actions must hold the same number (>= 1) of entries. "
                             f"Received: {x.shape[0]} observations, {y.shape[0]} actions")
        model, policy = self.policy.model, self.policy
        optimizer = keras.optimizers.Adam(learning_rate)

        @tf.function
        def step():
            with tf.GradientTape() as tape:
                loss = policy.imitation_loss(model(x, training=True), y)
            pairs = [(g, v) for g, v in zip(tape.gradient(loss, model.trainable_variables),
                                            model.trainable_variables) if g is not None]
            optimizer.apply_gradients(pairs)
            return loss

        for _ in range(steps):
            loss = step()
        return float(loss)

    def collect(self):
        """One on-policy batch: an episode in each sub-environment.

        The environments' reset and the action sampling are seeded from ``(config.seed,
        updates)``, so a batch depends only on the agent's weights and update count: a saved
        and loaded agent continues exactly as one that never stopped, and ``act`` calls
        between updates do not change what training sees.
        """
        if self.envs is None:
            self.envs = make_vector_env(self.env_factory, self.config.num_envs,
                                        self.config.vectorization)
        env_seed, sampling_seed = np.random.SeedSequence(
            [self.config.seed, self.updates]).generate_state(2)
        if self._hooked is None:
            act = self._acting(False, np.random.default_rng(sampling_seed))
        else:
            self.generator.reset_from_seed(int(sampling_seed))
            act = lambda obs: tuple(t.numpy() for t in self._hooked(tf.constant(obs)))
        return collect_episodes(self.envs, act, self._preprocess, self.policy.to_env,
                                seed=int(env_seed), max_steps=self.max_steps)

    def update(self, batch) -> dict:
        """One gradient step on ``batch`` (from ``collect``); counts its environment steps,
        episodes and the update; returns its metrics.

        A step with a NaN or infinite loss or gradient is skipped (``lab.training``): the
        policy keeps its weights, the update still counts, ``skipped_updates`` in the metrics
        (the total so far) goes up, and so does ``consecutive_skipped_updates``, which an
        applied step puts back to 0. An exception inside (a Ctrl-C) can leave new weights with
        old counters: ``consistent`` is then False. A run that saves to resume holds Ctrl-C
        back around training (``experiments.interrupts``).
        """
        self._updating = True
        valid, config = batch.valid, self.config
        obs = batch.obs[valid]
        x = tf.constant(obs)
        # Returns-to-go; with a baseline, truncated episodes bootstrap from V(final_obs).
        bootstrap = values = None
        if self.value is not None:
            flat_final = batch.final_obs.reshape(-1, batch.final_obs.shape[-1])
            bootstrap = self._value(tf.constant(flat_final)).numpy().reshape(valid.shape)
            values = self._value(x).numpy()
        returns = discounted_returns(batch.rewards, batch.terminated, batch.truncated,
                                     config.gamma, bootstrap)[valid]
        advantages = returns - values if values is not None else returns
        if config.normalize_returns:
            advantages = normalize(advantages)
        # The entropy of the policy that collected the batch, over the batch's states.
        self._host.sync()
        entropy = float(self.policy.host_entropy(self._host.forward(obs)).mean())
        if self.state_regularizer is not None:
            # The penalty's random starts: a child of (seed, updates), apart from collect's.
            self._regularizer_seed.assign(np.random.SeedSequence(
                [config.seed, self.updates]).spawn(1)[0].generate_state(2).astype(np.int64))
        # Policy step on the REINFORCE loss (skipped if non-finite), then the value step.
        step = self._policy_step(x, (tf.constant(batch.raw_actions[valid]),
                                     tf.constant(advantages, tf.float32)))
        self.consecutive_skipped_updates = (
            0 if bool(step.applied) else self.consecutive_skipped_updates + 1)
        metrics = {"loss": float(step.loss), "grad_norm": float(step.grad_norm),
                   "entropy": entropy, "skipped_updates": int(self._policy_step.skipped)}
        if self.state_regularizer is not None:
            metrics["adversarial_kl"] = float(self._adversarial_kl)
        if self.value is not None:
            metrics["value_loss"] = float(self._value_step(x, tf.constant(returns,
                                                                          tf.float32)).loss)
        self.updates += 1
        self.env_steps += batch.env_steps
        self.episodes += valid.shape[1]
        self._updating = False
        return metrics

    @property
    def consistent(self) -> bool:
        """False only if an update was interrupted half-way: then weights, optimizer and
        counters may disagree, and the agent should not be saved to resume."""
        return not self._updating

    def train(self, total_steps: int, *, callback: Callable[[dict], None] | None = None,
              progress: bool = False) -> list[dict]:
        """Collects and updates until ``total_steps`` more environment steps are simulated.

        Args:
          total_steps: environment steps to run (every sub-environment step counts).
          callback: called after each update with its metrics row; may raise ``StopIteration``
            to end training early (e.g. once solved). A callback that saves the agent saves a
            state that resumes exactly.
          progress: show a tqdm progress bar with the mean return of the last 100 episodes
            (on a terminal only).

        Returns:
          One metrics row per update: ``env_steps``, ``episodes``, ``mean_return`` (of this
          update's episodes), ``mean_length``, ``loss``, ``grad_norm``, ``entropy`` (of the
          policy that collected the batch, mean over its states), ``skipped_updates`` (updates
          skipped so far for a NaN or infinite loss or gradient, counted over the agent's
          life), ``value_loss`` with a baseline, ``adversarial_kl`` with a
          ``state_regularizer``, ``wall_seconds`` since ``train`` started, and
          ``episode_returns`` (the returns of the update's episodes).

        Raises:
          NonFiniteUpdatesError: ``MAX_CONSECUTIVE_SKIPPED_UPDATES`` updates in a row were
            skipped as non-finite (raised after the last one's callback). One skipped update
            between applied ones does not stop training.
        """
        check_positive_int("total_steps", total_steps)
        history, start, target = [], time.perf_counter(), self.env_steps + total_steps
        bar = _ProgressBar(total_steps) if progress else None
        try:
            while self.env_steps < target:
                batch = self.collect()
                metrics = self.update(batch)
                row = {"env_steps": self.env_steps, "episodes": self.episodes,
                       "mean_return": float(batch.returns.mean()),
                       "mean_length": float(batch.lengths.mean()), **metrics,
                       "wall_seconds": time.perf_counter() - start,
                       "episode_returns": batch.returns.tolist()}
                history.append(row)
                if bar is not None:
                    bar.show(batch.env_steps, row["episode_returns"])
                if callback is not None:
                    try:
                        callback(row)
                    except StopIteration:
                        break
                if self.consecutive_skipped_updates >= MAX_CONSECUTIVE_SKIPPED_UPDATES:
                    raise self._non_finite_error()
        finally:
            if bar is not None:
                bar.close()
        return history

    def _non_finite_error(self) -> NonFiniteUpdatesError:
        n = self.consecutive_skipped_updates
        return NonFiniteUpdatesError(
            f"Reinforce on env {self.env_name!r}: the last {n} consecutive updates were "
            f"skipped because their loss or gradient was NaN or infinite (updates "
            f"{self.updates - n + 1} to {self.updates}). Likely the environment returns NaN or "
            f"infinite observations or rewards, or the policy diverged (try a lower "
            f"learning_rate or max_grad_norm). The agent keeps the weights of its last applied "
            f"update and can be saved.", env=self.env_name, consecutive=n)

    def close(self):
        if self.envs is not None:
            self.envs.close()
            self.envs = None

    # -- saving (agents.saving) --------------------------------------------------------------

    def _trackables(self) -> dict:
        """What a save holds besides the config and counters: networks, optimizers, skips."""
        steps = {"policy": self._policy_step}
        if self.value is not None:
            steps["value"] = self._value_step
        return {key: value for name, step in steps.items() for key, value in (
            (name, step.model), (f"{name}_optimizer", step.optimizer),
            (f"{name}_skipped", step.skipped))}

    def save(self, path) -> Path:
        """Saves everything the agent needs to act and to continue training into the folder
        ``path``: the networks, both optimizers' state (Adam's moments and step count), the
        counters and the config (``agent.json``). The random streams need no saving:
        ``collect`` (and ``update``, for a state regularizer) seeds them from the update count.

        An earlier save in ``path`` is replaced; a crash or Ctrl-C while saving leaves it
        complete (``agents.saving``). ``Reinforce.load(path)`` then ``train(...)`` continues
        exactly as if training had never stopped.

        Raises:
          ValueError: ``path`` is a folder with other files in it (not an earlier save),
            which replacing it would delete.
        """
        env = self.env_factory.env
        meta = {"env": env if isinstance(env, str) else None,
                "config": dataclasses.asdict(self.config),
                **{name: getattr(self, name) for name in COUNTERS}}
        return write_save(path, meta, self._trackables())

    @classmethod
    def load(cls, path, env: str | Callable[[], gym.Env] | None = None, *,
             observation_hook: Callable | None = None,
             state_regularizer: StateAdversarialRegularizer | None = None) -> Reinforce:
        """Loads an agent saved with ``save``, ready to act or to continue training.

        Args:
          path: the folder ``save`` wrote.
          env: the environment, if it was not a registered gymnasium id. A saved id of the
            form ``"module:Env"`` is not used unless passed here: gymnasium would import
            ``module``, and loading a file must not run code it names.
          observation_hook: as for the constructor (a hook is code: it is never saved).
          state_regularizer: as for the constructor; not saved either (nor its ``eps``, which
            a schedule sets): a resumed run passes the one it trained with.

        Raises:
          ValueError: the folder is not a save, or a save of an older gradlab (format 1 or 2:
            its policy network is in ``policy.keras``, which ``keras.models.load_model``
            reads), or ``agent.json`` is malformed (invalid JSON, a missing or unknown field, a
            value of the wrong type or out of range; the message names the file and the
            field), or the state files are missing or damaged.
        """
        meta = read_meta(path, ReinforceConfig)
        if env is None:
            env = meta["env"]
            if env is None:
                raise ValueError("env must be given: the agent was trained on an environment "
                                 "built by a callable. Received: env=None")
            if ":" in env:
                raise ValueError(
                    f"{Path(path) / 'agent.json'}: env {env!r} names a Python module to import "
                    f"({env.split(':')[0]!r}); a saved file is never allowed to import code. "
                    f"If you trust it, pass env={env!r} to Reinforce.load.")
        agent = cls(env, meta["config"], observation_hook=observation_hook,
                    state_regularizer=state_regularizer)
        restore(path, meta, agent._trackables())
        for name in COUNTERS:
            setattr(agent, name, meta[name])
        return agent


class _ProgressBar:
    """tqdm over environment steps, with the mean return of the last 100 episodes
    (gymnasium's "solved" window); ``disable=None``: quiet when output is not a terminal."""

    def __init__(self, total_steps: int):
        from tqdm.auto import tqdm
        self.bar = tqdm(total=total_steps, unit="step", dynamic_ncols=True, leave=False,
                        disable=None)
        self.last_100 = deque(maxlen=100)

    def show(self, env_steps: int, episode_returns: list):
        self.last_100.extend(episode_returns)
        self.bar.update(min(env_steps, self.bar.total - self.bar.n))  # the last overshoots
        self.bar.set_postfix(mean_return_last_100=f"{np.mean(self.last_100):.1f}")

    def close(self):
        self.bar.close()

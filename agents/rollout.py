"""Episodes from gymnasium vector environments.

``make_vector_env`` builds the vector environment:

- ``"native"``: the environment's own vectorized implementation where gymnasium registers one
  (``vector_entry_point``; CartPole's is NumPy over all copies at once, about half the
  stepping cost of ``SyncVectorEnv`` here). These run in ``AutoresetMode.NEXT_STEP``.
- ``"sync"`` / ``"async"``: ``SyncVectorEnv`` / ``AsyncVectorEnv`` (worker processes) over
  copies of the environment, in ``AutoresetMode.SAME_STEP``.

``collect_episodes`` handles both autoreset modes explicitly. In ``SAME_STEP`` mode, the step
that ends an episode already returns the next episode's first observation and puts the true
last one in ``info["final_obs"]``; in ``NEXT_STEP`` mode, the ending step returns the true
last observation and the *following* step performs the reset. Either way the collector keeps
the true last observation (to bootstrap time-limit truncations) and uses no transition after
an episode's end.

It runs one episode in every sub-environment with one policy, so a batch is exactly
on-policy. All sub-environments step together until the longest episode ends; environments
that finished earlier keep stepping (their steps are counted, their data dropped).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import gymnasium as gym
import numpy as np

SAME_STEP = gym.vector.AutoresetMode.SAME_STEP
NEXT_STEP = gym.vector.AutoresetMode.NEXT_STEP
VECTORIZATION_MODES = ("auto", "native", "sync", "async")


@dataclasses.dataclass(frozen=True)
class EnvFactory:
    """Picklable ``() -> gym.Env`` (``AsyncVectorEnv`` sends it to worker processes)."""
    env: str | Callable[[], gym.Env]
    max_episode_steps: int | None = None

    def __call__(self) -> gym.Env:
        env = gym.make(self.env) if isinstance(self.env, str) else self.env()
        if self.max_episode_steps is not None:
            env = gym.wrappers.TimeLimit(env, self.max_episode_steps)
        return env


def has_native_vector_env(factory: EnvFactory) -> bool:
    """Whether gymnasium registers a vectorized implementation for ``factory``'s env id."""
    return (isinstance(factory.env, str) and factory.max_episode_steps is None
            and gym.spec(factory.env).vector_entry_point is not None)


def make_vector_env(factory: EnvFactory, num_envs: int, mode: str = "auto"):
    """``num_envs`` copies of ``factory()`` stepped together.

    Args:
      factory: makes one environment.
      num_envs: number of copies, >= 1.
      mode: ``"native"`` (the env's own vector implementation), ``"sync"``, ``"async"``, or
        ``"auto"``: native where gymnasium has one, else sync.
    """
    if mode not in VECTORIZATION_MODES:
        raise ValueError(f"mode must be one of {VECTORIZATION_MODES}. Received: mode={mode!r}")
    native = has_native_vector_env(factory)
    if mode == "native" and not native:
        raise ValueError(f"mode='native' needs a gymnasium id with a vector_entry_point and no "
                         f"max_episode_steps override. Received: env={factory.env!r}")
    if mode in ("auto", "native") and native:
        return gym.make_vec(factory.env, num_envs, vectorization_mode="vector_entry_point")
    fns = [factory] * num_envs
    if mode == "async":
        # "spawn": forking a process that has TensorFlow's thread pools running can deadlock.
        return gym.vector.AsyncVectorEnv(fns, context="spawn", autoreset_mode=SAME_STEP)
    return gym.vector.SyncVectorEnv(fns, autoreset_mode=SAME_STEP)


@dataclasses.dataclass
class Episodes:
    """One episode per sub-environment, time-major ``[T, num_envs]``; ``valid`` marks the
    steps that belong to those episodes (later steps are another episode, not used)."""
    obs: np.ndarray            # [T, N, obs_size] float32, preprocessed
    raw_actions: np.ndarray    # [T, N, ...] what the policy sampled
    rewards: np.ndarray        # [T, N]
    terminated: np.ndarray     # [T, N] bool
    truncated: np.ndarray      # [T, N] bool
    valid: np.ndarray          # [T, N] bool
    final_obs: np.ndarray      # [T, N, obs_size]: last observation where truncated, else 0
    env_steps: int             # every step simulated, used or not

    @property
    def returns(self) -> np.ndarray:
        """Undiscounted return of each episode, ``[N]``."""
        return np.where(self.valid, self.rewards, 0.0).sum(axis=0)

    @property
    def lengths(self) -> np.ndarray:
        return self.valid.sum(axis=0)


def collect_episodes(envs, act: Callable[[np.ndarray], np.ndarray],
                     preprocess: Callable[[np.ndarray], np.ndarray],
                     to_env: Callable[[np.ndarray], np.ndarray], *, seed: int | None = None,
                     max_steps: int) -> Episodes:
    """Runs one episode per sub-environment of ``envs`` with the policy ``act``.

    Args:
      envs: a vector env in ``SAME_STEP`` or ``NEXT_STEP`` autoreset mode.
      act: maps a preprocessed observation batch to raw actions (a compiled policy call), or
        to ``(raw_actions, observations)`` when the policy acted on other observations than
        it was given (an observation hook): those are then the ones recorded.
      preprocess: maps raw observations to the policy's float32 input.
      to_env: maps raw actions to the actions ``envs.step`` takes.
      seed: seeds the reset (first call of a run); ``None`` continues the envs' RNG streams.
      max_steps: episodes still running after this many steps are truncated here.

    Returns:
      ``Episodes``.
    """
    autoreset = envs.metadata.get("autoreset_mode", NEXT_STEP)
    if autoreset not in (SAME_STEP, NEXT_STEP):
        raise ValueError(f"envs must autoreset in SAME_STEP or NEXT_STEP mode. "
                         f"Received: autoreset_mode={autoreset}")
    obs, _ = envs.reset(seed=seed)
    obs = preprocess(obs)
    n = obs.shape[0]
    active = np.ones(n, bool)
    no_final = np.zeros_like(obs)  # shared by the steps where nothing was truncated
    rows = {k: [] for k in ("obs", "raw", "rewards", "terminated", "truncated", "valid",
                            "final")}
    appends = [rows[k].append for k in rows]
    for t in range(max_steps):
        raw = act(obs)
        seen = obs
        if isinstance(raw, tuple):
            raw, seen = raw
        next_obs, rewards, terminated, truncated, info = envs.step(to_env(raw))
        next_obs = preprocess(next_obs)
        if t == max_steps - 1:  # the collector's own cut: bootstrap from the current obs
            truncated = truncated | ~terminated
        final = no_final
        if truncated.any():
            # SAME_STEP: envs that ended were reset already; their last obs is in
            # info["final_obs"]. NEXT_STEP, or a cut made here: next_obs is the last obs.
            final = np.zeros_like(obs)
            reset_by_env = (info.get("_final_obs", np.zeros(n, bool)) if autoreset == SAME_STEP
                            else np.zeros(n, bool))
            for i in np.flatnonzero(truncated):
                final[i] = (preprocess(info["final_obs"][i][None])[0] if reset_by_env[i]
                            else next_obs[i])
        for append, value in zip(appends, (seen, raw, rewards, terminated, truncated, active,
                                           final)):
            append(value)
        active = active & ~(terminated | truncated)  # a new array: the row above keeps its own
        obs = next_obs
        if not active.any():
            break
    stacked = {k: np.stack(v) for k, v in rows.items()}
    return Episodes(obs=stacked["obs"], raw_actions=stacked["raw"],
                    rewards=stacked["rewards"].astype(np.float64),
                    terminated=stacked["terminated"], truncated=stacked["truncated"],
                    valid=stacked["valid"], final_obs=stacked["final"],
                    env_steps=len(rows["obs"]) * n)

"""Episodes from gymnasium vector environments.

``make_vector_env`` builds a ``SyncVectorEnv`` (or ``AsyncVectorEnv``) in gymnasium's
``AutoresetMode.SAME_STEP``: when a sub-environment's episode ends, ``step`` returns the first
observation of the next episode in the same call and puts the true last observation in
``info["final_obs"]``. The collector below relies on that mode: it reads ``final_obs`` to
bootstrap time-limit truncations, and there are no dummy transitions to skip.

``collect_episodes`` runs one episode in every sub-environment with one policy, so a batch is
exactly on-policy. All sub-environments step together until the longest episode ends;
environments that finished earlier keep stepping (their steps are counted, their data
dropped).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import gymnasium as gym
import numpy as np

AUTORESET_MODE = gym.vector.AutoresetMode.SAME_STEP


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


def make_vector_env(factory: EnvFactory, num_envs: int, asynchronous: bool = False):
    """``num_envs`` copies of ``factory()`` stepped together, in ``SAME_STEP`` autoreset mode."""
    fns = [factory] * num_envs
    if asynchronous:
        # "spawn": forking a process that has TensorFlow's thread pools running can deadlock.
        return gym.vector.AsyncVectorEnv(fns, context="spawn", autoreset_mode=AUTORESET_MODE)
    return gym.vector.SyncVectorEnv(fns, autoreset_mode=AUTORESET_MODE)


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
      envs: a vector env in ``SAME_STEP`` autoreset mode (``make_vector_env``).
      act: maps a preprocessed observation batch to raw actions (a compiled policy call).
      preprocess: maps raw observations to the policy's float32 input.
      to_env: maps raw actions to the actions ``envs.step`` takes.
      seed: seeds the reset (first call of a run); ``None`` continues the envs' RNG streams.
      max_steps: episodes still running after this many steps are truncated here.

    Returns:
      ``Episodes``.
    """
    obs, _ = envs.reset(seed=seed)
    obs = preprocess(obs)
    n = obs.shape[0]
    active = np.ones(n, bool)
    rows = {k: [] for k in ("obs", "raw", "rewards", "terminated", "truncated", "valid",
                            "final")}
    for t in range(max_steps):
        raw = act(obs)
        next_obs, rewards, terminated, truncated, info = envs.step(to_env(raw))
        next_obs = preprocess(next_obs)
        if t == max_steps - 1:  # the collector's own cut: bootstrap from the current obs
            truncated = truncated | ~terminated
        final = np.zeros_like(obs)
        if truncated.any():
            # Envs that ended have been reset already: their last obs is in info["final_obs"].
            # A cut made here (not by the env) leaves next_obs as the last obs.
            reset_by_env = info.get("_final_obs", np.zeros(n, bool))
            for i in np.flatnonzero(truncated):
                final[i] = (preprocess(info["final_obs"][i][None])[0] if reset_by_env[i]
                            else next_obs[i])
        for key, value in (("obs", obs), ("raw", raw), ("rewards", rewards),
                           ("terminated", terminated), ("truncated", truncated),
                           ("valid", active.copy()), ("final", final)):
            rows[key].append(value)
        active &= ~(terminated | truncated)
        obs = next_obs
        if not active.any():
            break
    stacked = {k: np.stack(v) for k, v in rows.items()}
    return Episodes(obs=stacked["obs"], raw_actions=stacked["raw"],
                    rewards=stacked["rewards"].astype(np.float64),
                    terminated=stacked["terminated"], truncated=stacked["truncated"],
                    valid=stacked["valid"], final_obs=stacked["final"],
                    env_steps=len(rows["obs"]) * n)

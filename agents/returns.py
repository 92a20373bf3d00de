"""Discounted returns-to-go and their normalization, for batches from vector environments.

Arrays are time-major, ``[T, num_envs]`` (a single trajectory may be ``[T]``). Step ``t`` of
environment ``i`` ended an episode when ``terminated[t, i]`` or ``truncated[t, i]``; the next
row then belongs to a new episode, so returns never leak across episodes. The two endings are
different (as gymnasium means them):

- ``terminated``: the MDP reached a terminal state; nothing follows, the return stops.
- ``truncated``: a time limit (or other outside cut) stopped a non-terminal state; the
  return that *would* have followed is ``V(final_obs)``, which a learned baseline provides
  through ``bootstrap_values``. Without one it counts as 0, which is the exact return of the
  finite-horizon episode that was played.
"""

from __future__ import annotations

import numpy as np

from lab.checks import check_in_range


def discounted_returns(rewards, terminated, truncated, gamma: float,
                       bootstrap_values=None) -> np.ndarray:
    """Reward-to-go ``G_t = r_t + gamma * G_{t+1}`` within each episode.

    At an episode's last step ``G_t = r_t`` if it terminated and
    ``r_t + gamma * bootstrap_values[t]`` if it was truncated.

    Args:
      rewards: ``[T]`` or ``[T, num_envs]`` rewards.
      terminated: same shape, bool: the step reached a terminal state.
      truncated: same shape, bool: the episode was cut after the step (time limit).
      gamma: discount factor in ``(0, 1]``.
      bootstrap_values: optional, same shape: ``V(final_obs)`` at truncated steps (other
        entries are ignored). ``None`` means 0.

    Returns:
      ``G`` with the shape of ``rewards``, float64.

    Steps after the last episode end in a column (an unfinished episode) get the return of
    the rewards seen so far; callers drop or bootstrap them.
    """
    check_in_range("gamma", gamma, 0.0, 1.0, lo_open=True)
    rewards = np.asarray(rewards, np.float64)
    terminated = np.asarray(terminated, bool)
    truncated = np.asarray(truncated, bool)
    if terminated.shape != rewards.shape or truncated.shape != rewards.shape:
        raise ValueError(
            f"terminated and truncated must have the shape of rewards, {rewards.shape}. "
            f"Received: terminated {terminated.shape}, truncated {truncated.shape}")
    bootstrap = (np.zeros_like(rewards) if bootstrap_values is None
                 else np.asarray(bootstrap_values, np.float64))
    if bootstrap.shape != rewards.shape:
        raise ValueError(f"bootstrap_values must have the shape of rewards, {rewards.shape}. "
                         f"Received: {bootstrap.shape}")
    # What follows step t: G_{t+1} if the episode goes on, V(final_obs) if it was truncated
    # (and not terminated), 0 if it terminated: after_t = goes_on_t * G_{t+1} + cut_t.
    goes_on = ~(terminated | truncated)
    cut = np.where(truncated & ~terminated, bootstrap, 0.0)
    returns = np.empty_like(rewards)
    following = np.zeros_like(rewards[0])  # G_{t+1} of the episode step t belongs to
    for t in range(rewards.shape[0] - 1, -1, -1):
        # np.where, not goes_on * following: a NaN or inf of the next episode must not leak in.
        following = rewards[t] + gamma * (np.where(goes_on[t], following, 0.0) + cut[t])
        returns[t] = following
    return returns


def normalize(values, eps: float = 1e-8) -> np.ndarray:
    """``(values - mean) / (std + eps)`` over all entries: the usual variance reduction for
    policy-gradient returns or advantages (scale-free learning rate across environments)."""
    values = np.asarray(values, np.float64)
    return (values - values.mean()) / (values.std() + eps)

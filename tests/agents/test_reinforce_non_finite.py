"""``agents.Reinforce`` on environments that give NaN or infinite data: skipped updates are
counted in the metrics, and a run of them stops training with an error naming the env."""

import math

import gymnasium as gym
import numpy as np
import pytest

from agents import NonFiniteUpdatesError, Reinforce, ReinforceConfig
from agents.reinforce import MAX_CONSECUTIVE_SKIPPED_UPDATES


class Walk(gym.Env):
    """obs = step count / 5, ``reward`` every step (1 unless given), never terminates; with
    ``nan_observations`` every observation is NaN."""
    observation_space = gym.spaces.Box(-np.inf, np.inf, (2,), np.float32)
    action_space = gym.spaces.Discrete(2)

    def __init__(self, reward=1.0, nan_observations=False):
        self.reward = reward
        self.nan_observations = nan_observations

    def _obs(self):
        value = math.nan if self.nan_observations else self.t / 5
        return np.array([value, 1.0], np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return self._obs(), {}

    def step(self, action):
        self.t += 1
        return self._obs(), self.reward, False, False, {}


NAN_OBSERVATIONS = "gradlab_test/NanObservations-v0"
REWARD_IDS = {"nan": "gradlab_test/NanRewards-v0", "inf": "gradlab_test/InfRewards-v0"}
gym.register(NAN_OBSERVATIONS, entry_point=Walk, max_episode_steps=5,
             kwargs={"nan_observations": True})
for name, env_id in REWARD_IDS.items():
    gym.register(env_id, entry_point=Walk, max_episode_steps=5, kwargs={"reward": float(name)})

# What the environments here do on purpose: gymnasium's checker and NumPy say so.
pytestmark = [pytest.mark.filterwarnings("ignore:.*(NaN|inf value|not within the observation)"),
              pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")]
CONFIG = ReinforceConfig(seed=0, num_envs=2)  # an update: 2 episodes of 5 steps


def _train_until_error(agent):
    rows = []
    with pytest.raises(NonFiniteUpdatesError) as error:
        agent.train(10_000, callback=rows.append)  # a budget of 1,000 updates
    return rows, error.value


def test_nan_observations_stop_training_with_an_error_naming_the_env(tmp_path):
    agent = Reinforce(NAN_OBSERVATIONS, CONFIG)
    initial = agent.policy.model.get_weights()
    rows, error = _train_until_error(agent)
    agent.close()
    assert MAX_CONSECUTIVE_SKIPPED_UPDATES == 10
    message = str(error)
    assert f"env {NAN_OBSERVATIONS!r}" in message and "last 10 consecutive updates" in message
    assert "NaN or infinite observations or rewards" in message and "diverged" in message
    assert error.env == NAN_OBSERVATIONS and error.consecutive == 10
    # Stopped at the tenth skip, every one of them in the callback's rows.
    assert agent.updates == 10
    assert [row["skipped_updates"] for row in rows] == list(range(1, 11))
    # Consistent: the last good (here the initial) weights, and it saves and loads.
    assert agent.consistent
    for before, after in zip(initial, agent.policy.model.get_weights()):
        np.testing.assert_array_equal(before, after)
    agent.save(tmp_path / "agent")
    loaded = Reinforce.load(tmp_path / "agent")
    assert loaded.updates == 10 and loaded.consecutive_skipped_updates == 10


@pytest.mark.parametrize("reward, baseline", [("nan", False), ("inf", True)])
def test_nan_or_infinite_rewards_stop_training_with_an_error_naming_the_env(reward, baseline):
    env_id = REWARD_IDS[reward]
    agent = Reinforce(env_id, ReinforceConfig(seed=0, num_envs=2, baseline=baseline))
    rows, error = _train_until_error(agent)
    agent.close()
    assert f"env {env_id!r}" in str(error) and error.consecutive == 10
    assert agent.updates == 10 and rows[-1]["skipped_updates"] == 10


def test_consecutive_skips_survive_save_and_load(tmp_path):
    agent = Reinforce(NAN_OBSERVATIONS, CONFIG)
    for _ in range(6):  # update() counts but does not stop: train() decides
        agent.update(agent.collect())
    agent.close()
    assert agent.consecutive_skipped_updates == 6
    agent.save(tmp_path / "agent")
    resumed = Reinforce.load(tmp_path / "agent")
    rows, error = _train_until_error(resumed)
    resumed.close()
    # Four more make ten in a row, as for an agent that never stopped.
    assert len(rows) == 4 and resumed.updates == 10 and error.consecutive == 10


def test_a_finite_environment_skips_no_update():
    agent = Reinforce("CartPole-v1", ReinforceConfig(seed=0, num_envs=4))
    rows = []
    agent.train(2000, callback=rows.append)
    agent.close()
    assert len(rows) > 5 and all(row["skipped_updates"] == 0 for row in rows)
    assert agent.consecutive_skipped_updates == 0


class OneNanReward(Walk):
    """Reward 1, except NaN once: at the ``nan_at``-th step of all instances together."""

    def __init__(self, steps: list, nan_at: int):
        super().__init__()
        self.steps, self.nan_at = steps, nan_at

    def step(self, action):
        obs, reward, terminated, truncated, info = super().step(action)
        self.steps.append(1)
        return obs, math.nan if len(self.steps) == self.nan_at else reward, terminated, \
            truncated, info


def test_one_non_finite_update_between_finite_ones_does_not_stop_training():
    steps = []  # shared by every instance, so that only one step of the run is NaN
    agent = Reinforce(lambda: OneNanReward(steps, nan_at=25),
                      ReinforceConfig(seed=0, num_envs=2, max_episode_steps=5))
    rows = []
    agent.train(200, callback=rows.append)  # 20 updates; the third holds the NaN reward
    agent.close()
    assert len(rows) == 20
    assert [row["skipped_updates"] for row in rows] == [0, 0] + [1] * 18
    assert agent.consecutive_skipped_updates == 0
    assert all(np.isfinite(row["loss"]) for i, row in enumerate(rows) if i != 2)

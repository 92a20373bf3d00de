"""Saving, loading and resuming ``agents.Reinforce``: a loaded agent continues exactly."""

import json
import shutil

import gymnasium as gym
import numpy as np
import pytest

from agents import Reinforce, ReinforceConfig


def _train(agent, updates):
    rows = []
    for _ in range(updates):
        batch = agent.collect()
        metrics = agent.update(batch)
        rows.append((batch.returns.tolist(), metrics))
    return rows


@pytest.mark.parametrize("baseline", [False, True])
def test_a_saved_and_loaded_agent_continues_exactly_as_one_that_never_stopped(tmp_path,
                                                                              baseline):
    config = ReinforceConfig(seed=5, num_envs=4, baseline=baseline)
    straight = Reinforce("CartPole-v1", config)
    expected = _train(straight, 6)

    first = Reinforce("CartPole-v1", config)
    head = _train(first, 3)
    first.save(tmp_path / "agent")
    first.close()
    resumed = Reinforce.load(tmp_path / "agent")
    tail = _train(resumed, 3)

    assert head + tail == expected  # returns and every metric, bit for bit
    for a, b in zip(straight.policy.model.get_weights(), resumed.policy.model.get_weights()):
        np.testing.assert_array_equal(a, b)
    # Adam continues: its step count and moments came back.
    assert int(resumed._policy_step.optimizer.iterations) == 6
    steps = [(straight._policy_step, resumed._policy_step)]
    if baseline:
        steps.append((straight._value_step, resumed._value_step))
    for a, b in steps:
        for x, y in zip(a.optimizer.variables, b.optimizer.variables, strict=True):
            np.testing.assert_array_equal(x.numpy(), y.numpy())
    assert resumed.updates == 6 and resumed.trace_counts["policy_update"] == 1
    straight.close()
    resumed.close()


def test_saving_replaces_the_folder_as_a_whole_and_refuses_a_foreign_one(tmp_path):
    agent = Reinforce("CartPole-v1", ReinforceConfig(seed=0, num_envs=2))
    agent.save(tmp_path / "agent")
    (tmp_path / "agent" / "stale.txt").write_text("from an older save")
    agent.save(tmp_path / "agent")
    assert not (tmp_path / "agent" / "stale.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["agent"]  # no temporaries left
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("a user's file")
    with pytest.raises(ValueError, match="path must be a new or empty folder"):
        agent.save(tmp_path / "mine")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "a user's file"


def test_a_crash_while_saving_leaves_the_previous_save(tmp_path, monkeypatch):
    config = ReinforceConfig(seed=1, num_envs=2)
    agent = Reinforce("CartPole-v1", config)
    _train(agent, 1)
    agent.save(tmp_path / "agent")
    expected = _train(Reinforce.load(tmp_path / "agent"), 2)
    _train(agent, 1)

    def crash(*args):  # Ctrl-C after the new state files, before agent.json is replaced
        raise KeyboardInterrupt

    monkeypatch.setattr("agents.saving.os.replace", crash)
    with pytest.raises(KeyboardInterrupt):
        agent.save(tmp_path / "agent")
    monkeypatch.undo()
    assert _train(Reinforce.load(tmp_path / "agent"), 2) == expected  # the first save, whole
    agent.save(tmp_path / "agent")  # and the next save cleans up after the crashed one
    assert sorted(p.name for p in (tmp_path / "agent").iterdir()) == [
        "agent.json", "state-3.data-00000-of-00001", "state-3.index"]
    assert Reinforce.load(tmp_path / "agent").updates == 2


def test_damaged_state_files_are_named(tmp_path):
    path = Reinforce("CartPole-v1", ReinforceConfig(seed=0, num_envs=2)).save(tmp_path / "a")
    (path / "state-1.index").unlink()
    with pytest.raises(ValueError, match=r"state-1: cannot restore the saved networks"):
        Reinforce.load(path)


@pytest.fixture(scope="module")
def saved_agent(tmp_path_factory):
    path = tmp_path_factory.mktemp("saved") / "agent"
    Reinforce("CartPole-v1", ReinforceConfig(seed=0, num_envs=2)).save(path)
    return path


def _edited(saved_agent, tmp_path, edit):
    path = tmp_path / "agent"
    shutil.copytree(saved_agent, path)
    meta_path = path / "agent.json"
    text = edit(meta_path.read_text())
    meta_path.write_text(text)
    return path


def _json_edit(change):
    def edit(text):
        meta = json.loads(text)
        change(meta)
        return json.dumps(meta)
    return edit


@pytest.mark.parametrize("edit, message", [
    (lambda text: text[:-10], r"agent\.json: not valid JSON"),
    (_json_edit(lambda m: m.pop("updates")), r"agent\.json: field 'updates' is missing"),
    (_json_edit(lambda m: m["config"].pop("learning_rate")),
     r"agent\.json: config field 'learning_rate' is missing"),
    (_json_edit(lambda m: m["config"].update(lr=0.1)),
     r"agent\.json: config field 'lr' is not a ReinforceConfig field"),
    (_json_edit(lambda m: m["config"].update(gamma=2.0)),
     r"agent\.json: config: gamma must be in \(0\.0, 1\.0\]"),
    (_json_edit(lambda m: m.update(env_steps=-1)),
     r"agent\.json: env_steps must be an integer >= 0"),
    (_json_edit(lambda m: m["config"].update(normalize_returns="no")),
     r"agent\.json: config field 'normalize_returns' must be true or false"),
    (_json_edit(lambda m: m["config"].update(hidden_sizes=[32.5])),
     r"agent\.json: config field 'hidden_sizes' must be a list of integers"),
    (_json_edit(lambda m: m["config"].update(learning_rate="0.03")),
     r"agent\.json: config field 'learning_rate' must be a number"),
    (_json_edit(lambda m: m["config"].update(max_grad_norm="1")),
     r"agent\.json: config field 'max_grad_norm' must be a number or null"),
    (_json_edit(lambda m: m.pop("state")), r"agent\.json: field 'state' is missing"),
    (_json_edit(lambda m: m.update(format=True)), r"agent\.json: format must be 3"),
    (_json_edit(lambda m: m.update(format=2)),
     r"agent\.json: written by an older gradlab \(format 2\).*policy\.keras "
     r"\(keras\.models\.load_model reads it\)"),
    (_json_edit(lambda m: m.update(env="os:system")),
     r"agent\.json: env 'os:system' names a Python module to import \('os'\)"),
])
def test_load_names_the_file_and_the_field_of_a_bad_save(saved_agent, tmp_path, edit, message):
    path = _edited(saved_agent, tmp_path, edit)
    with pytest.raises(ValueError, match=message):
        Reinforce.load(path)


def test_a_module_env_id_is_used_only_when_the_caller_passes_it(saved_agent, tmp_path):
    path = _edited(saved_agent, tmp_path,
                   _json_edit(lambda m: m.update(env="gymnasium.envs.classic_control:CartPoleEnv")))
    with pytest.raises(ValueError, match="never allowed to import code"):
        Reinforce.load(path)
    agent = Reinforce.load(path, env="CartPole-v1")
    assert agent.config.seed == 0


class GridBox(gym.Env):
    """A (2, 2) Box action: reward is minus the squared distance of the action to a target."""
    observation_space = gym.spaces.Box(-1, 1, (3,), np.float32)
    action_space = gym.spaces.Box(-2.0, 2.0, (2, 2), np.float32)
    target = np.array([[1.0, -1.0], [0.5, 0.0]], np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return np.zeros(3, np.float32), {}

    def step(self, action):
        assert action.shape == (2, 2) and self.action_space.contains(action)
        reward = -float(np.sum((action - self.target) ** 2))
        return np.zeros(3, np.float32), reward, False, False, {}


def test_a_box_action_space_of_any_shape_is_flattened_and_learns():
    agent = Reinforce(GridBox, ReinforceConfig(seed=0, num_envs=8, learning_rate=0.05,
                                               max_episode_steps=5))
    assert agent.act(np.zeros((3, 3), np.float32)).shape == (3, 2, 2)
    before = agent.evaluate(episodes=1)[0]
    agent.train(4000)
    after = agent.evaluate(episodes=1)[0]
    agent.close()
    # The untrained mean action is ~0: 5 steps of a squared distance of 1 + 1 + 0.25.
    assert before == pytest.approx(-11.25, abs=0.2)
    assert after > -3.0  # the mean moved most of the way to the target


def test_ctrl_c_during_collection_leaves_a_state_that_resumes_exactly(tmp_path, monkeypatch):
    config = ReinforceConfig(seed=2, num_envs=3)
    expected = _train(Reinforce("CartPole-v1", config), 4)

    agent = Reinforce("CartPole-v1", config)
    head = _train(agent, 2)
    calls = []
    original = agent._acting

    def acting(*args):
        act = original(*args)

        def interrupted(obs):  # Ctrl-C in the middle of the third batch's episodes
            calls.append(1)
            if len(calls) == 5:
                raise KeyboardInterrupt
            return act(obs)
        return interrupted

    agent._acting = acting
    with pytest.raises(KeyboardInterrupt):
        agent.train(10_000)
    agent.save(tmp_path / "agent")
    tail = _train(Reinforce.load(tmp_path / "agent"), 2)
    assert head + tail == expected


def test_a_new_learning_rate_is_used_recorded_and_saved(tmp_path):
    agent = Reinforce("CartPole-v1", ReinforceConfig(num_envs=2, learning_rate=0.02, seed=0))
    with pytest.raises(ValueError, match="learning_rate must be > 0. Received: learning_rate=0.0"):
        agent.set_learning_rate(0.0)
    agent.set_learning_rate(0.005)
    assert agent.config.learning_rate == 0.005
    # It trains exactly as an agent built with that rate.
    built = Reinforce("CartPole-v1", ReinforceConfig(num_envs=2, learning_rate=0.005, seed=0))
    agent.train(300), built.train(300)
    for w, b in zip(agent.policy.model.weights, built.policy.model.weights):
        np.testing.assert_array_equal(w.numpy(), b.numpy())
    agent.save(tmp_path / "agent")
    loaded = Reinforce.load(tmp_path / "agent")
    assert loaded.config.learning_rate == 0.005
    assert float(loaded._policy_step.optimizer.learning_rate.numpy()) == pytest.approx(0.005)

import gymnasium as gym
import numpy as np
import pytest
import tensorflow as tf

from agents import Reinforce, ReinforceConfig
from agents.policies import CategoricalPolicy
from agents.reinforce import reinforce_loss
from agents.rollout import EnvFactory, collect_episodes, make_vector_env


class Counter(gym.Env):
    """obs = step count, reward 1 per step, never terminates (a time limit cuts it)."""
    observation_space = gym.spaces.Box(0, np.inf, (1,), np.float32)
    action_space = gym.spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return np.array([0.0], np.float32), {}

    def step(self, action):
        self.t += 1
        return np.array([self.t], np.float32), 1.0, False, False, {}


@pytest.mark.parametrize("mode", [gym.vector.AutoresetMode.SAME_STEP,
                                  gym.vector.AutoresetMode.NEXT_STEP])
def test_collector_marks_truncation_and_keeps_the_final_observation(mode):
    envs = gym.vector.SyncVectorEnv([EnvFactory(Counter, max_episode_steps=3)] * 2,
                                    autoreset_mode=mode)
    batch = collect_episodes(envs, lambda obs: np.zeros(len(obs), np.int32),
                             lambda obs: np.asarray(obs, np.float32), lambda a: a,
                             seed=0, max_steps=10)
    np.testing.assert_array_equal(batch.truncated[:, 0], [False, False, True])
    assert not batch.terminated.any() and batch.valid.all()
    # The last observation of the cut episode, not the first of the next one.
    np.testing.assert_array_equal(batch.final_obs[2, :, 0], [3.0, 3.0])
    np.testing.assert_array_equal(batch.returns, [3.0, 3.0])
    assert batch.env_steps == 6


@pytest.mark.parametrize("mode", ["native", "sync", "async"])
def test_every_vectorization_mode_collects_whole_episodes(mode):
    agent = Reinforce("CartPole-v1", ReinforceConfig(seed=0, num_envs=3, vectorization=mode))
    batch = agent.collect()
    agent.close()
    lengths = batch.lengths
    assert np.all(lengths >= 8) and batch.valid.shape[0] == lengths.max()
    # CartPole pays 1 per step until it falls: return equals length, nothing after the end.
    np.testing.assert_array_equal(batch.returns, lengths)
    assert batch.terminated[lengths - 1, np.arange(3)].all()


def test_native_mode_needs_an_env_that_has_one():
    with pytest.raises(ValueError, match="mode='native' needs a gymnasium id"):
        make_vector_env(EnvFactory(Counter, max_episode_steps=3), 2, "native")


def test_policy_gradient_of_a_bandit_against_finite_differences():
    # One state, two actions with rewards r; J(theta) = sum_a pi(a) r_a. Feeding each action
    # once with advantage 2 pi(a) r_a makes the mean in the loss an exact expectation, so the
    # loss gradient must equal -dJ/dtheta.
    tf.keras.utils.set_random_seed(0)
    policy = CategoricalPolicy.build(1, gym.spaces.Discrete(2), (3,), "tanh")
    x = tf.ones((2, 1))
    r = np.array([1.0, 3.0])
    expected_return = lambda: float(tf.reduce_sum(tf.nn.softmax(policy.model(x[:1]))[0] * r))
    probs = tf.nn.softmax(policy.model(x[:1]))[0].numpy()
    with tf.GradientTape() as tape:
        loss = reinforce_loss(policy, policy.model(x), tf.constant([0, 1]),
                              tf.constant(2 * probs * r, tf.float32))
    grads = tape.gradient(loss, policy.model.trainable_variables)
    h = 1e-3
    for v, g in zip(policy.model.trainable_variables, grads):
        base = v.numpy()
        for idx in np.ndindex(base.shape):
            shifted = base.copy()
            shifted[idx] += h
            v.assign(shifted)
            up = expected_return()
            shifted[idx] -= 2 * h
            v.assign(shifted)
            down = expected_return()
            v.assign(base)
            np.testing.assert_allclose(-g.numpy()[idx], (up - down) / (2 * h), atol=2e-4)


def _short_run(seed, updates=3, **config):
    agent = Reinforce("CartPole-v1", ReinforceConfig(seed=seed, **config))
    history = []
    for _ in range(updates):
        batch = agent.collect()
        agent.update(batch)
        history.append(batch.returns.tolist())
    agent.close()
    return agent, history


def test_same_seed_same_returns_other_seed_other_returns():
    _, first = _short_run(3, baseline=True)
    _, again = _short_run(3, baseline=True)
    _, other = _short_run(4, baseline=True)
    assert first == again
    assert first != other


def test_compiled_functions_trace_once():
    agent = Reinforce("CartPole-v1", ReinforceConfig(seed=0, baseline=True, max_grad_norm=1.0))
    agent.train(3000)
    agent.evaluate(episodes=1)
    assert agent.trace_counts == {"policy_update": 1, "value_update": 1}
    agent.close()


def test_save_and_load_give_identical_actions(tmp_path, rng):
    agent, _ = _short_run(0, updates=2, baseline=True)
    agent.save(tmp_path / "agent")
    loaded = Reinforce.load(tmp_path / "agent")
    obs = rng.normal(size=(32, 4)).astype(np.float32)
    np.testing.assert_array_equal(loaded.act(obs, deterministic=True),
                                  agent.act(obs, deterministic=True))
    np.testing.assert_array_equal(loaded.policy.model(obs), agent.policy.model(obs))
    np.testing.assert_array_equal(loaded.value(obs), agent.value(obs))
    assert loaded.config == agent.config and loaded.env_steps == agent.env_steps


@pytest.mark.parametrize("kwargs, message", [
    ({"gamma": 0.0}, r"gamma must be in \(0\.0, 1\.0\]"),
    ({"gamma": 1.01}, r"gamma must be in \(0\.0, 1\.0\]"),
    ({"num_envs": 0}, "num_envs must be an integer >= 1"),
    ({"learning_rate": -1e-3}, "learning_rate must be > 0"),
    ({"hidden_sizes": ()}, "hidden_sizes must be one or more"),
])
def test_invalid_config(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ReinforceConfig(**kwargs)


def test_unsupported_spaces_and_missing_time_limit_fail_before_training():
    class MultiBinaryEnv(Counter):
        action_space = gym.spaces.MultiBinary(2)

    with pytest.raises(ValueError, match="action space must be Discrete or a floating-point Box"):
        Reinforce(lambda: gym.wrappers.TimeLimit(MultiBinaryEnv(), 5))
    with pytest.raises(ValueError, match="no time limit: set max_episode_steps"):
        Reinforce(Counter)
    with pytest.raises(ValueError, match="path must be a folder written by Reinforce.save"):
        Reinforce.load("/nonexistent/agent")


def _learns(env_id, steps, seed=0, **config):
    agent = Reinforce(env_id, ReinforceConfig(seed=seed, **config))
    untrained = agent.evaluate(episodes=10, deterministic=False, seed=1000).mean()
    history = agent.train(steps)
    agent.close()
    late = np.mean([r for row in history[-3:] for r in row["episode_returns"]])
    return untrained, late


@pytest.mark.slow
def test_slow_cartpole_learns_with_fixed_seed_and_budget():
    untrained, late = _learns("CartPole-v1", 60_000)
    assert untrained < 40 and late > 200


@pytest.mark.slow
def test_slow_acrobot_discrete_learns_with_fixed_seed_and_budget():
    # Failed Acrobot episodes last 500 steps: 8 per update (the default) leaves room for
    # enough updates. Seed 2: with the defaults, seeds 2, 3, 5 and 7 of 0-7 learn within 30k
    # steps (late returns -86 to -114); in the others no episode of the first batches reaches
    # the goal, every return is the same -500 and there is nothing to learn from (REINFORCE
    # without exploration help, as it is).
    untrained, late = _learns("Acrobot-v1", 30_000, seed=2)
    assert untrained == -500 and late > -250


@pytest.mark.slow
def test_slow_inverted_pendulum_box_learns_with_fixed_seed_and_budget():
    untrained, late = _learns("InvertedPendulum-v5", 40_000)
    assert untrained < 15 and late > 5 * untrained


def test_the_progress_bar_stays_quiet_when_output_is_not_a_terminal(capsys):
    agent = Reinforce("CartPole-v1", ReinforceConfig(seed=0, num_envs=2))
    agent.train(300, progress=True)  # pytest captures stderr: not a terminal
    agent.close()
    assert capsys.readouterr().err == ""


def test_an_observation_hook_decides_what_the_agent_acts_on_and_learns_from():
    calls = []

    def hook(model, obs, generator):  # traced into the compiled acting function
        calls.append(model)
        return obs * 0.0 + generator.uniform(tf.shape(obs), -1.0, 1.0)

    agent = Reinforce("CartPole-v1", ReinforceConfig(seed=0, num_envs=3),
                      observation_hook=hook)
    batch = agent.collect()
    seen = batch.obs[batch.valid]
    assert np.all(np.abs(seen) <= 1.0) and seen.std() > 0.4  # the hook's noise, not CartPole
    agent.update(batch)
    agent.train(2000)
    assert agent.trace_counts["act_through_hook"] == 1 and calls == [agent.policy.model]
    plain = agent.act(np.zeros((2, 4), np.float32), deterministic=True)  # act: no hook
    assert plain.shape == (2,)
    agent.close()
    with pytest.raises(ValueError, match="observation_hook must be callable"):
        Reinforce("CartPole-v1", observation_hook="fgsm")


def test_imitate_fits_the_greedy_policy_to_a_discrete_controller(rng):
    """Behaviour cloning of a known rule (push toward the pole's lean) on random states: the
    greedy action then follows the rule on held-out states, and training counters stay put."""
    agent = Reinforce("CartPole-v1", ReinforceConfig(seed=0))
    scale = np.array([0.5, 0.5, 0.05, 0.5], np.float32)
    obs = (rng.normal(size=(512, 4)) * scale).astype(np.float32)
    rule = lambda o: (o[:, 2] + 0.3 * o[:, 3] > 0).astype(np.int64)
    before = (agent.act(obs, deterministic=True) == rule(obs)).mean()
    loss = agent.imitate(obs, rule(obs), steps=300)
    held_out = (rng.normal(size=(512, 4)) * scale).astype(np.float32)
    agreement = (agent.act(held_out, deterministic=True) == rule(held_out)).mean()
    assert agreement > 0.95 > before + 0.2 and np.isfinite(loss)
    assert agent.updates == agent.env_steps == 0


def test_imitate_fits_the_squashed_mean_of_a_box_policy(rng):
    """Pendulum's torque in [-2, 2]: the greedy action (mid + half * tanh(mean)) is fitted to
    a linear controller's clipped output in the action's own units."""
    agent = Reinforce("Pendulum-v1", ReinforceConfig(seed=0))
    obs = rng.uniform(-1, 1, size=(512, 3)).astype(np.float32)
    controller = lambda o: np.clip(o @ np.array([[1.5], [-1.0], [0.8]]), -1.8, 1.8)
    agent.imitate(obs, controller(obs), steps=500)
    error = np.abs(agent.act(obs, deterministic=True) - controller(obs))
    assert error.mean() < 0.1


def test_imitate_rejects_mismatched_batches():
    agent = Reinforce("CartPole-v1", ReinforceConfig(seed=0))
    with pytest.raises(ValueError, match="same number .* 3 observations, 2 actions"):
        agent.imitate(np.zeros((3, 4), np.float32), np.zeros(2, np.int64))
    with pytest.raises(ValueError, match="steps must be"):
        agent.imitate(np.zeros((3, 4), np.float32), np.zeros(3, np.int64), steps=0)


def test_greedy_policy_acts_as_act_and_keeps_the_weights_it_was_made_with(rng):
    agent = Reinforce("CartPole-v1", ReinforceConfig(seed=0))
    obs = rng.normal(size=(64, 4)).astype(np.float32)
    greedy = agent.greedy_policy()
    before = agent.act(obs, deterministic=True)
    assert np.array_equal(greedy(obs), before)
    agent.train(2_000)
    assert not np.array_equal(agent.act(obs, deterministic=True), before)  # it learned
    assert np.array_equal(greedy(obs), before)  # frozen: training moved the agent, not it
    assert np.array_equal(agent.greedy_policy()(obs), agent.act(obs, deterministic=True))


@pytest.mark.parametrize("env", ["CartPole-v1", "Pendulum-v1"])
def test_greedy_function_acts_as_act_and_reads_the_current_weights(env, rng):
    import tensorflow as tf
    agent = Reinforce(env, ReinforceConfig(num_envs=2, seed=0))
    obs = rng.normal(size=(32, agent.observation_space.shape[0])).astype(np.float32)
    greedy = tf.function(agent.greedy_function())

    def same():
        expected = agent.act(obs, deterministic=True).reshape(len(obs), -1)
        np.testing.assert_allclose(greedy(obs).numpy().reshape(len(obs), -1), expected,
                                   rtol=1e-5, atol=1e-6)

    same()
    for w in agent.policy.model.weights:  # new weights, same compiled function
        w.assign(rng.normal(size=w.shape).astype(np.float32))
    same()

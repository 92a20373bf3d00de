import math

import gymnasium as gym
import numpy as np
import pytest
import tensorflow as tf

from agents.policies import CategoricalPolicy, GaussianPolicy, policy_class


def _gaussian(space, init_log_std=-0.5):
    return GaussianPolicy.build(3, space, (8,), "tanh", init_log_std=init_log_std)


def test_gaussian_log_prob_unbounded_is_the_normal_density(rng):
    policy = _gaussian(gym.spaces.Box(-np.inf, np.inf, (2,), np.float32))
    mean = rng.normal(size=(5, 2))
    log_std = rng.normal(size=(5, 2)) * 0.3
    u = rng.normal(size=(5, 2))
    out = tf.constant(np.concatenate([mean, log_std], 1), tf.float32)
    std = np.exp(log_std)
    expected = np.sum(-0.5 * ((u - mean) / std) ** 2 - np.log(std * np.sqrt(2 * np.pi)), 1)
    np.testing.assert_allclose(policy.log_prob(out, tf.constant(u, tf.float32)), expected,
                               rtol=1e-5)
    np.testing.assert_allclose(policy.to_env(u.astype(np.float32)), u, rtol=1e-6)


def test_gaussian_log_prob_bounded_is_the_density_of_the_env_action(rng):
    low, high = np.array([-2.0, 0.0]), np.array([2.0, 1.0])
    policy = _gaussian(gym.spaces.Box(low.astype(np.float32), high.astype(np.float32)))
    mean, log_std = np.array([[0.3, -0.4]]), np.array([[-0.2, 0.1]])
    out = tf.constant(np.concatenate([mean, log_std], 1), tf.float32)
    u = np.array([[0.5, -1.2]])
    a = policy.to_env(u.astype(np.float32))
    # Closed form by change of variables: u = atanh((a - mid) / half), du/da = 1 / (half (1 - y^2)).
    mid, half = (high + low) / 2, (high - low) / 2
    y = (a - mid) / half
    u_back = np.arctanh(y)
    std = np.exp(log_std)
    normal = -0.5 * ((u_back - mean) / std) ** 2 - np.log(std * np.sqrt(2 * np.pi))
    expected = np.sum(normal - np.log(half * (1 - y ** 2)), 1)
    np.testing.assert_allclose(policy.log_prob(out, tf.constant(u, tf.float32)), expected,
                               rtol=1e-4)


def test_squashed_density_integrates_to_one_over_the_bounds():
    policy = _gaussian(gym.spaces.Box(-2.0, 2.0, (1,), np.float32))
    # Integrate p(a) over the box on a fine grid of a (through u = atanh(a / 2)).
    a = np.linspace(-2, 2, 200001)[1:-1]
    u = np.arctanh(a / 2).reshape(-1, 1).astype(np.float32)
    out = tf.constant(np.tile([[0.7, -0.3]], (len(u), 1)), tf.float32)
    density = np.exp(policy.log_prob(out, tf.constant(u)).numpy())
    assert abs(np.trapezoid(density, a) - 1.0) < 1e-3


def test_samples_stay_inside_the_bounds():
    space = gym.spaces.Box(np.array([-1.0, 0.0], np.float32), np.array([1.0, 5.0], np.float32))
    policy = _gaussian(space, init_log_std=2.0)  # wide: many samples near the bounds
    out = policy.model(tf.zeros((1000, 3)))
    actions = policy.to_env(policy.sample(out, tf.random.Generator.from_seed(0)).numpy())
    assert actions.shape == (1000, 2) and actions.dtype == np.float32
    assert all(space.contains(a) for a in actions)


def test_categorical_log_prob_and_entropy(rng):
    policy = CategoricalPolicy.build(3, gym.spaces.Discrete(4), (8,), "tanh")
    logits = rng.normal(size=(6, 4))
    actions = rng.integers(0, 4, size=6)
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    out = tf.constant(logits, tf.float32)
    np.testing.assert_allclose(policy.log_prob(out, tf.constant(actions, tf.int32)),
                               np.log(p[np.arange(6), actions]), rtol=1e-5)
    np.testing.assert_allclose(policy.entropy(out), -(p * np.log(p)).sum(1), rtol=1e-5)


def test_categorical_samples_follow_the_probabilities():
    policy = CategoricalPolicy.build(3, gym.spaces.Discrete(3, start=1), (8,), "tanh")
    probs = np.array([0.2, 0.5, 0.3])
    out = tf.constant(np.tile(np.log(probs), (20000, 1)), tf.float32)
    raw = policy.sample(out, tf.random.Generator.from_seed(1)).numpy()
    frequencies = np.bincount(raw, minlength=3) / len(raw)
    assert np.all(np.abs(frequencies - probs) < 4 * np.sqrt(probs * (1 - probs) / len(raw)))
    assert set(policy.to_env(raw)) == {1, 2, 3}  # Discrete(start=1) offsets the actions


def test_gaussian_entropy_closed_form():
    policy = _gaussian(gym.spaces.Box(-1.0, 1.0, (2,), np.float32))
    out = tf.constant([[0.0, 0.0, -0.5, 0.2]])
    expected = sum(ls + 0.5 * math.log(2 * math.pi * math.e) for ls in (-0.5, 0.2))
    np.testing.assert_allclose(policy.entropy(out), [expected], rtol=1e-6)


@pytest.mark.parametrize("space", [gym.spaces.MultiDiscrete([2, 3]), gym.spaces.MultiBinary(3),
                                   gym.spaces.Box(0, 5, (2,), np.int64)])
def test_unsupported_action_spaces(space):
    with pytest.raises(ValueError, match="action space must be Discrete or a floating-point Box"):
        policy_class(space)

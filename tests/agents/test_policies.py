import math

import gymnasium as gym
import keras
import numpy as np
import pytest
import tensorflow as tf

from agents.policies import (
    HOST_ACTIVATIONS,
    CategoricalPolicy,
    GaussianPolicy,
    HostForward,
    mlp,
    policy_class,
)


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


@pytest.mark.parametrize("host", [False, True], ids=["tensorflow", "host"])
def test_categorical_samples_follow_the_probabilities(host):
    policy = CategoricalPolicy.build(3, gym.spaces.Discrete(3, start=1), (8,), "tanh")
    probs = np.array([0.2, 0.5, 0.3])
    logits = np.tile(np.log(probs) + 3.0, (20000, 1)).astype(np.float32)  # unnormalized
    if host:
        raw = policy.host_sample(logits, np.random.default_rng(1))
    else:
        raw = policy.sample(tf.constant(logits), tf.random.Generator.from_seed(1)).numpy()
    assert raw.dtype == np.int32 and raw.shape == (20000,)
    frequencies = np.bincount(raw, minlength=3) / len(raw)
    assert np.all(np.abs(frequencies - probs) < 4 * np.sqrt(probs * (1 - probs) / len(raw)))
    assert set(policy.to_env(raw)) == {1, 2, 3}  # Discrete(start=1) offsets the actions


def test_host_categorical_sampling_is_exact_at_the_extremes():
    policy = CategoricalPolicy.build(3, gym.spaces.Discrete(3), (8,), "tanh")
    # A probability of 1 (the others underflow in float64) is always drawn; a 0 never.
    logits = np.array([[0.0, 800.0, 0.0], [-np.inf, 0.0, 0.0]] * 5000, np.float32)
    raw = policy.host_sample(logits, np.random.default_rng(0))
    assert np.all(raw[0::2] == 1) and set(raw[1::2]) == {1, 2}
    np.testing.assert_array_equal(policy.host_mode(logits[:2]), [1, 1])


def test_host_gaussian_samples_have_the_policy_mean_and_std():
    policy = _gaussian(gym.spaces.Box(-np.inf, np.inf, (2,), np.float32))
    out = np.tile([[0.5, -1.0, -0.5, 0.3]], (40000, 1)).astype(np.float32)
    raw = policy.host_sample(out, np.random.default_rng(0))
    assert raw.dtype == np.float32 and raw.shape == (40000, 2)
    std = np.exp([-0.5, 0.3])
    assert np.all(np.abs(raw.mean(0) - [0.5, -1.0]) < 4 * std / np.sqrt(40000))
    np.testing.assert_allclose(raw.std(0), std, rtol=0.02)
    np.testing.assert_array_equal(policy.host_mode(out[:3]), out[:3, :2])


@pytest.mark.parametrize("activation", [*HOST_ACTIVATIONS, "gelu"])  # gelu: through Keras
@pytest.mark.parametrize("space", [gym.spaces.Discrete(3),
                                   gym.spaces.Box(-1.0, 1.0, (2,), np.float32)],
                         ids=["categorical", "gaussian"])
def test_host_forward_is_the_keras_forward_pass(activation, space, rng):
    policy = policy_class(space).build(5, space, (16, 8), activation)
    for w in policy.model.weights:  # away from the initialization (zero biases, small head)
        w.assign(rng.normal(size=w.shape).astype(np.float32))
    host = HostForward(policy.model)
    obs = rng.normal(size=(7, 5)).astype(np.float32) * 3
    np.testing.assert_allclose(host.forward(obs), policy.model(obs).numpy(),
                               rtol=1e-5, atol=1e-5)


def test_host_forward_reads_the_weights_when_synced(rng):
    policy = CategoricalPolicy.build(3, gym.spaces.Discrete(2), (4,), "tanh")
    host = HostForward(policy.model)
    obs = rng.normal(size=(2, 3)).astype(np.float32)
    before = host.forward(obs)
    policy.model.layers[-1].bias.assign([5.0, -5.0])
    np.testing.assert_array_equal(host.forward(obs), before)  # a copy until synced
    host.sync()
    np.testing.assert_allclose(host.forward(obs), policy.model(obs).numpy(), atol=1e-6)


def test_host_forward_refuses_layers_it_cannot_compute():
    model = mlp(3, (4,), "tanh", keras.layers.Dense(2), "policy")
    model.add(keras.layers.Dropout(0.5))
    with pytest.raises(ValueError, match="model must hold Dense layers.*Dropout"):
        HostForward(model)


def test_gaussian_entropy_closed_form():
    policy = _gaussian(gym.spaces.Box(-1.0, 1.0, (2,), np.float32))
    out = np.array([[0.0, 0.0, -0.5, 0.2]], np.float32)
    expected = sum(ls + 0.5 * math.log(2 * math.pi * math.e) for ls in (-0.5, 0.2))
    np.testing.assert_allclose(policy.entropy(tf.constant(out)), [expected], rtol=1e-6)
    np.testing.assert_allclose(policy.host_entropy(out), [expected], rtol=1e-6)


def test_host_categorical_entropy(rng):
    policy = CategoricalPolicy.build(3, gym.spaces.Discrete(4), (8,), "tanh")
    logits = rng.normal(size=(6, 4)).astype(np.float32) * 3
    p = np.exp(logits.astype(np.float64))
    p /= p.sum(1, keepdims=True)
    np.testing.assert_allclose(policy.host_entropy(logits), -(p * np.log(p)).sum(1), rtol=1e-6)
    # An impossible action adds nothing (0 log 0 = 0); a sure one leaves entropy 0.
    np.testing.assert_allclose(
        policy.host_entropy(np.array([[-np.inf, 0.0, 0.0, -np.inf], [0.0, 900.0, 0.0, 0.0]],
                                     np.float32)), [np.log(2), 0.0], atol=1e-12)


@pytest.mark.parametrize("space", [gym.spaces.MultiDiscrete([2, 3]), gym.spaces.MultiBinary(3),
                                   gym.spaces.Box(0, 5, (2,), np.int64)])
def test_unsupported_action_spaces(space):
    with pytest.raises(ValueError, match="action space must be Discrete or a floating-point Box"):
        policy_class(space)


def _softmax(logits):
    e = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def test_categorical_kl_is_the_kl_of_the_two_softmaxes(rng):
    policy = CategoricalPolicy.build(3, gym.spaces.Discrete(5), (8,), "tanh")
    logits_p, logits_q = rng.normal(size=(2, 200, 5)) * 3.0
    p, q = _softmax(logits_p), _softmax(logits_q)
    expected = np.sum(p * np.log(p / q), axis=-1)  # float64, the textbook form
    kl = policy.kl(tf.constant(logits_p, tf.float32), tf.constant(logits_q, tf.float32))
    np.testing.assert_allclose(kl, expected, rtol=1e-4, atol=1e-6)
    assert np.all(np.asarray(kl) >= -1e-6)
    np.testing.assert_array_equal(policy.kl(tf.constant(logits_p), tf.constant(logits_p)), 0.0)
    # Logits shifted by a constant are the same policy.
    np.testing.assert_allclose(policy.kl(tf.constant(logits_p), tf.constant(logits_p + 7.0)),
                               0.0, atol=1e-5)


def test_gaussian_kl_is_the_closed_form_and_reduces_with_a_shared_std(rng):
    policy = _gaussian(gym.spaces.Box(-np.inf, np.inf, (3,), np.float32))
    mean_p, mean_q = rng.normal(size=(2, 50, 3))
    log_std_p, log_std_q = rng.normal(size=(2, 50, 3)) * 0.5
    out = lambda mean, log_std: tf.constant(np.concatenate([mean, log_std], 1), tf.float32)
    # The multivariate form, with diagonal covariance matrices:
    # 0.5 (tr(Sq^-1 Sp) + (mq - mp)^T Sq^-1 (mq - mp) - k + log det Sq - log det Sp).
    expected = []
    for mp, mq, lp, lq in zip(mean_p, mean_q, log_std_p, log_std_q):
        cov_p, cov_q = np.diag(np.exp(2 * lp)), np.diag(np.exp(2 * lq))
        inv_q, d = np.linalg.inv(cov_q), mq - mp
        expected.append(0.5 * (np.trace(inv_q @ cov_p) + d @ inv_q @ d - 3
                               + np.log(np.linalg.det(cov_q) / np.linalg.det(cov_p))))
    kl = policy.kl(out(mean_p, log_std_p), out(mean_q, log_std_q))
    np.testing.assert_allclose(kl, expected, rtol=1e-4, atol=1e-6)
    assert np.all(np.asarray(kl) >= -1e-6)
    shared = policy.kl(out(mean_p, log_std_p), out(mean_q, log_std_p))
    np.testing.assert_allclose(
        shared, np.sum((mean_p - mean_q) ** 2 / (2 * np.exp(2 * log_std_p)), 1), rtol=1e-4)
    np.testing.assert_array_equal(policy.kl(out(mean_p, log_std_p), out(mean_p, log_std_p)),
                                  0.0)


def test_gaussian_kl_is_the_kl_of_the_squashed_actions(rng):
    # Monte Carlo: E_p[log p(a) - log q(a)] over actions in the bounds, with log_prob's
    # change of variables; a bijection leaves the KL unchanged.
    policy = _gaussian(gym.spaces.Box(np.float32(-2.0), np.float32(1.0), (2,), np.float32))
    out_p = tf.constant([[0.4, -0.3, -0.2, 0.1]], tf.float32)
    out_q = tf.constant([[-0.1, 0.2, 0.1, -0.3]], tf.float32)
    u = policy.sample(tf.repeat(out_p, 200_000, axis=0), tf.random.Generator.from_seed(0))
    monte_carlo = tf.reduce_mean(policy.log_prob(out_p, u) - policy.log_prob(out_q, u))
    np.testing.assert_allclose(float(policy.kl(out_p, out_q)[0]), float(monte_carlo),
                               rtol=0.03)


@pytest.mark.parametrize("space", [gym.spaces.Discrete(3, start=-1),
                                   gym.spaces.Box(np.array([-1.0, 0.0, -np.inf], np.float32),
                                                  np.array([1.0, 4.0, np.inf], np.float32))],
                         ids=["categorical", "gaussian, bounded and unbounded"])
def test_greedy_in_tensorflow_is_the_host_greedy_action_as_the_env_takes_it(space, rng):
    policy = policy_class(space).build(5, space, (8,), "tanh")
    for w in policy.model.weights:
        w.assign(rng.normal(size=w.shape).astype(np.float32))
    out = policy.model(rng.normal(size=(9, 5)).astype(np.float32))
    expected = policy.to_env(policy.host_mode(out.numpy())).reshape(9, -1)
    greedy = policy.greedy(out).numpy().reshape(9, -1)
    np.testing.assert_allclose(greedy, expected, rtol=1e-6, atol=1e-6)
    if isinstance(space, gym.spaces.Discrete):
        assert np.isin(greedy, [-1, 0, 1]).all()

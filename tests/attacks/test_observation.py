"""Observation attacks against policy networks (attacks.observation)."""

import gymnasium as gym
import keras
import numpy as np
import pytest
import tensorflow as tf

from attacks.observation import (
    AttackedObservations,
    AttackedVectorObservations,
    ObjectivePerEnvironment,
    ObservationAttack,
    ObservationRecorder,
)

SCALE = np.array([0.5, 2.0, 0.01], np.float32)


def _linear(weights):
    """A policy network ``obs @ weights`` (logits, or action means first)."""
    weights = np.asarray(weights, np.float32)
    model = keras.Sequential([keras.Input((weights.shape[0],)),
                              keras.layers.Dense(weights.shape[1], use_bias=False)])
    model.layers[0].set_weights([weights])
    return model


@pytest.fixture(scope="module")
def policy():
    return _linear([[1.0, -1.0], [-0.5, 0.3], [20.0, -10.0]])


@pytest.fixture(scope="module")
def observations():
    return tf.constant(np.random.default_rng(0).normal(size=(256, 3)) * [1.0, 3.0, 0.05],
                       tf.float32)


@pytest.mark.parametrize("method", ["random", "fgsm", "pgd"])
def test_every_method_stays_within_its_budget_and_bounds(policy, observations, method):
    lo, hi = np.array([-np.inf, -2.0, -np.inf]), np.array([np.inf, 2.0, np.inf])
    clipped = tf.clip_by_value(observations, lo, hi)
    attack = ObservationAttack(method, 0.3, eps_scale=SCALE, clip=(lo, hi), seed=1)
    attacked = attack(policy, clipped).numpy()
    delta = np.abs(attacked - clipped.numpy())
    assert np.all(delta <= 0.3 * SCALE + 1e-6)
    assert np.all(attacked >= lo) and np.all(attacked <= hi)
    assert delta.max(axis=0)[0] > 0.25 * SCALE[0]  # it does perturb


def test_the_random_control_spends_the_same_budget_uniformly(policy, observations):
    attacked = ObservationAttack("random", 0.3, eps_scale=SCALE, seed=2)(policy, observations)
    relative = (attacked.numpy() - observations.numpy()) / (0.3 * SCALE)
    assert np.all(np.abs(relative) <= 1 + 1e-5)
    # Uniform on [-1, 1] per feature: reaches the edges, mean 0, variance 1/3.
    assert np.abs(relative).max() > 0.98
    np.testing.assert_allclose(relative.mean(axis=0), 0.0, atol=0.1)
    np.testing.assert_allclose(relative.var(axis=0), 1 / 3, atol=0.05)


def test_fgsm_away_from_the_greedy_action_matches_the_hand_computed_direction(policy):
    weights = policy.layers[0].get_weights()[0].astype(np.float64)
    obs = np.array([[0.3, -1.0, 0.02], [-2.0, 0.5, -0.01]])
    attacked = ObservationAttack("fgsm", 0.2, eps_scale=SCALE)(
        policy, tf.constant(obs, tf.float32)).numpy()
    # d CE(softmax(obs W), a*) / d obs = W (softmax(obs W) - onehot(a*)), a* the clean argmax.
    logits = obs @ weights
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    onehot = np.eye(2)[logits.argmax(1)]
    expected = obs + 0.2 * SCALE * np.sign((probs - onehot) @ weights.T)
    np.testing.assert_allclose(attacked, expected, rtol=1e-5, atol=1e-6)


def test_toward_reaches_the_target_action_wherever_the_budget_allows(policy, observations):
    # Linear logits: the target's margin l1 - l0 = obs @ d can grow by at most
    # eps * sum(|d| * scale); the action flips exactly where that is enough.
    weights = policy.layers[0].get_weights()[0].astype(np.float64)
    d = weights[:, 1] - weights[:, 0]
    reachable = observations.numpy() @ d + 1.0 * np.sum(np.abs(d) * SCALE)
    attack = ObservationAttack("pgd", 1.0, objective="toward", target=1, eps_scale=SCALE)
    attacked = np.argmax(policy(attack(policy, observations)), -1)
    clear = np.abs(reachable) > 1e-3
    np.testing.assert_array_equal(attacked[clear] == 1, reachable[clear] > 0)
    assert (np.argmax(policy(observations), -1) == 1).mean() < 0.6 < (attacked == 1).mean()


def test_the_gaussian_objective_moves_the_action_mean_as_far_as_the_budget_allows():
    # Outputs [mean, log_std]; the mean is obs @ w: the largest shift in the ball is
    # eps * sum(|w| * scale), reached at a corner.
    w = np.array([1.0, -0.25, 30.0])
    model = _linear(np.stack([w, np.zeros(3)], axis=1))
    obs = tf.constant(np.random.default_rng(3).normal(size=(64, 3)), tf.float32)
    largest = 0.2 * np.sum(np.abs(w) * SCALE)
    shift = {}
    for method in ("random", "fgsm", "pgd"):
        attack = ObservationAttack(method, 0.2, objective="mean_shift", action_size=1,
                                   eps_scale=SCALE, seed=4)
        moved = model(attack(model, obs))[:, 0] - model(obs)[:, 0]
        shift[method] = np.abs(moved.numpy())
    assert np.all(shift["pgd"] <= largest + 1e-5) and np.mean(shift["pgd"]) > 0.95 * largest
    assert np.mean(shift["fgsm"]) > 0.9 * largest
    assert np.mean(shift["random"]) < 0.6 * largest


def test_the_environment_keeps_its_true_state_only_the_agent_sees_the_attack():
    model = _linear(np.array([[0.0, 0.0], [0.0, 0.0], [1.0, -1.0], [0.0, 0.0]]))
    scale = np.array([0.1, 0.1, 0.01, 0.1], np.float32)
    env = AttackedObservations(gym.make("CartPole-v1"), model,
                               ObservationAttack("random", 1.0, eps_scale=scale, seed=5))
    seen, _ = env.reset(seed=0)
    for _ in range(5):
        true_state = np.asarray(env.unwrapped.state, np.float32)
        np.testing.assert_allclose(env.clean_observation, true_state, rtol=1e-6)
        assert np.all(np.abs(seen - true_state) <= scale + 1e-6) and np.any(seen != true_state)
        seen, *_ = env.step(0)
    env.close()


def test_the_vector_wrapper_attacks_all_sub_environments_in_one_call():
    model = _linear(np.array([[0.0, 0.0], [0.0, 0.0], [1.0, -1.0], [0.0, 0.0]]))
    envs = AttackedVectorObservations(gym.make_vec("CartPole-v1", 4), model,
                                      ObservationAttack("fgsm", 1.0, eps_scale=[1, 1, 0.01, 1]))
    seen, _ = envs.reset(seed=0)
    clean, _ = gym.make_vec("CartPole-v1", 4).reset(seed=0)
    # logits = angle * [1, -1]: away from the greedy action moves the angle against its sign.
    np.testing.assert_allclose(seen[:, 2], clean[:, 2] - 0.01 * np.sign(clean[:, 2]), rtol=1e-5)
    np.testing.assert_array_equal(seen[:, [0, 1, 3]], clean[:, [0, 1, 3]])
    envs.close()


@pytest.mark.parametrize("kwargs, message", [
    ({"method": "cw"}, "method must be one of"),
    ({"objective": "toward"}, "target must be an integer >= 0"),
    ({"objective": "mean_shift"}, "action_size must be an integer >= 1"),
    ({"fraction": 0.0}, r"fraction must be in \(0\.0, 1\.0\]"),
    ({"eps": -0.1}, "eps must be"),
    ({"eps_scale": [1.0, -1.0, 1.0]}, "eps_scale must be finite and > 0"),
])
def test_bad_arguments_name_themselves(kwargs, message):
    arguments = {"method": "pgd", "eps": 0.1, **kwargs}
    with pytest.raises(ValueError, match=message):
        ObservationAttack(**arguments)


def test_a_fraction_of_observations_is_attacked(policy, observations):
    attack = ObservationAttack("random", 0.3, eps_scale=SCALE, fraction=0.25, seed=6)
    changed = np.any(attack(policy, observations).numpy() != observations.numpy(), axis=1)
    assert 0.15 < changed.mean() < 0.35


def test_the_vector_wrapper_takes_same_step_autoreset_envs_and_keeps_final_obs_true():
    model = _linear(np.array([[0.0, 0.0], [0.0, 0.0], [1.0, -1.0], [0.0, 0.0]]))
    inner = gym.vector.SyncVectorEnv([lambda: gym.make("CartPole-v1")] * 2,
                                     autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
    envs = AttackedVectorObservations(inner, model, ObservationAttack("random", 1.0,
                                                                      eps_scale=[1, 1, 1, 1]))
    envs.reset(seed=0)
    for _ in range(200):
        _, _, terminated, truncated, info = envs.step(np.zeros(2, np.int64))
        if (terminated | truncated).any():
            break
    ended = np.flatnonzero(terminated | truncated)
    final = np.stack(info["final_obs"][ended])
    assert np.all(np.abs(final[:, 2]) > 0.2)  # CartPole ends past 12 degrees: the true angle
    envs.close()


def test_integer_observations_are_refused_rather_than_rounded_past_the_budget():
    env = gym.make("FrozenLake-v1")  # Discrete observations
    with pytest.raises(ValueError, match="floating-point Box"):
        AttackedObservations(env, _linear(np.eye(2)), ObservationAttack("random", 0.1))


def test_each_environment_faces_its_own_objective_with_a_shared_budget(policy, observations):
    toward = [ObservationAttack("fgsm", 0.3, objective="toward", target=k, eps_scale=SCALE)
              for k in (0, 1)]
    hook = ObjectivePerEnvironment(toward)
    hook.eps.assign(0.2)
    assert all(float(attack.eps.numpy()) == pytest.approx(0.2) for attack in toward)
    attacked = hook(policy, observations).numpy()
    alone = [attack(policy, observations).numpy() for attack in toward]
    np.testing.assert_array_equal(attacked[0::2], alone[0][0::2])  # rows 0, 2, ...: target 0
    np.testing.assert_array_equal(attacked[1::2], alone[1][1::2])  # rows 1, 3, ...: target 1
    assert not np.array_equal(alone[0], alone[1])


def test_the_recorder_keeps_every_observation_it_passes_on():
    envs = ObservationRecorder(gym.make_vec("CartPole-v1", num_envs=3,
                                            vectorization_mode="sync"))
    first, _ = envs.reset(seed=0)
    second, *_ = envs.step(np.zeros(3, np.int64))
    envs.close()
    assert len(envs.seen) == 2 and envs.seen[0].dtype == np.float64
    np.testing.assert_array_equal(envs.seen[0], first)
    np.testing.assert_array_equal(envs.seen[1], second)


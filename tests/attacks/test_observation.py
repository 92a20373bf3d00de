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
    categorical_kl,
    gaussian_kl,
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


@pytest.mark.parametrize("objective", ["away", "kl"])
@pytest.mark.parametrize("method", ["random", "fgsm", "pgd"])
def test_every_method_stays_within_its_budget_and_bounds(policy, observations, method,
                                                         objective):
    lo, hi = np.array([-np.inf, -2.0, -np.inf]), np.array([np.inf, 2.0, np.inf])
    clipped = tf.clip_by_value(observations, lo, hi)
    attack = ObservationAttack(method, 0.3, objective=objective, eps_scale=SCALE,
                               clip=(lo, hi), seed=1)
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


def _numpy_categorical_kl(p_logits, q_logits):
    """KL(softmax(p) || softmax(q)) in float64, straight from the definition."""
    p = np.exp(p_logits - p_logits.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    q = np.exp(q_logits - q_logits.max(-1, keepdims=True))
    q /= q.sum(-1, keepdims=True)
    return np.sum(p * np.log(p / q), axis=-1)


def test_categorical_kl_is_numpys_kl_of_the_softmaxes():
    clean = np.array([[0.0, 0.0, 0.0], [2.0, -1.0, 0.5], [10.0, 0.0, -10.0], [1.0, 2.0, 3.0]])
    attacked = np.array([[0.0, 0.0, 0.0], [-1.0, 2.0, 0.5], [0.0, 10.0, -10.0], [3.0, 2.0, 1.0]])
    got = categorical_kl(tf.constant(clean, tf.float32), tf.constant(attacked, tf.float32))
    np.testing.assert_allclose(got.numpy(), _numpy_categorical_kl(clean, attacked), rtol=1e-5,
                               atol=1e-6)
    assert got.numpy()[0] == 0.0  # the same distribution
    # Softmax ignores a shift of every logit: the KL does too.
    np.testing.assert_allclose(categorical_kl(clean, clean + 5.0).numpy(), 0.0, atol=1e-5)


def test_gaussian_kl_is_the_closed_form_of_diagonal_gaussians():
    # Two action dimensions: [m1, m2, log_s1, log_s2] per row.
    clean = np.array([[0.0, 0.0, 0.0, 0.0], [1.0, -2.0, -0.5, 0.3], [0.5, 0.5, -3.0, 1.0]])
    attacked = np.array([[0.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.2, 0.3], [-0.5, 0.5, -1.0, -1.0]])
    m1, s1 = clean[:, :2], np.exp(clean[:, 2:])
    m2, s2 = attacked[:, :2], np.exp(attacked[:, 2:])
    expected = np.sum(np.log(s2 / s1) + (s1**2 + (m1 - m2)**2) / (2 * s2**2) - 0.5, axis=-1)
    got = gaussian_kl(tf.constant(clean, tf.float32), tf.constant(attacked, tf.float32), 2)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-5, atol=1e-6)
    # Monte Carlo check of the formula itself on row 1: E_p[log p(x) - log q(x)].
    rng = np.random.default_rng(0)
    x = m1[1] + s1[1] * rng.standard_normal((400_000, 2))
    log_p = -0.5 * ((x - m1[1]) / s1[1])**2 - np.log(s1[1])
    log_q = -0.5 * ((x - m2[1]) / s2[1])**2 - np.log(s2[1])
    assert np.mean(np.sum(log_p - log_q, axis=1)) == pytest.approx(expected[1], rel=0.02)
    with pytest.raises(ValueError, match="2 \\* action_size = 2 wide"):
        gaussian_kl(tf.constant(clean, tf.float32), tf.constant(attacked, tf.float32), 1)


def _tiny_mlp(outputs, seed):
    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.Input((3,)), keras.layers.Dense(8, activation="tanh"),
                             keras.layers.Dense(outputs)])


@pytest.mark.parametrize("action_size", [None, 2])
def test_pgd_on_the_kl_beats_the_best_of_many_random_points_of_the_ball(action_size):
    # Discrete (3 logits) or Gaussian (2 means, 2 state-dependent log stds) outputs.
    model = _tiny_mlp(3 if action_size is None else 4, seed=7)
    obs = tf.constant(np.random.default_rng(8).normal(size=(32, 3)), tf.float32)
    lo, hi = np.array([-np.inf, -1.0, -np.inf]), np.array([np.inf, 1.0, np.inf])
    obs = tf.clip_by_value(obs, lo, hi)
    eps = 0.4

    def kl(attacked):  # attacked: [..., 32, 3], any number of candidates per observation
        out = model(attacked.reshape(-1, 3)).numpy()
        clean = np.tile(model(obs).numpy(), (len(out) // len(obs), 1))
        return (categorical_kl(clean, out) if action_size is None
                else gaussian_kl(clean, out, action_size)).numpy().reshape(attacked.shape[:-1])

    def pgd(restarts):
        attack = ObservationAttack("pgd", eps, objective="kl", action_size=action_size,
                                   eps_scale=SCALE, clip=(lo, hi), steps=20, restarts=restarts,
                                   seed=9)
        attacked = attack(model, obs).numpy()
        assert np.all(np.abs(attacked - obs.numpy()) <= eps * SCALE + 1e-6)
        assert np.all(attacked >= lo) and np.all(attacked <= hi)
        return kl(attacked)

    # The reference: 2000 uniform points of the ball (and box) per observation, half of them
    # corners, where a signed-gradient attack ends.
    noise = np.random.default_rng(10).uniform(-1, 1, size=(2000, *obs.shape))
    noise[1::2] = np.sign(noise[1::2])
    best_random = kl(np.clip(obs.numpy() + eps * SCALE * noise, lo, hi)).max(axis=0)
    # The KL is not concave in the perturbation: one start climbs to the nearest local
    # maximum, restarts find the best.
    single, restarted = pgd(1), pgd(8)
    print(f"KL: pgd {single.mean():.4f}, pgd x8 {restarted.mean():.4f}, best of 2000 random "
          f"{best_random.mean():.4f}; one start reaches it on "
          f"{np.mean(single >= best_random * (1 - 1e-3)):.0%} of observations")
    assert np.all(restarted >= best_random * (1 - 1e-3) - 1e-7), np.min(restarted - best_random)
    assert np.all(restarted >= single * (1 - 1e-3) - 1e-7)
    assert np.mean(kl(ObservationAttack("random", eps, eps_scale=SCALE, clip=(lo, hi))(
        model, obs).numpy())) < 0.5 * np.mean(single)  # not an easy maximum


def test_fgsm_on_the_kl_starts_at_random_the_clean_gradient_being_zero(policy, observations):
    # From the clean observation the KL's gradient is exactly 0 and sign(0) = 0: a plain step
    # would not move. From a random start it does, and raises the KL above the start's.
    attack = ObservationAttack("fgsm", 0.3, objective="kl", eps_scale=SCALE, seed=11)
    attacked = attack(policy, observations)
    start = ObservationAttack("random", 0.3, eps_scale=SCALE, seed=11)(policy, observations)
    clean = policy(observations)
    assert np.all(np.abs(attacked.numpy() - observations.numpy()) <= 0.3 * SCALE + 1e-6)
    assert (np.mean(categorical_kl(clean, policy(attacked)))
            > 2 * np.mean(categorical_kl(clean, policy(start))))


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
    ({"objective": "kl", "action_size": 0}, "action_size must be an integer >= 1"),
    ({"restarts": 0}, "restarts must be an integer >= 1"),
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


def test_pgd_objectives_run_as_one_attack_with_each_attacks_own_numbers(observations):
    """Adversarial training's hook (PGD away and toward each action) runs one PGD over the
    batch: row i must be, bit for bit, what attacks[i % 3] alone gives it."""
    keras.utils.set_random_seed(4)
    mlp = keras.Sequential([keras.Input((3,)), keras.layers.Dense(16, activation="tanh"),
                            keras.layers.Dense(2)])
    attacks = [ObservationAttack("pgd", 0.3, eps_scale=SCALE, steps=5)] + [
        ObservationAttack("pgd", 0.3, objective="toward", target=k, eps_scale=SCALE, steps=5)
        for k in (0, 1)]
    hook = ObjectivePerEnvironment(attacks)
    assert hook._fused
    attacked = hook(mlp, observations, tf.random.Generator.from_seed(7)).numpy()
    shared = tf.random.Generator.from_seed(7)  # the separate attacks draw in the same order
    alone = [attack(mlp, observations, shared).numpy() for attack in attacks]
    for k in range(3):
        np.testing.assert_array_equal(attacked[k::3], alone[k][k::3])
    assert not np.array_equal(alone[1], alone[2])
    with_restarts = ObjectivePerEnvironment(
        [ObservationAttack("pgd", 0.3, restarts=2), ObservationAttack("pgd", 0.3)])
    assert not with_restarts._fused  # restarts keep the separate path


def test_the_recorder_keeps_every_observation_it_passes_on():
    envs = ObservationRecorder(gym.make_vec("CartPole-v1", num_envs=3,
                                            vectorization_mode="sync"))
    first, _ = envs.reset(seed=0)
    second, *_ = envs.step(np.zeros(3, np.int64))
    envs.close()
    assert len(envs.seen) == 2 and envs.seen[0].dtype == np.float64
    np.testing.assert_array_equal(envs.seen[0], first)
    np.testing.assert_array_equal(envs.seen[1], second)


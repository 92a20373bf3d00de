"""The learned adversary's environment (attacks.learned_adversary), and agents.Reinforce
learning in it (tests may import both packages; the packages never import each other)."""

from functools import partial

import gymnasium as gym
import numpy as np
import pytest

from agents import Reinforce, ReinforceConfig
from attacks.learned_adversary import (
    MAX_DIRECTOR_FEATURES,
    AdversaryEnv,
    DirectorEnv,
    random_adversary,
    victim_returns,
)

# CartPole's per-feature standard deviations under the victim's clean play (5 episodes),
# rounded: the unit of eps.
SCALE = np.array([0.7, 0.2, 0.007, 0.2], np.float32)


def balancing_victim(obs):
    """A fixed linear controller: push toward where the pole is falling. Balances CartPole
    for all 500 steps from any reset."""
    return (obs[:, 2] + 0.5 * obs[:, 3] > 0).astype(np.int64)


class RecordingVictim:
    """``balancing_victim`` that keeps every observation batch it is shown."""

    def __init__(self):
        self.seen = []

    def __call__(self, obs):
        self.seen.append(np.array(obs))
        return balancing_victim(obs)


def _no_attack(obs):
    return np.zeros((len(obs), 4), np.float32)


def test_a_zero_perturbation_replays_the_victims_clean_episode_exactly():
    clean_env = gym.make("CartPole-v1")
    obs, _ = clean_env.reset(seed=3)
    clean = {"obs": [obs], "rewards": [], "ends": []}
    done = False
    while not done:
        obs, reward, terminated, truncated, _ = clean_env.step(
            int(balancing_victim(obs[None])[0]))
        clean["obs"].append(obs), clean["rewards"].append(reward)
        clean["ends"].append((terminated, truncated))
        done = terminated or truncated
    clean_env.close()

    env = AdversaryEnv("CartPole-v1", balancing_victim, eps=2.0, eps_scale=SCALE)
    obs, _ = env.reset(seed=3)
    attacked = {"obs": [obs], "rewards": [], "victim_rewards": [], "ends": []}
    done = False
    while not done:
        obs, reward, terminated, truncated, info = env.step(np.zeros(4, np.float32))
        attacked["obs"].append(obs), attacked["rewards"].append(reward)
        attacked["victim_rewards"].append(info["victim_reward"])
        attacked["ends"].append((terminated, truncated))
        done = terminated or truncated
    np.testing.assert_array_equal(np.stack(attacked["obs"]), np.stack(clean["obs"]))
    assert attacked["ends"] == clean["ends"]
    assert clean["ends"][-1] == (False, True) and len(clean["rewards"]) == 500  # time limit
    assert attacked["victim_rewards"] == clean["rewards"]
    assert sum(attacked["rewards"]) == -sum(clean["rewards"]) == -500.0
    assert victim_returns(env, _no_attack, episodes=1, seed=3)[0] == 500.0
    env.close()


def test_a_constant_action_perturbs_by_eps_times_scale_times_the_clipped_action():
    victim = RecordingVictim()
    env = AdversaryEnv("CartPole-v1", victim, eps=0.5, eps_scale=SCALE)
    obs, _ = env.reset(seed=0)
    action = np.array([0.5, -1.0, 3.0, -0.25], np.float32)  # 3.0: clipped to 1
    for _ in range(5):
        next_obs, reward, _, _, info = env.step(action)
        # By hand: obs + 0.5 * scale * [0.5, -1, 1, -0.25].
        expected = obs + np.array([0.5 * 0.7 * 0.5, -0.5 * 0.2, 0.5 * 0.007, -0.25 * 0.5 * 0.2])
        np.testing.assert_allclose(victim.seen[-1][0], expected, rtol=1e-6, atol=1e-7)
        np.testing.assert_array_equal(info["perturbed_observation"], victim.seen[-1][0])
        assert victim.seen[-1].shape == (1, 4) and victim.seen[-1].dtype == np.float32
        assert reward == -info["victim_reward"] == -1.0
        obs = next_obs
    first, _ = env.reset(seed=0)
    env.close()
    # A bound 0.001 above the first true angle: the +0.0035 push stops there.
    lo, hi = np.full(4, -np.inf), np.full(4, np.inf)
    hi[2] = first[2] + 0.001
    env = AdversaryEnv("CartPole-v1", victim, eps=0.5, eps_scale=SCALE, clip=(lo, hi))
    env.reset(seed=0)
    env.step(action)
    np.testing.assert_allclose(victim.seen[-1][0, 2], first[2] + 0.001, rtol=1e-6)
    # A box that does not hold the true observation is refused, not clipped past the budget.
    hi[2] = first[2] - 0.001
    env = AdversaryEnv("CartPole-v1", victim, eps=0.5, eps_scale=SCALE, clip=(lo, hi))
    env.reset(seed=0)
    with pytest.raises(ValueError, match="clip must hold every true observation"):
        env.step(action)
    env.close()


def test_perturbations_never_leave_the_budget_or_the_box_whatever_the_action():
    victim = RecordingVictim()
    # CartPole's termination bounds: they hold every observation the victim acts on.
    lo = np.array([-2.4, -np.inf, -0.2095, -np.inf], np.float32)
    env = AdversaryEnv("CartPole-v1", victim, eps=1.5, eps_scale=SCALE, clip=(lo, -lo))
    rng = np.random.default_rng(1)
    obs, _ = env.reset(seed=1)
    true = []
    for _ in range(300):
        true.append(obs)
        obs, _, terminated, truncated, _ = env.step(rng.uniform(-5, 5, 4))  # far outside
        if terminated or truncated:
            obs, _ = env.reset()
    seen = np.concatenate(victim.seen)
    delta = np.abs(seen - np.stack(true))
    assert np.all(delta <= 1.5 * SCALE * (1 + 1e-6))
    assert np.all(seen >= lo) and np.all(seen <= -lo)
    assert np.any(np.abs(seen[:, 0]) == 2.4)  # the box did bind
    assert np.mean(delta[:, 1] >= 1.5 * SCALE[1] * 0.999) > 0.5  # clipped actions: the edge
    env.close()


def test_the_budget_is_a_checked_settable_attribute_and_bad_arguments_name_themselves():
    env = AdversaryEnv("CartPole-v1", balancing_victim, eps=1.0, eps_scale=SCALE)
    env.eps = 0.25
    assert env.eps == 0.25
    with pytest.raises(ValueError, match="eps must be .*Received: eps=-1"):
        env.eps = -1
    env.reset(seed=0)
    with pytest.raises(ValueError, match="action must hold 4 finite numbers"):
        env.step(np.zeros(3))
    with pytest.raises(ValueError, match="action must hold 4 finite numbers"):
        env.step(np.array([0.0, np.nan, 0.0, 0.0]))
    with pytest.raises(ValueError, match="victim must be callable"):
        AdversaryEnv("CartPole-v1", "greedy", eps=1.0)
    with pytest.raises(ValueError, match="eps_scale must be finite and > 0"):
        AdversaryEnv("CartPole-v1", balancing_victim, eps=1.0, eps_scale=[1, 1, 0, 1])
    with pytest.raises(ValueError, match="floating-point Box"):
        AdversaryEnv("FrozenLake-v1", balancing_victim, eps=1.0)
    with pytest.raises(ValueError, match="size must be an integer >= 1"):
        random_adversary(0)
    env.close()


def test_reinforce_learns_in_it_and_minus_its_evaluation_is_the_victims_return():
    factory = partial(AdversaryEnv, "CartPole-v1", balancing_victim, 2.0, eps_scale=SCALE)
    agent = Reinforce(factory, ReinforceConfig(num_envs=2, vectorization="sync", seed=0))
    # The victim environment's time limit reaches the agent through the spec.
    assert agent.max_steps == 500 and agent.env_name == "CartPole-v1-adversary"
    ramp = []

    def ramp_eps(row):  # an eps ramp reaches every sub-environment through set_attr
        agent.envs.set_attr("eps", 0.5 * len(ramp) + 0.5)
        ramp.append(agent.envs.get_attr("eps"))

    agent.train(1_500, callback=ramp_eps)
    assert ramp[:2] == [(0.5, 0.5), (1.0, 1.0)]
    assert agent.action_space == gym.spaces.Box(-1.0, 1.0, (4,), np.float32)
    env = factory()
    adversary = partial(agent.act, deterministic=True)
    victim = victim_returns(env, adversary, episodes=3, seed=5)
    np.testing.assert_array_equal(-agent.evaluate(env, episodes=3, seed=5), victim)
    env.close()
    agent.close()


@pytest.mark.slow
def test_slow_a_learned_adversary_beats_random_noise_of_the_same_budget():
    """Fixed seed 0 and budget (150,000 adversary steps, about 6 s on 2 cores): REINFORCE
    learns to perturb the balancing controller's view, within 2 standard deviations per
    feature, into a fall: the victim's return drops far below both its clean 500 and its
    return under uniform noise of the same budget. Seeds 0 to 4 reached 51 to 106, against
    364 under noise (20 episodes each). At eps 1 the same budget is not reliable (126 to 500
    over seeds 0 to 4)."""
    eps = 2.0
    factory = partial(AdversaryEnv, "CartPole-v1", balancing_victim, eps, eps_scale=SCALE)
    agent = Reinforce(factory, ReinforceConfig(vectorization="sync", seed=0))
    agent.train(150_000)
    env = factory()
    clean = victim_returns(env, _no_attack, episodes=20, seed=100)
    noise = victim_returns(env, random_adversary(4, seed=0), episodes=20, seed=100)
    learned = victim_returns(env, partial(agent.act, deterministic=True), episodes=20,
                             seed=100)
    env.close()
    agent.close()
    print(f"victim return: clean {clean.mean():.1f}, uniform noise {noise.mean():.1f}, "
          f"learned adversary {learned.mean():.1f} (eps {eps})")
    assert clean.mean() == 500.0
    assert learned.mean() < 0.5 * noise.mean() and noise.mean() < clean.mean()


# -- DirectorEnv: the adversary names the victim's action ---------------------------------


def _reachable(obs, eps):
    """By hand for the linear ``balancing_victim``: its score ``angle + 0.5 * angular
    velocity`` moves by at most ``eps * (scale_angle + 0.5 * scale_velocity)`` inside the
    ball, so action 1 (score > 0) and action 0 (score <= 0) are reachable iff the score's
    extremes cross 0."""
    score, reach = obs[2] + 0.5 * obs[3], eps * (SCALE[2] + 0.5 * SCALE[3])
    return {1: score + reach > 0, 0: score - reach <= 0}


def test_the_director_gets_exactly_the_actions_the_ball_can_reach_and_no_more():
    victim = RecordingVictim()
    eps = 1.0
    env = DirectorEnv("CartPole-v1", victim, eps=eps, eps_scale=SCALE)
    assert env.action_space == gym.spaces.Discrete(2)
    rng = np.random.default_rng(0)
    obs, _ = env.reset(seed=0)
    reached = []
    for _ in range(400):
        requested = int(rng.integers(2))
        true = obs
        obs, reward, terminated, truncated, info = env.step(requested)
        seen = info["perturbed_observation"]
        taken = int(balancing_victim(seen[None])[0])
        # Reached where the hand-computed extremes say so (away from the boundary, where
        # float32 rounding could go either way).
        score, reach = true[2] + 0.5 * true[3], eps * (SCALE[2] + 0.5 * SCALE[3])
        if abs(abs(score) - reach) > 1e-5:
            assert info["reached"] == _reachable(true, eps)[requested]
        assert taken == (requested if info["reached"] else balancing_victim(true[None])[0])
        # The true observation when the victim obliges unasked or cannot be moved; else a
        # corner of the ball.
        delta = np.abs(seen - true)
        own = balancing_victim(true[None])[0]
        if own == requested or not info["reached"]:
            np.testing.assert_array_equal(seen, true)
        else:
            np.testing.assert_allclose(delta, eps * SCALE, rtol=1e-5, atol=1e-7)
        assert reward == -info["victim_reward"] == -1.0
        reached.append(info["reached"])
        if terminated or truncated:
            obs, _ = env.reset()
    assert 0.1 < np.mean(reached) < 1.0  # both cases were exercised
    env.close()


def _pushed_the_wrong_way(eps, seed):
    """By hand, in the plain environment: the victim takes the other action wherever the
    ball can make it (``_reachable``), its own elsewhere; the return."""
    env = gym.make("CartPole-v1")
    obs, _ = env.reset(seed=seed)
    total, done = 0.0, False
    while not done:
        own = int(balancing_victim(obs[None])[0])
        action = 1 - own if _reachable(obs, eps)[1 - own] else own
        obs, reward, terminated, truncated, _ = env.step(action)
        total, done = total + reward, terminated or truncated
    env.close()
    return total


def test_asking_for_the_victims_own_action_replays_its_clean_episode_and_the_other_fells_it():
    env = DirectorEnv("CartPole-v1", balancing_victim, eps=2.0, eps_scale=SCALE)
    own = victim_returns(env, balancing_victim, episodes=3, seed=7)
    other = victim_returns(env, lambda obs: 1 - balancing_victim(obs), episodes=3, seed=7)
    assert own.tolist() == [500.0] * 3
    assert other.tolist() == [_pushed_the_wrong_way(2.0, 7 + k) for k in range(3)]
    assert other.max() < 100
    env.eps = 0.0  # no budget: only the victim's own action is ever reached
    assert victim_returns(env, lambda obs: 1 - balancing_victim(obs), 3, seed=7).tolist() == [
        500.0] * 3
    env.close()


class _WideObservations(gym.Env):
    """Discrete actions, ``MAX_DIRECTOR_FEATURES + 1`` observation features."""
    observation_space = gym.spaces.Box(-1.0, 1.0, (MAX_DIRECTOR_FEATURES + 1,), np.float32)
    action_space = gym.spaces.Discrete(2)


def test_the_director_refuses_box_actions_wide_observations_and_actions_it_cannot_name():
    with pytest.raises(ValueError, match="needs Discrete actions"):
        DirectorEnv("Pendulum-v1", lambda obs: np.zeros((len(obs), 1)), eps=1.0)
    with pytest.raises(ValueError, match=f"features must be <= {MAX_DIRECTOR_FEATURES}. "
                                         f"Received: {MAX_DIRECTOR_FEATURES + 1}"):
        DirectorEnv(_WideObservations, balancing_victim, eps=1.0)
    env = DirectorEnv("CartPole-v1", balancing_victim, eps=1.0, eps_scale=SCALE)
    env.reset(seed=0)
    for action in (2, -1, 0.5, [0, 1]):
        with pytest.raises(ValueError, match="action must be one of the victim's actions"):
            env.step(action)
    env.close()


def test_reinforce_learns_to_direct_and_minus_its_evaluation_is_the_victims_return():
    factory = partial(DirectorEnv, "CartPole-v1", balancing_victim, 1.0, eps_scale=SCALE)
    agent = Reinforce(factory, ReinforceConfig(num_envs=2, vectorization="sync", seed=0))
    assert agent.action_space == gym.spaces.Discrete(2)
    agent.train(1_500)
    env = factory()
    victim = victim_returns(env, partial(agent.act, deterministic=True), episodes=3, seed=5)
    np.testing.assert_array_equal(-agent.evaluate(env, episodes=3, seed=5), victim)
    env.close()
    agent.close()


# -- LearnedAdversaryHook: the environments' perturbation, as an observation hook ----------

def _victim_network(seed: int = 0, actions: int = 2):
    """A small random Keras policy network (logits) over CartPole's four features."""
    import keras
    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.Input((4,)), keras.layers.Dense(16, activation="tanh"),
                             keras.layers.Dense(actions)])


def _cartpole_states(count: int, seed: int = 0) -> np.ndarray:
    """True CartPole observations from episodes of the balancing victim."""
    env, states = gym.make("CartPole-v1"), []
    obs, _ = env.reset(seed=seed)
    while len(states) < count:
        states.append(obs)
        obs, _, terminated, truncated, _ = env.step(int(balancing_victim(obs[None])[0]))
        if terminated or truncated:
            obs, _ = env.reset()
    env.close()
    return np.array(states, np.float32)


@pytest.mark.parametrize("bounded", [False, True])
def test_the_hook_shows_the_victim_what_an_adversary_env_shows_it(bounded):
    import tensorflow as tf

    from attacks.learned_adversary import LearnedAdversaryHook
    states = _cartpole_states(40)
    # Per-feature bounds a little outside the states (AdversaryEnv requires them inside),
    # which many perturbations cross.
    margin = 0.4 * SCALE
    clip = (states.min(axis=0) - margin, states.max(axis=0) + margin) if bounded else None
    rng = np.random.default_rng(0)
    actions = rng.uniform(-1.6, 1.6, states.shape).astype(np.float32)  # some beyond [-1, 1]
    hook = LearnedAdversaryHook(lambda obs: tf.constant(actions), 0.7, eps_scale=SCALE,
                                clip=clip)
    seen = hook(None, tf.constant(states)).numpy()
    env = AdversaryEnv("CartPole-v1", balancing_victim, eps=0.7, eps_scale=SCALE, clip=clip)
    for obs, action, hooked in zip(states, actions, seen):
        env._obs = obs  # the true observation the environment would hold
        np.testing.assert_array_equal(hooked, env.perturb(action))
    env.close()
    hook.eps.assign(0.0)  # a settable budget: none, no change
    np.testing.assert_array_equal(hook(None, tf.constant(states)).numpy(), states)


def test_the_director_hook_shows_the_victim_what_a_director_env_shows_it():
    import tensorflow as tf

    from attacks.learned_adversary import LearnedAdversaryHook
    model = _victim_network()
    states = _cartpole_states(60, seed=1)
    victim = lambda obs: model(obs).numpy().argmax(axis=-1)  # noqa: E731
    env = DirectorEnv("CartPole-v1", victim, eps=3.0, eps_scale=SCALE)
    for requested in (0, 1):
        hook = LearnedAdversaryHook(lambda obs, k=requested: tf.fill([tf.shape(obs)[0]], k),
                                    3.0, eps_scale=SCALE, director=True)
        seen = tf.function(partial(hook, model))(tf.constant(states)).numpy()
        reached = []
        for obs, hooked in zip(states, seen):
            env._obs = obs
            np.testing.assert_array_equal(hooked, env.perturb(requested))
            reached.append(env.reached)
        # Both branches were exercised: perturbed to oblige, and left alone where the
        # victim already obliges or nothing in the ball makes it.
        assert any(reached) and any((hooked == obs).all() for obs, hooked in zip(states, seen))
        assert any((hooked != obs).any() for obs, hooked in zip(states, seen))
    env.close()
    # A victim whose actions start at 1 is asked in its own numbering: the same choices.
    shifted = LearnedAdversaryHook(lambda obs: tf.fill([tf.shape(obs)[0]], 2), 3.0,
                                   eps_scale=SCALE, director=True, action_start=1)
    plain = LearnedAdversaryHook(lambda obs: tf.fill([tf.shape(obs)[0]], 1), 3.0,
                                 eps_scale=SCALE, director=True)
    np.testing.assert_array_equal(shifted(model, tf.constant(states)).numpy(),
                                  plain(model, tf.constant(states)).numpy())


def test_the_hook_checks_its_arguments_and_names_them():
    import tensorflow as tf

    from attacks.learned_adversary import LearnedAdversaryHook
    with pytest.raises(ValueError, match="adversary must be callable"):
        LearnedAdversaryHook("pgd", 0.5)
    with pytest.raises(ValueError, match="eps must be"):
        LearnedAdversaryHook(lambda obs: obs, -0.5)
    with pytest.raises(ValueError, match="eps_scale"):
        LearnedAdversaryHook(lambda obs: obs, 0.5, eps_scale=[1.0, 0.0])
    wide = tf.zeros([2, MAX_DIRECTOR_FEATURES + 1])
    hook = LearnedAdversaryHook(lambda obs: tf.zeros([2], tf.int64), 0.5, director=True)
    with pytest.raises(ValueError, match=f"features must be <= {MAX_DIRECTOR_FEATURES}"):
        hook(None, wide)


def test_objective_per_environment_shares_its_budget_with_a_learned_adversary():
    import tensorflow as tf

    from attacks.learned_adversary import LearnedAdversaryHook
    from attacks.observation import ObjectivePerEnvironment, ObservationAttack
    model, states = _victim_network(), tf.constant(_cartpole_states(8))
    pgd = ObservationAttack("pgd", 0.0, eps_scale=SCALE, steps=3, seed=0)
    learned = LearnedAdversaryHook(lambda obs: tf.ones_like(obs), 0.0, eps_scale=SCALE)
    hook = ObjectivePerEnvironment([pgd, learned])
    hook.eps.assign(0.4)
    seen = hook(model, states).numpy()
    # Odd rows: the learned adversary's push, +0.4 std on every feature.
    np.testing.assert_allclose(seen[1::2], states.numpy()[1::2] + 0.4 * SCALE, rtol=1e-6)
    np.testing.assert_array_equal(seen[0::2], pgd(model, states).numpy()[0::2])

import numpy as np
import pytest

from agents.returns import discounted_returns, normalize


def test_terminated_episode_by_hand():
    # gamma 0.5: G2 = 1, G1 = 1 + 0.5, G0 = 1 + 0.75.
    np.testing.assert_allclose(discounted_returns([1, 1, 1], [0, 0, 1], [0, 0, 0], 0.5),
                               [1.75, 1.5, 1.0])


def test_truncated_episode_bootstraps_only_with_a_value():
    # Cut by a time limit after step 2 with V(final_obs) = 4: G2 = 1 + 0.5 * 4 = 3.
    np.testing.assert_allclose(
        discounted_returns([1, 1, 1], [0, 0, 0], [0, 0, 1], 0.5, bootstrap_values=[9, 9, 4]),
        [2.25, 2.5, 3.0])
    # Without a baseline the cut counts as 0: the return of the episode actually played.
    np.testing.assert_allclose(discounted_returns([1, 1, 1], [0, 0, 0], [0, 0, 1], 0.5),
                               [1.75, 1.5, 1.0])


def test_bootstrap_values_are_ignored_at_terminal_and_middle_steps():
    np.testing.assert_allclose(
        discounted_returns([1, 2], [0, 1], [0, 0], 0.9, bootstrap_values=[100, 100]),
        [1 + 0.9 * 2, 2])


def test_returns_do_not_leak_across_episodes_or_environments():
    # Column 0: episodes [1, 2] (terminated) then [3] (truncated, V = 10).
    # Column 1: one episode [1, 1, 1] (terminated). gamma = 0.9.
    rewards = np.array([[1, 1], [2, 1], [3, 1]], float)
    terminated = np.array([[0, 0], [1, 0], [0, 1]], bool)
    truncated = np.array([[0, 0], [0, 0], [1, 0]], bool)
    values = np.array([[0, 0], [0, 0], [10, 0]], float)
    expected = np.array([[1 + 0.9 * 2, 1 + 0.9 + 0.81],
                         [2, 1 + 0.9],
                         [3 + 0.9 * 10, 1]])
    np.testing.assert_allclose(
        discounted_returns(rewards, terminated, truncated, 0.9, values), expected)


def test_a_non_finite_value_stays_in_its_episode():
    # The second episode's bootstrap is NaN and its reward inf: the first episode's returns
    # are computed as if they were not there.
    returns = discounted_returns([1, 1, 1, np.inf], [0, 1, 0, 0], [0, 0, 0, 1], 0.9,
                                 bootstrap_values=[0, 0, 0, np.nan])
    np.testing.assert_allclose(returns[:2], [1.9, 1.0])
    assert not np.isfinite(returns[2:]).any()


def test_normalize():
    out = normalize([1.0, 2.0, 3.0, 6.0])
    np.testing.assert_allclose([out.mean(), out.std()], [0.0, 1.0], atol=1e-7)
    np.testing.assert_allclose(normalize([5.0, 5.0]), [0.0, 0.0])


@pytest.mark.parametrize("gamma", [0.0, -0.5, 1.5])
def test_bad_gamma(gamma):
    with pytest.raises(ValueError, match=r"gamma must be in \(0\.0, 1\.0\]"):
        discounted_returns([1], [1], [0], gamma)


def test_shape_mismatch():
    with pytest.raises(ValueError, match="terminated and truncated must have the shape"):
        discounted_returns([1, 1], [1], [0, 0], 0.9)

"""policy_attacks' learning test, in a file of its own so that the parallel test run (one
process per file) can place it beside the experiment's other tests rather than after them."""

import numpy as np
import pytest

from experiments import policy_attacks as experiment


@pytest.mark.slow
def test_slow_adversarial_training_withstands_the_attacks_standard_training_falls_to():
    """A learning test with a fixed seed and budget: the same agent, trained with and without
    attacked observations for the experiment's default budget, evaluated under the worst
    attack at 0.5 standard deviations, on a fixed observation scale (one an earlier run
    measured). It checks that training through the observation hook makes this agent more
    robust, not that adversarial training wins in general: over ten seeds its gain is not
    significant (README, "Attacks on policies")."""
    config = experiment.ExperimentConfig(seeds=(0,), eval_episodes=10, eps_values=(0.0, 0.5),
                                         adversary_steps=0, progress=False)
    scale = [0.6022727272935179, 0.180780374225117, 0.012352016599329389, 0.1949966278909232]
    worst = {}
    for kind in ("standard", "adversarial"):
        rows = []
        probe = experiment.Reinforce("CartPole-v1")
        agent = experiment.train_agent(config, kind, 0, scale, probe.action_space, rows)
        evaluation = experiment.Evaluation(config, scale, probe.action_space)
        returns = experiment.evaluate_agent(agent, config, evaluation, 0)
        worst[kind] = min(np.mean(r["0.5"]) for name, r in returns.items() if name != "random")
        assert agent.trace_counts.get("act_through_hook", 1) == 1
    print(worst)
    assert worst["standard"] < 250 and worst["adversarial"] > worst["standard"] + 100

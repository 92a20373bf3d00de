"""Cost of an attacked rollout over a clean one, per environment step, side by side in one run.

A REINFORCE agent (trained briefly, so that episodes last) plays ``--envs`` CartPole-v1
environments at once, greedily, for ``--steps`` steps (sub-environments reset themselves):
once clean and once through ``attacks.observation.AttackedVectorObservations`` with each
attack (random noise, FGSM, PGD-10) at 0.5 standard deviations. The runs take turns, block of
``--block`` steps by block, so that they share the machine's noise.

A step is: the attack (one compiled call on the batch of observations, if attacked), the
greedy action (the agent's ``act``: it reads the policy's weights, then runs the forward pass
in NumPy), the environment step. The attack adds one input gradient (FGSM) or ten (PGD-10) to
a forward pass, and a TensorFlow call that clean acting no longer makes.

    python benchmarks/bench_policy_attacks.py        # about half a minute on 2 CPU cores
"""

from __future__ import annotations

import argparse

import gymnasium as gym
import harness
import numpy as np

from agents import Reinforce, ReinforceConfig
from attacks.observation import AttackedVectorObservations, ObservationAttack

# CartPole's observation standard deviations under a solved policy (the experiment measures
# its own; the cost does not depend on them).
OBS_STD = np.array([0.36, 0.165, 0.0132, 0.19], np.float32)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--envs", type=int, default=10, help="environments stepped together")
    parser.add_argument("--steps", type=int, default=2000, help="steps per run")
    parser.add_argument("--block", type=harness.positive, default=50,
                        help="steps per timed block")
    args = parser.parse_args(argv)

    agent = Reinforce("CartPole-v1", ReinforceConfig(seed=0))
    agent.train(30_000)
    attacks = {"clean": None,
               "random": ObservationAttack("random", 0.5, eps_scale=OBS_STD),
               "fgsm": ObservationAttack("fgsm", 0.5, eps_scale=OBS_STD),
               "pgd-10": ObservationAttack("pgd", 0.5, eps_scale=OBS_STD, steps=10)}

    def rollout(attack):
        """A callable that steps its own environments ``--block`` times."""
        envs = gym.make_vec("CartPole-v1", args.envs, vectorization_mode="vector_entry_point")
        if attack is not None:
            envs = AttackedVectorObservations(envs, agent.policy.model, attack)
        obs = envs.reset(seed=0)[0]

        def block():
            nonlocal obs
            for _ in range(args.block):
                obs = envs.step(agent.act(obs, deterministic=True))[0]
        return envs, block

    runs = {name: rollout(attack) for name, attack in attacks.items()}
    harness.header("bench_policy_attacks", f"{args.envs} CartPole-v1 envs, {args.steps} steps "
                   f"per run, blocks of {args.block} taking turns; time per environment step")
    seconds = harness.take_turns({name: block for name, (_, block) in runs.items()},
                                 args.steps // args.block, warmup=1)
    per_env_step = args.block * args.envs
    harness.table({name: [s / per_env_step for s in values] for name, values in seconds.items()},
                  "clean", unit="us")
    for envs, _ in runs.values():
        envs.close()


if __name__ == "__main__":
    main()

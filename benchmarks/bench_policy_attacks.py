"""Cost of an attacked rollout over a clean one, per environment step, side by side in one run.

A REINFORCE agent (trained briefly, so that episodes last) plays ``--envs`` CartPole-v1
environments at once, greedily, for ``--steps`` steps (sub-environments reset themselves):
once clean and once through ``attacks.observation.AttackedVectorObservations`` with each
attack (random noise, FGSM, PGD-10) at 0.5 standard deviations. The runs take turns, block of
``--block`` steps by block, so that they share the machine's noise; each block is timed, and
the per-step medians and their ratio to the clean one are printed.

A step is: the attack (one compiled call on the batch of observations, if attacked), the
greedy action (the agent's ``act``: it reads the policy's weights, then runs the forward pass
in NumPy), the environment step. The attack adds one input gradient (FGSM) or ten (PGD-10) to
a forward pass, and a TensorFlow call that clean acting no longer makes.

    python benchmarks/bench_policy_attacks.py        # about half a minute on 2 CPU cores
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import gymnasium as gym  # noqa: E402
import numpy as np  # noqa: E402

from agents import Reinforce, ReinforceConfig  # noqa: E402
from attacks.observation import AttackedVectorObservations, ObservationAttack  # noqa: E402

# CartPole's observation standard deviations under a solved policy (the experiment measures
# its own; the cost does not depend on them).
OBS_STD = np.array([0.36, 0.165, 0.0132, 0.19], np.float32)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--envs", type=int, default=10, help="environments stepped together")
    parser.add_argument("--steps", type=int, default=2000, help="steps per run")
    parser.add_argument("--block", type=int, default=50, help="steps per timed block")
    args = parser.parse_args(argv)

    agent = Reinforce("CartPole-v1", ReinforceConfig(seed=0))
    agent.train(30_000)
    model = agent.policy.model
    attacks = {"clean": None,
               "random": ObservationAttack("random", 0.5, eps_scale=OBS_STD),
               "fgsm": ObservationAttack("fgsm", 0.5, eps_scale=OBS_STD),
               "pgd-10": ObservationAttack("pgd", 0.5, eps_scale=OBS_STD, steps=10)}
    runs = {}
    for name, attack in attacks.items():
        envs = gym.make_vec("CartPole-v1", args.envs, vectorization_mode="vector_entry_point")
        if attack is not None:
            envs = AttackedVectorObservations(envs, model, attack)
        obs, _ = envs.reset(seed=0)
        runs[name] = {"envs": envs, "obs": obs, "seconds": []}
        for _ in range(3):  # trace and warm up, untimed
            runs[name]["obs"] = envs.step(agent.act(runs[name]["obs"], deterministic=True))[0]

    for _ in range(args.steps // args.block):
        for run in runs.values():
            start = time.perf_counter()
            obs = run["obs"]
            for _ in range(args.block):
                obs = run["envs"].step(agent.act(obs, deterministic=True))[0]
            run["obs"] = obs
            run["seconds"].append((time.perf_counter() - start) / args.block)

    clean = statistics.median(runs["clean"]["seconds"])
    print(f"bench_policy_attacks: {args.envs} CartPole-v1 envs, {args.steps} steps per run, "
          f"blocks of {args.block} taking turns")
    print(f"{'run':8s} {'ms / step':>10s} {'per env step (us)':>18s} {'x clean':>8s}")
    for name, run in runs.items():
        seconds = statistics.median(run["seconds"])
        print(f"{name:8s} {1e3 * seconds:10.3f} {1e6 * seconds / args.envs:18.1f} "
              f"{seconds / clean:8.2f}")
        run["envs"].close()


if __name__ == "__main__":
    main()

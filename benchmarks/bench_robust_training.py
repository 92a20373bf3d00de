"""Cost of robust training over standard training at the same steps, side by side in one run.

Each round trains one agent of every kind of ``experiments.policy_attacks`` from scratch on
CartPole-v1 for ``--steps`` environment steps (default the experiment's own budget, so that
the one-off costs, tracing and XLA compilation, weigh as they do there), kinds taking turns:
``standard``; ``adversarial`` (acting through PGD-10 on every observation, away from the
greedy action or toward one action per environment, one compiled call per step);
``regularized`` (the state-adversarial regularizer: 5 PGD steps on the KL inside each
update, on the update's batch); ``both``. Training eps ramps as in the experiment; the
observation scale is fixed (the experiment measures its own; the cost does not depend on it).

Then the cost of TensorFlow's op determinism, which every experiment turns on
(``experiments.skeleton``): ``policy_attacks --quick --kinds standard regularized`` (dense
networks, attacks), ``reinforce`` on two seeds (many small updates) and ``fgsm_mnist --quick
--source sample`` (convolutions), each in fresh processes with and without it, in turns
(determinism is process-wide and cannot be turned off once on).

    python benchmarks/bench_robust_training.py              # about 9 minutes on 2 CPU cores
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

import harness

from experiments import policy_attacks

# CartPole's observation standard deviations under solved policies (as bench_policy_attacks).
OBS_STD = [0.36, 0.165, 0.0132, 0.19]
CHILD = """
import importlib, sys, tensorflow as tf
if sys.argv[1] == "off":  # every experiment turns it on as it starts: leave it off
    tf.config.experimental.enable_op_determinism = lambda: None
importlib.import_module("experiments." + sys.argv[2]).main(sys.argv[3:])
"""
QUICK_RUNS = {"policy_attacks": ["--quick", "--kinds", "standard", "regularized",
                                 "--no-progress"],
              "reinforce": ["--env", "CartPole-v1", "--seeds", "0", "1", "--no-progress"],
              "fgsm_mnist": ["--quick", "--source", "sample"]}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=harness.positive,
                        default=policy_attacks.ExperimentConfig.total_steps,
                        help="environment steps per agent (default: the experiment's)")
    parser.add_argument("--rounds", type=harness.positive, default=3)
    args = parser.parse_args(argv)

    config = policy_attacks.ExperimentConfig(total_steps=args.steps, progress=False)
    probe = policy_attacks.Reinforce("CartPole-v1")

    def train(kind):
        return lambda: policy_attacks.train_agent(config, kind, 0, OBS_STD, probe.action_space,
                                                  [])

    harness.header("bench_robust_training", f"CartPole-v1, {args.steps:,} steps per agent, "
                   f"from scratch (tracing included), {args.rounds} rounds in turns")
    seconds = harness.take_turns({kind: train(kind) for kind in policy_attacks.KINDS},
                                 args.rounds, warmup=0)
    harness.table(seconds, "standard", unit="s")

    for experiment, flags in QUICK_RUNS.items():
        print(f"  op determinism: {experiment} {' '.join(flags)}, one process per run")
        runs = {"determinism off": [], "determinism on": []}
        with tempfile.TemporaryDirectory() as scratch:
            for i in range(args.rounds):
                for name in (list(runs) if i % 2 == 0 else list(runs)[::-1]):
                    switch = name.split()[-1]
                    out = os.path.join(scratch, f"{i}-{switch}")
                    start = time.perf_counter()
                    subprocess.run([sys.executable, "-c", CHILD, switch, experiment, *flags,
                                    "--out", out], check=True, capture_output=True)
                    runs[name].append(time.perf_counter() - start)
        harness.table(runs, "determinism off", unit="s")


if __name__ == "__main__":
    main()

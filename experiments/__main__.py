"""Runs every experiment with its defaults and writes results/: the README's main job.

    python -m experiments                  # all of them
    python -m experiments --only reinforce # one
    python -m experiments --resume         # continue the runs an interruption left partial

Each experiment's own command (``python -m experiments.<name> --help``) has its options.
"""

from __future__ import annotations

import argparse
import importlib
import time

from experiments.cli import run_command

EXPERIMENTS = {
    "curvature": [],                                   # edge of stability, ~30 s
    "clipping": [],                                    # clipping a SimpleRNN, ~4 minutes
    "straight_through": ["--source", "sample"],        # straight-through estimators, ~1.5 min
    "reinforce": ["--env", "CartPole-v1"],             # REINFORCE learning curves, ~20 s
    "fgsm_mnist": ["--source", "sample"],              # adversarial training, ~4 minutes
    "gradient_penalty": ["--source", "sample"],        # double backprop as a defence, ~2 min
    "policy_attacks": ["--env", "CartPole-v1"],        # attacks on policies, ~3 minutes
}
# Experiments with checkpoints; the others simply start over (each takes a few minutes).
RESUMABLE = ("reinforce", "fgsm_mnist", "policy_attacks")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", nargs="+", choices=sorted(EXPERIMENTS),
                        default=list(EXPERIMENTS), help="experiments to run")
    parser.add_argument("--resume", action="store_true",
                        help=f"continue interrupted runs of {', '.join(RESUMABLE)} from their "
                             "checkpoints")
    args = parser.parse_args(argv)
    for name in args.only:
        flags = EXPERIMENTS[name] + (["--resume"] if args.resume and name in RESUMABLE else [])
        print(f"== {name}: python -m experiments.{name} {' '.join(flags)}", flush=True)
        start = time.perf_counter()
        importlib.import_module(f"experiments.{name}").main(flags)
        print(f"== {name} done in {time.perf_counter() - start:.0f} s", flush=True)


if __name__ == "__main__":
    run_command(main)

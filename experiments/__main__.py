"""Runs every experiment with its defaults and writes results/: the README's main job.

    python -m experiments                  # all of them
    python -m experiments --only reinforce # one

Each experiment's own command (``python -m experiments.<name> --help``) has its options.
"""

from __future__ import annotations

import argparse
import importlib
import time

EXPERIMENTS = {
    "curvature": [],                                   # edge of stability, ~1 minute
    "reinforce": ["--env", "CartPole-v1"],             # REINFORCE learning curves, ~1 minute
    "fgsm_mnist": ["--source", "sample"],              # adversarial training, ~6 minutes
}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", nargs="+", choices=sorted(EXPERIMENTS),
                        default=list(EXPERIMENTS), help="experiments to run")
    args = parser.parse_args(argv)
    for name in args.only:
        print(f"== {name}: python -m experiments.{name} {' '.join(EXPERIMENTS[name])}",
              flush=True)
        start = time.perf_counter()
        importlib.import_module(f"experiments.{name}").main(EXPERIMENTS[name])
        print(f"== {name} done in {time.perf_counter() - start:.0f} s", flush=True)


if __name__ == "__main__":
    main()

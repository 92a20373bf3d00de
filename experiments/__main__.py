"""Runs every experiment with its defaults and writes results/: the README's main job.

    python -m experiments                  # all of them
    python -m experiments --only reinforce # one
    python -m experiments --resume         # continue the runs an interruption left partial
    python -m experiments --quick          # a tour: each in its small configuration, into
                                           # results-quick/ (results/ is left alone)

Each experiment's own command (``python -m experiments.<name> --help``) has its options. At
the end the job prints what each experiment cost; a full run of all of them with their
defaults also writes those times into ``results/main_job.json`` (the README's cost table).

"""

from __future__ import annotations

import argparse
import importlib
import time
from pathlib import Path

from experiments.cli import run_command
from experiments.records import TensorBoardLog, library_versions, write_json

EXPERIMENTS = {
    "curvature": [],                                   # edge of stability
    "clipping": [],                                    # clipping a SimpleRNN
    "straight_through": ["--source", "sample"],        # straight-through estimators
    "reinforce": ["--env", "CartPole-v1"],             # REINFORCE learning curves
    "fgsm_mnist": ["--source", "sample"],              # adversarial training
    "gradient_penalty": ["--source", "sample"],        # double backprop as a defence
    "policy_attacks": ["--env", "CartPole-v1"],        # attacks on policies
}
# Experiments with checkpoints; the others simply start over (each takes a few minutes).
RESUMABLE = ("reinforce", "fgsm_mnist", "policy_attacks")
QUICK_OUT = Path("results-quick")   # where --quick writes, so that results/ keeps full runs
TIMES = Path("results") / "main_job.json"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", nargs="+", choices=sorted(EXPERIMENTS),
                        default=list(EXPERIMENTS), help="experiments to run")
    parser.add_argument("--resume", action="store_true",
                        help=f"continue interrupted runs of {', '.join(RESUMABLE)} from their "
                             "checkpoints")
    parser.add_argument("--quick", action="store_true",
                        help="every experiment in its small configuration (its --quick), "
                             f"written into {QUICK_OUT}/<experiment> instead of results/")
    args = parser.parse_args(argv)
    only = [name for name in EXPERIMENTS if name in args.only]  # the main job's order
    seconds, writing = {}, {}
    for name in only:
        flags = list(EXPERIMENTS[name])
        if args.quick:
            flags += ["--quick", "--out", str(QUICK_OUT / name)]
        if args.resume and name in RESUMABLE:
            flags.append("--resume")
        print(f"== {name}: python -m experiments.{name} {' '.join(flags)}", flush=True)
        start, spent = time.perf_counter(), TensorBoardLog.spent
        importlib.import_module(f"experiments.{name}").main(flags)
        seconds[name] = time.perf_counter() - start
        writing[name] = TensorBoardLog.spent - spent
        print(f"== {name} done in {seconds[name]:.0f} s ({writing[name]:.1f} s of it writing "
              "TensorBoard scalars)", flush=True)

    total = sum(seconds.values())
    tensorboard_fraction = {name: writing[name] / seconds[name] if seconds[name] else 0.0
                            for name in seconds}
    print("\n== what each experiment cost (wall time; share of it writing TensorBoard scalars)")
    for name, s in seconds.items():
        print(f"   {name:<18} {s / 60:5.1f} min   {tensorboard_fraction[name]:6.2%}")
    print(f"   {'total':<18} {total / 60:5.1f} min")
    if only == list(EXPERIMENTS) and not args.quick:
        write_json(TIMES, {"minutes": {name: s / 60 for name, s in seconds.items()},
                           "total_minutes": total / 60,
                           "tensorboard_fraction": tensorboard_fraction,
                           "resumed": args.resume, "versions": library_versions()})
    return seconds


if __name__ == "__main__":
    run_command(main)

"""Do REINFORCE's defaults (and the per-environment presets) serve every classic-control task?

Runs ``python -m experiments.reinforce`` on each environment for ten seeds and 300,000
environment steps per seed, in a fresh process as a user would (TensorFlow's default threads),
with the environment's preset (``experiments.reinforce.PRESETS``) and, where there is one,
without it (``--no-preset``: ``ReinforceConfig``'s defaults, tuned on CartPole). Prints per
environment the seeds that solve (the mean of the last 100 training episodes reaches
gymnasium's reward threshold: CartPole 475, Acrobot -100, InvertedPendulum 950), the median
steps to solve (unsolved seeds count as never), and the seeds whose last-100 mean reaches the
maximum return (CartPole 500, InvertedPendulum 1,000).

    python benchmarks/bench_reinforce_presets.py                  # about 10 minutes on 2 cores
    python benchmarks/bench_reinforce_presets.py --envs Acrobot-v1 --seeds 10 11 12

How the presets were chosen, with the sweep on chosen and held-out seeds: README (REINFORCE
on CartPole, "Other environments").
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import harness  # noqa: F401  (quiets TensorFlow's logging in the child too)

from experiments.reinforce import PRESETS

ENVS = ("CartPole-v1", "Acrobot-v1", "InvertedPendulum-v5")
MAX_RETURN = {"CartPole-v1": 500.0, "InvertedPendulum-v5": 1000.0}


def run(env: str, seeds, steps: int, preset: bool, out: Path) -> dict:
    """One experiment run; its summary and, per seed, the best last-100 mean in training."""
    subprocess.run([sys.executable, "-m", "experiments.reinforce", "--env", env, "--seeds",
                    *map(str, seeds), "--total-steps", str(steps), "--eval-episodes", "5",
                    "--no-progress", "--preset" if preset else "--no-preset",
                    "--out", str(out)], check=True, capture_output=True)
    summary = json.loads((out / "summary.json").read_text())
    best = {}
    with open(out / "metrics.csv", newline="") as f:
        for row in csv.DictReader(f):
            best[row["seed"]] = max(best.get(row["seed"], -float("inf")),
                                    float(row["running_mean_return"]))
    return {"summary": summary, "best": best}


def describe(result: dict, env: str) -> str:
    summary = result["summary"]
    median = summary["median"]["solved_at_env_steps"]  # None: half or more never solved
    text = (f"solved {summary['seeds_solved']}/{summary['seeds']}, median steps to solve "
            f"{'never' if median is None else f'{median:,.0f}'}")
    if env in MAX_RETURN:
        reached = sum(b >= MAX_RETURN[env] for b in result["best"].values())
        text += f", last-100 mean reached {MAX_RETURN[env]:,.0f} on {reached}"
    return text


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--envs", nargs="+", default=list(ENVS))
    parser.add_argument("--seeds", nargs="+", type=int, default=list(range(10)))
    parser.add_argument("--steps", type=harness.positive, default=300_000)
    args = parser.parse_args(argv)
    harness.header("bench_reinforce_presets", f"{len(args.seeds)} seeds, {args.steps:,} "
                   f"steps each, experiments.reinforce in a fresh process per run")
    with tempfile.TemporaryDirectory() as scratch:
        for env in args.envs:
            for preset in ((True, False) if env in PRESETS else (True,)):
                name = f"preset {PRESETS[env]}" if env in PRESETS and preset else "defaults"
                out = Path(scratch) / f"{env}-{preset}"
                result = run(env, args.seeds, args.steps, preset, out)
                print(f"  {env:20s} {name:60s} {describe(result, env)}", flush=True)


if __name__ == "__main__":
    main()

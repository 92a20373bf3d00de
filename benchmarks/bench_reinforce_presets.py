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

How the presets were chosen (seeds 0-9 to choose, 10-19 held out to confirm; 300,000 steps;
one TensorFlow thread of each kind, so the numbers differ from this script's, which uses the
default threads). Seeds solved out of 10; for InvertedPendulum, in brackets, seeds whose
last-100 mean reached 1,000:

    configuration (changes from the defaults:          Acrobot      InvertedPendulum    CartPole
    8 episodes/update, Adam 0.03, gamma 0.997)         0-9  10-19   0-9      10-19      0-9  10-19
    none                                                6    -      10 [7]   9 [2]       9    10
    value baseline                                      6    -       -       -           -     -
    gamma 0.99                                          7    -       -       -           -     -
    16 episodes/update                                  7    -       -       -           -     -
    16 episodes/update, Adam 0.02, gamma 0.99           9    5       5 [0]   -           -     -
      (the defaults before CartPole's retuning)
      ... and entropy bonus 0.01                        9    7       -       -           -     -
      ... and entropy bonus 0.02                        8    -       -       -           -     -
    entropy bonus 0.01 (Acrobot's preset until          9    7      10 [4]   -          10    10
      2026-12-07)
    entropy bonus 0.01, 16 episodes/update              9    8       -       -           -     -
      (Acrobot's preset)
    initial log std -1.0 (InvertedPendulum's preset     -    -      10 [8]   10 [6]      -     -
      until 2026-12-07)
      ... and 16 episodes/update                        -    -       -       9 [3]      -     -
      ... and 4 episodes/update (stopped at 7 seeds)    -    -     5/7 [2]   -          -     -
      ... and the value baseline                        -    -      10 [6]   -          -     -
      ... and gamma 0.99                                -    -       9 [8]   -          -     -
      ... and Adam 0.02                                 -    -       9 [4]   -          -     -
      ... and Adam 0.01                                 -    -       7 [0]   -          -     -
    initial log std -1.5 (InvertedPendulum's preset)    -    -      10 [8]   10 [10]    -     -
      ... and gamma 0.99                                -    -      10 [10]  10 [7]     -     -
    initial log std -2.0                                -    -       8 [7]   -          -     -

Median steps to solve, CartPole: 93,564 (none, 0-9), 94,720 (none, 10-19), 78,964 (entropy
0.01, 0-9), 102,084 (entropy 0.01, 10-19). Acrobot's preset (entropy bonus 0.01 with 16
episodes per update) reaches issue 22's 8 of 10 on both halves (9 and 8; rerun on 2026-12-07
with the code of that day: the same 9, and 8 held out). So does InvertedPendulum's since
2026-12-07, an initial log std of -1.5: 8 seeds at 1,000 on 0-9 (a tie with -1.0, which
then reached 1,000 on only 6 held-out seeds) and all 10 held out. With gamma 0.99 as well it
reached 1,000 on all of 0-9 but on 7 held-out seeds: not adopted, and a reminder that ten
seeds rank close configurations by chance.
The failing Acrobot seeds never leave -500: no episode reaches the goal, and the
returns-to-go then differ only by time step (without the value baseline the time limit
counts as the episode's end), noise that the normalized update follows towards a
deterministic policy; the entropy bonus keeps most seeds exploring. The baseline, which
bootstraps at the time limit, did not help (6 of 10). InvertedPendulum's last-100 mean
hovers between 950 and 1,000 when the sampled actions' noise tips the pole now and then; a
smaller initial standard deviation leaves less of it. A smaller learning rate shrinks the
learned standard deviation more slowly (Adam 0.01: every seed solves near 950, none reaches
1,000), and with -2.0 two seeds never came close (best last-100 means 96 and 333).
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

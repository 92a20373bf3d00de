"""Do policy_attacks' conclusions survive another thread count and hash seed?

Reruns ``python -m experiments.policy_attacks`` with the configuration of a finished run
(``--reference``, default the committed CartPole-v1 run) in a fresh process with one
TensorFlow thread of each kind and a fixed ``PYTHONHASHSEED``
(``TF_NUM_INTEROP_THREADS=1 TF_NUM_INTRAOP_THREADS=1 PYTHONHASHSEED=12345``), the reference
having run with TensorFlow's default threads and a random hash seed. Prints each kind's
worst-case mean and interval in both runs, how many per-seed numbers are bit-identical, and
each comparison's conclusion in both: the kind that is more robust where the 95% intervals
part, else no significant difference. The conclusions are the same when every one is.

The unit of eps is measured from each run's own standard agents, so by default it moves with
them and the two runs attack with slightly different budgets; ``--same-eps-unit`` gives the
rerun the reference's ``obs_std`` (``--obs-std``), so that only the agents differ.

    python benchmarks/bench_policy_conclusions.py      # one full experiment run: ~12 minutes
    python benchmarks/bench_policy_conclusions.py --out /tmp/rerun  # kept; read if finished
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import harness  # noqa: F401  (quiets TensorFlow's logging in the child too)

ENV = {"TF_NUM_INTEROP_THREADS": "1", "TF_NUM_INTRAOP_THREADS": "1", "PYTHONHASHSEED": "12345"}
# Config fields that do not change the numbers.
IGNORED = ("out", "resume", "progress", "quick")


def flags(config: dict) -> list[str]:
    """The command line that reproduces ``config`` (config.json's ``config``)."""
    args = []
    for name, value in config.items():
        if name in IGNORED or name == "agent" or value is None:  # None: the default
            continue
        option = "--" + name.replace("_", "-")
        args += [option, *map(str, value)] if isinstance(value, list) else [option, str(value)]
    return args


def conclusions(summary: dict) -> dict:
    """``{(eps, pair): verdict}``: the kind whose worst case is higher where the 95% intervals
    part, else ``"no significant difference"`` (a difference inside the noise may turn either
    way from one run to the next: that is no change of conclusion)."""
    return {(c["eps"], tuple(sorted((c["higher"], c["lower"])))):
            f"{c['higher']} > {c['lower']}" if c["significant"] else "no significant difference"
            for c in summary["comparisons"]}


def worst_case(summary: dict, kind: str, eps: float) -> str:
    interval = summary["intervals"][kind]["worst"][str(float(eps))]
    low, high = interval["ci95"]
    return f"{interval['mean']:.0f} [{low:.0f}-{high:.0f}]"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reference", type=Path,
                        default=Path("results/policy_attacks/CartPole-v1"),
                        help="a finished run folder of experiments.policy_attacks")
    parser.add_argument("--same-eps-unit", action="store_true",
                        help="attack the rerun's agents in the reference's unit of eps")
    parser.add_argument("--out", type=Path, default=None,
                        help="where the rerun is written and kept (default: a temporary "
                             "folder); a finished rerun already there is read, not run again")
    args = parser.parse_args(argv)
    reference = json.loads((args.reference / "summary.json").read_text())
    config = json.loads((args.reference / "config.json").read_text())["config"]
    if args.same_eps_unit:
        config = {**config, "obs_std": reference["obs_std"]}
    with tempfile.TemporaryDirectory() as scratch:
        out = args.out or Path(scratch) / "rerun"
        command = [sys.executable, "-m", "experiments.policy_attacks", *flags(config),
                   "--no-progress", "--out", str(out)]
        start = time.perf_counter()
        if not (out / "summary.json").exists():
            done = subprocess.run(command, env={**os.environ, **ENV}, capture_output=True,
                                  text=True)
            if done.returncode != 0:
                sys.exit(f"error: the rerun failed ({' '.join(command)}):\n"
                         + "\n".join(done.stderr.splitlines()[-15:]))
        minutes = (time.perf_counter() - start) / 60
        rerun = json.loads((out / "summary.json").read_text())
        rerun_config = json.loads((out / "config.json").read_text())["config"]
    # Fields the reference's config.json predates are at their defaults in both runs.
    if any(rerun_config.get(k) != v for k, v in config.items() if k not in IGNORED):
        sys.exit("error: the rerun's configuration differs from the reference's")

    print(f"bench_policy_conclusions: {config['env']}, {len(config['seeds'])} seeds; reference "
          f"{args.reference} (default threads, random hash seed) vs a rerun with "
          f"{' '.join(f'{k}={v}' for k, v in ENV.items())} ({minutes:.1f} min), eps unit "
          f"{'the reference' if args.same_eps_unit else 'its own'}: {rerun['obs_std']}")
    print("  worst-case mean [bootstrap 95% interval], reference -> rerun")
    for kind in reference["worst"]:
        print(f"    {kind:12s}" + "  ".join(
            f"eps {eps:g}: {worst_case(reference, kind, eps)} -> {worst_case(rerun, kind, eps)}"
            for eps in config["eps_values"][1:]))
    numbers = identical = 0
    for kind, per_eps in reference["worst"].items():
        for eps, values in per_eps.items():
            numbers += len(values)
            identical += sum(a == b for a, b in zip(values, rerun["worst"][kind][eps]))
    ours, theirs = conclusions(reference), conclusions(rerun)
    same = 0
    for (eps, pair), verdict in ours.items():
        agree = theirs[(eps, pair)] == verdict
        same += agree
        print(f"  eps {eps:g}, {pair[0]} vs {pair[1]}: reference {verdict}; rerun "
              f"{theirs[(eps, pair)]}{'' if agree else '  <- differs'}")
    print(f"  worst-case returns bit-identical: {identical} of {numbers} per-seed numbers")
    print(f"  same conclusions: {same} of {len(ours)} comparisons")


if __name__ == "__main__":
    main()

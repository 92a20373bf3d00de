"""Do policy_attacks' conclusions survive another thread count and hash seed?

Reruns ``python -m experiments.policy_attacks`` with the configuration of a finished run
(``--reference``, default the committed CartPole-v1 run) in a fresh process with one
TensorFlow thread of each kind and a fixed ``PYTHONHASHSEED``
(``TF_NUM_INTEROP_THREADS=1 TF_NUM_INTRAOP_THREADS=1 PYTHONHASHSEED=12345``), the reference
having run with TensorFlow's default threads and a random hash seed. Prints, side by side,
each comparison between kinds (which is higher at which eps, and whether the 95% intervals
part), how many per-seed numbers are bit-identical, and the largest change of a worst-case
mean. The conclusions are the same when every comparison's verdict is.

    python benchmarks/bench_policy_conclusions.py      # one full experiment run: ~15 minutes
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
        if name in IGNORED or name == "agent":
            continue
        option = "--" + name.replace("_", "-")
        args += [option, *map(str, value)] if isinstance(value, list) else [option, str(value)]
    return args


def verdicts(summary: dict) -> dict:
    return {(c["eps"], c["higher"], c["lower"]): c["significant"]
            for c in summary["comparisons"]}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reference", type=Path,
                        default=Path("results/policy_attacks/CartPole-v1"),
                        help="a finished run folder of experiments.policy_attacks")
    args = parser.parse_args(argv)
    reference = json.loads((args.reference / "summary.json").read_text())
    config = json.loads((args.reference / "config.json").read_text())["config"]
    with tempfile.TemporaryDirectory() as scratch:
        out = Path(scratch) / "rerun"
        command = [sys.executable, "-m", "experiments.policy_attacks", *flags(config),
                   "--no-progress", "--out", str(out)]
        start = time.perf_counter()
        subprocess.run(command, check=True, env={**os.environ, **ENV}, capture_output=True)
        minutes = (time.perf_counter() - start) / 60
        rerun = json.loads((out / "summary.json").read_text())
        rerun_config = json.loads((out / "config.json").read_text())["config"]
    if {k: v for k, v in rerun_config.items() if k not in IGNORED} != {
            k: v for k, v in config.items() if k not in IGNORED}:
        sys.exit("error: the rerun's configuration differs from the reference's")

    print(f"bench_policy_conclusions: {config['env']}, {len(config['seeds'])} seeds; reference "
          f"{args.reference} (default threads, random hash seed) vs a rerun with "
          f"{' '.join(f'{k}={v}' for k, v in ENV.items())} ({minutes:.1f} min)")
    same, numbers, identical, largest = True, 0, 0, 0.0
    for kind, per_eps in reference["worst"].items():
        for eps, values in per_eps.items():
            again = rerun["worst"][kind][eps]
            numbers += len(values)
            identical += sum(a == b for a, b in zip(values, again))
            largest = max(largest, abs(sum(values) / len(values) - sum(again) / len(again)))
    ours, theirs = verdicts(reference), verdicts(rerun)
    for key, significant in ours.items():
        eps, higher, lower = key
        other = theirs.get(key)
        agree = other == significant
        same &= agree
        word = lambda s: "significant" if s else "not significant"
        print(f"  eps {eps:g}: {higher} > {lower}: reference {word(significant)}, rerun "
              f"{'reversed' if other is None else word(other)}{'' if agree else '  <- differs'}")
    print(f"  worst-case returns bit-identical: {identical} of {numbers} per-seed numbers; "
          f"largest change of a worst-case mean: {largest:.1f}")
    print(f"  same conclusions: {'yes' if same else 'no'}")


if __name__ == "__main__":
    main()

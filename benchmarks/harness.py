"""What the benchmarks share: callables timed in turns, and one table of medians and ratios.

The callables take turns, round by round, the order rotating each round, so that whatever else
a shared machine does falls on all of them alike; a ratio is of medians, and its range over
the rounds shows the noise. Timings are printed, never asserted. Importing this module before
TensorFlow quiets TensorFlow's C++ logging.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

UNITS = {"s": 1.0, "ms": 1e3, "us": 1e6}


def positive(text: str) -> int:
    """An ``argparse`` type: an integer >= 1."""
    if int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1. Received: {text}")
    return int(text)


def header(name: str, details: str) -> None:
    """Prints the benchmark's name, the versions of the libraries loaded, the CPUs available,
    then ``details`` (what is compared, at which sizes)."""
    versions = [f"{m} {sys.modules[m].__version__}"
                for m in ("tensorflow", "keras", "numpy", "gymnasium") if m in sys.modules]
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"{name}: {', '.join(versions)}, Python {platform.python_version()}, {cpus} CPUs\n"
          f"  {details}")


def take_turns(fns: dict, rounds, number: int = 1, warmup: int = 2) -> dict:
    """Times each callable of ``fns`` once a round, in turns.

    Args:
      fns: name -> callable; what it returns is ignored (eager TensorFlow on a CPU returns
        tensors already computed).
      rounds: how many rounds, or a sequence of argument tuples, one per round (a batch, say),
        with which every callable is called in that round.
      number: calls per timing; a round's time is their mean.
      warmup: untimed calls of each callable first, with the first round's arguments (the
        first call traces a ``tf.function``; the next ones warm caches and threads).

    Returns:
      name -> seconds per call, one per round.
    """
    rounds = [()] * rounds if isinstance(rounds, int) else list(rounds)
    for fn in fns.values():
        for _ in range(warmup):
            fn(*rounds[0])
    names, seconds = list(fns), {name: [] for name in fns}
    for i, args in enumerate(rounds):
        for name in names[i % len(names):] + names[:i % len(names)]:
            start = time.perf_counter()
            for _ in range(number):
                fns[name](*args)
            seconds[name].append((time.perf_counter() - start) / number)
    return seconds


def table(seconds: dict, baseline: str, unit: str = "ms", labels: dict | None = None) -> dict:
    """Prints per name the median of its ``seconds`` in ``unit``, its ratio to ``baseline``'s
    median, and the range of the per-round ratios (round i of every name ran under the same
    conditions). Returns name -> median seconds."""
    medians = {name: statistics.median(values) for name, values in seconds.items()}
    for name, values in seconds.items():
        ratios = [s / b for s, b in zip(values, seconds[baseline])]
        print(f"  {(labels or {}).get(name, name):46s} {medians[name] * UNITS[unit]:9.3f} {unit}"
              f" {medians[name] / medians[baseline]:7.2f}x {baseline}"
              f"   (rounds {min(ratios):.2f}-{max(ratios):.2f}x)")
    return medians

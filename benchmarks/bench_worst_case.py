"""Cost and strength of the APGD worst case against PGD-40 with 3 restarts, side by side.

For every model in ``--models`` (default: the committed first-seed models of
``results/fgsm_mnist/models/``), on the first ``--examples`` sample test digits at ``--eps``:
accuracy under PGD-40x3 (steps of 2.5 eps / 40, the experiment's headline attack), under
``attacks.evaluation.worst_case`` with its defaults (APGD-CE 100 iterations, then APGD-T
toward 3 classes, 40 iterations each, on what is left), and under PGD-40 and APGD-CE with 40
iterations, one start each (APGD at PGD's iteration count: it must be at least as strong);
then each evaluation's wall time, the evaluations taking turns (``benchmarks/harness.py``).
Timings are printed, never asserted.

    python benchmarks/bench_worst_case.py             # a few minutes on 2 CPU cores

The README's Benchmarks table quotes a run of it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import harness
import keras

from attacks.apgd import apgd
from attacks.evaluation import attack_accuracy, pgd_accuracy, worst_case_accuracy
from attacks.mnist import load_mnist_arrays

MODELS = Path(__file__).resolve().parent.parent / "results" / "fgsm_mnist" / "models"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", type=Path,
                        default=sorted(MODELS.glob("*_seed0.keras")))
    parser.add_argument("--examples", type=harness.positive, default=1000)
    parser.add_argument("--eps", type=float, default=0.3)
    parser.add_argument("--rounds", type=harness.positive, default=3)
    args = parser.parse_args()
    x, y = (a[:args.examples] for a in load_mnist_arrays("test", "sample"))
    harness.header("bench_worst_case", f"{args.examples} sample test digits, eps {args.eps}, "
                   f"{args.rounds} rounds")
    for path in args.models:
        evaluations = evaluations_of(keras.models.load_model(path), x, y, args.eps)
        accuracies = {name: evaluate() for name, evaluate in evaluations.items()}
        print(f"{path.stem}: accuracy " + ", ".join(f"{name} {value:.4f}"
                                                     for name, value in accuracies.items()))
        seconds = harness.take_turns(evaluations, args.rounds, warmup=0)
        harness.table(seconds, "pgd40x3", unit="s")


def evaluations_of(model, x, y, eps) -> dict:
    """The four evaluations of ``model``, as callables returning an accuracy."""
    return {
        "pgd40x3": lambda: pgd_accuracy(model, x, y, eps, restarts=3),
        "pgd40": lambda: pgd_accuracy(model, x, y, eps),
        "worst_case": lambda: worst_case_accuracy(model, x, y, eps),
        "apgd_ce40": lambda: attack_accuracy(model, x, y, lambda xb, yb, start: apgd(
            model, xb, yb, eps, steps=40, seed=start)),
    }

if __name__ == "__main__":
    main()

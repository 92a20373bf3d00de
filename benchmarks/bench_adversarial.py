"""Cost of adversarial training over clean training, measured side by side in one run.

Trains the same model (``--model``, default small_cnn) on the same 8,000 sample digits with
each method for ``--epochs`` epochs and reports the median epoch time after the first (which
includes tracing), and its ratio to the clean epoch. FGSM-RS costs one extra input gradient
per step (expected about 1.5-2x clean); PGD-7 costs seven (expected about 5-7x).

    python benchmarks/bench_adversarial.py            # about two minutes on 2 CPU cores
"""

from __future__ import annotations

import argparse
import os
import statistics

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402

from attacks.adversarial_training import AdversarialTrainingConfig, adversarial_train  # noqa: E402
from attacks.mnist import load_mnist_arrays  # noqa: E402
from attacks.models import MODELS  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", choices=sorted(MODELS), default="small_cnn")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per method (>= 2)")
    args = parser.parse_args()
    import tensorflow as tf

    x, y = load_mnist_arrays("train", "sample")
    print(f"bench_adversarial: TensorFlow {tf.__version__}, {os.cpu_count()} CPUs, "
          f"{args.model}, {len(x)} digits, batch 128, median epoch after the first")
    seconds = {}
    for method in ("clean", "fgsm", "fgsm_rs", "pgd"):
        keras.utils.set_random_seed(0)
        model = MODELS[args.model]()
        # A huge guard batch is not wanted here: the guard runs outside the timed epoch.
        result = adversarial_train(model, x, y, AdversarialTrainingConfig(
            method=method, epochs=max(args.epochs, 2), guard_examples=64, guard_pgd_steps=1))
        seconds[method] = statistics.median(row["seconds"] for row in result.history[1:])
    for method, s in seconds.items():
        label = {"pgd": "pgd (PGD-7)", "fgsm": "fgsm (clean + FGSM)"}.get(method, method)
        print(f"  {label:22s} {s:6.2f} s/epoch   {s / seconds['clean']:5.2f}x clean")


if __name__ == "__main__":
    main()

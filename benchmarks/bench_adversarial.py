"""Cost of adversarial training over clean training, measured side by side in one run.

Builds one ``AdversarialTrainer`` per method on the same architecture (``--model``, default
small_cnn) and the same 8,000 sample digits, traces each with three untimed steps, then runs
``--rounds`` epochs in which the methods take turns *batch by batch*: every batch is a clean
step, then a clean+FGSM step, an FGSM-RS step and a PGD-7 step on the same images (the order
rotates), each timed. A method's epoch time is the sum of its step times. Taking turns at the
scale of milliseconds puts every method under the same machine noise: on a shared 2-core
machine a clean epoch has measured anywhere from 0.6 to 1.3 s, and interleaving whole epochs
still gave FGSM-RS ratios from 1.0x to 3.7x between rounds. The median epoch of each method,
its ratio to the clean median, and the range of per-round ratios are printed.

FGSM-RS adds one input gradient per step to a clean step (expected about 1.5-2x clean), PGD-7
adds seven (expected about 5-7x). An input gradient skips the weight gradients and the
optimizer update, so it costs less than a training step.

    python benchmarks/bench_adversarial.py            # about two minutes on 2 CPU cores
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from attacks.adversarial_training import METHODS, AdversarialTrainer, AdversarialTrainingConfig  # noqa: E402
from attacks.mnist import load_mnist_arrays  # noqa: E402
from attacks.models import MODELS  # noqa: E402

LABELS = {"fgsm": "fgsm (clean + FGSM)", "pgd": "pgd (PGD-7)"}
WARMUP_STEPS = 3


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", choices=sorted(MODELS), default="small_cnn")
    parser.add_argument("--rounds", type=int, default=5, help="timed epochs per method")
    parser.add_argument("--batch-size", type=int,
                        default=AdversarialTrainingConfig.batch_size)
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error(f"--rounds must be >= 1. Received: {args.rounds}")
    import tensorflow as tf

    x, y = load_mnist_arrays("train", "sample")
    print(f"bench_adversarial: TensorFlow {tf.__version__}, {os.cpu_count()} CPUs, "
          f"{args.model}, {len(x)} digits, batch {args.batch_size}, eps 0.3; median of "
          f"{args.rounds} epochs per method, interleaved batch by batch")
    trainers = {}
    for method in METHODS:
        keras.utils.set_random_seed(0)
        config = AdversarialTrainingConfig(method=method, batch_size=args.batch_size,
                                           eps_ramp_epochs=0)
        trainers[method] = AdversarialTrainer(MODELS[args.model](), config,
                                              num_examples=len(x))
    rng = np.random.default_rng(0)
    xb, yb = next(iter(next(iter(trainers.values())).batches(x, y, rng)))
    for trainer in trainers.values():
        for _ in range(WARMUP_STEPS):  # the first traces; the rest warm the caches
            float(trainer.train_step(xb, yb).loss)
    seconds = {method: [] for method in METHODS}
    for epoch in range(1, args.rounds + 1):
        for trainer in trainers.values():
            trainer.start_epoch(epoch)
        totals = dict.fromkeys(METHODS, 0.0)
        batches = next(iter(trainers.values())).batches(x, y, rng)
        for i, (xb, yb) in enumerate(batches):
            turn = i % len(METHODS)
            for method in METHODS[turn:] + METHODS[:turn]:
                start = time.perf_counter()
                float(trainers[method].train_step(xb, yb).loss)
                totals[method] += time.perf_counter() - start
        for method in METHODS:
            seconds[method].append(totals[method])
    clean = statistics.median(seconds["clean"])
    for method in METHODS:
        ratios = [s / c for s, c in zip(seconds[method], seconds["clean"])]
        print(f"  {LABELS.get(method, method):22s} {statistics.median(seconds[method]):6.2f} "
              f"s/epoch   {statistics.median(seconds[method]) / clean:5.2f}x clean   "
              f"(per round {min(ratios):.2f}-{max(ratios):.2f}x)")


if __name__ == "__main__":
    main()

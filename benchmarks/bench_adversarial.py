"""Cost of adversarial training over clean training, measured side by side in one run.

One ``AdversarialTrainer`` per method, on the same architecture (``--model``) and the same
8,000 sample digits, traced with three untimed steps; then ``--rounds`` epochs in which the
methods take turns batch by batch (every method of ``attacks.adversarial_training`` on the
same images, the order rotating), each step timed; a method's epoch time is the sum of its
steps. Turns of milliseconds put every method under the same machine noise: interleaving
whole epochs gave FGSM-RS ratios from 1.0x to 3.7x between rounds. The attack's gradient
alone (``input_gradient`` on the clean model, its result copied to the host) takes its turn
too: what an attack step adds to a training step, at least.

    python benchmarks/bench_adversarial.py            # about 3-5 minutes on 2 CPU cores
    python benchmarks/bench_adversarial.py --profile  # an input gradient, layer by layer

What it measured is in the README (Benchmarks).
"""

from __future__ import annotations

import argparse

import harness
import keras
import numpy as np
import tensorflow as tf

from attacks.adversarial_training import METHODS, AdversarialTrainer, AdversarialTrainingConfig
from attacks.fgsm import cross_entropy
from attacks.mnist import load_mnist_arrays
from attacks.models import MODELS
from lab.higher_order import input_gradient

LABELS = {"fgsm": "fgsm (clean + FGSM)", "pgd": "pgd (PGD-7)",
          "grad_align": "grad_align (FGSM + GradAlign)",
          "gradient": "input gradient alone"}


def profile(model_name: str, batch_size: int, rounds: int, calls: int = 30) -> None:
    """Prints the cost of a forward pass and of the input gradient on one batch, and of the
    input gradient stopped at each layer's input (the forward pass whole, the backward pass
    down to that layer): the differences are what each layer's backward pass costs."""
    keras.utils.set_random_seed(0)
    model = MODELS[model_name]()
    x, y = load_mnist_arrays("train", "sample")
    xb, yb = tf.constant(x[:batch_size]), tf.constant(y[:batch_size])

    def through(layers, h):
        for layer in layers:
            h = layer(h, training=False)
        return h

    def stopped_at(k):
        tail = lambda h, training: through(model.layers[k:], h)
        compiled = tf.function(lambda x, y: input_gradient(
            tail, cross_entropy, through(model.layers[:k], x), y))
        return lambda: compiled(xb, yb)

    forward = tf.function(lambda x: model(x, training=False))
    gradient = tf.function(lambda x, y: input_gradient(model, cross_entropy, x, y))
    fns = {"forward pass": lambda: forward(xb), "input gradient": lambda: gradient(xb, yb)}
    for k in range(1, len(model.layers)):
        fns[f"  stopped at layer {k} ({model.layers[k].name})"] = stopped_at(k)
    harness.header("bench_adversarial --profile", f"{model_name}, batch {batch_size}: median "
                   f"of {rounds} rounds of {calls} calls")
    harness.table(harness.take_turns(fns, rounds, number=calls, warmup=3), "forward pass")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", choices=sorted(MODELS), default="small_cnn")
    parser.add_argument("--rounds", type=harness.positive, default=5,
                        help="timed epochs per method")
    parser.add_argument("--batch-size", type=int,
                        default=AdversarialTrainingConfig.batch_size)
    parser.add_argument("--profile", action="store_true",
                        help="where an input gradient's time goes, layer by layer, instead")
    args = parser.parse_args()
    if args.profile:
        return profile(args.model, args.batch_size, args.rounds)

    x, y = load_mnist_arrays("train", "sample")
    trainers = {}
    for method in METHODS:
        keras.utils.set_random_seed(0)
        config = AdversarialTrainingConfig(method=method, batch_size=args.batch_size,
                                           eps_ramp_epochs=0)
        trainers[method] = AdversarialTrainer(MODELS[args.model](), config,
                                              num_examples=len(x))
    gradient = tf.function(lambda x, y: input_gradient(trainers["clean"].model, cross_entropy,
                                                        x, y))
    timed = {method: (lambda xb, yb, t=trainers[method]: float(t.train_step(xb, yb).loss))
             for method in METHODS}
    timed["gradient"] = lambda xb, yb: np.asarray(gradient(xb, yb))
    harness.header("bench_adversarial", f"{args.model}, {len(x)} digits, batch "
                   f"{args.batch_size}, eps 0.3; median of {args.rounds} epochs per method, "
                   f"interleaved batch by batch")
    rng, seconds = np.random.default_rng(0), {name: [] for name in timed}
    for epoch in range(1, args.rounds + 1):
        for trainer in trainers.values():
            trainer.start_epoch(epoch)
        steps = harness.take_turns(timed, trainers["clean"].batches(x, y, rng),
                                   warmup=3 if epoch == 1 else 0)
        for name, step_seconds in steps.items():
            seconds[name].append(sum(step_seconds))
    medians = harness.table(seconds, "clean", unit="s", labels=LABELS)
    g, pgd_steps = medians["gradient"] / medians["clean"], AdversarialTrainingConfig().pgd_steps
    print(f"floors from the input gradient alone ({g:.2f}x a clean step): fgsm_rs "
          f"{1 + g:.2f}x, pgd (PGD-{pgd_steps}) {1 + pgd_steps * g:.2f}x clean")


if __name__ == "__main__":
    main()

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

The attack's gradient alone (``input_gradient`` on the clean trainer's model, one compiled
call per batch, its result copied to the host) takes its turn too, as a sixth timed row: what
an attack step adds to a training step, at least.

    python benchmarks/bench_adversarial.py            # about two minutes on 2 CPU cores
    python benchmarks/bench_adversarial.py --profile  # an input gradient, layer by layer

Measured here (2 CPU cores, TensorFlow 2.21 with oneDNN, small_cnn, batch 64; two runs): a
clean epoch 0.51-0.52 s, FGSM-RS 1.71-1.73x, clean+FGSM 2.12-2.14x, PGD-7 4.95-5.05x; the
input gradient alone 0.76-0.77x a clean step.

Where an attack step's time goes (issue 13 asked for FGSM-RS at most 1.5x and PGD-7 at most
5.5x, without changing what is computed):

- Nothing outside the attack and the update is left to cut. Per step, the trainer's eager
  work is one counter increment (0.03 ms) and the call into the compiled step (about 0.1 ms),
  the same for every method: removing it would raise every ratio, not lower it. An FGSM-RS
  step costs a clean step plus one input gradient, within noise; its random start and
  projection are a few elementwise operations.
- The input gradient is the cost, and it is 0.58-0.77x a clean step, not the half that the
  issue's target needs: 0.58x per step inside PGD's graph (seven in a row, warm), 0.77x as a
  call of its own. ``--profile``: forward 1.00 ms; the backward pass down to the image 1.43
  ms more, of which 0.61 ms is the first convolution's gradient with respect to its input
  (one channel from 16 filters, a shape oneDNN computes slowly: as a forward convolution of
  the same shape it cost as much), work a training step never does because it stops at the
  first layer's weights. A clean step is 3.1 ms.
- So FGSM-RS stays at 1.7x (its floor is 1 + 0.58 = 1.58x); PGD-7 meets its target (4.95-5.05x
  here, against 5.5-5.8x measured in an earlier session with the same step: that figure
  moved with the machine, not the code).
- Tried and rejected (measured while other jobs ran, so as ratios only): XLA
  (``jit_compile=True``) made the input gradient 3.7x slower on this CPU; turning oneDNN off,
  2.3x slower.
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from attacks.adversarial_training import METHODS, AdversarialTrainer, AdversarialTrainingConfig  # noqa: E402
from attacks.fgsm import cross_entropy  # noqa: E402
from attacks.mnist import load_mnist_arrays  # noqa: E402
from attacks.models import MODELS  # noqa: E402
from lab.higher_order import input_gradient  # noqa: E402

GRADIENT = "input gradient"
LABELS = {"fgsm": "fgsm (clean + FGSM)", "pgd": "pgd (PGD-7)",
          GRADIENT: "input gradient alone"}
WARMUP_STEPS = 3


def _input_gradient_fn(model):
    """The attack's gradient alone, compiled as the training step compiles it."""
    return tf.function(lambda x, y: input_gradient(model, cross_entropy, x, y))


def profile(model_name: str, batch_size: int, rounds: int = 5, calls: int = 30) -> None:
    """Prints the cost of a forward pass and of the input gradient on one batch, and of the
    input gradient stopped at each layer's input (the forward pass whole, the backward pass
    down to that layer): the differences are what each layer's backward pass costs."""
    keras.utils.set_random_seed(0)
    model = MODELS[model_name]()
    x, y = load_mnist_arrays("train", "sample")
    xb, yb = tf.constant(x[:batch_size]), tf.constant(y[:batch_size])

    def stopped_at(k):
        @tf.function
        def gradient(x, y):
            h = x
            for layer in model.layers[:k]:
                h = layer(h, training=False)
            with tf.GradientTape(watch_accessed_variables=False) as tape:
                tape.watch(h)
                out = h
                for layer in model.layers[k:]:
                    out = layer(out, training=False)
                loss = cross_entropy(y, out)
            return tape.gradient(loss, h)
        return gradient

    forward = tf.function(lambda x: model(x, training=False))
    fns = {"forward pass": lambda: forward(xb),
           "input gradient": functools.partial(_input_gradient_fn(model), xb, yb)}
    for k in range(1, len(model.layers)):
        fns[f"  stopped at layer {k} ({model.layers[k].name})"] = functools.partial(
            stopped_at(k), xb, yb)
    seconds = {name: [] for name in fns}
    for fn in fns.values():
        for _ in range(WARMUP_STEPS):
            np.asarray(fn())
    for _ in range(rounds):
        for name, fn in fns.items():
            start = time.perf_counter()
            for _ in range(calls):
                out = fn()
            np.asarray(out)
            seconds[name].append((time.perf_counter() - start) / calls)
    print(f"{model_name}, batch {batch_size}: median of {rounds} rounds of {calls} calls")
    for name, values in seconds.items():
        print(f"  {name:40s} {statistics.median(values) * 1e3:7.2f} ms")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", choices=sorted(MODELS), default="small_cnn")
    parser.add_argument("--rounds", type=int, default=5, help="timed epochs per method")
    parser.add_argument("--batch-size", type=int,
                        default=AdversarialTrainingConfig.batch_size)
    parser.add_argument("--profile", action="store_true",
                        help="where an input gradient's time goes, layer by layer, instead")
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error(f"--rounds must be >= 1. Received: {args.rounds}")
    if args.profile:
        profile(args.model, args.batch_size, args.rounds)
        return

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
    # The attack's gradient alone, on the clean trainer's model, takes its turn too: it is
    # the floor of what an attack step adds to a training step.
    gradient = _input_gradient_fn(trainers["clean"].model)
    timed = {method: (lambda xb, yb, t=trainers[method]: float(t.train_step(xb, yb).loss))
             for method in METHODS}
    timed[GRADIENT] = lambda xb, yb: np.asarray(gradient(xb, yb))
    names = list(timed)
    rng = np.random.default_rng(0)
    xb, yb = next(iter(next(iter(trainers.values())).batches(x, y, rng)))
    for fn in timed.values():
        for _ in range(WARMUP_STEPS):  # the first traces; the rest warm the caches
            fn(xb, yb)
    seconds = {name: [] for name in names}
    for epoch in range(1, args.rounds + 1):
        for trainer in trainers.values():
            trainer.start_epoch(epoch)
        totals = dict.fromkeys(names, 0.0)
        batches = next(iter(trainers.values())).batches(x, y, rng)
        for i, (xb, yb) in enumerate(batches):
            turn = i % len(names)
            for name in names[turn:] + names[:turn]:
                start = time.perf_counter()
                timed[name](xb, yb)
                totals[name] += time.perf_counter() - start
        for name in names:
            seconds[name].append(totals[name])
    clean = statistics.median(seconds["clean"])
    for name in names:
        ratios = [s / c for s, c in zip(seconds[name], seconds["clean"])]
        print(f"  {LABELS.get(name, name):22s} {statistics.median(seconds[name]):6.2f} "
              f"s/epoch   {statistics.median(seconds[name]) / clean:5.2f}x clean   "
              f"(per round {min(ratios):.2f}-{max(ratios):.2f}x)")
    g = statistics.median(seconds[GRADIENT]) / clean
    config = AdversarialTrainingConfig()
    print(f"floors from the input gradient alone ({g:.2f}x a clean step): fgsm_rs "
          f"{1 + g:.2f}x, pgd (PGD-{config.pgd_steps}) {1 + config.pgd_steps * g:.2f}x clean")

if __name__ == "__main__":
    main()

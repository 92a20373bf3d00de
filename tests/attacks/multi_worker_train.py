"""One worker of the two-worker test in ``test_multi_worker.py`` (run as a script).

    TF_CONFIG=... python tests/attacks/multi_worker_train.py METHOD OUT

Joins the two-worker ``MultiWorkerMirroredStrategy`` cluster of its ``TF_CONFIG``,
runs ``adversarial_train`` for one epoch on 512 sample digits with global batch 64 and saves
into OUT (``.npz``): the final weights, and the labels and attack perturbation of this
worker's share of the first global batch.
"""

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
method, out = sys.argv[1:3]
index = json.loads(os.environ["TF_CONFIG"])["task"]["index"]

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from attacks import adversarial_training  # noqa: E402
from attacks.mnist import load_mnist_arrays  # noqa: E402
from attacks.models import small_cnn  # noqa: E402

strategy = tf.distribute.MultiWorkerMirroredStrategy()
x, y = load_mnist_arrays("train", "sample")
x, y = x[:512], y[:512]
with strategy.scope():
    keras.utils.set_random_seed(0)  # the same initial weights on every worker
    model = small_cnn()

config = adversarial_training.AdversarialTrainingConfig(
    method=method, eps=0.3, epochs=1, batch_size=64, eps_ramp_epochs=0, guard_examples=64,
    guard_pgd_steps=2, seed=0)

# What this worker's replica gets in the first step: its labels and, for an attack, the
# perturbation (random start included). A separate trainer, so training below is untouched.
probe = adversarial_training.AdversarialTrainer(model, config, num_examples=len(x),
                                                strategy=strategy)
xb, yb = next(iter(probe.batches(x, y, np.random.default_rng(config.seed))))
labels = strategy.experimental_local_results(yb)[0].numpy()
delta = np.zeros(0)
if probe.step.perturb is not None:
    @tf.function
    def perturbation(xb, yb):
        def one_replica(xb, yb):
            x_adv, _ = probe.step.perturb(xb, yb)
            return x_adv - xb
        return strategy.run(one_replica, args=(xb, yb))
    delta = strategy.experimental_local_results(perturbation(xb, yb))[0].numpy()

checkpoint = os.path.join(os.path.dirname(out), f"checkpoint_{index}")
adversarial_training.adversarial_train(model, x, y, config, strategy=strategy,
                                       checkpoint=checkpoint)
np.savez(out, *model.get_weights(), labels=labels, delta=delta,
         is_chief=adversarial_training.is_chief(strategy))

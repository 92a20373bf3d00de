"""FGSM / PGD attacks, adversarial training and robustness evaluation on MNIST, and attacks
on policies' observations, built on ``lab``.

Modules: ``mnist`` (``load_mnist`` / ``load_mnist_arrays`` from tensorflow-datasets, a folder
of IDX files, or the bundled 10,000-digit sample), ``models`` (``small_cnn``, ``madry_cnn``),
``fgsm`` and ``pgd`` (the attacks, plain functions over a model and a batch),
``adversarial_training`` (``AdversarialTrainingConfig``, ``adversarial_train``, the collapse
guard), ``evaluation`` (accuracies under attack, ``robustness_curve``, gradient-masking
checks), ``validation`` (argument checks shared by the attacks).

On policies: ``observation`` (``ObservationAttack``: random, FGSM and PGD perturbations of
what a policy network sees, with the away, toward, mean-shift and KL (MAD) objectives, and the
gymnasium wrappers that apply them), ``learned_adversary`` (``AdversaryEnv``: the environment
in which an RL agent learns to perturb a fixed victim's observations, SA-RL's optimal attack;
``DirectorEnv``: the same MDP for a victim with Discrete actions, in which the agent names the
action to induce, PA-AD's director; ``victim_returns``, ``random_adversary``).
"""

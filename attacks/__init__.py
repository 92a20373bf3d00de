"""FGSM / PGD attacks, adversarial training and robustness evaluation on MNIST, built on
``lab``.

Modules: ``mnist`` (``load_mnist`` / ``load_mnist_arrays`` from tensorflow-datasets, a folder
of IDX files, or the bundled 10,000-digit sample), ``models`` (``small_cnn``, ``madry_cnn``),
``fgsm`` and ``pgd`` (the attacks, plain functions over a model and a batch),
``adversarial_training`` (``AdversarialTrainingConfig``, ``adversarial_train``, the collapse
guard), ``evaluation`` (accuracies under attack, ``robustness_curve``, gradient-masking
checks), ``validation`` (argument checks shared by the attacks).
"""

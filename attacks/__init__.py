"""FGSM / PGD attacks and adversarial training on MNIST (issue 4; not yet written)."""

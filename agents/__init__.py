"""REINFORCE agents on gymnasium environments, built on ``lab``.

``Reinforce`` (the agent), ``ReinforceConfig`` (its hyperparameters) and
``NonFiniteUpdatesError`` (training that only skips non-finite updates) in ``reinforce``;
``StateAdversarialRegularizer`` (a policy penalty for robustness to perturbed observations,
Zhang et al. 2020) in ``regularizers``; policies in ``policies``; returns-to-go in
``returns``; episode collection from vector environments in ``rollout``.
"""

__all__ = ["NonFiniteUpdatesError", "Reinforce", "ReinforceConfig",
           "StateAdversarialRegularizer"]


def __getattr__(name):
    # Lazy, so that AsyncVectorEnv workers unpickling agents.rollout.EnvFactory do not import
    # TensorFlow (seconds per worker) just to build an environment.
    if name == "StateAdversarialRegularizer":
        from agents import regularizers

        return regularizers.StateAdversarialRegularizer
    if name in __all__:
        from agents import reinforce

        return getattr(reinforce, name)
    raise AttributeError(f"module 'agents' has no attribute {name!r}")

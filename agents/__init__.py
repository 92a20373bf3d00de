"""REINFORCE agents on gymnasium environments, built on ``lab``.

``Reinforce`` (the agent) and ``ReinforceConfig`` (its hyperparameters) in ``reinforce``;
policies in ``policies``; returns-to-go in ``returns``; episode collection from vector
environments in ``rollout``.
"""

from agents.reinforce import Reinforce, ReinforceConfig

__all__ = ["Reinforce", "ReinforceConfig"]

"""Learning algorithms (SB3 ``OnPolicyAlgorithm`` subclasses) for binary-stochastic-neuron policies."""

from agents.localpg import LocalPG

__all__ = ["LocalPG"]

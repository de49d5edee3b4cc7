"""LocalPG: local policy gradient for binary-stochastic-neuron policies."""

from agents.localpg.buffer import HiddenRolloutBuffer, HiddenRolloutSamples
from agents.localpg.localpg import LocalPG

__all__ = ["HiddenRolloutBuffer", "HiddenRolloutSamples", "LocalPG"]

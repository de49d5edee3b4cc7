"""LocalPG: local policy gradient for binary-stochastic-neuron policies."""

from agents.localpg.buffer import HiddenRolloutBuffer, HiddenRolloutSamples
from agents.localpg.localpg import LocalPG
from agents.localpg.losses import clipped_local_loss

__all__ = ["HiddenRolloutBuffer", "HiddenRolloutSamples", "LocalPG", "clipped_local_loss"]

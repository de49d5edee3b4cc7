"""Tiny BSN policies for exact checks: small enough to enumerate every hidden state, with every unit mattering."""

from __future__ import annotations

import numpy as np
import torch
from gymnasium import spaces

from policies import BinaryStochasticPolicy

OBSERVATION_SPACE = spaces.Box(-1.0, 1.0, (2,), dtype=np.float32)
#: One of each action space the policy supports.
ACTION_SPACES = {
    "Discrete": spaces.Discrete(3),
    "MultiDiscrete": spaces.MultiDiscrete([2, 3]),
    "MultiBinary": spaces.MultiBinary(2),
    "Box": spaces.Box(-1.0, 1.0, (2,), dtype=np.float32),
}


def tiny_policy(
    sizes: list[int], action_space: spaces.Space, signed_inputs: bool = False, init_gain: float = 2.0
) -> BinaryStochasticPolicy:
    """A policy with BSN layers of ``sizes`` on :data:`OBSERVATION_SPACE`, every parameter shifted by
    ``0.5 * N(0, 1)`` from its initialisation (global generator), so that no bias or head weight is zero."""
    policy = BinaryStochasticPolicy(
        OBSERVATION_SPACE, action_space, lambda _progress: 1e-3, net_arch=sizes, bsn_init_gain=init_gain,
        signed_inputs=signed_inputs,
    )
    with torch.no_grad():
        for parameter in policy.parameters():
            parameter.add_(0.5 * torch.randn_like(parameter))
    return policy

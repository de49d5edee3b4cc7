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
#: How the layers above the first and the action head read the units below them (policy kwargs, by test id):
#: all as 0/1 bits, the BSN layers as signs ``2h - 1`` (``signed_inputs``), or the head as signs (``signed_head``).
UNIT_READINGS = {
    "bit_inputs": {},
    "signed_inputs": {"signed_inputs": True},
    "signed_head": {"signed_head": True},
}


def tiny_policy(
    sizes: list[int], action_space: spaces.Space, reading: str = "bit_inputs", init_gain: float = 2.0
) -> BinaryStochasticPolicy:
    """A policy with BSN layers of ``sizes`` on :data:`OBSERVATION_SPACE` whose units are read as ``reading`` (a
    key of :data:`UNIT_READINGS`), every parameter shifted by ``0.5 * N(0, 1)`` from its initialisation (global
    generator), so that no bias or head weight is zero."""
    policy = BinaryStochasticPolicy(
        OBSERVATION_SPACE, action_space, lambda _progress: 1e-3, net_arch=sizes, bsn_init_gain=init_gain,
        **UNIT_READINGS[reading],
    )
    with torch.no_grad():
        for parameter in policy.parameters():
            parameter.add_(0.5 * torch.randn_like(parameter))
    return policy

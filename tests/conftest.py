"""Shared test fixtures: every test starts from the same seeded global random state."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch


@pytest.fixture(autouse=True)
def seeded() -> int:
    """Seed Python, NumPy and torch's global generators with 0 before each test; returns the seed."""
    seed = 0
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return seed

"""Shared test configuration: the repository root on sys.path, single-threaded torch, seeded generators."""

from __future__ import annotations

import random
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# Two-core CI machine: one intra-op thread per test process keeps timings stable.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def seeded() -> int:
    """Seed Python, NumPy and torch's global generators with 0 before each test; returns the seed."""
    seed = 0
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return seed

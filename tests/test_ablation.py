"""benchmarks/ablation.py: every arm builds on every benchmark task."""

from __future__ import annotations

import pytest
from stable_baselines3 import PPO

from agents.localpg import LocalPG
from benchmarks.ablation import VARIANTS, build
from benchmarks.compare_sb3 import TASKS


@pytest.mark.parametrize("env_id", list(TASKS))
def test_every_arm_builds_on_every_task(env_id: str) -> None:
    for variant in VARIANTS:
        model = build(variant, env_id, seed=0)
        assert isinstance(model, LocalPG if variant.algo == "localpg" else PPO), variant.name
        # The stock-PPO arms keep RL Zoo's settings except gSDE, which the BSN policy refuses.
        assert not model.use_sde
        model.get_env().close()

"""Environments: delayed-reward tasks, the reward-delay wrapper, batched torch environments and env factories.

Importing this package registers our tasks with Gymnasium:

* ``bsn/DelayedChain-v0`` (:class:`~envs.delayed.DelayedChainEnv`),
* ``bsn/DelayedParity-v0`` (:class:`~envs.delayed.DelayedParityEnv`).
"""

import gymnasium as gym

from envs.classic_control import TorchAcrobot, TorchCartPole, TorchMountainCar, TorchPendulum
from envs.delayed import DelayedChainEnv, DelayedParityEnv, DelayedRewardEnv
from envs.episode_stats import EpisodeSummary, EpisodeTracker
from envs.factory import (
    BACKENDS,
    TORCH_ENVS,
    UnknownEnvironmentError,
    check_env_id,
    make_env,
    make_torch_vec_env,
    make_vec_env,
)
from envs.reward_delay import EPISODE, RewardDelay, RewardDelaySpec, TimeFeature, TorchRewardDelay, delay_period
from envs.torch_delayed import TorchDelayedChain, TorchDelayedParity, TorchDelayedRewardEnv
from envs.torch_vec_env import TensorStep, TorchVecEnv

#: Our Gymnasium ids and their entry points.
REGISTERED_ENVS: dict[str, str] = {
    "bsn/DelayedChain-v0": "envs.delayed:DelayedChainEnv",
    "bsn/DelayedParity-v0": "envs.delayed:DelayedParityEnv",
}


def register_envs() -> None:
    """Register :data:`REGISTERED_ENVS` with Gymnasium (idempotent; called on import)."""
    for env_id, entry_point in REGISTERED_ENVS.items():
        if env_id not in gym.registry:
            gym.register(id=env_id, entry_point=entry_point)


register_envs()

__all__ = [
    "BACKENDS",
    "EPISODE",
    "REGISTERED_ENVS",
    "TORCH_ENVS",
    "DelayedChainEnv",
    "DelayedParityEnv",
    "DelayedRewardEnv",
    "EpisodeSummary",
    "EpisodeTracker",
    "RewardDelay",
    "RewardDelaySpec",
    "TensorStep",
    "TimeFeature",
    "TorchAcrobot",
    "TorchCartPole",
    "TorchDelayedChain",
    "TorchDelayedParity",
    "TorchDelayedRewardEnv",
    "TorchMountainCar",
    "TorchPendulum",
    "TorchRewardDelay",
    "TorchVecEnv",
    "UnknownEnvironmentError",
    "check_env_id",
    "delay_period",
    "make_env",
    "make_torch_vec_env",
    "make_vec_env",
    "register_envs",
]

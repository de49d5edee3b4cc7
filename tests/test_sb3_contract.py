"""SB3's contract, kept by ``BinaryStochasticPolicy`` under PPO / A2C and by ``LocalPG``: image observations
with the default ``net_arch``, unshared features extractors, multi-dimensional ``Box`` actions, the rollout
buffer's API as on-policy callbacks read it, and SB3's identity tasks with the policy's defaults."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces
from stable_baselines3 import A2C, PPO
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.envs import (
    FakeImageEnv,
    IdentityEnv,
    IdentityEnvBox,
    IdentityEnvMultiBinary,
    IdentityEnvMultiDiscrete,
)
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.vec_env import DummyVecEnv

from agents import LocalPG
from policies import BinaryStochasticPolicy
from policies.policy import DEFAULT_PI_SIZES

ALGOS = {
    "ppo": lambda env, **kw: PPO(BinaryStochasticPolicy, env, n_steps=16, batch_size=16, seed=0, **kw),
    "a2c": lambda env, **kw: A2C(BinaryStochasticPolicy, env, n_steps=16, seed=0, **kw),
    "localpg": lambda env, **kw: LocalPG("MlpPolicy", env, n_steps=16, batch_size=16, seed=0, **kw),
}


@pytest.mark.parametrize("algo", list(ALGOS))
def test_image_observations_get_the_default_bsn_layers(algo) -> None:
    """SB3 turns ``net_arch=None`` into ``[]`` when it picks NatureCNN; the BSN policy keeps its default layers."""
    env = FakeImageEnv(screen_height=36, screen_width=36, n_channels=1)
    model = ALGOS[algo](env)
    assert model.policy.bsn.hidden_sizes == list(DEFAULT_PI_SIZES)
    assert type(model.policy.features_extractor).__name__ == "NatureCNN"
    model.learn(32)
    action, _ = model.predict(env.observation_space.sample(), deterministic=True)
    assert env.action_space.contains(action)


@pytest.mark.parametrize("algo", list(ALGOS))
def test_unshared_features_extractors_train_and_predict(algo) -> None:
    model = ALGOS[algo]("CartPole-v1", policy_kwargs={"share_features_extractor": False})
    policy = model.policy
    assert policy.pi_features_extractor is not policy.vf_features_extractor
    model.learn(32)
    obs = np.zeros(4, dtype=np.float32)
    for deterministic in (True, False):
        action, _ = model.predict(obs, deterministic=deterministic)
        assert model.action_space.contains(action)
    assert policy.actor_features(torch.zeros(3, 4)).shape == (3, 4)


class MatrixActionEnv(gym.Env):
    """Observations in R^3, actions a (2, 2) matrix; reward: minus the distance of the action to a fixed matrix."""

    observation_space = spaces.Box(-1.0, 1.0, (3,), dtype=np.float32)
    action_space = spaces.Box(-1.0, 1.0, (2, 2), dtype=np.float32)
    target = np.array([[0.5, -0.5], [0.0, 0.25]], dtype=np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return self.observation_space.sample(), {}

    def step(self, action):
        assert np.shape(action) == (2, 2)
        return self.observation_space.sample(), -float(np.abs(action - self.target).sum()), False, False, {}


@pytest.mark.parametrize("algo", list(ALGOS))
def test_multi_dimensional_box_actions(algo) -> None:
    model = ALGOS[algo](MatrixActionEnv())
    model.learn(48)
    action, _ = model.predict(np.zeros(3, dtype=np.float32))
    assert action.shape == (2, 2)
    batch, _ = model.predict(np.zeros((5, 3), dtype=np.float32))
    assert batch.shape == (5, 2, 2)


class ReadsRolloutBuffer(BaseCallback):
    """What on-policy callbacks do with SB3's buffer: its size, NumPy statistics and copies of its columns."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[dict] = []

    def _on_step(self) -> bool:
        return True

    def _on_rollout_end(self) -> None:
        buffer = self.model.rollout_buffer
        self.seen.append(
            {
                "size": buffer.size(),
                "full": buffer.full,
                "reward_sum": float(np.sum(buffer.rewards, axis=0).sum()),
                "mean_return": float(np.mean(buffer.returns)),
                "values": buffer.values.copy(),
                "advantage_std": float(np.std(buffer.advantages)),
                "shapes": [np.shape(getattr(buffer, key)) for key in ("rewards", "values", "episode_starts")],
                "observations": np.asarray(buffer.observations).shape,
            }
        )


@pytest.mark.parametrize("algo", list(ALGOS))
def test_rollout_buffer_reads_like_sb3s(algo) -> None:
    callback = ReadsRolloutBuffer()
    env = DummyVecEnv([lambda: gym.make("CartPole-v1")] * 2)
    model = ALGOS[algo](env)
    model.learn(64, callback=callback)
    assert len(callback.seen) == 2
    for seen in callback.seen:
        assert seen["size"] == 16 and seen["full"]
        assert seen["shapes"] == [(16, 2)] * 3
        assert seen["observations"] == (16, 2, 4)
        assert seen["reward_sum"] == 32.0  # CartPole pays 1 per step
        assert np.isfinite([seen["mean_return"], seen["advantage_std"]]).all()
    if algo == "localpg":  # NumPy views of the tensors on CPU
        buffer = model.rollout_buffer
        np.testing.assert_array_equal(buffer.returns, buffer.tensors.returns.numpy())
        assert np.shares_memory(buffer.rewards, buffer.tensors.rewards.numpy())


# SB3's identity tasks (stable_baselines3.common.envs) with the BSN policy's default settings and SB3's
# threshold, a 20-episode deterministic evaluation above 90 (SB3's gamma and seeds). Budgets: the 3000 steps
# of SB3's earlier tests/test_identity.py where the default reaches 90 there, else the budget measured to
# reach it (MultiBinary 20000, Box 5000). SB3 2.9's own file trains 1200 steps with a learning rate of
# 2e-3 (PPO: n_steps 256), in which the default policy reaches 90 on IdentityEnv(4) only.
@pytest.mark.parametrize(
    "algo, env_fn, steps",
    [
        (PPO, lambda: IdentityEnv(4), 3000),
        (PPO, lambda: IdentityEnvMultiDiscrete(4), 3000),
        (PPO, lambda: IdentityEnvMultiBinary(4), 20000),
        (A2C, lambda: IdentityEnv(4), 3000),
    ],
    ids=["ppo-discrete", "ppo-multidiscrete", "ppo-multibinary", "a2c-discrete"],
)
def test_identity_discrete_with_the_default_policy(algo, env_fn, steps) -> None:
    env = DummyVecEnv([env_fn])
    model = algo(BinaryStochasticPolicy, env, gamma=0.4, seed=1).learn(steps)
    mean_reward, _ = evaluate_policy(model, env, n_eval_episodes=20, warn=False)
    assert mean_reward >= 90


def test_identity_continuous_with_the_default_policy() -> None:
    env = IdentityEnvBox(eps=0.5)
    model = PPO(BinaryStochasticPolicy, env, seed=0, gamma=0.95, policy_kwargs={"net_arch": [64, 64]}).learn(5000)
    mean_reward, _ = evaluate_policy(model, model.get_env(), n_eval_episodes=20, warn=False)
    assert mean_reward >= 90

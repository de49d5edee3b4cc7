"""Small misbehaving environments for the robustness tests, registered on import.

Use them as ``--env tests.bad_envs:<Id>`` (Gymnasium imports the module named before the colon).
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.envs.classic_control import CartPoleEnv


class FaultyEnv(gym.Env):
    """A 2-observation, 2-action episode of ``horizon`` steps that turns bad at step ``bad_step``.

    Args:
        fault: ``"nan_observation"`` (the observation becomes NaN), ``"inf_reward"`` (the reward becomes
            +inf), or ``"none"``.
        bad_step: the step of the episode (counted from 1) whose output is bad (> 0).
        horizon: episode length (> 0).
        action_space: the action space; a Tuple space makes the env unsupported by the policies.
        render_mode: accepted for Gymnasium's API; the env renders nothing.
    """

    metadata = {"render_modes": ["rgb_array"]}  # noqa: RUF012

    def __init__(self, fault: str = "none", bad_step: int = 3, horizon: int = 20,
                 action_space: spaces.Space | None = None, render_mode: str | None = None) -> None:
        self.render_mode = render_mode
        self.fault, self.bad_step, self.horizon = fault, bad_step, horizon
        self.observation_space = spaces.Box(-1.0, 1.0, shape=(2,), dtype=np.float32)
        self.action_space = action_space if action_space is not None else spaces.Discrete(2)
        self.steps = 0

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self.steps = 0
        return np.zeros(2, dtype=np.float32), {}

    def step(self, action: object) -> tuple[np.ndarray, float, bool, bool, dict]:
        self.steps += 1
        observation = np.full(2, 0.5, dtype=np.float32)
        reward = 1.0
        if self.steps == self.bad_step and self.fault == "nan_observation":
            observation[0] = np.nan
        if self.steps == self.bad_step and self.fault == "inf_reward":
            reward = float("inf")
        return observation, reward, self.steps >= self.horizon, False, {}


class UnrenderableCartPole(CartPoleEnv):
    """CartPole-v1 whose renderer cannot start, as an OpenGL renderer without a display."""

    def render(self) -> None:
        raise RuntimeError("no OpenGL context")


gym.register("NanObservation-v0", entry_point=FaultyEnv, kwargs={"fault": "nan_observation"})
gym.register("InfReward-v0", entry_point=FaultyEnv, kwargs={"fault": "inf_reward"})
gym.register("TupleAction-v0", entry_point=FaultyEnv,
             kwargs={"action_space": spaces.Tuple((spaces.Discrete(2), spaces.Discrete(2)))})
gym.register("UnrenderableCartPole-v1", entry_point=UnrenderableCartPole, max_episode_steps=500)

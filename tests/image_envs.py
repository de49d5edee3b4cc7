"""Image-observation environments for the command-line tests, registered on import.

Use them as ``--env tests.image_envs:<Id>`` (Gymnasium imports the module named before the colon).
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from stable_baselines3.common.envs import FakeImageEnv


class SmallImageDictEnv(gym.Env):
    """Ten-step episodes of random Dict observations: a 7 x 7 RGB image (too small for ``NatureCNN``) and a vector.

    Args:
        render_mode: accepted for Gymnasium's API; the env renders nothing.
    """

    metadata = {"render_modes": ["rgb_array"]}  # noqa: RUF012

    def __init__(self, render_mode: str | None = None) -> None:
        self.render_mode = render_mode
        self.observation_space = spaces.Dict({"image": spaces.Box(0, 255, (7, 7, 3), np.uint8),
                                              "vector": spaces.Box(-1.0, 1.0, (2,), np.float32)})
        self.action_space = spaces.Discrete(3)
        self.steps = 0

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[dict, dict]:
        super().reset(seed=seed)
        self.observation_space.seed(seed)
        self.steps = 0
        return self.observation_space.sample(), {}

    def step(self, action: object) -> tuple[dict, float, bool, bool, dict]:
        self.steps += 1
        return self.observation_space.sample(), float(action == 0), False, self.steps >= 10, {}


# channel-last RGB frames of 12 x 12 pixels (SB3 transposes them to channel-first for the policy)
gym.register("SmallImage-v0", entry_point=FakeImageEnv,
             kwargs={"screen_height": 12, "screen_width": 12, "n_channels": 3})
gym.register("SmallImageDict-v0", entry_point=SmallImageDictEnv)

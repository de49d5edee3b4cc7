"""Reward delay: a task's reward paid late, every ``k`` steps or only at the end of the episode.

The *delayed* version of a task has the same dynamics, observations and episode returns as the task
itself; only the time at which reward is paid changes. With ``delay = k`` the reward accumulated since
the last payment is paid at every ``k``-th step of an episode; with ``delay = "episode"`` the whole
return is paid at the episode's last step (the "episodic-reward" tasks of the credit-assignment
literature). Whatever remains unpaid when an episode ends (terminated or truncated) is paid at that
step, so every episode's return is unchanged for every sequence of actions:

    paid_t = sum of r_s over the unpaid steps s <= t   if t is a payment step, else 0,
    payment steps: t = k, 2k, ... (counted from 1 in each episode) and the episode's last step.

With reward paid late, the value of a state also depends on how much reward has accrued unpaid, which a
critic cannot see in the observation. For tasks whose reward accrues with time (a cost per step, as in
Acrobot-v1 or MountainCar-v0) the elapsed time tells it: :class:`TimeFeature` appends the fraction of the time
limit that remains to the observation (Pardo et al., "Time Limits in Reinforcement Learning", ICML 2018).

Two implementations of the delay, one for each backend, tested against each other step by step:

* :class:`RewardDelay`, a Gymnasium wrapper. Placed outside SB3's ``Monitor`` (as ``env_wrapper`` and
  :func:`envs.make_vec_env` place it), ``Monitor`` still records the dense rewards, so
  ``info["episode"]`` and ``rollout/ep_rew_mean`` report the true return.
* :class:`TorchRewardDelay`, the same bookkeeping on tensors for a batch of episodes: a
  :class:`~envs.torch_vec_env.TorchVecEnv` built with ``reward_delay`` pays through it and keeps
  tracking the true returns in its :class:`~envs.episode_stats.EpisodeTracker`.
"""

from __future__ import annotations

from typing import Any, Literal, SupportsFloat

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3.common.preprocessing import is_image_space

__all__ = [
    "EPISODE",
    "RewardDelay",
    "RewardDelaySpec",
    "TimeFeature",
    "TorchRewardDelay",
    "delay_period",
    "time_feature_space",
]

#: The ``delay`` value that pays the whole return at the episode's last step.
EPISODE = "episode"
#: A reward delay: a number of steps ``k >= 1`` or ``"episode"``.
RewardDelaySpec = int | Literal["episode"]


def delay_period(delay: Any) -> int:
    """The payment period of a reward delay: ``k`` for ``delay = k``, ``0`` for ``"episode"`` (never mid-episode).

    Args:
        delay: an integer ``k >= 1`` (pay every ``k`` steps and at the episode's end) or ``"episode"``
            (pay only at the episode's end). ``k = 1`` is the task's own dense reward.

    Raises:
        ValueError: one line naming the bad value and the accepted ones.
    """
    if delay == EPISODE:
        return 0
    if isinstance(delay, bool) or not isinstance(delay, int) or delay < 1:
        raise ValueError(
            f"reward delay must be an integer number of steps >= 1 or 'episode', got {delay!r} "
            "(e.g. delay: 50 pays every 50 steps, delay: episode pays the return at the episode's end)"
        )
    return int(delay)


class RewardDelay(gym.Wrapper, gym.utils.RecordConstructorArgs):
    """Pay the wrapped env's reward every ``delay`` steps, or only at the episode's end (module docstring).

    Observations, actions, terminations and infos pass through unchanged. Wrap *outside* SB3's
    ``Monitor`` so that ``Monitor`` logs the true (dense) rewards; inside it, ``Monitor`` logs the
    paid rewards, whose episode sum is the same.

    Args:
        env: the task.
        delay: an integer ``k >= 1`` (pay the accumulated reward at steps ``k, 2k, ...`` of each
            episode and at its last step) or ``"episode"`` (pay the whole return at the last step).

    Example (``train.py``, RL Zoo's ``env_wrapper``)::

        python train.py --env Acrobot-v1 -params "env_wrapper:[{envs.RewardDelay: {delay: episode}}]"
    """

    def __init__(self, env: gym.Env, delay: RewardDelaySpec = EPISODE) -> None:
        gym.utils.RecordConstructorArgs.__init__(self, delay=delay)
        gym.Wrapper.__init__(self, env)
        self.delay = delay
        self.period = delay_period(delay)
        self.pending = 0.0
        self.episode_steps = 0

    def reset(self, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
        """Reset the task and the unpaid reward."""
        self.pending = 0.0
        self.episode_steps = 0
        return self.env.reset(**kwargs)

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        """Step the task; the returned reward is the accumulated one at a payment step, else ``0.0``."""
        obs, reward, terminated, truncated, info = self.env.step(action)
        self.pending += float(reward)
        self.episode_steps += 1
        due = terminated or truncated or (self.period > 0 and self.episode_steps % self.period == 0)
        paid = self.pending if due else 0.0
        if due:
            self.pending = 0.0
        return obs, paid, terminated, truncated, info

    def __repr__(self) -> str:
        return f"<RewardDelay(delay={self.delay!r}){self.env}>"


#: The fix for a task the time feature refuses: the reward delay alone.
WITHOUT_TIME_FEATURE = (
    "delay the reward without it "
    "(e.g. train.py -params \"env_wrapper:{'envs.RewardDelay': {'delay': 'episode'}}\" instead of --reward-delay)"
)


def time_feature_space(space: gym.Space) -> spaces.Box:
    """``space`` flattened to a 1-D ``Box`` (:func:`gymnasium.spaces.flatten_space`: a 1-D ``Box`` as it is,
    ``Discrete`` one-hot, ``Dict`` and ``Tuple`` concatenated), with one more coordinate in [0, 1], the time
    feature. Its dtype is the flattened space's if floating, else ``float32``.

    Raises:
        ValueError: one line, for a space holding an image (SB3's ``is_image_space``: a 3-D ``uint8`` ``Box``
            in [0, 255], which SB3 policies read with a CNN) or one that cannot be flattened.
    """
    if any(is_image_space(leaf, check_channels=False) for leaf in leaf_spaces(space)):
        raise ValueError(
            f"the time feature takes observations without images, got {space}; {WITHOUT_TIME_FEATURE}"
        )
    try:
        flat = spaces.flatten_space(space)
    except NotImplementedError:
        raise ValueError(
            f"the time feature cannot flatten the observation space {space}; {WITHOUT_TIME_FEATURE}"
        ) from None
    dtype = flat.dtype if np.issubdtype(flat.dtype, np.floating) else np.dtype(np.float32)
    return spaces.Box(
        np.append(flat.low, 0.0).astype(dtype),
        np.append(flat.high, 1.0).astype(dtype),
        dtype=dtype,  # type: ignore[arg-type]
    )


def leaf_spaces(space: gym.Space) -> list[gym.Space]:
    """The spaces inside ``space`` that hold no other space (``space`` itself unless it is a ``Dict`` or ``Tuple``)."""
    if isinstance(space, spaces.Dict | spaces.Tuple):
        inner = space.spaces.values() if isinstance(space, spaces.Dict) else space.spaces
        return [leaf for member in inner for leaf in leaf_spaces(member)]
    return [space]


class TimeFeature(gym.ObservationWrapper, gym.utils.RecordConstructorArgs):
    """Append the remaining fraction of the time limit, ``1 - t / max_episode_steps``, to the flattened observation.

    ``t`` counts the steps of the current episode (0 at reset), so the feature runs from 1 down to 0 at the time
    limit. The same idea as sb3-contrib's ``TimeFeatureWrapper``.

    Args:
        env: a task whose observations hold no image (any other space is flattened: :func:`time_feature_space`).
        max_episode_steps: the time limit (>= 1); ``None`` takes ``env.spec.max_episode_steps``.

    Raises:
        ValueError: one line, for an observation space :func:`time_feature_space` refuses or a task without a
            time limit.
    """

    def __init__(self, env: gym.Env, max_episode_steps: int | None = None) -> None:
        gym.utils.RecordConstructorArgs.__init__(self, max_episode_steps=max_episode_steps)
        gym.ObservationWrapper.__init__(self, env)
        space = time_feature_space(env.observation_space)
        limit = max_episode_steps if max_episode_steps is not None else getattr(env.spec, "max_episode_steps", None)
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ValueError(
                f"the time feature needs the task's time limit, got max_episode_steps={limit!r}; give the task "
                "one (train.py: -params \"env_kwargs:{'max_episode_steps': 1000}\") or pass TimeFeature's "
                "max_episode_steps"
            )
        self.max_episode_steps = limit
        self.observation_space = space
        self.episode_steps = 0

    def reset(self, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
        """Reset the task and the step count."""
        self.episode_steps = 0
        return super().reset(**kwargs)

    def step(self, action: Any) -> tuple[Any, SupportsFloat, bool, bool, dict[str, Any]]:
        """Step the task; the observation carries the remaining fraction after this step."""
        self.episode_steps += 1
        return super().step(action)

    def observation(self, observation: Any) -> np.ndarray:
        """``observation`` with ``1 - t / max_episode_steps`` appended."""
        remaining = max(0.0, 1.0 - self.episode_steps / self.max_episode_steps)
        flat = spaces.flatten(self.env.observation_space, observation)
        return np.append(flat, remaining).astype(self.observation_space.dtype)


class TorchRewardDelay:
    """:class:`RewardDelay` for a batch of ``num_envs`` episodes, on tensors, without host synchronisation.

    Args:
        num_envs: number of parallel episodes (>= 1).
        delay: as in :class:`RewardDelay`.
        device: where the unpaid rewards live.
        dtype: floating dtype of the rewards.

    Attributes:
        pending: (num_envs,) reward accumulated and not yet paid in each episode.
    """

    def __init__(self, num_envs: int, delay: RewardDelaySpec, device: torch.device, dtype: torch.dtype) -> None:
        self.delay = delay
        self.period = delay_period(delay)
        self.pending = torch.zeros(num_envs, device=device, dtype=dtype)

    def reset(self) -> None:
        """Forget the unpaid rewards (every episode restarts)."""
        self.pending.zero_()

    def pay(self, rewards: torch.Tensor, done: torch.Tensor, episode_steps: torch.Tensor) -> torch.Tensor:
        """Add one step's rewards and return what is paid at this step.

        Args:
            rewards: (num_envs,) dense rewards of the step.
            done: (num_envs,) bool, the episode ended at this step (terminated or truncated).
            episode_steps: (num_envs,) long, steps taken in each episode including this one (>= 1).

        Returns:
            (num_envs,) the paid rewards: the accumulated reward where a payment is due, else 0.
        """
        pending = self.pending + rewards
        due = done if self.period == 0 else done | (episode_steps % self.period == 0)
        self.pending = pending.masked_fill(due, 0.0)
        return torch.where(due, pending, torch.zeros_like(pending))

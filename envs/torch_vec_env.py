"""Batched environments written in torch, exposed both as tensors and as an SB3 ``VecEnv``.

One :class:`TorchVecEnv` holds ``num_envs`` copies of an environment as one state tensor of shape
(num_envs, state_dim) on any device, and steps all of them with a few tensor ops. A subclass only
supplies the per-environment pieces: its spaces, the initial-state distribution, the transition
(next state, reward, termination) and the observation function. Everything else is shared here:

* the **tensor API** for on-device training without host copies: :meth:`TorchVecEnv.reset_tensor`,
  :meth:`TorchVecEnv.step_tensor` (observations, rewards, terminated, truncated: tensors on
  ``env.device``), :attr:`TorchVecEnv.final_obs` and :attr:`TorchVecEnv.episodes` (an
  :class:`~envs.episode_stats.EpisodeTracker`);
* automatic reset of the copies whose episode ended and TimeLimit-style truncation after
  ``max_episode_steps`` steps;
* the **SB3 VecEnv API** (numpy in, numpy out), a thin wrapper of the tensor API with SB3's
  conventions: ``dones = terminated | truncated``, ``info["terminal_observation"]`` for finished
  episodes, ``info["TimeLimit.truncated"]`` on every step, and ``info["episode"] = {"r", "l", "t"}``
  like SB3's ``Monitor`` so that ``rollout/ep_rew_mean`` is logged without extra wrappers.

Randomness (initial states and anything a transition draws) comes from one ``torch.Generator`` on
the env's device. Every step draws fresh initial states for all copies and keeps those of the
copies that finished, so no host synchronisation is needed and the random stream does not depend on
which episodes ended. With the same seed, device and dtype, a run is reproducible; CPU and CUDA
generators give different streams.
"""

from __future__ import annotations

import time
from abc import abstractmethod
from collections.abc import Sequence
from typing import Any, ClassVar, NamedTuple

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3.common.vec_env import VecEnv
from stable_baselines3.common.vec_env.base_vec_env import VecEnvIndices, VecEnvObs, VecEnvStepReturn

from envs.episode_stats import EpisodeTracker
from envs.reward_delay import RewardDelaySpec, TorchRewardDelay, time_feature_space
from envs.validation import positive_int

__all__ = ["TensorStep", "TorchVecEnv", "resolve_device"]

_FLOAT_DTYPES = (torch.float32, torch.float64)


class TensorStep(NamedTuple):
    """What :meth:`TorchVecEnv.step_tensor` returns; every field is a tensor on the env's device.

    Attributes:
        obs: (num_envs, *obs_shape) observations after the step; for copies whose episode ended this
            step, the first observation of the next episode (automatic reset, as in SB3).
        rewards: (num_envs,) rewards paid at the step (the task's own, or with ``reward_delay`` the
            delayed payments).
        terminated: (num_envs,) bool, the episode reached a terminal state.
        truncated: (num_envs,) bool, the episode reached ``max_episode_steps`` (may coincide with
            ``terminated``, as with Gymnasium's ``TimeLimit``).
    """

    obs: torch.Tensor
    rewards: torch.Tensor
    terminated: torch.Tensor
    truncated: torch.Tensor


def resolve_device(device: str | torch.device) -> torch.device:
    """``device`` as a ``torch.device``, or a one-line error if it cannot be used here.

    Args:
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"auto"`` (CUDA when available, else CPU) or a
            ``torch.device``.
    """
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {str(device)!r} requested but CUDA is not available: pass device='cpu' or 'auto'")
    return resolved


class TorchVecEnv(VecEnv):
    """Base class: ``num_envs`` copies of an environment stepped together as tensors.

    Subclasses set :attr:`gym_id` and :attr:`state_dim` (a class attribute, or an instance attribute
    set before calling this constructor) and implement :meth:`_make_spaces`, :meth:`_initial_state`,
    :meth:`_transition` and :meth:`_observe`.

    Args:
        num_envs: number of copies (>= 1).
        device: where the state lives and the dynamics run (see :func:`resolve_device`).
        seed: seed of the env's random generator; ``None`` seeds it from the OS.
        dtype: ``torch.float32`` (default, fast) or ``torch.float64`` (matches Gymnasium's numpy
            float64 dynamics to rounding).
        max_episode_steps: steps after which an episode is truncated (>= 1); ``None`` takes the
            limit of :attr:`gym_id`'s Gymnasium registration.
        stats_window: finished episodes averaged by :meth:`episode_summary` (>= 1; SB3 uses 100).
        reward_delay: ``None`` pays each step's reward at once; an integer ``k >= 1`` or ``"episode"``
            pays it late, as :class:`~envs.reward_delay.RewardDelay` does (the returned rewards are the
            paid ones; :attr:`episodes` and ``info["episode"]`` keep the true returns).
        time_feature: append the remaining fraction of the time limit, ``1 - t / max_episode_steps``, to
            every observation, as :class:`~envs.reward_delay.TimeFeature` does (1-D observations only).

    Attributes:
        state: (num_envs, state_dim) physical state of every copy, in Gymnasium's order.
        episode_steps: (num_envs,) long, steps taken in each copy's current episode.
        final_obs: (num_envs, *obs_shape) observation of the state each copy reached at the last step,
            before any automatic reset (equal to the returned observation where no episode ended).
            Use it to bootstrap the value of truncated episodes.
        episodes: the :class:`~envs.episode_stats.EpisodeTracker` of finished episodes (true returns).
        reward_delay: the :class:`~envs.reward_delay.TorchRewardDelay` paying the rewards, or ``None``.
    """

    #: Gymnasium id whose dynamics the subclass reproduces (also the source of the default time limit).
    gym_id: ClassVar[str]
    #: Number of state variables per copy (a class attribute, or set per instance before ``__init__``).
    state_dim: int

    def __init__(
        self,
        num_envs: int,
        device: str | torch.device = "cpu",
        seed: int | None = None,
        dtype: torch.dtype = torch.float32,
        max_episode_steps: int | None = None,
        stats_window: int = 100,
        reward_delay: RewardDelaySpec | None = None,
        time_feature: bool = False,
    ) -> None:
        num_envs = positive_int("num_envs", num_envs, "parallel copies of the environment")
        if dtype not in _FLOAT_DTYPES:
            raise ValueError(f"dtype must be torch.float32 or torch.float64, got {dtype}")
        self.device = resolve_device(device)
        self.dtype = dtype
        if max_episode_steps is None:
            max_episode_steps = self.default_max_episode_steps()
        self.max_episode_steps = positive_int("max_episode_steps", max_episode_steps, "time limit of an episode")
        self.render_mode: str | None = None
        self.generator = torch.Generator(device=self.device)
        self._seed_generator(seed)
        observation_space, action_space = self._make_spaces()
        self.time_feature = bool(time_feature)
        if self.time_feature:
            observation_space = time_feature_space(observation_space)
        super().__init__(num_envs, observation_space, action_space)
        self.episodes = EpisodeTracker(num_envs, stats_window, self.device, dtype)
        self.reward_delay = (
            None if reward_delay is None else TorchRewardDelay(num_envs, reward_delay, self.device, dtype)
        )
        self.state = self._initial_state(num_envs)
        self.episode_steps = torch.zeros(num_envs, device=self.device, dtype=torch.long)
        self.final_obs = self._observe_at(self.state, self.episode_steps)
        self._pending_actions: torch.Tensor | None = None
        self._start_time = time.time()

    # ------------------------------------------------------------------ per-environment hooks

    def default_max_episode_steps(self) -> int:
        """The time limit used when none is given: that of :attr:`gym_id`'s Gymnasium registration."""
        limit = gym.spec(self.gym_id).max_episode_steps
        if limit is None:
            raise ValueError(f"{self.gym_id} is registered without max_episode_steps: pass max_episode_steps")
        return int(limit)

    @abstractmethod
    def _make_spaces(self) -> tuple[spaces.Box, spaces.Space]:
        """The (observation, action) spaces of one copy, equal to those of :attr:`gym_id`."""

    @abstractmethod
    def _initial_state(self, num: int) -> torch.Tensor:
        """Draw ``num`` initial states, (num, state_dim), with :meth:`_uniform`."""

    @abstractmethod
    def _transition(
        self, state: torch.Tensor, actions: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One step of every copy.

        Args:
            state: (num_envs, state_dim) current states.
            actions: (num_envs,) long for a ``Discrete`` action space, (num_envs, *shape) of
                :attr:`dtype` for a ``Box`` (not clipped: the dynamics clip like Gymnasium does).

        Returns:
            ``(next_state, rewards, terminated)`` of shapes (num_envs, state_dim), (num_envs,),
            (num_envs,) bool.
        """

    @abstractmethod
    def _observe(self, state: torch.Tensor) -> torch.Tensor:
        """Observations (num_envs, *obs_shape) of the states, in :attr:`dtype`."""

    def _observe_at(self, state: torch.Tensor, episode_steps: torch.Tensor) -> torch.Tensor:
        """:meth:`_observe`, with the time feature of ``episode_steps`` appended if :attr:`time_feature` is on."""
        obs = self._observe(state)
        if not self.time_feature:
            return obs
        remaining = (1.0 - episode_steps.to(obs.dtype) / self.max_episode_steps).clamp(min=0.0)
        return torch.cat([obs, remaining.unsqueeze(-1)], dim=-1)

    def _uniform(self, low: torch.Tensor | float, high: torch.Tensor | float, shape: Sequence[int]) -> torch.Tensor:
        """Uniform samples in ``[low, high)`` of ``shape`` from the env's generator."""
        unit = torch.rand(tuple(shape), generator=self.generator, device=self.device, dtype=self.dtype)
        return low + (high - low) * unit

    # ------------------------------------------------------------------ tensor API

    def reset_tensor(self, seed: int | None = None) -> torch.Tensor:
        """Start a new episode in every copy (unfinished episodes are not counted as finished).

        Args:
            seed: if given, reseeds the env's generator first.

        Returns:
            (num_envs, *obs_shape) first observations, on ``device``.
        """
        if seed is not None:
            self._seed_generator(seed)
        self.state = self._initial_state(self.num_envs)
        self.episode_steps.zero_()
        self.episodes.restart_running()
        if self.reward_delay is not None:
            self.reward_delay.reset()
        self.final_obs = self._observe_at(self.state, self.episode_steps)
        return self.final_obs

    def step_tensor(self, actions: torch.Tensor) -> TensorStep:
        """Step every copy, resetting those whose episode ends; no host synchronisation.

        Action values are not range-checked here (that would need a host copy); a ``Discrete``
        action must lie in ``[0, n)``. The numpy API (:meth:`step`) checks them.

        Args:
            actions: (num_envs,) integer tensor for a ``Discrete`` action space, or
                (num_envs, *action_shape) float tensor for a ``Box``; moved to ``device`` if needed.

        Returns:
            A :class:`TensorStep`. :attr:`final_obs` then holds the pre-reset observations.
        """
        step, _, _ = self._advance(self._prepare_actions(actions))
        return step

    def episode_summary(self) -> dict[str, float]:
        """Finished-episode statistics, read with one host copy (see :class:`EpisodeTracker`).

        Returns:
            ``{"episodes", "ep_rew_mean", "ep_len_mean"}`` over the last ``stats_window`` finished
            episodes (means are ``nan`` before the first episode ends).
        """
        summary = self.episodes.summary()
        return {"episodes": summary.episodes, "ep_rew_mean": summary.mean_return, "ep_len_mean": summary.mean_length}

    def _advance(self, actions: torch.Tensor) -> tuple[TensorStep, torch.Tensor, torch.Tensor]:
        """Step, track episodes, auto-reset. Returns the step and the finished episodes' returns and lengths."""
        next_state, rewards, terminated = self._transition(self.state, actions)
        self.episode_steps += 1
        truncated = self.episode_steps >= self.max_episode_steps
        done = terminated | truncated
        self.final_obs = self._observe_at(next_state, self.episode_steps)
        episode_returns, episode_lengths = self.episodes.update(rewards, done)
        if self.reward_delay is not None:
            rewards = self.reward_delay.pay(rewards, done, self.episode_steps)
        fresh_state = self._initial_state(self.num_envs)
        self.state = torch.where(done.unsqueeze(-1), fresh_state, next_state)
        self.episode_steps = self.episode_steps.masked_fill(done, 0)
        reset_obs = self._observe_at(self.state, self.episode_steps)
        obs = torch.where(done.view(-1, *([1] * (self.final_obs.dim() - 1))), reset_obs, self.final_obs)
        return TensorStep(obs, rewards, terminated, truncated), episode_returns, episode_lengths

    def _prepare_actions(self, actions: torch.Tensor) -> torch.Tensor:
        """Shape-check a tensor of actions and move it to the env's device and dtype."""
        if not isinstance(actions, torch.Tensor):
            raise TypeError(f"step_tensor expects a torch.Tensor of actions, got {type(actions).__name__}")
        expected = self._action_shape()
        if tuple(actions.shape) != expected:
            raise ValueError(
                f"actions must have shape {expected} (num_envs, *action_shape), got {tuple(actions.shape)}"
            )
        if isinstance(self.action_space, spaces.Discrete):
            if actions.is_floating_point():
                raise TypeError(f"Discrete actions must be an integer tensor, got dtype {actions.dtype}")
            return actions.to(device=self.device, dtype=torch.long)
        return actions.to(device=self.device, dtype=self.dtype)

    def _action_shape(self) -> tuple[int, ...]:
        return (self.num_envs, *self.action_space.shape)

    def _seed_generator(self, seed: int | None) -> None:
        if seed is None:
            self.generator.seed()
        else:
            self.generator.manual_seed(int(seed))

    # ------------------------------------------------------------------ SB3 VecEnv API (numpy)

    def reset(self) -> VecEnvObs:
        """SB3 reset: applies a seed set by :meth:`seed` (once), then :meth:`reset_tensor`; numpy float32."""
        if any(self._options):
            raise ValueError(
                f"{type(self).__name__} takes no reset options, got {self._options[0]}: call set_options(None)"
            )
        seed = self._seeds[0]
        self._reset_seeds()
        return self._to_numpy_obs(self.reset_tensor(seed=seed))

    def seed(self, seed: int | None = None) -> list[int | None]:
        """Seed the env's single generator at the next :meth:`reset` (SB3 semantics).

        All copies share one generator, so only ``seed`` itself is used; the returned list follows
        SB3's convention ``[seed + i for i in range(num_envs)]``.
        """
        return list(super().seed(seed))

    def step_async(self, actions: np.ndarray) -> None:
        """Validate numpy actions on the host and store them for :meth:`step_wait`.

        Args:
            actions: (num_envs,) integers in ``[0, n)`` for a ``Discrete`` action space (a trailing
                axis of size 1 is accepted), or (num_envs, *action_shape) floats for a ``Box``.
        """
        array = np.asarray(actions)
        if isinstance(self.action_space, spaces.Discrete):
            if array.shape not in ((self.num_envs,), (self.num_envs, 1)):
                raise ValueError(f"expected {self.num_envs} discrete actions, got an array of shape {array.shape}")
            array = array.reshape(self.num_envs)
            n = int(self.action_space.n)
            integral = np.issubdtype(array.dtype, np.integer) or np.array_equal(array, np.round(array))
            if not integral or array.min() < 0 or array.max() >= n:
                raise ValueError(f"discrete actions must be integers in [0, {n}), got {array}")
            self._pending_actions = torch.as_tensor(array.astype(np.int64), device=self.device)
        else:
            expected = self._action_shape()
            if array.size != int(np.prod(expected)):
                raise ValueError(f"expected actions of shape {expected}, got an array of shape {array.shape}")
            self._pending_actions = torch.as_tensor(
                array.reshape(expected).astype(np.float64), device=self.device, dtype=self.dtype
            )

    def step_wait(self) -> VecEnvStepReturn:
        """Step with the stored actions; SB3 ``(obs, rewards, dones, infos)`` in numpy."""
        if self._pending_actions is None:
            raise RuntimeError("step_wait() called without step_async(actions): call step(actions) instead")
        step, episode_returns, episode_lengths = self._advance(self._pending_actions)
        self._pending_actions = None
        obs = self._to_numpy_obs(step.obs)
        rewards = step.rewards.to(torch.float32).cpu().numpy()
        terminated = step.terminated.cpu().numpy()
        truncated = step.truncated.cpu().numpy()
        dones = terminated | truncated
        time_limit = truncated & ~terminated
        infos: list[dict[str, Any]] = [{"TimeLimit.truncated": bool(flag)} for flag in time_limit]
        finished = np.flatnonzero(dones)
        if finished.size:
            final_obs = self._to_numpy_obs(self.final_obs)
            returns = episode_returns.cpu().numpy()
            lengths = episode_lengths.cpu().numpy()
            elapsed = round(time.time() - self._start_time, 6)
            for index in finished:
                infos[index]["terminal_observation"] = final_obs[index]
                infos[index]["episode"] = {"r": round(float(returns[index]), 6), "l": int(lengths[index]), "t": elapsed}
        return obs, rewards, dones, infos

    def close(self) -> None:
        """Nothing to release (the tensors are freed with the object); drops pending actions."""
        self._pending_actions = None

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        """The attribute of the batch, once per requested index (all copies share one object)."""
        return [getattr(self, attr_name) for _ in self._get_indices(indices)]

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        """Set an attribute of the batch; only for all copies at once (``indices=None``)."""
        self._require_all_indices(indices, "set_attr")
        setattr(self, attr_name, value)

    def env_method(
        self, method_name: str, *method_args: Any, indices: VecEnvIndices = None, **method_kwargs: Any
    ) -> list[Any]:
        """Call a method of the batch once (all copies share it) and return its result per copy."""
        self._require_all_indices(indices, "env_method")
        result = getattr(self, method_name)(*method_args, **method_kwargs)
        return [result] * self.num_envs

    def env_is_wrapped(self, wrapper_class: type[gym.Wrapper], indices: VecEnvIndices = None) -> list[bool]:
        """Always False: the copies are not Gymnasium environments and carry no wrappers."""
        return [False for _ in self._get_indices(indices)]

    def _require_all_indices(self, indices: VecEnvIndices, method: str) -> None:
        if indices is not None and sorted(self._get_indices(indices)) != list(range(self.num_envs)):
            raise ValueError(f"{type(self).__name__}.{method} acts on all copies at once: pass indices=None")

    def _to_numpy_obs(self, obs: torch.Tensor) -> np.ndarray:
        return obs.to(torch.float32).cpu().numpy()

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.gym_id}, num_envs={self.num_envs}, device={self.device}, "
            f"dtype={self.dtype}, max_episode_steps={self.max_episode_steps}"
            + ("" if self.reward_delay is None else f", reward_delay={self.reward_delay.delay!r}")
            + ")"
        )

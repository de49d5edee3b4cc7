"""The delayed-reward tasks of :mod:`envs.delayed` as batched torch environments.

Same tasks, spaces, rewards and terminations as ``bsn/DelayedChain-v0`` and ``bsn/DelayedParity-v0``
(tests/test_envs_torch_delayed.py checks step-by-step agreement), stepped as tensors on any device
so that an agent can train on them without host copies (:class:`~envs.torch_vec_env.TorchVecEnv`).

State of each copy, in this order: ``(step index, correct decisions so far, *context)`` where the
context is what the observation shows (nothing for the chain, whose observation is a function of
the step index; the bits in {0, 1} for parity).
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Any

import numpy as np
import torch
from gymnasium import spaces

from envs.delayed import CHAIN_LENGTH, PARITY_BITS, PARITY_LENGTH, chain_key
from envs.torch_vec_env import TorchVecEnv
from envs.validation import positive_int

__all__ = ["TorchDelayedChain", "TorchDelayedParity", "TorchDelayedRewardEnv"]


class TorchDelayedRewardEnv(TorchVecEnv):
    """Batched base of the delayed-reward tasks: ``length`` binary decisions, accuracy paid at the end.

    The reward is ``0`` at every step but the last, where it is ``(correct decisions) / length``,
    and the episode terminates. Optimal return ``1.0``; uniformly random policy ``0.5``.

    Args:
        num_envs: number of copies (>= 1).
        length: decisions per episode (>= 1).
        context_dim: number of context variables in the state (>= 0).
        options: keyword arguments of :class:`~envs.torch_vec_env.TorchVecEnv` (``device``, ``seed``, ``dtype``,
            ``stats_window``, ``reward_delay``, ``time_feature``, and ``max_episode_steps``, whose default here
            is ``length``: episodes end by themselves).
    """

    def __init__(self, num_envs: int, length: int, context_dim: int, **options: Any) -> None:
        self.length = positive_int("length", length, "decisions per episode")
        self.state_dim = 2 + context_dim
        super().__init__(num_envs, **options)

    def default_max_episode_steps(self) -> int:
        """``length``: the task terminates by itself, so the time limit never cuts an episode."""
        return self.length

    @abstractmethod
    def _observation_space(self) -> spaces.Box:
        """The observation space of one copy (equal to the Gymnasium task's)."""

    @abstractmethod
    def _draw_context(self, num: int) -> torch.Tensor:
        """Fresh context for ``num`` copies, (num, context_dim)."""

    @abstractmethod
    def _targets(self, step: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """The correct action (long, (num_envs,)) at each copy's step index and context."""

    @abstractmethod
    def _observe_context(self, step: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """The observation (num_envs, *obs_shape) at each copy's step index and context."""

    def _make_spaces(self) -> tuple[spaces.Box, spaces.Space]:
        return self._observation_space(), spaces.Discrete(2)

    def _initial_state(self, num: int) -> torch.Tensor:
        counters = torch.zeros(num, 2, device=self.device, dtype=self.dtype)
        return torch.cat([counters, self._draw_context(num)], dim=-1)

    def _transition(
        self, state: torch.Tensor, actions: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        step, correct, context = state[:, 0], state[:, 1], state[:, 2:]
        correct = correct + (actions == self._targets(step, context)).to(state.dtype)
        step = step + 1
        terminated = step >= self.length
        rewards = (correct / self.length).masked_fill(~terminated, 0.0)
        next_context = self._draw_context(state.shape[0])
        return torch.cat([step[:, None], correct[:, None], next_context], dim=-1), rewards, terminated

    def _observe(self, state: torch.Tensor) -> torch.Tensor:
        return self._observe_context(state[:, 0], state[:, 2:])


class TorchDelayedChain(TorchDelayedRewardEnv):
    """Batched ``bsn/DelayedChain-v0`` (see :class:`envs.delayed.DelayedChainEnv`).

    Observation: one-hot code of the step index (all zeros once the episode has terminated); the
    correct action at state ``t`` is ``chain_key(length, key_seed)[t]``.

    Args:
        num_envs: number of copies (>= 1).
        length: states of the chain (>= 1; default 10).
        key_seed: seed of the hidden key of correct actions (default 0, as the Gymnasium task).
        options: as in :class:`TorchDelayedRewardEnv`.
    """

    gym_id = "bsn/DelayedChain-v0"

    def __init__(self, num_envs: int, length: int = CHAIN_LENGTH, key_seed: int = 0, **options: Any) -> None:
        super().__init__(num_envs, length, 0, **options)
        self.key_seed = int(key_seed)
        self.key = torch.as_tensor(chain_key(self.length, self.key_seed), device=self.device)

    def _observation_space(self) -> spaces.Box:
        return spaces.Box(0.0, 1.0, shape=(self.length,), dtype=np.float32)

    def _draw_context(self, num: int) -> torch.Tensor:
        return torch.zeros(num, 0, device=self.device, dtype=self.dtype)

    def _targets(self, step: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        return self.key[step.long().clamp(max=self.length - 1)]

    def _observe_context(self, step: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        states = torch.arange(self.length, device=self.device)
        return (states[None, :] == step.long()[:, None]).to(self.dtype)


class TorchDelayedParity(TorchDelayedRewardEnv):
    """Batched ``bsn/DelayedParity-v0`` (see :class:`envs.delayed.DelayedParityEnv`).

    Observation: the step's bits as spins ``2 b - 1`` in {-1, +1}; the correct action is their
    parity ``sum(b) mod 2``.

    Args:
        num_envs: number of copies (>= 1).
        num_bits: bits shown per step (>= 1; default 3).
        length: decisions per episode (>= 1; default 8).
        options: as in :class:`TorchDelayedRewardEnv`.
    """

    gym_id = "bsn/DelayedParity-v0"

    def __init__(self, num_envs: int, num_bits: int = PARITY_BITS, length: int = PARITY_LENGTH, **options: Any) -> None:
        self.num_bits = positive_int("num_bits", num_bits, "bits shown per step")
        super().__init__(num_envs, length, self.num_bits, **options)

    def _observation_space(self) -> spaces.Box:
        return spaces.Box(-1.0, 1.0, shape=(self.num_bits,), dtype=np.float32)

    def _draw_context(self, num: int) -> torch.Tensor:
        return (self._uniform(0.0, 1.0, (num, self.num_bits)) < 0.5).to(self.dtype)

    def _targets(self, step: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        return context.sum(dim=-1).long() % 2

    def _observe_context(self, step: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        return 2 * context - 1

"""Delayed-reward tasks: every reward of an episode is paid at its last step.

Both tasks ask for ``length`` binary decisions, one per step, each judged against a target the
observation determines. Nothing is paid along the way; at the last step the agent receives the
fraction of its decisions that were correct. A decision made at step ``t`` therefore influences the
reward only ``length - t`` steps later, mixed with the outcome of every other decision of the
episode: the credit-assignment problem that the local estimator of docs/method.md §1 (one
broadcast scalar ``L`` per episode) has to solve.

* :class:`DelayedChainEnv` (``bsn/DelayedChain-v0``): walk a chain of ``length`` states; at each
  state one of the two actions (fixed by a hidden key) is correct.
* :class:`DelayedParityEnv` (``bsn/DelayedParity-v0``): each step shows ``num_bits`` random bits (as ±1);
  the correct action is their parity (XOR), which no policy without hidden units can represent.

Optimal undiscounted return of both: ``1.0``. A uniformly random policy gets ``0.5`` in expectation.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from envs.validation import positive_int

__all__ = [
    "CHAIN_LENGTH",
    "PARITY_BITS",
    "PARITY_LENGTH",
    "DelayedChainEnv",
    "DelayedParityEnv",
    "DelayedRewardEnv",
    "chain_key",
]

#: Default number of states of the delayed chain.
CHAIN_LENGTH = 10
#: Default number of bits shown per step of the delayed parity task.
PARITY_BITS = 3
#: Default number of decisions per episode of the delayed parity task.
PARITY_LENGTH = 8


def chain_key(length: int, key_seed: int) -> np.ndarray:
    """The correct action of each state of a delayed chain.

    Args:
        length: number of states of the chain (>= 1).
        key_seed: seed of the key; chains built with the same ``(length, key_seed)`` share it.

    Returns:
        An ``int64`` array of shape (length,) with values in {0, 1}.
    """
    return np.random.default_rng(key_seed).integers(0, 2, size=length).astype(np.int64)


class DelayedRewardEnv(gym.Env[np.ndarray, np.int64]):
    """Base of the delayed-reward tasks: ``length`` binary decisions, their accuracy paid at the end.

    Each step the agent picks an action in {0, 1}; it is correct when it equals :meth:`_target` of
    the current observation. The reward is ``0`` at every step but the last, where it is
    ``(number of correct decisions) / length``; the episode then terminates (there is no
    truncation). The optimal return is therefore ``1.0`` and a uniformly random policy gets ``0.5``.

    ``info`` carries ``"correct"`` (correct decisions so far) and, at the last step, ``"is_success"``
    (all decisions correct), which SB3 logs as ``rollout/success_rate``.

    Rendering (``render_mode="rgb_array"``, SB3's default): the observation as a strip of
    :attr:`cell_pixels`-wide gray cells (black: the space's lower bound, white: its upper bound),
    above a bar whose width is the fraction of the episode's decisions made so far.

    Args:
        length: number of decisions per episode (>= 1).
        observation_space: the subclass's observation space.
        render_mode: ``None`` or ``"rgb_array"``.
    """

    metadata: dict[str, Any] = {"render_modes": ["rgb_array"], "render_fps": 4}  # noqa: RUF012 (Gymnasium's convention)
    #: Side of one rendered cell, in pixels.
    cell_pixels = 16

    def __init__(self, length: int, observation_space: spaces.Box, render_mode: str | None = None) -> None:
        self.length = positive_int("length", length, "decisions per episode")
        if render_mode not in (None, *self.metadata["render_modes"]):
            raise ValueError(f"render_mode must be None or 'rgb_array', got {render_mode!r}")
        self.observation_space = observation_space
        self.action_space = spaces.Discrete(2)
        self.render_mode = render_mode
        self._step_index = 0
        self._correct = 0

    @abstractmethod
    def _new_context(self) -> None:
        """Prepare the observation of step ``self._step_index`` (may draw from ``self.np_random``)."""

    @abstractmethod
    def _observation(self) -> np.ndarray:
        """The observation of the current step (a fresh float32 array in the observation space)."""

    @abstractmethod
    def _target(self) -> int:
        """The correct action at the current step."""

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        """Start an episode.

        Args:
            seed: seeds ``self.np_random`` (the first call should pass one for reproducibility).
            options: unused; accepted for API compatibility.

        Returns:
            The first observation and an info dict with ``"correct": 0``.
        """
        super().reset(seed=seed)
        self._step_index = 0
        self._correct = 0
        self._new_context()
        return self._observation(), {"correct": 0}

    def step(self, action: int | np.integer) -> tuple[np.ndarray, float, bool, bool, dict]:
        """Record one decision; pay the accuracy of all decisions at the last step.

        Args:
            action: 0 or 1.

        Returns:
            ``(observation, reward, terminated, truncated, info)`` as in Gymnasium.
        """
        if not self.action_space.contains(action):
            raise ValueError(f"action must be 0 or 1 (Discrete(2)), got {action!r}")
        if self._step_index >= self.length:
            raise RuntimeError("the episode has terminated: call reset() before step()")
        self._correct += int(int(action) == self._target())
        self._step_index += 1
        terminated = self._step_index == self.length
        reward = self._correct / self.length if terminated else 0.0
        self._new_context()
        info: dict[str, Any] = {"correct": self._correct}
        if terminated:
            info["is_success"] = self._correct == self.length
        return self._observation(), reward, terminated, False, info

    def render(self) -> np.ndarray | None:
        """An ``(2 * cell_pixels, width, 3)`` uint8 image of the current step (``rgb_array`` mode), else None."""
        if self.render_mode != "rgb_array":
            return None
        low, high = self.observation_space.low, self.observation_space.high
        cells = np.repeat((self._observation() - low) / (high - low), self.cell_pixels)
        width = cells.size
        progress = np.arange(width) < round(width * self._step_index / self.length)
        rows = np.concatenate([np.tile(cells, (self.cell_pixels, 1)), np.tile(progress, (self.cell_pixels, 1))])
        return np.repeat((rows * 255).astype(np.uint8)[:, :, None], 3, axis=2)


class DelayedChainEnv(DelayedRewardEnv):
    """A chain of states, one decision per state, all reward at the end (``bsn/DelayedChain-v0``).

    The agent visits states ``0, 1, ..., length - 1`` in order, one per step, whatever it does.
    The observation is the one-hot code of the current state (all zeros once the episode has
    terminated). At state ``t`` the correct action is ``key[t]``, a fixed bit string drawn from
    ``key_seed`` (:func:`chain_key`); the reset seed does not change it, so the agent can learn it.
    The last step pays the fraction of correct actions, so the decision at state 0 is rewarded
    ``length`` steps later.

    Optimal return: ``1.0`` (take ``key[t]`` at state ``t``). Uniformly random policy: ``0.5``.
    A policy that ignores the observation and always takes action ``b`` gets the fraction of key
    bits equal to ``b``.

    Args:
        length: number of states, i.e. decisions and steps per episode (>= 1; default 10).
        key_seed: seed of the hidden key of correct actions (default 0).
        render_mode: ``None`` or ``"rgb_array"``.
    """

    def __init__(self, length: int = CHAIN_LENGTH, key_seed: int = 0, render_mode: str | None = None) -> None:
        length = positive_int("length", length, "states of the chain")
        super().__init__(length, spaces.Box(0.0, 1.0, shape=(length,), dtype=np.float32), render_mode)
        self.key_seed = int(key_seed)
        self.key = chain_key(self.length, self.key_seed)

    def _new_context(self) -> None:
        """The chain's states follow each other deterministically: nothing to draw."""

    def _observation(self) -> np.ndarray:
        observation = np.zeros(self.length, dtype=np.float32)
        if self._step_index < self.length:
            observation[self._step_index] = 1.0
        return observation

    def _target(self) -> int:
        return int(self.key[self._step_index])


class DelayedParityEnv(DelayedRewardEnv):
    """Contextual parity (XOR) decisions, all reward at the end (``bsn/DelayedParity-v0``).

    Each step shows ``num_bits`` fresh uniformly random bits ``b_i`` in {0, 1}, encoded as spins
    ``x_i = 2 b_i - 1`` in {-1, +1} (float32); the correct action is their parity ``sum(b) mod 2``.
    The last step pays the fraction of correct answers. With the spin encoding the parity is the
    product ``prod(x)`` up to sign and every affine function of the observation is uncorrelated
    with it, so there is no linear "shortcut" for a learner to settle on.

    Why it needs hidden units: for ``num_bits >= 2`` the parity is not a linear-threshold function
    of the bits (the XOR argument: for two bits, any threshold of ``w . x + b`` is wrong on at least
    one of the four inputs), so a policy without a hidden layer cannot reach the optimal return.
    Moreover every strict subset of the bits is statistically independent of the parity, so a
    policy linear in the bits gets no first-order learning signal from them; a BSN network must
    learn hidden units that combine the bits.

    Optimal return: ``1.0`` (answer the parity). Uniformly random policy: ``0.5``.

    Args:
        num_bits: bits shown per step (>= 1; default 3). One bit is a sanity check (no hidden
            units needed).
        length: decisions and steps per episode (>= 1; default 8).
        render_mode: ``None`` or ``"rgb_array"``.
    """

    def __init__(
        self, num_bits: int = PARITY_BITS, length: int = PARITY_LENGTH, render_mode: str | None = None
    ) -> None:
        self.num_bits = positive_int("num_bits", num_bits, "bits shown per step")
        super().__init__(length, spaces.Box(-1.0, 1.0, shape=(self.num_bits,), dtype=np.float32), render_mode)
        self._bits = np.zeros(self.num_bits, dtype=np.int64)

    def _new_context(self) -> None:
        self._bits = self.np_random.integers(0, 2, size=self.num_bits, dtype=np.int64)

    def _observation(self) -> np.ndarray:
        return (2 * self._bits - 1).astype(np.float32)

    def _target(self) -> int:
        return int(self._bits.sum() % 2)

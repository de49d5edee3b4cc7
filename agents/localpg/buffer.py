"""On-device rollout storage for LocalPG: SB3's rollout data plus the packed hidden samples."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch

__all__ = ["HiddenRolloutBuffer", "HiddenRolloutSamples", "RolloutTensors", "TensorObs"]

#: An observation batch: one tensor, or a dict of tensors for ``Dict`` observation spaces.
TensorObs = torch.Tensor | dict[str, torch.Tensor]


class HiddenRolloutSamples(NamedTuple):
    """One minibatch, all tensors on the buffer's device, rows flattened over (step, env).

    Attributes:
        observations: raw observations (preprocessing happens in the policy).
        actions: actions as the policy produced them (flattened per row for multi-dimensional spaces).
        old_values: ``V(s)`` at collection time, shape (batch,).
        old_log_prob: ``log pi(a | h)`` at collection time, shape (batch,).
        hidden: packed ``uint8`` hidden samples, shape (batch, total_units).
        old_unit_log_prob: per-unit log-probabilities of the hidden samples under the parameters
            that collected them, shape (batch, total_units).
        advantages: GAE(lambda) advantages, shape (batch,).
        returns: ``advantages + old_values``, the critic's regression target, shape (batch,).
        old_posterior: per-unit ``P_old(h_i = 1 | Markov blanket)`` for ``LocalPG(rao_blackwell=True)``,
            shape (batch, total_units); ``None`` otherwise.
    """

    observations: TensorObs
    actions: torch.Tensor
    old_values: torch.Tensor
    old_log_prob: torch.Tensor
    hidden: torch.Tensor
    old_unit_log_prob: torch.Tensor
    advantages: torch.Tensor
    returns: torch.Tensor
    old_posterior: torch.Tensor | None = None


def _index(obs: TensorObs, rows: slice) -> TensorObs:
    return {key: value[rows] for key, value in obs.items()} if isinstance(obs, dict) else obs[rows]


def take_rows(tensor: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    """``tensor[order]`` for a 1-D index ``order``, copying whole rows.

    On CPU, ``index_select`` of a ``uint8`` tensor copies each row with one ``memcpy`` while other
    dtypes go element by element (several times slower for large tensors), so
    rows of 2+ dimensional contiguous CPU tensors are gathered as their bytes.
    """
    if tensor.device.type == "cpu" and tensor.dim() >= 2 and tensor.is_contiguous() and tensor.dtype != torch.bool:
        as_bytes = tensor.reshape(len(tensor), -1).view(torch.uint8)
        return as_bytes.index_select(0, order).view(tensor.dtype).reshape(-1, *tensor.shape[1:])
    return tensor.index_select(0, order)


def take_obs_rows(obs: TensorObs, order: torch.Tensor) -> TensorObs:
    """:func:`take_rows` of an observation batch: of each tensor of a ``Dict`` observation, or of the one tensor."""
    if isinstance(obs, dict):
        return {key: take_rows(value, order) for key, value in obs.items()}
    return take_rows(obs, order)


def _flatten(tensor: torch.Tensor) -> torch.Tensor:
    """(steps, envs, *rest) -> (steps * envs, *rest)."""
    return tensor.reshape(-1, *tensor.shape[2:])


@dataclass
class RolloutTensors:
    """The columns SB3's ``RolloutBuffer`` names, as torch tensors of shape (buffer_size, n_envs, ...).

    ``observations`` and ``actions`` are allocated by the first :meth:`HiddenRolloutBuffer.add`
    (``None`` before); ``observations`` is a dict of tensors for ``Dict`` observation spaces.
    """

    rewards: torch.Tensor
    episode_starts: torch.Tensor
    values: torch.Tensor
    log_probs: torch.Tensor
    advantages: torch.Tensor
    returns: torch.Tensor
    observations: TensorObs | None = None
    actions: torch.Tensor | None = None


def _to_numpy(value: TensorObs | None) -> Any:
    """A tensor (or dict of tensors) as NumPy: a view sharing memory on CPU, a copy on other devices."""
    if value is None:
        return None
    if isinstance(value, dict):
        return {key: tensor.detach().cpu().numpy() for key, tensor in value.items()}
    return value.detach().cpu().numpy()


class _NumpyColumn:
    """Read-only attribute: the column of the same name in the buffer's :attr:`~HiddenRolloutBuffer.tensors`,
    as NumPy (:func:`_to_numpy`)."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, buffer: HiddenRolloutBuffer, owner: type | None = None) -> Any:
        return _to_numpy(getattr(buffer.tensors, self.name))


class HiddenRolloutBuffer:
    """Rollout buffer in torch, on any device; stores hidden samples as ``uint8`` (one byte per unit).

    Storage is allocated lazily from the first :meth:`add` (shapes and dtypes of observations and
    actions are taken as they come), so the same buffer serves numpy VecEnvs (tensors made once per
    step) and torch-batched envs (tensors that never leave the device).

    SB3's ``RolloutBuffer`` API for callbacks: ``size()``, ``full``, ``pos``, ``buffer_size``,
    ``n_envs`` and NumPy arrays of shape (buffer_size, n_envs, ...) under SB3's names (``rewards``,
    ``values``, ``returns``, ``advantages``, ``log_probs``, ``episode_starts``, ``observations``,
    ``actions``): views that share memory with the tensors on CPU, copies on other devices. The
    tensors themselves are :attr:`tensors` (:class:`RolloutTensors`).

    Args:
        buffer_size: steps per environment in one rollout (``n_steps``, > 0).
        n_envs: number of parallel environments (> 0).
        total_units: number of hidden units of the policy's BSN network.
        device: where everything is stored.
        gamma: discount factor in [0, 1].
        gae_lambda: GAE's lambda in [0, 1]; 1 gives Monte-Carlo returns (with bootstrap at cut-offs).
    """

    def __init__(
        self,
        buffer_size: int,
        n_envs: int,
        total_units: int,
        device: torch.device | str,
        gamma: float,
        gae_lambda: float,
    ) -> None:
        self.buffer_size = int(buffer_size)
        self.n_envs = int(n_envs)
        self.total_units = int(total_units)
        self.device = torch.device(device)
        self.gamma = float(gamma)
        self.gae_lambda = float(gae_lambda)
        shape = (self.buffer_size, self.n_envs)
        self.tensors = RolloutTensors(*(torch.zeros(shape, device=self.device) for _ in range(6)))
        self.hidden = torch.zeros((*shape, self.total_units), dtype=torch.uint8, device=self.device)
        #: per-unit ``log P_old(h_i)`` of the stored samples, (buffer_size, n_envs, total_units): set by the
        #: algorithm once it has scored the full rollout, cleared by :meth:`reset`.
        self.unit_log_probs: torch.Tensor | None = None
        #: per-unit ``P_old(h_i = 1 | Markov blanket)``, same shape, for ``LocalPG(rao_blackwell=True)``: set
        #: and cleared like ``unit_log_probs``.
        self.posteriors: torch.Tensor | None = None
        self.pos = 0

    @property
    def full(self) -> bool:
        return self.pos == self.buffer_size

    def size(self) -> int:
        """Steps stored per environment (SB3's ``BaseBuffer.size``)."""
        return self.buffer_size if self.full else self.pos

    # SB3's NumPy columns, (buffer_size, n_envs, ...)
    rewards = _NumpyColumn()
    episode_starts = _NumpyColumn()
    values = _NumpyColumn()
    log_probs = _NumpyColumn()
    advantages = _NumpyColumn()
    returns = _NumpyColumn()
    observations = _NumpyColumn()
    actions = _NumpyColumn()

    def reset(self) -> None:
        """Start a new rollout (storage is reused)."""
        self.pos = 0
        self.unit_log_probs = None
        self.posteriors = None

    def _allocate_like(self, obs: TensorObs, actions: torch.Tensor) -> None:
        def empty(like: torch.Tensor) -> torch.Tensor:
            return torch.zeros((self.buffer_size, *like.shape), dtype=like.dtype, device=self.device)

        self.tensors.observations = {k: empty(v) for k, v in obs.items()} if isinstance(obs, dict) else empty(obs)
        self.tensors.actions = empty(actions)

    def add(
        self,
        obs: TensorObs,
        actions: torch.Tensor,
        rewards: torch.Tensor,
        episode_starts: torch.Tensor,
        values: torch.Tensor,
        log_probs: torch.Tensor,
        hidden: torch.Tensor,
    ) -> None:
        """Store one step of every environment (first dimension of every tensor: ``n_envs``).

        Actions of a multi-dimensional space (a ``Box`` of shape (2, 2), say) are stored flattened per
        environment, as the policy's action distribution scores them.
        """
        if actions.dim() > 2:
            actions = actions.reshape(actions.shape[0], -1)
        if self.full:
            raise RuntimeError("rollout buffer is full; call reset() before adding a new rollout")
        columns = self.tensors
        if columns.observations is None or columns.actions is None:
            self._allocate_like(obs, actions)
        assert columns.observations is not None and columns.actions is not None
        if isinstance(obs, dict):
            for key, value in obs.items():
                columns.observations[key][self.pos] = value  # type: ignore[index]
        else:
            columns.observations[self.pos] = obs  # type: ignore[index]
        columns.actions[self.pos] = actions
        columns.rewards[self.pos] = rewards.reshape(-1)
        columns.episode_starts[self.pos] = episode_starts.reshape(-1)
        columns.values[self.pos] = values.reshape(-1)
        columns.log_probs[self.pos] = log_probs.reshape(-1)
        self.hidden[self.pos] = hidden
        self.pos += 1

    @torch.no_grad()
    def compute_returns_and_advantage(self, last_values: torch.Tensor, dones: torch.Tensor) -> None:
        """GAE(lambda) (Schulman et al. 2016), as SB3's ``RolloutBuffer`` computes it, in torch.

        Args:
            last_values: ``V`` of the observation after the last step, shape (n_envs,) or (n_envs, 1).
            dones: whether the last step ended an episode, shape (n_envs,).
        """
        columns = self.tensors
        last_values = last_values.reshape(-1).to(columns.values)
        next_non_terminal = 1.0 - dones.reshape(-1).to(columns.values)
        next_values = last_values
        last_gae = torch.zeros_like(last_values)
        for step in reversed(range(self.buffer_size)):
            if step < self.buffer_size - 1:
                next_non_terminal = 1.0 - columns.episode_starts[step + 1]
                next_values = columns.values[step + 1]
            delta = columns.rewards[step] + self.gamma * next_values * next_non_terminal - columns.values[step]
            last_gae = delta + self.gamma * self.gae_lambda * next_non_terminal * last_gae
            columns.advantages[step] = last_gae
        columns.returns = columns.advantages + columns.values

    def flat_observations(self) -> TensorObs:
        """All observations of the rollout, rows flattened over (step, env)."""
        assert self.tensors.observations is not None
        obs = self.tensors.observations
        return {k: _flatten(v) for k, v in obs.items()} if isinstance(obs, dict) else _flatten(obs)

    def flat_actions(self) -> torch.Tensor:
        """All actions of the rollout, rows flattened over (step, env)."""
        assert self.tensors.actions is not None
        return _flatten(self.tensors.actions)

    def get(self, batch_size: int | None = None) -> Iterator[HiddenRolloutSamples]:
        """Yield shuffled minibatches of ``batch_size`` rows (the whole rollout if ``None``)."""
        assert self.full, "the rollout buffer is not full yet"
        assert self.tensors.actions is not None
        assert self.unit_log_probs is not None, "set unit_log_probs (score the rollout) before reading minibatches"
        total = self.buffer_size * self.n_envs
        batch_size = total if batch_size is None else int(batch_size)
        observations = self.flat_observations()
        stored = self.tensors
        columns = [
            _flatten(stored.actions),
            _flatten(stored.values),
            _flatten(stored.log_probs),
            _flatten(self.hidden),
            _flatten(self.unit_log_probs),
            _flatten(stored.advantages),
            _flatten(stored.returns),
        ]
        if self.posteriors is not None:
            columns.append(_flatten(self.posteriors))
        # Shuffle every column once; the minibatches are then slices (views), not one gather each.
        order = torch.randperm(total, device=self.device)
        observations = take_obs_rows(observations, order)
        columns = [take_rows(column, order) for column in columns]
        for start in range(0, total, batch_size):
            rows = slice(start, start + batch_size)
            yield HiddenRolloutSamples(_index(observations, rows), *(column[rows] for column in columns))

"""LocalPG's rollouts on a torch-batched env (:class:`envs.TorchVecEnv`): every step stays on the device.

:func:`collect_tensor_rollouts` is :meth:`agents.LocalPG.collect_rollouts` for an env with the tensor API
(``step_tensor``, ``final_obs``, ``episodes``) used as it is: no step reads a tensor on the host.
``torch.distributions``' argument checks (one host read each) are off during the rollout, episodes cut
by the time limit are bootstrapped once per rollout (:func:`bootstrap_cut_episodes`), and the only host
copies of a rollout are those of :func:`drain_episodes` (finished-episode statistics for the logger).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from gymnasium import spaces
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.utils import obs_as_tensor
from stable_baselines3.common.vec_env import VecEnv
from torch.distributions import Distribution

from agents.localpg.buffer import HiddenRolloutBuffer
from envs.torch_vec_env import TorchVecEnv

__all__ = ["bootstrap_cut_episodes", "collect_tensor_rollouts", "distribution_checks", "drain_episodes",
           "is_tensor_env"]


def is_tensor_env(env: VecEnv) -> bool:
    """True for a :class:`envs.TorchVecEnv` used as it is.

    ``isinstance`` rather than ``hasattr``: SB3's wrappers (``VecNormalize``, ``VecMonitor``...) forward
    attribute look-ups to the env inside, and a wrapped env must go through the wrapper's numpy API.
    """
    return isinstance(env, TorchVecEnv)


@contextmanager
def distribution_checks(enabled: bool) -> Iterator[None]:
    """Set ``torch.distributions``' default argument validation within the block, then restore it.

    The checks read a tensor on the host at every distribution built (a device synchronisation on
    CUDA). Rollouts and updates turn them off; their distributions are built from finite logits.

    Args:
        enabled: whether distributions built inside the block validate their arguments.
    """
    previous = Distribution._validate_args
    Distribution.set_default_validate_args(enabled)
    try:
        yield
    finally:
        Distribution.set_default_validate_args(previous)


def collect_tensor_rollouts(
    model: Any, env: Any, callback: BaseCallback, rollout_buffer: HiddenRolloutBuffer, n_rollout_steps: int
) -> bool:
    """Fill ``rollout_buffer`` with ``n_rollout_steps`` steps of every env of a torch-batched ``env``.

    Args:
        model: the :class:`~agents.LocalPG` collecting (policy, device, last observation, step count).
        env: a :class:`envs.TorchVecEnv`, not wrapped.
        callback: SB3's callback; returning ``False`` from ``on_step`` stops the rollout.
        rollout_buffer: the buffer to fill (reset first).
        n_rollout_steps: steps per env (> 0).

    Returns:
        ``False`` if the callback stopped training, else ``True``.
    """
    device = model.device
    model.policy.set_training_mode(False)
    rollout_buffer.reset()
    callback.on_rollout_start()
    last_obs = model._last_obs
    obs = (last_obs if isinstance(last_obs, torch.Tensor) else obs_as_tensor(last_obs, device)).to(device)
    episode_starts = torch.as_tensor(model._last_episode_starts, dtype=torch.float32, device=device)
    box = isinstance(model.action_space, spaces.Box)
    if box:
        low = torch.as_tensor(model.action_space.low, device=device)
        high = torch.as_tensor(model.action_space.high, device=device)
    final_obs_steps: list[torch.Tensor] = []  # where each step ended, before automatic resets
    cut_steps: list[torch.Tensor] = []  # episodes cut by the time limit (truncated, not terminated)
    with distribution_checks(False):
        for _ in range(n_rollout_steps):
            with torch.no_grad():
                step = model.policy.act(obs)
                actions = step.actions.clamp(low, high) if box else step.actions
                result = env.step_tensor(actions)
                rewards = result.rewards.to(device, torch.float32)
            final_obs_steps.append(env.final_obs)
            cut_steps.append(result.truncated & ~result.terminated)
            model.num_timesteps += env.num_envs
            callback.update_locals(locals())
            if not callback.on_step():
                return False
            rollout_buffer.add(obs, step.actions, rewards, episode_starts, step.values, step.log_prob, step.hidden)
            obs = result.obs.to(device, obs.dtype)
            episode_starts = (result.terminated | result.truncated).to(device, torch.float32)
    final_obs = torch.stack(final_obs_steps).to(device, obs.dtype)
    cut = torch.stack(cut_steps).to(device)
    # On CPU reading the mask costs nothing; on an accelerator it would wait for the device.
    bootstrap_cut_episodes(model, rollout_buffer, final_obs, cut, select_rows=device.type == "cpu")
    model._last_obs = obs
    model._last_episode_starts = episode_starts
    drain_episodes(model, env)
    with torch.no_grad():
        last_values = model.policy.predict_values(obs)
    rollout_buffer.compute_returns_and_advantage(last_values, episode_starts)
    callback.update_locals(locals())
    callback.on_rollout_end()
    return True


@torch.no_grad()
def bootstrap_cut_episodes(
    model: Any, rollout_buffer: HiddenRolloutBuffer, final_obs: torch.Tensor, cut: torch.Tensor, select_rows: bool
) -> None:
    """Add ``gamma * V(final observation)`` to the stored rewards of episodes cut by the time limit.

    The tensor path's form of SB3's bootstrap of truncated episodes, run once per rollout (the critic
    does not change during a rollout, so the values equal per-step ones).

    Args:
        model: the collecting :class:`~agents.LocalPG` (its critic and ``gamma``).
        rollout_buffer: the full rollout; its ``tensors.rewards`` (n_steps, n_envs) are updated in place.
        final_obs: (n_steps, n_envs, *obs_shape) observations where each step ended, before resets.
        cut: (n_steps, n_envs) bool, the episode was truncated and not terminated at that step.
        select_rows: score only the cut rows (reads the mask on the host: for CPU tensors), or
            score every row and let the mask select (no host read: for accelerators).
    """
    rows = final_obs.reshape(-1, *final_obs.shape[2:])
    rewards = rollout_buffer.tensors.rewards.view(-1)
    values = model.policy.predict_values
    if select_rows:
        index = cut.reshape(-1).nonzero().squeeze(-1)
        if len(index):
            rewards.index_add_(0, index, model.gamma * values(rows[index]).reshape(-1))
        return
    rewards.add_(model.gamma * values(rows).reshape(-1) * cut.reshape(-1).to(rewards.dtype))


def drain_episodes(model: Any, env: Any) -> None:
    """Copy the episodes finished since the last call from the env's tracker into ``model.ep_info_buffer``.

    One host copy per rollout. If more episodes ended than the tracker's window holds, only the
    window's (most recent) ones are seen, which is all ``rollout/ep_rew_mean`` averages anyway.

    Args:
        model: the collecting :class:`~agents.LocalPG`.
        env: the :class:`envs.TorchVecEnv` it collects from.
    """
    tracker = env.episodes
    finished = int(tracker.finished)
    new = min(finished - getattr(model, "_episodes_seen", 0), tracker.window)
    model._episodes_seen = finished
    if new <= 0:
        return
    slots = [(finished - k) % tracker.window for k in range(new, 0, -1)]
    returns = tracker.window_returns[slots].tolist()
    lengths = tracker.window_lengths[slots].tolist()
    for episode_return, length in zip(returns, lengths, strict=True):
        model.ep_info_buffer.append({"r": episode_return, "l": length})

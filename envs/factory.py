"""Factories: Gymnasium environments, SB3 vec envs and batched torch vec envs from an environment id.

:func:`make_vec_env` is the one vec-env factory of the project: the training driver
(:func:`bsn_zoo.run.make_env`) and the benchmarks build their environments with it.

Unknown ids fail with a one-line :class:`UnknownEnvironmentError` that names the closest known ids.
Our own tasks (``bsn/...``) are registered with Gymnasium when :mod:`envs` is imported.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable, Iterable
from typing import Any

import gymnasium as gym
import torch
from stable_baselines3.common.env_util import make_vec_env as sb3_make_vec_env
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv, VecNormalize

from envs.classic_control import TorchAcrobot, TorchCartPole, TorchMountainCar, TorchPendulum
from envs.reward_delay import RewardDelay, RewardDelaySpec, TimeFeature, delay_period
from envs.torch_delayed import TorchDelayedChain, TorchDelayedParity
from envs.torch_vec_env import TorchVecEnv

__all__ = [
    "BACKENDS",
    "TORCH_ENVS",
    "UnknownEnvironmentError",
    "check_env_id",
    "make_env",
    "make_torch_vec_env",
    "make_vec_env",
]

#: Gymnasium ids with a batched torch implementation, and its class.
TORCH_ENVS: dict[str, type[TorchVecEnv]] = {
    "CartPole-v1": TorchCartPole,
    "Acrobot-v1": TorchAcrobot,
    "MountainCar-v0": TorchMountainCar,
    "Pendulum-v1": TorchPendulum,
    "bsn/DelayedChain-v0": TorchDelayedChain,
    "bsn/DelayedParity-v0": TorchDelayedParity,
}

#: Values of ``make_vec_env(backend=...)``.
BACKENDS = ("gymnasium", "torch")


class UnknownEnvironmentError(ValueError):
    """An environment id that is not registered (or has no implementation for the requested backend)."""


def check_env_id(env_id: str, known: Iterable[str] | None = None, what: str = "Gymnasium environment") -> None:
    """Raise :class:`UnknownEnvironmentError`, naming close matches, if ``env_id`` is not in ``known``.

    Args:
        env_id: the id to look up, e.g. ``"CartPole-v1"`` or ``"bsn/DelayedChain-v0"``.
        known: the valid ids; ``None`` means every id registered with Gymnasium.
        what: what the ids name, for the message.
    """
    candidates = list(gym.registry.keys() if known is None else known)
    if env_id in candidates:
        return
    matches = difflib.get_close_matches(env_id, candidates, n=3, cutoff=0.6)
    hint = (
        f"did you mean {', '.join(repr(m) for m in matches)}?"
        if matches
        else f"known: {', '.join(sorted(candidates)[:20])}"
    )
    if known is None:
        hint += " (our bsn/ tasks are registered by `import envs`)"
    raise UnknownEnvironmentError(f"unknown {what} {env_id!r}: {hint}")


def make_env(env_id: str, **env_kwargs: Any) -> gym.Env:
    """``gymnasium.make(env_id, **env_kwargs)`` with a clear error for unknown ids.

    Args:
        env_id: any registered Gymnasium id, including ours (``bsn/DelayedChain-v0``, ...).
        env_kwargs: keyword arguments of the environment's constructor (e.g. ``length=20``).
    """
    check_env_id(env_id)
    return gym.make(env_id, **env_kwargs)


def make_torch_vec_env(
    env_id: str,
    num_envs: int,
    device: str | torch.device = "cpu",
    seed: int | None = None,
    dtype: torch.dtype = torch.float32,
    max_episode_steps: int | None = None,
    env_kwargs: dict[str, Any] | None = None,
    reward_delay: RewardDelaySpec | None = None,
    time_feature: bool = False,
) -> TorchVecEnv:
    """A batched torch environment for a Gymnasium id (see :data:`TORCH_ENVS`).

    Args:
        env_id: a key of :data:`TORCH_ENVS`, e.g. ``"CartPole-v1"``.
        num_envs: number of copies stepped together (>= 1).
        device: ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"auto"``.
        seed: seed of the env's generator (``None``: from the OS).
        dtype: ``torch.float32`` or ``torch.float64``.
        max_episode_steps: time limit (>= 1); ``None`` takes that of ``env_id``'s registration
            (for our tasks, which end by themselves, their episode length).
        env_kwargs: task arguments of the environment's constructor (e.g. ``{"length": 20}`` for
            ``bsn/DelayedChain-v0``; the classic-control tasks take none).
        reward_delay: ``None`` (the task's reward), an integer ``k >= 1`` or ``"episode"``
            (:mod:`envs.reward_delay`).
        time_feature: append the remaining fraction of the time limit to the observations.
    """
    check_env_id(env_id, TORCH_ENVS, "environment id for the torch backend")
    if max_episode_steps is None:
        max_episode_steps = gym.spec(env_id).max_episode_steps
    env_class = TORCH_ENVS[env_id]
    return env_class(
        num_envs,
        device=device,
        seed=seed,
        dtype=dtype,
        max_episode_steps=max_episode_steps,
        reward_delay=reward_delay,
        time_feature=time_feature,
        **(env_kwargs or {}),
    )


def make_vec_env(
    env_id: str,
    n_envs: int = 1,
    seed: int | None = None,
    backend: str = "gymnasium",
    device: str | torch.device = "cpu",
    env_kwargs: dict[str, Any] | None = None,
    vec_env_cls: type[VecEnv] | None = None,
    monitor_dir: str | None = None,
    monitor_kwargs: dict[str, Any] | None = None,
    wrapper_class: Callable[[gym.Env], gym.Env] | None = None,
    normalize: bool = False,
    gamma: float = 0.99,
    reward_delay: RewardDelaySpec | None = None,
    time_feature: bool = False,
) -> VecEnv:
    """An SB3 ``VecEnv`` of ``n_envs`` copies of ``env_id``: the project's one vec-env factory.

    Args:
        env_id: a registered Gymnasium id, or ``module:Id`` (``module`` is imported first, which
            registers ``Id``) (``backend="gymnasium"``); a key of :data:`TORCH_ENVS` (``backend="torch"``).
        n_envs: number of parallel copies (>= 1).
        seed: seed of the copies (SB3 convention: copy ``i`` gets ``seed + i``; the torch backend
            seeds its single generator with ``seed``).
        backend: ``"gymnasium"``: Gymnasium envs wrapped in SB3's ``Monitor`` inside ``vec_env_cls``
            (default ``DummyVecEnv``); ``"torch"``: one :class:`~envs.torch_vec_env.TorchVecEnv`.
        device: device of the torch backend (ignored by the gymnasium backend).
        env_kwargs: constructor keyword arguments of the environment (e.g. ``render_mode``).
        vec_env_cls: SB3 vec env class of the gymnasium backend (``DummyVecEnv`` or ``SubprocVecEnv``).
        monitor_dir: where ``Monitor`` writes its CSV files (gymnasium backend only; ``None``: nowhere).
        monitor_kwargs: keyword arguments of ``Monitor`` (gymnasium backend only; e.g.
            ``{"override_existing": False}`` appends to existing CSV files).
        wrapper_class: ``env -> wrapped env``, applied to each copy outside its ``Monitor`` (gymnasium
            backend only), e.g. a validated RL Zoo ``env_wrapper`` list.
        normalize: wrap the result in SB3's ``VecNormalize`` (observations and rewards, RL Zoo's
            ``normalize: true``).
        gamma: discount of ``VecNormalize``'s reward normalisation (used only with ``normalize``).
        reward_delay: ``None`` (the task's reward), an integer ``k >= 1`` (the accumulated reward paid every
            ``k`` steps and at the episode's end) or ``"episode"`` (the return paid at the episode's end):
            :class:`~envs.reward_delay.RewardDelay` outside each copy's ``Monitor`` and ``wrapper_class``
            (so ``info["episode"]`` keeps the true return), or the torch env's own ``reward_delay``.
        time_feature: append the remaining fraction of the time limit to the observations
            (:class:`~envs.reward_delay.TimeFeature` after ``wrapper_class``, or the torch env's own ``time_feature``).
    """
    if backend not in BACKENDS:
        check_env_id(backend, BACKENDS, "backend")
    if backend == "torch":
        gymnasium_only = {
            "vec_env_cls": vec_env_cls,
            "monitor_dir": monitor_dir,
            "monitor_kwargs": monitor_kwargs,
            "wrapper_class": wrapper_class,
        }
        given = [name for name, value in gymnasium_only.items() if value is not None]
        if given:
            raise ValueError(f"{' and '.join(given)} apply to backend='gymnasium' only")
        venv: VecEnv = make_torch_vec_env(
            env_id,
            n_envs,
            device=device,
            seed=seed,
            env_kwargs=env_kwargs,
            reward_delay=reward_delay,
            time_feature=time_feature,
        )
    else:
        module, sep, name = env_id.rpartition(":")
        if sep:
            importlib.import_module(module)
        check_env_id(name)
        if reward_delay is not None:
            delay_period(reward_delay)  # a bad value fails here, before any env is built
        if reward_delay is not None or time_feature:
            wrapper_class = _then(wrapper_class, reward_delay, time_feature)
        venv = sb3_make_vec_env(
            env_id,
            n_envs=n_envs,
            seed=seed,
            env_kwargs=env_kwargs,
            vec_env_cls=vec_env_cls or DummyVecEnv,
            monitor_dir=monitor_dir,
            monitor_kwargs=monitor_kwargs,
            wrapper_class=wrapper_class,
        )
    return VecNormalize(venv, gamma=gamma) if normalize else venv


def _then(
    wrapper_class: Callable[[gym.Env], gym.Env] | None, reward_delay: RewardDelaySpec | None, time_feature: bool
) -> Callable[[gym.Env], gym.Env]:
    """``wrapper_class`` (if any), then :class:`~envs.reward_delay.TimeFeature` (if ``time_feature``), then
    :class:`~envs.reward_delay.RewardDelay` (if ``reward_delay``) outermost."""

    def wrap(env: gym.Env) -> gym.Env:
        env = wrapper_class(env) if wrapper_class else env
        env = TimeFeature(env) if time_feature else env
        return RewardDelay(env, reward_delay) if reward_delay is not None else env

    return wrap

"""Shared pieces of the benchmarks: the steps-to-threshold callback and one timed training run.

A run's *training curve* is the mean return of the last ``window`` finished training episodes
(SB3's ``rollout/ep_rew_mean`` with a window of 20), recorded each time an episode ends; its
*steps to threshold* is the first environment step at which that curve reaches the threshold.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import yaml
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.vec_env import VecEnv, VecNormalize
from torch import nn

from bsn_zoo.config import RUN_DEFAULTS, resolve_schedules

__all__ = ["RunResult", "ThresholdCallback", "benchmark_settings", "evaluate", "load_tuned", "train_until"]


class ThresholdCallback(BaseCallback):
    """Tracks the ``window``-episode training mean and stops training by a budget rule.

    Training stops as soon as the threshold has been reached *and* at least ``min_steps`` steps have
    been taken, or at ``max_steps`` (the ``learn`` budget), whichever comes first.

    Finished episodes come from the step's ``infos`` (SB3 VecEnvs, ``Monitor``). A torch-batched env
    stepped by LocalPG's tensor path has no per-step ``infos``: its episodes are read from the model's
    ``ep_info_buffer`` at the end of each rollout, so the threshold is then checked once per rollout
    (``solved_at`` is the step count at that rollout's end).

    Args:
        threshold: the training-mean return that counts as solved.
        window: number of most recent finished episodes averaged (> 0; the benchmarks use 20).
        min_steps: steps to train at least, even once solved (>= 0).
    """

    def __init__(self, threshold: float, window: int = 20, min_steps: int = 0) -> None:
        super().__init__()
        if window <= 0:
            raise ValueError(f"window must be > 0, got {window}")
        self.threshold = float(threshold)
        self.window = int(window)
        self.min_steps = int(min_steps)
        self.recent: deque[float] = deque(maxlen=self.window)
        self.curve: list[tuple[int, float]] = []
        self.solved_at: int | None = None
        self._last_buffered: dict | None = None  # newest ep_info_buffer entry already counted (tensor path)

    def _record(self, episode_return: float) -> None:
        self.recent.append(episode_return)
        mean = float(np.mean(self.recent))
        self.curve.append((self.num_timesteps, mean))
        if self.solved_at is None and len(self.recent) == self.window and mean >= self.threshold:
            self.solved_at = self.num_timesteps

    def _on_step(self) -> bool:
        for info in self.locals.get("infos", []):
            episode = info.get("episode")
            if episode is not None:
                self._record(float(episode["r"]))
        return not (self.solved_at is not None and self.num_timesteps >= self.min_steps)

    def _on_rollout_end(self) -> None:
        if "infos" in self.locals:  # episodes were counted step by step
            return
        buffered = list(self.model.ep_info_buffer or [])
        # The entries after the newest one already counted (all of them if it has left the buffer).
        start = next((i + 1 for i in range(len(buffered) - 1, -1, -1) if buffered[i] is self._last_buffered), 0)
        for episode in buffered[start:]:
            self._record(float(episode["r"]))
        if buffered:
            self._last_buffered = buffered[-1]


@dataclass
class RunResult:
    """Outcome of one training run.

    Attributes:
        steps_to_threshold: first step at which the training mean reached the threshold (None: never).
        steps: environment steps taken.
        seconds: wall-clock seconds of ``learn``.
        eval_mean: mean return of the final deterministic evaluation.
        curve: (step, training mean) pairs, one per finished episode.
    """

    steps_to_threshold: int | None
    steps: int
    seconds: float
    eval_mean: float
    curve: list[tuple[int, float]] = field(default_factory=list)


def evaluate(model: BaseAlgorithm, eval_env: VecEnv, n_episodes: int) -> float:
    """Mean return of ``n_episodes`` deterministic episodes (observation statistics frozen if normalised)."""
    train_env = model.get_env()
    if isinstance(train_env, VecNormalize) and isinstance(eval_env, VecNormalize):
        eval_env.obs_rms = train_env.obs_rms
        eval_env.training = False
        eval_env.norm_reward = False
    mean, _std = evaluate_policy(model, eval_env, n_eval_episodes=n_episodes, deterministic=True)
    return float(mean)


def train_until(
    make_model: Callable[[], BaseAlgorithm],
    make_eval_env: Callable[[], VecEnv],
    threshold: float,
    max_steps: int,
    min_steps: int,
    eval_episodes: int,
    window: int = 20,
) -> RunResult:
    """Build a model, train it under the :class:`ThresholdCallback` budget rule, then evaluate it.

    Args:
        make_model: builds the (seeded) model with its training env.
        make_eval_env: builds the evaluation env.
        threshold: solved threshold of the ``window``-episode training mean.
        max_steps: training budget in environment steps (> 0).
        min_steps: train at least this many steps once solved (<= max_steps).
        eval_episodes: deterministic evaluation episodes after training (> 0).
        window: episodes in the training mean.
    """
    model = make_model()
    callback = ThresholdCallback(threshold, window, min_steps)
    start = time.perf_counter()
    model.learn(total_timesteps=max_steps, callback=callback)
    seconds = time.perf_counter() - start
    eval_mean = evaluate(model, make_eval_env(), eval_episodes)
    return RunResult(callback.solved_at, int(model.num_timesteps), seconds, eval_mean, callback.curve)


def load_tuned(path: str, env_id: str) -> dict[str, Any]:
    """One environment's entry of an RL-Zoo-style hyperparameter YAML (e.g. ``hyperparams/localpg.yml``).

    ``policy_kwargs`` may be a string ``"dict(...)"`` as in RL Zoo; it is evaluated with only ``dict``
    and ``nn`` (``torch.nn``) in scope. ``learning_rate`` and ``clip_range`` may be RL Zoo's
    ``lin_<start>`` (linear decay from ``start`` to 0 over the ``learn`` call), returned as a schedule.

    Raises:
        KeyError: if the file has no entry for ``env_id`` (the message lists the entries).
        bsn_zoo.cli_errors.UserInputError: for a ``lin_`` value whose start is not a positive number.
    """
    with open(path) as handle:
        table = yaml.safe_load(handle)
    if env_id not in table:
        raise KeyError(f"{path} has no entry for {env_id!r}; it has: {', '.join(table)}")
    entry = dict(table[env_id])
    if isinstance(entry.get("policy_kwargs"), str):
        entry["policy_kwargs"] = eval(entry["policy_kwargs"], {"__builtins__": {}, "dict": dict, "nn": nn})
    return resolve_schedules(entry)


#: the run settings of a ``hyperparams/localpg.yml`` entry that the benchmarks use; they build their own
#: envs, budgets and evaluations, so :func:`benchmark_settings` drops ``train.py``'s other run settings.
BENCHMARK_RUN_SETTINGS = ("n_envs", "normalize")


def benchmark_settings(entry: dict[str, Any]) -> dict[str, Any]:
    """An entry's algorithm arguments plus :data:`BENCHMARK_RUN_SETTINGS`: the other run settings of
    ``train.py`` (:data:`bsn_zoo.config.RUN_DEFAULTS`: ``n_timesteps``, ``policy``, ``eval_freq``,
    ``deterministic_eval``, ...) are not LocalPG arguments and are left out."""
    return {key: value for key, value in entry.items() if key not in RUN_DEFAULTS or key in BENCHMARK_RUN_SETTINGS}

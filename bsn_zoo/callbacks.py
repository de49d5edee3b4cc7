"""SB3 callbacks of the training driver: checkpoints, stop signals, divergence checks, TensorBoard extras."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Any

import numpy as np
import torch
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.logger import HParam
from stable_baselines3.common.vec_env import VecNormalize

from bsn_zoo.checkpoint import check_finite_parameters, save_model

__all__ = [
    "CheckpointCallback",
    "FiniteParametersCallback",
    "FiringHistogramCallback",
    "HParamCallback",
    "SaveModelCallback",
    "StopOnRequestCallback",
    "StopRequest",
    "catch_stop_signals",
    "rollout_observations",
]

#: loggers that cannot show histograms or hyperparameters (only TensorBoard gets them).
TENSORBOARD_ONLY = ("stdout", "log", "json", "csv")


class SaveModelCallback(BaseCallback):
    """Save the model atomically to a fixed path each time it is called (e.g. on a new best evaluation).

    Args:
        path: the ``.zip`` destination.
        vec_normalize: the training ``VecNormalize`` whose statistics are saved beside the model, or ``None``.
    """

    def __init__(self, path: Path, vec_normalize: VecNormalize | None = None) -> None:
        super().__init__()
        self.path = Path(path)
        self.vec_normalize = vec_normalize

    def _on_step(self) -> bool:
        save_model(self.model, self.path, self.vec_normalize)
        return True


class CheckpointCallback(BaseCallback):
    """Save an atomic checkpoint each time the step count crosses a multiple of ``save_freq``.

    Args:
        save_freq: period in environment steps summed over the parallel environments (> 0).
        path_for: maps the current step count to the checkpoint's path.
        vec_normalize: the training ``VecNormalize`` whose statistics are saved beside each checkpoint.
    """

    def __init__(self, save_freq: int, path_for: Callable[[int], Path], vec_normalize: VecNormalize | None) -> None:
        super().__init__()
        if save_freq <= 0:
            raise ValueError(f"save_freq must be positive, got {save_freq}")
        self.save_freq = save_freq
        self.path_for = path_for
        self.vec_normalize = vec_normalize
        self.next_save = 0

    def _on_training_start(self) -> None:
        self.next_save = (self.num_timesteps // self.save_freq + 1) * self.save_freq

    def _on_step(self) -> bool:
        if self.num_timesteps >= self.next_save:
            save_model(self.model, self.path_for(self.num_timesteps), self.vec_normalize)
            self.next_save = (self.num_timesteps // self.save_freq + 1) * self.save_freq
        return True


class StopRequest:
    """A flag that signal handlers set to ask training to stop at the next environment step.

    Attributes:
        signal_name: the name of the signal that asked (``"SIGINT"``, ``"SIGTERM"``), or ``None``.
    """

    def __init__(self) -> None:
        self.signal_name: str | None = None

    @property
    def requested(self) -> bool:
        """True once a stop was asked for."""
        return self.signal_name is not None


@contextmanager
def catch_stop_signals(request: StopRequest) -> Iterator[StopRequest]:
    """While active, SIGINT and SIGTERM set ``request`` instead of killing the process.

    A second SIGINT raises ``KeyboardInterrupt`` at once (the user insists). Outside the main thread
    signals cannot be caught, and the context does nothing. The previous handlers are restored on exit.

    Args:
        request: the flag the handlers set (with the signal's name); also what the context yields.
    """
    if threading.current_thread() is not threading.main_thread():
        yield request
        return

    def handle(signum: int, frame: FrameType | None) -> None:
        if request.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        request.signal_name = signal.Signals(signum).name

    previous = {sig: signal.signal(sig, handle) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield request
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


class StopOnRequestCallback(BaseCallback):
    """Stop training at the next environment step once ``request`` is set (by a signal handler).

    Args:
        request: the flag to watch.
    """

    def __init__(self, request: StopRequest) -> None:
        super().__init__()
        self.request = request

    def _on_step(self) -> bool:
        return not self.request.requested


class FiniteParametersCallback(BaseCallback):
    """Stop with :class:`~bsn_zoo.cli_errors.DivergenceError` if an update made a weight non-finite.

    Checked at the start of every rollout, i.e. after every policy update, before the next one acts.
    """

    def _on_rollout_start(self) -> None:
        check_finite_parameters(self.model)

    def _on_step(self) -> bool:
        return True


class HParamCallback(BaseCallback):
    """Log the run's hyperparameters to TensorBoard's HPARAMS tab when training starts.

    Args:
        hparams: name to value. Floats are logged as numbers; every other value (integers, booleans,
            lists, mappings, ``None``) as its text, so TensorBoard shows ``64`` and ``True`` rather than
            ``64.000`` and ``1.000`` (its HParams plugin stores every number as a float).
        metrics: the TensorBoard scalars shown next to them (keys logged during training).
    """

    def __init__(self, hparams: Mapping[str, Any], metrics: tuple[str, ...] = ("rollout/ep_rew_mean",
                                                                               "eval/mean_reward")) -> None:
        super().__init__()
        self.hparams = {key: value if isinstance(value, (float, str)) else str(value) for key, value in hparams.items()}
        self.metrics = metrics

    def _on_training_start(self) -> None:
        self.logger.record("hparams", HParam(self.hparams, dict.fromkeys(self.metrics, 0.0)),
                           exclude=TENSORBOARD_ONLY)

    def _on_step(self) -> bool:
        return True


def rollout_observations(model: Any, max_samples: int) -> Any:
    """Up to ``max_samples`` observations of the model's last rollout, as tensors on its device.

    Works with SB3's rollout buffers (NumPy, possibly dict observations) and LocalPG's tensor buffer
    (``flat_observations()``); rows are taken at evenly spaced positions.
    """
    buffer = model.rollout_buffer
    if hasattr(buffer, "flat_observations"):
        observations = buffer.flat_observations()
    elif isinstance(buffer.observations, dict):
        observations = {key: value.reshape(-1, *buffer.obs_shape[key]) for key, value in buffer.observations.items()}
    else:
        observations = buffer.observations.reshape(-1, *buffer.obs_shape)
    first = next(iter(observations.values())) if isinstance(observations, dict) else observations
    rows = np.linspace(0, len(first) - 1, min(max_samples, len(first))).astype(int)
    if isinstance(observations, dict):
        picked = {key: value[rows] for key, value in observations.items()}
    else:
        picked = observations[rows]
    if isinstance(first, torch.Tensor):
        return picked
    return model.policy.obs_to_tensor(picked)[0]


class FiringHistogramCallback(BaseCallback):
    """Log histograms of the BSN units' firing probabilities on the last rollout, one per layer.

    Keys ``bsn/firing_prob_layer<l>``, TensorBoard only. After each rollout, ``firing_probs(model,
    observations)`` runs on up to ``max_samples`` of the rollout's observations.

    Args:
        firing_probs: returns one (batch, units_l) tensor of firing probabilities per layer.
        max_samples: number of rollout observations used (> 0).
    """

    def __init__(self, firing_probs: Callable[[Any, Any], list[torch.Tensor]], max_samples: int = 1024) -> None:
        super().__init__()
        if max_samples <= 0:
            raise ValueError(f"max_samples must be positive, got {max_samples}")
        self.firing_probs = firing_probs
        self.max_samples = max_samples

    def _on_rollout_end(self) -> None:
        with torch.no_grad():
            layers = self.firing_probs(self.model, rollout_observations(self.model, self.max_samples))
        for index, probs in enumerate(layers):
            self.logger.record(f"bsn/firing_prob_layer{index}", probs.detach().cpu().flatten(),
                               exclude=TENSORBOARD_ONLY)

    def _on_step(self) -> bool:
        return True

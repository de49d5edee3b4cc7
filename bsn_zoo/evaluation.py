"""Evaluating saved models, recording episodes as GIFs, and reading runs' learning curves (plotted by
:mod:`bsn_zoo.plotting`)."""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.vec_env import VecEnv

from bsn_zoo.cli_errors import UserInputError
from bsn_zoo.plotting import Curve
from policies import BinaryStochasticPolicy

__all__ = [
    "EpisodeStats",
    "load_monitor_curve",
    "load_tensorboard_scalars",
    "render_error",
    "run_episodes",
    "save_gif",
    "set_deterministic_units",
]



@dataclass
class EpisodeStats:
    """Returns and lengths of evaluation episodes.

    Attributes:
        returns: undiscounted return of each episode (from the Monitor wrapper, so not normalised).
        lengths: number of steps of each episode.
        deterministic: whether units and actions took their noise-free values.
    """

    returns: list[float] = field(default_factory=list)
    lengths: list[int] = field(default_factory=list)
    deterministic: bool = True

    def summary(self) -> dict[str, float | int | bool | list]:
        """Mean and standard deviation of returns and lengths, with the raw lists (JSON-serialisable)."""
        return {
            "episodes": len(self.returns),
            "deterministic": self.deterministic,
            "mean_return": float(np.mean(self.returns)),
            "std_return": float(np.std(self.returns)),
            "mean_length": float(np.mean(self.lengths)),
            "std_length": float(np.std(self.lengths)),
            **asdict(self),
        }


def set_deterministic_units(model: BaseAlgorithm, units: str | None) -> str | None:
    """Make ``model``'s BSN units output ``units`` in deterministic mode (a name of
    :data:`policies.DETERMINISTIC_UNITS`; ``None`` keeps the policy's own) and return the readout now in force,
    ``None`` for a policy without BSN units.

    Raises:
        UserInputError: ``units`` given for a policy that has no BSN units.
    """
    policy = model.policy
    if not isinstance(policy, BinaryStochasticPolicy):
        if units is not None:
            raise UserInputError(f"--deterministic-units applies to BSN policies; this model's policy is "
                                 f"{type(policy).__name__}: drop --deterministic-units")
        return None
    if units is not None:
        policy.deterministic_units = units
    return policy.deterministic_units


def render_error(error: BaseException) -> UserInputError:
    """The one-line error for an environment that cannot render off-screen, naming the fixes."""
    message = " ".join(str(error).split())[:200]
    return UserInputError(
        f"cannot render the environment to record videos ({type(error).__name__}: {message}); without a "
        "display, MuJoCo needs MUJOCO_GL=egl (libEGL) or MUJOCO_GL=osmesa (OSMesa); or drop --video-folder"
    )


def _frame(venv: VecEnv) -> np.ndarray:
    """The first environment's current RGB frame; a renderer that cannot start is a one-line error."""
    try:
        return venv.get_images()[0]
    except Exception as error:  # whatever the env's renderer raises (OpenGL, SDL...), before any episode is played
        raise render_error(error) from None


def run_episodes(
    model: BaseAlgorithm, venv: VecEnv, n_episodes: int, deterministic: bool = True, record: int = 0
) -> tuple[EpisodeStats, list[list[np.ndarray]]]:
    """Play ``n_episodes`` episodes of ``model`` in the first environment of ``venv``.

    Args:
        model: the trained agent.
        venv: a vectorised environment with one copy, wrapped in ``Monitor`` (``train.make_env``
            does); built with ``render_mode="rgb_array"`` if ``record > 0``.
        n_episodes: number of episodes (> 0).
        deterministic: noise-free units and actions (``predict(deterministic=True)``) or sampled ones.
        record: number of first episodes whose frames are returned (0 for none).

    Returns:
        The episode statistics, and the RGB frames (H, W, 3) of each recorded episode.

    Raises:
        UserInputError: if ``record > 0`` and the environment cannot render.
    """
    if n_episodes <= 0:
        raise ValueError(f"n_episodes must be positive, got {n_episodes}")
    stats = EpisodeStats(deterministic=deterministic)
    videos: list[list[np.ndarray]] = []
    frames: list[np.ndarray] = []
    observations = venv.reset()
    while len(stats.returns) < n_episodes:
        recording = len(stats.returns) < record
        if recording:
            frames.append(_frame(venv))
        actions, _ = model.predict(observations, deterministic=deterministic)
        observations, _, dones, infos = venv.step(actions)
        if dones[0]:
            episode = infos[0]["episode"]
            stats.returns.append(float(episode["r"]))
            stats.lengths.append(int(episode["l"]))
            if recording:
                videos.append(frames)
                frames = []
    return stats, videos


def save_gif(frames: list[np.ndarray], path: Path, fps: float = 30.0) -> Path:
    """Write RGB frames as an animated GIF (Pillow; no video codec needed).

    Args:
        frames: (H, W, 3) uint8 images, at least one.
        path: the ``.gif`` destination (its folder is created).
        fps: frames per second (> 0).
    """
    from PIL import Image

    if not frames:
        raise ValueError("no frames to save")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    images = [Image.fromarray(np.asarray(frame, dtype=np.uint8)) for frame in frames]
    images[0].save(path, save_all=True, append_images=images[1:], duration=max(int(1000 / fps), 1), loop=0)
    return path


def load_monitor_curve(monitor_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """Training episodes of a run from its Monitor CSV files, in the order they ended in wall-clock time.

    A continued run's rows are timed from the run's start (:func:`bsn_zoo.run.continue_monitor_clocks`),
    so every segment's episodes come after the previous segment's.

    Args:
        monitor_dir: folder with ``*.monitor.csv`` files (one per training environment).

    Returns:
        ``(steps, returns)``: the total environment steps (all copies) when each episode ended, and
        its return. Empty arrays if no episode has finished.
    """
    rows: list[tuple[float, float, int]] = []
    for path in sorted(Path(monitor_dir).glob("*.monitor.csv")):
        with open(path, newline="") as handle:
            header, *lines = handle.readlines()
        start = float(json.loads(header[1:])["t_start"]) if header.startswith("#") else 0.0
        # wall-clock end of each episode: the file's start plus the row's time (each file has its own start)
        table = csv.DictReader(line for line in lines if not line.startswith("#"))
        rows.extend((start + float(row["t"]), float(row["r"]), int(row["l"])) for row in table)
    rows.sort()
    if not rows:
        return np.zeros(0), np.zeros(0)
    lengths = np.array([row[2] for row in rows])
    return np.cumsum(lengths), np.array([row[1] for row in rows])


def load_tensorboard_scalars(event_dirs: Sequence[Path], keys: list[str]) -> dict[str, Curve]:
    """Scalars of a run's TensorBoard event folders (its training segments), joined and sorted by step.

    Args:
        event_dirs: folders holding ``events.out.tfevents.*`` files (:func:`bsn_zoo.run.tensorboard_segments`).
        keys: the scalar tags wanted (e.g. ``rollout/ep_rew_mean``, ``bsn/layer0/firing_rate``).

    Returns:
        Tag to ``(steps, values)`` sorted by step, for the wanted tags that the folders have.
    """
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    points: dict[str, list[tuple[int, float]]] = {}
    for event_dir in event_dirs:
        accumulator = EventAccumulator(str(event_dir), size_guidance={"scalars": 0})
        accumulator.Reload()
        available = set(accumulator.Tags()["scalars"])
        for key in keys:
            if key in available:
                points.setdefault(key, []).extend((event.step, event.value) for event in accumulator.Scalars(key))
    curves = {}
    for key, values in points.items():
        values.sort(key=lambda point: point[0])
        curves[key] = (np.array([step for step, _ in values]), np.array([value for _, value in values]))
    return curves

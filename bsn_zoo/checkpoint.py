"""Saving and loading models safely.

* :func:`atomic_write` writes a file next to its destination and moves it into place with
  ``os.replace``, so a crash mid-save never leaves a half-written file under the real name.
* :func:`save_model` refuses to save non-finite weights (a diverged run must not overwrite a good
  checkpoint) and saves the ``VecNormalize`` statistics next to the model.
* :func:`load_model` turns a missing, truncated or foreign file, or a model that does not fit the
  environment, into a one-line :class:`~bsn_zoo.cli_errors.UserInputError`.
"""

from __future__ import annotations

import os
import pickle
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import torch
from gymnasium import spaces
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.save_util import load_from_zip_file
from stable_baselines3.common.vec_env import VecEnv, VecNormalize

from bsn_zoo.cli_errors import DivergenceError, UserInputError

__all__ = [
    "TEMP_SUFFIX",
    "atomic_write",
    "check_finite_parameters",
    "check_model_file",
    "check_model_fits",
    "describe_space",
    "load_model",
    "load_vecnormalize",
    "read_vecnormalize",
    "save_model",
    "vecnormalize_path",
]

#: suffix of the temporary files :func:`atomic_write` moves into place (ignored when looking for models).
TEMP_SUFFIX = ".tmp"


def atomic_write(path: Path, write: Callable[[IO[bytes]], None]) -> None:
    """Write ``path`` atomically: ``write`` fills a temporary file that then replaces ``path``.

    The temporary file ``.<name>.<pid>.tmp`` lives in the same folder (``os.replace`` is atomic within
    a file system) and is flushed to disk before the rename; it is removed if ``write`` fails.

    Args:
        path: the destination; its folder must exist.
        write: called with the open binary temporary file.
    """
    path = Path(path)
    temp = path.with_name(f".{path.name}.{os.getpid()}{TEMP_SUFFIX}")
    try:
        with open(temp, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    finally:
        temp.unlink(missing_ok=True)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def vecnormalize_path(model_path: Path) -> Path:
    """Where the ``VecNormalize`` statistics of the model saved at ``model_path`` go."""
    model_path = Path(model_path)
    return model_path.with_name(f"{model_path.stem}_vecnormalize.pkl")


def read_vecnormalize(model_path: Path) -> VecNormalize | None:
    """The ``VecNormalize`` statistics saved beside the model at ``model_path`` (no environment attached), if any.

    Raises:
        UserInputError: for a damaged statistics file.
    """
    stats_path = vecnormalize_path(model_path)
    if not stats_path.is_file():
        return None
    try:
        with open(stats_path, "rb") as handle:
            return pickle.load(handle)
    except (EOFError, pickle.UnpicklingError, AttributeError, ImportError) as error:
        reason = f"{type(error).__name__}: {str(error).rstrip('.')}"
        raise UserInputError(f"cannot read the VecNormalize statistics {stats_path} ({reason}); restore the file "
                             "saved with the model, or train again") from None


def load_vecnormalize(model_path: Path, env: VecEnv, env_id: str = "") -> VecNormalize | None:
    """Wrap ``env`` in the ``VecNormalize`` statistics saved beside the model at ``model_path``, if any.

    Args:
        model_path: the model's ``.zip`` file; its statistics are at :func:`vecnormalize_path`.
        env: the environment to wrap (not normalised).
        env_id: the environment's id, used in error messages.

    Returns:
        The statistics around ``env`` (still in their saved training mode), as ``VecNormalize.load`` gives
        them, or ``None`` if no statistics were saved beside the model.

    Raises:
        UserInputError: for a damaged statistics file, or one saved for other observation spaces.
    """
    vec_normalize = read_vecnormalize(model_path)
    if vec_normalize is None:
        return None
    try:
        vec_normalize.set_venv(env)
    except AssertionError as error:  # SB3 checks that the saved and the given spaces agree
        raise UserInputError(f"the VecNormalize statistics {vecnormalize_path(model_path)} do not fit environment "
                             f"{env_id!r} ({error}); use the environment the model was trained on (its run's "
                             "config.yml names it)") from None
    return vec_normalize


def check_finite_parameters(model: BaseAlgorithm) -> None:
    """Raise :class:`DivergenceError` if any weight of ``model``'s policy is NaN or infinite."""
    for name, tensor in model.policy.state_dict().items():
        if torch.is_floating_point(tensor) and not torch.isfinite(tensor).all():
            raise DivergenceError(
                f"training diverged at step {model.num_timesteps}: non-finite values in {name}; nothing "
                "was saved over the last good checkpoint; lower the learning rate or max_grad_norm"
            )


def save_model(model: BaseAlgorithm, path: Path, vec_normalize: VecNormalize | None = None) -> Path:
    """Save ``model`` (with its optimiser state) to ``path`` atomically, after checking its weights.

    Args:
        model: the algorithm to save.
        path: the ``.zip`` destination.
        vec_normalize: if given, its statistics are saved first to :func:`vecnormalize_path`, so a
            model file on disk always has its statistics beside it.

    Returns:
        ``path``.

    Raises:
        DivergenceError: if a weight is not finite (nothing is written).
    """
    check_finite_parameters(model)
    if vec_normalize is not None:
        atomic_write(vecnormalize_path(path), lambda handle: pickle.dump(vec_normalize, handle))
    atomic_write(path, model.save)
    return Path(path)


def check_model_file(path: Path) -> None:
    """Check that ``path`` is a complete model file saved by SB3 (a zip archive with ``data``).

    Raises:
        UserInputError: naming the file and what is wrong with it (missing, truncated, not a model).
    """
    path = Path(path)
    if not path.exists():
        raise UserInputError(f"model file {path} does not exist; give a .zip model or a run folder")
    if not path.is_file():
        raise UserInputError(f"{path} is not a file; give a .zip model or a run folder")
    if not zipfile.is_zipfile(path):
        raise UserInputError(f"{path} is truncated or not a model file (not a zip archive); "
                             "give a .zip saved by train.py (see the run's checkpoints/ folder)")
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
            broken = archive.testzip()
    except (zipfile.BadZipFile, OSError) as error:
        raise UserInputError(f"{path} is a damaged zip archive ({error}); give another model file") from None
    if broken is not None or not {"data", "policy.pth"} <= names:
        raise UserInputError(f"{path} is truncated or not a model file (no complete data and policy.pth "
                             "inside); give a .zip saved by train.py (see the run's checkpoints/ folder)")


def describe_space(space: spaces.Space) -> str:
    """A short name of a space: ``Box(4,)``, ``Discrete(2)``, ``MultiDiscrete(3,)``."""
    if isinstance(space, spaces.Discrete):
        return f"Discrete({space.n})"
    shape = getattr(space, "shape", None)
    return f"{type(space).__name__}{shape}" if shape is not None else str(space)


def check_model_fits(path: Path, env: VecEnv, env_id: str) -> None:
    """Check that the model saved at ``path`` has ``env``'s observation and action spaces.

    The spaces compared are those of ``env`` as SB3 wraps it on loading: channel-last images are
    transposed to channel-first (``VecTransposeImage``), as they were when the model was trained.

    Raises:
        UserInputError: naming both spaces, if they differ.
    """
    data, _, _ = load_from_zip_file(path, load_data=True, device="cpu")
    wrapped = BaseAlgorithm._wrap_env(env, verbose=0, monitor_wrapper=False)
    for role, saved, actual in (("observation", data["observation_space"], wrapped.observation_space),
                                ("action", data["action_space"], wrapped.action_space)):
        if saved != actual:
            raise UserInputError(
                f"the model {path} was trained with {role} space {describe_space(saved)} but environment "
                f"{env_id!r} has {describe_space(actual)}; use the environment it was trained on "
                "(its run's config.yml names it)"
            )


def load_model(
    algo_class: type[BaseAlgorithm],
    path: Path,
    env: VecEnv | None = None,
    env_id: str = "",
    device: str = "auto",
    **kwargs: Any,
) -> BaseAlgorithm:
    """Load a model, mapping its tensors to ``device`` (a CUDA-saved model loads on a CPU-only machine).

    Args:
        algo_class: the algorithm class that saved it (``LocalPG``, ``PPO``...).
        path: the ``.zip`` file.
        env: the environment to attach (its spaces must match the model's); ``None`` for none.
        env_id: the environment's id, used in error messages.
        device: ``"auto"``, ``"cpu"`` or ``"cuda[:N]"``; ``auto`` falls back to the CPU.
        kwargs: attributes to change on load (e.g. ``learning_rate``, ``tensorboard_log``).

    Raises:
        UserInputError: for a bad file (see :func:`check_model_file`), a file another algorithm saved,
            or an environment whose spaces differ from the model's.
    """
    check_model_file(path)
    if env is not None:
        check_model_fits(path, env, env_id)
    try:
        return algo_class.load(path, env=env, device=device, **kwargs)
    except (KeyError, AttributeError, pickle.UnpicklingError, RuntimeError) as error:
        raise UserInputError(f"cannot load {path} as a {algo_class.__name__} model ({type(error).__name__}: "
                             f"{' '.join(str(error).split())[:200]}); pass the algorithm that saved it "
                             "with --algo") from None

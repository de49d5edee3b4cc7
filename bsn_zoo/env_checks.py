"""Checks on environments before and while training: known ids, supported spaces, finite outputs."""

from __future__ import annotations

import importlib

import numpy as np
from gymnasium import spaces
from stable_baselines3.common.vec_env import VecEnv, VecEnvWrapper
from stable_baselines3.common.vec_env.base_vec_env import VecEnvStepReturn

from bsn_zoo.cli_errors import NonFiniteEnvError, UserInputError
from envs import UnknownEnvironmentError
from envs import check_env_id as check_registered
from policies.policy import FLATTEN_FIX, default_features_extractor
from policies.policy import check_spaces as check_policy_spaces

__all__ = ["VecCheckFinite", "check_env_id", "check_spaces"]


def check_env_id(env_id: str) -> None:
    """Check that ``env_id`` is a registered Gymnasium id (``module:Id`` imports ``module`` first).

    The project's ``envs`` package is imported first, so its ``bsn/`` tasks are known.

    Raises:
        UserInputError: naming the unknown id, the closest registered ids, and how to list them all.
    """
    module, sep, name = env_id.rpartition(":")
    if sep:
        try:
            importlib.import_module(module)
        except ImportError as error:
            raise UserInputError(f"cannot import module {module!r} named in env id {env_id!r}: {error}; "
                                 "check the module path (run from the folder that contains it)") from None
    try:
        check_registered(name)
    except UnknownEnvironmentError as error:
        raise UserInputError(f"{error}; list the registered ids with "
                             "python -c 'import gymnasium; gymnasium.pprint_registry()'") from None


def check_spaces(observation_space: spaces.Space, action_space: spaces.Space, env_id: str) -> None:
    """Check that the policies support an environment's observation and action spaces.

    Raises:
        UserInputError: naming the environment, the unsupported space, the supported kinds, and a fix.
    """
    try:
        check_policy_spaces(observation_space, action_space)
        default_features_extractor(observation_space)  # refuses a Dict holding an image too small for NatureCNN
    except ValueError as error:
        if str(error).endswith(FLATTEN_FIX):
            message = f"{error} (train.py: -params env_wrapper:gymnasium.wrappers.FlattenObservation)"
        else:
            message = f"{error}; give the env a Box, Discrete, MultiDiscrete or MultiBinary action space"
        raise UserInputError(f"environment {env_id!r}: {message}") from None


class VecCheckFinite(VecEnvWrapper):
    """Stop with a :class:`NonFiniteEnvError` as soon as the environment returns NaN or infinity.

    Unlike silently training on them, the error names what was non-finite (observation or reward),
    the environment index, and the step (counted in vectorised steps since the wrapper was created,
    plus ``step_offset``).

    Args:
        venv: the vectorised environment to watch.
        step_offset: number of environment steps already taken (a continued run), added to the count.
    """

    def __init__(self, venv: VecEnv, step_offset: int = 0) -> None:
        super().__init__(venv)
        self.num_steps = int(step_offset)

    def reset(self) -> np.ndarray:
        """Reset every environment and check the first observations."""
        observations = self.venv.reset()
        self._check("observation", observations, "reset")
        return observations

    def step_wait(self) -> VecEnvStepReturn:
        """Step every environment and check observations, rewards and terminal observations."""
        observations, rewards, dones, infos = self.venv.step_wait()
        self.num_steps += self.num_envs
        where = f"step {self.num_steps}"
        self._check("observation", observations, where)
        self._check("reward", rewards, where)
        for index, info in enumerate(infos):
            if "terminal_observation" in info:
                self._check("terminal observation", _batch_of_one(info["terminal_observation"]), where, index)
        return observations, rewards, dones, infos

    @staticmethod
    def _check(what: str, values: np.ndarray | dict, where: str, first_env: int = 0) -> None:
        """Raise if a batch of ``values`` (first axis: environments, from ``first_env`` on) is non-finite."""
        arrays = values.values() if isinstance(values, dict) else [values]
        for array in arrays:
            array = np.asarray(array)
            if np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
                bad = tuple(np.argwhere(~np.isfinite(array))[0])
                raise NonFiniteEnvError(
                    f"the environment returned a non-finite {what} ({array[bad]}) at {where} "
                    f"(env index {first_env + int(bad[0])}); fix the environment or wrap it to clip or "
                    "replace such values"
                )


def _batch_of_one(observation: np.ndarray | dict | int | float) -> np.ndarray | dict:
    """One environment's observation (array, dict of arrays, or a ``Discrete`` int) as a batch of one."""
    if isinstance(observation, dict):
        return {key: np.asarray(value)[None] for key, value in observation.items()}
    return np.asarray(observation)[None]

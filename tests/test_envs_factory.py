"""Environment factories: Gymnasium and torch backends, registration, errors for unknown ids."""

from __future__ import annotations

import warnings

import gymnasium as gym
import numpy as np
import pytest
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import DummyVecEnv

import envs
from envs import TorchCartPole, UnknownEnvironmentError, make_env, make_torch_vec_env, make_vec_env


def test_our_tasks_are_registered_on_import() -> None:
    for env_id, entry_point in envs.REGISTERED_ENVS.items():
        assert gym.spec(env_id).entry_point == entry_point
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        envs.register_envs()  # idempotent: no "overriding environment" warning
    assert caught == []


@pytest.mark.parametrize(
    ("typo", "suggestion"),
    [
        ("CartPol-v1", "CartPole-v1"),
        ("bsn/DelayedChian-v0", "bsn/DelayedChain-v0"),
        ("bsn/DelayedParity-v1", "bsn/DelayedParity-v0"),
    ],
)
def test_unknown_ids_name_close_matches(typo: str, suggestion: str) -> None:
    for factory in (make_env, make_vec_env):
        with pytest.raises(
            UnknownEnvironmentError, match=f"unknown Gymnasium environment '{typo}': did you mean .*'{suggestion}'"
        ):
            factory(typo)


def test_torch_backend_errors() -> None:
    with pytest.raises(UnknownEnvironmentError, match="torch backend 'LunarLander-v3'"):
        make_torch_vec_env("LunarLander-v3", 2)
    with pytest.raises(UnknownEnvironmentError, match="did you mean 'Acrobot-v1'"):
        make_vec_env("Acrobot-v2", 2, backend="torch")
    with pytest.raises(UnknownEnvironmentError, match="unknown backend 'torh': did you mean 'torch'"):
        make_vec_env("CartPole-v1", backend="torh")
    with pytest.raises(ValueError, match="apply to backend='gymnasium' only"):
        make_vec_env("CartPole-v1", 2, backend="torch", vec_env_cls=DummyVecEnv)


def test_make_env_passes_constructor_arguments() -> None:
    env = make_env("bsn/DelayedChain-v0", length=5)
    assert env.observation_space.shape == (5,)
    assert env.unwrapped.length == 5


def test_gymnasium_backend_builds_monitored_dummy_vec_env() -> None:
    venv = make_vec_env("bsn/DelayedParity-v0", n_envs=3, seed=0, env_kwargs={"num_bits": 2, "length": 4})
    assert isinstance(venv, DummyVecEnv) and venv.num_envs == 3
    assert venv.env_is_wrapped(Monitor) == [True, True, True]
    obs = venv.reset()
    assert obs.shape == (3, 2)
    for _ in range(4):
        _, rewards, dones, infos = venv.step(np.zeros(3, dtype=np.int64))
    assert dones.all() and all("episode" in info for info in infos)
    assert ((rewards >= 0) & (rewards <= 1)).all()


def test_torch_backend_builds_torch_vec_env() -> None:
    venv = make_vec_env("CartPole-v1", n_envs=5, seed=0, backend="torch")
    assert isinstance(venv, TorchCartPole) and venv.num_envs == 5 and venv.device.type == "cpu"
    venv_auto = make_torch_vec_env("CartPole-v1", 2, device="auto")
    assert venv_auto.device.type in ("cpu", "cuda")
    chain = make_vec_env("bsn/DelayedChain-v0", n_envs=2, backend="torch", env_kwargs={"length": 4})
    assert chain.observation_space.shape == (4,) and chain.max_episode_steps == 4

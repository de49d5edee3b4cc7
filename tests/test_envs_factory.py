"""Environment factories: Gymnasium and torch backends, registration, errors for unknown ids."""

from __future__ import annotations

import warnings

import gymnasium as gym
import numpy as np
import pytest
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

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
    with pytest.raises(ValueError, match="monitor_kwargs and wrapper_class apply to backend='gymnasium' only"):
        make_vec_env("CartPole-v1", 2, backend="torch", monitor_kwargs={}, wrapper_class=lambda env: env)


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


def test_normalize_wraps_either_backend_in_vec_normalize_with_the_given_gamma() -> None:
    for backend in ("gymnasium", "torch"):
        venv = make_vec_env("CartPole-v1", n_envs=2, seed=0, backend=backend, normalize=True, gamma=0.9)
        assert isinstance(venv, VecNormalize) and venv.gamma == 0.9 and venv.num_envs == 2
        assert venv.norm_obs and venv.norm_reward
    assert not isinstance(make_vec_env("CartPole-v1", gamma=0.9), VecNormalize)


def test_seeded_gymnasium_envs_reset_like_sb3s_factory() -> None:
    from stable_baselines3.common.env_util import make_vec_env as sb3_make_vec_env

    ours, theirs = make_vec_env("CartPole-v1", n_envs=3, seed=7), sb3_make_vec_env("CartPole-v1", n_envs=3, seed=7)
    np.testing.assert_array_equal(ours.reset(), theirs.reset())


def test_wrapper_monitor_files_and_module_ids(tmp_path) -> None:
    import gymnasium.wrappers

    venv = make_vec_env(
        "CartPole-v1",
        n_envs=2,
        seed=0,
        monitor_dir=str(tmp_path),
        monitor_kwargs={"override_existing": False},
        wrapper_class=gymnasium.wrappers.FlattenObservation,
    )
    assert venv.env_is_wrapped(gymnasium.wrappers.FlattenObservation) == [True, True]
    assert sorted(path.name for path in tmp_path.iterdir()) == ["0.monitor.csv", "1.monitor.csv"]
    module_id = make_vec_env("envs:bsn/DelayedChain-v0", env_kwargs={"length": 3})
    assert module_id.observation_space.shape == (3,)

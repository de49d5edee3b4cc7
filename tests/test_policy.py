"""BinaryStochasticPolicy: SB3 API, spaces, counter noise under stock PPO/A2C, save/load."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces
from stable_baselines3 import A2C, PPO
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.envs import (
    FakeImageEnv,
    IdentityEnv,
    IdentityEnvBox,
    IdentityEnvMultiBinary,
    IdentityEnvMultiDiscrete,
)
from stable_baselines3.common.envs.multi_input_envs import SimpleMultiObsEnv

from agents import LocalPG
from policies import BinaryStochasticPolicy


class SpacesEnv(gym.Env):
    """A one-step env with arbitrary spaces, for space-validation tests."""

    def __init__(self, observation_space: spaces.Space, action_space: spaces.Space) -> None:
        self.observation_space = observation_space
        self.action_space = action_space

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        return self.observation_space.sample(), {}

    def step(self, action):
        return self.observation_space.sample(), 0.0, True, False, {}


@pytest.mark.parametrize("algo", [LocalPG, PPO, A2C])
@pytest.mark.parametrize(
    "observation_space, action_space",
    [
        (spaces.Box(-1, 1, (3,)), spaces.Tuple([spaces.Discrete(2), spaces.Discrete(2)])),
        (spaces.Tuple([spaces.Discrete(2)]), spaces.Discrete(2)),
        (spaces.Dict({"a": spaces.Dict({"b": spaces.Box(-1, 1, (2,))})}), spaces.Discrete(2)),
    ],
)
def test_unsupported_spaces_raise_with_names(algo, observation_space, action_space) -> None:
    """LocalPG raises a ValueError naming the space and the supported ones; stock SB3 its own named error."""
    env = SpacesEnv(observation_space, action_space)
    expected = ValueError if algo is LocalPG else (ValueError, AssertionError, NotImplementedError)
    with pytest.raises(expected) as info:
        algo(BinaryStochasticPolicy, env)
    message = str(info.value)
    assert "Tuple" in message or "Dict" in message, message
    if algo is LocalPG:
        assert "supports" in message and "Discrete" in message and "Box" in message


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        ({"estimator": "bogus"}, "unknown estimator 'bogus'"),
        ({"baseline": "bogus"}, "unknown baseline 'bogus'"),
        ({"net_arch": []}, "at least one BSN layer"),
        ({"net_arch": [0]}, "positive integers"),
        ({"net_arch": {"pi": [4], "qf": [3]}}, "keys 'pi' and 'vf'"),
        ({"bsn_init_gain": 0.0}, "bsn_init_gain must be > 0"),
    ],
)
def test_bad_policy_kwargs_raise(kwargs, fragment) -> None:
    with pytest.raises(ValueError, match=fragment):
        LocalPG("BsnPolicy", "CartPole-v1", policy_kwargs=kwargs)


@pytest.mark.parametrize(
    "env_fn, action_shape",
    [
        (lambda: IdentityEnv(3), ()),
        (lambda: IdentityEnvMultiDiscrete(3), (2,)),
        (lambda: IdentityEnvMultiBinary(3), (3,)),
        (lambda: IdentityEnvBox(), (1,)),
        (lambda: SimpleMultiObsEnv(random_start=True), ()),
        (lambda: FakeImageEnv(screen_height=36, screen_width=36, n_channels=1), ()),
    ],
)
def test_predict_shapes_all_spaces(env_fn, action_shape) -> None:
    env = env_fn()
    model = LocalPG("BsnPolicy", env, n_steps=8, batch_size=8, policy_kwargs={"net_arch": [8]}, seed=0)
    obs, _ = env.reset(seed=0)
    action, state = model.predict(obs, deterministic=True)
    assert state is None
    assert np.shape(action) == action_shape
    assert env.action_space.contains(action.astype(env.action_space.dtype) if action_shape == (1,) else action)
    batched = {k: np.stack([v, v]) for k, v in obs.items()} if isinstance(obs, dict) else np.stack([obs, obs])
    actions, _ = model.predict(batched, deterministic=False)
    assert np.shape(actions) == (2, *action_shape)
    model.learn(16)  # one update on every kind of space and extractor


def test_stock_ppo_scores_the_rollouts_own_hidden_samples() -> None:
    """PPO's evaluate_actions re-creates the hidden samples that chose each action during the rollout."""
    env = make_vec_env("CartPole-v1", n_envs=4, seed=1)
    model = PPO(BinaryStochasticPolicy, env, n_steps=16, batch_size=64, seed=1, policy_kwargs={"net_arch": [16, 16]})
    model._setup_learn(64, callback=None)
    model.collect_rollouts(model.env, model._init_callback(None), model.rollout_buffer, n_rollout_steps=16)
    model.policy.set_training_mode(True)  # what PPO.train() does first
    data = next(model.rollout_buffer.get(batch_size=None))
    actions = data.actions.long().flatten()
    with torch.no_grad():
        _, log_prob, _ = model.policy.evaluate_actions(data.observations, actions)
    # Bit-exact: the same hidden samples, so the same joint log-probability (ratio exactly 1).
    torch.testing.assert_close(log_prob, data.old_log_prob, rtol=0, atol=1e-5)
    # Negative control: with another rollout key the samples differ and so does the joint log-probability.
    model.policy.noise_key += 1
    with torch.no_grad():
        _, other, _ = model.policy.evaluate_actions(data.observations, actions)
    assert (other - data.old_log_prob).abs().max() > 1e-2


def test_noise_key_advances_once_per_rollout_not_during_eval() -> None:
    policy = LocalPG("BsnPolicy", "CartPole-v1", seed=0).policy
    policy.set_training_mode(True)
    key = policy.noise_key
    policy.set_training_mode(False)  # start of a rollout
    assert policy.noise_key == key + 1
    policy.set_training_mode(False)  # predict() / EvalCallback inside the rollout
    assert policy.noise_key == key + 1


def test_joint_log_prob_includes_hidden_units_for_local_family_only() -> None:
    obs = torch.randn(5, 4)
    for estimator, includes_hidden in [("local", True), ("st", False), ("sts", False)]:
        policy = PPO(
            BinaryStochasticPolicy, "CartPole-v1", policy_kwargs={"estimator": estimator, "net_arch": [6]}, seed=0
        ).policy
        with torch.no_grad():
            actions, _, log_prob = policy(obs)
            distribution = policy.get_distribution(obs)  # same key, same samples
            action_only = distribution.log_prob(actions)
        assert torch.allclose(log_prob, action_only) is not includes_hidden


@pytest.mark.parametrize("algo", [PPO, A2C])
def test_stock_algorithms_train_bsn_policy(algo) -> None:
    env = make_vec_env("CartPole-v1", n_envs=2, seed=0)
    extra = {"batch_size": 32} if algo is PPO else {}
    model = algo(BinaryStochasticPolicy, env, n_steps=16, seed=0, policy_kwargs={"net_arch": [8, 8]}, **extra)
    before = [p.detach().clone() for p in model.policy.bsn.parameters()]
    model.learn(64)
    after = list(model.policy.bsn.parameters())
    assert all(not torch.equal(b, a) for b, a in zip(before, after, strict=True)), "hidden layers must learn"


def test_save_load_round_trip_keeps_policy_kwargs(tmp_path) -> None:
    kwargs = {"net_arch": {"pi": [8, 4], "vf": [16]}, "estimator": "local", "baseline": "learned", "bsn_init_gain": 2.0}
    model = LocalPG("BsnPolicy", "CartPole-v1", n_steps=16, batch_size=32, policy_kwargs=kwargs, seed=3)
    model.learn(32)
    model.save(tmp_path / "model.zip")
    loaded = LocalPG.load(tmp_path / "model.zip", device="cpu")
    assert loaded.policy.bsn.hidden_sizes == [8, 4]
    assert loaded.policy.baseline_name == "learned"
    assert loaded.policy.bsn_init_gain == 2.0
    for (name, a), (_, b) in zip(model.policy.state_dict().items(), loaded.policy.state_dict().items(), strict=True):
        assert torch.equal(a, b), name

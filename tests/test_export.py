"""Exported policies (ONNX, NumPy) choose the same actions as ``model.predict(obs, deterministic=True)`` on
10,000 observations from real rollouts, for every action-space type, with ``VecNormalize`` folded in."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import onnxruntime
import pytest
import torch
from cli_support import TINY, TINY_PARAMS, run_tool
from gymnasium import spaces
from stable_baselines3 import PPO
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.envs import FakeImageEnv
from stable_baselines3.common.vec_env import VecNormalize

from agents import LocalPG
from bsn_zoo.cli_errors import UserInputError
from bsn_zoo.evaluation import set_deterministic_units
from deploy import NumpyPolicy, export_numpy, export_onnx

ROWS = 10_000


class RandomObservationEnv(gym.Env):
    """Box observations drawn at random, any action space; reward: how many action entries are positive."""

    def __init__(self, action_space: spaces.Space) -> None:
        self.observation_space = spaces.Box(-2.0, 2.0, (5,), dtype=np.float32)
        self.action_space = action_space

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return self.observation_space.sample(), {}

    def step(self, action):
        reward = float((np.asarray(action, dtype=np.float32) > 0).sum())
        return self.observation_space.sample(), reward, False, self.np_random.random() < 0.02, {}


CASES = {
    "Discrete": lambda: gym.make("CartPole-v1"),
    "MultiDiscrete": lambda: RandomObservationEnv(spaces.MultiDiscrete([3, 2, 4])),
    "MultiBinary": lambda: RandomObservationEnv(spaces.MultiBinary(3)),
    "Box": lambda: RandomObservationEnv(spaces.Box(-1.0, 1.0, (2, 2), dtype=np.float32)),
}


def rollout_observations(model, env, rows: int) -> np.ndarray:
    """``rows`` raw observations met by the model's own (stochastic) policy."""
    collected, obs = [], env.reset()
    while sum(len(batch) for batch in collected) < rows:
        actions, _ = model.predict(obs, deterministic=False)
        obs, _rewards, _dones, _infos = env.step(actions)
        collected.append(env.get_original_obs() if isinstance(env, VecNormalize) else obs)
    return np.concatenate(collected)[:rows].astype(np.float32)


def check_same_actions(model, env, tmp_path) -> None:
    vec_normalize = env if isinstance(env, VecNormalize) else None
    observations = rollout_observations(model, env, ROWS)
    policy_input = vec_normalize.normalize_obs(observations) if vec_normalize is not None else observations
    expected, _ = model.predict(policy_input, deterministic=True)
    session = onnxruntime.InferenceSession(str(export_onnx(model, tmp_path / "policy.onnx", vec_normalize)))
    from_onnx = session.run(None, {"obs": observations})[0]
    numpy_policy = NumpyPolicy(export_numpy(model, tmp_path / "policy.npz", vec_normalize))
    from_numpy = numpy_policy.predict(observations)
    one_by_one = np.stack([numpy_policy.act(row) for row in observations[:500]])
    if isinstance(model.action_space, spaces.Box):  # the same mode, up to float rounding of the head
        for actions in (from_onnx, from_numpy):
            np.testing.assert_allclose(actions, expected, atol=1e-5)
        np.testing.assert_allclose(one_by_one, expected[:500], atol=1e-5)
    else:
        for actions in (from_onnx, from_numpy):
            assert actions.shape == expected.shape
            differing = (actions != expected).reshape(len(actions), -1).any(axis=1).sum()
            assert differing == 0, f"{differing} of {len(actions)} rows differ"
        assert (one_by_one == expected[:500]).all()


@pytest.mark.parametrize("case", list(CASES))
def test_exported_policies_choose_predicts_actions(case, tmp_path) -> None:
    env = make_vec_env(CASES[case], n_envs=8, seed=0)
    model = LocalPG("MlpPolicy", env, n_steps=32, batch_size=64, seed=0, policy_kwargs={"net_arch": [32, 16, 8]})
    model.learn(512)
    check_same_actions(model, env, tmp_path)


def test_state_dependent_std_exports_the_mean_rows(tmp_path) -> None:
    """A head that also outputs the log-std exports only its mean rows: the deterministic action is the mean."""
    env = make_vec_env(CASES["Box"], n_envs=8, seed=1)
    model = LocalPG(
        "MlpPolicy", env, n_steps=32, batch_size=64, seed=1,
        policy_kwargs={"net_arch": [16, 8], "state_dependent_std": True},
    )
    model.learn(512)
    check_same_actions(model, env, tmp_path)


def test_signed_layer_inputs_are_folded_into_the_bit_weights(tmp_path) -> None:
    """Runtimes read each layer's input as 0/1 bits; a policy whose layers read signs exports the equivalent map."""
    env = make_vec_env("CartPole-v1", n_envs=8, seed=2)
    model = LocalPG(
        "MlpPolicy", env, n_steps=32, batch_size=64, seed=2,
        policy_kwargs={"net_arch": [16, 16, 8], "bsn_init_gain": 2.0, "signed_inputs": True},
    )
    model.learn(512)
    with torch.no_grad():  # biases away from 0, so the fold's offset decides actions
        for layer in model.policy.bsn.layers[1:]:
            layer.bias.add_(torch.randn_like(layer.bias))
    check_same_actions(model, env, tmp_path)


@pytest.mark.parametrize("env_id", ["CartPole-v1", "Pendulum-v1"])
def test_a_signed_head_is_folded_into_the_bit_weights(env_id, tmp_path) -> None:
    """A head that reads the top layer's units as signs (``signed_head``) exports its map of the raw bits; on a Box
    task with the state-dependent std, the mean rows of that map."""
    env = make_vec_env(env_id, n_envs=8, seed=3)
    box = env_id == "Pendulum-v1"
    model = LocalPG(
        "MlpPolicy", env, n_steps=32, batch_size=64, seed=3,
        policy_kwargs={"net_arch": [16, 8], "bsn_init_gain": 2.0, "signed_head": True, "state_dependent_std": box},
    )
    model.learn(512)
    with torch.no_grad():  # head weights that matter, so the fold's offset decides actions
        model.policy.action_net.weight.add_(torch.randn_like(model.policy.action_net.weight))
    check_same_actions(model, env, tmp_path)


@pytest.mark.parametrize("case", list(CASES))
def test_mean_field_policies_export_their_firing_probabilities(case, tmp_path) -> None:
    """With ``deterministic_units="mean_field"`` every layer passes ``sigmoid(a)`` up; signed layer inputs and a
    signed head are folded in as for bits. The two readouts differ, so the files cannot pass by thresholding."""
    env = make_vec_env(CASES[case], n_envs=8, seed=4)
    model = LocalPG(
        "MlpPolicy", env, n_steps=32, batch_size=64, seed=4,
        policy_kwargs={"net_arch": [16, 8], "bsn_init_gain": 2.0, "signed_inputs": True, "signed_head": True,
                       "deterministic_units": "mean_field"},
    )
    model.learn(512)
    with torch.no_grad():
        model.policy.action_net.weight.add_(torch.randn_like(model.policy.action_net.weight))
    observations = rollout_observations(model, env, 2000)
    mean_field, _ = model.predict(observations, deterministic=True)
    model.policy.deterministic_units = "threshold"
    thresholded, _ = model.predict(observations, deterministic=True)
    assert (np.asarray(mean_field) != np.asarray(thresholded)).reshape(2000, -1).any(axis=1).mean() > 0.05
    model.policy.deterministic_units = "mean_field"
    check_same_actions(model, env, tmp_path)


def test_vecnormalize_statistics_are_folded_in(tmp_path) -> None:
    env = VecNormalize(make_vec_env("Pendulum-v1", n_envs=8, seed=1))
    model = PPO(LocalPG.policy_aliases["MlpPolicy"], env, n_steps=32, batch_size=64, seed=1,
                policy_kwargs={"net_arch": [16, 16], "bsn_init_gain": 2.0})
    model.learn(512)
    assert np.abs(env.obs_rms.mean).max() > 0.05  # statistics that matter
    check_same_actions(model, env, tmp_path)


def test_image_policies_take_raw_channel_first_pixels(tmp_path) -> None:
    """An image too small for NatureCNN is flattened; SB3 scales its pixels by 1/255, which export folds into the
    first layer, so the exported policies read raw pixels."""
    env = make_vec_env(lambda: FakeImageEnv(screen_height=12, screen_width=12, n_channels=3, channel_first=True),
                       n_envs=8, seed=0)
    model = LocalPG("MlpPolicy", env, n_steps=32, batch_size=64, seed=0,
                    policy_kwargs={"net_arch": [32, 16], "bsn_init_gain": 2.0})
    model.learn(512)
    with torch.no_grad():  # biases that weigh as much as the scaled pixels, so that a missing scale shows
        model.policy.bsn.layers[0].bias.normal_(0.0, 1.0, generator=torch.Generator().manual_seed(0))
    check_same_actions(model, env, tmp_path)
    numpy_policy = NumpyPolicy(tmp_path / "policy.npz")
    with pytest.raises(ValueError, match=r"do not end in the policy's observation shape \(3, 12, 12\)"):
        numpy_policy.predict(np.zeros((2, 12, 12, 3), dtype=np.float32))  # channel-last


def test_unsupported_policies_are_refused_with_the_reason(tmp_path) -> None:
    model = PPO("MlpPolicy", "CartPole-v1")
    with pytest.raises(ValueError, match="export needs a BinaryStochasticPolicy, got ActorCriticPolicy"):
        export_onnx(model, tmp_path / "mlp.onnx")
    sts = PPO(LocalPG.policy_aliases["MlpPolicy"], "CartPole-v1", policy_kwargs={"estimator": "sts"})
    with pytest.raises(ValueError, match="export needs binary units"):
        export_numpy(sts, tmp_path / "sts.npz")


def test_a_readout_asked_of_a_policy_without_bsn_units_is_refused() -> None:
    model = PPO("MlpPolicy", "CartPole-v1")
    assert set_deterministic_units(model, None) is None
    with pytest.raises(UserInputError, match="applies to BSN policies; this model's policy is ActorCriticPolicy"):
        set_deterministic_units(model, "mean_field")


def test_export_command_writes_both_files_from_a_run_folder(tmp_path) -> None:
    run = run_tool("train.py", [*TINY, *TINY_PARAMS, "-f", "logs"], cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    export = run_tool("export.py", ["logs/localpg/CartPole-v1_1", "--onnx", "p.onnx", "--numpy", "p.npz"], cwd=tmp_path)
    assert export.returncode == 0, export.stderr
    assert (tmp_path / "p.onnx").is_file() and (tmp_path / "p.npz").is_file()
    assert "output action" in export.stdout and "(threshold units)" in export.stdout
    mean_field = run_tool("export.py", ["logs/localpg/CartPole-v1_1", "--numpy", "m.npz", "--deterministic-units",
                                        "mean_field"], cwd=tmp_path)
    assert mean_field.returncode == 0, mean_field.stderr
    assert "(mean_field units)" in mean_field.stdout
    assert NumpyPolicy(tmp_path / "m.npz").units == "mean_field"
    assert NumpyPolicy(tmp_path / "p.npz").units == "threshold"
    bad = run_tool("export.py", ["nothing", "--onnx", "p.onnx"], cwd=tmp_path)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1, bad.stderr
    assert "export.py: error:" in bad.stderr


def test_export_names_the_observation_wrappers_a_run_trained_with(tmp_path) -> None:
    run = run_tool("train.py", [*TINY, *TINY_PARAMS, "-f", "logs", "--reward-delay", "episode"], cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    export = run_tool("export.py", ["logs/localpg/CartPole-v1_1", "--numpy", "p.npz"], cwd=tmp_path)
    assert export.returncode == 0, export.stderr
    assert "input obs: float32 (batch, 5), raw" in export.stdout
    assert "note: the run observed CartPole-v1 through env_wrapper ['envs.TimeFeature'" in export.stdout

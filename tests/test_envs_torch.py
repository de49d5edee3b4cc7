"""Batched torch environments: equivalence with Gymnasium, auto-reset, truncation, statistics, SB3 API."""

from __future__ import annotations

import math
from dataclasses import dataclass

import gymnasium as gym
import numpy as np
import pytest
import torch
from stable_baselines3 import PPO
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import VecMonitor, VecNormalize

import envs
from envs import TORCH_ENVS, EpisodeTracker, TorchVecEnv, make_torch_vec_env
from envs.classic_control import wrap_angle

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@dataclass(frozen=True)
class StateBox:
    """A box of physical states wide enough to reach every branch of the dynamics (clips, walls, goals)."""

    low: tuple[float, ...]
    high: tuple[float, ...]


#: States drawn in the equivalence test, beyond those visited by random trajectories.
WIDE_STATES: dict[str, StateBox] = {
    "CartPole-v1": StateBox((-2.4, -3.0, -0.21, -3.0), (2.4, 3.0, 0.21, 3.0)),
    "Acrobot-v1": StateBox(
        (-math.pi, -math.pi, -4 * math.pi, -9 * math.pi), (math.pi, math.pi, 4 * math.pi, 9 * math.pi)
    ),
    "MountainCar-v0": StateBox((-1.2, -0.07), (0.6, 0.07)),
    "Pendulum-v1": StateBox((-3 * math.pi, -8.0), (3 * math.pi, 8.0)),
}


#: The Gymnasium tasks reproduced by torch envs (our own tasks are tested in test_envs_torch_delayed.py).
CLASSIC_CONTROL = sorted(WIDE_STATES)


def random_actions(env: TorchVecEnv, rng: np.random.Generator) -> np.ndarray:
    """Random actions for every copy; Box actions overshoot the bounds to exercise clipping."""
    if isinstance(env.action_space, gym.spaces.Discrete):
        return rng.integers(0, env.action_space.n, size=env.num_envs)
    high = env.action_space.high
    return rng.uniform(-1.5 * high, 1.5 * high, size=(env.num_envs, *env.action_space.shape)).astype(np.float32)


def gym_step(gym_env: gym.Env, state: np.ndarray, action: np.ndarray) -> tuple[np.ndarray, float, bool]:
    """Step Gymnasium's unwrapped env from ``state`` with ``action``: (obs, reward, terminated)."""
    gym_env.reset()  # clears per-episode bookkeeping such as CartPole's steps_beyond_terminated
    gym_env.unwrapped.state = state.astype(np.float64).copy()
    obs, reward, terminated, _, _ = gym_env.unwrapped.step(action.item() if action.ndim == 0 else action)
    return obs, float(reward), bool(terminated)


def compare_with_gymnasium(env_id: str, dtype: torch.dtype, num_envs: int, steps: int, tolerance: float) -> int:
    """Step the torch env and Gymnasium's from the same states with the same actions; returns terminations seen.

    Even steps continue the torch env's trajectories (with its automatic resets); odd steps start
    from states drawn uniformly in :data:`WIDE_STATES`.
    """
    env = make_torch_vec_env(env_id, num_envs, seed=1, dtype=dtype)
    gym_envs = [gym.make(env_id) for _ in range(num_envs)]
    for index, gym_env in enumerate(gym_envs):
        gym_env.reset(seed=index)
    rng = np.random.default_rng(0)
    box = WIDE_STATES[env_id]
    terminations = 0
    for step in range(steps):
        if step % 2:
            wide = rng.uniform(box.low, box.high, size=(num_envs, len(box.low)))
            env.state = torch.as_tensor(wide, dtype=dtype)
        start = env.state.cpu().numpy().copy()
        actions = random_actions(env, rng)
        torch_actions = torch.as_tensor(actions if actions.dtype != np.float32 else actions.astype(np.float64))
        result = env.step_tensor(torch_actions)
        final_obs = env.final_obs.cpu().numpy()
        rewards = result.rewards.cpu().numpy()
        terminated = result.terminated.cpu().numpy()
        for row, gym_env in enumerate(gym_envs):
            obs, reward, gym_terminated = gym_step(gym_env, start[row], actions[row])
            np.testing.assert_allclose(final_obs[row], obs, rtol=tolerance, atol=tolerance, err_msg=f"{env_id} obs")
            assert reward == pytest.approx(rewards[row], rel=tolerance, abs=tolerance), f"{env_id} reward"
            assert gym_terminated == terminated[row], f"{env_id} terminated from state {start[row]}"
            terminations += int(gym_terminated)
    return terminations


@pytest.mark.parametrize("env_id", CLASSIC_CONTROL)
def test_spaces_and_time_limit_match_gymnasium(env_id: str) -> None:
    env = make_torch_vec_env(env_id, 3, seed=0)
    reference = gym.make(env_id)
    assert env.observation_space == reference.observation_space
    assert env.action_space == reference.action_space
    assert env.max_episode_steps == reference.spec.max_episode_steps
    assert env.state.shape == (3, env.state_dim)
    assert reference.observation_space.contains(env.reset()[0])


@pytest.mark.parametrize("env_id", CLASSIC_CONTROL)
def test_float64_dynamics_match_gymnasium(env_id: str) -> None:
    terminations = compare_with_gymnasium(env_id, torch.float64, num_envs=32, steps=100, tolerance=1e-5)
    if env_id != "Pendulum-v1":  # Pendulum never terminates; the others must exercise termination
        assert terminations > 0


#: float32 tolerance: Acrobot's RK4 step with velocities up to 9 pi loses ~3e-5 relative precision.
FLOAT32_TOLERANCE = {"Acrobot-v1": 1e-4}


@pytest.mark.parametrize("env_id", CLASSIC_CONTROL)
def test_float32_dynamics_match_gymnasium(env_id: str) -> None:
    tolerance = FLOAT32_TOLERANCE.get(env_id, 1e-5)
    compare_with_gymnasium(env_id, torch.float32, num_envs=32, steps=40, tolerance=tolerance)


def test_wrap_angle_matches_gymnasium() -> None:
    from gymnasium.envs.classic_control.acrobot import wrap

    values = np.linspace(-4 * math.pi, 4 * math.pi, 1001)
    ours = wrap_angle(torch.as_tensor(values, dtype=torch.float64), -math.pi, math.pi).numpy()
    np.testing.assert_allclose(ours, [wrap(v, -math.pi, math.pi) for v in values], atol=1e-12)


def test_automatic_reset_and_truncation_tensor_api() -> None:
    env = make_torch_vec_env("Pendulum-v1", 4, seed=0, max_episode_steps=3)
    env.reset_tensor()
    actions = torch.zeros(4, 1)
    for _ in range(2):
        result = env.step_tensor(actions)
        assert not result.truncated.any()
    before = env.state.clone()
    result = env.step_tensor(actions)
    assert result.truncated.all() and not result.terminated.any()
    assert torch.equal(env.episode_steps, torch.zeros(4, dtype=torch.long))
    # The returned observation is the new episode's; final_obs is where the old one ended.
    assert torch.allclose(result.obs, env._observe(env.state))
    assert not torch.allclose(env.final_obs, result.obs)
    expected_final = env._observe(env._transition(before, actions)[0])
    assert torch.allclose(env.final_obs, expected_final)
    summary = env.episode_summary()
    assert summary["episodes"] == 4 and summary["ep_len_mean"] == 3


def test_sb3_infos_terminal_observation_and_time_limit() -> None:
    env = make_torch_vec_env("CartPole-v1", 6, seed=3, max_episode_steps=20)
    env.reset()
    saw_termination = False
    for _ in range(60):
        obs, rewards, dones, infos = env.step(np.ones(6, dtype=np.int64))
        assert obs.dtype == np.float32 and rewards.dtype == np.float32 and dones.dtype == bool
        for index, info in enumerate(infos):
            assert "TimeLimit.truncated" in info
            if dones[index]:
                terminal = info["terminal_observation"]
                assert terminal.shape == (4,)
                assert not np.allclose(terminal, obs[index])
                assert info["episode"]["l"] == info["episode"]["r"]  # +1 per step
                saw_termination |= not info["TimeLimit.truncated"]
            else:
                assert "terminal_observation" not in info and not info["TimeLimit.truncated"]
    assert saw_termination  # always pushing right topples the pole within 20 steps
    env_long = make_torch_vec_env("Pendulum-v1", 2, seed=3, max_episode_steps=5)
    env_long.reset()
    for _ in range(5):
        _, _, dones, infos = env_long.step(np.zeros((2, 1), dtype=np.float32))
    assert dones.all() and all(info["TimeLimit.truncated"] for info in infos)


def test_episode_tracker_matches_manual_accounting() -> None:
    rng = np.random.default_rng(0)
    tracker = EpisodeTracker(num_envs=5, window=7, device=torch.device("cpu"), dtype=torch.float64)
    running = np.zeros(5)
    lengths = np.zeros(5, dtype=int)
    finished: list[tuple[float, int]] = []
    for _ in range(40):
        rewards = rng.normal(size=5)
        done = rng.random(5) < 0.3
        running += rewards
        lengths += 1
        out_returns, _ = tracker.update(torch.as_tensor(rewards), torch.as_tensor(done))
        np.testing.assert_allclose(out_returns.numpy(), running)
        finished += [(running[i], int(lengths[i])) for i in np.flatnonzero(done)]
        running[done] = 0.0
        lengths[done] = 0
    window = finished[-7:]
    summary = tracker.summary()
    assert summary.episodes == len(finished)
    assert summary.mean_return == pytest.approx(np.mean([r for r, _ in window]))
    assert summary.mean_length == pytest.approx(np.mean([n for _, n in window]))
    latest_returns, latest_lengths = tracker.latest(3)
    np.testing.assert_allclose(latest_returns.numpy(), [r for r, _ in finished[-3:]])
    assert latest_lengths.tolist() == [n for _, n in finished[-3:]]


def test_episode_tracker_empty_and_invalid() -> None:
    tracker = EpisodeTracker(2, 4, torch.device("cpu"), torch.float32)
    summary = tracker.summary()
    assert summary.episodes == 0 and math.isnan(summary.mean_return)
    with pytest.raises(ValueError, match="window must be a positive integer"):
        EpisodeTracker(2, 0, torch.device("cpu"), torch.float32)
    with pytest.raises(ValueError, match="count must be >= 0"):
        tracker.latest(-1)


@pytest.mark.parametrize("env_id", CLASSIC_CONTROL)
def test_seeding_is_deterministic(env_id: str) -> None:
    def rollout(seed: int) -> list[np.ndarray]:
        env = make_torch_vec_env(env_id, 5, seed=seed)
        rng = np.random.default_rng(0)
        observations = [env.reset()]
        for _ in range(30):
            observations.append(env.step(random_actions(env, rng))[0])
        return observations

    first, second, other = rollout(7), rollout(7), rollout(8)
    for a, b in zip(first, second, strict=True):
        np.testing.assert_array_equal(a, b)
    assert not np.allclose(first[0], other[0])


def test_sb3_seed_applies_at_next_reset() -> None:
    env = make_torch_vec_env("CartPole-v1", 3)
    assert env.seed(11) == [11, 12, 13]
    first = env.reset()
    env.seed(11)
    np.testing.assert_array_equal(env.reset(), first)
    assert not np.array_equal(env.reset(), first)  # the seed is used once


def test_tensor_api_stays_on_device_and_rejects_bad_actions() -> None:
    env = make_torch_vec_env("Acrobot-v1", 4, seed=0)
    obs = env.reset_tensor()
    assert isinstance(obs, torch.Tensor) and obs.shape == (4, 6) and obs.dtype == torch.float32
    result = env.step_tensor(torch.ones(4, dtype=torch.long))
    assert all(isinstance(t, torch.Tensor) for t in result)
    assert result.terminated.dtype == torch.bool and result.rewards.shape == (4,)
    with pytest.raises(ValueError, match=r"actions must have shape \(4,\)"):
        env.step_tensor(torch.ones(3, dtype=torch.long))
    with pytest.raises(TypeError, match="integer tensor"):
        env.step_tensor(torch.ones(4))
    with pytest.raises(TypeError, match=r"torch\.Tensor"):
        env.step_tensor(np.ones(4))
    with pytest.raises(ValueError, match=r"integers in \[0, 3\)"):
        env.step(np.array([0, 1, 2, 3]))
    with pytest.raises(ValueError, match="expected 4 discrete actions"):
        env.step(np.array([0, 1]))
    with pytest.raises(RuntimeError, match="without step_async"):
        env.step_wait()


def test_invalid_construction_errors() -> None:
    with pytest.raises(ValueError, match="num_envs must be a positive integer"):
        make_torch_vec_env("CartPole-v1", 0)
    with pytest.raises(ValueError, match=r"dtype must be torch\.float32 or torch\.float64"):
        make_torch_vec_env("CartPole-v1", 2, dtype=torch.float16)
    with pytest.raises(ValueError, match="max_episode_steps must be a positive integer"):
        make_torch_vec_env("CartPole-v1", 2, max_episode_steps=0)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            make_torch_vec_env("CartPole-v1", 2, device="cuda")


def test_vec_env_attribute_methods() -> None:
    env = make_torch_vec_env("MountainCar-v0", 3, seed=0)
    assert env.get_attr("max_episode_steps") == [200, 200, 200]
    assert env.get_attr("render_mode", indices=[1]) == [None]
    assert env.has_attr("state") and not env.has_attr("no_such_attribute")
    env.set_attr("max_episode_steps", 50)
    assert env.max_episode_steps == 50
    with pytest.raises(ValueError, match="acts on all copies at once"):
        env.set_attr("max_episode_steps", 10, indices=[0])
    assert env.env_is_wrapped(Monitor) == [False, False, False]
    assert len(env.env_method("episode_summary")) == 3
    with pytest.raises(ValueError, match="acts on all copies at once"):
        env.env_method("reset", indices=0)
    env.set_options({"low": -0.1})
    with pytest.raises(ValueError, match="takes no reset options"):
        env.reset()
    env.close()


def test_sb3_wrappers_and_ppo_run() -> None:
    env = VecNormalize(VecMonitor(make_torch_vec_env("CartPole-v1", 4, seed=0)))
    model = PPO("MlpPolicy", env, n_steps=32, batch_size=64, n_epochs=2, seed=0, device="cpu")
    model.learn(total_timesteps=256)
    assert model.num_timesteps == 256
    assert len(model.ep_info_buffer) > 0
    assert np.isfinite(env.obs_rms.mean).all() and env.obs_rms.count > 256


def test_ppo_runs_on_continuous_torch_env() -> None:
    env = make_torch_vec_env("Pendulum-v1", 2, seed=0, max_episode_steps=50)
    model = PPO("MlpPolicy", env, n_steps=64, batch_size=64, n_epochs=1, seed=0, device="cpu")
    model.learn(total_timesteps=256)
    assert model.num_timesteps == 256
    assert [info["l"] for info in model.ep_info_buffer] == [50] * 4  # 128 steps per copy: two episodes each


def test_torch_envs_registry_is_complete() -> None:
    assert set(TORCH_ENVS) == {*CLASSIC_CONTROL, *envs.REGISTERED_ENVS}
    assert all(issubclass(cls, TorchVecEnv) for cls in TORCH_ENVS.values())
    assert envs.TorchCartPole.gym_id == "CartPole-v1"


@pytest.mark.cuda
@cuda
@pytest.mark.parametrize("env_id", CLASSIC_CONTROL)
def test_cuda_matches_cpu_dynamics(env_id: str) -> None:
    cpu = make_torch_vec_env(env_id, 64, device="cpu", seed=0, dtype=torch.float64)
    gpu = make_torch_vec_env(env_id, 64, device="cuda", seed=0, dtype=torch.float64)
    rng = np.random.default_rng(0)
    for _ in range(50):
        gpu.state = cpu.state.to("cuda")
        gpu.episode_steps = cpu.episode_steps.to("cuda")
        actions = torch.as_tensor(random_actions(cpu, rng))
        if actions.is_floating_point():
            actions = actions.double()
        cpu_result = cpu.step_tensor(actions)
        gpu_result = gpu.step_tensor(actions.to("cuda"))
        assert gpu_result.obs.device.type == "cuda"
        torch.testing.assert_close(gpu.final_obs.cpu(), cpu.final_obs, rtol=1e-9, atol=1e-9)
        torch.testing.assert_close(gpu_result.rewards.cpu(), cpu_result.rewards, rtol=1e-9, atol=1e-9)
        assert torch.equal(gpu_result.terminated.cpu(), cpu_result.terminated)
    assert gpu.episode_summary()["episodes"] == cpu.episode_summary()["episodes"]


@pytest.mark.cuda
@cuda
@pytest.mark.parametrize("env_id", sorted(TORCH_ENVS))
def test_cuda_step_tensor_never_synchronises_with_the_host(env_id: str) -> None:
    env = make_torch_vec_env(env_id, 256, device="cuda", seed=0)
    env.reset_tensor()
    shape = (env.num_envs, *env.action_space.shape)
    discrete = isinstance(env.action_space, gym.spaces.Discrete)
    actions = torch.zeros(shape, device="cuda", dtype=torch.long if discrete else torch.float32)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")  # any synchronising call raises
    try:
        for _ in range(50):  # long enough for the delayed tasks and CartPole to reset some copies
            result = env.step_tensor(actions)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert result.obs.device.type == "cuda" and env.episodes.finished.device.type == "cuda"

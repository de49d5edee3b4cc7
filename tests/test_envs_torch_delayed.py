"""Batched torch versions of the delayed-reward tasks: agreement with the Gymnasium tasks, returns."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from envs import TorchDelayedChain, TorchDelayedParity, make_env, make_torch_vec_env

TASK_KWARGS = [
    ("bsn/DelayedChain-v0", {}),
    ("bsn/DelayedChain-v0", {"length": 3, "key_seed": 7}),
    ("bsn/DelayedParity-v0", {}),
    ("bsn/DelayedParity-v0", {"num_bits": 2, "length": 5}),
]


@pytest.mark.parametrize(("env_id", "kwargs"), TASK_KWARGS)
def test_spaces_match_gymnasium_task(env_id: str, kwargs: dict) -> None:
    env = make_torch_vec_env(env_id, 3, seed=0, env_kwargs=kwargs)
    reference = make_env(env_id, **kwargs)
    assert env.observation_space == reference.observation_space
    assert env.action_space == reference.action_space
    assert env.max_episode_steps == reference.unwrapped.length


@pytest.mark.parametrize(("env_id", "kwargs"), TASK_KWARGS)
def test_steps_match_gymnasium_task(env_id: str, kwargs: dict) -> None:
    """From the same state (step index, correct count, bits) and action, both give the same step."""
    num_envs = 16
    env = make_torch_vec_env(env_id, num_envs, seed=0, dtype=torch.float64, env_kwargs=kwargs)
    references = [make_env(env_id, **kwargs).unwrapped for _ in range(num_envs)]
    for index, reference in enumerate(references):
        reference.reset(seed=index)
    rng = np.random.default_rng(0)
    terminations = 0
    for _ in range(150):
        state = env.state.numpy().copy()
        for row, reference in enumerate(references):
            reference._step_index, reference._correct = int(state[row, 0]), int(state[row, 1])
            if isinstance(env, TorchDelayedParity):
                reference._bits = state[row, 2:].astype(np.int64)
            np.testing.assert_array_equal(env._observe(env.state)[row].numpy(), reference._observation())
        actions = rng.integers(0, 2, size=num_envs)
        result = env.step_tensor(torch.as_tensor(actions))
        for row, reference in enumerate(references):
            obs, reward, terminated, truncated, _ = reference.step(int(actions[row]))
            assert reward == pytest.approx(float(result.rewards[row]), abs=1e-12)
            assert terminated == bool(result.terminated[row]) and not truncated
            if isinstance(env, TorchDelayedChain):  # the parity task's next bits are drawn independently
                np.testing.assert_array_equal(env.final_obs[row].numpy(), obs)
            terminations += int(terminated)
    assert terminations > num_envs


@pytest.mark.parametrize("env_id", ["bsn/DelayedChain-v0", "bsn/DelayedParity-v0"])
def test_optimal_and_random_returns(env_id: str) -> None:
    env = make_torch_vec_env(env_id, 256, seed=0)
    env.reset_tensor()
    for _ in range(env.length):
        targets = env._targets(env.state[:, 0], env.state[:, 2:])
        env.step_tensor(targets)
    assert env.episode_summary() == {"episodes": 256, "ep_rew_mean": 1.0, "ep_len_mean": float(env.length)}
    env.episodes.clear()
    generator = torch.Generator().manual_seed(0)
    episodes = 40
    for _ in range(episodes * env.length):
        env.step_tensor(torch.randint(0, 2, (256,), generator=generator))
    summary = env.episodes.summary()
    window = env.episodes.window
    standard_error = 0.5 / np.sqrt(env.length * window)  # the window averages `window` episodes
    assert summary.episodes == 256 * episodes
    assert abs(summary.mean_return - 0.5) < 4 * standard_error


def test_chain_observation_is_one_hot_then_zero() -> None:
    env = TorchDelayedChain(2, length=3, seed=0)
    observations = [env.reset_tensor()]
    for _ in range(3):
        observations.append(env.step_tensor(torch.zeros(2, dtype=torch.long)).obs)
    for step in range(3):
        assert torch.equal(observations[step], torch.eye(3)[step].expand(2, 3))
    assert not env.final_obs.any()  # terminal observation: all zeros, as in the Gymnasium task
    assert torch.equal(observations[3], torch.eye(3)[0].expand(2, 3))  # auto-reset


def test_invalid_task_arguments() -> None:
    with pytest.raises(ValueError, match="num_bits must be a positive integer"):
        TorchDelayedParity(2, num_bits=0)
    with pytest.raises(ValueError, match="length must be a positive integer"):
        make_torch_vec_env("bsn/DelayedChain-v0", 2, env_kwargs={"length": -1})

"""Delayed-reward tasks: Gymnasium API compliance, reward timing, optimal and random returns, learnability."""

from __future__ import annotations

import itertools
import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import envs
from envs import DelayedChainEnv, DelayedParityEnv, DelayedRewardEnv
from envs.delayed import chain_key

TASKS = sorted(envs.REGISTERED_ENVS)


def optimal_action(env: DelayedRewardEnv) -> int:
    """The correct action at the current step, read from the task's definition (not from the env)."""
    if isinstance(env, DelayedChainEnv):
        return int(chain_key(env.length, env.key_seed)[env._step_index])
    assert isinstance(env, DelayedParityEnv)
    return int((env._observation() > 0).sum()) % 2  # spins: +1 encodes bit 1


def run_episode(env: DelayedRewardEnv, policy, seed: int) -> list[float]:
    """Rewards of one episode of ``policy(env, obs) -> action``."""
    obs, _ = env.reset(seed=seed)
    rewards, terminated = [], False
    while not terminated:
        obs, reward, terminated, truncated, _ = env.step(policy(env, obs))
        assert not truncated
        rewards.append(reward)
    return rewards


@pytest.mark.parametrize("env_id", TASKS)
@pytest.mark.parametrize("kwargs", [{}, {"length": 1}, {"length": 25}])
def test_check_env_passes_without_warnings(env_id: str, kwargs: dict) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        env = gym.make(env_id, **kwargs)
        check_env(env.unwrapped)
    assert [str(w.message) for w in caught] == []


@pytest.mark.parametrize("env_id", TASKS)
def test_optimal_policy_earns_one_only_at_the_last_step(env_id: str) -> None:
    env = gym.make(env_id).unwrapped
    for seed in range(5):
        rewards = run_episode(env, lambda e, _: optimal_action(e), seed)
        assert len(rewards) == env.length
        assert rewards[:-1] == [0.0] * (env.length - 1)
        assert rewards[-1] == 1.0


@pytest.mark.parametrize("env_id", TASKS)
def test_wrong_policy_earns_zero_and_reports_failure(env_id: str) -> None:
    env = gym.make(env_id).unwrapped
    env.reset(seed=0)
    info: dict = {}
    for _ in range(env.length):
        _, reward, _, _, info = env.step(1 - optimal_action(env))
    assert reward == 0.0 and info["correct"] == 0 and info["is_success"] is False


@pytest.mark.parametrize("env_id", TASKS)
def test_random_policy_earns_one_half(env_id: str) -> None:
    env = gym.make(env_id).unwrapped
    rng = np.random.default_rng(0)
    episodes = 2000
    returns = [sum(run_episode(env, lambda *_: int(rng.integers(2)), seed)) for seed in range(episodes)]
    # Each return is a mean of `length` fair coin flips: standard error 0.5 / sqrt(length * episodes).
    standard_error = 0.5 / np.sqrt(env.length * episodes)
    assert abs(np.mean(returns) - 0.5) < 4 * standard_error


def test_reward_is_fraction_of_correct_decisions() -> None:
    env = DelayedChainEnv(length=4, key_seed=3)
    env.reset(seed=0)
    key = chain_key(4, 3)
    decisions = [key[0], 1 - key[1], key[2], key[3]]  # three of four correct
    rewards = [env.step(int(a))[1] for a in decisions]
    assert rewards == [0.0, 0.0, 0.0, 0.75]


def test_chain_observation_and_key() -> None:
    env = DelayedChainEnv(length=6, key_seed=5)
    obs, _ = env.reset(seed=123)
    np.testing.assert_array_equal(obs, np.eye(6, dtype=np.float32)[0])
    for step in range(1, 6):
        obs, *_ = env.step(0)
        np.testing.assert_array_equal(obs, np.eye(6, dtype=np.float32)[step])
    obs, _, terminated, _, _ = env.step(0)
    assert terminated and not obs.any()
    # The key belongs to the task, not to the episode: reset seeds do not change it.
    env.reset(seed=999)
    np.testing.assert_array_equal(env.key, chain_key(6, 5))
    assert not np.array_equal(chain_key(32, 0), chain_key(32, 1))


def test_parity_target_and_independence_of_strict_subsets() -> None:
    num_bits = 3
    env = DelayedParityEnv(num_bits=num_bits)
    env.reset(seed=0)
    table = {}
    for bits in itertools.product([0, 1], repeat=num_bits):
        env._bits = np.array(bits)
        assert env._target() == sum(bits) % 2
        table[bits] = env._target()
    # Every strict subset of the bits leaves the answer a fair coin: no single bit (or pair) is informative.
    for size in range(num_bits):
        for subset in itertools.combinations(range(num_bits), size):
            for values in itertools.product([0, 1], repeat=size):
                matching = [
                    t for bits, t in table.items() if all(bits[i] == v for i, v in zip(subset, values, strict=True))
                ]
                assert np.mean(matching) == 0.5


def test_xor_is_not_a_linear_threshold() -> None:
    """The reason DelayedParity needs hidden units: no w, b put the four XOR inputs on the right sides.

    For a threshold ``1[w . x + b > 0]`` to output XOR: ``b <= 0`` (input 00), ``w1 + b > 0`` and
    ``w2 + b > 0`` (01, 10), ``w1 + w2 + b <= 0`` (11). Adding the middle two gives ``w1 + w2 + 2b > 0``,
    i.e. ``w1 + w2 + b > -b >= 0``: a contradiction. Checked here on a dense grid of (w1, w2, b).
    """
    grid = np.linspace(-3, 3, 61)
    w1, w2, b = np.meshgrid(grid, grid, grid, indexing="ij")
    inputs = [(0, 0), (0, 1), (1, 0), (1, 1)]
    correct = sum(((w1 * x1 + w2 * x2 + b) > 0) == bool(x1 ^ x2) for x1, x2 in inputs)
    assert correct.max() == 3


def test_parity_seeding_is_deterministic() -> None:
    def observations(seed: int) -> np.ndarray:
        env = DelayedParityEnv(num_bits=4, length=6)
        obs = [env.reset(seed=seed)[0]]
        obs += [env.step(0)[0] for _ in range(5)]
        return np.stack(obs)

    np.testing.assert_array_equal(observations(3), observations(3))
    assert not np.array_equal(observations(3), observations(4))


def test_render_rgb_array() -> None:
    env = DelayedParityEnv(num_bits=2, render_mode="rgb_array")
    env.reset(seed=0)
    image = env.render()
    assert image.dtype == np.uint8 and image.shape == (2 * env.cell_pixels, 2 * env.cell_pixels, 3)
    assert DelayedChainEnv().render() is None


def test_invalid_arguments_and_misuse() -> None:
    with pytest.raises(ValueError, match="length must be a positive integer"):
        DelayedChainEnv(length=0)
    with pytest.raises(ValueError, match="num_bits must be a positive integer"):
        DelayedParityEnv(num_bits=1.5)
    with pytest.raises(ValueError, match="render_mode must be None or 'rgb_array'"):
        DelayedParityEnv(render_mode="human")
    env = DelayedChainEnv(length=1)
    env.reset(seed=0)
    with pytest.raises(ValueError, match="action must be 0 or 1"):
        env.step(2)
    env.step(0)
    with pytest.raises(RuntimeError, match="call reset"):
        env.step(0)


def ppo_evaluation_return(env_id: str, total_timesteps: int, seed: int = 0) -> float:
    """Mean deterministic return of SB3 PPO (MlpPolicy, undiscounted Monte-Carlo advantages) after training."""
    from stable_baselines3 import PPO
    from stable_baselines3.common.evaluation import evaluate_policy

    model = PPO(
        "MlpPolicy",
        envs.make_vec_env(env_id, n_envs=8, seed=seed),
        n_steps=128,
        batch_size=256,
        n_epochs=4,
        gamma=1.0,
        gae_lambda=1.0,
        learning_rate=1e-3,
        seed=seed,
        device="cpu",
    )
    model.learn(total_timesteps=total_timesteps)
    mean_return, _ = evaluate_policy(model, envs.make_vec_env(env_id, n_envs=2, seed=seed + 100), n_eval_episodes=20)
    return float(mean_return)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("env_id", "total_timesteps"), [("bsn/DelayedChain-v0", 20_000), ("bsn/DelayedParity-v0", 60_000)]
)
def test_ppo_reaches_the_optimal_return(env_id: str, total_timesteps: int) -> None:
    """Both tasks are solvable from their delayed reward: SB3 PPO reaches the optimal return 1.0 (~5-15 s each)."""
    assert ppo_evaluation_return(env_id, total_timesteps) == 1.0

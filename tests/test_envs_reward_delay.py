"""Reward delay: same episode returns as the dense task for any actions, payments only when due, the Gymnasium
wrapper and the torch implementation agree, Monitor and the torch env's episode info keep the true return."""

from __future__ import annotations

import re

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces
from gymnasium.utils.env_checker import check_env as gymnasium_check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env
from stable_baselines3.common.monitor import Monitor

from bsn_zoo.cli_errors import UserInputError
from bsn_zoo.config import env_wrappers, torch_env_options
from envs import RewardDelay, TimeFeature, TorchRewardDelay, delay_period, make_torch_vec_env, make_vec_env

DELAYS = [1, 3, 50, "episode"]


def paid_episodes(env: gym.Env, actions: np.random.Generator, episodes: int) -> list[tuple[list[float], int]]:
    """Run ``episodes`` episodes with random actions; per episode, the paid rewards and its length."""
    out = []
    for episode in range(episodes):
        env.reset(seed=100 + episode)
        rewards: list[float] = []
        done = False
        while not done:
            _, reward, terminated, truncated, _ = env.step(int(actions.integers(env.action_space.n)))
            rewards.append(float(reward))
            done = terminated or truncated
        out.append((rewards, len(rewards)))
    return out


def expected_payments(dense: list[float], period: int) -> list[float]:
    """The payments of the docstring's formula, written out: accumulate, pay at k, 2k, ... and at the end."""
    paid, pending = [], 0.0
    for step, reward in enumerate(dense, start=1):
        pending += reward
        due = step == len(dense) or (period > 0 and step % period == 0)
        paid.append(pending if due else 0.0)
        pending = 0.0 if due else pending
    return paid


@pytest.mark.parametrize("delay", DELAYS)
@pytest.mark.parametrize("env_id", ["CartPole-v1", "Acrobot-v1", "MountainCar-v0"])
def test_delayed_task_pays_the_dense_return_at_the_payment_steps(env_id: str, delay: int | str) -> None:
    """Same seeds and actions: identical episodes, the same return, and each payment where the formula puts it
    (MountainCar-v0 episodes are truncated at 200 steps: the remainder is paid at the truncation)."""
    dense = paid_episodes(gym.make(env_id), np.random.default_rng(0), 3)
    delayed = paid_episodes(RewardDelay(gym.make(env_id), delay), np.random.default_rng(0), 3)
    for (dense_rewards, dense_length), (paid, length) in zip(dense, delayed, strict=True):
        assert length == dense_length
        assert sum(paid) == pytest.approx(sum(dense_rewards))
        assert paid == pytest.approx(expected_payments(dense_rewards, delay_period(delay)))
    if delay == "episode":
        assert all(reward == 0.0 for paid, _ in delayed for reward in paid[:-1])


@pytest.mark.filterwarnings("ignore:.*different from the unwrapped version")
@pytest.mark.parametrize("delay", [7, "episode"])
def test_wrapper_passes_gymnasium_and_sb3_env_checks(delay: int | str) -> None:
    gymnasium_check_env(RewardDelay(gym.make("LunarLander-v3").unwrapped, delay), skip_render_check=True)
    sb3_check_env(RewardDelay(gym.make("CartPole-v1"), delay))


def test_monitor_inside_the_delay_logs_the_true_return() -> None:
    """make_vec_env puts the delay outside each copy's Monitor: info["episode"] is the dense episode's."""
    dense = make_vec_env("Acrobot-v1", 2, seed=3)
    delayed = make_vec_env("Acrobot-v1", 2, seed=3, reward_delay="episode")
    assert isinstance(delayed.envs[0], RewardDelay) and isinstance(delayed.envs[0].env, Monitor)
    dense.reset(), delayed.reset()
    rng = np.random.default_rng(1)
    paid_sum, seen = np.zeros(2), 0
    for _ in range(1200):
        actions = rng.integers(3, size=2)
        _, _, dense_dones, dense_infos = dense.step(actions)
        _, paid, dones, infos = delayed.step(actions)
        paid_sum += paid
        np.testing.assert_array_equal(dones, dense_dones)
        for index in np.flatnonzero(dones):
            assert infos[index]["episode"]["r"] == dense_infos[index]["episode"]["r"] == paid_sum[index]
            paid_sum[index], seen = 0.0, seen + 1
        assert np.all(paid[~dones] == 0.0)
    assert seen >= 2


def test_factory_applies_the_delay_after_the_users_wrapper_and_checks_it_first() -> None:
    clip = lambda env: gym.wrappers.ClipReward(env, -1.0, 1.0)  # noqa: E731
    venv = make_vec_env("CartPole-v1", 1, reward_delay=5, wrapper_class=clip)
    assert isinstance(venv.envs[0], RewardDelay) and isinstance(venv.envs[0].env, gym.wrappers.ClipReward)
    for bad in (0, -2, 2.5, True, "end"):
        with pytest.raises(ValueError, match="reward delay must be an integer number of steps >= 1 or 'episode'"):
            make_vec_env("CartPole-v1", 1, reward_delay=bad)
        with pytest.raises(ValueError, match="reward delay must be"):
            make_vec_env("CartPole-v1", 1, backend="torch", reward_delay=bad)


@pytest.mark.parametrize("delay", DELAYS)
def test_torch_delay_agrees_with_the_wrapper_step_by_step(delay: int | str) -> None:
    """The same dense rewards and episode ends through both implementations give the same payments."""
    rng = np.random.default_rng(2)
    num_envs, steps = 4, 400
    rewards = rng.normal(size=(steps, num_envs))
    done = rng.random((steps, num_envs)) < 0.03

    class Replay(gym.Env):
        """Replays one column of ``rewards`` / ``done``."""

        observation_space = gym.spaces.Box(-1.0, 1.0, (1,))
        action_space = gym.spaces.Discrete(2)

        def __init__(self, column: int) -> None:
            self.column, self.t = column, 0

        def reset(self, **kwargs):  # type: ignore[no-untyped-def]
            return np.zeros(1, np.float32), {}

        def step(self, action):  # type: ignore[no-untyped-def]
            t, self.t = self.t, self.t + 1
            return np.zeros(1, np.float32), rewards[t, self.column], bool(done[t, self.column]), False, {}

    wrappers = [RewardDelay(Replay(column), delay) for column in range(num_envs)]
    for wrapper in wrappers:
        wrapper.reset()
    batch = TorchRewardDelay(num_envs, delay, torch.device("cpu"), torch.float64)
    episode_steps = torch.zeros(num_envs, dtype=torch.long)
    for t in range(steps):
        episode_steps += 1
        paid = batch.pay(torch.as_tensor(rewards[t]), torch.as_tensor(done[t]), episode_steps)
        episode_steps = episode_steps.masked_fill(torch.as_tensor(done[t]), 0)
        expected = []
        for wrapper in wrappers:
            _, reward, terminated, _, _ = wrapper.step(0)
            expected.append(reward)
            if terminated:
                wrapper.reset()
        np.testing.assert_allclose(paid.numpy(), expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("env_id", ["CartPole-v1", "Acrobot-v1", "MountainCar-v0"])
def test_torch_env_pays_late_and_keeps_true_returns(env_id: str) -> None:
    """Same seed and actions: same observations and episode infos as the dense torch env; the paid rewards are
    the dense ones accumulated per the formula (checked through their per-episode sums and zero steps)."""
    dense = make_torch_vec_env(env_id, 3, seed=4)
    delayed = make_torch_vec_env(env_id, 3, seed=4, reward_delay="episode")
    np.testing.assert_array_equal(dense.reset(), delayed.reset())
    rng = np.random.default_rng(5)
    dense_sum, paid_sum, finished = np.zeros(3), np.zeros(3), 0
    for _ in range(700):
        actions = rng.integers(int(dense.action_space.n), size=3)
        obs_dense, rewards, dones, infos_dense = dense.step(actions)
        obs, paid, dones_delayed, infos = delayed.step(actions)
        np.testing.assert_array_equal(obs, obs_dense)
        np.testing.assert_array_equal(dones, dones_delayed)
        dense_sum += rewards
        paid_sum += paid
        assert np.all(paid[~dones] == 0.0)
        for index in np.flatnonzero(dones):
            episode, dense_episode = infos[index]["episode"], infos_dense[index]["episode"]
            assert (episode["r"], episode["l"]) == (dense_episode["r"], dense_episode["l"])
            assert paid_sum[index] == pytest.approx(dense_sum[index]) == pytest.approx(infos[index]["episode"]["r"])
            dense_sum[index] = paid_sum[index] = 0.0
            finished += 1
    assert finished >= 3
    assert delayed.episode_summary()["ep_rew_mean"] == pytest.approx(dense.episode_summary()["ep_rew_mean"])


def test_torch_env_reset_forgets_unpaid_reward() -> None:
    env = make_torch_vec_env("CartPole-v1", 2, seed=0, reward_delay="episode")
    env.reset()
    env.step(np.zeros(2, dtype=np.int64))
    assert torch.all(env.reward_delay.pending == 1.0)
    env.reset()
    assert torch.all(env.reward_delay.pending == 0.0)


def test_env_wrapper_setting_reaches_the_torch_backend_as_its_own_options() -> None:
    delayed = env_wrappers(["envs.TimeFeature", {"envs.RewardDelay": {"delay": 50}}])
    assert torch_env_options(delayed) == {"time_feature": True, "reward_delay": 50}
    assert torch_env_options(env_wrappers(["envs.RewardDelay"])) == {"reward_delay": "episode"}
    assert torch_env_options(None) == {}
    with pytest.raises(UserInputError, match=r"does not apply to the torch backend, which takes envs\.RewardDelay"):
        torch_env_options(env_wrappers(["gymnasium.wrappers.FlattenObservation"]))
    with pytest.raises(UserInputError, match="does not apply to the torch backend"):
        torch_env_options(env_wrappers([{"envs.TimeFeature": {"max_episode_steps": 9}}]))
    with pytest.raises(UserInputError, match="keep one"):
        torch_env_options(env_wrappers(["envs.RewardDelay", {"envs.RewardDelay": {"delay": 3}}]))
    with pytest.raises(UserInputError, match=re.escape("cannot take {'dela': 5}")):
        env_wrappers([{"envs.RewardDelay": {"dela": 5}}])
    with pytest.raises(UserInputError, match="got 'soon'"):
        env_wrappers([{"envs.RewardDelay": {"delay": "soon"}}])


@pytest.mark.parametrize("env_id", ["CartPole-v1", "MountainCar-v0"])
def test_time_feature_counts_down_the_time_limit_alike_on_both_backends(env_id: str) -> None:
    """Same seed and actions: the last coordinate is 1 - t / limit on the Gymnasium wrapper and the torch env,
    1 after a reset, and the other coordinates are the task's."""
    gym_env = TimeFeature(gym.make(env_id))
    limit = gym.spec(env_id).max_episode_steps
    assert gym_env.observation_space.shape == (gym.make(env_id).observation_space.shape[0] + 1,)
    assert gym_env.observation_space.low[-1] == 0.0 and gym_env.observation_space.high[-1] == 1.0
    obs, _ = gym_env.reset(seed=0)
    assert obs[-1] == 1.0
    for t in range(1, 6):
        obs, *_ = gym_env.step(0)
        assert obs[-1] == pytest.approx(1 - t / limit)
    torch_env = make_torch_vec_env(env_id, 2, seed=0, time_feature=True)
    assert torch_env.observation_space == gym_env.observation_space
    plain = make_torch_vec_env(env_id, 2, seed=0)
    np.testing.assert_array_equal(torch_env.reset()[:, :-1], plain.reset())
    steps = 0
    for _ in range(limit + 3):
        obs, _, dones, infos = torch_env.step(np.zeros(2, dtype=np.int64))
        plain_obs, *_ = plain.step(np.zeros(2, dtype=np.int64))
        np.testing.assert_array_equal(obs[:, :-1], plain_obs)
        steps = 0 if dones[0] else steps + 1
        assert obs[0, -1] == pytest.approx(1 - steps / limit)
        if dones[0]:
            assert infos[0]["terminal_observation"][-1] == pytest.approx(
                1 - infos[0]["episode"]["l"] / limit, abs=1e-6
            )


def test_time_feature_refuses_images_and_needs_a_time_limit() -> None:
    with pytest.raises(ValueError, match=r"takes observations without images.*instead of --reward-delay"):
        TimeFeature(gym.make("tests.image_envs:SmallImageDict-v0", max_episode_steps=10))
    with pytest.raises(ValueError, match=r"needs the task's time limit.*max_episode_steps"):
        TimeFeature(gym.make("Blackjack-v1"))
    with pytest.raises(ValueError, match="needs the task's time limit"):
        TimeFeature(gym.make("CartPole-v1").unwrapped)
    assert TimeFeature(gym.make("CartPole-v1").unwrapped, max_episode_steps=10).max_episode_steps == 10


@pytest.mark.filterwarnings("ignore:.*different from the unwrapped version")
@pytest.mark.parametrize(("env_id", "kwargs"), [("FrozenLake-v1", {}), ("Blackjack-v1", {"max_episode_steps": 20})])
def test_time_feature_flattens_observations_that_are_not_a_flat_box(env_id: str, kwargs: dict) -> None:
    """A ``Discrete`` observation becomes its one-hot code, a ``Tuple`` the concatenation of its members' codes;
    the time feature follows, as a float in [0, 1], and the env passes both env checks."""
    env = TimeFeature(gym.make(env_id, **kwargs))
    inner = env.env.observation_space
    assert env.observation_space.shape == (spaces.flatdim(inner) + 1,)
    assert env.observation_space.dtype == np.float32
    obs, _ = env.reset(seed=3)
    raw, _ = gym.make(env_id, **kwargs).reset(seed=3)
    np.testing.assert_array_equal(obs[:-1], spaces.flatten(inner, raw))
    assert obs[-1] == 1.0 and obs[:-1].sum() == (1 if env_id == "FrozenLake-v1" else len(inner.spaces))
    obs, *_ = env.step(0)
    assert obs[-1] == pytest.approx(1 - 1 / env.max_episode_steps)
    gymnasium_check_env(TimeFeature(gym.make(env_id, **kwargs)), skip_render_check=True)
    sb3_check_env(TimeFeature(gym.make(env_id, **kwargs)))


def test_factory_orders_user_wrapper_time_feature_then_delay_outside_monitor() -> None:
    venv = make_vec_env("Acrobot-v1", 1, reward_delay="episode", time_feature=True)
    delay = venv.envs[0]
    assert isinstance(delay, RewardDelay) and isinstance(delay.env, TimeFeature) and isinstance(delay.env.env, Monitor)
    assert venv.observation_space.shape == (7,)

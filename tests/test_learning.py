"""Slow learning checks: LocalPG with the shipped defaults of ``hyperparams/localpg.yml`` solves the task.

Targets: CartPole-v1 reaches a deterministic evaluation mean of 475 within 200k env steps for
at least 4 of 5 seeds; Pendulum-v1 reaches -200 (a swing-up from every start; a random policy scores
about -1200) within its entry's 400k steps for at least 2 of 3 seeds; Acrobot-v1
evaluates to -80 or better over 30 deterministic episodes after 500k steps for at least 2 of 3 seeds
(one evaluation, at the budget: a 10-episode evaluation wanders by +-8, so the best of many would pass by
luck; 9 of 10 seeds of the entry reached -80 in the tuning log's evaluation, "Acrobot-v1:
near-deterministic units"). Each seed stops as soon as a periodic deterministic evaluation reaches the
target, so a seed that learns quickly costs little, and seeds stop being trained once the verdict is decided
(enough seeds passed, or too few are left to pass): the verdict is the one all seeds would give.

The SB3 plug-in route: stock PPO training ``BinaryStochasticPolicy`` with its defaults and RL Zoo's
CartPole-v1 settings (``benchmarks.compare_sb3``'s ``ppo_bsn``) reaches a 20-episode *training* mean of 475
within 200k steps on at least 2 of 3 seeds (5 of 5 in ``benchmarks/results/compare_sb3.md``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.vec_env import VecEnv

from benchmarks.common import ThresholdCallback, evaluate
from benchmarks.compare_sb3 import algo_config, build
from envs import make_vec_env


@dataclass(frozen=True)
class Target:
    """One learning check.

    Attributes:
        env_id: Gymnasium id with an entry in ``hyperparams/localpg.yml``.
        solved: deterministic evaluation mean that counts as solved.
        budget: env steps per seed (> 0; also the horizon of the entry's ``lin_`` schedules).
        seeds: seeds 0..seeds-1 are trained.
        required: seeds that must reach ``solved``.
        eval_freq: env steps between evaluations (> 0).
        n_episodes: deterministic episodes per evaluation (> 0).
    """

    env_id: str
    solved: float
    budget: int
    seeds: int
    required: int
    eval_freq: int
    n_episodes: int


TARGETS = [
    Target("CartPole-v1", 475.0, 200_000, 5, 4, 10_000, 5),
    Target("Pendulum-v1", -200.0, 400_000, 3, 2, 25_000, 10),
    Target("Acrobot-v1", -80.0, 500_000, 3, 2, 500_000, 30),
]


class StopWhenSolved(BaseCallback):
    """Every ``target.eval_freq`` env steps, evaluate deterministically; stop once the mean reaches
    ``target.solved``.

    Args:
        target: the check.
        eval_env: its evaluation env (observation statistics are copied from training if normalised).
    """

    def __init__(self, target: Target, eval_env: VecEnv) -> None:
        super().__init__()
        self.target = target
        self.eval_env = eval_env
        self.next_eval = target.eval_freq
        self.best = float("-inf")

    def _on_step(self) -> bool:
        if self.num_timesteps < self.next_eval:
            return True
        self.next_eval += self.target.eval_freq
        mean = evaluate(self.model, self.eval_env, self.target.n_episodes)
        self.best = max(self.best, mean)
        return mean < self.target.solved


def best_evaluation(target: Target, seed: int) -> float:
    model = build("localpg", target.env_id, seed)
    normalize = bool(algo_config("localpg", target.env_id).get("normalize", False))
    callback = StopWhenSolved(target, make_vec_env(target.env_id, 1, 12345, normalize=normalize))
    model.learn(total_timesteps=target.budget, callback=callback)
    return callback.best


def seeds_passing(run_seed: Callable[[int], tuple[bool, object]], seeds: int, required: int) -> tuple[int, list]:
    """Run seeds 0, 1, ... until whether at least ``required`` of ``seeds`` pass is decided.

    Args:
        run_seed: trains one seed and returns (whether it passed, what to report for it).
        seeds: seeds 0..seeds-1 may be trained (> 0).
        required: seeds that must pass (1..seeds).

    Returns:
        The number of seeds that passed (>= ``required`` iff all ``seeds`` would give at least ``required``) and
        what each trained seed reported.
    """
    passed, reports = 0, []
    for seed in range(seeds):
        ok, report = run_seed(seed)
        passed, reports = passed + ok, [*reports, report]
        if passed >= required or passed + seeds - 1 - seed < required:
            break
    return passed, reports


@pytest.mark.parametrize(
    ("outcomes", "required", "passed", "trained"),
    [
        ([True, False, True, True, False], 2, 2, [0, 1, 2]),  # decided: two passed
        ([True, False, True, True, False], 3, 3, [0, 1, 2, 3]),
        ([True, False, True, True, False], 4, 3, [0, 1, 2, 3, 4]),  # undecided until the last seed
        ([False, False, True, True, True], 4, 0, [0, 1]),  # decided: three seeds left cannot make four
    ],
)
def test_seeds_stop_once_the_verdict_is_decided(
    outcomes: list[bool], required: int, passed: int, trained: list[int]
) -> None:
    assert seeds_passing(lambda seed: (outcomes[seed], seed), len(outcomes), required) == (passed, trained)
    assert (passed >= required) == (sum(outcomes) >= required)


@pytest.mark.slow
@pytest.mark.parametrize("target", TARGETS, ids=[target.env_id for target in TARGETS])
def test_shipped_defaults_solve_the_task(target: Target) -> None:
    def run_seed(seed: int) -> tuple[bool, float]:
        best = best_evaluation(target, seed)
        return best >= target.solved, best

    solved, best = seeds_passing(run_seed, target.seeds, target.required)
    assert solved >= target.required, f"best deterministic evaluation per seed: {best}"


@pytest.mark.slow
def test_stock_ppo_with_the_default_bsn_policy_learns_cartpole() -> None:
    def run_seed(seed: int) -> tuple[bool, int | None]:
        callback = ThresholdCallback(475.0, window=20)
        build("ppo_bsn", "CartPole-v1", seed).learn(total_timesteps=200_000, callback=callback)
        return callback.solved_at is not None, callback.solved_at

    solved, steps = seeds_passing(run_seed, 3, 2)
    assert solved >= 2, f"steps to a training mean of 475 per seed: {steps}"

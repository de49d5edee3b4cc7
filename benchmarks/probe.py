"""Probe one configuration of LocalPG, or of stock PPO / A2C: steps to threshold and final evaluation per seed.

The tool behind ``benchmarks/results/tuning_log.md``. Each run trains under the budget rule of
:class:`benchmarks.common.ThresholdCallback` (stop once the 20-episode training mean reaches the threshold
and at least ``--min-steps`` were taken, else at the budget) and is then evaluated for ``--eval-episodes``
deterministic episodes. ``--checkpoints`` also evaluates during training, at the first step at or after
each given step: what a run stopped there would have scored, learning-rate schedules included (they decay
over ``--budget``; the printed steps/s include the checkpoint evaluations). ``--give-up-at`` stops a run that
has not reached the threshold by then (its schedules still decay over ``--budget``; it counts as unsolved and is
evaluated there): a screen for steps to threshold that does not train the runs that miss it to the end.
``--tuned`` starts from the environment's entry of ``hyperparams/localpg.yml``, the JSON then overrides keys
(``policy_kwargs`` key by key; ``lin_<start>`` schedules accepted); without it the JSON is the whole
configuration. ``--reward-delay`` trains on the delayed task (:class:`envs.RewardDelay`); every reported return
is the true one. ``--time-feature`` adds the remaining fraction of the time limit to the observations of training
and evaluation (:class:`envs.TimeFeature`; always so with ``--reward-delay``).
``--eval-seed-offset 10000`` evaluates on the same episodes as ``compare_sb3``. ``--backend torch`` trains on
the batched torch env (:data:`envs.TORCH_ENVS`; no ``VecNormalize``) and still evaluates on Gymnasium's; the
training mean is then checked once per rollout. ``--algo ppo`` / ``--algo a2c`` train stock SB3 PPO / A2C with
``BinaryStochasticPolicy`` instead; ``--tuned`` then starts from RL Zoo's settings (as ``compare_sb3``'s
``ppo_bsn`` / ``a2c_bsn``). With ``--policy mlp`` they train SB3's back-propagated ``MlpPolicy`` instead: the
reference of ``compare_sb3`` and ``delayed`` (``--tuned``: RL Zoo's settings as those benchmarks use them, with
``--reward-delay`` updated by ``hyperparams/<algo>_delayed.yml``).

Usage::

    nice python -m benchmarks.probe CartPole-v1 '{"n_steps": 16, "policy_kwargs": {"net_arch": [128]}}' \\
        --seeds 0 1 2 --budget 100000 --threshold 475
    nice python -m benchmarks.probe Acrobot-v1 '{"learning_rate": "lin_3e-3"}' --tuned --seeds 0 1 2 3 4 \\
        --budget 500000 --threshold -100 --min-steps 100000 --eval-episodes 10 --eval-seed-offset 10000 \\
        --checkpoints 100000 200000
    nice python -m benchmarks.probe CartPole-v1 '{"policy_kwargs": {"bsn_init_gain": 32}}' --algo ppo --tuned \
        --seeds 0 1 2 3 4 --budget 200000 --threshold 475 --eval-episodes 10 --eval-seed-offset 10000
    nice python -m benchmarks.probe MountainCar-v0 '{"gamma": 0.999, "gae_lambda": 1.0}' --algo ppo --policy mlp \
        --tuned --reward-delay 50 --seeds 200 201 --budget 500000 --threshold -110 --eval-episodes 10 \
        --eval-seed-offset 10000
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from stable_baselines3 import A2C, PPO
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback, CallbackList
from stable_baselines3.common.vec_env import VecEnv

import envs
from agents.localpg import LocalPG
from benchmarks.common import ThresholdCallback, benchmark_settings, evaluate, load_delayed_reward_entry, load_tuned
from benchmarks.compare_sb3 import PLUGINS, TUNED_PATH, algo_config
from bsn_zoo.config import merge, resolve_schedules
from policies import BinaryStochasticPolicy


class CheckpointEvaluations(BaseCallback):
    """Evaluates the model at the first step at or after each checkpoint, without changing its training.

    Args:
        checkpoints: env steps to evaluate at (any order; > 0).
        make_eval_env: builds a fresh evaluation env (its statistics are taken from the training env).
        n_episodes: episodes per evaluation (> 0).
        stochastic: also evaluate with sampled hidden units and actions.
    """

    def __init__(
        self, checkpoints: Sequence[int], make_eval_env: Any, n_episodes: int, stochastic: bool = False
    ) -> None:
        super().__init__()
        self.pending = sorted(checkpoints)
        self.make_eval_env = make_eval_env
        self.n_episodes = n_episodes
        self.stochastic = stochastic
        #: checkpoint -> (deterministic mean, stochastic mean or nan).
        self.results: dict[int, tuple[float, float]] = {}

    def _on_step(self) -> bool:
        while self.pending and self.num_timesteps >= self.pending[0]:
            checkpoint = self.pending.pop(0)
            self.results[checkpoint] = evaluate_both(self.model, self.make_eval_env, self.n_episodes, self.stochastic)
            deterministic, stochastic = self.results[checkpoint]
            # Printed as it happens, so that a run stopped early (a time limit) still shows its checkpoints.
            print(f"  at {self.num_timesteps} steps: eval {deterministic:.1f} (stochastic {stochastic:.1f})",
                  flush=True)
        return True


class GiveUp(BaseCallback):
    """Stops training at the first step at or after ``steps`` unless the run has reached its threshold.

    Args:
        threshold: the run's :class:`benchmarks.common.ThresholdCallback` (listed before this callback).
        steps: env steps after which an unsolved run stops (> 0).
    """

    def __init__(self, threshold: ThresholdCallback, steps: int) -> None:
        super().__init__()
        self.threshold = threshold
        self.steps = int(steps)

    def _on_step(self) -> bool:
        return self.threshold.solved_at is not None or self.num_timesteps < self.steps


def evaluate_both(model: BaseAlgorithm, make_eval_env: Any, n_episodes: int, stochastic: bool) -> tuple[float, float]:
    """Deterministic mean return (:func:`benchmarks.common.evaluate`) and, if ``stochastic``, the mean with
    sampled hidden units and actions on the same episodes (else nan)."""
    deterministic = evaluate(model, make_eval_env(), n_episodes)
    if not stochastic:
        return deterministic, float("nan")
    return deterministic, evaluate(model, make_eval_env(), n_episodes, deterministic=False)


def probe_config(
    env_id: str,
    overrides: dict[str, Any],
    tuned: bool,
    algo: str = "localpg",
    delayed: bool = False,
    policy: str = "bsn",
) -> dict[str, Any]:
    """The run's configuration: the shipped one (LocalPG's tuned entry, or RL Zoo's settings for ``ppo`` /
    ``a2c``, as ``compare_sb3`` uses them for the BSN plug-in (``policy="bsn"``) or for ``MlpPolicy``
    (``policy="mlp"``); with ``delayed``, updated by the algorithm's entry of ``hyperparams/<algo>_delayed.yml`` for
    ``env_id``, as ``train.py --reward-delay`` does) updated by ``overrides`` (nested mappings such as
    ``policy_kwargs`` key by key, as ``train.py -params`` does), or ``overrides`` alone."""
    if not tuned:
        base: dict[str, Any] = {}
    elif algo == "localpg":
        base = benchmark_settings(load_tuned(TUNED_PATH, env_id))
    else:
        base = algo_config(algo if policy == "mlp" else f"{algo}_bsn", env_id)
    if tuned and delayed:
        base = merge(base, load_delayed_reward_entry(algo, env_id))
    return merge(base, resolve_schedules(overrides))


def build_model(algo: str, env: VecEnv, seed: int, config: dict[str, Any], policy: str = "bsn") -> BaseAlgorithm:
    """LocalPG, or stock PPO / A2C with ``BinaryStochasticPolicy`` (``policy="bsn"``) or SB3's ``MlpPolicy``
    (``policy="mlp"``), seeded, on ``env``."""
    if algo == "localpg":
        return LocalPG("BsnPolicy", env, seed=seed, **config)
    algorithm = PPO if algo == "ppo" else A2C
    return algorithm("MlpPolicy" if policy == "mlp" else BinaryStochasticPolicy, env, seed=seed, **config)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("env_id", help="Gymnasium id")
    parser.add_argument("config", help="JSON object of the algorithm's arguments, plus n_envs (default 8), normalize")
    parser.add_argument(
        "--algo",
        choices=["localpg", *sorted(PLUGINS.values())],
        default="localpg",
        help="LocalPG, or stock PPO / A2C (training the policy of --policy)",
    )
    parser.add_argument(
        "--policy",
        choices=["bsn", "mlp"],
        default="bsn",
        help="with --algo ppo / a2c: BinaryStochasticPolicy (bsn), or SB3's back-propagated MlpPolicy (mlp)",
    )
    parser.add_argument(
        "--tuned", action="store_true", help="start from hyperparams/localpg.yml's entry (ppo, a2c: RL Zoo's settings)"
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--budget", type=int, default=100_000, help="env steps per run (> 0)")
    parser.add_argument("--threshold", type=float, required=True, help="solved 20-episode training mean")
    parser.add_argument("--min-steps", type=int, default=0, help="train at least this many steps once solved")
    parser.add_argument("--eval-episodes", type=int, default=5, help="deterministic evaluation episodes (> 0)")
    parser.add_argument("--eval-seed-offset", type=int, default=1000, help="eval env seed = offset + seed")
    parser.add_argument("--checkpoints", type=int, nargs="*", default=[], help="also evaluate at these steps")
    parser.add_argument(
        "--give-up-at", type=int, default=None, help="stop a run still below the threshold at this step (<= --budget)"
    )
    parser.add_argument("--stochastic", action="store_true", help="also evaluate with sampled units and actions")
    parser.add_argument(
        "--backend",
        choices=["gymnasium", "torch"],
        default="gymnasium",
        help="train on Gymnasium envs (DummyVecEnv) or on the batched torch env (evaluation: Gymnasium)",
    )
    parser.add_argument(
        "--reward-delay",
        type=lambda text: text if text == envs.EPISODE else int(text),
        default=None,
        help="train with the reward paid every K steps, or 'episode' (envs.RewardDelay); evaluation: true return",
    )
    parser.add_argument(
        "--time-feature",
        action="store_true",
        help="observe the remaining fraction of the time limit (envs.TimeFeature; always on with --reward-delay)",
    )
    args = parser.parse_args(argv)
    if args.budget <= 0 or args.eval_episodes <= 0 or not 0 <= args.min_steps <= args.budget:
        parser.error("--budget and --eval-episodes must be > 0 and 0 <= --min-steps <= --budget")
    if any(not 0 < step <= args.budget for step in args.checkpoints):
        parser.error("--checkpoints must lie in (0, --budget]")
    if args.give_up_at is not None and not 0 < args.give_up_at <= args.budget:
        parser.error("--give-up-at must lie in (0, --budget]")
    if args.policy == "mlp" and args.algo == "localpg":
        parser.error("--policy mlp needs --algo ppo or --algo a2c (LocalPG trains BSN policies only)")
    torch.set_num_threads(1)
    delayed = args.reward_delay is not None
    time_feature = delayed or args.time_feature
    config = probe_config(args.env_id, json.loads(args.config), args.tuned, args.algo, delayed, args.policy)
    n_envs = int(config.pop("n_envs", 8))
    normalize = bool(config.pop("normalize", False))
    gamma = float(config.get("gamma", 0.99))
    solved: list[int] = []
    finals: list[float] = []
    by_checkpoint: dict[int, list[float]] = {step: [] for step in sorted(args.checkpoints)}
    if args.backend == "torch" and normalize:
        parser.error("--backend torch trains without VecNormalize; set normalize to false in the configuration")
    for seed in args.seeds:
        if args.backend == "torch":
            train_env = envs.make_vec_env(
                args.env_id, n_envs, seed, backend="torch", reward_delay=args.reward_delay, time_feature=time_feature
            )
        else:
            train_env = envs.make_vec_env(
                args.env_id,
                n_envs,
                seed,
                normalize=normalize,
                gamma=gamma,
                reward_delay=args.reward_delay,
                time_feature=time_feature,
            )
        model = build_model(args.algo, train_env, seed, config, args.policy)

        def eval_env(seed: int = seed) -> VecEnv:
            return envs.make_vec_env(
                args.env_id,
                1,
                args.eval_seed_offset + seed,
                normalize=normalize,
                gamma=gamma,
                time_feature=time_feature,
            )

        threshold = ThresholdCallback(args.threshold, 20, args.min_steps)
        checkpoints = CheckpointEvaluations(args.checkpoints, eval_env, args.eval_episodes, args.stochastic)
        callbacks: list[BaseCallback] = [threshold, checkpoints]
        if args.give_up_at is not None:
            callbacks.append(GiveUp(threshold, args.give_up_at))
        start = time.perf_counter()
        model.learn(total_timesteps=args.budget, callback=CallbackList(callbacks))
        steps_per_second = model.num_timesteps / (time.perf_counter() - start)
        final, final_stochastic = evaluate_both(model, eval_env, args.eval_episodes, args.stochastic)
        last = threshold.curve[-1][1] if threshold.curve else float("nan")
        solved.append(threshold.solved_at if threshold.solved_at is not None else args.budget)
        finals.append(final)
        for step, (deterministic, _stochastic) in checkpoints.results.items():
            by_checkpoint[step].append(deterministic)
        marks = " ".join(f"@{step} {det:.1f}/{sto:.1f}" for step, (det, sto) in checkpoints.results.items())
        print(
            f"seed {seed}: solved_at {threshold.solved_at} steps {model.num_timesteps} last_mean {last:.0f} "
            f"eval {final:.1f} (stochastic {final_stochastic:.1f}) {steps_per_second:.0f} sps {marks}".rstrip(),
            flush=True,
        )
    print(f"median steps to threshold (budget if unsolved): {np.median(solved):.0f}")
    print(f"final eval per seed {', '.join(f'{v:.1f}' for v in finals)}; median {np.median(finals):.1f}")
    for step, values in by_checkpoint.items():
        # A run that stopped earlier (solved and past --min-steps) has no evaluation at a later checkpoint.
        median = f"median {np.median(values):.1f}" if values else "no run reached it"
        print(f"eval at {step}, {len(values)} of {len(args.seeds)} seeds: {', '.join(f'{v:.1f}' for v in values)}; "
              f"{median}")


if __name__ == "__main__":
    main()

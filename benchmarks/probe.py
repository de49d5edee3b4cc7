"""Probe one LocalPG configuration: steps to threshold and final deterministic evaluation per seed.

The tool behind ``benchmarks/results/tuning_log.md``: each run stops as soon as the 20-episode training
mean reaches the threshold (or at the budget) and is then evaluated for 5 deterministic episodes.

Usage::

    nice python -m benchmarks.probe CartPole-v1 '{"n_steps": 16, "policy_kwargs": {"net_arch": [128]}}' \\
        --seeds 0 1 2 --budget 100000 --threshold 475
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch

from agents.localpg import LocalPG
from benchmarks.common import train_until
from benchmarks.compare_sb3 import make_env


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("env_id", help="Gymnasium id")
    parser.add_argument("config", help="JSON object of LocalPG arguments, plus n_envs (default 8) and normalize")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--budget", type=int, default=100_000, help="env steps per run (> 0)")
    parser.add_argument("--threshold", type=float, required=True, help="solved 20-episode training mean")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    config = json.loads(args.config)
    n_envs = int(config.pop("n_envs", 8))
    normalize = bool(config.pop("normalize", False))
    gamma = float(config.get("gamma", 0.99))
    solved = []
    for seed in args.seeds:
        result = train_until(
            lambda seed=seed: LocalPG(
                "BsnPolicy", make_env(args.env_id, n_envs, seed, normalize, gamma), seed=seed, **config
            ),
            lambda seed=seed: make_env(args.env_id, 1, 1000 + seed, normalize, gamma),
            args.threshold,
            args.budget,
            0,
            5,
        )
        last = result.curve[-1][1] if result.curve else float("nan")
        solved.append(result.steps_to_threshold if result.steps_to_threshold is not None else args.budget)
        print(
            f"seed {seed}: solved_at {result.steps_to_threshold} last_mean {last:.0f} eval {result.eval_mean:.0f} "
            f"{result.steps / result.seconds:.0f} sps",
            flush=True,
        )
    print(f"median steps to threshold (budget if unsolved): {np.median(solved):.0f}")


if __name__ == "__main__":
    main()

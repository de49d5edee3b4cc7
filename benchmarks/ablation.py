"""Ablation: each estimator, baseline and update lever of LocalPG switched on and off, plus the paper's
propagating comparisons (straight-through, STS) trained by back-propagation with stock SB3 PPO.

Every variant starts from LocalPG's tuned configuration (``hyperparams/localpg.yml``) and changes
one thing. The propagating comparisons train the same BSN actor (same ``net_arch`` and
``bsn_init_gain``) with SB3's PPO and RL Zoo's PPO hyperparameters for the environment; the policy
re-creates the rollout's hidden samples through counter-based noise (see ``policies/policy.py``).

Reports, per variant, the median over seeds of the env steps until the 20-episode training mean first
reaches the threshold, the final deterministic evaluation, and the final training mean, with
learning curves (median over seeds on a common step grid).

The continuous-control arms (``Variant.box_actions_only``: the Gaussian head's options) sit out tasks with
discrete actions, and the report says so.

Every finished run is saved at once as one JSON file under ``<out>_runs/`` (atomically), named by a digest of its
settings and budget: a run whose file exists is not trained again, so a stopped ablation resumes where it stopped,
and ``--report-only`` writes the report from the runs finished so far.

Usage (the committed table's command is written at its top)::

    nice python -m benchmarks.ablation --envs CartPole-v1 --seeds 3 --workers 2
    nice python -m benchmarks.ablation --envs Hopper-v5 --budget 300000 --seeds 3 --workers 2 \
        --variants default rao_blackwell=False hidden_lr_scale=1 n_epochs=1 bsn_init_gain=8 net_arch=[64] \
        net_arch=[256,256] state_dependent_std log_std_init=0 --out benchmarks/results/ablation_hopper
"""

from __future__ import annotations

import argparse
import copy
import functools
import hashlib
import json
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3 import PPO
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.vec_env import VecEnv

from agents.localpg import LocalPG
from benchmarks.common import (
    RunResult,
    finished_runs_sentence,
    machine_description,
    resume_runs,
    save_record,
    train_until,
)
from benchmarks.compare_sb3 import TASKS, algo_config
from bsn_zoo.plotting import Line, Panel, plot_learning_curves
from envs import make_vec_env


@dataclass(frozen=True)
class Variant:
    """One ablation arm.

    Attributes:
        name: label in the table and plot.
        description: what changed relative to the tuned LocalPG default.
        algo: ``"localpg"`` or ``"ppo"`` (stock SB3 PPO with the BSN policy).
        overrides: LocalPG constructor keys replaced (``localpg``) or the BSN policy's kwargs (``ppo``).
        policy_overrides: ``policy_kwargs`` keys replaced.
        box_actions_only: the arm changes the Gaussian head and sits out tasks with other action spaces.
    """

    name: str
    description: str
    algo: str = "localpg"
    overrides: dict[str, Any] = field(default_factory=dict)
    policy_overrides: dict[str, Any] = field(default_factory=dict)
    box_actions_only: bool = False


VARIANTS = [
    Variant(
        "default",
        "tuned LocalPG: local estimator with Rao-Blackwellised credit, value-critic baseline (the shipped default)",
    ),
    Variant(
        "rao_blackwell=False",
        "each unit credited with its sample h_i, not its Markov-blanket posterior q_i: the paper's plain estimator",
        overrides={"rao_blackwell": False},
    ),
    Variant("baseline=mean", "+ per-neuron running-mean baseline", policy_overrides={"baseline": "mean"}),
    Variant(
        "baseline=optimal", "+ per-neuron variance-optimal c_i* (running)", policy_overrides={"baseline": "optimal"}
    ),
    Variant("baseline=learned", "+ input-dependent per-neuron c_i(s)", policy_overrides={"baseline": "learned"}),
    Variant(
        "estimator=learned_predictor",
        "learned predictor of the local estimate (docs/method.md §3, biased)",
        policy_overrides={"estimator": "learned_predictor"},
    ),
    Variant(
        "estimator=learned_predictor+inputs",
        "learned predictor that also reads each layer's inputs (per-unit linear term, docs/method.md §3)",
        policy_overrides={"estimator": "learned_predictor", "estimator_kwargs": {"use_inputs": True}},
    ),
    Variant(
        "hidden_lr_scale=1", "same learning rate for the BSN layers as the head", overrides={"hidden_lr_scale": 1.0}
    ),
    Variant(
        "hidden_clip_range=clip_range",
        "per-neuron trust region as narrow as the head's",
        overrides={"hidden_clip_range": None},
    ),
    Variant("n_epochs=1", "one pass per rollout: the plain local estimator, no reuse", overrides={"n_epochs": 1}),
    Variant(
        "hidden_target_kl=0.2",
        "stop an update's epochs once any BSN layer's joint approximate KL passes 1.5 x 0.2",
        overrides={"hidden_target_kl": 0.2},
    ),
    Variant(
        "hidden_target_kl=0.05",
        "stop an update's epochs once any BSN layer's joint approximate KL passes 1.5 x 0.05",
        overrides={"hidden_target_kl": 0.05},
    ),
    Variant("normalize_advantage=False", "raw GAE advantages", overrides={"normalize_advantage": False}),
    Variant(
        "bsn_init_gain=1", "orthogonal init gain 1 (units start near p = 0.5)", policy_overrides={"bsn_init_gain": 1.0}
    ),
    Variant(
        "bsn_init_gain=8",
        "orthogonal init gain 8 (units start nearer to threshold units)",
        policy_overrides={"bsn_init_gain": 8.0},
    ),
    Variant("net_arch=[64]", "a 64-unit BSN layer instead of the entry's width", policy_overrides={"net_arch": [64]}),
    Variant(
        "net_arch=[256,256]",
        "two 256-unit BSN layers (the entry's credit rule)",
        policy_overrides={"net_arch": [256, 256]},
    ),
    Variant(
        "state_dependent_std",
        "Gaussian log-std a function of the top layer's samples, not one learned value per action dimension",
        policy_overrides={"state_dependent_std": True},
        box_actions_only=True,
    ),
    Variant(
        "log_std_init=0",
        "Gaussian log-std starting at 0 (std 1, SB3's default) instead of the entry's value",
        policy_overrides={"log_std_init": 0.0},
        box_actions_only=True,
    ),
    Variant(
        "ppo+local",
        "stock SB3 PPO, joint log-prob (local estimator via PPO's ratio)",
        algo="ppo",
        policy_overrides={"estimator": "local"},
    ),
    Variant(
        "ppo+st",
        "stock SB3 PPO, straight-through (identity) back-propagation",
        algo="ppo",
        policy_overrides={"estimator": "st"},
    ),
    Variant(
        "ppo+st_sigmoid",
        "stock SB3 PPO, sigmoid-adjusted straight-through",
        algo="ppo",
        policy_overrides={"estimator": "st_sigmoid"},
    ),
    Variant(
        "ppo+sts",
        "stock SB3 PPO, stochastic times smooth back-propagation",
        algo="ppo",
        policy_overrides={"estimator": "sts"},
    ),
]


def build(
    variant: Variant,
    env_id: str,
    seed: int,
    tuned: dict[str, Any] | None = None,
    zoo: dict[str, Any] | None = None,
) -> BaseAlgorithm:
    """The seeded model of one arm.

    Args:
        variant: the arm.
        env_id: the task.
        seed: seed of the model and of its training envs.
        tuned: LocalPG's configuration for the task as ``algo_config`` gave it (read now when ``None``): a run
            passes the one reading that also names its record. It is not modified.
        zoo: for a stock-PPO arm, RL Zoo's PPO settings for the BSN policy as ``algo_config("ppo_bsn", ...)`` gave
            them (read now when ``None``): a run passes the one reading that also sets its evaluation env's
            normalisation. It is not modified; LocalPG arms ignore it.
    """
    tuned = copy.deepcopy(algo_config("localpg", env_id) if tuned is None else tuned)
    policy_kwargs = {**tuned.get("policy_kwargs", {}), **variant.policy_overrides}
    if variant.algo == "localpg":
        config = {**tuned, **variant.overrides, "policy_kwargs": policy_kwargs}
        n_envs = int(config.pop("n_envs"))
        normalize = bool(config.pop("normalize", False))
        env = make_vec_env(env_id, n_envs, seed, normalize=normalize, gamma=float(config.get("gamma", 0.99)))
        return LocalPG("BsnPolicy", env, seed=seed, **config)
    # RL Zoo's PPO settings without gSDE, which BinaryStochasticPolicy refuses (its hidden units already
    # explore): RL Zoo's Pendulum-v1 PPO explores with plain Gaussian noise here.
    zoo = copy.deepcopy(algo_config("ppo_bsn", env_id) if zoo is None else zoo)
    n_envs = int(zoo.pop("n_envs"))
    normalize = bool(zoo.pop("normalize", False))
    env = make_vec_env(env_id, n_envs, seed, normalize=normalize, gamma=float(zoo.get("gamma", 0.99)))
    # RL Zoo's policy_kwargs (the Gaussian head's, the critic's activation) with LocalPG's actor
    ppo_policy = {
        **zoo.pop("policy_kwargs", {}),
        **{key: policy_kwargs[key] for key in ("net_arch", "bsn_init_gain", "estimator") if key in policy_kwargs},
    }
    return PPO(LocalPG.policy_aliases["BsnPolicy"], env, seed=seed, policy_kwargs=ppo_policy, **zoo)


#: One run: (variant name, environment id, seed, budget in env steps).
Job = tuple[str, str, int, int]


def variant_named(name: str) -> Variant:
    """The arm of :data:`VARIANTS` called ``name``."""
    return next(v for v in VARIANTS if v.name == name)


@functools.cache
def has_box_actions(env_id: str) -> bool:
    """Whether the task's action space is a Box (read once per task from one env, then closed)."""
    env = make_vec_env(env_id, 1)
    env.close()
    return isinstance(env.action_space, spaces.Box)


def why_sitting_out(variant: Variant, env_id: str) -> str | None:
    """Why the arm does not run on the task, or ``None`` when it does: an arm of the Gaussian head needs Box
    actions, and a LocalPG arm whose every setting the task's entry already has would repeat the default."""
    if variant.box_actions_only and not has_box_actions(env_id):
        return "the arm changes the Gaussian head; no Box actions"
    if variant.algo == "localpg" and (variant.overrides or variant.policy_overrides):
        tuned = algo_config("localpg", env_id)
        tuned_policy = tuned.get("policy_kwargs", {})
        unset = object()
        if all(tuned.get(key, unset) == value for key, value in variant.overrides.items()) and all(
            tuned_policy.get(key, unset) == value for key, value in variant.policy_overrides.items()
        ):
            return "the task's entry already has the arm's settings"
    return None


def applies(variant: Variant, env_id: str) -> bool:
    """Whether the arm runs on the task (see :func:`why_sitting_out`)."""
    return why_sitting_out(variant, env_id) is None


def record_name(job: Job, tuned: dict[str, Any] | None = None) -> str:
    """The file of a job's record: environment, variant, a digest of the variant, the tuned configuration it
    changes (``tuned``, as ``algo_config`` gave it; read now when ``None``), the task and the budget, and the seed;
    a record is never reused for other settings."""
    name, env_id, seed, budget = job
    used = algo_config("localpg", env_id) if tuned is None else tuned
    settings = {**asdict(variant_named(name)), **used, **asdict(TASKS[env_id]), "budget": budget}
    digest = hashlib.sha1(json.dumps(settings, sort_keys=True, default=repr).encode()).hexdigest()[:8]
    return f"{env_id}__{name}__{digest}__s{seed}.json"


def run_one(job_and_folder: tuple[Job, Path]) -> RunResult:
    """Train and evaluate one job at a fixed budget, save its record in the folder (atomically), return it."""
    job, folder = job_and_folder
    name, env_id, seed, budget = job
    torch.set_num_threads(1)
    variant = variant_named(name)
    task = TASKS[env_id]
    # One reading of the settings names the record, builds the model and sets the evaluation env's normalisation:
    # an entry edited mid-run changes none of them.
    tuned = algo_config("localpg", env_id)
    zoo = algo_config("ppo_bsn", env_id) if variant.algo == "ppo" else None
    record = folder / record_name(job, tuned)
    normalize = bool((tuned if zoo is None else zoo).get("normalize", False))

    def eval_env() -> VecEnv:
        return make_vec_env(env_id, 1, 10_000 + seed, normalize=normalize)

    # Fixed budget (min_steps = budget): learning curves and final returns are compared at equal steps.
    result = train_until(
        lambda: build(variant, env_id, seed, tuned, zoo), eval_env, task.threshold, budget, budget, task.eval_episodes
    )
    save_record(record, {"variant": name, "env_id": env_id, "seed": seed, **result.record()})
    print(f"{env_id} {name} seed {seed}: solved_at={result.steps_to_threshold} eval={result.eval_mean:.1f} "
          f"({result.seconds / 60:.1f} min)", flush=True)
    return result


def grid_curve(curve: list[tuple[int, float]], grid: np.ndarray) -> np.ndarray:
    """The training mean at each grid step (last value at or before it; NaN before the first episode)."""
    if not curve:
        return np.full(len(grid), np.nan)
    steps = np.array([s for s, _m in curve])
    means = np.array([m for _s, m in curve])
    index = np.searchsorted(steps, grid, side="right") - 1
    return np.where(index >= 0, means[np.clip(index, 0, None)], np.nan)


def table(results: list[tuple[str, str, int, RunResult]], env_id: str, budget: int) -> str:
    lines = [
        "| variant | what changed | solved | median steps to threshold | median final eval "
        "| median final training mean |",
        "|---|---|---|---|---|---|",
    ]
    for variant in VARIANTS:
        mine = [r for n, e, _s, r in results if n == variant.name and e == env_id]
        if not mine:
            continue
        steps = [r.steps_to_threshold if r.steps_to_threshold is not None else budget for r in mine]
        unsolved = sum(r.steps_to_threshold is None for r in mine)
        median_steps = f"{np.median(steps):.0f}" + (" (> budget)" if unsolved * 2 > len(mine) else "")
        final_train = [r.curve[-1][1] for r in mine if r.curve]
        lines.append(
            f"| {variant.name} | {variant.description} | {len(mine) - unsolved}/{len(mine)} | {median_steps} | "
            f"{np.median([r.eval_mean for r in mine]):.1f} | {np.median(final_train):.1f} |"
        )
    return "\n".join(lines)


def plot(results: list[tuple[str, str, int, RunResult]], env_id: str, budget: int, path: Path) -> None:
    """Median learning curves over seeds: LocalPG's levers, and the back-propagated comparisons beside LocalPG's
    default."""
    grid = np.linspace(0, budget, 101)

    def median(name: str) -> np.ndarray | None:
        curves = [grid_curve(r.curve, grid) for n, e, _s, r in results if n == name and e == env_id]
        return np.nanmedian(np.stack(curves), axis=0) if curves else None

    levers: list[Line] = []
    comparisons: list[Line] = []
    for variant in VARIANTS:
        curve = median(variant.name)
        if curve is not None:
            width = 2.5 if variant.name == "default" else 1.2
            (levers if variant.algo == "localpg" else comparisons).append(
                Line(grid, curve, label=variant.name, linewidth=width)
            )
    default = median("default")
    if default is not None:
        comparisons.append(Line(grid, default, label="LocalPG default", color="k", linewidth=2.5))
    threshold = [TASKS[env_id].threshold]
    panels = [
        Panel(levers, title=f"{env_id}: LocalPG levers", xlabel="env steps",
              ylabel="20-episode training mean (median over seeds)", thresholds=threshold),
        Panel(comparisons, title=f"{env_id}: back-propagated comparisons (stock PPO)", xlabel="env steps",
              thresholds=threshold),
    ]
    plot_learning_curves(panels, path, panel_size=(6.5, 4.5), sharey=True, grid=False, legend_fontsize=7)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--envs", nargs="+", default=["CartPole-v1"], choices=list(TASKS))
    parser.add_argument("--variants", nargs="+", default=[v.name for v in VARIANTS], choices=[v.name for v in VARIANTS])
    parser.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 (> 0)")
    parser.add_argument("--budget", type=int, nargs="+", default=[100_000], help="env steps per run, one per env")
    parser.add_argument("--workers", type=int, default=1, help="training processes in parallel (> 0)")
    parser.add_argument("--report-only", action="store_true", help="write the report from the finished runs")
    parser.add_argument("--out", default="benchmarks/results/ablation", help="output path prefix")
    args = parser.parse_args(argv)
    if args.seeds <= 0 or args.workers <= 0:
        parser.error("--seeds and --workers must be > 0")
    if len(args.budget) not in (1, len(args.envs)):
        parser.error("--budget takes one value, or one per --envs entry")
    budgets = dict(zip(args.envs, args.budget * len(args.envs) if len(args.budget) == 1 else args.budget, strict=True))
    command = "nice python -m benchmarks.ablation " + " ".join(sys.argv[1:] if argv is None else argv)
    sitting_out = [f"{name} on {env_id} ({reason})" for env_id in args.envs for name in args.variants
                   if (reason := why_sitting_out(variant_named(name), env_id)) is not None]
    jobs = [
        (name, env_id, seed, budgets[env_id])
        for env_id in args.envs
        for seed in range(args.seeds)
        for name in args.variants
        if applies(variant_named(name), env_id)
    ]
    start = time.perf_counter()
    out = Path(args.out)
    folder = out.parent / f"{out.name}_runs"
    records = resume_runs(run_one, jobs, record_name, folder, args.workers, train=not args.report_only)
    results = [(name, env_id, seed, RunResult.from_record(record))
               for (name, env_id, seed, _budget), record in records.items()]
    missing = [f"{name} {env_id} seed {seed}" for name, env_id, seed, budget in jobs
               if (name, env_id, seed, budget) not in records]
    minutes = (time.perf_counter() - start) / 60
    trained = sum(result.seconds for *_key, result in results) / 60
    sections = [
        "# Ablation of LocalPG's estimator, baselines and levers; back-propagated comparisons",
        f"Command: `{command}` (this invocation: {minutes:.0f} min on a 2-core machine shared with other jobs, "
        f"torch.set_num_threads(1), {args.workers} worker process(es); the runs of this report trained for "
        f"{trained:.0f} min in all). {finished_runs_sentence(folder, missing)}"
        + (f" Not run: {', '.join(sitting_out)}."
           if sitting_out else ""),
        "Each LocalPG variant changes one setting of the tuned default (`hyperparams/localpg.yml`). "
        "The `ppo+*` rows train the same BSN actor (same net_arch and bsn_init_gain) with stock SB3 PPO and "
        "RL Zoo's PPO hyperparameters. Fixed budget per run; steps to threshold: first env step at which the "
        "20-episode training mean reached the threshold (unsolved runs count as the budget). Final eval: "
        "deterministic episodes after the budget. Medians over seeds.",
    ]
    for env_id in args.envs:
        png = out.parent / f"{out.name}_{env_id}.png"
        plot(results, env_id, budgets[env_id], png)
        sections += [
            f"## {env_id} ({budgets[env_id]} steps, {args.seeds} seeds)",
            table(results, env_id, budgets[env_id]),
            f"![learning curves]({png.name})",
        ]
    per_seed = ["## Per seed", "| env | variant | seed | steps to threshold | final eval |", "|---|---|---|---|---|"]
    for name, env_id, seed, r in results:
        solved = "not reached" if r.steps_to_threshold is None else str(r.steps_to_threshold)
        per_seed.append(f"| {env_id} | {name} | {seed} | {solved} | {r.eval_mean:.1f} |")
    text = "\n\n".join([*sections, "\n".join(per_seed), f"Machine: {machine_description('cpu')}."])
    out.with_suffix(".md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()

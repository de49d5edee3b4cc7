"""LocalPG against SB3's back-propagated PPO and A2C (MlpPolicy, RL Zoo hyperparameters), side by side.

``ppo_bsn`` and ``a2c_bsn`` are the SB3 plug-in route: stock PPO and A2C training ``BinaryStochasticPolicy``
with its defaults and RL Zoo's settings (:data:`PLUGINS`).

For each environment and seed, every algorithm trains under the same budget rule (see
:class:`benchmarks.common.ThresholdCallback`) and reports the env steps until the 20-episode training
mean first reaches the threshold, the final deterministic evaluation, and its wall-clock throughput.
Short timed segments, alternating between the algorithms, then measure training throughput at *equal* ``n_envs`` and
``n_steps`` (PPO's) for every algorithm. LocalPG is timed twice there: keeping its number of minibatches
per epoch (its ``batch_size`` scaled with the rollout: its CartPole-v1 recipe trains on the whole rollout in
each epoch, as PPO's does) and keeping its ``batch_size`` (more, smaller minibatches on PPO's larger
rollout). The table gives medians over seeds and each as a ratio to PPO.
``localpg_compiled`` is LocalPG with ``compile_update=True``: the same update, compiled (its runs'
steps/s include the compilation; the timed segments start after it).

The tasks (:data:`TASKS`) are CartPole-v1, Acrobot-v1, Pendulum-v1, MountainCar-v0 and LunarLander-v3, the
continuous-control tasks LunarLanderContinuous-v3 and BipedalWalker-v3 (Box2D) and the MuJoCo locomotion tasks
HalfCheetah-v5, Hopper-v5, Walker2d-v5, Ant-v5 and Swimmer-v5; an algorithm without RL Zoo settings for a task
(A2C on Pendulum-v1 and on the locomotion tasks) sits it out, and the table says so. The table also gives, per
algorithm, the steps its training mean took to reach PPO's final training mean (the median over PPO's seeds of
its last 20-episode mean) and the minutes each run took.

Every finished run is saved at once as one JSON file under ``<out>_runs/`` (atomically), named by a digest of its
settings and budget: a run whose file exists is not trained again, so a stopped benchmark resumes where it
stopped, ``--report-only`` writes the report from the runs finished so far, and ``--throughput-steps 0`` skips
the timed segments (the table then leaves their columns out).

Usage (each committed table's command is written at its top; ``benchmarks/results/compare_sb3.md`` holds
CartPole-v1 and Acrobot-v1, 15 min, ``compare_sb3_pendulum.md`` Pendulum-v1, 19 min,
``compare_sb3_mountaincar_lunarlander.md`` the two 1M-step tasks, without A2C and with 3 seeds of
LunarLander-v3, whose runs take about 10 minutes each here, 53 min)::

    nice python -m benchmarks.compare_sb3 --envs Acrobot-v1 CartPole-v1 --seeds 5 --workers 2
    nice python -m benchmarks.compare_sb3 --envs Pendulum-v1 --seeds 5 --workers 2 \
        --out benchmarks/results/compare_sb3_pendulum
    nice python -m benchmarks.compare_sb3 --envs MountainCar-v0 LunarLander-v3 --algos localpg ppo --seeds 5 3 \
        --workers 2 --out benchmarks/results/compare_sb3_mountaincar_lunarlander
    nice python -m benchmarks.compare_sb3 --envs Hopper-v5 HalfCheetah-v5 --algos localpg ppo --seeds 3 \
        --workers 2 --throughput-steps 0 --out benchmarks/results/compare_sb3_locomotion
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from stable_baselines3 import A2C, PPO
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.vec_env import VecEnv

from agents.localpg import LocalPG
from benchmarks.common import (
    RunResult,
    benchmark_settings,
    finished_runs_sentence,
    has_entry,
    load_tuned,
    machine_description,
    resume_runs,
    save_record,
    seeds_per_task,
    train_until,
)
from bsn_zoo.config import HYPERPARAMS_DIR
from bsn_zoo.plotting import Line, Panel, plot_learning_curves
from envs import make_vec_env
from policies import BinaryStochasticPolicy

ALGOS = ("localpg", "localpg_compiled", "ppo", "a2c", "ppo_bsn", "a2c_bsn")
#: The SB3 plug-in route: stock PPO / A2C training ``BinaryStochasticPolicy`` with its default settings and
#: RL Zoo's settings of the named algorithm (those of the MLP policy, unchanged but for gSDE, which the BSN
#: policy refuses: its hidden units already explore).
PLUGINS = {"ppo_bsn": "ppo", "a2c_bsn": "a2c"}
#: Variants of LocalPG: the shipped settings plus these keyword arguments (``localpg_compiled``: the same
#: update compiled with ``torch.compile``, equal to the eager one up to float rounding).
LOCALPG_VARIANTS: dict[str, dict[str, Any]] = {"localpg": {}, "localpg_compiled": {"compile_update": True}}
#: LocalPG's shipped per-environment defaults.
TUNED_PATH = str(Path(__file__).resolve().parents[1] / "hyperparams" / "localpg.yml")


#: RL Zoo's settings (rl-baselines3-zoo's, copied value for value), one file per algorithm; ``normalize`` is
#: RL Zoo's ``normalize: true`` (VecNormalize of observations and rewards). RL Zoo's PPO explores with gSDE on
#: Pendulum-v1 and has no A2C entry for Pendulum-v1, so A2C sits that task out (:func:`has_config`).
ZOO_PATHS = {algo: str(HYPERPARAMS_DIR / f"{algo}.yml") for algo in ("ppo", "a2c")}


@dataclass(frozen=True)
class Task:
    """One environment's benchmark settings.

    Attributes:
        env_id: Gymnasium id.
        threshold: solved threshold of the 20-episode training mean.
        max_steps: per-algorithm training budget (env steps); LocalPG's variants share ``"localpg"``'s.
        min_steps: train at least this many steps even once solved.
        eval_episodes: deterministic evaluation episodes at the end.
    """

    env_id: str
    threshold: float
    max_steps: dict[str, int]
    min_steps: int
    eval_episodes: int

    def budget(self, algo: str) -> int:
        """The training budget of ``algo`` (a name of :data:`ALGOS`; a plug-in without one: its base algorithm's)."""
        if algo in LOCALPG_VARIANTS:
            return self.max_steps["localpg"]
        return self.max_steps.get(algo, self.max_steps[PLUGINS.get(algo, algo)])


#: Thresholds of the continuous-control tasks: Gymnasium's reward_threshold for the Box2D tasks; for MuJoCo
#: locomotion, RL Zoo's published score of its PPO at 1M steps on the -v3 task (rl-baselines3-zoo
#: benchmark.md), which the -v5 tasks keep by default.
CONTINUOUS_THRESHOLDS = {
    "LunarLanderContinuous-v3": 200.0,
    "BipedalWalker-v3": 300.0,
    "HalfCheetah-v5": 5819.0,
    "Hopper-v5": 2410.0,
    "Walker2d-v5": 3479.0,
    "Ant-v5": 1327.0,
    "Swimmer-v5": 282.0,
}


def _continuous_control(env_id: str, threshold: float) -> Task:
    """A fixed, equal budget of 1M steps for LocalPG and PPO (min_steps = budget), 10 evaluation episodes."""
    return Task(env_id, threshold, {"localpg": 1_000_000, "ppo": 1_000_000}, 1_000_000, 10)


#: Budgets sized for a 2-core machine. CartPole-v1: stop once solved (and 30k steps taken) or at 100k.
#: Others: a fixed, equal budget (min_steps = budget), every algorithm evaluated where it ends.
TASKS = {
    "CartPole-v1": Task(
        "CartPole-v1",
        475.0,
        {"localpg": 100_000, "ppo": 100_000, "a2c": 100_000, "ppo_bsn": 200_000, "a2c_bsn": 200_000},
        30_000,
        10,
    ),
    # A budget of 500k steps for every algorithm (RL Zoo's PPO budget is 1M), over which LocalPG's
    # entry decays its learning rate; then 30 deterministic episodes (a 10-episode evaluation of one policy
    # has a standard error of 4 to 8 here, benchmarks/results/tuning_log.md).
    "Acrobot-v1": Task(
        "Acrobot-v1",
        -100.0,
        {"localpg": 500_000, "ppo": 500_000, "a2c": 500_000},
        500_000,
        30,
    ),
    # A fixed, equal budget (min_steps = budget): both train LocalPG's 400k steps, over which its entry
    # decays the learning rate, and are evaluated there; RL Zoo's PPO budget is 100k.
    "Pendulum-v1": Task(
        "Pendulum-v1",
        -200.0,
        {"localpg": 400_000, "ppo": 400_000},
        400_000,
        10,
    ),
    # A fixed, equal budget of 1M steps for every algorithm (min_steps = budget): RL Zoo's PPO budget on both
    # tasks (its A2C budget on LunarLander is 200k). Thresholds: Gymnasium's reward_threshold of each task.
    "MountainCar-v0": Task(
        "MountainCar-v0",
        -110.0,
        {"localpg": 1_000_000, "ppo": 1_000_000, "a2c": 1_000_000},
        1_000_000,
        10,
    ),
    "LunarLander-v3": Task(
        "LunarLander-v3",
        200.0,
        {"localpg": 1_000_000, "ppo": 1_000_000, "a2c": 1_000_000},
        1_000_000,
        10,
    ),
    **{env_id: _continuous_control(env_id, threshold) for env_id, threshold in CONTINUOUS_THRESHOLDS.items()},
}


def has_config(algo: str, env_id: str) -> bool:
    """Whether ``algo`` has settings for ``env_id`` (LocalPG always: ``hyperparams/localpg.yml``'s default;
    PPO and A2C: an entry of their own in :data:`ZOO_PATHS`)."""
    return algo in LOCALPG_VARIANTS or has_entry(ZOO_PATHS[PLUGINS.get(algo, algo)], env_id)


def algo_config(algo: str, env_id: str) -> dict[str, Any]:
    """The algorithm's hyperparameters for ``env_id`` (LocalPG: ``hyperparams/localpg.yml``; PPO, A2C and
    their plug-ins: RL Zoo's, :data:`ZOO_PATHS`).

    Raises:
        KeyError: for PPO or A2C on a task without RL Zoo settings (see :func:`has_config`).
    """
    if algo in LOCALPG_VARIANTS:
        config = benchmark_settings(load_tuned(TUNED_PATH, env_id))
        return {**config, **LOCALPG_VARIANTS[algo]}
    base = PLUGINS.get(algo, algo)
    if not has_config(algo, env_id):
        raise KeyError(f"{ZOO_PATHS[base]} has no RL Zoo settings for {env_id!r}")
    config = benchmark_settings(load_tuned(ZOO_PATHS[base], env_id, base))
    if algo in PLUGINS:
        config.pop("use_sde", None)
        config.pop("sde_sample_freq", None)
    return config


def build(
    algo: str,
    env_id: str,
    seed: int,
    overrides: dict[str, Any] | None = None,
    config: dict[str, Any] | None = None,
) -> BaseAlgorithm:
    """A seeded model of ``algo`` on ``env_id``.

    Args:
        algo: a LocalPG variant, ``ppo``, ``a2c`` or one of their plug-ins.
        env_id: the task.
        seed: seed of the model and of its training envs.
        overrides: keys that replace the configuration's.
        config: the configuration as :func:`algo_config` gave it (read now when ``None``): a run passes the one
            reading that also names its record. It is not modified.
    """
    config = {**copy.deepcopy(algo_config(algo, env_id) if config is None else config), **(overrides or {})}
    n_envs = int(config.pop("n_envs"))
    normalize = bool(config.pop("normalize", False))
    env = make_vec_env(env_id, n_envs, seed, normalize=normalize, gamma=float(config.get("gamma", 0.99)))
    if algo in LOCALPG_VARIANTS:
        return LocalPG("BsnPolicy", env, seed=seed, **config)
    cls = PPO if PLUGINS.get(algo, algo) == "ppo" else A2C
    return cls(BinaryStochasticPolicy if algo in PLUGINS else "MlpPolicy", env, seed=seed, **config)


#: One run: (algorithm, environment id, seed, deterministic evaluation episodes).
Job = tuple[str, str, int, int]


def record_name(job: Job, config: dict[str, Any] | None = None) -> str:
    """The file of a job's record: environment, algorithm, a digest of its complete settings (the algorithm's
    configuration, the task's budget and the evaluation episodes) and the seed, so that a record is never reused
    for other settings. ``config``: the algorithm's configuration as :func:`algo_config` gave it (read now when
    ``None``)."""
    algo, env_id, seed, eval_episodes = job
    used = algo_config(algo, env_id) if config is None else config
    settings = {**used, **asdict(TASKS[env_id]), "eval_episodes": eval_episodes}
    digest = hashlib.sha1(json.dumps(settings, sort_keys=True, default=repr).encode()).hexdigest()[:8]
    return f"{env_id}__{algo}__{digest}__s{seed}.json"


def run_one(job_and_folder: tuple[Job, Path]) -> RunResult:
    """Train and evaluate one job under its task's budget, save its record in the folder (atomically), return it."""
    job, folder = job_and_folder
    algo, env_id, seed, eval_episodes = job
    torch.set_num_threads(1)
    task = TASKS[env_id]
    # One reading of the settings names the record and builds the model: an entry edited mid-run changes neither.
    config = algo_config(algo, env_id)
    record = folder / record_name(job, config)
    normalize = bool(config.get("normalize", False))

    def eval_env() -> VecEnv:
        return make_vec_env(env_id, 1, 10_000 + seed, normalize=normalize)

    result = train_until(
        lambda: build(algo, env_id, seed, config=config),
        eval_env,
        task.threshold,
        task.budget(algo),
        task.min_steps,
        eval_episodes,
    )
    save_record(record, {"algo": algo, "env_id": env_id, "seed": seed, **result.record()})
    print(
        f"{env_id} {algo} seed {seed}: solved_at={result.steps_to_threshold} steps={result.steps} "
        f"eval={result.eval_mean:.1f} sps={result.steps_per_second:.0f} ({result.seconds / 60:.1f} min)",
        flush=True,
    )
    return result


#: How LocalPG's minibatches follow PPO's rollout in the equal-``n_envs``/``n_steps`` timing.
BATCH_RULES = ("minibatches", "batch_size")


def equal_rollout_overrides(algo: str, env_id: str, rule: str) -> dict[str, int]:
    """Settings that put ``algo`` on PPO's ``n_envs`` and ``n_steps`` for ``env_id``.

    Args:
        algo: a name of :data:`ALGOS`.
        env_id: a key of :data:`TASKS`.
        rule: for LocalPG, ``"minibatches"`` keeps its minibatches per epoch (``batch_size`` becomes
            PPO's rollout divided by them) and ``"batch_size"`` keeps its ``batch_size``; PPO and A2C
            keep their other settings under either rule.
    """
    if rule not in BATCH_RULES:
        raise ValueError(f"rule must be one of {BATCH_RULES}, got {rule!r}")
    ppo = algo_config("ppo", env_id)
    overrides = {"n_envs": int(ppo["n_envs"]), "n_steps": int(ppo["n_steps"])}
    if algo in LOCALPG_VARIANTS and rule == "minibatches":
        own = algo_config(algo, env_id)
        minibatches = -(-int(own["n_envs"]) * int(own["n_steps"]) // int(own["batch_size"]))  # ceil
        overrides["batch_size"] = max(2, overrides["n_envs"] * overrides["n_steps"] // minibatches)
    return overrides


def timed_throughput(algos: list[str], env_id: str, steps: int, repeats: int = 5) -> dict[tuple[str, str], float]:
    """Training steps/second at PPO's ``n_envs`` and ``n_steps``, ``{(algo, rule): steps/s}`` for each rule
    of :data:`BATCH_RULES` (see :func:`equal_rollout_overrides`; PPO and A2C are timed once, the same
    under both rules): ``steps`` env steps per model after one warm-up rollout, timed in ``repeats``
    segments that alternate between the models, so that a change of load on a shared machine hits them
    alike; the median segment of each is reported."""
    torch.set_num_threads(1)
    ppo = algo_config("ppo", env_id)
    rollout = ppo["n_envs"] * ppo["n_steps"]
    rules = {algo: BATCH_RULES if algo in LOCALPG_VARIANTS else BATCH_RULES[:1] for algo in algos}
    models = {
        (algo, rule): build(algo, env_id, seed=0, overrides=equal_rollout_overrides(algo, env_id, rule))
        for algo in algos
        for rule in rules[algo]
    }
    for model in models.values():
        model.learn(total_timesteps=rollout)
    segment = max(rollout, steps // repeats)
    rates: dict[tuple[str, str], list[float]] = {key: [] for key in models}
    for _ in range(repeats):
        for key, model in models.items():
            before = model.num_timesteps
            start = time.perf_counter()
            model.learn(total_timesteps=segment, reset_num_timesteps=False)
            rates[key].append((model.num_timesteps - before) / (time.perf_counter() - start))
    measured = {key: float(np.median(values)) for key, values in rates.items()}
    return {
        (algo, rule): measured.get((algo, rule), measured[(algo, BATCH_RULES[0])])
        for algo in algos
        for rule in BATCH_RULES
    }


def _median(values: list[float]) -> float:
    return float(np.median(values)) if values else float("nan")


def summarise(
    results: list[tuple[str, str, int, RunResult]],
    throughput: dict[tuple[str, str, str], float],
    env_ids: list[str],
) -> str:
    """The markdown table: medians over seeds and ratios to PPO.

    ``throughput``: ``{(algo, env_id, rule): steps/s}`` at PPO's ``n_envs`` and ``n_steps`` (:func:`timed_throughput`).
    Steps to PPO's final training mean: per run, the first step at which its training mean reached the median over
    PPO's runs of their last training mean (:func:`first_step_at_or_above`; the budget if never).
    """
    timed = bool(throughput)  # without timed segments, the equal-rollout columns are left out
    header = (
        "| env | algo | seeds solved | median steps to threshold | ratio to PPO | median final eval | "
        "ratio to PPO | median steps to PPO's final training mean | ratio to PPO | "
        + ("steps/s (equal n_envs, n_steps; minibatches kept) | ratio to PPO | "
           "steps/s (equal n_envs, n_steps; batch_size kept) | ratio to PPO | " if timed else "")
        + "steps/s in the runs | min per run |"
    )
    lines = [header, "|" + "---|" * header.count(" | ") + "---|"]
    for env_id in env_ids:
        task = TASKS[env_id]
        ppo_final = _median([r.curve[-1][1] for a, e, _s, r in results if a == "ppo" and e == env_id and r.curve])
        rows: dict[str, dict[str, float]] = {}
        for algo in ALGOS:
            mine = [r for a, e, _s, r in results if a == algo and e == env_id]
            if not mine:
                continue
            # Unsolved runs count as "more than the budget": the budget is used for the median.
            steps = [r.steps_to_threshold if r.steps_to_threshold is not None else task.budget(algo) for r in mine]
            to_ppo = [first_step_at_or_above(r.curve, ppo_final) for r in mine]
            rows[algo] = {
                "to_ppo": _median([task.budget(algo) if step is None else step for step in to_ppo]),
                "to_ppo_unreached": sum(step is None for step in to_ppo) * 2 > len(mine),
                "minutes": _median([r.seconds / 60 for r in mine]),
                "solved": sum(r.steps_to_threshold is not None for r in mine),
                "n": len(mine),
                "steps": _median(steps),
                "unsolved_median": sum(r.steps_to_threshold is None for r in mine) * 2 > len(mine),
                "eval": _median([r.eval_mean for r in mine]),
                "sps_runs": _median([r.steps_per_second for r in mine]),
                **{f"sps_{rule}": throughput.get((algo, env_id, rule), float("nan")) for rule in BATCH_RULES},
            }
        base = rows.get("ppo")
        for algo, row in rows.items():

            def ratio(key: str, row: dict[str, float] = row, base: dict[str, float] | None = base) -> str:
                if base is None or not base[key]:
                    return "n/a"
                return f"{row[key] / base[key]:.2f}"

            steps = f"{row['steps']:.0f}" + (" (> budget)" if row["unsolved_median"] else "")
            to_ppo = "n/a" if np.isnan(ppo_final) else f"{row['to_ppo']:.0f}" + (
                " (> budget)" if row["to_ppo_unreached"] else ""
            )
            equal_rollout = (
                f"{row['sps_minibatches']:.0f} | {ratio('sps_minibatches')} | "
                f"{row['sps_batch_size']:.0f} | {ratio('sps_batch_size')} | " if timed else ""
            )
            lines.append(
                f"| {env_id} | {algo} | {row['solved']:.0f}/{row['n']:.0f} | {steps} | {ratio('steps')} | "
                f"{row['eval']:.1f} | {ratio('eval')} | {to_ppo} | {ratio('to_ppo')} | {equal_rollout}"
                f"{row['sps_runs']:.0f} | {row['minutes']:.1f} |"
            )
    return "\n".join(lines)


def first_step_at_or_above(curve: list[tuple[int, float]], target: float) -> int | None:
    """The first step of a training curve whose mean is at least ``target`` (``None``: never, or no target).

    A report reads the curve of a run's record, which :meth:`RunResult.record` thins to about 400 points: the step
    found there can lie one thinned interval (a few thousand steps over 1M) after the first step at which the run's
    full curve reached ``target`` (its ``steps_to_threshold`` when ``target`` is its threshold)."""
    return next((step for step, mean in curve if mean >= target), None)


def per_seed_table(results: list[tuple[str, str, int, RunResult]]) -> str:
    lines = [
        "| env | algo | seed | steps to threshold | steps trained | final eval | final training mean | steps/s | "
        "minutes |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for algo, env_id, seed, r in sorted(results, key=lambda x: (x[1], x[0], x[2])):
        solved = "not reached" if r.steps_to_threshold is None else str(r.steps_to_threshold)
        final = f"{r.curve[-1][1]:.1f}" if r.curve else "n/a"
        lines.append(
            f"| {env_id} | {algo} | {seed} | {solved} | {r.steps} | {r.eval_mean:.1f} | {final} | "
            f"{r.steps_per_second:.0f} | {r.seconds / 60:.1f} |"
        )
    return "\n".join(lines)


#: Line colour of each algorithm in the learning-curve plot.
COLOURS = {
    "localpg": "tab:red",
    "localpg_compiled": "tab:orange",
    "ppo": "tab:blue",
    "a2c": "tab:green",
    "ppo_bsn": "tab:purple",
    "a2c_bsn": "tab:olive",
}


def plot(results: list[tuple[str, str, int, RunResult]], env_ids: list[str], path: Path) -> None:
    """Training curves (20-episode mean vs env steps), one panel per environment, one colour per algorithm."""
    panels = []
    for env_id in env_ids:
        lines = []
        for algo in ALGOS:
            curves = [r.curve for a, e, _s, r in results if a == algo and e == env_id and r.curve]
            for index, curve in enumerate(curves):
                steps, means = zip(*curve, strict=True)
                label = algo if index == 0 else None
                lines.append(Line(steps, means, label=label, color=COLOURS[algo], alpha=0.6, linewidth=1))
        panels.append(
            Panel(
                lines,
                title=env_id,
                xlabel="env steps",
                ylabel="20-episode training mean return",
                thresholds=[TASKS[env_id].threshold],
            )
        )
    plot_learning_curves(panels, path, panel_size=(6, 4), grid=False)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--envs", nargs="+", default=list(TASKS), choices=list(TASKS))
    parser.add_argument("--algos", nargs="+", default=list(ALGOS), choices=list(ALGOS))
    parser.add_argument(
        "--seeds", type=int, nargs="+", default=[5], help="seeds 0..N-1 (> 0), one value or one per env"
    )
    parser.add_argument("--workers", type=int, default=1, help="training processes in parallel (> 0)")
    parser.add_argument(
        "--eval-episodes", type=int, default=None, help="deterministic evaluation episodes (> 0; default: the task's)"
    )
    parser.add_argument(
        "--throughput-steps", type=int, default=20_000, help="env steps of the timed segment (0: no timed segments)"
    )
    parser.add_argument("--report-only", action="store_true", help="write the report from the finished runs")
    parser.add_argument("--out", default="benchmarks/results/compare_sb3", help="output path without extension")
    args = parser.parse_args(argv)
    bad_episodes = args.eval_episodes is not None and args.eval_episodes <= 0
    if args.workers <= 0 or bad_episodes or args.throughput_steps < 0:
        parser.error("--workers and --eval-episodes must be > 0, --throughput-steps >= 0")
    try:
        seeds = seeds_per_task(args.envs, args.seeds, "--envs")
    except ValueError as error:
        parser.error(str(error))
    command = "nice python -m benchmarks.compare_sb3 " + " ".join(sys.argv[1:] if argv is None else argv)
    episodes = {env_id: args.eval_episodes or TASKS[env_id].eval_episodes for env_id in args.envs}
    runnable = {env_id: [algo for algo in args.algos if has_config(algo, env_id)] for env_id in args.envs}
    skipped = [f"{algo} on {env_id}" for env_id in args.envs for algo in args.algos if algo not in runnable[env_id]]
    jobs = [
        (algo, env_id, seed, episodes[env_id])
        for env_id in args.envs
        for seed in range(seeds[env_id])
        for algo in runnable[env_id]
    ]
    start = time.perf_counter()
    out = Path(args.out)
    folder = out.parent / f"{out.name}_runs"
    records = resume_runs(run_one, jobs, record_name, folder, args.workers, train=not args.report_only)
    results = [(algo, env_id, seed, RunResult.from_record(record))
               for (algo, env_id, seed, _episodes), record in records.items()]
    missing = [f"{algo} {env_id} seed {seed}" for algo, env_id, seed, episodes in jobs
               if (algo, env_id, seed, episodes) not in records]
    timed = args.throughput_steps > 0 and not args.report_only
    throughput = {
        (algo, env_id, rule): rate
        for env_id in (args.envs if timed else [])
        for (algo, rule), rate in timed_throughput(runnable[env_id], env_id, args.throughput_steps).items()
    }
    minutes = (time.perf_counter() - start) / 60
    trained = sum(result.seconds for *_key, result in results) / 60
    plot(results, args.envs, out.with_suffix(".png"))
    text = "\n\n".join(
        [
            "# LocalPG vs SB3 PPO / A2C (MlpPolicy, RL Zoo hyperparameters)",
            f"Command: `{command}` (this invocation: {minutes:.0f} min on a 2-core machine shared with other jobs, "
            f"torch.set_num_threads(1), {args.workers} worker process(es); the runs of this report trained for "
            f"{trained:.0f} min in all). {finished_runs_sentence(folder, missing)}"
            + ("" if timed else " No timed segments in this invocation (no equal-rollout steps/s columns)."),
            "Steps to threshold: first env step at which the mean return of the last 20 finished *training* "
            "episodes reached the threshold ("
            + ", ".join(f"{e} {TASKS[e].threshold:g}" for e in args.envs)
            + "); a run that never reached it "
            "counts as its budget. Budget rule: stop once solved and at least `min_steps` taken, or at the "
            "budget. Final eval: mean of deterministic episodes after training. "
            + (
                f"Steps/s (equal n_envs, n_steps): {args.throughput_steps} steps per algorithm at PPO's n_envs and "
                "n_steps, timed in 5 segments that alternate between the algorithms (median segment); LocalPG timed "
                "twice there, keeping its minibatches per epoch (batch_size = PPO's rollout / its own rollout's "
                "minibatches: "
                + ", ".join(
                    f"{e} {equal_rollout_overrides('localpg', e, 'minibatches')['batch_size']}" for e in args.envs
                )
                + ") and keeping its batch_size (PPO and A2C: their own settings in both columns); "
                if timed
                else ""
            )
            + "Steps/s in the runs: each algorithm's own settings, while another worker shared the CPU. "
            "Steps to PPO's final training mean: the first step at which a run's training mean reached the "
            "median over PPO's runs of their last 20-episode training mean (the budget if never). "
            "Medians over seeds; ratios are to PPO's median (for negative returns, a ratio below 1 is better).",
            "Budgets: "
            + "; ".join(
                f"{e}: max {TASKS[e].max_steps}, min_steps {TASKS[e].min_steps}, {episodes[e]} eval episodes"
                for e in args.envs
            )
            + f". LocalPG settings: `{Path(TUNED_PATH).relative_to(Path(__file__).resolve().parents[1])}`."
            + (f" Not run (no RL Zoo settings): {', '.join(skipped)}." if skipped else ""),
            summarise(results, throughput, args.envs),
            f"![learning curves]({out.with_suffix('.png').name})",
            "## Per seed",
            per_seed_table(results),
            f"Machine: {machine_description('cpu')}.",
        ]
    )
    out.with_suffix(".md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()

"""LocalPG against SB3's PPO (RL Zoo settings) when the reward is delayed: paid every ``k`` steps or only at the
episode's end (:class:`envs.RewardDelay`), evaluated on the task's true return.

Each algorithm gets its best discount and GAE lambda on the delayed task: every point of :data:`GAMMAS` x
:data:`LAMBDAS`, applied to its settings for delayed reward (:func:`settings`: its shipped settings for the dense
task, LocalPG's ``hyperparams/localpg.yml`` or RL Zoo's ``hyperparams/ppo.yml``, updated by the other entries of
``hyperparams/<algo>_delayed.yml``), is trained on the *selection seeds* (:data:`SELECTION_SEEDS`, never
reported) and the point with the best median final evaluation is kept. The chosen point is then trained on the
reported seeds (0, 1, ...), and both algorithms are also trained on the dense task with their own shipped
settings, so each algorithm's delayed evaluation is reported as a ratio to its dense one. Every run trains for
the task's whole budget.

On the delayed tasks both algorithms observe the remaining fraction of the time limit (:class:`envs.TimeFeature`):
with the reward paid late, the value of a state depends on the reward accrued unpaid, which for these tasks
grows with the elapsed time.

Every finished run is saved at once as one JSON file under ``<out>_runs/`` (written atomically), and a run
whose file exists is not trained again: a stopped benchmark resumes where it stopped, and ``--report-only``
writes the table from the runs finished so far (missing ones are counted and named).

Usage (each committed table's command is written at its top)::

    nice python -m benchmarks.delayed --tasks Acrobot-v1@episode --seeds 5 --workers 2
    nice python -m benchmarks.delayed --tasks MountainCar-v0@50 LunarLander-v3@episode --seeds 5 3 --workers 2
    nice python -m benchmarks.delayed --tasks HalfCheetah-v5@episode Hopper-v5@episode --seeds 3 --workers 2
    python -m benchmarks.delayed --report-only
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import itertools
import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from stable_baselines3 import PPO
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.vec_env import VecEnv

from agents.localpg import LocalPG
from benchmarks.common import (
    finished_runs_sentence,
    load_delayed_reward_entry,
    load_record,
    machine_description,
    resume_runs,
    save_record,
    seeds_per_task,
    train_until,
)
from benchmarks.compare_sb3 import COLOURS, CONTINUOUS_THRESHOLDS, algo_config
from bsn_zoo.plotting import Line, Panel, plot_learning_curves
from envs import EPISODE, RewardDelaySpec, make_vec_env

#: The algorithms compared.
ALGOS = ("localpg", "ppo")
#: The discounts and GAE lambdas each algorithm chooses from on a delayed task.
GAMMAS = (0.99, 0.999, 1.0)
LAMBDAS = (0.95, 1.0)
#: The seeds on which each algorithm chooses its point of the grid (never reported).
SELECTION_SEEDS = (100,)


@dataclass(frozen=True)
class DelayedTask:
    """A task with its reward delayed.

    Attributes:
        env_id: Gymnasium id.
        delay: ``k`` (the accumulated reward paid every ``k`` steps and at the episode's end) or ``"episode"``.
        budget: training steps of every run.
        threshold: solved threshold of the 20-episode training mean of true returns (Gymnasium's
            ``reward_threshold`` where it has one).
        eval_episodes: deterministic evaluation episodes at the end of a run.
    """

    env_id: str
    delay: RewardDelaySpec
    budget: int
    threshold: float
    eval_episodes: int

    @property
    def name(self) -> str:
        """``<env_id>@<delay>``, e.g. ``Acrobot-v1@episode``."""
        return f"{self.env_id}@{self.delay}"


#: The MuJoCo locomotion tasks, delayed with the whole return paid at the episode's end.
MUJOCO_TASKS = ("HalfCheetah-v5", "Hopper-v5", "Walker2d-v5", "Ant-v5", "Swimmer-v5")

#: The delayed tasks. Budgets: those of ``benchmarks.compare_sb3``'s dense tasks, but half of them (500k) on
#: MountainCar-v0, where both algorithms' dense runs there reached the threshold within 350k steps; MuJoCo:
#: compare_sb3's 1M steps and thresholds (RL Zoo's PPO score at 1M), 10 evaluation episodes.
TASKS = {
    task.name: task
    for task in (
        DelayedTask("Acrobot-v1", EPISODE, 500_000, -100.0, 30),
        DelayedTask("MountainCar-v0", 50, 500_000, -110.0, 10),
        DelayedTask("LunarLander-v3", EPISODE, 1_000_000, 200.0, 10),
        DelayedTask("CartPole-v1", EPISODE, 100_000, 475.0, 10),
        *(DelayedTask(env_id, EPISODE, 1_000_000, CONTINUOUS_THRESHOLDS[env_id], 10) for env_id in MUJOCO_TASKS),
    )
}


@dataclass(frozen=True)
class Job:
    """One training run.

    Attributes:
        task: a key of :data:`TASKS`.
        phase: ``"select"`` (a grid point on a selection seed), ``"delayed"`` (the chosen point on a reported
            seed) or ``"dense"`` (the algorithm's shipped settings on the dense task).
        algo: a name of :data:`ALGOS`.
        gamma: discount (``None``: the settings' own, in the dense phase).
        gae_lambda: GAE lambda (``None``: the settings' own).
        seed: the run's seed (its evaluation env: ``10000 + seed``).
    """

    task: str
    phase: str
    algo: str
    gamma: float | None
    gae_lambda: float | None
    seed: int

    def file_name(self, used: dict[str, Any] | None = None) -> str:
        """The name of the run's JSON file: task (for the dense phase, the environment, shared by its tasks), phase,
        algorithm, grid point, seed and a digest of the complete settings, so that a run is never reused for
        other settings. ``used``: as in :func:`settings_digest`."""
        task = TASKS[self.task]
        where = task.env_id if self.phase == "dense" else task.name
        point = "own" if self.gamma is None else f"g{self.gamma:g}_l{self.gae_lambda:g}"
        digest = settings_digest(self, used)
        return f"{where.replace('/', '_')}__{self.phase}__{self.algo}__{point}__{digest}__s{self.seed}.json"


def delayed_overrides(algo: str, env_id: str) -> dict[str, Any]:
    """The algorithm's settings for delayed reward other than the grid's: its ``hyperparams/<algo>_delayed.yml``
    entry for ``env_id`` (else ``default``; nothing without a file), without ``gamma`` and ``gae_lambda``."""
    entry = load_delayed_reward_entry(algo, env_id)
    return {key: value for key, value in entry.items() if key not in ("gamma", "gae_lambda", "env_wrapper")}


def settings(job: Job) -> dict[str, Any]:
    """The algorithm arguments and run settings (``n_envs``, ``normalize``) of a job: the algorithm's shipped
    settings for the dense task (LocalPG ``hyperparams/localpg.yml``, PPO RL Zoo's ``hyperparams/ppo.yml``),
    then, for a delayed task, :func:`delayed_overrides` and the job's ``gamma`` and ``gae_lambda``."""
    task = TASKS[job.task]
    config = algo_config(job.algo, task.env_id)
    if job.phase != "dense":
        config.update(delayed_overrides(job.algo, task.env_id), gamma=job.gamma, gae_lambda=job.gae_lambda)
    return config


def settings_digest(job: Job, used: dict[str, Any] | None = None) -> str:
    """Eight hex digits identifying the job's complete settings (:func:`settings`) and its task's budget and
    evaluation (a dense run's: those of the task it is run for). ``used``: the job's settings as :func:`settings`
    gave them (read now when ``None``); a run passes the one reading that also builds its model."""
    task = TASKS[job.task]
    measured = {"budget": task.budget, "eval_episodes": task.eval_episodes, "threshold": task.threshold}
    config = settings(job) if used is None else used
    text = json.dumps({**config, **measured}, sort_keys=True, default=repr)
    return hashlib.sha1(text.encode()).hexdigest()[:8]


def build(job: Job, used: dict[str, Any] | None = None) -> BaseAlgorithm:
    """The seeded model of a job, on its (delayed or dense) training env. ``used``: the job's settings as
    :func:`settings` gave them (read now when ``None``); they are not modified."""
    task = TASKS[job.task]
    config = copy.deepcopy(settings(job) if used is None else used)
    n_envs = int(config.pop("n_envs"))
    normalize = bool(config.pop("normalize", False))
    delayed = job.phase != "dense"
    env = make_vec_env(
        task.env_id,
        n_envs,
        job.seed,
        normalize=normalize,
        gamma=float(config.get("gamma", 0.99)),
        reward_delay=task.delay if delayed else None,
        time_feature=delayed,
    )
    if job.algo == "localpg":
        return LocalPG("BsnPolicy", env, seed=job.seed, **config)
    return PPO("MlpPolicy", env, seed=job.seed, **config)


def run_job(job_and_folder: tuple[Job, Path]) -> dict[str, Any]:
    """Train and evaluate one job, save its record (atomically) and return it."""
    job, folder = job_and_folder
    torch.set_num_threads(1)
    task = TASKS[job.task]
    # One reading of the settings names the record, is stored in it and builds the model: an entry edited mid-run
    # changes none of them.
    used = settings(job)
    path = folder / job.file_name(used)
    normalize = bool(used.get("normalize", False))

    def eval_env() -> VecEnv:  # dense: its Monitor returns are the true returns of the delayed task too
        time_feature = job.phase != "dense"
        return make_vec_env(task.env_id, 1, 10_000 + job.seed, normalize=normalize, time_feature=time_feature)

    result = train_until(
        lambda: build(job, used), eval_env, task.threshold, task.budget, task.budget, task.eval_episodes
    )
    record = {**asdict(job), "settings": json.loads(json.dumps(used, default=repr)), **result.record()}
    save_record(path, record)
    print(
        f"{job.task} {job.phase} {job.algo} gamma={job.gamma} gae_lambda={job.gae_lambda} seed {job.seed}: "
        f"eval {result.eval_mean:.1f}, solved at {result.steps_to_threshold}, {result.seconds / 60:.1f} min",
        flush=True,
    )
    return record


def job_record(job: Job, folder: Path) -> dict[str, Any] | None:
    """The saved record of a job, or ``None`` if it has not finished."""
    return load_record(folder / job.file_name())


def selection_jobs(task: str, algo: str, seeds: list[int]) -> list[Job]:
    """Every grid point of :data:`GAMMAS` x :data:`LAMBDAS` on every selection seed."""
    return [Job(task, "select", algo, g, lam, s) for g, lam in itertools.product(GAMMAS, LAMBDAS) for s in seeds]


def choose(task: str, algo: str, seeds: list[int], folder: Path) -> tuple[float, float] | None:
    """The grid point with the best median final evaluation over the selection seeds (ties: the earlier point of
    the grid), or ``None`` while any selection run is missing."""
    scores: dict[tuple[float, float], list[float]] = {}
    for job in selection_jobs(task, algo, seeds):
        record = job_record(job, folder)
        if record is None:
            return None
        scores.setdefault((job.gamma, job.gae_lambda), []).append(record["eval_mean"])  # type: ignore[arg-type]
    return max(scores, key=lambda point: float(np.median(scores[point])))


def reported_jobs(task: str, algo: str, seeds: int, selection_seeds: list[int], folder: Path) -> list[Job]:
    """The delayed runs of the chosen grid point, then the dense runs, on seeds ``0..seeds-1`` (none while the
    choice is not made)."""
    point = choose(task, algo, selection_seeds, folder)
    if point is None:
        return []
    return [Job(task, "delayed", algo, *point, seed) for seed in range(seeds)] + [
        Job(task, "dense", algo, None, None, seed) for seed in range(seeds)
    ]


def _median(values: list[float]) -> float:
    return float(np.median(values)) if values else float("nan")


def _cell(value: float, digits: int) -> str:
    """A table cell of ``value`` with ``digits`` decimals, or ``-`` where no finished run gives one (NaN)."""
    return "-" if np.isnan(value) else f"{value:.{digits}f}"


def _ratio(numerator: float, denominator: float) -> str:
    """``numerator / denominator`` to two decimals, or ``n/a`` where either is missing (NaN) or the divisor is 0."""
    if np.isnan(numerator) or np.isnan(denominator) or not denominator:
        return "n/a"
    return f"{numerator / denominator:.2f}"


def target_met(delayed: float, dense: float) -> bool:
    """Whether a delayed evaluation keeps its dense one: >= 80% of it for a positive dense return, within 20% of
    it (``delayed >= 1.2 * dense``) for a negative one."""
    return delayed >= (0.8 * dense if dense > 0 else 1.2 * dense)


def summary_table(
    tasks: list[str], seeds: dict[str, int], selection_seeds: list[int], folder: Path
) -> tuple[str, list[str], list[str]]:
    """The markdown table of medians over the reported seeds, the runs not finished yet, and one line for each
    task and algorithm whose reported runs wait for its choice of gamma and gae_lambda (their names depend on it)."""
    lines = [
        "| delayed task | algo | chosen gamma, gae_lambda | seeds solved | median steps to threshold | "
        "median final eval (true return) | ratio to PPO | dense eval | delayed / dense | keeps dense (80% rule) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    missing: list[str] = []
    waiting: list[str] = []
    for name in tasks:
        task = TASKS[name]
        rows = {}
        for algo in ALGOS:
            jobs = reported_jobs(name, algo, seeds[name], selection_seeds, folder)
            if not jobs:
                missing += [
                    job.file_name()
                    for job in selection_jobs(name, algo, selection_seeds)
                    if job_record(job, folder) is None
                ]
                waiting.append(f"{name} {algo}: {2 * seeds[name]} runs (delayed and dense, seeds 0-{seeds[name] - 1})")
                continue
            missing += [job.file_name() for job in jobs if job_record(job, folder) is None]
            point = (jobs[0].gamma, jobs[0].gae_lambda)
            delayed = [r for job in jobs if job.phase == "delayed" and (r := job_record(job, folder)) is not None]
            dense = [r for job in jobs if job.phase == "dense" and (r := job_record(job, folder)) is not None]
            steps = [r["steps_to_threshold"] if r["steps_to_threshold"] is not None else task.budget for r in delayed]
            rows[algo] = {
                "point": point,
                "solved": f"{sum(r['steps_to_threshold'] is not None for r in delayed)}/{len(delayed)}",
                "steps": _median(steps),
                "unsolved": sum(r["steps_to_threshold"] is None for r in delayed) * 2 > len(delayed),
                "eval": _median([r["eval_mean"] for r in delayed]),
                "dense": _median([r["eval_mean"] for r in dense]),
            }
        ppo = rows.get("ppo")
        for algo, row in rows.items():
            ratio = _ratio(row["eval"], ppo["eval"]) if ppo else "n/a"
            kept = _ratio(row["eval"], row["dense"])
            met = (
                "n/a"
                if np.isnan(row["dense"]) or np.isnan(row["eval"])
                else ("yes" if target_met(row["eval"], row["dense"]) else "no")
            )
            steps = _cell(row["steps"], 0) + (" (> budget)" if row["unsolved"] else "")
            lines.append(
                f"| {name} | {algo} | {row['point'][0]:g}, {row['point'][1]:g} | {row['solved']} | {steps} | "
                f"{_cell(row['eval'], 1)} | {ratio} | {_cell(row['dense'], 1)} | {kept} | {met} |"
            )
    return "\n".join(lines), missing, waiting


def selection_table(tasks: list[str], selection_seeds: list[int], folder: Path) -> str:
    """Each grid point's final evaluation on the selection seeds (the chosen point in bold)."""
    lines = [
        "| delayed task | algo | "
        + " | ".join(f"gamma {g:g}, lambda {lam:g}" for g, lam in itertools.product(GAMMAS, LAMBDAS))
        + " |",
        "|---|---|" + "---|" * (len(GAMMAS) * len(LAMBDAS)),
    ]
    for name in tasks:
        for algo in ALGOS:
            chosen = choose(name, algo, selection_seeds, folder)
            cells = []
            for g, lam in itertools.product(GAMMAS, LAMBDAS):
                records = [job_record(Job(name, "select", algo, g, lam, s), folder) for s in selection_seeds]
                values = [r["eval_mean"] for r in records if r is not None]
                cell = ", ".join(f"{v:.1f}" for v in values) or "-"
                cells.append(f"**{cell}**" if chosen == (g, lam) else cell)
            lines.append(f"| {name} | {algo} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def report_records(
    tasks: list[str], seeds: dict[str, int], selection_seeds: list[int], folder: Path
) -> dict[str, list[dict[str, Any]]]:
    """For each task, the saved records of its reported runs (:func:`reported_jobs`), in algorithm order."""
    return {
        name: [
            record
            for algo in ALGOS
            for job in reported_jobs(name, algo, seeds[name], selection_seeds, folder)
            if (record := job_record(job, folder)) is not None
        ]
        for name in tasks
    }


def per_seed_table(records: dict[str, list[dict[str, Any]]]) -> str:
    """One row per reported run (delayed and dense phases)."""
    lines = [
        "| task | phase | algo | gamma, gae_lambda | seed | steps to threshold | final eval | minutes |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, record in ((name, record) for name, task_records in records.items() for record in task_records):
        where = TASKS[name].env_id if record["phase"] == "dense" else name
        point = "shipped" if record["gamma"] is None else f"{record['gamma']:g}, {record['gae_lambda']:g}"
        solved = record["steps_to_threshold"] if record["steps_to_threshold"] is not None else "not reached"
        lines.append(
            f"| {where} | {record['phase']} | {record['algo']} | {point} | {record['seed']} | {solved} | "
            f"{record['eval_mean']:.1f} | {record['seconds'] / 60:.1f} |"
        )
    return "\n".join(lines)


def plot(records: dict[str, list[dict[str, Any]]], path: Path) -> None:
    """Training curves of the reported delayed runs (solid) and dense runs (faint), one panel per task that has
    any (a task with its selection runs only gets none)."""
    panels = []
    for name, task_records in records.items():
        lines = []
        for record in task_records:
            if not record["curve"]:
                continue
            steps, means = zip(*record["curve"], strict=True)
            dense = record["phase"] == "dense"
            label = f"{record['algo']} ({record['phase']})" if record["seed"] == 0 else None
            colour = COLOURS[record["algo"]]
            lines.append(Line(steps, means, label=label, color=colour, alpha=0.25 if dense else 0.7, linewidth=1))
        if not lines:
            continue
        ylabel = "20-episode training mean (true return)"
        panels.append(Panel(lines, title=name, xlabel="env steps", ylabel=ylabel, thresholds=[TASKS[name].threshold]))
    plot_learning_curves(panels, path, panel_size=(6, 4), grid=False)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--tasks", nargs="+", default=list(TASKS)[:3], choices=list(TASKS), help="delayed tasks, <env id>@<delay>"
    )
    parser.add_argument(
        "--seeds", type=int, nargs="+", default=[5], help="reported seeds 0..N-1 (> 0), one value or one per task"
    )
    parser.add_argument(
        "--selection-seeds",
        type=int,
        nargs="+",
        default=list(SELECTION_SEEDS),
        help="seeds on which each algorithm chooses its gamma and gae_lambda (not reported)",
    )
    parser.add_argument(
        "--algos",
        nargs="+",
        choices=ALGOS,
        default=list(ALGOS),
        help="train only these algorithms' runs (the report covers every algorithm, listing missing runs)",
    )
    parser.add_argument("--workers", type=int, default=1, help="training processes in parallel (> 0)")
    parser.add_argument("--report-only", action="store_true", help="write the report from the finished runs")
    parser.add_argument("--out", default="benchmarks/results/delayed", help="output path without extension")
    args = parser.parse_args(argv)
    if args.workers <= 0:
        parser.error("--workers must be > 0")
    try:
        seeds = seeds_per_task(args.tasks, args.seeds)
    except ValueError as error:
        parser.error(str(error))
    if set(args.selection_seeds) & set(range(max(args.seeds))):
        parser.error("--selection-seeds must differ from the reported seeds 0..N-1")
    out = Path(args.out)
    folder = out.parent / f"{out.name}_runs"
    folder.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    if not args.report_only:
        selection = [
            job
            for name in args.tasks
            for algo in args.algos
            for job in selection_jobs(name, algo, args.selection_seeds)
        ]
        resume_runs(run_job, selection, Job.file_name, folder, args.workers)
        reported = [
            job
            for name in args.tasks
            for algo in args.algos
            for job in reported_jobs(name, algo, seeds[name], args.selection_seeds, folder)
        ]
        resume_runs(run_job, reported, Job.file_name, folder, args.workers)
    table, missing, waiting = summary_table(args.tasks, seeds, args.selection_seeds, folder)
    records = report_records(args.tasks, seeds, args.selection_seeds, folder)
    selection_records = [
        record
        for name in args.tasks
        for algo in ALGOS
        for job in selection_jobs(name, algo, args.selection_seeds)
        if (record := job_record(job, folder)) is not None
    ]
    reported = [record for task_records in records.values() for record in task_records]
    minutes = sum(record["seconds"] for record in reported + selection_records) / 60
    plot(records, out.with_suffix(".png"))
    command = "nice python -m benchmarks.delayed " + " ".join(sys.argv[1:] if argv is None else argv)
    text = "\n\n".join(
        [
            "# LocalPG vs SB3 PPO with delayed reward",
            f"Command: `{command}` (this invocation: {(time.perf_counter() - start) / 60:.0f} min; the runs of this "
            f"report trained for {minutes:.0f} min in all). {finished_runs_sentence(folder, missing)} A "
            "finished run is not trained again: the same command without `--report-only` trains only the missing ones"
            + (
                ". To follow once the algorithm's gamma and gae_lambda are chosen: " + "; ".join(waiting)
                if waiting
                else ""
            )
            + f". Machine: {machine_description('cpu')}.",
            "Delayed task `<env>@<delay>`: the task's reward accumulated and paid every `<delay>` steps, or only at "
            "the episode's end (`episode`), by `envs.RewardDelay`, and the remaining fraction of the time limit "
            "observed by both algorithms (`envs.TimeFeature`); every return reported here is the task's true return "
            "(SB3's Monitor sits inside the delay). Each algorithm chose its gamma in "
            f"{{{', '.join(f'{g:g}' for g in GAMMAS)}}} and gae_lambda in "
            f"{{{', '.join(f'{lam:g}' for lam in LAMBDAS)}}} "
            f"by its median final evaluation on seed(s) {', '.join(map(str, args.selection_seeds))} (table below), "
            "then trained on the reported seeds 0..N-1. Other settings: each algorithm's shipped ones for the "
            "dense task (LocalPG `hyperparams/localpg.yml`, PPO RL Zoo's `hyperparams/ppo.yml`) updated by the "
            "entries of `hyperparams/<algo>_delayed.yml` other than gamma and gae_lambda (each run's settings are "
            "in its file); dense eval: the shipped settings on the dense task, same seeds. Budgets: "
            + "; ".join(
                f"{name} {TASKS[name].budget} steps, {TASKS[name].eval_episodes} deterministic evaluation "
                f"episodes, threshold {TASKS[name].threshold:g}"
                for name in args.tasks
            )
            + ". Medians over seeds; ratio to PPO: of the median final evaluations (for negative returns, below 1 is "
            "better); keeps dense: delayed >= 0.8 x dense (positive returns) or >= 1.2 x dense (negative returns).",
            table,
            f"![learning curves]({out.with_suffix('.png').name})",
            "## Choice of gamma and gae_lambda (final evaluation on the selection seeds)",
            selection_table(args.tasks, args.selection_seeds, folder),
            "## Per seed",
            per_seed_table(records),
        ]
    )
    out.with_suffix(".md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()

"""The same trained LocalPG policies evaluated with each deterministic readout of their BSN units.

For every task and seed LocalPG trains once with its shipped settings; its final model is then evaluated on the
same evaluation env seed (``10000 + seed``) three ways:

* **threshold** units (``deterministic_units="threshold"``, the default): each unit fires iff ``p > 0.5``;
* **mean-field** units (``deterministic_units="mean_field"``): each unit outputs ``p``, so with one BSN layer the
  head gives the sampled policy's expected output (a Gaussian policy's mean action);
* **sampled** units and actions (``predict(deterministic=False)``), the policy that was trained.

Training does not depend on the readout, so each difference is the readout's alone. Dense tasks are trained as
``benchmarks.compare_sb3`` trains them (``hyperparams/localpg.yml``, the task's budget, minimum steps and
evaluation episodes); a delayed task ``<env>@<delay>`` as ``benchmarks.delayed``'s reported runs (the gamma and
gae_lambda LocalPG chose there, on its selection seeds: that benchmark's selection runs must be finished).

Each finished run is saved in ``<out>_runs/`` and not trained again; a second process on the same folder trains
other runs (``benchmarks.common.resume_runs``). Usage::

    nice python -m benchmarks.readout --tasks CartPole-v1 Acrobot-v1 LunarLander-v3 --seeds 5 5 3 --workers 2
    nice python -m benchmarks.readout --tasks LunarLander-v3@episode Swimmer-v5 --seeds 3 --report-only
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.vec_env import VecEnv

from benchmarks import compare_sb3, delayed
from benchmarks.common import (
    evaluate,
    finished_runs_sentence,
    machine_description,
    resume_runs,
    save_record,
    seeds_per_task,
    train_until,
)
from bsn_zoo.plotting import Line, Panel, plot_learning_curves
from envs import make_vec_env
from policies import DETERMINISTIC_UNITS

#: The evaluations of each trained model, in report order: the deterministic readouts, then sampled units.
READOUTS = (*DETERMINISTIC_UNITS, "sampled")
#: How each readout is named in the report.
READOUT_TITLES = {"threshold": "threshold units", "mean_field": "mean-field units", "sampled": "sampled"}
#: Where ``benchmarks.delayed`` keeps its runs (the delayed tasks' choices of gamma and gae_lambda are read there).
DELAYED_RUNS = Path(__file__).parent / "results" / "delayed_runs"


@dataclass(frozen=True)
class RunPlan:
    """How one task's runs are trained and evaluated.

    Attributes:
        settings: LocalPG's arguments and run settings (``n_envs``, ``normalize``) as the task's benchmark uses
            them.
        build: the seeded model of a seed, on its training env, from ``settings``.
        eval_env: the evaluation env of a seed (true returns; a delayed task's time feature included).
        threshold: solved threshold of the 20-episode training mean.
        budget: training steps.
        min_steps: training steps at least, once solved.
        eval_episodes: episodes of each evaluation.
    """

    settings: dict[str, Any]
    build: Callable[[int], BaseAlgorithm]
    eval_env: Callable[[int], VecEnv]
    threshold: float
    budget: int
    min_steps: int
    eval_episodes: int

    def digest(self) -> str:
        """Eight hex digits identifying the settings, budget rule and evaluation episodes."""
        measured = {"budget": self.budget, "min_steps": self.min_steps, "eval_episodes": self.eval_episodes,
                    "threshold": self.threshold}
        text = json.dumps({**self.settings, **measured}, sort_keys=True, default=repr)
        return hashlib.sha1(text.encode()).hexdigest()[:8]


def task_names() -> list[str]:
    """Every task this benchmark runs: ``benchmarks.compare_sb3``'s dense tasks and ``benchmarks.delayed``'s."""
    return [*compare_sb3.TASKS, *delayed.TASKS]


def plan(task: str) -> RunPlan:
    """The run plan of ``task`` (a name of :func:`task_names`), its settings read once.

    Raises:
        ValueError: a delayed task whose LocalPG selection runs are not finished in ``benchmarks.delayed``'s
            records, naming the command that trains them.
    """
    if task in compare_sb3.TASKS:
        dense = compare_sb3.TASKS[task]
        config = compare_sb3.algo_config("localpg", task)
        normalize = bool(config.get("normalize", False))
        return RunPlan(
            config,
            lambda seed: compare_sb3.build("localpg", task, seed, config=config),
            lambda seed: make_vec_env(task, 1, 10_000 + seed, normalize=normalize),
            dense.threshold,
            dense.budget("localpg"),
            dense.min_steps,
            dense.eval_episodes,
        )
    chosen = delayed.choose(task, "localpg", list(delayed.SELECTION_SEEDS), DELAYED_RUNS)
    if chosen is None:
        raise ValueError(
            f"LocalPG has not chosen its gamma and gae_lambda for {task}: run "
            f"`python -m benchmarks.delayed --tasks {task} --algos localpg` first"
        )
    spec = delayed.TASKS[task]
    used = delayed.settings(delayed.Job(task, "delayed", "localpg", *chosen, 0))  # the same for every seed
    normalize = bool(used.get("normalize", False))
    return RunPlan(
        used,
        lambda seed: delayed.build(delayed.Job(task, "delayed", "localpg", *chosen, seed), used),
        lambda seed: make_vec_env(spec.env_id, 1, 10_000 + seed, normalize=normalize, time_feature=True),
        spec.threshold,
        spec.budget,
        spec.budget,
        spec.eval_episodes,
    )

#: One run: (task, seed).
Job = tuple[str, int]


def record_name(job: Job, settings_digest: str) -> str:
    """The file of a run's record: task, the digest of its plan (:meth:`RunPlan.digest`) and seed, so that a record
    is never reused for other settings."""
    task, seed = job
    return f"{task.replace('/', '_')}__localpg__{settings_digest}__s{seed}.json"


def evaluate_readouts(
    model: BaseAlgorithm, make_eval_env: Callable[[], VecEnv], episodes: int, known: dict[str, float] | None = None
) -> dict[str, float]:
    """Mean return of ``episodes`` episodes under each readout of :data:`READOUTS`, each on a fresh eval env with the
    same seed; the policy's own readout is restored afterwards. ``known``: readouts already evaluated that way (their
    mean returns), taken as they are."""
    policy = model.policy
    own = policy.deterministic_units
    returns = dict(known or {})
    try:
        for readout in DETERMINISTIC_UNITS:
            if readout in returns:
                continue
            policy.deterministic_units = readout
            returns[readout] = evaluate(model, make_eval_env(), episodes)
    finally:
        policy.deterministic_units = own
    if "sampled" not in returns:
        returns["sampled"] = evaluate(model, make_eval_env(), episodes, deterministic=False)
    return {readout: returns[readout] for readout in READOUTS}


def run_job(job_and_folder: tuple[Job, Path]) -> dict[str, Any]:
    """Train one run, evaluate its final model under every readout, save its record (atomically) and return it."""
    (task, seed), folder = job_and_folder
    torch.set_num_threads(1)
    run_plan = plan(task)  # one reading of the settings names the record and builds the model
    evaluations: dict[str, float] = {}

    def after(model: BaseAlgorithm, eval_mean: float) -> None:  # train_until evaluated the policy's own readout
        own = {model.policy.deterministic_units: eval_mean}
        evaluations.update(evaluate_readouts(model, lambda: run_plan.eval_env(seed), run_plan.eval_episodes, own))

    result = train_until(
        lambda: run_plan.build(seed),
        lambda: run_plan.eval_env(seed),
        run_plan.threshold,
        run_plan.budget,
        run_plan.min_steps,
        run_plan.eval_episodes,
        after=after,
    )
    settings = json.loads(json.dumps(run_plan.settings, default=repr))
    record = {"task": task, "seed": seed, "settings": settings, **result.record(), "evaluations": evaluations}
    save_record(folder / record_name((task, seed), run_plan.digest()), record)
    print(f"{task} seed {seed}: " + ", ".join(f"{name} {value:.1f}" for name, value in evaluations.items())
          + f" ({result.seconds / 60:.1f} min)", flush=True)
    return record


def _median(values: list[float]) -> float:
    return float(np.median(values)) if values else float("nan")


def summary_table(records: dict[str, list[dict[str, Any]]], seeds: dict[str, int]) -> str:
    """Per task: finished seeds, the median return under each readout, the median over seeds of mean-field minus
    threshold, and the seeds on which the mean-field readout scored at least the threshold one."""
    header = (
        "| task | seeds | " + " | ".join(f"median eval, {READOUT_TITLES[name]}" for name in READOUTS)
        + " | median of mean field - threshold | seeds where mean field >= threshold |"
    )
    rows = [header, "|" + "---|" * (len(READOUTS) + 4)]
    for task, task_records in records.items():
        by_readout = {name: [record["evaluations"][name] for record in task_records] for name in READOUTS}
        gains = [m - t for m, t in zip(by_readout["mean_field"], by_readout["threshold"], strict=True)]
        cells = " | ".join(f"{_median(values):.1f}" if values else "-" for values in by_readout.values())
        better = sum(gain >= 0 for gain in gains)
        rows.append(
            f"| {task} | {len(task_records)}/{seeds[task]} | {cells} | "
            f"{f'{_median(gains):+.1f}' if gains else '-'} | {better}/{len(gains)} |"
        )
    return "\n".join(rows)


def per_seed_table(records: dict[str, list[dict[str, Any]]]) -> str:
    """One row per finished run: its evaluation under each readout, its last training mean and minutes."""
    rows = [
        "| task | seed | " + " | ".join(READOUT_TITLES[name] for name in READOUTS)
        + " | last 20-episode training mean | steps | minutes |",
        "|" + "---|" * (len(READOUTS) + 5),
    ]
    for task, task_records in records.items():
        for record in task_records:
            last = f"{record['curve'][-1][1]:.1f}" if record["curve"] else "-"
            cells = " | ".join(f"{record['evaluations'][name]:.1f}" for name in READOUTS)
            rows.append(f"| {task} | {record['seed']} | {cells} | {last} | {record['steps']} | "
                        f"{record['seconds'] / 60:.1f} |")
    return "\n".join(rows)


def plot(records: dict[str, list[dict[str, Any]]], path: Path) -> None:
    """One panel per task: each seed's evaluation under each readout, joined by a line (x: the readouts)."""
    panels = []
    for task, task_records in records.items():
        lines = [
            Line(range(len(READOUTS)), [record["evaluations"][name] for name in READOUTS],
                 label=f"seed {record['seed']}", marker="o", linewidth=1)
            for record in task_records
        ]
        panels.append(Panel(lines, title=task, xlabel="readout", ylabel="final evaluation (mean return)",
                            categories=[READOUT_TITLES[name] for name in READOUTS]))
    if panels:
        plot_learning_curves(panels, path, columns=min(4, len(panels)), panel_size=(5, 3.6), legend_fontsize=7)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", nargs="+", required=True, choices=task_names(),
                        help="dense tasks (benchmarks.compare_sb3's) and delayed ones, <env id>@<delay>")
    parser.add_argument("--seeds", type=int, nargs="+", default=[3],
                        help="seeds 0..N-1 (> 0), one value or one per task")
    parser.add_argument("--workers", type=int, default=1, help="training processes in parallel (> 0)")
    parser.add_argument("--report-only", action="store_true", help="write the report from the finished runs")
    parser.add_argument("--out", default="benchmarks/results/readout", help="output path without extension")
    args = parser.parse_args(argv)
    if args.workers <= 0:
        parser.error("--workers must be > 0")
    try:
        seeds = seeds_per_task(args.tasks, args.seeds)
        plans = {task: plan(task) for task in args.tasks}
    except ValueError as error:
        parser.error(str(error))
    digests = {task: task_plan.digest() for task, task_plan in plans.items()}
    out = Path(args.out)
    folder = out.parent / f"{out.name}_runs"
    jobs = [(task, seed) for task in args.tasks for seed in range(seeds[task])]
    start = time.perf_counter()
    finished = resume_runs(run_job, jobs, lambda job: record_name(job, digests[job[0]]), folder, args.workers,
                           train=not args.report_only)
    records = {task: [finished[(task, seed)] for seed in range(seeds[task]) if (task, seed) in finished]
               for task in args.tasks}
    missing = [record_name(job, digests[job[0]]) for job in jobs if job not in finished]
    minutes = sum(record["seconds"] for task_records in records.values() for record in task_records) / 60
    plot(records, out.with_suffix(".png"))
    command = "nice python -m benchmarks.readout " + " ".join(sys.argv[1:] if argv is None else argv)
    text = "\n\n".join(
        [
            "# LocalPG: one trained policy, three ways to act at evaluation",
            f"Command: `{command}` (this invocation: {(time.perf_counter() - start) / 60:.0f} min; the runs of this "
            f"report trained for {minutes:.0f} min in all). {finished_runs_sentence(folder, missing)} A finished run "
            f"is not trained again. Machine: {machine_description('cpu')}.",
            "Each run trains LocalPG once with its shipped settings (dense tasks: as `benchmarks.compare_sb3` trains "
            "them; a delayed task `<env>@<delay>`: as `benchmarks.delayed`'s reported runs, with the gamma and "
            "gae_lambda LocalPG chose there). Its final model is then evaluated three times on the evaluation env "
            "seeded 10000 + seed, with the task's evaluation episodes ("
            + "; ".join(f"{task} {task_plan.eval_episodes}" for task, task_plan in plans.items())
            + "): **threshold units** (`deterministic_units=\"threshold\"`, the default: a unit fires iff "
            "p > 0.5, the action is the head's mode), **mean-field units** (`deterministic_units=\"mean_field\"`: "
            "each unit outputs p; with one BSN layer the head gives the sampled policy's expected output, e.g. its "
            "mean action) and **sampled** units and actions (the policy that was trained). Training does not "
            "depend on the readout. Medians over seeds; every return is the task's true return.",
            summary_table(records, seeds),
            f"![each seed under each readout]({out.with_suffix('.png').name})",
            "## Per seed",
            per_seed_table(records),
        ]
    )
    out.with_suffix(".md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()

"""Deep BSN policies trained by local rules against back-propagated PPO of the same depth and width.

For each task and depth (1 to 4 BSN layers), three learners train in the same run:

* ``strict``: LocalPG with ``rao_blackwell: false`` (each unit reads only its inputs, its own sample and
  probability, and the broadcast advantage);
* ``posterior``: LocalPG with posterior credit (each unit reads the layers above; with the deep settings'
  ``coupled_posterior``, what its flip does to the action);
* ``ppo``: SB3's PPO with RL Zoo's settings for the task (``hyperparams/ppo.yml``) and an ``MlpPolicy`` whose
  actor has the same number of hidden layers, as wide (tanh units, back-propagated), and whose critic is
  LocalPG's (two tanh layers of 64).

LocalPG's settings for a depth are :func:`bsn_zoo.config.deep_policy_settings` over its tuned entry
(``hyperparams/localpg.yml``): the entry's width repeated ``depth`` times, the credit rule, and the levers of
``hyperparams/localpg_deep.yml`` (what ``train.py --bsn-layers D --credit RULE`` trains). Each run reports its
steps to threshold (the first step at which the 20-episode training mean reached it; the budget if never),
its final deterministic evaluation, and per BSN layer the medians over training of the signal-to-noise ratio
of its local estimates (``bsn/layer{l}/grad_snr``, :func:`agents.localpg.diagnostics.signal_to_noise`) and of
what flipping one of its units does to the action (``bsn/layer{l}/flip_influence``, ``flip_reach``,
:func:`agents.localpg.diagnostics.flip_effects`).

Every finished run is saved at once as one JSON file under ``<out>_runs/`` (atomically), named by a digest of
its settings; a run whose file exists is not trained again, so a stopped benchmark resumes where it stopped
and ``--report-only`` writes the report from the runs finished so far.

Usage (each committed table's command is written at its top)::

    nice python -m benchmarks.depth --tasks CartPole-v1 --seeds 5 --workers 2
    nice python -m benchmarks.depth --tasks Acrobot-v1 --depths 1 3 --seeds 5 --workers 2
    python -m benchmarks.depth --tasks CartPole-v1 --seeds 5 --report-only
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from stable_baselines3 import PPO
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.vec_env import VecEnv

from agents.localpg import LocalPG
from agents.localpg.diagnostics import DIAGNOSTIC_ROWS
from benchmarks.common import (
    finished_runs_sentence,
    load_record,
    machine_description,
    resume_runs,
    save_record,
    train_until,
)
from benchmarks.compare_sb3 import algo_config
from bsn_zoo.config import CREDIT_RULES, deep_policy_settings, merge
from bsn_zoo.plotting import Line, Panel, plot_learning_curves
from envs import make_vec_env

#: The learners: LocalPG under each credit rule, and back-propagated PPO.
ALGOS = (*CREDIT_RULES, "ppo")
#: The depths measured, in BSN (or, for PPO, tanh) hidden layers.
DEPTHS = (1, 2, 3, 4)
#: The critic of every learner: LocalPG's default, two tanh layers of 64.
CRITIC = [64, 64]
COLOURS = {"strict": "tab:red", "posterior": "tab:blue", "ppo": "tab:green"}


@dataclass(frozen=True)
class DepthTask:
    """A task of the depth benchmark.

    Attributes:
        env_id: Gymnasium id.
        budget: training steps at most.
        min_steps: steps trained at least, even once solved (the budget: every run trains it all).
        threshold: solved threshold of the 20-episode training mean.
        eval_episodes: deterministic evaluation episodes at the end of a run.
    """

    env_id: str
    budget: int
    min_steps: int
    threshold: float
    eval_episodes: int


#: The tasks. CartPole-v1 stops once solved (its measure is steps to threshold); Acrobot-v1 and LunarLander-v3
#: train their whole budget, then evaluate.
TASKS = {
    task.env_id: task
    for task in (
        DepthTask("CartPole-v1", 150_000, 0, 475.0, 10),
        DepthTask("Acrobot-v1", 500_000, 500_000, -100.0, 30),
        DepthTask("LunarLander-v3", 1_000_000, 1_000_000, 200.0, 10),
    )
}


@dataclass(frozen=True)
class Job:
    """One training run: a task, a learner (:data:`ALGOS`), a depth and a seed (evaluation env: ``10000 + seed``)."""

    task: str
    algo: str
    depth: int
    seed: int

    def file_name(self, used: dict[str, Any] | None = None) -> str:
        """The run's JSON file: task, learner, depth, seed and a digest of its complete settings, so that a run
        is never reused for other settings. ``used``: as in :func:`settings_digest`."""
        return f"{self.task}__{self.algo}__d{self.depth}__{settings_digest(self, used)}__s{self.seed}.json"


def width(env_id: str) -> int:
    """The width of every hidden layer on ``env_id``: that of LocalPG's tuned entry's first BSN layer."""
    arch = algo_config("localpg", env_id).get("policy_kwargs", {}).get("net_arch", [64])
    return int((arch["pi"] if isinstance(arch, dict) else arch)[0])


def settings(job: Job) -> dict[str, Any]:
    """The learner's arguments and run settings (``n_envs``, ``normalize``) for the job's depth."""
    if job.algo == "ppo":
        config = algo_config("ppo", job.task)
        arch = {"pi": [width(job.task)] * job.depth, "vf": list(CRITIC)}
        return merge(config, {"policy_kwargs": {"net_arch": arch}})
    entry = algo_config("localpg", job.task)
    return merge(entry, deep_policy_settings(job.task, job.depth, job.algo, entry))


def settings_digest(job: Job, used: dict[str, Any] | None = None) -> str:
    """Eight hex digits identifying the job's settings (:func:`settings`) and its task's budget and evaluation.
    ``used``: the job's settings as :func:`settings` gave them (read now when ``None``); a run passes the one
    reading that also builds its model."""
    config = settings(job) if used is None else used
    text = json.dumps({**config, **asdict(TASKS[job.task])}, sort_keys=True, default=repr)
    return hashlib.sha1(text.encode()).hexdigest()[:8]


def build(job: Job, used: dict[str, Any] | None = None) -> BaseAlgorithm:
    """The seeded model of a job, on its training env. ``used``: the job's settings as :func:`settings` gave them
    (read now when ``None``); they are not modified."""
    config = copy.deepcopy(settings(job) if used is None else used)
    n_envs = int(config.pop("n_envs"))
    normalize = bool(config.pop("normalize", False))
    env = make_vec_env(job.task, n_envs, job.seed, normalize=normalize, gamma=float(config.get("gamma", 0.99)))
    if job.algo == "ppo":
        return PPO("MlpPolicy", env, seed=job.seed, **config)
    return LocalPG("BsnPolicy", env, seed=job.seed, **config)


#: The per-layer ``bsn/layer{l}/<key>`` diagnostics each LocalPG run records (median over its updates).
LAYER_KEYS = ("grad_snr", "flip_influence", "flip_reach")


class LayerDiagnostics(BaseCallback):
    """Collects LocalPG's per-layer ``bsn/layer{l}/<key>`` of :data:`LAYER_KEYS` after every update (nothing for PPO).

    Attributes:
        values: per key, per BSN layer, one value per update.
    """

    def __init__(self) -> None:
        super().__init__()
        self.values: dict[str, dict[int, list[float]]] = {key: {} for key in LAYER_KEYS}

    def _on_step(self) -> bool:
        return True

    def _on_rollout_start(self) -> None:  # the previous update has been logged by now
        logged = getattr(self.model.logger, "name_to_value", {})
        for name, value in logged.items():
            prefix, _, key = name.rpartition("/")
            if name.startswith("bsn/layer") and key in self.values:
                layer = int(prefix.split("/")[1].removeprefix("layer"))
                self.values[key].setdefault(layer, []).append(float(value))

    def medians(self) -> dict[str, dict[str, float]]:
        """``{"layer_<key>": {layer: median over updates}}``, as a run's record stores them."""
        return {
            f"layer_{key}": {str(layer): float(np.median(values)) for layer, values in sorted(per_layer.items())}
            for key, per_layer in self.values.items()
        }


def noise_floor(env_id: str) -> float:
    """The grad SNR of an estimate with mean 0: ``E|mean| / std = sqrt(2 / (pi n))`` over the ``n`` rows of
    LocalPG's rollout on ``env_id`` (at most :data:`agents.localpg.diagnostics.DIAGNOSTIC_ROWS`)."""
    config = algo_config("localpg", env_id)
    rows = min(int(config["n_envs"]) * int(config["n_steps"]), DIAGNOSTIC_ROWS)
    return math.sqrt(2.0 / (math.pi * rows))


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

    def eval_env() -> VecEnv:
        return make_vec_env(job.task, 1, 10_000 + job.seed, normalize=normalize)

    layer_diagnostics = LayerDiagnostics()
    result = train_until(
        lambda: build(job, used), eval_env, task.threshold, task.budget, task.min_steps, task.eval_episodes,
        callbacks=[layer_diagnostics],
    )
    record = {
        **asdict(job),
        "settings": json.loads(json.dumps(used, default=repr)),
        **result.record(),
        **layer_diagnostics.medians(),
    }
    save_record(path, record)
    print(
        f"{job.task} {job.algo} depth {job.depth} seed {job.seed}: solved at {result.steps_to_threshold}, "
        f"eval {result.eval_mean:.1f}, {result.seconds / 60:.1f} min",
        flush=True,
    )
    return record


def jobs_for(tasks: list[str], depths: list[int], seeds: int, algos: tuple[str, ...] = ALGOS) -> list[Job]:
    """Every (task, depth, seed, learner), seeds first so that a partial run covers every cell."""
    return [
        Job(task, algo, depth, seed)
        for task in tasks
        for seed in range(seeds)
        for depth in depths
        for algo in algos
    ]


def _median(values: list[float]) -> float:
    return float(np.median(values)) if values else float("nan")


@dataclass
class Cell:
    """The finished runs of one (task, learner, depth)."""

    records: list[dict[str, Any]]
    budget: int

    @property
    def solved(self) -> str:
        return f"{sum(r['steps_to_threshold'] is not None for r in self.records)}/{len(self.records)}"

    @property
    def steps(self) -> float:
        """Median steps to threshold, a run that never reached it counting as the budget."""
        return _median([r["steps_to_threshold"] or self.budget for r in self.records])

    @property
    def eval_mean(self) -> float:
        return _median([r["eval_mean"] for r in self.records])

    def layer_value(self, key: str, layer: int) -> float:
        """Median over runs of a :data:`LAYER_KEYS` diagnostic of BSN layer ``layer`` (NaN if no run has it)."""
        values = [r[f"layer_{key}"][str(layer)] for r in self.records if str(layer) in r.get(f"layer_{key}", {})]
        return _median(values)

    def layer_values(self, key: str, depth: int, digits: int) -> str:
        """The diagnostic for every layer, bottom first, comma-separated ("-" where not recorded)."""
        values = [self.layer_value(key, layer) for layer in range(depth)]
        return ", ".join("-" if math.isnan(value) else f"{value:.{digits}f}" for value in values)


Grouped = dict[tuple[str, str, int], "Cell"]


def cells(tasks: list[str], depths: list[int], seeds: int, folder: Path) -> tuple[Grouped, list[str]]:
    """The finished runs grouped by (task, learner, depth), and the file names of the runs not finished yet."""
    grouped: Grouped = {}
    missing: list[str] = []
    for job in jobs_for(tasks, depths, seeds):
        cell = grouped.setdefault((job.task, job.algo, job.depth), Cell([], TASKS[job.task].budget))
        record = load_record(folder / job.file_name())
        if record is None:
            missing.append(job.file_name())
        else:
            cell.records.append(record)
    return grouped, missing


def summary_table(grouped: Grouped, tasks: list[str], depths: list[int]) -> str:
    """Medians per (task, depth, learner), with ratios to PPO of the same depth."""
    lines = [
        "| task | depth | learner | seeds solved | median steps to threshold | steps / PPO's | median final eval | "
        "eval - PPO's | median grad SNR per BSN layer (bottom first) | median flip influence per BSN layer | "
        "median flip reach per BSN layer |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for task in tasks:
        for depth in depths:
            ppo = grouped.get((task, "ppo", depth))
            for algo in ALGOS:
                cell = grouped.get((task, algo, depth))
                if cell is None or not cell.records:
                    continue
                unsolved = " (> budget)" if cell.steps >= cell.budget else ""
                ratio = f"{cell.steps / ppo.steps:.2f}" if ppo and ppo.records and algo != "ppo" else "-"
                gap = f"{cell.eval_mean - ppo.eval_mean:+.1f}" if ppo and ppo.records and algo != "ppo" else "-"
                digits = (3, 4, 3)  # grad SNR, flip influence, flip reach
                layers = (
                    " | ".join(cell.layer_values(key, depth, d) for key, d in zip(LAYER_KEYS, digits, strict=True))
                    if algo != "ppo"
                    else "- | - | -"
                )
                lines.append(
                    f"| {task} | {depth} | {algo} | {cell.solved} | {cell.steps:.0f}{unsolved} | {ratio} | "
                    f"{cell.eval_mean:.1f} | {gap} | {layers} |"
                )
    return "\n".join(lines)


def per_seed_table(grouped: Grouped) -> str:
    """One row per finished run."""
    lines = [
        "| task | depth | learner | seed | steps to threshold | final eval | minutes |",
        "|---|---|---|---|---|---|---|",
    ]
    for (task, algo, depth), cell in grouped.items():
        for record in sorted(cell.records, key=lambda r: r["seed"]):
            solved = record["steps_to_threshold"] if record["steps_to_threshold"] is not None else "not reached"
            lines.append(
                f"| {task} | {depth} | {algo} | {record['seed']} | {solved} | {record['eval_mean']:.1f} | "
                f"{record['seconds'] / 60:.1f} |"
            )
    return "\n".join(lines)


def plot(grouped: Grouped, tasks: list[str], depths: list[int], path: Path) -> None:
    """Median steps to threshold against depth, one line per learner (each seed a faint point), one panel per
    task."""
    panels = []
    for task in tasks:
        lines = []
        for algo in ALGOS:
            present = [d for d in depths if (c := grouped.get((task, algo, d))) is not None and c.records]
            if not present:
                continue
            medians = [grouped[(task, algo, d)].steps for d in present]
            lines.append(Line(present, medians, label=algo, color=COLOURS[algo], linewidth=2, marker="o"))
            for depth in present:
                cell = grouped[(task, algo, depth)]
                seeds = [r["steps_to_threshold"] or cell.budget for r in cell.records]
                lines.append(Line([depth] * len(seeds), seeds, color=COLOURS[algo], alpha=0.3, linewidth=0, marker="."))
        panels.append(
            Panel(lines, title=task, xlabel="hidden layers", ylabel="steps to threshold (budget if never)",
                  thresholds=[TASKS[task].budget])
        )
    plot_learning_curves(panels, path, panel_size=(6, 4))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", nargs="+", default=["CartPole-v1"], choices=list(TASKS), help="Gymnasium ids")
    parser.add_argument("--depths", type=int, nargs="+", default=list(DEPTHS), help="hidden layers (>= 1)")
    parser.add_argument("--seeds", type=int, default=5, help="seeds 0..N-1 (> 0)")
    parser.add_argument("--workers", type=int, default=1, help="training processes in parallel (> 0)")
    parser.add_argument(
        "--train-only", nargs="+", choices=ALGOS, default=list(ALGOS), help="train these learners' runs only"
    )
    parser.add_argument("--report-only", action="store_true", help="write the report from the finished runs")
    parser.add_argument("--out", default="benchmarks/results/depth", help="output path without extension")
    args = parser.parse_args(argv)
    if args.seeds <= 0 or args.workers <= 0 or any(depth < 1 for depth in args.depths):
        parser.error("--seeds and --workers must be > 0 and every --depths value >= 1")
    out = Path(args.out)
    folder = out.parent / f"{out.name}_runs"
    start = time.perf_counter()
    jobs = jobs_for(args.tasks, args.depths, args.seeds, tuple(args.train_only))
    resume_runs(run_job, jobs, Job.file_name, folder, args.workers, train=not args.report_only)
    grouped, missing = cells(args.tasks, args.depths, args.seeds, folder)
    minutes = sum(r["seconds"] for cell in grouped.values() for r in cell.records) / 60
    plot(grouped, args.tasks, args.depths, out.with_suffix(".png"))
    command = "nice python -m benchmarks.depth " + " ".join(sys.argv[1:] if argv is None else argv)
    budgets = "; ".join(
        f"{task}: threshold {TASKS[task].threshold:g}, budget {TASKS[task].budget}, "
        f"{'stops once solved' if TASKS[task].min_steps == 0 else 'trains the whole budget'}, "
        f"{TASKS[task].eval_episodes} evaluation episodes"
        for task in args.tasks
    )
    text = "\n\n".join(
        [
            "# Deep BSN policies: local rules against back-propagated PPO of the same depth",
            f"Command: `{command}` (this invocation: {(time.perf_counter() - start) / 60:.0f} min; the runs of "
            f"this report trained for {minutes:.0f} min in all). {finished_runs_sentence(folder, missing)}",
            f"Tasks: {budgets}. Width: {', '.join(f'{t} {width(t)}' for t in args.tasks)} units per hidden layer "
            f"(LocalPG's tuned entry); PPO: RL Zoo's settings with an actor of the same depth and width and a "
            f"{CRITIC} critic, like LocalPG's. LocalPG: `hyperparams/localpg.yml`'s entry with "
            "`hyperparams/localpg_deep.yml`'s levers for the credit rule (`bsn_zoo.config.deep_policy_settings`). "
            "Steps to threshold: first step at which the mean of the last 20 training episodes reached the "
            "threshold (the budget if never); ratios are to PPO of the same depth. Grad SNR: median over updates "
            "of `bsn/layer{l}/grad_snr`, the mean over a layer's units of |mean| / std of their local estimates "
            "over the rollout; an estimate of pure noise gives sqrt(2 / (pi n)) over n rows: "
            + ", ".join(f"{task} {noise_floor(task):.3f}" for task in args.tasks)
            + " for the LocalPG rollouts here. Flip influence and reach: medians over updates of "
            "`bsn/layer{l}/flip_influence` (mean |change of the taken action's log-likelihood| when one unit of "
            "the layer is flipped and the layers above are drawn again with their noise held) and "
            "`bsn/layer{l}/flip_reach` (the share of those flips that change the top layer's sample; 1 for the "
            "top layer), `agents.localpg.diagnostics.flip_effects`; \"-\": a run recorded before these keys existed.",
            summary_table(grouped, args.tasks, args.depths),
            f"![steps to threshold against depth]({out.with_suffix('.png').name})",
            "## Per seed",
            per_seed_table(grouped),
            f"Machine: {machine_description('cpu')}.",
        ]
    )
    out.with_suffix(".md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()

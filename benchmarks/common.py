"""Shared pieces of the benchmarks: the steps-to-threshold callback, one timed training run, hyperparameter
entries (read through :mod:`bsn_zoo.config`), resumable run records and the description of the machine.

A run's *training curve* is the mean return of the last ``window`` finished training episodes
(SB3's ``rollout/ep_rew_mean`` with a window of 20), recorded each time an episode ends; its
*steps to threshold* is the first environment step at which that curve reaches the threshold.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import platform
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback, CallbackList
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.vec_env import VecEnv, VecNormalize

from bsn_zoo.config import RUN_DEFAULTS, delayed_reward_file, load_hyperparams, read_hyperparams, validate_config
from bsn_zoo.run import algorithm_kwargs

__all__ = [
    "BENCHMARK_RUN_SETTINGS",
    "RunResult",
    "ThresholdCallback",
    "benchmark_settings",
    "claim_run",
    "evaluate",
    "finished_runs_sentence",
    "has_entry",
    "load_delayed_reward_entry",
    "load_record",
    "load_tuned",
    "machine_description",
    "release_run",
    "resume_runs",
    "run_in_workers",
    "save_record",
    "train_until",
]


class ThresholdCallback(BaseCallback):
    """Tracks the ``window``-episode training mean and stops training by a budget rule.

    Training stops as soon as the threshold has been reached *and* at least ``min_steps`` steps have
    been taken, or at ``max_steps`` (the ``learn`` budget), whichever comes first. The two stops fall at
    different points of a rollout: the first in the middle of one, whose steps are then not trained on; the
    second, SB3's, after the update of the first rollout that ends at or past ``max_steps``. So with
    ``min_steps == max_steps`` a run that reached its threshold stops at exactly ``min_steps`` steps after its
    last full rollout's update, and one that did not trains one update more (e.g. to 1,001,472 steps with
    2,048-step rollouts and a 1M budget).

    Finished episodes come from the step's ``infos`` (SB3 VecEnvs, ``Monitor``). A torch-batched env
    stepped by LocalPG's tensor path has no per-step ``infos``: its episodes are read from the model's
    ``ep_info_buffer`` at the end of each rollout, so the threshold is then checked once per rollout
    (``solved_at`` is the step count at that rollout's end).

    Args:
        threshold: the training-mean return that counts as solved.
        window: number of most recent finished episodes averaged (> 0; the benchmarks use 20).
        min_steps: steps to train at least, even once solved (>= 0).
    """

    def __init__(self, threshold: float, window: int = 20, min_steps: int = 0) -> None:
        super().__init__()
        if window <= 0:
            raise ValueError(f"window must be > 0, got {window}")
        self.threshold = float(threshold)
        self.window = int(window)
        self.min_steps = int(min_steps)
        self.recent: deque[float] = deque(maxlen=self.window)
        self.curve: list[tuple[int, float]] = []
        self.solved_at: int | None = None
        self._last_buffered: dict | None = None  # newest ep_info_buffer entry already counted (tensor path)

    def _record(self, episode_return: float) -> None:
        self.recent.append(episode_return)
        mean = float(np.mean(self.recent))
        self.curve.append((self.num_timesteps, mean))
        if self.solved_at is None and len(self.recent) == self.window and mean >= self.threshold:
            self.solved_at = self.num_timesteps

    def _on_step(self) -> bool:
        for info in self.locals.get("infos", []):
            episode = info.get("episode")
            if episode is not None:
                self._record(float(episode["r"]))
        return not (self.solved_at is not None and self.num_timesteps >= self.min_steps)

    def _on_rollout_end(self) -> None:
        if "infos" in self.locals:  # episodes were counted step by step
            return
        buffered = list(self.model.ep_info_buffer or [])
        # The entries after the newest one already counted (all of them if it has left the buffer).
        start = next((i + 1 for i in range(len(buffered) - 1, -1, -1) if buffered[i] is self._last_buffered), 0)
        for episode in buffered[start:]:
            self._record(float(episode["r"]))
        if buffered:
            self._last_buffered = buffered[-1]


@dataclass
class RunResult:
    """Outcome of one training run.

    Attributes:
        steps_to_threshold: first step at which the training mean reached the threshold (None: never).
        steps: environment steps taken.
        seconds: wall-clock seconds of ``learn``.
        eval_mean: mean return of the final deterministic evaluation.
        curve: (step, training mean) pairs, one per finished episode.
    """

    steps_to_threshold: int | None
    steps: int
    seconds: float
    eval_mean: float
    curve: list[tuple[int, float]] = field(default_factory=list)

    @property
    def steps_per_second(self) -> float:
        """Environment steps per wall-clock second of ``learn`` (NaN for a run timed at zero seconds)."""
        return self.steps / self.seconds if self.seconds > 0 else float("nan")

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> RunResult:
        """The result saved by :meth:`record` (its curve as thinned there)."""
        curve = [(int(step), float(mean)) for step, mean in record["curve"]]
        return cls(record["steps_to_threshold"], int(record["steps"]), float(record["seconds"]),
                   float(record["eval_mean"]), curve)

    def record(self, max_points: int = 400) -> dict[str, Any]:
        """The result as a JSON-ready dict for a run record (:func:`save_record`): every field, seconds to the
        millisecond and the curve thinned to at most about ``max_points`` points."""
        stride = max(1, len(self.curve) // max_points)
        return {
            "steps_to_threshold": self.steps_to_threshold,
            "steps": int(self.steps),
            "seconds": round(self.seconds, 3),
            "eval_mean": float(self.eval_mean),
            "curve": [[int(step), round(float(mean), 3)] for step, mean in self.curve[::stride]],
        }


def evaluate(model: BaseAlgorithm, eval_env: VecEnv, n_episodes: int, deterministic: bool = True) -> float:
    """Mean return of ``n_episodes`` episodes, deterministic (noise-free units and actions) or with sampled units
    and actions; a normalised ``eval_env`` takes the training env's observation statistics, frozen."""
    train_env = model.get_env()
    if isinstance(train_env, VecNormalize) and isinstance(eval_env, VecNormalize):
        eval_env.obs_rms = train_env.obs_rms
        eval_env.training = False
        eval_env.norm_reward = False
    mean, _std = evaluate_policy(model, eval_env, n_eval_episodes=n_episodes, deterministic=deterministic)
    return float(mean)


def train_until(
    make_model: Callable[[], BaseAlgorithm],
    make_eval_env: Callable[[], VecEnv],
    threshold: float,
    max_steps: int,
    min_steps: int,
    eval_episodes: int,
    window: int = 20,
    callbacks: Sequence[BaseCallback] = (),
    after: Callable[[BaseAlgorithm, float], None] | None = None,
) -> RunResult:
    """Build a model, train it under the :class:`ThresholdCallback` budget rule, then evaluate it.

    Args:
        make_model: builds the (seeded) model with its training env.
        make_eval_env: builds the evaluation env.
        threshold: solved threshold of the ``window``-episode training mean.
        max_steps: training budget in environment steps (> 0).
        min_steps: train at least this many steps once solved (<= max_steps).
        eval_episodes: deterministic evaluation episodes after training (> 0).
        window: episodes in the training mean.
        callbacks: more callbacks to train with (e.g. ones that collect diagnostics).
        after: called with the trained model and its final evaluation's mean return once it is evaluated (e.g. to
            evaluate it in other ways too).
    """
    model = make_model()
    callback = ThresholdCallback(threshold, window, min_steps)
    start = time.perf_counter()
    model.learn(total_timesteps=max_steps, callback=CallbackList([callback, *callbacks]))
    seconds = time.perf_counter() - start
    eval_mean = evaluate(model, make_eval_env(), eval_episodes)
    if after is not None:
        after(model, eval_mean)
    return RunResult(callback.solved_at, int(model.num_timesteps), seconds, eval_mean, callback.curve)


def load_tuned(path: str | Path, env_id: str, algo: str = "localpg") -> dict[str, Any]:
    """One environment's entry of an RL-Zoo-style hyperparameter YAML (e.g. ``hyperparams/localpg.yml``), read
    as ``train.py`` reads it: :func:`bsn_zoo.config.load_hyperparams` (the file's ``default`` entry for an id
    without one), every key and value checked by :func:`bsn_zoo.config.validate_config` for ``algo``, and the
    algorithm arguments resolved by :func:`bsn_zoo.run.algorithm_kwargs` (``lin_<start>`` values of
    ``learning_rate`` / ``clip_range`` become linear schedules, ``policy_kwargs.activation_fn`` names
    ``torch.nn`` modules). Returns the entry's own keys, in the file's order; run settings stay as written.

    Raises:
        bsn_zoo.cli_errors.UserInputError: for a missing or malformed file, a file without an entry for
            ``env_id`` or a ``default`` one, or a bad key or value.
    """
    entry = load_hyperparams(Path(path), env_id)
    validate_config({**entry, "algo": algo})
    resolved = algorithm_kwargs(entry)
    return {key: resolved.get(key, value) for key, value in entry.items()}


def load_delayed_reward_entry(algo: str, env_id: str) -> dict[str, Any]:
    """The algorithm's settings for delayed reward: its ``hyperparams/<algo>_delayed.yml`` entry for ``env_id``
    (else ``default``), read by :func:`load_tuned`; ``{}`` for an algorithm without that file."""
    path = delayed_reward_file(algo)
    return load_tuned(path, env_id, algo) if path.is_file() else {}


def has_entry(path: str | Path, env_id: str) -> bool:
    """Whether the hyperparameter file has an entry of its own for ``env_id`` (not just ``default``)."""
    return env_id != "default" and env_id in read_hyperparams(Path(path))


#: the run settings of a ``hyperparams/localpg.yml`` entry that the benchmarks use; they build their own
#: envs, budgets and evaluations, so :func:`benchmark_settings` drops ``train.py``'s other run settings.
BENCHMARK_RUN_SETTINGS = ("n_envs", "normalize")


def benchmark_settings(entry: dict[str, Any]) -> dict[str, Any]:
    """An entry's algorithm arguments plus :data:`BENCHMARK_RUN_SETTINGS`: the other run settings of
    ``train.py`` (:data:`bsn_zoo.config.RUN_DEFAULTS`: ``n_timesteps``, ``policy``, ``eval_freq``,
    ``deterministic_eval``, ...) are not LocalPG arguments and are left out."""
    return {key: value for key, value in entry.items() if key not in RUN_DEFAULTS or key in BENCHMARK_RUN_SETTINGS}


def machine_description(device: str | None = None) -> str:
    """The machine a benchmark ran on, for its report: CPU model and count, GPU, torch (threads), Python and
    the load average now (call it at the end of the run).

    Args:
        device: the device the benchmark ran on: a ``cuda`` device names that GPU, ``"cpu"`` says "CPU run";
            ``None`` names the current CUDA device if there is one, else says "no CUDA device".
    """
    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        names = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines() if "model name" in line]
        if names:
            cpu = f"{names[0]} x {len(names)}"
    if device is None:
        gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "no CUDA device"
    else:
        gpu = torch.cuda.get_device_name(torch.device(device)) if device.startswith("cuda") else "CPU run"
    load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    return (
        f"{cpu}; {gpu}; torch {torch.__version__} ({torch.get_num_threads()} threads); "
        f"python {platform.python_version()}; load average at the end (1, 5, 15 min): {load}"
    )


def seeds_per_task(tasks: Sequence[str], seeds: Sequence[int], flag: str = "--tasks") -> dict[str, int]:
    """How many seeds (0..N-1) each task runs, from a benchmark's ``--seeds``: one value for every task, or one per
    entry of ``flag`` (the flag that lists the tasks), each > 0.

    Raises:
        ValueError: a count <= 0, or as many counts as neither 1 nor the tasks; the message names the rule.
    """
    if any(count <= 0 for count in seeds):
        raise ValueError(f"--seeds must be > 0, got {' '.join(map(str, seeds))}")
    if len(seeds) not in (1, len(tasks)):
        raise ValueError(f"--seeds takes one value, or one per {flag} entry")
    return dict(zip(tasks, list(seeds) * len(tasks) if len(seeds) == 1 else seeds, strict=True))


def save_record(path: Path, record: dict[str, Any]) -> None:
    """Write a finished run's ``record`` as JSON at ``path``, atomically: a benchmark stopped mid-write leaves no
    half file, so it resumes from whole records only (:func:`load_record`)."""
    partial = path.with_suffix(path.suffix + ".partial")
    partial.write_text(json.dumps(record))
    os.replace(partial, path)


def load_record(path: Path) -> dict[str, Any] | None:
    """The record saved at ``path`` by :func:`save_record`, or ``None`` if that run has not finished."""
    return json.loads(path.read_text()) if path.is_file() else None


def finished_runs_sentence(folder: Path, missing: list[str]) -> str:
    """The report sentence on where the finished runs of ``folder`` are kept and which of the runs asked for are not
    finished: ``missing`` holds their names (empty when every run is finished; the first six are listed)."""
    kept = f"Finished runs are kept in `{folder}/`; "
    if not missing:
        return kept + "every run asked for is finished."
    listed = ", ".join(missing[:6]) + (", ..." if len(missing) > 6 else "")
    verb = "is" if len(missing) == 1 else "are"
    return kept + f"{len(missing)} of the runs asked for {verb} not finished ({listed})."


def run_in_workers(function: Callable[[Any], Any], items: Iterable[Any], workers: int) -> None:
    """Call ``function`` on every item, ``workers`` at a time in spawned processes (in this process for 1).

    ``function`` must be importable (a module-level function) and save its own result: a resumable benchmark
    passes only the items without a record.
    """
    todo = list(items)
    if workers == 1 or len(todo) <= 1:
        for item in todo:
            function(item)
        return
    with multiprocessing.get_context("spawn").Pool(min(workers, len(todo))) as pool:
        for _ in pool.imap_unordered(function, todo, chunksize=1):
            pass


def claim_run(record: Path) -> bool:
    """Take the claim on training the run whose record is ``record``: ``False`` if the record exists or a live
    process on this machine holds the claim, else ``True`` (the claim is then this process's).

    The claim is the file ``<record>.claim`` holding ``<pid>@<host>``, created whole or not at all (a hard link
    to a finished file, which fails if the claim exists), so two benchmark processes over the same records
    folder never train the same run. A claim whose process has died (or that another host wrote) is stale and
    taken over. Release it with :func:`release_run`.
    """
    claim = record.with_suffix(record.suffix + ".claim")
    written = claim.with_suffix(f"{claim.suffix}.{os.getpid()}")
    written.write_text(f"{os.getpid()}@{platform.node()}")
    try:
        for _attempt in range(2):
            if record.is_file():
                return False
            try:
                os.link(written, claim)
            except FileExistsError:
                if _claim_is_live(claim):
                    return False
                claim.unlink(missing_ok=True)  # stale: its process is gone
                continue
            if record.is_file():  # finished by another process between the check and the claim
                release_run(record)
                return False
            return True
        return False
    finally:
        written.unlink(missing_ok=True)


def release_run(record: Path) -> None:
    """Drop this process's claim on the run whose record is ``record`` (:func:`claim_run`); a claim held by
    another process is left alone."""
    claim = record.with_suffix(record.suffix + ".claim")
    try:
        owner = claim.read_text()
    except FileNotFoundError:
        return
    if owner == f"{os.getpid()}@{platform.node()}":
        claim.unlink(missing_ok=True)


def _claim_is_live(claim: Path) -> bool:
    """Whether the process named in ``claim`` (``<pid>@<host>``) still runs on this machine."""
    try:
        pid, _, host = claim.read_text().partition("@")
        process = int(pid)
    except (FileNotFoundError, ValueError):
        return False  # gone meanwhile (the caller retries once), or not a claim
    if host != platform.node() or process == os.getpid():
        return False
    try:
        os.kill(process, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # alive, owned by another user
    return True


def _run_claimed(item: tuple[Callable[[tuple[Any, Path]], Any], Any, Path, str]) -> None:
    """Train one job of :func:`resume_runs` unless its record exists or another process has claimed it."""
    run, job, folder, name = item
    record = folder / name
    if not claim_run(record):
        return
    try:
        run((job, folder))
    finally:
        release_run(record)


def resume_runs(
    run: Callable[[tuple[Any, Path]], Any],
    jobs: Sequence[Any],
    record_name: Callable[[Any], str],
    folder: Path,
    workers: int,
    train: bool = True,
) -> dict[Any, dict[str, Any]]:
    """A resumable benchmark's runs: train every job without a record in ``folder`` (unless ``train`` is false),
    ``workers`` at a time, then return the records of the finished jobs, by job, in the order of ``jobs``.

    Each job is claimed before it trains (:func:`claim_run`), so a second benchmark process started on the same
    folder (to add workers, or other tasks) trains only the jobs nobody else is training; a job another process
    still trains is reported as not finished.

    Args:
        run: a module-level function of ``(job, folder)`` that trains the job and saves its record there
            (:func:`save_record`) under ``record_name(job)``.
        jobs: the runs asked for (hashable).
        record_name: the file name of a job's record.
        folder: where the records are kept (created if missing).
        workers: training processes in parallel (> 0).
        train: ``False`` only reads the records (a report of the runs finished so far).
    """
    folder.mkdir(parents=True, exist_ok=True)
    if train:
        todo = [(run, job, folder, record_name(job)) for job in jobs if not (folder / record_name(job)).is_file()]
        run_in_workers(_run_claimed, todo, workers)
    records = {job: load_record(folder / record_name(job)) for job in jobs}
    return {job: record for job, record in records.items() if record is not None}

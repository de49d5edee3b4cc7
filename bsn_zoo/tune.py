"""Hyperparameter search with Optuna: TPE sampling, median pruning on evaluation return, resumable studies.

``python train.py --optimize sweeps/optuna_cartpole.yml`` reads a search file::

    name: optuna_cartpole              # study name and folder name (default: the file's stem)
    conf: hyperparams/localpg.yml      # optional -conf file of every trial
    base:                              # fixed options of every trial (as in a sweep file)
      algo: localpg
      env: CartPole-v1
      n_timesteps: 50000
      eval_freq: 5000                  # pruning needs periodic evaluations
    search:                            # the search space, one entry per option
      learning_rate: {low: 1.0e-4, high: 3.0e-3, log: true}   # float (log scale)
      n_epochs: {low: 1, high: 10}                             # int (both bounds integers)
      gamma: {low: 0.95, high: 0.999}                          # float
      policy_kwargs.baseline: {choices: [value, optimal]}      # categorical
    n_trials: 40                       # trials of the whole study (all workers together)
    seed: 0                            # training seed of every trial (and the sampler's seed)
    sampler: {n_startup_trials: 10}    # optuna.samplers.TPESampler arguments
    pruner: {n_startup_trials: 5, n_warmup_steps: 2}   # optuna.pruners.MedianPruner arguments

Every trial is a normal ``train.py`` run in its own process (:func:`bsn_zoo.sweep.trial.run_trial`), in
``<study folder>/trials/trial_<number>``. While it trains, its evaluations (``eval/evaluations.npz``)
are reported to Optuna as they appear, the k-th evaluation as step k, and the median pruner stops
trials whose evaluation return is below the median of earlier trials at the same step. The objective
is the mean return of the last evaluation (maximised). A trial that crashes or diverges is recorded as
failed with its error, and the study goes on.

The study lives in an Optuna storage: ``sqlite:///<study folder>/study.db`` by default, or any storage
URL (``postgresql://...``) shared by workers on several machines, each running the same command.
Rerunning the command resumes a study: finished trials are kept, an interrupted trial's parameters are
tried again, and workers stop once the study has ``n_trials`` finished trials. At the end the best
trial's complete configuration is written to ``<study folder>/best.yml``, a file keyed by env id that
``train.py -conf`` accepts.
"""

from __future__ import annotations

import math
import os
import socket
import sys
import threading
import warnings
import zlib
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from bsn_zoo.cli_errors import OneLineArgumentParser, UserInputError, command_hint, run_cli
from bsn_zoo.sweep import EXIT_INTERRUPTED, signals_as_interrupt
from bsn_zoo.sweep.spec import (
    TrialSpec,
    check_keys,
    check_name,
    parse_options,
    read_yaml,
)
from bsn_zoo.sweep.state import TrialRecord
from bsn_zoo.sweep.trial import TrialInterrupted, read_evaluations, run_trial

__all__ = [
    "BEST_FILE",
    "SearchParam",
    "TuneSpec",
    "best_config",
    "build_parser",
    "create_study",
    "load_tune_spec",
    "main",
    "optimize",
    "parse_tune_spec",
    "write_best_config",
]

#: keys a search file may have.
TUNE_KEYS = ("name", "conf", "base", "search", "n_trials", "seed", "sampler", "pruner")
#: the best configuration, written into the study folder.
BEST_FILE = "best.yml"
#: run-configuration keys left out of the best configuration (they are flags, or belong to one run).
NOT_HYPERPARAMETERS = ("algo", "env", "seed", "tensorboard_log")
#: statuses of trials that ran to a verdict (an interrupted trial has none and does not count).
COUNTED_FAILURES = ("failed", "diverged", "timeout")
#: seconds between heartbeats of a running trial in a database storage; a trial silent for
#: :data:`GRACE_S` is failed and retried once (its worker died).
HEARTBEAT_S, GRACE_S = 60, 180


class TrialFailed(Exception):
    """The trial's ``train.py`` run failed (crash, divergence, timeout); Optuna records it as failed."""


@dataclass(frozen=True)
class SearchParam:
    """The search range of one option.

    Attributes:
        name: the (dotted) option name.
        choices: the values of a categorical option, else ``None``.
        low: lower bound of a numeric option (inclusive).
        high: upper bound of a numeric option (inclusive).
        log: sample on a log scale (numeric, ``low > 0``).
        step: grid step of a numeric option, or ``None`` (ints default to 1).
        integer: the option is an integer (both bounds are integers).
    """

    name: str
    choices: tuple[Any, ...] | None = None
    low: float = 0.0
    high: float = 0.0
    log: bool = False
    step: float | None = None
    integer: bool = False

    def suggest(self, trial: Any) -> Any:
        """Draw this option's value for an ``optuna.Trial``."""
        if self.choices is not None:
            return trial.suggest_categorical(self.name, list(self.choices))
        if self.integer:
            return trial.suggest_int(self.name, int(self.low), int(self.high), step=int(self.step or 1), log=self.log)
        return trial.suggest_float(self.name, self.low, self.high, step=self.step, log=self.log)

    @classmethod
    def parse(cls, name: str, value: Any) -> SearchParam:
        """A search range from its file entry: ``{choices: [...]}`` or ``{low, high[, log][, step]}``.

        Raises:
            UserInputError: naming the option and what is wrong.
        """
        if not isinstance(value, Mapping):
            raise UserInputError(f"search.{name} must be {{choices: [...]}} or {{low: L, high: H}}, got {value!r}")
        if "choices" in value:
            choices = value["choices"]
            if set(value) != {"choices"} or not isinstance(choices, list) or not choices:
                raise UserInputError(f"search.{name} must be {{choices: [non-empty list]}} alone, got {value!r}")
            return cls(name, choices=tuple(choices))
        check_keys(value, ("low", "high", "log", "step"), f"search.{name}")
        low, high, log, step = value.get("low"), value.get("high"), value.get("log", False), value.get("step")
        numbers = [low, high] + ([step] if step is not None else [])
        if any(isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x) for x in numbers):
            raise UserInputError(f"search.{name} needs numeric low and high (and step), got {value!r}")
        if not low < high:
            raise UserInputError(f"search.{name}: low must be below high, got low={low}, high={high}")
        if not isinstance(log, bool) or (log and low <= 0):
            raise UserInputError(f"search.{name}: log must be true or false, and log needs low > 0, got {value!r}")
        if log and step is not None:
            raise UserInputError(f"search.{name}: give either log or step, not both")
        integer = all(isinstance(x, int) for x in numbers)
        return cls(name, low=low, high=high, log=log, step=step, integer=integer)


@dataclass(frozen=True)
class TuneSpec:
    """A parsed search file (see the module docstring).

    Attributes:
        name: the study's name and folder name.
        base: fixed flat options of every trial.
        search: option name to its search range.
        n_trials: finished trials the study aims for (all workers together, > 0).
        seed: training seed of every trial and seed of the sampler.
        conf_file: the ``-conf`` file of every trial, or ``None``.
        sampler: keyword arguments of ``optuna.samplers.TPESampler``.
        pruner: keyword arguments of ``optuna.pruners.MedianPruner``.
    """

    name: str
    base: dict[str, Any]
    search: dict[str, SearchParam]
    n_trials: int
    seed: int = 0
    conf_file: str | None = None
    sampler: dict[str, Any] = field(default_factory=dict)
    pruner: dict[str, Any] = field(default_factory=dict)

    def trial_spec(self, number: int, params: Mapping[str, Any]) -> TrialSpec:
        """The run of Optuna trial ``number`` with sampled ``params`` (flat option names)."""
        trial_id = f"trial_{number:04d}"
        return TrialSpec(trial_id, trial_id, self.seed, {**self.base, **params}, self.conf_file)


def _kwargs(name: str, value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise UserInputError(f"{name} must be a mapping of keyword arguments, got {value!r}")
    return dict(value)


def parse_tune_spec(content: Any, default_name: str) -> TuneSpec:
    """Build a :class:`TuneSpec` from the parsed YAML of a search file.

    Args:
        content: the file's YAML content.
        default_name: the study's name when the file gives none (the file's stem).

    Raises:
        UserInputError: naming the bad key or value.
    """
    check_keys(content, TUNE_KEYS, "search file")
    search = content.get("search")
    if not isinstance(search, Mapping) or not search:
        raise UserInputError("the search file needs a 'search' mapping of options to ranges, "
                             "e.g. learning_rate: {low: 1.0e-4, high: 1.0e-2, log: true}")
    params = {str(name): SearchParam.parse(str(name), value) for name, value in search.items()}
    base = parse_options("base", content.get("base"))
    n_trials, seed = content.get("n_trials", 20), content.get("seed", 0)
    for key, number, smallest in (("n_trials", n_trials, 1), ("seed", seed, 0)):
        if isinstance(number, bool) or not isinstance(number, int) or number < smallest:
            raise UserInputError(f"{key} must be an integer >= {smallest}, got {number!r}")
    if "seed" in params:
        raise UserInputError("search sets 'seed'; give the training seed with the top-level 'seed' key")
    conf = content.get("conf")
    return TuneSpec(name=check_name(str(content.get("name") or default_name)), base=base, search=params,
                    n_trials=n_trials, seed=seed, conf_file=None if conf is None else str(conf),
                    sampler=_kwargs("sampler", content.get("sampler")), pruner=_kwargs("pruner", content.get("pruner")))


def load_tune_spec(path: Path) -> TuneSpec:
    """Read and parse a search file.

    Raises:
        UserInputError: if the file cannot be read, is not valid YAML, or is not a valid search file.
    """
    path = Path(path)
    content = read_yaml(path, "search file")
    try:
        return parse_tune_spec(content, path.stem)
    except UserInputError as error:
        raise UserInputError(f"{path}: {error}") from None


def _storage(url: str) -> Any:
    """An Optuna storage for ``url``; a database gets heartbeats so that a dead worker's trial is retried."""
    import optuna

    if not url.startswith(("sqlite:", "postgresql", "mysql", "oracle", "mssql")):
        return url
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # heartbeats are "experimental"
        return optuna.storages.RDBStorage(
            url, heartbeat_interval=HEARTBEAT_S, grace_period=GRACE_S,
            heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=1),
        )


def create_study(spec: TuneSpec, storage: str, shared: bool = False) -> Any:
    """Create, or load to resume, the study ``spec.name`` in ``storage`` (TPE sampler, median pruner).

    The sampler's seed is the file's seed (``sampler.seed``, else ``seed``) plus the number of trials the
    study already has, so a resumed study does not propose its first trials again. With ``shared`` (a
    storage other workers use too) a hash of this host and process is added, so that workers started
    together do not propose the same trials.

    Args:
        spec: the search.
        storage: an Optuna storage URL.
        shared: the storage is shared with other workers.

    Raises:
        UserInputError: if the sampler or pruner arguments are wrong, or the storage cannot be opened.
    """
    import optuna

    sampler_kwargs = {"seed": spec.seed, **spec.sampler}
    try:
        optuna.samplers.TPESampler(**sampler_kwargs)
        pruner = optuna.pruners.MedianPruner(**spec.pruner)
    except (TypeError, ValueError) as error:
        raise UserInputError(f"bad sampler or pruner arguments: {error}; see optuna.samplers.TPESampler "
                             "and optuna.pruners.MedianPruner") from None
    try:
        study = optuna.create_study(storage=_storage(storage), pruner=pruner, study_name=spec.name,
                                    direction="maximize", load_if_exists=True)
    except (ImportError, ValueError, RuntimeError) as error:
        raise UserInputError(f"cannot open the Optuna storage {storage!r}: {' '.join(str(error).split())[:300]}"
                             ) from None
    seed = sampler_kwargs.pop("seed")
    if seed is not None:
        seed += len(study.get_trials(deepcopy=False))
        if shared:
            seed += zlib.crc32(f"{socket.gethostname()}:{os.getpid()}".encode())
        seed %= 2**32
    study.sampler = optuna.samplers.TPESampler(seed=seed, **sampler_kwargs)
    return study


class EvaluationReporter:
    """Report a running trial's evaluations to Optuna as they appear, and say when to prune it.

    Args:
        trial: the ``optuna.Trial``.
    """

    def __init__(self, trial: Any) -> None:
        self.trial = trial
        self.reported = 0

    def report_new(self, run_dir: Path) -> bool:
        """Report the evaluations not reported yet (the k-th as step k); ``True`` if one was new."""
        evaluations = read_evaluations(run_dir)
        if evaluations is None or len(evaluations[1]) <= self.reported:
            return False
        for step, value in enumerate(evaluations[1][self.reported:], start=self.reported + 1):
            self.trial.report(float(value), step)
        self.reported = len(evaluations[1])
        return True

    def __call__(self, run_dir: Path) -> bool:
        """``should_prune`` of :func:`~bsn_zoo.sweep.trial.run_trial`: report, then ask the pruner."""
        return self.report_new(run_dir) and bool(self.trial.should_prune())


def _finished(study: Any, running: bool = False) -> int:
    """Trials that count towards ``n_trials``: complete, pruned, or failed with a verdict (not interrupted).

    Args:
        study: the ``optuna.Study``.
        running: count the running trials too (they will finish: no new trial is needed for them).
    """
    from optuna.trial import TrialState

    counted = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING) if running else (TrialState.COMPLETE,
                                                                                          TrialState.PRUNED)
    return sum(1 for trial in study.get_trials(deepcopy=False)
               if trial.state in counted
               or (trial.state == TrialState.FAIL and trial.user_attrs.get("status") in COUNTED_FAILURES))


class Objective:
    """The objective of a study: run one trial of ``spec`` in ``study_dir`` and return its final return.

    Args:
        spec: the search.
        study_dir: the study folder (absolute); trials go to ``trials/trial_<number>``.
        stop: set to interrupt running trials (their parameters are queued to run again).
        timeout_s: per-trial time limit in seconds, or ``None``.
        threads: CPU threads per trial (>= 1).
        on_start: called first in every trial (the trial is RUNNING by then), e.g. to let another thread ask.
    """

    def __init__(self, spec: TuneSpec, study_dir: Path, stop: threading.Event, timeout_s: float | None = None,
                 threads: int = 1, on_start: Callable[[], None] | None = None) -> None:
        self.spec, self.study_dir, self.stop = spec, Path(study_dir), stop
        self.timeout_s, self.threads, self.on_start = timeout_s, threads, on_start

    def __call__(self, trial: Any) -> float:
        """Run the trial; raises ``optuna.TrialPruned`` if pruned, :class:`TrialFailed` if it failed."""
        import optuna

        if self.on_start is not None:
            self.on_start()

        params = {name: param.suggest(trial) for name, param in self.spec.search.items()}
        run = self.spec.trial_spec(trial.number, params)
        try:
            run.run_config()
        except UserInputError as error:
            trial.set_user_attr("status", "failed")
            trial.set_user_attr("error", str(error))
            raise TrialFailed(str(error)) from None
        reporter = EvaluationReporter(trial)
        try:
            record = run_trial(run, self.study_dir, timeout_s=self.timeout_s, threads=self.threads, stop=self.stop,
                               should_prune=reporter)
        except (TrialInterrupted, KeyboardInterrupt):
            trial.set_user_attr("interrupted", True)
            trial.study.enqueue_trial(trial.params)
            raise
        self._remember(trial, record)
        if record.status == "pruned":
            raise optuna.TrialPruned(f"pruned after {reporter.reported} evaluations")
        if record.status != "ok":
            raise TrialFailed(f"{record.status}: {record.error}")
        if record.run_dir is not None:
            reporter.report_new(self.study_dir / record.run_dir)
        if record.curve is None or record.curve.final_return is None:
            trial.set_user_attr("status", "failed")
            raise TrialFailed("the run recorded no return; set eval_freq so that it evaluates")
        return float(record.curve.final_return)

    def _remember(self, trial: Any, record: TrialRecord) -> None:
        trial.set_user_attr("status", record.status)
        if record.error:
            trial.set_user_attr("error", record.error)
        if record.run_dir is not None:
            trial.set_user_attr("run_dir", record.run_dir)
            config_file = self.study_dir / record.run_dir / "config.yml"
            if config_file.is_file():
                trial.set_user_attr("config", yaml.safe_load(config_file.read_text()))


class _AskGate:
    """A lock that the thread holding it may release more than once (the objective, then a ``finally``)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._owner = threading.local()

    def acquire(self) -> None:
        self._lock.acquire()
        self._owner.holds = True

    def release(self) -> None:
        if getattr(self._owner, "holds", False):
            self._owner.holds = False
            self._lock.release()


def optimize(
    spec: TuneSpec,
    study_dir: Path,
    storage: str | None = None,
    n_trials: int | None = None,
    n_jobs: int = 1,
    timeout_s: float | None = None,
    threads: int = 1,
) -> Any:
    """Run (or resume) the study until it has ``n_trials`` finished trials, then write ``best.yml``.

    Args:
        spec: the search.
        study_dir: the study folder (created).
        storage: Optuna storage URL shared by workers; ``None`` for ``sqlite:///<study_dir>/study.db`` (one
            worker, reproducible proposals).
        n_trials: finished trials to reach (all workers together); ``None`` for ``spec.n_trials``.
        n_jobs: trials at once in this process (>= 1).
        timeout_s: per-trial time limit in seconds, or ``None``.
        threads: CPU threads per trial (>= 1).

    Returns:
        The ``optuna.Study``.

    Raises:
        UserInputError: for a bad base configuration (checked first) or storage.
        KeyboardInterrupt: if interrupted; rerunning resumes.
    """
    import optuna
    from optuna.trial import TrialState

    if n_jobs < 1:
        raise UserInputError(f"--n-jobs must be at least 1, got {n_jobs}")
    target = spec.n_trials if n_trials is None else n_trials
    if target < 1:
        raise UserInputError(f"--n-trials must be at least 1, got {target}")
    spec.trial_spec(0, {}).run_config()
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # each trial's outcome is printed by `enough` below
    study_dir = Path(study_dir).resolve()
    study_dir.mkdir(parents=True, exist_ok=True)
    study = create_study(spec, storage or f"sqlite:///{study_dir / 'study.db'}", shared=storage is not None)
    remaining = target - _finished(study)
    print(f"Study {spec.name}: {_finished(study)} of {target} trials finished before, {max(remaining, 0)} to run\n"
          f"  study folder: {study_dir}", flush=True)
    stop = threading.Event()

    def enough(study: Any, trial: Any) -> None:
        state = trial.user_attrs.get("status", trial.state.name.lower())
        detail = f", final return {trial.value:.1f}" if trial.value is not None else (
            f", {trial.user_attrs['error']}" if "error" in trial.user_attrs else "")
        print(f"  trial {trial.number}: {state}{detail} {trial.params}", flush=True)
        if _finished(study, running=True) >= target:
            study.stop()

    # This process's threads start exactly `remaining` trials between them (a lock-protected count: two
    # threads checking the study's trial count at once could both start one); `enough` stops early when
    # other processes sharing the storage have already brought the study to its target.
    # `asking` serialises Optuna's study.ask() between this process's threads: two threads asking at once
    # can pop the same enqueued trial from an SQLite storage and both run it. The objective releases it
    # as soon as it is called (the trial is then RUNNING and no longer waiting).
    started, lock, asking = [0], threading.Lock(), _AskGate()
    objective = Objective(spec, study_dir, stop, timeout_s, threads, on_start=asking.release)

    def work() -> None:
        while not stop.is_set():
            with lock:
                if started[0] >= remaining or _finished(study, running=True) >= target:
                    return
                started[0] += 1
            asking.acquire()
            try:
                study.optimize(objective, n_trials=1, catch=(TrialFailed,), callbacks=[enough])
            finally:
                asking.release()

    if remaining > 0:
        with ThreadPoolExecutor(max_workers=min(n_jobs, remaining), thread_name_prefix="optuna") as pool:
            futures = [pool.submit(work) for _ in range(min(n_jobs, remaining))]
            try:
                for future in futures:
                    future.result()
            except BaseException:
                stop.set()
                wait(futures)
                raise
    if any(trial.state == TrialState.COMPLETE for trial in study.get_trials(deepcopy=False)):
        path = write_best_config(study, study_dir / BEST_FILE)
        print(f"Best: trial {study.best_trial.number}, final return {study.best_value:.1f}\n  configuration: {path}",
              flush=True)
    return study


def best_config(study: Any) -> tuple[str, str, dict[str, Any]]:
    """``(algo, env id, hyperparameters)`` of the study's best trial, from its run's ``config.yml``.

    Raises:
        UserInputError: if no trial completed, or the best one did not record its configuration.
    """
    try:
        best = study.best_trial
    except ValueError:
        raise UserInputError(f"study {study.study_name!r} has no completed trial yet; run more trials") from None
    config = best.user_attrs.get("config")
    if not isinstance(config, dict):
        raise UserInputError(f"the best trial ({best.number}) recorded no configuration; rerun it")
    hyperparams = {key: value for key, value in config.items() if key not in NOT_HYPERPARAMETERS}
    return str(config["algo"]), str(config["env"]), hyperparams


def write_best_config(study: Any, path: Path) -> Path:
    """Write the best trial's configuration as a ``train.py -conf`` file keyed by its env id.

    The header says which trial it is and the command that trains with it.
    """
    algo, env_id, hyperparams = best_config(study)
    best = study.best_trial
    header = (f"# Best of Optuna study {study.study_name!r}: trial {best.number}, final evaluation return "
              f"{best.value:.2f}\n# Train with it: python train.py --algo {algo} --env {env_id} -conf {path}\n")
    Path(path).write_text(header + yaml.safe_dump({env_id: hyperparams}, sort_keys=False))
    return Path(path)


def build_parser() -> OneLineArgumentParser:
    """The command-line parser of ``train.py --optimize``."""
    parser = OneLineArgumentParser(prog="train.py --optimize",
                                   description="Search hyperparameters with Optuna (TPE sampler, median pruner).",
                                   epilog="Rerun the same command to resume; give the same --storage to every "
                                          "worker to search on several machines.")
    parser.add_argument("--optimize", type=Path, required=True, metavar="FILE", help="the search file (YAML)")
    parser.add_argument("-f", "--log-folder", type=Path, default=Path("logs"),
                        help="root of the study folder <log-folder>/optuna/<name> (default logs)")
    parser.add_argument("--sweep-dir", type=Path, metavar="DIR", help="the study folder itself (overrides -f)")
    parser.add_argument("--storage", metavar="URL",
                        help="Optuna storage URL shared by all workers (default sqlite:///<study folder>/study.db)")
    parser.add_argument("--study-name", metavar="NAME", help="the study's name (default: the file's name)")
    parser.add_argument("--n-trials", type=int, metavar="N", help="finished trials to reach (default: the file's)")
    parser.add_argument("--n-jobs", type=int, default=1, metavar="N", help="trials at once in this worker (default 1)")
    parser.add_argument("--cpus-per-trial", type=int, default=1, metavar="N", help="CPU threads per trial (default 1)")
    parser.add_argument("--trial-timeout", type=float, metavar="SECONDS", help="stop a trial after this long")
    parser.add_argument("--verbose", action="store_true", help="print full tracebacks")
    return parser


def main(argv: Sequence[str]) -> int:
    """``train.py --optimize FILE ...``: run or resume a study. Returns the exit status (130 if interrupted)."""
    args = build_parser().parse_args(argv)
    spec = load_tune_spec(args.optimize)
    if args.study_name:
        spec = replace(spec, name=check_name(args.study_name))
    if args.cpus_per_trial < 1:
        raise UserInputError(f"--cpus-per-trial must be at least 1, got {args.cpus_per_trial}")
    study_dir = args.sweep_dir if args.sweep_dir is not None else args.log_folder / "optuna" / spec.name
    try:
        with signals_as_interrupt():
            optimize(spec, study_dir, args.storage, args.n_trials, args.n_jobs, args.trial_timeout,
                     args.cpus_per_trial)
    except KeyboardInterrupt:
        print(f"Study interrupted; finished trials are kept in its storage.\n  resume with the same command: "
              f"{command_hint('train.py')} {' '.join(argv)}", file=sys.stderr, flush=True)
        return EXIT_INTERRUPTED
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main, prog="train.py --optimize"))

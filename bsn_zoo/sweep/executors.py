"""Where trials run: a pool of child processes on this machine, or a Ray cluster through Ray Tune.

Both executors run the same function (:meth:`TrialSettings.run`, i.e. ``train.py`` in a child process)
and hand each finished trial's record to the sweep driver, which alone writes the sweep state. They
differ only in who schedules the trials:

* :class:`LocalExecutor` keeps ``n_jobs`` trials running at once on this machine (threads that each
  wait on one ``train.py`` process).
* :class:`RayExecutor` gives every trial to Ray Tune as one grid point of a function trainable, with
  ``cpus_per_trial`` CPUs reserved; Ray places them on the cluster's nodes. The nodes must see the
  repository and the sweep folder at the same paths (a shared file system), because each trial writes its
  run folder there.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from bsn_zoo.cli_errors import UserInputError
from bsn_zoo.sweep.spec import TrialSpec
from bsn_zoo.sweep.state import TrialRecord
from bsn_zoo.sweep.trial import TrialInterrupted, failed_record, package_pythonpath, run_trial

__all__ = ["Executor", "LocalExecutor", "RayExecutor", "TrialSettings", "import_ray"]

RecordSink = Callable[[TrialRecord], None]
#: Ray address that starts a private Ray instance on this machine instead of joining a cluster.
LOCAL_RAY = "local"


@dataclass(frozen=True)
class TrialSettings:
    """How every trial of a sweep runs (the same on every executor).

    Attributes:
        sweep_dir: the sweep folder (absolute; trials go to ``<sweep_dir>/trials/<trial id>``).
        timeout_s: seconds after which a trial is stopped (status ``timeout``); ``None`` for no limit.
        threads: CPU threads each trial may use (>= 1).
    """

    sweep_dir: Path
    timeout_s: float | None = None
    threads: int = 1

    def run(self, trial: TrialSpec, stop: threading.Event | None = None) -> TrialRecord:
        """Run ``trial`` (see :func:`~bsn_zoo.sweep.trial.run_trial`); a runner error becomes a failed record.

        Raises:
            TrialInterrupted: if ``stop`` is set while the trial runs.
        """
        start = time.monotonic()
        try:
            return run_trial(trial, self.sweep_dir, timeout_s=self.timeout_s, threads=self.threads, stop=stop)
        except TrialInterrupted:
            raise
        except Exception as error:
            return failed_record(trial, error, time.monotonic() - start)


class Executor(Protocol):
    """Runs trials and reports each finished one, in the order they finish."""

    def run(self, trials: Sequence[TrialSpec], settings: TrialSettings, on_record: RecordSink) -> None:
        """Run every trial with ``settings``; call ``on_record`` (in the calling thread) as each finishes.

        On ``KeyboardInterrupt`` the running trials are stopped and the interrupt propagates.
        """
        ...


class LocalExecutor:
    """Run trials on this machine, ``n_jobs`` at a time, each ``train.py`` in its own process.

    Args:
        n_jobs: trials running at once (>= 1), e.g. the number of CPU cores divided by threads per trial.
    """

    def __init__(self, n_jobs: int) -> None:
        if n_jobs < 1:
            raise UserInputError(f"--n-jobs must be at least 1, got {n_jobs}")
        self.n_jobs = n_jobs

    def run(self, trials: Sequence[TrialSpec], settings: TrialSettings, on_record: RecordSink) -> None:
        """See :meth:`Executor.run`. Ctrl-C stops the running children (they save a checkpoint) and re-raises."""
        stop = threading.Event()
        with ThreadPoolExecutor(max_workers=self.n_jobs, thread_name_prefix="trial") as pool:
            futures: dict[Future[TrialRecord], TrialSpec] = {
                pool.submit(settings.run, trial, stop): trial for trial in trials
            }
            try:
                for future in as_completed(futures):
                    on_record(future.result())
            except BaseException:
                stop.set()
                for future in futures:
                    future.cancel()
                raise


def import_ray() -> tuple[Any, Any]:
    """Import ``ray`` and ``ray.tune``.

    Raises:
        UserInputError: if Ray is not installed, with the command that installs it.
    """
    try:
        import ray
        from ray import tune
    except ImportError:
        raise UserInputError("running a sweep on Ray needs Ray Tune; install it with: "
                             'pip install "ray[tune]"') from None
    return ray, tune


def _ray_trial(config: dict[str, Any], settings: TrialSettings) -> None:
    """The Ray Tune function trainable: run one trial and report its record as JSON."""
    from ray import tune

    record = settings.run(TrialSpec.from_dict(config["trial"]))
    tune.report({"record": json.dumps(record.to_dict()), "status": record.status})


def _trial_dirname(trial: Any) -> str:
    """Ray's folder name of a trial: the sweep's trial id."""
    return str(trial.config["trial"]["trial_id"])


class RayExecutor:
    """Run trials on a Ray cluster through Ray Tune (one function-trainable trial per sweep trial).

    Ray is imported only here, so the rest of the package works without it.

    Args:
        address: ``"auto"`` (the cluster this machine belongs to), ``"host:port"``, ``"ray://host:10001"``,
            or ``"local"`` to start a private Ray instance on this machine. Ignored if Ray is already
            initialised in this process (``ray.init`` was called).
        cpus_per_trial: CPUs Ray reserves for each trial (>= 1); Ray runs as many trials at once as fit.
        max_concurrent: cap on trials running at once, or ``None`` for as many as the cluster fits.
        num_cpus: CPUs of a private instance (``address="local"``); ``None`` for all of this machine's.
        gpus_per_trial: GPUs Ray reserves for each trial (>= 0, fractions share a GPU); Ray sets the trial's
            ``CUDA_VISIBLE_DEVICES``, which ``train.py --device auto`` follows.
    """

    def __init__(self, address: str, cpus_per_trial: int = 1, max_concurrent: int | None = None,
                 num_cpus: int | None = None, gpus_per_trial: float = 0.0) -> None:
        if cpus_per_trial < 1:
            raise UserInputError(f"--cpus-per-trial must be at least 1, got {cpus_per_trial}")
        if not gpus_per_trial >= 0:
            raise UserInputError(f"--gpus-per-trial must be >= 0, got {gpus_per_trial}")
        if num_cpus is not None and address != LOCAL_RAY:
            raise UserInputError("the number of Ray CPUs can only be set for --ray-address local; a cluster "
                                 "has its own (ray start --num-cpus)")
        self.address = address
        self.cpus_per_trial = cpus_per_trial
        self.max_concurrent = max_concurrent
        self.num_cpus = num_cpus
        self.gpus_per_trial = gpus_per_trial
        self.started = False

    def connect(self) -> None:
        """Join the Ray cluster, or start the private instance (nothing if Ray is already initialised).

        Workers get the package's folder on their ``PYTHONPATH`` so that they can import this package.

        Raises:
            UserInputError: if Ray is not installed or cannot connect / start, with what to do.
        """
        ray, _ = import_ray()
        if ray.is_initialized():
            return
        runtime_env = {"env_vars": {"PYTHONPATH": package_pythonpath()}}
        local = self.address == LOCAL_RAY
        try:
            ray.init(address=None if local else self.address, num_cpus=self.num_cpus if local else None,
                     runtime_env=runtime_env, include_dashboard=False, logging_level=logging.WARNING)
        except (ConnectionError, RuntimeError, ValueError) as error:
            raise UserInputError(f"cannot connect to Ray at {self.address!r}: {' '.join(str(error).split())[:300]}; "
                                 "start the cluster (ray start --head) or use --ray-address local") from None
        self.started = local

    def run(self, trials: Sequence[TrialSpec], settings: TrialSettings, on_record: RecordSink) -> None:
        """See :meth:`Executor.run`. Records arrive through a Tune callback in this (the driver's) process.

        Ray Tune handles Ctrl-C itself (it stops the trials); if trials are left without a record, this
        raises ``KeyboardInterrupt`` so that the sweep reports the interruption.
        """
        if not trials:
            return
        _, tune = import_ray()
        self.connect()
        received: list[str] = []

        def deliver(record: TrialRecord) -> None:
            received.append(record.trial_id)
            on_record(record)

        class RecordCallback(tune.Callback):
            """Pass each trial's reported record, or its runner's error, to the sweep."""

            def on_trial_result(self, iteration: int, trials: list[Any], trial: Any, result: dict[str, Any],
                                **info: Any) -> None:
                deliver(TrialRecord.from_dict(json.loads(result["record"])))

            def on_trial_error(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
                error = RuntimeError(f"the Ray trial failed: {getattr(trial, 'error_file', None) or 'see Ray logs'}")
                deliver(failed_record(TrialSpec.from_dict(trial.config["trial"]), error))

        resources = {"cpu": self.cpus_per_trial, **({"gpu": self.gpus_per_trial} if self.gpus_per_trial else {})}
        trainable = tune.with_resources(tune.with_parameters(_ray_trial, settings=settings), resources)
        tuner = tune.Tuner(
            trainable,
            param_space={"trial": tune.grid_search([trial.to_dict() for trial in trials])},
            tune_config=tune.TuneConfig(max_concurrent_trials=self.max_concurrent, reuse_actors=False,
                                        trial_dirname_creator=_trial_dirname, trial_name_creator=_trial_dirname),
            run_config=tune.RunConfig(name="ray", storage_path=str(Path(settings.sweep_dir) / "ray_results"),
                                      callbacks=[RecordCallback()], verbose=0,
                                      failure_config=tune.FailureConfig(max_failures=0)),
        )
        try:
            tuner.fit()
        finally:
            if self.started:
                import ray

                ray.shutdown()
                self.started = False
        if len(received) < len(trials):
            raise KeyboardInterrupt(f"{len(trials) - len(received)} trials were stopped by Ray before they finished")

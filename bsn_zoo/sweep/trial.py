"""Running one trial: ``train.py`` in a child process, then its run folder read back into a record.

A trial runs as ``python train.py ... -f <sweep folder>/trials/<trial id>``, so a crash, a divergence or
a memory blow-up ends that process only, and the trial's folder is a normal run folder
(``trials/<trial id>/<algo>/<env>_1/`` with models, TensorBoard events and ``config.yml``) that every
other tool of the package accepts. The child's output goes to ``stdout.log`` and ``stderr.log`` in the
trial folder; the last line of ``stderr.log`` is the trial's error.

The same function runs a trial for the local process pool, inside a Ray Tune trainable, and for an
Optuna objective (which watches the evaluations as they are written, to prune).
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import yaml

from bsn_zoo.sweep.spec import TrialSpec
from bsn_zoo.sweep.state import LearningCurve, TrialRecord

__all__ = [
    "PACKAGE_ROOT",
    "TRAIN_MODULE",
    "TrialInterrupted",
    "classify_exit",
    "failed_record",
    "find_run_dir",
    "package_pythonpath",
    "read_curve",
    "read_evaluations",
    "run_trial",
]

#: the folder that holds the ``bsn_zoo`` package (a checkout, or site-packages); children get it on ``PYTHONPATH``.
PACKAGE_ROOT = Path(__file__).resolve().parents[2]
#: the training command every trial runs, as ``python -m TRAIN_MODULE``.
TRAIN_MODULE = "bsn_zoo.train"
#: how ``train.py`` starts the message of a run whose weights or losses became non-finite (bsn_zoo/checkpoint.py).
DIVERGENCE_MESSAGE = "training diverged"
#: prefix of ``train.py``'s one-line errors (bsn_zoo/cli_errors.run_cli), removed from recorded errors.
ERROR_PREFIX = "train.py: error: "
#: seconds a stopped child gets to save its checkpoint after SIGTERM before it is killed.
STOP_GRACE_S = 30.0
#: points kept of a learning curve built from training episodes (windows of episodes are averaged).
MAX_TRAIN_CURVE_POINTS = 100


class TrialInterrupted(Exception):
    """The sweep was stopped while this trial ran; the trial is not recorded and runs again on resume."""


def package_pythonpath() -> str:
    """``PYTHONPATH`` for a child process: :data:`PACKAGE_ROOT` ahead of the caller's own ``PYTHONPATH``."""
    return os.pathsep.join(filter(None, [str(PACKAGE_ROOT), os.environ.get("PYTHONPATH")]))


def find_run_dir(trial_dir: Path) -> Path | None:
    """The run folder ``train.py`` made below a trial folder (``<algo>/<env>_<N>/``), or ``None``."""
    runs = sorted(path.parent for path in Path(trial_dir).glob("*/*/config.yml"))
    return runs[0] if runs else None


def read_evaluations(run_dir: Path) -> tuple[np.ndarray, np.ndarray] | None:
    """The periodic evaluations of a run: ``(timesteps, mean return of each evaluation)``.

    Reads ``eval/evaluations.npz`` (SB3's ``EvalCallback`` format). Returns ``None`` if there is no such
    file yet or it is being written (a later read gets it).
    """
    path = Path(run_dir) / "eval" / "evaluations.npz"
    if not path.is_file():
        return None
    try:
        with np.load(path) as data:
            timesteps, results = np.asarray(data["timesteps"]), np.asarray(data["results"], dtype=float)
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return None
    if len(timesteps) == 0:
        return None
    return timesteps.astype(int), results.reshape(len(timesteps), -1).mean(axis=1)


def _training_curve(run_dir: Path) -> LearningCurve | None:
    """Training-episode returns from the Monitor files, ordered by time, in at most 100 averaged points."""
    episodes = []
    for path in sorted((Path(run_dir) / "monitor").glob("*.monitor.csv")):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # a file with no finished episode yet
                table = np.loadtxt(path, delimiter=",", skiprows=2, ndmin=2)
        except (OSError, ValueError):
            continue
        if table.size:
            episodes.append(table[:, :3])
    if not episodes:
        return None
    table = np.concatenate(episodes)
    table = table[np.argsort(table[:, 2], kind="stable")]
    steps = np.cumsum(table[:, 1])
    windows = np.array_split(np.arange(len(table)), min(len(table), MAX_TRAIN_CURVE_POINTS))
    return LearningCurve(tuple(int(steps[w[-1]]) for w in windows),
                         tuple(float(table[w, 0].mean()) for w in windows), "train")


def read_curve(run_dir: Path) -> LearningCurve | None:
    """The run's learning curve: its evaluations, else its training episodes, else ``None``."""
    evaluations = read_evaluations(run_dir)
    if evaluations is not None:
        timesteps, returns = evaluations
        return LearningCurve(tuple(int(t) for t in timesteps), tuple(float(r) for r in returns), "eval")
    return _training_curve(run_dir)


def _last_error_line(path: Path) -> str | None:
    try:
        lines = [line.strip() for line in path.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return None
    if not lines:
        return None
    return lines[-1].removeprefix(ERROR_PREFIX)


def _die_with_parent() -> Callable[[], None] | None:
    """On Linux, a ``preexec_fn`` making the child get SIGTERM if the thread that started it dies.

    Without it, a trial whose Ray worker is killed would keep training as an orphan.
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    pr_set_pdeathsig = 1

    def set_parent_death_signal() -> None:
        prctl(pr_set_pdeathsig, int(signal.SIGTERM))

    return set_parent_death_signal


def _stop(process: subprocess.Popen[bytes]) -> None:
    """Ask the child to stop (SIGTERM: it saves a checkpoint), and kill it after :data:`STOP_GRACE_S`."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(STOP_GRACE_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _run_n_timesteps(run_dir: Path | None) -> int | None:
    if run_dir is None:
        return None
    try:
        config = yaml.safe_load((run_dir / "config.yml").read_text())
        return int(config["n_timesteps"])
    except (OSError, yaml.YAMLError, KeyError, TypeError, ValueError):
        return None


def run_trial(
    trial: TrialSpec,
    sweep_dir: Path,
    *,
    timeout_s: float | None = None,
    threads: int = 1,
    stop: threading.Event | None = None,
    should_prune: Callable[[Path], bool] | None = None,
    poll_s: float = 1.0,
    python: str = sys.executable,
) -> TrialRecord:
    """Run one trial to the end and return its record.

    The trial folder ``<sweep_dir>/trials/<trial id>`` is emptied first (a previous attempt that was
    interrupted leaves a partial run there).

    Args:
        trial: what to run.
        sweep_dir: the sweep folder (absolute, or relative to the current folder).
        timeout_s: stop the trial after this many seconds (status ``timeout``); ``None`` for no limit.
        threads: CPU threads the child may use (``OMP_NUM_THREADS``, torch's intra-op threads); >= 1.
        stop: when set (the sweep is being interrupted), the child is stopped and
            :class:`TrialInterrupted` is raised.
        should_prune: called with the run folder every ``poll_s`` seconds once it exists; returning
            ``True`` stops the child (status ``pruned``). Used by Optuna.
        poll_s: seconds between checks of the child, the stop event and ``should_prune`` (> 0).
        python: the interpreter that runs ``python -m bsn_zoo.train`` (the one running the sweep).

    Returns:
        The :class:`TrialRecord`: ``ok`` with the learning curve, or ``failed`` / ``diverged`` /
        ``timeout`` / ``pruned`` with the error.

    Raises:
        TrialInterrupted: if ``stop`` was set while the trial ran.
    """
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    sweep_dir = Path(sweep_dir).resolve()
    trial_dir = sweep_dir / "trials" / trial.trial_id
    shutil.rmtree(trial_dir, ignore_errors=True)
    trial_dir.mkdir(parents=True)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
           "PYTHONPATH": package_pythonpath()}
    command = [python, "-m", TRAIN_MODULE, *trial.train_arguments(trial_dir), "--threads", str(threads)]
    start = time.monotonic()
    status, error = None, None
    with open(trial_dir / "stdout.log", "wb") as stdout, open(trial_dir / "stderr.log", "wb") as stderr:
        process = subprocess.Popen(command, stdout=stdout, stderr=stderr, stdin=subprocess.DEVNULL, env=env,
                                   start_new_session=True, preexec_fn=_die_with_parent())
        try:
            while process.poll() is None:
                time.sleep(poll_s)
                if stop is not None and stop.is_set():
                    raise TrialInterrupted(trial.trial_id)
                if timeout_s is not None and time.monotonic() - start > timeout_s:
                    status, error = "timeout", f"stopped after the trial time limit of {timeout_s:g} s"
                    break
                run_dir = find_run_dir(trial_dir)
                if should_prune is not None and run_dir is not None and should_prune(run_dir):
                    status, error = "pruned", "stopped early by the pruner (evaluation return below the median)"
                    break
        finally:
            _stop(process)
    run_dir = find_run_dir(trial_dir)
    if status is None:
        status, error = classify_exit(process.returncode, trial_dir / "stderr.log")
    return TrialRecord(
        trial_id=trial.trial_id, config_id=trial.config_id, seed=trial.seed, fingerprint=trial.fingerprint,
        status=status, error=error, exit_code=process.returncode if status in ("ok", "failed", "diverged") else None,
        run_dir=None if run_dir is None else str(run_dir.relative_to(sweep_dir)),
        n_timesteps=_run_n_timesteps(run_dir),
        curve=None if run_dir is None or status in ("failed", "diverged") else read_curve(run_dir),
        duration_s=round(time.monotonic() - start, 3), options=dict(trial.options),
    )


def classify_exit(returncode: int, stderr_log: Path) -> tuple[str, str | None]:
    """The status and error of a ``train.py`` that exited by itself with ``returncode``.

    Args:
        returncode: its exit status (negative: killed by that signal).
        stderr_log: the file holding its standard error; the last line is its error.

    Returns:
        ``("ok", None)``, ``("diverged", error)`` for a divergence, else ``("failed", error)``.
    """
    if returncode == 0:
        return "ok", None
    error = _last_error_line(stderr_log)
    if returncode < 0 or (returncode > 128 and error is None):
        return "failed", f"stopped by {_signal_name(abs(returncode) % 128)} from outside the sweep (out of memory?)"
    if error is None:
        return "failed", f"train.py exited with status {returncode} and printed no error"
    return ("diverged" if error.startswith(DIVERGENCE_MESSAGE) else "failed"), error


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def failed_record(trial: TrialSpec, error: BaseException, duration_s: float = 0.0) -> TrialRecord:
    """The record of a trial whose runner itself raised ``error`` (not ``train.py``: e.g. a full disk)."""
    message = " ".join(str(error).split()) or "no message"
    return TrialRecord(trial_id=trial.trial_id, config_id=trial.config_id, seed=trial.seed,
                       fingerprint=trial.fingerprint, status="failed", error=f"{type(error).__name__}: {message}",
                       duration_s=round(duration_s, 3), options=dict(trial.options))

"""Sweeps: many training runs (configurations x seeds) on this machine or on a Ray cluster, resumable.

``python train.py --sweep sweeps/estimators_cartpole.yml`` expands the sweep file (see
:mod:`bsn_zoo.sweep.spec`) into trials, runs each as a normal ``train.py`` run in its own process, records
every finished trial in ``<sweep folder>/state.jsonl`` (:mod:`bsn_zoo.sweep.state`), and ends with a
summary of interquartile means and bootstrap confidence intervals (:mod:`bsn_zoo.sweep.summary`). The sweep
folder (default ``logs/sweeps/<name>``) holds::

    sweep.yml          the expanded sweep (configurations with all their options, seeds, threshold)
    state.jsonl        one line per finished trial: status, error, learning curve
    trials/<trial id>/ the trial's run folder <algo>/<env>_1/ (models, TensorBoard, config.yml) and logs
    summary.md, *.png  the summary (bsn_zoo.sweep.summary)

Rerunning the same command resumes an interrupted sweep: recorded trials are skipped. With
``--ray-address`` the same trials run through Ray Tune (:class:`~bsn_zoo.sweep.executors.RayExecutor`).
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from bsn_zoo.cli_errors import OneLineArgumentParser, UserInputError, command_hint, run_cli
from bsn_zoo.sweep.executors import Executor, LocalExecutor, RayExecutor, TrialSettings
from bsn_zoo.sweep.spec import SWEEP_FILE, SweepSpec, TrialSpec, load_saved_sweep, load_sweep, save_sweep
from bsn_zoo.sweep.state import FINISHED_STATUSES, STATE_FILE, SweepState, TrialRecord
from bsn_zoo.sweep.summary import write_summary

__all__ = [
    "STATE_FILE",
    "SWEEP_FILE",
    "SweepOutcome",
    "build_parser",
    "cli",
    "load_saved_sweep",
    "main",
    "run_sweep",
    "save_sweep",
    "signals_as_interrupt",
]

#: exit status of an interrupted sweep (as for SIGINT).
EXIT_INTERRUPTED = 130


@dataclass(frozen=True)
class SweepOutcome:
    """What a call of :func:`run_sweep` did.

    Attributes:
        sweep_dir: the sweep folder.
        skipped: trials already finished before this call (not run again).
        ran: records of the trials this call ran, in the order they finished.
        summary: the summary's markdown file, or ``None`` if no summary was written.
    """

    sweep_dir: Path
    skipped: int
    ran: tuple[TrialRecord, ...]
    summary: Path | None


def _describe(record: TrialRecord) -> str:
    if record.status == "ok":
        final = record.curve.final_return if record.curve is not None else None
        detail = "no returns recorded" if final is None else f"final return {final:.1f}"
    else:
        detail = record.error or "no error message"
    return f"{record.trial_id}: {record.status}, {detail} ({record.duration_s:.0f} s)"


def run_sweep(
    spec: SweepSpec,
    sweep_dir: Path,
    executor: Executor,
    *,
    timeout_s: float | None = None,
    threads: int = 1,
    rerun: Sequence[str] = (),
    summary: bool = True,
    bootstrap_reps: int = 2000,
) -> SweepOutcome:
    """Run the trials of ``spec`` that are not finished yet, record each, and write the summary.

    Args:
        spec: the sweep.
        sweep_dir: its folder (created; a folder of an earlier run of the same sweep resumes it).
        executor: where trials run (:class:`LocalExecutor` or :class:`RayExecutor`).
        timeout_s: per-trial time limit in seconds, or ``None``.
        threads: CPU threads per trial (>= 1).
        rerun: statuses of recorded trials to run again, e.g. ``("failed", "diverged", "timeout")``.
        summary: write ``summary.md`` and the plots at the end.
        bootstrap_reps: bootstrap replications of the summary's confidence intervals (>= 100).

    Returns:
        A :class:`SweepOutcome`.

    Raises:
        UserInputError: for a bad configuration (checked before anything runs), or a sweep folder whose
            recorded trials ran with other options.
        KeyboardInterrupt: if interrupted; finished trials stay recorded and a rerun resumes.
    """
    unknown = set(rerun) - set(FINISHED_STATUSES)
    if unknown:
        raise UserInputError(f"cannot rerun unknown statuses {sorted(unknown)}; choose from {FINISHED_STATUSES}")
    spec.validate()
    sweep_dir = Path(sweep_dir).resolve()
    sweep_dir.mkdir(parents=True, exist_ok=True)
    trials = spec.trials()
    state = SweepState(sweep_dir / STATE_FILE)
    try:
        done = state.finished({trial.trial_id: trial.fingerprint for trial in trials}, rerun)
    except ValueError as error:
        raise UserInputError(str(error)) from None
    save_sweep(spec, sweep_dir)
    pending: list[TrialSpec] = [trial for trial in trials if trial.trial_id not in done]
    print(f"Sweep {spec.name}: {len(trials)} trials ({len(spec.configs)} configurations x {len(spec.seeds)} seeds)"
          f"; {len(done)} finished before, {len(pending)} to run\n  sweep folder: {sweep_dir}", flush=True)
    ran: list[TrialRecord] = []

    def record(result: TrialRecord) -> None:
        state.append(result)
        ran.append(result)
        print(f"  [{len(done) + len(ran)}/{len(trials)}] {_describe(result)}", flush=True)

    executor.run(pending, TrialSettings(sweep_dir, timeout_s, threads), record)
    summary_path = None
    if summary:
        summary_path = write_summary(sweep_dir, reps=bootstrap_reps)
        print(f"Summary: {summary_path}", flush=True)
    return SweepOutcome(sweep_dir, len(done), tuple(ran), summary_path)


def build_parser() -> OneLineArgumentParser:
    """The command-line parser of ``train.py --sweep``."""
    parser = OneLineArgumentParser(
        prog="train.py --sweep", description="Run a sweep of training runs (configurations x seeds) and summarise it.",
        epilog="Rerun the same command to resume an interrupted sweep; finished trials are skipped.",
    )
    parser.add_argument("--sweep", type=Path, required=True, metavar="FILE", help="the sweep's YAML file")
    parser.add_argument("-f", "--log-folder", type=Path, default=Path("logs"),
                        help="root of the sweep folder <log-folder>/sweeps/<name> (default logs)")
    parser.add_argument("--sweep-dir", type=Path, metavar="DIR", help="the sweep folder itself (overrides -f)")
    parser.add_argument("--n-jobs", type=int, metavar="N",
                        help="trials at once on this machine (default: CPU cores / --cpus-per-trial)")
    parser.add_argument("--cpus-per-trial", type=int, default=1, metavar="N", help="CPU threads per trial (default 1)")
    parser.add_argument("--ray-address", metavar="ADDR",
                        help="run the trials on Ray: auto (this machine's cluster), host:port, ray://host:10001, "
                             "or local (start Ray here)")
    parser.add_argument("--ray-num-cpus", type=int, metavar="N",
                        help="CPUs of the Ray instance that --ray-address local starts (default: all)")
    parser.add_argument("--gpus-per-trial", type=float, default=0.0, metavar="N",
                        help="GPUs Ray reserves per trial, e.g. 0.25 to share one GPU by four trials (Ray only)")
    parser.add_argument("--trial-timeout", type=float, metavar="SECONDS", help="stop a trial after this long")
    parser.add_argument("--rerun", nargs="+", default=[], choices=[s for s in FINISHED_STATUSES if s != "ok"],
                        metavar="STATUS", help="also rerun recorded trials with these statuses (failed diverged ...)")
    parser.add_argument("--no-summary", action="store_true", help="do not write the summary at the end")
    parser.add_argument("--bootstrap-reps", type=int, default=2000, metavar="N",
                        help="bootstrap replications of the summary's confidence intervals (default 2000)")
    parser.add_argument("--verbose", action="store_true", help="print full tracebacks")
    return parser


@contextmanager
def signals_as_interrupt() -> Iterator[None]:
    """While active (in the main thread), SIGINT and SIGTERM raise ``KeyboardInterrupt``.

    SIGINT is set explicitly too: a process started with SIGINT ignored (a background job of a
    non-interactive shell, ``nohup``) would otherwise never see Ctrl-C or ``kill -INT`` and run on.
    """
    if sys.platform == "win32":
        yield
        return

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    try:
        previous = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)


def main(argv: Sequence[str]) -> int:
    """``train.py --sweep FILE ...``: run (or resume) a sweep. Returns the exit status (130 if interrupted)."""
    args = build_parser().parse_args(argv)
    spec = load_sweep(args.sweep)
    sweep_dir = args.sweep_dir if args.sweep_dir is not None else args.log_folder / "sweeps" / spec.name
    if args.cpus_per_trial < 1:
        raise UserInputError(f"--cpus-per-trial must be at least 1, got {args.cpus_per_trial}")
    if args.bootstrap_reps < 100:
        raise UserInputError(f"--bootstrap-reps must be at least 100, got {args.bootstrap_reps}")
    if args.ray_num_cpus is not None and args.ray_num_cpus < 1:
        raise UserInputError(f"--ray-num-cpus must be at least 1, got {args.ray_num_cpus}")
    if args.ray_address:
        executor: Executor = RayExecutor(args.ray_address, args.cpus_per_trial, args.n_jobs, args.ray_num_cpus,
                                         args.gpus_per_trial)
    elif args.gpus_per_trial or args.ray_num_cpus is not None:
        raise UserInputError("--gpus-per-trial and --ray-num-cpus need --ray-address (on this machine use "
                             "--ray-address local); the local pool leaves devices to train.py --device")
    else:
        executor = LocalExecutor(args.n_jobs or max(1, (os.cpu_count() or 1) // args.cpus_per_trial))
    try:
        with signals_as_interrupt():
            run_sweep(spec, sweep_dir, executor, timeout_s=args.trial_timeout, threads=args.cpus_per_trial,
                      rerun=args.rerun, summary=not args.no_summary, bootstrap_reps=args.bootstrap_reps)
    except KeyboardInterrupt:
        print(f"Sweep interrupted; finished trials are recorded in {Path(sweep_dir) / STATE_FILE}.\n"
              f"  resume with the same command: {command_hint('train.py')} {' '.join(argv)}",
              file=sys.stderr, flush=True)
        return EXIT_INTERRUPTED
    return 0


def cli() -> None:
    """The ``bsn-sweep FILE [options]`` command: the same as ``train.py --sweep FILE [options]``."""
    argv = sys.argv[1:]
    if argv and not argv[0].startswith("-"):
        argv = ["--sweep", *argv]
    sys.exit(run_cli(main, prog="bsn-sweep", argv=argv))

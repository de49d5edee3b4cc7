"""Summaries of a sweep: interquartile means and bootstrap confidence intervals across seeds.

For each configuration of a sweep (see :mod:`bsn_zoo.sweep`), over the seeds whose trial finished:

* **final return**: the mean return of the run's last evaluation (or, for a run without evaluations,
  of its last training episodes);
* **steps to threshold**: the first evaluation step whose mean return reached the threshold; a run that
  never reached it counts as its whole budget (``n_timesteps``), and the table says how many reached it.

Both are aggregated with the interquartile mean (IQM, the mean of the middle 50% of seeds, robust to one
lucky or crashed seed) and a 95% percentile confidence interval from a stratified bootstrap over seeds,
as recommended by Agarwal et al., "Deep RL at the edge of the statistical precipice" (NeurIPS 2021),
computed with their ``rliable`` library. The learning-curve plot shows the IQM across seeds at each
evaluation step with its bootstrap band.

``python -m bsn_zoo.sweep.summary <sweep folder> [--threshold R]`` rewrites ``summary.md``,
``learning_curves.png`` and ``final_return.png`` in the sweep folder.
"""

from __future__ import annotations

import math
import sys
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

import envs  # noqa: F401  (registers the project's bsn/ ids with Gymnasium)
from bsn_zoo.cli_errors import OneLineArgumentParser, UserInputError, run_cli
from bsn_zoo.config import RUN_DEFAULTS
from bsn_zoo.plotting import Line, Panel, agg_figure, plot_learning_curves
from bsn_zoo.sweep.spec import load_saved_sweep
from bsn_zoo.sweep.state import STATE_FILE, SweepState, TrialRecord

__all__ = [
    "ConfigSummary",
    "Interval",
    "curves_panel",
    "env_threshold",
    "iqm_interval",
    "markdown_table",
    "plot_final_returns",
    "seeded_numpy",
    "summarize",
    "write_summary",
]

#: files :func:`write_summary` writes into the sweep folder.
SUMMARY_FILE, CURVES_FILE, FINAL_FILE = "summary.md", "learning_curves.png", "final_return.png"
#: coverage of the confidence intervals.
CONFIDENCE = 0.95
#: an aggregated learning curve: (timesteps, IQM, CI low, CI high), four arrays of equal length.
BandedCurve = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


@dataclass(frozen=True)
class Interval:
    """A point estimate with its confidence interval ``[low, high]``."""

    point: float
    low: float
    high: float

    def format(self, digits: int = 1) -> str:
        """``point [low, high]`` with ``digits`` decimals."""
        return f"{self.point:,.{digits}f} [{self.low:,.{digits}f}, {self.high:,.{digits}f}]"


@dataclass(frozen=True)
class ConfigSummary:
    """The aggregate results of one configuration across its seeds.

    Attributes:
        config_id: the configuration's label.
        options: its flat options (see :class:`~bsn_zoo.sweep.spec.TrialSpec`).
        n_trials: trials recorded for it.
        statuses: trial status to count (``ok``, ``failed``, ``diverged``...).
        final_return: IQM and CI of the final return over the ``ok`` seeds, or ``None`` if none has returns.
        threshold: the return defining steps-to-threshold, or ``None`` if unknown.
        steps_to_threshold: IQM and CI of the steps to threshold (unreached = budget), or ``None``.
        reached: seeds that reached the threshold.
        curve: ``(timesteps, IQM, CI low, CI high)`` of the aligned learning curves, or ``None``.
        curve_source: ``"eval"`` or ``"train"`` (where the returns come from; ``"mixed"`` if both).
        errors: ``(trial id, status, error)`` of every trial that did not finish.
    """

    config_id: str
    options: dict[str, Any]
    n_trials: int
    statuses: dict[str, int]
    final_return: Interval | None
    threshold: float | None
    steps_to_threshold: Interval | None
    reached: int
    curve: BandedCurve | None
    curve_source: str | None
    errors: tuple[tuple[str, str, str], ...]

    @property
    def n_ok(self) -> int:
        """Seeds whose trial trained to the end."""
        return self.statuses.get("ok", 0)


@contextmanager
def seeded_numpy(seed: int) -> Iterator[None]:
    """Seed NumPy's global random generator inside the block and restore its state after.

    ``rliable`` 1.2's ``StratifiedBootstrap`` draws its resamples from the global generator (it ignores
    its ``random_state`` argument), so this is what makes a bootstrap reproducible.
    """
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(state)


def iqm_interval(
    scores: np.ndarray,
    reps: int,
    aggregate: Callable[[np.ndarray], np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """IQM across runs and its stratified-bootstrap 95% percentile interval (``rliable``).

    Resamples come from NumPy's global generator; wrap calls in :func:`seeded_numpy` to reproduce them.

    Args:
        scores: shape ``(runs, tasks)`` for one number per run, or ``(runs, tasks, points)`` for curves.
        reps: bootstrap replications (>= 1; 2000 gives stable 95% bounds).
        aggregate: maps a resampled score array to a 1-D array of estimates; default: the IQM of every
            point (of the last axis for curves).

    Returns:
        ``(point estimates, intervals)`` with shapes ``(k,)`` and ``(2, k)``.
    """
    try:
        from rliable import library, metrics
    except ImportError:
        raise UserInputError("sweep summaries need rliable; install it with: pip install rliable") from None

    if aggregate is None:
        if scores.ndim == 3:
            def aggregate(s: np.ndarray) -> np.ndarray:
                return np.array([metrics.aggregate_iqm(s[..., i]) for i in range(s.shape[-1])])
        else:
            def aggregate(s: np.ndarray) -> np.ndarray:
                return np.array([metrics.aggregate_iqm(s)])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # arch deprecates random_state, which rliable passes
        points, intervals = library.get_interval_estimates({"x": scores}, aggregate, reps=reps,
                                                           confidence_interval_size=CONFIDENCE)
    return np.asarray(points["x"], dtype=float), np.asarray(intervals["x"], dtype=float).reshape(2, -1)


def _interval(values: Sequence[float], reps: int) -> Interval | None:
    if not values:
        return None
    points, intervals = iqm_interval(np.asarray(values, dtype=float).reshape(-1, 1), reps)
    return Interval(float(points[0]), float(intervals[0, 0]), float(intervals[1, 0]))


def env_threshold(env_id: str) -> float | None:
    """The environment's registered ``reward_threshold`` (CartPole-v1: 475), or ``None`` if it has none."""
    try:
        threshold = gym.spec(env_id).reward_threshold
    except (gym.error.Error, ModuleNotFoundError, AttributeError):
        return None
    return None if threshold is None else float(threshold)


def _config_env(options: Mapping[str, Any]) -> str:
    return str(options.get("env", RUN_DEFAULTS["env"]))


def _aligned_curves(records: Sequence[TrialRecord], reps: int) -> tuple[BandedCurve | None, str | None]:
    """IQM curve with its band, on the evaluation steps of the shortest run (others interpolated)."""
    curves = [record.curve for record in records if record.curve is not None and record.curve.timesteps]
    if not curves:
        return None, None
    sources = {curve.source for curve in curves}
    shortest = min(curves, key=lambda curve: curve.timesteps[-1])
    grid = np.asarray(shortest.timesteps, dtype=float)
    scores = np.stack([np.interp(grid, curve.timesteps, curve.returns) for curve in curves])[:, None, :]
    points, intervals = iqm_interval(scores, reps)
    return (grid, points, intervals[0], intervals[1]), (sources.pop() if len(sources) == 1 else "mixed")


def summarize(
    records: Sequence[TrialRecord],
    config_ids: Sequence[str] | None = None,
    threshold: float | None = None,
    reps: int = 2000,
    seed: int = 0,
) -> list[ConfigSummary]:
    """Aggregate a sweep's trial records per configuration.

    Args:
        records: the latest record of each trial (``SweepState.latest().values()``).
        config_ids: the order of configurations in the output (the sweep's); ``None`` for first appearance.
            Configurations without records are listed with no results.
        threshold: return defining steps-to-threshold for every configuration; ``None`` uses each
            configuration's environment's registered ``reward_threshold`` (no column if it has none).
        reps: bootstrap replications (>= 1).
        seed: seed of the bootstrap's random state (summaries are reproducible).

    Returns:
        One :class:`ConfigSummary` per configuration.
    """
    if reps < 1:
        raise ValueError(f"reps must be >= 1, got {reps}")
    by_config: dict[str, list[TrialRecord]] = {config_id: [] for config_id in (config_ids or [])}
    for record in records:
        by_config.setdefault(record.config_id, []).append(record)
    with seeded_numpy(seed):
        return [_summarize_config(config_id, group, threshold, reps) for config_id, group in by_config.items()]


def _summarize_config(config_id: str, group: list[TrialRecord], threshold: float | None, reps: int) -> ConfigSummary:
    """The :class:`ConfigSummary` of one configuration's records (see :func:`summarize`)."""
    group = sorted(group, key=lambda record: record.seed)
    ok = [record for record in group if record.status == "ok"]
    options = group[0].options if group else {}
    finals = [r.curve.final_return for r in ok if r.curve is not None and r.curve.final_return is not None]
    target = threshold if threshold is not None else (env_threshold(_config_env(options)) if group else None)
    steps = [] if target is None else [s for s in (_steps_to_threshold(record, target) for record in ok) if s]
    statuses: dict[str, int] = {}
    for record in group:
        statuses[record.status] = statuses.get(record.status, 0) + 1
    curve, source = _aligned_curves(ok, reps)
    return ConfigSummary(
        config_id=config_id, options=dict(options), n_trials=len(group), statuses=statuses,
        final_return=_interval(finals, reps), threshold=target,
        steps_to_threshold=_interval([step for step, _ in steps], reps),
        reached=sum(reached for _, reached in steps), curve=curve, curve_source=source,
        errors=tuple((r.trial_id, r.status, r.error or "") for r in group if r.status != "ok"),
    )


def _steps_to_threshold(record: TrialRecord, threshold: float) -> tuple[float, bool] | None:
    """``(steps, reached)``: the first step at ``threshold``, else the run's budget; ``None`` if unknown."""
    if record.curve is None or not record.curve.timesteps:
        return None
    step = record.curve.steps_to_threshold(threshold)
    if step is not None:
        return float(step), True
    return float(record.n_timesteps or record.curve.timesteps[-1]), False


def _varying_options(summaries: Sequence[ConfigSummary]) -> list[str]:
    keys = dict.fromkeys(key for summary in summaries for key in summary.options)
    return [key for key in keys if len({repr(s.options.get(key)) for s in summaries}) > 1]


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def markdown_table(summaries: Sequence[ConfigSummary], reps: int, title: str = "Sweep summary") -> str:
    """The summary as markdown: the table of configurations, how to read it, and the failed trials.

    Args:
        summaries: from :func:`summarize`.
        reps: the bootstrap replications used (stated in the text).
        title: the heading.
    """
    varying = _varying_options(summaries)
    lines = [
        f"# {title}", "",
        "IQM = interquartile mean across seeds (mean of the middle 50%); brackets: 95% stratified-bootstrap "
        f"percentile confidence interval over seeds ({reps} replications, `rliable`). Final return: mean return "
        "of the last evaluation. Steps to threshold: first evaluation step whose mean return reached the "
        "threshold; a seed that never reached it counts as its full budget.", "",
        "| configuration | options | seeds ok | final return, IQM [95% CI] | threshold "
        "| steps to threshold, IQM [95% CI] | reached |",
        "|---|---|---|---|---|---|---|",
    ]
    for s in summaries:
        options = ", ".join(f"{key}={s.options[key]}" for key in varying if key in s.options) or "—"
        final = s.final_return.format(1) if s.final_return else "—"
        if s.curve_source == "train":
            final += " (training episodes)"
        steps = s.steps_to_threshold.format(0) if s.steps_to_threshold else "—"
        threshold = "—" if s.threshold is None else f"{s.threshold:g}"
        reached = f"{s.reached}/{s.n_ok}" if s.threshold is not None and s.n_ok else "—"
        lines.append(f"| {_cell(s.config_id)} | {_cell(options)} | {s.n_ok}/{s.n_trials} | {final} | {threshold} "
                     f"| {steps} | {reached} |")
    errors = [error for s in summaries for error in s.errors]
    if errors:
        lines += ["", "## Trials that did not finish", "", "| trial | status | error |", "|---|---|---|"]
        lines += [f"| {_cell(trial)} | {status} | {_cell(message)} |" for trial, status, message in errors]
    return "\n".join(lines) + "\n"


def curves_panel(summaries: Sequence[ConfigSummary]) -> Panel | None:
    """The panel of each configuration's IQM learning curve with its 95% bootstrap band; ``None`` if no curves."""
    drawn = [s for s in summaries if s.curve is not None]
    if not drawn:
        return None
    lines = []
    for s in drawn:
        steps, points, low, high = s.curve
        lines.append(Line(steps, points, label=f"{s.config_id} ({s.n_ok} seeds)", band=(low, high)))
    thresholds = sorted({s.threshold for s in drawn if s.threshold is not None})
    return Panel(lines, ylabel="return (IQM across seeds, 95% CI)", thresholds=thresholds)


def plot_final_returns(summaries: Sequence[ConfigSummary], path: Path) -> Path | None:
    """Plot each configuration's final-return IQM with its 95% interval (rliable style); ``None`` if none."""
    drawn = [s for s in summaries if s.final_return is not None]
    if not drawn:
        return None
    figure = agg_figure(7, 1 + 0.45 * len(drawn))
    axes = figure.add_subplot()
    for row, s in enumerate(drawn):
        interval = s.final_return
        axes.barh(row, interval.high - interval.low, left=interval.low, height=0.6, alpha=0.5)
        axes.plot([interval.point, interval.point], [row - 0.3, row + 0.3], color="black", linewidth=2)
    axes.set_yticks(range(len(drawn)), [s.config_id for s in drawn], fontsize="small")
    axes.invert_yaxis()
    axes.set_xlabel("final return (IQM across seeds, 95% CI)")
    axes.grid(axis="x", alpha=0.3)
    figure.savefig(path, dpi=120)
    return Path(path)


def write_summary(sweep_dir: Path, threshold: float | None = None, reps: int = 2000, seed: int = 0) -> Path:
    """Summarise a sweep folder: write ``summary.md``, ``learning_curves.png`` and ``final_return.png``.

    Args:
        sweep_dir: a folder written by ``train.py --sweep``.
        threshold: return for steps-to-threshold; ``None`` uses the sweep file's ``threshold``, else each
            environment's registered one.
        reps: bootstrap replications (>= 1).
        seed: the bootstrap's random seed.

    Returns:
        The path of ``summary.md``.

    Raises:
        UserInputError: if ``sweep_dir`` is not a sweep folder.
    """
    sweep_dir = Path(sweep_dir)
    spec = load_saved_sweep(sweep_dir)
    records = list(SweepState(sweep_dir / STATE_FILE).latest().values())
    summaries = summarize(records, list(spec.configs), threshold if threshold is not None else spec.threshold,
                          reps, seed)
    text = markdown_table(summaries, reps, title=f"Sweep {spec.name}")
    panel = curves_panel(summaries)
    curves = None if panel is None else plot_learning_curves([panel], sweep_dir / CURVES_FILE, panel_size=(8, 5),
                                                             dpi=120)
    figures = [("Learning curves", curves),
               ("Final return", plot_final_returns(summaries, sweep_dir / FINAL_FILE))]
    text += "".join(f"\n## {name}\n\n![{name}]({figure.name})\n" for name, figure in figures if figure is not None)
    path = sweep_dir / SUMMARY_FILE
    path.write_text(text)
    return path


def build_parser() -> OneLineArgumentParser:
    """The command-line parser of ``python -m bsn_zoo.sweep.summary``."""
    parser = OneLineArgumentParser(prog="python -m bsn_zoo.sweep.summary", description=__doc__.split("\n\n")[0])
    parser.add_argument("sweep_dir", type=Path, help="the sweep folder (written by train.py --sweep)")
    parser.add_argument("--threshold", type=float, help="return defining steps-to-threshold "
                                                        "(default: the sweep file's, else the environment's)")
    parser.add_argument("--reps", type=int, default=2000, help="bootstrap replications (default 2000)")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap random seed (default 0)")
    return parser


def main(argv: Sequence[str]) -> int:
    """Rewrite a sweep folder's summary and print it. Returns the exit status."""
    args = build_parser().parse_args(argv)
    if args.reps < 1:
        raise UserInputError(f"--reps must be at least 1, got {args.reps}")
    if args.threshold is not None and not math.isfinite(args.threshold):
        raise UserInputError(f"--threshold must be a finite return, got {args.threshold}")
    path = write_summary(args.sweep_dir, args.threshold, args.reps, args.seed)
    print(path.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main, prog="python -m bsn_zoo.sweep.summary"))

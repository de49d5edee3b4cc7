"""The project's one learning-curve plotter: panels of return (or any scalar) against environment steps.

Callers turn their own data into :class:`Panel` objects of :class:`Line` objects and call
:func:`plot_learning_curves`: ``evaluate.py --plot`` (runs' Monitor returns or TensorBoard scalars, through
:func:`curve_panels`), the sweep summary (:mod:`bsn_zoo.sweep.summary`: IQM curves with bootstrap bands) and the
benchmarks (``benchmarks/compare_sb3.py``: one line per seed; ``benchmarks/ablation.py``: medians over seeds).

Figures are drawn on matplotlib's Agg canvas without ``pyplot``, so plotting neither needs a display nor
touches pyplot's global state.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["Curve", "Line", "Panel", "agg_figure", "curve_panels", "plot_learning_curves"]

#: ``(steps, values)`` of one curve.
Curve = tuple[np.ndarray, np.ndarray]


@dataclass(frozen=True)
class Line:
    """One curve of a panel.

    Attributes:
        steps: x values (environment steps).
        values: y values, one per step.
        label: legend entry (``None``: none).
        color: matplotlib colour (``None``: the next of the cycle).
        alpha: opacity of the line.
        linewidth: width of the line (``None``: matplotlib's default).
        band: ``(low, high)`` arrays drawn as a shaded band in the line's colour (e.g. a confidence interval).
        smooth: window of a moving average (1: none); the line is the average, drawn from the window's
            last step, and the raw values are drawn faint behind it.
        marker: matplotlib marker drawn at every point (``None``: none); with ``linewidth=0``, points only.
    """

    steps: Any
    values: Any
    label: str | None = None
    color: str | None = None
    alpha: float = 1.0
    linewidth: float | None = None
    band: tuple[Any, Any] | None = None
    smooth: int = 1
    marker: str | None = None


@dataclass(frozen=True)
class Panel:
    """One axes of the figure.

    Attributes:
        lines: the curves.
        title: the panel's title.
        ylabel: the y axis label (``None``: none).
        xlabel: the x axis label.
        thresholds: y values drawn as dashed horizontal lines (e.g. a task's solved threshold).
        categories: names of the x positions 0, 1, ... for a categorical x axis (each tick labelled with its name);
            empty: a numeric axis.
    """

    lines: Sequence[Line]
    title: str = ""
    ylabel: str | None = None
    xlabel: str = "environment steps"
    thresholds: Sequence[float] = field(default_factory=tuple)
    categories: Sequence[str] = field(default_factory=tuple)


def agg_figure(width: float, height: float) -> Any:
    """A matplotlib ``Figure`` of ``width`` x ``height`` inches on an Agg canvas, constrained layout."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def curve_panels(panels: Mapping[str, Mapping[str, Curve]], smooth: bool = True) -> list[Panel]:
    """Panels of raw curves of several runs: panel title to ``{run label: (steps, values)}``.

    Args:
        panels: panel title (the y quantity, e.g. ``episode return`` or a TensorBoard key) to a mapping of
            run label to ``(steps, values)``.
        smooth: draw a moving average over about 5% of each curve's points (raw points faint).
    """
    return [
        Panel(
            [
                Line(steps, values, label=label, smooth=max(1, len(values) // 20) if smooth else 1)
                for label, (steps, values) in curves.items()
            ],
            title=title,
        )
        for title, curves in panels.items()
    ]


def _draw(axes: Any, line: Line) -> None:
    steps, values = np.asarray(line.steps), np.asarray(line.values)
    window = max(1, int(line.smooth))
    if window > 1:
        values = np.convolve(values, np.ones(window) / window, mode="valid")
    drawn = axes.plot(
        steps[window - 1 :],
        values,
        label=line.label,
        color=line.color,
        alpha=line.alpha,
        linewidth=line.linewidth,
        marker=line.marker,
    )[0]
    if window > 1:
        axes.plot(line.steps, line.values, color=drawn.get_color(), alpha=0.2, linewidth=0.8)
    if line.band is not None:
        axes.fill_between(steps, line.band[0], line.band[1], color=drawn.get_color(), alpha=0.2, linewidth=0)


def plot_learning_curves(
    panels: Sequence[Panel],
    path: Path | str,
    columns: int | None = None,
    panel_size: tuple[float, float] = (6.5, 4.0),
    sharey: bool = False,
    grid: bool = True,
    legend_fontsize: str | float = "small",
    dpi: int = 100,
) -> Path:
    """Plot panels of learning curves into one PNG.

    Args:
        panels: the panels, filled row by row.
        path: the ``.png`` destination (its folder is created).
        columns: panels per row (``None``: all in one row).
        panel_size: width and height of each panel in inches.
        sharey: one y axis for all panels.
        grid: draw a light grid.
        legend_fontsize: font size of each panel's legend (drawn where a line has a label).
        dpi: resolution of the PNG.

    Returns:
        ``path``.
    """
    columns = max(1, min(columns or len(panels), len(panels)))
    rows = max(1, -(-len(panels) // columns))
    figure = agg_figure(panel_size[0] * columns, panel_size[1] * rows)
    axes_grid = figure.subplots(rows, columns, squeeze=False, sharey=sharey)
    for axes, panel in zip(axes_grid.flat, panels, strict=False):
        for line in panel.lines:
            _draw(axes, line)
        for value in panel.thresholds:
            axes.axhline(value, color="k", linestyle="--", linewidth=0.8)
        axes.set_title(panel.title)
        axes.set_xlabel(panel.xlabel)
        if panel.categories:
            axes.set_xticks(range(len(panel.categories)), list(panel.categories))
        if panel.ylabel is not None:
            axes.set_ylabel(panel.ylabel)
        if grid:
            axes.grid(alpha=0.3)
        if axes.get_legend_handles_labels()[1]:
            axes.legend(fontsize=legend_fontsize)
    for axes in list(axes_grid.flat)[len(panels) :]:
        axes.set_visible(False)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=dpi)
    return path

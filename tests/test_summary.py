"""Tests of sweep summaries: IQM and bootstrap intervals on known numbers, steps-to-threshold, files."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from bsn_zoo.sweep import STATE_FILE, save_sweep
from bsn_zoo.sweep.spec import parse_sweep
from bsn_zoo.sweep.state import LearningCurve, SweepState, TrialRecord
from bsn_zoo.sweep.summary import (
    env_threshold,
    iqm_interval,
    main,
    markdown_table,
    seeded_numpy,
    summarize,
    write_summary,
)


def make_record(config: str, seed: int, returns: Sequence[float] | None, steps: Sequence[int] | None = None,
                status: str = "ok", budget: int = 1000, options: dict | None = None) -> TrialRecord:
    curve = None
    if returns is not None:
        steps = steps or [100 * (i + 1) for i in range(len(returns))]
        curve = LearningCurve(tuple(steps), tuple(float(r) for r in returns), "eval")
    return TrialRecord(f"{config}_s{seed}", config, seed, "f", status, error=None if status == "ok" else "it broke",
                       n_timesteps=budget, curve=curve, options=options or {"env": "CartPole-v1"})


def test_iqm_is_the_mean_of_the_middle_half_and_its_interval_brackets_it() -> None:
    scores = np.array([[1.0], [2.0], [3.0], [4.0], [100.0], [5.0], [6.0], [7.0]])  # one outlier seed
    with seeded_numpy(0):
        points, intervals = iqm_interval(scores, reps=500)
    assert points[0] == pytest.approx(np.mean([3.0, 4.0, 5.0, 6.0]))  # 25% cut from each end of 8 values
    assert 1.0 <= intervals[0, 0] <= points[0] <= intervals[1, 0] <= 100.0
    with seeded_numpy(0):
        again = iqm_interval(scores, reps=500)
    np.testing.assert_array_equal(intervals, again[1])  # a fixed seed reproduces the interval


def test_final_return_and_steps_to_threshold_per_configuration() -> None:
    records = [
        make_record("a", 0, [10, 50]), make_record("a", 1, [20, 60]),
        make_record("a", 2, [30, 70]), make_record("a", 3, [40, 80]),
        make_record("b", 0, [5, 100, 200]),     # reaches 100 at step 200
        make_record("b", 1, [100, 100, 100]),   # at step 100
        make_record("b", 2, [1, 1, 1]),         # never: counts as its budget, 1000
        make_record("b", 3, [1, 1, 150]),       # at step 300
        make_record("b", 4, None, status="diverged"),
    ]
    a, b = summarize(records, threshold=100, reps=300)
    assert (a.config_id, a.n_ok, a.n_trials) == ("a", 4, 4)
    assert a.final_return.point == pytest.approx(np.mean([60, 70]))
    assert a.steps_to_threshold.point == pytest.approx(1000.0)  # nobody reached 100: every seed at its budget
    assert a.reached == 0
    assert (b.n_ok, b.statuses) == (4, {"ok": 4, "diverged": 1})
    assert b.final_return.point == pytest.approx(np.mean([100, 150]))
    assert b.steps_to_threshold.point == pytest.approx(np.mean([200, 300]))  # middle of 100, 200, 300, 1000
    assert b.reached == 3
    assert b.errors == (("b_s4", "diverged", "it broke"),)


def test_curves_are_aligned_on_the_shortest_run() -> None:
    records = [make_record("a", 0, [0, 10, 20], steps=[100, 200, 300]),
               make_record("a", 1, [0, 30], steps=[150, 250])]
    (summary,) = summarize(records, threshold=None, reps=200)
    steps, points, low, high = summary.curve
    np.testing.assert_array_equal(steps, [150, 250])
    np.testing.assert_allclose(points, [np.mean([5, 0]), np.mean([15, 30])])  # run 0 interpolated at 150, 250
    assert np.all(low <= points) and np.all(points <= high)


def test_threshold_defaults_to_the_environment_s_registered_one() -> None:
    assert env_threshold("CartPole-v1") == 475.0
    assert env_threshold("Pendulum-v1") is None
    assert env_threshold("NoSuchEnv-v9") is None
    (summary,) = summarize([make_record("a", 0, [480])], reps=100)
    assert (summary.threshold, summary.reached) == (475.0, 1)


def test_markdown_lists_every_configuration_and_every_failed_trial() -> None:
    records = [make_record("fast", 0, [100], options={"learning_rate": 0.01}),
               make_record("slow", 0, None, status="failed", options={"learning_rate": 1e-4})]
    summaries = summarize(records, config_ids=["fast", "slow", "never_ran"], threshold=50, reps=100)
    text = markdown_table(summaries, reps=100)
    assert "| fast | learning_rate=0.01 | 1/1 | 100.0 [100.0, 100.0] | 50 | 100 [100, 100] | 1/1 |" in text
    assert "| slow | learning_rate=0.0001 | 0/1 | — | 50 | — | — |" in text
    assert "| never_ran | — | 0/0 |" in text
    assert "| slow_s0 | failed | it broke |" in text


def test_write_summary_and_cli_write_table_and_plots(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = parse_sweep({"grid": {"learning_rate": [0.1, 0.2]}, "seeds": 2, "threshold": 15}, "demo")
    save_sweep(spec, tmp_path)
    state = SweepState(tmp_path / STATE_FILE)
    for index, trial in enumerate(spec.trials()):
        state.append(make_record(trial.config_id, trial.seed, [index, 10 * index], options=trial.options))
    path = write_summary(tmp_path, reps=100)
    assert path == tmp_path / "summary.md"
    text = path.read_text()
    assert "# Sweep demo" in text and "| learning_rate=0.1 |" in text and "| learning_rate=0.2 |" in text
    assert "![Learning curves](learning_curves.png)" in text
    for name in ("learning_curves.png", "final_return.png"):
        assert (tmp_path / name).read_bytes().startswith(b"\x89PNG")
    assert main([str(tmp_path), "--threshold", "5", "--reps", "100"]) == 0
    assert "| 5 |" in capsys.readouterr().out


def test_summary_of_a_folder_that_is_not_a_sweep_is_refused(tmp_path: Path) -> None:
    from bsn_zoo.cli_errors import UserInputError

    with pytest.raises(UserInputError, match="not a sweep folder"):
        write_summary(tmp_path)

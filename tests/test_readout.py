"""``benchmarks.readout``: one trained model evaluated with each deterministic readout of its units, resumably."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from agents import LocalPG
from benchmarks import compare_sb3, delayed, readout
from bsn_zoo import plotting


@pytest.fixture
def tiny_tasks(monkeypatch: pytest.MonkeyPatch) -> None:
    """CartPole-v1 on a 512-step budget with 2 evaluation episodes; its delayed task on 300 steps, one grid point."""
    dense = compare_sb3.TASKS["CartPole-v1"]
    monkeypatch.setitem(compare_sb3.TASKS, "CartPole-v1", replace(
        dense, max_steps=dict.fromkeys(dense.max_steps, 512), min_steps=512, eval_episodes=2))
    monkeypatch.setitem(delayed.TASKS, "CartPole-v1@episode", replace(
        delayed.TASKS["CartPole-v1@episode"], budget=300, eval_episodes=1))
    monkeypatch.setattr(delayed, "GAMMAS", (0.999,))
    monkeypatch.setattr(delayed, "LAMBDAS", (0.95,))


def test_each_readout_is_evaluated_once_and_the_policys_own_is_restored(monkeypatch: pytest.MonkeyPatch) -> None:
    model = LocalPG("BsnPolicy", "CartPole-v1", n_steps=16, batch_size=32, seed=0, policy_kwargs={"net_arch": [8]})
    calls = []

    def fake_evaluate(model, _env, episodes: int, deterministic: bool = True) -> float:
        calls.append((model.policy.deterministic_units, deterministic, episodes))
        return float(len(calls))

    monkeypatch.setattr(readout, "evaluate", fake_evaluate)
    returns = readout.evaluate_readouts(model, lambda: None, 3)
    assert calls == [("threshold", True, 3), ("mean_field", True, 3), ("threshold", False, 3)]
    assert returns == {"threshold": 1.0, "mean_field": 2.0, "sampled": 3.0}
    model.policy.deterministic_units = "mean_field"
    calls.clear()
    returns = readout.evaluate_readouts(model, lambda: None, 1, known={"mean_field": -5.0})
    assert calls == [("threshold", True, 1), ("mean_field", False, 1)]  # the known readout is not evaluated again
    assert returns == {"threshold": 1.0, "mean_field": -5.0, "sampled": 2.0}
    assert model.policy.deterministic_units == "mean_field"


def test_benchmark_trains_once_evaluates_every_readout_and_resumes(
    tmp_path: Path, tiny_tasks: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "readout"
    args = ["--tasks", "CartPole-v1", "--seeds", "2", "--out", str(out)]
    readout.main(args)
    runs = sorted((tmp_path / "readout_runs").glob("*.json"))
    assert [path.name.split("__")[-1] for path in runs] == ["s0.json", "s1.json"]
    record = json.loads(runs[0].read_text())
    assert set(record["evaluations"]) == {"threshold", "mean_field", "sampled"} and record["steps"] >= 512
    assert record["evaluations"]["threshold"] == record["eval_mean"]  # the run's own evaluation, not a second one
    assert record["settings"] == json.loads(json.dumps(compare_sb3.algo_config("localpg", "CartPole-v1")))
    text = out.with_suffix(".md").read_text()
    assert "every run asked for is finished." in text and out.with_suffix(".png").is_file()
    row = next(line for line in text.splitlines() if line.startswith("| CartPole-v1 | 2/2 |"))
    medians = [float(cell) for cell in row.split(" | ")[2:5]]
    evaluations = [json.loads(path.read_text())["evaluations"] for path in runs]
    expected = [sum(run[name] for run in evaluations) / 2 for name in readout.READOUTS]
    assert medians == pytest.approx(expected, abs=0.051)
    runs[1].unlink()
    trained = []
    original = readout.run_job
    monkeypatch.setattr(readout, "run_job", lambda item: trained.append(item[0]) or original(item))
    readout.main(args)
    assert trained == [("CartPole-v1", 1)]
    runs[1].unlink()
    readout.main([*args, "--report-only"])
    assert f"1 of the runs asked for is not finished ({runs[1].name})" in out.with_suffix(".md").read_text()


def test_a_delayed_task_trains_at_localpgs_choice_and_needs_it_made(
    tmp_path: Path, tiny_tasks: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(readout, "DELAYED_RUNS", tmp_path / "delayed_runs")
    args = ["--tasks", "CartPole-v1@episode", "--seeds", "1", "--out", str(tmp_path / "readout")]
    with pytest.raises(SystemExit):
        readout.main(args)
    command = "python -m benchmarks.delayed --tasks CartPole-v1@episode --algos localpg"
    assert f"run `{command}` first" in capsys.readouterr().err
    delayed.main(["--tasks", "CartPole-v1@episode", "--seeds", "1", "--algos", "localpg",
                  "--out", str(tmp_path / "delayed")])
    readout.main(args)
    (path,) = (tmp_path / "readout_runs").glob("*.json")
    record = json.loads(path.read_text())
    assert (record["settings"]["gamma"], record["settings"]["gae_lambda"]) == (0.999, 0.95)
    assert record["steps"] >= 300 and set(record["evaluations"]) == set(readout.READOUTS)


def test_the_plot_names_each_readout_on_its_x_axis(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    figures = []
    original = plotting.agg_figure
    monkeypatch.setattr(plotting, "agg_figure", lambda *size: figures.append(original(*size)) or figures[-1])
    record = {"seed": 0, "evaluations": {"threshold": 1.0, "mean_field": 2.0, "sampled": 3.0}}
    readout.plot({"CartPole-v1": [record]}, tmp_path / "readout.png")
    axes = figures[0].axes[0]
    assert [label.get_text() for label in axes.get_xticklabels()] == [
        readout.READOUT_TITLES[name] for name in readout.READOUTS
    ]

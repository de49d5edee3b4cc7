"""benchmarks/compare_sb3.py: the equal-rollout settings of the throughput columns and the summary table."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from benchmarks import compare_sb3
from benchmarks.common import RunResult
from benchmarks.compare_sb3 import (
    ALGOS,
    TASKS,
    ZOO_PATHS,
    Task,
    algo_config,
    build,
    equal_rollout_overrides,
    first_step_at_or_above,
    has_config,
    main,
    record_name,
    run_one,
    summarise,
)
from bsn_zoo.config import LinearDecay, read_hyperparams


@pytest.mark.parametrize("env_id", list(TASKS))
def test_every_algorithm_with_settings_builds_on_every_task(env_id: str) -> None:
    for algo in ALGOS:
        if has_config(algo, env_id):
            model = build(algo, env_id, seed=0, overrides={"n_envs": 1})
            assert model.get_env().num_envs == 1 and model.observation_space.shape is not None
            model.get_env().close()
    assert has_config("ppo", env_id)


@pytest.mark.parametrize("env_id", list(TASKS))
def test_equal_rollout_keeps_localpg_minibatches_per_epoch_or_its_batch_size(env_id: str) -> None:
    ppo = algo_config("ppo", env_id)
    rollout = ppo["n_envs"] * ppo["n_steps"]
    own = algo_config("localpg", env_id)
    own_minibatches = own["n_envs"] * own["n_steps"] // own["batch_size"]
    kept = equal_rollout_overrides("localpg", env_id, "minibatches")
    assert (kept["n_envs"], kept["n_steps"]) == (ppo["n_envs"], ppo["n_steps"])
    assert rollout // kept["batch_size"] == own_minibatches
    assert equal_rollout_overrides("localpg", env_id, "batch_size") == {
        "n_envs": ppo["n_envs"],
        "n_steps": ppo["n_steps"],
    }
    for rule in ("minibatches", "batch_size"):
        assert "batch_size" not in equal_rollout_overrides("ppo", env_id, rule)
    with pytest.raises(ValueError, match="rule must be one of"):
        equal_rollout_overrides("localpg", env_id, "epochs")


def test_summary_gives_both_throughput_columns_as_ratios_to_ppo() -> None:
    results = [
        ("ppo", "CartPole-v1", 0, RunResult(30_000, 40_000, 10.0, 500.0)),
        ("localpg", "CartPole-v1", 0, RunResult(27_000, 40_000, 8.0, 500.0)),
    ]
    throughput = {
        ("ppo", "CartPole-v1", "minibatches"): 4000.0,
        ("ppo", "CartPole-v1", "batch_size"): 4000.0,
        ("localpg", "CartPole-v1", "minibatches"): 7000.0,
        ("localpg", "CartPole-v1", "batch_size"): 3000.0,
    }
    table = summarise(results, throughput, ["CartPole-v1"])
    assert "minibatches kept" in table and "batch_size kept" in table
    localpg = next(line for line in table.splitlines() if "| localpg |" in line)
    assert "| 27000 | 0.90 |" in localpg and "| 7000 | 1.75 | 3000 | 0.75 | 5000 |" in localpg


def test_localpg_variants_share_localpg_budget_and_unsolved_runs_count_it() -> None:
    task = TASKS["Acrobot-v1"]
    assert task.budget("localpg_compiled") == task.budget("localpg") == task.max_steps["localpg"]
    assert task.budget("ppo") == task.max_steps["ppo"]
    unsolved = [("localpg_compiled", "Acrobot-v1", 0, RunResult(None, 500_000, 60.0, -500.0))]
    row = next(line for line in summarise(unsolved, {}, ["Acrobot-v1"]).splitlines() if "localpg_compiled" in line)
    assert f"| {task.budget('localpg')} (> budget) |" in row


@pytest.mark.parametrize("argv", [["--eval-episodes", "0"], ["--seeds", "0"], ["--workers", "0"]])
def test_bad_counts_are_refused(argv: list[str]) -> None:
    with pytest.raises(SystemExit):
        main(argv)


def test_an_algorithm_without_rl_zoo_settings_sits_the_task_out(tmp_path: Path) -> None:
    assert has_config("localpg_compiled", "Pendulum-v1") and has_config("ppo", "Pendulum-v1")
    assert not has_config("a2c", "Pendulum-v1")
    out = tmp_path / "compare"
    main(["--envs", "Pendulum-v1", "--algos", "a2c", "--seeds", "1", "--out", str(out)])
    text = out.with_suffix(".md").read_text()
    assert "Not run (no RL Zoo settings): a2c on Pendulum-v1." in text
    assert "| Pendulum-v1 |" not in text


def test_rl_zoo_settings_come_from_the_hyperparameter_files() -> None:
    """PPO and A2C take RL Zoo's entries of hyperparams/ppo.yml and a2c.yml: schedules resolved, run settings
    other than n_envs / normalize left out, gSDE dropped for the BSN plug-ins only."""
    cartpole = algo_config("ppo", "CartPole-v1")
    assert isinstance(cartpole["learning_rate"], LinearDecay) and cartpole["learning_rate"].start == 1e-3
    assert isinstance(cartpole["clip_range"], LinearDecay) and cartpole["clip_range"].start == 0.2
    assert "n_timesteps" not in cartpole and cartpole["n_envs"] == 8
    assert algo_config("a2c", "LunarLander-v3")["learning_rate"].start == 0.00083
    assert algo_config("ppo", "Acrobot-v1")["normalize"] is True
    assert algo_config("ppo", "Pendulum-v1")["use_sde"] is True
    assert "use_sde" not in algo_config("ppo_bsn", "Pendulum-v1")
    for algo, path in ZOO_PATHS.items():
        for env_id in read_hyperparams(path):
            if env_id != "default":
                assert env_id in TASKS and has_config(algo, env_id)
    with pytest.raises(KeyError, match="no RL Zoo settings for 'Pendulum-v1'"):
        algo_config("a2c", "Pendulum-v1")


def test_finished_runs_are_kept_and_not_trained_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each finished run is saved as a record; a second invocation reports from the records without training,
    and the table gives the steps to PPO's final training mean and the minutes per run."""
    monkeypatch.setitem(TASKS, "CartPole-v1", Task("CartPole-v1", 475.0, {"localpg": 256, "ppo": 256}, 256, 1))
    out = tmp_path / "compare"
    argv = ["--envs", "CartPole-v1", "--algos", "localpg", "ppo", "--seeds", "1", "--throughput-steps", "0",
            "--out", str(out)]
    main(argv)
    records = sorted((tmp_path / "compare_runs").glob("CartPole-v1__*__s0.json"))
    assert [path.name.split("__")[1] for path in records] == ["localpg", "ppo"]
    first = out.with_suffix(".md").read_text()
    assert "every run asked for is finished" in first and "steps to PPO's final training mean" in first

    def no_training(job_and_folder):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr("benchmarks.compare_sb3.run_one", no_training)
    main(argv)
    main([*argv, "--report-only"])
    table = [line for line in out.with_suffix(".md").read_text().splitlines() if line.startswith("| CartPole-v1 |")]
    assert table == [line for line in first.splitlines() if line.startswith("| CartPole-v1 |")]


def test_a_record_is_named_by_the_settings_it_trained_with(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A tuned entry edited while a run trains does not rename its record: the name is the digest of the settings
    the model was built with, not of those on disk when training ends."""
    monkeypatch.setitem(TASKS, "CartPole-v1", Task("CartPole-v1", 475.0, {"localpg": 64, "ppo": 64}, 64, 1))
    job = ("localpg", "CartPole-v1", 0, 1)
    trained_with = record_name(job)
    real_train_until = compare_sb3.train_until

    def train_then_edit_the_entry(*args, **kwargs):
        result = real_train_until(*args, **kwargs)
        edited = lambda algo, env_id: {**algo_config(algo, env_id), "gamma": 0.5}  # noqa: E731
        monkeypatch.setattr(compare_sb3, "algo_config", edited)
        return result

    monkeypatch.setattr(compare_sb3, "train_until", train_then_edit_the_entry)
    run_one((job, tmp_path))
    assert record_name(job) != trained_with  # the entry did change
    assert [path.name for path in tmp_path.glob("*.json")] == [trained_with]


def test_one_reading_of_the_settings_names_the_record_and_builds_the_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A tuned entry edited after the record is named but before the model is built changes neither: the run
    reads its settings once."""
    monkeypatch.setitem(TASKS, "CartPole-v1", Task("CartPole-v1", 475.0, {"localpg": 64, "ppo": 64}, 64, 1))
    job = ("localpg", "CartPole-v1", 0, 1)
    named_for = record_name(job)
    real_train_until = compare_sb3.train_until
    built = []

    def edit_the_entry_then_train(make_model, *args, **kwargs):
        edited = lambda algo, env_id: {**algo_config(algo, env_id), "gamma": 0.5}  # noqa: E731
        monkeypatch.setattr(compare_sb3, "algo_config", edited)
        return real_train_until(lambda: built.append(make_model()) or built[-1], *args, **kwargs)

    monkeypatch.setattr(compare_sb3, "train_until", edit_the_entry_then_train)
    run_one((job, tmp_path))
    assert built[0].gamma == algo_config("localpg", "CartPole-v1")["gamma"] != 0.5
    assert [path.name for path in tmp_path.glob("*.json")] == [named_for]


def test_steps_to_a_target_is_the_first_curve_point_at_or_above_it() -> None:
    curve = [(100, -5.0), (200, 3.0), (300, 2.0), (400, 7.0)]
    assert first_step_at_or_above(curve, 3.0) == 200
    assert first_step_at_or_above(curve, 6.5) == 400
    assert first_step_at_or_above(curve, 8.0) is None
    assert first_step_at_or_above(curve, float("nan")) is None


def test_a_run_timed_at_zero_seconds_reports_no_rate_instead_of_failing() -> None:
    """A very short run's record can hold zero seconds; its steps per second are unknown, not a crash."""
    instant = RunResult(None, 256, 0.0, 9.0)
    assert np.isnan(instant.steps_per_second)
    assert RunResult.from_record(RunResult(None, 256, 0.0004, 9.0).record()).seconds == 0.0
    timed = RunResult(None, 256, 1.0, 9.0)
    table = summarise([("localpg", "CartPole-v1", 0, instant), ("ppo", "CartPole-v1", 0, timed)], {}, ["CartPole-v1"])
    assert "| localpg |" in table

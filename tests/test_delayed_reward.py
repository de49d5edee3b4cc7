"""Delayed reward from the command line: ``--reward-delay`` adds the time feature, the delay and the shipped
settings; runs on both backends evaluate on the true return; the shipped settings are the benchmark's choice."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path

import pytest
import yaml
from cli_support import TINY, TINY_PARAMS, call_main

from benchmarks import compare_sb3, delayed
from benchmarks.compare_sb3 import algo_config
from benchmarks.delayed import ALGOS, TASKS, choose
from bsn_zoo.cli_errors import UserInputError
from bsn_zoo.config import build_config, delayed_reward_file, read_hyperparams, validate_config
from bsn_zoo.run import RunLayout

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"


def test_reward_delay_flag_adds_wrappers_and_shipped_settings_over_the_entry() -> None:
    config = build_config({"env": "Acrobot-v1", "reward_delay": "episode"}, {})
    assert config["env_wrapper"] == ["envs.TimeFeature", {"envs.RewardDelay": {"delay": "episode"}}]
    entry = read_hyperparams(delayed_reward_file("localpg"))["Acrobot-v1"]
    assert set(entry) >= {"gamma", "gae_lambda"}
    shipped = validate_config(entry)  # as written in config.yml (lin_1e-3 becomes lin_0.001)
    assert all(config[key] == shipped[key] for key in entry)
    dense = build_config({"env": "Acrobot-v1"}, {})
    assert config["n_steps"] == dense["n_steps"] and config["policy_kwargs"] == dense["policy_kwargs"]
    # Flags and -params still win over the settings; wrappers given by -params come first and keep the delay.
    mine = build_config({"env": "Acrobot-v1", "reward_delay": 50, "n_envs": 3},
                        {"gamma": 0.9, "env_wrapper": "gymnasium.wrappers.FlattenObservation"})
    assert mine["gamma"] == 0.9 and mine["n_envs"] == 3
    assert mine["env_wrapper"] == [
        "gymnasium.wrappers.FlattenObservation", "envs.TimeFeature", {"envs.RewardDelay": {"delay": 50}}
    ]
    no_wrappers = build_config({"reward_delay": 50}, {"env_wrapper": None})
    assert no_wrappers["env_wrapper"] == ["envs.TimeFeature", {"envs.RewardDelay": {"delay": 50}}]
    with pytest.raises(UserInputError, match=r"env_wrapper already has envs\.RewardDelay"):
        build_config({"reward_delay": "episode"}, {"env_wrapper": [{"envs.RewardDelay": {"delay": 5}}]})
    assert build_config({"reward_delay": 5, "algo": "a2c"}, {})["env_wrapper"][-1] == {"envs.RewardDelay": {"delay": 5}}


def test_reward_delay_flag_keeps_the_entrys_wrappers_first(tmp_path: Path) -> None:
    conf = tmp_path / "mine.yml"
    conf.write_text("default:\n  env_wrapper: gymnasium.wrappers.FlattenObservation\n")
    config = build_config({"reward_delay": 5}, {}, conf)
    assert config["env_wrapper"] == [
        "gymnasium.wrappers.FlattenObservation", "envs.TimeFeature", {"envs.RewardDelay": {"delay": 5}}
    ]
    for bad in (0, "end", 2.5):
        with pytest.raises(UserInputError, match="--reward-delay: reward delay must be"):
            build_config({"reward_delay": bad}, {}, conf)


def test_delayed_settings_files_hold_the_benchmarks_choice() -> None:
    """Each shipped gamma and gae_lambda is the point benchmarks/delayed.py chose for that task and algorithm
    (from the committed runs), so the table and the files cannot disagree."""
    folder = RESULTS / "delayed_runs"
    checked = 0
    for name, task in TASKS.items():
        for algo in ALGOS:
            point = choose(name, algo, list(delayed.SELECTION_SEEDS), folder)
            if point is None:
                continue
            entry = read_hyperparams(delayed_reward_file(algo))[task.env_id]
            assert (entry["gamma"], entry["gae_lambda"]) == point, (name, algo)
            checked += 1
    assert checked >= 2


@pytest.mark.parametrize("backend", ["gymnasium", "torch"])
def test_delayed_run_trains_records_its_wrappers_and_evaluates(
    backend: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    args = [*TINY, "--env", "Acrobot-v1", "--reward-delay", "episode", "--backend", backend, *TINY_PARAMS]
    assert call_main("train.py", args) == 0
    run = RunLayout(tmp_path / "logs" / "localpg" / "Acrobot-v1_1")
    config = yaml.safe_load(run.config_file.read_text())
    assert config["env_wrapper"] == ["envs.TimeFeature", {"envs.RewardDelay": {"delay": "episode"}}]
    assert call_main("evaluate.py", [str(run.root), "-n", "1", "--json", "r.json"]) == 0
    assert json.loads((tmp_path / "r.json").read_text())["results"][0]["mean_return"] <= -1.0
    assert call_main("train.py", ["-i", str(run.root), "-n", "512", "--reward-delay", "5"]) == 2


def test_benchmark_resumes_from_its_saved_runs_and_reports_what_is_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tiny = replace(TASKS["CartPole-v1@episode"], budget=300, eval_episodes=1)
    monkeypatch.setitem(TASKS, "CartPole-v1@episode", tiny)
    monkeypatch.setattr(delayed, "GAMMAS", (0.99, 1.0))
    monkeypatch.setattr(delayed, "LAMBDAS", (1.0,))
    out = tmp_path / "delayed"
    args = ["--tasks", "CartPole-v1@episode", "--seeds", "1", "--selection-seeds", "7", "--out", str(out)]
    delayed.main(args)
    runs = sorted((tmp_path / "delayed_runs").glob("*.json"))
    assert len(runs) == 2 * 2 + 2 * 2  # selection: 2 points x 2 algos; then delayed and dense runs of each algo
    text = out.with_suffix(".md").read_text()
    assert "every run asked for is finished." in text and out.with_suffix(".png").is_file()
    rows = [line for line in text.splitlines() if line.startswith("| CartPole-v1@episode | ")]
    assert {row.split(" | ")[1] for row in rows[:2]} == {"localpg", "ppo"}
    record = json.loads(runs[0].read_text())
    assert {"eval_mean", "steps_to_threshold", "curve", "seconds"} <= set(record)
    # A stopped benchmark resumes: only the missing run trains again.
    dense = next(path for path in runs if "__dense__localpg" in path.name)
    dense.unlink()
    trained: list[str] = []
    original = delayed.run_job
    monkeypatch.setattr(delayed, "run_job", lambda item: trained.append(item[0].file_name()) or original(item))
    delayed.main(args)
    assert trained == [dense.name]
    dense.unlink()
    delayed.main([*args, "--report-only"])
    assert f"1 of the runs asked for is not finished ({dense.name})." in out.with_suffix(".md").read_text()
    # With its choice made but none of its reported runs finished, an algorithm's row gives no number.
    ppo_reported = {path: path.read_bytes() for path in runs if path.name.split("__")[1:3] in (["delayed", "ppo"],
                                                                                                ["dense", "ppo"])}
    for path in ppo_reported:
        path.unlink()
    delayed.main([*args, "--report-only"])
    table = [line for line in out.with_suffix(".md").read_text().splitlines() if line.startswith("| CartPole-v1@")]
    assert not any("nan" in line for line in table), table
    assert any("| ppo | " in line and "| 0/0 | - | - | n/a | - | n/a | n/a |" in line for line in table), table
    for path, content in ppo_reported.items():
        path.write_bytes(content)
    # Without one of its selection runs, an algorithm's reported runs are counted as waiting for its choice.
    selection = next(path for path in runs if "__select__ppo" in path.name)
    selection.unlink()
    delayed.main([*args, "--report-only"])
    text = out.with_suffix(".md").read_text()
    assert f"2 of the runs asked for are not finished ({dense.name}, {selection.name})." in text
    assert "once the algorithm's gamma and gae_lambda are chosen: CartPole-v1@episode ppo: 2 runs" in text
    with pytest.raises(SystemExit):
        delayed.main([*args[:-2], "--selection-seeds", "0", "--out", str(out)])


def test_benchmark_trains_only_the_algorithms_asked_for(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``--algos localpg`` trains LocalPG's selection, delayed and dense runs and no PPO run; the report still
    covers PPO, naming its selection runs as not finished."""
    tiny = replace(TASKS["CartPole-v1@episode"], budget=300, eval_episodes=1)
    monkeypatch.setitem(TASKS, "CartPole-v1@episode", tiny)
    monkeypatch.setattr(delayed, "GAMMAS", (0.99,))
    monkeypatch.setattr(delayed, "LAMBDAS", (1.0,))
    out = tmp_path / "delayed"
    delayed.main(["--tasks", "CartPole-v1@episode", "--seeds", "1", "--selection-seeds", "7", "--algos", "localpg",
                  "--out", str(out)])
    runs = sorted(path.name for path in (tmp_path / "delayed_runs").glob("*.json"))
    assert len(runs) == 3 and all("__localpg__" in name for name in runs)  # selection, delayed, dense
    ppo_selection = delayed.Job("CartPole-v1@episode", "select", "ppo", 0.99, 1.0, 7).file_name()
    assert f"1 of the runs asked for is not finished ({ppo_selection})." in out.with_suffix(".md").read_text()


@pytest.mark.slow
def test_shipped_delayed_settings_learn_acrobot_with_the_return_paid_at_the_end(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Acrobot-v1 paying its return (minus the episode's length) only at the last step: LocalPG with
    ``--reward-delay episode`` and nothing else learns to swing up within 200k steps (random policy: about
    -500; the dense task's tuned entry: about -75 after 500k)."""
    monkeypatch.chdir(tmp_path)
    args = ["--env", "Acrobot-v1", "--reward-delay", "episode", "-n", "200000", "--seed", "0", "--eval-freq", "0",
            "--save-freq", "0", "--no-progress-bar"]
    assert call_main("train.py", args) == 0
    run = RunLayout(tmp_path / "logs" / "localpg" / "Acrobot-v1_1")
    assert call_main("evaluate.py", [str(run.root), "-n", "20", "--seed", "1", "--json", "r.json"]) == 0
    assert json.loads((tmp_path / "r.json").read_text())["results"][0]["mean_return"] >= -100.0


def test_benchmark_settings_are_the_shipped_ones_with_the_grid_point() -> None:
    """A delayed run trains the dense settings updated by <algo>_delayed.yml, then the grid point; a dense run the
    dense settings alone; and any change of settings changes the run's file name (no stale reuse)."""
    name = "Acrobot-v1@episode"
    for algo in ALGOS:
        dense = delayed.settings(delayed.Job(name, "dense", algo, None, None, 0))
        assert repr(dense) == repr(algo_config(algo, "Acrobot-v1"))
        job = delayed.Job(name, "delayed", algo, 1.0, 1.0, 0)
        config = delayed.settings(job)
        assert (config["gamma"], config["gae_lambda"]) == (1.0, 1.0)
        shipped = read_hyperparams(delayed_reward_file(algo))["Acrobot-v1"]
        overrides = delayed.delayed_overrides(algo, "Acrobot-v1")
        assert set(overrides) == set(shipped) - {"gamma", "gae_lambda"}
        assert all(repr(config[key]) == repr(value) for key, value in overrides.items())
        other = delayed.Job(name, "delayed", algo, 1.0, 0.95, 0)
        assert job.file_name() != other.file_name()
        assert job.file_name().endswith(f"__{delayed.settings_digest(job)}__s0.json")


def test_one_reading_of_the_settings_names_stores_and_builds_a_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Settings edited after a run's record is named but before its model is built change neither the model nor
    the record's name and stored settings: the run reads its settings once."""
    monkeypatch.setitem(TASKS, "CartPole-v1@episode", replace(TASKS["CartPole-v1@episode"], budget=64, eval_episodes=1))
    job = delayed.Job("CartPole-v1@episode", "delayed", "localpg", 0.99, 1.0, 0)
    named_for, real_settings, real_train_until = job.file_name(), delayed.settings, delayed.train_until
    built = []

    def edit_the_settings_then_train(make_model, *args, **kwargs):
        monkeypatch.setattr(delayed, "settings", lambda job: {**real_settings(job), "n_epochs": 1})
        return real_train_until(lambda: built.append(make_model()) or built[-1], *args, **kwargs)

    monkeypatch.setattr(delayed, "train_until", edit_the_settings_then_train)
    delayed.run_job((job, tmp_path))
    assert built[0].n_epochs == real_settings(job)["n_epochs"] != 1
    [record] = tmp_path.glob("*.json")
    assert record.name == named_for
    assert json.loads(record.read_text())["settings"]["n_epochs"] == real_settings(job)["n_epochs"]


def test_mujoco_tasks_pay_the_return_at_the_episodes_end_on_the_locomotion_budget() -> None:
    """Each MuJoCo task is delayed to its episode's end with compare_sb3's budget and threshold; its training
    env observes the remaining time and pays reward only on the step that ends an episode."""
    for env_id in delayed.MUJOCO_TASKS:
        task = TASKS[f"{env_id}@episode"]
        dense = compare_sb3.TASKS[env_id]
        assert task.budget == dense.budget("localpg") == dense.budget("ppo") and task.threshold == dense.threshold
    model = delayed.build(delayed.Job("Hopper-v5@episode", "delayed", "localpg", 0.99, 0.95, 0))
    assert model.observation_space.shape == (11 + 1,)
    model.learn(total_timesteps=model.n_steps * model.n_envs)  # one rollout and its update
    buffer = model.rollout_buffer
    paid = buffer.rewards[:-1] != 0
    assert paid.any() and (buffer.episode_starts[1:][paid] == 1).all()
    model.get_env().close()


def test_readme_delayed_table_is_the_benchmark_s_medians() -> None:
    """The README's delayed-reward table quotes benchmarks/results/delayed.md: for each task, the reported seeds,
    each algorithm's median steps to the threshold ("not reached" where the median run never got there) and its
    median final evaluation with its dense-task evaluation in brackets."""
    report: dict[str, dict[str, list[str]]] = {}
    for line in (RESULTS / "delayed.md").read_text().splitlines():
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        if len(cells) == 10 and "@" in cells[0] and "/" in cells[3]:  # summary rows: "seeds solved"
            report.setdefault(cells[0], {})[cells[1]] = cells
    readme = (RESULTS.parents[1] / "README.md").read_text()
    rows = readme[readme.index("| delayed task (threshold) |") :].split("\n\n")[0].splitlines()[2:]
    assert len(rows) >= 5
    for row in rows:
        label, seeds, localpg_steps, ppo_steps, localpg_eval, ppo_eval = [
            cell.strip().replace("*", "") for cell in row.strip("|").split("|")]
        every = re.search(r"paid every (\d+) steps", label)
        task = f"{label.split(',')[0]}@{every.group(1) if every else 'episode'}"
        localpg, ppo = report[task]["localpg"], report[task]["ppo"]
        assert seeds == localpg[3].split("/")[1] == ppo[3].split("/")[1], row
        for quoted, summary in ((localpg_steps, localpg), (ppo_steps, ppo)):
            assert quoted == ("not reached" if "budget" in summary[4] else summary[4]), row
        assert (localpg_eval, ppo_eval) == (f"{localpg[5]} ({localpg[7]})", f"{ppo[5]} ({ppo[7]})"), row


def test_the_plot_leaves_out_tasks_without_finished_reported_runs(tmp_path: Path, monkeypatch) -> None:
    titles: list[str] = []
    monkeypatch.setattr(delayed, "plot_learning_curves",
                        lambda panels, path, **_: titles.extend(panel.title for panel in panels))
    record = {"curve": [[0, -500.0], [1000, -90.0]], "phase": "delayed", "algo": "localpg", "seed": 0}
    delayed.plot({"Acrobot-v1@episode": [record], "HalfCheetah-v5@episode": []}, tmp_path / "curves.png")
    assert titles == ["Acrobot-v1@episode"]


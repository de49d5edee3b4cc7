"""What a new user meets first: thread default, evaluation lines while training, honest resumes, RL Zoo flags."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from cli_support import TINY, TINY_PARAMS, call_main, read_events

from bsn_zoo import evaluate as evaluate_tool
from bsn_zoo import train as train_tool
from bsn_zoo.cli_errors import UserInputError
from bsn_zoo.config import DEFAULT_NUM_THREADS, set_num_threads
from bsn_zoo.evaluation import load_monitor_curve
from bsn_zoo.run import RunLayout


def monitor_times(path: Path) -> list[float]:
    """The ``t`` column of a Monitor CSV file, in file order."""
    with open(path, newline="") as handle:
        lines = [line for line in handle if not line.startswith("#")]
    return [float(row["t"]) for row in csv.DictReader(lines)]


def test_one_torch_thread_by_default_and_the_flag_changes_it(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    monkeypatch.setattr(torch, "set_num_threads", calls.append)
    assert DEFAULT_NUM_THREADS == 1
    assert train_tool.build_parser().parse_args([]).num_threads == 1
    assert evaluate_tool.build_parser().parse_args(["run"]).num_threads == 1
    assert train_tool.build_parser().parse_args(["--threads", "2"]).num_threads == 2  # the older name still works
    set_num_threads(1)
    set_num_threads("2")
    set_num_threads(-1)  # torch's own choice: nothing is set
    assert calls == [1, 2]
    with pytest.raises(UserInputError, match="num-threads must be a positive integer, got 0"):
        set_num_threads(0)


def test_training_prints_each_evaluation_and_a_final_summary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    assert call_main("train.py", [*TINY, *TINY_PARAMS]) == 0  # 256 steps, an evaluation every 128
    out = capsys.readouterr().out
    assert out.count("Eval num_timesteps=") == 2 and "episode_reward=" in out and "+/-" in out
    assert "New best mean reward!" in out
    assert "evaluation: " in out and "over 2 episodes" in out and "best mean evaluation:" in out
    assert "TensorBoard: tensorboard --logdir" in out.split("Done:")[1]


def test_two_resumes_keep_monitor_episodes_in_time_order_and_record_changed_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert call_main("train.py", [*TINY, *TINY_PARAMS]) == 0
    run = RunLayout(tmp_path / "logs" / "localpg" / "CartPole-v1_1")
    assert call_main("train.py", ["-i", str(run.root), "-n", "512", "--no-progress-bar"]) == 0
    assert call_main("train.py", ["-i", str(run.root), "-n", "768", "--no-progress-bar",
                                  "-params", "learning_rate:1e-4"]) == 0

    for path in sorted(run.monitor_dir.glob("*.monitor.csv")):
        times = monitor_times(path)
        assert len(times) > 3 and times == sorted(times), path  # one clock across the three segments
    steps, returns = load_monitor_curve(run.monitor_dir)
    assert len(steps) == len(returns) and np.all(np.diff(steps) > 0) and steps[-1] <= 768

    history = yaml.safe_load(run.history_file.read_text())
    assert [entry["from_step"] for entry in history] == [0, 256, 512]
    assert history[2]["changed"] == {"n_timesteps": {"from": 512, "to": 768},
                                     "learning_rate": {"from": 3e-3, "to": 1e-4}}
    assert yaml.safe_load(run.config_file.read_text())["learning_rate"] == 1e-4
    # TensorBoard: one folder per segment; the last one's HParams have the new learning rate
    segments = sorted(path.name for path in (run.root / "tb").iterdir())
    assert segments == ["LocalPG_1", "LocalPG_2", "LocalPG_3"]
    contents = [value.metadata.plugin_data.content for event in read_events(run.root / "tb" / "LocalPG_3")
                for value in event.summary.value if value.tag == "_hparams_/session_start_info"]
    assert len(contents) == 1 and b"learning_rate" in contents[0]


def test_evaluate_finds_runs_and_models_with_rl_zoo_flags(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    for _ in range(2):  # runs CartPole-v1_1 and CartPole-v1_2, checkpoints at 128 and 256 steps
        assert call_main("train.py", [*TINY, *TINY_PARAMS]) == 0
    runs = Path("logs") / "localpg"

    def evaluated_model(*flags: str) -> str:
        assert call_main("evaluate.py", ["-n", "1", "--json", "r.json", *flags]) == 0
        return json.loads((tmp_path / "r.json").read_text())["results"][0]["model"]

    zoo = ["--algo", "localpg", "--env", "CartPole-v1", "-f", "logs"]
    assert Path(evaluated_model(*zoo)) == runs / "CartPole-v1_2" / "final_model.zip"  # --exp-id 0: the latest
    assert Path(evaluated_model(*zoo, "--exp-id", "1", "--load-best")) == runs / "CartPole-v1_1" / "best_model.zip"
    assert Path(evaluated_model(*zoo, "--exp-id", "1", "--load-checkpoint", "128")) == (
        runs / "CartPole-v1_1" / "checkpoints" / "ckpt_128_steps.zip")
    assert Path(evaluated_model(*zoo, "--load-last-checkpoint")) == (
        runs / "CartPole-v1_2" / "checkpoints" / "ckpt_256_steps.zip")
    assert Path(evaluated_model()) == runs / "CartPole-v1_2" / "final_model.zip"  # the defaults: RL Zoo's habit
    capsys.readouterr()

    assert call_main("evaluate.py", [*zoo, "--exp-id", "7"]) == 2
    assert "no run logs/localpg/CartPole-v1_7; train one with" in capsys.readouterr().err
    assert call_main("evaluate.py", [*zoo, "--load-checkpoint", "999"]) == 2
    assert "ckpt_999_steps.zip does not exist (checkpoints at steps: 128, 256)" in capsys.readouterr().err
    assert call_main("evaluate.py", [str(runs / "CartPole-v1_1" / "final_model.zip"), "--load-best"]) == 2
    assert "is a model file: give its run folder" in capsys.readouterr().err

"""The command-line tools end to end: help, every option group, a continued run, evaluation, configs."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import yaml
from cli_support import ROOT, TINY, TINY_PARAMS, call_main, run_tool
from torch import nn

from bsn_zoo.config import build_config, parse_overrides, parse_value, validate_config
from bsn_zoo.run import RunLayout, algorithm_kwargs, saved_timesteps

TRAIN_FLAGS = ["--algo", "--env", "--policy", "--estimator", "--baseline", "--trained-agent", "--n-timesteps",
               "--seed", "--n-envs", "--device", "--num-threads", "--log-folder", "--tensorboard-log", "--eval-freq",
               "--eval-episodes", "--save-freq", "--log-interval", "--progress-bar", "--verbose", "-conf",
               "-params", "--normalize"]
EVALUATE_FLAGS = ["--n-episodes", "--stochastic", "--deterministic", "--deterministic-units", "--algo", "--env",
                  "--seed", "--device", "--json",
                  "--video-folder", "--video-episodes", "--plot", "--plot-keys", "--verbose", "--folder", "--exp-id",
                  "--load-best", "--load-checkpoint", "--load-last-checkpoint", "--num-threads"]


def test_help_of_both_tools_lists_every_option(tmp_path: Path) -> None:
    train_help = run_tool("train.py", ["--help"], tmp_path)
    evaluate_help = run_tool("evaluate.py", ["--help"], tmp_path)
    assert train_help.returncode == 0 and evaluate_help.returncode == 0
    for group in ("what to train", "budget and hardware", "logging and saving", "configuration"):
        assert group in train_help.stdout
    assert [flag for flag in TRAIN_FLAGS if flag not in train_help.stdout] == []
    assert [flag for flag in EVALUATE_FLAGS if flag not in evaluate_help.stdout] == []


def test_train_continue_and_evaluate_as_subprocesses(tmp_path: Path) -> None:
    first = run_tool("train.py", [*TINY, "-f", "logs", "-tb", "tb", "--estimator", "local", "--baseline", "mean",
                                  *TINY_PARAMS], tmp_path)
    assert first.returncode == 0, first.stderr
    run = RunLayout(tmp_path / "logs" / "localpg" / "CartPole-v1_1")
    assert str(run.root.relative_to(tmp_path)) in first.stdout and "tensorboard --logdir" in first.stdout
    config = yaml.safe_load(run.config_file.read_text())
    assert config["policy_kwargs"] == {"net_arch": [8], "bsn_init_gain": 8.0, "estimator": "local", "baseline": "mean"}
    assert config["n_timesteps"] == 256 and config["n_steps"] == 64
    assert run.final_model.is_file() and run.best_model.is_file()
    assert [steps for steps, _ in run.checkpoints()] == [128, 256]
    assert sorted(path.name for path in run.monitor_dir.iterdir()) == ["0.monitor.csv", "1.monitor.csv"]
    events = tmp_path / "tb" / "localpg" / "CartPole-v1_1"
    assert f"{Path('tb') / 'localpg' / 'CartPole-v1_1'}\n" in first.stdout  # the root: runs LocalPG_<k>
    assert [path.name for path in events.iterdir()] == ["LocalPG_1"]  # TensorBoard shows the run as LocalPG_1
    assert len(list((events / "LocalPG_1").glob("events.out.tfevents.*"))) == 1

    second = run_tool("train.py", ["-i", str(run.root), "-n", "512", "--no-progress-bar"], tmp_path)
    assert second.returncode == 0, second.stderr
    assert "Continuing at step 256" in second.stdout
    assert saved_timesteps(run.final_model) == 512
    assert not (run.root.parent / "CartPole-v1_2").exists()
    # the continuation is a segment of its own in TensorBoard (with its HParams) and in history.yml
    assert sorted(path.name for path in events.iterdir()) == ["LocalPG_1", "LocalPG_2"]
    assert "changed:     n_timesteps 256 -> 512" in second.stdout
    history = yaml.safe_load(run.history_file.read_text())
    assert [(entry["segment"], entry["from_step"], entry["changed"]) for entry in history] == [
        (1, 0, {}), (2, 256, {"n_timesteps": {"from": 256, "to": 512}})]
    assert history[1]["command"].startswith("train.py -i ")
    with np.load(run.eval_dir / "evaluations.npz") as evaluations:
        assert list(evaluations["timesteps"]) == [128, 256, 384, 512]  # earlier evaluations kept

    headless = {key: value for key, value in os.environ.items() if key not in ("XDG_RUNTIME_DIR", "DISPLAY")}
    evaluation = run_tool("evaluate.py", [str(run.root), "-n", "2", "--stochastic", "--json", "out/result.json",
                                          "--video-folder", "out/videos", "--plot", "out/curves.png"], tmp_path,
                          replace_env=headless)
    assert evaluation.returncode == 0, evaluation.stderr
    assert evaluation.stderr == ""  # recording on a headless machine prints no display or sound warnings
    assert "+/-" in evaluation.stdout
    result = json.loads((tmp_path / "out" / "result.json").read_text())["results"][0]
    assert result["episodes"] == 2 and not result["deterministic"] and len(result["returns"]) == 2
    assert result["mean_return"] == pytest.approx(sum(result["returns"]) / 2)
    assert [Path(video).suffix for video in result["videos"]] == [".gif"]
    assert (tmp_path / result["videos"][0]).stat().st_size > 0
    assert (tmp_path / "out" / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_channel_last_image_runs_continue_and_evaluate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """SB3 trains on channel-last frames transposed to channel-first; continuing and evaluating the run
    compare the model with the environment as SB3 wraps it, not with the raw frames."""
    monkeypatch.chdir(tmp_path)
    env = ["--env", "tests.image_envs:SmallImage-v0"]
    assert call_main("train.py", [*TINY, *env, "-f", "logs", *TINY_PARAMS]) == 0
    run = RunLayout(tmp_path / "logs" / "localpg" / "SmallImage-v0_1")
    assert call_main("train.py", ["-i", str(run.root), "-n", "512", "--no-progress-bar"]) == 0
    assert saved_timesteps(run.final_model) == 512
    assert call_main("evaluate.py", [str(run.root), "-n", "2", "--json", "result.json"]) == 0
    assert json.loads(Path("result.json").read_text())["results"][0]["episodes"] == 2


def test_deterministic_eval_setting_drives_the_eval_callback_and_evaluate_default(tmp_path: Path) -> None:
    """A run configured with deterministic_eval: false evaluates sampled units during training and in
    evaluate.py by default; --deterministic overrides it, with the policy's threshold units or the mean-field
    units of --deterministic-units; a bad value is a one-line error."""
    params = [*TINY_PARAMS, "deterministic_eval:false"]
    trained = run_tool("train.py", [*TINY, "-n", "128", "-f", "logs", *params], tmp_path)
    assert trained.returncode == 0, trained.stderr
    run = RunLayout(tmp_path / "logs" / "localpg" / "CartPole-v1_1")
    assert yaml.safe_load(run.config_file.read_text())["deterministic_eval"] is False
    modes = {}
    for flags in ([], ["--deterministic"], ["--deterministic", "--deterministic-units", "mean_field"]):
        evaluation = run_tool("evaluate.py", [str(run.root), "-n", "1", *flags, "--json", "out.json"], tmp_path)
        assert evaluation.returncode == 0, evaluation.stderr
        result = json.loads((tmp_path / "out.json").read_text())["results"][0]
        modes[tuple(flags)] = (result["deterministic"], result["deterministic_units"])
    assert modes == {(): (False, None), ("--deterministic",): (True, "threshold"),
                     ("--deterministic", "--deterministic-units", "mean_field"): (True, "mean_field")}
    assert "(deterministic, mean_field units)" in evaluation.stdout
    bad = run_tool("train.py", [*TINY, "-params", "deterministic_eval:maybe"], tmp_path)
    assert bad.returncode == 2 and "deterministic_eval must be true or false" in bad.stderr


TINY_CONF = "default:\n  n_steps: 64\n  batch_size: 64\n  n_epochs: 1\n  policy_kwargs: {net_arch: [8]}\n"


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (["--algo", "ppo", "--estimator", "st", "--progress-bar", "--threads", "1", *TINY_PARAMS],
         {"algo": "ppo", "policy": "bsn", "estimator": "st"}),
        (["--algo", "a2c", "--policy", "mlp", "--normalize", "--log-interval", "1", "--verbose",
          "-params", "n_steps:64"],
         {"algo": "a2c", "policy": "mlp", "normalize": True, "n_steps": 64}),
        (["--estimator", "learned_predictor", "--baseline", "learned", *TINY_PARAMS],
         {"algo": "localpg", "estimator": "learned_predictor", "baseline": "learned"}),
        (["--backend", "torch", "-conf", "tiny.yml"], {"algo": "localpg", "backend": "torch", "n_steps": 64}),
    ],
    ids=["ppo-bsn-st-progress-bar", "a2c-mlp-normalize-verbose", "localpg-predictor", "localpg-torch-conf"],
)
def test_algorithms_policies_and_estimators_train_and_evaluate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], flags: list[str],
    expected: dict,
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tiny.yml").write_text(TINY_CONF)
    assert call_main("train.py", [*TINY, "--device", "cpu", *flags]) == 0
    # LocalPG on the torch backend with a few envs (TINY's 2) is pointed at the torch-backend recipe.
    hint = "hint: 2 envs leave a batched torch env mostly idle"
    assert (hint in capsys.readouterr().out) == (expected.get("backend") == "torch")
    run = RunLayout(next((tmp_path / "logs" / expected["algo"]).iterdir()))
    config = yaml.safe_load(run.config_file.read_text())
    for key, value in expected.items():
        assert (config["policy_kwargs"] if key in ("estimator", "baseline") else config)[key] == value
    assert config["normalize"] == expected.get("normalize", False)
    if config["normalize"]:
        assert (run.root / "final_model_vecnormalize.pkl").is_file()
    assert call_main("evaluate.py", [str(run.final_model), "-n", "1", "--json", "r.json"]) == 0
    assert json.loads((tmp_path / "r.json").read_text())["results"][0]["algo"] == expected["algo"]
    keys = ["rollout/ep_rew_mean", "train/value_loss"]
    assert call_main("evaluate.py", [str(run.root), "-n", "0", "--plot", "tb.png", "--plot-keys", *keys]) == 0
    assert (tmp_path / "tb.png").read_bytes()[:4] == b"\x89PNG"


def test_env_wrapper_setting_wraps_training_and_evaluation_envs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Blackjack-v1's Tuple observations train once flattened by an RL-Zoo-style env_wrapper, which the run
    records, evaluate.py reapplies, and a continued run may not change."""
    monkeypatch.chdir(tmp_path)
    wrapper = "env_wrapper:[{gymnasium.wrappers.FlattenObservation: {}}]"
    assert call_main("train.py", [*TINY, "--env", "Blackjack-v1", *TINY_PARAMS, wrapper]) == 0
    run = RunLayout(tmp_path / "logs" / "localpg" / "Blackjack-v1_1")
    config = yaml.safe_load(run.config_file.read_text())
    assert config["env_wrapper"] == [{"gymnasium.wrappers.FlattenObservation": {}}]
    assert call_main("evaluate.py", [str(run.root), "-n", "2"]) == 0
    assert call_main("train.py", ["-i", str(run.root), "-n", "512", "-params", "env_wrapper:null"]) == 2


def test_continuing_a_bare_model_file_starts_a_new_run_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert call_main("train.py", [*TINY, "-f", "first", *TINY_PARAMS]) == 0
    bare = tmp_path / "bare.zip"
    bare.write_bytes((tmp_path / "first" / "localpg" / "CartPole-v1_1" / "final_model.zip").read_bytes())
    assert call_main("train.py", ["-i", str(bare), "-n", "384", "-f", "second", "--no-progress-bar",
                                  *TINY_PARAMS]) == 0
    run = RunLayout(tmp_path / "second" / "localpg" / "CartPole-v1_1")
    assert saved_timesteps(run.final_model) >= 384 and run.config_file.is_file()


def test_configuration_priority_file_then_flags_then_params(tmp_path: Path) -> None:
    conf = tmp_path / "my.yml"
    conf.write_text("default:\n  n_steps: 16\nCartPole-v1:\n  n_steps: 32\n  n_timesteps: 1000\n  gamma: 0.9\n"
                    "  policy_kwargs: {net_arch: [16], estimator: local}\n")
    config = build_config({"n_timesteps": 2000, "estimator": "learned_predictor"},
                          parse_overrides(["gamma:0.95", "policy_kwargs.net_arch:[4, 4]"]), conf)
    assert config["n_steps"] == 32 and config["n_timesteps"] == 2000 and config["gamma"] == 0.95
    assert config["policy_kwargs"] == {"net_arch": [4, 4], "estimator": "learned_predictor"}
    other_env = build_config({"env": "Acrobot-v1"}, {}, conf)
    assert other_env["n_steps"] == 16 and other_env["env"] == "Acrobot-v1"


@pytest.mark.parametrize(("text", "value"), [("1e-3", 1e-3), ("64", 64), ("[32, 32]", [32, 32]),
                                             ("true", True), ("null", None), ("{a: 1}", {"a": 1}), ("tanh", "tanh")])
def test_params_values_parse_as_numbers_then_yaml(text: str, value: object) -> None:
    assert parse_value(text) == value


def test_bundled_hyperparameter_files_are_valid() -> None:
    for algo in ("localpg", "ppo", "a2c"):
        for env in ("CartPole-v1", "Acrobot-v1"):
            config = build_config({"algo": algo, "env": env}, {})
            assert config["algo"] == algo and config["n_timesteps"] > 0


def test_torch_backend_hyperparameter_file_is_valid_and_matches_the_solve_time_benchmark() -> None:
    from benchmarks.solve_time import SolveConfig

    path = ROOT / "hyperparams" / "localpg_torch.yml"
    solve = SolveConfig()
    for env in ("CartPole-v1", "Acrobot-v1"):
        config = build_config({"algo": "localpg", "env": env, "backend": "torch"}, {}, path)
        assert config["n_envs"] == solve.num_envs and config["n_steps"] == solve.n_steps
        assert config["batch_size"] == solve.batch_size and config["n_epochs"] == solve.n_epochs
        assert config["learning_rate"] == solve.learning_rate
        assert config["policy_kwargs"]["net_arch"] == list(solve.net_arch)


def test_activation_names_become_torch_modules() -> None:
    config = validate_config({"algo": "ppo", "policy": "mlp", "policy_kwargs": {"activation_fn": "relu"}})
    assert config["policy_kwargs"]["activation_fn"] == "relu"  # config.yml stays plain YAML
    assert algorithm_kwargs(config)["policy_kwargs"]["activation_fn"] is nn.ReLU


def test_env_wrapper_forms_are_normalised_and_bad_ones_named() -> None:
    from bsn_zoo.cli_errors import UserInputError
    from bsn_zoo.config import env_wrappers, wrapper_class

    flatten = "gymnasium.wrappers.FlattenObservation"
    assert env_wrappers(None) is None and env_wrappers([]) is None
    assert env_wrappers(flatten) == [flatten]
    time_limit = {"gymnasium.wrappers.TimeLimit": {"max_episode_steps": 7}}
    assert env_wrappers([flatten, time_limit]) == [flatten, time_limit]
    for bad in ([3], [{"a.B": 1}], "no_dots"):
        with pytest.raises(UserInputError, match="env_wrapper"):
            env_wrappers(bad)
    import gymnasium as gym

    wrapped = wrapper_class(env_wrappers([flatten, time_limit]))(gym.make("Blackjack-v1"))
    assert isinstance(wrapped, gym.wrappers.TimeLimit) and wrapped._max_episode_steps == 7
    assert isinstance(wrapped.env, gym.wrappers.FlattenObservation)


def test_rao_blackwell_is_a_flag_and_the_tuned_entries_use_it() -> None:
    from bsn_zoo.cli_errors import UserInputError

    assert validate_config({"rao_blackwell": True})["rao_blackwell"] is True
    with pytest.raises(UserInputError, match="rao_blackwell"):
        validate_config({"rao_blackwell": "maybe"})
    for env_id in ("CartPole-v1", "Acrobot-v1", "Pendulum-v1", "MountainCar-v0", "LunarLander-v3"):
        assert build_config({"env": env_id}, {}, None)["rao_blackwell"] is True

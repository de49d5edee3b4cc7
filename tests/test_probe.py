"""benchmarks/probe.py: the budget rule's min_steps, checkpoint evaluations and the tuned starting point."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
import yaml

from agents.localpg import LocalPG
from benchmarks import probe
from benchmarks.common import BENCHMARK_RUN_SETTINGS
from benchmarks.compare_sb3 import TUNED_PATH, algo_config, build
from benchmarks.probe import build_model, main, probe_config
from bsn_zoo.config import build_config
from envs import make_vec_env
from policies import BinaryStochasticPolicy

TINY = {"n_envs": 2, "n_steps": 32, "batch_size": 64, "n_epochs": 1, "policy_kwargs": {"net_arch": [8]}}


def test_a_solved_run_trains_until_min_steps_and_is_evaluated_at_each_checkpoint(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Threshold 0: any 20 CartPole episodes count as solved (well before 1024 steps), so min_steps stops it.
    main(["CartPole-v1", json.dumps(TINY), "--seeds", "0", "--budget", "4096", "--threshold", "0",
          "--min-steps", "1024", "--eval-episodes", "2", "--checkpoints", "512", "800", "--stochastic"])
    out = capsys.readouterr().out
    assert re.search(r"seed 0: solved_at \d+ steps 1024 .* sps ", out), out
    assert re.search(r"@512 -?\d+\.\d/-?\d+\.\d @800 ", out), out
    assert "eval at 512, 1 of 1 seeds" in out and "eval at 800, 1 of 1 seeds" in out
    # Each checkpoint is also printed when it is evaluated, before the run ends.
    assert len(re.findall(r"^  at \d+ steps: eval -?\d+\.\d \(stochastic -?\d+\.\d\)$", out, re.M)) == 2, out


def test_checkpoints_after_the_stop_are_reported_as_not_reached(capsys: pytest.CaptureFixture[str]) -> None:
    main(["CartPole-v1", json.dumps(TINY), "--seeds", "0", "--budget", "4096", "--threshold", "0",
          "--min-steps", "512", "--eval-episodes", "1", "--checkpoints", "2048"])
    assert "eval at 2048, 0 of 1 seeds: ; no run reached it" in capsys.readouterr().out


def test_a_run_below_the_threshold_gives_up_where_told_and_a_solved_one_does_not(
    capsys: pytest.CaptureFixture[str],
) -> None:
    common = ["--seeds", "0", "--budget", "4096", "--eval-episodes", "1", "--give-up-at", "1024"]
    main(["CartPole-v1", json.dumps(TINY), *common, "--threshold", "475"])
    out = capsys.readouterr().out
    assert re.search(r"seed 0: solved_at None steps 1024 ", out), out
    assert "median steps to threshold (budget if unsolved): 4096" in out
    main(["CartPole-v1", json.dumps(TINY), *common, "--threshold", "0", "--min-steps", "2048"])
    assert re.search(r"seed 0: solved_at \d+ steps 2048 ", capsys.readouterr().out)


def test_tuned_entry_is_the_base_and_json_overrides_it_with_schedules() -> None:
    config = probe_config("Acrobot-v1", {"learning_rate": "lin_1e-3", "n_epochs": 4}, tuned=True)
    assert config["n_epochs"] == 4 and config["n_envs"] == 16 and "n_timesteps" not in config
    assert config["learning_rate"](0.5) == pytest.approx(5e-4)
    assert probe_config("Acrobot-v1", {"n_steps": 8}, tuned=False) == {"n_steps": 8}
    # policy_kwargs merge key by key: overriding the layers keeps the entry's initial gain.
    deep = probe_config("CartPole-v1", {"policy_kwargs": {"net_arch": [16, 16]}}, tuned=True)
    entry = probe_config("CartPole-v1", {}, tuned=True)
    assert deep["policy_kwargs"] == {**entry["policy_kwargs"], "net_arch": [16, 16]}


@pytest.mark.parametrize("algo", ["ppo", "a2c"])
def test_stock_algorithms_with_the_bsn_policy_start_from_rl_zoos_settings(algo, capsys) -> None:
    config = probe_config("CartPole-v1", {"policy_kwargs": {"bsn_init_gain": 32}}, tuned=True, algo=algo)
    assert config["n_envs"] == 8 and config["policy_kwargs"] == {"bsn_init_gain": 32}
    main(["CartPole-v1", json.dumps({"n_envs": 2, "n_steps": 8, "policy_kwargs": {"net_arch": [8]}}), "--algo", algo,
          "--seeds", "0", "--budget", "64", "--threshold", "475", "--eval-episodes", "1"])
    assert re.search(r"seed 0: solved_at None steps 64 ", capsys.readouterr().out)


def test_mlp_policy_probes_the_benchmarks_back_propagated_reference(capsys: pytest.CaptureFixture[str]) -> None:
    """``--policy mlp`` starts from the settings compare_sb3 and delayed give SB3's PPO (no BSN policy_kwargs), with
    ``--reward-delay`` updated by ppo_delayed.yml, and trains SB3's MlpPolicy."""
    reference = probe_config("Pendulum-v1", {}, tuned=True, algo="ppo", policy="mlp")
    zoo = algo_config("ppo", "Pendulum-v1")
    assert {key: repr(value) for key, value in reference.items()} == {key: repr(value) for key, value in zoo.items()}
    assert reference["use_sde"] and "use_sde" not in probe_config("Pendulum-v1", {}, tuned=True, algo="ppo")
    delayed = probe_config("MountainCar-v0", {}, tuned=True, algo="ppo", delayed=True, policy="mlp")
    shipped = build_config({"algo": "ppo", "env": "MountainCar-v0", "reward_delay": 50}, {})
    assert (delayed["gamma"], delayed["n_steps"]) == (shipped["gamma"], shipped["n_steps"])
    main(["CartPole-v1", json.dumps({"n_envs": 2, "n_steps": 8, "batch_size": 16}), "--algo", "ppo", "--policy",
          "mlp", "--seeds", "0", "--budget", "64", "--threshold", "475", "--eval-episodes", "1"])
    assert re.search(r"seed 0: solved_at None steps 64 ", capsys.readouterr().out)
    with pytest.raises(SystemExit):
        main(["CartPole-v1", "{}", "--policy", "mlp", "--threshold", "0"])
    env = make_vec_env("CartPole-v1", 1, 0)
    assert not isinstance(build_model("ppo", env, 0, {"n_steps": 8}, "mlp").policy, BinaryStochasticPolicy)
    assert isinstance(build_model("ppo", env, 0, {"n_steps": 8}).policy, BinaryStochasticPolicy)


with open(TUNED_PATH) as _handle:
    TUNED_IDS = [env_id for env_id in yaml.safe_load(_handle) if env_id != "default"]


@pytest.mark.parametrize("env_id", TUNED_IDS)
def test_every_tuned_entry_gives_the_benchmarks_localpg_arguments_only(env_id: str) -> None:
    # train.py's run settings (deterministic_eval, n_timesteps, eval_freq, ...) are not LocalPG arguments.
    for config in (probe_config(env_id, {}, tuned=True), algo_config("localpg", env_id)):
        arguments = set(config) - set(BENCHMARK_RUN_SETTINGS)
        assert arguments <= set(LocalPG.__init__.__code__.co_varnames), arguments
    model = build("localpg", env_id, seed=0, overrides={"n_envs": 1})
    assert isinstance(model, LocalPG)
    model.get_env().close()


@pytest.mark.parametrize(
    "flags", [["--checkpoints", "5000"], ["--min-steps", "5000"], ["--eval-episodes", "0"], ["--give-up-at", "5000"]]
)
def test_bad_budgets_are_rejected(flags: list[str]) -> None:
    with pytest.raises(SystemExit):
        main(["CartPole-v1", "{}", "--budget", "4096", "--threshold", "0", *flags])


def test_torch_backend_tracks_the_training_mean_from_rollouts(capsys: pytest.CaptureFixture[str]) -> None:
    """The tensor path has no per-step infos: the threshold is read from ep_info_buffer once per rollout."""
    config = {**TINY, "n_envs": 16}
    main(["CartPole-v1", json.dumps(config), "--backend", "torch", "--seeds", "0", "--budget", "4096",
          "--threshold", "0", "--min-steps", "1024", "--eval-episodes", "1"])
    out = capsys.readouterr().out
    # Solved at the end of a rollout (a multiple of 16 envs x 32 steps), stopped at the next step after 1024.
    solved_at, steps = map(int, re.search(r"seed 0: solved_at (\d+) steps (\d+) ", out).groups())
    assert solved_at % (16 * 32) == 0 and 1024 <= steps <= 1024 + 16 * 32, out


def test_torch_backend_refuses_normalize() -> None:
    with pytest.raises(SystemExit):
        main(["CartPole-v1", json.dumps({**TINY, "normalize": True}), "--backend", "torch", "--threshold", "0"])


def test_delayed_probe_starts_from_the_delayed_reward_entry_and_observes_the_time() -> None:
    """``--reward-delay`` with ``--tuned`` probes what ``train.py --reward-delay`` trains: the delayed-reward entry
    over the shipped one, and the remaining time observed by the policy (one more observation input)."""
    dense = probe_config("MountainCar-v0", {}, tuned=True)
    delayed = probe_config("MountainCar-v0", {"n_epochs": 2}, tuned=True, delayed=True)
    shipped = build_config({"algo": "localpg", "env": "MountainCar-v0", "reward_delay": 50}, {})
    assert dense["gamma"] != delayed["gamma"] == shipped["gamma"]
    assert delayed["gae_lambda"] == shipped["gae_lambda"] and delayed["ent_coef"] == shipped["ent_coef"]
    assert delayed["learning_rate"](1.0) == pytest.approx(1e-3) and delayed["n_epochs"] == 2
    assert probe_config("MountainCar-v0", {}, tuned=False, delayed=True) == {}


def test_delayed_probe_trains_and_evaluates_with_the_time_feature(capsys: pytest.CaptureFixture[str]) -> None:
    # The training env observes the time (5 inputs); an evaluation env without it would hand the policy 4 and fail.
    main(["CartPole-v1", json.dumps(TINY), "--reward-delay", "episode", "--seeds", "0", "--budget", "256",
          "--threshold", "475", "--eval-episodes", "1", "--checkpoints", "128"])
    assert re.search(r"seed 0: solved_at None steps 256 ", capsys.readouterr().out)


def test_time_feature_flag_adds_the_time_to_training_and_evaluation(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    seen: list[tuple[int, ...]] = []

    def spy(algo: str, env: Any, seed: int, config: dict[str, Any], policy: str) -> Any:
        seen.append(env.observation_space.shape)
        return build_model(algo, env, seed, config, policy)

    monkeypatch.setattr(probe, "build_model", spy)
    main(["CartPole-v1", json.dumps(TINY), "--time-feature", "--seeds", "0", "--budget", "256", "--threshold", "475",
          "--eval-episodes", "1", "--checkpoints", "128"])
    assert seen == [(5,)]  # CartPole's 4 inputs and the time; the evaluations (same policy) would fail on 4
    assert re.search(r"seed 0: solved_at None steps 256 .*@128 ", capsys.readouterr().out)

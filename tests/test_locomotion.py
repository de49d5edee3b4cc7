"""Continuous control: the MuJoCo locomotion and Box2D tasks with LocalPG, the BSN policy under stock PPO, and
``VecNormalize`` statistics that travel with the model (train, continue, evaluate, ``LocalPG.load``)."""

from __future__ import annotations

import ctypes.util
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from cli_support import call_main, run_tool
from stable_baselines3 import PPO
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.vec_env import VecNormalize

from agents import LocalPG
from benchmarks.common import load_tuned
from benchmarks.compare_sb3 import CONTINUOUS_THRESHOLDS, ZOO_PATHS, build
from bsn_zoo.checkpoint import vecnormalize_path
from bsn_zoo.config import HYPERPARAMS_DIR, build_config, validate_config
from bsn_zoo.evaluate import main as evaluate_main
from bsn_zoo.run import run_training
from envs import make_vec_env
from policies import BinaryStochasticPolicy

#: The continuous-control tasks of the comparison with RL Zoo's PPO.
TASKS = list(CONTINUOUS_THRESHOLDS)


@pytest.mark.parametrize("env_id", TASKS)
def test_every_task_has_its_shipped_entries_and_trains_with_them(env_id: str) -> None:
    """LocalPG's tuned entry and RL Zoo's PPO entry exist for the task and train one small rollout each, as does
    the BSN policy under stock PPO with RL Zoo's settings."""
    assert load_tuned(HYPERPARAMS_DIR / "localpg.yml", env_id) != load_tuned(HYPERPARAMS_DIR / "localpg.yml", "default")
    load_tuned(ZOO_PATHS["ppo"], env_id, "ppo")
    small = {"n_envs": 1, "n_steps": 64, "batch_size": 32, "n_epochs": 1}
    for algo in ("localpg", "ppo", "ppo_bsn"):
        model = build(algo, env_id, seed=0, overrides=small)
        model.learn(64)
        assert model.num_timesteps == 64
        model.get_env().close()


def tiny_hopper(**changes) -> dict:
    """A validated configuration of a tiny normalised LocalPG run on Hopper-v5 (state-dependent std)."""
    base = {"algo": "localpg", "env": "Hopper-v5", "n_timesteps": 512, "n_envs": 2, "seed": 0, "normalize": True,
            "eval_freq": 0, "save_freq": 0, "n_steps": 64, "batch_size": 64, "n_epochs": 1, "gamma": 0.98,
            "policy_kwargs": {"net_arch": [16], "state_dependent_std": True}}
    return validate_config({**base, **changes})


def test_vecnormalize_statistics_travel_with_the_model_through_continue_evaluate_and_load(tmp_path: Path) -> None:
    """Train with ``normalize``: the statistics are saved beside the model, with the run's discount; a continued
    run keeps updating them; ``evaluate.py`` and a user's ``LocalPG.load`` with ``VecNormalize.load`` play the same
    deterministic episodes."""
    run = tmp_path / "run"
    first = run_training(tiny_hopper(), run)
    stats_path = vecnormalize_path(Path(first["model_path"]))
    first_stats = VecNormalize.load(str(stats_path), make_vec_env("Hopper-v5", 1, 0))
    assert first_stats.gamma == 0.98 and first_stats.obs_rms.count > 512

    continued = run_training(tiny_hopper(n_timesteps=1024), run, resume_from=Path(first["model_path"]))
    model_path = Path(continued["model_path"])
    stats = VecNormalize.load(str(vecnormalize_path(model_path)), make_vec_env("Hopper-v5", 1, 0))
    assert stats.obs_rms.count > first_stats.obs_rms.count + 400  # continued, not restarted
    assert not np.allclose(stats.obs_rms.mean, first_stats.obs_rms.mean)

    report = tmp_path / "eval.json"
    assert evaluate_main([str(model_path), "--env", "Hopper-v5", "-n", "2", "--seed", "7", "--json", str(report)]) == 0
    from_cli = json.loads(report.read_text())["results"][0]["mean_return"]

    venv = VecNormalize.load(str(vecnormalize_path(model_path)), make_vec_env("Hopper-v5", 1, 7))
    venv.training, venv.norm_reward = False, False
    model = LocalPG.load(model_path, env=venv)
    from_load, _ = evaluate_policy(model, venv, n_eval_episodes=2, deterministic=True)
    assert from_load == pytest.approx(from_cli, rel=1e-5)

    raw = make_vec_env("Hopper-v5", 1, 7)  # the same policy on unnormalised observations acts otherwise
    without, _ = evaluate_policy(LocalPG.load(model_path, env=raw), raw, n_eval_episodes=2, deterministic=True)
    assert without != pytest.approx(from_cli, rel=1e-5)


@pytest.mark.skipif(ctypes.util.find_library("EGL") is None, reason="no EGL library for MuJoCo's headless rendering")
def test_evaluate_records_a_mujoco_video_on_a_machine_without_a_display(tmp_path: Path) -> None:
    """Without ``DISPLAY``, ``evaluate.py --video-folder`` renders MuJoCo through EGL (MuJoCo's default, GLFW,
    needs a display)."""
    model = LocalPG("BsnPolicy", "InvertedPendulum-v5", n_steps=8, batch_size=8, policy_kwargs={"net_arch": [4]})
    model.save(tmp_path / "model.zip")
    headless = {key: value for key, value in os.environ.items()
                if key not in ("DISPLAY", "WAYLAND_DISPLAY", "MUJOCO_GL", "PYOPENGL_PLATFORM")}
    result = run_tool("evaluate.py", ["model.zip", "--env", "InvertedPendulum-v5", "-n", "1", "--video-folder",
                                      "videos", "--json", "result.json"], tmp_path, replace_env=headless)
    assert result.returncode == 0, result.stderr
    videos = json.loads((tmp_path / "result.json").read_text())["results"][0]["videos"]
    assert len(videos) == 1 and (tmp_path / videos[0]).read_bytes()[:6] == b"GIF89a"


def test_train_cli_config_for_a_locomotion_task_takes_the_shipped_entry() -> None:
    """``train.py --env Hopper-v5`` trains the tuned entry: normalised, the Gaussian head's settings as shipped."""
    config = build_config({"algo": "localpg", "env": "Hopper-v5"}, {})
    entry = load_tuned(HYPERPARAMS_DIR / "localpg.yml", "Hopper-v5")
    assert config["normalize"] is True and config["n_timesteps"] == entry["n_timesteps"]
    assert config["policy_kwargs"] == entry["policy_kwargs"]


@pytest.mark.parametrize("state_dependent_std", [False, True])
def test_stock_ppo_trains_the_bsn_policy_on_box_actions_and_clips_them_to_the_bounds(state_dependent_std) -> None:
    """SB3 clips the Gaussian's samples to the Box bounds before the environment sees them, for either log-std."""
    model = PPO(BinaryStochasticPolicy, "Swimmer-v5", n_steps=64, batch_size=32, n_epochs=1, seed=0,
                policy_kwargs={"net_arch": [16], "log_std_init": 1.5, "state_dependent_std": state_dependent_std})
    sent = []
    env = model.get_env()
    original_step_async = env.step_async

    def record(actions: np.ndarray) -> None:
        sent.append(actions.copy())
        original_step_async(actions)

    env.step_async = record
    model.learn(64)
    actions = np.concatenate(sent)
    assert actions.min() >= -1.0 and actions.max() <= 1.0
    assert np.isclose(np.abs(actions), 1.0).mean() > 0.2  # std e^1.5: many samples were outside and clipped
    with torch.no_grad():
        assert model.policy.get_distribution(torch.zeros(1, 8)).distribution.stddev.min() > 1.0


@pytest.mark.slow
def test_localpg_learns_halfcheetah_with_the_shipped_entry(tmp_path: Path) -> None:
    """``train.py --env HalfCheetah-v5 -n 100000`` (the tuned entry, its schedules decaying over the 100k steps, about
    a minute on one core) runs forward: ``evaluate.py`` on the final model, with the statistics saved beside it,
    scores 1500 or more over 5 deterministic episodes (seed 0 scored 2747; a random policy scores about -280,
    standing still 0, and with the hidden units' local gradient sign-flipped -1265)."""
    args = ["--env", "HalfCheetah-v5", "-n", "100000", "--seed", "0", "--eval-freq", "0", "--save-freq", "0",
            "--no-progress-bar", "-f", str(tmp_path / "logs")]
    assert call_main("train.py", args) == 0
    run = tmp_path / "logs" / "localpg" / "HalfCheetah-v5_1"
    assert vecnormalize_path(run / "final_model.zip").is_file()
    report = tmp_path / "r.json"
    assert call_main("evaluate.py", [str(run), "-n", "5", "--seed", "1", "--json", str(report)]) == 0
    assert json.loads(report.read_text())["results"][0]["mean_return"] >= 1500.0


def test_mujoco_tasks_leave_no_log_file_in_the_working_directory(tmp_path: Path, monkeypatch) -> None:
    """The pinned MuJoCo builds Gymnasium's models without warnings, which MuJoCo would append to MUJOCO_LOG.TXT."""
    monkeypatch.chdir(tmp_path)
    for env_id in TASKS:
        make_vec_env(env_id, 1, seed=0).close()
    assert list(tmp_path.iterdir()) == []


def test_readme_continuous_control_table_is_the_comparison_s_medians() -> None:
    """The README's continuous-control table quotes benchmarks/results/compare_sb3_locomotion.md for every task:
    the seeds of each algorithm, their median final evaluations and their median steps to PPO's final training
    mean ("not reached (median)" where the median run never got there)."""
    root = Path(__file__).resolve().parents[1]
    report: dict[str, dict[str, list[str]]] = {}
    for line in (root / "benchmarks" / "results" / "compare_sb3_locomotion.md").read_text().splitlines():
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        if len(cells) == 11 and cells[0] in TASKS and "/" in cells[2]:  # summary rows: "seeds solved"
            report.setdefault(cells[0], {})[cells[1]] = cells
    assert set(report) == set(TASKS)
    readme = (root / "README.md").read_text()
    rows = readme[readme.index("| task | seeds, LocalPG / PPO |") :].split("\n\n")[0].splitlines()[2:]
    assert sorted(row.split("|")[1].strip() for row in rows) == sorted(TASKS)
    for row in rows:
        task, seeds, localpg_eval, ppo_eval, steps = [cell.strip().strip("*") for cell in row.strip("|").split("|")]
        localpg, ppo = report[task]["localpg"], report[task]["ppo"]
        assert seeds == f"{localpg[2].split('/')[1]} / {ppo[2].split('/')[1]}", row
        assert (localpg_eval, ppo_eval) == (localpg[5], ppo[5]), row
        localpg_steps = "not reached (median)" if "budget" in localpg[7] else localpg[7]
        ratio = f" ({localpg[8]}x)" if localpg_steps != "not reached (median)" else ""
        assert steps == f"{localpg_steps} / {ppo[7]}{ratio}", row

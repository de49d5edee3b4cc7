"""Crashes, signals, divergence and resume: saved files stay loadable and runs continue where they stopped."""

from __future__ import annotations

import multiprocessing
import os
import pickle
import re
import signal
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from cli_support import TINY_PARAMS, call_main, read_events, run_tool, scalar_steps, start_tool
from stable_baselines3.common.vec_env import VecNormalize

from agents import LocalPG
from bsn_zoo.checkpoint import atomic_write, save_model, vecnormalize_path
from bsn_zoo.cli_errors import DivergenceError
from bsn_zoo.config import validate_config
from bsn_zoo.run import RunLayout, run_training, saved_timesteps


def tiny_config(**changes: Any) -> dict[str, Any]:
    """A validated configuration of a tiny LocalPG run on CartPole (one 8-unit BSN layer)."""
    base = {"n_timesteps": 256, "n_envs": 2, "seed": 0, "eval_freq": 0, "save_freq": 0, "n_steps": 32,
            "batch_size": 64, "n_epochs": 1, "policy_kwargs": {"net_arch": [8]}}
    return validate_config({**base, **changes})


def test_atomic_write_keeps_the_previous_file_when_writing_fails(tmp_path: Path) -> None:
    target = tmp_path / "model.zip"
    atomic_write(target, lambda handle: handle.write(b"good"))

    def crash(handle: Any) -> None:
        handle.write(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(target, crash)
    assert target.read_bytes() == b"good"
    assert [path.name for path in tmp_path.iterdir()] == ["model.zip"]


def test_non_finite_weights_are_never_saved_over_a_good_checkpoint(tmp_path: Path) -> None:
    result = run_training(tiny_config(), tmp_path / "run")
    path = Path(result["model_path"])
    good = path.read_bytes()
    model = LocalPG.load(path, device="cpu")
    with torch.no_grad():
        model.policy.bsn.layers[0].weight[0, 0] = float("nan")
    with pytest.raises(DivergenceError, match=r"non-finite values in mlp_extractor\.bsn\.layers\.0\.weight"):
        save_model(model, path)
    assert path.read_bytes() == good


def test_divergence_during_training_stops_with_a_message_and_saves_nothing(tmp_path: Path) -> None:
    def poison(model: Any) -> None:
        with torch.no_grad():
            model.policy.bsn.layers[0].weight.fill_(float("nan"))

    with pytest.raises(DivergenceError, match="training diverged at step"):
        run_training(tiny_config(save_freq=64), tmp_path / "run", on_start=poison)
    layout = RunLayout(tmp_path / "run")
    assert layout.checkpoints() == [] and not layout.final_model.exists()


def test_same_seed_gives_the_same_model(tmp_path: Path) -> None:
    weights = []
    for name in ("a", "b"):
        result = run_training(tiny_config(), tmp_path / name)
        weights.append(LocalPG.load(result["model_path"], device="cpu").policy.state_dict())
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][key], weights[1][key]) for key in weights[0])


def load_statistics(model_path: Path) -> VecNormalize:
    """The ``VecNormalize`` statistics saved beside a model (without an environment attached)."""
    with open(vecnormalize_path(model_path), "rb") as handle:
        return pickle.load(handle)


def test_sigterm_saves_a_checkpoint_that_resumes_with_vecnormalize_stats(tmp_path: Path) -> None:
    config = tiny_config(n_timesteps=100_000, normalize=True)

    def terminate_soon(model: Any) -> None:
        threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGTERM)).start()

    result = run_training(config, tmp_path / "run", on_start=terminate_soon)
    assert result["interrupted"] == "SIGTERM" and 0 < result["num_timesteps"] < 100_000
    checkpoint = Path(result["model_path"])
    assert checkpoint == RunLayout(tmp_path / "run").checkpoint(result["num_timesteps"])
    stats = load_statistics(checkpoint)
    assert stats.obs_rms.count > result["num_timesteps"] / 2

    resumed = run_training({**config, "n_timesteps": result["num_timesteps"] + 128}, tmp_path / "run",
                           resume_from=checkpoint)
    assert resumed["interrupted"] is None and resumed["num_timesteps"] >= result["num_timesteps"] + 128
    final_stats = load_statistics(resumed["model_path"])
    assert final_stats.obs_rms.count > stats.obs_rms.count  # the statistics continued, not restarted


def _train_until_killed(run_dir: str, resume: bool) -> None:
    """Child process: train with a checkpoint after every rollout, forever (until SIGKILL)."""
    torch.set_num_threads(1)
    config = tiny_config(n_timesteps=10**9, n_envs=1, n_steps=16, batch_size=16, save_freq=16)
    layout = RunLayout(Path(run_dir))
    run_training(config, layout.root, resume_from=layout.latest_model() if resume else None)


@pytest.mark.skipif("fork" not in multiprocessing.get_all_start_methods(), reason="needs fork")
def test_sigkill_during_checkpointing_always_leaves_a_loadable_latest_checkpoint(tmp_path: Path) -> None:
    """20 times: kill a process that saves a checkpoint every rollout at a random moment; the latest loads."""
    context = multiprocessing.get_context("fork")
    layout = RunLayout(tmp_path / "run")
    rng = np.random.default_rng(0)
    steps_seen = []
    for attempt in range(20):
        before = len(layout.checkpoints())
        child = context.Process(target=_train_until_killed, args=(str(layout.root), attempt > 0))
        child.start()
        deadline = time.monotonic() + 60
        while len(layout.checkpoints()) <= before and child.is_alive() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert child.is_alive(), f"the training process died by itself (exit code {child.exitcode})"
        time.sleep(float(rng.uniform(0.0, 0.3)))
        os.kill(child.pid, signal.SIGKILL)
        child.join()
        latest = layout.latest_model()
        assert latest is not None
        model = LocalPG.load(latest, device="cpu")
        assert model.num_timesteps == saved_timesteps(latest)
        assert all(torch.isfinite(tensor).all() for tensor in model.policy.state_dict().values())
        steps_seen.append(model.num_timesteps)
    assert steps_seen == sorted(steps_seen) and steps_seen[-1] > steps_seen[0]  # each resume went on


def _logged_fps(event_dir: Path) -> list[tuple[int, float]]:
    """The ``time/fps`` points written so far to a TensorBoard folder (empty before the first)."""
    if not event_dir.is_dir():
        return []
    return scalar_steps(read_events(event_dir)).get("time/fps", [])


def test_sigint_saves_then_train_dash_i_continues_steps_in_a_new_tensorboard_segment(tmp_path: Path) -> None:
    args = ["-n", "1000000", "--n-envs", "2", "--seed", "0", "--eval-freq", "0", "--save-freq", "0",
            "--no-progress-bar", *TINY_PARAMS]
    process = start_tool("train.py", args, tmp_path)
    layout = RunLayout(tmp_path / "logs" / "localpg" / "CartPole-v1_1")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(_logged_fps(layout.root / "tb" / "LocalPG_1")) < 2:  # two rollouts
        time.sleep(0.2)
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 128 + signal.SIGINT, stderr
    match = re.search(r"Interrupted by SIGINT at step (\d+); checkpoint saved to (\S+)", stdout)
    assert match, stdout
    stopped_at = int(match.group(1))
    assert [steps for steps, _ in layout.checkpoints()] == [stopped_at] and "Traceback" not in stderr
    before = _logged_fps(layout.root / "tb" / "LocalPG_1")

    resumed = run_tool("train.py", ["-i", str(layout.root), "-n", str(stopped_at + 256), "--no-progress-bar"],
                       tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert f"Continuing at step {stopped_at}" in resumed.stdout
    assert saved_timesteps(layout.final_model) >= stopped_at + 256
    assert sorted(path.name for path in (layout.root / "tb").iterdir()) == ["LocalPG_1", "LocalPG_2"]
    after = _logged_fps(layout.root / "tb" / "LocalPG_2")
    assert min(step for step, _ in after) > max(step for step, _ in before)  # steps go on, not restart
    assert min(step for step, _ in after) > stopped_at


@pytest.mark.skipif(torch.cuda.is_available(), reason="simulates a machine without CUDA")
def test_a_run_configured_for_cuda_evaluates_and_continues_without_cuda(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    result = run_training(tiny_config(), tmp_path / "run")
    layout = RunLayout(tmp_path / "run")
    layout.config_file.write_text(layout.config_file.read_text().replace("device: auto", "device: cuda"))
    monkeypatch.chdir(tmp_path)
    assert call_main("evaluate.py", [str(layout.root), "-n", "1"]) == 0
    assert call_main("train.py", ["-i", str(layout.root), "-n", "384", "--no-progress-bar"]) == 2
    assert "use --device cpu or auto" in capsys.readouterr().err
    assert call_main("train.py", ["-i", str(layout.root), "-n", "384", "--device", "cpu", "--no-progress-bar"]) == 0
    assert saved_timesteps(layout.final_model) >= 384 > result["num_timesteps"]


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_model_saved_on_cuda_evaluates_without_cuda(tmp_path: Path) -> None:
    result = run_training(tiny_config(device="cuda"), tmp_path / "run")
    assert LocalPG.load(result["model_path"]).device.type == "cuda"
    without_cuda = run_tool("evaluate.py", [str(result["run_dir"]), "-n", "1", "--json", "r.json"], tmp_path,
                            extra_env={"CUDA_VISIBLE_DEVICES": ""})
    assert without_cuda.returncode == 0, without_cuda.stderr
    assert "+/-" in without_cuda.stdout


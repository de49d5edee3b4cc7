"""The package as a user installs it: a wheel, its console commands, run from a folder outside the repository.

The wheel is built from the checkout and installed with ``--target`` into a scratch folder that is put
first on ``PYTHONPATH`` (the dependencies come from the test's own environment). From another folder the
commands then train for 2k steps, evaluate the run, and run a 2-trial sweep, each reading the shipped
hyperparameter files from the installed package data, never from the checkout.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder the wheel was installed into (packages at its top, console scripts in ``bin/``)."""
    scratch = tmp_path_factory.mktemp("install")
    wheels, target = scratch / "wheels", scratch / "site"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(wheels), str(ROOT)],
                   check=True, capture_output=True, text=True, timeout=600)
    (wheel,) = wheels.glob("bsn_rl-*.whl")
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--quiet", "--target", str(target),
                    str(wheel)], check=True, capture_output=True, text=True, timeout=600)
    return target


def run_command(installed: Path, name: str, args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run the installed console command ``name`` in ``cwd``, with the install first on ``PYTHONPATH``."""
    env = {**os.environ, "PYTHONPATH": str(installed), "OMP_NUM_THREADS": "1"}
    result = subprocess.run([str(installed / "bin" / name), *args], cwd=cwd, env=env, text=True,
                            capture_output=True, timeout=600, check=False)
    assert result.returncode == 0, f"{name} {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result


def test_the_wheel_holds_every_package_and_the_shipped_hyperparameters(installed: Path) -> None:
    for package in ("policies", "agents", "envs", "deploy", "bsn_zoo", "hyperparams"):
        assert (installed / package / "__init__.py").is_file(), package
    for algo in ("localpg", "ppo", "a2c", "localpg_torch", "localpg_delayed", "ppo_delayed", "localpg_deep"):
        assert (installed / "hyperparams" / f"{algo}.yml").is_file(), algo
    assert not (installed / "benchmarks").exists() and not (installed / "tests").exists()
    for command in ("bsn-train", "bsn-evaluate", "bsn-export", "bsn-sweep"):
        assert (installed / "bin" / command).is_file(), command


def test_console_commands_train_evaluate_and_sweep_outside_the_repository(installed: Path, tmp_path: Path) -> None:
    probe = subprocess.run([sys.executable, "-c", "import bsn_zoo, hyperparams; print(bsn_zoo.__file__); "
                            "print(hyperparams.__file__)"], cwd=tmp_path, text=True, capture_output=True,
                           env={**os.environ, "PYTHONPATH": str(installed)}, check=True)
    assert all(Path(line).is_relative_to(installed) for line in probe.stdout.split()), probe.stdout

    trained = run_command(installed, "bsn-train", ["-n", "2000", "--seed", "0", "--eval-freq", "1000",
                                                   "--eval-episodes", "2", "--no-progress-bar"], tmp_path)
    run = tmp_path / "logs" / "localpg" / "CartPole-v1_1"
    assert (run / "final_model.zip").is_file(), trained.stdout
    assert "bsn-evaluate" in trained.stdout  # its hints name the commands the user has
    config = yaml.safe_load((run / "config.yml").read_text())
    assert config["n_steps"] == 16 and config["rao_blackwell"] is True  # the shipped tuned entry was found

    evaluated = run_command(installed, "bsn-evaluate", [str(run), "-n", "2"], tmp_path)
    assert "return" in evaluated.stdout

    sweep = tmp_path / "tiny.yml"
    sweep.write_text(yaml.safe_dump({
        "name": "tiny", "base": {"env": "CartPole-v1", "n_timesteps": 256, "n_envs": 2, "n_steps": 32,
                                 "batch_size": 64, "eval_freq": 128, "eval_episodes": 2, "save_freq": 0},
        "grid": {"policy_kwargs.baseline": ["value"]}, "seeds": 2, "threshold": 5,
    }))
    swept = run_command(installed, "bsn-sweep", [str(sweep), "--n-jobs", "2", "--bootstrap-reps", "100"], tmp_path)
    summary = tmp_path / "logs" / "sweeps" / "tiny" / "summary.md"
    assert summary.is_file(), swept.stdout
    records = [json.loads(line) for line in (summary.parent / "state.jsonl").read_text().splitlines()]
    assert [record["status"] for record in records] == ["ok", "ok"], swept.stdout


def test_the_readme_python_example_runs_outside_the_repository(installed: Path, tmp_path: Path) -> None:
    readme = (ROOT / "README.md").read_text()
    example = readme.split("## Use it from Python", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    assert "model.learn(100_000)" in example
    script = tmp_path / "example.py"
    script.write_text(example.replace("model.learn(100_000)", "model.learn(1_000)"))  # the same code, shorter
    env = {**os.environ, "PYTHONPATH": str(installed), "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, text=True, capture_output=True,
                            timeout=600, check=False)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "localpg_cartpole.zip").is_file()
